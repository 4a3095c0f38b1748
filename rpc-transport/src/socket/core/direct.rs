//! Messages from the connection tasks, and the direct sink that takes them without
//! the socket's queue (the reliable client's and the server's).

use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::PeerId;
use crate::message::{Message, Outgoing};
use crate::socket::wake_line::WakeLine;

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
    /// The peer closed its connection behind this message (found by the read-ahead of
    /// a socket whose direct sink answers): no answer can reach it.
    pub peer_gone: bool,
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
