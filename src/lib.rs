//! # zmtp-rpc
//!
//! A reliable RPC framework that speaks ZeroMQ's wire protocol (ZMTP 3.1) natively on
//! tokio. Put [`rpc_service`] on a trait and get a typed async client and a server
//! dispatcher; calls travel as MessagePack; any libzmq program is a peer.
//!
//! ```
//! use zmtp_rpc::{rpc_service, Server};
//!
//! #[rpc_service]
//! pub trait Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct MyCalc;
//! impl Calc for MyCalc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .bind("tcp://127.0.0.1:0") // a free port: server.endpoints() says which
//!     .add_service(CalcServer::new(MyCalc))
//!     .start()
//!     .await?;
//! let calc = CalcClient::connect([server.endpoints()[0].to_string()]).await?;
//! assert_eq!(calc.add(2, 3).await?, 5);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! This crate only re-exports; the code lives in three crates:
//! - [`rpc_core`]: the envelope, status codes, [`RpcError`], the MessagePack codec.
//! - `rpc_macros`: the [`rpc_service`] attribute.
//! - [`transport`] (`rpc-transport`): ZMTP, the sockets, the reliable [`Client`] and
//!   the [`Server`].

#![warn(missing_docs)]

pub use rpc_core::{
    Blob, Dispatch, MethodInfo, Payload, Reply, RequestId, RetryPolicy, RpcError, ServiceRequest,
    Status,
};
pub use rpc_macros::rpc_service;
pub use rpc_transport as transport;
pub use rpc_transport::client::{
    Aperture, Balance, Call, CallOptions, CallRequest, Calls, Client, ClientBuilder, ClientStats,
    EndpointStats, HealthState, PoolChange, RetryBudget,
};
#[cfg(feature = "dns")]
pub use rpc_transport::client::{DnsChanges, DnsDiscovery};
pub use rpc_transport::server::{
    Dispatcher, RequestContext, Server, ServerBuilder, ServerHandle, ServerStats,
};
pub use rpc_transport::socket::{
    AuthDecision, AuthMechanism, AuthRequest, Authenticator, SocketError,
};
pub use rpc_transport::zmtp::curve::{KeyPair, PublicKey};
pub use rpc_transport::zmtp::HeartbeatConfig;
pub use rpc_transport::{Message, Timer};

/// README.md's Rust code, compiled and run by `cargo test --doc` so that the first
/// service a user copies works as written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Items generated code refers to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use rpc_core::service::BoxFuture;
    pub use rpc_core::{
        codec, Dispatch, MethodInfo, Reply, RetryPolicy, RpcError, ServiceRequest, Status,
    };
    pub use rpc_transport::client::{decode_result, decode_value, Call, Client};
    pub use serde;
    pub use std::sync::Arc;
    pub use tower;

    /// What every argument, result and error of an `#[rpc_service]` method must be:
    /// the generated code checks each type against it, so a missing derive is reported
    /// at the type, in these words.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in an RPC call: it must implement serde's `Serialize` and `DeserializeOwned`",
        label = "used in an #[rpc_service] method",
        note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`, or wrap a foreign type in a newtype that has them"
    )]
    pub trait Wire {}
    impl<T: serde::Serialize + serde::de::DeserializeOwned> Wire for T {}

    /// Compiles only when `T` is [`Wire`].
    pub fn assert_wire<T: Wire>() {}
}
