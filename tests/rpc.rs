//! `#[rpc_service]` end to end: generated client and server over our sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use support::calc::*;
use support::{EchoClient, Hdr};
use zmtp_rpc::{rpc_service, Client, Message, RpcError, Server, Status};

#[tokio::test]
async fn typed_calls_results_and_app_errors() {
    let (server, ep) = start().await;
    let calc = CalcClient::connect([ep.clone()]).await.unwrap();
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.div(7, 2).await.unwrap(), Ok(3));
    assert_eq!(calc.div(1, 0).await.unwrap(), Err(CalcError::DivideByZero));
    let r = calc
        .charge("acct".into(), 500)
        .timeout(Duration::from_millis(2000))
        .await
        .unwrap();
    assert_eq!(
        r,
        Ok(Receipt {
            account: "acct".into(),
            cents: 500
        })
    );
    assert!(matches!(
        calc.charge("acct".into(), 5000).await.unwrap(),
        Err(CalcError::Declined { .. })
    ));
    assert_eq!(calc.executions().await.unwrap(), 1);
    assert_eq!(CalcClient::METHODS[5].name, "calc.count");
    let echo = EchoClient::new(calc.client().clone());
    assert_eq!(echo.echo("hi".into()).await.unwrap(), "hi");
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_goes_on() {
    let (server, ep) = start().await;
    let calc = CalcClient::connect([ep]).await.unwrap();
    let e = calc.boom().await.unwrap_err();
    assert!(
        matches!(&e, RpcError::Internal(m) if m.contains("boom on purpose")),
        "{e:?}"
    );
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
    assert_eq!(server.stats().panics, 1);
}

#[tokio::test(start_paused = true)]
async fn per_call_deadline_is_enforced() {
    let (_server, client) = pair(At::Inproc, calc_server(), Client::builder()).await;
    ends_by_deadline(CalcClient::new(client).sleep_ms(2000)).await;
}

/// Runs `call` with a 200 ms deadline under paused time: it fails DEADLINE_EXCEEDED
/// when the paused clock reaches the deadline (the clock moves only to timers: the
/// handler's 2 s or the client's deadlines).
async fn ends_by_deadline<T: std::fmt::Debug + Send + 'static>(call: zmtp_rpc::Call<T>) {
    let t0 = tokio::time::Instant::now();
    let e = call.timeout(Duration::from_millis(200)).await.unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, RpcError::DeadlineExceeded), "{e:?}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(201),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_deadline_behind_a_long_one_still_ends_on_time() {
    // Deadlines are the client's own: the server is a ROUTER that takes requests and
    // never answers. A call with an earlier deadline than one already in flight ends
    // at its own deadline, and so does the long one.
    let router = zmtp_rpc::transport::RouterSocket::new();
    let ep = router.bind(&inproc_name()).await.unwrap().to_string();
    let swallow = tokio::spawn(async move {
        let mut router = router;
        while router.recv().await.is_ok() {}
    });
    let client = zmtp_rpc::Client::builder()
        .endpoint(ep)
        .attempt_timeout(Duration::from_secs(20))
        .call_timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(1, Duration::from_secs(5)).await);
    let calc = CalcClient::new(client);
    let t0 = tokio::time::Instant::now();
    let long = tokio::spawn({
        let calc = calc.clone();
        async move { calc.add(1, 2).timeout(Duration::from_secs(3)).await }
    });
    // The long call is in flight (the task sleeps until its deadline, 3 s away).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        ends_by_deadline(calc.add(3, 4)).await;
    }
    let e = long.await.unwrap().unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded), "{e:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3001),
        "the long call ended at its own deadline: {took:?}"
    );
    swallow.abort();
}

#[tokio::test]
async fn unknown_service_and_method() {
    #[rpc_service(name = "calc")]
    #[allow(dead_code)] // client side only
    pub trait CalcFromTheFuture {
        async fn multiply(&self, a: i64, b: i64) -> i64;
    }
    #[rpc_service(name = "nosuch")]
    #[allow(dead_code)] // client side only
    pub trait Missing {
        async fn anything(&self) -> u8;
    }
    let (_server, ep) = start().await;
    let client = Client::connect([ep]).await.unwrap();
    let e = CalcFromTheFutureClient::new(client.clone())
        .multiply(2, 3)
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::UnknownMethod(_)), "{e:?}");
    let e = MissingClient::new(client).anything().await.unwrap_err();
    assert!(matches!(e, RpcError::UnknownMethod(_)), "{e:?}");
}

#[tokio::test]
async fn a_server_can_add_a_defaulted_argument_for_old_clients() {
    #[rpc_service(name = "scale")]
    #[allow(dead_code)] // client side only
    pub trait ScaleV1 {
        async fn apply(&self, x: i64) -> i64;
    }
    #[rpc_service(name = "scale")]
    pub trait ScaleV2 {
        async fn apply(&self, x: i64, #[serde(default)] factor: Option<i64>) -> i64;
    }
    struct S;
    impl ScaleV2 for S {
        async fn apply(&self, x: i64, factor: Option<i64>) -> i64 {
            x * factor.unwrap_or(1)
        }
    }
    let (_server, client) = pair(
        At::Tcp,
        Server::builder().add_service(ScaleV2Server::new(S)),
        Client::builder(),
    )
    .await;
    assert_eq!(
        ScaleV1Client::new(client.clone()).apply(7).await.unwrap(),
        7
    );
    assert_eq!(
        ScaleV2Client::new(client).apply(7, Some(3)).await.unwrap(),
        21
    );
}

/// Raw frames: what a non-Rust client might send.
async fn raw(
    client: &Client,
    header: &impl Serialize,
    args: &[u8],
) -> (zmtp_rpc::transport::Message, zmtp_rpc::__private::Reply) {
    let h = rmp_serde::to_vec_named(header).unwrap();
    let reply = client
        .request(Message::from(vec![
            Bytes::from(h),
            Bytes::copy_from_slice(args),
        ]))
        .await
        .unwrap();
    let hdr: zmtp_rpc::__private::Reply = {
        #[derive(Deserialize)]
        struct H {
            status: u8,
            #[serde(default)]
            message: String,
        }
        let h: H = rmp_serde::from_slice(&reply.frames()[0]).unwrap();
        zmtp_rpc::__private::Reply {
            status: Status::from_code(h.status).unwrap(),
            message: h.message,
            body: reply.frames()[1].clone().into(),
        }
    };
    (reply, hdr)
}

#[tokio::test]
async fn bad_requests_and_spent_deadlines_do_not_run_the_handler() {
    let (server, ep) = start().await;
    let client = Client::connect([ep]).await.unwrap();
    let hdr = |method, timeout_ms| Hdr {
        v: 1,
        id: *uuid::Uuid::new_v4().as_bytes(),
        method,
        timeout_ms,
        attempt: 1,
    };
    // Arguments of the wrong type.
    let args = rmp_serde::to_vec_named(&serde_json_like_map("a", "not a number")).unwrap();
    let (_, r) = raw(&client, &hdr("calc.add", 1000), &args).await;
    assert_eq!(r.status, Status::BadRequest, "{}", r.message);
    // Not MessagePack at all.
    let (_, r) = raw(&client, &hdr("calc.add", 1000), b"\xc1\xc1").await;
    assert_eq!(r.status, Status::BadRequest);
    // A header that is not a header.
    let (_, r) = raw(&client, &"hello", b"").await;
    assert_eq!(r.status, Status::BadRequest);
    // No time left.
    let args = rmp_serde::to_vec_named(&AddArgs { a: 1, b: 2 }).unwrap();
    let (_, r) = raw(&client, &hdr("calc.add", 0), &args).await;
    assert_eq!(r.status, Status::DeadlineExceeded);
    let calc = CalcClient::new(client);
    assert_eq!(calc.executions().await.unwrap(), 0, "add never ran");
    // The header-level refusals (bad header, no time left) never reached a dispatcher.
    assert_eq!(server.stats().rejected, 2);
}

#[derive(Serialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

fn serde_json_like_map(k: &str, v: &str) -> std::collections::BTreeMap<String, String> {
    [(k.to_string(), v.to_string())].into_iter().collect()
}

#[tokio::test]
async fn the_server_dispatcher_is_a_tower_service() {
    use tower::ServiceExt;
    let svc = CalcServer::new(MyCalc::default());
    let args = rmp_serde::to_vec_named(&AddArgs { a: 20, b: 22 }).unwrap();
    let reply = svc
        .oneshot(zmtp_rpc::__private::ServiceRequest {
            method: "add".into(),
            args: Bytes::from(args),
        })
        .await
        .unwrap();
    assert_eq!(reply.status, Status::Ok);
    assert_eq!(
        rmp_serde::from_slice::<i64>(&reply.body.to_bytes()).unwrap(),
        42
    );
    let _ = Arc::new(());
}

#[tokio::test(start_paused = true)]
async fn past_the_concurrency_limit_the_server_answers_overloaded_at_once() {
    let (server, client) = pair(
        At::Inproc,
        calc_server().max_concurrency(1),
        Client::builder().retries(1),
    )
    .await;
    let calc = CalcClient::new(client);
    let busy = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep_ms(500).await }
    });
    // Wait until the slow call runs.
    while server.stats().executed == 0 {
        tokio::task::yield_now().await;
    }
    let t0 = tokio::time::Instant::now();
    let e = calc.add(1, 2).await.unwrap_err();
    // No timer was waited for: the paused clock did not move.
    assert_eq!(t0.elapsed(), Duration::ZERO, "not at once");
    let RpcError::Unavailable {
        attempts: 2,
        last: Some(last),
    } = &e
    else {
        panic!("{e:?}")
    };
    assert!(matches!(**last, RpcError::Overloaded(_)), "{last:?}");
    assert_eq!(server.stats().overloaded, 2);
    assert_eq!(busy.await.unwrap().unwrap(), 500);
}

/// The last attempt's error of a call that ran out of attempts.
fn last_error(e: &RpcError) -> &RpcError {
    match e {
        RpcError::Unavailable {
            last: Some(last), ..
        } => last,
        other => panic!("not out of attempts: {other:?}"),
    }
}

#[rpc_service]
pub trait Hold {
    /// Answers the length of `data`; more than 1,000 bytes are kept until the test
    /// lets go.
    async fn hold(&self, data: String) -> u64;
}

struct Holder(Arc<tokio::sync::Semaphore>);

impl Hold for Holder {
    async fn hold(&self, data: String) -> u64 {
        if data.len() > 1000 {
            let _go = self.0.acquire().await;
        }
        data.len() as u64
    }
}

#[tokio::test(start_paused = true)]
async fn handlers_that_wait_hold_a_bounded_sum_of_arguments() {
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let (server, client) = pair(
        At::Inproc,
        Server::builder()
            .max_waiting_bytes(10_000)
            .add_service(HoldServer::new(Holder(go.clone()))),
        Client::builder().retries(0),
    )
    .await;
    let hold = HoldClient::new(client);
    // Alone, a request runs even past the bound.
    let first = tokio::spawn({
        let hold = hold.clone();
        async move { hold.hold("x".repeat(12_000)).await }
    });
    while server.stats().waiting_bytes == 0 {
        tokio::task::yield_now().await;
    }
    assert!(server.stats().waiting_bytes >= 12_000);
    // While it waits, more arguments would pass the bound: refused at once, not run.
    let t0 = tokio::time::Instant::now();
    let e = hold.hold("y".repeat(1_001)).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::ZERO, "not at once");
    assert!(matches!(last_error(&e), RpcError::Overloaded(_)), "{e:?}");
    assert_eq!(server.stats().overloaded, 1);
    assert_eq!(server.stats().executed, 1);
    // Once it is done, nothing is counted and requests run again.
    go.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 12_000);
    assert_eq!(server.stats().waiting_bytes, 0);
    assert_eq!(hold.hold("z".repeat(100)).await.unwrap(), 100);
    // Handlers that finish at once are not counted either.
    assert_eq!(server.stats().waiting_bytes, 0);
}

#[tokio::test]
async fn a_server_holds_at_most_max_connections() {
    let (server, first) = pair(
        At::Tcp,
        Server::builder()
            .max_connections(1)
            .add_service(CalcServer::new(MyCalc::default())),
        Client::builder(),
    )
    .await;
    let first = CalcClient::new(first);
    assert_eq!(first.add(1, 2).await.unwrap(), 3);
    // A second client's connection is closed at once: its call finds no server.
    let second = Client::builder()
        .endpoint(server.endpoints()[0].to_string())
        .call_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let second = CalcClient::new(second);
    let e = second.add(2, 3).await.unwrap_err();
    assert!(
        matches!(e, RpcError::Unavailable { .. } | RpcError::DeadlineExceeded),
        "{e:?}"
    );
    assert_eq!(server.stats().requests, 1, "the second client got through");
    // Once the first client is gone, the second connects and is served.
    drop(first);
    assert!(
        second
            .client()
            .wait_healthy(1, Duration::from_secs(10))
            .await
    );
    let sum = second.add(2, 3).timeout(Duration::from_secs(10)).await;
    assert_eq!(sum.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_running_calls_and_refuses_new_ones() {
    let (server, client) = pair(At::Inproc, calc_server(), Client::builder().retries(0)).await;
    let calc = CalcClient::new(client);
    let running = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep_ms(300).await }
    });
    while server.stats().executed == 0 {
        tokio::task::yield_now().await;
    }
    let t0 = tokio::time::Instant::now();
    let stop = tokio::spawn(server.shutdown());
    // Once shutting down, the server refuses new calls (polled: no time passes).
    let e = loop {
        match calc.add(1, 1).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert!(matches!(last_error(&e), RpcError::ShuttingDown(_)), "{e:?}");
    assert!(t0.elapsed() < Duration::from_millis(300));
    assert!(
        !stop.is_finished(),
        "shutdown must wait for the running call"
    );
    assert_eq!(
        running.await.unwrap().unwrap(),
        300,
        "the running call finished"
    );
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("shutdown completes")
        .unwrap();
}

#[tokio::test]
async fn the_server_drops_clients_that_stop_answering_heartbeats() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zmtp_rpc::transport::zmtp::{Greeting, HeartbeatConfig};
    let builder = Server::builder()
        .heartbeat(Some(HeartbeatConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            ttl: Duration::ZERO,
        }))
        .add_service(CalcServer::new(MyCalc::default()));
    let (server, _) = serve(At::Tcp, builder).await;
    let port = server.endpoints()[0].port().unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // A DEALER that shakes hands and then vanishes without closing.
    let mut hello = Greeting::null().encode().to_vec();
    hello.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
    s.write_all(&hello).await.unwrap();
    let t0 = std::time::Instant::now();
    let mut pings = 0;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pings += buf[..n].windows(5).filter(|w| w == b"\x04PING").count(),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "silent client never dropped");
    assert!(pings >= 1, "no PING was sent");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[rpc_service]
pub trait Slicer {
    /// Cuts `data` at `at`: both halves come back as slices of the received frame.
    async fn cut(&self, data: zmtp_rpc::Blob, at: u64) -> (zmtp_rpc::Blob, String, zmtp_rpc::Blob);
}

struct MySlicer;

impl Slicer for MySlicer {
    async fn cut(&self, data: zmtp_rpc::Blob, at: u64) -> (zmtp_rpc::Blob, String, zmtp_rpc::Blob) {
        let at = (at as usize).min(data.len());
        (
            data.slice(..at).into(),
            format!("cut at {at}"),
            data.slice(at..).into(),
        )
    }
}

#[tokio::test]
async fn large_blobs_travel_without_copies_and_arrive_intact() {
    let (server, client) = pair(
        At::Tcp,
        Server::builder()
            .max_message_size(8 << 20)
            .add_service(SlicerServer::new(MySlicer)),
        Client::builder().max_message_size(8 << 20),
    )
    .await;
    let slicer = SlicerClient::new(client);
    // Sizes below, at and far above the size kept by reference; cuts that leave both
    // halves large, one small, or one empty.
    for (len, at) in [
        (100usize, 40u64),
        (8 * 1024, 1),
        (3 << 20, 1 << 20),
        (2 << 20, 2 << 20),
        (1 << 20, 0),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let (a, mid, b) = slicer
            .cut(zmtp_rpc::Blob::from(data.clone()), at)
            .await
            .unwrap();
        let at = at as usize;
        assert_eq!(mid, format!("cut at {at}"));
        assert_eq!(&a[..], &data[..at], "len {len} at {at}");
        assert_eq!(&b[..], &data[at..], "len {len} at {at}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_with_blobs_of_every_size_are_all_answered_without_a_timer() {
    // Sixteen callers on one connection, blobs of 0 B to 600 KiB: requests and replies
    // cross the connection's write bound (256 KiB) and its queues in every way. With
    // no retries, no heartbeats and attempts of a minute, a message left unwritten
    // would leave its call waiting for a timer.
    let (server, client) = quiet_pair(SlicerServer::new(MySlicer)).await;
    let slicer = SlicerClient::new(client.clone());
    const CALLERS: u64 = 16;
    const CALLS: u64 = 30;
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let slicer = slicer.clone();
            tokio::spawn(async move {
                let mut rng = zmtp_rpc::transport::socket::SplitMix64::new(0x5eed_0000 + c);
                let mut below = move |n: u64| rng.below(n);
                for i in 0..CALLS {
                    let len = match below(3) {
                        0 => below(100),
                        1 => below(16 * 1024),
                        _ => below(600 * 1024),
                    } as usize;
                    let data: Vec<u8> = (0..len).map(|k| (k as u64 * 31 + c + i) as u8).collect();
                    let at = below(len as u64 + 1);
                    let (a, _, b) = tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_secs(20)) => {
                            panic!("caller {c}, call {i} ({len} B) waited for a timer")
                        }
                        r = slicer.cut(zmtp_rpc::Blob::from(data.clone()), at) => r.expect("answered"),
                    };
                    let at = at as usize;
                    assert_eq!((&a[..], &b[..]), (&data[..at], &data[at..]), "caller {c}, call {i}");
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(stats.succeeded, CALLERS * CALLS);
    assert_eq!((stats.timeouts, stats.retries), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_at_random_points_leave_the_other_callers_served() {
    // Sixteen callers on one connection give up on half their calls after a random
    // number of scheduler turns: before sending, while waiting, or with the reply
    // already in their slot and their turn in the line of woken callers coming. The
    // calls kept must get their own answers, none waiting for a timer: a caller
    // dropped just as its reply lands can be woken as the first of a line and not
    // pass the turn on; the wake line's watchdog must then wake the line within 200 ms
    // (it slept until the next attempt deadline, here a minute away: 1 run in 6-25).
    let (server, client) = quiet_pair(CalcServer::new(MyCalc::default())).await;
    let calc = CalcClient::new(client.clone());
    let callers: Vec<_> = (0..16i64)
        .map(|c| {
            let calc = calc.clone();
            tokio::spawn(async move {
                let mut rng = zmtp_rpc::transport::socket::SplitMix64::new(0xd209 + c as u64);
                let (mut kept, mut dropped) = (0u32, 0u32);
                for i in 0..400i64 {
                    let turns = if rng.below(2) == 0 {
                        u64::MAX
                    } else {
                        rng.below(12)
                    };
                    let give_up = async {
                        if turns == u64::MAX {
                            return std::future::pending().await;
                        }
                        for _ in 0..turns {
                            tokio::task::yield_now().await;
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            panic!("caller {c}, call {i} waited for a timer")
                        }
                        r = calc.add(c * 1000, i) => {
                            assert_eq!(r.expect("answered"), c * 1000 + i, "caller {c}");
                            kept += 1;
                        }
                        _ = give_up => dropped += 1,
                    }
                }
                // Then every call completes, none through a timer.
                for i in 0..50i64 {
                    let sum = tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            panic!("caller {c} waited for a timer after the drops")
                        }
                        r = calc.add(c, i) => r.expect("answered"),
                    };
                    assert_eq!(sum, c + i);
                }
                (kept, dropped)
            })
        })
        .collect();
    let (mut kept, mut dropped) = (0, 0);
    for c in callers {
        let (k, d) = c.await.unwrap();
        kept += k;
        dropped += d;
    }
    // Both kinds happened, many times.
    assert!(
        kept > 1000 && dropped > 400,
        "{kept} kept, {dropped} dropped"
    );
    assert_eq!(client.stats().timeouts, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn acknowledged_replies_leave_the_cache_and_their_requests_never_run_again() {
    let (server, ep) = start().await;
    // Our client acknowledges each reply with its next request: after 100 calls with
    // 1 KB replies, the server holds at most the last one.
    let client = Client::builder()
        .endpoint(ep.clone())
        .connect()
        .await
        .unwrap();
    let echo = EchoClient::new(client);
    let text = "x".repeat(1000);
    for _ in 0..100 {
        assert_eq!(echo.echo(text.clone()).await.unwrap(), text);
    }
    let held = server.stats().cached_bytes;
    assert!(held < 2000, "{held} bytes of replies held after 100 calls");

    // By hand, as another implementation would: X, then Y acknowledging X, then X
    // again and Z. X's copy is neither run nor answered: Z's answer comes first
    // (answers on one connection keep their order), and `add` ran three times.
    use zmtp_rpc::transport::DealerSocket;
    /// An id as MessagePack bin.
    struct Id([u8; 16]);
    impl Serialize for Id {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    /// The usual header, and acknowledgements.
    #[derive(Serialize)]
    struct AckHdr<'a> {
        #[serde(flatten)]
        head: Hdr<'a>,
        acks: Vec<Id>,
    }
    let mut dealer = DealerSocket::new();
    dealer.connect(&ep).await.unwrap();
    let (x, y, z) = ([1u8; 16], [2u8; 16], [3u8; 16]);
    let send = |id: [u8; 16], acks: Vec<[u8; 16]>| {
        let header = rmp_serde::to_vec_named(&AckHdr {
            head: Hdr {
                v: 1,
                id,
                method: "calc.add",
                timeout_ms: 5000,
                attempt: 1,
            },
            acks: acks.into_iter().map(Id).collect(),
        })
        .unwrap();
        let args = rmp_serde::to_vec_named(&serde_json_like_args(1, 2)).unwrap();
        Message::from(vec![Bytes::new(), Bytes::from(header), Bytes::from(args)])
    };
    let answered = |m: &Message| -> Vec<u8> {
        #[derive(Deserialize)]
        struct H {
            #[serde(with = "serde_bytes_vec")]
            id: Vec<u8>,
        }
        rmp_serde::from_slice::<H>(&m.frames()[1]).unwrap().id
    };
    let calc = CalcClient::new(Client::builder().endpoint(ep).connect().await.unwrap());
    let runs = calc.executions().await.unwrap();
    for (id, acks) in [(x, vec![]), (y, vec![x])] {
        dealer.send(send(id, acks)).await.unwrap();
        assert_eq!(answered(&dealer.recv().await.unwrap()), id.to_vec());
    }
    dealer.send(send(x, vec![])).await.unwrap();
    dealer.send(send(z, vec![])).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
        .await
        .expect("Z answered")
        .unwrap();
    assert_eq!(
        answered(&next),
        z.to_vec(),
        "the acknowledged X got no answer"
    );
    assert_eq!(calc.executions().await.unwrap(), runs + 3, "X ran once");
    server.shutdown().await;
}

/// Reads the request context from inside handlers, before and after they wait.
#[rpc_service(name = "ctx")]
pub trait Ctx {
    async fn whoami(&self, wait_ms: u64) -> (String, u32, bool);
    async fn boom_later(&self);
}

struct MyCtx;
impl Ctx for MyCtx {
    async fn whoami(&self, wait_ms: u64) -> (String, u32, bool) {
        let before = zmtp_rpc::RequestContext::current().expect("context in a handler");
        if wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        let after = zmtp_rpc::RequestContext::current().expect("context after waiting");
        let same = before.request_id == after.request_id && before.method == after.method;
        (after.method.into_owned(), after.attempt, same)
    }
    async fn boom_later(&self) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        panic!("boom after waiting, on purpose");
    }
}

#[tokio::test]
async fn handlers_see_their_context_and_panics_after_waiting_answer_internal() {
    let (server, client) = pair(
        At::Tcp,
        Server::builder().add_service(CtxServer::new(MyCtx)),
        Client::builder(),
    )
    .await;
    let ctx = CtxClient::new(client);
    // At once (polled in the connection task) and after waiting (its own task),
    // several at a time: each sees its own context, never another's.
    let calls: Vec<_> = (0..8u64)
        .map(|i| tokio::spawn(std::future::IntoFuture::into_future(ctx.whoami(i % 2 * 20))))
        .collect();
    for call in calls {
        let got = call.await.expect("call task");
        assert_eq!(got.unwrap(), ("ctx.whoami".to_string(), 1, true));
    }
    assert!(
        zmtp_rpc::RequestContext::current().is_none(),
        "none outside"
    );
    let e = ctx.boom_later().await.unwrap_err();
    assert!(
        matches!(&e, RpcError::Internal(m) if m.contains("boom after waiting")),
        "{e:?}"
    );
    assert_eq!(server.stats().panics, 1);
    assert_eq!(
        ctx.whoami(0).await.unwrap().0,
        "ctx.whoami",
        "still serving"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reserved_methods_answer_health_and_describe_and_can_be_turned_off() {
    let (_server, ep) = start().await;
    let client = Client::connect([ep]).await.unwrap();
    let hdr = |method| Hdr {
        v: 1,
        id: *uuid::Uuid::new_v4().as_bytes(),
        method,
        timeout_ms: 1000,
        attempt: 1,
    };
    let (_, r) = raw(&client, &hdr("_rpc.health"), b"\x80").await;
    assert_eq!(r.status, Status::Ok);
    let health: String = rmp_serde::from_slice(&r.body.to_bytes()).unwrap();
    assert_eq!(health, "SERVING");
    let (_, r) = raw(&client, &hdr("_rpc.describe"), b"\x80").await;
    assert_eq!(r.status, Status::Ok);
    #[derive(Deserialize, Debug)]
    struct M {
        name: String,
        retry: String,
        args: Vec<A>,
        returns: String,
    }
    #[derive(Deserialize, Debug, PartialEq)]
    struct A {
        name: String,
        #[serde(rename = "type")]
        ty: String,
    }
    #[derive(Deserialize, Debug)]
    struct S {
        name: String,
        methods: Vec<M>,
    }
    let services: Vec<S> = rmp_serde::from_slice(&r.body.to_bytes()).unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["calc", "echo"]);
    let charge = services[0]
        .methods
        .iter()
        .find(|m| m.name == "calc.charge")
        .expect("calc.charge described");
    assert_eq!(charge.retry, "at_most_once");
    let arg = |name: &str, ty: &str| A {
        name: name.into(),
        ty: ty.into(),
    };
    assert_eq!(
        charge.args,
        [arg("account", "String"), arg("cents", "u64")],
        "names and types as the trait spells them"
    );
    assert_eq!(charge.returns, "Result<Receipt, CalcError>");
    let count = services[0].methods.iter().find(|m| m.name == "calc.count");
    let count = count.expect("renamed method described by its wire name");
    assert_eq!((count.args.len(), count.returns.as_str()), (0, "u32"));
    // Turned off: the reserved names are unknown, as any other.
    let builder = Server::builder()
        .reserved_methods(false)
        .add_service(CalcServer::new(MyCalc::default()));
    let (quiet, _) = serve(At::Tcp, builder).await;
    let client = Client::connect([quiet.endpoints()[0].to_string()])
        .await
        .unwrap();
    let (_, r) = raw(&client, &hdr("_rpc.health"), b"\x80").await;
    assert_eq!(r.status, Status::UnknownMethod, "{}", r.message);
}

#[test]
fn a_raw_identifier_goes_on_the_wire_without_its_r_hash() {
    #[rpc_service(name = "kw")]
    #[allow(dead_code)] // client side only
    pub trait Keywords {
        async fn r#type(&self, r#match: u8) -> u8;
    }
    assert_eq!(KeywordsClient::METHODS[0].name, "kw.type");
}
