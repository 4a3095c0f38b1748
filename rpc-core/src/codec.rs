//! MessagePack encoding (rmp-serde), with structs as maps of named fields.
//!
//! Decoding reads from a frame that the transport has already bounded by its maximum
//! message size; rmp-serde never allocates more than the input can hold (lengths are
//! checked against the remaining bytes), and nesting is limited to [`MAX_DEPTH`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::RpcError;
use crate::payload::Payload;

/// Counts bytes written: the first pass of [`encode`].
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a value, structs as maps (field names on the wire). The value is measured
/// first, so that the output is allocated once at its final size: a large payload is
/// copied once, not once per doubling of a growing buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, RpcError> {
    let mut count = Counter(0);
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut count).with_struct_map())
        .map_err(RpcError::Encode)?;
    let mut out = Vec::with_capacity(count.0);
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
        .map_err(RpcError::Encode)?;
    Ok(out)
}

/// Collects an encoding as parts: what rmp-serde writes is copied into `buf`, except
/// the bytes of an announced large [`crate::Blob`], which become a part of their own.
/// `buf` starts as the thread's [`arena`](crate::arena); an encoding that outgrows the
/// room there moves to a buffer of its own (`arena` then keeps the arena to give back),
/// so that a large value neither grows the arena nor is cut from it.
struct Gather {
    buf: bytes::BytesMut,
    parts: Vec<bytes::Bytes>,
    arena: Option<bytes::BytesMut>,
}

impl Gather {
    fn extend(&mut self, data: &[u8]) {
        if self.arena.is_none() && self.buf.capacity() - self.buf.len() < data.len() {
            // A quarter more than needed: room for what follows a large field without
            // leaving so much unused that `compact` copies the whole encoding again
            // (twice the size did: 4 KiB payloads were allocated and copied twice).
            let need = self.buf.len() + data.len();
            let mut own = bytes::BytesMut::with_capacity((need + need / 4).max(PAYLOAD_START));
            own.extend_from_slice(&self.buf);
            self.buf.clear();
            self.arena = Some(std::mem::replace(&mut self.buf, own));
        }
        self.buf.extend_from_slice(data);
    }

    /// The payload, and the arena back where it belongs.
    fn finish(mut self) -> Payload {
        let last = match self.arena.take() {
            Some(arena) => {
                crate::arena::put_back(arena);
                compact(std::mem::take(&mut self.buf))
            }
            None => {
                let last = self.buf.split().freeze();
                crate::arena::put_back(std::mem::take(&mut self.buf));
                last
            }
        };
        if self.parts.is_empty() {
            return Payload::from(last);
        }
        self.parts.push(last);
        Payload::from_parts(self.parts)
    }
}

impl std::io::Write for Gather {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let announced = if data.len() < crate::blob::GATHER_MIN {
            None
        } else {
            crate::blob::take_pending(data)
        };
        match announced {
            Some(blob) => {
                if !self.buf.is_empty() {
                    self.parts.push(self.buf.split().freeze());
                }
                self.parts.push(blob);
            }
            None => self.extend(data),
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The buffer as `Bytes`, copied to its size when growing left much unused room (an
/// answer may be kept a while by the reply cache, which counts its length).
fn compact(buf: bytes::BytesMut) -> bytes::Bytes {
    if buf.capacity() - buf.len() > (buf.len() / 2).max(PAYLOAD_START) {
        bytes::Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}

/// Room asked of the arena for [`encode_payload`]: most arguments and results fit.
const PAYLOAD_START: usize = 256;

/// Encodes a value like [`encode`], but keeps every [`crate::Blob`] of at least
/// [`crate::blob::GATHER_MIN`] bytes by reference: the result is cut around them, and
/// the transport writes it without copying their bytes. One serialization pass into
/// the thread's [`arena`](crate::arena), which grows as needed (a value is walked
/// once; large binary data belongs in a `Blob`, which is not copied at all).
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Payload, RpcError> {
    crate::blob::gathering(|| {
        let mut out = Gather {
            buf: crate::arena::take(PAYLOAD_START),
            parts: Vec::new(),
            arena: None,
        };
        let done = value
            .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .map_err(RpcError::Encode);
        let payload = out.finish();
        done?;
        Ok(payload)
    })
}

/// Deepest nesting of arrays and maps accepted in a decoded value. rmp-serde's own
/// default (1024) overflows a 2 MiB thread stack in debug builds.
pub const MAX_DEPTH: usize = 64;

/// Decodes a value from a received frame: [`crate::Blob`]s inside it share the
/// frame's buffer instead of copying it.
pub fn decode_shared<T: DeserializeOwned>(frame: &bytes::Bytes) -> Result<T, RpcError> {
    crate::blob::with_source(frame, || decode(frame))
}

/// Decodes a value from a payload, sharing its buffer as [`decode_shared`] does (a
/// payload of several parts is joined first).
pub fn decode_payload<T: DeserializeOwned>(payload: &Payload) -> Result<T, RpcError> {
    match payload.parts() {
        [one] => decode_shared(one),
        _ => decode_shared(&payload.to_bytes()),
    }
}

/// Whether `bytes` starts with a MessagePack map (fixmap, map 16, map 32): headers
/// and arguments must be maps (docs/PROTOCOL.md §3, §4), so that fields bind by name,
/// never by position.
pub fn is_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

/// Decodes a value, refusing nesting deeper than [`MAX_DEPTH`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(RpcError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize)]
    struct OldArgs {
        a: i64,
        b: i64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct NewArgs {
        a: i64,
        b: i64,
        #[serde(default)]
        scale: Option<i64>,
    }

    #[test]
    fn a_server_may_add_a_defaulted_argument() {
        let bytes = encode(&OldArgs { a: 2, b: 3 }).unwrap();
        let args: NewArgs = decode(&bytes).unwrap();
        assert_eq!(
            args,
            NewArgs {
                a: 2,
                b: 3,
                scale: None
            }
        );
    }

    #[test]
    fn small_payloads_are_cut_from_the_arena_and_large_ones_are_not() {
        let one = encode_payload(&(1u32, "a")).unwrap().to_bytes();
        let two = encode_payload(&(2u32, "b")).unwrap().to_bytes();
        assert_eq!(
            one.as_ptr().wrapping_add(one.len()),
            two.as_ptr(),
            "one chunk"
        );
        // A value larger than the arena's room gets a buffer of its own...
        let big: Vec<u32> = (0..5000).collect();
        let p = encode_payload(&big).unwrap().to_bytes();
        assert_eq!(&p[..], &encode(&big).unwrap()[..]);
        let three = encode_payload(&(3u32, "c")).unwrap().to_bytes();
        assert_eq!(&three[..], &encode(&(3u32, "c")).unwrap()[..]);
        // ...and the arena is where it was: the next small one follows the last.
        assert_eq!(two.as_ptr().wrapping_add(two.len()), three.as_ptr());
        assert_eq!(decode::<(u32, String)>(&one).unwrap(), (1, "a".into()));
    }

    #[derive(Serialize)]
    struct Mixed {
        name: String,
        small: crate::Blob,
        big: Vec<crate::Blob>,
        tail: u32,
    }

    #[test]
    fn payload_keeps_large_blobs_by_reference_and_encodes_the_same_bytes() {
        let big = |n: usize, b: u8| crate::Blob::from(vec![b; n]);
        let v = Mixed {
            name: "x".into(),
            small: big(100, 1),
            big: vec![big(crate::blob::GATHER_MIN, 2), big(1 << 20, 3)],
            tail: 7,
        };
        let plain = encode(&v).unwrap();
        let p = encode_payload(&v).unwrap();
        assert_eq!(&p.to_bytes()[..], &plain[..]);
        // prefix, blob, bin header, blob, tail
        assert_eq!(p.parts().len(), 5);
        for blob in &v.big {
            assert!(
                p.parts().iter().any(|part| part.as_ptr() == blob.as_ptr()),
                "a large blob was copied"
            );
        }
        assert!(!p
            .parts()
            .iter()
            .any(|part| part.as_ptr() == v.small.as_ptr()));
        // Outside encode_payload nothing is announced: plain encoding is unchanged.
        assert_eq!(encode(&v).unwrap(), plain);
        // Small values stay one part.
        assert_eq!(encode_payload(&(1u8, "two")).unwrap().parts().len(), 1);
    }

    #[test]
    fn hostile_lengths_do_not_allocate_or_panic() {
        // array32 claiming 4 billion elements, with nothing after it.
        let r: Result<Vec<u64>, _> = decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.is_err());
        // str32 claiming 4 GiB.
        let r: Result<String, _> = decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']);
        assert!(r.is_err());
        // Deep nesting.
        let deep = vec![0x91u8; 100_000];
        let r: Result<rmpv_like::Any, _> = decode(&deep);
        assert!(r.is_err());
    }

    mod rmpv_like {
        /// Accepts any MessagePack value, recursively.
        #[derive(Debug)]
        pub struct Any;
        impl<'de> serde::Deserialize<'de> for Any {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Any, D::Error> {
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Any;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("anything")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Any, A::Error> {
                while a.next_element::<Any>()?.is_some() {}
                Ok(Any)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Any, E> {
                Ok(Any)
            }
        }
    }
}
