//! How a socket's messages reach its peers: round-robin (waiting for room when every
//! peer is full), the least busy peer first for independent requests, one peer by
//! connection or routing id; straight to the peer's socket when nothing of this
//! socket waits in its channel, else through the channel.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::mpsc;

use super::{Core, PeerId};
use crate::message::{Message, Outgoing};
use crate::socket::outbox::Outbox;
use crate::socket::SocketError;
use crate::sync::lock;

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

impl Core {
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
            Err(msg) if out.is_closing() => Err(msg),
            Err(msg) => match self.link(|p| p.id == id) {
                Some((tx, _)) => enqueue(&tx, &out, msg, true).map(|()| id),
                None => Err(msg),
            },
        }
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::socket::core::PeerGuard;
    use crate::socket::SocketOptions;
    use crate::zmtp::{Metadata, PeerInfo, SocketType};

    struct TestPeer {
        _guard: PeerGuard,
        rx: mpsc::Receiver<Outgoing>,
        out: Arc<Outbox>,
    }

    fn peer(core: &Arc<Core>, id: PeerId, open: bool) -> TestPeer {
        let (tx, rx) = mpsc::channel(16);
        let out = Arc::new(Outbox::new(Box::new(tokio::io::sink()), 1 << 20));
        if open {
            out.set_open(true);
        } else {
            out.set_closing();
        }
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

    /// A peer whose outbox is not open (its handshake not done yet) keeps its turn:
    /// the message goes to its channel, not to the next peer. (Every message went to
    /// one peer of a CURVE DEALER when CURVE outboxes stayed closed.)
    #[tokio::test]
    async fn round_robin_keeps_the_turn_of_a_peer_whose_outbox_is_closed() {
        let (core, _inbound) = Core::new(SocketType::Dealer, SocketOptions::default());
        let mut a = peer(&core, 1, true);
        let mut b = peer(&core, 2, true);
        a.out.set_open(false);
        b.out.set_open(false);
        assert_eq!(send_four(&core).await, [1, 2, 1, 2]);
        for want in [0u8, 2] {
            assert_eq!(a.rx.try_recv().unwrap().frames, [Bytes::from(vec![want])]);
        }
        for want in [1u8, 3] {
            assert_eq!(b.rx.try_recv().unwrap().frames, [Bytes::from(vec![want])]);
        }
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
