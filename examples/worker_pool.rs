//! The main job: a pool of worker processes serving one reliable client, surviving a
//! worker killed mid-run and picking it up again when it comes back.
//!
//! Run: `cargo run --release --example worker_pool [-- --workers 3 --calls 6000
//! --concurrency 8 --delay-ms 2]`. It starts the workers (this same program with the
//! `worker` subcommand), drives calls through them, SIGKILLs one at a third of the
//! run, restarts it on the same port at two thirds, and prints calls per worker,
//! retries, failovers, the slowest call, and whether any call failed (exit code 1 if
//! one did).
//!
//! `worker_pool worker --port P [--delay-ms D]` runs one worker alone.

#[path = "common/work.rs"]
mod work;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use work::WorkClient;
use zmtp_rpc::Client;

struct Opts {
    workers: usize,
    calls: u64,
    concurrency: usize,
    delay_ms: u64,
}

fn parse(args: &[String]) -> Result<Opts, Box<dyn std::error::Error>> {
    let mut o = Opts {
        workers: 3,
        calls: 6000,
        concurrency: 8,
        delay_ms: 2,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--workers" => o.workers = v.parse()?,
            "--calls" => o.calls = v.parse()?,
            "--concurrency" => o.concurrency = v.parse()?,
            "--delay-ms" => o.delay_ms = v.parse()?,
            _ => return Err(format!("unknown flag {a}").into()),
        }
    }
    if o.workers < 2 {
        return Err("--workers must be at least 2 (one is killed)".into());
    }
    Ok(o)
}

/// Starts a worker process on `port` (0: any) and returns it with its port.
async fn spawn_worker(
    port: u16,
    delay_ms: u64,
) -> Result<(Child, u16), Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "worker",
            "--port",
            &port.to_string(),
            "--delay-ms",
            &delay_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .ok_or("worker exited")?;
    let port = line
        .strip_prefix("READY ")
        .ok_or_else(|| format!("unexpected worker output {line:?}"))?
        .parse()?;
    Ok((child, port))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return work::worker_main(&args[1..]).await;
    }
    let o = parse(&args)?;

    let mut workers = Vec::new();
    for _ in 0..o.workers {
        workers.push(spawn_worker(0, o.delay_ms).await?);
    }
    let ports: Vec<u16> = workers.iter().map(|w| w.1).collect();
    println!("started {} workers on ports {ports:?}", ports.len());

    let client = Client::builder()
        .endpoints(ports.iter().map(|p| format!("tcp://127.0.0.1:{p}")))
        .attempt_timeout(Duration::from_millis(250))
        .call_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    client
        .wait_healthy(ports.len(), Duration::from_secs(5))
        .await;
    let work = WorkClient::new(client.clone());

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let per_worker = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(o.calls as usize)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (work, next, done, per_worker, latencies, failures) = (
            work.clone(),
            next.clone(),
            done.clone(),
            per_worker.clone(),
            latencies.clone(),
            failures.clone(),
        );
        let calls = o.calls;
        tasks.push(tokio::spawn(async move {
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= calls {
                    return;
                }
                let start = Instant::now();
                let r = work.process(job, format!("job {job}")).await;
                let took = start.elapsed();
                match r {
                    Ok(d) if d.job == job => {
                        *per_worker.lock().unwrap().entry(d.worker).or_default() += 1;
                        latencies.lock().unwrap().push(took);
                    }
                    Ok(d) => failures
                        .lock()
                        .unwrap()
                        .push(format!("job {job}: got job {}", d.job)),
                    Err(e) => failures.lock().unwrap().push(format!("job {job}: {e}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // The chaos: kill worker 0 at a third, restart it on the same port at two thirds.
    let victim = ports[0];
    while done.load(Ordering::Relaxed) < o.calls / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers[0].0.start_kill()?;
    let _ = workers[0].0.wait().await;
    println!(
        "[{:>6.0?}] SIGKILL worker on port {victim} after {} calls",
        t0.elapsed(),
        done.load(Ordering::Relaxed)
    );
    while done.load(Ordering::Relaxed) < 2 * o.calls / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers[0] = spawn_worker(victim, o.delay_ms).await?;
    println!(
        "[{:>6.0?}] restarted worker on port {victim} after {} calls",
        t0.elapsed(),
        done.load(Ordering::Relaxed)
    );
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed();

    let stats = client.stats();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!();
    println!("| worker port | calls served |");
    println!("|---|---|");
    for (port, n) in per_worker.lock().unwrap().iter() {
        let note = if *port == victim {
            " (killed, restarted)"
        } else {
            ""
        };
        println!("| {port}{note} | {n} |");
    }
    println!();
    println!(
        "calls {} in {elapsed:.2?} ({:.0}/s)",
        o.calls,
        o.calls as f64 / elapsed.as_secs_f64()
    );
    println!(
        "attempts {}  retries {}  failovers {}  attempt timeouts {}  reconnects {}",
        stats.attempts, stats.retries, stats.failovers, stats.timeouts, stats.reconnects
    );
    println!(
        "latency p50 {:?}  p99 {:?}  slowest {:?}",
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    );
    let failures = failures.lock().unwrap();
    if failures.is_empty() {
        println!("no call failed");
        Ok(())
    } else {
        for f in failures.iter().take(10) {
            println!("FAILED {f}");
        }
        Err(format!("{} calls failed", failures.len()).into())
    }
}
