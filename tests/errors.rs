//! The first hour: errors that name their cause (refused, not ZMTP, silent peers,
//! settings that cannot work, size limits, overload and the retry budget).

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::calc::*;
use support::{EchoClient, EchoServer, MyEcho};
use zmtp_rpc::{rpc_service, Client, RpcError, Server};

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_endpoint_fails_at_once_and_says_so() {
    let ep = format!("tcp://127.0.0.1:{}", closed_port());
    let client = Client::builder().endpoint(&ep).connect().await.unwrap();
    let calc = CalcClient::new(client.clone());
    // The first call may find the first connect still under way; once it was
    // refused, calls fail at once (the default deadline is 5 s).
    let t0 = std::time::Instant::now();
    let e = loop {
        let e = calc.add(1, 2).await.unwrap_err();
        if e.to_string().contains("refused") {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{e}");
    };
    assert!(t0.elapsed() < Duration::from_millis(2500), "not at once");
    let text = e.to_string();
    assert!(
        text.starts_with("unavailable after 0 attempt(s): "),
        "{text}"
    );
    assert!(text.contains(&ep), "{text}");
    // Waiting for ready, the same call waits out its deadline and names the cause.
    let patient = Client::builder()
        .endpoint(&ep)
        .wait_for_ready(true)
        .connect()
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let e = CalcClient::new(patient)
        .add(1, 2)
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(e.to_string().contains("refused"), "{e}");
}

/// A lost connection is not a failure to connect: while the client connects again
/// (gRPC's CONNECTING), calls wait for it within their deadline instead of failing
/// fast. Only a connect that then fails makes them fail at once.
#[tokio::test(start_paused = true)]
async fn a_call_made_while_a_lost_connection_is_made_again_waits_for_it() {
    let (server, client) = pair(At::Inproc, calc_server(), Client::builder()).await;
    let ep = client.endpoints()[0].endpoint.clone();
    server.shutdown().await;
    // Seen lost, and the loss's reason taken in (the tasks that report it are ready
    // to run), without letting the paused clock move: the reconnect waits 100 ms.
    while client.endpoints()[0].health == zmtp_rpc::HealthState::Healthy {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let again = calc_server().bind(ep).start().await.unwrap();
    let sum = CalcClient::new(client.clone()).add(2, 3).await;
    assert_eq!(sum.as_ref().ok(), Some(&5), "{sum:?}: {:?}", client.stats());
    again.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_not_zmtp_fails_the_handshake_and_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An HTTP server: answers anything with a 400 and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("tcp://{}", listener.local_addr().unwrap());
    let http = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let calc = CalcClient::connect([ep.clone()]).await.unwrap();
    let t0 = std::time::Instant::now();
    let e = loop {
        let e = calc.add(1, 2).await.unwrap_err();
        if e.to_string().contains("handshake failed") {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{e}");
    };
    let text = e.to_string();
    assert!(text.contains(&ep) && text.contains("greeting"), "{text}");
    http.abort();
}

#[tokio::test]
async fn a_peer_that_never_answers_the_handshake_is_named_at_the_deadline() {
    // Accepted by the kernel's backlog, never read: the greeting gets no answer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("tcp://{}", listener.local_addr().unwrap());
    let calc = CalcClient::connect([ep.clone()]).await.unwrap();
    let e = calc
        .add(1, 2)
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("unavailable after 0 attempt(s): {ep}: not connected yet")
    );
    drop(listener);
}

#[tokio::test(start_paused = true)]
async fn a_zero_deadline_fails_at_once_and_any_duration_is_a_deadline() {
    let (_server, client) = pair(At::Inproc, calc_server(), Client::builder()).await;
    let calc = CalcClient::new(client);
    let t0 = tokio::time::Instant::now();
    let e = calc.add(1, 2).timeout(Duration::ZERO).await.unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded), "{e:?}");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(calc.add(1, 2).timeout(Duration::MAX).await.unwrap(), 3);
}

#[tokio::test]
async fn builders_refuse_settings_that_cannot_work_and_say_which() {
    let e = Client::builder().connect().await.unwrap_err();
    assert!(e.to_string().contains("no endpoints"), "{e}");
    let e = Client::builder()
        .endpoint("tcp://127.0.0.1:1")
        .attempt_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("attempt_timeout is zero"), "{e}");
    let e = Server::builder()
        .add_service(CalcServer::new(MyCalc::default()))
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs an endpoint"), "{e}");
    let e = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs a service"), "{e}");
    // A port in use: the OS's reason is in the text, not only in the Debug form.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("tcp://{}", taken.local_addr().unwrap());
    let e = calc_server().bind(&ep).start().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&ep) && text.to_lowercase().contains("address already in use"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_size_limit_fails_at_once_and_sends_nothing() {
    let server = calc_server().add_service(EchoServer::new(MyEcho));
    let (server, client) = pair(At::Inproc, server, Client::builder()).await;
    let echo = EchoClient::new(client.clone());
    let e = echo.echo("x".repeat(5 << 20)).await.unwrap_err();
    assert!(
        matches!(e, RpcError::MessageTooLarge { size, max } if size > 5 << 20 && max == 4 << 20),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_message_size"), "{e}");
    assert_eq!(server.stats().requests, 0, "nothing was sent");
    assert_eq!(client.stats().attempts, 0);
    // The connection is untouched: other calls go on.
    assert_eq!(echo.echo("small".into()).await.unwrap(), "small");
}

#[tokio::test]
async fn a_request_over_the_servers_limit_is_answered_too_large_and_the_connection_stays() {
    // The client's limit is above the server's: the server is the one to refuse.
    // One connection (no second one for large requests): the slow call shares it.
    let server = calc_server()
        .add_service(EchoServer::new(MyEcho))
        .max_message_size(64 << 10);
    let client = Client::builder()
        .max_message_size(8 << 20)
        .bulk_connections(1);
    let (server, client) = pair(At::Tcp, server, client).await;
    let calc = CalcClient::new(client.clone());
    let echo = EchoClient::new(client.clone());
    // A call in flight on the same connection meanwhile.
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep_ms(300).await }
    });
    while server.stats().executed == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = client.stats();
    let e = echo.echo("x".repeat(1 << 20)).await.unwrap_err();
    assert!(matches!(e, RpcError::TooLarge(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("over the server's limit of 65536 bytes"),
        "{text}"
    );
    // Not resent: another server would refuse it the same way.
    assert_eq!(client.stats().attempts - before.attempts, 1);
    slow.await.unwrap().unwrap();
    assert_eq!(echo.echo("small".into()).await.unwrap(), "small");
    let st = server.stats();
    assert_eq!((st.rejected, st.connections), (1, 1), "{st:?}");
    let after = client.stats();
    assert_eq!(after.reconnects, before.reconnects);
    assert_eq!(after.endpoints[0].disconnects, 0, "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn with_every_server_overloaded_the_retry_budget_bounds_the_attempts() {
    let (server, client) = pair(
        At::Inproc,
        calc_server().max_concurrency(1),
        Client::builder()
            .attempt_timeout(Duration::from_secs(200))
            .call_timeout(Duration::from_secs(200)),
    )
    .await;
    let calc = CalcClient::new(client.clone());
    // The only slot is taken for 100 s (of paused time).
    let busy = tokio::spawn({
        let calc = calc.clone();
        async move {
            calc.sleep_ms(100_000)
                .timeout(Duration::from_secs(200))
                .await
        }
    });
    while server.stats().executed == 0 {
        tokio::task::yield_now().await;
    }
    let before = client.stats();
    const CALLS: u64 = 1000;
    for _ in 0..CALLS {
        let e = calc.add(1, 2).await.unwrap_err();
        let overloaded = match &e {
            RpcError::Overloaded(_) => true,
            RpcError::Unavailable { last: Some(l), .. } => {
                matches!(**l, RpcError::Overloaded(_))
            }
            _ => false,
        };
        assert!(overloaded && e.to_string().contains("overloaded"), "{e}");
    }
    let after = client.stats();
    let attempts = after.attempts - before.attempts;
    let per_call = attempts as f64 / CALLS as f64;
    // 20% of the calls, plus the floor's reserve of 100 and what it refills while
    // the calls run: about 1.31 (it was 4).
    assert!(per_call <= 1.35, "{attempts} attempts for {CALLS} calls");
    assert!(after.budget_refusals > 0, "{after:?}");
    // Once the load is gone, the server serves again.
    assert_eq!(busy.await.unwrap().unwrap(), 100_000);
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
}

/// Makes replies of any size from small requests.
#[rpc_service(name = "grow")]
pub trait Grow {
    /// `n` bytes.
    async fn bytes(&self, n: u64) -> zmtp_rpc::Blob;
}

struct Grower;

impl Grow for Grower {
    async fn bytes(&self, n: u64) -> zmtp_rpc::Blob {
        Bytes::from(vec![1u8; n as usize]).into()
    }
}

#[tokio::test(start_paused = true)]
async fn a_reply_over_the_limit_becomes_an_error_for_that_call_only() {
    let server = Server::builder()
        .max_message_size(64 << 10)
        .add_service(GrowServer::new(Grower));
    let (server, client) = pair(
        At::Inproc,
        server,
        Client::builder().max_message_size(16 << 20),
    )
    .await;
    let grow = GrowClient::new(client.clone());
    let e = grow.bytes(1 << 20).await.unwrap_err();
    assert!(
        matches!(&e, RpcError::Internal(m) if m.contains("exceeds the server's message size limit")),
        "{e:?}"
    );
    // Neither the connection nor the cache paid for it.
    assert_eq!(grow.bytes(1000).await.unwrap().len(), 1000);
    assert_eq!(client.stats().reconnects, 0);
    assert!(
        server.stats().cached_bytes < 64 << 10,
        "{:?}",
        server.stats()
    );
}
