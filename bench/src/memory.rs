//! Memory: the RPC server's resident memory with 1,000 and 10,000 idle client
//! connections (each a completed ZMTP handshake), per connection. The file-descriptor
//! limit is raised here, for this process and the server, not in the library.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zmtp_rpc::transport::zmtp::Greeting;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Re-executes once under `ulimit -n <hard limit>`, so that 10,000 connections fit.
fn ensure_fd_limit() {
    if std::env::var("ZMTP_BENCH_ULIMIT").is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" memory")
        .arg(exe)
        .env("ZMTP_BENCH_ULIMIT", "1")
        .status()
        .expect("sh");
    std::process::exit(status.code().unwrap_or(1));
}

async fn idle_connection(port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut hello = Greeting::null().encode().to_vec();
    hello.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER");
    s.write_all(&hello).await?;
    // The server's greeting (64) and READY (27 bytes for a ROUTER): the handshake is done.
    let mut buf = [0u8; 91];
    s.read_exact(&mut buf).await?;
    Ok(s)
}

/// Runs the memory measurement and prints its table.
pub fn run(rt: &tokio::runtime::Runtime) {
    ensure_fd_limit();
    rt.block_on(async {
        let server = crate::spawn_server("rpc", &[("BENCH_NO_HEARTBEAT", "1")]).await;
        let pid = server.child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = rss_kib(pid);
        println!();
        println!("| idle connections | server RSS | per connection |");
        println!("|---|---|---|");
        let mut conns = Vec::new();
        for target in [1_000usize, 10_000] {
            while conns.len() < target {
                match idle_connection(server.port).await {
                    Ok(s) => conns.push(s),
                    Err(e) => {
                        println!(
                            "| {target} | failed after {} connections: {e} | |",
                            conns.len()
                        );
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = rss_kib(pid);
            println!(
                "| {target} | {:.1} MiB | {:.1} KiB |",
                rss as f64 / 1024.0,
                rss.saturating_sub(base) as f64 / target as f64
            );
        }
    });
}
