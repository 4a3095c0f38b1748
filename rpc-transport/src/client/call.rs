//! Typed calls: the RPC envelope over the attempt loop, and the [`Call`] builder that
//! generated clients return.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use rpc_core::{
    codec, MethodInfo, Payload, Reply, ReplyHeader, RequestHeader, RequestId, RpcError, Status,
    PROTOCOL_VERSION,
};

use super::member::Member;
use super::{Client, Verdict};
use crate::message::{Message, Outgoing};

/// Per-call settings.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Deadline of the call; the client's default when `None`.
    pub timeout: Option<Duration>,
    /// Metadata sent in the request header.
    pub metadata: BTreeMap<String, String>,
    /// Hedge delay (see [`ClientBuilder::hedge`](super::ClientBuilder::hedge)); the
    /// client's when `None`.
    pub hedge: Option<Duration>,
}

fn classify(id: RequestId, mut reply: Message) -> Verdict<Reply> {
    if reply.len() != 2 {
        return Verdict::Fail(RpcError::Protocol(format!(
            "reply has {} frames after the envelope, expected 2",
            reply.len()
        )));
    }
    let header = reply.pop_front().unwrap_or_default();
    let body = reply.pop_front().unwrap_or_default();
    let header = match ReplyHeader::from_bytes(&header) {
        Ok(h) => h,
        Err(e) => return Verdict::Fail(e),
    };
    if header.id != id {
        return Verdict::Fail(RpcError::Protocol("reply for another request id".into()));
    }
    match header.status {
        Status::Ok | Status::AppError => Verdict::Done(Reply {
            status: header.status,
            message: header.message,
            body: body.into(),
        }),
        Status::Overloaded | Status::ShuttingDown => {
            Verdict::NotRun(RpcError::from_status(header.status, header.message))
        }
        s => Verdict::Fail(RpcError::from_status(s, header.message)),
    }
}

impl Client {
    /// Calls `method` with MessagePack `args`; returns the OK or APP_ERROR reply.
    ///
    /// (Not an async fn: the frames-building closure owns the arguments and the
    /// metadata, so that the call's future holds them once.)
    pub fn call(
        &self,
        method: &'static MethodInfo,
        args: Payload,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Reply, RpcError>> + Send + '_ {
        let id = RequestId::new();
        let timeout = opts.timeout.unwrap_or(self.inner.config.call_timeout);
        let span = tracing::debug_span!(
            "rpc.call",
            service = method.service(),
            method = method.method(),
            request_id = %id,
            attempt = tracing::field::Empty,
            endpoint = tracing::field::Empty
        );
        let hedge_ms = match opts.hedge {
            Some(_) => super::hedge_ms(opts.hedge),
            None => self.inner.config.hedge_ms(),
        };
        #[allow(unused_mut)]
        let mut metadata = opts.metadata;
        #[cfg(feature = "opentelemetry")]
        crate::trace_context::inject(&span, &mut metadata);
        let build = move |attempt: u32, remaining: Duration, to: &Member| {
            let header = RequestHeader {
                v: PROTOCOL_VERSION,
                id,
                method: method.name.into(),
                timeout_ms: u64::try_from(remaining.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
                attempt,
                meta: metadata.clone(),
                acks: Vec::new(),
                sent_ms: if to.send_time {
                    crate::timer::wall_clock_ms()
                } else {
                    None
                },
            };
            // The envelope is the delimiter alone: the header carries the id, by which
            // the reply is matched.
            let mut head = Vec::with_capacity(2 + args.parts().len());
            head.push(Bytes::new());
            head.push(to.with_acks(|acks| header.to_frame_acking(acks)));
            Outgoing::with_payload(head, args.clone())
        };
        tracing::Instrument::instrument(
            self.execute(id, method.retry, timeout, hedge_ms, true, build, move |r| {
                classify(id, r)
            }),
            span,
        )
    }
}

/// A call in preparation: set a deadline or metadata, then `.await` it.
///
/// ```text
/// let sum = calc.add(2, 3).timeout(Duration::from_millis(300)).await?;
/// ```
#[must_use = "a call does nothing until awaited"]
pub struct Call<R> {
    client: Client,
    method: &'static MethodInfo,
    args: Result<Payload, RpcError>,
    opts: CallOptions,
    decode: fn(Reply) -> Result<R, RpcError>,
}

impl<R> std::fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method.name)
            .field("opts", &self.opts)
            .finish()
    }
}

impl<R: Send + 'static> Call<R> {
    /// A call of `method` with already-encoded arguments (or the encoding error) and a
    /// decoder of the reply. Used by generated clients.
    pub fn new(
        client: Client,
        method: &'static MethodInfo,
        args: Result<Payload, RpcError>,
        decode: fn(Reply) -> Result<R, RpcError>,
    ) -> Call<R> {
        Call {
            client,
            method,
            args,
            opts: CallOptions::default(),
            decode,
        }
    }

    /// Overrides the call's deadline.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.opts.timeout = Some(d);
        self
    }

    /// Hedges this call after `delay` (see
    /// [`ClientBuilder::hedge`](super::ClientBuilder::hedge)); ignored for
    /// `at_most_once` methods.
    pub fn hedge(mut self, delay: Duration) -> Self {
        self.opts.hedge = Some(delay);
        self
    }

    /// Adds a metadata entry to the request header.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.metadata.insert(key.into(), value.into());
        self
    }
}

impl<R: Send + 'static> IntoFuture for Call<R> {
    type Output = Result<R, RpcError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R, RpcError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let started = crate::observe::call_started();
            let method = self.method;
            let args = self.args?;
            let reply = match self.client.layers() {
                Some(stack) => {
                    let req = super::CallRequest {
                        method,
                        args,
                        opts: self.opts,
                    };
                    // Boxed: layers are the rare case; the call's future stays small.
                    Box::pin(tower::ServiceExt::oneshot(stack, req)).await
                }
                None => self.client.call(method, args, self.opts).await,
            };
            crate::observe::client_call(
                method,
                crate::observe::outcome(&reply.as_ref().map(|_| ())),
                started,
            );
            (self.decode)(reply?)
        })
    }
}

/// Decodes the reply of a method declared `-> T`.
pub fn decode_value<T: serde::de::DeserializeOwned>(reply: Reply) -> Result<T, RpcError> {
    match reply.status {
        Status::Ok => codec::decode_payload(&reply.body),
        s => Err(RpcError::Protocol(format!(
            "status {s:?} for a method without an error type"
        ))),
    }
}

/// Decodes the reply of a method declared `-> Result<T, E>`.
pub fn decode_result<T, E>(reply: Reply) -> Result<Result<T, E>, RpcError>
where
    T: serde::de::DeserializeOwned,
    E: serde::de::DeserializeOwned,
{
    match reply.status {
        Status::Ok => codec::decode_payload(&reply.body).map(Ok),
        Status::AppError => codec::decode_payload(&reply.body).map(Err),
        s => Err(RpcError::Protocol(format!("unexpected status {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::Call;
    use crate::client::Client;
    use rpc_core::{MethodInfo, Payload, RetryPolicy};

    /// glibc serves blocks up to 1,032 bytes from its per-thread cache (tcache); a
    /// larger one takes its slower paths. A typed call's future is boxed once per call.
    const SMALL_BLOCK: usize = 1024;

    #[tokio::test]
    async fn a_calls_future_fits_the_allocators_per_thread_cache() {
        // Never accepts: the call is only built, not awaited.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = Client::builder()
            .endpoint(format!("tcp://{addr}"))
            .connect()
            .await
            .expect("client");
        static M: MethodInfo = MethodInfo::new("Svc.method", RetryPolicy::Retry);
        let call = Call::new(client, &M, Ok(Payload::default()), |_| Ok(()));
        let fut = std::future::IntoFuture::into_future(call);
        let size = std::mem::size_of_val(&*fut);
        assert!(
            size <= SMALL_BLOCK,
            "a call's future is {size} bytes: box its rare waits"
        );
    }
}
