//! [`IdMap`]: a hash map keyed by [`RequestId`], with a hasher made for them.
//!
//! Ids are 16 random bytes, but a peer chooses the ids it sends, so the hash must not
//! be predictable: the two 64-bit halves are mixed with two keys drawn at random per
//! map builder (from the standard library's seeded `RandomState`) by one folded
//! 64x64->128-bit multiply. That is a few instructions where SipHash-1-3 takes a
//! hundred or so; a peer that does not know the keys cannot aim ids at one bucket.
//! Maps keyed by ids are also bounded where a peer fills them (the reply cache).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::envelope::RequestId;

/// A `HashMap` keyed by request ids, with [`IdHashBuilder`].
pub type IdMap<V> = HashMap<RequestId, V, IdHashBuilder>;

/// Builds [`IdHasher`]s with keys drawn at random when the builder is made.
#[derive(Clone, Debug)]
pub struct IdHashBuilder {
    k0: u64,
    k1: u64,
}

impl Default for IdHashBuilder {
    fn default() -> Self {
        let seed = RandomState::new();
        IdHashBuilder {
            // Odd multipliers keep every bit of the input in play.
            k0: seed.hash_one(0u8) | 1,
            k1: seed.hash_one(1u8) | 1,
        }
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            k0: self.k0,
            k1: self.k1,
            h: 0,
        }
    }
}

/// The hasher of [`IdMap`]: one folded multiply per 16 bytes.
#[derive(Debug)]
pub struct IdHasher {
    k0: u64,
    k1: u64,
    h: u64,
}

/// An odd constant with well-spread bits (2^64 / golden ratio).
const FINAL: u64 = 0x9e37_79b9_7f4a_7c15;

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl IdHasher {
    fn mix(&mut self, lo: u64, hi: u64) {
        self.h = fold(lo ^ self.k0 ^ self.h.rotate_left(23), hi ^ self.k1);
    }
}

impl Hasher for IdHasher {
    fn write_u128(&mut self, v: u128) {
        self.mix(v as u64, (v >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Anything else hashed with it (not used for ids): 16 bytes at a time.
        for chunk in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            let v = u128::from_le_bytes(b) ^ (chunk.len() as u128) << 120;
            self.write_u128(v);
        }
    }

    fn finish(&self) -> u64 {
        // A last fold spreads every input bit over the whole word: without it, ids that
        // differ only in their top bits hashed to clustered buckets under some keys.
        fold(self.h, FINAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> RequestId {
        RequestId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_map_of_ids_works_and_spreads_them() {
        let mut m: IdMap<u32> = IdMap::default();
        // Ids that differ in one byte, or only in their high half, or low half.
        let ids: Vec<RequestId> = (0..3000u128)
            .map(|i| match i % 3 {
                0 => id(i),
                1 => id(i << 64),
                _ => id(i << 112 | 5),
            })
            .collect();
        for (i, k) in ids.iter().enumerate() {
            assert!(m.insert(*k, i as u32).is_none());
        }
        for (i, k) in ids.iter().enumerate() {
            assert_eq!(m[k], i as u32);
        }
        // The low bits (bucket index) and the top seven (hashbrown's tag) of the
        // hashes take many values: no clustering on structured ids.
        let b = m.hasher().clone();
        let low: std::collections::HashSet<u64> =
            ids.iter().map(|k| b.hash_one(k) & 0xfff).collect();
        let top: std::collections::HashSet<u64> = ids.iter().map(|k| b.hash_one(k) >> 57).collect();
        assert!(low.len() > 2000, "{} of 4096 low values", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn keys_differ_between_builders() {
        let (a, b) = (IdHashBuilder::default(), IdHashBuilder::default());
        let k = id(42);
        assert_ne!(a.hash_one(k), b.hash_one(k));
        assert_eq!(a.hash_one(k), a.clone().hash_one(k));
    }
}
