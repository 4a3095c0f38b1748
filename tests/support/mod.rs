//! Shared helpers of the integration tests: a pyzmq peer driven over pipes, hex, a
//! server started on a free port.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub mod calc;

/// The Python interpreter with pyzmq: `ZMTP_RPC_PYTHON`, else the project's `.venv`.
/// Tests fail (never skip) when it is missing: `scripts/test.sh` creates it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ZMTP_RPC_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with pyzmq at {}: run scripts/test.sh (it creates the venv)",
        venv.display()
    );
    venv
}

/// Path of a file in `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Lower-case hex of bytes; `-` for empty (the peer protocol's empty frame).
pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes from hex; `-` is empty.
pub fn unhex(s: &str) -> Bytes {
    if s == "-" {
        return Bytes::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .into()
}

/// A pyzmq socket in a child process (tests/peers/zmq_peer.py). Killed on drop.
pub struct PyPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PyPeer {
    /// Starts a peer with a socket of `kind` and options like `identity=6869`.
    pub async fn new(kind: &str, opts: &[&str]) -> PyPeer {
        let mut child = Command::new(python())
            .arg(peer_script("zmq_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start python");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut p = PyPeer {
            child,
            stdin,
            lines,
        };
        let cmd = format!("socket {kind} {}", opts.join(" "));
        p.ok(&cmd).await;
        p
    }

    /// Sends a command line and returns the answer line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("peer stdin");
        self.stdin.flush().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("peer answers within 30 s")
            .expect("peer stdout")
            .expect("peer alive");
        answer
    }

    /// Runs a command that must answer `ok [...]`; returns what follows `ok`.
    pub async fn ok(&mut self, line: &str) -> String {
        let a = self.cmd(line).await;
        assert!(a == "ok" || a.starts_with("ok "), "{line:.80} -> {a}");
        a.get(3..).unwrap_or("").to_string()
    }

    /// Binds and returns the endpoint pyzmq reports.
    pub async fn bind(&mut self, ep: &str) -> String {
        self.ok(&format!("bind {ep}")).await
    }

    /// Connects.
    pub async fn connect(&mut self, ep: &str) {
        self.ok(&format!("connect {ep}")).await;
    }

    /// Sends a multipart message.
    pub async fn send(&mut self, frames: &[&[u8]]) {
        let parts: Vec<String> = frames.iter().map(|f| hex(f)).collect();
        self.ok(&format!("send {}", parts.join(" "))).await;
    }

    /// Receives a message, or `None` after `timeout_ms`.
    pub async fn recv(&mut self, timeout_ms: u64) -> Option<Vec<Bytes>> {
        let a = self.cmd(&format!("recv {timeout_ms}")).await;
        if a == "timeout" {
            return None;
        }
        let rest = a
            .strip_prefix("msg ")
            .unwrap_or_else(|| panic!("recv -> {a}"));
        Some(rest.split(' ').map(unhex).collect())
    }

    /// Sends SIGSTOP or SIGCONT to the peer process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// Frames as a Vec of Bytes, for comparisons.
pub fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

/// `examples/worker_pool`, whose `worker` subcommand the pool tests run as worker
/// processes.
pub fn worker_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/worker_pool");
    assert!(
        p.exists(),
        "{} missing: `cargo test` (without --test) builds it, or `cargo build --example worker_pool`",
        p.display()
    );
    p
}

/// A child process whose first stdout line has been read; the rest of its stdout stays
/// readable (and open, so that it never dies of a broken pipe). Killed on drop.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its first line of output.
    pub first: String,
    /// The rest of its output.
    pub lines: Lines<BufReader<ChildStdout>>,
}

/// Starts `cmd` with piped stdout and waits (at most 30 s) for its first line.
pub async fn spawn_first_line(mut cmd: Command) -> Spawned {
    let mut child = cmd
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("first line within 30 s")
        .expect("child stdout")
        .expect("child printed a line");
    Spawned {
        child,
        first,
        lines,
    }
}

/// Runs `tests/peers/NAME ARGS...` (a Python peer) to its end, within 30 s; fails
/// the test with its output unless it succeeds and prints `ALL OK`.
pub async fn run_peer_script(name: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(python())
            .arg(peer_script(name))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the python peer finishes in time")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{name}: {stdout}");
    stdout
}

/// A request header as a plain client writes it (docs/PROTOCOL.md): for tests that
/// build requests by hand.
#[derive(serde::Serialize)]
pub struct Hdr<'a> {
    /// Protocol version.
    pub v: u8,
    /// Request id (MessagePack `bin` 16).
    #[serde(with = "serde_bytes16")]
    pub id: [u8; 16],
    /// `service.method`.
    pub method: &'a str,
    /// Time left.
    pub timeout_ms: u64,
    /// Attempt number.
    pub attempt: u32,
}

/// Serializes a request id as MessagePack `bin` 16.
pub mod serde_bytes16 {
    /// As `#[serde(with = ...)]` wants.
    pub fn serialize<S: serde::Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
}

/// Starts `server` (with its services and settings) on a free port of 127.0.0.1 and
/// returns it with its `tcp://` endpoint.
pub async fn serve_tcp(server: zmtp_rpc::ServerBuilder) -> (zmtp_rpc::ServerHandle, String) {
    let server = server.bind("tcp://127.0.0.1:0").start().await.unwrap();
    let ep = server.endpoints()[0].to_string();
    (server, ep)
}

/// A service that answers its argument (`echo.echo`): a second service for a server,
/// or the least a test needs.
#[zmtp_rpc::rpc_service(name = "echo")]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
}

/// [`Echo`]'s implementation.
pub struct MyEcho;

impl Echo for MyEcho {
    async fn echo(&self, text: String) -> String {
        text
    }
}
