//! The RPC server: a ROUTER socket, one task per request, a concurrency limit, a
//! reply cache, graceful drain.
//!
//! Requests are `[envelope...][empty][header][arguments]`; the envelope (the peer's
//! routing id, then whatever the client put before the delimiter: our client's
//! request id, a libzmq REQ_CORRELATE id, or nothing for a plain REQ) is echoed on the
//! reply `[envelope...][empty][header][body]`. So any REQ or DEALER can call it.
//!
//! # Layout
//! - `mod.rs`: [`Server`], [`ServerBuilder`], [`ServerHandle`], the receive loop.
//! - `dedup.rs`: [`ReplyCache`].
//! - `context.rs`: [`RequestContext`], what a handler can learn about its request.
//! - `unwind.rs`: catching handler panics.

mod context;
mod dedup;
mod unwind;

pub use context::RequestContext;
pub use dedup::{Lookup, ReplyCache};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{
    codec, Dispatch, Reply, ReplyHeader, RequestHeader, RequestId, ServiceRequest, Status,
    PROTOCOL_VERSION,
};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use self::unwind::CatchUnwind;
use crate::message::Message;
use crate::socket::{Endpoint, RouterSender, RouterSocket, SocketError, SocketOptions};
use crate::zmtp::HeartbeatConfig;

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// Builds and starts a server.
///
/// Defaults: 1024 requests running at once (more answer OVERLOADED at once); a reply
/// cache of 10,000 replies kept up to 60 s; 10 s to drain on shutdown; heartbeat
/// every 1 s with a 3 s timeout; 4 MiB messages.
pub struct ServerBuilder {
    endpoints: Vec<String>,
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    max_concurrency: usize,
    cache_entries: usize,
    cache_age: Duration,
    drain_timeout: Duration,
    socket: SocketOptions,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// The defaults, no endpoint, no service.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            endpoints: Vec::new(),
            services: HashMap::new(),
            max_concurrency: 1024,
            cache_entries: 10_000,
            cache_age: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            socket: SocketOptions::default().heartbeat(HeartbeatConfig {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(3),
                ttl: Duration::from_secs(6),
            }),
        }
    }

    /// Adds an endpoint to bind (`tcp://*:5555`, `tcp://127.0.0.1:0`, `ipc://...`).
    pub fn bind(mut self, ep: impl Into<String>) -> Self {
        self.endpoints.push(ep.into());
        self
    }

    /// Adds a service; requests are routed to it by the service part of the method name.
    pub fn add_service(mut self, svc: impl Dispatch) -> Self {
        self.services.insert(svc.service_name(), Arc::new(svc));
        self
    }

    /// Most requests running at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Reply cache bounds (0 entries turns deduplication of finished calls off).
    pub fn reply_cache(mut self, entries: usize, max_age: Duration) -> Self {
        self.cache_entries = entries;
        self.cache_age = max_age;
        self
    }

    /// Longest wait for running requests on shutdown.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Heartbeats on client connections (`None`: answer PINGs only).
    pub fn heartbeat(mut self, hb: Option<HeartbeatConfig>) -> Self {
        self.socket.heartbeat = hb;
        self
    }

    /// Largest request accepted.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.socket.max_message_size = n;
        self
    }

    /// Binds every endpoint and starts serving in the background.
    pub async fn start(self) -> Result<ServerHandle, SocketError> {
        let mut router = RouterSocket::with_options(self.socket.clone());
        let mut bound = Vec::new();
        for ep in &self.endpoints {
            bound.push(router.bind(ep).await?);
        }
        let shared = Arc::new(Shared {
            services: self.services,
            limit: Arc::new(Semaphore::new(self.max_concurrency)),
            max_concurrency: self.max_concurrency,
            cache: Mutex::new(ReplyCache::new(self.cache_entries, self.cache_age)),
            sender: router.sender(),
            counters: Counters::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let drain = self.drain_timeout;
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                serve_loop(&mut router, &shared, stop_rx, drain).await;
            }
        });
        for ep in &bound {
            tracing::info!(endpoint = %ep, "server listening");
        }
        Ok(ServerHandle {
            endpoints: bound,
            stop,
            task,
            shared,
        })
    }

    /// Adds `svc`, starts, and serves until the process ends.
    pub async fn serve(self, svc: impl Dispatch) -> Result<(), SocketError> {
        let handle = self.add_service(svc).start().await?;
        handle.wait().await;
        Ok(())
    }
}

/// A running server.
pub struct ServerHandle {
    endpoints: Vec<Endpoint>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The endpoints actually bound (real ports for `:0`).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Graceful shutdown: new requests get SHUTTING_DOWN, running ones finish (up to
    /// the drain timeout) and their replies are sent, then the socket closes.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }
}

/// Server counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests received.
    pub requests: u64,
    /// Handlers run.
    pub executed: u64,
    /// Requests answered from the reply cache or joined to a running execution.
    pub deduplicated: u64,
    /// Requests refused with OVERLOADED.
    pub overloaded: u64,
    /// Requests refused with SHUTTING_DOWN.
    pub shutting_down: u64,
    /// Requests refused as BAD_REQUEST, UNKNOWN_METHOD or DEADLINE_EXCEEDED before running.
    pub rejected: u64,
    /// Handlers that panicked.
    pub panics: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    executed: AtomicU64,
    deduplicated: AtomicU64,
    overloaded: AtomicU64,
    shutting_down: AtomicU64,
    rejected: AtomicU64,
    panics: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ServerStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            requests: r(&self.requests),
            executed: r(&self.executed),
            deduplicated: r(&self.deduplicated),
            overloaded: r(&self.overloaded),
            shutting_down: r(&self.shutting_down),
            rejected: r(&self.rejected),
            panics: r(&self.panics),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    limit: Arc<Semaphore>,
    max_concurrency: usize,
    cache: Mutex<ReplyCache>,
    sender: RouterSender,
    counters: Counters,
}

async fn serve_loop(
    router: &mut RouterSocket,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    loop {
        tokio::select! {
            m = router.recv() => match m {
                Ok(m) => shared.handle(m, false).await,
                Err(_) => return,
            },
            _ = stop.changed() => break,
        }
    }
    tracing::info!("server draining");
    let deadline = Instant::now() + drain;
    let all = u32::try_from(shared.max_concurrency).unwrap_or(u32::MAX);
    let idle = shared.limit.clone().acquire_many_owned(all);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            m = router.recv() => match m {
                Ok(m) => shared.handle(m, true).await,
                Err(_) => return,
            },
            _ = &mut idle => break,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("drain timeout: closing with requests still running");
                break;
            }
        }
    }
    tracing::info!("server stopped");
}

/// `[header][body]` of a reply.
fn reply_frames(id: RequestId, reply: Reply) -> Vec<Bytes> {
    let header = ReplyHeader {
        v: PROTOCOL_VERSION,
        id,
        status: reply.status,
        message: reply.message,
    };
    let h = codec::encode(&header).unwrap_or_default();
    vec![Bytes::from(h), reply.body]
}

impl Shared {
    async fn send(&self, envelope: &[Bytes], frames: &[Bytes]) {
        let Some((rid, rest)) = envelope.split_first() else {
            return;
        };
        let mut msg = Message::with_capacity(rest.len() + frames.len());
        for f in rest.iter().chain(frames) {
            msg.push(f.clone());
        }
        if !self.sender.send_to(rid, msg).await {
            tracing::debug!("client gone; reply dropped");
        }
    }

    async fn refuse(&self, envelope: &[Bytes], id: RequestId, status: Status, why: String) {
        tracing::debug!(request_id = %id, ?status, why, "request refused");
        self.send(envelope, &reply_frames(id, Reply::status(status, why)))
            .await;
    }

    async fn handle(self: &Arc<Self>, msg: Message, draining: bool) {
        bump(&self.counters.requests);
        let mut frames = msg.into_frames();
        // Envelope: the routing id, then everything up to and including the delimiter.
        let Some(d) = frames
            .iter()
            .skip(1)
            .position(Bytes::is_empty)
            .map(|p| p + 1)
        else {
            tracing::debug!("request without envelope delimiter dropped");
            return;
        };
        let body = frames.split_off(d + 1);
        let envelope = frames;
        let nil = RequestId(uuid::Uuid::nil());
        let header: RequestHeader = match &body[..] {
            [h, _] => match codec::decode(h) {
                Ok(h) => h,
                Err(e) => {
                    bump(&self.counters.rejected);
                    let why = format!("bad request header: {}", error_chain(&e));
                    return self.refuse(&envelope, nil, Status::BadRequest, why).await;
                }
            },
            _ => {
                bump(&self.counters.rejected);
                let why = format!("expected 2 frames after the envelope, got {}", body.len());
                return self.refuse(&envelope, nil, Status::BadRequest, why).await;
            }
        };
        let id = header.id;
        if header.v != PROTOCOL_VERSION {
            bump(&self.counters.rejected);
            let why = format!("unsupported protocol version {}", header.v);
            return self.refuse(&envelope, id, Status::BadRequest, why).await;
        }
        if draining {
            bump(&self.counters.shutting_down);
            return self
                .refuse(
                    &envelope,
                    id,
                    Status::ShuttingDown,
                    "server is shutting down".into(),
                )
                .await;
        }
        if header.timeout_ms == 0 {
            bump(&self.counters.rejected);
            return self
                .refuse(
                    &envelope,
                    id,
                    Status::DeadlineExceeded,
                    "no time left".into(),
                )
                .await;
        }
        let (service, method) = header
            .method
            .rsplit_once('.')
            .unwrap_or(("", &header.method));
        let Some(svc) = self.services.get(service).cloned() else {
            bump(&self.counters.rejected);
            let why = format!("unknown service {service:?}");
            return self.refuse(&envelope, id, Status::UnknownMethod, why).await;
        };
        let now = Instant::now();
        let lookup = self.cache().begin(id, envelope.clone(), now.into_std());
        match lookup {
            Lookup::Run => {}
            Lookup::Joined => {
                bump(&self.counters.deduplicated);
                return;
            }
            Lookup::Cached(reply) => {
                bump(&self.counters.deduplicated);
                return self.send(&envelope, &reply).await;
            }
        }
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            bump(&self.counters.overloaded);
            let waiters = self.cache().abandon(id);
            let frames = reply_frames(
                id,
                Reply::status(Status::Overloaded, "concurrency limit reached"),
            );
            for env in waiters {
                self.send(&env, &frames).await;
            }
            return;
        };
        bump(&self.counters.executed);
        let remaining = Duration::from_millis(header.timeout_ms);
        let request = ServiceRequest {
            method: method.to_string(),
            args: body[1].clone(),
        };
        let span = tracing::debug_span!("rpc.request", method = %header.method, request_id = %id, attempt = header.attempt);
        let ctx = RequestContext {
            request_id: id,
            method: header.method.clone(),
            attempt: header.attempt,
            deadline: now + remaining,
            metadata: header.meta,
        };
        let shared = self.clone();
        tokio::spawn(
            async move {
                let run = context::scope(ctx, CatchUnwind::new(svc.dispatch(request)));
                let outcome = tokio::time::timeout(remaining, run).await;
                let reply = match outcome {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(panic)) => {
                        bump(&shared.counters.panics);
                        tracing::error!(panic, "handler panicked");
                        Reply::status(Status::Internal, format!("handler panicked: {panic}"))
                    }
                    Err(_) => {
                        Reply::status(Status::DeadlineExceeded, "deadline passed while running")
                    }
                };
                let frames = reply_frames(id, reply);
                let waiters = shared
                    .cache()
                    .finish(id, frames.clone(), Instant::now().into_std());
                for env in waiters {
                    shared.send(&env, &frames).await;
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReplyCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
