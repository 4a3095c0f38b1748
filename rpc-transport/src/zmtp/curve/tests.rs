//! Handshakes and boxes end to end, against each other and against libzmq's bytes.

use bytes::Bytes;
use crypto_box::SalsaBox;

use super::*;
use crate::zmtp::frame::TxQueue;

/// Runs a whole handshake; returns both sessions and what the server learnt.
fn handshake(client_keys: &KeyPair, server_keys: &KeyPair) -> (Session, Session, Initiated) {
    let mut c = CurveClient::new(client_keys.clone(), server_keys.public());
    let mut s = CurveServer::new(server_keys.clone());
    let hello = c.hello().unwrap();
    assert_eq!(hello.len(), HELLO_LEN);
    let welcome = s.on_hello(&hello).unwrap();
    assert_eq!(welcome.len(), WELCOME_LEN);
    let initiate = c
        .on_welcome(&welcome, b"\x0bSocket-Type\0\0\0\x06DEALER")
        .unwrap();
    assert_eq!(initiate.len(), INITIATE_MIN + 22);
    let init = s.on_initiate(&initiate).unwrap();
    let ready = s.ready(b"\x0bSocket-Type\0\0\0\x06ROUTER").unwrap();
    assert_eq!(ready.len(), READY_MIN + 22);
    assert_eq!(
        &c.on_ready(&ready).unwrap()[..],
        b"\x0bSocket-Type\0\0\0\x06ROUTER"
    );
    (c.into_session().unwrap(), s.into_session().unwrap(), init)
}

/// The MESSAGE boxes (dryoc, on the precomputed key) are the bytes RustCrypto's
/// `crypto_box` makes of the same keys, nonce and frame, at every size around
/// the block and vector boundaries; each opens the other's.
#[test]
fn message_boxes_are_the_bytes_of_crypto_box_both_ways() {
    let ours = crypto_box::SecretKey::generate(&mut OsRng);
    let peer = crypto_box::SecretKey::generate(&mut OsRng);
    let peer_public = peer.public_key();
    let reference = SalsaBox::new(&peer_public, &ours);
    let session = |prefix: &'static [u8; 16]| {
        let key = session_key(peer_public.as_bytes(), &ours).unwrap();
        Session::new(key, 7, 6, prefix, prefix)
    };
    let mut sizes: Vec<usize> = (0..=300).collect();
    for k in [6, 9, 10, 12, 14, 16, 20] {
        let b = 1usize << k;
        sizes.extend([b - 1, b, b + 1, b + 63]);
    }
    for size in sizes {
        let frame: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
        let mut s = session(b"CurveZMQMESSAGEC");
        let sealed = s.seal(FLAG_MORE, &[&frame]).unwrap();
        let mut expect = BytesMut::new();
        let n = nonce(b"CurveZMQMESSAGEC", &7u64.to_be_bytes());
        seal_into(&reference, &n, &[&[FLAG_MORE], &frame], &mut expect).unwrap();
        assert_eq!(&sealed[16..], &expect[..], "{size} B");
        // The reference opens ours; ours opens the reference's.
        let opened = open_copy(&reference, &n, &sealed[16..]).unwrap();
        assert_eq!(&opened[1..], &frame[..], "{size} B");
        let mut r = session(b"CurveZMQMESSAGEC");
        let (flags, got) = r.open(sealed).unwrap();
        assert_eq!((flags, &got[..]), (FLAG_MORE, &frame[..]), "{size} B");
    }
}

#[test]
fn a_handshake_authenticates_the_client_and_messages_travel_both_ways() {
    let (ck, sk) = (KeyPair::generate(), KeyPair::generate());
    let (mut c, mut s, init) = handshake(&ck, &sk);
    assert_eq!(init.client, ck.public());
    assert_eq!(&init.metadata[..], b"\x0bSocket-Type\0\0\0\x06DEALER");
    for (i, frame) in [&b""[..], b"hello", &[7u8; 100_000]].iter().enumerate() {
        let flags = if i % 2 == 0 { FLAG_MORE } else { 0 };
        let msg = c.seal(flags, &[frame]).unwrap();
        assert_eq!(msg.len(), MESSAGE_MIN + frame.len());
        assert_eq!(s.open(msg).unwrap(), (flags, Bytes::copy_from_slice(frame)));
        let back = s
            .seal(
                FLAG_COMMAND,
                &[&frame[..frame.len() / 2], &frame[frame.len() / 2..]],
            )
            .unwrap();
        assert_eq!(
            c.open(back).unwrap(),
            (FLAG_COMMAND, Bytes::copy_from_slice(frame))
        );
    }
}

/// A message sealed into a write queue (small boxes where they lie in its buffer,
/// large ones in their own, a joined frame of few parts or many) opens frame by
/// frame, in order, on the peer's session.
#[test]
fn a_message_sealed_into_the_queue_opens_frame_by_frame() {
    let (mut c, mut s, _) = handshake(&KeyPair::generate(), &KeyPair::generate());
    let mut sealer = c.hand_out_sealer().unwrap();
    let limit = crate::zmtp::frame::COPY_THRESHOLD - MESSAGE_MIN;
    let sized = |n: usize| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>());
    let envelope = [Bytes::from_static(b"id"), Bytes::new()];
    let singles = [sized(1), sized(limit), sized(limit + 1), sized(70_000)];
    for parts in [2, 6] {
        let joined: Vec<Bytes> = (0..parts).map(|k| sized(10 + k * limit / 3)).collect();
        let frames: Vec<Bytes> = singles.iter().chain(&joined).cloned().collect();
        let mut tx = TxQueue::new();
        sealer
            .seal_behind(&mut tx, &envelope, &frames, parts)
            .unwrap();
        let mut wire = tx.take_all();
        let mut decoder = crate::zmtp::frame::FrameDecoder::new(u64::MAX);
        let mut opened = Vec::new();
        while let Some(frame) = decoder.decode_mut(&mut wire, 0).unwrap() {
            let crate::zmtp::frame::Frame::Data { more: false, body } = frame else {
                panic!("a box travels in a plain message frame");
            };
            opened.push(s.open(body).unwrap());
        }
        let want: Vec<Bytes> = envelope
            .iter()
            .chain(&singles)
            .cloned()
            .chain([joined.concat().into()])
            .collect();
        assert_eq!(opened.len(), want.len());
        for (k, ((flags, got), frame)) in opened.iter().zip(&want).enumerate() {
            let last = k + 1 == want.len();
            assert_eq!(*flags, if last { 0 } else { FLAG_MORE }, "frame {k}");
            assert_eq!(got, frame, "frame {k}");
        }
    }
}

#[test]
fn a_replayed_reordered_or_corrupted_message_is_refused() {
    let (mut c, mut s, _) = handshake(&KeyPair::generate(), &KeyPair::generate());
    let first = c.seal(0, &[b"one"]).unwrap();
    let second = c.seal(0, &[b"two"]).unwrap();
    // Out of order: the later nonce first, then the earlier one.
    assert!(s.open(second.clone()).is_ok());
    assert_eq!(s.open(first), Err(ZmtpError::Curve("a nonce did not rise")));
    // Replayed.
    assert_eq!(
        s.open(second),
        Err(ZmtpError::Curve("a nonce did not rise"))
    );
    // A flipped bit anywhere in the box.
    let mut bent = c.seal(0, &[b"three"]).unwrap();
    let last = bent.len() - 1;
    bent[last] ^= 1;
    assert_eq!(s.open(bent), Err(ZmtpError::Curve("a box did not open")));
    // The right nonce still opens after a refused one (nothing was recorded).
    assert!(s.open(c.seal(0, &[b"four"]).unwrap()).is_ok());
    // Too short, wrong name.
    assert!(s.open(BytesMut::from(&b"\x07MESSAGE"[..])).is_err());
    let mut wrong = c.seal(0, &[b"x"]).unwrap();
    wrong[1] = b'N';
    assert!(s.open(wrong).is_err());
}

#[test]
fn a_client_with_another_server_key_is_refused_at_hello() {
    let server = KeyPair::generate();
    let mut c = CurveClient::new(KeyPair::generate(), KeyPair::generate().public());
    let mut s = CurveServer::new(server);
    let hello = c.hello().unwrap();
    assert!(
        matches!(s.on_hello(&hello), Err(ZmtpError::Curve(m)) if m.contains("another server key"))
    );
}

#[test]
fn an_impostor_server_is_found_at_welcome() {
    let real = KeyPair::generate();
    let mut c = CurveClient::new(KeyPair::generate(), real.public());
    c.hello().unwrap();
    // Without the real server's secret key, no WELCOME opens.
    let mut fake = vec![0u8; WELCOME_LEN];
    fake[..8].copy_from_slice(WELCOME);
    let e = c.on_welcome(&fake, b"").unwrap_err();
    assert!(matches!(e, ZmtpError::Curve(m) if m.contains("wrong server key")));
}

#[test]
fn bad_sizes_and_order_are_refused_before_anything_is_opened() {
    let sk = KeyPair::generate();
    let mut s = CurveServer::new(sk.clone());
    assert!(s.on_hello(&[0u8; 199]).is_err());
    assert!(s.on_hello(&[0u8; 201]).is_err());
    assert!(s.on_initiate(&[0u8; 300]).is_err(), "INITIATE before HELLO");
    let mut c = CurveClient::new(KeyPair::generate(), sk.public());
    assert!(c.on_ready(&[0u8; 40]).is_err(), "READY before WELCOME");
    let hello = c.hello().unwrap();
    assert!(c.hello().is_err(), "HELLO twice");
    let welcome = s.on_hello(&hello).unwrap();
    assert!(s.on_hello(&hello).is_err(), "HELLO twice");
    assert!(c.on_welcome(&welcome[..167], b"").is_err());
    let initiate = c.on_welcome(&welcome, b"").unwrap();
    assert!(s.on_initiate(&initiate[..256]).is_err());
    assert!(CurveServer::new(sk).into_session().is_err());
}

#[test]
fn a_cookie_or_vouch_that_was_tampered_with_is_refused() {
    let (ck, sk) = (KeyPair::generate(), KeyPair::generate());
    for at in [9 + 20, 9 + COOKIE_LEN + 8 + 40, INITIATE_MIN - 1] {
        let mut c = CurveClient::new(ck.clone(), sk.public());
        let mut s = CurveServer::new(sk.clone());
        let welcome = s.on_hello(&c.hello().unwrap()).unwrap();
        let mut initiate = c.on_welcome(&welcome, b"").unwrap().to_vec();
        initiate[at] ^= 0x40;
        assert!(s.on_initiate(&initiate).is_err(), "byte {at} changed");
    }
    // A cookie opens once: a replayed INITIATE on the same connection is refused.
    let mut c = CurveClient::new(ck, sk.public());
    let mut s = CurveServer::new(sk);
    let welcome = s.on_hello(&c.hello().unwrap()).unwrap();
    let initiate = c.on_welcome(&welcome, b"").unwrap();
    assert!(s.on_initiate(&initiate).is_ok());
    assert!(s.on_initiate(&initiate).is_err());
}

#[test]
fn keys_read_and_print_as_z85() {
    let pair = KeyPair::generate();
    let text = pair.public().to_z85();
    assert_eq!(text.len(), 40);
    assert_eq!(text.parse::<PublicKey>().unwrap(), pair.public());
    let again = KeyPair::from_secret_z85(&pair.secret_z85()).unwrap();
    assert_eq!(again.public(), pair.public());
    assert_eq!("Hello".parse::<PublicKey>(), Err(KeyError::Length(4)));
    assert!(format!("{pair:?}").contains(&text));
    assert!(
        !format!("{pair:?}").contains(&pair.secret_z85()),
        "no secret in Debug"
    );
}
