//! One REQ client connected to several REP servers; requests go round-robin.
//!
//! Run: start `cargo run --example server_on_port 5556` (and 5557, 5558), then
//! `cargo run --example client_to_many 5556 5557 5558 [--count N]`. The replies show
//! the servers taking turns. This is a plain REQ socket: if a server dies while a
//! request is with it, `recv` reports the lost peer instead of hanging (libzmq would
//! hang); `lazy_pirate_client` adds retries and failover.

use std::time::Duration;

use zmtp_rpc::transport::ReqSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ports = Vec::new();
    let mut count = 6u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args.next().ok_or("--count N")?.parse()?;
        } else {
            ports.push(a.parse::<u16>()?);
        }
    }
    if ports.is_empty() {
        return Err("usage: client_to_many PORT... [--count N]".into());
    }
    let mut req = ReqSocket::new();
    for p in &ports {
        req.connect(&format!("tcp://127.0.0.1:{p}")).await?;
    }
    // Wait until every server is connected, so that round-robin covers them all.
    let mut peers = req.watch_peers();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        peers.wait_for(|n| *n == ports.len()),
    )
    .await;
    for i in 0..count {
        req.send(format!("request {i}").as_str()).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), req.recv())
            .await
            .map_err(|_| "no reply within 5 s")??;
        println!("{}", String::from_utf8_lossy(&reply.frames()[0]));
    }
    Ok(())
}
