//! [`ServerHandle`], a running server, and its counters ([`ServerStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Shared;
use crate::counter::read;
use crate::socket::Endpoint;

/// A running server.
pub struct ServerHandle {
    pub(super) endpoints: Vec<Endpoint>,
    /// Clients connected (handshake completed).
    pub(super) peers: watch::Receiver<usize>,
    /// Set to start the drain.
    pub(super) stop: watch::Sender<bool>,
    /// Drains, then closes the socket.
    pub(super) task: JoinHandle<()>,
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The endpoints actually bound (real ports for `:0`).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Graceful shutdown: new requests get SHUTTING_DOWN, running ones finish (up to
    /// the drain timeout) and their replies are sent, then the socket closes.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        let mut stats = self.shared.counters.snapshot();
        stats.cached_bytes = self.shared.cache().bytes() as u64;
        stats.waiting_bytes = self.shared.waiting_bytes.load(Ordering::Relaxed) as u64;
        stats.connections = *self.peers.borrow() as u64;
        stats
    }
}

/// Server counters. More counters may come: match with `..`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests received.
    pub requests: u64,
    /// Handlers run.
    pub executed: u64,
    /// Requests answered from the reply cache or joined to a running execution.
    pub deduplicated: u64,
    /// Requests refused with OVERLOADED.
    pub overloaded: u64,
    /// Requests refused with SHUTTING_DOWN.
    pub shutting_down: u64,
    /// Requests refused as BAD_REQUEST, UNKNOWN_METHOD, DEADLINE_EXCEEDED or TOO_LARGE
    /// before running.
    pub rejected: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Requests not started because their client had closed the connection behind
    /// them (a caller that gave up; the answer could reach no one).
    pub abandoned: u64,
    /// Bytes of finished replies the reply cache holds now (those not yet
    /// acknowledged by their clients, within the cache's bounds).
    pub cached_bytes: u64,
    /// Argument bytes that requests whose handlers wait hold now (see
    /// [`ServerBuilder::max_waiting_bytes`](super::ServerBuilder::max_waiting_bytes)).
    pub waiting_bytes: u64,
    /// Client connections open now (handshake completed).
    pub connections: u64,
}

/// The counters a running server keeps ([`ServerStats`] is their snapshot).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) executed: AtomicU64,
    pub(super) deduplicated: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) shutting_down: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) panics: AtomicU64,
    pub(super) abandoned: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> ServerStats {
        let r = read;
        ServerStats {
            requests: r(&self.requests),
            executed: r(&self.executed),
            deduplicated: r(&self.deduplicated),
            overloaded: r(&self.overloaded),
            shutting_down: r(&self.shutting_down),
            rejected: r(&self.rejected),
            panics: r(&self.panics),
            abandoned: r(&self.abandoned),
            // Gauges, filled in by the caller.
            cached_bytes: 0,
            waiting_bytes: 0,
            connections: 0,
        }
    }
}
