//! A pool of CURVE workers: three workers share one server key pair and let in only
//! the clients on their allow-list; a client with that key is served by all three, a
//! client with another key is refused, and says so.
//!
//! Run: `cargo run --example secure_pool`. It prints the server's public key (what
//! clients are given), each worker's answers and the stranger's error, then exits.
//! Keys are made fresh here; in a deployment, load them (`KeyPair::from_secret_z85`)
//! from a secret store: see docs/SECURITY.md.

#[path = "common/calc.rs"]
mod calc;

use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};
use zmtp_rpc::{Balance, Client, KeyPair, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server_keys = KeyPair::generate();
    let client_keys = KeyPair::generate();
    println!("server public key: {}", server_keys.public());
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let w = Server::builder()
            .bind("tcp://127.0.0.1:0")
            .curve(server_keys.clone())
            .allow_clients([client_keys.public()])
            .add_service(CalcServer::new(MyCalc))
            .start()
            .await?;
        endpoints.push(w.endpoints()[0].to_string());
        workers.push(w);
    }

    let client = Client::builder()
        .endpoints(endpoints.clone())
        .curve(client_keys, server_keys.public())
        // Every worker in turn, to show each one lets the client in.
        .balance(Balance::RoundRobin)
        .connect()
        .await?;
    client.wait_healthy(3, Duration::from_secs(5)).await;
    let calc = CalcClient::new(client.clone());
    for i in 0..30 {
        let sum = calc.add(i, i).await?;
        if i < 3 {
            println!("allowed client: {i} + {i} = {sum}");
        }
    }
    let served = client
        .stats()
        .endpoints
        .iter()
        .filter(|e| e.replies > 0)
        .count();
    println!("allowed client: served by {served} workers");

    let stranger = Client::builder()
        .endpoints(endpoints)
        .curve(KeyPair::generate(), server_keys.public())
        .call_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let stranger = CalcClient::new(stranger);
    // Its first calls may still find handshakes under way; then the refusals are known.
    let mut refused = None;
    for _ in 0..100 {
        match stranger.add(1, 1).await {
            Ok(_) => return Err("a stranger was served".into()),
            Err(e) if e.to_string().contains("authentication failed") => {
                refused = Some(e);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let refused = refused.ok_or("the stranger was never told why")?;
    println!("stranger refused: {refused}");
    for w in workers {
        w.shutdown().await;
    }
    Ok(())
}
