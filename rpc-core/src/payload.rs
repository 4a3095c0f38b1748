//! [`Payload`]: an encoded MessagePack value on its way to the wire, in one buffer or
//! cut around the large [`crate::Blob`]s it holds, which stay in their own buffers.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// An encoded value: one buffer, or parts whose concatenation is the encoding. The
/// transport writes the parts one after the other as a single ZeroMQ frame, so a large
/// [`crate::Blob`] argument or result goes to the socket without being copied.
#[derive(Clone, Default)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    One(Bytes),
    Parts(Box<[Bytes]>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::One(Bytes::new())
    }
}

impl Payload {
    /// A payload of these parts, in order.
    pub fn from_parts(mut parts: Vec<Bytes>) -> Payload {
        parts.retain(|p| !p.is_empty());
        match parts.len() {
            0 => Payload::default(),
            1 => Payload(Repr::One(parts.pop().expect("one part"))),
            _ => Payload(Repr::Parts(parts.into_boxed_slice())),
        }
    }

    /// The parts, in order (one for a contiguous payload).
    pub fn parts(&self) -> &[Bytes] {
        match &self.0 {
            Repr::One(b) => std::slice::from_ref(b),
            Repr::Parts(p) => p,
        }
    }

    /// Moves the parts to the end of `out`; returns how many there were.
    pub fn move_into(self, out: &mut Vec<Bytes>) -> usize {
        match self.0 {
            Repr::One(b) => {
                out.push(b);
                1
            }
            Repr::Parts(p) => {
                let n = p.len();
                out.extend(p.into_vec());
                n
            }
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    /// True when the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts().iter().all(Bytes::is_empty)
    }

    /// The payload as one buffer: shared when it is one part, copied together otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::One(b) => b.clone(),
            Repr::Parts(parts) => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in parts.iter() {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload(Repr::One(b))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload(Repr::One(Bytes::from(v)))
    }
}

impl PartialEq for Payload {
    /// Equal when the bytes are, however they are cut.
    fn eq(&self, other: &Payload) -> bool {
        self.len() == other.len()
            && self
                .parts()
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts().iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::One(b) if b.len() <= 32 => write!(f, "Payload({b:?})"),
            _ => write!(
                f,
                "Payload({} bytes in {} parts)",
                self.len(),
                self.parts().len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_ignores_the_cuts_and_empty_parts_vanish() {
        let a = Payload::from(Bytes::from_static(b"hello world"));
        let b = Payload::from_parts(vec![
            Bytes::from_static(b"hel"),
            Bytes::new(),
            Bytes::from_static(b"lo world"),
        ]);
        assert_eq!(a, b);
        assert_eq!(b.parts().len(), 2);
        assert_eq!(b.len(), 11);
        assert_eq!(&b.to_bytes()[..], b"hello world");
        assert_ne!(a, Payload::from(Bytes::from_static(b"hello worle")));
        assert_ne!(a, Payload::from(Bytes::from_static(b"hello")));
        assert!(Payload::from_parts(vec![Bytes::new()]).is_empty());
        assert_eq!(Payload::from_parts(vec![Bytes::new()]).parts().len(), 1);
    }
}
