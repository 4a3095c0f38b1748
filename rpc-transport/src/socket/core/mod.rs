//! What every socket type shares: the peer table, the inbound queue, endpoints and the
//! tasks behind them (listeners, connect loops, one engine per connection).
//!
//! - [`peers`]: the peer table and the guard that empties it.
//! - [`send`]: how messages reach the peers (the send strategies).
//! - [`direct`]: messages from the connections, and the direct sink that takes them.
//! - [`loops`]: the listener and connect loops behind the endpoints.

mod direct;
mod loops;
mod peers;
mod send;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, watch, Semaphore};

pub(crate) use self::direct::{Answers, Direct, Inbound};
use self::loops::EndpointTask;
use self::peers::Peers;
pub(crate) use self::peers::{PeerGuard, PeerId};
use super::backoff::SplitMix64;
use super::SocketOptions;
use crate::sync::lock;
use crate::zmtp::SocketType;

pub(crate) struct Core {
    pub kind: SocketType,
    pub opts: SocketOptions,
    peers: Mutex<Peers>,
    peer_count: watch::Sender<usize>,
    pub inbound_tx: mpsc::Sender<Inbound>,
    pub direct: OnceLock<Direct>,
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
    endpoints: Mutex<Vec<EndpointTask>>,
    conn_limit: Arc<Semaphore>,
    rng: Mutex<SplitMix64>,
    /// Reads that brought bytes, on any of the socket's connections: a peer that sent
    /// anything (a reply, a heartbeat) since a moment is alive.
    reads: AtomicU64,
    /// Why the last connect or connection of this socket failed (refused, reset,
    /// handshake failed, ...); `None` once a handshake completed after it.
    failure: watch::Sender<Option<Failure>>,
}

/// Why connecting or a connection of a socket last failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What happened, as the socket's owner should hear it.
    pub why: Arc<str>,
    /// An established connection was lost: the socket is connecting again and
    /// nothing says yet that it cannot (gRPC's CONNECTING, not TRANSIENT_FAILURE).
    pub lost: bool,
}

impl Core {
    pub fn new(kind: SocketType, opts: SocketOptions) -> (Arc<Core>, mpsc::Receiver<Inbound>) {
        let (inbound_tx, inbound_rx) = mpsc::channel(opts.recv_hwm.max(1));
        let mut rng = opts
            .rng_seed
            .map(SplitMix64::new)
            .unwrap_or_else(SplitMix64::from_entropy);
        let core = Core {
            kind,
            peers: Mutex::new(Peers {
                list: Vec::new(),
                rr: 0,
                next_routing: rng.next_u64() as u32,
            }),
            peer_count: watch::channel(0).0,
            inbound_tx,
            direct: OnceLock::new(),
            shutdown: watch::channel(false).0,
            next_id: AtomicU64::new(1),
            endpoints: Mutex::new(Vec::new()),
            conn_limit: Arc::new(Semaphore::new(opts.max_connections.max(1))),
            reads: AtomicU64::new(0),
            failure: watch::channel(None).0,
            rng: Mutex::new(rng),
            opts,
        };
        (Arc::new(core), inbound_rx)
    }

    pub fn next_peer_id(&self) -> PeerId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn peer_count(&self) -> watch::Receiver<usize> {
        self.peer_count.subscribe()
    }

    /// Follows why connecting or a connection last failed (see `failure`).
    pub fn watch_failure(&self) -> watch::Receiver<Option<Failure>> {
        self.failure.subscribe()
    }

    /// A connect attempt or a connection failed for `reason`; `lost` when the
    /// connection had completed its handshake (see [`Failure::lost`]).
    pub fn report_failure(&self, reason: String, lost: bool) {
        self.failure.send_replace(Some(Failure {
            why: reason.into(),
            lost,
        }));
    }

    /// A handshake completed: the last failure is over.
    pub fn report_handshake(&self) {
        self.failure.send_if_modified(|f| f.take().is_some());
    }

    /// Reads that brought bytes so far (see `reads`).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Counts a read that brought bytes.
    pub fn on_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Signals every task of the socket to stop (engines linger first).
    pub fn close(&self) {
        self.shutdown.send_replace(true);
        for t in lock(&self.endpoints).drain(..) {
            // Listeners and connect loops end now; a connect loop's own engine is
            // inside it, so it gets the shutdown signal rather than an abort.
            if t.bound {
                t.abort.abort();
            }
        }
    }
}
