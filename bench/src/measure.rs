//! Measurement: knobs, bounded phases, per-call timing, nearest-rank percentiles.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    env_opt(key).unwrap_or(default)
}

/// The variable `key`, parsed; none when unset or unparsable.
pub fn env_opt<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// Knobs from BENCH_* variables.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Payload bytes.
    pub payload: usize,
    /// Warm-up calls (per caller).
    pub warmup: usize,
    /// Warm-up time cap.
    pub warmup_secs: f64,
    /// Measured calls (per caller).
    pub count: usize,
    /// Measured time cap.
    pub secs: f64,
    /// Concurrent callers.
    pub conc: usize,
    /// Connections of the typed RPC client to its server.
    pub conns: usize,
}

impl Knobs {
    /// From the environment.
    pub fn from_env() -> Knobs {
        Knobs {
            payload: env_or("BENCH_PAYLOAD", 64),
            warmup: env_or("BENCH_WARMUP", 2000),
            warmup_secs: env_or("BENCH_WARMUP_SECS", 0.5),
            count: env_or("BENCH_COUNT", 20_000),
            secs: env_or("BENCH_SECS", 3.0),
            conc: env_or("BENCH_CONC", 1usize).max(1),
            conns: env_or("BENCH_CONNS", 1usize).max(1),
        }
    }

    /// The payload bytes.
    pub fn payload_bytes(&self) -> bytes::Bytes {
        (0..self.payload)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

/// Latencies of one measured phase.
#[derive(Debug, Default)]
pub struct Sample {
    /// Per-call latencies, nanoseconds.
    pub lat_ns: Vec<u64>,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// CPU time used during the measured phase: this process, and the server's when
    /// BENCH_SERVER_PID names it.
    pub cpu: Option<CpuUse>,
}

/// CPU time (user, system) of a process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// User time.
    pub user: Duration,
    /// System time.
    pub sys: Duration,
}

impl Cpu {
    /// The process's CPU time so far; None when it cannot be read (not Linux).
    pub fn of(pid: u32) -> Option<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): state is the 3rd
        // field, utime the 14th, stime the 15th, in USER_HZ (100) ticks.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| {
            f.get(i)?
                .parse::<u64>()
                .ok()
                .map(|t| Duration::from_millis(t * 10))
        };
        Some(Cpu {
            user: tick(11)?,
            sys: tick(12)?,
        })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }
}

/// CPU used by the client and the server during a measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// This (client) process.
    pub client: Cpu,
    /// The server process, when known.
    pub server: Option<Cpu>,
}

impl CpuUse {
    /// `client_user client_sys server_user server_sys`, µs per call (server -1 when
    /// unknown): the line a client process prints to stderr after `CPU-PER-CALL `.
    pub fn per_call(&self, calls: usize) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / calls.max(1) as f64;
        let (su, ss) = self
            .server
            .map_or((-1.0, -1.0), |s| (us(s.user), us(s.sys)));
        format!(
            "{:.2} {:.2} {su:.2} {ss:.2}",
            us(self.client.user),
            us(self.client.sys)
        )
    }
}

/// Snapshots of this process and the server (BENCH_SERVER_PID).
fn snapshot() -> Option<(Cpu, Option<Cpu>)> {
    let server = std::env::var("BENCH_SERVER_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .and_then(Cpu::of);
    Some((Cpu::of(std::process::id())?, server))
}

impl Sample {
    /// Round trips per second.
    pub fn rate(&self) -> f64 {
        self.lat_ns.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile in microseconds (`lat_ns` must be sorted).
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.lat_ns.len() as f64).ceil() as usize;
        self.lat_ns[rank.clamp(1, self.lat_ns.len()) - 1] as f64 / 1000.0
    }
}

/// One caller: a state and an async call that takes and returns it.
async fn phase<S, F, Fut>(
    mut st: S,
    call: &F,
    max: usize,
    secs: f64,
    lat: &mut Vec<u64>,
) -> (S, Instant, Instant)
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = S>,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut now = start;
    let mut n = 0;
    while n < max && now < deadline {
        let t0 = Instant::now();
        st = call(st).await;
        now = Instant::now();
        lat.push((now - t0).as_nanos() as u64);
        n += 1;
    }
    (st, start, now)
}

/// Runs one caller per state, each in its own spawned task: warm-up, a barrier, then
/// the measured phase. Throughput counts every measured call over the time from the
/// first start to the last end.
pub async fn drive<S, F, Fut>(k: &Knobs, states: Vec<S>, call: F) -> Sample
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(states.len()));
    // CPU counters when the measured phase starts (taken by the barrier's leader).
    let start_cpu = Arc::new(std::sync::Mutex::new(None));
    let mut handles = Vec::new();
    let n = states.len();
    for st in states {
        let (barrier, call, k) = (barrier.clone(), call.clone(), k.clone());
        let start_cpu = start_cpu.clone();
        handles.push(tokio::spawn(async move {
            let mut warm = Vec::new();
            let warmup = if n > 1 {
                (k.warmup / n).max(100)
            } else {
                k.warmup
            };
            let (st, _, _) = phase(st, &call, warmup, k.warmup_secs, &mut warm).await;
            if barrier.wait().await.is_leader() {
                *start_cpu.lock().unwrap() = snapshot();
            }
            let mut lat = Vec::with_capacity(k.count.min(1 << 22));
            let (_st, start, end) = phase(st, &call, k.count, k.secs, &mut lat).await;
            (lat, start, end)
        }));
    }
    let mut all = Vec::new();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for h in handles {
        let (lat, s, e) = h.await.expect("caller task");
        all.extend(lat);
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(e, |l| l.max(e)));
    }
    let cpu = start_cpu
        .lock()
        .unwrap()
        .zip(snapshot())
        .map(|((c0, s0), (c1, s1))| CpuUse {
            client: c1.since(c0),
            server: s1.zip(s0).map(|(s1, s0)| s1.since(s0)),
        });
    all.sort_unstable();
    Sample {
        lat_ns: all,
        elapsed: last.zip(first).map(|(l, f)| l - f).unwrap_or_default(),
        cpu,
    }
}

/// The mode column: `seq` or `cN/Mconn` (`M` as [`crate::rows::measure`] reports it),
/// with BENCH_TAG appended.
pub fn mode(conc: usize, conns: &str) -> String {
    let m = if conc == 1 {
        "seq".to_string()
    } else {
        format!("c{conc}/{conns}conn")
    };
    match std::env::var("BENCH_TAG") {
        Ok(t) if !t.is_empty() => format!("{m} [{t}]"),
        _ => m,
    }
}

/// `| name | mode | rt/s | p50 µs | p99 µs |`
/// A row's figures, as read back from a client process.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Round trips per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
}

impl Measured {
    /// Reads `| name | mode | rt/s | p50 | p99 |`; the connections from the mode.
    pub fn parse(line: &str) -> Option<(Measured, String)> {
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [_, mode, rate, p50, p99] = cols[..] else {
            return None;
        };
        let conns = mode
            .split_once('/')
            .map_or("1", |(_, c)| c.trim_end_matches("conn"))
            .to_string();
        let m = Measured {
            rate: rate.parse().ok()?,
            p50: p50.parse().ok()?,
            p99: p99.parse().ok()?,
        };
        Some((m, conns))
    }
}

pub fn row(name: &str, mode: &str, s: &Sample) -> String {
    format!(
        "| {name} | {mode} | {:.0} | {:.1} | {:.1} |",
        s.rate(),
        s.pct_us(50.0),
        s.pct_us(99.0)
    )
}
