//! The frames of a call after the ZeroMQ envelope.
//!
//! Request: `[header][arguments]`; reply: `[header][body]`; each one MessagePack value.
//! Headers are maps with short string keys so that other languages can build them
//! by hand; unknown keys are ignored, so later versions can add fields.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Version of the envelope format in every header.
pub const PROTOCOL_VERSION: u8 = 1;

/// A request id: 16 random bytes (a UUID v4), the same for every attempt of a call.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One 128-bit word: what `IdHasher` takes in one step.
        state.write_u128(self.0.as_u128());
    }
}

impl RequestId {
    /// A fresh random id.
    pub fn new() -> RequestId {
        RequestId(uuid::Uuid::new_v4())
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Option<RequestId> {
        uuid::Uuid::from_slice(b).ok().map(RequestId)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The first frame of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// Envelope version ([`PROTOCOL_VERSION`]).
    pub v: u8,
    /// Request id, as MessagePack bin 16.
    pub id: RequestId,
    /// `"service.method"` (borrowed from the method table when sending).
    pub method: Cow<'static, str>,
    /// Milliseconds the caller will still wait; 0 means already expired.
    pub timeout_ms: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// String metadata (tracing context, for example).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Ids of earlier calls whose replies this client received from this server: the
    /// server may let go of those replies (no attempt of them will come again). Absent
    /// from the wire when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<RequestId>,
    /// The client's wall clock when it sent this attempt, in milliseconds since the
    /// Unix epoch: a server that states a bound on clock skew
    /// (`ServerBuilder::clock_skew`) refuses a request that waited past its caller's
    /// deadline before it was read. Absent from the wire when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<u64>,
}

/// Most ids a request header acknowledges ([`RequestHeader::acks`]).
pub const MAX_ACKS: usize = 64;

/// The first frame of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// Envelope version.
    pub v: u8,
    /// The request id being answered.
    pub id: RequestId,
    /// Outcome.
    pub status: Status,
    /// Human-readable detail for non-OK statuses; empty otherwise.
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_a_map_with_named_keys_and_bin_id() {
        let h = RequestHeader {
            v: 1,
            id: RequestId(uuid::Uuid::from_bytes([7; 16])),
            method: "calc.add".into(),
            timeout_ms: 500,
            attempt: 1,
            meta: BTreeMap::new(),
            acks: Vec::new(),
            sent_ms: None,
        };
        let bytes = crate::codec::encode(&h).unwrap();
        // fixmap of 6, then "v" 1, "id" bin8(16) ...
        assert_eq!(bytes[0], 0x86);
        assert_eq!(&bytes[1..4], &[0xa1, b'v', 0x01]);
        assert_eq!(&bytes[4..9], &[0xa2, b'i', b'd', 0xc4, 16]);
        let back: RequestHeader = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn unknown_header_keys_are_ignored_and_meta_defaults() {
        #[derive(Serialize)]
        struct Future<'a> {
            v: u8,
            #[serde(with = "serde_bytes_16")]
            id: [u8; 16],
            method: &'a str,
            timeout_ms: u64,
            attempt: u32,
            priority: u8,
        }
        mod serde_bytes_16 {
            pub fn serialize<S: serde::Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let bytes = crate::codec::encode(&Future {
            v: 1,
            id: [1; 16],
            method: "a.b",
            timeout_ms: 5,
            attempt: 2,
            priority: 9,
        })
        .unwrap();
        let h: RequestHeader = crate::codec::decode(&bytes).unwrap();
        assert_eq!(h.method, "a.b");
        assert!(h.meta.is_empty());
    }
}

#[cfg(test)]
mod protocol_doc {
    //! The byte-level example in docs/PROTOCOL.md is what the code produces.
    use super::*;
    use crate::status::Status;

    const DOC: &str = include_str!("../../docs/PROTOCOL.md");

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_documented_call_is_byte_exact() {
        let id = RequestId(uuid::Uuid::from_bytes([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]));
        let req = RequestHeader {
            v: 1,
            id,
            method: "calc.add".into(),
            timeout_ms: 500,
            attempt: 1,
            meta: BTreeMap::new(),
            acks: Vec::new(),
            sent_ms: None,
        };
        let req = crate::codec::encode(&req).unwrap();
        assert_eq!(req.len(), 70);
        assert!(
            DOC.contains(&hex(&req)),
            "request header bytes differ from the doc"
        );
        #[derive(Serialize)]
        struct Args {
            a: i64,
            b: i64,
        }
        let args = crate::codec::encode(&Args { a: 2, b: 3 }).unwrap();
        assert!(DOC.contains(&hex(&args)));
        let rep = ReplyHeader {
            v: 1,
            id,
            status: Status::Ok,
            message: String::new(),
        };
        assert!(DOC.contains(&hex(&crate::codec::encode(&rep).unwrap())));
    }
}
