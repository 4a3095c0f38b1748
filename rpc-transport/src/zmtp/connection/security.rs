//! The security mechanisms' side of a connection: the PLAIN and CURVE handshake
//! commands (RFC 24, RFC 25), the server's decision on a client (an allow-list, a
//! callback, or the application's answer to [`Event::Authenticate`]), and the CURVE
//! session that boxes every frame after it.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Connection, Event};
use crate::zmtp::command::{Command, Metadata};
use crate::zmtp::curve::{CurveClient, CurveServer, PublicKey, Session};
use crate::zmtp::mechanism::Mechanism;
use crate::zmtp::ZmtpError;

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
pub(super) enum Deciding {
    Curve {
        server: Box<CurveServer>,
        client: PublicKey,
        metadata: Bytes,
    },
    Plain {
        user: String,
    },
}

/// Where a secured connection's mechanism stands (nothing for NULL).
#[derive(Debug)]
pub(super) enum Sec {
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
    /// A CURVE handshake command arrived.
    pub(super) fn on_secure_handshake(
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
}

/// A PLAIN HELLO's user name and password, sizes checked.
pub(super) fn plain_hello(body: &[u8]) -> Result<(String, Vec<u8>), ZmtpError> {
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
pub(super) fn sealing(curve: &mut Sec) -> Option<&mut Session> {
    match curve {
        Sec::Session(session) if !session.handed_out() => Some(session),
        _ => None,
    }
}
