//! The attempt loop: the async shell around the retry decision ([`Retry`]) that
//! picks endpoints, registers and sends attempts, waits for their ends (hedging when
//! asked) and carries out what the policy decides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{RequestId, RetryPolicy, RpcError};
use tokio::time::Instant;

use super::member::Member;
use super::retry::{Decision, Outcome, Retry};
use super::{now_std, reply_cell, Balance, Client, Event, Inner, Pending, Verdict};
use crate::counter::bump;
use crate::message::{Message, Outgoing};

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
}
