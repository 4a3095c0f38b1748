//! How calls use the connections of an endpoint: spread over several, the least
//! loaded taken, a second opened for overlapping bulk requests, pipelined bursts and
//! concurrent callers on one connection all answered.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use support::calc::*;
use support::Hdr;
use zmtp_rpc::{Client, Message, RpcError};

#[tokio::test]
async fn calls_spread_over_the_connections_of_an_endpoint() {
    use std::collections::HashMap;
    use zmtp_rpc::transport::RouterSocket;
    // A plain ROUTER answering every request, counting them per connection.
    let mut router = RouterSocket::new();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let server = tokio::spawn(async move {
        while let Ok(m) = router.recv().await {
            let _ = seen_tx.send(m.frames()[0].clone());
            if router.send(m).await.is_err() {
                return;
            }
        }
    });
    let client = Client::builder()
        .endpoint(ep)
        .connections_per_endpoint(3)
        .connect()
        .await
        .unwrap();
    // Connections come up one by one: send until all three have carried requests.
    let mut per_conn: HashMap<Bytes, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while per_conn.len() < 3 || per_conn.values().any(|n| *n < 5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests did not spread over three connections: {per_conn:?}"
        );
        let reply = client.request(Message::from("ping")).await.unwrap();
        assert_eq!(reply, Message::from("ping"));
        while let Ok(rid) = seen_rx.try_recv() {
            *per_conn.entry(rid).or_default() += 1;
        }
    }
    assert_eq!(per_conn.len(), 3, "{per_conn:?}");
    assert_eq!(client.stats().endpoints.len(), 1, "still one endpoint");
    server.abort();
}

/// A ROUTER that answers every request with itself, reporting each answered request's
/// connection (routing id) on `seen`; once `hold` is set, it keeps the next request
/// unanswered (its connection reported on `held`) until `release`.
struct HoldingRouter {
    ep: String,
    hold: Arc<std::sync::atomic::AtomicBool>,
    seen: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    held: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldingRouter {
    async fn start() -> HoldingRouter {
        use zmtp_rpc::transport::RouterSocket;
        let mut router = RouterSocket::new();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let (held_tx, held) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let (release, mut release_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let hold = hold.clone();
            async move {
                let mut held = None;
                loop {
                    tokio::select! {
                        m = router.recv() => {
                            let Ok(m) = m else { return };
                            let rid = m.frames()[0].clone();
                            if held.is_none() && hold.load(Ordering::SeqCst) {
                                let _ = held_tx.send(rid);
                                held = Some(m);
                                continue;
                            }
                            let _ = seen_tx.send(rid);
                            if router.send(m).await.is_err() {
                                return;
                            }
                        }
                        _ = &mut release_rx, if held.is_some() => {
                            let m = held.take().unwrap();
                            if router.send(m).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        HoldingRouter {
            ep,
            hold,
            seen,
            held,
            release: Some(release),
            task,
        }
    }

    /// Starts `request` through `client` with the router holding it; returns the call
    /// and the connection it is held on.
    async fn hold_one(
        &mut self,
        client: &Client,
        request: Message,
    ) -> (tokio::task::JoinHandle<Result<Message, RpcError>>, Bytes) {
        self.hold.store(true, Ordering::SeqCst);
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.request(request).await }
        });
        (waiting, self.held.recv().await.unwrap())
    }

    /// Answers the held request.
    fn release(&mut self) {
        self.release.take().unwrap().send(()).unwrap();
    }
}

/// A client of one endpoint that waits long for its replies.
async fn patient_client(ep: &str, connections: usize, bulk: usize) -> Client {
    Client::builder()
        .endpoint(ep)
        .connections_per_endpoint(connections)
        .bulk_connections(bulk)
        .call_timeout(Duration::from_secs(60))
        .attempt_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_call_takes_the_connection_with_the_fewest_unanswered_requests() {
    use std::collections::HashSet;
    // Two connections to a ROUTER that, once told to, keeps the next request
    // unanswered. Every call made while it waits must take the other connection
    // (round robin alone sent every other one behind it: a large reply there would
    // hold it up, and one connection would carry traffic both ways).
    let mut r = HoldingRouter::start().await;
    let client = patient_client(&r.ep, 2, 2).await;
    // Both connections up: calls until each has carried one.
    let mut conns = HashSet::new();
    while conns.len() < 2 {
        client.request(Message::from("ping")).await.unwrap();
        conns.insert(r.seen.recv().await.unwrap());
    }
    let (waiting, busy) = r.hold_one(&client, Message::from("held")).await;
    for _ in 0..6 {
        let reply = client.request(Message::from("ping")).await.unwrap();
        assert_eq!(reply, Message::from("ping"));
        let conn = r.seen.recv().await.unwrap();
        assert_ne!(conn, busy, "a call went behind the unanswered one");
    }
    r.release();
    assert_eq!(waiting.await.unwrap().unwrap(), Message::from("held"));
    r.task.abort();
}

#[tokio::test]
async fn overlapping_bulk_requests_open_a_second_connection() {
    let bulk = || Message::from(vec![7u8; 100 * 1024]);
    let mut r = HoldingRouter::start().await;
    let client = patient_client(&r.ep, 1, 2).await;
    // Alone, a bulk request opens nothing.
    assert_eq!(client.request(bulk()).await.unwrap(), bulk());
    let first = r.seen.recv().await.unwrap();
    assert_eq!(client.stats().endpoints[0].connections, 1);
    let (waiting, busy) = r.hold_one(&client, bulk()).await;
    assert_eq!(busy, first);
    // Another one while that one is unanswered: a second connection.
    assert_eq!(client.request(bulk()).await.unwrap(), bulk());
    assert_eq!(client.stats().endpoints[0].connections, 2);
    // Once it is up, calls take it (the first one holds an unanswered request); more
    // overlapping bulk requests open no third.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request came on a second connection"
        );
        assert_eq!(client.request(bulk()).await.unwrap(), bulk());
        if r.seen.recv().await.unwrap() != busy {
            break;
        }
    }
    assert_eq!(client.stats().endpoints[0].connections, 2);
    r.release();
    assert_eq!(waiting.await.unwrap().unwrap(), bulk());
    r.task.abort();
}

#[tokio::test]
async fn small_requests_or_growth_turned_off_keep_one_connection() {
    // (request size, bulk_connections)
    for (size, bulk) in [(1024, 2), (100 * 1024, 1)] {
        let request = || Message::from(vec![1u8; size]);
        let mut r = HoldingRouter::start().await;
        let client = patient_client(&r.ep, 1, bulk).await;
        let (waiting, _) = r.hold_one(&client, request()).await;
        for _ in 0..3 {
            assert_eq!(client.request(request()).await.unwrap(), request());
        }
        assert_eq!(
            client.stats().endpoints[0].connections,
            1,
            "{size} B requests, bulk_connections({bulk})"
        );
        r.release();
        assert_eq!(waiting.await.unwrap().unwrap(), request());
        r.task.abort();
    }
}

#[tokio::test]
async fn a_burst_of_pipelined_requests_is_answered_in_full() {
    use zmtp_rpc::transport::DealerSocket;
    // 64 requests written before any answer is read: the server hands them over and
    // answers in groups; every one must come back, each with its own result.
    let (server, ep) = start().await;
    let mut dealer = DealerSocket::new();
    dealer.connect(&ep).await.unwrap();
    let mut expected = std::collections::HashMap::new();
    for i in 0..64i64 {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let header = rmp_serde::to_vec_named(&Hdr {
            v: 1,
            id,
            method: "calc.add",
            timeout_ms: 5000,
            attempt: 1,
        })
        .unwrap();
        let args = rmp_serde::to_vec_named(&serde_json_like_args(i, 1000)).unwrap();
        dealer
            .send(Message::from(vec![
                Bytes::new(),
                Bytes::from(header),
                Bytes::from(args),
            ]))
            .await
            .unwrap();
        expected.insert(id.to_vec(), i + 1000);
    }
    for _ in 0..64 {
        let m = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
            .await
            .expect("every request answered")
            .unwrap();
        #[derive(Deserialize)]
        struct H {
            #[serde(with = "serde_bytes_vec")]
            id: Vec<u8>,
            status: u8,
        }
        let h: H = rmp_serde::from_slice(&m.frames()[1]).unwrap();
        assert_eq!(h.status, 0);
        let sum: i64 = rmp_serde::from_slice(&m.frames()[2]).unwrap();
        assert_eq!(
            expected.remove(&h.id),
            Some(sum),
            "answer matches its request"
        );
    }
    assert!(expected.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_one_connection_all_get_their_own_answers_in_time() {
    // Replies read together wake their callers together, and the callers' next
    // requests are held in small groups until the connection task flushes them. No
    // request may be left behind: with no retries and no heartbeats (whose PINGs would
    // wake the connection task sooner or later), a request held and never written
    // would fail its call. Two and three callers are where every request in flight
    // can be a held one. The callers woken by one read wake each other in turn: none
    // may be left waiting for a turn either. Either fault would leave a call waiting
    // for the only timer left, its attempt timeout of a minute.
    let (server, client) = quiet_pair(CalcServer::new(MyCalc::default())).await;
    let calc = CalcClient::new(client.clone());
    let mut total = 0;
    for n in [2i64, 3, 16] {
        let callers: Vec<_> = (0..n)
            .map(|c| {
                let calc = calc.clone();
                tokio::spawn(async move {
                    for i in 0..300i64 {
                        // The timer first: a call that could complete only once a
                        // timer woke its task fails here, not late.
                        let sum = tokio::select! {
                            biased;
                            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                                panic!("caller {c} waited for a timer")
                            }
                            r = calc.add(c * 1000, i) => r.expect("answered"),
                        };
                        assert_eq!(sum, c * 1000 + i, "caller {c} got another call's answer");
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        total += n as u64 * 300;
    }
    let stats = client.stats();
    assert_eq!(stats.succeeded, total);
    assert_eq!(
        (stats.timeouts, stats.retries, stats.late_replies),
        (0, 0, 0)
    );
    server.shutdown().await;
}
