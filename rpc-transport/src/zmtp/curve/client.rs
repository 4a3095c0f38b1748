//! The client's side of the handshake: HELLO, then INITIATE (with its vouch) on the
//! server's WELCOME, then the session on its READY.

use std::fmt;

use bytes::{Bytes, BytesMut};
use crypto_box::aead::OsRng;
use crypto_box::SalsaBox;

use super::{
    bad, nonce, open_copy, random, rising, seal_into, session_key, KeyPair, PublicKey, Session,
    SessionKey, COOKIE_LEN, HELLO, HELLO_LEN, INITIATE, INITIATE_MIN, KEY, READY, READY_MIN,
    VOUCH_LEN, WELCOME, WELCOME_LEN,
};
use crate::zmtp::ZmtpError;

/// Where a client's handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStep {
    Hello,
    Welcome,
    Ready,
    Done,
}

/// The client's side of a CURVE handshake.
pub struct CurveClient {
    keys: KeyPair,
    server: PublicKey,
    transient: crypto_box::SecretKey,
    transient_public: PublicKey,
    step: ClientStep,
    /// Our next short nonce (HELLO takes 1).
    nonce: u64,
    /// The C'/S' box, once WELCOME gave S'.
    cipher: Option<SalsaBox>,
    /// The MESSAGE boxes' key, once the short-term keys are known.
    message_key: Option<SessionKey>,
    peer_nonce: u64,
}

impl fmt::Debug for CurveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveClient")
            .field("public", &self.keys.public)
            .field("server", &self.server)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl CurveClient {
    /// A client with permanent keys `keys`, for the server whose permanent public key
    /// is `server`.
    pub fn new(keys: KeyPair, server: PublicKey) -> CurveClient {
        let transient = crypto_box::SecretKey::generate(&mut OsRng);
        CurveClient {
            transient_public: PublicKey(transient.public_key().to_bytes()),
            transient,
            keys,
            server,
            step: ClientStep::Hello,
            nonce: 1,
            cipher: None,
            message_key: None,
            peer_nonce: 0,
        }
    }

    fn next_nonce(&mut self) -> [u8; 8] {
        self.nonce += 1;
        (self.nonce - 1).to_be_bytes()
    }

    /// The HELLO command; once.
    pub fn hello(&mut self) -> Result<Bytes, ZmtpError> {
        if self.step != ClientStep::Hello {
            return Err(bad("HELLO out of order"));
        }
        let mut out = BytesMut::with_capacity(HELLO_LEN);
        out.extend_from_slice(HELLO);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&[0; 72]);
        out.extend_from_slice(self.transient_public.as_bytes());
        let short = self.next_nonce();
        out.extend_from_slice(&short);
        let to_server = SalsaBox::new(&self.server.to_crypto(), &self.transient);
        seal_into(
            &to_server,
            &nonce(b"CurveZMQHELLO---", &short),
            &[&[0; 64]],
            &mut out,
        )?;
        self.step = ClientStep::Welcome;
        Ok(out.freeze())
    }

    /// The server's WELCOME: the INITIATE command to answer it, carrying `metadata`
    /// (ZMTP properties, encoded).
    pub fn on_welcome(&mut self, cmd: &[u8], metadata: &[u8]) -> Result<Bytes, ZmtpError> {
        if self.step != ClientStep::Welcome {
            return Err(bad("WELCOME out of order"));
        }
        if cmd.len() != WELCOME_LEN || !cmd.starts_with(WELCOME) {
            return Err(bad("malformed WELCOME"));
        }
        let from_server = SalsaBox::new(&self.server.to_crypto(), &self.transient);
        let plain = open_copy(&from_server, &nonce(b"WELCOME-", &cmd[8..24]), &cmd[24..])
            .map_err(|_| bad("WELCOME did not open: wrong server key?"))?;
        let server_transient: [u8; KEY] = plain[..KEY].try_into().map_err(|_| bad("WELCOME"))?;
        let cookie = &plain[KEY..KEY + COOKIE_LEN];
        let session = SalsaBox::new(
            &crypto_box::PublicKey::from_bytes(server_transient),
            &self.transient,
        );
        // The vouch: box[C' + S](C->S').
        let vouch_nonce: [u8; 16] = random();
        let mut vouch = BytesMut::with_capacity(VOUCH_LEN);
        vouch.extend_from_slice(&vouch_nonce);
        let vouch_box = SalsaBox::new(
            &crypto_box::PublicKey::from_bytes(server_transient),
            &self.keys.secret,
        );
        seal_into(
            &vouch_box,
            &nonce(b"VOUCH---", &vouch_nonce),
            &[self.transient_public.as_bytes(), self.server.as_bytes()],
            &mut vouch,
        )?;
        let mut out = BytesMut::with_capacity(INITIATE_MIN + metadata.len());
        out.extend_from_slice(INITIATE);
        out.extend_from_slice(cookie);
        let short = self.next_nonce();
        out.extend_from_slice(&short);
        seal_into(
            &session,
            &nonce(b"CurveZMQINITIATE", &short),
            &[self.keys.public.as_bytes(), &vouch, metadata],
            &mut out,
        )?;
        self.message_key = Some(session_key(&server_transient, &self.transient)?);
        self.cipher = Some(session);
        self.step = ClientStep::Ready;
        Ok(out.freeze())
    }

    /// The server's READY: its metadata (encoded ZMTP properties). The handshake is
    /// then complete: [`CurveClient::into_session`].
    pub fn on_ready(&mut self, cmd: &[u8]) -> Result<Bytes, ZmtpError> {
        if self.step != ClientStep::Ready {
            return Err(bad("READY out of order"));
        }
        if cmd.len() < READY_MIN || !cmd.starts_with(READY) {
            return Err(bad("malformed READY"));
        }
        let cipher = self.cipher.as_ref().ok_or(bad("READY out of order"))?;
        rising(&mut self.peer_nonce, &cmd[6..14])?;
        let plain = open_copy(cipher, &nonce(b"CurveZMQREADY---", &cmd[6..14]), &cmd[14..])?;
        self.step = ClientStep::Done;
        Ok(Bytes::copy_from_slice(&plain))
    }

    /// The MESSAGE boxes, once READY was received.
    pub fn into_session(self) -> Result<Session, ZmtpError> {
        match (self.step, self.message_key) {
            (ClientStep::Done, Some(key)) => Ok(Session::new(
                key,
                self.nonce,
                self.peer_nonce,
                b"CurveZMQMESSAGEC",
                b"CurveZMQMESSAGES",
            )),
            _ => Err(bad("handshake not complete")),
        }
    }
}
