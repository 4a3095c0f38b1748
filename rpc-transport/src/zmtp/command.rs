//! Commands: READY, ERROR, PING, PONG, and the rest.
//!
//! A command body is a 1-byte name length, the name, then command data. (A sentence in
//! RFC 23 mentions a NUL separator; the grammar and libzmq use the length prefix.)

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::TxQueue;
use super::ZmtpError;

/// Largest PING context a peer may send (RFC 37); longer ones are truncated, as libzmq does.
pub const MAX_PING_CONTEXT: usize = 16;

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// READY with its metadata.
    Ready(Metadata),
    /// ERROR with its reason; fatal for the connection.
    Error(String),
    /// PING: time-to-live in tenths of a second, and a context to echo.
    Ping {
        /// TTL in deciseconds; 0 = none.
        ttl_ds: u16,
        /// Up to 16 bytes to echo in PONG.
        context: Bytes,
    },
    /// PONG echoing a PING's context.
    Pong {
        /// The echoed context.
        context: Bytes,
    },
    /// Any other command (SUBSCRIBE, JOIN, ...), kept as is.
    Other {
        /// Command name.
        name: Bytes,
        /// Command data.
        data: Bytes,
    },
}

impl Command {
    /// Decodes a command frame body.
    pub fn decode(mut body: Bytes) -> Result<Command, ZmtpError> {
        if body.is_empty() {
            return Err(ZmtpError::Malformed("empty command"));
        }
        let name_len = usize::from(body[0]);
        if body.len() < 1 + name_len {
            return Err(ZmtpError::Malformed("command name"));
        }
        body.advance(1);
        let name = body.split_to(name_len);
        let data = body;
        Ok(match &name[..] {
            b"READY" => Command::Ready(Metadata::decode(data)?),
            b"ERROR" => {
                let Some(&len) = data.first() else {
                    return Err(ZmtpError::Malformed("ERROR"));
                };
                let len = usize::from(len);
                if data.len() < 1 + len {
                    return Err(ZmtpError::Malformed("ERROR"));
                }
                Command::Error(String::from_utf8_lossy(&data[1..1 + len]).into_owned())
            }
            b"PING" => {
                if data.len() < 2 {
                    return Err(ZmtpError::Malformed("PING"));
                }
                let ttl_ds = u16::from_be_bytes([data[0], data[1]]);
                let ctx_end = data.len().min(2 + MAX_PING_CONTEXT);
                Command::Ping {
                    ttl_ds,
                    context: data.slice(2..ctx_end),
                }
            }
            b"PONG" => Command::Pong {
                context: data.slice(..data.len().min(MAX_PING_CONTEXT)),
            },
            _ => Command::Other { name, data },
        })
    }

    /// The command's body (name size, name, data), as a frame carries it; a CURVE
    /// connection seals it into a MESSAGE.
    pub fn body(&self) -> BytesMut {
        let mut tx = TxQueue::new();
        self.encode(&mut tx);
        let mut all = tx.take_all();
        // Drop the frame header: flags, then one size byte or eight.
        let header = if all[0] & 0x02 != 0 { 9 } else { 2 };
        all.split_off(header)
    }

    /// Queues this command as a frame.
    pub fn encode(&self, tx: &mut TxQueue) {
        match self {
            Command::Ready(md) => tx.push_command(b"READY", |b| md.encode(b)),
            Command::Error(reason) => tx.push_command(b"ERROR", |b| {
                let r = &reason.as_bytes()[..reason.len().min(255)];
                b.put_u8(r.len() as u8);
                b.extend_from_slice(r);
            }),
            Command::Ping { ttl_ds, context } => tx.push_command(b"PING", |b| {
                b.put_u16(*ttl_ds);
                b.extend_from_slice(&context[..context.len().min(MAX_PING_CONTEXT)]);
            }),
            Command::Pong { context } => tx.push_command(b"PONG", |b| {
                b.extend_from_slice(&context[..context.len().min(MAX_PING_CONTEXT)]);
            }),
            Command::Other { name, data } => {
                let n = &name[..name.len().min(255)];
                tx.push_command(n, |b| b.extend_from_slice(data))
            }
        }
    }
}

/// READY metadata: an ordered list of properties. Names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    props: Vec<(Bytes, Bytes)>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Adds a property (names are at most 255 bytes; longer ones are truncated).
    pub fn insert(&mut self, name: &str, value: impl Into<Bytes>) {
        let n = &name.as_bytes()[..name.len().min(255)];
        self.props.push((Bytes::copy_from_slice(n), value.into()));
    }

    /// The value of a property, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.props
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every property, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.props.iter().map(|(n, v)| (n, v))
    }

    /// Decodes properties: name length (1), name, value length (4, big-endian), value.
    pub fn decode(mut data: Bytes) -> Result<Metadata, ZmtpError> {
        let mut props = Vec::new();
        while !data.is_empty() {
            let name_len = usize::from(data[0]);
            if name_len == 0 || data.len() < 1 + name_len + 4 {
                return Err(ZmtpError::Malformed("READY property"));
            }
            data.advance(1);
            let name = data.split_to(name_len);
            let value_len = data.get_u32() as usize;
            if data.len() < value_len {
                return Err(ZmtpError::Malformed("READY property value"));
            }
            let value = data.split_to(value_len);
            props.push((name, value));
        }
        Ok(Metadata { props })
    }

    /// Encodes the properties.
    pub fn encode(&self, dst: &mut BytesMut) {
        for (n, v) in &self.props {
            dst.put_u8(n.len() as u8);
            dst.extend_from_slice(n);
            dst.put_u32(v.len() as u32);
            dst.extend_from_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::frame::{Frame, FrameDecoder};

    /// A libzmq REQ's READY, byte for byte (ZMTP-NOTES.md).
    const LIBZMQ_REQ_READY: &[u8] =
        b"\x04\x26\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00";

    fn command_of(wire: &[u8]) -> Command {
        let mut src = BytesMut::from(wire);
        match FrameDecoder::new(1024)
            .decode(&mut src, 0)
            .unwrap()
            .unwrap()
        {
            Frame::Command(body) => Command::decode(body).unwrap(),
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn parses_libzmq_req_ready() {
        let Command::Ready(md) = command_of(LIBZMQ_REQ_READY) else {
            panic!("not READY")
        };
        assert_eq!(md.get("socket-type").unwrap(), &Bytes::from_static(b"REQ"));
        assert_eq!(md.get("Identity").unwrap(), &Bytes::new());
        assert_eq!(md.iter().count(), 2);
    }

    #[test]
    fn encodes_ready_like_libzmq() {
        let mut md = Metadata::new();
        md.insert("Socket-Type", Bytes::from_static(b"REQ"));
        md.insert("Identity", Bytes::new());
        let mut tx = TxQueue::new();
        Command::Ready(md).encode(&mut tx);
        assert_eq!(&tx.take_all()[..], LIBZMQ_REQ_READY);
    }

    #[test]
    fn libzmq_pong_and_ping() {
        assert_eq!(
            command_of(b"\x04\x05\x04PONG"),
            Command::Pong {
                context: Bytes::new()
            }
        );
        assert_eq!(
            command_of(b"\x04\x07\x04PING\x00\x0a"),
            Command::Ping {
                ttl_ds: 10,
                context: Bytes::new()
            }
        );
        let mut tx = TxQueue::new();
        Command::Pong {
            context: Bytes::new(),
        }
        .encode(&mut tx);
        assert_eq!(&tx.take_all()[..], b"\x04\x05\x04PONG");
    }

    #[test]
    fn ping_context_is_truncated_to_16() {
        let mut body = vec![4u8];
        body.extend_from_slice(b"PING");
        body.extend_from_slice(&[0, 1]);
        body.extend_from_slice(&[9u8; 40]);
        let Command::Ping { context, .. } = Command::decode(Bytes::from(body)).unwrap() else {
            panic!()
        };
        assert_eq!(context.len(), 16);
    }

    #[test]
    fn malformed_commands_are_errors() {
        for bad in [
            &b""[..],
            b"\x09READ",
            b"\x05READY\x03abc",
            b"\x05READY\x01a\x00\x00\x00\x05ab",
            b"\x05ERROR",
            b"\x05ERROR\x09abc",
            b"\x04PING\x01",
        ] {
            assert!(
                Command::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_commands_are_kept() {
        assert_eq!(
            Command::decode(Bytes::from_static(b"\x09SUBSCRIBEtopic")).unwrap(),
            Command::Other {
                name: Bytes::from_static(b"SUBSCRIBE"),
                data: Bytes::from_static(b"topic")
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn metadata_round_trips(props in proptest::collection::vec(("[A-Za-z-]{1,20}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)), 0..6)) {
            let mut md = Metadata::new();
            for (n, v) in &props { md.insert(n, Bytes::from(v.clone())); }
            let mut buf = BytesMut::new();
            md.encode(&mut buf);
            proptest::prop_assert_eq!(Metadata::decode(buf.freeze()).unwrap(), md);
        }

        #[test]
        fn any_command_body_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Command::decode(Bytes::from(body));
        }
    }
}
