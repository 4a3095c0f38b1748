//! Attempt deadlines: one task per client watches them all, instead of a tokio timer
//! registered and removed per attempt (~570 of a sequential call's ~14.3k client
//! instructions: the registration and removal in the timer wheel, the `Timeout`
//! wrapper; at 16 callers, both client threads also took the wheel's lock per call).
//!
//! Each pending attempt carries its deadline. The task sleeps until the earliest one it
//! saw, then ends every attempt past its deadline (as a timeout) and sleeps again.
//! An attempt whose deadline comes before the task's next wake-up tells it (a
//! [`Notify`]); with one attempt timeout for every call that is rare (each new deadline
//! lies after the ones already pending), so the task wakes about once per attempt
//! timeout while calls go on, and not at all while none are pending.
//!
//! It is also the watchdog of the client's relay: while callers wait in line, it
//! looks every [`LINE_CHECK`] that the line moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Inner;
use crate::socket::relay::LINE_CHECK;
use crate::timer::{Alarm, Timer};

/// When the client's expiry task wakes next.
pub(crate) struct Expiry {
    base: Instant,
    /// Nanoseconds after `base` of the task's next wake-up; `u64::MAX` when it waits
    /// for no deadline (or is looking at the pending attempts right now).
    next: AtomicU64,
    notify: Notify,
    stopped: AtomicBool,
    /// The task looks at the relay's line again within [`LINE_CHECK`].
    watching: AtomicBool,
}

impl Expiry {
    /// Waits for no deadline yet.
    pub fn new() -> Expiry {
        Expiry {
            base: Instant::now(),
            next: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
            stopped: AtomicBool::new(false),
            watching: AtomicBool::new(false),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .min(u64::MAX - 1)
    }

    /// An attempt with `deadline` is pending (called after registering it): wakes the
    /// task if it would wake later than that.
    pub fn watch(&self, deadline: Instant) {
        if self.nanos(deadline) < self.next.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// A line of callers formed in the client's relay: a task that is not watching
    /// lines (idle, or asleep until an attempt's deadline) wakes to watch it (see
    /// [`Relay::unstick`](crate::socket::relay::Relay::unstick)).
    pub fn line_formed(&self) {
        if !self.watching.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Wakes the task to end (the client closed).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// The expiry task of one client; ends with the client.
pub(crate) async fn run(inner: Weak<Inner>, expiry: Arc<Expiry>, timer: Timer) {
    // On the client's clock (see `crate::timer`).
    let mut alarm = Alarm::new(timer);
    while !expiry.stopped.load(Ordering::SeqCst) {
        // Attempts registered and lines formed while we look wake us again (`next`
        // reads "none", `watching` "no").
        expiry.next.store(u64::MAX, Ordering::SeqCst);
        expiry.watching.store(false, Ordering::SeqCst);
        let now = Instant::now();
        let earliest = {
            let Some(inner) = inner.upgrade() else { return };
            let earliest = inner.expire(now);
            // While callers wait in line, look again soon.
            match inner.relay.unstick() {
                true => {
                    expiry.watching.store(true, Ordering::SeqCst);
                    Some(earliest.map_or(now + LINE_CHECK, |t| t.min(now + LINE_CHECK)))
                }
                false => earliest,
            }
        };
        if let Some(t) = earliest {
            expiry.next.store(expiry.nanos(t), Ordering::SeqCst);
        }
        match earliest {
            Some(t) => {
                tokio::select! {
                    _ = expiry.notify.notified() => {}
                    _ = std::future::poll_fn(|cx| alarm.poll_until(t.into_std(), cx)) => {}
                }
            }
            None => expiry.notify.notified().await,
        }
    }
}
