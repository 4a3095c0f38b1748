//! Metrics, through the `metrics` facade (cargo feature `metrics`, on by default in
//! `zmtp-rpc`): the library records, an exporter the application installs (Prometheus,
//! StatsD, ...) publishes. Without the feature every function here is empty.
//!
//! Names follow Prometheus conventions:
//! - `zmtp_rpc_client_calls_total{service, method, outcome}`: typed calls, by how they
//!   ended (`ok`, or the error's kind: `deadline_exceeded`, `unavailable`, ...);
//! - `zmtp_rpc_client_attempt_duration_seconds`: round trips of attempts that got a
//!   reply (recorded where the client reads the clock anyway: balancing pools);
//! - `zmtp_rpc_client_attempts_total`, `..._retries_total`, `..._hedges_total`;
//! - `zmtp_rpc_server_requests_total{method}`: requests for a known method;
//! - `zmtp_rpc_server_replies_total{status}`: replies by status (`ok`, ...);
//! - `zmtp_rpc_server_deduplicated_total`, `zmtp_rpc_server_overloaded_total`.

use std::time::Duration;

use rpc_core::{MethodInfo, RpcError, Status};

/// The outcome label of a call's result.
pub(crate) fn outcome(r: &Result<(), &RpcError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => match e {
            RpcError::DeadlineExceeded => "deadline_exceeded",
            RpcError::Unavailable { .. } => "unavailable",
            RpcError::Indeterminate(_) => "indeterminate",
            RpcError::Overloaded(_) => "overloaded",
            RpcError::ShuttingDown(_) => "shutting_down",
            RpcError::UnknownMethod(_) => "unknown_method",
            RpcError::BadRequest(_) => "bad_request",
            RpcError::Internal(_) => "internal",
            RpcError::MessageTooLarge { .. } => "too_large",
            RpcError::Decode(_) | RpcError::Encode(_) | RpcError::Protocol(_) => "protocol",
            _ => "other",
        },
    }
}

/// The status label of a reply.
#[cfg(feature = "metrics")]
pub(crate) fn status_label(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::AppError => "app_error",
        Status::UnknownMethod => "unknown_method",
        Status::BadRequest => "bad_request",
        Status::DeadlineExceeded => "deadline_exceeded",
        Status::Overloaded => "overloaded",
        Status::ShuttingDown => "shutting_down",
        Status::Internal => "internal",
    }
}

/// A typed call ended with `outcome` (its reply decoded or not).
#[allow(unused_variables)]
pub(crate) fn client_call(method: &'static MethodInfo, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_client_calls_total",
        "service" => method.service(), "method" => method.method(), "outcome" => outcome)
    .increment(1);
}

/// An attempt ended with a reply after `rtt` (its round trip).
#[allow(unused_variables)]
pub(crate) fn client_round_trip(rtt: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("zmtp_rpc_client_attempt_duration_seconds").record(rtt.as_secs_f64());
}

/// An attempt was sent: the first (`resend` false), a resend, or a hedge.
#[allow(unused_variables)]
pub(crate) fn client_attempt(resend: bool, hedge: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("zmtp_rpc_client_attempts_total").increment(1);
        if hedge {
            metrics::counter!("zmtp_rpc_client_hedges_total").increment(1);
        } else if resend {
            metrics::counter!("zmtp_rpc_client_retries_total").increment(1);
        }
    }
}

/// A request for a known method arrived.
#[allow(unused_variables)]
pub(crate) fn server_request(method: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_requests_total", "method" => method).increment(1);
}

/// A reply with `status` was sent.
#[allow(unused_variables)]
pub(crate) fn server_reply(status: Status) {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_replies_total", "status" => status_label(status))
        .increment(1);
}

/// A request was answered from the reply cache or joined to its running execution.
pub(crate) fn server_deduplicated() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_deduplicated_total").increment(1);
}

/// A request was refused OVERLOADED.
pub(crate) fn server_overloaded() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_overloaded_total").increment(1);
}
