//! [`Blob`]: binary data that travels as MessagePack `bin` without being copied: a
//! decoded blob shares the received frame's buffer, and a large blob being sent is
//! written to the wire from its own buffer ([`crate::codec::encode_payload`]).

use std::cell::{Cell, RefCell};
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

thread_local! {
    /// The frame being decoded by [`crate::codec::decode_shared`] on this thread.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// True while [`crate::codec::encode_payload`] runs on this thread.
    static GATHERING: Cell<bool> = const { Cell::new(false) };
    /// The large blob whose bytes the serializer is about to write.
    static PENDING: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Binary data as MessagePack `bin`. Decoding it from a frame (as servers and clients
/// do for arguments and results) slices the frame instead of copying: use it for large
/// payloads. `Vec<u8>` travels as an array of integers; `Blob` is smaller and faster.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob(pub Bytes);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Blob {
        Blob(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Bytes::from(v))
    }
}

impl std::ops::Deref for Blob {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.0
    }
}

/// Blobs at least this large are kept by reference by
/// [`crate::codec::encode_payload`]; smaller ones are cheaper to copy.
pub const GATHER_MIN: usize = 8 * 1024;

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() >= GATHER_MIN && GATHERING.with(Cell::get) {
            // Announce the buffer: a gathering writer that is handed exactly these
            // bytes keeps a reference instead of copying them.
            PENDING.with(|p| *p.borrow_mut() = Some(self.0.clone()));
            let r = s.serialize_bytes(&self.0);
            PENDING.with(|p| p.borrow_mut().take());
            return r;
        }
        s.serialize_bytes(&self.0)
    }
}

/// Runs `f` with large blobs announced to [`take_pending`] (restored afterwards, even when
/// `f` unwinds).
pub(crate) fn gathering<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            GATHERING.with(|g| g.set(self.0));
            PENDING.with(|p| p.borrow_mut().take());
        }
    }
    let _reset = Reset(GATHERING.with(|g| g.replace(true)));
    f()
}

/// When `buf` is exactly the announced blob's bytes (same address and length): that
/// blob's buffer, taken.
pub(crate) fn take_pending(buf: &[u8]) -> Option<Bytes> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let hit = p
            .as_ref()
            .is_some_and(|b| b.as_ptr() == buf.as_ptr() && b.len() == buf.len());
        if hit {
            p.take()
        } else {
            None
        }
    })
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("binary data")
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Blob, E> {
        Ok(Blob(share_or_copy(v)))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(Bytes::from(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Blob, E> {
        Ok(Blob(share_or_copy(v.as_bytes())))
    }

    fn visit_str<E>(self, v: &str) -> Result<Blob, E> {
        Ok(Blob(Bytes::copy_from_slice(v.as_bytes())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
        // An array of small integers (how some encoders write byte lists). Its length
        // is bounded by the input, since every element takes at least one byte.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Blob(Bytes::from(v)))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        d.deserialize_bytes(BlobVisitor)
    }
}

/// A slice of the frame being decoded when `v` lies inside it, else a copy.
fn share_or_copy(v: &[u8]) -> Bytes {
    SOURCE.with(|s| match &*s.borrow() {
        Some(src) if contains(src, v) => src.slice_ref(v),
        _ => Bytes::copy_from_slice(v),
    })
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// Runs `f` with `frame` as the source that [`Blob`]s may share.
pub(crate) fn with_source<R>(frame: &Bytes, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Bytes>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = SOURCE.with(|s| s.borrow_mut().replace(frame.clone()));
    let _reset = Reset(prev);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Args {
        name: String,
        data: Blob,
    }

    #[test]
    fn decoding_from_a_frame_shares_its_buffer() {
        let data = Blob(Bytes::from(vec![7u8; 10_000]));
        let frame = Bytes::from(
            codec::encode(&Args {
                name: "x".into(),
                data: data.clone(),
            })
            .unwrap(),
        );
        let back: Args = codec::decode_shared(&frame).unwrap();
        assert_eq!(back.data, data);
        assert!(contains(&frame, &back.data.0), "copied instead of shared");
        // Without a source it is a copy, and still equal.
        let copied: Args = codec::decode(&frame).unwrap();
        assert!(!contains(&frame, &copied.data.0));
        assert_eq!(copied.data, data);
    }

    #[test]
    fn accepts_arrays_of_bytes_too() {
        let frame = Bytes::from(codec::encode(&vec![1u8, 2, 3]).unwrap());
        let b: Blob = codec::decode_shared(&frame).unwrap();
        assert_eq!(&b.0[..], &[1, 2, 3]);
    }
}
