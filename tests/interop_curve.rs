//! CURVE against libzmq (pyzmq), byte for byte, in both directions: keys made on each
//! side, and the whole handshake and MESSAGE boxes of `zmtp::curve` driven by hand
//! over a TCP stream (the sockets do not speak CURVE yet; this proves the protocol
//! layer they will use).
//!
//! What libzmq does that the RFCs do not say: handshake commands travel in command
//! frames, but MESSAGE travels in a plain message frame (flags 0, or 0x02 when long;
//! the MORE flag is inside the box); the greeting's as-server field is left zero.

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use support::PyPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zmtp_rpc::transport::zmtp::curve::{
    CurveClient, CurveServer, KeyPair, PublicKey, Session, FLAG_MORE,
};

/// A ZMTP 3.1 greeting for CURVE.
fn greeting(as_server: bool) -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 1;
    g[12..17].copy_from_slice(b"CURVE");
    g[32] = u8::from(as_server);
    g
}

/// Exchanges greetings; checks the peer asks for CURVE. (libzmq leaves the as-server
/// field zero on both sides: it is not checked.)
async fn greet(s: &mut TcpStream, as_server: bool) {
    s.write_all(&greeting(as_server)).await.unwrap();
    let mut peer = [0u8; 64];
    s.read_exact(&mut peer).await.unwrap();
    assert_eq!(&peer[12..17], b"CURVE", "the peer's mechanism");
}

/// Writes one frame: a command frame for the handshake commands; a message frame
/// (flags 0) for MESSAGE, as libzmq sends and expects them.
async fn send_frame(s: &mut TcpStream, body: &[u8], command: bool) {
    let mut frame = Vec::with_capacity(body.len() + 9);
    let kind = if command { 0x04 } else { 0x00 };
    match u8::try_from(body.len()) {
        Ok(n) => frame.extend_from_slice(&[kind, n]),
        Err(_) => {
            frame.push(kind | 0x02);
            frame.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(body);
    s.write_all(&frame).await.unwrap();
}

/// Writes one handshake command.
async fn send_command(s: &mut TcpStream, body: &[u8]) {
    send_frame(s, body, true).await;
}

/// Reads one frame: `command` says whether it must be a command frame (handshake)
/// or a message frame (MESSAGE).
async fn read_frame(s: &mut TcpStream, command: bool) -> BytesMut {
    let read = async {
        let flags = s.read_u8().await.unwrap();
        assert_eq!(flags & 0x04 != 0, command, "frame flags {flags:#x}");
        assert_eq!(flags & 0x01, 0, "no MORE on the outer frame: {flags:#x}");
        let len = if flags & 0x02 != 0 {
            s.read_u64().await.unwrap() as usize
        } else {
            usize::from(s.read_u8().await.unwrap())
        };
        assert!(len <= 2 << 20, "frame of {len} bytes");
        let mut body = BytesMut::zeroed(len);
        s.read_exact(&mut body).await.unwrap();
        body
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the peer sent a frame in time")
}

/// Reads one handshake command.
async fn read_command(s: &mut TcpStream) -> BytesMut {
    read_frame(s, true).await
}

/// ZMTP metadata with one property.
fn socket_type(kind: &str) -> Vec<u8> {
    let mut m = vec![11];
    m.extend_from_slice(b"Socket-Type");
    m.extend_from_slice(&(kind.len() as u32).to_be_bytes());
    m.extend_from_slice(kind.as_bytes());
    m
}

/// Sends a multipart message as MESSAGE commands.
async fn send_message(s: &mut TcpStream, session: &mut Session, frames: &[&[u8]]) {
    for (i, f) in frames.iter().enumerate() {
        let more = if i + 1 < frames.len() { FLAG_MORE } else { 0 };
        let cmd = session.seal(more, &[f]).unwrap();
        send_frame(s, &cmd, false).await;
    }
}

/// Receives a multipart message of MESSAGE commands.
async fn recv_message(s: &mut TcpStream, session: &mut Session) -> Vec<Bytes> {
    let mut frames = Vec::new();
    loop {
        let cmd = read_frame(s, false).await;
        let (flags, frame) = session.open(cmd).expect("a MESSAGE from libzmq opens");
        frames.push(frame);
        if flags & FLAG_MORE == 0 {
            return frames;
        }
    }
}

/// A libzmq key pair.
async fn libzmq_keypair(py: &mut PyPeer) -> (String, String) {
    let a = py.ok("curve_keypair").await;
    let (public, secret) = a.split_once(' ').expect("PUBLIC SECRET");
    (public.to_string(), secret.to_string())
}

#[tokio::test]
async fn keys_made_by_libzmq_work_here_and_ours_there() {
    let mut py = PyPeer::new("REP", &[]).await;
    let (public, secret) = libzmq_keypair(&mut py).await;
    let ours = KeyPair::from_secret_z85(&secret).unwrap();
    assert_eq!(
        ours.public().to_z85(),
        public,
        "the same public key from their secret"
    );
    assert_eq!(public.parse::<PublicKey>().unwrap(), ours.public());
    let mine = KeyPair::generate();
    let theirs = py.ok(&format!("curve_public {}", mine.secret_z85())).await;
    assert_eq!(
        theirs,
        mine.public().to_z85(),
        "libzmq derives our public key"
    );
}

#[tokio::test]
async fn our_curve_client_talks_to_a_libzmq_curve_rep_server() {
    let mut boot = PyPeer::new("REP", &[]).await;
    let (server_public, server_secret) = libzmq_keypair(&mut boot).await;
    let mut py = PyPeer::new("REP", &[&format!("curve_server={server_secret}")]).await;
    let ep = py.bind("tcp://127.0.0.1:0").await;
    py.ok("serve py").await;
    let mut s = TcpStream::connect(ep.trim_start_matches("tcp://"))
        .await
        .unwrap();
    greet(&mut s, false).await;
    let mut client = CurveClient::new(KeyPair::generate(), server_public.parse().unwrap());
    send_command(&mut s, &client.hello().unwrap()).await;
    let welcome = read_command(&mut s).await;
    let initiate = client.on_welcome(&welcome, &socket_type("REQ")).unwrap();
    send_command(&mut s, &initiate).await;
    let ready = read_command(&mut s).await;
    let meta = client.on_ready(&ready).unwrap();
    assert!(
        meta.windows(3).any(|w| w == b"REP"),
        "the server says it is a REP: {meta:?}"
    );
    let mut session = client.into_session().unwrap();
    for i in 0..3 {
        let body = format!("hello {i}");
        send_message(&mut s, &mut session, &[b"", body.as_bytes()]).await;
        let reply = recv_message(&mut s, &mut session).await;
        assert_eq!(reply, [Bytes::new(), Bytes::from(format!("py:{body}"))]);
    }
}

#[tokio::test]
async fn a_libzmq_curve_req_client_talks_to_our_curve_server() {
    let server_keys = KeyPair::generate();
    let mut boot = PyPeer::new("REP", &[]).await;
    let (client_public, client_secret) = libzmq_keypair(&mut boot).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opt = format!(
        "curve_client={client_secret},{}",
        server_keys.public().to_z85()
    );
    let mut py = PyPeer::new("REQ", &[&opt]).await;
    py.connect(&format!("tcp://{addr}")).await;
    py.send(&[b"ping"]).await;
    let (mut s, _) = listener.accept().await.unwrap();
    greet(&mut s, true).await;
    let mut server = CurveServer::new(server_keys);
    let hello = read_command(&mut s).await;
    send_command(&mut s, &server.on_hello(&hello).unwrap()).await;
    let initiate = read_command(&mut s).await;
    let init = server.on_initiate(&initiate).unwrap();
    assert_eq!(
        init.client.to_z85(),
        client_public,
        "the client's permanent key"
    );
    assert!(init.metadata.windows(3).any(|w| w == b"REQ"));
    send_command(&mut s, &server.ready(&socket_type("REP")).unwrap()).await;
    let mut session = server.into_session().unwrap();
    let request = recv_message(&mut s, &mut session).await;
    assert_eq!(request, [Bytes::new(), Bytes::from_static(b"ping")]);
    // Frames of 0 B to 1 MiB, in one reply.
    let big = vec![0x5a; 1 << 20];
    send_message(&mut s, &mut session, &[b"", b"pong", b"", &big]).await;
    let got = py.recv(10_000).await.expect("libzmq got the reply");
    assert_eq!(got.len(), 3);
    assert_eq!(
        (&got[0][..], got[1].len(), got[2].len()),
        (&b"pong"[..], 0, 1 << 20)
    );
    assert!(got[2].iter().all(|&b| b == 0x5a));
}
