//! The MESSAGE boxes of a connection whose handshake completed: [`Session`] opens
//! them in place and [`Sealer`] seals frames, each under a strictly rising nonce.

use std::fmt;

use bytes::{Bytes, BytesMut};
use zeroize::Zeroizing;

use super::{bad, long_nonce, rising, FLAG_COMMAND, FLAG_MORE, KEY, MESSAGE, MESSAGE_MIN, TAG};
use crate::zmtp::frame::TxQueue;
use crate::zmtp::ZmtpError;

/// The precomputed key of a connection's MESSAGE boxes (`crypto_box_beforenm` of
/// the peer's short-term public key and our short-term secret one), zeroized when
/// dropped.
pub(super) type SessionKey = Zeroizing<[u8; KEY]>;

pub(super) fn session_key(
    peer: &[u8; KEY],
    ours: &crypto_box::SecretKey,
) -> Result<SessionKey, ZmtpError> {
    let secret = Zeroizing::new(ours.to_bytes());
    dryoc::classic::crypto_box::crypto_box_beforenm(peer, &secret)
        .map(Zeroizing::new)
        .map_err(|_| bad("a short-term key of low order"))
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
    pub(super) fn new(
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
