//! `zmtp-bench balance`: sixteen callers over a pool with one slow worker, by balancing
//! mode; and what picking a member costs with 3 and with 300 endpoints.
//!
//! Workers are processes of this program (`server-pool`), each listening on
//! BENCH_POOL_PORTS ports and answering the echo after BENCH_DELAY_MS; the client
//! runs in this process. Knobs: BENCH_SECS (measured seconds per row, default 5).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use zmtp_rpc::{Aperture, Balance, Blob, Client, Server};

use crate::measure::{env_opt, Cpu};
use crate::rows::{Echo, EchoClient, EchoServer};

/// The echo, after a fixed delay.
struct Delayed(Duration);

impl Echo for Delayed {
    async fn echo(&self, data: Blob) -> Blob {
        if !self.0.is_zero() {
            tokio::time::sleep(self.0).await;
        }
        data
    }
}

/// `server-pool HOST`: serves the delayed echo on BENCH_POOL_PORTS ports of HOST and
/// prints `READY port,port,...`.
pub async fn serve_pool(host: &str) {
    let ports: usize = env_opt("BENCH_POOL_PORTS").unwrap_or(1);
    let delay = Duration::from_millis(env_opt("BENCH_DELAY_MS").unwrap_or(0));
    let mut b = Server::builder();
    if std::env::var("BENCH_NO_HEARTBEAT").is_ok() {
        b = b.heartbeat(None);
    }
    for _ in 0..ports {
        b = b.bind(format!("tcp://{host}:0"));
    }
    let server = b
        .add_service(EchoServer::new(Delayed(delay)))
        .start()
        .await
        .unwrap();
    let list: Vec<String> = server
        .endpoints()
        .iter()
        .map(|e| e.port().unwrap().to_string())
        .collect();
    println!("READY {}", list.join(","));
    server.wait().await;
}

/// Worker processes and the endpoints they listen on.
struct Workers {
    _procs: Vec<Child>,
    endpoints: Vec<String>,
}

/// Starts one process per `(delay_ms, ports)`; `heartbeats: false` turns them off.
async fn start(spec: &[(u64, usize)], heartbeats: bool) -> Workers {
    let mut procs = Vec::new();
    let mut lists: Vec<Vec<String>> = Vec::new();
    for &(delay, ports) in spec {
        let mut cmd = crate::own_command();
        cmd.args(["server-pool", "127.0.0.1"])
            .env("BENCH_DELAY_MS", delay.to_string())
            .env("BENCH_POOL_PORTS", ports.to_string())
            .env(
                if heartbeats {
                    "BENCH_HEARTBEAT"
                } else {
                    "BENCH_NO_HEARTBEAT"
                },
                "1",
            )
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn worker");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("worker ready in time")
            .expect("worker stdout")
            .expect("worker printed READY");
        let list = line.strip_prefix("READY ").expect("READY ports");
        lists.push(
            list.split(',')
                .map(|p| format!("tcp://127.0.0.1:{p}"))
                .collect(),
        );
        procs.push(child);
    }
    // Interleaved by process: neighbours in the list are in different processes, so
    // that round-robin spreads calls over the processes as a draw does (in process
    // order, sixteen callers in a row would mostly keep one process busy and the
    // others asleep, which flatters round-robin).
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let endpoints = (0..longest)
        .flat_map(|k| lists.iter().filter_map(move |l| l.get(k).cloned()))
        .collect();
    Workers {
        _procs: procs,
        endpoints,
    }
}

/// What one row measured.
struct Outcome {
    calls: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Share of replies each endpoint gave.
    shares: Vec<f64>,
    attempts_per_call: f64,
    /// This process's CPU time per call, µs.
    cpu_us: f64,
}

/// `callers` callers of a 64 B echo over `endpoints` for BENCH_SECS, hedged after
/// `hedge` if given.
async fn measure(
    endpoints: &[String],
    balance: Balance,
    callers: usize,
    heartbeats: bool,
    hedge: Option<Duration>,
    aperture: Option<Aperture>,
) -> Outcome {
    let mut b = Client::builder()
        .endpoints(endpoints.iter().cloned())
        .balance(balance);
    if let Some(a) = aperture {
        b = b.aperture(a);
    }
    if let Some(d) = hedge {
        b = b.hedge(d);
    }
    if !heartbeats {
        b = b.heartbeat(None);
    }
    let client = b.connect().await.unwrap();
    // A lazy aperture connects its window only, at the first calls (the warm-up).
    let lazy = aperture.is_some_and(|a| a.linger().is_some());
    assert!(
        lazy || client
            .wait_healthy(endpoints.len(), Duration::from_secs(30))
            .await,
        "pool not up"
    );
    let echo = EchoClient::new(client.clone());
    let payload = Blob(Bytes::from(vec![7u8; 64]));
    // Warm up: connections, estimates.
    let warm = Instant::now() + Duration::from_secs(1);
    run(&echo, &payload, warm, callers).await;
    let before = client.stats();
    let cpu0 = Cpu::of(std::process::id());
    let secs = Duration::from_secs(env_opt("BENCH_SECS").unwrap_or(5));
    let t0 = Instant::now();
    let mut lat = run(&echo, &payload, t0 + secs, callers).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = Cpu::of(std::process::id());
    let after = client.stats();
    lat.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1] as f64 / 1e6
    };
    let replies: Vec<u64> = after
        .endpoints
        .iter()
        .zip(&before.endpoints)
        .map(|(a, b)| a.replies - b.replies)
        .collect();
    let total = replies.iter().sum::<u64>().max(1) as f64;
    let cpu_us = match (cpu0, cpu1) {
        (Some(a), Some(b)) => {
            let used = (b.user + b.sys).saturating_sub(a.user + a.sys);
            used.as_secs_f64() * 1e6 / lat.len().max(1) as f64
        }
        _ => f64::NAN,
    };
    Outcome {
        calls: lat.len(),
        secs: elapsed,
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        shares: replies.iter().map(|r| *r as f64 / total).collect(),
        attempts_per_call: (after.attempts - before.attempts) as f64 / lat.len().max(1) as f64,
        cpu_us,
    }
}

/// `n` callers until `end`; each call's latency in nanoseconds.
async fn run(echo: &EchoClient, payload: &Blob, end: Instant, n: usize) -> Vec<u64> {
    let callers: Vec<_> = (0..n)
        .map(|_| {
            let (echo, payload) = (echo.clone(), payload.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    echo.echo(payload.clone()).await.expect("call");
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in callers {
        all.extend(c.await.unwrap());
    }
    all
}

fn name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round-robin",
        Balance::LeastOutstanding => "least-outstanding",
        Balance::PowerOfTwoChoices => "p2c (default)",
    }
}

/// Runs both tables.
pub async fn run_all() {
    println!("sixteen callers, 64 B echo; workers answer after 2 ms (the slow one 20 ms)");
    println!(
        "| workers | balance | calls/s | p50 ms | p99 ms | share of each worker | attempts/call |"
    );
    println!("|---|---|---|---|---|---|---|");
    let healthy = start(&[(2, 1), (2, 1), (2, 1)], true).await;
    let slow = start(&[(2, 1), (2, 1), (20, 1)], true).await;
    let mut healthy_p99 = f64::NAN;
    // Hedge after 5 ms: above the healthy workers' p99 (~4 ms), far below 20 ms.
    let five = Duration::from_millis(5);
    let rows = [
        ("3 healthy", &healthy, Balance::RoundRobin, None),
        ("3 healthy", &healthy, Balance::PowerOfTwoChoices, None),
        ("2 + 1 slow", &slow, Balance::RoundRobin, None),
        ("2 + 1 slow", &slow, Balance::PowerOfTwoChoices, None),
        ("2 + 1 slow", &slow, Balance::PowerOfTwoChoices, Some(five)),
    ];
    for (label, w, b, hedge) in rows {
        let o = measure(&w.endpoints, b, 16, true, hedge, None).await;
        if label == "3 healthy" && b == Balance::PowerOfTwoChoices {
            healthy_p99 = o.p99_ms;
        }
        let shares: Vec<String> = o
            .shares
            .iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect();
        let hedged = if hedge.is_some() { " + hedge 5 ms" } else { "" };
        println!(
            "| {label} | {}{hedged} | {:.0} | {:.2} | {:.2} | {} | {:.3} |",
            name(b),
            o.calls as f64 / o.secs,
            o.p50_ms,
            o.p99_ms,
            shares.join(" / "),
            o.attempts_per_call
        );
        if label == "2 + 1 slow" && b == Balance::PowerOfTwoChoices {
            println!(
                "p2c{hedged} with a slow worker: p99 {:.2}x the p99 of three healthy workers \
                 (target <= 1.5), {:.1}% extra attempts (target <= 10%)",
                o.p99_ms / healthy_p99,
                (o.attempts_per_call - 1.0) * 100.0
            );
        }
    }
    drop((healthy, slow));

    println!();
    println!(
        "what the pick costs: 64 B echo at once, heartbeats off (300 connections' PINGs \
         would be counted), client CPU per call"
    );
    println!(
        "| endpoints | balance | callers | calls/s | client CPU µs/call | vs 3 endpoints | \
         endpoints called |"
    );
    println!("|---|---|---|---|---|---|---|");
    let three = start(&[(0, 1), (0, 1), (0, 1)], false).await;
    let many = start(&[(0, 100), (0, 100), (0, 100)], false).await;
    let aperture = Some(Aperture::new());
    let lazy = Some(Aperture::new().lazy(Duration::from_secs(30)));
    for callers in [1, 16] {
        let rows = [
            (Balance::PowerOfTwoChoices, None),
            (Balance::PowerOfTwoChoices, aperture),
            (Balance::PowerOfTwoChoices, lazy),
            (Balance::RoundRobin, None),
        ];
        for (b, a) in rows {
            let base = measure(&three.endpoints, b, callers, false, None, None).await;
            let big = measure(&many.endpoints, b, callers, false, None, a).await;
            let with = match a.map(|a| a.linger()) {
                None => "",
                Some(None) => " + aperture",
                Some(Some(_)) => " + lazy aperture",
            };
            for (n, o) in [(3, &base), (300, &big)] {
                let called = o.shares.iter().filter(|s| **s > 0.0).count();
                println!(
                    "| {n} | {}{} | {callers} | {:.0} | {:.2} | {:.2} | {called} |",
                    name(b),
                    if n == 300 { with } else { "" },
                    o.calls as f64 / o.secs,
                    o.cpu_us,
                    o.cpu_us / base.cpu_us
                );
            }
        }
    }
    println!(
        "(sixteen callers over 3 connections share reads and writes; over 300 each \
         message has its own: that, not the pick, is the difference in that row)"
    );
}
