//! Reply status codes: small, stable integers (never renumbered).

use serde::{Deserialize, Serialize};

/// The status of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum Status {
    /// The method ran and returned a value; the body holds it.
    Ok = 0,
    /// The method ran and returned its error type; the body holds the error.
    AppError = 1,
    /// No such service or method.
    UnknownMethod = 2,
    /// The request could not be decoded (header or arguments). The method did not run.
    BadRequest = 3,
    /// The caller's deadline passed before (or while) the method ran.
    DeadlineExceeded = 4,
    /// The server is at its concurrency limit. The method did not run.
    Overloaded = 5,
    /// The server is draining for shutdown. The method did not run.
    ShuttingDown = 6,
    /// The method panicked or the server failed; it may have run in part.
    Internal = 7,
    /// The request was over the server's message size limit. Its body was read past
    /// without being kept and the connection stays up. The method did not run.
    TooLarge = 8,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 9] = [
        Status::Ok,
        Status::AppError,
        Status::UnknownMethod,
        Status::BadRequest,
        Status::DeadlineExceeded,
        Status::Overloaded,
        Status::ShuttingDown,
        Status::Internal,
        Status::TooLarge,
    ];

    /// The status for a code, if it is known.
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.get(usize::from(code)).copied()
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// True when the server guarantees the method did not run, so that resending is
    /// safe even for an `at_most_once` method.
    pub fn did_not_run(self) -> bool {
        matches!(
            self,
            Status::UnknownMethod
                | Status::BadRequest
                | Status::Overloaded
                | Status::ShuttingDown
                | Status::TooLarge
        )
    }
}

impl From<Status> for u8 {
    fn from(s: Status) -> u8 {
        s.code()
    }
}

impl TryFrom<u8> for Status {
    type Error = String;
    fn try_from(c: u8) -> Result<Status, String> {
        Status::from_code(c).ok_or_else(|| format!("unknown status code {c}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let codes: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(9), None);
    }
}
