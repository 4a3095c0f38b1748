//! CURVE's handshake commands and MESSAGE boxes, both sides, fed hostile bytes at each
//! step (after the steps before it ran for real): never a panic, only errors.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_transport::zmtp::curve::{CurveClient, CurveServer, KeyPair};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let (ck, sk) = (
        KeyPair::from_secret_bytes([1; 32]),
        KeyPair::from_secret_bytes([2; 32]),
    );
    let mut client = CurveClient::new(ck, sk.public());
    let mut server = CurveServer::new(sk);
    let hello = client.hello().unwrap();
    match mode % 6 {
        0 => drop(server.on_hello(input)),
        1 => drop(client.on_welcome(input, b"")),
        _ => {
            let welcome = server.on_hello(&hello).unwrap();
            if mode % 6 == 2 {
                drop(server.on_initiate(input));
                return;
            }
            let initiate = client.on_welcome(&welcome, b"").unwrap();
            server.on_initiate(&initiate).unwrap();
            let ready = server.ready(b"").unwrap();
            if mode % 6 == 3 {
                drop(client.on_ready(input));
                return;
            }
            client.on_ready(&ready).unwrap();
            let mut c = client.into_session().unwrap();
            let mut s = server.into_session().unwrap();
            // A real message first, then the hostile one: nonces and boxes checked.
            let real = c.seal(0, &[b"x"]).unwrap();
            s.open(real).unwrap();
            let target = if mode % 6 == 4 { &mut s } else { &mut c };
            drop(target.open(BytesMut::from(input)));
        }
    }
});
