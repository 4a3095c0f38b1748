//! Failover cost: three workers and a steady stream of calls; one worker SIGKILLed,
//! then another SIGSTOPped. For each event: the slowest call around it and the time
//! until calls stop going to the dead worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zmtp_rpc::transport::zmtp::HeartbeatConfig;
use zmtp_rpc::Client;

use crate::rows::EchoClient;

const ATTEMPT: Duration = Duration::from_millis(100);
const HB_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs the failover measurement and prints its table.
pub async fn run() {
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(crate::spawn_server("rpc", &[]).await);
    }
    let client = Client::builder()
        .endpoints(
            workers
                .iter()
                .map(|w| format!("tcp://127.0.0.1:{}", w.port)),
        )
        .attempt_timeout(ATTEMPT)
        .heartbeat(Some(HeartbeatConfig {
            interval: Duration::from_millis(100),
            timeout: HB_TIMEOUT,
            ttl: Duration::ZERO,
        }))
        .reconnect(Duration::from_millis(50), Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    client.wait_healthy(3, Duration::from_secs(10)).await;
    let echo = EchoClient::new(client.clone());
    let stop = Arc::new(AtomicBool::new(false));
    // (end time, latency) of every call.
    let log = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::new()));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (echo, stop, log) = (echo.clone(), stop.clone(), log.clone());
        callers.push(tokio::spawn(async move {
            let p = bytes::Bytes::from_static(&[7u8; 64]);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                echo.echo(zmtp_rpc::Blob(p.clone()))
                    .await
                    .expect("call failed during failover");
                log.lock().unwrap().push((Instant::now(), t0.elapsed()));
            }
        }));
    }
    // Samples of each endpoint's `sent` counter, to see when calls stop going there.
    let sampler = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let st = client.stats();
                samples.push((
                    Instant::now(),
                    st.endpoints.iter().map(|e| e.sent).collect::<Vec<_>>(),
                ));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill_at = Instant::now();
    workers[0].child.start_kill().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stop_at = Instant::now();
    let pid = workers[1].child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let samples = sampler.await.unwrap();
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();

    let log = log.lock().unwrap();
    let slowest = |from: Instant, to: Instant| {
        log.iter()
            .filter(|(end, lat)| *end >= from && *end - *lat <= to)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or_default()
    };
    // Last time the endpoint's sent counter rose after the event.
    let last_send = |idx: usize, after: Instant| {
        let mut last = after;
        let mut prev = None;
        for (t, sent) in samples.iter() {
            if let Some(p) = prev {
                if sent[idx] > p && *t >= after {
                    last = *t;
                }
            }
            prev = Some(sent[idx]);
        }
        last - after
    };
    println!();
    println!("| failover event | slowest call around it | calls stop going there after | bound |");
    println!("|---|---|---|---|");
    println!(
        "| SIGKILL worker | {:.1} ms | {:.1} ms | one reconnect |",
        ms(slowest(kill_at, kill_at + Duration::from_millis(900))),
        ms(last_send(0, kill_at))
    );
    println!(
        "| SIGSTOP worker | {:.1} ms | {:.1} ms | attempt timeout {} ms + 10 ms; heartbeat timeout {} ms |",
        ms(slowest(stop_at, stop_at + Duration::from_millis(1400))),
        ms(last_send(1, stop_at)),
        ATTEMPT.as_millis(),
        HB_TIMEOUT.as_millis()
    );
    let st = client.stats();
    println!(
        "calls {} attempts {} retries {} failovers {} timeouts {} reconnects {}",
        st.calls, st.attempts, st.retries, st.failovers, st.timeouts, st.reconnects
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
