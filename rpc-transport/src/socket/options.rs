//! [`SocketOptions`]: limits, timers and identity of a socket.

use std::time::Duration;

use bytes::Bytes;

use crate::timer::Timer;
use crate::zmtp::{HeartbeatConfig, Mechanism};

/// Options shared by every socket type. Defaults follow libzmq where it is safe and
/// bound everything libzmq leaves unbounded.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Identity sent in READY (libzmq `ZMQ_ROUTING_ID`); empty for none.
    pub identity: Bytes,
    /// Largest incoming message, all frames together (libzmq: unlimited). Default 4 MiB.
    pub max_message_size: usize,
    /// Time allowed for a TCP connect before it is given up and tried again after
    /// the reconnect delay (libzmq `ZMQ_CONNECT_TIMEOUT`). `None` (default, as
    /// libzmq) leaves it to the kernel: behind a partition that drops SYNs, minutes,
    /// and a healed partition is found only at the next SYN retransmission.
    pub connect_timeout: Option<Duration>,
    /// Time allowed for the greeting and READY exchange. Default 30 s, as libzmq.
    pub handshake_timeout: Duration,
    /// PING/PONG heartbeats; off by default, as libzmq.
    pub heartbeat: Option<HeartbeatConfig>,
    /// Also PING peers that announced ZMTP 3.0 (libzmq 4.2 drops such connections).
    pub heartbeat_zmtp30: bool,
    /// Messages queued per peer for sending (libzmq `SNDHWM`). Default 1000.
    pub send_hwm: usize,
    /// Messages queued for the application to receive (`RCVHWM`). Default 1000.
    pub recv_hwm: usize,
    /// First reconnect delay. Default 100 ms, as libzmq.
    pub reconnect_ivl: Duration,
    /// Longest reconnect delay; delays double up to it, with jitter. Default 2 s.
    pub reconnect_ivl_max: Duration,
    /// How long a closing socket keeps trying to send what is queued. Default 1 s
    /// (libzmq: for ever).
    pub linger: Duration,
    /// Most connections a bound socket accepts at once. Default 65536.
    pub max_connections: usize,
    /// ROUTER: a send to an unknown routing id is an error and a send to a peer at
    /// its high-water mark waits (libzmq `ROUTER_MANDATORY`); when false both are
    /// dropped silently. Default true.
    pub router_mandatory: bool,
    /// Seed for reconnect jitter; `None` draws one. Set it for repeatable tests.
    pub rng_seed: Option<u64>,
    /// The clock of handshake and heartbeat deadlines. Default [`Timer::Runtime`].
    pub timer: Timer,
    /// The security mechanism and its keys: NULL (default) or CURVE.
    pub mechanism: Mechanism,
    /// A message over `max_message_size`: false (default, as libzmq) closes the
    /// connection; true reads past its body without keeping a byte of it and keeps
    /// the connection. The RPC server sets it and answers such a request with the
    /// status TOO_LARGE; a socket's own queue drops the message (logged). Over CURVE
    /// the connection closes either way: a box cannot be checked without holding it.
    pub discard_oversize: bool,
    /// A CURVE or PLAIN server's application decides on each client (after the
    /// mechanism's own allow-list): see [`Authenticator`](super::Authenticator).
    pub authenticator: Option<super::Authenticator>,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            identity: Bytes::new(),
            max_message_size: 4 * 1024 * 1024,
            connect_timeout: None,
            handshake_timeout: Duration::from_secs(30),
            heartbeat: None,
            heartbeat_zmtp30: false,
            send_hwm: 1000,
            recv_hwm: 1000,
            reconnect_ivl: Duration::from_millis(100),
            reconnect_ivl_max: Duration::from_secs(2),
            linger: Duration::from_secs(1),
            max_connections: 65536,
            router_mandatory: true,
            rng_seed: None,
            timer: Timer::Runtime,
            mechanism: Mechanism::Null,
            discard_oversize: false,
            authenticator: None,
        }
    }
}

impl SocketOptions {
    /// Sets the identity.
    pub fn identity(mut self, id: impl Into<Bytes>) -> Self {
        self.identity = id.into();
        self
    }

    /// Sets the maximum incoming message size.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Turns heartbeats on.
    pub fn heartbeat(mut self, hb: HeartbeatConfig) -> Self {
        self.heartbeat = Some(hb);
        self
    }

    /// Sets both high-water marks.
    pub fn hwm(mut self, n: usize) -> Self {
        self.send_hwm = n.max(1);
        self.recv_hwm = n.max(1);
        self
    }

    /// Sets the reconnect interval and its maximum.
    pub fn reconnect(mut self, ivl: Duration, max: Duration) -> Self {
        self.reconnect_ivl = ivl;
        self.reconnect_ivl_max = max;
        self
    }

    /// Sets the linger time.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Sets the maximum number of accepted connections.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the clock of deadlines (see [`Timer`]).
    pub fn timer(mut self, timer: Timer) -> Self {
        self.timer = timer;
        self
    }

    /// Sets the security mechanism (see [`Mechanism`]).
    pub fn mechanism(mut self, mechanism: Mechanism) -> Self {
        self.mechanism = mechanism;
        self
    }

    /// Sets the jitter seed.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}
