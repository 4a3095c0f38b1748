//! The ZeroMQ Guide's "client connected to several servers, with a timeout", done
//! right: the raw reliable client over plain REP servers, with Lazy Pirate retries
//! (timeout, close, reconnect, resend) and failover to the other servers.
//!
//! Run some REP servers (any libzmq REP server works), for example
//! `cargo run --example server_on_port 5556` (and 5557, 5558), then
//! `cargo run --example lazy_pirate_client 5556 5557 5558 [--interval-ms 1000]
//! [--count N]`. It sends "Hello 00000000", "Hello 00000001", ... and prints each
//! reply. Kill a server: the client goes on over the others, no number skipped and
//! none answered twice; restart it: it gets requests again.

use std::time::Duration;

use zmtp_rpc::{Client, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ports = Vec::new();
    let mut interval = Duration::from_secs(1);
    let mut count = u64::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--interval-ms" => {
                interval = Duration::from_millis(args.next().ok_or("--interval-ms N")?.parse()?)
            }
            "--count" => count = args.next().ok_or("--count N")?.parse()?,
            port => ports.push(port.parse::<u16>()?),
        }
    }
    if ports.is_empty() {
        return Err("usage: lazy_pirate_client PORT... [--interval-ms N] [--count N]".into());
    }
    let client = Client::builder()
        .endpoints(ports.iter().map(|p| format!("tcp://127.0.0.1:{p}")))
        .attempt_timeout(Duration::from_millis(1000))
        .call_timeout(Duration::from_secs(10))
        .retries(3)
        // With every server down, wait (within the deadline) for one to come back
        // rather than fail at once: Lazy Pirate rides over restarts.
        .wait_for_ready(true)
        .connect()
        .await?;
    let mut n = 0u64;
    while n < count {
        let request = format!("Hello {n:08}");
        match client.request(request.as_str()).await {
            Ok(reply) => {
                println!("{}", text(&reply));
                n += 1;
                tokio::time::sleep(interval).await;
            }
            // Every server down past the deadline: say so, and try the same number again.
            Err(e) => {
                eprintln!("{request}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let s = client.stats();
    eprintln!(
        "{} requests, {} retries, {} failovers, {} reconnects",
        s.calls, s.retries, s.failovers, s.reconnects
    );
    Ok(())
}

fn text(m: &Message) -> String {
    m.frames()
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}
