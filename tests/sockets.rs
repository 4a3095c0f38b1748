//! Our sockets against each other: transports, endpoints, reconnects, lock-step rules,
//! cancel safety.

use std::time::Duration;

use bytes::Bytes;
use zmtp_rpc::transport::socket::SplitMix64;
use zmtp_rpc::transport::{
    DealerSocket, Message, RepSocket, ReqSocket, RouterSocket, SocketError, SocketOptions,
};

const T: Duration = Duration::from_secs(10);

async fn echo_rep(mut rep: RepSocket) {
    while let Ok(m) = rep.recv().await {
        if rep.send(m).await.is_err() {
            return;
        }
    }
}

async fn round_trip(req: &mut ReqSocket, body: &str) -> String {
    req.send(body).await.unwrap();
    let r = tokio::time::timeout(T, req.recv())
        .await
        .expect("reply")
        .unwrap();
    String::from_utf8(r.frames()[0].to_vec()).unwrap()
}

#[tokio::test]
async fn req_rep_over_inproc_ipc_and_tcp() {
    let dir = std::env::temp_dir().join(format!("zmtp-rpc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ipc = format!("ipc://{}/rep.sock", dir.display());
    let rep = RepSocket::new();
    rep.bind("inproc://sockets-test").await.unwrap();
    rep.bind(&ipc).await.unwrap();
    let tcp = rep.bind("tcp://127.0.0.1:0").await.unwrap();
    assert_ne!(tcp.port(), Some(0));
    tokio::spawn(echo_rep(rep));
    for ep in [
        "inproc://sockets-test".to_string(),
        ipc.clone(),
        tcp.to_string(),
    ] {
        let mut req = ReqSocket::new();
        req.connect(&ep).await.unwrap();
        assert_eq!(round_trip(&mut req, &ep).await, ep);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn connect_before_bind_keeps_trying() {
    let mut req = ReqSocket::with_options(
        SocketOptions::default().reconnect(Duration::from_millis(10), Duration::from_millis(50)),
    );
    req.connect("inproc://late-binder").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rep = RepSocket::new();
    rep.bind("inproc://late-binder").await.unwrap();
    tokio::spawn(echo_rep(rep));
    assert_eq!(round_trip(&mut req, "late").await, "late");
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_on_the_same_port() {
    let rep = RepSocket::new();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let task = tokio::spawn(echo_rep(rep));
    let mut req = ReqSocket::with_options(
        SocketOptions::default().reconnect(Duration::from_millis(10), Duration::from_millis(100)),
    );
    req.connect(&ep).await.unwrap();
    assert_eq!(round_trip(&mut req, "one").await, "one");
    let mut peers = req.watch_peers();
    task.abort();
    let _ = task.await;
    tokio::time::timeout(T, peers.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    let rep = RepSocket::new();
    rep.bind(&ep).await.unwrap();
    tokio::spawn(echo_rep(rep));
    assert_eq!(round_trip(&mut req, "two").await, "two");
}

#[tokio::test]
async fn req_lock_step_and_cancel_safe_recv() {
    let mut rep = RepSocket::new();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut req = ReqSocket::new();
    req.connect(&ep).await.unwrap();
    assert!(matches!(req.recv().await, Err(SocketError::State(_))));
    req.send("q").await.unwrap();
    assert!(matches!(
        req.send("again").await,
        Err(SocketError::State(_))
    ));
    // The recv times out (no reply yet): nothing is lost, state is kept.
    assert!(tokio::time::timeout(Duration::from_millis(50), req.recv())
        .await
        .is_err());
    let got = rep.recv().await.unwrap();
    assert!(matches!(rep.recv().await, Err(SocketError::State(_))));
    rep.send(got).await.unwrap();
    let r = tokio::time::timeout(T, req.recv()).await.unwrap().unwrap();
    assert_eq!(&r.frames()[0][..], b"q");
}

#[tokio::test]
async fn req_recv_fails_when_its_peer_dies_instead_of_hanging() {
    let mut rep = RepSocket::new();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut req = ReqSocket::new();
    req.connect(&ep).await.unwrap();
    req.send("q").await.unwrap();
    let _ = rep.recv().await.unwrap();
    drop(rep);
    let r = tokio::time::timeout(T, req.recv())
        .await
        .expect("recv returns");
    assert!(matches!(r, Err(SocketError::PeerDisconnected)), "{r:?}");
    // Ready to send again.
    let rep = RepSocket::new();
    rep.bind(&ep).await.unwrap();
    tokio::spawn(echo_rep(rep));
    assert_eq!(round_trip(&mut req, "again").await, "again");
}

#[tokio::test]
async fn router_reports_unroutable_and_routes_by_generated_id() {
    let mut router = RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let err = router
        .send(Message::from(vec![
            Bytes::from_static(b"nobody"),
            Bytes::from_static(b"x"),
        ]))
        .await;
    assert!(matches!(err, Err(SocketError::Unroutable(_))), "{err:?}");
    let mut dealers = Vec::new();
    for i in 0..3u8 {
        let mut d = DealerSocket::new();
        d.connect(&ep).await.unwrap();
        d.send(vec![i]).await.unwrap();
        dealers.push(d);
    }
    for _ in 0..3 {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .unwrap()
            .unwrap();
        let rid = m.frames()[0].clone();
        assert_eq!(rid.len(), 5);
        assert_eq!(rid[0], 0, "libzmq-style generated id");
        router
            .send(Message::from(vec![rid, m.frames()[1].clone()]))
            .await
            .unwrap();
    }
    for (i, d) in dealers.iter_mut().enumerate() {
        let m = tokio::time::timeout(T, d.recv()).await.unwrap().unwrap();
        assert_eq!(&m.frames()[0][..], &[i as u8]);
    }
}

#[tokio::test]
async fn dealer_waits_for_a_peer_then_sends() {
    let mut d = DealerSocket::new();
    d.connect("inproc://dealer-waits").await.unwrap();
    let sender = tokio::spawn(async move {
        d.send("queued").await.unwrap();
        d
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !sender.is_finished(),
        "send must wait while no peer is connected"
    );
    let mut r = RouterSocket::new();
    r.bind("inproc://dealer-waits").await.unwrap();
    let _d = tokio::time::timeout(T, sender).await.unwrap().unwrap();
    let m = tokio::time::timeout(T, r.recv()).await.unwrap().unwrap();
    assert_eq!(&m.frames()[1][..], b"queued");
}

#[tokio::test]
async fn unbind_stops_listening_and_disconnect_stops_reconnecting() {
    let rep = RepSocket::new();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    rep.unbind(&ep).unwrap();
    assert!(matches!(rep.unbind(&ep), Err(SocketError::NotFound(_))));
    let port = ep.rsplit(':').next().unwrap();
    let refused = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await;
    assert!(refused.is_err(), "listener still accepting after unbind");

    let d = DealerSocket::new();
    d.connect("tcp://127.0.0.1:1").await.unwrap();
    d.disconnect("tcp://127.0.0.1:1").unwrap();
    assert!(matches!(
        d.disconnect("tcp://127.0.0.1:1"),
        Err(SocketError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_full_receive_queue_resumes_reading_once_the_program_takes_messages() {
    // A receive queue of one message: the echoes arrive together, the second fills
    // it and the rest wait in the connection (which stops reading) until the program
    // takes one. Each take must let the connection go on.
    const N: usize = 200;
    let mut router = RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut dealer = DealerSocket::with_options(SocketOptions {
        recv_hwm: 1,
        ..SocketOptions::default()
    });
    dealer.connect(&ep.to_string()).await.unwrap();
    for i in 0..N {
        dealer.send(format!("m{i}").as_str()).await.unwrap();
    }
    for _ in 0..N {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .expect("request")
            .unwrap();
        router.send(m).await.unwrap();
    }
    for i in 0..N {
        let m = tokio::time::timeout(T, dealer.recv())
            .await
            .unwrap_or_else(|_| panic!("echo {i} of {N} never came"))
            .unwrap();
        assert_eq!(&m.frames()[0][..], format!("m{i}").as_bytes());
    }
}

#[tokio::test]
async fn connections_waiting_for_room_in_one_receive_queue_all_get_through() {
    // Three peers write to a ROUTER whose receive queue holds one message: each
    // connection waits its turn for room, and every message arrives.
    const PEERS: usize = 3;
    const EACH: usize = 100;
    let mut router = RouterSocket::with_options(SocketOptions {
        recv_hwm: 1,
        ..SocketOptions::default()
    });
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut dealers = Vec::new();
    for p in 0..PEERS {
        let mut d = DealerSocket::new();
        d.connect(&ep).await.unwrap();
        for i in 0..EACH {
            d.send(format!("{p}:{i}").as_str()).await.unwrap();
        }
        dealers.push(d);
    }
    let mut next = [0usize; PEERS];
    for n in 0..PEERS * EACH {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .unwrap_or_else(|_| panic!("message {n} of {} never came", PEERS * EACH))
            .unwrap();
        let body = String::from_utf8(m.frames()[1].to_vec()).unwrap();
        let (p, i) = body.split_once(':').unwrap();
        let p: usize = p.parse().unwrap();
        // Each peer's messages arrive in the order it sent them.
        assert_eq!(i.parse::<usize>().unwrap(), next[p], "from peer {p}");
        next[p] += 1;
    }
    assert_eq!(next, [EACH; PEERS]);
}

#[tokio::test]
async fn a_dealer_sends_past_a_peer_that_stopped_reading() {
    // Two peers; one stops reading (its receive queue of one is full and nobody takes
    // from it), so its connection backs up. Sends go on to the other peer, as with
    // libzmq, instead of waiting for the stuck one.
    const N: usize = 600;
    const SIZE: usize = 64 * 1024;
    let stuck = RouterSocket::with_options(SocketOptions {
        recv_hwm: 1,
        ..SocketOptions::default()
    });
    let stuck_ep = stuck.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut live = RouterSocket::new();
    let live_ep = live.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut dealer = DealerSocket::with_options(SocketOptions {
        send_hwm: 1,
        ..SocketOptions::default()
    });
    dealer.connect(&stuck_ep).await.unwrap();
    dealer.connect(&live_ep).await.unwrap();
    let mut peers = dealer.watch_peers();
    tokio::time::timeout(T, peers.wait_for(|n| *n == 2))
        .await
        .expect("both peers connect")
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < N / 2 {
            live.recv().await.unwrap();
            got += 1;
        }
        live // still connected: the rest waits in its queue
    });
    let body = Bytes::from(vec![7u8; SIZE]);
    tokio::time::timeout(T, async {
        for _ in 0..N {
            dealer.send(body.clone()).await.unwrap();
        }
    })
    .await
    .expect("every send completes although one peer stopped reading");
    // The stuck peer took what its buffers hold (a few MiB); the rest went on.
    let live = tokio::time::timeout(T, reader)
        .await
        .expect("the live peer received at least half")
        .unwrap();
    drop((stuck, live));
}

#[tokio::test]
async fn a_router_without_mandatory_drops_what_a_stuck_peer_has_no_room_for() {
    // The peer stops reading (its receive queue of one is full and nobody takes from
    // it). Without `router_mandatory` the ROUTER drops what does not fit, as libzmq
    // does, so one stuck peer cannot hold up a server loop; a peer still reading is
    // served beside it.
    const N: usize = 600;
    const SIZE: usize = 64 * 1024;
    let mut router = RouterSocket::with_options(SocketOptions {
        router_mandatory: false,
        send_hwm: 1,
        ..SocketOptions::default()
    });
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let opts = SocketOptions {
        recv_hwm: 1,
        ..SocketOptions::default()
    };
    let mut stuck = DealerSocket::with_options(opts.clone());
    stuck.connect(&ep).await.unwrap();
    stuck.send("stuck").await.unwrap();
    let mut live = DealerSocket::new();
    live.connect(&ep).await.unwrap();
    live.send("live").await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .unwrap()
            .unwrap();
        ids.insert(m.frames()[1].clone(), m.frames()[0].clone());
    }
    let (stuck_id, live_id) = (ids[&b"stuck"[..]].clone(), ids[&b"live"[..]].clone());
    let body = Bytes::from(vec![7u8; SIZE]);
    tokio::time::timeout(T, async {
        for _ in 0..N {
            let m = Message::from(vec![stuck_id.clone(), body.clone()]);
            router.send(m).await.unwrap();
        }
    })
    .await
    .expect("sends to a stuck peer do not wait");
    router
        .send(Message::from(vec![live_id, Bytes::from_static(b"hello")]))
        .await
        .unwrap();
    let m = tokio::time::timeout(T, live.recv()).await.unwrap().unwrap();
    assert_eq!(&m.frames()[0][..], b"hello");
}

#[tokio::test]
async fn a_burst_of_large_messages_queued_at_once_is_sent_in_full() {
    // 600 messages of 64 KiB queued before the connection's task runs: it takes a
    // batch, writes it, and must come back for the rest by itself (nothing arrives
    // from the peer to wake it).
    const N: usize = 600;
    const SIZE: usize = 64 * 1024;
    let mut router = RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut dealer = DealerSocket::new();
    dealer.connect(&ep).await.unwrap();
    let mut peers = dealer.watch_peers();
    tokio::time::timeout(T, peers.wait_for(|n| *n == 1))
        .await
        .expect("connected")
        .unwrap();
    let body = Bytes::from(vec![7u8; SIZE]);
    for _ in 0..N {
        dealer.send(body.clone()).await.unwrap();
    }
    for i in 0..N {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {N} never came"))
            .unwrap();
        assert_eq!(m.frames()[1].len(), SIZE);
    }
}

#[tokio::test]
async fn a_rep_server_goes_on_serving_beside_a_peer_that_never_reads_its_replies() {
    // A DEALER pipelines requests to a REP and never reads the replies (its receive
    // queue of one fills, then its connection backs up). The REP drops what that
    // peer has no room for, as libzmq does, and a REQ beside it is served.
    const N: usize = 600;
    const SIZE: usize = 64 * 1024;
    let rep = RepSocket::with_options(SocketOptions {
        send_hwm: 1,
        ..SocketOptions::default()
    });
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let (answered_tx, mut answered) = tokio::sync::watch::channel(0usize);
    let mut rep = rep;
    tokio::spawn(async move {
        while let Ok(m) = rep.recv().await {
            rep.send(m).await.unwrap();
            answered_tx.send_modify(|n| *n += 1);
        }
    });
    let mut stuck = DealerSocket::with_options(SocketOptions {
        recv_hwm: 1,
        ..SocketOptions::default()
    });
    stuck.connect(&ep).await.unwrap();
    let body = Bytes::from(vec![7u8; SIZE]);
    for _ in 0..N {
        let m = Message::from(vec![Bytes::new(), body.clone()]);
        tokio::time::timeout(T, stuck.send(m))
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::timeout(T, answered.wait_for(|n| *n == N))
        .await
        .expect("the REP answers every request, without waiting for room")
        .unwrap();
    let mut req = ReqSocket::new();
    req.connect(&ep).await.unwrap();
    assert_eq!(round_trip(&mut req, "still there?").await, "still there?");
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_under_small_high_water_marks_arrives_whole_and_in_order() {
    // Three DEALERs send messages of 0 B to 400 KiB (some frames past the 256 KiB
    // write bound) through queues of two messages to a ROUTER that echoes them, each
    // reading its echoes between its sends. Every echo must come back, whole, in the
    // order sent: no connection may stall at any of the queues' bounds.
    const PEERS: u64 = 3;
    const EACH: u64 = 400;
    let small = SocketOptions {
        send_hwm: 2,
        recv_hwm: 2,
        ..SocketOptions::default()
    };
    let mut router = RouterSocket::with_options(small.clone());
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    tokio::spawn(async move {
        while let Ok(m) = router.recv().await {
            router.send(m).await.unwrap();
        }
    });
    let mut peers = Vec::new();
    for p in 0..PEERS {
        let mut d = DealerSocket::with_options(small.clone());
        d.connect(&ep).await.unwrap();
        peers.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(0x5eed + p);
            let sizes: Vec<usize> = (0..EACH)
                .map(|_| match rng.below(4) {
                    0 => rng.below(64) as usize,
                    1 => rng.below(8 * 1024) as usize,
                    2 => rng.below(64 * 1024) as usize,
                    _ => rng.below(400 * 1024) as usize,
                })
                .collect();
            let body = |i: usize| Bytes::from(vec![(i % 251) as u8; sizes[i]]);
            let mut sent = 0;
            let mut got = 0;
            // One socket sends and reads: each turn gives sending and reading a
            // moment (both are cancel-safe), so neither side waits on the other.
            let moment = Duration::from_millis(1);
            while got < sizes.len() {
                if sent < sizes.len() {
                    if let Ok(r) = tokio::time::timeout(moment, d.send(body(sent))).await {
                        r.unwrap();
                        sent += 1;
                    }
                }
                if let Ok(m) = tokio::time::timeout(moment, d.recv()).await {
                    let m = m.unwrap();
                    assert_eq!(m.frames()[0], body(got), "peer {p}, echo {got}");
                    got += 1;
                }
            }
        }));
    }
    for (p, h) in peers.into_iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .unwrap_or_else(|_| panic!("peer {p} stalled"))
            .unwrap();
    }
}

#[tokio::test]
async fn past_the_connection_limit_a_connection_is_closed_until_a_place_frees_up() {
    use tokio::io::AsyncReadExt;
    // A REP that holds two connections: a third is closed at once, before any
    // greeting; once one of the two goes away, a new peer is served.
    let rep = RepSocket::with_options(SocketOptions::default().max_connections(2));
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
    let port = ep.port().unwrap();
    let ep = ep.to_string();
    tokio::spawn(echo_rep(rep));
    let mut a = ReqSocket::new();
    a.connect(&ep).await.unwrap();
    let mut b = ReqSocket::new();
    b.connect(&ep).await.unwrap();
    assert_eq!(round_trip(&mut a, "a").await, "a");
    assert_eq!(round_trip(&mut b, "b").await, "b");
    // A served connection would get the REP's greeting; this one gets nothing.
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, third.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection was greeted: {:?}", &buf[..n]);
    drop(a);
    let mut c = ReqSocket::new();
    c.connect(&ep).await.unwrap();
    assert_eq!(round_trip(&mut c, "c").await, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_when_a_slow_reader_makes_the_sender_queue() {
    // The reader pauses now and then, so the sender's writes stall and its messages
    // queue (some written by the sending task, some by the connection's): their order
    // must hold whichever way each went.
    const N: u32 = 2000;
    let mut router = RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut dealer = DealerSocket::new();
    dealer.connect(&ep).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut rng = SplitMix64::new(0x0de7);
        for i in 0..N {
            let mut body = vec![0u8; 4 + rng.below(96 * 1024) as usize];
            body[..4].copy_from_slice(&i.to_be_bytes());
            dealer.send(Bytes::from(body)).await.unwrap();
            if rng.below(8) == 0 {
                tokio::task::yield_now().await;
            }
        }
        dealer
    });
    let mut rng = SplitMix64::new(0x5e0d);
    for i in 0..N {
        let m = tokio::time::timeout(T, router.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} never came"))
            .unwrap();
        let got = u32::from_be_bytes(m.frames()[1][..4].try_into().unwrap());
        assert_eq!(got, i, "out of order");
        if rng.below(50) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(sender.await.unwrap());
}
