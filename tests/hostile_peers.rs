//! Hostile peers written as raw TCP clients: each gets its connection closed (or, for
//! the slow one, is served), nothing panics, memory stays bounded, and the same socket
//! keeps serving a well-behaved peer connected beside it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zmtp_rpc::transport::zmtp::{Connection, ConnectionConfig, Event, Greeting, SocketType};
use zmtp_rpc::transport::{RepSocket, ReqSocket, SocketOptions};
use zmtp_rpc::Status;

const MAX: usize = 64 * 1024;
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info)
    }));
}

/// Greeting + READY of a well-formed REQ.
fn req_handshake() -> Vec<u8> {
    let mut v = Greeting::null().encode().to_vec();
    v.extend_from_slice(
        b"\x04\x26\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00",
    );
    v
}

/// Reads until the server closes; returns what it sent. Fails after 10 s.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("server closes the connection");
    all
}

/// A server (REP echo task) and a well-behaved client beside the hostile ones.
struct Fixture {
    addr: String,
    client: ReqSocket,
    served: u32,
}

impl Fixture {
    async fn new() -> Fixture {
        let opts = SocketOptions::default()
            .max_message_size(MAX)
            .handshake_timeout(Duration::from_millis(300));
        let mut rep = RepSocket::with_options(opts);
        let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
        tokio::spawn(async move {
            while let Ok(m) = rep.recv().await {
                if rep.send(m).await.is_err() {
                    return;
                }
            }
        });
        let client = ReqSocket::new();
        client.connect(&ep.to_string()).await.unwrap();
        Fixture {
            addr: format!("127.0.0.1:{}", ep.port().unwrap()),
            client,
            served: 0,
        }
    }

    async fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// The well-behaved neighbour still gets answers.
    async fn still_serves(&mut self) {
        self.served += 1;
        let body = format!("ping {}", self.served);
        self.client.send(body.as_str()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), self.client.recv())
            .await
            .expect("neighbour served")
            .unwrap();
        assert_eq!(&r.frames()[0][..], body.as_bytes());
    }
}

fn rss_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn hostile_peers_are_cut_off_and_neighbours_keep_being_served() {
    count_panics();
    let mut f = Fixture::new().await;
    f.still_serves().await;
    let rss_before = rss_kib();

    // Garbage instead of a greeting: closed after the first byte is judged.
    let mut s = f.raw().await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut s).await;
    f.still_serves().await;

    // A wrong mechanism.
    let mut s = f.raw().await;
    let mut g = Greeting::null().encode();
    g[12..17].copy_from_slice(b"CURVE");
    s.write_all(&g).await.unwrap();
    read_until_closed(&mut s).await;
    f.still_serves().await;

    // A wrong socket-type pair (REP to REP): ERROR "invalid socket type", then close.
    let mut s = f.raw().await;
    let mut hs = Greeting::null().encode().to_vec();
    hs.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REP");
    s.write_all(&hs).await.unwrap();
    let got = read_until_closed(&mut s).await;
    let needle = b"\x05ERROR\x13invalid socket type";
    assert!(
        got.windows(needle.len()).any(|w| w == needle),
        "no ERROR command in {got:?}"
    );
    f.still_serves().await;

    // A frame declaring 2^63 bytes, many times over: refused before any allocation.
    for _ in 0..50 {
        let mut s = f.raw().await;
        let mut v = req_handshake();
        v.push(0x02);
        v.extend_from_slice(&(1u64 << 63).to_be_bytes());
        s.write_all(&v).await.unwrap();
        read_until_closed(&mut s).await;
    }
    f.still_serves().await;

    // Exactly the maximum is served; one byte over closes the connection.
    for (len, served) in [(MAX, true), (MAX + 1, false)] {
        let mut s = f.raw().await;
        let mut v = req_handshake();
        v.extend_from_slice(&[0x01, 0x00, 0x02]);
        v.extend_from_slice(&(len as u64).to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len));
        s.write_all(&v).await.unwrap_or(()); // the server may close mid-write
        let got = read_message(&mut s)
            .await
            .is_some_and(|m| m.last().map(Vec::len) == Some(len));
        assert_eq!(got, served, "message of {len} bytes (max {MAX})");
    }
    f.still_serves().await;

    // A connection that opens and sends nothing: freed by the handshake timeout.
    let mut s = f.raw().await;
    let t0 = Instant::now();
    read_until_closed(&mut s).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "closed before the timeout"
    );
    f.still_serves().await;

    // A valid peer sending its bytes one at a time is served.
    let mut s = f.raw().await;
    let mut v = req_handshake();
    v.extend_from_slice(b"\x01\x00\x00\x05hello");
    for b in v {
        s.write_all(&[b]).await.unwrap();
    }
    let reply = read_message(&mut s).await.expect("served");
    assert_eq!(reply, vec![&b""[..], b"hello"]);
    f.still_serves().await;

    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
}

/// Reads with a sans-IO REQ connection until one message arrives (`None` when the
/// server closes first).
async fn read_message(s: &mut TcpStream) -> Option<Vec<Vec<u8>>> {
    let now = std::time::Instant::now;
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Req), now());
    let mut buf = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            c.handle_input(&mut buf, now()).ok()?;
            while let Some(ev) = c.poll_event() {
                if let Event::Message(m) = ev {
                    return Some(m.frames().iter().map(|f| f.to_vec()).collect());
                }
            }
        }
    })
    .await
    .expect("reply or close in time")
}

/// Answers `n` bytes per request: large answers fill a connection's send side fast.
#[zmtp_rpc::rpc_service(name = "fill")]
pub trait Fill {
    async fn fill(&self, n: u64) -> zmtp_rpc::Blob;
}

struct MyFill;
impl Fill for MyFill {
    async fn fill(&self, n: u64) -> zmtp_rpc::Blob {
        zmtp_rpc::Blob::from(vec![7u8; n as usize])
    }
}

/// A request as our client writes it: `[empty][header][args]`, after a DEALER's
/// routing.
fn fill_request(i: u32, n: u64) -> Vec<bytes::Bytes> {
    #[derive(serde::Serialize)]
    struct Args {
        n: u64,
    }
    request(i, "fill.fill", &Args { n })
}

/// `[empty][header][args]` of call number `i` (its request id) to `method`.
fn request(i: u32, method: &'static str, args: &dyn erased::Enc) -> Vec<bytes::Bytes> {
    #[derive(serde::Serialize)]
    struct Header {
        v: u8,
        id: zmtp_rpc::RequestId,
        method: &'static str,
        timeout_ms: u64,
        attempt: u32,
        meta: std::collections::BTreeMap<String, String>,
    }
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_le_bytes());
    let header = Header {
        v: 1,
        id: zmtp_rpc::RequestId(uuid::Uuid::from_bytes(id)),
        method,
        timeout_ms: 60_000,
        attempt: 1,
        meta: Default::default(),
    };
    let enc = |v: &dyn erased::Enc| bytes::Bytes::from(v.enc());
    vec![bytes::Bytes::new(), enc(&header), enc(args)]
}

mod erased {
    /// MessagePack with named fields, as the framework writes it.
    pub trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            zmtp_rpc::__private::codec::encode(self).unwrap()
        }
    }
}

#[tokio::test]
async fn a_peer_that_never_reads_its_answers_is_not_served_without_limit() {
    const REQUESTS: u32 = 2000;
    const ANSWER: u64 = 32 * 1024;
    let server = zmtp_rpc::Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(FillServer::new(MyFill))
        .start()
        .await
        .unwrap();
    let port = server.endpoints()[0].port().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let now = std::time::Instant::now;
    let mut c = Connection::new(ConnectionConfig::new(SocketType::Dealer), now());
    let mut buf = BytesMut::new();
    // Handshake.
    while !c.is_active() {
        let out = c.transmit().take_all();
        s.write_all(&out).await.unwrap();
        s.read_buf(&mut buf).await.unwrap();
        c.handle_input(&mut buf, now()).unwrap();
    }
    // Every request written (64 MiB of answers asked for), none read.
    for i in 0..REQUESTS {
        c.send_frames(&fill_request(i, ANSWER), 0).unwrap();
    }
    let out = c.transmit().take_all();
    s.write_all(&out).await.unwrap();
    // The server stops reading once its answers pile up: the count settles far
    // below what was asked.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.stats().executed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("served at first");
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let done = server.stats().executed;
        if done == last {
            break;
        }
        last = done;
    }
    assert!(
        last < u64::from(REQUESTS) / 2,
        "{last} of {REQUESTS} executed for a peer that reads nothing"
    );
    // Once it reads, it is served in full.
    let mut got = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while got < REQUESTS {
            assert!(s.read_buf(&mut buf).await.unwrap() > 0, "server closed");
            c.handle_input(&mut buf, now()).unwrap();
            while let Some(ev) = c.poll_event() {
                if let Event::Message(m) = ev {
                    assert_eq!(m.frames().len(), 3, "[empty][header][body]");
                    got += 1;
                }
            }
        }
    })
    .await
    .expect("every answer arrives once read");
    assert_eq!(server.stats().executed, u64::from(REQUESTS));
}

/// Repeats what it is given a few times: the handler of the mutated requests below
/// (whatever arguments reach it, its work stays small).
#[zmtp_rpc::rpc_service(name = "words")]
pub trait Words {
    async fn shout(&self, text: String, times: u8) -> String;
}

struct MyWords;
impl Words for MyWords {
    async fn shout(&self, text: String, times: u8) -> String {
        text.to_uppercase().repeat(usize::from(times % 4))
    }
}

#[derive(serde::Serialize)]
struct ShoutArgs<'a> {
    text: &'a str,
    times: u8,
}

/// Deterministic pseudo-random numbers, so that a failure repeats.
struct Rng(zmtp_rpc::transport::socket::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(zmtp_rpc::transport::socket::SplitMix64::new(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.0.next_u64() as u8).collect()
    }
}

/// MessagePack markers that change what follows: nil, the never-used 0xc1, long
/// arrays, maps, bins and strings (whose lengths follow), negative fixints.
const MARKERS: [u8; 14] = [
    0xc0, 0xc1, 0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xff, 0x00,
];

/// One to three random edits of a well-formed request's frames (the envelope's
/// delimiter included): bytes flipped or set to MessagePack markers, frames cut,
/// lengthened, replaced, dropped or added.
fn mutate(rng: &mut Rng, mut frames: Vec<bytes::Bytes>) -> Vec<bytes::Bytes> {
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(frames.len());
        let mut f = frames[i].to_vec();
        match rng.below(7) {
            0 if !f.is_empty() => {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(f.len());
                    f[at] ^= 1 << rng.below(8);
                }
            }
            1 if !f.is_empty() => {
                let at = rng.below(f.len());
                f[at] = MARKERS[rng.below(MARKERS.len())];
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            3 => f.extend(rng.bytes(8)),
            4 => f = rng.bytes(64),
            5 if frames.len() > 1 => {
                frames.remove(i);
                continue;
            }
            _ => {
                let extra = rng.bytes(16);
                frames.insert(rng.below(frames.len() + 1), extra.into());
                continue;
            }
        }
        frames[i] = f.into();
    }
    frames
}

#[tokio::test]
async fn mutated_requests_are_answered_or_dropped_and_the_server_serves_on() {
    const MUTANTS: u32 = 3000;
    const SEED: u64 = 0x5eed_2026_1128;
    count_panics();
    let server = zmtp_rpc::Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(WordsServer::new(MyWords))
        .start()
        .await
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    let mut dealer = zmtp_rpc::transport::DealerSocket::new();
    dealer.connect(&ep).await.unwrap();

    let mut rng = Rng::new(SEED);
    for i in 0..MUTANTS {
        let text = "abc".repeat(rng.below(5));
        let args = ShoutArgs {
            text: &text,
            times: rng.below(8) as u8,
        };
        let frames = mutate(&mut rng, request(i, "words.shout", &args));
        dealer.send(zmtp_rpc::Message::from(frames)).await.unwrap();
    }
    // A well-formed request last: its answer comes after those of every mutant
    // answered in the connection's task (all of them but replays from the reply
    // cache, which go through the connection's queue).
    const LAST: u32 = u32::MAX;
    let args = ShoutArgs {
        text: "end",
        times: 2,
    };
    dealer
        .send(zmtp_rpc::Message::from(request(LAST, "words.shout", &args)))
        .await
        .unwrap();

    #[derive(serde::Deserialize)]
    struct ReplyHeader {
        v: u8,
        id: zmtp_rpc::RequestId,
        status: u8,
    }
    let mut by_status = std::collections::HashMap::<Status, u32>::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = dealer.recv().await.unwrap();
            // `[envelope..][empty][header][body]`: the request's envelope comes back.
            let (envelope, f) = m.frames().split_at(m.len().saturating_sub(2));
            assert!(
                envelope.last().is_some_and(|d| d.is_empty()),
                "no delimiter before the reply in {:?}",
                m.frames()
            );
            let h: ReplyHeader = rmp_serde::from_slice(&f[0]).expect("a reply header");
            assert_eq!(h.v, 1);
            let status = Status::from_code(h.status).expect("a known status");
            if status == Status::Ok {
                let _: String = rmp_serde::from_slice(&f[1]).expect("an OK body is the result");
            }
            if h.id.0.as_bytes()[..4] == LAST.to_le_bytes() {
                assert_eq!(status, Status::Ok);
                let s: String = rmp_serde::from_slice(&f[1]).unwrap();
                assert_eq!(s, "ENDEND");
                return;
            }
            *by_status.entry(status).or_default() += 1;
        }
    })
    .await
    .expect("the well-formed request after the mutants is answered");

    println!("seed {SEED:#x}: answers by status {by_status:?}");
    // Both ways through the server were taken, and most mutants were answered.
    assert!(
        by_status.get(&Status::Ok).is_some_and(|n| *n > 100),
        "{by_status:?}"
    );
    assert!(
        by_status.get(&Status::BadRequest).is_some_and(|n| *n > 100),
        "{by_status:?}"
    );
    let stats = server.stats();
    assert_eq!(
        stats.requests,
        u64::from(MUTANTS) + 1,
        "every message reached the server"
    );
    assert_eq!(stats.panics, 0, "no handler panicked");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
    // And a typed client is served as before.
    let words = WordsClient::connect([ep]).await.unwrap();
    assert_eq!(words.shout("ok".into(), 3).await.unwrap(), "OKOKOK");
}

/// What a hostile server answers to one request.
enum Answer {
    /// The right reply, whole.
    Right,
    /// The right body behind a mutated envelope and header (bytes flipped or set to
    /// MessagePack markers, frames cut, replaced, dropped or added).
    Mutated,
    /// Nothing.
    Silence,
    /// The right reply, twice.
    Twice,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_replies_end_calls_with_the_right_result_or_an_error_by_their_deadline() {
    const CALLERS: u64 = 4;
    const CALLS: u64 = 30;
    const SEED: u64 = 0x5eed_2026_1129;
    const CALL_TIMEOUT: Duration = Duration::from_millis(600);
    count_panics();
    // A ROUTER that answers `words.shout` requests, often badly. The body is never
    // touched: a reply whose header still names the call and says OK carries the
    // right result.
    let mut router = zmtp_rpc::transport::RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    tokio::spawn(async move {
        #[derive(serde::Deserialize)]
        struct Header {
            id: zmtp_rpc::RequestId,
        }
        #[derive(serde::Deserialize)]
        struct Args {
            text: String,
            times: u8,
        }
        #[derive(serde::Serialize)]
        struct ReplyHeader {
            v: u8,
            id: zmtp_rpc::RequestId,
            status: u8,
            message: &'static str,
        }
        let mut rng = Rng::new(SEED);
        while let Ok(m) = router.recv().await {
            // [routing id][envelope...][empty][header][args]
            let f = m.frames();
            let d = f.iter().position(|b| b.is_empty()).unwrap();
            let h: Header = rmp_serde::from_slice(&f[d + 1]).unwrap();
            let a: Args = rmp_serde::from_slice(&f[d + 2]).unwrap();
            let result = a.text.to_uppercase().repeat(usize::from(a.times % 4));
            let header = ReplyHeader {
                v: 1,
                id: h.id,
                status: 0,
                message: "",
            };
            // The request's envelope (without the routing id), then the header.
            let mut head = f[1..=d].to_vec();
            head.push(bytes::Bytes::from(erased::Enc::enc(&header)));
            let body = bytes::Bytes::from(erased::Enc::enc(&result));
            let answer = match rng.below(8) {
                0..=3 => Answer::Right,
                4 | 5 => Answer::Mutated,
                6 => Answer::Silence,
                _ => Answer::Twice,
            };
            let reply = |head: Vec<bytes::Bytes>| {
                let mut frames = vec![f[0].clone()];
                frames.extend(head);
                frames.push(body.clone());
                zmtp_rpc::Message::from(frames)
            };
            let sends = match answer {
                Answer::Right => vec![reply(head)],
                Answer::Mutated => vec![reply(mutate(&mut rng, head))],
                Answer::Silence => vec![],
                Answer::Twice => vec![reply(head.clone()), reply(head)],
            };
            for r in sends {
                // A client that timed out recreates its connection: the old routing
                // id is gone, and the socket (mandatory routing) says so.
                match router.send(r).await {
                    Ok(()) | Err(zmtp_rpc::transport::SocketError::Unroutable(_)) => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
    });

    let client = zmtp_rpc::Client::builder()
        .endpoint(ep)
        .attempt_timeout(Duration::from_millis(100))
        .retries(3)
        .call_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let words = WordsClient::new(client.clone());
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let words = words.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                for i in 0..CALLS {
                    let text = format!("c{c}i{i}");
                    let times = (i % 4) as u8;
                    let t0 = Instant::now();
                    match words.shout(text.clone(), times).await {
                        Ok(s) => {
                            assert_eq!(s, text.to_uppercase().repeat(usize::from(times)));
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                    let took = t0.elapsed();
                    // The deadline, with the 2x margin of wall-clock tests (that
                    // calls end at the deadline itself is tested in paused time).
                    assert!(
                        took < CALL_TIMEOUT * 2,
                        "caller {c}, call {i} took {took:?}"
                    );
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for c in callers {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed += f;
    }
    let stats = client.stats();
    println!("seed {SEED:#x}: {ok} right, {failed} failed; {stats:?}");
    assert_eq!(u64::from(ok + failed), CALLERS * CALLS);
    // Most calls get through (a bad or missing reply costs an attempt, not the call).
    assert!(u64::from(ok) > CALLERS * CALLS / 4, "{ok} right");
    assert!(stats.late_replies > 0, "the second copies were noticed");
    assert!(stats.timeouts > 0, "the silences were noticed");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
}
