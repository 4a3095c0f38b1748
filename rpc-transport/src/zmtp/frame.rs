//! Frames: `flags`, a 1- or 8-byte size, then the body.
//!
//! Decoder contract (as tokio-util's `Decoder`): [`FrameDecoder::decode`] returns
//! `Ok(Some(frame))` for a whole frame, `Ok(None)` when it needs more bytes (see
//! [`FrameDecoder::needed`]), and `Err` when the stream is corrupt or over a limit, after
//! which the connection must be closed. A declared size is checked against the limit
//! before a single byte is reserved for it.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ZmtpError;

/// Flag: more frames of this message follow.
pub const FLAG_MORE: u8 = 0x01;
/// Flag: the size field is 8 bytes.
pub const FLAG_LONG: u8 = 0x02;
/// Flag: this frame is a command.
pub const FLAG_COMMAND: u8 = 0x04;

/// Largest command body we accept. READY carries a few short properties; 64 KiB leaves
/// room for generous application metadata while bounding what a peer can make us hold.
pub const MAX_COMMAND_SIZE: u64 = 64 * 1024;

/// Most frames in one message. Frames can be empty, so the size limit alone would let a
/// peer make us hold millions of frame handles; no request-reply envelope needs more.
pub const MAX_FRAMES: usize = 1024;

/// Bodies up to this size are copied into the transmit buffer; larger ones are queued as
/// shared [`Bytes`] and written with a vectored write, never copied.
pub const COPY_THRESHOLD: usize = 2048;

/// A decoded frame; its body a [`Bytes`], or a [`BytesMut`] from
/// [`FrameDecoder::decode_mut`] (a CURVE box, opened where it was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<B = Bytes> {
    /// A message frame.
    Data {
        /// Whether more frames of the same message follow.
        more: bool,
        /// The frame body.
        body: B,
    },
    /// A command frame (body = name length, name, data).
    Command(B),
    /// A message frame over the size limit, read past without being kept (only
    /// from a decoder made with [`FrameDecoder::discarding`]).
    Skipped {
        /// Whether more frames of the same message follow.
        more: bool,
        /// The frame's declared size.
        len: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a flags byte and a size field.
    Head,
    /// Header read; waiting for `len` body bytes.
    Body { flags: u8, len: usize },
    /// A data frame over the limit: `left` of its `len` body bytes still to drop.
    Skip { more: bool, len: u64, left: u64 },
}

/// Incremental frame decoder with a size limit.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: DecodeState,
    max_data: u64,
    /// A data frame over the limit is skipped (see [`Frame::Skipped`]) instead of
    /// failing the stream.
    discard: bool,
}

impl FrameDecoder {
    /// A decoder that refuses data frames whose size, added to `already` bytes of the
    /// message being assembled, passes `max_message_size`.
    pub fn new(max_message_size: u64) -> FrameDecoder {
        FrameDecoder {
            state: DecodeState::Head,
            max_data: max_message_size,
            discard: false,
        }
    }

    /// A decoder that reads past a data frame over the limit, keeping none of its
    /// bytes, and returns [`Frame::Skipped`] for it: the connection survives a message
    /// too large, and what came before it (an envelope, a header) can be answered.
    /// Commands over their limit still fail the stream.
    pub fn discarding(max_message_size: u64) -> FrameDecoder {
        FrameDecoder {
            discard: true,
            ..FrameDecoder::new(max_message_size)
        }
    }

    /// How many more bytes `src` must hold before the next call can make progress.
    pub fn needed(&self, src: &BytesMut) -> usize {
        let want = match self.state {
            DecodeState::Head => match src.first() {
                None => 2,
                Some(f) if f & FLAG_LONG != 0 => 9,
                Some(_) => 2,
            },
            DecodeState::Body { len, .. } => len,
            DecodeState::Skip { .. } => 1,
        };
        want.saturating_sub(src.len()).max(1)
    }

    /// Decodes one frame from the front of `src`. `message_so_far` is the size of the
    /// frames already received for the message in progress, so that the limit applies
    /// to the whole message.
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
        message_so_far: u64,
    ) -> Result<Option<Frame>, ZmtpError> {
        self.decode_with(src, message_so_far, BytesMut::freeze)
    }

    /// As [`decode`](Self::decode), the body left mutable: a slice of `src`'s memory
    /// that can be changed in place.
    pub fn decode_mut(
        &mut self,
        src: &mut BytesMut,
        message_so_far: u64,
    ) -> Result<Option<Frame<BytesMut>>, ZmtpError> {
        self.decode_with(src, message_so_far, |b| b)
    }

    /// The decoder, the body made into a `B` by `body`.
    #[inline(always)]
    fn decode_with<B>(
        &mut self,
        src: &mut BytesMut,
        message_so_far: u64,
        body: impl FnOnce(BytesMut) -> B,
    ) -> Result<Option<Frame<B>>, ZmtpError> {
        loop {
            match self.state {
                DecodeState::Head => {
                    let Some(&flags) = src.first() else {
                        return Ok(None);
                    };
                    let command = flags & FLAG_COMMAND != 0;
                    if command && flags & FLAG_MORE != 0 {
                        return Err(ZmtpError::Malformed("command frame with MORE"));
                    }
                    let (hdr, len) = if flags & FLAG_LONG != 0 {
                        if src.len() < 9 {
                            return Ok(None);
                        }
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&src[1..9]);
                        (9, u64::from_be_bytes(b))
                    } else {
                        if src.len() < 2 {
                            return Ok(None);
                        }
                        (2, u64::from(src[1]))
                    };
                    // The limit is checked before anything is reserved for the body.
                    let (size, max) = if command {
                        (len, MAX_COMMAND_SIZE)
                    } else {
                        (message_so_far.saturating_add(len), self.max_data)
                    };
                    if size > max && self.discard && !command {
                        src.advance(hdr);
                        let more = flags & FLAG_MORE != 0;
                        self.state = DecodeState::Skip {
                            more,
                            len,
                            left: len,
                        };
                        continue;
                    }
                    if size > max {
                        return Err(ZmtpError::TooLarge { size, max });
                    }
                    // `len <= max`, and max fits in memory by construction.
                    let len =
                        usize::try_from(len).map_err(|_| ZmtpError::TooLarge { size: len, max })?;
                    src.advance(hdr);
                    self.state = DecodeState::Body { flags, len };
                }
                DecodeState::Skip { more, len, left } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(src.len());
                    src.advance(take);
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = DecodeState::Skip { more, len, left };
                        return Ok(None);
                    }
                    self.state = DecodeState::Head;
                    return Ok(Some(Frame::Skipped { more, len }));
                }
                DecodeState::Body { flags, len } => {
                    if src.len() < len {
                        return Ok(None);
                    }
                    // An empty frame (the envelope's delimiter) shares nothing.
                    let body = body(if len == 0 {
                        BytesMut::new()
                    } else {
                        src.split_to(len)
                    });
                    self.state = DecodeState::Head;
                    return Ok(Some(if flags & FLAG_COMMAND != 0 {
                        Frame::Command(body)
                    } else {
                        Frame::Data {
                            more: flags & FLAG_MORE != 0,
                            body,
                        }
                    }));
                }
            }
        }
    }
}

/// A walk over the chunks of a [`TxQueue`] (see [`TxQueue::drain_frames`]).
struct Walk<'a> {
    rest: std::collections::vec_deque::Iter<'a, Bytes>,
    cur: &'a [u8],
}

impl<'a> Walk<'a> {
    /// The next `n` bytes, in the parts they lie in; false when fewer are left.
    fn take(&mut self, n: usize, parts: &mut Vec<&'a [u8]>) -> bool {
        let mut left = n;
        while left > 0 {
            if self.cur.is_empty() {
                match self.rest.next() {
                    Some(c) => self.cur = c,
                    None => return false,
                }
            }
            let k = left.min(self.cur.len());
            parts.push(&self.cur[..k]);
            self.cur = &self.cur[k..];
            left -= k;
        }
        true
    }
}

/// Writes a frame header: flags, then a 1-byte size (up to 255, as libzmq) or 8 bytes.
pub fn put_header(dst: &mut BytesMut, mut flags: u8, len: usize) {
    if len > 255 {
        flags |= FLAG_LONG;
        dst.put_u8(flags);
        dst.put_u64(len as u64);
    } else {
        dst.put_u8(flags);
        dst.put_u8(len as u8);
    }
}

/// Outgoing bytes of one connection, batched so that a whole burst of frames goes out
/// in one vectored write. Small frames are copied into one buffer; large bodies stay
/// shared [`Bytes`] and are written straight from the caller's buffer.
#[derive(Debug, Default)]
pub struct TxQueue {
    chunks: VecDeque<Bytes>,
    buf: BytesMut,
    len: usize,
}

impl TxQueue {
    /// An empty queue.
    pub fn new() -> TxQueue {
        TxQueue {
            chunks: VecDeque::new(),
            buf: BytesMut::with_capacity(8 * 1024),
            len: 0,
        }
    }

    /// Queues one frame.
    pub fn push_frame(&mut self, flags: u8, body: &Bytes) {
        self.push_parts(flags, std::slice::from_ref(body));
    }

    /// Queues one frame whose body is `parts` one after the other: small parts are
    /// copied, large ones written from their own buffers.
    pub fn push_parts(&mut self, flags: u8, parts: &[Bytes]) {
        let len: usize = parts.iter().map(Bytes::len).sum();
        put_header(&mut self.buf, flags, len);
        for part in parts {
            if part.len() <= COPY_THRESHOLD {
                self.buf.extend_from_slice(part);
            } else {
                self.seal();
                self.chunks.push_back(part.clone());
            }
        }
        self.len += len + if len > 255 { 9 } else { 2 };
    }

    /// Queues one frame of `len` bytes that `fill` writes at the end of the queue's
    /// buffer (it gets the buffer and where the body starts, and must append exactly
    /// `len` bytes): a body built in place, such as a CURVE box sealed where it lies.
    pub fn push_filled(&mut self, flags: u8, len: usize, fill: impl FnOnce(&mut BytesMut, usize)) {
        put_header(&mut self.buf, flags, len);
        let start = self.buf.len();
        fill(&mut self.buf, start);
        debug_assert_eq!(self.buf.len() - start, len, "filled as announced");
        self.len += len + if len > 255 { 9 } else { 2 };
    }

    /// Queues raw bytes (the greeting).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Queues a command frame whose body is built by `body`.
    pub fn push_command(&mut self, name: &[u8], data: impl FnOnce(&mut BytesMut)) {
        let mut tmp = BytesMut::with_capacity(64);
        tmp.put_u8(name.len() as u8);
        tmp.extend_from_slice(name);
        data(&mut tmp);
        put_header(&mut self.buf, FLAG_COMMAND, tmp.len());
        self.len += tmp.len() + if tmp.len() > 255 { 9 } else { 2 };
        self.buf.extend_from_slice(&tmp);
    }

    /// Queues a command frame whose body (name size, name, data) is given whole.
    pub fn push_command_body(&mut self, body: &[u8]) {
        put_header(&mut self.buf, FLAG_COMMAND, body.len());
        self.len += body.len() + if body.len() > 255 { 9 } else { 2 };
        self.buf.extend_from_slice(body);
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.chunks.push_back(self.buf.split().freeze());
        }
    }

    /// Moves everything queued in `other` to the end of this queue.
    pub fn append(&mut self, other: &mut TxQueue) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            std::mem::swap(self, other);
            return;
        }
        self.seal();
        other.seal();
        self.chunks.append(&mut other.chunks);
        self.len += other.len;
        other.len = 0;
    }

    /// Queues a message given as frames, the last `joined` of which (when two or more)
    /// are the parts of one frame.
    pub fn push_message(&mut self, frames: &[Bytes], joined: usize) {
        let joined = joined.clamp(1, frames.len().max(1));
        let (head, last) = frames.split_at(frames.len().saturating_sub(joined));
        for (i, f) in head.iter().enumerate() {
            let more = i + 1 < head.len() || !last.is_empty();
            self.push_frame(if more { FLAG_MORE } else { 0 }, f);
        }
        if !last.is_empty() {
            self.push_parts(0, last);
        }
    }

    /// Queues `frames` (as [`push_message`](Self::push_message) does) behind
    /// `envelope` frames, as one message.
    pub fn push_behind(&mut self, envelope: &[Bytes], frames: &[Bytes], joined: usize) {
        for f in envelope {
            self.push_frame(FLAG_MORE, f);
        }
        self.push_message(frames, joined);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slices [`io_slices`](Self::io_slices) has to give (small frames share one).
    pub fn slice_count(&self) -> usize {
        self.chunks.len() + usize::from(!self.buf.is_empty())
    }

    /// Fills `dst` with slices of what waits to be written, in order; returns how many.
    /// The small frames copied last are written from the copy buffer itself (not
    /// split off first: no reference count to take and drop per write).
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let tail = (!self.buf.is_empty()).then_some(&self.buf[..]);
        let mut n = 0;
        for (slot, chunk) in dst
            .iter_mut()
            .zip(self.chunks.iter().map(|c| &c[..]).chain(tail))
        {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        if n == self.buf.len() {
            // All written: the buffer is reused from its start.
            self.buf.clear();
        } else {
            self.buf.advance(n);
        }
    }

    /// Takes every queued frame out, in order, giving `f` each one's flags
    /// ([`FLAG_MORE`], [`FLAG_COMMAND`]) and body, in the parts it lies in here (no
    /// copy); the queue is left empty. For a queue of whole frames (as a connection
    /// queues once its greeting is out), not partly written; bytes that do not make a
    /// whole frame end the walk (and are dropped).
    pub fn drain_frames<E>(
        &mut self,
        mut f: impl FnMut(u8, &[&[u8]]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.seal();
        let chunks = std::mem::take(&mut self.chunks);
        self.len = 0;
        let mut walk = Walk {
            rest: chunks.iter(),
            cur: &[],
        };
        let mut parts: Vec<&[u8]> = Vec::new();
        loop {
            let mut head = [0u8; 9];
            parts.clear();
            if !walk.take(1, &mut parts) {
                return Ok(());
            }
            let flags = parts[0][0];
            let size_len = if flags & FLAG_LONG != 0 { 8 } else { 1 };
            parts.clear();
            if !walk.take(size_len, &mut parts) {
                return Ok(());
            }
            let mut at = 0;
            for p in &parts {
                head[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            let len = if size_len == 8 {
                u64::from_be_bytes([
                    head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
                ])
            } else {
                u64::from(head[0])
            };
            parts.clear();
            if !walk.take(usize::try_from(len).unwrap_or(usize::MAX), &mut parts) {
                return Ok(());
            }
            f(flags & (FLAG_MORE | FLAG_COMMAND), &parts)?;
        }
    }

    /// Everything queued, as one contiguous buffer (for tests and in-memory pairs).
    pub fn take_all(&mut self) -> BytesMut {
        self.seal();
        let mut out = BytesMut::with_capacity(self.len);
        for c in self.chunks.drain(..) {
            out.extend_from_slice(&c);
        }
        self.len = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Draining a queue gives back every frame, flags and bodies, as queued (small
    /// ones copied together, large ones in buffers of their own, long sizes).
    #[test]
    fn a_drained_queue_gives_back_its_frames() {
        let big = Bytes::from(vec![5u8; 5000]);
        let mut q = TxQueue::default();
        q.push_message(&[Bytes::from_static(b"a"), big.clone()], 1);
        q.push_command_body(b"\x04PING\x00\x10");
        q.push_message(
            &[
                Bytes::from(vec![1u8; 300]),
                Bytes::from_static(b"x"),
                big.clone(),
            ],
            2,
        );
        let mut got = Vec::new();
        q.drain_frames(|flags, parts| {
            got.push((flags, parts.concat()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(q.is_empty());
        let joined = [&b"x"[..], &big[..]].concat();
        let want: Vec<(u8, Vec<u8>)> = vec![
            (FLAG_MORE, b"a".to_vec()),
            (0, big.to_vec()),
            (FLAG_COMMAND, b"\x04PING\x00\x10".to_vec()),
            (FLAG_MORE, vec![1u8; 300]),
            (0, joined),
        ];
        assert_eq!(got, want);
    }

    fn decode_all(bytes: &[u8], max: u64) -> Result<Vec<Frame>, ZmtpError> {
        let mut d = FrameDecoder::new(max);
        let mut src = BytesMut::from(bytes);
        let mut out = vec![];
        while let Some(f) = d.decode(&mut src, 0)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn libzmq_req_hello_bytes() {
        // A libzmq REQ sending "hello": empty delimiter with MORE, then the body.
        let wire = [0x01, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o'];
        let frames = decode_all(&wire, 1024).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Data {
                    more: true,
                    body: Bytes::new()
                },
                Frame::Data {
                    more: false,
                    body: Bytes::from_static(b"hello")
                },
            ]
        );
        let mut tx = TxQueue::new();
        tx.push_frame(FLAG_MORE, &Bytes::new());
        tx.push_frame(0, &Bytes::from_static(b"hello"));
        assert_eq!(&tx.take_all()[..], &wire[..]);
    }

    #[test]
    fn long_frames_only_above_255() {
        let mut tx = TxQueue::new();
        tx.push_frame(0, &Bytes::from(vec![7u8; 255]));
        let out = tx.take_all();
        assert_eq!(&out[..2], &[0x00, 0xFF]);
        tx.push_frame(0, &Bytes::from(vec![7u8; 256]));
        let out = tx.take_all();
        assert_eq!(&out[..9], &[0x02, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn non_minimal_long_size_is_accepted() {
        let wire = [0x02, 0, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c'];
        let frames = decode_all(&wire, 1024).unwrap();
        assert_eq!(
            frames,
            vec![Frame::Data {
                more: false,
                body: Bytes::from_static(b"abc")
            }]
        );
    }

    #[test]
    fn huge_declared_size_is_refused_before_allocation() {
        let mut wire = vec![0x02];
        wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
        let mut d = FrameDecoder::new(4 << 20);
        let mut src = BytesMut::from(&wire[..]);
        let cap_before = src.capacity();
        assert!(matches!(
            d.decode(&mut src, 0),
            Err(ZmtpError::TooLarge { .. })
        ));
        assert_eq!(src.capacity(), cap_before);
    }

    #[test]
    fn limit_counts_the_whole_message() {
        let mut d = FrameDecoder::new(10);
        let mut src = BytesMut::from(&[0x00u8, 4, 1, 2, 3, 4][..]);
        assert!(d.decode(&mut src, 6).unwrap().is_some());
        let mut src = BytesMut::from(&[0x00u8, 5, 1, 2, 3, 4, 5][..]);
        assert!(matches!(
            d.decode(&mut src, 6),
            Err(ZmtpError::TooLarge { size: 11, max: 10 })
        ));
    }

    #[test]
    fn a_discarding_decoder_reads_past_a_frame_over_the_limit() {
        // [header "hi" MORE][1000-byte body][next message "ok"], fed a byte at a time.
        let mut wire = vec![0x01, 2, b'h', b'i', 0x02];
        wire.extend_from_slice(&1000u64.to_be_bytes());
        wire.extend_from_slice(&[9u8; 1000]);
        wire.extend_from_slice(&[0x00, 2, b'o', b'k']);
        let mut d = FrameDecoder::discarding(100);
        let mut src = BytesMut::new();
        let (mut out, mut so_far) = (vec![], 0u64);
        for b in wire {
            src.put_u8(b);
            while let Some(f) = d.decode(&mut src, so_far).unwrap() {
                so_far = match &f {
                    Frame::Data { more: true, body } => so_far + body.len() as u64,
                    Frame::Skipped { more: true, len } => so_far + len,
                    _ => 0,
                };
                out.push(f);
            }
            // Nothing of the skipped body is held.
            assert!(src.len() <= 9, "{} bytes held", src.len());
        }
        assert_eq!(
            out,
            vec![
                Frame::Data {
                    more: true,
                    body: Bytes::from_static(b"hi")
                },
                Frame::Skipped {
                    more: false,
                    len: 1000
                },
                Frame::Data {
                    more: false,
                    body: Bytes::from_static(b"ok")
                },
            ]
        );
    }

    #[test]
    fn a_discarding_decoder_skips_a_huge_declared_size_and_still_refuses_big_commands() {
        let mut d = FrameDecoder::discarding(10);
        let mut wire = vec![0x02];
        wire.extend_from_slice(&u64::MAX.to_be_bytes());
        wire.extend_from_slice(&[1, 2, 3]);
        let mut src = BytesMut::from(&wire[..]);
        assert_eq!(d.decode(&mut src, 0).unwrap(), None);
        assert!(src.is_empty());
        let mut d = FrameDecoder::discarding(10);
        let mut cmd = vec![0x06];
        cmd.extend_from_slice(&(MAX_COMMAND_SIZE + 1).to_be_bytes());
        assert!(matches!(
            d.decode(&mut BytesMut::from(&cmd[..]), 0),
            Err(ZmtpError::TooLarge { .. })
        ));
    }

    #[test]
    fn command_with_more_is_malformed() {
        assert!(matches!(
            decode_all(&[0x05, 0], 10),
            Err(ZmtpError::Malformed(_))
        ));
    }

    #[test]
    fn large_bodies_are_not_copied() {
        let big = Bytes::from(vec![1u8; 100_000]);
        let mut tx = TxQueue::new();
        tx.push_frame(FLAG_MORE, &Bytes::from_static(b"x"));
        tx.push_frame(0, &big);
        tx.push_frame(0, &Bytes::from_static(b"y"));
        let mut slices = [IoSlice::new(&[]); 8];
        let n = tx.io_slices(&mut slices);
        assert_eq!(n, 3);
        assert_eq!(slices[1].as_ptr(), big.as_ptr());
        let total = tx.len();
        tx.advance(5);
        assert_eq!(tx.len(), total - 5);
        let rest = tx.take_all();
        assert_eq!(rest.len(), total - 5);
    }

    fn arb_frames() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
        prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..600)),
            0..8,
        )
    }

    proptest! {
        /// Frames pushed between partial writes (small ones copied, large ones kept
        /// whole) come out as one stream in push order, whatever each write took.
        #[test]
        fn partial_writes_keep_the_stream(
            steps in prop::collection::vec((0usize..3000, 0usize..4000), 1..40),
        ) {
            let mut tx = TxQueue::new();
            let mut expected = TxQueue::new();
            let mut written = Vec::new();
            for (i, (size, take)) in steps.iter().enumerate() {
                let body = Bytes::from(vec![i as u8; *size]);
                tx.push_frame(FLAG_MORE, &body);
                expected.push_frame(FLAG_MORE, &body);
                let mut slices = [IoSlice::new(&[]); 8];
                let n = tx.io_slices(&mut slices);
                prop_assert_eq!(n, tx.slice_count().min(8));
                let mut left = *take;
                let mut done = 0;
                for s in &slices[..n] {
                    let k = left.min(s.len());
                    written.extend_from_slice(&s[..k]);
                    left -= k;
                    done += k;
                }
                tx.advance(done);
            }
            written.extend_from_slice(&tx.take_all());
            prop_assert_eq!(&written[..], &expected.take_all()[..]);
        }

        #[test]
        fn encode_then_decode_gives_the_input(frames in arb_frames(), split in 0usize..5000) {
            let mut tx = TxQueue::new();
            for (more, body) in &frames {
                tx.push_frame(if *more { FLAG_MORE } else { 0 }, &Bytes::from(body.clone()));
            }
            let wire = tx.take_all();
            // Feed in two pieces, split anywhere.
            let split = split.min(wire.len());
            let mut d = FrameDecoder::new(1 << 20);
            let mut src = BytesMut::from(&wire[..split]);
            let mut out = vec![];
            while let Some(f) = d.decode(&mut src, 0).unwrap() { out.push(f); }
            src.extend_from_slice(&wire[split..]);
            while let Some(f) = d.decode(&mut src, 0).unwrap() { out.push(f); }
            prop_assert!(src.is_empty());
            let want: Vec<Frame> = frames.into_iter()
                .map(|(more, body)| Frame::Data { more, body: Bytes::from(body) })
                .collect();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
            let mut d = FrameDecoder::new(4096);
            let mut src = BytesMut::new();
            'outer: for piece in bytes.chunks(chunk) {
                src.extend_from_slice(piece);
                loop {
                    match d.decode(&mut src, 0) {
                        Ok(Some(_)) => continue,
                        Ok(None) => { prop_assert!(d.needed(&src) >= 1); break }
                        Err(_) => break 'outer,
                    }
                }
            }
        }
    }
}
