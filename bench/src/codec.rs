//! `zmtp-bench codec`: the hand-written header codec (`rpc-core/src/header_codec.rs`)
//! against rmp-serde on the same headers, in the same run. It prints nanoseconds per
//! header for each side and their ratio; the typed call's own cost (a pinned round
//! trip) is measured by `latency`, so the saving can be set against it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rpc_core::codec;
use rpc_core::{ReplyHeader, RequestHeader, RequestId, Status};

/// Runs `f` for about `for_time` after a short warm-up; returns nanoseconds per run,
/// the median of five slices so that a burst of noise moves one slice only.
fn ns_per_op(for_time: Duration, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < for_time / 10 {
        f();
    }
    let mut slices = Vec::with_capacity(5);
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < for_time / 5 {
            for _ in 0..256 {
                f();
            }
            n += 256;
        }
        slices.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    slices.sort_by(f64::total_cmp);
    slices[2]
}

/// Times `hand` and `serde` for `t` each and prints one row with their ratio.
fn row(name: &str, t: Duration, hand: impl FnMut(), serde: impl FnMut()) {
    let (hand, serde) = (ns_per_op(t, hand), ns_per_op(t, serde));
    println!(
        "{name:<28} {hand:>9.1} ns {serde:>9.1} ns {:>8.2}x",
        serde / hand
    );
}

/// The headers a typed call sends and receives: a short method, no metadata, a few
/// acknowledgements (as a busy client's requests carry) or none, the send time.
fn request(acks: usize) -> RequestHeader {
    RequestHeader {
        v: 1,
        id: RequestId::new(),
        method: Cow::Borrowed("Echo.echo"),
        timeout_ms: 5_000,
        attempt: 1,
        meta: BTreeMap::new(),
        acks: (0..acks).map(|_| RequestId::new()).collect(),
        // As the client sends it: the wall clock of the attempt.
        sent_ms: Some(1_764_900_000_000),
    }
}

/// Prints the table. BENCH_SECS (default 1) is the time each cell runs.
pub fn run() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let t = Duration::from_secs_f64(secs);
    println!("header codec: hand-written vs rmp-serde, same headers, same run");
    println!(
        "{:<28} {:>12} {:>12} {:>9}",
        "", "hand", "rmp-serde", "serde/hand"
    );
    for acks in [0, 4] {
        let h = request(acks);
        let bytes = h.to_bytes();
        assert_eq!(bytes, codec::encode(&h).expect("encode"), "same bytes");
        row(
            &format!("request encode, {acks} acks"),
            t,
            || drop(black_box(black_box(&h).to_bytes())),
            || drop(black_box(codec::encode(black_box(&h)))),
        );
        row(
            &format!("request decode, {acks} acks"),
            t,
            || drop(black_box(RequestHeader::from_bytes(black_box(&bytes)))),
            || drop(black_box(codec::decode::<RequestHeader>(black_box(&bytes)))),
        );
    }
    let reply = ReplyHeader {
        v: 1,
        id: RequestId::new(),
        status: Status::Ok,
        message: String::new(),
    };
    let bytes = reply.to_bytes();
    assert_eq!(bytes, codec::encode(&reply).expect("encode"), "same bytes");
    assert_eq!(ReplyHeader::from_bytes(&bytes).expect("decode"), reply);
    row(
        "reply encode",
        t,
        || drop(black_box(black_box(&reply).to_bytes())),
        || drop(black_box(codec::encode(black_box(&reply)))),
    );
    row(
        "reply decode",
        t,
        || drop(black_box(ReplyHeader::from_bytes(black_box(&bytes)))),
        || drop(black_box(codec::decode::<ReplyHeader>(black_box(&bytes)))),
    );
}
