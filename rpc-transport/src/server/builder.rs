//! [`Server`] and [`ServerBuilder`]: a server's settings, and starting it (binding,
//! wrapping services in layers, the route table, the connection tasks' request sink).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{Dispatch, Reply, ServiceRequest};
use tokio::sync::{watch, Semaphore};

use super::handle::{Counters, ServerHandle};
use super::layered::{self, Dispatcher};
use super::reply_cache::ReplyCache;
use super::{
    drain_then_close, Route, Shared, ANSWER_BATCH, SMALL_ANSWER_BATCH, SMALL_ANSWER_BYTES,
};
use crate::socket::core::{Answers, Direct, Inbound};
use crate::socket::{RouterSocket, SocketError, SocketOptions};
use crate::zmtp::curve::{KeyPair, PublicKey};
use crate::zmtp::HeartbeatConfig;
use crate::zmtp::Mechanism;

/// Wraps a service in a layer (see [`ServerBuilder::layer`]).
type Wrap = Arc<dyn Fn(Arc<dyn Dispatch>) -> Arc<dyn Dispatch> + Send + Sync>;

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
    /// client an identity, which handlers read in [`RequestContext`](super::RequestContext)'s `user`. A
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
    /// says otherwise; handlers see the user in [`RequestContext`](super::RequestContext)'s `user`.
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
