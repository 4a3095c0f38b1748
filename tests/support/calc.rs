//! The calculator service of the RPC tests (`tests/rpc.rs`, `connections.rs`,
//! `errors.rs`), and the one way they start a server and a client.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zmtp_rpc::{rpc_service, Client, Server, ServerHandle};

use super::{EchoServer, MyEcho};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub account: String,
    pub cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CalcError {
    DivideByZero,
    Declined { reason: String },
}

#[rpc_service]
pub trait Calc {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    #[rpc(at_most_once)]
    async fn charge(&self, account: String, cents: u64) -> Result<Receipt, CalcError>;
    async fn sleep_ms(&self, ms: u64) -> u64;
    async fn boom(&self);
    #[rpc(name = "count")]
    async fn executions(&self) -> u32;
}

#[derive(Default)]
pub struct MyCalc {
    runs: AtomicU32,
}

impl Calc for MyCalc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            Err(CalcError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn charge(&self, account: String, cents: u64) -> Result<Receipt, CalcError> {
        if cents > 1000 {
            return Err(CalcError::Declined {
                reason: "too much".into(),
            });
        }
        Ok(Receipt { account, cents })
    }
    async fn sleep_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self) {
        panic!("boom on purpose");
    }
    async fn executions(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

/// A server of both test services on a free port, and its endpoint (through
/// [`serve`], as every server here).
pub async fn start() -> (ServerHandle, String) {
    let services = Server::builder()
        .add_service(CalcServer::new(MyCalc::default()))
        .add_service(EchoServer::new(MyEcho));
    serve(At::Tcp, services).await
}

/// A server builder with the calculator.
pub fn calc_server() -> zmtp_rpc::ServerBuilder {
    Server::builder().add_service(CalcServer::new(MyCalc::default()))
}

/// A fresh `inproc://` endpoint name.
pub fn inproc_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("inproc://rpc-test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where [`pair`] puts its server.
#[derive(Clone, Copy)]
pub enum At {
    /// A free port on 127.0.0.1.
    Tcp,
    /// A fresh `inproc://` name: all in memory, so a test under `tokio::time::pause()`
    /// controls every clock the pair reads (both use tokio's timer, the default). The
    /// client is connected before `pair` returns.
    Inproc,
}

/// The one way these tests start a server (`server`, with its services): bound
/// `at`, started, with the endpoint to reach it.
pub async fn serve(at: At, server: zmtp_rpc::ServerBuilder) -> (ServerHandle, String) {
    let addr = match at {
        At::Tcp => "tcp://127.0.0.1:0".to_string(),
        At::Inproc => inproc_name(),
    };
    let server = server.bind(addr).start().await.unwrap();
    let ep = server.endpoints()[0].to_string();
    (server, ep)
}

/// A server (see [`serve`]) and a client (`client`) of it.
pub async fn pair(
    at: At,
    server: zmtp_rpc::ServerBuilder,
    client: zmtp_rpc::ClientBuilder,
) -> (ServerHandle, Client) {
    let (server, ep) = serve(at, server).await;
    let client = client.endpoint(ep).connect().await.unwrap();
    if let At::Inproc = at {
        assert!(client.wait_healthy(1, Duration::from_secs(5)).await);
    }
    (server, client)
}

/// A server of `service` and a client of it with nothing that wakes a connection by
/// itself: no heartbeats on either side, no retries, attempts of a minute. A message
/// left unwritten or a caller left unwoken then shows as a call waiting for a timer.
pub async fn quiet_pair(service: impl zmtp_rpc::Dispatch) -> (ServerHandle, Client) {
    pair(
        At::Tcp,
        Server::builder().heartbeat(None).add_service(service),
        Client::builder()
            .heartbeat(None)
            .retries(0)
            .attempt_timeout(Duration::from_secs(60))
            .call_timeout(Duration::from_secs(60)),
    )
    .await
}

/// The arguments `a` and `b` as a map (the form a non-Rust client may send).
pub fn serde_json_like_args(a: i64, b: i64) -> std::collections::BTreeMap<&'static str, i64> {
    [("a", a), ("b", b)].into_iter().collect()
}

/// Reads a MessagePack `bin` as a `Vec<u8>` (`#[serde(with = ...)]`).
pub mod serde_bytes_vec {
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}
