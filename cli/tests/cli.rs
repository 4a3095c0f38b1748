//! The `zmtp-rpc` binary against a live server: call (results, application errors,
//! metadata, exit codes), describe, health.

use std::process::Output;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use zmtp_rpc::{rpc_service, RequestContext, Server, ServerHandle};

#[derive(Debug, Serialize, Deserialize)]
pub enum CalcError {
    DivideByZero,
}

#[rpc_service(name = "calc")]
pub trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    #[rpc(at_most_once)]
    async fn charge(&self, cents: u64) -> u64;
    /// The value of metadata entry `key`, if the call carried one.
    async fn meta(&self, key: String) -> Option<String>;
}

struct MyCalc;

impl Calc for MyCalc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            Err(CalcError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn charge(&self, cents: u64) -> u64 {
        cents
    }
    async fn meta(&self, key: String) -> Option<String> {
        RequestContext::current().and_then(|c| c.metadata.get(&key).cloned())
    }
}

async fn server() -> (ServerHandle, String) {
    let s = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(CalcServer::new(MyCalc))
        .start()
        .await
        .unwrap();
    let ep = s.endpoints()[0].to_string();
    (s, ep)
}

/// Runs the tool; fails the test if it takes more than 30 s.
async fn tool(args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_zmtp-rpc"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the tool finishes")
    .expect("the tool runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn call_prints_json_results_and_exits_by_outcome() {
    let (_s, ep) = server().await;
    let o = tool(&["call", &ep, "calc.add", r#"{"a": 2, "b": 3}"#]).await;
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "5"));
    // The method's own error: printed, exit 1.
    let o = tool(&["call", &ep, "calc.div", r#"{"a": 1, "b": 0}"#]).await;
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "\"DivideByZero\"")
    );
    // Metadata reaches the handler.
    let o = tool(&[
        "call",
        &ep,
        "calc.meta",
        r#"{"key": "who"}"#,
        "-m",
        "who=cli",
    ])
    .await;
    assert_eq!(stdout(&o), "\"cli\"");
    // Bad JSON: usage, exit 2.
    let o = tool(&["call", &ep, "calc.add", "{nope"]).await;
    assert_eq!(o.status.code(), Some(2));
    // An unknown method: exit 5, and the text says so.
    let o = tool(&["call", &ep, "calc.nope", "{}"]).await;
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown method"));
    // Nothing listening: unavailable, exit 3, at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = tool(&["call", &dead, "calc.add", "{}", "--timeout", "3000"]).await;
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn describe_lists_methods_and_health_probes() {
    let (server, ep) = server().await;
    let o = tool(&["describe", &ep]).await;
    assert_eq!(o.status.code(), Some(0));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let methods = d[0]["methods"].as_array().unwrap();
    assert!(methods
        .iter()
        .any(|m| m["name"] == "calc.charge" && m["retry"] == "at_most_once"));
    let o = tool(&["health", &ep]).await;
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "SERVING"));
    server.shutdown().await;
    let o = tool(&["health", &ep, "--timeout", "1000"]).await;
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "NOT_SERVING")
    );
}
