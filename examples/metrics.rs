//! The library's metrics, exposed for Prometheus: a calculator server and a client
//! calling it, in one process, with `metrics-exporter-prometheus` serving what they
//! record on an HTTP endpoint.
//!
//! Run: `cargo run --example metrics [PORT]` (default 9000), then
//! `curl http://127.0.0.1:9000/metrics`: `zmtp_rpc_client_calls_total`,
//! `zmtp_rpc_server_requests_total`, `zmtp_rpc_server_replies_total`, ... It prints
//! the address first, then calls every 100 ms until stopped.

#[path = "common/calc.rs"]
mod calc;

use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};
use metrics_exporter_prometheus::PrometheusBuilder;
use zmtp_rpc::{Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => 9000,
    };
    PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()?;
    let server = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(CalcServer::new(MyCalc))
        .start()
        .await?;
    let client = Client::connect([server.endpoints()[0].to_string()]).await?;
    let calc = CalcClient::new(client);
    println!("METRICS http://127.0.0.1:{port}/metrics");
    let mut n = 0i64;
    loop {
        calc.add(n, 1).await?;
        let _ = calc.div(n, 0).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
