//! [`RpcError`]: why a call did not produce the method's result.

use crate::status::Status;

/// Why a call failed. Application errors of methods declared `-> Result<T, E>` are
/// not here: the caller gets its `E` back inside `Ok`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// No server answered: every attempt failed or no server was reachable.
    #[error("unavailable after {attempts} attempt(s)")]
    Unavailable {
        /// Attempts sent.
        attempts: u32,
        /// The last attempt's failure, when there was one.
        #[source]
        last: Option<Box<RpcError>>,
    },
    /// An `at_most_once` call was sent and then lost (timeout or disconnect): it may or
    /// may not have run, and it is not resent.
    #[error("outcome unknown: the request may have run")]
    Indeterminate(#[source] Box<RpcError>),
    /// One attempt got no reply within the attempt timeout.
    #[error("attempt timed out")]
    AttemptTimeout,
    /// The connection carrying an attempt was lost.
    #[error("connection lost")]
    Disconnected,
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
    /// The arguments could not be encoded.
    #[error("cannot encode")]
    Encode(#[source] rmp_serde::encode::Error),
    /// A reply could not be decoded.
    #[error("cannot decode")]
    Decode(#[source] rmp_serde::decode::Error),
    /// A reply that does not follow the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
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
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn unavailable_chains_its_cause_without_repeating_it() {
        let e = RpcError::Unavailable {
            attempts: 3,
            last: Some(Box::new(RpcError::AttemptTimeout)),
        };
        assert_eq!(e.to_string(), "unavailable after 3 attempt(s)");
        assert_eq!(e.source().unwrap().to_string(), "attempt timed out");
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
