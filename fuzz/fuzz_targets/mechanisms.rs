//! A connection speaking PLAIN or CURVE (client or server), fed the peer's greeting
//! for that mechanism and then any bytes: never a panic, nothing allocated beyond the
//! limits, only errors. Servers may defer the decision on the client (as with an
//! authenticator): the mode byte's bits say whether, and whether it allows.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_transport::zmtp::curve::KeyPair;
use rpc_transport::zmtp::{Connection, ConnectionConfig, Event, Greeting, Mechanism, SocketType};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let keys = KeyPair::from_secret_bytes([3; 32]);
    let (mechanism, name): (Mechanism, &[u8]) = match mode % 4 {
        0 => (
            Mechanism::PlainServer {
                authorize: Some(Arc::new(|u, p| u == "a" && p == b"b")),
            },
            b"PLAIN",
        ),
        1 => (
            Mechanism::PlainClient {
                username: "a".into(),
                password: b"b".to_vec(),
            },
            b"PLAIN",
        ),
        2 => (
            Mechanism::CurveServer {
                keys,
                authorize: None,
            },
            b"CURVE",
        ),
        _ => (
            Mechanism::CurveClient {
                server: keys.public(),
                keys: KeyPair::from_secret_bytes([4; 32]),
            },
            b"CURVE",
        ),
    };
    let now = Instant::now();
    let mut config = ConnectionConfig::new(SocketType::Dealer);
    config.mechanism = mechanism;
    config.defer_authorization = mode & 4 != 0;
    let allow = mode & 8 != 0;
    let mut c = Connection::new(config, now);
    let mut greeting = Greeting::null();
    greeting.mechanism = [0; 20];
    greeting.mechanism[..name.len()].copy_from_slice(name);
    let mut src = BytesMut::from(&greeting.encode()[..]);
    for piece in input.chunks(11) {
        src.extend_from_slice(piece);
        if c.handle_input(&mut src, now).is_err() {
            break;
        }
        while let Some(event) = c.poll_event() {
            if let Event::Authenticate(_) = event {
                let verdict = if allow {
                    Ok(Some("id".into()))
                } else {
                    Err("no".into())
                };
                let _ = c.authorized(verdict, now);
            }
        }
        c.transmit().take_all();
    }
});
