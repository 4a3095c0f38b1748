//! Hostile CURVE clients against a typed CURVE server over TCP: each is cut off (a
//! box that does not open, a replayed or reordered MESSAGE, a HELLO of the wrong
//! size, a MESSAGE before the handshake ends, a handshake left half-way), and a good
//! client is served beside them. The byte-level cases are unit-tested in
//! `zmtp/curve/`; these drive the whole server.

#[allow(dead_code)]
#[path = "../examples/common/calc.rs"]
mod calc;
mod support;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use calc::{CalcClient, CalcServer, MyCalc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zmtp_rpc::transport::zmtp::{Connection, ConnectionConfig, Mechanism, SocketType};
use zmtp_rpc::{Client, KeyPair, Server, ServerHandle};

/// How long the server gives a handshake here.
const HANDSHAKE: Duration = Duration::from_millis(500);

async fn server(keys: &KeyPair) -> (ServerHandle, String) {
    let b = Server::builder()
        .curve(keys.clone())
        .handshake_timeout(HANDSHAKE)
        .add_service(CalcServer::new(MyCalc));
    support::serve_tcp(b).await
}

/// A CURVE DEALER of our own protocol engine, on a raw TCP stream the test can
/// write anything to.
struct Raw {
    tcp: TcpStream,
    conn: Connection,
    rx: BytesMut,
}

impl Raw {
    async fn connect(ep: &str, server: &KeyPair) -> Raw {
        let mut cfg = ConnectionConfig::new(SocketType::Dealer);
        cfg.mechanism = Mechanism::CurveClient {
            keys: KeyPair::generate(),
            server: server.public(),
        };
        let addr = ep.trim_start_matches("tcp://");
        Raw {
            tcp: TcpStream::connect(addr).await.unwrap(),
            conn: Connection::new(cfg, std::time::Instant::now()),
            rx: BytesMut::new(),
        }
    }

    /// What the engine queued, as bytes.
    fn pending(&mut self) -> Vec<u8> {
        self.conn.transmit().take_all().to_vec()
    }

    async fn flush(&mut self) {
        let out = self.pending();
        self.tcp.write_all(&out).await.unwrap();
    }

    /// Runs the handshake to its end (READY received).
    async fn handshake(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.conn.is_active() {
            assert!(Instant::now() < deadline, "no handshake");
            self.flush().await;
            let n = self.tcp.read_buf(&mut self.rx).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            self.conn
                .handle_input(&mut self.rx, std::time::Instant::now())
                .unwrap();
        }
        self.flush().await;
    }

    /// One sealed request (`[id][empty][header][args]` needs no meaning here: the
    /// box is what the server checks first), as the bytes that would go out.
    fn sealed(&mut self, body: &'static [u8]) -> Vec<u8> {
        self.conn
            .send_frames(&[Bytes::from_static(b""), Bytes::from_static(body)], 1)
            .unwrap();
        self.pending()
    }

    /// Whether the server closes the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let end = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(end, self.tcp.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A good CURVE client still gets answers.
async fn still_serves(ep: &str, keys: &KeyPair) {
    let client = Client::builder()
        .endpoint(ep)
        .curve(KeyPair::generate(), keys.public())
        .connect()
        .await
        .unwrap();
    assert_eq!(CalcClient::new(client).add(20, 22).await.unwrap(), 42);
}

/// Bound on a close after the handshake: under the server's heartbeat timeout (3 s),
/// which would close a peer that does not answer PINGs anyway.
const CLOSE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_box_that_does_not_open_closes_that_connection_only() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    raw.handshake().await;
    let mut bytes = raw.sealed(b"hello");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    raw.tcp.write_all(&bytes).await.unwrap();
    assert!(raw.closed_within(CLOSE).await, "a corrupted box was taken");
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_replayed_message_closes_the_connection() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    raw.handshake().await;
    let bytes = raw.sealed(b"hello");
    raw.tcp.write_all(&bytes).await.unwrap();
    raw.tcp.write_all(&bytes).await.unwrap();
    assert!(raw.closed_within(CLOSE).await, "a replayed nonce was taken");
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}

#[tokio::test]
async fn messages_in_the_wrong_order_close_the_connection() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    raw.handshake().await;
    let first = raw.sealed(b"one");
    let second = raw.sealed(b"two");
    raw.tcp.write_all(&second).await.unwrap();
    raw.tcp.write_all(&first).await.unwrap();
    assert!(
        raw.closed_within(CLOSE).await,
        "a decreasing nonce was taken"
    );
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_hello_of_the_wrong_size_is_refused() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    // The greeting and HELLO the engine queued, with the HELLO one byte short: its
    // size byte (a short command frame) and its length both changed.
    let mut out = raw.pending();
    let hello_at = 64;
    assert_eq!(&out[hello_at + 2..hello_at + 8], b"\x05HELLO");
    out[hello_at + 1] -= 1;
    out.pop();
    raw.tcp.write_all(&out).await.unwrap();
    // At once, not by the handshake timeout.
    assert!(
        raw.closed_within(HANDSHAKE / 2).await,
        "a short HELLO was taken"
    );
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_before_the_handshake_ends_is_refused() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    // Greeting and HELLO, then a plain message frame where INITIATE belongs.
    let mut out = raw.pending();
    out.extend_from_slice(&[0x00, 0x05]);
    out.extend_from_slice(b"hello");
    raw.tcp.write_all(&out).await.unwrap();
    // At once, not by the handshake timeout.
    assert!(
        raw.closed_within(HANDSHAKE / 2).await,
        "a message before READY was taken"
    );
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_handshake_left_half_way_is_closed_by_the_handshake_timeout() {
    let keys = KeyPair::generate();
    let (server, ep) = server(&keys).await;
    let mut raw = Raw::connect(&ep, &keys).await;
    // Greeting and HELLO, then silence: the server's WELCOME is never answered.
    raw.flush().await;
    let t0 = Instant::now();
    assert!(
        raw.closed_within(HANDSHAKE * 6).await,
        "a half-done handshake was kept"
    );
    assert!(t0.elapsed() >= HANDSHAKE / 2, "closed before its time");
    still_serves(&ep, &keys).await;
    server.shutdown().await;
}
