//! A service that sleeps: `nap(ms)` answers after `ms` milliseconds. For examples and
//! tests of timeouts.

use std::time::Duration;

use zmtp_rpc::rpc_service;

#[rpc_service(name = "nap")]
pub trait Nap {
    /// Sleeps `ms` milliseconds, then answers them.
    async fn nap(&self, ms: u64) -> u64;
}

/// The implementation.
pub struct Napper;

impl Nap for Napper {
    async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}
