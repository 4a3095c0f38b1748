//! ZMTP 3.x without IO: bytes in, bytes out, time passed in.
//!
//! Nothing in this module touches a socket, spawns a task or reads the clock. The tokio
//! code in [`crate::socket`] feeds received bytes to a [`Connection`], writes what it asks
//! to transmit, and calls [`Connection::handle_timeout`] at [`Connection::poll_timeout`].
//!
//! # Layout
//! - [`greeting`]: the 64-byte greeting (signature, version, mechanism).
//! - [`frame`]: frame headers, the incremental [`FrameDecoder`] and the [`TxQueue`] that
//!   batches outgoing frames for one vectored write.
//! - [`command`]: READY (with its metadata properties), ERROR, PING, PONG and any other
//!   command.
//! - [`socket_type`]: socket types and the valid-pair table.
//! - [`heartbeat`]: PING/PONG timers and the peer's TTL.
//! - [`connection`]: the per-connection state machine that ties them together
//!   (handshake, then message traffic); `connection/security.rs`: its PLAIN and CURVE
//!   handshakes and the server's decision on a client.
//! - [`mechanism`]: NULL, PLAIN or CURVE, with each side's keys or credentials.
//! - [`curve`]: the CURVE mechanism's handshake commands and MESSAGE boxes (keys,
//!   HELLO/WELCOME/INITIATE/READY, nonces), tested against libzmq; [`z85`]: the text
//!   form of its keys.
//!
//! Facts about libzmq's behaviour that this module matches are noted where they apply.

pub mod command;
pub mod connection;
pub mod curve;
pub mod frame;
pub mod greeting;
pub mod heartbeat;
pub mod mechanism;
pub mod socket_type;
pub mod z85;

pub use command::{Command, Metadata};
pub use connection::{Connection, ConnectionConfig, Credentials, Event, PeerInfo};
pub use frame::{Frame, FrameDecoder, TxQueue};
pub use greeting::{Greeting, GREETING_LEN};
pub use heartbeat::HeartbeatConfig;
pub use mechanism::{Authorizer, Mechanism, PlainAuthorizer};
pub use socket_type::SocketType;

/// Why a ZMTP connection failed. Every variant closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZmtpError {
    /// The peer's first bytes are not a ZMTP 3 greeting signature.
    #[error("invalid greeting signature")]
    BadSignature,
    /// The peer speaks a ZMTP major version below 3.
    #[error("unsupported ZMTP version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version the peer announced.
        major: u8,
        /// Minor version the peer announced.
        minor: u8,
    },
    /// The peer asked for a security mechanism other than ours.
    #[error("security mechanism mismatch: peer wants {0:?}")]
    MechanismMismatch(String),
    /// A frame or command that the grammar does not allow.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A message (or command) larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size the peer declared (for a multipart message: so far).
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The peer's socket type cannot talk to ours.
    #[error("socket type {peer} cannot talk to {ours}")]
    IncompatibleSocketType {
        /// Our socket type.
        ours: SocketType,
        /// The type the peer announced.
        peer: String,
    },
    /// The peer sent an ERROR command.
    #[error("peer sent ERROR: {0}")]
    PeerError(String),
    /// The handshake did not finish before its deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// No traffic from the peer within the heartbeat timeout (or its PING TTL).
    #[error("heartbeat timed out")]
    HeartbeatTimeout,
    /// Operation on a connection that is not (yet, or any more) active.
    #[error("connection is not active")]
    NotActive,
    /// A CURVE command or box that is wrong: malformed, out of order, a nonce that
    /// does not rise, a box that does not open.
    #[error("CURVE: {0}")]
    Curve(&'static str),
    /// The server refused our credentials, or we refused the client's.
    #[error("authentication rejected: {0}")]
    Unauthorized(String),
    /// The server's application refused the client (see
    /// [`Connection::authorized`]); the reason is what the client hears.
    #[error("authentication rejected: {0}")]
    Denied(String),
}

impl ZmtpError {
    /// The reason text to put in an ERROR command for this failure, if one is due.
    pub fn error_reason(&self) -> Option<&str> {
        match self {
            ZmtpError::Malformed(_) => Some("malformed"),
            ZmtpError::TooLarge { .. } => Some("message too large"),
            ZmtpError::IncompatibleSocketType { .. } => Some("invalid socket type"),
            ZmtpError::MechanismMismatch(_) => Some("security mechanism mismatch"),
            ZmtpError::HandshakeTimeout => Some("handshake timed out"),
            ZmtpError::Unauthorized(_) => Some("authentication failed"),
            ZmtpError::Denied(why) => Some(why),
            _ => None,
        }
    }
}
