//! Small encoded pieces (headers, request ids, small payloads) cut from one buffer per
//! thread: a message costs no allocation of its own, where each piece used to cost two
//! (its buffer, and the shared count `Bytes` adds when a `Vec` becomes one).
//!
//! A piece is a `Bytes` slice of the current chunk; the chunk is freed when its last
//! piece is. While the thread's chunk has room, pieces are cut from it; when it has
//! none, a fresh one is taken (or the old one reused, when every piece of it is gone).
//! A piece larger than the room grows the buffer as a `BytesMut` would.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Size of a fresh chunk: a few dozen calls' headers and small payloads.
pub const CHUNK: usize = 4096;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The thread's buffer, empty, with room for `room` bytes. Give it back with
/// [`put_back`] after cutting the piece off with `split()`.
pub fn take(room: usize) -> BytesMut {
    let mut buf = ARENA
        .try_with(|a| a.try_borrow_mut().map(|mut a| std::mem::take(&mut *a)).ok())
        .ok()
        .flatten()
        .unwrap_or_default();
    debug_assert!(buf.is_empty());
    make_room(&mut buf, room);
    buf
}

/// Room for `room` more bytes: the chunk reused in place when no piece of it is alive,
/// otherwise a fresh one of at least [`CHUNK`] bytes.
fn make_room(buf: &mut BytesMut, room: usize) {
    if buf.capacity() - buf.len() < room {
        buf.reserve(room.max(CHUNK));
    }
}

/// Returns the buffer taken with [`take`] (what remains of it after the piece was cut
/// off). Even without room left it is kept: it still knows its chunk, which the next
/// [`take`] reuses in place when no piece of it is alive.
pub fn put_back(buf: BytesMut) {
    debug_assert!(buf.is_empty());
    let _ = ARENA.try_with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            *a = buf;
        }
    });
}

/// A piece of `room` bytes or so, written by `f`.
pub fn build(room: usize, f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut f = Some(f);
    let mut write = |buf: &mut BytesMut| {
        make_room(buf, room);
        if let Some(f) = f.take() {
            f(buf);
        }
        buf.split().freeze()
    };
    // In place (one look at the thread-local); a fresh buffer when the arena is in use
    // further up this thread's stack or already gone (thread exit).
    ARENA
        .try_with(|a| a.try_borrow_mut().ok().map(|mut buf| write(&mut buf)))
        .ok()
        .flatten()
        .unwrap_or_else(|| write(&mut BytesMut::new()))
}

/// A copy of `data` as a piece.
pub fn copy(data: &[u8]) -> Bytes {
    build(data.len(), |b| b.extend_from_slice(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_share_a_chunk_and_keep_their_bytes() {
        let a = copy(b"first");
        let b = build(8, |buf| buf.extend_from_slice(b"second"));
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second");
        // Cut from one buffer: b starts where a ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        // A piece larger than a chunk is whole.
        let big: Vec<u8> = (0..3 * CHUNK).map(|i| i as u8).collect();
        let c = copy(&big);
        assert_eq!(&c[..], &big[..]);
        let d = copy(b"after");
        assert_eq!(&d[..], b"after");
        assert_eq!(&a[..], b"first", "earlier pieces untouched");
        assert_eq!(&b[..], b"second");
    }

    #[test]
    fn a_chunk_whose_pieces_are_gone_is_reused() {
        let first = copy(b"x");
        let at = first.as_ptr();
        drop(first);
        // Fill the rest of the chunk so that the next piece needs room again.
        let buf = take(0);
        let rest = buf.capacity();
        put_back(buf);
        let filler = build(rest, |b| b.resize(rest, 0));
        drop(filler);
        let again = copy(b"y");
        assert_eq!(again.as_ptr(), at, "no piece alive: the chunk is reused");
    }
}
