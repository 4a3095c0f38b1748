//! Our sockets against libzmq 4.3.5 (pyzmq) in both directions: every valid
//! request-reply pair, message sizes, heartbeats, REQ_CORRELATE/RELAXED, round-robin,
//! fair queueing and identities.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{frames, PyPeer};
use zmtp_rpc::transport::zmtp::HeartbeatConfig;
use zmtp_rpc::transport::{
    DealerSocket, Message, RepSocket, ReqSocket, RouterSocket, SocketOptions,
};

const T: Duration = Duration::from_secs(10);

/// One of our sockets, whatever its type.
enum Ours {
    Req(ReqSocket),
    Rep(RepSocket),
    Dealer(DealerSocket),
    Router(RouterSocket),
}

impl Ours {
    fn new(kind: &str, opts: SocketOptions) -> Ours {
        match kind {
            "REQ" => Ours::Req(ReqSocket::with_options(opts)),
            "REP" => Ours::Rep(RepSocket::with_options(opts)),
            "DEALER" => Ours::Dealer(DealerSocket::with_options(opts)),
            "ROUTER" => Ours::Router(RouterSocket::with_options(opts)),
            _ => unreachable!(),
        }
    }
    async fn bind(&self, ep: &str) -> String {
        match self {
            Ours::Req(s) => s.bind(ep).await,
            Ours::Rep(s) => s.bind(ep).await,
            Ours::Dealer(s) => s.bind(ep).await,
            Ours::Router(s) => s.bind(ep).await,
        }
        .unwrap()
        .to_string()
    }
    async fn connect(&self, ep: &str) {
        match self {
            Ours::Req(s) => s.connect(ep).await,
            Ours::Rep(s) => s.connect(ep).await,
            Ours::Dealer(s) => s.connect(ep).await,
            Ours::Router(s) => s.connect(ep).await,
        }
        .unwrap()
    }
    fn peers(&self) -> tokio::sync::watch::Receiver<usize> {
        match self {
            Ours::Req(s) => s.watch_peers(),
            Ours::Rep(s) => s.watch_peers(),
            Ours::Dealer(s) => s.watch_peers(),
            Ours::Router(s) => s.watch_peers(),
        }
    }
    async fn send(&mut self, f: Vec<Bytes>) {
        let m = Message::from(f);
        tokio::time::timeout(T, async {
            match self {
                Ours::Req(s) => s.send(m).await,
                Ours::Rep(s) => s.send(m).await,
                Ours::Dealer(s) => s.send(m).await,
                Ours::Router(s) => s.send(m).await,
            }
        })
        .await
        .expect("send in time")
        .unwrap()
    }
    async fn recv(&mut self) -> Vec<Bytes> {
        tokio::time::timeout(T, async {
            match self {
                Ours::Req(s) => s.recv().await,
                Ours::Rep(s) => s.recv().await,
                Ours::Dealer(s) => s.recv().await,
                Ours::Router(s) => s.recv().await,
            }
        })
        .await
        .expect("recv in time")
        .unwrap()
        .into_frames()
    }
}

/// Either side of an exchange.
enum Side {
    Py(Box<PyPeer>),
    Ours(Ours),
}

impl Side {
    async fn send(&mut self, f: Vec<Bytes>) {
        match self {
            Side::Py(p) => {
                let refs: Vec<&[u8]> = f.iter().map(|b| &b[..]).collect();
                p.send(&refs).await
            }
            Side::Ours(o) => o.send(f).await,
        }
    }
    async fn recv(&mut self) -> Vec<Bytes> {
        match self {
            Side::Py(p) => p.recv(10_000).await.expect("pyzmq received in time"),
            Side::Ours(o) => o.recv().await,
        }
    }
}

async fn wait_peers(o: &Ours, n: usize) {
    let mut w = o.peers();
    tokio::time::timeout(T, w.wait_for(|c| *c >= n))
        .await
        .expect("peers connect in time")
        .unwrap();
}

/// Client `ck` talks to server `sk`; `py_client` says which side is pyzmq; `py_binds`
/// says which side binds.
async fn exchange(ck: &str, sk: &str, py_client: bool, py_binds: bool) {
    let router_router = ck == "ROUTER" && sk == "ROUTER";
    // ROUTER to ROUTER: the server has an identity the client addresses ("srv").
    let ours_opts = if router_router && py_client {
        SocketOptions::default().identity(Bytes::from_static(b"srv"))
    } else {
        SocketOptions::default()
    };
    let py_opts: &[&str] = match (router_router, py_client) {
        (true, false) => &["identity=737276"],
        (true, true) => &["router_mandatory=1"],
        _ => &[],
    };
    let (mut client, mut server);
    let ours = Ours::new(if py_client { sk } else { ck }, ours_opts);
    let mut py = PyPeer::new(if py_client { ck } else { sk }, py_opts).await;
    // The side that is the server binds unless py_binds says pyzmq binds.
    if py_binds {
        let ep = py.bind("tcp://127.0.0.1:*").await;
        ours.connect(&ep).await;
    } else {
        let ep = ours.bind("tcp://127.0.0.1:0").await;
        py.connect(&ep).await;
    }
    if !py_client || ck == "ROUTER" {
        // Our client sends only once a peer is there (a ROUTER needs its routing id).
        wait_peers(&ours, 1).await;
    }
    if py_client {
        client = Side::Py(Box::new(py));
        server = Side::Ours(ours);
    } else {
        client = Side::Ours(ours);
        server = Side::Py(Box::new(py));
    }

    // Request, as the client's type writes it.
    let body = Bytes::from_static(b"Hello");
    let req = match ck {
        "REQ" => vec![body.clone()],
        "DEALER" => vec![Bytes::new(), body.clone()],
        "ROUTER" => vec![Bytes::from_static(b"srv"), Bytes::new(), body.clone()],
        _ => unreachable!(),
    };
    if router_router && py_client {
        // A mandatory pyzmq ROUTER refuses the send until "srv" has shaken hands.
        let Side::Py(p) = &mut client else {
            unreachable!()
        };
        let line = "send 737276 - 48656c6c6f";
        let mut tries = 0;
        while p.cmd(line).await != "ok" {
            tries += 1;
            assert!(tries < 500, "srv never became routable");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        client.send(req).await;
    }
    let got = server.recv().await;
    let reply = match sk {
        "REP" => {
            assert_eq!(got, vec![body.clone()], "{ck}->{sk}");
            vec![Bytes::from_static(b"World")]
        }
        "ROUTER" | "DEALER" => {
            // Everything up to the delimiter is envelope; the body follows it.
            let pos = got.iter().position(|f| f.is_empty()).expect("delimiter");
            assert_eq!(
                &got[pos + 1..],
                std::slice::from_ref(&body),
                "{ck}->{sk}: {got:?}"
            );
            let mut r = got[..=pos].to_vec();
            r.push(Bytes::from_static(b"World"));
            r
        }
        _ => unreachable!(),
    };
    server.send(reply).await;
    let got = client.recv().await;
    assert_eq!(
        got.last().unwrap(),
        &Bytes::from_static(b"World"),
        "{ck}->{sk}"
    );
    match ck {
        "REQ" => assert_eq!(got.len(), 1),
        "DEALER" => assert_eq!(got, frames(&[b"", b"World"])),
        "ROUTER" => assert_eq!(got, frames(&[b"srv", b"", b"World"])),
        _ => unreachable!(),
    }
}

macro_rules! pair_tests {
    ($($name:ident: $ck:literal -> $sk:literal;)*) => {$(
        mod $name {
            use super::exchange;
            #[tokio::test]
            async fn pyzmq_client_ours_binds() { exchange($ck, $sk, true, false).await }
            #[tokio::test]
            async fn pyzmq_client_pyzmq_binds() { exchange($ck, $sk, true, true).await }
            #[tokio::test]
            async fn our_client_ours_binds() { exchange($ck, $sk, false, false).await }
            #[tokio::test]
            async fn our_client_pyzmq_binds() { exchange($ck, $sk, false, true).await }
        }
    )*};
}

pair_tests! {
    req_rep: "REQ" -> "REP";
    req_router: "REQ" -> "ROUTER";
    dealer_rep: "DEALER" -> "REP";
    dealer_router: "DEALER" -> "ROUTER";
    dealer_dealer: "DEALER" -> "DEALER";
    router_router: "ROUTER" -> "ROUTER";
}

fn sized(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn message_sizes_and_empty_frames_both_ways() {
    let opts = SocketOptions::default().max_message_size(32 << 20);
    let mut ours = DealerSocket::with_options(opts);
    let mut py = PyPeer::new("ROUTER", &[]).await;
    let ep = py.bind("tcp://127.0.0.1:*").await;
    ours.connect(&ep).await.unwrap();
    for size in [0usize, 1, 255, 256, 64 * 1024, 8 * 1024 * 1024] {
        let msg = vec![
            Bytes::new(),
            sized(size, 1),
            Bytes::new(),
            sized(size / 2, 2),
        ];
        ours.send(Message::from(msg.clone())).await.unwrap();
        let got = py.recv(20_000).await.expect("pyzmq got it");
        assert_eq!(&got[1..], &msg[..], "size {size} to pyzmq");
        // pyzmq echoes it back (routing id first).
        let refs: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
        py.send(&refs).await;
        let back = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
        assert_eq!(back.frames(), &msg[..], "size {size} from pyzmq");
    }
}

#[tokio::test]
async fn pyzmq_heartbeating_client_stays_connected() {
    let mut ours = RouterSocket::new();
    let ep = ours.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut py = PyPeer::new(
        "DEALER",
        &[
            "heartbeat_ivl=50",
            "heartbeat_timeout=150",
            "heartbeat_ttl=300",
        ],
    )
    .await;
    py.connect(&ep).await;
    py.send(&[b"one"]).await;
    let first = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
    let mut peers = ours.watch_peers();
    peers.borrow_and_update();
    // Twenty PING intervals; we answer each, so libzmq keeps the connection.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !peers.has_changed().unwrap(),
        "connection dropped and remade"
    );
    py.send(&[b"two"]).await;
    let second = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
    assert_eq!(
        first.get(0),
        second.get(0),
        "same connection, same routing id"
    );
    assert_eq!(second.get(1).unwrap(), &Bytes::from_static(b"two"));
}

#[tokio::test]
async fn pyzmq_heartbeating_server_keeps_our_connection() {
    let mut py = PyPeer::new(
        "ROUTER",
        &[
            "heartbeat_ivl=50",
            "heartbeat_timeout=150",
            "heartbeat_ttl=300",
        ],
    )
    .await;
    let ep = py.bind("tcp://127.0.0.1:*").await;
    let mut ours = DealerSocket::new();
    ours.connect(&ep).await.unwrap();
    ours.send("one").await.unwrap();
    let first = py.recv(10_000).await.unwrap();
    let mut peers = ours.watch_peers();
    peers.borrow_and_update();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !peers.has_changed().unwrap(),
        "connection dropped and remade"
    );
    ours.send("two").await.unwrap();
    let second = py.recv(10_000).await.unwrap();
    assert_eq!(first[0], second[0], "same connection, same routing id");
}

#[tokio::test]
async fn silent_pyzmq_peer_is_dropped_by_our_heartbeat_and_rejoins() {
    let mut py = PyPeer::new("ROUTER", &[]).await;
    let ep = py.bind("tcp://127.0.0.1:*").await;
    let opts = SocketOptions::default()
        .heartbeat(HeartbeatConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            ttl: Duration::ZERO,
        })
        .reconnect(Duration::from_millis(50), Duration::from_millis(200));
    let ours = DealerSocket::with_options(opts);
    ours.connect(&ep).await.unwrap();
    let mut peers = ours.watch_peers();
    tokio::time::timeout(T, peers.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    // Frozen: no FIN, no RST, no PONG.
    py.signal("-STOP");
    let t0 = std::time::Instant::now();
    tokio::time::timeout(T, peers.wait_for(|n| *n == 0))
        .await
        .expect("heartbeat drops the frozen peer")
        .unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "detected after {took:?}");
    py.signal("-CONT");
    tokio::time::timeout(T, peers.wait_for(|n| *n == 1))
        .await
        .expect("reconnects after SIGCONT")
        .unwrap();
}

#[tokio::test]
async fn pyzmq_req_correlate_relaxed_against_our_rep() {
    let mut ours = RepSocket::new();
    let ep = ours.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut py = PyPeer::new("REQ", &["req_correlate=1", "req_relaxed=1"]).await;
    py.connect(&ep).await;
    py.send(&[b"first"]).await;
    // Relaxed: a second request without waiting; the first's reply must be discarded.
    py.send(&[b"second"]).await;
    for _ in 0..2 {
        let req = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&req.frames()[0]);
        ours.send(reply).await.unwrap();
    }
    assert_eq!(py.recv(10_000).await.unwrap(), frames(&[b"re:second"]));
    assert_eq!(
        py.recv(300).await,
        None,
        "reply to the first request leaked"
    );
}

#[tokio::test]
async fn pyzmq_req_correlate_against_our_router_shows_request_id() {
    let mut ours = RouterSocket::new();
    let ep = ours.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut py = PyPeer::new("REQ", &["req_correlate=1", "req_relaxed=1"]).await;
    py.connect(&ep).await;
    py.send(&[b"q"]).await;
    let got = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
    // [routing id][4-byte request id][empty][body]
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got.get(1).unwrap().len(), 4);
    assert!(got.get(2).unwrap().is_empty());
    let mut reply = got.clone().into_frames();
    reply[3] = Bytes::from_static(b"a");
    ours.send(Message::from(reply)).await.unwrap();
    assert_eq!(py.recv(10_000).await.unwrap(), frames(&[b"a"]));
}

#[tokio::test]
async fn our_req_round_robins_over_three_pyzmq_reps() {
    let mut ours = ReqSocket::new();
    let mut servers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let mut p = PyPeer::new("REP", &[]).await;
        let ep = p.bind("tcp://127.0.0.1:*").await;
        p.ok(&format!("serve {name}")).await;
        ours.connect(&ep).await.unwrap();
        servers.push(p);
    }
    let mut peers = ours.watch_peers();
    tokio::time::timeout(T, peers.wait_for(|n| *n == 3))
        .await
        .unwrap()
        .unwrap();
    let mut order = Vec::new();
    for i in 0..9 {
        ours.send(format!("r{i}").as_str()).await.unwrap();
        let reply = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
        let text = String::from_utf8(reply.frames()[0].to_vec()).unwrap();
        let (name, body) = text.split_once(':').unwrap();
        assert_eq!(body, format!("r{i}"));
        order.push(name.to_string());
    }
    let mut first3 = order[..3].to_vec();
    first3.sort();
    assert_eq!(first3, ["s1", "s2", "s3"], "{order:?}");
    assert_eq!(order[..3], order[3..6], "{order:?}");
    assert_eq!(order[..3], order[6..9], "{order:?}");
}

#[tokio::test]
async fn our_rep_serves_several_pyzmq_reqs() {
    let mut ours = RepSocket::new();
    let ep = ours.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut p = PyPeer::new("REQ", &[]).await;
        p.connect(&ep).await;
        p.send(&[format!("c{i}").as_bytes()]).await;
        clients.push(p);
    }
    for _ in 0..4 {
        let req = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&req.frames()[0]);
        ours.send(reply).await.unwrap();
    }
    for (i, p) in clients.iter_mut().enumerate() {
        let want = format!("re:c{i}");
        assert_eq!(p.recv(10_000).await.unwrap(), frames(&[want.as_bytes()]));
    }
}

#[tokio::test]
async fn pyzmq_identity_shows_on_our_router_and_ours_on_pyzmq() {
    let mut ours = RouterSocket::new();
    let ep = ours.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let mut py = PyPeer::new("DEALER", &["identity=616c696365"]).await; // "alice"
    py.connect(&ep).await;
    py.send(&[b"hi"]).await;
    let got = tokio::time::timeout(T, ours.recv()).await.unwrap().unwrap();
    assert_eq!(got.frames(), &frames(&[b"alice", b"hi"])[..]);
    ours.send(Message::from(frames(&[b"alice", b"yo"])))
        .await
        .unwrap();
    assert_eq!(py.recv(10_000).await.unwrap(), frames(&[b"yo"]));

    // And the other way: our DEALER's identity on a pyzmq ROUTER.
    let mut pr = PyPeer::new("ROUTER", &[]).await;
    let ep = pr.bind("tcp://127.0.0.1:*").await;
    let mut d =
        DealerSocket::with_options(SocketOptions::default().identity(Bytes::from_static(b"bob")));
    d.connect(&ep).await.unwrap();
    d.send("x").await.unwrap();
    assert_eq!(pr.recv(10_000).await.unwrap(), frames(&[b"bob", b"x"]));
}
