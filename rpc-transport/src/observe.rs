//! Metrics, through the `metrics` facade (cargo feature `metrics`, on by default in
//! `zmtp-rpc`): the library records, an exporter the application installs (Prometheus,
//! StatsD, ...) publishes. Without the feature every function here is empty.
//!
//! Names follow Prometheus conventions:
//! - `zmtp_rpc_client_calls_total{service, method, outcome}`: typed calls, by how they
//!   ended (`ok`, or the error's kind: `deadline_exceeded`, `unavailable`, ...);
//! - `zmtp_rpc_client_attempt_duration_seconds`: round trips of attempts that got a
//!   reply (recorded where the client reads the clock anyway: balancing pools);
//! - `zmtp_rpc_client_call_duration_seconds{service, method}`: typed calls, from the
//!   call's start to its end (ok or not), one call in eight (`DURATION_SAMPLING`);
//! - `zmtp_rpc_client_attempts_total{endpoint}`, `..._retries_total`, `..._failovers_total`,
//!   `..._hedges_total`;
//! - `zmtp_rpc_server_requests_total{method}`: requests for a known method;
//! - `zmtp_rpc_server_replies_total{status}`: replies by status (`ok`, ...);
//! - `zmtp_rpc_server_deduplicated_total` (reply cache hits and joins),
//!   `zmtp_rpc_server_overloaded_total`, `zmtp_rpc_server_abandoned_total` (requests not
//!   started: their client closed the connection behind them);
//! - `zmtp_rpc_server_handlers_waiting`: handlers in flight that had to wait (a gauge;
//!   those that finish at once never count).

use std::time::Duration;

use rpc_core::{MethodInfo, RpcError, Status};

/// The outcome label of a call's result.
pub(crate) fn outcome(r: &Result<(), &RpcError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => match e {
            RpcError::DeadlineExceeded => "deadline_exceeded",
            RpcError::Unavailable { .. } => "unavailable",
            RpcError::Indeterminate(_) => "indeterminate",
            RpcError::Overloaded(_) => "overloaded",
            RpcError::ShuttingDown(_) => "shutting_down",
            RpcError::UnknownMethod(_) => "unknown_method",
            RpcError::BadRequest(_) => "bad_request",
            RpcError::Internal(_) => "internal",
            RpcError::MessageTooLarge { .. } | RpcError::TooLarge(_) => "too_large",
            RpcError::Decode(_) | RpcError::Encode(_) | RpcError::Protocol(_) => "protocol",
            _ => "other",
        },
    }
}

/// One typed call in this many has its duration recorded: two clock reads and a
/// histogram record on every call cost a measurable part of a call's CPU with sixteen
/// callers (docs/BENCHMARKS.md, "Metrics"); sampled, about a tenth of that. The histogram's
/// quantiles hold; its `_count` is a sample (`calls_total` counts every call).
#[cfg(feature = "metrics")]
pub(crate) const DURATION_SAMPLING: u32 = 8;

/// When a sampled typed call starts, for [`client_call`] (`None`: not sampled).
#[derive(Clone, Copy)]
pub(crate) struct Started(#[cfg(feature = "metrics")] Option<std::time::Instant>);

/// A typed call starts now.
pub(crate) fn call_started() -> Started {
    #[cfg(feature = "metrics")]
    {
        // Drawn at random, not every eighth call: calls that alternate between
        // methods would sample some methods never.
        thread_local! {
            static DRAW: std::cell::Cell<u32> = const { std::cell::Cell::new(0x9E37_79B9) };
        }
        let r = DRAW.with(|d| {
            // xorshift32: a draw, not a secret.
            let mut x = d.get();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.set(x);
            x
        });
        Started(
            r.is_multiple_of(DURATION_SAMPLING)
                .then(std::time::Instant::now),
        )
    }
    #[cfg(not(feature = "metrics"))]
    Started()
}

/// A typed call that started at `started` ended with `outcome` (its reply decoded or
/// not).
#[allow(unused_variables)]
pub(crate) fn client_call(method: &'static MethodInfo, outcome: &'static str, started: Started) {
    #[cfg(feature = "metrics")]
    if let Some(t) = started.0 {
        keys::histogram((method.name, "(duration)"), || {
            metrics::Key::from_parts(
                "zmtp_rpc_client_call_duration_seconds",
                vec![
                    metrics::Label::new("service", method.service()),
                    metrics::Label::new("method", method.method()),
                ],
            )
        })
        .record(t.elapsed().as_secs_f64());
    }
    #[cfg(feature = "metrics")]
    keys::counter((method.name, outcome), || {
        metrics::Key::from_parts(
            "zmtp_rpc_client_calls_total",
            vec![
                metrics::Label::new("service", method.service()),
                metrics::Label::new("method", method.method()),
                metrics::Label::new("outcome", outcome),
            ],
        )
    })
    .increment(1);
}

/// An attempt ended with a reply after `rtt` (its round trip).
#[allow(unused_variables)]
pub(crate) fn client_round_trip(rtt: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("zmtp_rpc_client_attempt_duration_seconds").record(rtt.as_secs_f64());
}

/// An attempt was resent to another endpoint than the one that failed it.
pub(crate) fn client_failover() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_client_failovers_total").increment(1);
}

/// The keys of one endpoint's series, built when it joins the pool.
#[derive(Debug)]
pub(crate) struct EndpointKeys {
    #[cfg(feature = "metrics")]
    attempts: metrics::Key,
}

impl EndpointKeys {
    #[allow(unused_variables)]
    pub fn new(endpoint: &str) -> EndpointKeys {
        EndpointKeys {
            #[cfg(feature = "metrics")]
            attempts: metrics::Key::from_parts(
                "zmtp_rpc_client_attempts_total",
                vec![metrics::Label::new("endpoint", endpoint.to_string())],
            ),
        }
    }
}

/// An attempt was sent to the endpoint of `keys`: the first (`resend` false), a
/// resend, or a hedge.
#[allow(unused_variables)]
pub(crate) fn client_attempt(keys: &EndpointKeys, resend: bool, hedge: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::with_recorder(|r| r.register_counter(&keys.attempts, &keys::METADATA))
            .increment(1);
        if hedge {
            metrics::counter!("zmtp_rpc_client_hedges_total").increment(1);
        } else if resend {
            metrics::counter!("zmtp_rpc_client_retries_total").increment(1);
        }
    }
}

/// A request for a known method arrived.
#[allow(unused_variables)]
pub(crate) fn server_request(method: &'static str) {
    #[cfg(feature = "metrics")]
    keys::counter((method, ""), || {
        metrics::Key::from_parts(
            "zmtp_rpc_server_requests_total",
            vec![metrics::Label::new("method", method)],
        )
    })
    .increment(1);
}

/// A reply with `status` was sent.
#[allow(unused_variables)]
pub(crate) fn server_reply(status: Status) {
    #[cfg(feature = "metrics")]
    {
        // One literal label per status: each arm's key is a static, built at
        // compile time (a label computed at run time costs an allocation and a hash
        // per reply, even with no recorder installed).
        macro_rules! by_status {
            ($($s:ident => $label:literal),* $(,)?) => {
                match status {
                    $(Status::$s => {
                        metrics::counter!("zmtp_rpc_server_replies_total", "status" => $label)
                    })*
                }
            };
        }
        by_status!(
            Ok => "ok",
            AppError => "app_error",
            UnknownMethod => "unknown_method",
            BadRequest => "bad_request",
            DeadlineExceeded => "deadline_exceeded",
            Overloaded => "overloaded",
            ShuttingDown => "shutting_down",
            Internal => "internal",
            TooLarge => "too_large",
        )
        .increment(1);
    }
}

/// A request was answered from the reply cache or joined to its running execution.
pub(crate) fn server_deduplicated() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_deduplicated_total").increment(1);
}

/// A handler that waits became a task of its own (`+1`), or such a task ended (`-1`).
#[allow(unused_variables)]
pub(crate) fn server_waiting(delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("zmtp_rpc_server_handlers_waiting").increment(delta);
}

/// A request was not started: its client had closed the connection behind it.
pub(crate) fn server_abandoned() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_abandoned_total").increment(1);
}

/// A request was refused OVERLOADED.
pub(crate) fn server_overloaded() {
    #[cfg(feature = "metrics")]
    metrics::counter!("zmtp_rpc_server_overloaded_total").increment(1);
}

/// Keys with labels known only at run time (method names), built once per thread.
///
/// The `metrics` macros build such a key at every use: a vector of labels and a hash,
/// even when no recorder is installed. A typed call and a request each record one, so
/// that cost showed in `zmtp-bench latency` (docs/BENCHMARKS.md, "Metrics"). Keys, not the
/// handles a recorder returns, are kept: a recorder installed after the first call
/// still sees every later one.
#[cfg(feature = "metrics")]
mod keys {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use metrics::{Counter, Histogram, Key, Level, Metadata, Recorder};

    /// Past this many keys a thread's cache starts over: method names are few, and
    /// this bounds a program that makes new ones up without end.
    const MAX_KEYS: usize = 4096;

    pub(super) static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// Two static strings, by address and length (the same text at two addresses
    /// only takes two entries).
    type Id = (usize, usize, usize, usize);

    fn id((a, b): (&'static str, &'static str)) -> Id {
        (a.as_ptr() as usize, a.len(), b.as_ptr() as usize, b.len())
    }

    /// A multiply-rotate hash: the keys are addresses, not chosen by a peer.
    #[derive(Default)]
    struct AddrHasher(u64);

    impl Hasher for AddrHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.write_u64(u64::from(*b));
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }
    }

    thread_local! {
        static KEYS: RefCell<HashMap<Id, Key, BuildHasherDefault<AddrHasher>>> =
            RefCell::new(HashMap::default());
    }

    /// The counter of the key that `make` builds for `names`, from the recorder
    /// installed now.
    pub(super) fn counter(
        names: (&'static str, &'static str),
        make: impl FnOnce() -> Key,
    ) -> Counter {
        with_key(names, make, |r, key| r.register_counter(key, &METADATA))
    }

    /// The histogram of the key that `make` builds for `names`.
    pub(super) fn histogram(
        names: (&'static str, &'static str),
        make: impl FnOnce() -> Key,
    ) -> Histogram {
        with_key(names, make, |r, key| r.register_histogram(key, &METADATA))
    }

    fn with_key<T>(
        names: (&'static str, &'static str),
        make: impl FnOnce() -> Key,
        register: impl FnOnce(&dyn Recorder, &Key) -> T,
    ) -> T {
        KEYS.with(|keys| {
            let mut keys = keys.borrow_mut();
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
            let key = keys.entry(id(names)).or_insert_with(make);
            metrics::with_recorder(|r| register(r, key))
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn one_call_in_eight_is_timed() {
            let timed = (0..80_000)
                .filter(|_| super::super::call_started().0.is_some())
                .count();
            assert!((9_000..11_000).contains(&timed), "{timed}");
        }

        #[test]
        fn a_key_is_built_once_per_pair_of_names() {
            let mut built = 0;
            for _ in 0..3 {
                for outcome in ["ok", "internal"] {
                    counter(("svc.m", outcome), || {
                        built += 1;
                        Key::from_name("k")
                    })
                    .increment(1);
                }
            }
            assert_eq!(built, 2);
            assert_eq!(KEYS.with(|k| k.borrow().len()), 2);
        }

        #[test]
        fn the_cache_is_bounded() {
            let names: Vec<&'static str> = (0..MAX_KEYS + 10)
                .map(|i| &*Box::leak(format!("m{i}").into_boxed_str()))
                .collect();
            for n in &names {
                counter((n, ""), || Key::from_name("k")).increment(1);
            }
            assert!(KEYS.with(|k| k.borrow().len()) <= MAX_KEYS);
        }
    }
}
