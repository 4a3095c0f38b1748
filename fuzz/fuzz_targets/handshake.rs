//! Any bytes after a valid greeting (or instead of one) into a connection state machine.
#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_transport::zmtp::{Connection, ConnectionConfig, Greeting, SocketType};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Router), now);
    let mut src = BytesMut::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        src.extend_from_slice(&Greeting::null().encode());
    }
    for piece in data.chunks(7) {
        src.extend_from_slice(piece);
        if c.handle_input(&mut src, now).is_err() {
            break;
        }
        while c.poll_event().is_some() {}
    }
});
