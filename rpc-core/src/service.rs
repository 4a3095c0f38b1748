//! The server-side interface that `#[rpc_service]` implements.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::method::MethodInfo;
use crate::payload::Payload;
use crate::status::Status;

/// A decoded request, as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    /// The method part of the wire name (after the service name and dot), borrowed
    /// from the service's method table when the server found it there.
    pub method: std::borrow::Cow<'static, str>,
    /// The MessagePack arguments frame.
    pub args: Bytes,
}

/// What a dispatcher answers: a status, a message for non-OK statuses, and a body
/// (the MessagePack result for OK, the MessagePack error for APP_ERROR, else empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// Detail for non-OK statuses.
    pub message: String,
    /// MessagePack body (large [`crate::Blob`]s in it kept by reference).
    pub body: Payload,
}

impl Reply {
    /// A reply without body.
    pub fn status(status: Status, message: impl Into<String>) -> Reply {
        Reply {
            status,
            message: message.into(),
            body: Payload::default(),
        }
    }

    /// OK with an encoded value (INTERNAL when the value cannot be encoded).
    pub fn ok<T: Serialize>(value: &T) -> Reply {
        Reply::encoded(Status::Ok, value)
    }

    /// APP_ERROR with an encoded error value.
    pub fn app_error<E: Serialize>(error: &E) -> Reply {
        Reply::encoded(Status::AppError, error)
    }

    fn encoded<T: Serialize>(status: Status, value: &T) -> Reply {
        match codec::encode_payload(value) {
            Ok(body) => Reply {
                status,
                message: String::new(),
                body,
            },
            Err(e) => Reply::status(Status::Internal, format!("cannot encode result: {e}")),
        }
    }

    /// Decodes the arguments of a request, or answers BAD_REQUEST.
    pub fn decode_args<A: DeserializeOwned>(args: &Bytes) -> Result<A, Reply> {
        if !codec::is_map(args) {
            // An array would bind arguments by position: adding or reordering one
            // would silently change what the method gets.
            return Err(Reply::status(
                Status::BadRequest,
                "arguments must be a MessagePack map of named arguments",
            ));
        }
        codec::decode_shared(args)
            .map_err(|e| Reply::status(Status::BadRequest, format!("cannot decode arguments: {e}")))
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A service the server can dispatch to: generated as `{Trait}Server<S>`.
pub trait Dispatch: Send + Sync + 'static {
    /// The service's wire name (the part before the dot).
    fn service_name(&self) -> &'static str;

    /// The service's methods.
    fn methods(&self) -> &'static [MethodInfo];

    /// Runs one request. Unknown methods answer UNKNOWN_METHOD and undecodable
    /// arguments BAD_REQUEST, without running anything.
    fn dispatch(&self, request: ServiceRequest) -> BoxFuture<Reply>;
}
