//! When a call is sent again, where, and how it ends: the retry and failover decision
//! as a plain value.
//!
//! The attempt loop (`Client::attempts`) carries the decisions out; [`Retry`] makes
//! them. It is told what became of each attempt ([`Outcome`]) and the time, and
//! answers [`Decision::Send`] (avoiding which endpoint, not before when) or
//! [`Decision::Fail`] (with which error). No IO, no clock, no randomness: the table
//! tests below are docs/GUARANTEES.md, row by row.
//!
//! The rules, in the order they are applied:
//! 1. A request that never left the client (no connection up, its queue full) is not
//!    an attempt: it is tried again after a short pause, while the deadline allows.
//! 2. An `at_most_once` request that may have reached a server (it was written, then
//!    the attempt timed out, the connection was lost, or the call's deadline passed)
//!    ends [`RpcError::Indeterminate`], whatever time is left: it may have run.
//! 3. A call whose deadline has passed ends [`RpcError::DeadlineExceeded`].
//! 4. A call that has used its attempts ends [`RpcError::Unavailable`] with the last
//!    attempt's failure.
//! 5. A resend the client's retry budget does not allow ends the call with the last
//!    attempt's failure itself (the budget: `budget.rs`).
//! 6. Otherwise it is resent, avoiding the endpoint that failed, with the same id: at
//!    once, except after a second "did not run" answer in a row (OVERLOADED,
//!    SHUTTING_DOWN), when it waits a growing, jittered delay (10 ms doubling to
//!    500 ms, each drawn from the upper half): never a tight loop against servers
//!    that refuse work. A delay that would pass the deadline ends the call now.

use std::time::{Duration, Instant};

use rpc_core::{RetryPolicy, RpcError};

use crate::socket::{Backoff, SplitMix64};

/// A pause before trying again a request that could not be written (no connection,
/// queue full): long enough to let the endpoint's state catch up, short next to any
/// deadline.
pub(crate) const NOT_SENT_PAUSE: Duration = Duration::from_millis(1);

/// The first and the longest delay between "did not run" answers in a row.
const NOT_RUN_DELAY: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(500));

/// How far ahead a deadline too far to represent is put: any `Duration` is accepted as
/// a timeout, and one past this is the same as this.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What became of one attempt, as the loop saw it. Replies that end the call (OK, an
/// application error, a status the server ran the request to give) need no decision.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The request never left the client: no connection was up, or its queue was full.
    NotSent,
    /// The server answered that it did not run the request (OVERLOADED, SHUTTING_DOWN).
    NotRun(RpcError),
    /// The connection was lost after the request was written (the error says where
    /// and why).
    Lost(RpcError),
    /// No reply came within the attempt's deadline (the error says where, and the
    /// attempt timeout).
    TimedOut(RpcError),
}

/// What the loop does next.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Send (again) to a healthy endpoint, another than `avoid` if there is one, not
    /// before `not_before`.
    Send {
        /// The endpoint that failed last.
        avoid: Option<usize>,
        /// When the send may happen.
        not_before: Instant,
    },
    /// The call ends with this error.
    Fail(RpcError),
}

/// The retry state of one call.
#[derive(Debug)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    max_attempts: u32,
    attempt_timeout: Duration,
    deadline: Instant,
    /// Attempts written to a connection.
    attempts: u32,
    /// The endpoint that failed last and why (boxed: failures are rare, and the
    /// call's future stays small).
    last: Option<Box<(usize, RpcError)>>,
    /// "Did not run" answers in a row.
    not_run: u32,
    /// Delays after them, made at the second (boxed: rare, and the call's future
    /// stays small).
    backoff: Option<Box<Backoff>>,
    seed: u64,
    /// Hedge delay in milliseconds (0: no hedging).
    hedge_ms: u32,
    /// The endpoint the attempt in flight was hedged to, if it was.
    hedged: Option<u32>,
}

impl Retry {
    /// A call started at `start` with `timeout` to run, at most `max_attempts` sends
    /// (at least one), each waiting up to `attempt_timeout` for its reply. `seed`
    /// draws the jitter of its delays (the request id's bits do).
    pub fn new(
        policy: RetryPolicy,
        max_attempts: u32,
        attempt_timeout: Duration,
        start: Instant,
        timeout: Duration,
        seed: u64,
    ) -> Retry {
        Retry {
            policy,
            max_attempts: max_attempts.max(1),
            attempt_timeout,
            deadline: later(start, timeout),
            attempts: 0,
            last: None,
            not_run: 0,
            backoff: None,
            seed,
            hedge_ms: 0,
            hedged: None,
        }
    }

    /// The attempt in flight was hedged to `endpoint` (`None`: the hedge is gone).
    pub fn hedged_to(&mut self, endpoint: Option<usize>) {
        self.hedged = endpoint.and_then(|e| u32::try_from(e).ok());
    }

    /// Where the attempt that just ended was hedged to, if it was (asked once).
    pub fn take_hedge(&mut self) -> Option<usize> {
        self.hedged.take().map(|e| e as usize)
    }

    /// Hedges attempts after `ms` milliseconds (0: never), for methods that may be
    /// retried.
    pub fn hedging(mut self, ms: u32) -> Retry {
        self.hedge_ms = if self.policy == RetryPolicy::Retry {
            ms
        } else {
            0
        };
        self
    }

    /// When the attempt in flight is hedged, if it is: never for `at_most_once`, nor
    /// beyond the attempts allowed.
    pub fn hedge_delay(&self) -> Option<Duration> {
        (self.hedge_ms > 0 && self.may_hedge())
            .then(|| Duration::from_millis(u64::from(self.hedge_ms)))
    }

    /// The call's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether one more attempt may go out beside the one in flight (a hedge): only
    /// for methods that may be retried, within the attempts allowed.
    pub fn may_hedge(&self) -> bool {
        self.policy == RetryPolicy::Retry && self.attempts < self.max_attempts
    }

    /// The first decision: send at once, unless the deadline is already spent.
    pub fn start(&self, now: Instant) -> Decision {
        if now >= self.deadline {
            return Decision::Fail(RpcError::DeadlineExceeded);
        }
        Decision::Send {
            avoid: None,
            not_before: now,
        }
    }

    /// The deadline of an attempt sent at `now`: the attempt timeout later, or the
    /// call's deadline if that comes first.
    pub fn attempt_deadline(&self, now: Instant) -> Instant {
        later(now, self.attempt_timeout).min(self.deadline)
    }

    /// An attempt was written to a connection.
    pub fn sent(&mut self) {
        self.attempts += 1;
    }

    /// What became of the attempt sent to `endpoint` (or meant for it, for
    /// [`Outcome::NotSent`]), seen at `now`. `may_resend` is asked (once) only when the
    /// call would be resent: the client's retry budget.
    pub fn on_outcome(
        &mut self,
        endpoint: usize,
        outcome: Outcome,
        now: Instant,
        may_resend: impl FnOnce() -> bool,
    ) -> Decision {
        let cause = match outcome {
            Outcome::NotSent => {
                if now >= self.deadline {
                    return Decision::Fail(self.gave_up());
                }
                return Decision::Send {
                    avoid: Some(endpoint),
                    not_before: (now + NOT_SENT_PAUSE).min(self.deadline),
                };
            }
            Outcome::NotRun(e) | Outcome::Lost(e) => e,
            Outcome::TimedOut(_) if now >= self.deadline => RpcError::DeadlineExceeded,
            Outcome::TimedOut(e) => e,
        };
        let delivered = !matches!(cause, RpcError::Overloaded(_) | RpcError::ShuttingDown(_));
        if delivered && self.policy == RetryPolicy::AtMostOnce {
            return Decision::Fail(RpcError::Indeterminate(Box::new(cause)));
        }
        if matches!(cause, RpcError::DeadlineExceeded) {
            return Decision::Fail(cause);
        }
        self.not_run = if delivered { 0 } else { self.not_run + 1 };
        self.last = Some(Box::new((endpoint, cause)));
        if self.attempts >= self.max_attempts || now >= self.deadline {
            return Decision::Fail(self.gave_up());
        }
        let not_before = match self.not_run {
            0 | 1 => now,
            _ => {
                let seed = self.seed;
                let (first, max) = NOT_RUN_DELAY;
                let backoff = self.backoff.get_or_insert_with(|| {
                    Box::new(Backoff::new(first, max, SplitMix64::new(seed)))
                });
                later(now, backoff.next_delay())
            }
        };
        if not_before >= self.deadline {
            return Decision::Fail(self.gave_up());
        }
        if !may_resend() {
            let (_, cause) = *self.last.take().expect("set above");
            return Decision::Fail(cause);
        }
        Decision::Send {
            avoid: Some(endpoint),
            not_before,
        }
    }

    /// A reply ended the call with `error` (a status the server ran the request to
    /// give). A DEADLINE_EXCEEDED status does not say whether the handler had started
    /// (the server also cancels handlers whose deadline passes while they run): an
    /// `at_most_once` call may then have run, and ends `Indeterminate`.
    pub fn on_error_reply(&self, error: RpcError) -> RpcError {
        match error {
            RpcError::DeadlineExceeded if self.policy == RetryPolicy::AtMostOnce => {
                RpcError::Indeterminate(Box::new(error))
            }
            e => e,
        }
    }

    /// The error of a call that stops trying (no endpoint became ready by the
    /// deadline, or the attempts are used up): unavailable, with the last failure.
    pub fn gave_up(&mut self) -> RpcError {
        RpcError::Unavailable {
            attempts: self.attempts,
            last: self.last.take().map(|b| Box::new(b.1)),
        }
    }

    /// The error of a call that found no endpoint able to take it: unavailable,
    /// because of `why` (what each endpoint is going through).
    pub fn unreachable(&mut self, why: RpcError) -> RpcError {
        RpcError::Unavailable {
            attempts: self.attempts,
            last: Some(Box::new(why)),
        }
    }
}

/// `t + d`, or [`FOREVER`] after `t` when that cannot be represented.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(FOREVER))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPT: Duration = Duration::from_millis(100);
    const CALL: Duration = Duration::from_millis(1000);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// A call of `policy` started at `t0`, with 4 attempts of 100 ms in 1 s.
    fn call(policy: RetryPolicy, t0: Instant) -> Retry {
        Retry::new(policy, 4, ATTEMPT, t0, CALL, 7)
    }

    fn overloaded() -> RpcError {
        RpcError::Overloaded("full".into())
    }

    fn shutting_down() -> RpcError {
        RpcError::ShuttingDown("bye".into())
    }

    fn lost() -> Outcome {
        Outcome::Lost(RpcError::Disconnected {
            endpoint: "tcp://w0:1".into(),
            reason: None,
        })
    }

    fn timed_out() -> Outcome {
        Outcome::TimedOut(RpcError::AttemptTimeout {
            endpoint: "tcp://w0:1".into(),
            after: ATTEMPT,
        })
    }

    /// The decision as a short string, to compare in tables.
    fn show(d: &Decision, t0: Instant) -> String {
        match d {
            Decision::Send { avoid, not_before } => {
                let at = not_before.duration_since(t0).as_millis();
                match avoid {
                    Some(e) => format!("send avoiding {e} at {at}"),
                    None => format!("send at {at}"),
                }
            }
            Decision::Fail(e) => format!("fail: {}", chain(e)),
        }
    }

    /// An error and its causes, joined by " <- ".
    fn chain(e: &RpcError) -> String {
        let mut s = e.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(c) = cur {
            s.push_str(" <- ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    /// One attempt sent to endpoint 0, ending with `outcome` at `end_at` ms.
    fn after_one(policy: RetryPolicy, outcome: Outcome, end_at: u64) -> String {
        let t0 = Instant::now();
        let mut r = call(policy, t0);
        r.sent();
        show(&r.on_outcome(0, outcome, ms(t0, end_at), || true), t0)
    }

    #[test]
    fn every_guarantee_row_by_row() {
        use RetryPolicy::{AtMostOnce, Retry};
        let rows: Vec<(&str, RetryPolicy, Outcome, u64, &str)> = vec![
            // Timeouts and failover: resent at once, elsewhere, same id.
            (
                "timeout, default",
                Retry,
                timed_out(),
                100,
                "send avoiding 0 at 100",
            ),
            (
                "lost connection, default",
                Retry,
                lost(),
                5,
                "send avoiding 0 at 5",
            ),
            (
                "overloaded, default",
                Retry,
                Outcome::NotRun(overloaded()),
                1,
                "send avoiding 0 at 1",
            ),
            (
                "shutting down, default",
                Retry,
                Outcome::NotRun(shutting_down()),
                1,
                "send avoiding 0 at 1",
            ),
            // at_most_once: resent only when it did not run.
            (
                "overloaded, at most once",
                AtMostOnce,
                Outcome::NotRun(overloaded()),
                1,
                "send avoiding 0 at 1",
            ),
            (
                "shutting down, at most once",
                AtMostOnce,
                Outcome::NotRun(shutting_down()),
                1,
                "send avoiding 0 at 1",
            ),
            (
                "timeout, at most once",
                AtMostOnce,
                timed_out(),
                100,
                "fail: outcome unknown, the request may have run: tcp://w0:1: no reply within 100 ms",
            ),
            (
                "lost after writing, at most once",
                AtMostOnce,
                lost(),
                5,
                "fail: outcome unknown, the request may have run: tcp://w0:1: connection lost",
            ),
            // Found by the chaos run: a sent at_most_once call whose deadline passes
            // may have run; it is Indeterminate, not DeadlineExceeded.
            (
                "deadline passes after sending, at most once",
                AtMostOnce,
                timed_out(),
                1000,
                "fail: outcome unknown, the request may have run: deadline exceeded",
            ),
            (
                "deadline passes after sending, default",
                Retry,
                timed_out(),
                1000,
                "fail: deadline exceeded",
            ),
            // Never sent: not an attempt, tried again after a pause.
            (
                "not sent, default",
                Retry,
                Outcome::NotSent,
                3,
                "send avoiding 0 at 4",
            ),
            (
                "not sent, at most once",
                AtMostOnce,
                Outcome::NotSent,
                3,
                "send avoiding 0 at 4",
            ),
            (
                "not sent at the deadline",
                Retry,
                Outcome::NotSent,
                1000,
                "fail: unavailable after 1 attempt(s): no endpoint was ready",
            ),
            (
                "lost at the deadline, default",
                Retry,
                lost(),
                1000,
                "fail: unavailable after 1 attempt(s): tcp://w0:1: connection lost",
            ),
        ];
        for (name, policy, outcome, end, want) in rows {
            assert_eq!(after_one(policy, outcome, end), want, "{name}");
        }
    }

    #[test]
    fn a_deadline_status_from_the_server_may_have_run() {
        let t0 = Instant::now();
        let once = call(RetryPolicy::AtMostOnce, t0);
        let e = once.on_error_reply(RpcError::DeadlineExceeded);
        assert_eq!(
            chain(&e),
            "outcome unknown, the request may have run: deadline exceeded"
        );
        let e = once.on_error_reply(RpcError::BadRequest("no".into()));
        assert_eq!(chain(&e), "bad request: no");
        let retried = call(RetryPolicy::Retry, t0);
        let e = retried.on_error_reply(RpcError::DeadlineExceeded);
        assert_eq!(chain(&e), "deadline exceeded");
    }

    #[test]
    fn retries_end_unavailable_with_the_last_cause() {
        let t0 = Instant::now();
        let mut r = call(RetryPolicy::Retry, t0);
        let mut decisions = Vec::new();
        for k in 0..4u64 {
            r.sent();
            let outcome = if k < 3 {
                timed_out()
            } else {
                Outcome::NotRun(overloaded())
            };
            decisions.push(show(
                &r.on_outcome(k as usize % 2, outcome, ms(t0, k * 10 + 5), || true),
                t0,
            ));
        }
        assert_eq!(
            decisions,
            [
                "send avoiding 0 at 5",
                "send avoiding 1 at 15",
                "send avoiding 0 at 25",
                "fail: unavailable after 4 attempt(s): server overloaded: full",
            ]
        );
    }

    #[test]
    fn answers_that_it_did_not_run_in_a_row_wait_a_growing_jittered_delay() {
        let t0 = Instant::now();
        let mut r = Retry::new(RetryPolicy::Retry, 10, ATTEMPT, t0, CALL, 7);
        let mut waits = Vec::new();
        let mut now = t0;
        for k in 0..6 {
            r.sent();
            let d = r.on_outcome(k % 3, Outcome::NotRun(overloaded()), now, || true);
            let Decision::Send { not_before, .. } = d else {
                panic!("{}", show(&d, t0))
            };
            waits.push(not_before - now);
            now = not_before;
        }
        // The first fails over at once; then 10, 20, 40, 80, 160 ms nominal, each drawn
        // from the upper half of its nominal value.
        assert_eq!(waits[0], Duration::ZERO);
        let mut nominal = Duration::from_millis(10);
        for w in &waits[1..] {
            assert!(*w >= nominal / 2 && *w <= nominal, "{w:?} for {nominal:?}");
            nominal *= 2;
        }
        // Another seed, other delays (not all callers in lock-step).
        let mut other = Retry::new(RetryPolicy::Retry, 10, ATTEMPT, t0, CALL, 8);
        for _ in 0..2 {
            other.sent();
            other.on_outcome(0, Outcome::NotRun(overloaded()), t0, || true);
        }
        other.sent();
        let d = other.on_outcome(0, Outcome::NotRun(overloaded()), t0, || true);
        assert!(matches!(d, Decision::Send { not_before, .. } if not_before - t0 != waits[2]));
    }

    #[test]
    fn a_delay_past_the_deadline_ends_the_call_now() {
        let t0 = Instant::now();
        let mut r = call(RetryPolicy::Retry, t0);
        r.sent();
        r.on_outcome(0, Outcome::NotRun(overloaded()), ms(t0, 990), || true);
        r.sent();
        let d = r.on_outcome(1, Outcome::NotRun(overloaded()), ms(t0, 995), || true);
        assert_eq!(
            show(&d, t0),
            "fail: unavailable after 2 attempt(s): server overloaded: full"
        );
    }

    #[test]
    fn past_the_budget_a_call_fails_with_its_last_cause() {
        let t0 = Instant::now();
        let mut r = call(RetryPolicy::Retry, t0);
        r.sent();
        let mut asked = 0;
        let d = r.on_outcome(0, Outcome::NotRun(overloaded()), t0, || {
            asked += 1;
            false
        });
        assert_eq!(show(&d, t0), "fail: server overloaded: full");
        assert_eq!(asked, 1);
        // Not asked when the call ends anyway, nor for a request never sent.
        let mut r = call(RetryPolicy::AtMostOnce, t0);
        r.sent();
        r.on_outcome(0, lost(), t0, || panic!("asked for a call that ends"));
        r.on_outcome(0, Outcome::NotSent, t0, || panic!("asked for no resend"));
    }

    #[test]
    fn only_methods_that_may_be_retried_are_hedged_and_within_their_attempts() {
        let t0 = Instant::now();
        let d = Some(Duration::from_millis(5));
        let mut r = Retry::new(RetryPolicy::Retry, 2, ATTEMPT, t0, CALL, 7).hedging(5);
        assert_eq!(r.hedge_delay(), d);
        r.sent();
        assert_eq!(r.hedge_delay(), d, "one attempt out of two sent");
        r.sent();
        assert_eq!(r.hedge_delay(), None, "no attempt left for a hedge");
        let once = Retry::new(RetryPolicy::AtMostOnce, 4, ATTEMPT, t0, CALL, 7).hedging(5);
        assert_eq!(once.hedge_delay(), None, "at_most_once is never hedged");
        let off = Retry::new(RetryPolicy::Retry, 4, ATTEMPT, t0, CALL, 7).hedging(0);
        assert_eq!(off.hedge_delay(), None);
    }

    #[test]
    fn not_sent_does_not_use_an_attempt() {
        let t0 = Instant::now();
        let mut r = Retry::new(RetryPolicy::Retry, 1, ATTEMPT, t0, CALL, 7);
        for k in 0..10 {
            let d = r.on_outcome(0, Outcome::NotSent, ms(t0, k), || true);
            assert!(matches!(d, Decision::Send { .. }), "{}", show(&d, t0));
        }
        r.sent();
        let d = r.on_outcome(0, lost(), ms(t0, 11), || true);
        assert_eq!(
            show(&d, t0),
            "fail: unavailable after 1 attempt(s): tcp://w0:1: connection lost"
        );
    }

    #[test]
    fn a_spent_deadline_fails_before_sending() {
        let t0 = Instant::now();
        let zero = Retry::new(RetryPolicy::Retry, 4, ATTEMPT, t0, Duration::ZERO, 7);
        assert_eq!(show(&zero.start(t0), t0), "fail: deadline exceeded");
        let r = call(RetryPolicy::Retry, t0);
        assert_eq!(show(&r.start(ms(t0, 1000)), t0), "fail: deadline exceeded");
        assert_eq!(show(&r.start(ms(t0, 999)), t0), "send at 999");
    }

    #[test]
    fn any_duration_is_a_deadline() {
        let t0 = Instant::now();
        let r = Retry::new(RetryPolicy::Retry, 4, Duration::MAX, t0, Duration::MAX, 7);
        assert!(r.deadline() > ms(t0, 1_000_000_000));
        // The attempt's deadline is far too, and not past the call's.
        let at = r.attempt_deadline(t0);
        assert!(at > ms(t0, 1_000_000_000) && at <= r.deadline());
        assert!(matches!(r.start(t0), Decision::Send { .. }));
    }

    #[test]
    fn an_attempt_ends_by_the_calls_deadline() {
        let t0 = Instant::now();
        let mut r = call(RetryPolicy::Retry, t0);
        assert_eq!(r.attempt_deadline(t0), ms(t0, 100));
        assert_eq!(r.attempt_deadline(ms(t0, 950)), ms(t0, 1000));
        r.sent();
        r.sent();
        assert_eq!(r.attempts(), 2);
    }

    #[test]
    fn waiting_out_the_deadline_names_the_last_failure() {
        let t0 = Instant::now();
        let mut r = call(RetryPolicy::Retry, t0);
        assert_eq!(
            chain(&r.gave_up()),
            "unavailable after 0 attempt(s): no endpoint was ready"
        );
        r.sent();
        r.on_outcome(2, lost(), ms(t0, 1), || true);
        assert_eq!(
            chain(&r.gave_up()),
            "unavailable after 1 attempt(s): tcp://w0:1: connection lost"
        );
        r.sent();
        let why = RpcError::Unreachable("tcp://w0:1: connection refused".into());
        assert_eq!(
            chain(&r.unreachable(why)),
            "unavailable after 2 attempt(s): tcp://w0:1: connection refused"
        );
    }
}
