//! The classic ZeroMQ "Hello World" client: a REQ socket sending "Hello" ten times.
//!
//! Run: `cargo run --example hello_server` first, then
//! `cargo run --example hello_client [ENDPOINT]` (default `tcp://127.0.0.1:5555`).
//! Works against any libzmq REP server too.

use std::time::Duration;

use zmtp_rpc::transport::ReqSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://127.0.0.1:5555".into());
    let mut req = ReqSocket::new();
    req.connect(&endpoint).await?;
    for n in 0..10 {
        println!("Sending Hello {n}...");
        req.send("Hello").await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), req.recv())
            .await
            .map_err(|_| "no reply within 5 s: is hello_server running?")??;
        println!(
            "Received reply {n}: {}",
            String::from_utf8_lossy(&reply.frames()[0])
        );
    }
    Ok(())
}
