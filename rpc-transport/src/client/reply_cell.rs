//! Where the outcome of one attempt lands until its caller takes it.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::socket::wake_line::WakeLine;
use crate::sync::lock;

/// The outcome of an attempt and the waker of its caller. Unlike a oneshot channel,
/// filling it does not wake the caller: the filler decides when (see
/// [`WakeLine`](crate::socket::wake_line::WakeLine)).
pub(crate) struct ReplyCell<E> {
    state: Mutex<State<E>>,
}

struct State<E> {
    outcome: Option<E>,
    waker: Option<Waker>,
    filled: bool,
}

impl<E> ReplyCell<E> {
    /// An empty slot.
    pub fn new() -> Arc<ReplyCell<E>> {
        Arc::new(ReplyCell {
            state: Mutex::new(State {
                outcome: None,
                waker: None,
                filled: false,
            }),
        })
    }

    /// Stores the outcome; returns the caller's waker (none when the caller has not
    /// waited yet: it will find the outcome when it does).
    pub fn fill(&self, e: E) -> Option<Waker> {
        let mut st = self.lock();
        st.outcome = Some(e);
        st.filled = true;
        st.waker.take()
    }

    /// Whether an outcome was ever stored (taken or not).
    #[cfg(test)]
    pub fn filled(&self) -> bool {
        self.lock().filled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<E>> {
        lock(&self.state)
    }

    /// The outcome, or `Pending` with the caller's waker kept.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<E> {
        let mut st = self.lock();
        match st.outcome.take() {
            Some(e) => Poll::Ready(e),
            None => {
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// The turn of one attempt's caller in the client's [`WakeLine`]: whatever ends the
/// attempt (its outcome taken, a timeout, the call dropped), a caller whose slot was
/// filled wakes the next one in line, or the callers behind it would wait for a
/// wake-up that never comes.
pub(crate) struct Turn<'a, E> {
    line: &'a WakeLine,
    slot: Arc<ReplyCell<E>>,
    taken: bool,
}

impl<'a, E> Turn<'a, E> {
    /// The turn of the caller of `slot`.
    pub fn new(line: &'a WakeLine, slot: Arc<ReplyCell<E>>) -> Turn<'a, E> {
        Turn {
            line,
            slot,
            taken: false,
        }
    }

    /// [`ReplyCell::poll_take`], remembering that the outcome was taken.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<E> {
        let r = self.slot.poll_take(cx);
        self.taken |= r.is_ready();
        r
    }
}

impl<E> Drop for Turn<'_, E> {
    fn drop(&mut self) {
        let filled = if self.taken {
            true
        } else {
            // Given up before its outcome: a fill from now on must not hand this
            // caller's waker over (woken as the first of a line, it would pass
            // nothing on).
            let mut st = self.slot.lock();
            st.waker = None;
            st.filled
        };
        // With no one in line there is no one to wake (and no lock to take).
        if filled && !self.line.is_empty() {
            self.line.pass_on();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use super::{ReplyCell, Turn, WakeLine};
    use crate::socket::wake_line::tests::{counted, woken};

    #[test]
    fn filling_does_not_wake_and_the_outcome_is_taken_once() {
        let slot = ReplyCell::new();
        let (count, wakers) = counted(1);
        let mut cx = Context::from_waker(&wakers[0]);
        assert!(slot.poll_take(&mut cx).is_pending());
        let w = slot.fill(7u8).expect("the caller's waker");
        assert_eq!(woken(&count), [0], "the filler decides when to wake");
        drop(w);
        assert_eq!(slot.poll_take(&mut cx), Poll::Ready(7));
        assert!(slot.poll_take(&mut cx).is_pending());
        assert!(slot.filled());
        // Filled before the caller waited: no waker to hand back.
        let early = ReplyCell::new();
        assert!(early.fill(1u8).is_none());
    }

    #[test]
    fn a_caller_dropped_before_its_turn_still_passes_it_on() {
        // Three callers of one pass; the second is cancelled (its attempt dropped)
        // without taking its reply: the third must still be woken.
        let line = WakeLine::patient();
        let slots: Vec<_> = (0..3).map(|_| ReplyCell::new()).collect();
        let (count, wakers) = counted(3);
        let mut pass = Vec::new();
        for (slot, w) in slots.iter().zip(&wakers) {
            assert!(slot.poll_take(&mut Context::from_waker(w)).is_pending());
            pass.extend(slot.fill(0u8));
        }
        let mut turns: Vec<_> = slots
            .iter()
            .map(|slot| Some(Turn::new(&line, slot.clone())))
            .collect();
        line.hand_over(&mut pass);
        assert_eq!(woken(&count), [1, 0, 0]);
        turns[0].take();
        assert_eq!(woken(&count), [1, 1, 0]);
        turns[1].take();
        assert_eq!(woken(&count), [1, 1, 1], "the dropped caller passed on");
        turns[2].take();
        assert!(line.is_empty());
        // An attempt that ends without a reply (a timeout) wakes no one.
        let (other, w) = counted(2);
        line.hand_over(&mut w.clone());
        let unfilled = Turn::new(&line, ReplyCell::<u8>::new());
        drop(unfilled);
        assert_eq!(woken(&other), [1, 0]);
    }

    #[test]
    fn a_caller_that_gave_up_is_not_handed_over_by_a_later_fill() {
        // The caller waited (its waker is in the slot), then gave up before its reply
        // landed: the fill must not hand its waker over, or it would be woken as the
        // first of a line and pass nothing on.
        let line = WakeLine::patient();
        let slot = ReplyCell::new();
        let (_, wakers) = counted(1);
        let mut turn = Turn::new(&line, slot.clone());
        assert!(turn
            .poll_take(&mut Context::from_waker(&wakers[0]))
            .is_pending());
        drop(turn);
        assert!(
            slot.fill(0u8).is_none(),
            "a gone caller's waker was handed over"
        );
        // One that took its outcome keeps the usual course.
        let slot = ReplyCell::new();
        let mut turn = Turn::new(&line, slot.clone());
        let cx = &mut Context::from_waker(&wakers[0]);
        assert!(turn.poll_take(cx).is_pending());
        assert!(slot.fill(1u8).is_some());
        assert_eq!(turn.poll_take(cx), Poll::Ready(1));
    }
}
