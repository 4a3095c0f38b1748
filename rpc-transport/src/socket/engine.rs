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
use crate::zmtp::curve::PublicKey;
use crate::zmtp::{Connection, ConnectionConfig, Event, Mechanism, ZmtpError};

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
/// connect loop resets its backoff then). `server_key`: the CURVE server key of this
/// connection's endpoint, where it differs from the socket's.
pub(crate) async fn run(core: Arc<Core>, io: Io, server_key: Option<PublicKey>) -> bool {
    let id = core.next_peer_id();
    let span = tracing::debug_span!("zmtp", peer = %io.peer, conn = id);
    let mut handshaken = false;
    let end = drive(&core, io, id, server_key, &mut handshaken)
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
        core.report_failure(reason, handshaken);
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

fn connection_config(core: &Core, server_key: Option<PublicKey>) -> ConnectionConfig {
    let o = &core.opts;
    let mut mechanism = o.mechanism.clone();
    if let (Mechanism::CurveClient { server, .. }, Some(key)) = (&mut mechanism, server_key) {
        *server = key;
    }
    ConnectionConfig {
        socket_type: core.kind,
        identity: o.identity.clone(),
        max_message_size: o.max_message_size as u64,
        handshake_timeout: o.handshake_timeout,
        heartbeat: o.heartbeat,
        heartbeat_zmtp30: o.heartbeat_zmtp30,
        properties: Vec::new(),
        mechanism,
        discard_oversize: o.discard_oversize,
        defer_authorization: o.authenticator.is_some() && o.mechanism.as_server(),
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
    /// The read-ahead found the peer gone behind the bytes read last: how the
    /// connection ends once their messages are handed over.
    gone: Option<End>,
    /// The peer's address, for the authenticator.
    peer_addr: String,
    /// The application deciding whether this client may connect.
    deciding: Option<super::authenticate::Deciding>,
}

impl<'a> Engine<'a> {
    /// A connection not yet greeted, reading from `read` and writing through `out`.
    fn new(
        core: &'a Arc<Core>,
        read: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        out: Arc<Outbox>,
        id: u64,
        server_key: Option<PublicKey>,
        stop_check: watch::Receiver<bool>,
    ) -> Engine<'a> {
        let (out_tx, out_rx) = mpsc::channel(core.opts.send_hwm.max(1));
        Engine {
            core,
            id,
            conn: Connection::new(
                connection_config(core, server_key),
                Instant::now().into_std(),
            ),
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
            stop_check,
            stop_waker: None,
            rx_armed: false,
            peer_key: None,
            peer_user: None,
            gone: None,
            peer_addr: String::new(),
            deciding: None,
        }
    }

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
                    // A CURVE connection's frames are sealed as they are queued in
                    // the outbox, whoever queues them: in nonce order on the wire.
                    if let Some(sealer) = self.conn.hand_out_sealer() {
                        self.out.seal_with(sealer, self.conn.transmit());
                    }
                    // Open before the peer can be found: a sender that finds it may
                    // write at once (a closed outbox sends it to the channel).
                    self.out.set_open(true);
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
                Some(Event::Authenticate(credentials)) => {
                    match &self.core.opts.authenticator {
                        Some(a) => self.deciding = Some(a.start(credentials, &self.peer_addr)),
                        None => {
                            let now = Instant::now().into_std();
                            self.conn.authorized(Ok(None), now).map_err(End::Protocol)?;
                        }
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
                peer_gone: self.gone.is_some(),
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

    /// One wake-up of the task: every source in turn, again while one of them made
    /// progress. Each step below reads or writes one source and says whether it made
    /// progress; `Err` ends the connection.
    fn poll(&mut self, cx: &mut Context<'_>, stopped: Pin<&mut impl Future>) -> Poll<Exit> {
        let registered = match self.check_stop(cx, stopped) {
            Some(registered) => registered,
            None => return Poll::Ready(Exit::Stop),
        };
        self.answered = 0;
        self.delivered = 0;
        loop {
            match self.pass(cx, registered) {
                Err(exit) => return Poll::Ready(exit),
                Ok(true) => {}
                Ok(false) => {
                    self.before_park(cx);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Polls the stop signal when it may have fired or this task's waker is new to
    /// it. `None` once it fired; else whether the waker was already the registered one
    /// (the sources that keep a waker need polling again when it was not).
    fn check_stop(&mut self, cx: &mut Context<'_>, stopped: Pin<&mut impl Future>) -> Option<bool> {
        let registered = self
            .stop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !registered {
            self.rx_armed = false;
        }
        if !registered || self.stop_check.has_changed().unwrap_or(true) {
            if stopped.poll(cx).is_ready() {
                return None;
            }
            self.stop_waker = Some(cx.waker().clone());
        }
        Some(registered)
    }

    /// One pass over the sources, in order: decoded messages to the socket, the one
    /// waiting for room, the socket's messages for this peer, the write, the read,
    /// the timer. True when any of them made progress.
    fn pass(&mut self, cx: &mut Context<'_>, registered: bool) -> Result<bool, Exit> {
        let left = self.deliver().map_err(Exit::End)?;
        // (After `deliver`, which starts a decision the handshake asks for.)
        let decided = self.step_authenticate(cx)?;
        self.wake_callers();
        let mut progress = self.step_pending(cx)?;
        let bounded = self.step_outbound(cx)?;
        self.step_flush(cx, registered)?;
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
        if self.pending.is_none() && !left && !answers_wait {
            progress |= self.step_read(cx)?;
        }
        progress |= self.step_timer(cx)?;
        Ok(progress || decided)
    }

    /// The application's decision on the client, once it has one: the handshake
    /// goes on (READY or WELCOME queued), or ends with an ERROR carrying its reason.
    fn step_authenticate(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        let Some(deciding) = &mut self.deciding else {
            return Ok(false);
        };
        let Poll::Ready(decision) = deciding.as_mut().poll(cx) else {
            return Ok(false);
        };
        self.deciding = None;
        if let super::AuthDecision::Deny(why) = &decision {
            tracing::warn!(peer = %self.peer_addr, reason = %why, "client refused by the authenticator");
        }
        let now = Instant::now().into_std();
        self.conn
            .authorized(decision.into_verdict(), now)
            .map_err(Exit::Failed)?;
        Ok(true)
    }

    /// Wakes the callers a direct sink asked to wake, through its wake line if it has
    /// one.
    fn wake_callers(&mut self) {
        if !self.woken.is_empty() {
            match self.wake_line() {
                Some(r) => r.hand_over(&mut self.woken),
                None => self.woken.drain(..).for_each(Waker::wake),
            }
        }
    }

    /// A message waiting for room in the socket's queue. The wait is kept across
    /// polls: a wait dropped unfinished leaves the queue's line, and the room made by
    /// the program's next `recv` would wake no one.
    fn step_pending(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        let Some(msg) = self.pending.take() else {
            return Ok(false);
        };
        let room = self.room.get_or_insert_with(|| {
            let tx = self.core.inbound_tx.clone();
            Box::pin(async move { tx.reserve_owned().await.ok() })
        });
        match room.as_mut().poll(cx) {
            Poll::Ready(Some(permit)) => {
                self.room = None;
                permit.send(msg);
                Ok(true)
            }
            Poll::Ready(None) => Err(Exit::End(End::Shutdown)),
            Poll::Pending => {
                self.pending = Some(msg);
                Ok(false)
            }
        }
    }

    /// Everything the socket queued for this peer, while the backlog allows. True
    /// when stopped by the backlog's bound: the queue is then not drained and will
    /// not wake this task, so once the write has made room the pass goes round again.
    fn step_outbound(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        while self.guard.is_some() {
            if self.unsent() >= TX_HIGH {
                return Ok(true);
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
                Poll::Ready(None) => return Err(Exit::End(End::Shutdown)),
                Poll::Pending => {
                    self.rx_armed = true;
                    break;
                }
            }
        }
        Ok(false)
    }

    /// One vectored write of the whole batch (with whatever callers of the reliable
    /// client left in the outbox); skipped, without taking the outbox's lock, when
    /// there is nothing to write, the cork stays as it is and the task's waker is the
    /// one registered with the outbox.
    fn step_flush(&mut self, cx: &mut Context<'_>, registered: bool) -> Result<(), Exit> {
        // Several replies handed over at once (to the reliable client): their
        // callers' next requests are held in small groups until this task's next
        // poll, which it wakes itself for, instead of a write each (see
        // `outbox::CORK_MESSAGES`).
        let cork = self.delivered >= 2 && !self.answering();
        if cork == self.corked && registered && self.conn.transmit().is_empty() && self.out.idle() {
            return Ok(());
        }
        self.corked = cork;
        // The socket's messages taken since the last flush leave the count that
        // keeps its later ones behind them (sockets that keep order).
        let taken = std::mem::take(&mut self.taken);
        let taken = if self.core.ordered() { taken } else { 0 };
        match self.out.flush(cx, self.conn.transmit(), cork, taken) {
            Ok(left) => {
                self.backlog = left;
                Ok(())
            }
            Err(e) => Err(Exit::End(End::Io(e))),
        }
    }

    /// What arrived: one read into the receive buffer, decoded by the connection.
    fn step_read(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        if let Some(end) = self.gone.take() {
            // The messages read before the peer left are handed over.
            return Err(Exit::End(end));
        }
        let need = self.conn.read_hint(self.rbuf.current());
        let want = self.rbuf.plan(need, || Instant::now().into_std());
        let buf = self.rbuf.current();
        buf.reserve(want);
        let room = buf.capacity() - buf.len();
        let read = std::pin::pin!(self.read.read_buf(buf));
        match read.poll(cx) {
            Poll::Ready(Ok(0)) => Err(Exit::End(End::Eof)),
            Poll::Ready(Ok(n)) => {
                self.rbuf.on_read(n, room);
                if n < room && self.answering() {
                    self.read_ahead(cx, room - n);
                }
                if self.wake_line().is_some() {
                    // The reliable client's: whether a server is alive.
                    self.core.on_read();
                }
                let clock = || Instant::now().into_std();
                self.conn
                    .handle_input_with_clock(self.rbuf.current(), clock)
                    .map_err(Exit::Failed)?;
                self.rbuf.after_decode();
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(Exit::End(End::Io(e))),
            Poll::Pending => Ok(false),
        }
    }

    /// After a short read, a server's connection reads once more before it decodes:
    /// a client that gave up on its requests and closed the connection has its FIN
    /// queued behind them, and requests nobody can receive the answer to are not
    /// started (`Inbound::peer_gone`). It costs no system call when nothing more
    /// came: tokio forgets a socket's readiness after a short read, except that the
    /// peer closed (EPOLLRDHUP), which is what is asked here.
    fn read_ahead(&mut self, cx: &mut Context<'_>, room: usize) {
        let read = std::pin::pin!(self.read.read_buf(self.rbuf.current()));
        match read.poll(cx) {
            Poll::Ready(Ok(0)) => self.gone = Some(End::Eof),
            Poll::Ready(Ok(n)) => self.rbuf.on_read(n, room),
            Poll::Ready(Err(e)) => self.gone = Some(End::Io(e)),
            Poll::Pending => {}
        }
    }

    /// The connection's deadline: fired (true), or armed (again) for the next one.
    fn step_timer(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        if !self.alarm.take_fired() {
            match self.conn.poll_timeout() {
                Some(t) => self.alarm.arm(t, cx.waker()),
                None => self.alarm.cancel(),
            }
            return Ok(false);
        }
        if let Some(r) = self.wake_line() {
            // No caller waits behind one that is never polled for longer.
            r.wake_all();
        }
        self.conn
            .handle_timeout(Instant::now().into_std())
            .map_err(Exit::Failed)?;
        Ok(true)
    }

    /// Nothing made progress: before the task parks, wake it again where one more
    /// pass pays.
    fn before_park(&mut self, cx: &mut Context<'_>) {
        if self.answered == 1 && several_cpus() {
            // One request answered (a quiet connection): one more pass, as an answer
            // through the queue would cause. It keeps the thread from parking at
            // once, and often finds the peer's next message (waking a halted vCPU
            // costs tens of microseconds). Under load the pass is wasted; on a
            // single CPU it only delays the peer (docs/ARCHITECTURE.md, answers
            // given at once).
            cx.waker().wake_by_ref();
        } else if self.corked
            && !self
                .wake_line()
                .is_some_and(|r| r.wake_when_done(cx.waker()))
        {
            // The next poll releases the held messages: once the woken callers had
            // their turn, or else at once.
            cx.waker().wake_by_ref();
        }
    }
}

async fn drive(
    core: &Arc<Core>,
    io: Io,
    id: u64,
    server_key: Option<PublicKey>,
    handshaken: &mut bool,
) -> End {
    let Io { read, write, peer } = io;
    let out = Arc::new(Outbox::new(write, TX_HIGH));
    let mut stop = core.shutdown_signal();
    if *stop.borrow_and_update() {
        return End::Shutdown;
    }
    let mut e = Engine::new(core, read, out, id, server_key, stop.clone());
    e.peer_addr = peer;
    // Registered once (it takes the watch's lock to register).
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let exit = std::future::poll_fn(|cx| e.poll(cx, stopped.as_mut())).await;
    *handshaken = e.handshaken;
    // No more writes from callers: what is left goes through this task.
    e.out.set_closing();
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

#[cfg(test)]
mod tests {
    //! Each step of [`Engine::poll`] over an in-memory duplex stream, with a sans-IO
    //! [`Connection`] as the peer and a waker that counts its wake-ups: a step that
    //! leaves work behind must have registered to be woken for it.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};

    use super::*;
    use crate::message::Message;
    use crate::socket::SocketOptions;
    use crate::zmtp::{SocketType, ZmtpError};

    /// Counts wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The far end of an engine's connection: a ROUTER speaking through the duplex.
    struct Peer {
        io: DuplexStream,
        conn: Connection,
        rx: BytesMut,
    }

    impl Peer {
        /// Writes everything the peer's connection queued.
        async fn flush(&mut self) {
            let bytes = self.conn.transmit().take_all();
            self.io.write_all(&bytes).await.unwrap();
        }

        /// Reads what the engine wrote so far (without waiting) and returns the
        /// messages it decoded.
        fn receive(&mut self) -> Vec<Message> {
            let waker = Waker::from(Arc::new(Count::default()));
            let mut cx = Context::from_waker(&waker);
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut self.io).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                        self.rx.extend_from_slice(rb.filled())
                    }
                    _ => break,
                }
            }
            self.conn
                .handle_input(&mut self.rx, Instant::now().into_std())
                .unwrap();
            std::iter::from_fn(|| self.conn.poll_event())
                .filter_map(|e| match e {
                    Event::Message(m) => Some(m),
                    _ => None,
                })
                .collect()
        }

        /// Queues one message of one frame to the engine (after the handshake).
        async fn send(&mut self, body: &'static [u8]) {
            self.conn
                .send_frames(&[Bytes::from_static(body)], 1)
                .unwrap();
            self.flush().await;
        }
    }

    /// A DEALER socket's core and the duplex's two ends: the engine's and the peer's.
    fn rig(opts: SocketOptions, pipe: usize) -> (Arc<Core>, mpsc::Receiver<Inbound>, Io, Peer) {
        let (core, inbound) = Core::new(SocketType::Dealer, opts);
        let (ours, theirs) = tokio::io::duplex(pipe);
        let (read, write) = tokio::io::split(ours);
        let io = Io {
            read: Box::new(read),
            write: Box::new(write),
            peer: "duplex".into(),
        };
        let peer = Peer {
            io: theirs,
            conn: Connection::new(
                crate::zmtp::ConnectionConfig::new(SocketType::Router),
                Instant::now().into_std(),
            ),
            rx: BytesMut::new(),
        };
        (core, inbound, io, peer)
    }

    fn engine<'a>(core: &'a Arc<Core>, io: Io) -> Engine<'a> {
        let out = Arc::new(Outbox::new(io.write, TX_HIGH));
        Engine::new(core, io.read, out, 1, None, core.shutdown_signal())
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// Runs passes and the peer's side until both are through the handshake.
    async fn greet(e: &mut Engine<'_>, peer: &mut Peer, cx: &mut Context<'_>) {
        for _ in 0..10 {
            peer.flush().await;
            while e.pass(cx, true).ok().unwrap() {}
            peer.receive();
            if e.handshaken && peer.conn.is_active() {
                peer.flush().await;
                return;
            }
        }
        panic!("no handshake");
    }

    #[tokio::test]
    async fn the_read_step_decodes_what_arrived_and_deliver_hands_it_over() {
        let (core, mut inbound, io, mut peer) = rig(SocketOptions::default(), 64 * 1024);
        let mut e = engine(&core, io);
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        greet(&mut e, &mut peer, &mut cx).await;
        assert!(!e.step_read(&mut cx).ok().unwrap(), "nothing to read yet");

        peer.send(b"hello").await;
        assert!(e.step_read(&mut cx).ok().unwrap());
        assert!(!e.deliver().ok().unwrap(), "nothing decoded is left");
        let got = inbound.try_recv().unwrap();
        assert_eq!(got.msg.frames(), [Bytes::from_static(b"hello")]);
        assert_eq!(got.peer, 1);
    }

    #[tokio::test]
    async fn the_peer_closing_ends_the_read_step() {
        let (core, _inbound, io, mut peer) = rig(SocketOptions::default(), 64 * 1024);
        let mut e = engine(&core, io);
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        greet(&mut e, &mut peer, &mut cx).await;
        drop(peer);
        assert!(matches!(e.step_read(&mut cx), Err(Exit::End(End::Eof))));
    }

    #[tokio::test]
    async fn a_message_queued_for_the_peer_wakes_the_task_and_is_written() {
        let (core, _inbound, io, mut peer) = rig(SocketOptions::default(), 64 * 1024);
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        greet(&mut e, &mut peer, &mut cx).await;
        let tx = e.reply_tx.clone().unwrap();

        assert!(!e.step_outbound(&mut cx).ok().unwrap());
        assert!(e.rx_armed, "an empty queue holds the task's waker");
        let before = count.0.load(Ordering::SeqCst);
        tx.try_send(Message::single("to the peer").into()).unwrap();
        assert!(
            count.0.load(Ordering::SeqCst) > before,
            "the queue woke the task"
        );

        assert!(!e.step_outbound(&mut cx).ok().unwrap());
        assert_eq!(e.taken, 1);
        assert!(e.step_flush(&mut cx, true).is_ok());
        assert_eq!(e.backlog, 0);
        assert_eq!(
            peer.receive(),
            [Message::single(Bytes::from_static(b"to the peer"))]
        );
    }

    #[tokio::test]
    async fn a_message_waiting_for_room_wakes_the_task_when_the_program_receives() {
        let opts = SocketOptions {
            recv_hwm: 1,
            ..SocketOptions::default()
        };
        let (core, mut inbound, io, mut peer) = rig(opts, 64 * 1024);
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        greet(&mut e, &mut peer, &mut cx).await;

        peer.send(b"one").await;
        peer.send(b"two").await;
        assert!(e.step_read(&mut cx).ok().unwrap());
        e.deliver().ok().unwrap();
        assert!(e.pending.is_some(), "the second waits: the queue holds one");
        assert!(!e.step_pending(&mut cx).ok().unwrap());
        assert!(e.pending.is_some());

        let before = count.0.load(Ordering::SeqCst);
        assert_eq!(inbound.try_recv().unwrap().msg.frames()[0], "one");
        assert!(
            count.0.load(Ordering::SeqCst) > before,
            "the room woke the task"
        );
        assert!(e.step_pending(&mut cx).ok().unwrap());
        assert!(e.pending.is_none());
        assert_eq!(inbound.try_recv().unwrap().msg.frames()[0], "two");
    }

    #[tokio::test]
    async fn a_backlog_past_its_bound_is_written_out_on_the_wake_ups_it_registered() {
        // A pipe much smaller than the bound: the writes stall and must wake the task.
        let (core, _inbound, io, mut peer) = rig(SocketOptions::default(), 16 * 1024);
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        greet(&mut e, &mut peer, &mut cx).await;
        let tx = e.reply_tx.clone().unwrap();
        let big = Bytes::from(vec![7u8; 100 * 1024]);
        for _ in 0..5 {
            tx.try_send(Message::single(big.clone()).into()).unwrap();
        }

        let mut got = Vec::new();
        let mut bounded = false;
        for _ in 0..1000 {
            if got.len() == 5 {
                break;
            }
            let before = count.0.load(Ordering::SeqCst);
            bounded |= e.unsent() >= TX_HIGH;
            let progress = e.pass(&mut cx, true).ok().unwrap();
            got.extend(peer.receive());
            if !progress && got.len() < 5 {
                // Parked with work left: the peer's read must have woken it, or it
                // would hang here.
                assert!(
                    count.0.load(Ordering::SeqCst) > before,
                    "stalled with {} of 5 written and no wake-up registered",
                    got.len()
                );
            }
        }
        assert!(bounded, "the backlog reached its bound");
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|m| m.frames() == [big.clone()]));
    }

    /// A PLAIN server's engine whose authenticator waits for the test: the handshake
    /// stops there, the decision's waker is registered, and once it allows, the pass
    /// goes on to READY.
    #[tokio::test]
    async fn a_pending_decision_holds_the_handshake_and_wakes_the_task_when_made() {
        use crate::socket::{AuthDecision, Authenticator};
        use crate::zmtp::Mechanism;
        let (decide, decided) = tokio::sync::oneshot::channel::<AuthDecision>();
        let decided = std::sync::Mutex::new(Some(decided));
        let auth = Authenticator::new(move |_| {
            let rx = decided.lock().unwrap().take();
            async move {
                match rx {
                    Some(rx) => rx.await.unwrap_or_else(|_| AuthDecision::deny("gone")),
                    None => AuthDecision::deny("asked twice"),
                }
            }
        });
        let opts = SocketOptions {
            mechanism: Mechanism::PlainServer { authorize: None },
            authenticator: Some(auth),
            ..SocketOptions::default()
        };
        let (core, _inbound, io, mut peer) = rig(opts, 64 * 1024);
        let mut client = crate::zmtp::ConnectionConfig::new(SocketType::Router);
        client.mechanism = Mechanism::PlainClient {
            username: "ann".into(),
            password: b"pw".to_vec(),
        };
        peer.conn = Connection::new(client, Instant::now().into_std());
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        // Greeting and HELLO both ways, until a poll leaves the engine deciding (the
        // task parks then: nothing polls it again until something wakes it).
        for _ in 0..4 {
            peer.flush().await;
            while e.pass(&mut cx, true).ok().unwrap() {}
            if e.deciding.is_some() {
                break;
            }
            peer.receive();
        }
        assert!(e.deciding.is_some(), "the engine is deciding");
        assert!(!e.handshaken && !peer.conn.is_active());
        let before = count.0.load(Ordering::SeqCst);
        decide.send(AuthDecision::allow_as("ann@corp")).unwrap();
        assert!(
            count.0.load(Ordering::SeqCst) > before,
            "the decision woke the task"
        );
        for _ in 0..4 {
            while e.pass(&mut cx, true).ok().unwrap() {}
            peer.receive();
            peer.flush().await;
        }
        assert!(e.deciding.is_none());
        assert!(
            e.handshaken && peer.conn.is_active(),
            "through the handshake"
        );
        assert_eq!(e.peer_user.as_deref(), Some("ann@corp"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_step_arms_the_handshake_deadline_and_fails_it() {
        let opts = SocketOptions {
            handshake_timeout: Duration::from_secs(1),
            ..SocketOptions::default()
        };
        let (core, _inbound, io, _peer) = rig(opts, 64 * 1024);
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);

        assert!(!e.step_timer(&mut cx).ok().unwrap(), "armed, not fired");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!e.step_timer(&mut cx).ok().unwrap());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            count.0.load(Ordering::SeqCst) > 0,
            "the alarm woke the task"
        );
        assert!(matches!(
            e.step_timer(&mut cx),
            Err(Exit::Failed(ZmtpError::HandshakeTimeout))
        ));
    }

    #[tokio::test]
    async fn the_stop_signal_wakes_the_task_and_ends_the_poll() {
        let (core, _inbound, io, _peer) = rig(SocketOptions::default(), 64 * 1024);
        let mut e = engine(&core, io);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut stop = core.shutdown_signal();
        let stopped = stop.changed();
        tokio::pin!(stopped);

        assert_eq!(e.check_stop(&mut cx, stopped.as_mut()), Some(false));
        assert_eq!(e.check_stop(&mut cx, stopped.as_mut()), Some(true));
        core.close();
        assert!(count.0.load(Ordering::SeqCst) > 0);
        assert_eq!(e.check_stop(&mut cx, stopped.as_mut()), None);
    }
}
