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
//! - `mod.rs`: [`Client`] and what the pool's connections tell it (replies, links
//!   up and down, stalls), adding and removing endpoints.
//! - `builder.rs`: [`ClientBuilder`], its checks, and `connect`.
//! - `attempt.rs`: the attempt loop (the async shell that carries out the retry
//!   decisions), hedged attempts.
//! - `pick.rs`: which member an attempt goes to ([`Balance`], the aperture's window).
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
mod attempt;
mod balance;
mod budget;
mod builder;
mod call;
#[cfg(feature = "dns")]
mod dns;
#[cfg(any(feature = "dns", test))]
mod dns_refresh;
mod health;
mod layered;
mod member;
mod members;
mod pick;
mod reply_cell;
mod retry;
mod stats;
mod watchdog;

pub use aperture::Aperture;
pub use budget::RetryBudget;
use builder::endpoint_key;
pub(crate) use builder::{hedge_ms, Config};
pub use builder::{Balance, ClientBuilder, PoolChange};
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
use self::stats::Counters;
use crate::counter::{bump, read};
use crate::message::{Message, Outgoing};
use crate::socket::core::{Answers, Failure};
use crate::socket::wake_line::WakeLine;
use crate::sync::lock;

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
    /// `rr` when the watchdog last looked at a quiet client's lazy aperture
    /// ([`Inner::tend_quiet`]).
    quiet_tick: AtomicUsize,
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
    /// Itself, for what connects members from where only `&self` is at hand (a lazy
    /// aperture's window taking a member in, at a pick).
    me: std::sync::Weak<Inner>,
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

    /// How long a member out of a lazy aperture's window stays connected (`None`:
    /// every member is connected).
    fn linger(&self) -> Option<Duration> {
        self.window.as_ref().and_then(|w| w.config().linger())
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
                ep.woke(&st);
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
            if st.failing {
                ep.woke(&st);
            }
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
        // A lazy aperture connects a member when its window takes it in.
        let lazy = self.linger().is_some();
        if added {
            if lazy {
                m.set_idle(&m.lock());
            } else {
                Member::recreate(self, idx);
            }
            tracing::info!(endpoint = %m.addr, "endpoint added");
        } else if m.is_removed() {
            let mut st = m.lock();
            m.set_removed(&st, false);
            if st.connections() == 0 {
                if lazy {
                    m.set_idle(&st);
                } else {
                    Member::recreate_locked(self, idx, &mut st);
                }
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
                let state = match (&st.failure, e.health(&st, now)) {
                    (_, HealthState::Idle) => "not connected: outside the aperture".into(),
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
                        (e.health(&st, now), st.connections(), st.health.strikes())
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
