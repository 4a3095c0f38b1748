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
struct Gather {
    buf: bytes::BytesMut,
    parts: Vec<bytes::Bytes>,
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
            None => self.buf.extend_from_slice(data),
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// First buffer of [`encode_payload`]: most arguments and results fit.
const PAYLOAD_START: usize = 256;

/// Encodes a value like [`encode`], but keeps every [`crate::Blob`] of at least
/// [`crate::blob::GATHER_MIN`] bytes by reference: the result is cut around them, and
/// the transport writes it without copying their bytes. One serialization pass into a
/// buffer that grows as needed (a value is walked once; large binary data belongs in a
/// `Blob`, which is not copied at all).
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Payload, RpcError> {
    crate::blob::gathering(|| {
        let mut out = Gather {
            buf: bytes::BytesMut::with_capacity(PAYLOAD_START),
            parts: Vec::new(),
        };
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut out).with_struct_map())
            .map_err(RpcError::Encode)?;
        let last = compact(out.buf);
        if out.parts.is_empty() {
            return Ok(Payload::from(last));
        }
        out.parts.push(last);
        Ok(Payload::from_parts(out.parts))
    })
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
