//! One ZMTP connection as a state machine: greeting, READY handshake, then traffic.
//!
//! Inputs: [`Connection::handle_input`] (received bytes), [`Connection::send`] (a message
//! to write), [`Connection::handle_timeout`] (the time has come). Outputs:
//! [`Connection::poll_event`] (the peer is ready; a message arrived),
//! [`Connection::transmit`] (bytes to write), [`Connection::poll_timeout`] (when to call
//! back). Both greeting and READY are queued at construction, whatever our role: libzmq
//! sends its greeting in stages and waits for ours, so waiting for the peer first would
//! stall until its handshake timeout.
//!
//! # Layout
//! - `mod.rs`: the state machine, its settings and events.
//! - `security.rs`: the PLAIN and CURVE handshakes, the server's decision on a client
//!   ([`Credentials`], [`Connection::authorized`]).
//! - `tests.rs`: connections driven byte for byte in memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::command::{Command, Metadata};
use super::curve::{self, CurveClient, CurveServer, PublicKey};
use super::frame::{Frame, FrameDecoder, TxQueue, MAX_FRAMES};
use super::greeting::{Greeting, GREETING_LEN};
use super::heartbeat::{Heartbeat, HeartbeatConfig};
use super::mechanism::Mechanism;
use super::socket_type::SocketType;
use super::ZmtpError;
use crate::message::Message;

mod security;
#[cfg(test)]
mod tests;

pub use security::Credentials;
use security::{sealing, Sec};

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Our socket type, announced in READY and checked against the peer's.
    pub socket_type: SocketType,
    /// Our identity (sent in READY by REQ, DEALER and ROUTER; may be empty).
    pub identity: Bytes,
    /// Largest message (all frames together) we accept from the peer.
    pub max_message_size: u64,
    /// Time allowed from connection to the peer's READY.
    pub handshake_timeout: Duration,
    /// Heartbeats; `None` sends no PINGs (PINGs from the peer are still answered).
    pub heartbeat: Option<HeartbeatConfig>,
    /// Also PING peers that announced ZMTP 3.0 (libzmq 4.2 REQ/REP dropped the
    /// connection on PING, so this is off unless asked for).
    pub heartbeat_zmtp30: bool,
    /// Extra READY properties.
    pub properties: Vec<(String, Bytes)>,
    /// The security mechanism and its keys (NULL by default).
    pub mechanism: Mechanism,
    /// A message over `max_message_size`: false closes the connection (as libzmq);
    /// true reads past the rest of it without keeping it and reports what came
    /// before ([`Event::TooLarge`]), so that a server can answer it and serve on.
    /// Over CURVE the connection closes either way: a box cannot be checked without
    /// holding it.
    pub discard_oversize: bool,
    /// A CURVE or PLAIN server asks ([`Event::Authenticate`]) and waits for
    /// [`Connection::authorized`] before it answers INITIATE (CURVE) or HELLO
    /// (PLAIN), once the mechanism's own `authorize`, if any, allowed the client.
    pub defer_authorization: bool,
}

impl ConnectionConfig {
    /// Defaults for a socket type: 4 MiB messages, 30 s handshake, no heartbeat.
    pub fn new(socket_type: SocketType) -> ConnectionConfig {
        ConnectionConfig {
            socket_type,
            identity: Bytes::new(),
            max_message_size: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(30),
            heartbeat: None,
            heartbeat_zmtp30: false,
            properties: Vec::new(),
            mechanism: Mechanism::Null,
            discard_oversize: false,
            defer_authorization: false,
        }
    }
}

/// What the peer told us in its greeting and READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's socket type.
    pub socket_type: SocketType,
    /// The peer's `Identity` property (empty when none).
    pub identity: Bytes,
    /// ZMTP minor version of the peer (0 or 1).
    pub minor: u8,
    /// Every READY property, including the two above.
    pub metadata: Metadata,
    /// The peer's CURVE permanent public key, authenticated by the handshake (a
    /// server learns its client's; a client knew its server's).
    pub public_key: Option<PublicKey>,
    /// A PLAIN client's user name, as the server allowed it.
    pub user: Option<String>,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake is complete; messages may flow.
    Ready(PeerInfo),
    /// A whole message arrived.
    Message(Message),
    /// A message over the size limit ended (only with
    /// [`ConnectionConfig::discard_oversize`]): the frames that came before the one
    /// that passed the limit, and the size of all of them together.
    TooLarge {
        /// The frames received whole before the limit was passed.
        head: Message,
        /// The message's size, all frames together, as declared.
        size: u64,
    },
    /// A server with [`ConnectionConfig::defer_authorization`] has checked the
    /// client's credentials and waits for [`Connection::authorized`].
    Authenticate(Credentials),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Handshake,
    Active,
    Closed,
}

/// The sans-IO state of one ZMTP connection.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    greeting: [u8; GREETING_LEN],
    greeting_len: usize,
    peer_minor: u8,
    decoder: FrameDecoder,
    partial: Vec<Bytes>,
    partial_size: u64,
    /// Frames of the message in progress read past (over the size limit).
    skipped: usize,
    events: VecDeque<Event>,
    tx: TxQueue,
    handshake_deadline: Instant,
    heartbeat: Heartbeat,
    /// The security mechanism's side of the connection: its handshake, then (CURVE)
    /// its boxes.
    curve: Sec,
    /// A PLAIN client's user name, between its HELLO and its INITIATE.
    plain_user: Option<String>,
}

impl Connection {
    /// A new connection at `now`; our greeting and READY are queued for transmission.
    pub fn new(config: ConnectionConfig, now: Instant) -> Connection {
        let mut tx = TxQueue::new();
        let mut greeting = Greeting::null();
        let name = config.mechanism.name();
        greeting.mechanism = [0; super::greeting::MECHANISM_LEN];
        greeting.mechanism[..name.len()].copy_from_slice(name);
        greeting.as_server = config.mechanism.as_server();
        tx.push_raw(&greeting.encode());
        let curve = match &config.mechanism {
            Mechanism::Null => {
                Command::Ready(Self::our_metadata(&config)).encode(&mut tx);
                Sec::None
            }
            Mechanism::CurveClient { keys, server } => {
                let mut client = CurveClient::new(keys.clone(), *server);
                // Queued at once, like NULL's READY (see the module docs).
                match client.hello() {
                    Ok(hello) => tx.push_command_body(&hello),
                    Err(e) => tracing::error!(error = %e, "cannot make a CURVE HELLO"),
                }
                Sec::Client(Box::new(client))
            }
            Mechanism::CurveServer { keys, .. } => {
                Sec::Server(Box::new(CurveServer::new(keys.clone())))
            }
            Mechanism::PlainClient { username, password } => {
                let mut hello = BytesMut::from(&b"\x05HELLO"[..]);
                let (user, pass) = (username.as_bytes(), &password[..]);
                let (user, pass) = (&user[..user.len().min(255)], &pass[..pass.len().min(255)]);
                hello.extend_from_slice(&[user.len() as u8]);
                hello.extend_from_slice(user);
                hello.extend_from_slice(&[pass.len() as u8]);
                hello.extend_from_slice(pass);
                tx.push_command_body(&hello);
                Sec::PlainClient
            }
            Mechanism::PlainServer { .. } => Sec::PlainServer(false),
        };
        // CURVE adds 33 bytes to every frame on the wire.
        let overhead = if !matches!(curve, Sec::Client(_) | Sec::Server(_)) {
            0
        } else {
            64 * 1024
        };
        let limit = config.max_message_size + overhead;
        Connection {
            decoder: if config.discard_oversize && overhead == 0 {
                FrameDecoder::discarding(limit)
            } else {
                FrameDecoder::new(limit)
            },
            handshake_deadline: now + config.handshake_timeout,
            config,
            phase: Phase::Greeting,
            greeting: [0; GREETING_LEN],
            greeting_len: 0,
            peer_minor: 0,
            partial: Vec::new(),
            partial_size: 0,
            skipped: 0,
            events: VecDeque::new(),
            tx,
            heartbeat: Heartbeat::default(),
            curve,
            plain_user: None,
        }
    }

    /// The READY properties we announce.
    fn our_metadata(config: &ConnectionConfig) -> Metadata {
        let mut md = Metadata::new();
        md.insert(
            "Socket-Type",
            Bytes::from_static(config.socket_type.as_str().as_bytes()),
        );
        if matches!(
            config.socket_type,
            SocketType::Req | SocketType::Dealer | SocketType::Router
        ) {
            md.insert("Identity", config.identity.clone());
        }
        for (n, v) in &config.properties {
            md.insert(n, v.clone());
        }
        md
    }

    /// Whether frames travel in CURVE boxes (sealed here, or by the holder of the
    /// sealer once [`hand_out_sealer`](Self::hand_out_sealer) gave it away).
    pub fn is_encrypted(&self) -> bool {
        matches!(
            self.curve,
            Sec::Client(_) | Sec::Server(_) | Sec::Session(_)
        )
    }

    /// Hands the CURVE session's sending half to the caller, once the handshake is
    /// done: from then on [`transmit`](Self::transmit) holds frames in clear, which
    /// the caller seals, in order, as it writes them ([`TxQueue::drain_frames`] and
    /// [`curve::Sealer::seal_into`]), so that other writers can seal and queue their
    /// own frames between them (the direct write path). `None` without a session or
    /// once handed out.
    pub fn hand_out_sealer(&mut self) -> Option<curve::Sealer> {
        match &mut self.curve {
            Sec::Session(session) => session.hand_out_sealer(),
            _ => None,
        }
    }

    /// True once the handshake is done and until the connection fails.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// True after a failure; only the queued ERROR (if any) remains to be written.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// How many more bytes the connection needs before it can make progress; a hint for
    /// the reader's buffer size, bounded by the maximum message size.
    pub fn read_hint(&self, src: &BytesMut) -> usize {
        match self.phase {
            Phase::Greeting => GREETING_LEN - self.greeting_len,
            _ => self.decoder.needed(src),
        }
    }

    /// Consumes received bytes from `src` (what is left is an incomplete frame).
    pub fn handle_input(&mut self, src: &mut BytesMut, now: Instant) -> Result<(), ZmtpError> {
        self.handle_input_with_clock(src, || now)
    }

    /// As [`handle_input`](Self::handle_input), reading the time from `clock` only
    /// if a command needs it (READY and PING do; messages do not): a clock read costs
    /// ~20 ns here, two per round trip.
    pub fn handle_input_with_clock(
        &mut self,
        src: &mut BytesMut,
        clock: impl FnMut() -> Instant,
    ) -> Result<(), ZmtpError> {
        let r = self.input(src, clock);
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }

    fn input(
        &mut self,
        src: &mut BytesMut,
        mut clock: impl FnMut() -> Instant,
    ) -> Result<(), ZmtpError> {
        if src.is_empty() {
            return Ok(());
        }
        self.heartbeat.on_traffic();
        loop {
            match self.phase {
                Phase::Greeting => {
                    let take = (GREETING_LEN - self.greeting_len).min(src.len());
                    let chunk = src.split_to(take);
                    self.greeting[self.greeting_len..self.greeting_len + take]
                        .copy_from_slice(&chunk);
                    self.greeting_len += take;
                    Greeting::check_prefix(&self.greeting[..self.greeting_len])?;
                    if self.greeting_len < GREETING_LEN {
                        return Ok(());
                    }
                    let g = Greeting::decode(&self.greeting)?;
                    if g.mechanism_name() != self.config.mechanism.name() {
                        return Err(ZmtpError::MechanismMismatch(
                            String::from_utf8_lossy(g.mechanism_name()).into_owned(),
                        ));
                    }
                    self.peer_minor = g.minor;
                    self.phase = Phase::Handshake;
                }
                Phase::Handshake => match self.decoder.decode(src, 0)? {
                    None => return Ok(()),
                    Some(Frame::Data { .. } | Frame::Skipped { .. }) => {
                        return Err(ZmtpError::Malformed("message before READY"))
                    }
                    Some(Frame::Command(body)) if !matches!(self.curve, Sec::None) => {
                        self.on_secure_handshake(body, &mut clock)?
                    }
                    Some(Frame::Command(body)) => match Command::decode(body)? {
                        Command::Ready(md) => self.on_ready(md, clock())?,
                        Command::Error(reason) => return Err(ZmtpError::PeerError(reason)),
                        _ => return Err(ZmtpError::Malformed("expected READY")),
                    },
                },
                // A CURVE box is opened where it was read: no copy of its body.
                Phase::Active if matches!(self.curve, Sec::Session(_)) => {
                    match self.decoder.decode_mut(src, self.partial_size)? {
                        None => return Ok(()),
                        Some(Frame::Data { body, .. }) => {
                            let Sec::Session(session) = &mut self.curve else {
                                unreachable!("matched above")
                            };
                            let (flags, frame) = session.open(body)?;
                            if flags & curve::FLAG_COMMAND != 0 {
                                self.on_command(Command::decode(frame)?, &mut clock)?;
                            } else {
                                self.on_frame(flags & curve::FLAG_MORE != 0, frame)?;
                            }
                        }
                        Some(Frame::Command(_)) => {
                            return Err(ZmtpError::Malformed("a command outside a CURVE box"))
                        }
                        Some(Frame::Skipped { more, len }) => self.on_skipped(more, len)?,
                    }
                }
                Phase::Active => match self.decoder.decode(src, self.partial_size)? {
                    None => return Ok(()),
                    Some(Frame::Skipped { more, len }) => self.on_skipped(more, len)?,
                    Some(Frame::Data { more, body }) => self.on_frame(more, body)?,
                    Some(Frame::Command(body)) => {
                        self.on_command(Command::decode(body)?, &mut clock)?
                    }
                },
                Phase::Closed => return Err(ZmtpError::NotActive),
            }
        }
    }

    fn on_ready(&mut self, md: Metadata, now: Instant) -> Result<(), ZmtpError> {
        let ours = self.config.socket_type;
        let Some(ty) = md.get("Socket-Type") else {
            return Err(ZmtpError::Malformed("READY without Socket-Type"));
        };
        let peer_type = SocketType::from_wire(ty)
            .filter(|t| ours.is_compatible(*t))
            .ok_or_else(|| ZmtpError::IncompatibleSocketType {
                ours,
                peer: String::from_utf8_lossy(ty).into_owned(),
            })?;
        let identity = md.get("Identity").cloned().unwrap_or_default();
        if identity.len() > 255 {
            return Err(ZmtpError::Malformed("Identity longer than 255 bytes"));
        }
        let ping = self.peer_minor >= 1 || self.config.heartbeat_zmtp30;
        self.heartbeat = Heartbeat::start(self.config.heartbeat.filter(|_| ping), now);
        self.phase = Phase::Active;
        self.events.push_back(Event::Ready(PeerInfo {
            socket_type: peer_type,
            identity,
            minor: self.peer_minor,
            metadata: md,
            public_key: None,
            user: None,
        }));
        Ok(())
    }

    /// A frame that passed the size limit was read past: the message is too large.
    /// Its later frames pass the limit too, so they are skipped as well; at its end
    /// the frames before it are reported.
    fn on_skipped(&mut self, more: bool, len: u64) -> Result<(), ZmtpError> {
        self.skipped += 1;
        if self.partial.len() + self.skipped > MAX_FRAMES {
            return Err(ZmtpError::Malformed("more than 1024 frames in a message"));
        }
        self.partial_size = self.partial_size.saturating_add(len);
        if !more {
            let head = Message::from(std::mem::take(&mut self.partial));
            let size = std::mem::replace(&mut self.partial_size, 0);
            self.skipped = 0;
            self.events.push_back(Event::TooLarge { head, size });
        }
        Ok(())
    }

    /// A frame of a message arrived (from the wire, or out of a CURVE box: the
    /// decoder checked the limit on the box, with its overhead, so it is checked
    /// again here).
    fn on_frame(&mut self, more: bool, body: Bytes) -> Result<(), ZmtpError> {
        if self.partial.len() >= MAX_FRAMES {
            return Err(ZmtpError::Malformed("more than 1024 frames in a message"));
        }
        self.partial_size += body.len() as u64;
        if self.partial_size > self.config.max_message_size {
            return Err(ZmtpError::TooLarge {
                size: self.partial_size,
                max: self.config.max_message_size,
            });
        }
        self.partial.push(body);
        if !more {
            let frames = std::mem::take(&mut self.partial);
            self.partial_size = 0;
            self.events.push_back(Event::Message(Message::from(frames)));
        }
        Ok(())
    }

    /// Queues a command: in clear, or in a CURVE box once the handshake is done.
    fn queue_command(&mut self, cmd: Command) -> Result<(), ZmtpError> {
        match sealing(&mut self.curve) {
            Some(session) => {
                let sealed = session.seal(curve::FLAG_COMMAND, &[&cmd.body()])?;
                self.tx.push_frame(0, &sealed.freeze());
            }
            // In clear, or for the sealer's holder to seal.
            None => cmd.encode(&mut self.tx),
        }
        Ok(())
    }

    fn on_command(
        &mut self,
        cmd: Command,
        clock: &mut impl FnMut() -> Instant,
    ) -> Result<(), ZmtpError> {
        match cmd {
            Command::Ping { ttl_ds, context } => {
                self.heartbeat.on_ping(ttl_ds, clock());
                self.queue_command(Command::Pong { context })
            }
            Command::Pong { .. } => Ok(()),
            Command::Error(reason) => Err(ZmtpError::PeerError(reason)),
            Command::Ready(_) => Err(ZmtpError::Malformed("second READY")),
            // RFC 37: commands a socket type does not use are ignored.
            Command::Other { name, .. } => {
                tracing::debug!(command = ?name, "ignoring unknown ZMTP command");
                Ok(())
            }
        }
    }

    fn fail(&mut self, e: &ZmtpError) {
        if self.phase == Phase::Closed {
            return;
        }
        // ERROR is only meaningful once the peer has our greeting and we have its; a
        // CURVE peer gets none for a bad MESSAGE (RFC 26).
        if self.phase != Phase::Greeting && !matches!(self.curve, Sec::Session(_)) {
            if let Some(reason) = e.error_reason() {
                Command::Error(reason.to_owned()).encode(&mut self.tx);
            }
        }
        self.phase = Phase::Closed;
    }

    /// Queues a message. Frames are shared, not copied, when larger than
    /// [`super::frame::COPY_THRESHOLD`].
    pub fn send(&mut self, msg: &Message) -> Result<(), ZmtpError> {
        self.send_frames(msg.frames(), 1)
    }

    /// Queues a message given as frames, the last `joined` of which (when two or more)
    /// are the parts of one frame.
    pub fn send_frames(&mut self, frames: &[Bytes], joined: usize) -> Result<(), ZmtpError> {
        self.send_behind(&[], frames, joined)
    }

    /// Queues a message given as `envelope` frames followed by `frames` (the last
    /// `joined` of which are the parts of one frame), without joining them first.
    pub fn send_behind(
        &mut self,
        envelope: &[Bytes],
        frames: &[Bytes],
        joined: usize,
    ) -> Result<(), ZmtpError> {
        if self.phase != Phase::Active {
            return Err(ZmtpError::NotActive);
        }
        match sealing(&mut self.curve) {
            Some(session) => session.seal_behind(&mut self.tx, envelope, frames, joined),
            None => {
                self.tx.push_behind(envelope, frames, joined);
                Ok(())
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written.
    pub fn transmit(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    /// How many bytes wait to be written.
    pub fn transmit_len(&self) -> usize {
        self.tx.len()
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Greeting | Phase::Handshake => Some(self.handshake_deadline),
            Phase::Active => self.heartbeat.poll_timeout(),
            Phase::Closed => None,
        }
    }

    /// Advances timers to `now`: handshake deadline, PINGs, heartbeat timeouts.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ZmtpError> {
        let r = match self.phase {
            Phase::Greeting | Phase::Handshake if now >= self.handshake_deadline => {
                Err(ZmtpError::HandshakeTimeout)
            }
            Phase::Active => self
                .heartbeat
                .handle_timeout(now)
                .and_then(|ping| match ping {
                    Some(ttl_ds) => self.queue_command(Command::Ping {
                        ttl_ds,
                        context: Bytes::new(),
                    }),
                    None => Ok(()),
                }),
            _ => Ok(()),
        };
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }
}
