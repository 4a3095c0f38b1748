//! ZeroMQ request-reply sockets on tokio: [`ReqSocket`], [`RepSocket`],
//! [`DealerSocket`], [`RouterSocket`].
//!
//! Each socket can bind and connect any number of endpoints (`tcp://`, `ipc://`,
//! `inproc://`). Every connection is one tokio task (`engine.rs`) driving a sans-IO
//! [`crate::zmtp::Connection`]; connected endpoints reconnect with exponential backoff and
//! jitter (`backoff.rs`). Queues are bounded by high-water marks; a peer that breaks the
//! protocol or a limit loses its connection, and the socket carries on with the others.
//!
//! `recv` is cancel-safe on every socket type: a `recv` future dropped (for example by
//! `tokio::time::timeout`) loses no message and leaves the socket's state as it was.
//!
//! # Layout
//! - `endpoint.rs`: [`Endpoint`] parsing, listeners, connecting, the inproc registry.
//! - `options.rs`: [`SocketOptions`]; `authenticate.rs`: [`Authenticator`], the
//!   application's say on who may connect to a CURVE or PLAIN server.
//! - `core/`: what every socket shares: `peers.rs` the peer table, `send.rs` the send
//!   strategies (round-robin, the least busy peer for direct sends, one peer),
//!   `direct.rs` the direct sink of the client and server, `loops.rs` binds and
//!   connect loops.
//! - `engine.rs`: the per-connection task, one step per source; `recv_buf.rs`: its receive buffers;
//!   `wake_line.rs`: the order in which it wakes the callers of a burst of replies;
//!   `outbox.rs`: its sending side, which the reliable client may write to directly.
//! - `backoff.rs`: [`Backoff`] with a seedable RNG.
//! - `req.rs`, `rep.rs`, `dealer.rs`, `router.rs`: the semantics of 28/REQREP.

mod authenticate;
mod backoff;
pub(crate) mod core;
mod dealer;
mod endpoint;
mod engine;
mod options;
mod outbox;
mod recv_buf;
mod rep;
mod req;
mod router;
pub(crate) mod wake_line;

pub use authenticate::{AuthDecision, AuthMechanism, AuthRequest, Authenticator};
pub use backoff::{Backoff, SplitMix64};
pub use dealer::DealerSocket;
pub use endpoint::Endpoint;
pub use options::SocketOptions;
pub use rep::RepSocket;
pub use req::ReqSocket;
pub use router::{RouterSender, RouterSocket};

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use self::core::{Core, Inbound};
use crate::zmtp::SocketType;

/// Errors of socket operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The endpoint string could not be parsed.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An IO error binding or connecting an endpoint (the text says the OS's reason:
    /// "address already in use", "connection refused", ...).
    #[error("{endpoint}: {error}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The underlying error (in the text, so not also a `source`).
        error: std::io::Error,
    },
    /// A builder was given settings that cannot work; the text says which.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The operation is not valid in the socket's current state (REQ/REP lock-step).
    #[error("operation not valid in the socket's state: {0}")]
    State(&'static str),
    /// ROUTER: no connected peer has this routing id.
    #[error("no peer with routing id {0:?}")]
    Unroutable(bytes::Bytes),
    /// A message with no frames cannot be sent.
    #[error("message has no frames")]
    EmptyMessage,
    /// ROUTER: the peer's identity is already used by another connection.
    #[error("duplicate peer identity")]
    DuplicateIdentity,
    /// REQ: the peer the request went to disconnected before replying; the socket is
    /// ready to send again.
    #[error("peer disconnected before replying")]
    PeerDisconnected,
    /// No bind or connect with this endpoint.
    #[error("endpoint {0} is not bound or connected")]
    NotFound(String),
    /// The socket is closed.
    #[error("socket closed")]
    Closed,
}

/// The parts every socket type has.
struct SocketBase {
    core: Arc<Core>,
    inbound: mpsc::Receiver<Inbound>,
}

impl SocketBase {
    fn new(kind: SocketType, opts: SocketOptions) -> SocketBase {
        let (core, inbound) = Core::new(kind, opts);
        SocketBase { core, inbound }
    }

    async fn recv(&mut self) -> Result<Inbound, SocketError> {
        self.inbound.recv().await.ok_or(SocketError::Closed)
    }
}

impl Drop for SocketBase {
    fn drop(&mut self) {
        self.core.close();
    }
}

/// The methods every socket type has, written once.
macro_rules! socket_common {
    ($ty:ident, $kind:expr) => {
        impl $ty {
            /// A socket with default options.
            pub fn new() -> Self {
                Self::with_options($crate::socket::SocketOptions::default())
            }

            /// A socket with `opts`.
            pub fn with_options(opts: $crate::socket::SocketOptions) -> Self {
                Self::from_base($crate::socket::SocketBase::new($kind, opts))
            }

            /// Binds an endpoint (`tcp://127.0.0.1:0` picks a free port) and returns the
            /// endpoint actually bound.
            pub async fn bind(
                &self,
                endpoint: &str,
            ) -> Result<$crate::socket::Endpoint, $crate::socket::SocketError> {
                self.base.core.bind(endpoint).await
            }

            /// Connects to an endpoint. Returns at once; the connection is made, and
            /// remade after any loss, in the background with backoff.
            pub async fn connect(&self, endpoint: &str) -> Result<(), $crate::socket::SocketError> {
                self.base.core.connect(endpoint, None)
            }

            /// Connects to a CURVE server whose public key is `server`, where servers do
            /// not share the key the socket's [`Mechanism::CurveClient`](crate::zmtp::Mechanism)
            /// names (libzmq: `ZMQ_CURVE_SERVERKEY` set before a `zmq_connect`). A
            /// socket that does not speak CURVE as a client refuses it.
            pub async fn connect_curve(
                &self,
                endpoint: &str,
                server: $crate::zmtp::curve::PublicKey,
            ) -> Result<(), $crate::socket::SocketError> {
                if !matches!(
                    self.base.core.opts.mechanism,
                    $crate::zmtp::Mechanism::CurveClient { .. }
                ) {
                    return Err($crate::socket::SocketError::Config(
                        "connect_curve on a socket that is not a CURVE client".into(),
                    ));
                }
                self.base.core.connect(endpoint, Some(server))
            }

            /// Stops listening on a bound endpoint.
            pub fn unbind(&self, endpoint: &str) -> Result<(), $crate::socket::SocketError> {
                self.base.core.remove_endpoint(endpoint, true)
            }

            /// Closes a connected endpoint and stops reconnecting to it.
            pub fn disconnect(&self, endpoint: &str) -> Result<(), $crate::socket::SocketError> {
                self.base.core.remove_endpoint(endpoint, false)
            }

            /// Number of peers with a completed handshake.
            pub fn peer_count(&self) -> usize {
                *self.base.core.peer_count().borrow()
            }

            /// A watch on the number of handshaken peers.
            pub fn watch_peers(&self) -> tokio::sync::watch::Receiver<usize> {
                self.base.core.peer_count()
            }

            /// The socket's shared core (crate-internal: the reliable client and server
            /// send through it from many tasks).
            #[allow(dead_code)]
            pub(crate) fn core(&self) -> &std::sync::Arc<$crate::socket::core::Core> {
                &self.base.core
            }

            /// The socket's options.
            pub fn options(&self) -> &$crate::socket::SocketOptions {
                &self.base.core.opts
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}
pub(crate) use socket_common;

/// Waits until `peer` is no longer connected.
async fn peer_gone(core: &Core, peers: &mut watch::Receiver<usize>, peer: u64) {
    loop {
        if !core.has_peer(peer) {
            return;
        }
        if peers.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
