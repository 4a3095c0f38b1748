//! The connection state machine driven byte for byte: handshakes of every
//! mechanism, refusals, limits, heartbeats, and libzmq's own bytes.

use super::security::plain_hello;
use super::*;
use crate::zmtp::frame::{FLAG_COMMAND, FLAG_MORE};

/// Two connections wired back to back in memory.
struct Pair {
    a: Connection,
    b: Connection,
    now: Instant,
}

impl Pair {
    fn new(a: ConnectionConfig, b: ConnectionConfig) -> Pair {
        let now = Instant::now();
        Pair {
            a: Connection::new(a, now),
            b: Connection::new(b, now),
            now,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn drive(&mut self) -> (Result<(), ZmtpError>, Result<(), ZmtpError>) {
        let (mut ra, mut rb) = (Ok(()), Ok(()));
        loop {
            let mut to_b = self.a.transmit().take_all();
            let mut to_a = self.b.transmit().take_all();
            if to_a.is_empty() && to_b.is_empty() {
                return (ra, rb);
            }
            if rb.is_ok() {
                rb = self.b.handle_input(&mut to_b, self.now);
            }
            if ra.is_ok() {
                ra = self.a.handle_input(&mut to_a, self.now);
            }
        }
    }
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// A DEALER client and a ROUTER server over CURVE; `allow` decides the client.
fn curve_pair(allow: bool) -> (Pair, curve::KeyPair) {
    let (ck, sk) = (curve::KeyPair::generate(), curve::KeyPair::generate());
    let mut a = ConnectionConfig::new(SocketType::Dealer);
    a.mechanism = Mechanism::CurveClient {
        keys: ck.clone(),
        server: sk.public(),
    };
    a.heartbeat = Some(HeartbeatConfig::every(Duration::from_millis(100)));
    let mut b = ConnectionConfig::new(SocketType::Router);
    b.mechanism = Mechanism::CurveServer {
        keys: sk,
        authorize: Some(std::sync::Arc::new(move |_| allow)),
    };
    (Pair::new(a, b), ck)
}

#[test]
fn curve_handshake_authenticates_and_boxes_messages_and_commands() {
    let (mut p, client_keys) = curve_pair(true);
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert!(p.a.is_active() && p.b.is_active());
    assert!(p.a.is_encrypted());
    let ev = events(&mut p.b);
    let [Event::Ready(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(info.socket_type, SocketType::Dealer);
    assert_eq!(info.public_key, Some(client_keys.public()));
    events(&mut p.a);
    let msg = Message::from(vec![
        Bytes::new(),
        Bytes::from_static(b"secret"),
        Bytes::from(vec![9u8; 70_000]),
    ]);
    p.a.send(&msg).unwrap();
    // Nothing of it travels in clear.
    let wire = p.a.transmit().take_all();
    assert!(!wire.windows(6).any(|w| w == b"secret"));
    let mut wire = wire;
    p.b.handle_input(&mut wire, p.now).unwrap();
    assert_eq!(events(&mut p.b), [Event::Message(msg.clone())]);
    p.b.send(&msg).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert_eq!(events(&mut p.a), [Event::Message(msg)]);
    // Heartbeats travel boxed too, and are answered.
    let later = p.now + Duration::from_millis(150);
    p.a.handle_timeout(later).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    p.a.handle_timeout(later + Duration::from_millis(50))
        .unwrap();
    assert!(p.a.is_active(), "the PONG came back");
}

/// With its sealer handed out, a connection queues frames in clear, and the holder
/// seals them, in order with its own messages: the peer opens every box.
#[test]
fn a_handed_out_sealer_seals_the_connections_frames_between_its_own() {
    let (mut p, _) = curve_pair(true);
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    events(&mut p.a);
    events(&mut p.b);
    let mut sealer = p.a.hand_out_sealer().expect("a session");
    assert!(p.a.hand_out_sealer().is_none(), "handed out once");
    let msg = |s: &'static str| Message::from(vec![Bytes::from_static(s.as_bytes())]);
    let mut out = TxQueue::default();
    sealer
        .seal_behind(&mut out, &[], msg("first").frames(), 1)
        .unwrap();
    // The connection's own: a message and a heartbeat, queued in clear.
    p.a.send(&Message::from(vec![
        Bytes::from_static(b"second"),
        Bytes::from(vec![7u8; 70_000]),
    ]))
    .unwrap();
    p.a.handle_timeout(p.now + Duration::from_millis(150))
        .unwrap();
    let mut clear = TxQueue::default();
    clear.append(p.a.transmit());
    let plain = clear.take_all();
    assert!(plain.windows(6).any(|w| w == b"second"));
    let mut from = TxQueue::default();
    from.push_raw(&plain);
    from.drain_frames(|flags, parts| sealer.seal_into(&mut out, flags, parts))
        .unwrap();
    sealer
        .seal_behind(&mut out, &[], msg("third").frames(), 1)
        .unwrap();
    let mut wire = out.take_all();
    assert!(!wire.windows(6).any(|w| w == b"second"));
    p.b.handle_input(&mut wire, p.now).unwrap();
    let got: Vec<Vec<u8>> = events(&mut p.b)
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => m.frames()[0].to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, [&b"first"[..], b"second", b"third"]);
    // The PING was opened and answered.
    let pong = p.b.transmit().take_all();
    assert!(!pong.is_empty());
}

#[test]
fn a_refused_curve_client_hears_why() {
    let (mut p, _) = curve_pair(false);
    let (ra, rb) = p.drive();
    assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
    assert!(
        matches!(&ra, Err(ZmtpError::PeerError(r)) if r == "authentication failed"),
        "{ra:?}"
    );
    assert!(!p.a.is_active() && !p.b.is_active());
}

/// A DEALER PLAIN client and a ROUTER PLAIN server allowing only "ann"/"pw".
fn plain_pair(user: &str, password: &[u8]) -> Pair {
    let mut a = ConnectionConfig::new(SocketType::Dealer);
    a.mechanism = Mechanism::PlainClient {
        username: user.into(),
        password: password.into(),
    };
    let mut b = ConnectionConfig::new(SocketType::Router);
    b.mechanism = Mechanism::PlainServer {
        authorize: Some(std::sync::Arc::new(|u, p| u == "ann" && p == b"pw")),
    };
    Pair::new(a, b)
}

#[test]
fn plain_lets_a_known_user_in_and_tells_a_stranger_why_not() {
    let mut p = plain_pair("ann", b"pw");
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert!(p.a.is_active() && p.b.is_active() && !p.a.is_encrypted());
    let ev = events(&mut p.b);
    let [Event::Ready(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(info.user.as_deref(), Some("ann"));
    let mut q = plain_pair("ann", b"guess");
    let (ra, rb) = q.drive();
    assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
    assert!(matches!(&ra, Err(ZmtpError::PeerError(r)) if r == "authentication failed"));
}

#[test]
fn a_deferred_curve_server_waits_for_the_decision_then_admits_with_an_identity() {
    let (mut p, ck) = curve_pair(true);
    p.b.config.defer_authorization = true;
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    // Stopped after INITIATE: the client has no READY yet.
    assert!(!p.a.is_active() && !p.b.is_active());
    let ev = events(&mut p.b);
    let [Event::Authenticate(creds)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(creds.public_key, Some(ck.public()));
    p.b.authorized(Ok(Some("ann".into())), p.now).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert!(p.a.is_active() && p.b.is_active() && p.b.is_encrypted());
    let ev = events(&mut p.b);
    let [Event::Ready(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (info.public_key, info.user.as_deref()),
        (Some(ck.public()), Some("ann"))
    );
    // Decided once: a second decision is refused.
    assert!(p.b.authorized(Ok(None), p.now).is_err());
}

#[test]
fn a_deferred_refusal_tells_the_client_its_reason() {
    let (mut p, _) = curve_pair(true);
    p.b.config.defer_authorization = true;
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let r = p.b.authorized(Err("key revoked".into()), p.now);
    assert!(
        matches!(&r, Err(ZmtpError::Denied(w)) if w == "key revoked"),
        "{r:?}"
    );
    let (ra, _) = p.drive();
    assert!(
        matches!(&ra, Err(ZmtpError::PeerError(w)) if w == "key revoked"),
        "{ra:?}"
    );
    assert!(p.b.is_closed());
}

#[test]
fn a_deferred_plain_server_asks_with_the_password_and_keeps_the_user_name() {
    let mut p = plain_pair("ann", b"pw");
    p.b.config.defer_authorization = true;
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let ev = events(&mut p.b);
    let [Event::Authenticate(creds)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(creds.username.as_deref(), Some("ann"));
    assert_eq!(creds.password.as_deref(), Some(&b"pw"[..]));
    assert!(!format!("{creds:?}").contains("pw\""), "{creds:?}");
    p.b.authorized(Ok(None), p.now).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let ev = events(&mut p.b);
    let [Event::Ready(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(info.user.as_deref(), Some("ann"));
    // A stranger stops at the allow-list: the application is not asked.
    let mut q = plain_pair("eve", b"pw");
    q.b.config.defer_authorization = true;
    let (_, rb) = q.drive();
    assert!(matches!(rb, Err(ZmtpError::Unauthorized(_))), "{rb:?}");
    assert!(events(&mut q.b).is_empty());
}

#[test]
fn a_client_that_speaks_while_the_server_decides_is_closed() {
    let (mut p, _) = curve_pair(true);
    p.b.config.defer_authorization = true;
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let mut extra = BytesMut::from(&b"\x04\x06\x05HELLO"[..]);
    assert!(p.b.handle_input(&mut extra, p.now).is_err());
    assert!(p.b.is_closed());
}

#[test]
fn a_plain_hello_of_the_wrong_size_is_refused() {
    assert!(plain_hello(b"\x05HELLO").is_err());
    assert!(plain_hello(b"\x05HELLO\x03an").is_err());
    assert!(plain_hello(b"\x05HELLO\x03ann\x02p").is_err());
    assert!(plain_hello(b"\x05HELLO\x03ann\x02pww").is_err());
    assert_eq!(
        plain_hello(b"\x05HELLO\x03ann\x02pw").unwrap(),
        ("ann".to_string(), b"pw".to_vec())
    );
}

#[test]
fn curve_and_null_do_not_talk() {
    let (p, _) = curve_pair(true);
    let mut q = Pair::new(
        ConnectionConfig::new(SocketType::Dealer),
        p.b.config.clone(),
    );
    let (ra, rb) = q.drive();
    assert!(matches!(ra, Err(ZmtpError::MechanismMismatch(_))), "{ra:?}");
    assert!(matches!(rb, Err(ZmtpError::MechanismMismatch(_))), "{rb:?}");
}

/// A DEALER and a ROUTER whose messages are limited to `max` bytes; the ROUTER
/// discards what is over it when `discard`.
fn limited_pair(max: u64, discard: bool, curve: bool) -> Pair {
    let mut p = if curve {
        curve_pair(true).0
    } else {
        Pair::new(
            ConnectionConfig::new(SocketType::Dealer),
            ConnectionConfig::new(SocketType::Router),
        )
    };
    let mut b = p.b.config.clone();
    b.max_message_size = max;
    b.discard_oversize = discard;
    let a = p.a.config.clone();
    p = Pair::new(a, b);
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    events(&mut p.a);
    events(&mut p.b);
    p
}

fn msg(frames: &[&[u8]]) -> Message {
    frames
        .iter()
        .map(|f| Bytes::copy_from_slice(f))
        .collect::<Vec<_>>()
        .into()
}

#[test]
fn a_discarding_connection_reports_a_message_too_large_and_serves_on() {
    let mut p = limited_pair(100, true, false);
    p.a.send(&msg(&[b"", b"header", &[7u8; 500], b"tail"]))
        .unwrap();
    p.a.send(&msg(&[b"", b"next"])).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert_eq!(
        events(&mut p.b),
        [
            Event::TooLarge {
                head: msg(&[b"", b"header"]),
                size: 510,
            },
            Event::Message(msg(&[b"", b"next"])),
        ]
    );
}

#[test]
fn without_discarding_or_over_curve_a_message_too_large_closes() {
    for curve in [false, true] {
        let mut p = limited_pair(100, curve, curve);
        p.a.send(&msg(&[b"", &[7u8; 500]])).unwrap();
        let (_, rb) = p.drive();
        assert!(
            matches!(rb, Err(ZmtpError::TooLarge { .. })),
            "{curve}: {rb:?}"
        );
    }
}

#[test]
fn req_and_rep_handshake_and_exchange() {
    let mut p = Pair::new(
        ConnectionConfig::new(SocketType::Req),
        ConnectionConfig::new(SocketType::Rep),
    );
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert!(p.a.is_active() && p.b.is_active());
    let ev = events(&mut p.b);
    let [Event::Ready(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(info.socket_type, SocketType::Req);
    assert_eq!(info.minor, 1);
    events(&mut p.a);

    let msg: Message = vec![Bytes::new(), Bytes::from_static(b"hello")].into();
    p.a.send(&msg).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    assert_eq!(events(&mut p.b), vec![Event::Message(msg)]);

    // A last frame given as parts (small and large) arrives as one frame, and its
    // wire bytes are those of the frame sent whole.
    let big = Bytes::from(vec![9u8; 5000]);
    let parts = [
        Bytes::from_static(b"\xc5\x13\x88"),
        big.clone(),
        Bytes::from_static(b"!"),
    ];
    let whole: Bytes = parts.concat().into();
    let frames = [
        Bytes::new(),
        parts[0].clone(),
        parts[1].clone(),
        parts[2].clone(),
    ];
    p.a.send_frames(&frames, 3).unwrap();
    let joined = p.a.transmit().take_all();
    p.a.send(&vec![Bytes::new(), whole.clone()].into()).unwrap();
    let plain = p.a.transmit().take_all();
    assert_eq!(joined, plain);
    p.a.send_frames(&frames, 3).unwrap();
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let expect: Message = vec![Bytes::new(), whole].into();
    assert_eq!(events(&mut p.b), vec![Event::Message(expect)]);
}

#[test]
fn wrong_pair_fails_with_error_command() {
    let mut p = Pair::new(
        ConnectionConfig::new(SocketType::Req),
        ConnectionConfig::new(SocketType::Req),
    );
    let (ra, rb) = p.drive();
    assert!(
        matches!(ra, Err(ZmtpError::IncompatibleSocketType { .. })),
        "{ra:?}"
    );
    assert!(
        matches!(rb, Err(ZmtpError::IncompatibleSocketType { .. })),
        "{rb:?}"
    );
    assert!(p.a.is_closed());
}

#[test]
fn libzmq_rep_peer_bytes() {
    // What a libzmq 4.3.5 REP writes: greeting, then READY with Socket-Type only.
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&Greeting::null().encode());
    wire.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REP");
    // Then a reply: delimiter + "World".
    wire.extend_from_slice(b"\x01\x00\x00\x05World");
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Req), Instant::now());
    // Our first bytes are the greeting followed by READY with an empty Identity.
    let out = c.transmit().take_all();
    assert_eq!(&out[..64], &Greeting::null().encode()[..]);
    assert_eq!(
        &out[64..],
        b"\x04\x26\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00"
    );
    // Fed one byte at a time.
    let mut src = BytesMut::new();
    for b in wire.iter() {
        src.extend_from_slice(&[*b]);
        c.handle_input(&mut src, Instant::now()).unwrap();
    }
    assert!(src.is_empty());
    let ev = events(&mut c);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[1],
        Event::Message(vec![Bytes::new(), Bytes::from_static(b"World")].into())
    );
}

#[test]
fn pings_are_answered_with_pong_echoing_context() {
    let mut p = Pair::new(
        ConnectionConfig::new(SocketType::Dealer),
        ConnectionConfig::new(SocketType::Router),
    );
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let mut ping = BytesMut::from(&b"\x04\x09\x04PING\x00\x0a\xab\xcd"[..]);
    p.b.handle_input(&mut ping, p.now).unwrap();
    assert_eq!(&p.b.transmit().take_all()[..], b"\x04\x07\x04PONG\xab\xcd");
    // The peer's TTL (1 s) now applies to us.
    assert_eq!(p.b.poll_timeout(), Some(p.now + Duration::from_secs(1)));
    assert_eq!(
        p.b.handle_timeout(p.now + Duration::from_secs(1)),
        Err(ZmtpError::HeartbeatTimeout)
    );
}

#[test]
fn silent_peer_is_detected_by_heartbeat() {
    let mut cfg = ConnectionConfig::new(SocketType::Dealer);
    cfg.heartbeat = Some(HeartbeatConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        ttl: Duration::ZERO,
    });
    let mut p = Pair::new(cfg, ConnectionConfig::new(SocketType::Router));
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    let t = p.now + Duration::from_millis(100);
    assert_eq!(p.a.poll_timeout(), Some(t));
    p.a.handle_timeout(t).unwrap();
    let ping = p.a.transmit().take_all();
    assert_eq!(&ping[..], b"\x04\x07\x04PING\x00\x00");
    assert_eq!(ping[0] & FLAG_COMMAND, FLAG_COMMAND);
    // The peer answers: alive.
    p.now = t;
    let mut ping = ping;
    p.b.handle_input(&mut ping, t).unwrap();
    let mut pong = p.b.transmit().take_all();
    p.a.handle_input(&mut pong, t).unwrap();
    // From now on the peer is silent: dead 300 ms after the next PING.
    let t2 = t + Duration::from_millis(100);
    p.a.handle_timeout(t2).unwrap();
    p.a.handle_timeout(t2 + Duration::from_millis(100)).unwrap();
    assert_eq!(
        p.a.handle_timeout(t2 + Duration::from_millis(300)),
        Err(ZmtpError::HeartbeatTimeout)
    );
}

#[test]
fn zmtp30_peer_is_not_pinged_by_default() {
    let mut cfg = ConnectionConfig::new(SocketType::Req);
    cfg.heartbeat = Some(HeartbeatConfig::every(Duration::from_millis(100)));
    let now = Instant::now();
    let mut c = Connection::new(cfg, now);
    let mut g = Greeting::null().encode();
    g[11] = 0;
    let mut wire = BytesMut::from(&g[..]);
    wire.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REP");
    c.handle_input(&mut wire, now).unwrap();
    assert!(c.is_active());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn handshake_times_out() {
    let now = Instant::now();
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(30)));
    assert_eq!(c.handle_timeout(now + Duration::from_secs(29)), Ok(()));
    assert_eq!(
        c.handle_timeout(now + Duration::from_secs(30)),
        Err(ZmtpError::HandshakeTimeout)
    );
}

#[test]
fn wrong_mechanism_and_garbage_are_refused() {
    let now = Instant::now();
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
    let mut g = Greeting::null().encode();
    g[12..17].copy_from_slice(b"CURVE");
    let mut wire = BytesMut::from(&g[..]);
    assert!(matches!(
        c.handle_input(&mut wire, now),
        Err(ZmtpError::MechanismMismatch(_))
    ));
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Rep), now);
    let mut wire = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert_eq!(c.handle_input(&mut wire, now), Err(ZmtpError::BadSignature));
}

#[test]
fn oversized_message_fails_the_connection() {
    let mut small = ConnectionConfig::new(SocketType::Rep);
    small.max_message_size = 10;
    let mut p = Pair::new(ConnectionConfig::new(SocketType::Req), small);
    assert_eq!(p.drive(), (Ok(()), Ok(())));
    p.a.send(&vec![Bytes::new(), Bytes::from(vec![0u8; 11])].into())
        .unwrap();
    let (_, rb) = p.drive();
    assert!(matches!(rb, Err(ZmtpError::TooLarge { .. })));
    p.a.send(&Message::from("x")).unwrap_err();
}

#[test]
fn a_message_of_endless_empty_frames_is_refused() {
    let now = Instant::now();
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Router), now);
    let mut wire = BytesMut::from(&Greeting::null().encode()[..]);
    wire.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
    c.handle_input(&mut wire, now).unwrap();
    let mut frames = BytesMut::new();
    for _ in 0..MAX_FRAMES {
        frames.extend_from_slice(&[FLAG_MORE, 0]);
    }
    c.handle_input(&mut frames, now).unwrap();
    let mut one_more = BytesMut::from(&[FLAG_MORE, 0][..]);
    assert!(matches!(
        c.handle_input(&mut one_more, now),
        Err(ZmtpError::Malformed(_))
    ));
}

proptest::proptest! {
    #[test]
    fn any_input_split_anywhere_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        valid_prefix in proptest::prelude::any::<bool>(),
        cut in 1usize..100,
    ) {
        let now = Instant::now();
        let mut c = Connection::new(ConnectionConfig::new(SocketType::Router), now);
        let mut wire = Vec::new();
        if valid_prefix {
            wire.extend_from_slice(&Greeting::null().encode());
            wire.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
        }
        wire.extend_from_slice(&bytes);
        let mut src = BytesMut::new();
        for piece in wire.chunks(cut) {
            src.extend_from_slice(piece);
            if c.handle_input(&mut src, now).is_err() { break; }
        }
        while c.poll_event().is_some() {}
    }
}
