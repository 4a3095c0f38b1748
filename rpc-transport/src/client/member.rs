//! One server of the reliable client's pool (a [`Member`]): its DEALER connection, the
//! task that watches its link go up and down, its health, and Lazy Pirate recreation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use rpc_core::{RequestId, MAX_ACKS};

use super::health::Health;
use super::stats::EndpointCounters;
use super::Inner;
use crate::message::Outgoing;
use crate::socket::core::{Core, Direct};
use crate::socket::DealerSocket;
use crate::sync::lock;

/// The live connection of an endpoint.
struct Conn {
    core: Arc<Core>,
    reader: AbortHandle,
}

pub(crate) struct State {
    pub health: Health,
    /// Bumped at every recreation; events of older connections are ignored.
    pub generation: u64,
    conn: Option<Conn>,
    /// Connections opened in this generation (those it started with, and those large
    /// requests added).
    opened: usize,
    /// Why connecting or the connection last failed (refused, reset, handshake
    /// failed, ...); `None` since a handshake completed, or while none failed yet.
    pub failure: Option<Arc<str>>,
    /// The last failure was of connecting (refused, handshake failed), not the loss
    /// of an established connection that is being made again: calls that do not wait
    /// for ready fail fast only when every endpoint is failing this way.
    pub failing: bool,
}

/// Where an attempt was written: the connection generation, and how many reads had
/// brought bytes on it just before (to tell later whether it went silent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub generation: u64,
    pub reads: u64,
}

impl State {
    /// Reads that brought bytes on the current connection, if there is one.
    pub fn reads(&self) -> Option<u64> {
        self.conn.as_ref().map(|c| c.core.reads())
    }

    /// Connections the current generation keeps (up or connecting); none while closed.
    pub fn connections(&self) -> usize {
        if self.conn.is_some() {
            self.opened
        } else {
            0
        }
    }
}

pub(crate) struct Member {
    pub addr: String,
    /// Its own CURVE server key, where it has one
    /// ([`ClientBuilder::curve_server_key`](super::ClientBuilder::curve_server_key)).
    server_key: Option<crate::zmtp::curve::PublicKey>,
    /// Requests to it say when they were sent
    /// ([`ClientBuilder::send_time`](super::ClientBuilder::send_time); kept here, where
    /// a call's request builder reads it, so that the call's future stays small).
    pub send_time: bool,
    /// The keys of its metric series (built once, not per attempt).
    pub keys: crate::observe::EndpointKeys,
    pub state: Mutex<State>,
    /// Attempts in flight here (for balancing).
    pub outstanding: AtomicUsize,
    /// How long its replies take (power-of-two-choices balancing).
    pub latency: super::balance::PeakEwma,
    /// True while connected with no strikes: eligible without looking at the clock, so
    /// that picking an endpoint takes no lock, and a reply has no strikes to clear
    /// (no lock either). Written under the state lock by [`Member::set_ready`];
    /// when false, the health under the lock decides.
    ready: AtomicBool,
    /// The state's generation, readable without the lock (written under it).
    generation: AtomicU64,
    /// Removed from the pool: no new calls (written under the state lock).
    removed: AtomicBool,
    /// Not connected on purpose: outside a lazy aperture's window
    /// ([`Aperture::lazy`](super::Aperture::lazy)), until the window takes it in
    /// (written under the state lock).
    idle: AtomicBool,
    /// Connecting because the window took it in, neither connected nor failed yet: it
    /// keeps its place in the window meanwhile.
    waking: AtomicBool,
    /// When it last left a lazy aperture's window ([`Inner::nanos`](super::Inner) + 1;
    /// 0: in the window, or idle).
    pub left_window: AtomicU64,
    pub counters: EndpointCounters,
    /// Ids of calls whose reply came from here, to acknowledge with the next requests
    /// (so that the server lets go of those replies). At most [`ACKS_HELD`]; past that
    /// the oldest are not acknowledged (the server's cache then ages them out).
    acks: Mutex<Vec<RequestId>>,
}

/// Requests at least this large are bulk: see [`Member::try_send`]. One TCP stream has
/// one socket buffer each way, too little for many large calls at once
/// (docs/ARCHITECTURE.md, "A second connection for bulk requests").
pub(crate) const BULK_MIN: usize = 64 * 1024;

/// Most acknowledgements an endpoint holds for its next requests.
const ACKS_HELD: usize = 4 * MAX_ACKS;

impl Member {
    pub fn new(addr: String) -> Member {
        Member {
            keys: crate::observe::EndpointKeys::new(&addr),
            addr,
            server_key: None,
            send_time: false,
            state: Mutex::new(State {
                health: Health::new(),
                generation: 0,
                conn: None,
                opened: 0,
                failure: None,
                failing: false,
            }),
            outstanding: AtomicUsize::new(0),
            latency: Default::default(),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            waking: AtomicBool::new(false),
            left_window: AtomicU64::new(0),
            counters: EndpointCounters::default(),
            acks: Mutex::new(Vec::new()),
        }
    }

    /// The member with its own CURVE server key (`None`: the client's).
    pub fn with_server_key(mut self, key: Option<crate::zmtp::curve::PublicKey>) -> Member {
        self.server_key = key;
        self
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A reply of call `id` came from here.
    pub fn received(&self, id: RequestId) {
        let mut acks = lock(&self.acks);
        if acks.len() >= ACKS_HELD {
            acks.remove(0);
        }
        acks.push(id);
    }

    /// Runs `f` with the acknowledgements for the next request here (the oldest, at
    /// most [`MAX_ACKS`]), which are then taken.
    pub fn with_acks<R>(&self, f: impl FnOnce(&[RequestId]) -> R) -> R {
        let mut acks = lock(&self.acks);
        let n = acks.len().min(MAX_ACKS);
        let r = f(&acks[..n]);
        acks.drain(..n);
        r
    }

    /// Sends without waiting on the current connection; gives the message back when
    /// there is none or it is full (the request provably never left). Returns the
    /// generation of the connection written to and its reads so far. A bulk request (at least [`BULK_MIN`])
    /// sent while another attempt is in flight here opens one more connection, until
    /// the generation has `bulk_max`.
    ///
    /// The lock is held only to take the connection: a write (a system call) under it
    /// made concurrent callers and the picking of endpoints sleep on it.
    pub fn try_send(&self, msg: Outgoing, bulk_max: usize) -> Result<Sent, Outgoing> {
        let (core, generation) = {
            let mut st = self.lock();
            let Some(core) = st.conn.as_ref().map(|c| c.core.clone()) else {
                return Err(msg);
            };
            // The bound first: once reached (or with growth off) a call looks no further.
            if st.opened < bulk_max
                && self.outstanding.load(Ordering::Relaxed) > 0
                && msg.byte_len() >= BULK_MIN
            {
                // Connecting only starts a task; the request goes to a connection
                // that is up, and later ones spread over both.
                st.opened += 1;
                let (addr, n) = (&self.addr, st.opened);
                match core.connect(addr, self.server_key) {
                    Ok(()) => tracing::debug!(endpoint = %addr, connections = n, "bulk: one more"),
                    Err(e) => tracing::warn!(endpoint = %addr, error = %e, "cannot connect"),
                }
            }
            (core, st.generation)
        };
        // Recreated meanwhile: the old connection closes and fails its attempts
        // (`fail_in_flight` of that generation), this one included.
        let reads = core.reads();
        core.try_send_direct(msg)
            .map(|_| Sent { generation, reads })
    }

    /// The current generation, without the lock.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Connected with no strikes (see `ready`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether a call may be sent here now. Lock-free while the endpoint is connected
    /// and has no strikes (every call asks this).
    pub fn eligible(&self, now: impl FnOnce() -> std::time::Instant) -> bool {
        self.is_ready() || (!self.is_removed() && self.lock().health.eligible(now()))
    }

    /// Whether it was removed from the pool (and not added again).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Whether it is not connected on purpose (outside a lazy aperture's window).
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Where it stands ([`Health::state`]; idle; or connecting since a lazy aperture's
    /// window took it in, whatever its earlier life was), under the state lock.
    pub fn health(&self, st: &State, now: std::time::Instant) -> super::HealthState {
        if self.is_idle() {
            super::HealthState::Idle
        } else if self.waking.load(Ordering::Acquire) {
            super::HealthState::Connecting
        } else {
            st.health.state(now)
        }
    }

    /// Whether a lazy aperture's window may hold it: able to take calls, idle (to be
    /// connected when taken in), or connecting since it was taken in.
    pub fn window_candidate(&self, now: impl FnOnce() -> std::time::Instant) -> bool {
        !self.is_removed()
            && (self.is_idle() || self.waking.load(Ordering::Acquire) || self.eligible(now))
    }

    /// Leaves it unconnected until [`Member::wake`] (a member a lazy aperture has not
    /// taken in), under the state lock.
    pub fn set_idle(&self, _st: &State) {
        self.idle.store(true, Ordering::Release);
    }

    /// The window took it in: connects it, if it was idle. Returns whether it was.
    pub fn wake(inner: &Arc<Inner>, idx: usize) -> bool {
        let m = inner.members.at(idx);
        let mut st = m.lock();
        if !m.is_idle() || m.is_removed() {
            return false;
        }
        m.idle.store(false, Ordering::Release);
        m.waking.store(true, Ordering::Release);
        st.failing = false;
        Member::recreate_locked(inner, idx, &mut st);
        true
    }

    /// It connected, or failed to: no longer waking (under the state lock).
    pub fn woke(&self, _st: &State) {
        self.waking.store(false, Ordering::Release);
    }

    /// Out of the window long enough: closes its connection and leaves it idle until
    /// the window takes it in again. Returns the generation closed (attempts still on
    /// it are lost: the caller fails them over), `None` if it was idle or removed.
    pub fn sleep(&self) -> Option<u64> {
        let (conn, closed) = {
            let mut st = self.lock();
            if self.is_idle() || self.is_removed() {
                return None;
            }
            let closed = st.generation;
            self.idle.store(true, Ordering::Release);
            self.waking.store(false, Ordering::Release);
            // Events of the closed connection are not this member's any more.
            self.next_generation(&mut st);
            // `failing` stays: a member whose connecting failed still counts as
            // refusing while it is idle (a pool of such fails calls fast).
            (self.take_conn(&mut st), closed)
        };
        if let Some(c) = conn {
            c.reader.abort();
        }
        Some(closed)
    }

    /// Marks it removed from the pool (`true`) or back in it, under the state lock.
    pub fn set_removed(&self, st: &State, removed: bool) {
        self.removed.store(removed, Ordering::Release);
        self.set_ready(st);
    }

    /// Brings the lock-free flag in line with the health; called under the lock after
    /// every change of it.
    pub fn set_ready(&self, st: &State) {
        let ready = st.health.clear() && !self.is_removed();
        self.ready.store(ready, Ordering::Release);
    }

    /// Opens a fresh connection (closing the old one, if any): Lazy Pirate's "close the
    /// socket, open a new one". Returns the new generation.
    pub fn recreate(inner: &Arc<Inner>, idx: usize) -> u64 {
        let mut st = inner.members.at(idx).lock();
        Member::recreate_locked(inner, idx, &mut st)
    }

    /// [`Member::recreate`] under the state's lock, held by the caller since it
    /// decided to: two callers cannot both recreate one connection.
    pub fn recreate_locked(inner: &Arc<Inner>, idx: usize, st: &mut State) -> u64 {
        let ep = inner.members.at(idx);
        let sock = DealerSocket::with_options(inner.config.socket.clone());
        let core = sock.core().clone();
        // Replies go straight from the connection task to the waiting call.
        let weak = Arc::downgrade(inner);
        let _ = core.direct.set(Direct {
            sink: Arc::new(
                move |inbound: crate::socket::core::Inbound,
                      a: &mut crate::socket::core::Answers<'_>| {
                    if let Some(inner) = weak.upgrade() {
                        inner.on_reply(idx, inbound.msg, a);
                    }
                },
            ),
            wake_line: Some(inner.wake_line.clone()),
            // Handing replies over in groups gained nothing on the client side.
            batch: usize::MAX,
            small_answers: None,
            answers: false,
        });
        let generation = ep.next_generation(st);
        if let Some(old) = ep.take_conn(st) {
            old.reader.abort();
        }
        // One socket, `connections` connections: the socket spreads sends over them.
        st.opened = inner.config.connections;
        for _ in 0..inner.config.connections {
            if let Err(e) = core.connect(&ep.addr, ep.server_key) {
                tracing::error!(endpoint = %ep.addr, error = %e, "cannot connect");
                break;
            }
        }
        let reader = tokio::spawn(watch_link(inner.clone(), idx, generation, sock));
        st.conn = Some(Conn {
            core,
            reader: reader.abort_handle(),
        });
        generation
    }

    /// Stops the connection for good (until recreated).
    pub fn close(&self) {
        let conn = self.take_conn(&mut self.lock());
        if let Some(c) = conn {
            c.reader.abort();
        }
    }

    /// Takes the connection out (the caller aborts it, out of the lock): disconnected
    /// until a new one completes its handshake.
    fn take_conn(&self, st: &mut State) -> Option<Conn> {
        st.health.on_disconnected();
        self.set_ready(st);
        st.conn.take()
    }

    /// Starts a new generation: events of the connections before it are ignored.
    fn next_generation(&self, st: &mut State) -> u64 {
        st.generation += 1;
        self.generation.store(st.generation, Ordering::Release);
        st.generation
    }
}

/// Owns the socket of one connection generation and reports its link changes: up or
/// down, and why connecting or a connection failed.
async fn watch_link(inner: Arc<Inner>, idx: usize, generation: u64, sock: DealerSocket) {
    let mut peers = sock.watch_peers();
    let mut failure = sock.core().watch_failure();
    // The handshake may have completed before this task subscribed: look at the
    // current value first rather than wait for the next change.
    peers.mark_changed();
    loop {
        tokio::select! {
            r = peers.changed() => {
                if r.is_err() {
                    return;
                }
                let up = *peers.borrow_and_update() > 0;
                inner.on_link(idx, generation, up);
            }
            r = failure.changed() => {
                if r.is_err() {
                    return;
                }
                let why = failure.borrow_and_update().clone();
                inner.on_failure(idx, generation, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::HealthState;

    #[test]
    fn a_member_woken_after_an_earlier_life_reports_connecting_not_down() {
        let m = Member::new("tcp://127.0.0.1:1".into());
        let now = std::time::Instant::now();
        let mut st = m.lock();
        st.health.on_connected();
        st.health.on_disconnected();
        assert_eq!(m.health(&st, now), HealthState::Down);
        // Closed out of the window, then taken in again (what `sleep` and `wake` set).
        m.set_idle(&st);
        assert_eq!(m.health(&st, now), HealthState::Idle);
        m.idle.store(false, Ordering::Release);
        m.waking.store(true, Ordering::Release);
        assert_eq!(m.health(&st, now), HealthState::Connecting);
        // Its connecting failed: down again, as any member that lost its connection.
        m.woke(&st);
        assert_eq!(m.health(&st, now), HealthState::Down);
        st.health.on_connected();
        assert_eq!(m.health(&st, now), HealthState::Healthy);
    }
}
