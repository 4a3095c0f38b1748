//! What every socket type shares: the peer table, the inbound queue, endpoints and the
//! tasks behind them (listeners, connect loops, one engine per connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::AbortHandle;

use super::backoff::{Backoff, SplitMix64};
use super::endpoint::{self, Endpoint, Listener};
use super::engine;
use super::outbox::Outbox;
use super::wake_line::WakeLine;
use super::{SocketError, SocketOptions};
use crate::message::{Message, Outgoing};
use crate::sync::lock;
use crate::zmtp::{PeerInfo, SocketType};

/// A connection's number within its socket; never reused.
pub(crate) type PeerId = u64;

/// A message received from a peer.
pub(crate) struct Inbound {
    pub peer: PeerId,
    pub routing_id: Bytes,
    pub msg: Message,
    /// The connection's send queue, for an answer without a peer-table lookup.
    pub reply: mpsc::Sender<Outgoing>,
    /// The peer's CURVE public key, authenticated by the handshake.
    pub peer_key: Option<crate::zmtp::curve::PublicKey>,
    /// The PLAIN user name the server allowed.
    pub peer_user: Option<Arc<str>>,
    /// The message was over the size limit: `msg` holds only its frames before the
    /// one that passed it, and this is its whole size (see
    /// [`SocketOptions::discard_oversize`](super::SocketOptions::discard_oversize)).
    pub too_large: Option<u64>,
}

/// Receives messages straight from the connection tasks instead of the socket's
/// queue: the reliable client and the server use it to save a task hop per message.
/// It must not block. Answers it has at once for the same peer go to [`Answers`],
/// which queues them in the connection without a trip through its channel.
pub(crate) type DirectSink = Arc<dyn Fn(Inbound, &mut Answers<'_>) + Send + Sync>;

/// The connection whose task runs a direct sink: answers to its peer are queued
/// there at once (small frames copied, large ones shared).
pub(crate) struct Answers<'a> {
    pub(crate) conn: &'a mut crate::zmtp::Connection,
    /// Answers queued so far in this pass.
    pub(crate) count: &'a mut usize,
    /// Callers to wake at the end of the pass (see [`Answers::wake`]).
    pub(crate) woken: &'a mut Vec<Waker>,
}

impl Answers<'_> {
    /// Queues `msg` behind `envelope` for this connection's peer.
    pub fn send(&mut self, envelope: &[Bytes], msg: &Outgoing) {
        if self
            .conn
            .send_behind(envelope, &msg.frames, msg.joined)
            .is_ok()
        {
            *self.count += 1;
        }
    }

    /// Wakes the caller a message was for once the pass ends: in turn, through the
    /// sink's [`WakeLine`], with the other callers of the pass.
    pub fn wake(&mut self, w: Waker) {
        self.woken.push(w);
    }
}

/// A direct sink, and how many messages it takes per pass of the connection task
/// before the task writes what is queued (answers given at once leave early, so the
/// peer works on them while the rest of a read batch is handled).
pub(crate) struct Direct {
    pub sink: DirectSink,
    pub batch: usize,
    /// `(messages, bytes)`: with several CPUs, the pass ends after that many messages
    /// already when their answers so far are under that many bytes.
    pub small_answers: Option<(usize, usize)>,
    /// The sink answers what it receives (a server): while this peer's answers wait
    /// to be written, its connection reads no more, so that a peer that does not read
    /// them is not served without limit. Never for a client: its reads must go on
    /// while its own requests wait, or two full connections would wait on each other.
    pub answers: bool,
    /// Wakes the callers of a burst of messages one after another (the reliable
    /// client's; see [`Answers::wake`]).
    pub wake_line: Option<Arc<WakeLine>>,
}

struct PeerEntry {
    id: PeerId,
    routing_id: Bytes,
    tx: mpsc::Sender<Outgoing>,
    out: Arc<Outbox>,
}

struct Peers {
    list: Vec<PeerEntry>,
    /// Round-robin cursor into `list`.
    rr: usize,
    /// Next generated ROUTER routing id (libzmq: 0x00 + u32 counter, random start).
    next_routing: u32,
}

struct EndpointTask {
    key: String,
    bound: bool,
    abort: AbortHandle,
}

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
    failure: watch::Sender<Option<Arc<str>>>,
}

/// A wait for room in one peer's send queue, tagged with what names the peer.
type RoomWait<T> = Pin<Box<dyn Future<Output = Option<(T, mpsc::OwnedPermit<Outgoing>)>> + Send>>;

/// Waits for room in any of the peers' send queues: the first peer with room (its
/// tag) and its reserved place, or `None` when every queue is closed.
async fn first_room<T: Send + 'static>(
    peers: Vec<(T, mpsc::Sender<Outgoing>)>,
) -> Option<(T, mpsc::OwnedPermit<Outgoing>)> {
    let mut waits: Vec<Option<RoomWait<T>>> = peers
        .into_iter()
        .map(|(tag, tx)| {
            Some(
                Box::pin(async move { tx.reserve_owned().await.ok().map(|p| (tag, p)) })
                    as RoomWait<T>,
            )
        })
        .collect();
    std::future::poll_fn(|cx| {
        let mut open = false;
        for w in &mut waits {
            let Some(f) = w else { continue };
            match f.as_mut().poll(cx) {
                Poll::Ready(Some(room)) => return Poll::Ready(Some(room)),
                Poll::Ready(None) => *w = None,
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

/// Puts `msg` in a peer's channel without waiting (counted, for a socket that keeps
/// order, once its place is taken); gives it back when the channel is full or closed.
fn enqueue(
    tx: &mpsc::Sender<Outgoing>,
    out: &Outbox,
    msg: Outgoing,
    ordered: bool,
) -> Result<(), Outgoing> {
    let Ok(permit) = tx.try_reserve() else {
        return Err(msg);
    };
    if ordered {
        out.count_queued();
    }
    permit.send(msg);
    Ok(())
}

/// An ordered socket's message straight to the peer's socket when none of its
/// messages waits in the peer's channel; given back (for the channel) otherwise, and
/// always for a socket that does not keep order.
fn try_direct(out: &Outbox, msg: Message, ordered: bool) -> Result<(), Outgoing> {
    if ordered {
        out.try_send_ordered(msg.into())
    } else {
        Err(msg.into())
    }
}

/// Sends `msg` to one peer without waiting: straight to its socket when nothing of
/// this socket's waits in its channel (`ordered`), else through the channel. Dropped
/// (and `true`) when the peer is at its high-water mark, `false` when its connection
/// is gone.
fn offer(tx: &mpsc::Sender<Outgoing>, out: &Outbox, msg: Message, ordered: bool) -> bool {
    let msg = match try_direct(out, msg, ordered) {
        Ok(()) => return true,
        Err(m) => m,
    };
    match enqueue(tx, out, msg, ordered) {
        Ok(()) => true,
        Err(_) if tx.is_closed() => false,
        Err(_) => {
            tracing::debug!("peer at its high-water mark; message dropped");
            true
        }
    }
}

/// Removes its peer from the table when the connection's engine ends, however it ends.
pub(crate) struct PeerGuard {
    core: Arc<Core>,
    pub id: PeerId,
    pub routing_id: Bytes,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut peers = lock(&self.core.peers);
        peers.list.retain(|p| p.id != self.id);
        let n = peers.list.len();
        drop(peers);
        self.core.peer_count.send_replace(n);
    }
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

    /// Enters a handshaken connection in the peer table.
    pub fn add_peer(
        self: &Arc<Core>,
        id: PeerId,
        info: &PeerInfo,
        tx: mpsc::Sender<Outgoing>,
        out: Arc<Outbox>,
    ) -> Result<PeerGuard, SocketError> {
        let mut peers = lock(&self.peers);
        let routing_id = if self.kind == SocketType::Router && !info.identity.is_empty() {
            // libzmq without ROUTER_HANDOVER keeps the first connection and refuses the
            // newcomer; doing the same keeps replies from going to the wrong peer.
            if peers.list.iter().any(|p| p.routing_id == info.identity) {
                return Err(SocketError::DuplicateIdentity);
            }
            info.identity.clone()
        } else {
            loop {
                peers.next_routing = peers.next_routing.wrapping_add(1);
                let mut id = [0u8; 5];
                id[1..].copy_from_slice(&peers.next_routing.to_be_bytes());
                let id = Bytes::copy_from_slice(&id);
                if !peers.list.iter().any(|p| p.routing_id == id) {
                    break id;
                }
            }
        };
        peers.list.push(PeerEntry {
            id,
            routing_id: routing_id.clone(),
            tx,
            out,
        });
        let n = peers.list.len();
        drop(peers);
        self.peer_count.send_replace(n);
        Ok(PeerGuard {
            core: self.clone(),
            id,
            routing_id,
        })
    }

    /// Sends to the next peer in round-robin order that has room, waiting for a peer
    /// (or for room) when there is none. Returns the peer it went to.
    pub async fn send_round_robin(&self, msg: Message) -> Result<PeerId, SocketError> {
        let mut msg = Outgoing::from(msg);
        if self.ordered() {
            // Straight to the socket from here when nothing of ours waits in the
            // channel (no wake-up of the connection's task).
            msg = match self.try_send_ordered(msg) {
                Ok(id) => return Ok(id),
                Err(m) => m,
            };
        }
        let mut count = self.peer_count.subscribe();
        loop {
            // Marked seen before looking, so that a peer arriving after the look wakes us.
            count.borrow_and_update();
            msg = match self.try_send(msg) {
                Ok(id) => return Ok(id),
                Err(m) => m,
            };
            let waiting_on: Vec<_> = lock(&self.peers)
                .list
                .iter()
                .map(|p| ((p.id, p.out.clone()), p.tx.clone()))
                .collect();
            if waiting_on.is_empty() {
                if *self.shutdown.borrow() {
                    return Err(SocketError::Closed);
                }
                count.changed().await.map_err(|_| SocketError::Closed)?;
                continue;
            }
            // Every peer is at its high-water mark: the first to make room takes the
            // message (a peer that stopped reading holds up no one), unless the peer
            // set changes first.
            tokio::select! {
                Some(((id, out), permit)) = first_room(waiting_on) => {
                    if self.ordered() {
                        out.count_queued();
                    }
                    permit.send(msg);
                    let mut peers = lock(&self.peers);
                    if let Some(i) = peers.list.iter().position(|p| p.id == id) {
                        peers.rr = i + 1;
                    }
                    return Ok(id);
                }
                _ = count.changed() => {}
            }
        }
    }

    /// Sends to the next peer in round-robin order that has room, without waiting;
    /// gives the message back when no peer can take it now.
    pub fn try_send(&self, mut msg: Outgoing) -> Result<PeerId, Outgoing> {
        let ordered = self.ordered();
        let mut peers = lock(&self.peers);
        let n = peers.list.len();
        for i in 0..n {
            let idx = (peers.rr + i) % n;
            let p = &peers.list[idx];
            match enqueue(&p.tx, &p.out, msg, ordered) {
                Ok(()) => {
                    peers.rr = idx + 1;
                    return Ok(peers.list[idx].id);
                }
                Err(m) => msg = m,
            }
        }
        Err(msg)
    }

    /// Whether this socket's messages keep their order through the connection's
    /// channel (every socket but those with a direct sink: the reliable client's and
    /// the server's, whose messages are independent of each other).
    pub fn ordered(&self) -> bool {
        self.direct.get().is_none()
    }

    /// An ordered socket's message, written straight to the next peer's socket
    /// when none of its messages waits in that peer's channel; given back otherwise.
    /// When it cannot be written now, the turn still stands: it goes to that peer's
    /// channel if there is room (else back, for a peer with room), unless that peer's
    /// connection is closing.
    pub fn try_send_ordered(&self, msg: Outgoing) -> Result<PeerId, Outgoing> {
        let Some((id, out, _)) = self.next_in_turn() else {
            return Err(msg);
        };
        match out.try_send_ordered(msg) {
            Ok(()) => Ok(id),
            Err(msg) if !out.is_open() => Err(msg),
            Err(msg) => match self.link(|p| p.id == id) {
                Some((tx, _)) => enqueue(&tx, &out, msg, true).map(|()| id),
                None => Err(msg),
            },
        }
    }

    /// The channel and outbox of the first peer that `pick` chooses.
    fn link(
        &self,
        pick: impl Fn(&PeerEntry) -> bool,
    ) -> Option<(mpsc::Sender<Outgoing>, Arc<Outbox>)> {
        lock(&self.peers)
            .list
            .iter()
            .find(|p| pick(p))
            .map(|p| (p.tx.clone(), p.out.clone()))
    }

    /// The peer with the fewest unanswered direct requests, the first in round-robin
    /// order among equals (the turn moves on past it), its outbox, and whether there
    /// was a choice (only then are requests counted).
    fn next_in_turn(&self) -> Option<(PeerId, Arc<Outbox>, bool)> {
        let mut peers = lock(&self.peers);
        let n = peers.list.len();
        if n == 0 {
            return None;
        }
        let start = peers.rr % n;
        let mut idx = start;
        if n > 1 {
            let mut least = usize::MAX;
            for k in 0..n {
                let i = (start + k) % n;
                let load = peers.list[i].out.in_flight();
                if load < least {
                    (least, idx) = (load, i);
                    if load == 0 {
                        break;
                    }
                }
            }
        }
        peers.rr = idx + 1;
        let p = &peers.list[idx];
        Some((p.id, p.out.clone(), n > 1))
    }

    /// Follows why connecting or a connection last failed (see `failure`).
    pub fn watch_failure(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.failure.subscribe()
    }

    /// A connect attempt or a connection failed for `reason`.
    pub fn report_failure(&self, reason: String) {
        self.failure.send_replace(Some(reason.into()));
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

    /// [`Core::try_send`] for messages whose order relative to each other does not
    /// matter (the reliable client's requests): written straight to the least busy
    /// peer's socket from the caller's task when nobody else is writing there.
    pub fn try_send_direct(&self, msg: Outgoing) -> Result<PeerId, Outgoing> {
        let Some((id, out, count)) = self.next_in_turn() else {
            return Err(msg);
        };
        match out.try_send(msg) {
            Ok(()) => {
                if count {
                    out.request_sent();
                }
                Ok(id)
            }
            // Its outbox is full: any peer with room (not counted: the count only
            // steers the choice).
            Err(msg) => self.try_send(msg),
        }
    }

    /// Sends to one peer by connection id without waiting; `false` when that peer is
    /// gone. A peer at its high-water mark gets nothing (libzmq's REP drops there too:
    /// a peer that does not read its replies must not hold up the others).
    pub fn send_to_peer(&self, peer: PeerId, msg: Message) -> bool {
        self.link(|p| p.id == peer)
            .is_some_and(|(tx, out)| offer(&tx, &out, msg, self.ordered()))
    }

    /// Sends to one peer by routing id; `false` when there is no such peer. A peer at
    /// its high-water mark is waited for under `router_mandatory`; otherwise the
    /// message is dropped, as libzmq does.
    pub async fn send_to_routing_id(&self, rid: &[u8], msg: Message) -> bool {
        let Some((tx, out)) = self.link(|p| p.routing_id == rid) else {
            return false;
        };
        let ordered = self.ordered();
        if !self.opts.router_mandatory {
            return offer(&tx, &out, msg, ordered);
        }
        let msg = match try_direct(&out, msg, ordered) {
            Ok(()) => return true,
            Err(m) => m,
        };
        // Waits for room; counted only once the place is taken (a send dropped while
        // it waits leaves no count behind).
        let Ok(permit) = tx.reserve().await else {
            return false;
        };
        if ordered {
            out.count_queued();
        }
        permit.send(msg);
        true
    }

    pub fn has_peer(&self, peer: PeerId) -> bool {
        lock(&self.peers).list.iter().any(|p| p.id == peer)
    }

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
                            engine::run(core, io).await;
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
    /// whenever it ends, until disconnected or closed.
    pub fn connect(self: &Arc<Core>, addr: &str) -> Result<(), SocketError> {
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
                match endpoint::connect(&ep).await {
                    Ok(io) => {
                        if engine::run(core.clone(), io).await {
                            backoff.reset();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %ep, error = %e, "connect failed");
                        core.report_failure(e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::Metadata;

    struct TestPeer {
        _guard: PeerGuard,
        rx: mpsc::Receiver<Outgoing>,
        out: Arc<Outbox>,
    }

    fn peer(core: &Arc<Core>, id: PeerId, open: bool) -> TestPeer {
        let (tx, rx) = mpsc::channel(16);
        let out = Arc::new(Outbox::new(Box::new(tokio::io::sink()), 1 << 20));
        out.set_open(open);
        let info = PeerInfo {
            socket_type: SocketType::Router,
            identity: Bytes::new(),
            minor: 1,
            metadata: Metadata::new(),
            public_key: None,
            user: None,
        };
        let guard = core.add_peer(id, &info, tx, out.clone()).unwrap();
        TestPeer {
            _guard: guard,
            rx,
            out,
        }
    }

    async fn send_four(core: &Arc<Core>) -> Vec<PeerId> {
        let mut to = Vec::new();
        for i in 0..4u8 {
            to.push(core.send_round_robin(Message::from(vec![i])).await.unwrap());
        }
        to
    }

    /// A peer whose turn it is keeps it when its socket cannot be written at once
    /// (here: a message of its waits in its channel, so a direct write would
    /// overtake it): the message goes behind it instead of to the next peer.
    #[tokio::test]
    async fn round_robin_keeps_the_turn_of_a_peer_not_writable_at_once() {
        let (core, _inbound) = Core::new(SocketType::Dealer, SocketOptions::default());
        let mut a = peer(&core, 1, true);
        let mut b = peer(&core, 2, true);
        a.out.count_queued();
        assert_eq!(send_four(&core).await, [1, 2, 1, 2]);
        // A's two went to its channel, in order; B's were written to its socket.
        for want in [0u8, 2] {
            assert_eq!(a.rx.try_recv().unwrap().frames, [Bytes::from(vec![want])]);
        }
        assert!(a.rx.try_recv().is_err());
        assert!(b.rx.try_recv().is_err());
    }

    /// A peer whose connection is closing (still in the table until its task ends)
    /// gives its turn away: what would wait in its channel would die with it.
    #[tokio::test]
    async fn round_robin_passes_over_a_closing_peer() {
        let (core, _inbound) = Core::new(SocketType::Dealer, SocketOptions::default());
        let mut a = peer(&core, 1, false);
        let _b = peer(&core, 2, true);
        assert_eq!(send_four(&core).await, [2, 2, 2, 2]);
        assert!(a.rx.try_recv().is_err());
    }
}
