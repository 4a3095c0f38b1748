//! The RPC server: a ROUTER socket, one task per request, a concurrency limit, a
//! reply cache, graceful drain.
//!
//! Requests are `[envelope...][empty][header][arguments]`; the envelope (the peer's
//! routing id, then whatever the client put before the delimiter: our client's
//! request id, a libzmq REQ_CORRELATE id, or nothing for a plain REQ) is echoed on the
//! reply `[envelope...][empty][header][body]`. So any REQ or DEALER can call it.
//!
//! # Layout
//! - `builder.rs`: [`Server`], [`ServerBuilder`]: settings, and starting.
//! - `handle.rs`: [`ServerHandle`], a running server, and its [`ServerStats`].
//! - `mod.rs`: what happens to a request: read, routed, run, answered; the drain.
//! - `reply_cache.rs`: the reply cache (bounded in entries, bytes and age).
//! - `context.rs`: [`RequestContext`], what a handler can learn about its request.
//! - `handler.rs`: a handler's future, with its context and its panics caught.

mod builder;
mod context;
mod handle;
mod handler;
mod layered;
mod reply_cache;

pub use builder::{Server, ServerBuilder};
pub use context::RequestContext;
pub use handle::{ServerHandle, ServerStats};
pub use layered::Dispatcher;

use handle::Counters;
use reply_cache::{Lookup, ReplyCache};

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{
    Dispatch, Reply, ReplyHeader, RequestHeader, RequestId, ServiceRequest, Status, MAX_ACKS,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use self::handler::Handler;
use crate::counter::bump;
use crate::message::Outgoing;
use crate::socket::core::{Answers, Inbound, PeerId};
use crate::socket::RouterSocket;
use crate::sync::lock;
use crate::zmtp::curve::PublicKey;

/// A method name's tag in the reply cache (32-bit FNV-1a): an id reused with another
/// method is refused instead of answered with the first method's reply.
fn method_tag(method: &str) -> u32 {
    method.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Requests handled per pass of a connection task before the answers given so far
/// are written: with 16 callers on one connection, answering a read batch in groups of
/// four keeps the client busy while the server works, where answering the whole batch
/// at once made them take turns (one more `writev` per four answers; figures in
/// docs/BENCHMARKS.md).
const ANSWER_BATCH: usize = 4;

/// Small answers leave in pairs on a machine with several CPUs: there the client is
/// waiting, not short of CPU. 4 KiB answers and a single CPU, where each write's cost
/// counts, keep fours (docs/ARCHITECTURE.md, "Answers leave in groups of four").
const SMALL_ANSWER_BATCH: usize = 2;
/// What "small" means for [`SMALL_ANSWER_BATCH`]: the pass's answers so far, in bytes.
const SMALL_ANSWER_BYTES: usize = 2048;

/// A request whose handler waits, counted in [`Shared::waiting_bytes`] until it ends
/// or is dropped.
struct Waiting {
    shared: Arc<Shared>,
    size: usize,
    /// Still counted (in the bytes and in the gauge of waiting handlers).
    counted: bool,
}

impl Waiting {
    fn new(shared: Arc<Shared>, size: usize) -> Waiting {
        shared.waiting_bytes.fetch_add(size, Ordering::Relaxed);
        crate::observe::server_waiting(1.0);
        Waiting {
            shared,
            size,
            counted: true,
        }
    }

    /// No longer counted (its handler is done with the arguments).
    fn end(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared
                .waiting_bytes
                .fetch_sub(self.size, Ordering::Relaxed);
            crate::observe::server_waiting(-1.0);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.end();
    }
}

/// Who waits for a reply: the connection's queue and the request's envelope.
struct Waiter {
    /// The connection (for answers given in its own task).
    peer: PeerId,
    conn: mpsc::Sender<Outgoing>,
    envelope: Vec<Bytes>,
}

/// Sends `reply` to every waiter: to those on the connection `here` runs for, queued
/// there at once (nothing copied but small frames); to others, a copy through their
/// connection's channel.
fn send_all(
    waiters: impl IntoIterator<Item = Waiter>,
    reply: &Outgoing,
    mut here: Option<(PeerId, &mut Answers<'_>)>,
) {
    for w in waiters {
        match &mut here {
            Some((peer, answers)) if w.peer == *peer => answers.send(&w.envelope, reply),
            _ => w.send(reply.clone()),
        }
    }
}

impl Waiter {
    /// Sends `envelope + frames` without blocking the caller; a full queue hands the
    /// send to a task, a closed one means the client is gone and the reply is dropped.
    fn send(self, reply: Outgoing) {
        let msg = reply.behind(self.envelope);
        match self.conn.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    let _ = conn.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("client gone; reply dropped");
            }
        }
    }
}

/// Where a method's requests go: filled from each service's method table.
/// The id a reply carries when the request's own could not be read (PROTOCOL.md §3).
const NIL_ID: RequestId = RequestId(uuid::Uuid::nil());

/// A request read and routed (see `Shared::read`): what running it needs.
struct Routed {
    header: RequestHeader,
    args: Bytes,
    waiter: Waiter,
    svc: Arc<dyn Dispatch>,
    /// The method's name within its service.
    method: Cow<'static, str>,
}

struct Route {
    svc: Arc<dyn Dispatch>,
    /// `"service.method"`.
    name: &'static str,
    /// `"method"`.
    method: &'static str,
}

struct Shared {
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    /// Every method of the method tables, by wire name as bytes (looked up before
    /// any UTF-8 check).
    routes: HashMap<&'static [u8], Route, BuildNameHasher>,
    limit: Arc<Semaphore>,
    max_concurrency: usize,
    /// Argument bytes held by requests whose handlers wait, and their bound.
    waiting_bytes: AtomicUsize,
    max_waiting_bytes: usize,
    cache: Mutex<ReplyCache<Waiter>>,
    draining: AtomicBool,
    /// Whether `_rpc.health` and `_rpc.describe` are answered.
    reserved: bool,
    /// Largest reply body sent (the message size limit): past it, the caller gets an
    /// error status instead, and the reply is not kept.
    max_reply: usize,
    /// [`ServerBuilder::clock_skew`], in milliseconds.
    clock_skew_ms: Option<u64>,
    counters: Counters,
}

/// Waits for the stop signal, then drains: new requests get SHUTTING_DOWN while the
/// running ones finish (up to `drain`), then the socket closes (lingering so that the
/// last replies leave).
async fn drain_then_close(
    router: RouterSocket,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    // Err: the handle was dropped without shutdown; keep serving until the process ends.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
    tracing::info!("server draining");
    shared.draining.store(true, Ordering::SeqCst);
    let all = u32::try_from(shared.max_concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, shared.limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing with requests still running");
    }
    drop(router);
    tracing::info!("server stopped");
}

/// `[header][body]` of a reply.
fn reply_frames(id: RequestId, reply: Reply) -> Outgoing {
    let header = ReplyHeader {
        v: PROTOCOL_VERSION,
        id,
        status: reply.status,
        message: reply.message,
    };
    // Room for an envelope of a routing id, a request id and the delimiter.
    let mut head = Vec::with_capacity(4 + reply.body.parts().len());
    head.push(header.to_frame());
    Outgoing::with_payload(head, reply.body)
}

impl Shared {
    fn refuse(&self, waiter: Waiter, id: RequestId, status: Status, why: String) {
        tracing::debug!(request_id = %id, ?status, why, "request refused");
        crate::observe::server_reply(status);
        waiter.send(reply_frames(id, Reply::status(status, why)));
    }

    /// A request over the message size limit: `frames` are those received before the
    /// limit was passed (the envelope up to `d`, its delimiter, and the header when it
    /// fitted). Answered TOO_LARGE with the request's id when the header can be read.
    fn too_large(
        &self,
        peer: PeerId,
        conn: mpsc::Sender<Outgoing>,
        mut frames: Vec<Bytes>,
        d: usize,
        size: u64,
    ) {
        bump(&self.counters.rejected);
        let id = frames
            .get(d + 1)
            .and_then(|h| RequestHeader::peek_id(h))
            .unwrap_or(NIL_ID);
        frames.truncate(d + 1);
        let max = self.max_reply;
        tracing::info!(request_id = %id, size, max, "request over the size limit refused");
        let why = format!("request of {size} bytes is over the server's limit of {max} bytes");
        let waiter = Waiter {
            peer,
            conn,
            envelope: frames,
        };
        self.refuse(waiter, id, Status::TooLarge, why);
    }

    /// Handles one request, in the connection's task. Never blocks: the handler is
    /// polled once here and only becomes a task of its own if it has to wait.
    /// Three steps: read and route it, let the reply cache answer a repeat, run it.
    fn handle(self: &Arc<Self>, inbound: Inbound, answers: &mut Answers<'_>) {
        bump(&self.counters.requests);
        if inbound.peer_gone {
            // Its client gave up on it: the answer could reach no one, and an
            // `at_most_once` caller has been told it may not have run.
            bump(&self.counters.abandoned);
            crate::observe::server_abandoned();
            tracing::debug!(
                peer = inbound.peer,
                "request not started: its client closed the connection behind it"
            );
            return;
        }
        let here = inbound.peer;
        let caller = (inbound.peer_key, inbound.peer_user.clone());
        let Some(req) = self.read(inbound) else {
            return;
        };
        let now = Instant::now();
        if self.repeated(&req.header, req.waiter, now) {
            return;
        }
        self.run(
            req.header,
            req.svc,
            req.method,
            req.args,
            caller,
            now,
            (here, answers),
        );
    }

    /// Reads a request's envelope and header and finds its service. What cannot be
    /// served is answered (BAD_REQUEST, SHUTTING_DOWN, ...) or dropped here: `None`.
    fn read(&self, inbound: Inbound) -> Option<Routed> {
        let mut frames = inbound.msg.into_frames();
        // Envelope: everything up to and including the first empty frame.
        let Some(d) = frames.iter().position(Bytes::is_empty) else {
            tracing::debug!("request without envelope delimiter dropped");
            return None;
        };
        if let Some(size) = inbound.too_large {
            self.too_large(inbound.peer, inbound.reply, frames, d, size);
            return None;
        }
        // `[header][arguments]` taken off the end: `frames` keeps the envelope.
        let after = frames.len() - (d + 1);
        let parts = if after == 2 {
            let args = frames.pop();
            frames.pop().zip(args)
        } else {
            frames.truncate(d + 1);
            None
        };
        let waiter = Waiter {
            peer: inbound.peer,
            conn: inbound.reply,
            envelope: frames,
        };
        // The method's route, found while reading the header.
        let route = std::cell::Cell::new(None);
        let known = |m: &[u8]| {
            let r = self.routes.get(m)?;
            route.set(Some(r));
            Some(r.name)
        };
        let refuse = |waiter, id, status, why| {
            bump(&self.counters.rejected);
            self.refuse(waiter, id, status, why);
            None
        };
        let (header, args) = match parts {
            Some((h, args)) => match RequestHeader::from_bytes_known(&h, known) {
                Ok(header) => (header, args),
                Err(e) => {
                    let why = format!("bad request header: {}", error_chain(&e));
                    // Answered with the request's own id when it can be read, so
                    // that its caller learns why at once.
                    let id = RequestHeader::peek_id(&h).unwrap_or(NIL_ID);
                    return refuse(waiter, id, Status::BadRequest, why);
                }
            },
            None => {
                let why = format!("expected 2 frames after the envelope, got {after}");
                return refuse(waiter, NIL_ID, Status::BadRequest, why);
            }
        };
        let id = header.id;
        if header.v != PROTOCOL_VERSION {
            let why = format!("unsupported protocol version {}", header.v);
            return refuse(waiter, id, Status::BadRequest, why);
        }
        if self.draining.load(Ordering::Relaxed) {
            bump(&self.counters.shutting_down);
            let why = "server is shutting down".to_string();
            self.refuse(waiter, id, Status::ShuttingDown, why);
            return None;
        }
        if header.timeout_ms == 0 {
            return refuse(waiter, id, Status::DeadlineExceeded, "no time left".into());
        }
        if let Some(late) = self.waited_past_deadline(&header) {
            let why = format!("the request waited {late} ms past its caller's deadline");
            return refuse(waiter, id, Status::DeadlineExceeded, why);
        }
        if route.get().is_none() && self.reserved && header.method.starts_with("_rpc.") {
            if let Some(reply) = self.reserved_reply(&header.method) {
                crate::observe::server_reply(reply.status);
                waiter.send(reply_frames(id, reply));
                return None;
            }
        }
        // A method of a table borrows its names; any other goes to its service by
        // name (a hand-written dispatcher may serve methods it does not list; the
        // generated ones answer UNKNOWN_METHOD).
        let (svc, method) = match route.get() {
            Some(r) => {
                crate::observe::server_request(r.name);
                (r.svc.clone(), Cow::Borrowed(r.method))
            }
            None => {
                let (service, method) = header
                    .method
                    .rsplit_once('.')
                    .unwrap_or(("", &header.method));
                let Some(svc) = self.services.get(service).cloned() else {
                    let why = format!("unknown service {service:?}");
                    return refuse(waiter, id, Status::UnknownMethod, why);
                };
                (svc, Cow::Owned(method.to_owned()))
            }
        };
        Some(Routed {
            header,
            args,
            waiter,
            svc,
            method,
        })
    }

    /// How long past its caller's deadline (and the stated clock skew) the request
    /// was read, when the server bounds skew and the request says when it was sent.
    fn waited_past_deadline(&self, header: &RequestHeader) -> Option<u64> {
        let (skew, sent) = (self.clock_skew_ms?, header.sent_ms?);
        let now = crate::timer::wall_clock_ms()?;
        let due = sent.saturating_add(header.timeout_ms).saturating_add(skew);
        now.checked_sub(due).filter(|&late| late > 0)
    }

    /// Lets the reply cache take the request: a repeat of a call it knows is
    /// answered from it, joined to the running execution, dropped (acknowledged
    /// already) or refused (its id reused with another method). True when it did.
    fn repeated(&self, header: &RequestHeader, waiter: Waiter, now: Instant) -> bool {
        let id = header.id;
        let lookup = {
            let mut cache = self.cache();
            // Replies this client has received: let go of them now, while their
            // memory is still warm (the cache would hold them until evicted).
            for acked in header.acks.iter().take(MAX_ACKS) {
                cache.ack(*acked);
            }
            cache.begin_tagged(id, method_tag(&header.method), waiter, now.into_std())
        };
        let deduplicated = || {
            bump(&self.counters.deduplicated);
            crate::observe::server_deduplicated();
        };
        match lookup {
            Lookup::Run => return false,
            Lookup::Joined => deduplicated(),
            Lookup::Cached(reply, waiter) => {
                deduplicated();
                waiter.send(reply);
            }
            Lookup::Acked => {
                // A stale copy of a call that has its reply: nobody waits for it.
                deduplicated();
                tracing::debug!(request_id = %id, "request of an acknowledged call dropped");
            }
            Lookup::Conflict(waiter) => {
                bump(&self.counters.rejected);
                let why = format!(
                    "request id {id} reused with another method ({})",
                    header.method
                );
                self.refuse(waiter, id, Status::BadRequest, why);
            }
        }
        true
    }

    /// Runs a request the cache has registered (its waiter is there), within the
    /// server's limits: polled once here, a task of its own if it has to wait.
    #[allow(clippy::too_many_arguments)]
    fn run(
        self: &Arc<Self>,
        header: RequestHeader,
        svc: Arc<dyn Dispatch>,
        method: Cow<'static, str>,
        args: Bytes,
        (client_key, user): (Option<PublicKey>, Option<Arc<str>>),
        now: Instant,
        (here, answers): (PeerId, &mut Answers<'_>),
    ) {
        let id = header.id;
        let size = args.len();
        if !self.may_wait(size) {
            return self.overloaded(id, "memory limit of waiting requests reached");
        }
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            return self.overloaded(id, "concurrency limit reached");
        };
        bump(&self.counters.executed);
        let deadline = now + Duration::from_millis(header.timeout_ms);
        let request = ServiceRequest { method, args };
        let span = tracing::debug_span!("rpc.request", method = %header.method, request_id = %id, attempt = header.attempt);
        #[cfg(feature = "opentelemetry")]
        crate::trace_context::continue_from(&span, &header.meta);
        let ctx = RequestContext {
            request_id: id,
            method: header.method,
            attempt: header.attempt,
            deadline,
            metadata: header.meta,
            client_key,
            user,
        };
        let mut handler = Handler::new(ctx, svc.dispatch(request));
        // Fast path: most handlers finish without waiting. One poll with a no-op
        // waker, here; if it has to wait, a task of its own polls it again at once
        // and registers its real waker, so no wake-up is lost.
        let first = {
            let _entered = span.enter();
            let mut cx = Context::from_waker(Waker::noop());
            Pin::new(&mut handler).poll(&mut cx)
        };
        if let Poll::Ready(outcome) = first {
            // Finished within this poll: the request's arrival time stands for the
            // reply's (no second clock read).
            return self.finish(id, outcome, permit, now, Some((here, answers)));
        }
        // Its arguments count against the bound of waiting requests until it ends
        // (or its task is dropped).
        let mut waiting = Waiting::new(self.clone(), size);
        tokio::spawn(
            async move {
                let outcome = match tokio::time::timeout_at(deadline, handler).await {
                    Ok(outcome) => outcome,
                    Err(_) => Ok(Reply::status(
                        Status::DeadlineExceeded,
                        "deadline passed while running",
                    )),
                };
                // Its arguments are gone with the handler: no longer counted
                // when its reply arrives.
                waiting.end();
                let now = Instant::now();
                waiting.shared.finish(id, outcome, permit, now, None);
            }
            .instrument(span),
        );
    }

    /// Whether a request of `size` argument bytes may run: always while no handler
    /// waits, else within [`ServerBuilder::max_waiting_bytes`] with theirs.
    fn may_wait(&self, size: usize) -> bool {
        let held = self.waiting_bytes.load(Ordering::Relaxed);
        held == 0 || held.saturating_add(size) <= self.max_waiting_bytes
    }

    /// Refuses request `id` with OVERLOADED, to everyone waiting for it.
    fn overloaded(&self, id: RequestId, why: &str) {
        bump(&self.counters.overloaded);
        crate::observe::server_overloaded();
        tracing::debug!(request_id = %id, why, "request refused: overloaded");
        let frames = reply_frames(id, Reply::status(Status::Overloaded, why));
        let waiters = self.cache().abandon(id);
        send_all(waiters, &frames, None);
    }

    /// Answers a handler's outcome to everyone waiting for it, and keeps it in the
    /// reply cache. `here`: the connection task running this, and its answers, which
    /// it writes without a trip through its own queue. `now`: when the reply is kept.
    fn finish(
        &self,
        id: RequestId,
        outcome: Result<Reply, String>,
        permit: OwnedSemaphorePermit,
        now: Instant,
        here: Option<(PeerId, &mut Answers<'_>)>,
    ) {
        let mut reply = outcome.unwrap_or_else(|panic| {
            bump(&self.counters.panics);
            tracing::error!(panic, "handler panicked");
            Reply::status(Status::Internal, format!("handler panicked: {panic}"))
        });
        let size = reply.body.len();
        if size > self.max_reply {
            // The caller's connection would refuse it (and lose every call on it); a
            // retry would get it again from the cache.
            tracing::warn!(request_id = %id, size, max = self.max_reply, "reply too large");
            reply = Reply::status(
                Status::Internal,
                format!(
                    "the method ran, but its reply of {size} bytes exceeds the server's \
                     message size limit of {} bytes",
                    self.max_reply
                ),
            );
        }
        crate::observe::server_reply(reply.status);
        let frames = reply_frames(id, reply);
        // Sent under the cache's lock, from the copy it keeps (no second copy to make;
        // sending queues or hands over, it never waits).
        let mut cache = self.cache();
        let (waiters, sent) = cache.finish(id, frames.into_keeping(), now.into_std());
        let reply = match &sent {
            Ok(kept) => kept,
            Err(given) => given,
        };
        send_all(waiters, reply, here);
        drop(cache);
        drop(permit);
    }

    /// The answer to a reserved method (`_rpc.*`), if `method` is one.
    fn reserved_reply(&self, method: &str) -> Option<Reply> {
        #[derive(serde::Serialize)]
        struct ArgDesc {
            name: &'static str,
            #[serde(rename = "type")]
            ty: &'static str,
        }
        #[derive(serde::Serialize)]
        struct MethodDesc {
            name: &'static str,
            retry: &'static str,
            args: Vec<ArgDesc>,
            returns: &'static str,
        }
        #[derive(serde::Serialize)]
        struct ServiceDesc {
            name: &'static str,
            methods: Vec<MethodDesc>,
        }
        match method {
            "_rpc.health" => Some(Reply::ok(&"SERVING")),
            "_rpc.describe" => {
                let mut services: Vec<ServiceDesc> = self
                    .services
                    .values()
                    .map(|s| ServiceDesc {
                        name: s.service_name(),
                        methods: s
                            .methods()
                            .iter()
                            .map(|m| MethodDesc {
                                name: m.name,
                                retry: match m.retry {
                                    rpc_core::RetryPolicy::Retry => "retry",
                                    rpc_core::RetryPolicy::AtMostOnce => "at_most_once",
                                },
                                args: m
                                    .args
                                    .iter()
                                    .map(|&(name, ty)| ArgDesc { name, ty })
                                    .collect(),
                                returns: m.returns,
                            })
                            .collect(),
                    })
                    .collect();
                services.sort_by_key(|s| s.name);
                Some(Reply::ok(&services))
            }
            _ => None,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReplyCache<Waiter>> {
        lock(&self.cache)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Hashes method names for the route table: 8 bytes per multiply, no key. The table
/// holds only the server's own names, fixed at start, so a peer's names cannot make its
/// chains longer; SipHash cost ~200 instructions a request here.
#[derive(Clone, Copy, Default)]
struct BuildNameHasher;

impl std::hash::BuildHasher for BuildNameHasher {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(0)
    }
}

struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(26);
        }
    }
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top: mix the low ones up.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn method_names_spread_over_the_route_table() {
        // hashbrown indexes buckets with the low bits and tags them with the top 7.
        let names: Vec<String> = (0..256)
            .map(|i| format!("service{}.method_{i}", i % 7))
            .collect();
        let hashes: Vec<u64> = names
            .iter()
            .map(|n| BuildNameHasher.hash_one(n.as_bytes()))
            .collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 140, "{} of 256 low bytes", low.len());
        assert!(top.len() > 90, "{} of 128 tags", top.len());
        // Names that differ only past the first 8 bytes, or only in length, differ.
        assert_ne!(
            BuildNameHasher.hash_one(b"calc.add".as_slice()),
            BuildNameHasher.hash_one(b"calc.add2".as_slice())
        );
    }
}
