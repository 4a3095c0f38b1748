//! CURVE (ZMTP-CURVE, RFC 25, on CurveZMQ, RFC 26): the handshake commands and the
//! MESSAGE boxes of one connection, without IO or clock, as libzmq speaks them.
//!
//! ```text
//! C:HELLO     200 octets  C', box[64 zeros](C'->S)
//! S:WELCOME   168 octets  box[S' + cookie](S->C'), cookie = box[C' + s'](cookie key)
//! C:INITIATE  257+        cookie, box[C + vouch + metadata](C'->S'), vouch = box[C' + S](C->S')
//! S:READY     30+         box[metadata](S'->C')
//! MESSAGE     33+         box[flags + frame](C'->S' or S'->C'), short nonces strictly rising
//! ```
//!
//! Every box is NaCl's `crypto_box` (X25519, XSalsa20-Poly1305) or, for the cookie,
//! `crypto_secretbox`: no primitive is written here. The handshake's boxes come from
//! RustCrypto's `crypto_box` and `crypto_secretbox`; the MESSAGE boxes, every frame
//! after it, from `dryoc`'s libsodium-compatible `crypto_box_*_afternm` on the
//! precomputed session key (runtime-detected SIMD: a 64 B box in a seventh of the
//! time, 1 MiB in a tenth; docs/BENCHMARKS.md, "CURVE"). Both compute the same
//! bytes, which a test checks. A box on the wire is its 16-octet tag then the
//! ciphertext. Transient keys, cookie keys and long nonces come from the OS RNG;
//! secret keys are zeroized when dropped. Sizes are checked before anything is opened
//! or allocated; a box that does not open, a nonce that does not rise, a command of the
//! wrong size or out of order is an error, which closes the connection.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};

use super::frame::TxQueue;
use crypto_box::aead::consts::U24;
use crypto_box::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use crypto_box::SalsaBox;
use crypto_secretbox::XSalsa20Poly1305;
use zeroize::Zeroizing;

use super::z85::{self, Z85Error};
use super::ZmtpError;

/// Size of a HELLO command.
pub const HELLO_LEN: usize = 200;
/// Size of a WELCOME command.
pub const WELCOME_LEN: usize = 168;
/// Smallest INITIATE command (no metadata).
pub const INITIATE_MIN: usize = 257;
/// Smallest READY command (no metadata).
pub const READY_MIN: usize = 30;
/// Smallest MESSAGE command (an empty frame).
pub const MESSAGE_MIN: usize = 33;

/// The MORE flag of a MESSAGE's payload.
pub const FLAG_MORE: u8 = 0x01;
/// The COMMAND flag of a MESSAGE's payload (ZMTP 3.1 commands such as PING, sent
/// encrypted).
pub const FLAG_COMMAND: u8 = 0x02;

const TAG: usize = 16;
const KEY: usize = 32;
/// A cookie: its long nonce and its box.
const COOKIE_LEN: usize = 16 + TAG + 2 * KEY;
/// A vouch: its long nonce and its box.
const VOUCH_LEN: usize = 16 + TAG + 2 * KEY;

const HELLO: &[u8] = b"\x05HELLO";
const WELCOME: &[u8] = b"\x07WELCOME";
const INITIATE: &[u8] = b"\x08INITIATE";
const READY: &[u8] = b"\x05READY";
const MESSAGE: &[u8] = b"\x07MESSAGE";

fn bad(what: &'static str) -> ZmtpError {
    ZmtpError::Curve(what)
}

/// A CURVE public key (32 octets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY]);

impl PublicKey {
    /// From its 32 octets.
    pub fn from_bytes(bytes: [u8; KEY]) -> PublicKey {
        PublicKey(bytes)
    }

    /// Its 32 octets.
    pub fn as_bytes(&self) -> &[u8; KEY] {
        &self.0
    }

    /// Its Z85 text (40 characters), as `zmq_curve_keypair` writes it.
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0).unwrap_or_default()
    }

    fn to_crypto(self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from_bytes(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid Z85.
    #[error(transparent)]
    Z85(#[from] Z85Error),
    /// Not 32 octets (40 Z85 characters).
    #[error("a CURVE key is 32 octets (40 Z85 characters), not {0}")]
    Length(usize),
}

fn key_bytes(text: &str) -> Result<Zeroizing<[u8; KEY]>, KeyError> {
    let raw = Zeroizing::new(z85::decode(text)?);
    let bytes: [u8; KEY] = raw[..]
        .try_into()
        .map_err(|_| KeyError::Length(raw.len()))?;
    Ok(Zeroizing::new(bytes))
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// From its Z85 text.
    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        Ok(PublicKey(*key_bytes(text)?))
    }
}

/// A CURVE key pair: a public key and its secret key (zeroized when dropped).
#[derive(Clone)]
pub struct KeyPair {
    public: PublicKey,
    secret: crypto_box::SecretKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key pair from the OS's random source.
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(crypto_box::SecretKey::generate(&mut OsRng))
    }

    /// The key pair of a secret key given as 32 octets.
    pub fn from_secret_bytes(secret: [u8; KEY]) -> KeyPair {
        KeyPair::from_secret(crypto_box::SecretKey::from_bytes(secret))
    }

    /// The key pair of a secret key in Z85 (as `zmq_curve_keypair` writes it); the
    /// public key is derived from it.
    pub fn from_secret_z85(text: &str) -> Result<KeyPair, KeyError> {
        Ok(KeyPair::from_secret_bytes(*key_bytes(text)?))
    }

    fn from_secret(secret: crypto_box::SecretKey) -> KeyPair {
        KeyPair {
            public: PublicKey(secret.public_key().to_bytes()),
            secret,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret key in Z85 (to store it; handle with care).
    pub fn secret_z85(&self) -> String {
        let bytes = Zeroizing::new(self.secret.to_bytes());
        z85::encode(&bytes[..]).unwrap_or_default()
    }
}

/// A 24-octet nonce: a prefix and the rest.
fn nonce(prefix: &[u8], rest: &[u8]) -> crypto_box::Nonce {
    long_nonce(prefix, rest).into()
}

/// Appends `box[plain]` (tag, then ciphertext) to `out`.
fn seal_into<C: AeadInPlace + AeadCore<NonceSize = U24>>(
    cipher: &C,
    n: &crypto_box::Nonce,
    plain: &[&[u8]],
    out: &mut BytesMut,
) -> Result<(), ZmtpError> {
    let start = out.len();
    out.extend_from_slice(&[0; TAG]);
    for p in plain {
        out.extend_from_slice(p);
    }
    let tag = cipher
        .encrypt_in_place_detached(n, b"", &mut out[start + TAG..])
        .map_err(|_| bad("cannot encrypt"))?;
    out[start..start + TAG].copy_from_slice(&tag);
    Ok(())
}

/// Opens `boxed` (tag, then ciphertext) in place: the ciphertext becomes the
/// plaintext.
fn open_in_place<C: AeadInPlace + AeadCore<NonceSize = U24>>(
    cipher: &C,
    n: &crypto_box::Nonce,
    boxed: &mut [u8],
) -> Result<(), ZmtpError> {
    if boxed.len() < TAG {
        return Err(bad("box too short"));
    }
    let (tag, body) = boxed.split_at_mut(TAG);
    let tag = crypto_box::aead::Tag::<C>::clone_from_slice(tag);
    cipher
        .decrypt_in_place_detached(n, b"", body, &tag)
        .map_err(|_| bad("a box did not open"))
}

/// Opens a copy of `boxed`; returns the plaintext (handshake boxes are small).
fn open_copy<C: AeadInPlace + AeadCore<NonceSize = U24>>(
    cipher: &C,
    n: &crypto_box::Nonce,
    boxed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ZmtpError> {
    let mut buf = Zeroizing::new(boxed.to_vec());
    open_in_place(cipher, n, &mut buf)?;
    buf.drain(..TAG);
    Ok(buf)
}

fn random<const N: usize>() -> [u8; N] {
    use crypto_box::aead::rand_core::RngCore;
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// Checks that a received short nonce rises; records it.
fn rising(last: &mut u64, short: &[u8]) -> Result<(), ZmtpError> {
    let n = u64::from_be_bytes(short.try_into().map_err(|_| bad("short nonce"))?);
    if n <= *last {
        return Err(bad("a nonce did not rise"));
    }
    *last = n;
    Ok(())
}

/// The precomputed key of a connection's MESSAGE boxes (`crypto_box_beforenm` of
/// the peer's short-term public key and our short-term secret one), zeroized when
/// dropped.
type SessionKey = Zeroizing<[u8; KEY]>;

fn session_key(peer: &[u8; KEY], ours: &crypto_box::SecretKey) -> Result<SessionKey, ZmtpError> {
    let secret = Zeroizing::new(ours.to_bytes());
    dryoc::classic::crypto_box::crypto_box_beforenm(peer, &secret)
        .map(Zeroizing::new)
        .map_err(|_| bad("a short-term key of low order"))
}

/// A 24-octet nonce as an array: a prefix and the rest.
fn long_nonce(prefix: &[u8], rest: &[u8]) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(rest);
    n
}

/// Appends to `buf` (whose box starts at `start`) the MESSAGE command carrying one
/// frame, `flags` and the frame's `parts`, sealed in place under `key` with the short
/// nonce `short` after `prefix`.
fn write_box(
    buf: &mut BytesMut,
    start: usize,
    key: &SessionKey,
    prefix: &[u8; 16],
    short: [u8; 8],
    flags: u8,
    parts: &[&[u8]],
) {
    buf.extend_from_slice(MESSAGE);
    buf.extend_from_slice(&short);
    buf.extend_from_slice(&[0; TAG]);
    buf.extend_from_slice(&[flags]);
    for p in parts {
        buf.extend_from_slice(p);
    }
    let n = long_nonce(prefix, &short);
    let (tag, body) = buf[start + 16..].split_at_mut(TAG);
    let mut mac = [0u8; TAG];
    dryoc::classic::crypto_box::crypto_box_detached_afternm_inplace(body, &mut mac, &n, key);
    tag.copy_from_slice(&mac);
}

/// The MESSAGE boxes of a connection whose handshake completed.
pub struct Session {
    /// The sending half (its key opens the peer's boxes too).
    sealer: Sealer,
    /// The sealer was handed out ([`Session::hand_out_sealer`]): sealing here fails.
    handed_out: bool,
    /// The last short nonce the peer used.
    peer_nonce: u64,
    recv_prefix: &'static [u8; 16],
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("nonce", &self.sealer.nonce)
            .field("handed_out", &self.handed_out)
            .field("peer_nonce", &self.peer_nonce)
            .finish_non_exhaustive()
    }
}

/// The sending half of a [`Session`]: seals frames into MESSAGE boxes with strictly
/// increasing nonces. Whoever holds it must put the boxes on the wire in the order
/// it sealed them.
pub struct Sealer {
    key: SessionKey,
    /// Our next short nonce.
    nonce: u64,
    prefix: &'static [u8; 16],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(
        key: SessionKey,
        nonce: u64,
        peer_nonce: u64,
        send_prefix: &'static [u8; 16],
        recv_prefix: &'static [u8; 16],
    ) -> Session {
        Session {
            sealer: Sealer {
                key,
                nonce,
                prefix: send_prefix,
            },
            handed_out: false,
            peer_nonce,
            recv_prefix,
        }
    }

    /// Seals one frame ([`Sealer::seal`]); fails once the sealer was handed out.
    pub fn seal(&mut self, flags: u8, parts: &[&[u8]]) -> Result<BytesMut, ZmtpError> {
        if self.handed_out {
            return Err(bad("sealing was handed out"));
        }
        self.sealer.seal(flags, parts)
    }

    /// Gives the sending half to whoever writes to the connection (so that senders
    /// seal as they queue, in wire order); this session then only opens.
    pub fn hand_out_sealer(&mut self) -> Option<Sealer> {
        if self.handed_out {
            return None;
        }
        self.handed_out = true;
        Some(Sealer {
            key: self.sealer.key.clone(),
            nonce: self.sealer.nonce,
            prefix: self.sealer.prefix,
        })
    }

    /// Whether the sending half was handed out.
    pub fn handed_out(&self) -> bool {
        self.handed_out
    }

    /// Seals a message into `tx` ([`Sealer::seal_behind`]); fails once the sealer was
    /// handed out.
    pub fn seal_behind(
        &mut self,
        tx: &mut TxQueue,
        envelope: &[Bytes],
        frames: &[Bytes],
        joined: usize,
    ) -> Result<(), ZmtpError> {
        if self.handed_out {
            return Err(bad("sealing was handed out"));
        }
        self.sealer.seal_behind(tx, envelope, frames, joined)
    }

    /// Opens a received MESSAGE command (name included) in place: the frame's flags and
    /// bytes (a slice of `cmd`, no copy).
    pub fn open(&mut self, mut cmd: BytesMut) -> Result<(u8, Bytes), ZmtpError> {
        if cmd.len() < MESSAGE_MIN || !cmd.starts_with(MESSAGE) {
            return Err(bad("malformed MESSAGE"));
        }
        let mut last = self.peer_nonce;
        rising(&mut last, &cmd[8..16])?;
        let n = long_nonce(self.recv_prefix, &cmd[8..16]);
        let (tag, body) = cmd[16..].split_at_mut(TAG);
        let mac: [u8; TAG] = (&*tag).try_into().map_err(|_| bad("box too short"))?;
        dryoc::classic::crypto_box::crypto_box_open_detached_afternm_inplace(
            body,
            &mac,
            &n,
            &self.sealer.key,
        )
        .map_err(|_| bad("a box did not open"))?;
        self.peer_nonce = last;
        let flags = cmd[16 + TAG];
        if flags & !(FLAG_MORE | FLAG_COMMAND) != 0 {
            return Err(bad("reserved MESSAGE flags set"));
        }
        let frame = cmd.split_off(16 + TAG + 1).freeze();
        Ok((flags, frame))
    }
}

impl Sealer {
    /// The MESSAGE command (name included) that carries one frame: `flags`
    /// ([`FLAG_MORE`], [`FLAG_COMMAND`]) and the frame's bytes, given in parts.
    pub fn seal(&mut self, flags: u8, parts: &[&[u8]]) -> Result<BytesMut, ZmtpError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = BytesMut::with_capacity(MESSAGE_MIN + len);
        let short = self.next_nonce()?;
        write_box(&mut out, 0, &self.key, self.prefix, short, flags, parts);
        Ok(out)
    }

    /// Queues a message as MESSAGE boxes, one per frame (the last `joined` of
    /// `frames` being the parts of one), each in a plain message frame as libzmq
    /// sends.
    pub fn seal_behind(
        &mut self,
        tx: &mut TxQueue,
        envelope: &[Bytes],
        frames: &[Bytes],
        joined: usize,
    ) -> Result<(), ZmtpError> {
        let joined = joined.clamp(1, frames.len().max(1));
        let (head, last) = frames.split_at(frames.len().saturating_sub(joined));
        let boxes = envelope.len() + head.len() + usize::from(!last.is_empty());
        let more = |i: usize| if i + 1 < boxes { FLAG_MORE } else { 0 };
        for (i, frame) in envelope.iter().chain(head).enumerate() {
            self.seal_to(tx, more(i), &[&frame[..]])?;
        }
        // The joined frame's parts, without a vector for the usual few.
        const FEW: usize = 4;
        match last.len() {
            0 => Ok(()),
            n if n <= FEW => {
                let mut parts: [&[u8]; FEW] = [&[]; FEW];
                for (p, b) in parts.iter_mut().zip(last) {
                    *p = &b[..];
                }
                self.seal_to(tx, 0, &parts[..n])
            }
            _ => {
                let parts: Vec<&[u8]> = last.iter().map(|b| &b[..]).collect();
                self.seal_to(tx, 0, &parts)
            }
        }
    }

    /// Seals one frame into `tx`: a small box where it lies in the queue's buffer (no
    /// buffer of its own), a large one into its own buffer, queued without a copy.
    fn seal_to(&mut self, tx: &mut TxQueue, flags: u8, parts: &[&[u8]]) -> Result<(), ZmtpError> {
        let len = MESSAGE_MIN + parts.iter().map(|p| p.len()).sum::<usize>();
        if len > crate::zmtp::frame::COPY_THRESHOLD {
            let sealed = self.seal(flags, parts)?;
            tx.push_frame(0, &sealed.freeze());
            return Ok(());
        }
        let short = self.next_nonce()?;
        let (key, prefix) = (&self.key, self.prefix);
        tx.push_filled(0, len, |buf, start| {
            write_box(buf, start, key, prefix, short, flags, parts)
        });
        Ok(())
    }

    /// Seals a frame given as ZMTP frame flags (`MORE`, `COMMAND`) and body parts,
    /// and queues the box as a message frame of `tx`, as libzmq sends it.
    pub fn seal_into(
        &mut self,
        tx: &mut TxQueue,
        zmtp_flags: u8,
        parts: &[&[u8]],
    ) -> Result<(), ZmtpError> {
        let mut flags = 0;
        if zmtp_flags & crate::zmtp::frame::FLAG_MORE != 0 {
            flags |= FLAG_MORE;
        }
        if zmtp_flags & crate::zmtp::frame::FLAG_COMMAND != 0 {
            flags |= FLAG_COMMAND;
        }
        self.seal_to(tx, flags, parts)
    }

    fn next_nonce(&mut self) -> Result<[u8; 8], ZmtpError> {
        self.nonce = self.nonce.checked_add(1).ok_or(bad("nonces used up"))?;
        Ok((self.nonce - 1).to_be_bytes())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a whole handshake; returns both sessions and what the server learnt.
    fn handshake(client_keys: &KeyPair, server_keys: &KeyPair) -> (Session, Session, Initiated) {
        let mut c = CurveClient::new(client_keys.clone(), server_keys.public());
        let mut s = CurveServer::new(server_keys.clone());
        let hello = c.hello().unwrap();
        assert_eq!(hello.len(), HELLO_LEN);
        let welcome = s.on_hello(&hello).unwrap();
        assert_eq!(welcome.len(), WELCOME_LEN);
        let initiate = c
            .on_welcome(&welcome, b"\x0bSocket-Type\0\0\0\x06DEALER")
            .unwrap();
        assert_eq!(initiate.len(), INITIATE_MIN + 22);
        let init = s.on_initiate(&initiate).unwrap();
        let ready = s.ready(b"\x0bSocket-Type\0\0\0\x06ROUTER").unwrap();
        assert_eq!(ready.len(), READY_MIN + 22);
        assert_eq!(
            &c.on_ready(&ready).unwrap()[..],
            b"\x0bSocket-Type\0\0\0\x06ROUTER"
        );
        (c.into_session().unwrap(), s.into_session().unwrap(), init)
    }

    /// The MESSAGE boxes (dryoc, on the precomputed key) are the bytes RustCrypto's
    /// `crypto_box` makes of the same keys, nonce and frame, at every size around
    /// the block and vector boundaries; each opens the other's.
    #[test]
    fn message_boxes_are_the_bytes_of_crypto_box_both_ways() {
        let ours = crypto_box::SecretKey::generate(&mut OsRng);
        let peer = crypto_box::SecretKey::generate(&mut OsRng);
        let peer_public = peer.public_key();
        let reference = SalsaBox::new(&peer_public, &ours);
        let session = |prefix: &'static [u8; 16]| {
            let key = session_key(peer_public.as_bytes(), &ours).unwrap();
            Session::new(key, 7, 6, prefix, prefix)
        };
        let mut sizes: Vec<usize> = (0..=300).collect();
        for k in [6, 9, 10, 12, 14, 16, 20] {
            let b = 1usize << k;
            sizes.extend([b - 1, b, b + 1, b + 63]);
        }
        for size in sizes {
            let frame: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
            let mut s = session(b"CurveZMQMESSAGEC");
            let sealed = s.seal(FLAG_MORE, &[&frame]).unwrap();
            let mut expect = BytesMut::new();
            let n = nonce(b"CurveZMQMESSAGEC", &7u64.to_be_bytes());
            seal_into(&reference, &n, &[&[FLAG_MORE], &frame], &mut expect).unwrap();
            assert_eq!(&sealed[16..], &expect[..], "{size} B");
            // The reference opens ours; ours opens the reference's.
            let opened = open_copy(&reference, &n, &sealed[16..]).unwrap();
            assert_eq!(&opened[1..], &frame[..], "{size} B");
            let mut r = session(b"CurveZMQMESSAGEC");
            let (flags, got) = r.open(sealed).unwrap();
            assert_eq!((flags, &got[..]), (FLAG_MORE, &frame[..]), "{size} B");
        }
    }

    #[test]
    fn a_handshake_authenticates_the_client_and_messages_travel_both_ways() {
        let (ck, sk) = (KeyPair::generate(), KeyPair::generate());
        let (mut c, mut s, init) = handshake(&ck, &sk);
        assert_eq!(init.client, ck.public());
        assert_eq!(&init.metadata[..], b"\x0bSocket-Type\0\0\0\x06DEALER");
        for (i, frame) in [&b""[..], b"hello", &[7u8; 100_000]].iter().enumerate() {
            let flags = if i % 2 == 0 { FLAG_MORE } else { 0 };
            let msg = c.seal(flags, &[frame]).unwrap();
            assert_eq!(msg.len(), MESSAGE_MIN + frame.len());
            assert_eq!(s.open(msg).unwrap(), (flags, Bytes::copy_from_slice(frame)));
            let back = s
                .seal(
                    FLAG_COMMAND,
                    &[&frame[..frame.len() / 2], &frame[frame.len() / 2..]],
                )
                .unwrap();
            assert_eq!(
                c.open(back).unwrap(),
                (FLAG_COMMAND, Bytes::copy_from_slice(frame))
            );
        }
    }

    /// A message sealed into a write queue (small boxes where they lie in its buffer,
    /// large ones in their own, a joined frame of few parts or many) opens frame by
    /// frame, in order, on the peer's session.
    #[test]
    fn a_message_sealed_into_the_queue_opens_frame_by_frame() {
        let (mut c, mut s, _) = handshake(&KeyPair::generate(), &KeyPair::generate());
        let mut sealer = c.hand_out_sealer().unwrap();
        let limit = crate::zmtp::frame::COPY_THRESHOLD - MESSAGE_MIN;
        let sized = |n: usize| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>());
        let envelope = [Bytes::from_static(b"id"), Bytes::new()];
        let singles = [sized(1), sized(limit), sized(limit + 1), sized(70_000)];
        for parts in [2, 6] {
            let joined: Vec<Bytes> = (0..parts).map(|k| sized(10 + k * limit / 3)).collect();
            let frames: Vec<Bytes> = singles.iter().chain(&joined).cloned().collect();
            let mut tx = TxQueue::new();
            sealer
                .seal_behind(&mut tx, &envelope, &frames, parts)
                .unwrap();
            let mut wire = tx.take_all();
            let mut decoder = crate::zmtp::frame::FrameDecoder::new(u64::MAX);
            let mut opened = Vec::new();
            while let Some(frame) = decoder.decode_mut(&mut wire, 0).unwrap() {
                let crate::zmtp::frame::Frame::Data { more: false, body } = frame else {
                    panic!("a box travels in a plain message frame");
                };
                opened.push(s.open(body).unwrap());
            }
            let want: Vec<Bytes> = envelope
                .iter()
                .chain(&singles)
                .cloned()
                .chain([joined.concat().into()])
                .collect();
            assert_eq!(opened.len(), want.len());
            for (k, ((flags, got), frame)) in opened.iter().zip(&want).enumerate() {
                let last = k + 1 == want.len();
                assert_eq!(*flags, if last { 0 } else { FLAG_MORE }, "frame {k}");
                assert_eq!(got, frame, "frame {k}");
            }
        }
    }

    #[test]
    fn a_replayed_reordered_or_corrupted_message_is_refused() {
        let (mut c, mut s, _) = handshake(&KeyPair::generate(), &KeyPair::generate());
        let first = c.seal(0, &[b"one"]).unwrap();
        let second = c.seal(0, &[b"two"]).unwrap();
        // Out of order: the later nonce first, then the earlier one.
        assert!(s.open(second.clone()).is_ok());
        assert_eq!(s.open(first), Err(ZmtpError::Curve("a nonce did not rise")));
        // Replayed.
        assert_eq!(
            s.open(second),
            Err(ZmtpError::Curve("a nonce did not rise"))
        );
        // A flipped bit anywhere in the box.
        let mut bent = c.seal(0, &[b"three"]).unwrap();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        assert_eq!(s.open(bent), Err(ZmtpError::Curve("a box did not open")));
        // The right nonce still opens after a refused one (nothing was recorded).
        assert!(s.open(c.seal(0, &[b"four"]).unwrap()).is_ok());
        // Too short, wrong name.
        assert!(s.open(BytesMut::from(&b"\x07MESSAGE"[..])).is_err());
        let mut wrong = c.seal(0, &[b"x"]).unwrap();
        wrong[1] = b'N';
        assert!(s.open(wrong).is_err());
    }

    #[test]
    fn a_client_with_another_server_key_is_refused_at_hello() {
        let server = KeyPair::generate();
        let mut c = CurveClient::new(KeyPair::generate(), KeyPair::generate().public());
        let mut s = CurveServer::new(server);
        let hello = c.hello().unwrap();
        assert!(
            matches!(s.on_hello(&hello), Err(ZmtpError::Curve(m)) if m.contains("another server key"))
        );
    }

    #[test]
    fn an_impostor_server_is_found_at_welcome() {
        let real = KeyPair::generate();
        let mut c = CurveClient::new(KeyPair::generate(), real.public());
        c.hello().unwrap();
        // Without the real server's secret key, no WELCOME opens.
        let mut fake = vec![0u8; WELCOME_LEN];
        fake[..8].copy_from_slice(WELCOME);
        let e = c.on_welcome(&fake, b"").unwrap_err();
        assert!(matches!(e, ZmtpError::Curve(m) if m.contains("wrong server key")));
    }

    #[test]
    fn bad_sizes_and_order_are_refused_before_anything_is_opened() {
        let sk = KeyPair::generate();
        let mut s = CurveServer::new(sk.clone());
        assert!(s.on_hello(&[0u8; 199]).is_err());
        assert!(s.on_hello(&[0u8; 201]).is_err());
        assert!(s.on_initiate(&[0u8; 300]).is_err(), "INITIATE before HELLO");
        let mut c = CurveClient::new(KeyPair::generate(), sk.public());
        assert!(c.on_ready(&[0u8; 40]).is_err(), "READY before WELCOME");
        let hello = c.hello().unwrap();
        assert!(c.hello().is_err(), "HELLO twice");
        let welcome = s.on_hello(&hello).unwrap();
        assert!(s.on_hello(&hello).is_err(), "HELLO twice");
        assert!(c.on_welcome(&welcome[..167], b"").is_err());
        let initiate = c.on_welcome(&welcome, b"").unwrap();
        assert!(s.on_initiate(&initiate[..256]).is_err());
        assert!(CurveServer::new(sk).into_session().is_err());
    }

    #[test]
    fn a_cookie_or_vouch_that_was_tampered_with_is_refused() {
        let (ck, sk) = (KeyPair::generate(), KeyPair::generate());
        for at in [9 + 20, 9 + COOKIE_LEN + 8 + 40, INITIATE_MIN - 1] {
            let mut c = CurveClient::new(ck.clone(), sk.public());
            let mut s = CurveServer::new(sk.clone());
            let welcome = s.on_hello(&c.hello().unwrap()).unwrap();
            let mut initiate = c.on_welcome(&welcome, b"").unwrap().to_vec();
            initiate[at] ^= 0x40;
            assert!(s.on_initiate(&initiate).is_err(), "byte {at} changed");
        }
        // A cookie opens once: a replayed INITIATE on the same connection is refused.
        let mut c = CurveClient::new(ck, sk.public());
        let mut s = CurveServer::new(sk);
        let welcome = s.on_hello(&c.hello().unwrap()).unwrap();
        let initiate = c.on_welcome(&welcome, b"").unwrap();
        assert!(s.on_initiate(&initiate).is_ok());
        assert!(s.on_initiate(&initiate).is_err());
    }

    #[test]
    fn keys_read_and_print_as_z85() {
        let pair = KeyPair::generate();
        let text = pair.public().to_z85();
        assert_eq!(text.len(), 40);
        assert_eq!(text.parse::<PublicKey>().unwrap(), pair.public());
        let again = KeyPair::from_secret_z85(&pair.secret_z85()).unwrap();
        assert_eq!(again.public(), pair.public());
        assert_eq!("Hello".parse::<PublicKey>(), Err(KeyError::Length(4)));
        assert!(format!("{pair:?}").contains(&text));
        assert!(
            !format!("{pair:?}").contains(&pair.secret_z85()),
            "no secret in Debug"
        );
    }
}
