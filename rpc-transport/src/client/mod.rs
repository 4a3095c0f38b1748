//! The reliable client: deadlines, Lazy Pirate retries, failover over a pool.
//!
//! The client speaks DEALER to each server endpoint and sends
//! `[request id (16 bytes)][empty][frames...]`. REP and ROUTER servers (libzmq's
//! included) echo the envelope, so replies are matched by id and many calls share one
//! connection.
//!
//! For each call: pick a connected, healthy endpoint (power of two choices, round-robin or
//! least-outstanding), waiting for one within the deadline; send; wait up to the
//! attempt timeout. What happens next is decided in `retry.rs`, as a plain value:
//! a timeout or a lost connection resends the same request id to the next healthy
//! endpoint; OVERLOADED and SHUTTING_DOWN fail over at once; `at_most_once` calls are
//! resent only when the request never left or the server said it did not run it.
//! A timed-out attempt's connection is recreated (Lazy Pirate) only when it went
//! silent; one that still brings heartbeats or replies is kept. A typed call whose
//! reply ended it is acknowledged to that server with the next requests there (`acks`
//! in the header), so that the server's reply cache lets go of the reply.
//!
//! # Layout
//! - `mod.rs`: [`Client`], [`ClientBuilder`], the attempt loop (the async shell that
//!   carries out the retry decisions).
//! - `retry.rs`: the retry and failover decision as a value: outcome and time in,
//!   resend (where, when) or fail (with what) out.
//! - `member.rs`: one server of the pool ([`socket::Endpoint`](crate::socket::Endpoint)
//!   names only its address): its connections (a second one opened when bulk requests
//!   overlap), the task that watches its link go up and down, Lazy Pirate recreation,
//!   and the acknowledgements waiting to go there.
//! - `health.rs`: [`Health`], the per-endpoint policy as a plain value, and the
//!   judgement of a stall (one stall of one connection, one strike).
//! - `watchdog.rs`: the task that ends attempts past their deadline and keeps the wake
//!   line of callers (`socket/wake_line.rs`) moving.
//! - `reply_cell.rs`: where an attempt's reply waits for its caller (filled without
//!   waking it), and the caller's turn in the wake line.
//! - `call.rs`: typed calls ([`Call`]) and the RPC envelope on top of the loop.
//! - `stats.rs`: [`ClientStats`].
//! - `aperture.rs`: [`Aperture`], the window of a large pool a client draws from,
//!   sized to its load.

mod aperture;
mod balance;
mod budget;
mod call;
#[cfg(feature = "dns")]
mod dns;
#[cfg(any(feature = "dns", test))]
mod dns_refresh;
mod health;
mod layered;
mod member;
mod members;
mod reply_cell;
mod retry;
mod stats;
mod watchdog;

pub use aperture::Aperture;
pub use budget::RetryBudget;
pub use call::{decode_result, decode_value, Call, CallOptions};
#[cfg(feature = "dns")]
pub use dns::{DnsChanges, DnsDiscovery};
pub use health::{Health, HealthState};
pub use layered::{CallRequest, Calls};
pub use stats::{ClientStats, EndpointStats};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{IdMap, RequestId, RetryPolicy, RpcError};
use tokio::sync::watch;
use tokio::time::Instant;

use self::health::Stall;
use self::member::{Member, Sent};
use self::retry::{Decision, Outcome, Retry};
use self::stats::Counters;
use crate::counter::{bump, read};
use crate::message::{Message, Outgoing};
use crate::socket::core::{Answers, Failure};
use crate::socket::wake_line::WakeLine;
use crate::socket::{SocketOptions, SplitMix64};
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
    call_timeout: Duration,
    attempt_timeout: Duration,
    max_attempts: u32,
    balance: Balance,
    /// Calls wait (within their deadline) for an endpoint even when every endpoint's
    /// last connect failed.
    wait_for_ready: bool,
    /// Hedge delay of calls that do not set their own.
    hedge: Option<Duration>,
    /// Draw from a window of the pool sized to the load.
    aperture: Option<Aperture>,
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
type Changes = std::pin::Pin<Box<dyn futures_core::Stream<Item = PoolChange> + Send>>;

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
        let inner = Arc::new(Inner {
            members: members::Members::new(),
            pending: Mutex::new(IdMap::default()),
            wake_line: Arc::default(),
            watchdog: Arc::new(watchdog::Watchdog::new()),
            rr: AtomicUsize::new(0),
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

/// What ends an attempt, as seen by the waiting call.
enum Event {
    Reply {
        from: usize,
        msg: Message,
    },
    Lost,
    /// The attempt's deadline passed (the watchdog task removed it).
    TimedOut,
}

/// The attempt in flight for a request id.
struct Pending {
    slot: Arc<reply_cell::ReplyCell<Event>>,
    endpoint: usize,
    generation: u64,
    deadline: Instant,
    /// A hedged copy of the attempt, on another endpoint (member, generation): the
    /// first reply of either ends the attempt.
    hedge: Option<(usize, u64)>,
}

/// How the caller's classifier judges a reply.
pub(crate) enum Verdict<T> {
    /// The call is over with this result.
    Done(T),
    /// The call failed for good.
    Fail(RpcError),
    /// The server did not run the request; resend elsewhere (even `at_most_once`).
    NotRun(RpcError),
}

pub(crate) struct Inner {
    members: members::Members,
    pending: Mutex<IdMap<Pending>>,
    wake_line: Arc<WakeLine>,
    watchdog: Arc<watchdog::Watchdog>,
    rr: AtomicUsize,
    /// The members calls are drawn from, with an aperture.
    window: Option<aperture::Window>,
    /// When the client started: the origin of latency estimates' clock.
    epoch: std::time::Instant,
    /// Bumped whenever an endpoint's eligibility may have changed.
    changed: watch::Sender<()>,
    counters: Counters,
    pub(crate) config: Config,
    /// Resends allowed, all calls together.
    budget: budget::Budget,
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

impl Inner {
    /// An endpoint's eligibility, or the pool, may have changed: callers waiting for
    /// an endpoint look again, and the aperture's window is chosen again.
    fn note_change(&self) {
        if let Some(w) = &self.window {
            w.mark_stale();
        }
        self.changed.send_replace(());
    }

    fn pending(&self) -> MutexGuard<'_, IdMap<Pending>> {
        lock(&self.pending)
    }

    /// A reply arrived on endpoint `idx`: `[empty][reply header][body]` (a typed call,
    /// matched by the header's id) or `[id][empty][frames...]` (a raw request).
    fn on_reply(&self, idx: usize, mut msg: Message, answers: &mut Answers<'_>) {
        let ep = &self.members.at(idx);
        bump(&ep.counters.replies);
        let id = match msg.pop_front() {
            Some(delim) if delim.is_empty() => msg
                .frames()
                .first()
                .and_then(|h| rpc_core::ReplyHeader::peek_id(h)),
            Some(id) => match msg.pop_front() {
                Some(delim) if delim.is_empty() => RequestId::from_slice(&id),
                _ => None,
            },
            None => None,
        };
        let Some(id) = id else {
            tracing::debug!(endpoint = %ep.addr, "dropping a reply without request id");
            return;
        };
        if !ep.is_ready() {
            // Under the lock, as every change of the health and its flag.
            let mut st = ep.lock();
            st.health.on_reply();
            ep.set_ready(&st);
        }
        // Out of the map before waking the caller: the lock is not held across a wake.
        let waiting = self.pending().remove(&id);
        match waiting {
            Some(p) => {
                if let Some(w) = p.slot.fill(Event::Reply { from: idx, msg }) {
                    answers.wake(w);
                }
            }
            None => {
                bump(&self.counters.late_replies);
                tracing::debug!(endpoint = %ep.addr, request_id = %id, "late reply dropped");
            }
        }
    }

    /// The connection of `idx` (generation `generation`) went up or down.
    fn on_link(&self, idx: usize, generation: u64, up: bool) {
        let ep = &self.members.at(idx);
        {
            let mut st = ep.lock();
            if st.generation != generation {
                return;
            }
            if up {
                st.health.on_connected();
                ep.latency.reset();
                tracing::debug!(endpoint = %ep.addr, "connected");
            } else {
                st.health.on_disconnected();
                tracing::info!(endpoint = %ep.addr, "connection lost");
            }
            ep.set_ready(&st);
        }
        if !up {
            self.fail_in_flight(idx, generation);
        }
        self.note_change();
    }

    /// Connecting to `idx` (generation `generation`), or its connection, failed for
    /// `why` (`None`: a handshake completed since).
    fn on_failure(&self, idx: usize, generation: u64, why: Option<Failure>) {
        let ep = &self.members.at(idx);
        {
            let mut st = ep.lock();
            if st.generation != generation {
                return;
            }
            if let Some(f) = &why {
                tracing::debug!(endpoint = %ep.addr, reason = %f.why, lost = f.lost, "connection failed");
            }
            st.failing = why.as_ref().is_some_and(|f| !f.lost);
            st.failure = why.map(|f| f.why);
        }
        self.note_change();
    }

    /// The members in the pool (not removed), with their indices.
    fn live(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().filter(|(_, m)| !m.is_removed())
    }

    /// Whether every endpoint is down with a failure of connecting (none connecting
    /// for the first time or again after losing an established connection, none
    /// connected): a call cannot expect one soon. An empty pool (a
    /// discovery that has not answered yet) is not failing: calls wait for members.
    fn all_failing(&self) -> bool {
        let mut live = self.live().peekable();
        live.peek().is_some()
            && live.all(|(_, e)| {
                let st = e.lock();
                !st.health.connected() && st.failing
            })
    }

    /// Adds `addr` to the pool (or revives it if it was removed) and starts
    /// connecting; returns its index.
    fn add(self: &Arc<Inner>, addr: String) -> Result<usize, RpcError> {
        addr.parse::<crate::socket::Endpoint>()
            .map_err(|e| RpcError::Config(e.to_string()))?;
        let key = self.config.server_key(&addr);
        let mut member = Member::new(addr).with_server_key(key);
        member.send_time = self.config.send_time;
        let (idx, added) = self.members.add(member);
        let m = self.members.at(idx);
        if added {
            Member::recreate(self, idx);
            tracing::info!(endpoint = %m.addr, "endpoint added");
        } else if m.is_removed() {
            let mut st = m.lock();
            m.set_removed(&st, false);
            if st.connections() == 0 {
                Member::recreate_locked(self, idx, &mut st);
            }
            tracing::info!(endpoint = %m.addr, "endpoint added again");
        }
        self.note_change();
        Ok(idx)
    }

    /// Removes `addr` from the pool: no new call goes there; calls in flight there
    /// finish or fail over as usual, then (at the latest one attempt timeout later)
    /// its connections close. Returns whether it was in the pool.
    fn remove(self: &Arc<Inner>, addr: &str) -> bool {
        let Some(idx) = self.members.find(addr) else {
            return false;
        };
        let m = self.members.at(idx);
        if m.is_removed() {
            return false;
        }
        m.set_removed(&m.lock(), true);
        tracing::info!(endpoint = %m.addr, "endpoint removed");
        self.note_change();
        let weak = Arc::downgrade(self);
        let drain = self.config.attempt_timeout;
        tokio::spawn(async move {
            let end = Instant::now() + drain;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let m = inner.members.at(idx);
                if !m.is_removed() {
                    return;
                }
                if m.outstanding.load(Ordering::Relaxed) == 0 || Instant::now() >= end {
                    m.close();
                    return;
                }
                drop(inner);
                tokio::time::sleep(DRAIN_CHECK).await;
            }
        });
        true
    }

    /// What each endpoint is going through, for a call that found none ready.
    fn unready(&self) -> RpcError {
        const SHOWN: usize = 4;
        let now = now_std();
        let live = self.live().count();
        if live == 0 {
            return RpcError::Unreachable("no endpoints in the pool".into());
        }
        let mut parts: Vec<String> = self
            .live()
            .take(SHOWN)
            .map(|(_, e)| {
                let st = e.lock();
                let state = match (&st.failure, st.health.state(now)) {
                    (_, HealthState::Suspect { until }) => format!(
                        "no reply within the attempt timeout; suspect for {} ms more",
                        until.saturating_duration_since(now).as_millis()
                    ),
                    (Some(why), _) => why.to_string(),
                    (None, HealthState::Healthy) => "ready".into(),
                    (None, _) => "not connected yet".into(),
                };
                format!("{}: {state}", e.addr)
            })
            .collect();
        if live > SHOWN {
            parts.push(format!("and {} more", live - SHOWN));
        }
        RpcError::Unreachable(parts.join("; "))
    }

    /// Ends at once every attempt in flight on one connection.
    fn fail_in_flight(&self, idx: usize, generation: u64) {
        let lost: Vec<Pending> = {
            let mut pending = self.pending();
            let here = (idx, generation);
            let mut ids: Vec<RequestId> = Vec::new();
            for (id, p) in pending.iter_mut() {
                if p.hedge == Some(here) {
                    // The hedge is lost; the first copy still waits.
                    p.hedge = None;
                } else if (p.endpoint, p.generation) == here {
                    match p.hedge.take() {
                        // The hedge goes on alone.
                        Some((e, g)) => (p.endpoint, p.generation) = (e, g),
                        None => ids.push(*id),
                    }
                }
            }
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for p in lost {
            bump(&self.members.at(idx).counters.disconnects);
            if let Some(w) = p.slot.fill(Event::Lost) {
                w.wake();
            }
        }
    }

    /// Ends every attempt whose deadline is `now` or earlier (as a timeout); returns
    /// the earliest deadline still pending.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let (over, earliest) = {
            let mut pending = self.pending();
            let mut earliest = None::<Instant>;
            let mut over = Vec::new();
            pending.retain(|_, p| {
                if p.deadline <= now {
                    // Out of the map under its lock, as `on_reply` takes replies:
                    // whichever comes first ends the attempt.
                    over.push(p.slot.clone());
                    false
                } else {
                    earliest = Some(earliest.map_or(p.deadline, |e| e.min(p.deadline)));
                    true
                }
            });
            (over, earliest)
        };
        for slot in over {
            if let Some(w) = slot.fill(Event::TimedOut) {
                w.wake();
            }
        }
        earliest
    }

    /// An attempt sent to `idx` as `sent` timed out. Lazy Pirate, for connections
    /// that went silent: if nothing at all (no reply, no heartbeat) arrived on that
    /// connection since the attempt was sent, it is closed and recreated, and the
    /// endpoint gets one strike. A connection that still speaks is alive and kept:
    /// only the slow call fails over, and the calls sharing it go on. One stall is one
    /// strike however many attempts it timed out: those on a connection already
    /// recreated change nothing.
    fn stalled(self: &Arc<Inner>, idx: usize, sent: Sent) {
        let ep = &self.members.at(idx);
        {
            let mut st = ep.lock();
            match health::judge_stall(sent.generation, sent.reads, st.generation, st.reads()) {
                Stall::Recreated => return,
                Stall::Alive => {
                    tracing::debug!(endpoint = %ep.addr, "slow, but the connection is alive: kept");
                    st.health.on_slow(now_std(), self.config.attempt_timeout);
                    ep.set_ready(&st);
                    drop(st);
                    self.note_change();
                    return;
                }
                Stall::Silent => {}
            }
            st.health.on_timeout(now_std(), self.config.attempt_timeout);
            bump(&self.counters.reconnects);
            tracing::info!(endpoint = %ep.addr, "connection silent: recreating it");
            // Under the lock of the judgement: another attempt of this stall finds
            // the connection recreated.
            Member::recreate_locked(self, idx, &mut st);
        }
        self.fail_in_flight(idx, sent.generation);
        self.note_change();
    }

    /// A healthy endpoint, preferring one other than `avoid`.
    fn pick(&self, avoid: Option<usize>) -> Option<usize> {
        // Read only when an endpoint with strikes is looked at.
        let mut now = None;
        let n = self.members.len();
        if self.config.balance == Balance::PowerOfTwoChoices {
            if let Some(w) = &self.window {
                self.tend(w, &mut now);
            }
            if let Some(i) = self.pick_two(avoid, &mut now) {
                return Some(i);
            }
            // Draws missed (few members can take calls): look at all.
        }
        let mut start = self.rr.fetch_add(1, Ordering::Relaxed);
        if self.config.balance == Balance::RoundRobin {
            // The next in turn; one that cannot take the call (removed, down,
            // avoided) passes its turn on to the next number drawn, not to the
            // member after it, which would get a double share.
            for _ in 0..n {
                let i = start % n;
                let ep = self.members.at(i);
                if Some(i) != avoid && ep.eligible(|| *now.get_or_insert_with(now_std)) {
                    return Some(i);
                }
                start = self.rr.fetch_add(1, Ordering::Relaxed);
            }
            // Drawn numbers may miss some (other callers draw too): look at all.
        }
        let mut best: Option<(usize, usize)> = None;
        let mut fallback = None;
        for k in 0..n {
            let i = (start + k) % n;
            let ep = &self.members.at(i);
            if !ep.eligible(|| *now.get_or_insert_with(now_std)) {
                continue;
            }
            if Some(i) == avoid {
                fallback = Some(i);
                continue;
            }
            match self.config.balance {
                Balance::RoundRobin => return Some(i),
                // The scan after missed draws: the least loaded that can take it.
                Balance::LeastOutstanding | Balance::PowerOfTwoChoices => {
                    let load = ep.outstanding.load(Ordering::Relaxed);
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((i, load));
                    }
                }
            }
        }
        best.map(|(i, _)| i).or(fallback)
    }

    /// Power of two choices: the better of two members drawn at random, each able to
    /// take the call; `None` when a few draws found none.
    fn pick_two(
        &self,
        avoid: Option<usize>,
        now: &mut Option<std::time::Instant>,
    ) -> Option<usize> {
        const DRAWS: usize = 4;
        let n = self.members.len();
        let mut ok = |i: usize| {
            Some(i) != avoid
                && self
                    .members
                    .at(i)
                    .eligible(|| *now.get_or_insert_with(now_std))
        };
        if n == 1 {
            return ok(0).then_some(0);
        }
        for _ in 0..DRAWS {
            let r = SplitMix64::new(self.rr.fetch_add(1, Ordering::Relaxed) as u64).next_u64();
            let (a, b) = match self.window.as_ref().and_then(|w| w.draw(r)) {
                Some(pair) => pair,
                None => {
                    let a = (r % n as u64) as usize;
                    (a, (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n)
                }
            };
            match (ok(a), ok(b)) {
                (true, true) => {
                    let t = self.nanos(now.unwrap_or_else(now_std));
                    let score = |i: usize| {
                        let m = self.members.at(i);
                        let load = m.outstanding.load(Ordering::Relaxed);
                        (i, balance::score(m.latency.cost(t), load))
                    };
                    let pick = balance::choose(score(a), score(b));
                    let Some(delay) = self.config.hedge else {
                        return Some(pick);
                    };
                    // Hedging: a member whose calls take longer than the hedge delay
                    // on average would have them hedged anyway, and ended late; the
                    // other takes the call. It is tried again once its estimate has
                    // decayed below the delay.
                    let other = if pick == a { b } else { a };
                    let late =
                        |i: usize| self.members.at(i).latency.mean(t) > delay.as_nanos() as f64;
                    return Some(if late(pick) && !late(other) {
                        other
                    } else {
                        pick
                    });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        None
    }

    /// Looks at the aperture's window (every few picks, and after a change): its size
    /// against the load, and its members against those able to take calls.
    fn tend(&self, w: &aperture::Window, now: &mut Option<std::time::Instant>) {
        if !w.wants_tending(self.rr.load(Ordering::Relaxed)) {
            return;
        }
        let t = *now.get_or_insert_with(now_std);
        w.tend(
            |i| self.members.at(i).outstanding.load(Ordering::Relaxed),
            || {
                self.live()
                    .filter(move |(_, m)| m.eligible(|| t))
                    .map(|(i, m)| (i, m.addr.as_str()))
            },
        );
    }

    /// Nanoseconds of `t` since the client started (the clock of latency estimates).
    fn nanos(&self, t: std::time::Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Waits until endpoints may have changed: a link event, the end of a suspect
    /// penalty, or `deadline`. Returns false once the deadline has passed.
    async fn wait_change(&self, changed: &mut watch::Receiver<()>, deadline: Instant) -> bool {
        if Instant::now() >= deadline {
            return false;
        }
        let now = now_std();
        let wake = self
            .live()
            .filter_map(|(_, e)| e.lock().health.eligible_at(now))
            .min()
            .map(Instant::from_std)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = changed.changed() => r.is_ok(),
            _ = tokio::time::sleep_until(wake) => true,
        }
    }

    /// Waits for a healthy endpoint until `deadline`; fails with what each endpoint is
    /// going through when the deadline passes, or at once when every endpoint is
    /// failing (unless the client waits for ready).
    async fn wait_for_endpoint(
        &self,
        deadline: Instant,
        avoid: Option<usize>,
    ) -> Result<usize, RpcError> {
        // The common case, without subscribing to changes.
        if let Some(i) = self.pick(avoid) {
            return Ok(i);
        }
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(i) = self.pick(avoid) {
                return Ok(i);
            }
            if !self.config.wait_for_ready && self.all_failing() {
                return Err(self.unready());
            }
            if !self.wait_change(&mut changed, deadline).await {
                return Err(self.unready());
            }
        }
    }
}

/// How often a removed endpoint is looked at until its calls are done.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// An endpoint as the pool names it (parsed and printed again), or as given when it
/// does not parse.
fn endpoint_key(ep: &str) -> String {
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
    Ok(Box::pin(dns::DnsDiscovery::new(name)?.stream()))
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

/// Closes every connection when the last [`Client`] clone is dropped.
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        for (_, m) in self.0.members.iter() {
            m.close();
        }
        self.0.watchdog.stop();
    }
}

/// A reliable client over a pool of server endpoints. Cheap to clone; clones share
/// connections. See the module docs for what it guarantees.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _close: Arc<CloseOnDrop>,
    /// Layers around its typed calls ([`Client::layer`]).
    stack: Option<layered::Stack>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let eps: Vec<&str> = self.inner.live().map(|(_, e)| e.addr.as_str()).collect();
        f.debug_struct("Client").field("endpoints", &eps).finish()
    }
}

/// Removes the call's pending entry however the call ends (including cancellation).
struct CallGuard<'a> {
    inner: &'a Inner,
    id: RequestId,
    /// No entry can be left: the last attempt's reply took it out.
    clear: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.clear {
            self.inner.pending().remove(&self.id);
        }
    }
}

/// Counts an attempt in flight on an endpoint.
struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Client {
    /// A client for `endpoints` with the default settings.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, RpcError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new().endpoints(endpoints).connect().await
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Adds an endpoint to the pool (or brings back one removed) and starts
    /// connecting to it; calls go there once it is connected. Adding one already in
    /// the pool changes nothing.
    pub fn add_endpoint(&self, ep: impl Into<String>) -> Result<(), RpcError> {
        self.inner.add(ep.into()).map(|_| ())
    }

    /// Removes an endpoint from the pool: no new call goes there; calls in flight
    /// there finish or fail over as usual, then (at the latest one attempt timeout
    /// later) its connections close. Returns whether it was in the pool.
    pub fn remove_endpoint(&self, ep: &str) -> bool {
        self.inner.remove(&endpoint_key(ep)) || self.inner.remove(ep)
    }

    /// The pool as it is now: each endpoint with its health and counters (the same
    /// as [`Client::stats`]'s `endpoints`).
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.stats().endpoints
    }

    /// The default call deadline.
    pub fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    /// Sends a raw request to any REP or ROUTER server and returns the reply frames:
    /// the ZeroMQ Guide's Lazy Pirate client (timeout, close, reconnect, resend) with
    /// failover over every endpoint. Uses the default deadline; requests are resent.
    pub async fn request(&self, msg: impl Into<Message>) -> Result<Message, RpcError> {
        self.request_with(msg, self.inner.config.call_timeout, RetryPolicy::Retry)
            .await
    }

    /// [`Client::request`] with an explicit deadline and retry policy.
    pub async fn request_with(
        &self,
        msg: impl Into<Message>,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Message, RpcError> {
        let msg = msg.into();
        if msg.is_empty() {
            return Err(RpcError::Config("empty message".into()));
        }
        let id = RequestId::new();
        let span = tracing::debug_span!(
            "zmtp.request",
            request_id = %id,
            attempt = tracing::field::Empty,
            endpoint = tracing::field::Empty
        );
        tracing::Instrument::instrument(
            self.execute(
                id,
                retry,
                timeout,
                self.inner.config.hedge_ms(),
                false,
                |_, _, _| {
                    let id = rpc_core::arena::copy(id.as_bytes());
                    Outgoing::from(msg.clone()).behind([id, Bytes::new()])
                },
                Verdict::Done,
            ),
            span,
        )
        .await
    }

    /// The attempt loop shared by raw requests and typed calls. `build` makes the
    /// frames of attempt `n` to an endpoint given the time remaining, envelope
    /// included (`[id][empty]` for a raw request, `[empty]` for a typed call, whose
    /// header carries the id: [`Inner::on_reply`]); `classify` judges a reply. A
    /// `typed` call's headers carry acknowledgements: the server whose reply ends the
    /// call is told so with a later request. The call
    /// starts now (not at its first poll): what only sets it up is not kept in its
    /// future, which stays small.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn execute<'a, T: 'a>(
        &'a self,
        id: RequestId,
        policy: RetryPolicy,
        timeout: Duration,
        hedge_ms: u32,
        typed: bool,
        build: impl FnMut(u32, Duration, &Member) -> Outgoing + 'a,
        classify: impl FnMut(Message) -> Verdict<T> + 'a,
    ) -> impl std::future::Future<Output = Result<T, RpcError>> + 'a {
        // (Not an async fn: its arguments would stay in the call's future.)
        let inner = &*self.inner;
        bump(&inner.counters.calls);
        inner.budget.deposit();
        // One clock reading serves the first attempt unless it waits for an endpoint.
        let now = Instant::now();
        // The id's random bits draw the jitter of this call's delays.
        let seed = u64::from_le_bytes(id.as_bytes()[..8].try_into().unwrap_or_default());
        let cfg = &inner.config;
        let retry = Retry::new(
            policy,
            cfg.max_attempts,
            cfg.attempt_timeout,
            now.into_std(),
            timeout,
            seed,
        )
        .hedging(hedge_ms);
        self.attempts(id, retry, now, typed, build, classify)
    }

    /// The thin async shell around [`Retry`]: picks endpoints, registers and sends
    /// attempts, waits for their ends, and carries out what the policy decides.
    async fn attempts<T>(
        &self,
        id: RequestId,
        mut retry: Retry,
        mut now: Instant,
        typed: bool,
        mut build: impl FnMut(u32, Duration, &Member) -> Outgoing,
        mut classify: impl FnMut(Message) -> Verdict<T>,
    ) -> Result<T, RpcError> {
        let inner = &self.inner;
        let c = &inner.counters;
        let cfg = &inner.config;
        let build = &mut build;
        // Every end of the call is counted once, here.
        let failed = |e: RpcError| {
            bump(&c.failed);
            Err(e)
        };
        let mut guard = CallGuard {
            inner,
            id,
            clear: false,
        };
        let mut decision = retry.start(now.into_std());
        loop {
            let avoid = match decision {
                Decision::Fail(e) => return failed(e),
                Decision::Send { avoid, not_before } => {
                    let not_before = Instant::from_std(not_before);
                    if not_before > now {
                        // Boxed, as every rare wait here: the call's future stays small.
                        Box::pin(tokio::time::sleep_until(not_before)).await;
                        now = Instant::now();
                    }
                    avoid
                }
            };
            let (idx, sent_at) = match inner.pick(avoid) {
                Some(idx) => (idx, now),
                None => {
                    let deadline = Instant::from_std(retry.deadline());
                    match Box::pin(inner.wait_for_endpoint(deadline, avoid)).await {
                        Ok(idx) => (idx, Instant::now()),
                        Err(why) => return failed(retry.unreachable(why)),
                    }
                }
            };
            let ep = &inner.members.at(idx);
            let deadline = Instant::from_std(retry.deadline());
            let remaining = deadline.saturating_duration_since(sent_at);
            let msg = build(retry.attempts() + 1, remaining, ep);
            let (size, max) = (msg.byte_len(), cfg.socket.max_message_size);
            if size > max {
                // The server would refuse it (the same limit is the default there).
                return failed(RpcError::MessageTooLarge { size, max });
            }
            guard.clear = false;
            let slot = reply_cell::ReplyCell::new();
            let attempt_deadline = Instant::from_std(retry.attempt_deadline(sent_at.into_std()));
            // Registered before sending, so that even an instant reply finds it.
            let registered = ep.generation();
            inner.pending().insert(
                id,
                Pending {
                    slot: slot.clone(),
                    endpoint: idx,
                    generation: registered,
                    deadline: attempt_deadline,
                    hedge: None,
                },
            );
            let sent = match ep.try_send(msg, cfg.bulk_connections) {
                Ok(sent) => sent,
                Err(_) => {
                    inner.pending().remove(&id);
                    now = Instant::now();
                    decision = retry.on_outcome(idx, Outcome::NotSent, now.into_std(), || true);
                    continue;
                }
            };
            if sent.generation != registered {
                // The connection was recreated between registering and sending.
                if let Some(p) = inner.pending().get_mut(&id) {
                    p.generation = sent.generation;
                }
            }
            retry.sent();
            self.count_sent(ep, idx, avoid, retry.attempts());
            ep.outstanding.fetch_add(1, Ordering::Relaxed);
            let _out = Outstanding(&ep.outstanding);
            inner.watchdog.watch(attempt_deadline);
            let mut turn = reply_cell::Turn::new(&inner.wake_line, slot);
            let event = match retry.hedge_delay() {
                Some(delay) => {
                    // Boxed: hedging is rare, and the call's future stays small.
                    let at = (sent_at + delay).min(attempt_deadline);
                    Box::pin(self.wait_hedged(at, id, idx, &mut retry, build, &mut turn)).await
                }
                None => std::future::poll_fn(|cx| turn.poll_take(cx)).await,
            };
            // The next caller's turn, before this one's reply is decoded.
            drop(turn);
            let (from, outcome) = match event {
                Event::Reply { from, msg } => {
                    // `on_reply` removed the entry before handing the reply over.
                    guard.clear = true;
                    // Nothing to compare in a pool of one: no clock read. The send
                    // time is the attempt deadline less the attempt timeout (not kept:
                    // the call's future stays small), unless the call's deadline cut
                    // the attempt short.
                    let p2c = cfg.balance == Balance::PowerOfTwoChoices;
                    let cut = attempt_deadline >= Instant::from_std(retry.deadline());
                    if p2c && !cut && inner.members.len() > 1 {
                        // A hedge that won says the first endpoint took at least
                        // this long, and observes it so: its estimate keeps it out.
                        let t = Instant::now();
                        let sent_at = attempt_deadline - cfg.attempt_timeout;
                        let at = inner.nanos(t.into_std());
                        let rtt = t.saturating_duration_since(sent_at);
                        ep.latency.observe(rtt, at);
                        crate::observe::client_round_trip(rtt);
                    }
                    // The call ends here unless the server did not run it: then the
                    // server that answered may let go of its reply.
                    let verdict = classify(msg);
                    if typed && !matches!(verdict, Verdict::NotRun(_)) {
                        inner.members.at(from).received(id);
                        // The call is over: the loser of a hedge may let go too.
                        if let Some(h) = retry.take_hedge() {
                            let loser = if from == idx { h } else { idx };
                            inner.members.at(loser).received(id);
                        }
                    }
                    match verdict {
                        Verdict::Done(t) => {
                            bump(&c.succeeded);
                            return Ok(t);
                        }
                        Verdict::Fail(e) => return failed(retry.on_error_reply(e)),
                        Verdict::NotRun(e) => {
                            let addr = &inner.members.at(from).addr;
                            tracing::debug!(endpoint = %addr, error = %e, "not run; failing over");
                            (from, Outcome::NotRun(e))
                        }
                    }
                }
                Event::Lost => {
                    tracing::debug!(endpoint = %ep.addr, "connection lost during attempt");
                    let reason = ep.lock().failure.as_deref().map(String::from);
                    let endpoint = ep.addr.clone();
                    (
                        idx,
                        Outcome::Lost(RpcError::Disconnected { endpoint, reason }),
                    )
                }
                Event::TimedOut => {
                    bump(&c.timeouts);
                    bump(&ep.counters.timeouts);
                    // As slow as the attempt timeout, at least.
                    let at = inner.nanos(now_std());
                    ep.latency.observe(cfg.attempt_timeout, at);
                    let attempt = retry.attempts();
                    tracing::info!(endpoint = %ep.addr, attempt, "attempt timed out");
                    // Cut short by the call's deadline, the attempt says nothing
                    // about the server: it did not have its attempt timeout.
                    if attempt_deadline < Instant::from_std(retry.deadline()) {
                        inner.stalled(idx, sent);
                    }
                    let endpoint = ep.addr.clone();
                    let after = cfg.attempt_timeout;
                    (
                        idx,
                        Outcome::TimedOut(RpcError::AttemptTimeout { endpoint, after }),
                    )
                }
            };
            now = Instant::now();
            let budget = &inner.budget;
            let may_resend = || {
                let ok = budget.try_withdraw(now.into_std());
                if !ok {
                    bump(&c.budget_refusals);
                    tracing::debug!("retry budget spent: not resending");
                }
                ok
            };
            decision = retry.on_outcome(from, outcome, now.into_std(), may_resend);
        }
    }

    /// Waits for the attempt's reply; at `at`, if none came, sends a hedged copy (see
    /// [`Client::hedge`]) and waits on for the first reply of either.
    async fn wait_hedged(
        &self,
        at: Instant,
        id: RequestId,
        first: usize,
        retry: &mut Retry,
        build: &mut impl FnMut(u32, Duration, &Member) -> Outgoing,
        turn: &mut reply_cell::Turn<'_, Event>,
    ) -> Event {
        let mut timer = std::pin::pin!(tokio::time::sleep_until(at));
        let early = std::future::poll_fn(|cx| match turn.poll_take(cx) {
            std::task::Poll::Ready(e) => std::task::Poll::Ready(Some(e)),
            std::task::Poll::Pending => {
                std::future::Future::poll(timer.as_mut(), cx).map(|()| None)
            }
        })
        .await;
        if let Some(e) = early {
            return e;
        }
        // Counted in flight at its endpoint until the first reply of either.
        let _hedged = self.hedge(id, first, retry, build);
        if _hedged.is_some() {
            retry.hedged_to(self.hedge_target(id));
        }
        std::future::poll_fn(|cx| turn.poll_take(cx)).await
    }

    /// Where the hedge of call `id` went, while its attempt is pending.
    fn hedge_target(&self, id: RequestId) -> Option<usize> {
        self.inner
            .pending()
            .get(&id)
            .and_then(|p| p.hedge)
            .map(|(e, _)| e)
    }

    /// Sends a hedged copy of the attempt in flight on `first` to another endpoint;
    /// returns the count of it in flight there (dropped when the call moves on), or
    /// `None` when no other endpoint can take it, the budget says no, or the reply came
    /// meanwhile.
    fn hedge<'a>(
        &'a self,
        id: RequestId,
        first: usize,
        retry: &mut Retry,
        build: &mut impl FnMut(u32, Duration, &Member) -> Outgoing,
    ) -> Option<Outstanding<'a>> {
        let inner = &*self.inner;
        let to = inner.pick(Some(first)).filter(|&i| i != first)?;
        let now = Instant::now();
        if !inner.budget.try_withdraw(now.into_std()) {
            bump(&inner.counters.budget_refusals);
            return None;
        }
        let ep = inner.members.at(to);
        let remaining = Instant::from_std(retry.deadline()).saturating_duration_since(now);
        let msg = build(retry.attempts() + 1, remaining, ep);
        // Registered before sending, as every attempt.
        let registered = ep.generation();
        inner.pending().get_mut(&id)?.hedge = Some((to, registered));
        match ep.try_send(msg, inner.config.bulk_connections) {
            Ok(sent) => {
                if sent.generation != registered {
                    if let Some(p) = inner.pending().get_mut(&id) {
                        p.hedge = Some((to, sent.generation));
                    }
                }
            }
            Err(_) => {
                if let Some(p) = inner.pending().get_mut(&id) {
                    p.hedge = None;
                }
                return None;
            }
        }
        retry.sent();
        bump(&inner.counters.attempts);
        bump(&inner.counters.hedges);
        crate::observe::client_attempt(&ep.keys, true, true);
        bump(&ep.counters.sent);
        tracing::debug!(from = %inner.members.at(first).addr, to = %ep.addr, "hedged");
        ep.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Outstanding(&ep.outstanding))
    }

    /// Counts an attempt sent to `idx` (a resend when `attempt` > 1, a failover when
    /// the endpoint that failed before was another).
    fn count_sent(&self, ep: &Member, idx: usize, failed: Option<usize>, attempt: u32) {
        let c = &self.inner.counters;
        bump(&c.attempts);
        bump(&ep.counters.sent);
        crate::observe::client_attempt(&ep.keys, attempt > 1, false);
        if attempt > 1 {
            bump(&c.retries);
            if let Some(from) = failed.filter(|l| *l != idx) {
                bump(&c.failovers);
                crate::observe::client_failover();
                tracing::info!(
                    from = %self.inner.members.at(from).addr,
                    to = %ep.addr,
                    attempt,
                    "failing over"
                );
            }
        }
        let span = tracing::Span::current();
        span.record("attempt", attempt);
        span.record("endpoint", ep.addr.as_str());
        tracing::debug!("attempt sent");
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        let now = now_std();
        let window = self.inner.window.as_ref().map(|w| w.members());
        let window = window.filter(|w| !w.is_empty());
        ClientStats {
            calls: read(&c.calls),
            succeeded: read(&c.succeeded),
            failed: read(&c.failed),
            attempts: read(&c.attempts),
            retries: read(&c.retries),
            budget_refusals: read(&c.budget_refusals),
            hedges: read(&c.hedges),
            timeouts: read(&c.timeouts),
            failovers: read(&c.failovers),
            reconnects: read(&c.reconnects),
            late_replies: read(&c.late_replies),
            endpoints: self
                .inner
                .live()
                .map(|(i, e)| {
                    // One look under the lock (a guard in the literal would live
                    // to its end).
                    let (health, connections, strikes) = {
                        let st = e.lock();
                        (st.health.state(now), st.connections(), st.health.strikes())
                    };
                    EndpointStats {
                        endpoint: e.addr.clone(),
                        health,
                        sent: read(&e.counters.sent),
                        replies: read(&e.counters.replies),
                        timeouts: read(&e.counters.timeouts),
                        disconnects: read(&e.counters.disconnects),
                        connections,
                        strikes,
                        in_aperture: window.as_ref().is_none_or(|w| w.contains(&i)),
                    }
                })
                .collect(),
        }
    }

    /// Waits until at least `n` endpoints are healthy, or `timeout` passes; returns
    /// whether they are.
    pub async fn wait_healthy(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut changed = self.inner.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let now = now_std();
            let healthy = self
                .inner
                .live()
                .filter(|(_, e)| e.eligible(|| now))
                .count();
            if healthy >= n {
                return true;
            }
            if !self.inner.wait_change(&mut changed, deadline).await {
                return false;
            }
        }
    }
}

impl tower::Service<Message> for Client {
    type Response = Message;
    type Error = RpcError;
    type Future = rpc_core::service::BoxFuture<Result<Message, RpcError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), RpcError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Message) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.request(req).await })
    }
}
