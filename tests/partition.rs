//! A pool across a network that fails, made with Linux network namespaces: the
//! client and one worker (B, on the namespace's loopback) in one namespace, worker A
//! in another, joined by a veth pair (10.99.0.1 and 10.99.0.2). Faults are applied
//! to A's link only: netfilter drops what arrives over it, everything (a partition,
//! or a one-way one) or at random (`numgen random`); a `tbf` qdisc throttles. No traffic leaves the namespaces the test makes; they are deleted
//! at its end.
//!
//! Each test sets the namespaces up and runs itself again inside the client's
//! namespace (`ip netns exec`, the test binary with `--exact` and the names in its
//! environment), where the scenario runs. Needs root (`ip netns`, `tc`, `nft`): run
//! otherwise, the tests fail saying so; CI runs as root and `scripts/test.sh` installs
//! nftables.

mod support;
#[allow(dead_code)]
#[path = "../examples/common/work.rs"]
mod work;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use work::WorkClient;
use zmtp_rpc::transport::zmtp::HeartbeatConfig;
use zmtp_rpc::{Balance, Client, HealthState, RpcError};

const ATTEMPT: Duration = Duration::from_millis(200);
const HEARTBEAT: Duration = Duration::from_millis(100);
const HB_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECT: Duration = Duration::from_millis(300);
const RECONNECT_MAX: Duration = Duration::from_millis(200);
/// How long the partition of the first test lasts.
const PARTITION: Duration = Duration::from_millis(3500);
const CALL: Duration = Duration::from_secs(2);
/// Time a call may take past its deadline before the test calls it late (the
/// scheduler of a shared machine).
const LATE: Duration = Duration::from_millis(250);

/// One test at a time: each starts two workers and many calls.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
static NETS: AtomicU32 = AtomicU32::new(0);
/// In the copy that runs inside the client's namespace: the two namespaces' names.
const INSIDE: &str = "ZMTP_RPC_PARTITION_NETNS";
/// Longest a scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

/// Runs a command to its end; fails the test with its output if it fails.
fn run(args: &[&str], stdin: Option<&str>) {
    let mut child = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is iproute2/nftables installed?)"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; deleted (with the pair) on drop by the
/// process that made them.
struct Net {
    client: String,
    worker: String,
    owned: bool,
}

/// Which of A's sides drops what it sends.
enum Cut {
    /// Both: a partition.
    Both,
    /// One way: the client's requests arrive, A's replies (and ACKs) are lost.
    Replies,
}

impl Net {
    fn new() -> Net {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap();
        let root = euid == "0";
        assert!(
            root,
            "the partition tests need root for network namespaces (ip netns, tc, nft); \
             run them as root (CI does)"
        );
        let n = format!(
            "{}-{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        let net = Net {
            client: format!("zrpc-c{n}"),
            worker: format!("zrpc-w{n}"),
            owned: true,
        };
        let (c, w) = (net.client.as_str(), net.worker.as_str());
        run(&["ip", "netns", "add", c], None);
        run(&["ip", "netns", "add", w], None);
        for cmd in [
            vec!["ip", "-n", c, "link", "set", "lo", "up"],
            vec!["ip", "-n", w, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", c, "link", "add", "vc", "type", "veth", "peer", "name", "vw", "netns",
                w,
            ],
            vec!["ip", "-n", c, "addr", "add", "10.99.0.1/24", "dev", "vc"],
            vec!["ip", "-n", w, "addr", "add", "10.99.0.2/24", "dev", "vw"],
            vec!["ip", "-n", c, "link", "set", "vc", "up"],
            vec!["ip", "-n", w, "link", "set", "vw", "up"],
        ] {
            run(&cmd, None);
        }
        // SYNs retried with exponential backoff from the first (1 s, 3 s, 7 s, ...),
        // as kernels before 6.7 do; newer ones retry the first four a second apart
        // (`tcp_syn_linear_timeouts`), which hides what a connect without a timeout
        // costs behind a partition.
        let linear = "net/ipv4/tcp_syn_linear_timeouts";
        if Path::new("/proc/sys").join(linear).exists() {
            let set = format!("echo 0 > /proc/sys/{linear}");
            run(&["ip", "netns", "exec", c, "sh", "-c", &set], None);
        }
        net
    }

    /// One side's namespace and its end of the link.
    fn side(&self, client_side: bool) -> (&str, &str) {
        match client_side {
            true => (&self.client, "vc"),
            false => (&self.worker, "vw"),
        }
    }

    /// `tc qdisc replace` on one side's end of the link (what it sends).
    fn qdisc(&self, client_side: bool, spec: &[&str]) {
        let (ns, dev) = self.side(client_side);
        let mut args = vec!["ip", "netns", "exec", ns, "tc", "qdisc", "replace"];
        args.extend_from_slice(&["dev", dev, "root"]);
        args.extend_from_slice(spec);
        run(&args, None);
    }

    /// Packets arriving at one side over the link dropped, all (`None`) or each with
    /// a probability in percent. Dropped where they arrive, as a network loses them:
    /// a packet its own host drops (a qdisc) is retried by TCP every 500 ms, which
    /// hides what a partition does to a connect's backoff.
    fn drop_arriving(&self, client_side: bool, percent: Option<u32>) {
        let (ns, dev) = self.side(client_side);
        let random = percent.map_or(String::new(), |p| format!("numgen random mod 100 < {p} "));
        let rules = format!(
            "table inet fault {{ chain i {{ type filter hook input priority 0; \
             iifname {dev} {random}drop; }}; }}\n"
        );
        run(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&rules));
    }

    fn cut(&self, how: Cut) {
        self.drop_arriving(true, None);
        if matches!(how, Cut::Both) {
            self.drop_arriving(false, None);
        }
    }

    /// Each packet between A and the client lost with this probability, each way.
    fn loss(&self, percent: u32) {
        self.drop_arriving(true, Some(percent));
        self.drop_arriving(false, Some(percent));
    }

    /// Both directions of A's link limited to `rate` (tc units, e.g. `1mbit`).
    fn throttle(&self, rate: &str) {
        for client_side in [true, false] {
            let spec = ["tbf", "rate", rate, "burst", "16kb", "latency", "500ms"];
            self.qdisc(client_side, &spec);
        }
    }

    /// Every fault removed: qdiscs back to the default, drop rules deleted (no error
    /// when there is none).
    fn heal(&self) {
        for client_side in [true, false] {
            let (ns, dev) = self.side(client_side);
            for cmd in [
                &["tc", "qdisc", "del", "dev", dev, "root"][..],
                &["nft", "delete", "table", "inet", "fault"][..],
            ] {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "exec", ns])
                    .args(cmd)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for ns in [&self.client, &self.worker] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// A worker process in namespace `ns`, serving on `host`, logging every execution
/// (`request_id method`) under `log`. Killed on drop.
struct Worker {
    _proc: support::Spawned,
    endpoint: String,
    log: PathBuf,
}

impl Worker {
    async fn start(ns: &str, host: &str, log: PathBuf) -> Worker {
        std::fs::create_dir_all(&log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(support::worker_exe())
            .args(["worker", "--host", host, "--port", "0", "--log"])
            .arg(&log);
        let proc = support::spawn_first_line(cmd).await;
        let port: u16 = proc.first.strip_prefix("READY ").unwrap().parse().unwrap();
        Worker {
            _proc: proc,
            endpoint: format!("tcp://{host}:{port}"),
            log,
        }
    }

    /// Request ids this worker ran, with their method and how many times each.
    fn executions(&self) -> HashMap<(String, String), u32> {
        let mut runs = HashMap::new();
        for f in std::fs::read_dir(&self.log).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            for line in text.lines() {
                let (id, method) = line.split_once(' ').unwrap();
                *runs
                    .entry((id.to_string(), method.to_string()))
                    .or_insert(0) += 1;
            }
        }
        runs
    }
}

/// The pool of the tests: A behind the faulty link, B beside the client.
struct Pool {
    a: Worker,
    b: Worker,
    client: Client,
    work: WorkClient,
}

impl Pool {
    async fn start(net: &Net, logs: &Path, balance: Balance) -> Pool {
        let a = Worker::start(&net.worker, "10.99.0.2", logs.join("a")).await;
        let b = Worker::start(&net.client, "127.0.0.1", logs.join("b")).await;
        let client = Client::builder()
            .endpoints([a.endpoint.clone(), b.endpoint.clone()])
            .attempt_timeout(ATTEMPT)
            .call_timeout(CALL)
            .retries(5)
            .balance(balance)
            .heartbeat(Some(HeartbeatConfig {
                interval: HEARTBEAT,
                timeout: HB_TIMEOUT,
                ttl: Duration::ZERO,
            }))
            .connect_timeout(CONNECT)
            .reconnect(Duration::from_millis(50), RECONNECT_MAX)
            .rng_seed(11)
            .connect()
            .await
            .unwrap();
        assert!(
            client.wait_healthy(2, Duration::from_secs(5)).await,
            "both workers up: {:?}",
            client.stats()
        );
        let work = WorkClient::new(client.clone());
        Pool { a, b, client, work }
    }

    /// Waits (10 s at most) until A is healthy, not merely eligible.
    async fn wait_a_healthy(&self) {
        let start = Instant::now();
        while self.a_stats().health != HealthState::Healthy {
            let stats = self.a_stats();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "A not healthy: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn a_stats(&self) -> zmtp_rpc::EndpointStats {
        self.client.stats().endpoints[0].clone()
    }
}

/// How a batch of calls ended.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: HashMap<&'static str, u64>,
    slowest: Duration,
}

impl Tally {
    fn calls(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// `callers` tasks making `each` calls of `process` with `size`-byte payloads; every
/// reply is checked by content, every call must end by its deadline.
async fn calls(work: &WorkClient, callers: u64, each: u64, size: usize) -> Tally {
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for t in 0..callers {
        let (work, tally) = (work.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let job = t * 1_000_000 + i;
                let payload = format!("{job:0size$}");
                let t0 = Instant::now();
                let r = work.process(job, payload.clone()).await;
                let took = t0.elapsed();
                assert!(took <= CALL + LATE, "call {job} took {took:?}");
                let mut tally = tally.lock().unwrap();
                tally.slowest = tally.slowest.max(took);
                match r {
                    Ok(d) => {
                        assert_eq!((d.job, d.payload), (job, payload), "reply for another call");
                        tally.ok += 1;
                    }
                    Err(e) => *tally.errors.entry(kind(&e)).or_insert(0) += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

/// A typed error's kind, for the tallies; anything else fails the test.
fn kind(e: &RpcError) -> &'static str {
    match e {
        RpcError::DeadlineExceeded => "deadline_exceeded",
        RpcError::Unavailable { .. } => "unavailable",
        RpcError::Indeterminate(_) => "indeterminate",
        RpcError::Overloaded(_) => "overloaded",
        other => panic!("unexpected error {other:?}"),
    }
}

/// Runs `body` in the client's namespace: outside, sets the namespaces up and runs
/// this test (`test`, its name) again inside, with `ip netns exec`; inside, runs it.
fn scenario(test: &str, body: impl FnOnce(&Net)) {
    if let Ok(names) = std::env::var(INSIDE) {
        let (client, worker) = names.split_once(' ').unwrap();
        let net = Net {
            client: client.into(),
            worker: worker.into(),
            owned: false,
        };
        return body(&net);
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::new();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &net.client])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, format!("{} {}", net.client, net.worker))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > SCENARIO_LIMIT {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in namespace {} failed ({:?}):\n{stdout}\n{stderr}",
        net.client,
        out.status
    );
    eprintln!("{stderr}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn logs_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zmtp-rpc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_partition_fails_calls_over_marks_the_worker_down_and_heals() {
    scenario(
        "a_partition_fails_calls_over_marks_the_worker_down_and_heals",
        |net| {
            let logs = logs_dir("partition");
            runtime().block_on(async {
                let pool = Pool::start(net, &logs, Balance::RoundRobin).await;
                calls(&pool.work, 2, 20, 64).await;
                assert!(pool.a_stats().replies > 0, "A served before the cut");

                net.cut(Cut::Both);
                let cut_at = Instant::now();
                let t = calls(&pool.work, 4, 50, 64).await;
                assert_eq!(t.ok, 200, "every call failed over: {t:?}");
                assert!(t.slowest <= ATTEMPT * 2, "slowest call {:?}", t.slowest);
                // Marked down within the heartbeat timeout and a PING interval (twice
                // that: a wall-clock test keeps a margin of 2x).
                let deadline = cut_at + (HB_TIMEOUT + HEARTBEAT) * 2;
                while pool.a_stats().health == HealthState::Healthy {
                    assert!(
                        Instant::now() < deadline,
                        "A still healthy behind a partition"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // A partition that lasts: past the kernel's second SYN retransmission
                // (1 s, then 3 s), which a connect without a timeout would wait for.
                let sent = pool.a_stats().sent;
                while cut_at.elapsed() < PARTITION {
                    let t = calls(&pool.work, 4, 50, 64).await;
                    assert_eq!(t.ok, 200, "{t:?}");
                    assert!(t.slowest < ATTEMPT, "a call waited on A: {:?}", t.slowest);
                }
                assert_eq!(pool.a_stats().sent, sent, "calls sent to A marked down");

                net.heal();
                // Back within a connect timeout and a reconnect delay (2x margin).
                let back = (CONNECT + RECONNECT_MAX) * 2 + HB_TIMEOUT;
                assert!(
                    pool.client.wait_healthy(2, back).await,
                    "A not back {back:?} after the partition healed: {:?}",
                    pool.client.stats()
                );
                let replies = pool.a_stats().replies;
                calls(&pool.work, 2, 20, 64).await;
                assert!(pool.a_stats().replies > replies, "A serves again");
            });
            let _ = std::fs::remove_dir_all(&logs);
        },
    );
}

/// 20% of A's packets lost each way, then A's link throttled to 1 Mbit/s: calls with
/// 8 KiB payloads from 8 callers all end by their deadlines, `Ok` or a typed error,
/// the tallies add up, and no request id runs twice on one worker.
#[test]
fn lossy_and_throttled_links_end_every_call_by_its_deadline() {
    scenario(
        "lossy_and_throttled_links_end_every_call_by_its_deadline",
        |net| {
            let logs = logs_dir("lossy");
            runtime().block_on(async {
                let pool = Pool::start(net, &logs, Balance::RoundRobin).await;
                let mut made = 0;
                let mut ok = 0;
                for fault in ["loss", "throttle"] {
                    net.heal();
                    // Each fault meets A healthy (the last one left it suspect).
                    pool.wait_a_healthy().await;
                    match fault {
                        "loss" => net.loss(20),
                        _ => net.throttle("1mbit"),
                    }
                    let sent = pool.a_stats().sent;
                    let t = calls(&pool.work, 8, 40, 8 * 1024).await;
                    eprintln!("{fault}: {t:?}, A: {:?}", pool.a_stats());
                    assert_eq!(t.calls(), 320, "{fault}: {t:?}");
                    assert!(pool.a_stats().sent > sent, "{fault}: A was tried");
                    made += t.calls();
                    ok += t.ok;
                }
                let stats = pool.client.stats();
                assert_eq!(stats.calls, made, "{stats:?}");
                assert_eq!(stats.succeeded, ok, "{stats:?}");
                assert_eq!(stats.succeeded + stats.failed, stats.calls, "{stats:?}");
                for (name, w) in [("A", &pool.a), ("B", &pool.b)] {
                    let twice: Vec<_> =
                        w.executions().into_iter().filter(|(_, n)| *n > 1).collect();
                    assert!(twice.is_empty(), "{name} ran request ids twice: {twice:?}");
                }
            });
            let _ = std::fs::remove_dir_all(&logs);
        },
    );
}

/// A's replies lost, its requests delivered: no request id runs twice on one worker,
/// and an `at_most_once` call runs at most once anywhere (those A ran end
/// `Indeterminate`, never resent to B).
#[test]
fn a_one_way_partition_keeps_dedup_and_at_most_once() {
    scenario("a_one_way_partition_keeps_dedup_and_at_most_once", |net| {
        let logs = logs_dir("one-way");
        runtime().block_on(async {
            let pool = Pool::start(net, &logs, Balance::RoundRobin).await;
            calls(&pool.work, 2, 10, 64).await;

            net.cut(Cut::Replies);
            let mut tasks = Vec::new();
            for t in 0..4u64 {
                let work = pool.work.clone();
                tasks.push(tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for i in 0..25 {
                        let job = t * 1000 + i;
                        let charge = work.charge(job, 0).await.map(|_| ());
                        let process = work.process(job, "p".into()).await.map(|_| ());
                        outcomes.push((charge.map_err(|e| kind(&e)), process.is_ok()));
                    }
                    outcomes
                }));
            }
            let mut charges = HashMap::<Result<(), &str>, u64>::new();
            for t in tasks {
                for (charge, _) in t.await.unwrap() {
                    *charges.entry(charge).or_insert(0) += 1;
                }
            }
            eprintln!("charges: {charges:?}, A: {:?}", pool.a_stats());
            assert!(
                charges.get(&Err("indeterminate")).is_some_and(|n| *n > 0),
                "no charge reached A behind the one-way cut: {charges:?}"
            );
            net.heal();

            let (a, b) = (pool.a.executions(), pool.b.executions());
            for (name, runs) in [("A", &a), ("B", &b)] {
                let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
                assert!(twice.is_empty(), "{name} ran request ids twice: {twice:?}");
            }
            let charge = |runs: &HashMap<(String, String), u32>| -> Vec<String> {
                runs.keys()
                    .filter(|(_, m)| m.ends_with("charge"))
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            let on_a = charge(&a);
            let both: Vec<_> = charge(&b)
                .into_iter()
                .filter(|id| on_a.contains(id))
                .collect();
            assert!(
                both.is_empty(),
                "at_most_once calls ran on both workers: {both:?}"
            );
            let ran = on_a.len() as u64 + charge(&b).len() as u64;
            let ok = charges.get(&Ok(())).copied().unwrap_or(0);
            assert!(ran >= ok, "{ok} charges answered Ok, {ran} ran");
        });
        let _ = std::fs::remove_dir_all(&logs);
    });
}
