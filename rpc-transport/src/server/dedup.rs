//! The reply cache: a retried request id gets the first execution's reply, and an id
//! still running is not started again. Bounded in entries, in bytes and in age.

use std::collections::{hash_map, VecDeque};
use std::time::{Duration, Instant};

use rpc_core::{IdMap, RequestId};

use crate::message::Outgoing;

/// What to do with an incoming request id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<W> {
    /// First time seen: run it (the caller is recorded as a waiter).
    Run,
    /// Running now: the caller was added to its waiters; do not run it again.
    Joined,
    /// Finished: answer the caller (handed back) with these reply frames.
    Cached(Outgoing, W),
    /// Finished, and its caller has acknowledged the reply: this is a stale copy of
    /// a request whose call is over; it is neither run nor answered.
    Acked,
}

enum Entry<W> {
    /// The first caller, and any that joined later.
    Running {
        first: W,
        more: Vec<W>,
    },
    Done {
        reply: Outgoing,
        at: Instant,
    },
    /// Finished, and the reply acknowledged by its client (let go of): the id is kept
    /// so that a stale copy of the request does not run again.
    Acked {
        at: Instant,
    },
}

/// The callers waiting for one reply (the first without an allocation).
pub(crate) struct Waiters<W> {
    first: Option<W>,
    more: Vec<W>,
}

impl<W> Waiters<W> {
    fn none() -> Waiters<W> {
        Waiters {
            first: None,
            more: Vec::new(),
        }
    }
}

impl<W> IntoIterator for Waiters<W> {
    type Item = W;
    type IntoIter = std::iter::Chain<std::option::IntoIter<W>, std::vec::IntoIter<W>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

/// Bounded reply cache keyed by request id. `W` is whatever identifies a caller waiting
/// for the reply (its envelope and connection).
pub(crate) struct ReplyCache<W> {
    map: IdMap<Entry<W>>,
    /// Finished ids, oldest first, for eviction.
    order: VecDeque<(RequestId, Instant)>,
    max_entries: usize,
    max_age: Duration,
    /// Bytes of the finished replies held, and the most allowed.
    bytes: usize,
    max_bytes: usize,
}

impl<W> ReplyCache<W> {
    /// A cache of at most `max_entries` finished replies, each kept at most `max_age`,
    /// holding at most `max_bytes` of reply data (a larger single reply is not kept).
    pub fn new(max_entries: usize, max_age: Duration, max_bytes: usize) -> ReplyCache<W> {
        ReplyCache {
            map: IdMap::default(),
            order: VecDeque::new(),
            max_entries,
            max_age,
            bytes: 0,
            max_bytes,
        }
    }

    /// Looks `id` up for a request from `waiter` arriving at `now`.
    pub fn begin(&mut self, id: RequestId, waiter: W, now: Instant) -> Lookup<W> {
        self.evict(now, None);
        match self.map.entry(id) {
            hash_map::Entry::Occupied(mut e) => match e.get_mut() {
                Entry::Running { more, .. } => {
                    more.push(waiter);
                    Lookup::Joined
                }
                Entry::Done { reply, .. } => Lookup::Cached(reply.clone(), waiter),
                Entry::Acked { .. } => Lookup::Acked,
            },
            hash_map::Entry::Vacant(e) => {
                e.insert(Entry::Running {
                    first: waiter,
                    more: Vec::new(),
                });
                Lookup::Run
            }
        }
    }

    /// Records the reply of `id`; returns the callers waiting for it, and the reply to
    /// send them: the kept one, or the reply given back when it is not kept.
    pub fn finish(
        &mut self,
        id: RequestId,
        reply: Outgoing,
        now: Instant,
    ) -> (Waiters<W>, Result<&Outgoing, Outgoing>) {
        let size = reply.byte_len();
        if self.max_entries == 0 || size > self.max_bytes {
            self.evict(now, None);
            let old = self.map.remove(&id);
            return (waiters_of(old, &mut self.bytes), Err(reply));
        }
        // Room first, so that the entry made now stays until the next look.
        self.evict(now, Some(size));
        self.bytes += size;
        self.order.push_back((id, now));
        let done = Entry::Done { reply, at: now };
        // The entry is replaced in place (one lookup).
        let (old, slot) = match self.map.entry(id) {
            hash_map::Entry::Occupied(e) => {
                let slot = e.into_mut();
                (Some(std::mem::replace(slot, done)), slot)
            }
            hash_map::Entry::Vacant(e) => (None, e.insert(done)),
        };
        let Entry::Done { reply, .. } = slot else {
            unreachable!("just stored")
        };
        (waiters_of(old, &mut self.bytes), Ok(reply))
    }

    /// The client of `id` has its reply: the reply is let go of (its bytes leave the
    /// count at once), the id stays until evicted as usual. Unknown or running ids are
    /// left alone.
    pub fn ack(&mut self, id: RequestId) {
        if let Some(e) = self.map.get_mut(&id) {
            if let Entry::Done { reply, at } = e {
                self.bytes -= reply.byte_len();
                *e = Entry::Acked { at: *at };
            }
        }
    }

    /// Forgets a running id that will not run after all (refused for overload);
    /// returns its waiters.
    pub fn abandon(&mut self, id: RequestId) -> Waiters<W> {
        match self.map.remove(&id) {
            Some(Entry::Running { first, more }) => Waiters {
                first: Some(first),
                more,
            },
            Some(done) => {
                self.map.insert(id, done);
                Waiters::none()
            }
            None => Waiters::none(),
        }
    }

    /// Drops the oldest replies while over a bound (leaving room for one more reply
    /// of that many bytes, when `room` says so) or too old.
    fn evict(&mut self, now: Instant, room: Option<usize>) {
        let (slot, incoming) = room.map_or((0, 0), |n| (1, n));
        while let Some(&(id, at)) = self.order.front() {
            let over = self.order.len() + slot > self.max_entries
                || self.bytes + incoming > self.max_bytes;
            if !over && now.duration_since(at) < self.max_age {
                break;
            }
            self.order.pop_front();
            // One lookup: taken out, and put back in the rare case that it is not the
            // entry this order slot was for (the id ran again since).
            match self.map.remove(&id) {
                Some(Entry::Done { reply, at: a }) if a == at => self.bytes -= reply.byte_len(),
                Some(Entry::Acked { at: a }) if a == at => {}
                Some(other) => {
                    self.map.insert(id, other);
                }
                None => {}
            }
        }
    }

    /// Bytes of finished replies held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Finished replies held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Panics unless the byte count, the bounds and the eviction order agree with
    /// the entries.
    #[cfg(test)]
    fn check(&self) {
        let mut bytes = 0;
        let mut finished = 0;
        for (id, e) in &self.map {
            let at = match e {
                Entry::Running { .. } => continue,
                Entry::Done { reply, at } => {
                    bytes += reply.byte_len();
                    at
                }
                Entry::Acked { at } => at,
            };
            finished += 1;
            assert!(
                self.order.contains(&(*id, *at)),
                "a finished entry without its place in the eviction order"
            );
        }
        assert_eq!(bytes, self.bytes, "byte count");
        assert!(bytes <= self.max_bytes, "{bytes} bytes held");
        assert!(finished <= self.max_entries, "{finished} entries held");
    }
}

/// The callers of an entry being replaced: a running one's waiters; a finished one
/// (finished twice cannot happen, an id runs once) has none, and its bytes leave the
/// count.
fn waiters_of<W>(old: Option<Entry<W>>, bytes: &mut usize) -> Waiters<W> {
    match old {
        Some(Entry::Running { first, more }) => Waiters {
            first: Some(first),
            more,
        },
        Some(Entry::Done { reply, .. }) => {
            *bytes -= reply.byte_len();
            Waiters::none()
        }
        Some(Entry::Acked { .. }) | None => Waiters::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn all<W>(w: Waiters<W>) -> Vec<W> {
        w.into_iter().collect()
    }

    fn out(frames: Vec<Bytes>) -> Outgoing {
        Outgoing { frames, joined: 1 }
    }

    fn env(n: u8) -> Vec<Bytes> {
        vec![Bytes::from(vec![n]), Bytes::new()]
    }

    #[test]
    fn runs_once_and_answers_repeats_from_cache() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, Duration::from_secs(60), 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
        assert_eq!(c.begin(id, env(2), t0), Lookup::Joined);
        let reply = out(vec![Bytes::from_static(b"h"), Bytes::from_static(b"b")]);
        let (waiters, sent) = c.finish(id, reply.clone(), t0);
        assert_eq!(sent, Ok(&reply), "the kept reply is the one to send");
        assert_eq!(all(waiters), vec![env(1), env(2)]);
        assert_eq!(c.begin(id, env(3), t0), Lookup::Cached(reply, env(3)));
    }

    #[test]
    fn bounded_in_entries_and_age() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(3, Duration::from_secs(10), 1 << 20);
        let ids: Vec<RequestId> = (0..5).map(|_| RequestId::new()).collect();
        for id in &ids {
            assert_eq!(c.begin(*id, env(0), t0), Lookup::Run);
            assert!(c.finish(*id, out(vec![]), t0).1.is_ok(), "kept");
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.begin(ids[0], env(0), t0), Lookup::Run, "oldest evicted");
        assert!(matches!(c.begin(ids[4], env(0), t0), Lookup::Cached(..)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.begin(ids[4], env(0), later), Lookup::Run, "expired");
    }

    #[test]
    fn bounded_in_bytes() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(100, Duration::from_secs(10), 1000);
        let big = |n: usize| out(vec![Bytes::from(vec![0u8; n])]);
        let ids: Vec<RequestId> = (0..4).map(|_| RequestId::new()).collect();
        for id in &ids[..3] {
            c.begin(*id, env(0), t0);
            assert!(c.finish(*id, big(400), t0).1.is_ok(), "kept");
        }
        assert_eq!(
            (c.len(), c.bytes()),
            (2, 800),
            "oldest evicted to stay under 1000 bytes"
        );
        c.begin(ids[3], env(0), t0);
        let (waiters, sent) = c.finish(ids[3], big(5000), t0);
        assert_eq!(sent, Err(big(5000)), "not kept: given back to be sent");
        assert_eq!(all(waiters), vec![env(0)]);
        assert_eq!(c.bytes(), 800, "a reply larger than the bound is not kept");
        assert_eq!(c.begin(ids[3], env(0), t0), Lookup::Run);
    }

    #[test]
    fn an_acknowledged_reply_is_let_go_of_but_its_id_never_runs_again() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(2, Duration::from_secs(10), 1 << 20);
        let id = RequestId::new();
        c.begin(id, env(1), t0);
        let reply = out(vec![Bytes::from(vec![1u8; 300])]);
        assert!(c.finish(id, reply, t0).1.is_ok());
        assert_eq!(c.bytes(), 300);
        c.ack(id);
        assert_eq!((c.len(), c.bytes()), (1, 0), "bytes freed, id kept");
        assert_eq!(
            c.begin(id, env(2), t0),
            Lookup::Acked,
            "not run, not answered"
        );
        // Acks of unknown or running ids change nothing.
        let running = RequestId::new();
        assert_eq!(c.begin(running, env(3), t0), Lookup::Run);
        c.ack(running);
        c.ack(RequestId::new());
        assert_eq!(c.begin(running, env(4), t0), Lookup::Joined);
        let (waiters, _) = c.finish(running, out(vec![]), t0);
        assert_eq!(all(waiters), vec![env(3), env(4)]);
        // Acknowledged ids are evicted like the others (bounded in entries).
        let third = RequestId::new();
        c.begin(third, env(5), t0);
        assert!(c.finish(third, out(vec![]), t0).1.is_ok());
        assert_eq!(c.len(), 2);
        assert_eq!(c.begin(id, env(6), t0), Lookup::Run, "oldest evicted");
    }

    /// What the cache may say about an id, by the operations made on it.
    #[derive(Clone, Debug, PartialEq)]
    enum Model {
        Absent,
        Running(Vec<u32>),
        Done(Outgoing),
        Acked,
    }

    #[test]
    fn random_operations_agree_with_a_model_of_the_cache() {
        // Twelve ids, small bounds, time moving by random steps: eviction happens
        // often. The model knows everything but eviction, so the cache may only differ
        // by having let go of a finished id (never of a running one).
        let mut rng = crate::socket::SplitMix64::new(0x5eed_dedc);
        let mut below = move |n: u64| rng.below(n);
        let ids: Vec<RequestId> = (0..12).map(|_| RequestId::new()).collect();
        let mut model = vec![Model::Absent; ids.len()];
        let mut c: ReplyCache<u32> = ReplyCache::new(5, Duration::from_millis(50), 2000);
        let mut now = Instant::now();
        let mut next_waiter = 0u32;
        let (mut runs, mut cached, mut evicted) = (0, 0, 0);
        for step in 0..20_000 {
            now += Duration::from_millis(below(4));
            let k = below(ids.len() as u64) as usize;
            let id = ids[k];
            match below(4) {
                0 | 1 => {
                    next_waiter += 1;
                    let got = c.begin(id, next_waiter, now);
                    model[k] = match (&model[k], got) {
                        (Model::Running(w), Lookup::Joined) => {
                            let mut w = w.clone();
                            w.push(next_waiter);
                            Model::Running(w)
                        }
                        (Model::Done(r), Lookup::Cached(got, w)) => {
                            assert_eq!((&got, w), (r, next_waiter), "step {step}");
                            cached += 1;
                            Model::Done(r.clone())
                        }
                        (Model::Acked, Lookup::Acked) => Model::Acked,
                        (m, Lookup::Run) => {
                            assert!(
                                !matches!(m, Model::Running(_)),
                                "step {step}: a running id ran again"
                            );
                            evicted += usize::from(*m != Model::Absent);
                            runs += 1;
                            Model::Running(vec![next_waiter])
                        }
                        (m, got) => panic!("step {step}: {m:?} answered {got:?}"),
                    };
                }
                2 => {
                    if let Model::Running(w) = &model[k] {
                        let size = below(900) as usize;
                        let reply = out(vec![Bytes::from(vec![k as u8; size])]);
                        let (waiters, kept) = c.finish(id, reply.clone(), now);
                        assert_eq!(all(waiters), *w, "step {step}: waiters");
                        model[k] = match kept {
                            Ok(r) => {
                                assert_eq!(*r, reply);
                                Model::Done(reply)
                            }
                            Err(r) => {
                                assert_eq!(r, reply);
                                Model::Absent
                            }
                        };
                    } else if below(8) == 0 {
                        c.ack(id);
                        if matches!(model[k], Model::Done(_)) {
                            model[k] = Model::Acked;
                        }
                    }
                }
                _ => {
                    if matches!(model[k], Model::Running(_)) && below(4) == 0 {
                        let Model::Running(w) = std::mem::replace(&mut model[k], Model::Absent)
                        else {
                            unreachable!()
                        };
                        assert_eq!(all(c.abandon(id)), w, "step {step}: abandoned");
                    } else {
                        c.ack(id);
                        if matches!(model[k], Model::Done(_)) {
                            model[k] = Model::Acked;
                        }
                    }
                }
            }
            c.check();
        }
        // Every way was taken, many times.
        assert!(
            runs > 1000 && cached > 1000 && evicted > 500,
            "{runs} {cached} {evicted}"
        );
    }

    #[test]
    fn abandoned_ids_can_run_later() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(3, Duration::from_secs(10), 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
        assert_eq!(all(c.abandon(id)), vec![env(1)]);
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
    }
}
