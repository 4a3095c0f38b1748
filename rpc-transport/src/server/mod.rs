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
//! - `reply_cache.rs`: the reply cache (bounded in entries, bytes and age).
//! - `context.rs`: [`RequestContext`], what a handler can learn about its request.
//! - `handler.rs`: a handler's future, with its context and its panics caught.

mod context;
mod handler;
mod layered;
mod reply_cache;

pub use context::RequestContext;
pub use layered::Dispatcher;

/// Wraps a service in a layer (see [`ServerBuilder::layer`]).
type Wrap = Arc<dyn Fn(Arc<dyn Dispatch>) -> Arc<dyn Dispatch> + Send + Sync>;
use reply_cache::{Lookup, ReplyCache};

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{
    Dispatch, Reply, ReplyHeader, RequestHeader, RequestId, ServiceRequest, Status, MAX_ACKS,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use self::handler::Handler;
use crate::counter::{bump, read};
use crate::message::Outgoing;
use crate::socket::core::{Answers, Direct, Inbound, PeerId};
use crate::socket::{Endpoint, RouterSocket, SocketError, SocketOptions};
use crate::sync::lock;
use crate::zmtp::curve::{KeyPair, PublicKey};
use crate::zmtp::HeartbeatConfig;
use crate::zmtp::Mechanism;

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
/// Defaults: 1024 requests running at once (more answer OVERLOADED at once), whose
/// handlers, when they wait, hold 256 MiB of arguments at most; a reply cache of 10,000
/// replies (64 MiB at most) kept up to 60 s; 10 s to drain on shutdown; heartbeat every
/// 1 s with a 3 s timeout; 4 MiB messages; 65,536 connections.
///
/// A service is a [`Dispatch`]: `#[rpc_service]` writes one for a trait (`XServer`).
/// Here one is written by hand, served on a port the OS picks, and called with the
/// client's [`Call`](crate::client::Call) as a generated client would:
///
/// ```
/// use rpc_core::{codec, service::BoxFuture, Dispatch, MethodInfo, Reply, RetryPolicy, ServiceRequest, Status};
/// use rpc_transport::client::{decode_value, Call, Client};
/// use rpc_transport::server::Server;
///
/// struct Greeter;
///
/// static HELLO: MethodInfo = MethodInfo::new("Greeter.hello", RetryPolicy::Retry);
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Args {
///     name: String,
/// }
///
/// impl Dispatch for Greeter {
///     fn service_name(&self) -> &'static str {
///         "Greeter"
///     }
///     fn methods(&self) -> &'static [MethodInfo] {
///         std::slice::from_ref(&HELLO)
///     }
///     fn dispatch(&self, req: ServiceRequest) -> BoxFuture<Reply> {
///         Box::pin(async move {
///             match (&*req.method, Reply::decode_args::<Args>(&req.args)) {
///                 ("hello", Ok(a)) => Reply::ok(&format!("hello, {}", a.name)),
///                 ("hello", Err(bad)) => bad,
///                 (m, _) => Reply::status(Status::UnknownMethod, m),
///             }
///         })
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .bind("tcp://127.0.0.1:0")
///     .add_service(Greeter)
///     .start()
///     .await?;
/// let client = Client::builder()
///     .endpoint(server.endpoints()[0].to_string())
///     .connect()
///     .await?;
/// let args = codec::encode_payload(&Args { name: "Ada".into() });
/// let text: String = Call::new(client, &HELLO, args, decode_value).await?;
/// assert_eq!(text, "hello, Ada");
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    endpoints: Vec<String>,
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    max_concurrency: usize,
    max_waiting_bytes: usize,
    cache_entries: usize,
    cache_age: Duration,
    cache_bytes: usize,
    drain_timeout: Duration,
    socket: SocketOptions,
    /// Layers around every service, innermost first.
    layers: Vec<Wrap>,
    reserved: bool,
    clock_skew: Option<Duration>,
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
            layers: Vec::new(),
            reserved: true,
            clock_skew: None,
            max_concurrency: 1024,
            max_waiting_bytes: 256 << 20,
            cache_entries: 10_000,
            cache_age: Duration::from_secs(60),
            cache_bytes: 64 << 20,
            drain_timeout: Duration::from_secs(10),
            socket: SocketOptions {
                // A request over the limit is answered TOO_LARGE, its body read past.
                discard_oversize: true,
                ..SocketOptions::default().heartbeat(HeartbeatConfig {
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(3),
                    ttl: Duration::from_secs(6),
                })
            },
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

    /// Whether the server answers the reserved methods `_rpc.health` ("SERVING",
    /// or SHUTTING_DOWN while draining) and `_rpc.describe` (its services, methods
    /// and their retry semantics); docs/PROTOCOL.md §9. On by default.
    pub fn reserved_methods(mut self, on: bool) -> Self {
        self.reserved = on;
        self
    }

    /// Puts a tower [`Layer`](tower::Layer) around every service (those added before
    /// and after): a request goes through the layer's service, as a
    /// [`ServiceRequest`], to the service's dispatcher ([`Dispatcher`]), and the
    /// [`Reply`] comes back through it. Layers given first are innermost. A layer's
    /// error is answered as a status: tower's timeout DEADLINE_EXCEEDED, its load
    /// shedding OVERLOADED (the caller tries another server), others INTERNAL.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<Dispatcher> + Send + Sync + 'static,
        L::Service:
            tower::Service<ServiceRequest, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ServiceRequest>>::Error: Into<tower::BoxError>,
        <L::Service as tower::Service<ServiceRequest>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner: Arc<dyn Dispatch>| {
            let service = layer.layer(Dispatcher(inner.clone()));
            Arc::new(layered::Layered::new(&*inner, service)) as Arc<dyn Dispatch>
        }));
        self
    }

    /// Most requests running at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Most argument bytes that requests whose handlers wait may hold together (default
    /// 256 MiB): past it, new requests are answered OVERLOADED until some of those
    /// finish (one is always let in). Without it the bound would be the concurrency
    /// limit times the message size (4 GiB at the defaults). Handlers that finish at
    /// once, in the connection's task, hold nothing beyond their own request. The sum
    /// is looked at before a request runs: requests let in at the same moment by
    /// other threads may pass the bound by one message each.
    pub fn max_waiting_bytes(mut self, n: usize) -> Self {
        self.max_waiting_bytes = n;
        self
    }

    /// Reply cache bounds (0 entries turns deduplication of finished calls off). The
    /// cache lets go of replies half of it at a time: each is kept at least half of
    /// each bound (`entries / 2` newer replies, `max_age / 2`), never beyond one.
    pub fn reply_cache(mut self, entries: usize, max_age: Duration) -> Self {
        self.cache_entries = entries;
        self.cache_age = max_age;
        self
    }

    /// Most reply bytes the reply cache holds (default 64 MiB); replies larger than
    /// this are not cached. A large [`Blob`](rpc_core::Blob) in a reply is kept by
    /// reference; up to 64 KiB it is copied, so that a slice of a larger buffer (the
    /// request's, when a handler answers with what it received) is not held.
    pub fn reply_cache_bytes(mut self, n: usize) -> Self {
        self.cache_bytes = n;
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

    /// Speaks CURVE to every client, with the server's permanent `keys`: clients must
    /// know its public key; everything after the handshake is encrypted and
    /// authenticated. Any client that completes the handshake is served unless
    /// [`allow_clients`](Self::allow_clients) or [`authorize`](Self::authorize) says
    /// otherwise.
    pub fn curve(mut self, keys: KeyPair) -> Self {
        let authorize = match &self.socket.mechanism {
            Mechanism::CurveServer { authorize, .. } => authorize.clone(),
            _ => None,
        };
        self.socket.mechanism = Mechanism::CurveServer { keys, authorize };
        self
    }

    /// With [`curve`](Self::curve): only clients whose public key is listed may
    /// connect; the others' handshakes end with an ERROR ("authentication failed"),
    /// logged with their address.
    pub fn allow_clients(self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let allowed: std::collections::HashSet<PublicKey> = keys.into_iter().collect();
        self.authorize(move |key| allowed.contains(key))
    }

    /// With [`curve`](Self::curve): `allow` decides, by the client's public key,
    /// whether it may connect (called once per connection, during the handshake: keep
    /// it quick).
    pub fn authorize(mut self, allow: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        if let Mechanism::CurveServer { authorize, .. } = &mut self.socket.mechanism {
            *authorize = Some(Arc::new(allow));
        } else {
            tracing::warn!("ServerBuilder::authorize without curve(): nothing to authorize");
        }
        self
    }

    /// With [`curve`](Self::curve) or [`plain`](Self::plain): the application decides
    /// on each client that passed the mechanism (and its allow-list, if any), and may
    /// wait to (a lookup elsewhere), within the authenticator's time bound. It sees
    /// the client's address and key or user name and password; it may give the
    /// client an identity, which handlers read in [`RequestContext`]'s `user`. A
    /// refused client's calls fail with the reason given; the refusal is logged with
    /// its address.
    pub fn authenticate(mut self, authenticator: crate::socket::Authenticator) -> Self {
        if !self.socket.mechanism.as_server() {
            tracing::warn!("ServerBuilder::authenticate without curve() or plain(): NULL clients are not asked about");
        }
        self.socket.authenticator = Some(authenticator);
        self
    }

    /// Speaks PLAIN (RFC 24) to every client: user names and passwords travel in
    /// clear, so only inside a network already trusted. Any user is served unless
    /// [`allow_users`](Self::allow_users) or [`authorize_plain`](Self::authorize_plain)
    /// says otherwise; handlers see the user in [`RequestContext`]'s `user`.
    pub fn plain(mut self) -> Self {
        self.socket.mechanism = Mechanism::PlainServer { authorize: None };
        self
    }

    /// With [`plain`](Self::plain): only these user names with these passwords may
    /// connect.
    pub fn allow_users<U, P>(self, users: impl IntoIterator<Item = (U, P)>) -> Self
    where
        U: Into<String>,
        P: Into<Vec<u8>>,
    {
        let users: HashMap<String, Vec<u8>> = users
            .into_iter()
            .map(|(u, p)| (u.into(), p.into()))
            .collect();
        self.authorize_plain(move |user, pass| users.get(user).is_some_and(|p| p == pass))
    }

    /// With [`plain`](Self::plain): `allow` decides by user name and password.
    pub fn authorize_plain(
        mut self,
        allow: impl Fn(&str, &[u8]) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.socket.mechanism = Mechanism::PlainServer {
            authorize: Some(Arc::new(allow)),
        };
        self
    }

    /// States that clients' wall clocks are within `bound` of this server's, and so
    /// lets it refuse (DEADLINE_EXCEEDED, not run) a request that waited past its
    /// caller's deadline before it was read: one that sat in a frozen or
    /// partitioned server's socket while its client, still connected, gave up on it.
    /// A request says when it was sent (`sent_ms`); it is refused when this server's
    /// clock is past that plus its time left plus `bound`. Off by default: with
    /// clocks further apart than `bound`, requests in time would be refused. Requests
    /// that do not say when they were sent (libzmq clients written by hand) are not
    /// judged.
    pub fn clock_skew(mut self, bound: Duration) -> Self {
        self.clock_skew = Some(bound);
        self
    }

    /// The clock of handshake and heartbeat deadlines (see
    /// [`Timer`](crate::Timer); default tokio's, which `tokio::time::pause()` controls).
    pub fn timer(mut self, timer: crate::Timer) -> Self {
        self.socket.timer = timer;
        self
    }

    /// Time a connection has to complete its greeting and handshake (default 30 s, as
    /// libzmq's `ZMQ_HANDSHAKE_IVL`): a peer that stops half-way is closed then.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.socket.handshake_timeout = d;
        self
    }

    /// Largest request accepted.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.socket.max_message_size = n;
        self
    }

    /// Most client connections held at once (default 65,536); one more is accepted
    /// and closed at once, logged. With [`ServerBuilder::max_message_size`] it bounds
    /// what requests being received can hold: each connection buffers at most one
    /// partly received message.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.socket.max_connections = n;
        self
    }

    /// Binds every endpoint and starts serving in the background.
    pub async fn start(self) -> Result<ServerHandle, SocketError> {
        if self.endpoints.is_empty() {
            return Err(SocketError::Config(
                "a server needs an endpoint to bind: ServerBuilder::bind".into(),
            ));
        }
        if self.services.is_empty() {
            return Err(SocketError::Config(
                "a server needs a service to serve: ServerBuilder::add_service".into(),
            ));
        }
        let router = RouterSocket::with_options(self.socket.clone());
        let mut bound = Vec::new();
        for ep in &self.endpoints {
            bound.push(router.bind(ep).await?);
        }
        let mut services = self.services;
        for svc in services.values_mut() {
            for wrap in &self.layers {
                *svc = wrap(svc.clone());
            }
        }
        let mut routes = HashMap::default();
        for svc in services.values() {
            for m in svc.methods() {
                let route = Route {
                    svc: svc.clone(),
                    name: m.name,
                    method: m.method(),
                };
                routes.insert(m.name.as_bytes(), route);
            }
        }
        let shared = Arc::new(Shared {
            services,
            routes,
            limit: Arc::new(Semaphore::new(self.max_concurrency)),
            max_concurrency: self.max_concurrency,
            waiting_bytes: AtomicUsize::new(0),
            max_waiting_bytes: self.max_waiting_bytes,
            cache: Mutex::new(ReplyCache::new(
                self.cache_entries,
                self.cache_age,
                self.cache_bytes,
            )),
            draining: AtomicBool::new(false),
            reserved: self.reserved,
            clock_skew_ms: self
                .clock_skew
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            counters: Counters::default(),
            max_reply: self.socket.max_message_size,
        });
        // Requests are handled in the connection's own task: no hop to a server loop.
        let weak = Arc::downgrade(&shared);
        let _ = router.core().direct.set(Direct {
            sink: Arc::new(move |inbound: Inbound, answers: &mut Answers<'_>| {
                if let Some(shared) = weak.upgrade() {
                    shared.handle(inbound, answers);
                }
            }),
            batch: ANSWER_BATCH,
            small_answers: Some((SMALL_ANSWER_BATCH, SMALL_ANSWER_BYTES)),
            answers: true,
            wake_line: None,
        });
        let peers = router.watch_peers();
        let (stop, stop_rx) = watch::channel(false);
        let drain = self.drain_timeout;
        let task = tokio::spawn({
            let shared = shared.clone();
            async move { drain_then_close(router, &shared, stop_rx, drain).await }
        });
        for ep in &bound {
            tracing::info!(endpoint = %ep, "server listening");
        }
        Ok(ServerHandle {
            peers,
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
    /// Clients connected (handshake completed).
    peers: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
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
        let mut stats = self.shared.counters.snapshot();
        stats.cached_bytes = self.shared.cache().bytes() as u64;
        stats.waiting_bytes = self.shared.waiting_bytes.load(Ordering::Relaxed) as u64;
        stats.connections = *self.peers.borrow() as u64;
        stats
    }
}

/// Server counters. More counters may come: match with `..`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Requests refused as BAD_REQUEST, UNKNOWN_METHOD, DEADLINE_EXCEEDED or TOO_LARGE
    /// before running.
    pub rejected: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Requests not started because their client had closed the connection behind
    /// them (a caller that gave up; the answer could reach no one).
    pub abandoned: u64,
    /// Bytes of finished replies the reply cache holds now (those not yet
    /// acknowledged by their clients, within the cache's bounds).
    pub cached_bytes: u64,
    /// Argument bytes that requests whose handlers wait hold now (see
    /// [`ServerBuilder::max_waiting_bytes`]).
    pub waiting_bytes: u64,
    /// Client connections open now (handshake completed).
    pub connections: u64,
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
    abandoned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ServerStats {
        let r = read;
        ServerStats {
            requests: r(&self.requests),
            executed: r(&self.executed),
            deduplicated: r(&self.deduplicated),
            overloaded: r(&self.overloaded),
            shutting_down: r(&self.shutting_down),
            rejected: r(&self.rejected),
            panics: r(&self.panics),
            abandoned: r(&self.abandoned),
            // Gauges, filled in by the caller.
            cached_bytes: 0,
            waiting_bytes: 0,
            connections: 0,
        }
    }
}

/// A method name's tag in the reply cache (32-bit FNV-1a): an id reused with another
/// method is refused instead of answered with the first method's reply.
fn method_tag(method: &str) -> u32 {
    method.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Requests handled per pass of a connection task before the answers given so far
/// are written: with 16 callers on one connection, answering a read batch in groups of
/// four keeps the client busy while the server works, where answering the whole batch
/// at once made them take turns (one more `writev` per four answers; figures in
/// docs/BENCHMARKS.md).
const ANSWER_BATCH: usize = 4;

/// Small answers leave in pairs on a machine with several CPUs: there the client is
/// waiting, not short of CPU. 4 KiB answers and a single CPU, where each write's cost
/// counts, keep fours (docs/ARCHITECTURE.md, "Answers leave in groups of four").
const SMALL_ANSWER_BATCH: usize = 2;
/// What "small" means for [`SMALL_ANSWER_BATCH`]: the pass's answers so far, in bytes.
const SMALL_ANSWER_BYTES: usize = 2048;

/// A request whose handler waits, counted in [`Shared::waiting_bytes`] until it ends
/// or is dropped.
struct Waiting {
    shared: Arc<Shared>,
    size: usize,
    /// Still counted (in the bytes and in the gauge of waiting handlers).
    counted: bool,
}

impl Waiting {
    fn new(shared: Arc<Shared>, size: usize) -> Waiting {
        shared.waiting_bytes.fetch_add(size, Ordering::Relaxed);
        crate::observe::server_waiting(1.0);
        Waiting {
            shared,
            size,
            counted: true,
        }
    }

    /// No longer counted (its handler is done with the arguments).
    fn end(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared
                .waiting_bytes
                .fetch_sub(self.size, Ordering::Relaxed);
            crate::observe::server_waiting(-1.0);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.end();
    }
}

/// Who waits for a reply: the connection's queue and the request's envelope.
struct Waiter {
    /// The connection (for answers given in its own task).
    peer: PeerId,
    conn: mpsc::Sender<Outgoing>,
    envelope: Vec<Bytes>,
}

/// Sends `reply` to every waiter: to those on the connection `here` runs for, queued
/// there at once (nothing copied but small frames); to others, a copy through their
/// connection's channel.
fn send_all(
    waiters: impl IntoIterator<Item = Waiter>,
    reply: &Outgoing,
    mut here: Option<(PeerId, &mut Answers<'_>)>,
) {
    for w in waiters {
        match &mut here {
            Some((peer, answers)) if w.peer == *peer => answers.send(&w.envelope, reply),
            _ => w.send(reply.clone()),
        }
    }
}

impl Waiter {
    /// Sends `envelope + frames` without blocking the caller; a full queue hands the
    /// send to a task, a closed one means the client is gone and the reply is dropped.
    fn send(self, reply: Outgoing) {
        let msg = reply.behind(self.envelope);
        match self.conn.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    let _ = conn.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("client gone; reply dropped");
            }
        }
    }
}

/// Where a method's requests go: filled from each service's method table.
/// The id a reply carries when the request's own could not be read (PROTOCOL.md §3).
const NIL_ID: RequestId = RequestId(uuid::Uuid::nil());

/// A request read and routed (see `Shared::read`): what running it needs.
struct Routed {
    header: RequestHeader,
    args: Bytes,
    waiter: Waiter,
    svc: Arc<dyn Dispatch>,
    /// The method's name within its service.
    method: Cow<'static, str>,
}

struct Route {
    svc: Arc<dyn Dispatch>,
    /// `"service.method"`.
    name: &'static str,
    /// `"method"`.
    method: &'static str,
}

struct Shared {
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    /// Every method of the method tables, by wire name as bytes (looked up before
    /// any UTF-8 check).
    routes: HashMap<&'static [u8], Route, BuildNameHasher>,
    limit: Arc<Semaphore>,
    max_concurrency: usize,
    /// Argument bytes held by requests whose handlers wait, and their bound.
    waiting_bytes: AtomicUsize,
    max_waiting_bytes: usize,
    cache: Mutex<ReplyCache<Waiter>>,
    draining: AtomicBool,
    /// Whether `_rpc.health` and `_rpc.describe` are answered.
    reserved: bool,
    /// Largest reply body sent (the message size limit): past it, the caller gets an
    /// error status instead, and the reply is not kept.
    max_reply: usize,
    /// [`ServerBuilder::clock_skew`], in milliseconds.
    clock_skew_ms: Option<u64>,
    counters: Counters,
}

/// Waits for the stop signal, then drains: new requests get SHUTTING_DOWN while the
/// running ones finish (up to `drain`), then the socket closes (lingering so that the
/// last replies leave).
async fn drain_then_close(
    router: RouterSocket,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    // Err: the handle was dropped without shutdown; keep serving until the process ends.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
    tracing::info!("server draining");
    shared.draining.store(true, Ordering::SeqCst);
    let all = u32::try_from(shared.max_concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, shared.limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing with requests still running");
    }
    drop(router);
    tracing::info!("server stopped");
}

/// `[header][body]` of a reply.
fn reply_frames(id: RequestId, reply: Reply) -> Outgoing {
    let header = ReplyHeader {
        v: PROTOCOL_VERSION,
        id,
        status: reply.status,
        message: reply.message,
    };
    // Room for an envelope of a routing id, a request id and the delimiter.
    let mut head = Vec::with_capacity(4 + reply.body.parts().len());
    head.push(header.to_frame());
    Outgoing::with_payload(head, reply.body)
}

impl Shared {
    fn refuse(&self, waiter: Waiter, id: RequestId, status: Status, why: String) {
        tracing::debug!(request_id = %id, ?status, why, "request refused");
        crate::observe::server_reply(status);
        waiter.send(reply_frames(id, Reply::status(status, why)));
    }

    /// A request over the message size limit: `frames` are those received before the
    /// limit was passed (the envelope up to `d`, its delimiter, and the header when it
    /// fitted). Answered TOO_LARGE with the request's id when the header can be read.
    fn too_large(
        &self,
        peer: PeerId,
        conn: mpsc::Sender<Outgoing>,
        mut frames: Vec<Bytes>,
        d: usize,
        size: u64,
    ) {
        bump(&self.counters.rejected);
        let id = frames
            .get(d + 1)
            .and_then(|h| RequestHeader::peek_id(h))
            .unwrap_or(NIL_ID);
        frames.truncate(d + 1);
        let max = self.max_reply;
        tracing::info!(request_id = %id, size, max, "request over the size limit refused");
        let why = format!("request of {size} bytes is over the server's limit of {max} bytes");
        let waiter = Waiter {
            peer,
            conn,
            envelope: frames,
        };
        self.refuse(waiter, id, Status::TooLarge, why);
    }

    /// Handles one request, in the connection's task. Never blocks: the handler is
    /// polled once here and only becomes a task of its own if it has to wait.
    /// Three steps: read and route it, let the reply cache answer a repeat, run it.
    fn handle(self: &Arc<Self>, inbound: Inbound, answers: &mut Answers<'_>) {
        bump(&self.counters.requests);
        if inbound.peer_gone {
            // Its client gave up on it: the answer could reach no one, and an
            // `at_most_once` caller has been told it may not have run.
            bump(&self.counters.abandoned);
            crate::observe::server_abandoned();
            tracing::debug!(
                peer = inbound.peer,
                "request not started: its client closed the connection behind it"
            );
            return;
        }
        let here = inbound.peer;
        let caller = (inbound.peer_key, inbound.peer_user.clone());
        let Some(req) = self.read(inbound) else {
            return;
        };
        let now = Instant::now();
        if self.repeated(&req.header, req.waiter, now) {
            return;
        }
        self.run(
            req.header,
            req.svc,
            req.method,
            req.args,
            caller,
            now,
            (here, answers),
        );
    }

    /// Reads a request's envelope and header and finds its service. What cannot be
    /// served is answered (BAD_REQUEST, SHUTTING_DOWN, ...) or dropped here: `None`.
    fn read(&self, inbound: Inbound) -> Option<Routed> {
        let mut frames = inbound.msg.into_frames();
        // Envelope: everything up to and including the first empty frame.
        let Some(d) = frames.iter().position(Bytes::is_empty) else {
            tracing::debug!("request without envelope delimiter dropped");
            return None;
        };
        if let Some(size) = inbound.too_large {
            self.too_large(inbound.peer, inbound.reply, frames, d, size);
            return None;
        }
        // `[header][arguments]` taken off the end: `frames` keeps the envelope.
        let after = frames.len() - (d + 1);
        let parts = if after == 2 {
            let args = frames.pop();
            frames.pop().zip(args)
        } else {
            frames.truncate(d + 1);
            None
        };
        let waiter = Waiter {
            peer: inbound.peer,
            conn: inbound.reply,
            envelope: frames,
        };
        // The method's route, found while reading the header.
        let route = std::cell::Cell::new(None);
        let known = |m: &[u8]| {
            let r = self.routes.get(m)?;
            route.set(Some(r));
            Some(r.name)
        };
        let refuse = |waiter, id, status, why| {
            bump(&self.counters.rejected);
            self.refuse(waiter, id, status, why);
            None
        };
        let (header, args) = match parts {
            Some((h, args)) => match RequestHeader::from_bytes_known(&h, known) {
                Ok(header) => (header, args),
                Err(e) => {
                    let why = format!("bad request header: {}", error_chain(&e));
                    // Answered with the request's own id when it can be read, so
                    // that its caller learns why at once.
                    let id = RequestHeader::peek_id(&h).unwrap_or(NIL_ID);
                    return refuse(waiter, id, Status::BadRequest, why);
                }
            },
            None => {
                let why = format!("expected 2 frames after the envelope, got {after}");
                return refuse(waiter, NIL_ID, Status::BadRequest, why);
            }
        };
        let id = header.id;
        if header.v != PROTOCOL_VERSION {
            let why = format!("unsupported protocol version {}", header.v);
            return refuse(waiter, id, Status::BadRequest, why);
        }
        if self.draining.load(Ordering::Relaxed) {
            bump(&self.counters.shutting_down);
            let why = "server is shutting down".to_string();
            self.refuse(waiter, id, Status::ShuttingDown, why);
            return None;
        }
        if header.timeout_ms == 0 {
            return refuse(waiter, id, Status::DeadlineExceeded, "no time left".into());
        }
        if let Some(late) = self.waited_past_deadline(&header) {
            let why = format!("the request waited {late} ms past its caller's deadline");
            return refuse(waiter, id, Status::DeadlineExceeded, why);
        }
        if route.get().is_none() && self.reserved && header.method.starts_with("_rpc.") {
            if let Some(reply) = self.reserved_reply(&header.method) {
                crate::observe::server_reply(reply.status);
                waiter.send(reply_frames(id, reply));
                return None;
            }
        }
        // A method of a table borrows its names; any other goes to its service by
        // name (a hand-written dispatcher may serve methods it does not list; the
        // generated ones answer UNKNOWN_METHOD).
        let (svc, method) = match route.get() {
            Some(r) => {
                crate::observe::server_request(r.name);
                (r.svc.clone(), Cow::Borrowed(r.method))
            }
            None => {
                let (service, method) = header
                    .method
                    .rsplit_once('.')
                    .unwrap_or(("", &header.method));
                let Some(svc) = self.services.get(service).cloned() else {
                    let why = format!("unknown service {service:?}");
                    return refuse(waiter, id, Status::UnknownMethod, why);
                };
                (svc, Cow::Owned(method.to_owned()))
            }
        };
        Some(Routed {
            header,
            args,
            waiter,
            svc,
            method,
        })
    }

    /// How long past its caller's deadline (and the stated clock skew) the request
    /// was read, when the server bounds skew and the request says when it was sent.
    fn waited_past_deadline(&self, header: &RequestHeader) -> Option<u64> {
        let (skew, sent) = (self.clock_skew_ms?, header.sent_ms?);
        let now = crate::timer::wall_clock_ms()?;
        let due = sent.saturating_add(header.timeout_ms).saturating_add(skew);
        now.checked_sub(due).filter(|&late| late > 0)
    }

    /// Lets the reply cache take the request: a repeat of a call it knows is
    /// answered from it, joined to the running execution, dropped (acknowledged
    /// already) or refused (its id reused with another method). True when it did.
    fn repeated(&self, header: &RequestHeader, waiter: Waiter, now: Instant) -> bool {
        let id = header.id;
        let lookup = {
            let mut cache = self.cache();
            // Replies this client has received: let go of them now, while their
            // memory is still warm (the cache would hold them until evicted).
            for acked in header.acks.iter().take(MAX_ACKS) {
                cache.ack(*acked);
            }
            cache.begin_tagged(id, method_tag(&header.method), waiter, now.into_std())
        };
        let deduplicated = || {
            bump(&self.counters.deduplicated);
            crate::observe::server_deduplicated();
        };
        match lookup {
            Lookup::Run => return false,
            Lookup::Joined => deduplicated(),
            Lookup::Cached(reply, waiter) => {
                deduplicated();
                waiter.send(reply);
            }
            Lookup::Acked => {
                // A stale copy of a call that has its reply: nobody waits for it.
                deduplicated();
                tracing::debug!(request_id = %id, "request of an acknowledged call dropped");
            }
            Lookup::Conflict(waiter) => {
                bump(&self.counters.rejected);
                let why = format!(
                    "request id {id} reused with another method ({})",
                    header.method
                );
                self.refuse(waiter, id, Status::BadRequest, why);
            }
        }
        true
    }

    /// Runs a request the cache has registered (its waiter is there), within the
    /// server's limits: polled once here, a task of its own if it has to wait.
    #[allow(clippy::too_many_arguments)]
    fn run(
        self: &Arc<Self>,
        header: RequestHeader,
        svc: Arc<dyn Dispatch>,
        method: Cow<'static, str>,
        args: Bytes,
        (client_key, user): (Option<PublicKey>, Option<Arc<str>>),
        now: Instant,
        (here, answers): (PeerId, &mut Answers<'_>),
    ) {
        let id = header.id;
        let size = args.len();
        if !self.may_wait(size) {
            return self.overloaded(id, "memory limit of waiting requests reached");
        }
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            return self.overloaded(id, "concurrency limit reached");
        };
        bump(&self.counters.executed);
        let deadline = now + Duration::from_millis(header.timeout_ms);
        let request = ServiceRequest { method, args };
        let span = tracing::debug_span!("rpc.request", method = %header.method, request_id = %id, attempt = header.attempt);
        #[cfg(feature = "opentelemetry")]
        crate::trace_context::continue_from(&span, &header.meta);
        let ctx = RequestContext {
            request_id: id,
            method: header.method,
            attempt: header.attempt,
            deadline,
            metadata: header.meta,
            client_key,
            user,
        };
        let mut handler = Handler::new(ctx, svc.dispatch(request));
        // Fast path: most handlers finish without waiting. One poll with a no-op
        // waker, here; if it has to wait, a task of its own polls it again at once
        // and registers its real waker, so no wake-up is lost.
        let first = {
            let _entered = span.enter();
            let mut cx = Context::from_waker(Waker::noop());
            Pin::new(&mut handler).poll(&mut cx)
        };
        if let Poll::Ready(outcome) = first {
            // Finished within this poll: the request's arrival time stands for the
            // reply's (no second clock read).
            return self.finish(id, outcome, permit, now, Some((here, answers)));
        }
        // Its arguments count against the bound of waiting requests until it ends
        // (or its task is dropped).
        let mut waiting = Waiting::new(self.clone(), size);
        tokio::spawn(
            async move {
                let outcome = match tokio::time::timeout_at(deadline, handler).await {
                    Ok(outcome) => outcome,
                    Err(_) => Ok(Reply::status(
                        Status::DeadlineExceeded,
                        "deadline passed while running",
                    )),
                };
                // Its arguments are gone with the handler: no longer counted
                // when its reply arrives.
                waiting.end();
                let now = Instant::now();
                waiting.shared.finish(id, outcome, permit, now, None);
            }
            .instrument(span),
        );
    }

    /// Whether a request of `size` argument bytes may run: always while no handler
    /// waits, else within [`ServerBuilder::max_waiting_bytes`] with theirs.
    fn may_wait(&self, size: usize) -> bool {
        let held = self.waiting_bytes.load(Ordering::Relaxed);
        held == 0 || held.saturating_add(size) <= self.max_waiting_bytes
    }

    /// Refuses request `id` with OVERLOADED, to everyone waiting for it.
    fn overloaded(&self, id: RequestId, why: &str) {
        bump(&self.counters.overloaded);
        crate::observe::server_overloaded();
        tracing::debug!(request_id = %id, why, "request refused: overloaded");
        let frames = reply_frames(id, Reply::status(Status::Overloaded, why));
        let waiters = self.cache().abandon(id);
        send_all(waiters, &frames, None);
    }

    /// Answers a handler's outcome to everyone waiting for it, and keeps it in the
    /// reply cache. `here`: the connection task running this, and its answers, which
    /// it writes without a trip through its own queue. `now`: when the reply is kept.
    fn finish(
        &self,
        id: RequestId,
        outcome: Result<Reply, String>,
        permit: OwnedSemaphorePermit,
        now: Instant,
        here: Option<(PeerId, &mut Answers<'_>)>,
    ) {
        let mut reply = outcome.unwrap_or_else(|panic| {
            bump(&self.counters.panics);
            tracing::error!(panic, "handler panicked");
            Reply::status(Status::Internal, format!("handler panicked: {panic}"))
        });
        let size = reply.body.len();
        if size > self.max_reply {
            // The caller's connection would refuse it (and lose every call on it); a
            // retry would get it again from the cache.
            tracing::warn!(request_id = %id, size, max = self.max_reply, "reply too large");
            reply = Reply::status(
                Status::Internal,
                format!(
                    "the method ran, but its reply of {size} bytes exceeds the server's \
                     message size limit of {} bytes",
                    self.max_reply
                ),
            );
        }
        crate::observe::server_reply(reply.status);
        let frames = reply_frames(id, reply);
        // Sent under the cache's lock, from the copy it keeps (no second copy to make;
        // sending queues or hands over, it never waits).
        let mut cache = self.cache();
        let (waiters, sent) = cache.finish(id, frames.into_keeping(), now.into_std());
        let reply = match &sent {
            Ok(kept) => kept,
            Err(given) => given,
        };
        send_all(waiters, reply, here);
        drop(cache);
        drop(permit);
    }

    /// The answer to a reserved method (`_rpc.*`), if `method` is one.
    fn reserved_reply(&self, method: &str) -> Option<Reply> {
        #[derive(serde::Serialize)]
        struct ArgDesc {
            name: &'static str,
            #[serde(rename = "type")]
            ty: &'static str,
        }
        #[derive(serde::Serialize)]
        struct MethodDesc {
            name: &'static str,
            retry: &'static str,
            args: Vec<ArgDesc>,
            returns: &'static str,
        }
        #[derive(serde::Serialize)]
        struct ServiceDesc {
            name: &'static str,
            methods: Vec<MethodDesc>,
        }
        match method {
            "_rpc.health" => Some(Reply::ok(&"SERVING")),
            "_rpc.describe" => {
                let mut services: Vec<ServiceDesc> = self
                    .services
                    .values()
                    .map(|s| ServiceDesc {
                        name: s.service_name(),
                        methods: s
                            .methods()
                            .iter()
                            .map(|m| MethodDesc {
                                name: m.name,
                                retry: match m.retry {
                                    rpc_core::RetryPolicy::Retry => "retry",
                                    rpc_core::RetryPolicy::AtMostOnce => "at_most_once",
                                },
                                args: m
                                    .args
                                    .iter()
                                    .map(|&(name, ty)| ArgDesc { name, ty })
                                    .collect(),
                                returns: m.returns,
                            })
                            .collect(),
                    })
                    .collect();
                services.sort_by_key(|s| s.name);
                Some(Reply::ok(&services))
            }
            _ => None,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReplyCache<Waiter>> {
        lock(&self.cache)
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

/// Hashes method names for the route table: 8 bytes per multiply, no key. The table
/// holds only the server's own names, fixed at start, so a peer's names cannot make its
/// chains longer; SipHash cost ~200 instructions a request here.
#[derive(Clone, Copy, Default)]
struct BuildNameHasher;

impl std::hash::BuildHasher for BuildNameHasher {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(0)
    }
}

struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(26);
        }
    }
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top: mix the low ones up.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn method_names_spread_over_the_route_table() {
        // hashbrown indexes buckets with the low bits and tags them with the top 7.
        let names: Vec<String> = (0..256)
            .map(|i| format!("service{}.method_{i}", i % 7))
            .collect();
        let hashes: Vec<u64> = names
            .iter()
            .map(|n| BuildNameHasher.hash_one(n.as_bytes()))
            .collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 140, "{} of 256 low bytes", low.len());
        assert!(top.len() > 90, "{} of 128 tags", top.len());
        // Names that differ only past the first 8 bytes, or only in length, differ.
        assert_ne!(
            BuildNameHasher.hash_one(b"calc.add".as_slice()),
            BuildNameHasher.hash_one(b"calc.add2".as_slice())
        );
    }
}
