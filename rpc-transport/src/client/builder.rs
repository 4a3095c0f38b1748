//! [`ClientBuilder`]: a client's settings, refused when they cannot work, and
//! `connect`, which starts the pool, the watchdog and the discovery streams it follows.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{IdMap, RpcError};
use tokio::sync::watch;

use super::budget::RetryBudget;
use super::stats::Counters;
use super::{aperture, budget, members, now_std, watchdog, Aperture, Client, CloseOnDrop, Inner};
use crate::socket::SocketOptions;
use crate::sync::lock;
use crate::timer::Timer;
use crate::zmtp::curve::{KeyPair, PublicKey};
use crate::zmtp::{HeartbeatConfig, Mechanism};

/// How a call picks among healthy endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each call goes to the next endpoint in turn.
    RoundRobin,
    /// Each call goes to the endpoint with the fewest attempts in flight.
    LeastOutstanding,
    /// Each call goes to the better of two endpoints drawn at random, scored by
    /// their decaying peak latency times their calls in flight (tower's and
    /// Finagle's p2c): slow or busy endpoints get fewer calls, and the pick costs the
    /// same whatever the pool's size. The default.
    #[default]
    PowerOfTwoChoices,
}

/// Settings of a [`Client`]; see [`ClientBuilder`] for the defaults.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) call_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) balance: Balance,
    /// Calls wait (within their deadline) for an endpoint even when every endpoint's
    /// last connect failed.
    pub(crate) wait_for_ready: bool,
    /// Hedge delay of calls that do not set their own.
    pub(crate) hedge: Option<Duration>,
    /// Draw from a window of the pool sized to the load.
    pub(crate) aperture: Option<Aperture>,
    pub(crate) connections: usize,
    /// Most connections an endpoint grows to for bulk requests.
    pub(crate) bulk_connections: usize,
    pub(crate) socket: SocketOptions,
    /// CURVE servers' public keys by endpoint, where they differ from the one
    /// [`ClientBuilder::curve`] names.
    pub(crate) server_keys: std::collections::HashMap<String, PublicKey>,
    /// Requests say when they were sent (`sent_ms`).
    pub(crate) send_time: bool,
}

impl Config {
    /// The CURVE server key of `addr` where it has its own (handed to the socket's
    /// `connect`, as a raw socket's `connect_curve` does).
    pub(crate) fn server_key(&self, addr: &str) -> Option<PublicKey> {
        self.server_keys.get(&endpoint_key(addr)).copied()
    }

    /// The client's hedge delay in milliseconds (0: none), as calls carry it.
    pub(crate) fn hedge_ms(&self) -> u32 {
        hedge_ms(self.hedge)
    }
}

/// A hedge delay in milliseconds, at least 1 (0: no hedging).
pub(crate) fn hedge_ms(delay: Option<Duration>) -> u32 {
    delay.map_or(0, |d| {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
    })
}

/// Builds a [`Client`].
///
/// Defaults: call deadline 5 s; attempt timeout 1 s; 3 retries (4 attempts);
/// power of two choices; one connection per endpoint, two once large requests overlap;
/// heartbeat every 500 ms with a 1.5 s timeout; 4 MiB messages;
/// reconnect after 100 ms doubling to 1 s, with jitter.
///
/// Settings that cannot work are refused by `connect`, which says which:
///
/// ```
/// use std::time::Duration;
/// use rpc_transport::client::Client;
///
/// # #[tokio::main] async fn main() {
/// let e = Client::builder()
///     .endpoint("tcp://127.0.0.1:5555")
///     .attempt_timeout(Duration::ZERO)
///     .connect()
///     .await
///     .unwrap_err();
/// assert!(e.to_string().contains("attempt_timeout is zero"), "{e}");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    config: Config,
    budget: RetryBudget,
    discover: Discovery,
}

/// The pool changes a builder follows; taken by the first `connect` of the builder or
/// its clones.
#[derive(Clone, Default)]
struct Discovery(Arc<Mutex<Option<Changes>>>);

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = lock(&self.0).is_some();
        f.write_str(if set { "Some(..)" } else { "None" })
    }
}

/// A change of a client's pool: what [`ClientBuilder::discover`] follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    /// An endpoint to call (added unless present; revived if removed).
    Insert(String),
    /// An endpoint to stop calling ([`Client::remove_endpoint`]).
    Remove(String),
}

/// A stream of pool changes.
pub(super) type Changes = std::pin::Pin<Box<dyn futures_core::Stream<Item = PoolChange> + Send>>;

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// A builder with the defaults and no endpoints.
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            endpoints: Vec::new(),
            budget: RetryBudget::default(),
            discover: Discovery::default(),
            config: Config {
                call_timeout: Duration::from_secs(5),
                attempt_timeout: Duration::from_secs(1),
                max_attempts: 4,
                balance: Balance::PowerOfTwoChoices,
                wait_for_ready: false,
                hedge: None,
                aperture: None,
                connections: 1,
                bulk_connections: 2,
                socket: SocketOptions::default()
                    .heartbeat(HeartbeatConfig {
                        interval: Duration::from_millis(500),
                        timeout: Duration::from_millis(1500),
                        ttl: Duration::from_millis(3000),
                    })
                    .reconnect(Duration::from_millis(100), Duration::from_secs(1))
                    .connect_timeout(Duration::from_secs(2))
                    .linger(Duration::ZERO),
                server_keys: std::collections::HashMap::new(),
                send_time: false,
            },
        }
    }

    /// Adds a server endpoint (`tcp://host:port`, `ipc://...`, `inproc://...`).
    pub fn endpoint(mut self, ep: impl Into<String>) -> Self {
        self.endpoints.push(ep.into());
        self
    }

    /// Adds several endpoints.
    pub fn endpoints<I, S>(mut self, eps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(eps.into_iter().map(Into::into));
        self
    }

    /// The default deadline of a call (overridable per call).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.config.call_timeout = d;
        self
    }

    /// How long one attempt waits for its reply before the connection is recreated
    /// and the call resent elsewhere.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.config.attempt_timeout = d;
        self
    }

    /// Follows a source of pool changes (a registry, DNS, ...): each
    /// [`PoolChange::Insert`] adds an endpoint, each [`PoolChange::Remove`] removes one,
    /// as [`Client::add_endpoint`] and [`Client::remove_endpoint`] do, for as long as the
    /// client lives. The endpoints given to the builder are the pool's first members
    /// (there may be none). A builder's clones share the stream: the first `connect`
    /// takes it.
    pub fn discover<S>(self, changes: S) -> Self
    where
        S: futures_core::Stream<Item = PoolChange> + Send + 'static,
    {
        *lock(&self.discover.0) = Some(Box::pin(changes));
        self
    }

    /// Resends after the first attempt (so `retries(0)` sends once).
    pub fn retries(mut self, n: u32) -> Self {
        self.config.max_attempts = n.saturating_add(1);
        self
    }

    /// What a call does when no endpoint is ready and every endpoint's last connect
    /// failed (refused, reset, handshake failed): by default (`false`) it fails at
    /// once with [`RpcError::Unavailable`] naming each endpoint and its failure, as
    /// gRPC's calls do. With `true` it waits within its deadline for one to come
    /// back (Lazy Pirate riding over a restarting server). Either way, a call waits
    /// while an endpoint is still connecting for the first time, connecting again after
    /// losing an established connection (until that reconnect fails), or is only
    /// suspect after a stall.
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.config.wait_for_ready = wait;
        self
    }

    /// Speaks CURVE to every endpoint: `keys` are the client's permanent keys (a
    /// server's allow-list names the public one), `server` the servers' public key.
    /// Everything after the handshake is encrypted and authenticated; a server that
    /// cannot prove it holds `server`'s secret key is not talked to.
    pub fn curve(mut self, keys: KeyPair, server: PublicKey) -> Self {
        self.config.socket.mechanism = Mechanism::CurveClient { keys, server };
        self
    }

    /// The CURVE public key of the server at `endpoint`, where servers do not share
    /// one key pair: connections there expect it instead of the key
    /// [`ClientBuilder::curve`] names (which must be set too). An endpoint added later
    /// (`Client::add_endpoint`, discovery) uses its key from here as well.
    pub fn curve_server_key(mut self, endpoint: impl Into<String>, server: PublicKey) -> Self {
        self.config
            .server_keys
            .insert(endpoint_key(&endpoint.into()), server);
        self
    }

    /// Speaks PLAIN (RFC 24) to every endpoint with this user name and password, which
    /// travel in clear: only inside a network already trusted.
    pub fn plain(mut self, username: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        self.config.socket.mechanism = Mechanism::PlainClient {
            username: username.into(),
            password: password.into(),
        };
        self
    }

    /// How many resends the client makes, all calls together (default: 20% of calls
    /// plus 10 a second; see [`RetryBudget`]). Past it a call fails with its last
    /// attempt's failure instead of resending.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Hedged calls: a call (of a method that may be retried, never `at_most_once`)
    /// that has waited `delay` for its reply sends one more attempt, with the same id,
    /// to another endpoint; the first reply wins, and the server of the other is told
    /// it may let go of its. Hedges are attempts: they count against the retry budget
    /// and the retries. Off by default; per call with `Call::hedge`. With it, power
    /// of two choices also leaves out a member whose replies take longer than `delay`
    /// on average while the other member of the draw is quicker (its calls would be
    /// hedged anyway, and end late); such a member is tried again as its estimate
    /// decays, a call every few seconds.
    pub fn hedge(mut self, delay: Duration) -> Self {
        self.config.hedge = Some(delay);
        self
    }

    /// Balancing among healthy endpoints.
    pub fn balance(mut self, b: Balance) -> Self {
        self.config.balance = b;
        self
    }

    /// Calls go to a window of the pool sized to the client's load (Finagle's
    /// aperture), for pools of tens or hundreds of endpoints: power of two choices
    /// draws from the window's members instead of from all. Over 300 endpoints,
    /// spreading sixteen callers' calls over every connection cost 1.4-1.7x the client
    /// CPU per call of 3 endpoints (each message with its own wake, read and write);
    /// a window keeps a few calls on each of its connections, which share them. Every
    /// endpoint stays connected and watched; a member of the window that fails is
    /// replaced at once by the next of the client's ranking (a hash of the addresses
    /// keyed per client, so that clients spread over the pool). Pools no larger than
    /// the minimum are drawn from whole. Off by default; needs
    /// [`Balance::PowerOfTwoChoices`] (the default).
    pub fn aperture(mut self, a: Aperture) -> Self {
        self.config.aperture = Some(a);
        self
    }

    /// Connections opened to each endpoint (default 1). Calls spread over them (each
    /// to the connection with the fewest unanswered requests), so that many
    /// concurrent callers keep several server threads busy; an attempt
    /// timeout recreates all of an endpoint's connections, and the endpoint counts as
    /// down once none is left.
    pub fn connections_per_endpoint(mut self, n: usize) -> Self {
        self.config.connections = n.max(1);
        self
    }

    /// Most connections an endpoint grows to for large requests (default 2; `1`, or
    /// no more than [`connections_per_endpoint`](Self::connections_per_endpoint),
    /// turns growth off). A request of 64 KiB or more sent while another attempt is
    /// in flight at its endpoint opens one more connection there; calls then spread
    /// over them as over those opened at the start, until the endpoint's connections
    /// are recreated. On loopback, one TCP connection carried sixteen callers' 1 MiB
    /// calls at 0.71-0.91 of what sixteen connections did, two at 1.00-1.06; small
    /// calls do better on one (their messages share reads and writes).
    pub fn bulk_connections(mut self, n: usize) -> Self {
        self.config.bulk_connections = n;
        self
    }

    /// Heartbeats on every connection (`None` turns them off).
    pub fn heartbeat(mut self, hb: Option<HeartbeatConfig>) -> Self {
        self.config.socket.heartbeat = hb;
        self
    }

    /// Largest request sent (a larger one fails at once with
    /// [`RpcError::MessageTooLarge`], nothing sent) and largest reply accepted;
    /// default 4 MiB, as servers'.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.config.socket.max_message_size = n;
        self
    }

    /// Time allowed for a TCP connect (default 2 s): a server behind a partition that
    /// drops packets is tried again after the reconnect delay, so a healed partition
    /// is found within this plus the longest reconnect delay.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.socket.connect_timeout = Some(d);
        self
    }

    /// Requests say when they were sent (the wall clock, `sent_ms`), so that servers
    /// that state a bound on clock skew (`ServerBuilder::clock_skew`) refuse those
    /// that waited past their deadline before being read. Off by default (a clock read
    /// and 17 bytes per attempt).
    pub fn send_time(mut self, on: bool) -> Self {
        self.config.send_time = on;
        self
    }

    /// Reconnect backoff: first delay and maximum.
    pub fn reconnect(mut self, first: Duration, max: Duration) -> Self {
        self.config.socket.reconnect_ivl = first;
        self.config.socket.reconnect_ivl_max = max;
        self
    }

    /// The clock of attempt deadlines and heartbeats (default [`Timer::Runtime`],
    /// tokio's timer, which `tokio::time::pause()` controls; [`Timer::Thread`] saves
    /// the kernel timer work of every message on a quiet connection, for deployments
    /// that count microseconds).
    pub fn timer(mut self, timer: Timer) -> Self {
        self.config.socket.timer = timer;
        self
    }

    /// Seed for reconnect jitter (repeatable tests).
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.socket.rng_seed = Some(seed);
        self
    }

    /// Starts connecting to every endpoint and returns the client at once; calls wait
    /// (within their deadline) for a connection.
    pub async fn connect(self) -> Result<Client, RpcError> {
        let bad = |what: &str| Err(RpcError::Config(what.into()));
        let discover = lock(&self.discover.0).take();
        if self.endpoints.is_empty() && discover.is_none() {
            return bad("no endpoints: ClientBuilder::endpoint or ClientBuilder::discover");
        }
        if self.config.attempt_timeout.is_zero() {
            return bad("attempt_timeout is zero: no attempt could wait for its reply");
        }
        if self.config.call_timeout.is_zero() {
            return bad("call_timeout is zero: every call would fail before sending");
        }
        if let Some(a) = &self.config.aperture {
            a.check().map_err(RpcError::Config)?;
            if self.config.balance != Balance::PowerOfTwoChoices {
                return bad("an aperture needs Balance::PowerOfTwoChoices to draw from it");
            }
        }
        // `dns://` and `dns+srv://` endpoints are pools of their own, followed.
        let (names, endpoints): (Vec<String>, Vec<String>) =
            self.endpoints.into_iter().partition(|e| is_dns(e));
        let mut follows = discover.into_iter().collect::<Vec<Changes>>();
        for name in names {
            follows.push(dns_changes(&name)?);
        }
        for ep in &endpoints {
            ep.parse::<crate::socket::Endpoint>()
                .map_err(|e| RpcError::Config(e.to_string()))?;
        }
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            members: members::Members::new(),
            pending: Mutex::new(IdMap::default()),
            wake_line: Arc::default(),
            watchdog: Arc::new(watchdog::Watchdog::new()),
            rr: AtomicUsize::new(0),
            quiet_tick: AtomicUsize::new(usize::MAX),
            window: self.config.aperture.map(aperture::Window::new),
            epoch: now_std(),
            changed: watch::channel(()).0,
            counters: Counters::default(),
            budget: budget::Budget::new(self.budget),
            config: self.config,
        });
        for ep in endpoints {
            inner.add(ep)?;
        }
        let watch = inner.watchdog.clone();
        inner
            .wake_line
            .set_watchdog(Box::new(move || watch.line_formed()));
        let timer = inner.config.socket.timer;
        tokio::spawn(watchdog::run(
            Arc::downgrade(&inner),
            inner.watchdog.clone(),
            timer,
        ));
        for changes in follows {
            tokio::spawn(follow(Arc::downgrade(&inner), changes));
        }
        Ok(Client {
            _close: Arc::new(CloseOnDrop(inner.clone())),
            inner,
            stack: None,
        })
    }
}

/// An endpoint as the pool names it (parsed and printed again), or as given when it
/// does not parse.
pub(super) fn endpoint_key(ep: &str) -> String {
    ep.parse::<crate::socket::Endpoint>()
        .map(|e| e.to_string())
        .unwrap_or_else(|_| ep.to_string())
}

/// Whether an endpoint names a DNS pool (`dns://host:port`, `dns+srv://name`).
fn is_dns(ep: &str) -> bool {
    ep.starts_with("dns://") || ep.starts_with("dns+srv://")
}

/// The changes of the DNS pool `name`, with the default settings.
#[cfg(feature = "dns")]
fn dns_changes(name: &str) -> Result<Changes, RpcError> {
    Ok(Box::pin(super::dns::DnsDiscovery::new(name)?.stream()))
}

#[cfg(not(feature = "dns"))]
fn dns_changes(name: &str) -> Result<Changes, RpcError> {
    Err(RpcError::Config(format!(
        "{name}: DNS discovery needs the `dns` cargo feature"
    )))
}

/// Applies pool changes from `changes` for as long as the client lives.
async fn follow(inner: std::sync::Weak<Inner>, mut changes: Changes) {
    while let Some(change) = std::future::poll_fn(|cx| changes.as_mut().poll_next(cx)).await {
        let Some(inner) = inner.upgrade() else { return };
        match change {
            PoolChange::Insert(ep) => {
                if let Err(e) = inner.add(ep.clone()) {
                    tracing::warn!(endpoint = %ep, error = %e, "discovered endpoint refused");
                }
            }
            PoolChange::Remove(ep) => {
                inner.remove(&ep);
            }
        }
    }
}
