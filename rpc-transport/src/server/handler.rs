//! [`Handler`]: one request's handler future, run with its [`RequestContext`] current
//! and its panics turned into an `Err`, so that one handler's panic answers INTERNAL
//! instead of taking a task (or the server) down.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use rpc_core::service::BoxFuture;
use rpc_core::Reply;

use super::context::{self, RequestContext};

/// A dispatched request. `Unpin`: polled once in place by the connection task, it
/// moves into a task of its own only if it has to wait.
pub(crate) struct Handler {
    ctx: Option<RequestContext>,
    fut: BoxFuture<Reply>,
}

impl Handler {
    pub fn new(ctx: RequestContext, fut: BoxFuture<Reply>) -> Handler {
        Handler {
            ctx: Some(ctx),
            fut,
        }
    }
}

impl Future for Handler {
    /// The reply, or the panic's message.
    type Output = Result<Reply, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _current = context::enter(&mut this.ctx);
        let fut = &mut this.fut;
        // The future is dropped right after a panic, never polled again, so the state
        // it may have left half-updated is never observed.
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(reply)) => Poll::Ready(Ok(reply)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".into()))),
        }
    }
}
