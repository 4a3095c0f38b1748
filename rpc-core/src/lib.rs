//! `rpc-core`: the zmtp-rpc model, without sockets.
//!
//! What a call is on the wire and to the program, independent of how bytes travel.
//!
//! # Layout
//! - [`envelope`]: [`RequestHeader`] and [`ReplyHeader`], the MessagePack frames after
//!   the ZeroMQ envelope; [`RequestId`]; [`PROTOCOL_VERSION`]. The full wire format is
//!   in `docs/PROTOCOL.md`. `header_codec.rs` writes and reads them by hand (the same
//!   bytes as serde, serde as the fallback reader).
//! - [`arena`]: small encoded pieces cut from one buffer per thread.
//! - [`id_map`]: [`IdMap`], a hash map keyed by request ids with a cheap keyed hash.
//! - [`status`]: [`Status`], the small stable integers of a reply.
//! - [`error`]: [`RpcError`], what a call can fail with.
//! - [`codec`]: MessagePack encoding of arguments and results, with limits.
//! - [`blob`]: [`Blob`], binary payloads decoded and sent without a copy.
//! - [`payload`]: [`Payload`], an encoded value cut around its large blobs.
//! - [`method`]: [`MethodInfo`] and [`RetryPolicy`], the metadata generated code
//!   hands the transport.
//! - [`service`]: [`Dispatch`], [`Reply`] and [`ServiceRequest`], the server-side
//!   interface that `#[rpc_service]` implements.

#![warn(missing_docs)]

pub mod arena;
pub mod blob;
pub mod codec;
pub mod envelope;
pub mod error;
mod header_codec;
pub mod id_map;
pub mod method;
pub mod payload;
pub mod service;
pub mod status;

pub use blob::Blob;
pub use envelope::{ReplyHeader, RequestHeader, RequestId, MAX_ACKS, PROTOCOL_VERSION};
pub use error::RpcError;
pub use id_map::IdMap;
pub use method::{MethodInfo, RetryPolicy};
pub use payload::Payload;
pub use service::{Dispatch, Reply, ServiceRequest};
pub use status::Status;
