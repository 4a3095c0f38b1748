//! The order in which the callers of a burst of replies are woken.
//!
//! A connection task that hands over several replies in one pass would wake every
//! caller at once: tokio queues all but the first on the waking thread and unparks
//! another worker to steal them (an eventfd write or a futex, a context switch and
//! cache misses per burst). With many callers on one connection those wake-ups cost
//! the client more than the calls did. Instead the first caller of a burst is woken
//! and the others wait in a
//! [`WakeLine`]: each caller that takes its reply wakes the next one, on the thread it
//! runs on (tokio's LIFO slot: no unpark). The last one wakes the connection tasks
//! that wait for the burst to end (to write the requests the callers left corked).
//!
//! A line runs on one thread at a time: callers that work between calls would all
//! wait for one worker. A turn longer than [`SLOW_TURN`] breaks the line up, so such
//! callers spread over the workers again. (The figures behind both choices are in
//! docs/ARCHITECTURE.md, Transport, "Callers of one read are woken one after
//! another".)
//!
//! A caller woken but never polled again (nor dropped) would hold up the ones behind
//! it, whose replies are already in their slots (no deadline of theirs is pending any
//! more). (A caller dropped before its reply lands takes its waker out of its slot,
//! so that it is never woken as part of a line; see `client::reply_cell::Turn`.) A watchdog
//! (the client's watchdog task, told when a line forms while it is not watching one)
//! looks at a waiting line every [`LINE_CHECK`] and wakes everyone when no turn was
//! passed on since its last look; the connection task also wakes the line when its
//! timer fires (heartbeats).

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

/// A turn longer than this (the time from one caller's wake-up to its successor's)
/// means the callers work between calls: the line then breaks up, so that the other
/// workers may take some of them (a line runs on one thread at a time). Waking an idle
/// worker costs a few to tens of microseconds.
const SLOW_TURN: Duration = Duration::from_micros(20);

/// How often a watchdog looks at a waiting line (see [`WakeLine::unstick`]).
pub(crate) const LINE_CHECK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    callers: VecDeque<Waker>,
    /// Connection tasks to wake when `callers` runs empty.
    tasks: Vec<Waker>,
    /// When the caller whose turn it is was woken.
    turn_began: Option<Instant>,
    /// Turns passed on (and lines woken whole), and their count at the watchdog's
    /// last look.
    passes: u64,
    seen: u64,
    /// Callers waited at the watchdog's last look.
    seen_waiting: bool,
}

/// Callers whose reply is waiting for them, woken one after another.
pub(crate) struct WakeLine {
    queue: Mutex<Queue>,
    /// Length of `callers`, read without the lock.
    len: AtomicUsize,
    /// [`SLOW_TURN`], or longer in tests that look at the order alone.
    slow_turn: Duration,
    /// Told when a line forms (see [`WakeLine::set_watchdog`]).
    watchdog: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Default for WakeLine {
    fn default() -> WakeLine {
        WakeLine {
            queue: Mutex::default(),
            len: AtomicUsize::new(0),
            slow_turn: SLOW_TURN,
            watchdog: std::sync::OnceLock::new(),
        }
    }
}

impl WakeLine {
    /// A line whose line never breaks up (tests of the order alone: a preempted test
    /// thread must not count as a slow turn).
    #[cfg(test)]
    pub fn patient() -> WakeLine {
        WakeLine {
            slow_turn: Duration::MAX,
            ..WakeLine::default()
        }
    }

    /// `f` is called whenever a line forms: it must see to it that [`unstick`]
    /// (Self::unstick) is called every [`LINE_CHECK`] while the line waits.
    pub fn set_watchdog(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.watchdog.set(f);
    }

    /// The watchdog's look: wakes everyone when callers waited at the last look too
    /// and no turn was passed on since. Returns whether callers still wait (look
    /// again).
    pub fn unstick(&self) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut q = self.lock();
        let waiting = !q.callers.is_empty();
        let stuck = waiting && q.seen_waiting && q.passes == q.seen;
        q.seen = q.passes;
        q.seen_waiting = waiting && !stuck;
        if stuck {
            tracing::debug!("a woken caller was not polled: waking the callers behind it");
            self.wake_line(q);
        }
        !self.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// Whether no caller waits for its turn.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// The callers of one pass of a connection task, in order: the first is woken now
    /// unless callers of an earlier pass still wait their turn (one of them is awake
    /// and will pass on); the others wait in line.
    pub fn hand_over(&self, callers: &mut Vec<Waker>) {
        self.hand_over_at(callers, Instant::now);
    }

    fn hand_over_at(&self, callers: &mut Vec<Waker>, now: impl FnOnce() -> Instant) {
        // One caller and no line: woken now, as under the lock (a line formed
        // meanwhile by another pass is as if that pass came after this one).
        if callers.len() == 1 && self.is_empty() {
            if let Some(w) = callers.pop() {
                w.wake();
            }
            return;
        }
        let (first, formed) = {
            let mut q = self.lock();
            let mut it = callers.drain(..);
            let first = if q.callers.is_empty() {
                it.next()
            } else {
                None
            };
            q.callers.extend(it);
            let formed = first.is_some() && !q.callers.is_empty();
            if formed {
                q.turn_began = Some(now());
            }
            self.len.store(q.callers.len(), Ordering::Release);
            (first, formed)
        };
        if let Some(w) = first {
            w.wake();
        }
        if formed {
            if let Some(f) = self.watchdog.get() {
                f();
            }
        }
    }

    /// A caller took its reply: wakes the next one; after the last, the waiting
    /// connection tasks. After a slow turn ([`SLOW_TURN`]), wakes everyone.
    pub fn pass_on(&self) {
        if self.is_empty() {
            return;
        }
        self.pass_on_at(Instant::now());
    }

    fn pass_on_at(&self, now: Instant) {
        let mut q = self.lock();
        if q.turn_began
            .is_some_and(|t| now.duration_since(t) > self.slow_turn)
        {
            self.wake_line(q);
            return;
        }
        let next = q.callers.pop_front();
        q.passes += 1;
        self.len.store(q.callers.len(), Ordering::Release);
        let tasks = if q.callers.is_empty() {
            q.turn_began = None;
            std::mem::take(&mut q.tasks)
        } else {
            q.turn_began = Some(now);
            Vec::new()
        };
        drop(q);
        next.into_iter().chain(tasks).for_each(Waker::wake);
    }

    /// Registers a connection task to be woken once no caller waits; false (nothing
    /// registered) when none waits now.
    pub fn wake_when_done(&self, task: &Waker) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut q = self.lock();
        if q.callers.is_empty() {
            return false;
        }
        if !q.tasks.iter().any(|t| t.will_wake(task)) {
            q.tasks.push(task.clone());
        }
        true
    }

    /// Wakes every caller still waiting, and the tasks waiting for them.
    pub fn wake_all(&self) {
        if self.is_empty() {
            return;
        }
        self.wake_line(self.lock());
    }

    /// Empties the line and wakes everyone in it, and the tasks waiting for it.
    fn wake_line(&self, mut q: MutexGuard<'_, Queue>) {
        self.len.store(0, Ordering::Release);
        q.turn_began = None;
        // Progress, for the watchdog: a line that forms later is a new one.
        q.passes += 1;
        let callers = std::mem::take(&mut q.callers);
        let tasks = std::mem::take(&mut q.tasks);
        drop(q);
        callers.into_iter().chain(tasks).for_each(Waker::wake);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use std::time::{Duration, Instant};

    use super::{WakeLine, SLOW_TURN};

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    pub(crate) struct Count(pub AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn counted(n: usize) -> (Vec<Arc<Count>>, Vec<Waker>) {
        let counts: Vec<Arc<Count>> = (0..n).map(|_| Arc::new(Count::default())).collect();
        let wakers = counts.iter().map(|c| Waker::from(c.clone())).collect();
        (counts, wakers)
    }

    pub(crate) fn woken(counts: &[Arc<Count>]) -> Vec<usize> {
        counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
    }

    #[test]
    fn callers_of_a_pass_are_woken_one_after_another_then_the_task() {
        let line = WakeLine::patient();
        let (callers, wakers) = counted(3);
        let (task, task_waker) = counted(1);
        let mut pass = wakers;
        line.hand_over(&mut pass);
        assert!(pass.is_empty(), "the pass's list is emptied for reuse");
        assert_eq!(woken(&callers), [1, 0, 0], "only the first at once");
        assert!(line.wake_when_done(&task_waker[0]));
        line.pass_on();
        assert_eq!(woken(&callers), [1, 1, 0]);
        assert_eq!(woken(&task), [0], "a caller still waits");
        line.pass_on();
        assert_eq!(woken(&callers), [1, 1, 1]);
        assert_eq!(
            woken(&task),
            [1],
            "the last caller is awake: the task's turn"
        );
        // The last caller passes on to no one.
        line.pass_on();
        assert_eq!(woken(&callers), [1, 1, 1]);
        assert!(line.is_empty());
        assert!(!line.wake_when_done(&task_waker[0]), "nothing to wait for");
    }

    #[test]
    fn a_later_pass_queues_behind_callers_still_waiting() {
        let line = WakeLine::patient();
        let (first, w1) = counted(2);
        let (second, w2) = counted(2);
        line.hand_over(&mut w1.clone());
        line.hand_over(&mut w2.clone());
        assert_eq!(woken(&first), [1, 0]);
        assert_eq!(woken(&second), [0, 0], "the awake caller will pass on");
        line.pass_on();
        line.pass_on();
        assert_eq!((woken(&first), woken(&second)), (vec![1, 1], vec![1, 0]));
        line.pass_on();
        assert_eq!(woken(&second), [1, 1]);
        // Once the line is empty, a pass's first caller is woken at once again.
        let (third, w3) = counted(1);
        line.hand_over(&mut w3.clone());
        assert_eq!(woken(&third), [1]);
    }

    #[test]
    fn wake_all_leaves_no_one_waiting() {
        let line = WakeLine::patient();
        let (callers, wakers) = counted(4);
        let (task, task_waker) = counted(1);
        line.hand_over(&mut wakers.clone());
        assert!(line.wake_when_done(&task_waker[0]));
        line.wake_all();
        assert_eq!(woken(&callers), [1, 1, 1, 1]);
        assert_eq!(woken(&task), [1]);
        assert!(line.is_empty());
    }

    #[test]
    fn the_watchdog_wakes_a_line_that_does_not_move() {
        let line = WakeLine::patient();
        let formed = Arc::new(Count::default());
        line.set_watchdog(Box::new({
            let formed = formed.clone();
            move || {
                formed.0.fetch_add(1, Ordering::SeqCst);
            }
        }));
        assert!(!line.unstick(), "no line: nothing to watch");
        let (callers, wakers) = counted(3);
        line.hand_over(&mut wakers.clone());
        assert_eq!(formed.0.load(Ordering::SeqCst), 1, "told when a line forms");
        // First look: the line is new.
        assert!(line.unstick());
        assert_eq!(woken(&callers), [1, 0, 0]);
        // It moved since: still fine.
        line.pass_on();
        assert!(line.unstick());
        assert_eq!(woken(&callers), [1, 1, 0]);
        // The second caller was woken but is never polled: the next look wakes the rest.
        assert!(!line.unstick(), "everyone woken: nothing left to watch");
        assert_eq!(woken(&callers), [1, 1, 1]);
        // A line seen waiting, then woken whole (a slow turn, a heartbeat): a line
        // that forms later is new at the next look, not stuck.
        let (c2, w2) = counted(2);
        line.hand_over(&mut w2.clone());
        assert!(line.unstick());
        line.wake_all();
        let (c3, w3) = counted(2);
        line.hand_over(&mut w3.clone());
        assert!(line.unstick());
        assert_eq!((woken(&c2), woken(&c3)), (vec![1, 1], vec![1, 0]));
        // Alone, a caller forms no line.
        line.wake_all();
        let (one, w) = counted(1);
        line.hand_over(&mut w.clone());
        assert_eq!((woken(&one), formed.0.load(Ordering::SeqCst)), (vec![1], 3));
    }

    #[test]
    fn a_slow_turn_breaks_the_line_up() {
        let line = WakeLine::default();
        let t0 = Instant::now();
        let (callers, wakers) = counted(4);
        line.hand_over_at(&mut wakers.clone(), || t0);
        assert_eq!(woken(&callers), [1, 0, 0, 0]);
        // A quick turn: the next caller only.
        let t1 = t0 + SLOW_TURN / 2;
        line.pass_on_at(t1);
        assert_eq!(woken(&callers), [1, 1, 0, 0]);
        // That caller worked long before passing on: everyone left is woken.
        line.pass_on_at(t1 + SLOW_TURN + Duration::from_micros(1));
        assert_eq!(woken(&callers), [1, 1, 1, 1]);
        assert!(line.is_empty());
    }
}
