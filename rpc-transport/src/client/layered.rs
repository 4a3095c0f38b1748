//! Tower middleware around a client's typed calls: [`Client::layer`] puts a layer
//! around them; each call goes through it as a [`CallRequest`] (the method, its
//! encoded arguments and the per-call options, metadata included) down to the client's
//! own attempt loop ([`Calls`]), and its [`Reply`] comes back through it.

use std::task::{Context, Poll};

use rpc_core::service::BoxFuture;
use rpc_core::{MethodInfo, Payload, Reply, RpcError};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::{CallOptions, Client};

/// A typed call as client middleware sees it.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The method called.
    pub method: &'static MethodInfo,
    /// Its MessagePack arguments.
    pub args: Payload,
    /// Deadline, metadata (a layer may add entries: an auth token, a trace context),
    /// hedging.
    pub opts: CallOptions,
}

/// The client's own calls as a `tower::Service`: what the first layer wraps.
#[derive(Clone, Debug)]
pub struct Calls(Client);

impl Service<CallRequest> for Calls {
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxFuture<Result<Reply, RpcError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CallRequest) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move { client.call(req.method, req.args, req.opts).await })
    }
}

/// The layers of a client, boxed.
pub(crate) type Stack = BoxCloneSyncService<CallRequest, Reply, RpcError>;

/// A layer's error as an [`RpcError`]: an `RpcError` it passed on as it is, tower's
/// timeout as `DeadlineExceeded`, anything else as [`RpcError::Layer`].
fn rpc_error(e: BoxError) -> RpcError {
    match e.downcast::<RpcError>() {
        Ok(e) => *e,
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => RpcError::DeadlineExceeded,
        Err(e) => RpcError::Layer(e.to_string()),
    }
}

impl Client {
    /// This client (the same pool and connections) with `layer` around its typed
    /// calls: build typed clients over the result (`XClient::new(client.layer(l))`).
    /// Layers added later are outermost. [`Client::call`] and raw requests do not go
    /// through them.
    pub fn layer<L>(&self, layer: L) -> Client
    where
        L: Layer<Stack>,
        L::Service: Service<CallRequest, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as Service<CallRequest>>::Error: Into<BoxError>,
        <L::Service as Service<CallRequest>>::Future: Send + 'static,
    {
        let inner: Stack = match &self.stack {
            Some(stack) => stack.clone(),
            None => BoxCloneSyncService::new(Calls(self.without_layers())),
        };
        let layered = layer.layer(inner).map_err(|e| rpc_error(e.into()));
        Client {
            stack: Some(BoxCloneSyncService::new(layered)),
            ..self.clone()
        }
    }

    /// This client without its layers.
    fn without_layers(&self) -> Client {
        Client {
            stack: None,
            ..self.clone()
        }
    }

    /// The layers around typed calls, if any.
    pub(crate) fn layers(&self) -> Option<Stack> {
        self.stack.clone()
    }
}
