//! Tower layers on both sides: a client layer that adds a metadata token, a server
//! layer that checks it, and tower's own timeout and concurrency limit. In paused time
//! over `inproc://`.

#[path = "../examples/common/nap.rs"]
mod nap;
#[path = "../examples/common/token.rs"]
mod token;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nap::{NapClient, NapServer, Napper};
use token::{AddToken, RequireToken};
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use zmtp_rpc::{Client, RpcError, Server};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A server with the token check and tower's timeout (100 ms) and concurrency limit.
async fn server() -> (zmtp_rpc::ServerHandle, Client) {
    let ep = format!("inproc://mw-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let server = Server::builder()
        .bind(&ep)
        .add_service(NapServer::new(Napper))
        .layer(RequireToken("s3cret"))
        .layer(ConcurrencyLimitLayer::new(64))
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .endpoint(&ep)
        .retries(0)
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(1, Duration::from_secs(5)).await);
    (server, client)
}

#[tokio::test(start_paused = true)]
async fn a_client_layer_adds_the_token_a_server_layer_checks() {
    let (_server, client) = server().await;
    let bare = NapClient::new(client.clone());
    let e = bare.nap(1).await.unwrap_err();
    assert!(
        matches!(&e, RpcError::BadRequest(m) if m.contains("token")),
        "{e:?}"
    );
    let with_token = NapClient::new(client.layer(AddToken("s3cret")));
    assert_eq!(with_token.nap(1).await.unwrap(), 1);
    let wrong = NapClient::new(client.layer(AddToken("guess")));
    assert!(wrong.nap(1).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn tower_timeouts_work_on_both_sides() {
    let (_server, client) = server().await;
    let calls = client.layer(AddToken("s3cret"));
    // The server's timeout layer: 100 ms, answered DEADLINE_EXCEEDED.
    let nap = NapClient::new(calls.clone());
    let t0 = tokio::time::Instant::now();
    let e = nap.nap(500).await.unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded), "{e:?}");
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    // A client timeout layer (20 ms) ends the call first.
    let impatient = NapClient::new(calls.layer(TimeoutLayer::new(Duration::from_millis(20))));
    let t0 = tokio::time::Instant::now();
    let e = impatient.nap(50).await.unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded), "{e:?}");
    assert_eq!(t0.elapsed(), Duration::from_millis(20));
    assert_eq!(nap.nap(10).await.unwrap(), 10);
}
