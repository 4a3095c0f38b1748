//! Counters a user can read: [`ClientStats`] and [`EndpointStats`].

use std::sync::atomic::AtomicU64;

use super::health::HealthState;

/// Client-wide counters, read with [`crate::client::Client::stats`]. More counters
/// may come: match with `..`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls started.
    pub calls: u64,
    /// Calls that returned a reply (OK or an application error).
    pub succeeded: u64,
    /// Calls that ended in an [`rpc_core::RpcError`].
    pub failed: u64,
    /// Attempts sent (first sends and resends).
    pub attempts: u64,
    /// Resends of a call after a failed attempt.
    pub retries: u64,
    /// Resends the retry budget refused (the call failed with its last cause).
    pub budget_refusals: u64,
    /// Hedged attempts sent (also counted in `attempts`).
    pub hedges: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Resends that went to a different endpoint than the failed attempt.
    pub failovers: u64,
    /// Connections closed and recreated after a timeout (Lazy Pirate).
    pub reconnects: u64,
    /// Replies dropped because no call was waiting for them any more.
    pub late_replies: u64,
    /// Per endpoint, in the order given to the builder.
    pub endpoints: Vec<EndpointStats>,
}

/// Counters of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint address.
    pub endpoint: String,
    /// Health at the time of reading.
    pub health: HealthState,
    /// Attempts sent here.
    pub sent: u64,
    /// Replies received from here.
    pub replies: u64,
    /// Attempts here that timed out.
    pub timeouts: u64,
    /// Attempts here lost to a disconnect.
    pub disconnects: u64,
    /// Connections kept to it (up or connecting): those opened at the start and those
    /// added for bulk requests (see [`crate::client::ClientBuilder::bulk_connections`]).
    pub connections: usize,
    /// Stalls since its last reply: times its connection went silent through an
    /// attempt timeout and was recreated (each doubles the suspect penalty).
    pub strikes: u32,
    /// Calls are drawn from it: always, unless the client has an
    /// [aperture](crate::client::ClientBuilder::aperture) whose window leaves it out.
    pub in_aperture: bool,
}

/// Live atomic counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub budget_refusals: AtomicU64,
    pub hedges: AtomicU64,
    pub timeouts: AtomicU64,
    pub failovers: AtomicU64,
    pub reconnects: AtomicU64,
    pub late_replies: AtomicU64,
}

/// Live counters of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    pub sent: AtomicU64,
    pub replies: AtomicU64,
    pub timeouts: AtomicU64,
    pub disconnects: AtomicU64,
}
