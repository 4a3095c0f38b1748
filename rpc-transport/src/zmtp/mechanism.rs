//! [`Mechanism`]: the security mechanism a connection speaks, with its keys.

use std::fmt;
use std::sync::Arc;

use super::curve::{KeyPair, PublicKey};

/// Decides whether a CURVE client, known by its permanent public key, may connect.
pub type Authorizer = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// Decides whether a PLAIN client, by user name and password, may connect.
pub type PlainAuthorizer = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// The security mechanism of a socket's connections (the greeting's mechanism field
/// and the handshake it implies).
#[derive(Clone, Default)]
pub enum Mechanism {
    /// No security (ZMTP's NULL): the default, as libzmq's.
    #[default]
    Null,
    /// CURVE, as the client: our key pair, and the server's public key.
    CurveClient {
        /// Our permanent keys (a server's allow-list names the public one).
        keys: KeyPair,
        /// The server's permanent public key.
        server: PublicKey,
    },
    /// CURVE, as the server: our key pair, and who may connect (`None`: any client
    /// that completes the handshake, as libzmq without a ZAP handler).
    CurveServer {
        /// Our permanent keys.
        keys: KeyPair,
        /// Allows or refuses a client by its permanent public key.
        authorize: Option<Authorizer>,
    },
    /// PLAIN (RFC 24), as the client: a user name and password, sent in clear (only
    /// inside a network already trusted).
    PlainClient {
        /// The user name (at most 255 bytes).
        username: String,
        /// The password (at most 255 bytes).
        password: Vec<u8>,
    },
    /// PLAIN, as the server: who may connect (`None`: anyone, as libzmq without a
    /// ZAP handler).
    PlainServer {
        /// Allows or refuses a client by user name and password.
        authorize: Option<PlainAuthorizer>,
    },
}

impl Mechanism {
    /// The name in the greeting.
    pub fn name(&self) -> &'static [u8] {
        match self {
            Mechanism::Null => b"NULL",
            Mechanism::CurveClient { .. } | Mechanism::CurveServer { .. } => b"CURVE",
            Mechanism::PlainClient { .. } | Mechanism::PlainServer { .. } => b"PLAIN",
        }
    }

    /// Whether we are the server of the mechanism (the greeting's as-server field).
    pub fn as_server(&self) -> bool {
        matches!(
            self,
            Mechanism::CurveServer { .. } | Mechanism::PlainServer { .. }
        )
    }
}

impl fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Null => f.write_str("Null"),
            Mechanism::CurveClient { keys, server } => f
                .debug_struct("CurveClient")
                .field("public", &keys.public())
                .field("server", server)
                .finish(),
            Mechanism::CurveServer { keys, authorize } => f
                .debug_struct("CurveServer")
                .field("public", &keys.public())
                .field("authorize", &authorize.is_some())
                .finish(),
            Mechanism::PlainClient { username, .. } => f
                .debug_struct("PlainClient")
                .field("username", username)
                .finish_non_exhaustive(),
            Mechanism::PlainServer { authorize } => f
                .debug_struct("PlainServer")
                .field("authorize", &authorize.is_some())
                .finish(),
        }
    }
}
