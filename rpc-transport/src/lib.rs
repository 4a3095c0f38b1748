//! `rpc-transport`: ZeroMQ's wire protocol (ZMTP 3.1) spoken natively on tokio, and
//! the reliable RPC client and server built on it.
//!
//! No libzmq: any libzmq program (C, C++, Python via pyzmq) is a peer of the sockets
//! here, in both directions.
//!
//! # Layout
//! - [`zmtp`]: the protocol without IO: greeting, frames, commands, handshake and
//!   heartbeat state machines. Deterministic; time is passed in.
//! - [`socket`]: `ReqSocket`, `RepSocket`, `DealerSocket`, `RouterSocket` over
//!   `tcp://`, `ipc://` and `inproc://` endpoints; the one tokio task per connection
//!   that drives a [`zmtp::Connection`] lives in `socket/engine.rs`, its receive
//!   buffers in `socket/recv_buf.rs`, its sending side (which the reliable client
//!   writes to directly) in `socket/outbox.rs`.
//! - [`message`]: [`Message`], a multipart message of shared `Bytes` frames (and the
//!   crate's `Outgoing`, a message whose last frame may be several buffers).
//! - [`client`]: the reliable client: one DEALER connection per server endpoint,
//!   deadlines, Lazy Pirate recreation, failover, endpoint health (`health.rs`), typed
//!   calls (`call.rs`), acknowledgements of received replies (`member.rs`).
//! - [`server`]: the RPC server: a ROUTER socket, dispatch to `rpc_core::Dispatch`
//!   services, concurrency limit, reply cache that lets go of acknowledged replies
//!   (`reply_cache.rs`), graceful drain.
//! - `sync.rs`: the crate's one poison-tolerant lock.
//! - `trace_context` (feature `opentelemetry`): the W3C `traceparent` a call carries
//!   in its metadata and the server's span continues.
//! - `timer.rs`: the clock of heartbeats and attempt deadlines, [`Timer`]: tokio's timer
//!   (the default; `tokio::time::pause` controls it) or a thread of the crate, so that
//!   tokio's threads sleep in `epoll_wait` without a timeout.
//!   Also the wall clock a request may carry (`sent_ms`).

#![warn(missing_docs)]

pub mod client;
mod counter;
pub mod message;
mod observe;
pub mod server;
pub mod socket;
mod sync;
mod timer;
#[cfg(feature = "opentelemetry")]
pub mod trace_context;
pub mod zmtp;

pub use message::Message;
pub use socket::{
    DealerSocket, Endpoint, RepSocket, ReqSocket, RouterSocket, SocketError, SocketOptions,
};
pub use timer::Timer;
