//! One ZMTP connection as a state machine: greeting, READY handshake, then traffic.
//!
//! Inputs: [`Connection::handle_input`] (received bytes), [`Connection::send`] (a message
//! to write), [`Connection::handle_timeout`] (the time has come). Outputs:
//! [`Connection::poll_event`] (the peer is ready; a message arrived),
//! [`Connection::transmit`] (bytes to write), [`Connection::poll_timeout`] (when to call
//! back). Both greeting and READY are queued at construction, whatever our role: libzmq
//! sends its greeting in stages and waits for ours, so waiting for the peer first would
//! stall until its handshake timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::command::{Command, Metadata};
use super::curve::{self, CurveClient, CurveServer, PublicKey, Session};
use super::frame::{Frame, FrameDecoder, TxQueue, MAX_FRAMES};
use super::greeting::{Greeting, GREETING_LEN};
use super::heartbeat::{Heartbeat, HeartbeatConfig};
use super::mechanism::Mechanism;
use super::socket_type::SocketType;
use super::ZmtpError;
use crate::message::Message;

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

/// What a client proved or claimed in its handshake, for the server to decide on.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// A CURVE client's permanent public key (it proved it holds the secret one).
    pub public_key: Option<PublicKey>,
    /// A PLAIN client's user name.
    pub username: Option<String>,
    /// A PLAIN client's password.
    pub password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("public_key", &self.public_key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A server's handshake stopped until the application decides on the client.
#[derive(Debug)]
enum Deciding {
    Curve {
        server: Box<CurveServer>,
        client: PublicKey,
        metadata: Bytes,
    },
    Plain {
        user: String,
    },
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

/// Where a secured connection's mechanism stands (nothing for NULL).
#[derive(Debug)]
enum Sec {
    None,
    Client(Box<CurveClient>),
    Server(Box<CurveServer>),
    Session(Box<Session>),
    /// PLAIN: HELLO sent, waiting for WELCOME (then READY).
    PlainClient,
    /// PLAIN: waiting for HELLO (`false`) or, once it was allowed, INITIATE (`true`).
    PlainServer(bool),
    /// PLAIN after READY: messages in clear.
    PlainDone,
    /// A server waiting for [`Connection::authorized`].
    Deciding(Box<Deciding>),
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

    /// A CURVE handshake command arrived.
    fn on_secure_handshake(
        &mut self,
        body: Bytes,
        clock: &mut impl FnMut() -> Instant,
    ) -> Result<(), ZmtpError> {
        if body.starts_with(b"\x05ERROR") {
            return match Command::decode(body)? {
                Command::Error(reason) => Err(ZmtpError::PeerError(reason)),
                _ => Err(ZmtpError::Malformed("ERROR")),
            };
        }
        let md = Self::our_metadata(&self.config);
        let mut ours = BytesMut::new();
        md.encode(&mut ours);
        match std::mem::replace(&mut self.curve, Sec::None) {
            Sec::Client(mut client) if body.starts_with(b"\x07WELCOME") => {
                let initiate = client.on_welcome(&body, &ours)?;
                self.tx.push_command_body(&initiate);
                self.curve = Sec::Client(client);
            }
            Sec::Client(mut client) if body.starts_with(b"\x05READY") => {
                let theirs = client.on_ready(&body)?;
                self.curve = Sec::Session(Box::new(client.into_session()?));
                self.on_ready(Metadata::decode(theirs)?, clock())?;
                self.set_peer_key(match &self.config.mechanism {
                    Mechanism::CurveClient { server, .. } => Some(*server),
                    _ => None,
                });
            }
            Sec::Server(mut server) if body.starts_with(b"\x05HELLO") => {
                let welcome = server.on_hello(&body)?;
                self.tx.push_command_body(&welcome);
                self.curve = Sec::Server(server);
            }
            Sec::Server(mut server) if body.starts_with(b"\x08INITIATE") => {
                let init = server.on_initiate(&body)?;
                let allowed = match &self.config.mechanism {
                    Mechanism::CurveServer {
                        authorize: Some(allow),
                        ..
                    } => allow(&init.client),
                    _ => true,
                };
                if !allowed {
                    return Err(ZmtpError::Unauthorized(format!(
                        "client key {} is not allowed",
                        init.client
                    )));
                }
                if self.config.defer_authorization {
                    self.events.push_back(Event::Authenticate(Credentials {
                        public_key: Some(init.client),
                        username: None,
                        password: None,
                    }));
                    self.curve = Sec::Deciding(Box::new(Deciding::Curve {
                        server,
                        client: init.client,
                        metadata: init.metadata,
                    }));
                } else {
                    self.admit_curve(server, init.client, init.metadata, None, clock())?;
                }
            }
            Sec::PlainClient if body.starts_with(b"\x07WELCOME") => {
                self.tx
                    .push_command_body(&[&b"\x08INITIATE"[..], &ours].concat());
                self.curve = Sec::PlainClient;
            }
            Sec::PlainClient if body.starts_with(b"\x05READY") => {
                self.curve = Sec::PlainDone;
                self.on_ready(Metadata::decode(body.slice(6..))?, clock())?;
            }
            Sec::PlainServer(false) if body.starts_with(b"\x05HELLO") => {
                let (user, pass) = plain_hello(&body)?;
                let allowed = match &self.config.mechanism {
                    Mechanism::PlainServer {
                        authorize: Some(allow),
                    } => allow(&user, &pass),
                    _ => true,
                };
                if !allowed {
                    return Err(ZmtpError::Unauthorized(format!(
                        "user {user:?} is not allowed"
                    )));
                }
                if self.config.defer_authorization {
                    self.events.push_back(Event::Authenticate(Credentials {
                        public_key: None,
                        username: Some(user.clone()),
                        password: Some(pass),
                    }));
                    self.curve = Sec::Deciding(Box::new(Deciding::Plain { user }));
                } else {
                    self.admit_plain(user);
                }
            }
            Sec::PlainServer(true) if body.starts_with(b"\x08INITIATE") => {
                self.tx
                    .push_command_body(&[&b"\x05READY"[..], &ours].concat());
                self.curve = Sec::PlainDone;
                self.on_ready(Metadata::decode(body.slice(9..))?, clock())?;
                let user = self.plain_user.take();
                if let Some(Event::Ready(info)) = self.events.back_mut() {
                    info.user = user;
                }
            }
            _ => return Err(ZmtpError::Malformed("unexpected handshake command")),
        }
        Ok(())
    }

    /// A CURVE client allowed: READY, then boxes; `user` is the identity the
    /// application gave it.
    fn admit_curve(
        &mut self,
        mut server: Box<CurveServer>,
        client: PublicKey,
        metadata: Bytes,
        user: Option<String>,
        now: Instant,
    ) -> Result<(), ZmtpError> {
        let mut ours = BytesMut::new();
        Self::our_metadata(&self.config).encode(&mut ours);
        let ready = server.ready(&ours)?;
        self.tx.push_command_body(&ready);
        self.curve = Sec::Session(Box::new(server.into_session()?));
        self.on_ready(Metadata::decode(metadata)?, now)?;
        self.set_peer_key(Some(client));
        if let Some(Event::Ready(info)) = self.events.back_mut() {
            info.user = user;
        }
        Ok(())
    }

    /// A PLAIN client allowed, known from now on as `user`: WELCOME, then its
    /// INITIATE is awaited.
    fn admit_plain(&mut self, user: String) {
        self.tx.push_command_body(b"\x07WELCOME");
        self.plain_user = Some(user);
        self.curve = Sec::PlainServer(true);
    }

    /// The application's decision on the client of an [`Event::Authenticate`]:
    /// allowed, with the identity its handlers will see (`None`: a PLAIN client's
    /// user name, nothing for CURVE), or refused with a reason, which the client
    /// hears in an ERROR command before the connection closes.
    pub fn authorized(
        &mut self,
        verdict: Result<Option<String>, String>,
        now: Instant,
    ) -> Result<(), ZmtpError> {
        let r = match std::mem::replace(&mut self.curve, Sec::None) {
            Sec::Deciding(deciding) => match (*deciding, verdict) {
                (_, Err(why)) => Err(ZmtpError::Denied(why)),
                (
                    Deciding::Curve {
                        server,
                        client,
                        metadata,
                    },
                    Ok(user),
                ) => self.admit_curve(server, client, metadata, user, now),
                (Deciding::Plain { user }, Ok(id)) => {
                    self.admit_plain(id.unwrap_or(user));
                    Ok(())
                }
            },
            other => {
                self.curve = other;
                return Err(ZmtpError::NotActive);
            }
        };
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }

    /// Records the peer's authenticated key in the READY event just queued.
    fn set_peer_key(&mut self, key: Option<PublicKey>) {
        if let Some(Event::Ready(info)) = self.events.back_mut() {
            info.public_key = key;
        }
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

/// A PLAIN HELLO's user name and password, sizes checked.
fn plain_hello(body: &[u8]) -> Result<(String, Vec<u8>), ZmtpError> {
    let bad = || ZmtpError::Malformed("PLAIN HELLO");
    let rest = body.get(6..).ok_or_else(bad)?;
    let (&ulen, rest) = rest.split_first().ok_or_else(bad)?;
    let user = rest.get(..usize::from(ulen)).ok_or_else(bad)?;
    let rest = &rest[usize::from(ulen)..];
    let (&plen, rest) = rest.split_first().ok_or_else(bad)?;
    if rest.len() != usize::from(plen) {
        return Err(bad());
    }
    let user = String::from_utf8(user.to_vec()).map_err(|_| bad())?;
    Ok((user, rest.to_vec()))
}

/// The session, while the connection seals its own frames (not before the handshake,
/// not once the sealer was handed out).
fn sealing(curve: &mut Sec) -> Option<&mut Session> {
    match curve {
        Sec::Session(session) if !session.handed_out() => Some(session),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::frame::{FLAG_COMMAND, FLAG_MORE};

    /// Two connections wired back to back in memory.
    struct Pair {
        a: Connection,
        b: Connection,
        now: Instant,
    }

    impl Pair {
        fn new(a: ConnectionConfig, b: ConnectionConfig) -> Pair {
            let now = Instant::now();
            Pair {
                a: Connection::new(a, now),
                b: Connection::new(b, now),
                now,
            }
        }

        /// Moves bytes both ways until neither side has anything to send.
        fn drive(&mut self) -> (Result<(), ZmtpError>, Result<(), ZmtpError>) {
            let (mut ra, mut rb) = (Ok(()), Ok(()));
            loop {
                let mut to_b = self.a.transmit().take_all();
                let mut to_a = self.b.transmit().take_all();
                if to_a.is_empty() && to_b.is_empty() {
                    return (ra, rb);
                }
                if rb.is_ok() {
                    rb = self.b.handle_input(&mut to_b, self.now);
                }
                if ra.is_ok() {
                    ra = self.a.handle_input(&mut to_a, self.now);
                }
            }
        }
    }

    fn events(c: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// A DEALER client and a ROUTER server over CURVE; `allow` decides the client.
    fn curve_pair(allow: bool) -> (Pair, curve::KeyPair) {
        let (ck, sk) = (curve::KeyPair::generate(), curve::KeyPair::generate());
        let mut a = ConnectionConfig::new(SocketType::Dealer);
        a.mechanism = Mechanism::CurveClient {
            keys: ck.clone(),
            server: sk.public(),
        };
        a.heartbeat = Some(HeartbeatConfig::every(Duration::from_millis(100)));
        let mut b = ConnectionConfig::new(SocketType::Router);
        b.mechanism = Mechanism::CurveServer {
            keys: sk,
            authorize: Some(std::sync::Arc::new(move |_| allow)),
        };
        (Pair::new(a, b), ck)
    }

    #[test]
    fn curve_handshake_authenticates_and_boxes_messages_and_commands() {
        let (mut p, client_keys) = curve_pair(true);
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert!(p.a.is_active() && p.b.is_active());
        assert!(p.a.is_encrypted());
        let ev = events(&mut p.b);
        let [Event::Ready(info)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(info.socket_type, SocketType::Dealer);
        assert_eq!(info.public_key, Some(client_keys.public()));
        events(&mut p.a);
        let msg = Message::from(vec![
            Bytes::new(),
            Bytes::from_static(b"secret"),
            Bytes::from(vec![9u8; 70_000]),
        ]);
        p.a.send(&msg).unwrap();
        // Nothing of it travels in clear.
        let wire = p.a.transmit().take_all();
        assert!(!wire.windows(6).any(|w| w == b"secret"));
        let mut wire = wire;
        p.b.handle_input(&mut wire, p.now).unwrap();
        assert_eq!(events(&mut p.b), [Event::Message(msg.clone())]);
        p.b.send(&msg).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert_eq!(events(&mut p.a), [Event::Message(msg)]);
        // Heartbeats travel boxed too, and are answered.
        let later = p.now + Duration::from_millis(150);
        p.a.handle_timeout(later).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        p.a.handle_timeout(later + Duration::from_millis(50))
            .unwrap();
        assert!(p.a.is_active(), "the PONG came back");
    }

    /// With its sealer handed out, a connection queues frames in clear, and the holder
    /// seals them, in order with its own messages: the peer opens every box.
    #[test]
    fn a_handed_out_sealer_seals_the_connections_frames_between_its_own() {
        let (mut p, _) = curve_pair(true);
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        events(&mut p.a);
        events(&mut p.b);
        let mut sealer = p.a.hand_out_sealer().expect("a session");
        assert!(p.a.hand_out_sealer().is_none(), "handed out once");
        let msg = |s: &'static str| Message::from(vec![Bytes::from_static(s.as_bytes())]);
        let mut out = TxQueue::default();
        sealer
            .seal_behind(&mut out, &[], msg("first").frames(), 1)
            .unwrap();
        // The connection's own: a message and a heartbeat, queued in clear.
        p.a.send(&Message::from(vec![
            Bytes::from_static(b"second"),
            Bytes::from(vec![7u8; 70_000]),
        ]))
        .unwrap();
        p.a.handle_timeout(p.now + Duration::from_millis(150))
            .unwrap();
        let mut clear = TxQueue::default();
        clear.append(p.a.transmit());
        let plain = clear.take_all();
        assert!(plain.windows(6).any(|w| w == b"second"));
        let mut from = TxQueue::default();
        from.push_raw(&plain);
        from.drain_frames(|flags, parts| sealer.seal_into(&mut out, flags, parts))
            .unwrap();
        sealer
            .seal_behind(&mut out, &[], msg("third").frames(), 1)
            .unwrap();
        let mut wire = out.take_all();
        assert!(!wire.windows(6).any(|w| w == b"second"));
        p.b.handle_input(&mut wire, p.now).unwrap();
        let got: Vec<Vec<u8>> = events(&mut p.b)
            .into_iter()
            .map(|e| match e {
                Event::Message(m) => m.frames()[0].to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [&b"first"[..], b"second", b"third"]);
        // The PING was opened and answered.
        let pong = p.b.transmit().take_all();
        assert!(!pong.is_empty());
    }

    #[test]
    fn a_refused_curve_client_hears_why() {
        let (mut p, _) = curve_pair(false);
        let (ra, rb) = p.drive();
        assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
        assert!(
            matches!(&ra, Err(ZmtpError::PeerError(r)) if r == "authentication failed"),
            "{ra:?}"
        );
        assert!(!p.a.is_active() && !p.b.is_active());
    }

    /// A DEALER PLAIN client and a ROUTER PLAIN server allowing only "ann"/"pw".
    fn plain_pair(user: &str, password: &[u8]) -> Pair {
        let mut a = ConnectionConfig::new(SocketType::Dealer);
        a.mechanism = Mechanism::PlainClient {
            username: user.into(),
            password: password.into(),
        };
        let mut b = ConnectionConfig::new(SocketType::Router);
        b.mechanism = Mechanism::PlainServer {
            authorize: Some(std::sync::Arc::new(|u, p| u == "ann" && p == b"pw")),
        };
        Pair::new(a, b)
    }

    #[test]
    fn plain_lets_a_known_user_in_and_tells_a_stranger_why_not() {
        let mut p = plain_pair("ann", b"pw");
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert!(p.a.is_active() && p.b.is_active() && !p.a.is_encrypted());
        let ev = events(&mut p.b);
        let [Event::Ready(info)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(info.user.as_deref(), Some("ann"));
        let mut q = plain_pair("ann", b"guess");
        let (ra, rb) = q.drive();
        assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
        assert!(matches!(&ra, Err(ZmtpError::PeerError(r)) if r == "authentication failed"));
    }

    #[test]
    fn a_deferred_curve_server_waits_for_the_decision_then_admits_with_an_identity() {
        let (mut p, ck) = curve_pair(true);
        p.b.config.defer_authorization = true;
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        // Stopped after INITIATE: the client has no READY yet.
        assert!(!p.a.is_active() && !p.b.is_active());
        let ev = events(&mut p.b);
        let [Event::Authenticate(creds)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(creds.public_key, Some(ck.public()));
        p.b.authorized(Ok(Some("ann".into())), p.now).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert!(p.a.is_active() && p.b.is_active() && p.b.is_encrypted());
        let ev = events(&mut p.b);
        let [Event::Ready(info)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (info.public_key, info.user.as_deref()),
            (Some(ck.public()), Some("ann"))
        );
        // Decided once: a second decision is refused.
        assert!(p.b.authorized(Ok(None), p.now).is_err());
    }

    #[test]
    fn a_deferred_refusal_tells_the_client_its_reason() {
        let (mut p, _) = curve_pair(true);
        p.b.config.defer_authorization = true;
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let r = p.b.authorized(Err("key revoked".into()), p.now);
        assert!(
            matches!(&r, Err(ZmtpError::Denied(w)) if w == "key revoked"),
            "{r:?}"
        );
        let (ra, _) = p.drive();
        assert!(
            matches!(&ra, Err(ZmtpError::PeerError(w)) if w == "key revoked"),
            "{ra:?}"
        );
        assert!(p.b.is_closed());
    }

    #[test]
    fn a_deferred_plain_server_asks_with_the_password_and_keeps_the_user_name() {
        let mut p = plain_pair("ann", b"pw");
        p.b.config.defer_authorization = true;
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let ev = events(&mut p.b);
        let [Event::Authenticate(creds)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(creds.username.as_deref(), Some("ann"));
        assert_eq!(creds.password.as_deref(), Some(&b"pw"[..]));
        assert!(!format!("{creds:?}").contains("pw\""), "{creds:?}");
        p.b.authorized(Ok(None), p.now).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let ev = events(&mut p.b);
        let [Event::Ready(info)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(info.user.as_deref(), Some("ann"));
        // A stranger stops at the allow-list: the application is not asked.
        let mut q = plain_pair("eve", b"pw");
        q.b.config.defer_authorization = true;
        let (_, rb) = q.drive();
        assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
        assert!(events(&mut q.b).is_empty());
    }

    #[test]
    fn a_client_that_speaks_while_the_server_decides_is_closed() {
        let (mut p, _) = curve_pair(true);
        p.b.config.defer_authorization = true;
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let mut extra = BytesMut::from(&b"\x04\x06\x05HELLO"[..]);
        assert!(p.b.handle_input(&mut extra, p.now).is_err());
        assert!(p.b.is_closed());
    }

    #[test]
    fn a_plain_hello_of_the_wrong_size_is_refused() {
        assert!(plain_hello(b"\x05HELLO").is_err());
        assert!(plain_hello(b"\x05HELLO\x03an").is_err());
        assert!(plain_hello(b"\x05HELLO\x03ann\x02p").is_err());
        assert!(plain_hello(b"\x05HELLO\x03ann\x02pww").is_err());
        assert_eq!(
            plain_hello(b"\x05HELLO\x03ann\x02pw").unwrap(),
            ("ann".to_string(), b"pw".to_vec())
        );
    }

    #[test]
    fn curve_and_null_do_not_talk() {
        let (p, _) = curve_pair(true);
        let mut q = Pair::new(
            ConnectionConfig::new(SocketType::Dealer),
            p.b.config.clone(),
        );
        let (ra, rb) = q.drive();
        assert!(matches!(ra, Err(ZmtpError::MechanismMismatch(_))), "{ra:?}");
        assert!(matches!(rb, Err(ZmtpError::MechanismMismatch(_))), "{rb:?}");
    }

    /// A DEALER and a ROUTER whose messages are limited to `max` bytes; the ROUTER
    /// discards what is over it when `discard`.
    fn limited_pair(max: u64, discard: bool, curve: bool) -> Pair {
        let mut p = if curve {
            curve_pair(true).0
        } else {
            Pair::new(
                ConnectionConfig::new(SocketType::Dealer),
                ConnectionConfig::new(SocketType::Router),
            )
        };
        let mut b = p.b.config.clone();
        b.max_message_size = max;
        b.discard_oversize = discard;
        let a = p.a.config.clone();
        p = Pair::new(a, b);
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        events(&mut p.a);
        events(&mut p.b);
        p
    }

    fn msg(frames: &[&[u8]]) -> Message {
        frames
            .iter()
            .map(|f| Bytes::copy_from_slice(f))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn a_discarding_connection_reports_a_message_too_large_and_serves_on() {
        let mut p = limited_pair(100, true, false);
        p.a.send(&msg(&[b"", b"header", &[7u8; 500], b"tail"]))
            .unwrap();
        p.a.send(&msg(&[b"", b"next"])).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert_eq!(
            events(&mut p.b),
            [
                Event::TooLarge {
                    head: msg(&[b"", b"header"]),
                    size: 510,
                },
                Event::Message(msg(&[b"", b"next"])),
            ]
        );
    }

    #[test]
    fn without_discarding_or_over_curve_a_message_too_large_closes() {
        for curve in [false, true] {
            let mut p = limited_pair(100, curve, curve);
            p.a.send(&msg(&[b"", &[7u8; 500]])).unwrap();
            let (_, rb) = p.drive();
            assert!(
                matches!(rb, Err(ZmtpError::TooLarge { .. })),
                "{curve}: {rb:?}"
            );
        }
    }

    #[test]
    fn req_and_rep_handshake_and_exchange() {
        let mut p = Pair::new(
            ConnectionConfig::new(SocketType::Req),
            ConnectionConfig::new(SocketType::Rep),
        );
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert!(p.a.is_active() && p.b.is_active());
        let ev = events(&mut p.b);
        let [Event::Ready(info)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(info.socket_type, SocketType::Req);
        assert_eq!(info.minor, 1);
        events(&mut p.a);

        let msg: Message = vec![Bytes::new(), Bytes::from_static(b"hello")].into();
        p.a.send(&msg).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        assert_eq!(events(&mut p.b), vec![Event::Message(msg)]);

        // A last frame given as parts (small and large) arrives as one frame, and its
        // wire bytes are those of the frame sent whole.
        let big = Bytes::from(vec![9u8; 5000]);
        let parts = [
            Bytes::from_static(b"\xc5\x13\x88"),
            big.clone(),
            Bytes::from_static(b"!"),
        ];
        let whole: Bytes = parts.concat().into();
        let frames = [
            Bytes::new(),
            parts[0].clone(),
            parts[1].clone(),
            parts[2].clone(),
        ];
        p.a.send_frames(&frames, 3).unwrap();
        let joined = p.a.transmit().take_all();
        p.a.send(&vec![Bytes::new(), whole.clone()].into()).unwrap();
        let plain = p.a.transmit().take_all();
        assert_eq!(joined, plain);
        p.a.send_frames(&frames, 3).unwrap();
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let expect: Message = vec![Bytes::new(), whole].into();
        assert_eq!(events(&mut p.b), vec![Event::Message(expect)]);
    }

    #[test]
    fn wrong_pair_fails_with_error_command() {
        let mut p = Pair::new(
            ConnectionConfig::new(SocketType::Req),
            ConnectionConfig::new(SocketType::Req),
        );
        let (ra, rb) = p.drive();
        assert!(
            matches!(ra, Err(ZmtpError::IncompatibleSocketType { .. })),
            "{ra:?}"
        );
        assert!(
            matches!(rb, Err(ZmtpError::IncompatibleSocketType { .. })),
            "{rb:?}"
        );
        assert!(p.a.is_closed());
    }

    #[test]
    fn libzmq_rep_peer_bytes() {
        // What a libzmq 4.3.5 REP writes: greeting, then READY with Socket-Type only.
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&Greeting::null().encode());
        wire.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REP");
        // Then a reply: delimiter + "World".
        wire.extend_from_slice(b"\x01\x00\x00\x05World");
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Req), Instant::now());
        // Our first bytes are the greeting followed by READY with an empty Identity.
        let out = c.transmit().take_all();
        assert_eq!(&out[..64], &Greeting::null().encode()[..]);
        assert_eq!(
            &out[64..],
            b"\x04\x26\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00"
        );
        // Fed one byte at a time.
        let mut src = BytesMut::new();
        for b in wire.iter() {
            src.extend_from_slice(&[*b]);
            c.handle_input(&mut src, Instant::now()).unwrap();
        }
        assert!(src.is_empty());
        let ev = events(&mut c);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[1],
            Event::Message(vec![Bytes::new(), Bytes::from_static(b"World")].into())
        );
    }

    #[test]
    fn pings_are_answered_with_pong_echoing_context() {
        let mut p = Pair::new(
            ConnectionConfig::new(SocketType::Dealer),
            ConnectionConfig::new(SocketType::Router),
        );
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let mut ping = BytesMut::from(&b"\x04\x09\x04PING\x00\x0a\xab\xcd"[..]);
        p.b.handle_input(&mut ping, p.now).unwrap();
        assert_eq!(&p.b.transmit().take_all()[..], b"\x04\x07\x04PONG\xab\xcd");
        // The peer's TTL (1 s) now applies to us.
        assert_eq!(p.b.poll_timeout(), Some(p.now + Duration::from_secs(1)));
        assert_eq!(
            p.b.handle_timeout(p.now + Duration::from_secs(1)),
            Err(ZmtpError::HeartbeatTimeout)
        );
    }

    #[test]
    fn silent_peer_is_detected_by_heartbeat() {
        let mut cfg = ConnectionConfig::new(SocketType::Dealer);
        cfg.heartbeat = Some(HeartbeatConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            ttl: Duration::ZERO,
        });
        let mut p = Pair::new(cfg, ConnectionConfig::new(SocketType::Router));
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        let t = p.now + Duration::from_millis(100);
        assert_eq!(p.a.poll_timeout(), Some(t));
        p.a.handle_timeout(t).unwrap();
        let ping = p.a.transmit().take_all();
        assert_eq!(&ping[..], b"\x04\x07\x04PING\x00\x00");
        assert_eq!(ping[0] & FLAG_COMMAND, FLAG_COMMAND);
        // The peer answers: alive.
        p.now = t;
        let mut ping = ping;
        p.b.handle_input(&mut ping, t).unwrap();
        let mut pong = p.b.transmit().take_all();
        p.a.handle_input(&mut pong, t).unwrap();
        // From now on the peer is silent: dead 300 ms after the next PING.
        let t2 = t + Duration::from_millis(100);
        p.a.handle_timeout(t2).unwrap();
        p.a.handle_timeout(t2 + Duration::from_millis(100)).unwrap();
        assert_eq!(
            p.a.handle_timeout(t2 + Duration::from_millis(300)),
            Err(ZmtpError::HeartbeatTimeout)
        );
    }

    #[test]
    fn zmtp30_peer_is_not_pinged_by_default() {
        let mut cfg = ConnectionConfig::new(SocketType::Req);
        cfg.heartbeat = Some(HeartbeatConfig::every(Duration::from_millis(100)));
        let now = Instant::now();
        let mut c = Connection::new(cfg, now);
        let mut g = Greeting::null().encode();
        g[11] = 0;
        let mut wire = BytesMut::from(&g[..]);
        wire.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REP");
        c.handle_input(&mut wire, now).unwrap();
        assert!(c.is_active());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn handshake_times_out() {
        let now = Instant::now();
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(30)));
        assert_eq!(c.handle_timeout(now + Duration::from_secs(29)), Ok(()));
        assert_eq!(
            c.handle_timeout(now + Duration::from_secs(30)),
            Err(ZmtpError::HandshakeTimeout)
        );
    }

    #[test]
    fn wrong_mechanism_and_garbage_are_refused() {
        let now = Instant::now();
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
        let mut g = Greeting::null().encode();
        g[12..17].copy_from_slice(b"CURVE");
        let mut wire = BytesMut::from(&g[..]);
        assert!(matches!(
            c.handle_input(&mut wire, now),
            Err(ZmtpError::MechanismMismatch(_))
        ));
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
        let mut wire = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(c.handle_input(&mut wire, now), Err(ZmtpError::BadSignature));
    }

    #[test]
    fn oversized_message_fails_the_connection() {
        let mut small = ConnectionConfig::new(SocketType::Rep);
        small.max_message_size = 10;
        let mut p = Pair::new(ConnectionConfig::new(SocketType::Req), small);
        assert_eq!(p.drive(), (Ok(()), Ok(())));
        p.a.send(&vec![Bytes::new(), Bytes::from(vec![0u8; 11])].into())
            .unwrap();
        let (_, rb) = p.drive();
        assert!(matches!(rb, Err(ZmtpError::TooLarge { .. })));
        p.a.send(&Message::from("x")).unwrap_err();
    }

    #[test]
    fn a_message_of_endless_empty_frames_is_refused() {
        let now = Instant::now();
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Router), now);
        let mut wire = BytesMut::from(&Greeting::null().encode()[..]);
        wire.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
        c.handle_input(&mut wire, now).unwrap();
        let mut frames = BytesMut::new();
        for _ in 0..MAX_FRAMES {
            frames.extend_from_slice(&[FLAG_MORE, 0]);
        }
        c.handle_input(&mut frames, now).unwrap();
        let mut one_more = BytesMut::from(&[FLAG_MORE, 0][..]);
        assert!(matches!(
            c.handle_input(&mut one_more, now),
            Err(ZmtpError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_input_split_anywhere_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            valid_prefix in proptest::prelude::any::<bool>(),
            cut in 1usize..100,
        ) {
            let now = Instant::now();
            let mut c = Connection::new(ConnectionConfig::new(SocketType::Router), now);
            let mut wire = Vec::new();
            if valid_prefix {
                wire.extend_from_slice(&Greeting::null().encode());
                wire.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
            }
            wire.extend_from_slice(&bytes);
            let mut src = BytesMut::new();
            for piece in wire.chunks(cut) {
                src.extend_from_slice(piece);
                if c.handle_input(&mut src, now).is_err() { break; }
            }
            while c.poll_event().is_some() {}
        }
    }
}
