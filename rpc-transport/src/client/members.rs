//! The pool's members: a list that only grows, read without a lock.
//!
//! Every call reads it (to pick a member, to find the one a reply came from), while
//! members are added rarely (`Client::add_endpoint`, discovery). A member keeps its
//! index for the client's life: removing one marks it removed (no new calls, then its
//! connections close) and adding its address again revives it, so that an index held
//! by an attempt in flight or by a connection's reply sink never names another server.
//!
//! Chunk `k` holds `16 << k` members and is allocated when the first of them is added;
//! a reader loads the length, then the chunk and the slot, each set once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::member::Member;
use crate::sync::lock;

/// Members of the first chunk; each next chunk holds twice as many.
const FIRST: usize = 16;
/// Chunks: room for `FIRST * (2^CHUNKS - 1)` members, over 16 million.
const CHUNKS: usize = 20;

/// The members of one client's pool.
pub(crate) struct Members {
    chunks: [OnceLock<Box<[OnceLock<Member>]>>; CHUNKS],
    /// Members readable (all set before this was raised).
    len: AtomicUsize,
    /// Held while adding.
    adding: Mutex<()>,
}

/// The chunk and the place in it of member `i`.
fn place(i: usize) -> (usize, usize) {
    let k = (i / FIRST + 1).ilog2() as usize;
    (k, i - FIRST * ((1 << k) - 1))
}

impl Members {
    /// An empty list.
    pub fn new() -> Members {
        Members {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }

    /// Members so far (removed ones included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Member `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&Member> {
        if i >= self.len() {
            return None;
        }
        let (k, at) = place(i);
        self.chunks[k].get()?.get(at)?.get()
    }

    /// Member `i`, which the caller knows exists (an index it was given).
    pub fn at(&self, i: usize) -> &Member {
        self.get(i).expect("a member's index stays valid")
    }

    /// Every member, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Member)> {
        (0..self.len()).filter_map(|i| self.get(i).map(|m| (i, m)))
    }

    /// The member with address `addr`, if any.
    pub fn find(&self, addr: &str) -> Option<usize> {
        self.iter().find(|(_, m)| m.addr == addr).map(|(i, _)| i)
    }

    /// Adds `member` unless one has its address; returns its index and whether it was
    /// added.
    pub fn add(&self, member: Member) -> (usize, bool) {
        let _adding = lock(&self.adding);
        if let Some(i) = self.find(&member.addr) {
            return (i, false);
        }
        let i = self.len();
        let (k, at) = place(i);
        let chunk = self.chunks[k].get_or_init(|| {
            (0..FIRST << k)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        if chunk[at].set(member).is_err() {
            unreachable!("a place is filled once, under the adding lock");
        }
        self.len.store(i + 1, Ordering::Release);
        (i, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_cover_every_index_once() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let (k, at) = place(i);
            assert!(at < FIRST << k, "{i}: chunk {k} place {at}");
            assert!(seen.insert((k, at)), "{i} shares a place");
        }
        assert_eq!(place(0), (0, 0));
        assert_eq!(place(15), (0, 15));
        assert_eq!(place(16), (1, 0));
        assert_eq!(place(47), (1, 31));
        assert_eq!(place(48), (2, 0));
    }

    #[test]
    fn added_members_keep_their_index_and_an_address_is_added_once() {
        let m = Members::new();
        for i in 0..100 {
            assert_eq!(m.add(Member::new(format!("tcp://h:{i}"))), (i, true));
        }
        assert_eq!(m.add(Member::new("tcp://h:7".into())), (7, false));
        assert_eq!(m.len(), 100);
        assert_eq!(m.at(42).addr, "tcp://h:42");
        assert_eq!(m.find("tcp://h:99"), Some(99));
        assert!(m.get(100).is_none());
        assert_eq!(m.iter().count(), 100);
    }
}
