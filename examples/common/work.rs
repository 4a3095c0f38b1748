//! The demo "work" service shared by `worker_pool` and the reliability tests: its
//! definition, an implementation that records what it ran, and a worker `main`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zmtp_rpc::{rpc_service, RequestContext, Server};

/// What a worker answers for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The job number sent.
    pub job: u64,
    /// The payload sent, echoed.
    pub payload: String,
    /// Port of the worker that ran it.
    pub worker: u16,
}

/// What a worker has run so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Handler executions.
    pub executions: u64,
    /// Request ids that ran more than once on this worker process.
    pub duplicates: u64,
    /// Executions of `charge`.
    pub charges: u64,
}

/// The demo service.
#[rpc_service(name = "work")]
pub trait Work {
    /// Runs a job (after the worker's configured delay) and says who ran it.
    async fn process(&self, job: u64, payload: String) -> Done;
    /// Runs a job that takes `ms` milliseconds.
    async fn slow(&self, job: u64, ms: u64) -> Done;
    /// A non-idempotent operation: never resent once it may have run.
    #[rpc(at_most_once)]
    async fn charge(&self, job: u64, ms: u64) -> Done;
    /// What this worker has run.
    async fn report(&self) -> Report;
}

/// A worker: counts executions per request id, optionally logs them to a file.
pub struct Worker {
    /// Known once the server is bound.
    port: AtomicU16,
    delay: Duration,
    seen: Mutex<HashMap<zmtp_rpc::RequestId, u32>>,
    report: Mutex<Report>,
    log: OnceLock<Mutex<std::fs::File>>,
}

impl Worker {
    fn record(&self, charge: bool) {
        let Some(ctx) = RequestContext::current() else {
            return;
        };
        let mut seen = self.seen.lock().unwrap();
        let n = seen.entry(ctx.request_id).or_insert(0);
        *n += 1;
        let mut r = self.report.lock().unwrap();
        r.executions += 1;
        if *n > 1 {
            r.duplicates += 1;
        }
        if charge {
            r.charges += 1;
        }
        if let Some(log) = self.log.get() {
            // One write per line: survives SIGKILL.
            let _ = writeln!(log.lock().unwrap(), "{} {}", ctx.request_id, ctx.method);
        }
        // The test for at_most_once waits for this line before killing the worker.
        if charge {
            println!("RECEIVED charge");
        }
    }

    fn done(&self, job: u64, payload: String) -> Done {
        Done {
            job,
            payload,
            worker: self.port.load(Ordering::Relaxed),
        }
    }
}

impl Work for Worker {
    async fn process(&self, job: u64, payload: String) -> Done {
        self.record(false);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.done(job, payload)
    }
    async fn slow(&self, job: u64, ms: u64) -> Done {
        self.record(false);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.done(job, String::new())
    }
    async fn charge(&self, job: u64, ms: u64) -> Done {
        self.record(true);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.done(job, String::new())
    }
    async fn report(&self) -> Report {
        self.report.lock().unwrap().clone()
    }
}

/// `worker --port P [--host H] [--delay-ms D] [--log DIR]`: serves `work` on H:P
/// (127.0.0.1 unless told) and prints `READY <port>` once listening.
pub async fn worker_main(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 0u16;
    let mut host = "127.0.0.1".to_string();
    let mut delay = 0u64;
    let mut log_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = it.next().ok_or("--port P")?.parse()?,
            "--host" => host = it.next().ok_or("--host H")?.clone(),
            "--delay-ms" => delay = it.next().ok_or("--delay-ms D")?.parse()?,
            "--log" => log_dir = Some(it.next().ok_or("--log DIR")?.clone()),
            other => return Err(format!("unknown worker flag {other}").into()),
        }
    }
    let worker = Arc::new(Worker {
        port: AtomicU16::new(0),
        delay: Duration::from_millis(delay),
        seen: Mutex::new(HashMap::new()),
        report: Mutex::new(Report::default()),
        log: OnceLock::new(),
    });
    let server = Server::builder()
        .bind(format!("tcp://{host}:{port}"))
        .add_service(WorkServer::from_arc(worker.clone()))
        .start()
        .await?;
    let port = server.endpoints()[0].port().unwrap_or(port);
    worker.port.store(port, Ordering::Relaxed);
    if let Some(d) = log_dir {
        let path = format!("{d}/exec-{port}-{}.log", std::process::id());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let _ = worker.log.set(Mutex::new(file));
    }
    println!("READY {port}");
    server.wait().await;
    Ok(())
}
