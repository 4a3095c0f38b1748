//! Tower middleware on both sides: a client layer that puts a token in every call's
//! metadata, a server layer that refuses calls without it, and tower's own
//! `TimeoutLayer` and `ConcurrencyLimitLayer` around the server's services.
//!
//! Run: `cargo run --example middleware`. It starts a server and a client in this
//! process and prints what each call got.

#[path = "common/nap.rs"]
mod nap;
#[path = "common/token.rs"]
mod token;

use std::time::Duration;

use nap::{NapClient, NapServer, Napper};
use token::{AddToken, RequireToken};
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use zmtp_rpc::{Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(NapServer::new(Napper))
        .layer(RequireToken("s3cret"))
        .layer(ConcurrencyLimitLayer::new(64))
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .start()
        .await?;
    let client = Client::builder()
        .endpoint(server.endpoints()[0].to_string())
        .retries(0)
        .connect()
        .await?;
    let without = NapClient::new(client.clone());
    println!("without a token: {:?}", without.nap(1).await);
    let with = NapClient::new(client.layer(AddToken("s3cret")));
    println!("with the token: {:?}", with.nap(1).await);
    println!(
        "past the server's 100 ms timeout: {:?}",
        with.nap(500).await
    );
    server.shutdown().await;
    Ok(())
}
