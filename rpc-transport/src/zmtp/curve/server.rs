//! The server's side of the handshake: WELCOME (with a cookie, so that nothing is
//! kept before INITIATE), INITIATE checked (cookie, vouch, client key), READY.

use std::fmt;

use bytes::{Bytes, BytesMut};
use crypto_box::aead::{KeyInit, OsRng};
use crypto_box::SalsaBox;
use crypto_secretbox::XSalsa20Poly1305;
use zeroize::Zeroizing;

use super::{
    bad, nonce, open_copy, random, rising, seal_into, session_key, KeyPair, PublicKey, Session,
    SessionKey, COOKIE_LEN, HELLO, HELLO_LEN, INITIATE, INITIATE_MIN, KEY, READY, READY_MIN,
    VOUCH_LEN, WELCOME, WELCOME_LEN,
};
use crate::zmtp::ZmtpError;

/// Where a server's handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerStep {
    Hello,
    Initiate,
    /// INITIATE checked; READY to send once the client is allowed.
    Allow,
    Done,
}

/// What a valid INITIATE told the server.
#[derive(Debug, Clone)]
pub struct Initiated {
    /// The client's permanent public key (to authenticate).
    pub client: PublicKey,
    /// The client's metadata (encoded ZMTP properties).
    pub metadata: Bytes,
}

/// The server's side of a CURVE handshake.
pub struct CurveServer {
    keys: KeyPair,
    step: ServerStep,
    /// The client's transient key, from its HELLO.
    client_transient: Option<PublicKey>,
    /// The key of this connection's cookie, dropped (zeroized) once INITIATE came.
    cookie_key: Option<Zeroizing<[u8; KEY]>>,
    cipher: Option<SalsaBox>,
    /// The MESSAGE boxes' key, once the short-term keys are known.
    message_key: Option<SessionKey>,
    nonce: u64,
    peer_nonce: u64,
}

impl fmt::Debug for CurveServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveServer")
            .field("public", &self.keys.public)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl CurveServer {
    /// A server with permanent keys `keys`.
    pub fn new(keys: KeyPair) -> CurveServer {
        CurveServer {
            keys,
            step: ServerStep::Hello,
            client_transient: None,
            cookie_key: None,
            cipher: None,
            message_key: None,
            nonce: 1,
            peer_nonce: 0,
        }
    }

    /// The client's HELLO: the WELCOME command to answer it.
    pub fn on_hello(&mut self, cmd: &[u8]) -> Result<Bytes, ZmtpError> {
        if self.step != ServerStep::Hello {
            return Err(bad("HELLO out of order"));
        }
        if cmd.len() != HELLO_LEN || !cmd.starts_with(HELLO) {
            return Err(bad("malformed HELLO"));
        }
        if cmd[6..8] != [1, 0] {
            return Err(bad("unsupported CurveZMQ version"));
        }
        let client_transient: [u8; KEY] = cmd[80..112].try_into().map_err(|_| bad("HELLO"))?;
        rising(&mut self.peer_nonce, &cmd[112..120])?;
        let from_client = SalsaBox::new(
            &crypto_box::PublicKey::from_bytes(client_transient),
            &self.keys.secret,
        );
        let zeros = open_copy(
            &from_client,
            &nonce(b"CurveZMQHELLO---", &cmd[112..120]),
            &cmd[120..],
        )
        .map_err(|_| bad("HELLO did not open: the client has another server key"))?;
        if zeros.iter().any(|&b| b != 0) {
            return Err(bad("HELLO signature is not zeros"));
        }
        // A transient key pair for the connection, kept only inside the cookie.
        let transient = crypto_box::SecretKey::generate(&mut OsRng);
        let cookie_key = Zeroizing::new(random::<KEY>());
        let cookie_nonce: [u8; 16] = random();
        let mut cookie = BytesMut::with_capacity(COOKIE_LEN);
        cookie.extend_from_slice(&cookie_nonce);
        let secret = Zeroizing::new(transient.to_bytes());
        let sealer = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&cookie_key[..]));
        seal_into(
            &sealer,
            &nonce(b"COOKIE--", &cookie_nonce),
            &[&client_transient, &secret[..]],
            &mut cookie,
        )?;
        let welcome_nonce: [u8; 16] = random();
        let mut out = BytesMut::with_capacity(WELCOME_LEN);
        out.extend_from_slice(WELCOME);
        out.extend_from_slice(&welcome_nonce);
        seal_into(
            &from_client,
            &nonce(b"WELCOME-", &welcome_nonce),
            &[&transient.public_key().to_bytes(), &cookie],
            &mut out,
        )?;
        self.client_transient = Some(PublicKey(client_transient));
        self.cookie_key = Some(cookie_key);
        self.step = ServerStep::Initiate;
        Ok(out.freeze())
    }

    /// The client's INITIATE: checks the cookie, the box and the vouch, and returns the
    /// client's permanent key and metadata, for the caller to authenticate. Then
    /// [`CurveServer::ready`] (allowed) or an ERROR (refused).
    pub fn on_initiate(&mut self, cmd: &[u8]) -> Result<Initiated, ZmtpError> {
        if self.step != ServerStep::Initiate {
            return Err(bad("INITIATE out of order"));
        }
        if cmd.len() < INITIATE_MIN || !cmd.starts_with(INITIATE) {
            return Err(bad("malformed INITIATE"));
        }
        let client_transient = self.client_transient.ok_or(bad("INITIATE out of order"))?;
        // The cookie: only this connection's key opens it, once.
        let cookie_key = self.cookie_key.take().ok_or(bad("INITIATE out of order"))?;
        let cookie = &cmd[9..9 + COOKIE_LEN];
        let opener = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&cookie_key[..]));
        let inside = open_copy(&opener, &nonce(b"COOKIE--", &cookie[..16]), &cookie[16..])
            .map_err(|_| bad("INITIATE cookie did not open"))?;
        if inside[..KEY] != client_transient.0 {
            return Err(bad("INITIATE cookie is not this client's"));
        }
        let transient_bytes: [u8; KEY] =
            inside[KEY..2 * KEY].try_into().map_err(|_| bad("cookie"))?;
        let transient = crypto_box::SecretKey::from_bytes(transient_bytes);
        let short = &cmd[9 + COOKIE_LEN..9 + COOKIE_LEN + 8];
        let mut last = self.peer_nonce;
        rising(&mut last, short)?;
        let session = SalsaBox::new(&client_transient.to_crypto(), &transient);
        let plain = open_copy(
            &session,
            &nonce(b"CurveZMQINITIATE", short),
            &cmd[9 + COOKIE_LEN + 8..],
        )?;
        if plain.len() < KEY + VOUCH_LEN {
            return Err(bad("INITIATE box too short"));
        }
        let client: [u8; KEY] = plain[..KEY].try_into().map_err(|_| bad("INITIATE"))?;
        let vouch = &plain[KEY..KEY + VOUCH_LEN];
        let vouch_box = SalsaBox::new(&crypto_box::PublicKey::from_bytes(client), &transient);
        let vouched = open_copy(&vouch_box, &nonce(b"VOUCH---", &vouch[..16]), &vouch[16..])
            .map_err(|_| bad("INITIATE vouch did not open"))?;
        if vouched[..KEY] != client_transient.0 || vouched[KEY..2 * KEY] != self.keys.public.0 {
            return Err(bad("INITIATE vouch is for another connection"));
        }
        self.peer_nonce = last;
        self.message_key = Some(session_key(&client_transient.0, &transient)?);
        self.cipher = Some(session);
        self.step = ServerStep::Allow;
        Ok(Initiated {
            client: PublicKey(client),
            metadata: Bytes::copy_from_slice(&plain[KEY + VOUCH_LEN..]),
        })
    }

    /// The READY command, carrying `metadata`, for a client the caller allowed.
    pub fn ready(&mut self, metadata: &[u8]) -> Result<Bytes, ZmtpError> {
        if self.step != ServerStep::Allow {
            return Err(bad("READY out of order"));
        }
        let cipher = self.cipher.as_ref().ok_or(bad("READY out of order"))?;
        let mut out = BytesMut::with_capacity(READY_MIN + metadata.len());
        out.extend_from_slice(READY);
        self.nonce += 1;
        let short = (self.nonce - 1).to_be_bytes();
        out.extend_from_slice(&short);
        seal_into(
            cipher,
            &nonce(b"CurveZMQREADY---", &short),
            &[metadata],
            &mut out,
        )?;
        self.step = ServerStep::Done;
        Ok(out.freeze())
    }

    /// The MESSAGE boxes, once READY was made.
    pub fn into_session(self) -> Result<Session, ZmtpError> {
        match (self.step, self.message_key) {
            (ServerStep::Done, Some(key)) => Ok(Session::new(
                key,
                self.nonce,
                self.peer_nonce,
                b"CurveZMQMESSAGES",
                b"CurveZMQMESSAGEC",
            )),
            _ => Err(bad("handshake not complete")),
        }
    }
}
