//! Deadlines of connections (handshake, heartbeats) and of the client's attempts, kept
//! by the clock the user chose: [`Timer`].
//!
//! - [`Timer::Runtime`] (the default): tokio's timer. `tokio::time::pause()` and
//!   `advance()` control it, so tests, ours and the users', need not sleep for real.
//! - [`Timer::Thread`]: one thread of this crate per process sleeps until the earliest
//!   deadline and wakes the tasks whose alarm is due. While any tokio timer is pending,
//!   every `epoll_wait` of the runtime's threads carries a timeout that the kernel arms
//!   and cancels each time a thread goes to sleep: with heartbeats and attempt
//!   deadlines always pending, that is a cost on every message of a quiet connection,
//!   which this thread takes away (docs/BENCHMARKS.md has the figure and the command).
//!   It follows the monotonic clock, not tokio's: `tokio::time::pause` does not stop it.
//!
//! Either way an [`Alarm`] armed for a later deadline than the one it has keeps the
//! earlier one and fires early; its owner looks, finds nothing due and arms it again. A
//! deadline that moves with every message (a heartbeat's) therefore costs nothing per
//! message. On the thread, an alarm armed earlier registers again; the entry it had is
//! stale (ignored, and dropped from the heap when stale entries pile up).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::lock;

/// Which clock keeps a socket's or a client's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timer {
    /// tokio's timer: follows `tokio::time::pause()` and `advance()`.
    #[default]
    Runtime,
    /// A thread of this crate, on the monotonic clock: tokio's threads then sleep
    /// without a timeout, which saves the kernel's timer work on every message of a
    /// quiet connection. `tokio::time::pause()` does not stop it.
    Thread,
}

/// One deadline of one task, reused: arm it, look whether it fired, arm it again.
#[derive(Debug)]
pub(crate) enum Alarm {
    /// Kept by tokio's timer.
    Runtime(RuntimeAlarm),
    /// Kept by the crate's thread.
    Thread(ThreadAlarm),
}

impl Alarm {
    /// An alarm kept by `timer`, with no deadline.
    pub fn new(timer: Timer) -> Alarm {
        match timer {
            Timer::Runtime => Alarm::Runtime(RuntimeAlarm::default()),
            Timer::Thread => Alarm::Thread(ThreadAlarm::default()),
        }
    }

    /// The current time on this alarm's clock.
    pub fn now(&self) -> Instant {
        match self {
            Alarm::Runtime(_) => tokio::time::Instant::now().into_std(),
            Alarm::Thread(_) => Instant::now(),
        }
    }

    /// Makes sure the alarm fires at `at` or earlier and then wakes `waker`.
    pub fn arm(&mut self, at: Instant, waker: &Waker) {
        match self {
            Alarm::Runtime(a) => a.arm(at, waker),
            Alarm::Thread(a) => a.arm(at, waker),
        }
    }

    /// Whether the deadline has passed (and fired); the alarm then has no deadline
    /// until armed again.
    pub fn take_fired(&mut self) -> bool {
        match self {
            Alarm::Runtime(a) => a.take_fired(),
            Alarm::Thread(a) => a.take_fired(),
        }
    }

    /// Ready once `at` (or an earlier deadline the alarm had) has passed.
    pub fn poll_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if self.take_fired() || self.now() >= at {
            self.cancel();
            return Poll::Ready(());
        }
        self.arm(at, cx.waker());
        Poll::Pending
    }

    /// Drops the deadline, if any.
    pub fn cancel(&mut self) {
        match self {
            Alarm::Runtime(a) => a.cancel(),
            Alarm::Thread(a) => a.cancel(),
        }
    }
}

/// An alarm on tokio's timer: one `Sleep`, reset to earlier deadlines only.
#[derive(Debug, Default)]
pub(crate) struct RuntimeAlarm {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline the sleep has, while armed.
    at: Option<Instant>,
    /// The waker the sleep was last polled with.
    waker: Option<Waker>,
    /// The sleep completed when polled in `arm`.
    fired: bool,
}

impl RuntimeAlarm {
    fn arm(&mut self, at: Instant, waker: &Waker) {
        let same_waker = self.waker.as_ref().is_some_and(|w| w.will_wake(waker));
        if self.at.is_some_and(|t| t <= at) && same_waker {
            return;
        }
        let at = self.at.map_or(at, |t| t.min(at));
        let deadline = tokio::time::Instant::from_std(at);
        match &mut self.sleep {
            Some(s) if self.at != Some(at) => s.as_mut().reset(deadline),
            Some(_) => {}
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.at = Some(at);
        self.waker = Some(waker.clone());
        let sleep = self.sleep.as_mut().expect("set above");
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            self.fired = true;
            waker.wake_by_ref();
        }
    }

    fn take_fired(&mut self) -> bool {
        let fired = self.at.is_some()
            && (self.fired || self.sleep.as_ref().is_some_and(|s| s.is_elapsed()));
        if fired {
            self.at = None;
            self.fired = false;
        }
        fired
    }

    fn cancel(&mut self) {
        self.at = None;
        self.fired = false;
        // Dropped: a registered sleep would wake the task for nothing.
        self.sleep = None;
        self.waker = None;
    }
}

/// An alarm on the crate's timer thread.
#[derive(Debug, Default)]
pub(crate) struct ThreadAlarm {
    /// Allocated at the first arming (a connection without heartbeats never arms).
    shared: Option<Arc<Shared>>,
    /// The deadline registered with the thread and not yet seen fired.
    at: Option<Instant>,
    /// The generation of that registration (see [`Shared::live`]).
    generation: u64,
    /// The waker the thread holds, to compare without its lock.
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The generation of the alarm's registration that counts; entries with another
    /// are stale.
    live: AtomicU64,
    /// The generation that fired last.
    fired: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl ThreadAlarm {
    /// Makes sure the alarm fires at `at` or earlier and then wakes `waker`.
    fn arm(&mut self, at: Instant, waker: &Waker) {
        let shared = self.shared.get_or_insert_with(Default::default);
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
            *lock(&shared.waker) = Some(waker.clone());
        }
        if self.at.is_some_and(|t| t <= at) {
            return;
        }
        self.generation += 1;
        shared.live.store(self.generation, Ordering::SeqCst);
        self.at = Some(at);
        timers().add(Entry {
            at,
            generation: self.generation,
            shared: shared.clone(),
        });
    }

    /// Whether the registered deadline has passed (the thread has fired it); the alarm
    /// then has no deadline until armed again.
    fn take_fired(&mut self) -> bool {
        let fired = self.at.is_some()
            && self
                .shared
                .as_ref()
                .is_some_and(|s| s.fired.load(Ordering::SeqCst) == self.generation);
        if fired {
            self.at = None;
        }
        fired
    }

    /// Drops the deadline, if any.
    fn cancel(&mut self) {
        if self.at.take().is_some() {
            self.generation += 1;
            if let Some(s) = &self.shared {
                s.live.store(self.generation, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for ThreadAlarm {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A registration in the thread's heap.
struct Entry {
    at: Instant,
    generation: u64,
    shared: Arc<Shared>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst) == self.generation
    }

    /// Marks the alarm fired and wakes its task, unless it was moved or cancelled.
    fn fire(self) {
        let waker = {
            let waker = lock(&self.shared.waker);
            if !self.is_live() {
                return;
            }
            self.shared.fired.store(self.generation, Ordering::SeqCst);
            waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

// The heap is a max-heap: the earliest deadline is the greatest entry.
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}

/// The process's deadlines and the thread that fires them.
struct Timers {
    heap: Mutex<Heap>,
    changed: Condvar,
}

struct Heap {
    entries: BinaryHeap<Entry>,
    /// Stale entries are dropped when the heap grows past this.
    prune_at: usize,
}

/// Fewest entries before the heap is pruned of stale ones.
const PRUNE_MIN: usize = 1024;

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let t: &'static Timers = Box::leak(Box::new(Timers {
            heap: Mutex::new(Heap {
                entries: BinaryHeap::new(),
                prune_at: PRUNE_MIN,
            }),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("zmtp-rpc-timer".into())
            .spawn(move || t.run())
            .expect("zmtp-rpc: cannot start the timer thread");
        t
    })
}

impl Timers {
    fn add(&self, entry: Entry) {
        let mut heap = lock(&self.heap);
        let first = heap.entries.peek().is_none_or(|top| entry.at < top.at);
        heap.entries.push(entry);
        if heap.entries.len() > heap.prune_at {
            heap.entries.retain(Entry::is_live);
            heap.prune_at = (heap.entries.len() * 2).max(PRUNE_MIN);
        }
        drop(heap);
        if first {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut heap = lock(&self.heap);
        loop {
            let now = Instant::now();
            while heap.entries.peek().is_some_and(|e| e.at <= now) {
                due.extend(heap.entries.pop());
            }
            if !due.is_empty() {
                drop(heap);
                due.drain(..).for_each(Entry::fire);
                heap = lock(&self.heap);
                continue;
            }
            heap = match heap.entries.peek() {
                Some(e) => {
                    let wait = e.at - now;
                    self.changed
                        .wait_timeout(heap, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch (`None` before it): when a
/// request says it was sent, and what a server that bounds clock skew compares it with.
pub(crate) fn wall_clock_ms() -> Option<u64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(since.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `alarm` until `at` from a tokio task, returning when it woke (failing
    /// after 10 s: an alarm that never fires does not hang the test).
    async fn wait(alarm: &mut Alarm, at: Instant) -> Instant {
        let woke = std::future::poll_fn(|cx| alarm.poll_until(at, cx));
        tokio::time::timeout(Duration::from_secs(10), woke)
            .await
            .expect("the alarm woke its task");
        alarm.now()
    }

    const BOTH: [Timer; 2] = [Timer::Runtime, Timer::Thread];

    #[tokio::test]
    async fn an_alarm_wakes_its_task_not_before_its_deadline() {
        for timer in BOTH {
            let mut alarm = Alarm::new(timer);
            for ms in [30, 5, 20] {
                let at = alarm.now() + Duration::from_millis(ms);
                assert!(wait(&mut alarm, at).await >= at, "{timer:?}");
            }
        }
    }

    #[tokio::test]
    async fn armed_earlier_it_fires_at_the_earlier_deadline() {
        for timer in BOTH {
            let mut alarm = Alarm::new(timer);
            let waker = noop_waker();
            let start = alarm.now();
            alarm.arm(start + Duration::from_secs(60), &waker);
            let soon = start + Duration::from_millis(20);
            // Armed later again: keeps the earlier deadline.
            alarm.arm(soon, &waker);
            alarm.arm(start + Duration::from_secs(30), &waker);
            let woke = wait(&mut alarm, start + Duration::from_secs(90)).await;
            assert!(woke >= soon, "{timer:?}");
            assert!(
                woke < start + Duration::from_secs(30),
                "{timer:?} fired at the earlier deadline"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_runtime_timer_follows_paused_time() {
        let mut alarm = Alarm::new(Timer::Runtime);
        let start = alarm.now();
        let at = start + Duration::from_secs(3600);
        let mut woke = std::pin::pin!(std::future::poll_fn(|cx| alarm.poll_until(at, cx)));
        // Not before its deadline, however long the test waits in real time...
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(futures_poll(woke.as_mut()).is_pending());
        // ...and at once when the paused clock gets there.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(futures_poll(woke.as_mut()).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_runtime_alarm_does_not_fire() {
        let mut alarm = Alarm::new(Timer::Runtime);
        let waker = noop_waker();
        alarm.arm(alarm.now() + Duration::from_millis(5), &waker);
        alarm.cancel();
        tokio::time::advance(Duration::from_millis(30)).await;
        assert!(!alarm.take_fired());
    }

    /// Polls `f` once with a waker that does nothing.
    fn futures_poll<F: std::future::Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(&noop_waker()))
    }

    #[test]
    fn a_cancelled_thread_alarm_does_not_fire() {
        let mut alarm = ThreadAlarm::default();
        let waker = noop_waker();
        alarm.arm(Instant::now() + Duration::from_millis(5), &waker);
        alarm.cancel();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!alarm.take_fired());
        // Nor does a dropped one wake anything (its entry is stale).
        let mut other = ThreadAlarm::default();
        other.arm(Instant::now() + Duration::from_millis(5), &waker);
        let shared = other.shared.clone().unwrap();
        drop(other);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(shared.fired.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let waker = noop_waker();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut alarm = ThreadAlarm::default();
        // Each arming earlier than the last registers again; the older entries are
        // stale and pruned.
        for i in 0..(PRUNE_MIN as u64 * 8) {
            alarm.arm(far - Duration::from_millis(i), &waker);
        }
        let heap = lock(&timers().heap);
        let mine = heap
            .entries
            .iter()
            .filter(|e| Arc::ptr_eq(&e.shared, alarm.shared.as_ref().unwrap()))
            .count();
        assert!(mine <= PRUNE_MIN * 2, "{mine} entries of one alarm");
    }

    fn noop_waker() -> Waker {
        Waker::noop().clone()
    }
}
