//! `zmtp-rpc bench`: callers calling one method for a while; a progress bar meanwhile,
//! then calls per second and latency percentiles (HdrHistogram).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use zmtp_rpc::{CallOptions, Client, MethodInfo, RpcError, Status};

/// Runs `concurrency` callers of `method` for `length`, then prints the figures.
pub async fn run(
    client: Client,
    method: &'static MethodInfo,
    args: zmtp_rpc::Payload,
    timeout: Duration,
    concurrency: usize,
    length: Duration,
) -> Result<(), RpcError> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + length;
    let bar = ProgressBar::new(length.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, args) = (client.clone(), args.clone());
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                // Microseconds, 1 us to 60 s, three significant digits.
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .expect("valid histogram bounds");
                while Instant::now() < end {
                    let opts = CallOptions {
                        timeout: Some(timeout),
                        ..CallOptions::default()
                    };
                    let t0 = Instant::now();
                    let r = client.call(method, args.clone(), opts).await;
                    let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    match r {
                        Ok(reply) if reply.status == Status::Ok => {
                            let _ = h.record(us.max(1));
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                h
            })
        })
        .collect();
    let start = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!(
            "{:.0} calls/s",
            done.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for c in callers {
        if let Ok(h) = c.await {
            let _ = all.add(h);
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    println!(
        "{} calls in {secs:.1} s: {:.0} calls/s, {} failed, {concurrency} callers",
        ok,
        ok as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
    println!("latency (us):");
    for p in [50.0, 90.0, 99.0, 99.9, 100.0] {
        println!("  p{p:<5} {:>10}", all.value_at_quantile(p / 100.0));
    }
    Ok(())
}
