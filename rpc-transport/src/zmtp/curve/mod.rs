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
//!
//! # Layout
//! - `mod.rs`: sizes and command names, the box helpers the handshake shares.
//! - `keys.rs`: [`PublicKey`] and [`KeyPair`], Z85 or raw.
//! - `client.rs`: [`CurveClient`], HELLO and INITIATE; `server.rs`: [`CurveServer`],
//!   WELCOME with its cookie, INITIATE checked, READY.
//! - `session.rs`: [`Session`] and [`Sealer`], the MESSAGE boxes after the handshake.
//! - `tests.rs`: whole handshakes, boxes against RustCrypto's, hostile input.

use bytes::BytesMut;
use crypto_box::aead::consts::U24;
use crypto_box::aead::{AeadCore, AeadInPlace, OsRng};
use zeroize::Zeroizing;

use super::ZmtpError;

mod client;
mod keys;
mod server;
mod session;
#[cfg(test)]
mod tests;

pub use client::CurveClient;
pub use keys::{KeyError, KeyPair, PublicKey};
pub use server::{CurveServer, Initiated};
pub use session::{Sealer, Session};

use session::{session_key, SessionKey};

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

/// A 24-octet nonce as an array: a prefix and the rest.
fn long_nonce(prefix: &[u8], rest: &[u8]) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(rest);
    n
}
