//! Tower middleware around a server's services: [`Dispatcher`] is a service as a
//! `tower::Service`, and a layered one dispatches again through the layer's service.

use std::sync::Arc;
use std::task::{Context, Poll};

use rpc_core::service::BoxFuture;
use rpc_core::{Dispatch, MethodInfo, Reply, ServiceRequest, Status};
use tower::util::ServiceExt;
use tower::{BoxError, Service};

/// A service of the server as a `tower::Service`: what a layer given to
/// [`ServerBuilder::layer`](super::ServerBuilder::layer) wraps.
#[derive(Clone)]
pub struct Dispatcher(pub(crate) Arc<dyn Dispatch>);

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Dispatcher")
            .field(&self.0.service_name())
            .finish()
    }
}

impl Service<ServiceRequest> for Dispatcher {
    type Response = Reply;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Reply, std::convert::Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ServiceRequest) -> Self::Future {
        let f = self.0.dispatch(req);
        Box::pin(async move { Ok(f.await) })
    }
}

/// A service behind a layer, dispatched through it.
pub(crate) struct Layered<S> {
    name: &'static str,
    methods: &'static [MethodInfo],
    service: S,
}

impl<S> Layered<S> {
    /// `service` (a layer around `inner`) serves `inner`'s methods.
    pub fn new(inner: &dyn Dispatch, service: S) -> Layered<S> {
        Layered {
            name: inner.service_name(),
            methods: inner.methods(),
            service,
        }
    }
}

impl<S> Dispatch for Layered<S>
where
    S: Service<ServiceRequest, Response = Reply> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn service_name(&self) -> &'static str {
        self.name
    }

    fn methods(&self) -> &'static [MethodInfo] {
        self.methods
    }

    fn dispatch(&self, request: ServiceRequest) -> BoxFuture<Reply> {
        let service = self.service.clone();
        Box::pin(async move {
            match service.oneshot(request).await {
                Ok(reply) => reply,
                Err(e) => error_reply(e.into()),
            }
        })
    }
}

/// The reply for a layer's error: tower's timeout is DEADLINE_EXCEEDED, its load
/// shedding OVERLOADED (the caller may try another server), the rest INTERNAL.
pub(crate) fn error_reply(e: BoxError) -> Reply {
    if e.is::<tower::timeout::error::Elapsed>() {
        Reply::status(Status::DeadlineExceeded, "a server layer timed out")
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        Reply::status(Status::Overloaded, "a server layer shed the load")
    } else {
        Reply::status(Status::Internal, format!("server layer: {e}"))
    }
}
