//! [`RpcError`]: why a call did not produce the method's result.

use std::time::Duration;

use crate::status::Status;

/// The text of [`RpcError::Unavailable`]'s last failure.
fn last_failure(last: &Option<Box<RpcError>>) -> String {
    match last {
        Some(e) => e.to_string(),
        None => "no endpoint was ready".into(),
    }
}

/// Why a call failed. Application errors of methods declared `-> Result<T, E>` are
/// not here: the caller gets its `E` back inside `Ok`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// No server answered: every attempt failed or no server was ready. The text names
    /// the last failure (which endpoint, what happened there).
    #[error("unavailable after {attempts} attempt(s): {}", last_failure(last))]
    Unavailable {
        /// Attempts sent.
        attempts: u32,
        /// The last failure: of the last attempt, or why no endpoint was ready.
        last: Option<Box<RpcError>>,
    },
    /// An `at_most_once` call was sent and then lost (timeout, disconnect, or the
    /// call's deadline): it may or may not have run, and it is not resent.
    #[error("outcome unknown, the request may have run: {0}")]
    Indeterminate(Box<RpcError>),
    /// One attempt got no reply within the attempt timeout.
    #[error("{endpoint}: no reply within {} ms", after.as_millis())]
    AttemptTimeout {
        /// The endpoint the attempt went to.
        endpoint: String,
        /// The attempt timeout.
        after: Duration,
    },
    /// The connection carrying an attempt was lost.
    #[error("{endpoint}: connection lost{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Disconnected {
        /// The endpoint the attempt went to.
        endpoint: String,
        /// What the socket saw, when it said (reset, closed by the peer, ...).
        reason: Option<String>,
    },
    /// No endpoint could take the call: each one's state (connection refused,
    /// handshake failed, still connecting, ...), as one text.
    #[error("{0}")]
    Unreachable(String),
    /// The request is larger than the client's message size limit; nothing was sent.
    #[error("request of {size} bytes exceeds the limit of {max} bytes (max_message_size)")]
    MessageTooLarge {
        /// The request's size, all frames together.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The server is at its concurrency limit.
    #[error("server overloaded: {0}")]
    Overloaded(String),
    /// The server is shutting down.
    #[error("server shutting down: {0}")]
    ShuttingDown(String),
    /// The server knows no such method.
    #[error("unknown method: {0}")]
    UnknownMethod(String),
    /// The server could not decode the request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The handler panicked or the server failed.
    #[error("internal server error: {0}")]
    Internal(String),
    /// The server refused a request over its message size limit (status TOO_LARGE);
    /// the method did not run. A client whose own limit is the server's fails such a
    /// call before sending ([`RpcError::MessageTooLarge`]).
    #[error("request too large for the server: {0}")]
    TooLarge(String),
    /// The arguments could not be encoded.
    #[error("cannot encode")]
    Encode(#[source] rmp_serde::encode::Error),
    /// A reply could not be decoded.
    #[error("cannot decode")]
    Decode(#[source] rmp_serde::decode::Error),
    /// A reply that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A client layer (middleware) failed the call.
    #[error("client layer: {0}")]
    Layer(String),
    /// The client is closed, or was built without endpoints.
    #[error("client closed or misconfigured: {0}")]
    Config(String),
}

impl RpcError {
    /// The error for a non-OK, non-APP_ERROR reply status.
    pub fn from_status(status: Status, message: String) -> RpcError {
        match status {
            Status::DeadlineExceeded => RpcError::DeadlineExceeded,
            Status::Overloaded => RpcError::Overloaded(message),
            Status::ShuttingDown => RpcError::ShuttingDown(message),
            Status::UnknownMethod => RpcError::UnknownMethod(message),
            Status::BadRequest => RpcError::BadRequest(message),
            Status::Internal => RpcError::Internal(message),
            Status::TooLarge => RpcError::TooLarge(message),
            Status::Ok | Status::AppError => {
                RpcError::Protocol(format!("status {status:?} is not an error"))
            }
        }
    }

    /// The remote status this error came from, if any.
    pub fn status(&self) -> Option<Status> {
        Some(match self {
            RpcError::DeadlineExceeded => Status::DeadlineExceeded,
            RpcError::Overloaded(_) => Status::Overloaded,
            RpcError::ShuttingDown(_) => Status::ShuttingDown,
            RpcError::UnknownMethod(_) => Status::UnknownMethod,
            RpcError::BadRequest(_) => Status::BadRequest,
            RpcError::Internal(_) => Status::Internal,
            RpcError::TooLarge(_) => Status::TooLarge,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_names_the_endpoint_and_what_happened_there() {
        let e = RpcError::Unavailable {
            attempts: 3,
            last: Some(Box::new(RpcError::AttemptTimeout {
                endpoint: "tcp://w1:5555".into(),
                after: Duration::from_millis(1000),
            })),
        };
        assert_eq!(
            e.to_string(),
            "unavailable after 3 attempt(s): tcp://w1:5555: no reply within 1000 ms"
        );
        let lost = RpcError::Disconnected {
            endpoint: "tcp://w2:5555".into(),
            reason: Some("connection reset by peer".into()),
        };
        assert_eq!(
            RpcError::Indeterminate(Box::new(lost)).to_string(),
            "outcome unknown, the request may have run: \
             tcp://w2:5555: connection lost (connection reset by peer)"
        );
        let none = RpcError::Unavailable {
            attempts: 0,
            last: None,
        };
        assert_eq!(
            none.to_string(),
            "unavailable after 0 attempt(s): no endpoint was ready"
        );
    }

    #[test]
    fn statuses_map_both_ways() {
        for s in Status::ALL {
            if matches!(s, Status::Ok | Status::AppError) {
                continue;
            }
            assert_eq!(RpcError::from_status(s, "m".into()).status(), Some(s));
        }
    }
}
