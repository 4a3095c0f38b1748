//! Headers written and read by hand: the same MessagePack bytes as the serde encoding
//! of [`RequestHeader`] and [`ReplyHeader`] (maps with named keys, smallest integer
//! forms), without serde's two passes. Reading takes a fast path for headers laid out
//! the way this crate writes them and hands anything else (other key orders, extra
//! keys, other integer forms: what another implementation may send) to serde.
//!
//! What it buys: a call's two headers cost ~84 ns here against ~208 ns through
//! rmp-serde, 1.2-1.6% of a typed call's CPU (`zmtp-bench codec`; docs/BENCHMARKS.md).

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};

use crate::envelope::{ReplyHeader, RequestHeader, RequestId};
use crate::error::RpcError;
use crate::status::Status;

fn put_uint(out: &mut impl BufMut, v: u64) {
    if v < 0x80 {
        out.put_u8(v as u8);
    } else if v <= u8::MAX as u64 {
        out.put_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        out.put_u8(0xcd);
        out.put_slice(&(v as u16).to_be_bytes());
    } else if v <= u32::MAX as u64 {
        out.put_u8(0xce);
        out.put_slice(&(v as u32).to_be_bytes());
    } else {
        out.put_u8(0xcf);
        out.put_slice(&v.to_be_bytes());
    }
}

fn put_len(out: &mut impl BufMut, n: usize, fix: u8, fix_max: usize, m8: Option<u8>, m16: u8) {
    if n <= fix_max {
        out.put_u8(fix | n as u8);
    } else if let (Some(m8), true) = (m8, n <= u8::MAX as usize) {
        out.put_slice(&[m8, n as u8]);
    } else if n <= u16::MAX as usize {
        out.put_u8(m16);
        out.put_slice(&(n as u16).to_be_bytes());
    } else {
        out.put_u8(m16 + 1);
        out.put_slice(&(n as u32).to_be_bytes());
    }
}

fn put_str(out: &mut impl BufMut, s: &str) {
    put_len(out, s.len(), 0xa0, 31, Some(0xd9), 0xda);
    out.put_slice(s.as_bytes());
}

fn put_map_len(out: &mut impl BufMut, n: usize) {
    put_len(out, n, 0x80, 15, None, 0xde);
}

/// The start both headers share: a fixmap of `fields` entries, then `v` and `id`.
fn put_head(out: &mut impl BufMut, fields: u8, v: u8, id: &RequestId) {
    out.put_slice(&[0x80 | fields, 0xa1, b'v']);
    put_uint(out, v.into());
    out.put_slice(b"\xa2id\xc4\x10");
    out.put_slice(id.as_bytes());
}

impl RequestHeader {
    /// The header's MessagePack bytes (those of `codec::encode(self)`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write(&mut out, &[]);
        out
    }

    /// The same bytes as [`to_bytes`](Self::to_bytes), as a frame cut from the
    /// thread's [`arena`](crate::arena) (no allocation of its own).
    pub fn to_frame(&self) -> Bytes {
        self.to_frame_acking(&[])
    }

    /// Like [`to_frame`](Self::to_frame), with `more` acknowledgements after
    /// [`acks`](Self::acks) (a client's, without building a `Vec` per request).
    pub fn to_frame_acking(&self, more: &[RequestId]) -> Bytes {
        crate::arena::build(self.size_hint() + 18 * more.len(), |out| {
            self.write(out, more)
        })
    }

    fn size_hint(&self) -> usize {
        let meta: usize = self.meta.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        64 + self.method.len() + meta + 24 + 18 * self.acks.len() + 17
    }

    fn write(&self, out: &mut impl BufMut, more: &[RequestId]) {
        let acks = self.acks.len() + more.len();
        // Keys are constants (fixstr); `acks` only when there are some, `sent_ms`
        // only when known.
        let fields = 6 + u8::from(acks > 0) + u8::from(self.sent_ms.is_some());
        put_head(out, fields, self.v, &self.id);
        out.put_slice(b"\xa6method");
        put_str(out, &self.method);
        out.put_slice(b"\xaatimeout_ms");
        put_uint(out, self.timeout_ms);
        out.put_slice(b"\xa7attempt");
        put_uint(out, self.attempt.into());
        out.put_slice(b"\xa4meta");
        put_map_len(out, self.meta.len());
        for (k, v) in &self.meta {
            put_str(out, k);
            put_str(out, v);
        }
        if acks > 0 {
            out.put_slice(b"\xa4acks");
            put_len(out, acks, 0x90, 15, None, 0xdc);
            for id in self.acks.iter().chain(more) {
                out.put_slice(b"\xc4\x10");
                out.put_slice(id.as_bytes());
            }
        }
        if let Some(ms) = self.sent_ms {
            out.put_slice(b"\xa7sent_ms");
            put_uint(out, ms);
        }
    }

    /// The request id of a header that may be bad elsewhere (a field of the wrong
    /// type, a missing one): so that the refusal can name the request it refuses.
    pub fn peek_id(b: &[u8]) -> Option<RequestId> {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            id: RequestId,
        }
        if !crate::codec::is_map(b) {
            return None;
        }
        crate::codec::decode::<IdOnly>(b).ok().map(|h| h.id)
    }

    /// Reads a header from a frame.
    pub fn from_bytes(b: &[u8]) -> Result<RequestHeader, RpcError> {
        RequestHeader::from_bytes_known(b, |_| None)
    }

    /// Reads a header like [`from_bytes`](Self::from_bytes); when `known` returns the
    /// static copy of the method name (a server's method table, looked up by the name's
    /// bytes), the header borrows it instead of allocating one, and the name needs no
    /// UTF-8 check of its own.
    pub fn from_bytes_known(
        b: &[u8],
        known: impl Fn(&[u8]) -> Option<&'static str>,
    ) -> Result<RequestHeader, RpcError> {
        match Reader(b).request(&known) {
            Some(h) => Ok(h),
            None => {
                if !crate::codec::is_map(b) {
                    return Err(RpcError::BadRequest(
                        "the header must be a MessagePack map".into(),
                    ));
                }
                let mut h: RequestHeader = crate::codec::decode(b)?;
                if let Some(m) = known(h.method.as_bytes()) {
                    h.method = Cow::Borrowed(m);
                }
                Ok(h)
            }
        }
    }
}

impl ReplyHeader {
    /// The header's MessagePack bytes (those of `codec::encode(self)`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.message.len());
        self.write(&mut out);
        out
    }

    /// The same bytes as [`to_bytes`](Self::to_bytes), as a frame cut from the
    /// thread's [`arena`](crate::arena).
    pub fn to_frame(&self) -> Bytes {
        crate::arena::build(48 + self.message.len(), |out| self.write(out))
    }

    fn write(&self, out: &mut impl BufMut) {
        put_head(out, 4, self.v, &self.id);
        out.put_slice(b"\xa6status");
        put_uint(out, (self.status as u8).into());
        out.put_slice(b"\xa7message");
        put_str(out, &self.message);
    }

    /// The request id of a reply header, read without the rest of it when laid out as
    /// this crate writes it (else the header is read whole): a client matches replies
    /// to calls by it. `None` when the frame is no reply header. Whatever
    /// [`from_bytes`](Self::from_bytes) reads, this gives the same id.
    pub fn peek_id(b: &[u8]) -> Option<RequestId> {
        let peek = Reader(b).peek_map_len().and_then(|n| Reader(b).head(n));
        match peek {
            Some((_, id)) => Some(id),
            None => ReplyHeader::from_bytes(b).ok().map(|h| h.id),
        }
    }

    /// Reads a header from a frame. A status code this version does not know is
    /// read as INTERNAL, its message saying which code came (PROTOCOL.md §5).
    pub fn from_bytes(b: &[u8]) -> Result<ReplyHeader, RpcError> {
        if let Some(h) = Reader(b).reply() {
            return Ok(h);
        }
        #[derive(serde::Deserialize)]
        struct Raw {
            v: u8,
            id: RequestId,
            status: u8,
            #[serde(default)]
            message: String,
        }
        if !crate::codec::is_map(b) {
            return Err(RpcError::Protocol("the reply header is not a map".into()));
        }
        let raw: Raw = crate::codec::decode(b)?;
        let (status, message) = match Status::from_code(raw.status) {
            Some(s) => (s, raw.message),
            None => (
                Status::Internal,
                format!("unknown status {}: {}", raw.status, raw.message),
            ),
        };
        Ok(ReplyHeader {
            v: raw.v,
            id: raw.id,
            status,
            message,
        })
    }
}

/// The fast path: `None` for anything not laid out as this crate writes it.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |a, b| a << 8 | u64::from(*b)),
        )
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m.into()),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    fn raw_str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_str()?).ok()
    }

    /// The length of the map that starts here, without consuming it.
    fn peek_map_len(&self) -> Option<usize> {
        Reader(self.0).map_len()
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    /// A key as this crate writes it: a fixstr, `name` with its one-byte prefix
    /// (compared whole, inlined: a `memcmp` call per key was ~40 instructions).
    #[inline(always)]
    fn key(&mut self, name: &[u8]) -> Option<()> {
        (self.take(name.len())? == name).then_some(())
    }

    fn id(&mut self) -> Option<RequestId> {
        if self.take(2)? != [0xc4, 16] {
            return None;
        }
        RequestId::from_slice(self.take(16)?)
    }

    /// A map of `fields` entries starting with `v` and `id`, as both headers do.
    fn head(&mut self, fields: usize) -> Option<(u8, RequestId)> {
        (self.map_len()? == fields).then_some(())?;
        self.key(b"\xa1v")?;
        let v = u8::try_from(self.uint()?).ok()?;
        self.key(b"\xa2id")?;
        Some((v, self.id()?))
    }

    fn request(&mut self, known: impl Fn(&[u8]) -> Option<&'static str>) -> Option<RequestHeader> {
        let fields = self.peek_map_len()?;
        let (v, id) = self.head(fields.clamp(6, 8))?;
        self.key(b"\xa6method")?;
        let raw = self.raw_str()?;
        let method = match known(raw) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(std::str::from_utf8(raw).ok()?.to_owned()),
        };
        self.key(b"\xaatimeout_ms")?;
        let timeout_ms = self.uint()?;
        self.key(b"\xa7attempt")?;
        let attempt = u32::try_from(self.uint()?).ok()?;
        self.key(b"\xa4meta")?;
        let n = self.map_len()?;
        let mut meta = BTreeMap::new();
        for _ in 0..n {
            // Each entry takes at least two bytes: a hostile count ends here.
            let k = self.str()?.to_owned();
            let v = self.str()?.to_owned();
            // A repeated key is for serde to judge.
            meta.insert(k, v).is_none().then_some(())?;
        }
        let mut acks = Vec::new();
        let mut left = fields - 6;
        if left > 0 && self.0.starts_with(b"\xa4acks") {
            left -= 1;
            self.key(b"\xa4acks")?;
            let n = match self.byte()? {
                m @ 0x90..=0x9f => usize::from(m & 0x0f),
                0xdc => self.be(2)? as usize,
                _ => return None,
            };
            // 18 bytes each: a hostile count ends at the end of the frame.
            acks.reserve(n.min(self.0.len() / 18));
            for _ in 0..n {
                acks.push(self.id()?);
            }
        }
        let mut sent_ms = None;
        if left > 0 {
            left -= 1;
            self.key(b"\xa7sent_ms")?;
            sent_ms = Some(self.uint()?);
        }
        (left == 0 && self.0.is_empty()).then_some(())?;
        Some(RequestHeader {
            v,
            id,
            method,
            timeout_ms,
            attempt,
            meta,
            acks,
            sent_ms,
        })
    }

    fn reply(&mut self) -> Option<ReplyHeader> {
        let (v, id) = self.head(4)?;
        self.key(b"\xa6status")?;
        let status = Status::try_from(u8::try_from(self.uint()?).ok()?).ok()?;
        self.key(b"\xa7message")?;
        let message = self.str()?.to_owned();
        Some(ReplyHeader {
            v,
            id,
            status,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn requests() -> Vec<RequestHeader> {
        let mut out = Vec::new();
        let long = "m".repeat(300);
        let longer = "x".repeat(70_000);
        for (i, method) in ["a.b", "calc.add", &"s".repeat(31), &"s".repeat(32), &long]
            .into_iter()
            .enumerate()
        {
            for n in [
                0u64,
                1,
                127,
                128,
                255,
                256,
                65535,
                65536,
                u32::MAX as u64,
                u32::MAX as u64 + 1,
                u64::MAX,
            ] {
                let mut meta = BTreeMap::new();
                for k in 0..(n % 20) {
                    meta.insert(format!("k{k}"), format!("value {k}"));
                }
                if n == 65536 {
                    meta.insert("big".into(), longer.clone());
                }
                // No acks, a few, and more than a fixarray holds.
                let acks = (0..[0, 1, 3, 16, 20][(n % 5) as usize])
                    .map(|k| RequestId(uuid::Uuid::from_bytes([k as u8 ^ 0x5a; 16])))
                    .collect();
                out.push(RequestHeader {
                    v: (n % 256) as u8,
                    id: RequestId(uuid::Uuid::from_bytes([i as u8; 16])),
                    method: method.to_string().into(),
                    timeout_ms: n,
                    attempt: n.min(u32::MAX as u64) as u32,
                    meta,
                    acks,
                    // Known or not; the first request (n = 0) without.
                    sent_ms: (n % 2 == 1).then_some(n ^ 0x5a5a),
                });
            }
        }
        out
    }

    #[test]
    fn request_headers_are_the_serde_bytes_and_read_back() {
        for h in requests() {
            let bytes = h.to_bytes();
            assert_eq!(bytes, codec::encode(&h).unwrap(), "{h:?}");
            assert_eq!(
                Reader(&bytes).request(|_| None).as_ref(),
                Some(&h),
                "fast path"
            );
            assert_eq!(RequestHeader::from_bytes(&bytes).unwrap(), h);
        }
    }

    #[test]
    fn acknowledgements_given_aside_are_written_after_the_headers_own() {
        for h in requests() {
            let more: Vec<RequestId> = (0..3u8)
                .map(|k| RequestId(uuid::Uuid::from_bytes([k; 16])))
                .collect();
            let mut whole = h.clone();
            whole.acks.extend(&more);
            assert_eq!(&h.to_frame_acking(&more)[..], &whole.to_bytes()[..]);
            assert_eq!(
                RequestHeader::from_bytes(&h.to_frame_acking(&more)).unwrap(),
                whole
            );
            assert_eq!(&h.to_frame()[..], &h.to_bytes()[..]);
        }
    }

    #[test]
    fn a_hostile_count_of_acknowledgements_fails_without_allocating_it() {
        let mut h = requests()[0].clone();
        h.acks = vec![RequestId(uuid::Uuid::from_bytes([9; 16]))];
        let good = h.to_bytes();
        // Claim 65,535 (array16) and 4 billion (array32) ids where one follows.
        let at = good.len() - 19;
        assert_eq!(good[at], 0x91, "fixarray of one");
        for claim in [&[0xdc, 0xff, 0xff][..], &[0xdd, 0xff, 0xff, 0xff, 0xff][..]] {
            let mut bad = good[..at].to_vec();
            bad.extend_from_slice(claim);
            bad.extend_from_slice(&good[at + 1..]);
            assert!(Reader(&bad).request(|_| None).is_none());
            assert!(RequestHeader::from_bytes(&bad).is_err());
        }
        assert_eq!(RequestHeader::from_bytes(&good).unwrap(), h);
    }

    #[test]
    fn a_known_method_name_is_borrowed_not_copied() {
        static NAME: &str = "calc.add";
        let all = requests();
        let h = all
            .iter()
            .find(|h| h.method == NAME && !h.meta.is_empty())
            .unwrap();
        let known = |m: &[u8]| (m == NAME.as_bytes()).then_some(NAME);
        // Fast path and serde path (a header with its keys out of order).
        let mut odd = h.to_bytes();
        let serde_only = {
            #[derive(serde::Serialize)]
            struct Reordered<'a> {
                id: RequestId,
                v: u8,
                method: &'a str,
                timeout_ms: u64,
                attempt: u32,
                meta: &'a BTreeMap<String, String>,
                acks: &'a [RequestId],
                #[serde(skip_serializing_if = "Option::is_none")]
                sent_ms: Option<u64>,
            }
            codec::encode(&Reordered {
                id: h.id,
                v: h.v,
                method: &h.method,
                timeout_ms: h.timeout_ms,
                attempt: h.attempt,
                meta: &h.meta,
                acks: &h.acks,
                sent_ms: h.sent_ms,
            })
            .unwrap()
        };
        assert!(Reader(&serde_only).request(|_| None).is_none());
        for bytes in [&odd, &serde_only] {
            let got = RequestHeader::from_bytes_known(bytes, known).unwrap();
            assert_eq!(&got, h);
            assert!(
                matches!(&got.method, Cow::Borrowed(m) if std::ptr::eq(*m, NAME)),
                "borrowed from the table"
            );
        }
        // An unknown name is read as usual, owned.
        odd = RequestHeader {
            method: "calc.sub".into(),
            ..h.clone()
        }
        .to_bytes();
        let got = RequestHeader::from_bytes_known(&odd, known).unwrap();
        assert!(matches!(got.method, Cow::Owned(ref m) if m == "calc.sub"));
    }

    #[test]
    fn reply_headers_are_the_serde_bytes_and_read_back() {
        for (i, status) in [
            Status::Ok,
            Status::AppError,
            Status::Overloaded,
            Status::Internal,
        ]
        .into_iter()
        .enumerate()
        {
            for message in [String::new(), "why".into(), "w".repeat(40), "w".repeat(300)] {
                let h = ReplyHeader {
                    v: 1,
                    id: RequestId(uuid::Uuid::from_bytes([i as u8; 16])),
                    status,
                    message,
                };
                let bytes = h.to_bytes();
                assert_eq!(bytes, codec::encode(&h).unwrap());
                assert_eq!(Reader(&bytes).reply().as_ref(), Some(&h));
                assert_eq!(ReplyHeader::from_bytes(&bytes).unwrap(), h);
            }
        }
    }

    #[test]
    fn other_layouts_go_to_serde_with_the_same_result() {
        #[derive(serde::Serialize)]
        struct Reordered<'a> {
            attempt: i64,
            #[serde(with = "serde_bytes_16")]
            id: [u8; 16],
            method: &'a str,
            timeout_ms: i64,
            v: u8,
            extra: u8,
        }
        mod serde_bytes_16 {
            pub fn serialize<S: serde::Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let bytes = codec::encode(&Reordered {
            attempt: 2,
            id: [3; 16],
            method: "a.b",
            timeout_ms: 9,
            v: 1,
            extra: 7,
        })
        .unwrap();
        assert!(Reader(&bytes).request(|_| None).is_none());
        let h = RequestHeader::from_bytes(&bytes).unwrap();
        assert_eq!((h.attempt, h.timeout_ms, &*h.method), (2, 9, "a.b"));
        // Broken input: an error either way, never a panic.
        let good = requests()[3].to_bytes();
        for cut in 0..good.len() {
            assert!(
                RequestHeader::from_bytes(&good[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut bad_status = ReplyHeader {
            v: 1,
            id: RequestId::new(),
            status: Status::Ok,
            message: String::new(),
        }
        .to_bytes();
        let at = bad_status.len() - 10; // the status, before "message" and ""
        assert_eq!(bad_status[at], Status::Ok as u8);
        bad_status[at] = 0x7f;
        // A status this version does not know reads as INTERNAL (PROTOCOL.md §5).
        let h = ReplyHeader::from_bytes(&bad_status).unwrap();
        assert_eq!(h.status, Status::Internal);
        assert_eq!(h.message, "unknown status 127: ");
        // A header that is not a map is refused, with its id when it has one.
        let array = codec::encode(&(1u8, "a.b")).unwrap();
        assert!(RequestHeader::from_bytes(&array).is_err());
        assert_eq!(RequestHeader::peek_id(&array), None);
        let mut wrong_type = requests()[0].to_bytes();
        let id = requests()[0].id;
        assert_eq!(RequestHeader::peek_id(&wrong_type), Some(id));
        let cut = wrong_type.len() - 1;
        wrong_type.truncate(cut);
        assert_eq!(RequestHeader::peek_id(&wrong_type), None, "cut short");
        // A meta count far beyond the input.
        let mut huge = requests()[0].to_bytes();
        let meta_at = huge.len() - 1;
        huge[meta_at] = 0xdf;
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(RequestHeader::from_bytes(&huge).is_err());
    }

    #[test]
    fn a_reply_header_gives_its_id_in_any_layout() {
        let id = RequestId::new();
        let ours = ReplyHeader {
            v: 1,
            id,
            status: Status::AppError,
            message: "no".into(),
        }
        .to_bytes();
        assert_eq!(ReplyHeader::peek_id(&ours), Some(id));
        // Only the head is read: a reply cut after the id is still matched to its
        // call, whose own reading of it then fails and says so.
        assert_eq!(ReplyHeader::peek_id(&ours[..25]), Some(id));
        assert_eq!(ReplyHeader::peek_id(&ours[..24]), None);
        #[derive(serde::Serialize)]
        struct Reordered {
            status: u8,
            message: &'static str,
            #[serde(with = "serde_bytes_16")]
            id: [u8; 16],
            v: u8,
        }
        mod serde_bytes_16 {
            pub fn serialize<S: serde::Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        let other = codec::encode(&Reordered {
            status: 0,
            message: "",
            id: *id.as_bytes(),
            v: 1,
        })
        .unwrap();
        assert!(Reader(&other).reply().is_none(), "not the fast path");
        assert_eq!(ReplyHeader::peek_id(&other), Some(id));
        // No id, an id of another size, not a map: nothing to match.
        let no_id = codec::encode(&std::collections::BTreeMap::from([("v", 1u8)])).unwrap();
        assert_eq!(ReplyHeader::peek_id(&no_id), None);
        let mut short = ours.clone();
        short[8] = 15;
        assert_eq!(ReplyHeader::peek_id(&short[..24]), None);
        assert_eq!(
            ReplyHeader::peek_id(&codec::encode(&(1u8, 2u8)).unwrap()),
            None
        );
        assert_eq!(ReplyHeader::peek_id(&[]), None);
    }

    #[test]
    fn mutated_headers_read_or_fail_but_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = [requests()[7].to_bytes(), requests()[20].to_bytes()];
        for round in 0..20_000 {
            let mut b = valid[round % 2].clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            b.truncate((next() as usize) % (b.len() + 1));
            if let Ok(h) = RequestHeader::from_bytes(&b) {
                assert_eq!(RequestHeader::from_bytes(&h.to_bytes()).unwrap(), h);
            }
            if let Ok(h) = ReplyHeader::from_bytes(&b) {
                assert_eq!(ReplyHeader::from_bytes(&h.to_bytes()).unwrap(), h);
            }
        }
    }
}
