//! The sending side of one connection, shared by its task and the senders.
//!
//! The connection task writes what the protocol and the socket's channel queue for it.
//! A sender (a call of the reliable client, or any socket's `send` while none of its
//! messages waits in the channel: see [`Outbox::try_send_ordered`]) writes its message
//! itself, from its own task, when nobody else is writing (a `try_lock`), or hands it
//! to the one who is: the message leaves without waking the connection task. When the
//! socket does not take everything at once, the rest stays queued and the connection
//! task is woken to finish it (its waker is the one registered with the socket).

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;

use crate::message::Outgoing;
use crate::sync::lock;
use crate::zmtp::curve::Sealer;
use crate::zmtp::{TxQueue, ZmtpError};

/// IoSlices per vectored write.
const MAX_SLICES: usize = 64;

pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    /// Messages handed in while somebody else was writing: whoever holds `inner`
    /// next writes them along (one `writev` for several callers).
    handed: Mutex<Vec<Outgoing>>,
    handed_n: AtomicUsize,
    /// Bytes left in the queue at the last unlock: the connection task skips the lock
    /// while this and `handed_n` are zero and it has nothing of its own to write.
    left: AtomicUsize,
    /// Most bytes queued before senders must go through the connection task.
    high: usize,
    /// Messages of a socket whose messages keep their order (every socket but the
    /// reliable client's and the server's) waiting in the connection's channel, or
    /// taken from it and not yet in `queue`: while any do, that socket's next message
    /// must follow them through the channel (see [`Outbox::try_send_ordered`]).
    queued: AtomicUsize,
    /// Requests sent straight to this peer ([`Core::try_send_direct`]) whose reply has
    /// not come back yet: the reliable client's next request goes to the connection
    /// with the fewest.
    ///
    /// [`Core::try_send_direct`]: super::core::Core::try_send_direct
    in_flight: AtomicUsize,
    /// `Inner::open`, readable without the lock: a sender looks before anything else.
    open: AtomicBool,
    /// See [`Outbox::set_closing`].
    closing: AtomicBool,
}

/// Most messages waiting in `handed`.
const HANDED_MAX: usize = 1024;

/// While the connection task has corked the outbox, senders hold fewer than this many
/// messages: the sender that would hold this many writes them all, so that the peer
/// gets work in groups while the callers are still running (holding every caller's
/// request for one write made client and server take turns, each idle while the other
/// worked; docs/ARCHITECTURE.md has the figure).
const CORK_MESSAGES: usize = 4;

/// Nor more bytes than this: a larger request is written at once (at 4 KiB, holding
/// gained nothing).
const CORK_BYTES: usize = 4096;

struct Inner {
    write: Writer,
    queue: TxQueue,
    /// The connection task, to wake when bytes are left for it.
    task: Option<Waker>,
    /// Messages may be written (handshake done, not closing).
    open: bool,
    /// Senders queue without writing (up to [`CORK_MESSAGES`] and [`CORK_BYTES`]):
    /// the connection task writes for them at its next flush, which it has promised.
    corked: bool,
    /// Messages held while corked.
    held: usize,
    /// The socket took less than was queued: the rest is the connection task's.
    stalled: bool,
    /// A CURVE connection's sending half: every frame is sealed as it is queued
    /// here, whoever queues it, so that boxes reach the wire in nonce order.
    /// (Boxed: the lock's state stays small for NULL connections.)
    sealer: Option<Box<Sealer>>,
    /// Sealing failed (nonces used up): the connection must end.
    broken: bool,
}

impl Inner {
    /// Queues a sender's message (sealed, on a CURVE connection).
    fn push(&mut self, m: &Outgoing) {
        let Some(sealer) = &mut self.sealer else {
            self.queue.push_message(&m.frames, m.joined);
            return;
        };
        if let Err(e) = sealer.seal_behind(&mut self.queue, &[], &m.frames, m.joined) {
            self.break_off(e);
        }
    }

    /// Queues what the connection task queued (its frames sealed, on a CURVE
    /// connection whose sealer was handed here).
    fn take(&mut self, from: &mut TxQueue) {
        let Some(sealer) = &mut self.sealer else {
            self.queue.append(from);
            return;
        };
        let queue = &mut self.queue;
        if let Err(e) = from.drain_frames(|flags, parts| sealer.seal_into(queue, flags, parts)) {
            self.break_off(e);
        }
    }

    fn break_off(&mut self, e: ZmtpError) {
        tracing::error!(error = %e, "cannot seal: closing the connection");
        self.open = false;
        self.broken = true;
    }
}

impl Outbox {
    pub fn new(write: Writer, high: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner {
                write,
                // Empty until used: an idle connection holds no buffer here.
                queue: TxQueue::default(),
                task: None,
                open: false,
                corked: false,
                held: 0,
                stalled: false,
                sealer: None,
                broken: false,
            }),
            handed: Mutex::new(Vec::new()),
            handed_n: AtomicUsize::new(0),
            left: AtomicUsize::new(0),
            high,
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The writer if nobody else holds it.
    fn try_writer(&self) -> Option<MutexGuard<'_, Inner>> {
        match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// True when nothing waits in the outbox: no queued bytes, no handed messages.
    pub fn idle(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0 && self.handed_n.load(Ordering::Acquire) == 0
    }

    /// Requests sent to this peer directly and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One more request sent directly.
    pub fn request_sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A message came from this peer: one request fewer waits (a peer that sends what
    /// nobody asked for only brings the count to zero).
    pub fn answer_received(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Lets senders write messages (after the handshake), or stops them (closing).
    pub fn set_open(&self, open: bool) {
        let mut inner = self.lock();
        inner.open = open;
        self.open.store(open, Ordering::Release);
    }

    /// From now on, frames are sealed with `sealer` as they are queued here, the
    /// connection task's and senders' alike; `from` (what the connection queued
    /// before handing its sealer out, sealed already) goes first.
    pub fn seal_with(&self, sealer: Sealer, from: &mut TxQueue) {
        let mut inner = self.lock();
        inner.queue.append(from);
        inner.sealer = Some(Box::new(sealer));
        // Not idle: the connection task's next flush writes them.
        self.left.store(inner.queue.len(), Ordering::Release);
    }

    /// The connection is closing: nothing more may be written or queued for it.
    pub fn set_closing(&self) {
        self.set_open(false);
        self.closing.store(true, Ordering::Release);
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub fn backlog(&self) -> usize {
        self.lock().queue.len()
    }

    /// The connection task: queues `from` and writes as much as the socket takes,
    /// with the task's own context. Returns the bytes left: when some are, the task is
    /// registered to be woken once the socket takes more. With `cork`, senders hold
    /// their messages until the next flush, which the task must then make soon.
    ///
    /// `taken`: messages of an ordered socket that `from` carries out of the channel.
    pub fn flush(
        &self,
        cx: &mut Context<'_>,
        from: &mut TxQueue,
        cork: bool,
        mut taken: usize,
    ) -> std::io::Result<usize> {
        loop {
            let mut g = self.lock();
            let inner = &mut *g;
            inner.corked = cork;
            inner.held = 0;
            // Handed messages first: an ordered socket's message is handed in only
            // when none of its own waits in the channel, so those in `from` are newer.
            self.take_handed(inner);
            inner.take(from);
            if inner.broken {
                return Err(std::io::Error::other("CURVE nonces used up"));
            }
            if taken > 0 {
                self.queued.fetch_sub(taken, Ordering::Release);
                taken = 0;
            }
            if !inner.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                inner.task = Some(cx.waker().clone());
            }
            while !inner.queue.is_empty() {
                match write_some(&mut inner.write, &mut inner.queue, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            inner.stalled = !inner.queue.is_empty();
            let left = inner.queue.len();
            self.left.store(left, Ordering::Release);
            drop(g);
            // A caller that handed a message in while this held the writer, and then
            // found it still held, left the message to this: look again, as senders
            // do after letting go (a store then a load on each side). With bytes left,
            // the socket wakes this task, whose next flush takes them.
            fence(Ordering::SeqCst);
            if left > 0 || self.handed_n.load(Ordering::Acquire) == 0 {
                return Ok(left);
            }
        }
    }

    /// Moves the handed-in messages to `queue`.
    fn take_handed(&self, inner: &mut Inner) {
        if self.handed_n.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut h = lock(&self.handed);
        for m in h.drain(..) {
            inner.push(&m);
        }
        self.handed_n.store(0, Ordering::Release);
    }

    /// A sender: queues `msg` and writes what the socket takes now, without waiting.
    /// While another sender writes, the message is handed to it. Gives the message
    /// back when the outbox is closed or full (then the socket's queue and the
    /// connection task take it).
    pub fn try_send(&self, msg: Outgoing) -> Result<(), Outgoing> {
        // Closed (or not open yet): not even handed to the task.
        if !self.open.load(Ordering::Acquire) {
            return Err(msg);
        }
        let g = match self.try_writer() {
            Some(g) => g,
            None => {
                {
                    let mut h = lock(&self.handed);
                    if h.len() >= HANDED_MAX {
                        return Err(msg);
                    }
                    h.push(msg);
                    self.handed_n.store(h.len(), Ordering::Release);
                }
                // Either the writer, after letting go, sees the message, or this sees
                // the writer gone (a store then a load on each side: SeqCst fences).
                fence(Ordering::SeqCst);
                // The writer may have let go before seeing it: then write it here.
                if let Some(g) = self.try_writer() {
                    // Nothing of ours can come back: `first` is None.
                    let _ = self.write_held(g, None);
                }
                return Ok(());
            }
        };
        self.write_held(g, Some(msg))
    }

    /// [`Outbox::try_send`] for a socket whose messages keep their order: only when
    /// none of its messages waits in the connection's channel (the message would
    /// overtake them), else the message is given back for the channel.
    pub fn try_send_ordered(&self, msg: Outgoing) -> Result<(), Outgoing> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Err(msg);
        }
        self.try_send(msg)
    }

    /// An ordered socket puts a message in the connection's channel (counted before
    /// it goes in, so that no later message overtakes it).
    pub fn count_queued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Writes `first` and what was handed in, holding the writer; after letting go,
    /// looks again for messages handed in meanwhile (nobody else may have seen them).
    fn write_held<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        mut first: Option<Outgoing>,
    ) -> Result<(), Outgoing> {
        loop {
            let inner = &mut *g;
            if !inner.open || inner.queue.len() >= self.high {
                // Handed messages stay for the connection task (or die with a closing
                // connection, as queued ones do).
                return first.map_or(Ok(()), Err);
            }
            let hold = inner.corked
                && inner.held + 1 < CORK_MESSAGES
                && inner.queue.len() + first.as_ref().map_or(0, Outgoing::byte_len) < CORK_BYTES;
            let waiting = inner.stalled || hold;
            // Handed messages first: they were sent before `first`.
            self.take_handed(inner);
            if let Some(m) = first.take() {
                inner.push(&m);
                if hold {
                    inner.held += 1;
                }
            }
            // Bytes already left for the connection task: it writes these too.
            if !waiting {
                inner.held = 0;
                // A context that wakes nobody: what cannot be written now is the
                // connection task's, woken to take over (its own waker is the one that
                // must be registered with the socket).
                let mut cx = Context::from_waker(Waker::noop());
                while !inner.queue.is_empty() {
                    match write_some(&mut inner.write, &mut inner.queue, &mut cx) {
                        Poll::Ready(Ok(())) => {}
                        // An error or a full socket: the connection task sees it again.
                        _ => {
                            inner.stalled = true;
                            // Stored before the wake, so that the woken task sees it.
                            self.left.store(inner.queue.len(), Ordering::Release);
                            if let Some(t) = &inner.task {
                                t.wake_by_ref();
                            }
                            break;
                        }
                    }
                }
            } else {
                self.left.store(inner.queue.len(), Ordering::Release);
            }
            drop(g);
            fence(Ordering::SeqCst);
            if self.handed_n.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            // Somebody else may hold it now, and see them.
            let Some(next) = self.try_writer() else {
                return Ok(());
            };
            g = next;
        }
    }
}

/// One vectored write from the front of `queue`.
fn write_some(
    w: &mut Writer,
    queue: &mut TxQueue,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    // Small frames share one slice: most writes have a few (an array of 64 made
    // ready for each write was ~130 instructions).
    if queue.slice_count() <= FEW_SLICES {
        write_with::<FEW_SLICES>(w, queue, cx)
    } else {
        write_with::<MAX_SLICES>(w, queue, cx)
    }
}

/// Slices of a write of a few messages.
const FEW_SLICES: usize = 4;

fn write_with<const N: usize>(
    w: &mut Writer,
    queue: &mut TxQueue,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let mut slices = [IoSlice::new(&[]); N];
    let n = queue.io_slices(&mut slices);
    let w = Pin::new(w);
    // One slice (every small message: its frames share one) goes out with `send`:
    // the kernel's `writev` path costs more (iovec import, file-level hooks).
    let wrote = match &slices[..n] {
        [one] => w.poll_write(cx, one),
        all => w.poll_write_vectored(cx, all),
    };
    match wrote {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            queue.advance(n);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// Runs once, inside the next write: whatever a caller does while the writer is
    /// held.
    type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

    /// A socket that takes at most `room` bytes, then would block.
    #[derive(Clone, Default)]
    struct Sock {
        got: Arc<Mutex<Vec<u8>>>,
        room: Arc<AtomicUsize>,
        during_write: Hook,
    }

    impl AsyncWrite for Sock {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if let Some(f) = self.during_write.lock().unwrap().take() {
                f();
            }
            let n = buf.len().min(self.room.load(Ordering::SeqCst));
            if n == 0 {
                return Poll::Pending;
            }
            self.room.fetch_sub(n, Ordering::SeqCst);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn msg(s: &'static str) -> Outgoing {
        Message::from(Bytes::from_static(s.as_bytes())).into()
    }

    fn wire(s: &str) -> Vec<u8> {
        let mut v = vec![0u8, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn callers_write_straight_to_the_socket_and_hand_the_rest_to_the_task() {
        let sock = Sock::default();
        let out = Outbox::new(Box::new(sock.clone()), 64);
        // Before the handshake nothing is written by callers.
        assert!(out.try_send(msg("early")).is_err());
        // The task registers (nothing to write), then opens the outbox.
        let task = Arc::new(Flag::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(out.flush(&mut cx, &mut TxQueue::new(), false, 0).unwrap() == 0);
        out.set_open(true);

        sock.room.store(1000, Ordering::SeqCst);
        out.try_send(msg("hello")).unwrap();
        assert_eq!(
            *sock.got.lock().unwrap(),
            wire("hello"),
            "written by the caller"
        );
        assert_eq!(out.backlog(), 0);
        assert!(!task.0.load(Ordering::SeqCst), "the task was not needed");

        // The socket takes 3 bytes: the rest waits, and the task is woken for it.
        sock.room.store(3, Ordering::SeqCst);
        out.try_send(msg("world")).unwrap();
        assert_eq!(out.backlog(), 4);
        assert!(task.0.load(Ordering::SeqCst));
        // Further messages queue behind it without writing out of order.
        out.try_send(msg("!")).unwrap();
        assert_eq!(out.backlog(), 7);
        sock.room.store(1000, Ordering::SeqCst);
        assert!(out.flush(&mut cx, &mut TxQueue::new(), false, 0).unwrap() == 0);
        let mut expect = wire("hello");
        expect.extend(wire("world"));
        expect.extend(wire("!"));
        assert_eq!(*sock.got.lock().unwrap(), expect);

        // Past the high-water mark, or closed: the message is given back.
        sock.room.store(0, Ordering::SeqCst);
        let mut taken = 0;
        while out.try_send(msg("0123456789")).is_ok() {
            taken += 1;
            assert!(taken < 100);
        }
        assert_eq!(taken, 6, "12 bytes each, refused from 64 on");
        assert!(out.backlog() >= 64);
        out.set_open(false);
        sock.room.store(1000, Ordering::SeqCst);
        assert!(out.flush(&mut cx, &mut TxQueue::new(), false, 0).unwrap() == 0);
        assert!(out.try_send(msg("closed")).is_err());
    }

    #[test]
    fn a_message_handed_in_while_the_task_writes_is_written_by_it() {
        // A caller hands its message over while the connection task holds the writer
        // inside `flush` (the socket's write runs the caller). Once the task lets go,
        // the message must not wait for the task's next wake-up: the task writes it.
        let sock = Sock::default();
        sock.room.store(1 << 20, Ordering::SeqCst);
        let out = Arc::new(Outbox::new(Box::new(sock.clone()), 1 << 20));
        let task = Arc::new(Flag::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            out.flush(&mut cx, &mut TxQueue::new(), false, 0).unwrap(),
            0
        );
        out.set_open(true);
        let caller = Arc::downgrade(&out);
        *sock.during_write.lock().unwrap() = Some(Box::new(move || {
            let out = caller.upgrade().unwrap();
            out.try_send(msg("late")).unwrap();
        }));
        let mut own = TxQueue::new();
        own.push_message(&[Bytes::from_static(b"ping")], 1);
        assert_eq!(out.flush(&mut cx, &mut own, false, 0).unwrap(), 0);
        let mut expect = wire("ping");
        expect.extend(wire("late"));
        assert_eq!(
            *sock.got.lock().unwrap(),
            expect,
            "the handed message was left"
        );
    }

    #[test]
    fn writes_of_many_slices_keep_every_byte_in_order() {
        // Ten frames of 3000 bytes each stay slices of their own: more than a small
        // write's array holds.
        let sock = Sock::default();
        sock.room.store(usize::MAX, Ordering::SeqCst);
        let out = Outbox::new(Box::new(sock.clone()), 1 << 20);
        let task = Arc::new(Flag::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut q = TxQueue::new();
        let mut expect = Vec::new();
        for i in 0..10u8 {
            let body = vec![i; 3000];
            q.push_message(&[Bytes::from(body.clone())], 1);
            let mut head = bytes::BytesMut::new();
            crate::zmtp::frame::put_header(&mut head, 0, body.len());
            expect.extend_from_slice(&head);
            expect.extend_from_slice(&body);
        }
        assert!(q.slice_count() > FEW_SLICES);
        assert_eq!(out.flush(&mut cx, &mut q, false, 0).unwrap(), 0);
        assert_eq!(*sock.got.lock().unwrap(), expect);
    }

    #[test]
    fn a_corked_outbox_holds_small_groups_until_the_task_flushes() {
        let sock = Sock::default();
        sock.room.store(1 << 20, Ordering::SeqCst);
        let out = Outbox::new(Box::new(sock.clone()), 1 << 20);
        let task = Arc::new(Flag::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        out.set_open(true);
        let written = || sock.got.lock().unwrap().len();

        // Corked: the first CORK_MESSAGES - 1 are held, the next writes them all.
        assert_eq!(out.flush(&mut cx, &mut TxQueue::new(), true, 0).unwrap(), 0);
        for _ in 0..CORK_MESSAGES - 1 {
            out.try_send(msg("abc")).unwrap();
        }
        assert_eq!(written(), 0, "held");
        assert!(!out.idle(), "the task sees held messages");
        out.try_send(msg("abc")).unwrap();
        assert_eq!(written(), CORK_MESSAGES * 5, "a group leaves in one go");

        // Held ones leave with the task's next flush, which uncorks.
        out.try_send(msg("abc")).unwrap();
        assert_eq!(written(), CORK_MESSAGES * 5);
        assert_eq!(
            out.flush(&mut cx, &mut TxQueue::new(), false, 0).unwrap(),
            0
        );
        assert_eq!(written(), (CORK_MESSAGES + 1) * 5);
        assert!(out.idle());
        out.try_send(msg("abc")).unwrap();
        assert_eq!(
            written(),
            (CORK_MESSAGES + 2) * 5,
            "uncorked: written at once"
        );

        // A large message is not held even when corked.
        assert_eq!(out.flush(&mut cx, &mut TxQueue::new(), true, 0).unwrap(), 0);
        let big = Bytes::from(vec![7u8; CORK_BYTES]);
        out.try_send(Message::from(big).into()).unwrap();
        assert!(written() > (CORK_MESSAGES + 2) * 5 + CORK_BYTES);
        assert!(out.idle());
        assert!(
            !task.0.load(Ordering::SeqCst),
            "nothing was left for the task"
        );
    }

    #[test]
    fn concurrent_callers_lose_nothing_and_strand_nothing() {
        // Senders on four threads at once, a socket that takes everything: whoever
        // writes takes the others' messages along, and when all have returned, every
        // message is on the wire without the connection task's help.
        let sock = Sock::default();
        sock.room.store(usize::MAX / 2, Ordering::SeqCst);
        let out = Arc::new(Outbox::new(Box::new(sock.clone()), usize::MAX));
        out.set_open(true);
        let per = 2000;
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let out = out.clone();
                s.spawn(move || {
                    for i in 0..per {
                        let body = Bytes::from(format!("{t}:{i:05}").into_bytes());
                        let mut m: Outgoing = Message::from(body).into();
                        // Given back when many wait for a descheduled writer (the
                        // client then uses the connection task's queue): try again.
                        while let Err(back) = out.try_send(m) {
                            m = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        assert_eq!(out.handed_n.load(Ordering::SeqCst), 0, "nothing stranded");
        let got = sock.got.lock().unwrap().clone();
        let mut seen = std::collections::HashSet::new();
        let mut at = 0;
        while at < got.len() {
            assert_eq!(got[at], 0, "one-frame messages");
            let n = usize::from(got[at + 1]);
            seen.insert(got[at + 2..at + 2 + n].to_vec());
            at += 2 + n;
        }
        assert_eq!(seen.len(), 4 * per, "every message once, whole");
    }
}
