//! A calculator service: `#[rpc_service]` server and typed client.
//!
//! Run the server: `cargo run --example calculator -- server [tcp://127.0.0.1:5555]`
//! then the client: `cargo run --example calculator -- client [tcp://127.0.0.1:5555]`.
//! `cargo run --example calculator` alone runs both in one process. Python can call
//! the same server: see docs/PROTOCOL.md.

#[path = "common/calc.rs"]
mod calc;
#[path = "common/modes.rs"]
mod modes;

use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};

async fn client(endpoint: &str) -> Result<(), modes::BoxError> {
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
async fn main() -> Result<(), modes::BoxError> {
    modes::run(
        "calculator",
        "tcp://127.0.0.1:5555",
        || CalcServer::new(MyCalc),
        |ep| async move { client(&ep).await },
    )
    .await
}
