//! `zmtp-bench`: zmtp-rpc against raw tokio TCP, measured in the same run.
//!
//! ```text
//! cargo run --release -p zmtp-bench                 # every row, one table
//! cargo run --release -p zmtp-bench -- latency      # the round-trip rows only
//! cargo run --release -p zmtp-bench -- failover     # SIGKILL / SIGSTOP costs
//! cargo run --release -p zmtp-bench -- memory       # idle connection cost
//! cargo run --release -p zmtp-bench -- balance      # a slow worker; pick cost, 3 vs 300
//! cargo run --release -p zmtp-bench -- codec        # header codec: hand vs rmp-serde
//! zmtp-bench server KIND ADDR / client KIND ADDR    # one side (anchors contender)
//! ```
//! KIND: `tcp` (4-byte length prefix, TCP_NODELAY, one write per frame, reads that take
//! all that is there: one `recv` for a small frame, as in the anchors' raw TCP; a
//! connection per caller), `tcpmux` (the same with all callers on one connection; the
//! suite runs it for 1 MiB with sixteen callers), `reqrep`, `dealer` (DEALER to
//! ROUTER), `rpc` (typed `#[rpc_service]` call through the reliable client, MessagePack
//! encode and decode counted). Knobs (environment): BENCH_PAYLOAD
//! (bytes), BENCH_WARMUP, BENCH_WARMUP_SECS, BENCH_COUNT, BENCH_SECS, BENCH_CONC,
//! BENCH_CONNS (connections of the typed RPC client, default 1), BENCH_BULK_CONNS (its
//! `bulk_connections`, default the client's: 2; `1` keeps one connection),
//! BENCH_TAG, BENCH_ROUNDS (suite: rounds whose medians are printed, default 3),
//! BENCH_PIN (suite: CPUs for `taskset -c`, e.g. `0` to pin server and client to one).
//! BENCH_PAYLOADS, BENCH_CONCS (suite: comma-separated lists, default 64,4096,1048576 and
//! 1,16), BENCH_KINDS (reqrep,dealer,rpc,curve; raw TCP always runs; `curve` is the
//! typed call over CURVE). To measure what the guarantees cost, `rpc` rows read BENCH_NO_HEARTBEAT (neither side), BENCH_NO_CACHE
//! (server without reply cache) and BENCH_CACHE_ENTRIES (the cache's bound).
//! Every server and client are separate processes on 127.0.0.1; callers run
//! in spawned tasks; each call is timed on its own; percentiles are nearest-rank.
//! The suite also reports the CPU time (user + system, from `/proc/<pid>/stat`) the
//! server and the client used per call during the measured phase, and its ratio to
//! raw TCP's: on a shared machine it moves less than calls per second do. A client
//! process prints those figures to stderr (`CPU-PER-CALL`, its own and, given
//! BENCH_SERVER_PID, the server's).

mod balance;
mod codec;
mod failover;
mod floors;
mod measure;
mod memory;
mod rows;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server process of this program, killed on drop.
pub struct ServerProc {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
}

/// A command that runs this program again: under `taskset -c BENCH_PIN` when
/// BENCH_PIN names CPUs (`BENCH_PIN=0`: server and client share CPU 0, where only CPU
/// cost counts).
pub fn own_command() -> Command {
    let exe = std::env::current_exe().expect("own path");
    match pinned_cpus() {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

/// The CPUs BENCH_PIN names, if any.
pub fn pinned_cpus() -> Option<String> {
    std::env::var("BENCH_PIN")
        .ok()
        .filter(|cpus| !cpus.is_empty())
}

/// Starts `zmtp-bench server KIND 127.0.0.1:0` and waits for its `READY <port>`.
pub async fn spawn_server(kind: &str, extra_env: &[(&str, &str)]) -> ServerProc {
    let mut cmd = own_command();
    cmd.args(["server", kind, "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("server ready in time")
        .expect("server stdout")
        .expect("server printed READY");
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .expect("READY <port>");
    ServerProc { child, port }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let what = args.first().map(String::as_str).unwrap_or("all");
    match what {
        "server" => {
            let kind = args.get(1).expect("server KIND ADDR").clone();
            let addr = args.get(2).expect("server KIND ADDR").clone();
            // The serving loop runs on a worker, as the callers do (not on the thread
            // blocked in `block_on`, which would add a thread hop per message).
            rt.block_on(async move {
                tokio::spawn(async move { rows::serve(&kind, &addr).await })
                    .await
                    .expect("server task")
            });
        }
        "client" => {
            let kind = args.get(1).expect("client KIND ADDR");
            let addr = args.get(2).expect("client KIND ADDR");
            rt.block_on(rows::client_row(kind, addr));
        }
        "server-pool" => {
            let host = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1".into());
            rt.block_on(async move {
                tokio::spawn(async move { balance::serve_pool(&host).await })
                    .await
                    .expect("server task")
            });
        }
        "balance" => rt.block_on(balance::run_all()),
        "codec" => codec::run(),
        "latency" => rt.block_on(rows::suite()),
        "failover" => rt.block_on(failover::run()),
        "memory" => memory::run(&rt),
        "all" => {
            rt.block_on(rows::suite());
            rt.block_on(failover::run());
            memory::run(&rt);
        }
        other => {
            eprintln!(
                "unknown command {other}: all | latency | failover | memory | balance | codec | server | client"
            );
            std::process::exit(2);
        }
    }
}
