//! The round-trip rows: servers, clients, and the suite that prints them with their
//! ratio to raw TCP measured in the same run.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use zmtp_rpc::transport::{DealerSocket, Message, RepSocket, ReqSocket, RouterSocket};
use zmtp_rpc::{rpc_service, Blob, Client, Server};

use crate::measure::{drive, mode, row, Knobs, Sample};

/// The benchmark service: echo a buffer (MessagePack `bin` both ways).
#[rpc_service(name = "bench")]
pub trait Echo {
    /// Returns `data`.
    async fn echo(&self, data: Blob) -> Blob;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, data: Blob) -> Blob {
        data
    }
}

/// Exits the process after BENCH_SERVER_SECS (default 300): servers stop by themselves.
fn exit_later() {
    let secs = std::env::var("BENCH_SERVER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(secs));
        std::process::exit(0);
    });
}

/// Reads 4-byte-length-prefixed frames from a stream. Every read asks for all the room
/// in the buffer, so a small frame (prefix and body) takes one `recv`, as in the anchors'
/// raw TCP; bytes read past a frame are kept for the next (pipelined frames).
struct Frames {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    /// The next frame, its prefix included.
    async fn next<R: AsyncRead + Unpin>(&mut self, s: &mut R) -> std::io::Result<&[u8]> {
        loop {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
            let have = self.end - self.start;
            let need = match self.buf.get(self.start..self.start + 4) {
                Some(len) if have >= 4 => 4 + u32::from_le_bytes(len.try_into().unwrap()) as usize,
                _ => 4,
            };
            if have >= need {
                self.start += need;
                return Ok(&self.buf[self.start - need..self.start]);
            }
            if self.start + need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, have);
                if need > self.buf.len() {
                    self.buf.resize(need, 0);
                }
            }
            let n = s.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }
}

/// Runs a server of `kind` on `addr` (`127.0.0.1:0`), printing `READY <port>`.
pub async fn serve(kind: &str, addr: &str) {
    exit_later();
    let ep = format!("tcp://{addr}");
    match kind {
        "tcp" | "tcpmux" => {
            let l = TcpListener::bind(addr).await.expect("bind");
            println!("READY {}", l.local_addr().unwrap().port());
            loop {
                let (mut s, _) = l.accept().await.expect("accept");
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = s.split();
                    let mut frames = Frames::new();
                    while let Ok(frame) = frames.next(&mut rd).await {
                        if wr.write_all(frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        "reqrep" => {
            let mut rep = RepSocket::with_options(big());
            println!("READY {}", rep.bind(&ep).await.unwrap().port().unwrap());
            while let Ok(m) = rep.recv().await {
                rep.send(m).await.unwrap();
            }
        }
        "dealer" => {
            let mut router = RouterSocket::with_options(big());
            println!("READY {}", router.bind(&ep).await.unwrap().port().unwrap());
            while let Ok(m) = router.recv().await {
                if router.send(m).await.is_err() {
                    continue;
                }
            }
        }
        "rpc" | "curve" => {
            let mut b = Server::builder()
                .bind(ep)
                .max_message_size(64 << 20)
                .timer(timer());
            if kind == "curve" {
                b = b.curve(bench_keys().0);
            }
            if std::env::var("BENCH_NO_HEARTBEAT").is_ok() {
                b = b.heartbeat(None);
            }
            if std::env::var("BENCH_NO_CACHE").is_ok() {
                b = b.reply_cache_bytes(0);
            }
            if let Ok(n) = std::env::var("BENCH_CACHE_ENTRIES") {
                let n = n.parse().expect("BENCH_CACHE_ENTRIES: a number of entries");
                b = b.reply_cache(n, std::time::Duration::from_secs(60));
            }
            let server = b
                .add_service(EchoServer::new(EchoImpl))
                .start()
                .await
                .unwrap();
            println!("READY {}", server.endpoints()[0].port().unwrap());
            server.wait().await;
        }
        other => panic!("unknown server kind {other}"),
    }
}

/// The server's and the client's CURVE keys of the `curve` rows: fixed, so that the
/// client process knows the server's public key (a benchmark, not a deployment).
fn bench_keys() -> (zmtp_rpc::KeyPair, zmtp_rpc::KeyPair) {
    (
        zmtp_rpc::KeyPair::from_secret_bytes([7; 32]),
        zmtp_rpc::KeyPair::from_secret_bytes([9; 32]),
    )
}

/// The clock of deadlines: BENCH_TIMER=thread for the crate's timer thread, else
/// tokio's (the default of clients and servers).
pub fn timer() -> zmtp_rpc::Timer {
    match std::env::var("BENCH_TIMER").as_deref() {
        Ok("thread") => zmtp_rpc::Timer::Thread,
        Ok("runtime") | Err(_) => zmtp_rpc::Timer::Runtime,
        Ok(other) => panic!("BENCH_TIMER: `thread` or `runtime`, not {other}"),
    }
}

fn big() -> zmtp_rpc::transport::SocketOptions {
    zmtp_rpc::transport::SocketOptions::default()
        .max_message_size(64 << 20)
        .timer(timer())
}

struct Tcp {
    s: TcpStream,
    frame: Vec<u8>,
    frames: Frames,
}

/// Measures `kind` against a server at `addr` with `k.conc` callers; also returns the
/// connections used, for the mode column (`1→2`: the typed client started with one
/// and opened a second for bulk requests).
pub async fn measure(kind: &str, addr: &str, k: &Knobs) -> (Sample, String) {
    let payload = k.payload_bytes();
    let ep = format!("tcp://{addr}");
    match kind {
        "tcp" => {
            let mut conns = Vec::new();
            for _ in 0..k.conc {
                let s = TcpStream::connect(addr).await.expect("connect");
                s.set_nodelay(true).unwrap();
                let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(&payload);
                conns.push(Tcp {
                    s,
                    frame,
                    frames: Frames::new(),
                });
            }
            let s = drive(k, conns, |mut c: Tcp| async move {
                c.s.write_all(&c.frame).await.expect("write");
                let n = c.frames.next(&mut c.s).await.expect("read").len();
                assert_eq!(n, c.frame.len());
                c
            })
            .await;
            (s, k.conc.to_string())
        }
        "tcpmux" => (tcp_mux(addr, k, payload).await, "1".to_string()),
        "reqrep" => {
            let mut socks = Vec::new();
            for _ in 0..k.conc {
                let req = ReqSocket::with_options(big());
                req.connect(&ep).await.unwrap();
                let mut w = req.watch_peers();
                w.wait_for(|n| *n > 0).await.unwrap();
                socks.push((req, payload.clone()));
            }
            let s = drive(k, socks, |(mut req, p): (ReqSocket, Bytes)| async move {
                req.send(Message::single(p.clone())).await.unwrap();
                let r = req.recv().await.unwrap();
                assert_eq!(r.byte_len(), p.len());
                (req, p)
            })
            .await;
            (s, k.conc.to_string())
        }
        "dealer" => {
            let mut socks = Vec::new();
            for _ in 0..k.conc {
                let d = DealerSocket::with_options(big());
                d.connect(&ep).await.unwrap();
                let mut w = d.watch_peers();
                w.wait_for(|n| *n > 0).await.unwrap();
                socks.push((d, payload.clone()));
            }
            let s = drive(k, socks, |(mut d, p): (DealerSocket, Bytes)| async move {
                d.send(Message::from(vec![Bytes::new(), p.clone()]))
                    .await
                    .unwrap();
                let r = d.recv().await.unwrap();
                assert_eq!(r.byte_len(), p.len());
                (d, p)
            })
            .await;
            (s, k.conc.to_string())
        }
        "rpc" | "curve" => {
            let mut b = Client::builder()
                .endpoint(ep)
                .connections_per_endpoint(k.conns)
                .max_message_size(64 << 20)
                .timer(timer());
            if kind == "curve" {
                let (server, client) = bench_keys();
                b = b.curve(client, server.public());
            }
            if let Some(n) = crate::measure::env_opt("BENCH_BULK_CONNS") {
                b = b.bulk_connections(n);
            }
            match std::env::var("BENCH_BALANCE").as_deref() {
                Ok("rr") => b = b.balance(zmtp_rpc::Balance::RoundRobin),
                Ok("p2c") => b = b.balance(zmtp_rpc::Balance::PowerOfTwoChoices),
                Ok(other) => panic!("BENCH_BALANCE: `rr` or `p2c`, not {other}"),
                Err(_) => {}
            }
            if std::env::var("BENCH_NO_HEARTBEAT").is_ok() {
                b = b.heartbeat(None);
            }
            let client = b.connect().await.unwrap();
            client
                .wait_healthy(1, std::time::Duration::from_secs(10))
                .await;
            let echo = EchoClient::new(client.clone());
            let states: Vec<_> = (0..k.conc)
                .map(|_| (echo.clone(), payload.clone()))
                .collect();
            let s = drive(k, states, |(echo, p): (EchoClient, Bytes)| async move {
                let r = echo.echo(Blob(p.clone())).await.expect("call");
                assert_eq!(r.len(), p.len());
                (echo, p)
            })
            .await;
            let now = client.stats().endpoints[0].connections;
            let used = if now == k.conns {
                now.to_string()
            } else {
                format!("{}→{now}", k.conns)
            };
            (s, used)
        }
        other => panic!("unknown client kind {other}"),
    }
}

/// The callers of [`tcp_mux`] share the connection's write half and a queue of the
/// callers waiting for answers, in the order their requests went out.
type Waiting = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<oneshot::Sender<usize>>>>;

/// Raw TCP with all callers on one connection: each writes its frame under a lock and
/// queues itself for the answer; one task reads the answers (the echo server keeps
/// their order) and hands each to the oldest waiting caller. What one TCP connection
/// carries, to compare with the typed client on one connection.
async fn tcp_mux(addr: &str, k: &Knobs, payload: Bytes) -> Sample {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let (mut rd, wr) = s.into_split();
    let waiting = Waiting::default();
    let readers_queue = waiting.clone();
    tokio::spawn(async move {
        let mut frames = Frames::new();
        while let Ok(frame) = frames.next(&mut rd).await {
            let caller = readers_queue.lock().unwrap().pop_front();
            let _ = caller
                .expect("an answer nobody asked for")
                .send(frame.len());
        }
    });
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let frame = Bytes::from(frame);
    let states: Vec<_> = (0..k.conc)
        .map(|_| (wr.clone(), waiting.clone(), frame.clone()))
        .collect();
    type State = (
        std::sync::Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
        Waiting,
        Bytes,
    );
    drive(k, states, |(wr, waiting, frame): State| async move {
        let (tx, rx) = oneshot::channel();
        {
            let mut w = wr.lock().await;
            waiting.lock().unwrap().push_back(tx);
            w.write_all(&frame).await.expect("write");
        }
        assert_eq!(rx.await.expect("answer"), frame.len());
        (wr, waiting, frame)
    })
    .await
}

fn name(kind: &str) -> &'static str {
    match kind {
        "tcp" => "raw tokio TCP",
        "tcpmux" => "raw tokio TCP, one connection",
        "reqrep" => "zmtp-rpc REQ-REP",
        "dealer" => "zmtp-rpc DEALER-ROUTER",
        "rpc" => "zmtp-rpc typed RPC",
        "curve" => "zmtp-rpc typed RPC, CURVE",
        _ => "?",
    }
}

/// Runs `zmtp-bench client KIND ADDR` as a process of its own (as the anchors harness
/// does) and reads its row back: the measuring process is then a fresh one, not the
/// one that started the server and ran the rows before.
async fn client_process(
    kind: &str,
    server: &crate::ServerProc,
    k: &Knobs,
) -> (crate::measure::Measured, String, Option<[f64; 4]>) {
    let addr = format!("127.0.0.1:{}", server.port);
    let mut cmd = crate::own_command();
    if let Some(pid) = server.child.id() {
        cmd.env("BENCH_SERVER_PID", pid.to_string());
    }
    let out = cmd
        .args(["client", kind, &addr])
        .env("BENCH_PAYLOAD", k.payload.to_string())
        .env("BENCH_WARMUP", k.warmup.to_string())
        .env("BENCH_WARMUP_SECS", k.warmup_secs.to_string())
        .env("BENCH_COUNT", k.count.to_string())
        .env("BENCH_SECS", k.secs.to_string())
        .env("BENCH_CONC", k.conc.to_string())
        .env("BENCH_CONNS", k.conns.to_string())
        .env_remove("BENCH_TAG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("client process");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("| "))
        .unwrap_or_else(|| panic!("no row from the client: {text}"));
    let (m, conns) =
        crate::measure::Measured::parse(line).unwrap_or_else(|| panic!("bad row: {line}"));
    // `CPU-PER-CALL client_user client_sys server_user server_sys` (µs), on stderr.
    let cpu = String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        let v: Vec<f64> = l
            .strip_prefix(CPU_LINE)?
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        <[f64; 4]>::try_from(v).ok().filter(|v| v[2] >= 0.0)
    });
    (m, conns, cpu)
}

/// Prefix of the CPU figures a client process prints to stderr.
const CPU_LINE: &str = "CPU-PER-CALL ";

/// One row from the environment's knobs (the anchors contender mode).
pub async fn client_row(kind: &str, addr: &str) {
    let k = Knobs::from_env();
    let (s, conns) = tokio::spawn({
        let (kind, addr, k) = (kind.to_string(), addr.to_string(), k.clone());
        async move { measure(&kind, &addr, &k).await }
    })
    .await
    .unwrap();
    println!("{}", row(name(kind), &mode(k.conc, &conns), &s));
    if let Some(cpu) = s.cpu {
        eprintln!("{CPU_LINE}{}", cpu.per_call(s.lat_ns.len()));
    }
}

/// The kernel's default TCP congestion control (Linux), which shapes the large-payload
/// rows: with `bbr` (and no queueing discipline on loopback) TCP paces its own sends
/// with timers, and 1 MiB round trips with several in flight cost about twice the
/// kernel time they cost with `cubic`, for raw TCP and for us.
fn congestion_control() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Every round-trip row for 64 B, 4 KiB and 1 MiB, with ratios to raw TCP: rounds
/// (BENCH_ROUNDS, default 3) run every row of a group in turn, and each column is the
/// median over the rounds (the ratio is the median of the per-round ratios).
pub async fn suite() {
    let base = Knobs::from_env();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let pin_note = crate::pinned_cpus()
        .map(|cpus| format!("; server and client pinned to CPUs {cpus}"))
        .unwrap_or_default();
    println!(
        "medians of {rounds} rounds{pin_note}; TCP congestion control {}",
        congestion_control()
    );
    println!(
        "| name | mode | payload | rt/s | p50 µs | p99 µs | vs raw TCP | MB/s | CPU µs/call server+client | CPU vs raw TCP |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // BENCH_PAYLOADS (comma-separated bytes) and BENCH_CONCS narrow the suite down.
    let list = |var: &str, all: &[usize]| -> Vec<usize> {
        std::env::var(var)
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| all.to_vec())
    };
    let mut flagged = Vec::new();
    for payload in list("BENCH_PAYLOADS", &[64, 4096, 1 << 20]) {
        let mut k = base.clone();
        k.payload = payload;
        if payload >= 1 << 20 {
            k.count = k.count.min(1000);
            k.warmup = k.warmup.min(50);
        }
        for conc in list("BENCH_CONCS", &[1, 16]) {
            k.conc = conc;
            // (kind, connections of the typed client): 16 callers share one client,
            // with one connection and with two.
            let all: &[(&str, usize)] = if conc == 1 {
                &[
                    ("tcp", 1),
                    ("reqrep", 1),
                    ("dealer", 1),
                    ("rpc", 1),
                    ("curve", 1),
                ]
            } else if payload >= 1 << 20 {
                // Large payloads: also what raw TCP does with all callers on one
                // connection, the kernel's limit for the typed client's `1conn` row.
                &[
                    ("tcp", 1),
                    ("tcpmux", 1),
                    ("rpc", 1),
                    ("rpc", 2),
                    ("curve", 1),
                ]
            } else {
                &[("tcp", 1), ("rpc", 1), ("rpc", 2), ("curve", 1)]
            };
            // BENCH_KINDS (comma-separated) keeps some rows; raw TCP always runs.
            let keep = std::env::var("BENCH_KINDS").ok();
            let kinds: Vec<(&str, usize)> = all
                .iter()
                .copied()
                .filter(|(kind, _)| {
                    *kind == "tcp"
                        || keep
                            .as_deref()
                            .is_none_or(|k| k.split(',').any(|x| x == *kind))
                })
                .collect();
            // results[kind] = per round (rate, p50, p99, ratio, server CPU, client CPU,
            // CPU ratio); `used`: connections per kind.
            let mut results = vec![Vec::new(); kinds.len()];
            let mut used = vec![String::new(); kinds.len()];
            for _ in 0..rounds {
                let (mut baseline, mut base_cpu) = (f64::NAN, f64::NAN);
                for (i, &(kind, conns)) in kinds.iter().enumerate() {
                    let server = crate::spawn_server(kind, &[]).await;
                    let mut k = k.clone();
                    k.conns = conns;
                    let (s, c, cpu) = client_process(kind, &server, &k).await;
                    drop(server);
                    let [cu, cs, su, ss] = cpu.unwrap_or([f64::NAN; 4]);
                    let (server_cpu, client_cpu) = (su + ss, cu + cs);
                    if kind == "tcp" {
                        baseline = s.rate;
                        base_cpu = server_cpu + client_cpu;
                    }
                    used[i] = c;
                    results[i].push([
                        s.rate,
                        s.p50,
                        s.p99,
                        s.rate / baseline,
                        server_cpu,
                        client_cpu,
                        (server_cpu + client_cpu) / base_cpu,
                    ]);
                }
            }
            for (i, (kind, conns)) in kinds.iter().enumerate() {
                let col = |j: usize| median(results[i].iter().map(|r| r[j]).collect());
                let pinned = crate::pinned_cpus().is_some();
                if let Some(min) = crate::floors::floor(kind, *conns, conc, payload, pinned) {
                    if col(3) < min {
                        flagged.push(format!(
                            "{} {} {}: {:.2} of raw TCP, under its floor of {min:.2}",
                            name(kind),
                            mode(conc, &used[i]),
                            human(payload),
                            col(3)
                        ));
                    }
                }
                println!(
                    "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1}+{:.1} | {:.2} |",
                    name(kind),
                    mode(conc, &used[i]),
                    human(payload),
                    col(0),
                    col(1),
                    col(2),
                    col(3),
                    col(0) * payload as f64 / 1e6,
                    col(4),
                    col(5),
                    col(6),
                );
            }
        }
    }
    for f in &flagged {
        println!("BELOW FLOOR (bench/src/floors.rs, docs/BENCHMARKS.md): {f}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}
