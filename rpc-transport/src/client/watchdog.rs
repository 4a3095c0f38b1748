//! The client's watchdog task: it ends attempts past their deadline, keeps the wake
//! line of callers moving, and closes what a quiet client's lazy aperture lingers on.
//!
//! Attempt deadlines: one task per client watches them all, instead of a tokio timer
//! registered and removed per attempt (whose registration and removal in the timer
//! wheel, and at 16 callers the wheel's lock, cost more than the rest of the wait).
//!
//! Each pending attempt carries its deadline. The task sleeps until the earliest one it
//! saw, then ends every attempt past its deadline (as a timeout) and sleeps again.
//! An attempt whose deadline comes before the task's next wake-up tells it (a
//! [`Notify`]); with one attempt timeout for every call that is rare (each new deadline
//! lies after the ones already pending), so the task wakes about once per attempt
//! timeout while calls go on, and not at all while none are pending.
//!
//! The wake line (`socket/wake_line.rs`): while callers wait in line, it looks every
//! [`LINE_CHECK`] that the line moves.
//!
//! A lazy aperture ([`crate::Aperture::lazy`]): every half linger while calls go on,
//! and until what lingers out of the window is closed once they stopped, it tends the
//! window as picks would (`Inner::tend_quiet`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Inner;
use crate::socket::wake_line::LINE_CHECK;
use crate::timer::{Alarm, Timer};

/// When the client's watchdog task wakes next.
pub(crate) struct Watchdog {
    base: Instant,
    /// Nanoseconds after `base` of the task's next wake-up; `u64::MAX` when it waits
    /// for no deadline (or is looking at the pending attempts right now).
    next: AtomicU64,
    notify: Notify,
    stopped: AtomicBool,
    /// The task looks at the wake line again within [`LINE_CHECK`].
    watching: AtomicBool,
}

impl Watchdog {
    /// Waits for no deadline yet.
    pub fn new() -> Watchdog {
        Watchdog {
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

    /// A line of callers formed in the client's wake line: a task that is not watching
    /// lines (idle, or asleep until an attempt's deadline) wakes to watch it (see
    /// [`WakeLine::unstick`](crate::socket::wake_line::WakeLine::unstick)).
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

/// The watchdog task of one client; ends with the client.
pub(crate) async fn run(inner: Weak<Inner>, watchdog: Arc<Watchdog>, timer: Timer) {
    // On the client's clock (see `crate::timer`).
    let mut alarm = Alarm::new(timer);
    while !watchdog.stopped.load(Ordering::SeqCst) {
        // Attempts registered and lines formed while we look wake us again (`next`
        // reads "none", `watching` "no").
        watchdog.next.store(u64::MAX, Ordering::SeqCst);
        watchdog.watching.store(false, Ordering::SeqCst);
        let now = Instant::now();
        let earliest = {
            let Some(inner) = inner.upgrade() else { return };
            let earliest = match (inner.expire(now), inner.tend_quiet(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // While callers wait in line, look again soon.
            match inner.wake_line.unstick() {
                true => {
                    watchdog.watching.store(true, Ordering::SeqCst);
                    Some(earliest.map_or(now + LINE_CHECK, |t| t.min(now + LINE_CHECK)))
                }
                false => earliest,
            }
        };
        if let Some(t) = earliest {
            watchdog.next.store(watchdog.nanos(t), Ordering::SeqCst);
        }
        match earliest {
            Some(t) => {
                tokio::select! {
                    _ = watchdog.notify.notified() => {}
                    _ = std::future::poll_fn(|cx| alarm.poll_until(t.into_std(), cx)) => {}
                }
            }
            None => watchdog.notify.notified().await,
        }
    }
}
