//! The tokio task that drives one connection: reads bytes into the sans-IO
//! [`Connection`], writes what it queues, hands messages to the socket and takes the
//! messages the socket routes to this peer. One task per connection, no other hop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::core::{Answers, Core, Inbound, PeerGuard};
use super::endpoint::Io;
use super::outbox::Outbox;
use super::recv_buf::RecvBuf;
use super::wake_line::WakeLine;
use crate::message::Outgoing;
use crate::timer::Alarm;
use crate::zmtp::{Connection, ConnectionConfig, Event, ZmtpError};

/// Stop taking messages from the socket while this much waits to be written.
const TX_HIGH: usize = 256 * 1024;
/// Time allowed to deliver an ERROR command before closing.
const ERROR_FLUSH: Duration = Duration::from_millis(100);

/// How a connection ended.
#[derive(Debug)]
enum End {
    Eof,
    Io(std::io::Error),
    Protocol(ZmtpError),
    Rejected(super::SocketError),
    Shutdown,
}

/// A wait for room in the socket's receive queue; `None` once the socket is gone.
type RoomWait = Pin<Box<dyn Future<Output = Option<mpsc::OwnedPermit<Inbound>>> + Send>>;

/// Runs one connection until it ends. Returns whether the handshake completed (the
/// connect loop resets its backoff then).
pub(crate) async fn run(core: Arc<Core>, io: Io) -> bool {
    let id = core.next_peer_id();
    let span = tracing::debug_span!("zmtp", peer = %io.peer, conn = id);
    let mut handshaken = false;
    let end = drive(&core, io, id, &mut handshaken)
        .instrument(span.clone())
        .await;
    span.in_scope(|| match &end {
        End::Eof | End::Shutdown => tracing::debug!(?end, "connection closed"),
        End::Io(e) => tracing::debug!(error = %e, "connection lost"),
        End::Protocol(e) => tracing::warn!(error = %e, "closing connection: protocol violation"),
        End::Rejected(e) => tracing::warn!(error = %e, "closing connection: rejected"),
    });
    if let Some(mut reason) = end.reason(handshaken) {
        if !handshaken
            && matches!(end, End::Eof)
            && matches!(
                core.opts.mechanism,
                crate::zmtp::Mechanism::CurveClient { .. }
            )
        {
            // A CURVE server closes at once on a HELLO it cannot open.
            reason.push_str(" (is the server's public key right?)");
        }
        core.report_failure(reason);
    }
    handshaken
}

impl End {
    /// Why the connection ended, as its owner should hear it; `None` for a stop asked
    /// for.
    fn reason(&self, handshaken: bool) -> Option<String> {
        let during = if handshaken {
            ""
        } else {
            " during the handshake"
        };
        Some(match self {
            End::Shutdown => return None,
            End::Eof => format!("connection closed by the peer{during}"),
            End::Io(e) => format!("connection lost{during}: {e}"),
            End::Protocol(e) if handshaken => format!("protocol violation: {e}"),
            End::Protocol(ZmtpError::PeerError(r)) => format!("refused by the peer: {r}"),
            End::Protocol(e) => format!("handshake failed: {e}"),
            End::Rejected(e) => format!("connection rejected: {e}"),
        })
    }
}

fn connection_config(core: &Core) -> ConnectionConfig {
    let o = &core.opts;
    ConnectionConfig {
        socket_type: core.kind,
        identity: o.identity.clone(),
        max_message_size: o.max_message_size as u64,
        handshake_timeout: o.handshake_timeout,
        heartbeat: o.heartbeat,
        heartbeat_zmtp30: o.heartbeat_zmtp30,
        properties: Vec::new(),
        mechanism: o.mechanism.clone(),
        discard_oversize: o.discard_oversize,
    }
}

/// What one pass of [`Engine::poll`] ends with.
enum Exit {
    /// Stop signal: linger, then close.
    Stop,
    /// The connection failed the protocol: send the queued ERROR, then close.
    Failed(ZmtpError),
    /// Closed for this reason.
    End(End),
}

/// The state of one connection's task, driven by one poll function: each wake-up
/// polls every source once (and again only while one of them makes progress),
/// instead of re-arming a `select!` of freshly made futures per event.
struct Engine<'a> {
    core: &'a Arc<Core>,
    id: u64,
    conn: Connection,
    read: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    out: Arc<Outbox>,
    /// Bytes the outbox held after the last flush.
    backlog: usize,
    out_rx: mpsc::Receiver<Outgoing>,
    out_tx: Option<mpsc::Sender<Outgoing>>,
    reply_tx: Option<mpsc::Sender<Outgoing>>,
    guard: Option<PeerGuard>,
    pending: Option<Inbound>,
    /// Messages taken from `out_rx` since the last flush.
    taken: usize,
    /// The wait for room in the socket's queue for `pending` (only under backpressure).
    room: Option<RoomWait>,
    rbuf: RecvBuf,
    /// The connection's deadline (handshake, heartbeats), on the socket's clock: see
    /// `crate::timer`.
    alarm: Alarm,
    handshaken: bool,
    /// Answers a direct sink gave at once in this poll.
    answered: usize,
    /// Messages a direct sink was handed in this poll.
    delivered: usize,
    /// Callers the sink asked to wake in this pass.
    woken: Vec<Waker>,
    /// Senders' messages are held in the outbox until this task's next poll.
    corked: bool,
    /// A second receiver of the stop signal, read without a lock on each pass; the
    /// stop future is polled (it locks to look at its waker) only when it fires or
    /// the task's waker is not the one it holds.
    stop_check: watch::Receiver<bool>,
    stop_waker: Option<Waker>,
    /// The socket's queue for this peer last answered Pending to this task's waker:
    /// while it stays empty, it will wake the task, and polling it (a waker
    /// registration each time) can wait.
    rx_armed: bool,
    /// The peer's CURVE public key, once the handshake authenticated it.
    peer_key: Option<crate::zmtp::curve::PublicKey>,
    /// The peer's PLAIN user name, once the server allowed it.
    peer_user: Option<Arc<str>>,
}

impl<'a> Engine<'a> {
    /// A direct sink that answers has this peer's answers piling up (see
    /// [`Direct::answers`](super::core::Direct)): take nothing more from the peer.
    fn answers_wait(&self) -> bool {
        self.answering() && self.unsent() >= TX_HIGH
    }

    /// The wake line of the socket's direct sink, if it has one.
    fn wake_line(&self) -> Option<&'a WakeLine> {
        self.core.direct.get().and_then(|d| d.wake_line.as_deref())
    }

    /// The socket's direct sink answers what it receives (a server, not a client).
    fn answering(&self) -> bool {
        self.core.direct.get().is_some_and(|d| d.answers)
    }

    /// Bytes waiting to be written: left in the outbox at the last flush, and queued
    /// since.
    fn unsent(&self) -> usize {
        self.backlog + self.conn.transmit_len()
    }

    /// Hands over what the connection decoded, until the socket's queue is full or a
    /// direct sink had its batch; true when decoded messages are left.
    fn deliver(&mut self) -> Result<bool, End> {
        let (mut budget, small) = match self.core.direct.get() {
            _ if self.answers_wait() => (0, None),
            Some(d) => (d.batch, d.small_answers.filter(|_| several_cpus())),
            None => (usize::MAX, None),
        };
        let mut handled = 0;
        while self.pending.is_none() {
            if budget == 0 {
                return Ok(true);
            }
            let (msg, too_large) = match self.conn.poll_event() {
                None => break,
                Some(Event::Ready(info)) => {
                    let Some(tx) = self.out_tx.take() else { break };
                    self.reply_tx = Some(tx.clone());
                    // Open before the peer can be found: a sender that finds it may
                    // write at once (a closed outbox sends it to the channel).
                    // A CURVE connection seals every frame in order: callers do not
                    // write to it directly.
                    self.out.set_open(!self.conn.is_encrypted());
                    match self.core.add_peer(self.id, &info, tx, self.out.clone()) {
                        Ok(g) => {
                            tracing::debug!(peer_type = %info.socket_type, minor = info.minor, "handshake complete");
                            self.guard = Some(g);
                            self.peer_key = info.public_key;
                            self.peer_user = info.user.as_deref().map(Arc::from);
                            self.handshaken = true;
                            self.core.report_handshake();
                        }
                        Err(e) => return Err(End::Rejected(e)),
                    }
                    continue;
                }
                Some(Event::TooLarge { size, .. }) if !self.answering() => {
                    // Only a server can answer it; a socket's queue has no place for
                    // a message it did not receive whole.
                    tracing::warn!(size, "message over the size limit dropped");
                    continue;
                }
                Some(Event::Message(msg)) => (msg, None),
                Some(Event::TooLarge { head, size }) => (head, Some(size)),
            };
            let (Some(g), Some(reply)) = (&self.guard, &self.reply_tx) else {
                continue;
            };
            let inbound = Inbound {
                peer: self.id,
                routing_id: g.routing_id.clone(),
                msg,
                reply: reply.clone(),
                peer_key: self.peer_key,
                peer_user: self.peer_user.clone(),
                too_large,
            };
            if let Some(direct) = self.core.direct.get() {
                self.out.answer_received();
                let mut answers = Answers {
                    conn: &mut self.conn,
                    count: &mut self.answered,
                    woken: &mut self.woken,
                };
                (direct.sink)(inbound, &mut answers);
                self.delivered += 1;
                budget -= 1;
                handled += 1;
                if small.is_some_and(|(n, bytes)| handled == n && self.conn.transmit_len() < bytes)
                {
                    budget = 0;
                }
                continue;
            }
            match self.core.inbound_tx.try_send(inbound) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(i)) => self.pending = Some(i),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Shutdown),
            }
        }
        Ok(false)
    }

    fn poll(&mut self, cx: &mut Context<'_>, stopped: Pin<&mut impl Future>) -> Poll<Exit> {
        let registered = self
            .stop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !registered {
            self.rx_armed = false;
        }
        if !registered || self.stop_check.has_changed().unwrap_or(true) {
            if stopped.poll(cx).is_ready() {
                return Poll::Ready(Exit::Stop);
            }
            self.stop_waker = Some(cx.waker().clone());
        }
        self.answered = 0;
        self.delivered = 0;
        loop {
            let left = match self.deliver() {
                Err(end) => return Poll::Ready(Exit::End(end)),
                Ok(left) => left,
            };
            if !self.woken.is_empty() {
                match self.wake_line() {
                    Some(r) => r.hand_over(&mut self.woken),
                    None => self.woken.drain(..).for_each(Waker::wake),
                }
            }
            let mut progress = false;

            // A message waiting for room in the socket's queue. The wait is kept
            // across polls: a wait dropped unfinished leaves the queue's line, and
            // the room made by the program's next `recv` would wake no one.
            if let Some(msg) = self.pending.take() {
                let room = self.room.get_or_insert_with(|| {
                    let tx = self.core.inbound_tx.clone();
                    Box::pin(async move { tx.reserve_owned().await.ok() })
                });
                match room.as_mut().poll(cx) {
                    Poll::Ready(Some(permit)) => {
                        self.room = None;
                        permit.send(msg);
                        progress = true;
                    }
                    Poll::Ready(None) => return Poll::Ready(Exit::End(End::Shutdown)),
                    Poll::Pending => self.pending = Some(msg),
                }
            }

            // Everything the socket queued for this peer, while the backlog allows.
            // Stopped by the backlog's bound, the queue is not drained and will not
            // wake this task: once the write below has made room, go round again.
            let mut bounded = false;
            while self.guard.is_some() {
                if self.unsent() >= TX_HIGH {
                    bounded = true;
                    break;
                }
                if self.rx_armed && self.out_rx.is_empty() {
                    break;
                }
                match self.out_rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => {
                        self.rx_armed = false;
                        self.taken += 1;
                        if self.conn.send_frames(&m.frames, m.joined).is_err() {
                            break;
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(Exit::End(End::Shutdown)),
                    Poll::Pending => {
                        self.rx_armed = true;
                        break;
                    }
                }
            }

            // Several replies handed over at once (to the reliable client): their
            // callers' next requests are held in small groups until this task's next
            // poll, which it wakes itself for, instead of a write each (see
            // `outbox::CORK_MESSAGES`).
            let cork = self.delivered >= 2 && !self.answering();
            // One vectored write of the whole batch (with whatever callers of the
            // reliable client left in the outbox); skipped, without taking the
            // outbox's lock, when there is nothing to write, the cork stays as it is
            // and the task's waker is the one registered with the outbox.
            if cork != self.corked
                || !registered
                || !self.conn.transmit().is_empty()
                || !self.out.idle()
            {
                self.corked = cork;
                // The socket's messages taken since the last flush leave the count
                // that keeps its later ones behind them (sockets that keep order).
                let taken = std::mem::take(&mut self.taken);
                let taken = if self.core.ordered() { taken } else { 0 };
                match self.out.flush(cx, self.conn.transmit(), cork, taken) {
                    Ok(left) => self.backlog = left,
                    Err(e) => return Poll::Ready(Exit::End(End::Io(e))),
                }
            }
            // (Still past the bound, the flush registered for the socket's room.)
            if bounded && self.unsent() < TX_HIGH {
                progress = true;
            }

            // Decoded messages left: the answers so far are written; back to them
            // before reading more (unless answers pile up: the flush above registered
            // to be woken once the socket takes more).
            let answers_wait = self.answers_wait();
            if left && !answers_wait {
                progress = true;
            }
            // What arrived.
            if self.pending.is_none() && !left && !answers_wait {
                let need = self.conn.read_hint(self.rbuf.current());
                let want = self.rbuf.plan(need, || Instant::now().into_std());
                let buf = self.rbuf.current();
                buf.reserve(want);
                let room = buf.capacity() - buf.len();
                let read = std::pin::pin!(self.read.read_buf(buf));
                match read.poll(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Exit::End(End::Eof)),
                    Poll::Ready(Ok(n)) => {
                        self.rbuf.on_read(n, room);
                        if self.wake_line().is_some() {
                            // The reliable client's: whether a server is alive.
                            self.core.on_read();
                        }
                        let clock = || Instant::now().into_std();
                        let input = self
                            .conn
                            .handle_input_with_clock(self.rbuf.current(), clock);
                        if let Err(e) = input {
                            return Poll::Ready(Exit::Failed(e));
                        }
                        self.rbuf.after_decode();
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Exit::End(End::Io(e))),
                    Poll::Pending => {}
                }
            }

            // The connection's deadline: fired, or armed (again) for the next one.
            if self.alarm.take_fired() {
                if let Some(r) = self.wake_line() {
                    // No caller waits behind one that is never polled for longer.
                    r.wake_all();
                }
                if let Err(e) = self.conn.handle_timeout(Instant::now().into_std()) {
                    return Poll::Ready(Exit::Failed(e));
                }
                progress = true;
            } else {
                match self.conn.poll_timeout() {
                    Some(t) => self.alarm.arm(t, cx.waker()),
                    None => self.alarm.cancel(),
                }
            }

            if !progress {
                if self.answered == 1 && several_cpus() {
                    // One request answered (a quiet connection): one more pass, as an
                    // answer through the queue would cause. It keeps the thread from
                    // parking at once, and often finds the peer's next message (waking
                    // a halted vCPU costs tens of microseconds). Under load the pass
                    // is wasted: 16 callers at 4 KiB, 3-10% more calls without it. On
                    // a single CPU it only delays the peer: 5-11% more round trips
                    // without it, both processes pinned to one CPU.
                    cx.waker().wake_by_ref();
                } else if self.corked
                    && !self
                        .wake_line()
                        .is_some_and(|r| r.wake_when_done(cx.waker()))
                {
                    // The next poll releases the held messages: once the woken
                    // callers had their turn, or else at once.
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
    }
}

async fn drive(core: &Arc<Core>, io: Io, id: u64, handshaken: &mut bool) -> End {
    let Io { read, write, .. } = io;
    let out = Arc::new(Outbox::new(write, TX_HIGH));
    let mut stop = core.shutdown_signal();
    if *stop.borrow_and_update() {
        return End::Shutdown;
    }
    let (out_tx, out_rx) = mpsc::channel(core.opts.send_hwm.max(1));
    let mut e = Engine {
        core,
        id,
        conn: Connection::new(connection_config(core), Instant::now().into_std()),
        read,
        out,
        backlog: 0,
        out_rx,
        out_tx: Some(out_tx),
        reply_tx: None,
        guard: None,
        pending: None,
        taken: 0,
        room: None,
        rbuf: RecvBuf::new(),
        alarm: Alarm::new(core.opts.timer),
        handshaken: false,
        answered: 0,
        delivered: 0,
        woken: Vec::new(),
        corked: false,
        stop_check: stop.clone(),
        stop_waker: None,
        rx_armed: false,
        peer_key: None,
        peer_user: None,
    };
    // Registered once (it takes the watch's lock to register).
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let exit = std::future::poll_fn(|cx| e.poll(cx, stopped.as_mut())).await;
    *handshaken = e.handshaken;
    // No more writes from callers: what is left goes through this task.
    e.out.set_open(false);
    match exit {
        Exit::Stop => {
            linger(core, &mut e.conn, &mut e.out_rx, &e.out).await;
            End::Shutdown
        }
        Exit::Failed(err) => {
            flush_error(&mut e.conn, &e.out).await;
            End::Protocol(err)
        }
        Exit::End(end) => end,
    }
}

/// Writes everything queued.
async fn flush_all(out: &Outbox, conn: &mut Connection) -> std::io::Result<()> {
    std::future::poll_fn(|cx| match out.flush(cx, conn.transmit(), false, 0) {
        Ok(0) => Poll::Ready(Ok(())),
        Ok(_) => Poll::Pending,
        Err(e) => Poll::Ready(Err(e)),
    })
    .await
}

/// Best effort: deliver the ERROR command the connection queued, briefly.
async fn flush_error(conn: &mut Connection, out: &Outbox) {
    let _ = tokio::time::timeout(ERROR_FLUSH, flush_all(out, conn)).await;
}

/// On close: send what the socket queued for this peer, for at most the linger time.
async fn linger(
    core: &Core,
    conn: &mut Connection,
    out_rx: &mut mpsc::Receiver<Outgoing>,
    out: &Outbox,
) {
    out_rx.close();
    if conn.is_active() {
        while let Ok(m) = out_rx.try_recv() {
            if conn.send_frames(&m.frames, m.joined).is_err() {
                break;
            }
        }
    }
    if core.opts.linger.is_zero() {
        return;
    }
    let _ = tokio::time::timeout(core.opts.linger, flush_all(out, conn)).await;
}

/// Whether this process may run on more than one CPU (read once).
fn several_cpus() -> bool {
    static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().map_or(true, |n| n.get() > 1))
}
