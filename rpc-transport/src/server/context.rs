//! [`RequestContext`]: the request a handler is running for, readable from inside it.

use std::collections::BTreeMap;
use std::future::Future;

use rpc_core::RequestId;
use tokio::time::Instant;

/// Facts about the request being handled, available to handler code through
/// [`RequestContext::current`].
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (the same for every attempt of one call).
    pub request_id: RequestId,
    /// `"service.method"`.
    pub method: String,
    /// Attempt number of the request as sent by the client (from 1).
    pub attempt: u32,
    /// When the caller stops waiting; the handler is cancelled then.
    pub deadline: Instant,
    /// Metadata from the request header.
    pub metadata: BTreeMap<String, String>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// The context of the request this task is handling, if any.
    pub fn current() -> Option<RequestContext> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// Runs `f` with `ctx` as the current request context.
pub(crate) fn scope<F: Future>(ctx: RequestContext, f: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(ctx, f)
}
