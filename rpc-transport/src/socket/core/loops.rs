//! The tasks behind a socket's endpoints: a listener per bind, a connect loop (with
//! backoff) per connect, each running one engine per connection.

use std::sync::Arc;

use tokio::task::AbortHandle;

use super::Core;
use crate::socket::backoff::{Backoff, SplitMix64};
use crate::socket::endpoint::{self, Endpoint, Listener};
use crate::socket::engine;
use crate::socket::SocketError;
use crate::sync::lock;
use crate::zmtp::curve::PublicKey;

pub(super) struct EndpointTask {
    key: String,
    pub(super) bound: bool,
    pub(super) abort: AbortHandle,
}

impl Core {
    /// Binds an endpoint and starts accepting on it.
    pub async fn bind(self: &Arc<Core>, addr: &str) -> Result<Endpoint, SocketError> {
        let ep: Endpoint = addr.parse()?;
        let (mut listener, actual) = Listener::bind(&ep).await?;
        let core = self.clone();
        let mut stop = self.shutdown_signal();
        let task = tokio::spawn(async move {
            loop {
                let io = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.changed() => return,
                };
                match io {
                    Ok(io) => {
                        let Ok(permit) = core.conn_limit.clone().try_acquire_owned() else {
                            tracing::warn!(peer = %io.peer, "connection limit reached; refusing");
                            continue;
                        };
                        let core = core.clone();
                        tokio::spawn(async move {
                            engine::run(core, io, None).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        lock(&self.endpoints).push(EndpointTask {
            key: actual.to_string(),
            bound: true,
            abort: task.abort_handle(),
        });
        Ok(actual)
    }

    /// Starts a connect loop: connect, run the connection, and reconnect with backoff
    /// whenever it ends, until disconnected or closed. `server_key`: this endpoint's
    /// CURVE server key, where it differs from the socket's.
    pub fn connect(
        self: &Arc<Core>,
        addr: &str,
        server_key: Option<PublicKey>,
    ) -> Result<(), SocketError> {
        let ep: Endpoint = addr.parse()?;
        let core = self.clone();
        let mut stop = self.shutdown_signal();
        let rng = SplitMix64::new(lock(&self.rng).next_u64());
        let mut backoff = Backoff::new(self.opts.reconnect_ivl, self.opts.reconnect_ivl_max, rng);
        let key = ep.to_string();
        let task = tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                let connect = endpoint::connect(&ep);
                let connected = match core.opts.connect_timeout {
                    Some(limit) => {
                        tokio::time::timeout(limit, connect)
                            .await
                            .unwrap_or_else(|_| {
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!("connect timed out after {limit:?}"),
                                ))
                            })
                    }
                    None => connect.await,
                };
                match connected {
                    Ok(io) => {
                        if engine::run(core.clone(), io, server_key).await {
                            backoff.reset();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %ep, error = %e, "connect failed");
                        core.report_failure(e.to_string(), false);
                    }
                }
                let delay = backoff.next_delay();
                tracing::debug!(endpoint = %ep, ?delay, "reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        lock(&self.endpoints).push(EndpointTask {
            key,
            bound: false,
            abort: task.abort_handle(),
        });
        Ok(())
    }

    /// Stops a bind (`bound`) or connect by its endpoint string.
    pub fn remove_endpoint(&self, addr: &str, bound: bool) -> Result<(), SocketError> {
        let key = addr
            .parse::<Endpoint>()
            .map(|e| e.to_string())
            .unwrap_or_else(|_| addr.to_string());
        let mut eps = lock(&self.endpoints);
        let before = eps.len();
        eps.retain(|t| {
            let hit = t.bound == bound && t.key == key;
            if hit {
                t.abort.abort();
            }
            !hit
        });
        if eps.len() == before {
            return Err(SocketError::NotFound(addr.to_string()));
        }
        Ok(())
    }
}
