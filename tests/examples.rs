//! Every example runs and does what its `//!` lines say. The binaries are the ones
//! `cargo test` builds beside this test (target/<profile>/examples/).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: `cargo test` (without --test) builds it, or `cargo build --examples`",
        p.display()
    );
    p
}

/// Runs an example to completion; returns its stdout, asserting success.
async fn run(name: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(example(name))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} finishes"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts a long-running example and returns it once it printed its first line.
async fn start(name: &str, args: &[&str]) -> support::Spawned {
    let mut cmd = Command::new(example(name));
    cmd.args(args);
    support::spawn_first_line(cmd).await
}

fn port_of(line: &str) -> String {
    line.rsplit(':').next().unwrap().trim().to_string()
}

#[tokio::test]
async fn hello_server_and_client() {
    let server = start("hello_server", &["tcp://127.0.0.1:0"]).await;
    let ep = format!("tcp://127.0.0.1:{}", port_of(&server.first));
    let out = run("hello_client", &[&ep]).await;
    assert!(out.contains("Received reply 9: World"), "{out}");
}

#[tokio::test]
async fn client_to_many_round_robins_and_lazy_pirate_survives_a_kill() {
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let server = start("server_on_port", &["0"]).await;
        ports.push(port_of(&server.first));
        servers.push(server);
    }
    let mut args: Vec<&str> = ports.iter().map(String::as_str).collect();
    args.extend(["--count", "6"]);
    let out = run("client_to_many", &args).await;
    let served: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    assert_eq!(served.len(), 6, "{out}");
    assert_eq!(served[..3], served[3..], "not round-robin: {out}");
    let distinct: std::collections::HashSet<_> = served.iter().collect();
    assert_eq!(distinct.len(), 3, "{out}");

    // The lazy pirate client goes on when a server is killed mid-run.
    let mut args: Vec<&str> = ports.iter().map(String::as_str).collect();
    args.extend(["--count", "40", "--interval-ms", "10"]);
    let pirate = tokio::spawn({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("lazy_pirate_client", &args).await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    servers[1].child.start_kill().unwrap();
    let out = pirate.await.unwrap();
    let numbers: Vec<String> = out
        .lines()
        .map(|l| l.rsplit("Hello ").next().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..40).map(|n| format!("{n:08}")).collect();
    assert_eq!(numbers, want, "a number skipped or answered twice:\n{out}");
}

#[tokio::test]
async fn calculator_and_kv_store() {
    let out = run("calculator", &[]).await;
    assert!(out.contains("2 + 3 = 5"), "{out}");
    assert!(out.contains("1 / 0 = Err(DivideByZero)"), "{out}");
    let out = run("kv_store", &[]).await;
    assert!(out.contains("get color      -> Ok(\"red\")"), "{out}");
    assert!(
        out.contains("get color      -> Err(NotFound { key: \"color\" })"),
        "{out}"
    );
}

#[tokio::test]
async fn worker_pool_survives_a_killed_worker() {
    let out = run(
        "worker_pool",
        &["--calls", "1500", "--concurrency", "4", "--delay-ms", "1"],
    )
    .await;
    assert!(out.contains("SIGKILL worker"), "{out}");
    assert!(out.contains("restarted worker"), "{out}");
    assert!(out.contains("no call failed"), "{out}");
}

#[tokio::test]
async fn secure_pool_serves_the_allowed_client_and_refuses_a_stranger() {
    let out = run("secure_pool", &[]).await;
    assert!(out.contains("served by 3 workers"), "{out}");
    assert!(
        out.contains("stranger refused:") && out.contains("authentication failed"),
        "{out}"
    );
}

#[tokio::test]
async fn middleware_checks_the_token_and_times_out() {
    let out = run("middleware", &[]).await;
    assert!(out.contains("without a token: Err(BadRequest("), "{out}");
    assert!(out.contains("with the token: Ok(1)"), "{out}");
    assert!(
        out.contains("past the server's 100 ms timeout: Err(DeadlineExceeded)"),
        "{out}"
    );
}

#[tokio::test]
async fn metrics_are_scraped_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A free port for the exporter.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ex = start("metrics", &[&port.to_string()]).await;
    assert!(ex.first.starts_with("METRICS "), "{}", ex.first);
    let series = [
        "zmtp_rpc_client_calls_total{service=\"calc\",method=\"add\",outcome=\"ok\"}",
        "zmtp_rpc_client_attempts_total{endpoint=\"tcp://127.0.0.1:",
        "zmtp_rpc_client_call_duration_seconds_count{service=\"calc\",method=\"add\"}",
        "zmtp_rpc_server_requests_total{method=\"calc.add\"}",
        "zmtp_rpc_server_replies_total{status=\"app_error\"}",
    ];
    let mut body = String::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        s.read_to_string(&mut body).await.unwrap();
        if series.iter().all(|s| body.contains(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in series {
        assert!(body.contains(s), "no {s} in:\n{body}");
    }
    drop(ex);
}
