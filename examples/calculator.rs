//! A calculator service: `#[rpc_service]` server and typed client.
//!
//! Run the server: `cargo run --example calculator -- server [tcp://127.0.0.1:5555]`
//! then the client: `cargo run --example calculator -- client [tcp://127.0.0.1:5555]`.
//! `cargo run --example calculator` alone runs both in one process. Python can call
//! the same server: see docs/PROTOCOL.md.

#[path = "common/calc.rs"]
mod calc;

use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};
use zmtp_rpc::Server;

async fn client(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let calc = CalcClient::connect([endpoint]).await?;
    println!("2 + 3 = {}", calc.add(2, 3).await?);
    println!("7 / 2 = {:?}", calc.div(7, 2).await?);
    println!("1 / 0 = {:?}", calc.div(1, 0).await?);
    let big = calc
        .mul(i64::MAX, 2)
        .timeout(Duration::from_millis(300))
        .await?;
    println!("i64::MAX * 2 = {big:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "tcp://127.0.0.1:5555".into());
    match args.first().map(String::as_str) {
        Some("server") => {
            println!("calculator serving on {endpoint}");
            Server::builder()
                .bind(endpoint.replace("127.0.0.1", "*"))
                .serve(CalcServer::new(MyCalc))
                .await?;
        }
        Some("client") => client(&endpoint).await?,
        None => {
            let server = Server::builder()
                .bind("tcp://127.0.0.1:0")
                .add_service(CalcServer::new(MyCalc))
                .start()
                .await?;
            client(&server.endpoints()[0].to_string()).await?;
            server.shutdown().await;
        }
        Some(other) => return Err(format!("unknown mode {other}: server or client").into()),
    }
    Ok(())
}
