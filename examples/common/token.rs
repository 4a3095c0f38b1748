//! Two tower layers for a token in the request metadata: [`AddToken`] on the client,
//! [`RequireToken`] on the server. Shared by examples/middleware.rs and the tests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use zmtp_rpc::__private::{Reply, ServiceRequest, Status};
use zmtp_rpc::transport::client::CallRequest;
use zmtp_rpc::RequestContext;

/// Client layer: puts `token` in every call's metadata.
#[derive(Clone)]
pub struct AddToken(pub &'static str);

impl<S> Layer<S> for AddToken {
    type Service = AddTokenService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AddTokenService(self.0, inner)
    }
}

#[derive(Clone)]
pub struct AddTokenService<S>(&'static str, S);

impl<S: Service<CallRequest>> Service<CallRequest> for AddTokenService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, mut req: CallRequest) -> S::Future {
        req.opts.metadata.insert("token".into(), self.0.into());
        self.1.call(req)
    }
}

/// Server layer: refuses requests without the token (read from the request's
/// context, which the layer's future sees as the handler does).
#[derive(Clone)]
pub struct RequireToken(pub &'static str);

impl<S> Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService(self.0, inner)
    }
}

#[derive(Clone)]
pub struct RequireTokenService<S>(&'static str, S);

impl<S> Service<ServiceRequest> for RequireTokenService<S>
where
    S: Service<ServiceRequest, Response = Reply>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, req: ServiceRequest) -> Self::Future {
        let want = self.0;
        let inner = self.1.call(req);
        Box::pin(async move {
            let ok = RequestContext::current()
                .is_some_and(|c| c.metadata.get("token").map(String::as_str) == Some(want));
            if !ok {
                return Ok(Reply::status(Status::BadRequest, "missing or wrong token"));
            }
            inner.await
        })
    }
}
