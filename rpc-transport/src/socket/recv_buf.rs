//! The receive buffers of one connection.
//!
//! Ordinary traffic is read into a small buffer that adapts to the traffic. The body of
//! a large frame goes to a buffer of its own instead, sized for it at once: the frame
//! is not copied while it grows, and once the program has dropped the previous large
//! frame the same memory is used again (no fresh pages to fault in for every message).
//! Large buffers whose frame was still held when the next came are kept a while (up to
//! 32 MiB a connection, 64 MiB a process) and used again once dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;

/// Smallest read reservation (what an idle connection holds).
const READ_MIN: usize = 8 * 1024;
/// Largest read reservation: reads that fill the buffer double it up to this.
const READ_MAX: usize = 256 * 1024;
/// A frame body still missing at least this many bytes is read into the large buffer.
/// Higher, 64 KiB frames go through `small`: reads into fresh memory, with the start
/// of a frame that did not fit copied to the next buffer; lower, 32 KiB frames lose
/// (figures in docs/BENCHMARKS.md).
const LARGE_FRAME: usize = 32 * 1024;
/// The large buffer is released when no large frame came for this long.
const LARGE_KEEP: Duration = Duration::from_secs(1);
/// Large buffers still held by their frame when the next large frame came are kept
/// (newest first, at most this many bytes per connection) to be reused once the
/// program drops that frame; released with the large buffer. 16 callers of 1 MiB
/// echoes keep about 20 buffers alive (a server's answer holds its request until the
/// client acknowledges it); without spares each would come from fresh, cold memory.
const SPARE_BYTES: usize = 32 << 20;
/// And at most this many bytes of spares in the whole process, whatever the number of
/// connections.
const SPARE_TOTAL_MAX: usize = 64 << 20;
/// Bytes of spares held by all connections.
static SPARE_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The spare large buffers of one connection, counted against the process's budget.
#[derive(Debug)]
struct Spares {
    /// Buffers with the sizes they were allocated with, newest first.
    list: Vec<(BytesMut, usize)>,
    bytes: usize,
    /// The process's count ([`SPARE_TOTAL`]; a test's own in tests).
    budget: &'static AtomicUsize,
}

impl Default for Spares {
    fn default() -> Spares {
        Spares {
            list: Vec::new(),
            bytes: 0,
            budget: &SPARE_TOTAL,
        }
    }
}

impl Spares {
    /// A spare whose frames are all gone, with room for `body` bytes.
    fn take(&mut self, body: usize) -> Option<(BytesMut, usize)> {
        let i = (0..self.list.len()).find(|&i| self.list[i].0.try_reclaim(body))?;
        let (buf, size) = self.list.remove(i);
        self.forget(size);
        Some((buf, size))
    }

    /// Keeps `buf` (allocated with `size` bytes), dropping the oldest spares to stay
    /// within this connection's bound; not kept when the process's budget is spent.
    fn keep(&mut self, buf: BytesMut, size: usize) {
        if size > SPARE_BYTES {
            return;
        }
        while self.bytes + size > SPARE_BYTES {
            let Some((_, old)) = self.list.pop() else {
                break;
            };
            self.forget(old);
        }
        if self.budget.fetch_add(size, Ordering::Relaxed) + size > SPARE_TOTAL_MAX {
            self.budget.fetch_sub(size, Ordering::Relaxed);
            return;
        }
        self.bytes += size;
        self.list.insert(0, (buf, size));
    }

    fn forget(&mut self, size: usize) {
        self.bytes -= size;
        self.budget.fetch_sub(size, Ordering::Relaxed);
    }

    fn clear(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.list = Vec::new();
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.clear();
    }
}

#[derive(Debug)]
pub(crate) struct RecvBuf {
    small: BytesMut,
    large: BytesMut,
    /// Bytes `large` was allocated with.
    large_size: usize,
    /// Earlier large buffers (see SPARE_BYTES).
    spares: Spares,
    /// Large buffers allocated.
    #[cfg(test)]
    fresh: usize,
    /// Reading into `large`: the bytes of the large body it must hold before the
    /// decoder can take it.
    large_body: Option<usize>,
    /// `large` holds the whole large body (the decoder takes it next).
    large_complete: bool,
    large_used: Option<Instant>,
    /// Current small reservation, between READ_MIN and READ_MAX.
    chunk: usize,
}

impl RecvBuf {
    pub fn new() -> RecvBuf {
        RecvBuf {
            small: BytesMut::new(),
            large: BytesMut::new(),
            large_size: 0,
            spares: Spares::default(),
            #[cfg(test)]
            fresh: 0,
            large_body: None,
            large_complete: false,
            large_used: None,
            chunk: READ_MIN,
        }
    }

    /// The buffer being read into, holding what the decoder has not consumed yet.
    pub fn current(&mut self) -> &mut BytesMut {
        if self.large_body.is_some() {
            &mut self.large
        } else {
            &mut self.small
        }
    }

    /// Prepares the next read, given how many more bytes the decoder needs from
    /// [`RecvBuf::current`]. Returns how much to reserve for the read. `now` is only
    /// asked for while a large buffer is held.
    pub fn plan(&mut self, need: usize, now: impl Fn() -> Instant) -> usize {
        if self.large_body.is_some() {
            return need;
        }
        if need >= LARGE_FRAME {
            // Only a frame body is that large (the size was checked against the
            // message limit when its header was decoded); `small` holds its start.
            let body = self.small.len() + need;
            self.take_large(body);
            self.large.extend_from_slice(&self.small);
            self.small.clear();
            // Large frames come in runs: the next one's start should be read into
            // a small reservation, not a grown one (what `small` read of a large body
            // is copied here: up to READ_MAX a frame otherwise).
            self.chunk = READ_MIN;
            self.large_body = Some(body);
            self.large_used = Some(now());
            return need;
        }
        if self
            .large_used
            .is_some_and(|t| now().saturating_duration_since(t) >= LARGE_KEEP)
        {
            self.large = BytesMut::new();
            self.large_size = 0;
            self.spares.clear();
            self.large_used = None;
        }
        // Light traffic reads into the rest of the current buffer while it has room
        // for half a reservation: a fresh buffer per read (the last one is still held
        // by the frames cut from it) cost an allocation and cold memory each time.
        // Heavy traffic (a grown reservation) keeps reading whole reservations.
        let room = self.small.capacity() - self.small.len();
        if self.chunk == READ_MIN && room >= need.max(READ_MIN / 2) {
            return need;
        }
        need.max(self.chunk)
    }

    /// Makes `large` an empty buffer with room for `body` bytes: the memory of the
    /// previous large frame if the program has dropped it, else that of an earlier
    /// one (16 callers of one client: the last reply is often still held when the
    /// next arrives), else a fresh allocation. Fresh memory costs a page fault per
    /// 4 KiB page on first touch (100+ per MiB received, measured), reused memory none.
    fn take_large(&mut self, body: usize) {
        if self.large.try_reclaim(body) {
            return;
        }
        let (fresh, size) = match self.spares.take(body) {
            Some(spare) => spare,
            None => {
                #[cfg(test)]
                {
                    self.fresh += 1;
                }
                (BytesMut::with_capacity(body), body)
            }
        };
        let old = std::mem::replace(&mut self.large, fresh);
        let old_size = std::mem::replace(&mut self.large_size, size);
        if old_size > 0 {
            self.spares.keep(old, old_size);
        }
    }

    /// After a read of `n` bytes into `room`, before decoding: adapts the small
    /// reservation, or notes whether the large body is complete.
    pub fn on_read(&mut self, n: usize, room: usize) {
        if let Some(body) = self.large_body {
            self.large_complete = self.large.len() >= body;
            return;
        }
        if n >= room {
            self.chunk = (self.chunk * 2).min(READ_MAX);
        } else if n < self.chunk / 8 {
            self.chunk = (self.chunk / 2).max(READ_MIN);
        }
    }

    /// After the decoder ran on [`RecvBuf::current`]: once the large body has been
    /// taken, what follows it goes back to the small buffer.
    pub fn after_decode(&mut self) {
        // The decoder takes a complete body at once.
        if self.large_body.is_some() && self.large_complete {
            self.small.extend_from_slice(&self.large);
            self.large.clear();
            self.large_body = None;
            self.large_complete = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// Stands in for the decoder: takes `body` bytes once they are all there.
    fn take(buf: &mut BytesMut, body: usize) -> Option<bytes::Bytes> {
        (buf.len() >= body).then(|| buf.split_to(body).freeze())
    }

    #[test]
    fn a_large_body_is_read_in_place_and_its_memory_reused() {
        let t0 = Instant::now();
        let mut rb = RecvBuf::new();
        let body = 1 << 20;
        let mut first_ptr = None;
        for round in 0..3 {
            // The first read brings the body's start with it.
            assert_eq!(rb.plan(2, || t0), READ_MIN);
            rb.current().put_bytes(round, 1000);
            rb.on_read(1000, READ_MIN);
            rb.after_decode();
            let want = rb.plan(body - 1000, || t0);
            assert_eq!(want, body - 1000);
            let start = rb.current().as_ptr();
            assert!(
                rb.current().capacity() >= body,
                "sized for the frame at once"
            );
            // A read fills at most the room there is, maybe with what follows the body.
            let room = rb.current().capacity() - rb.current().len();
            let read = room.min(want + 5);
            // Arriving in two reads: nothing moves after the first.
            rb.current().put_bytes(round, read / 2);
            rb.on_read(read / 2, room);
            rb.after_decode();
            assert_eq!(rb.current().as_ptr(), start);
            rb.current().put_bytes(round, read - read / 2);
            rb.on_read(read - read / 2, room - read / 2);
            let frame = take(rb.current(), body).expect("whole body");
            rb.after_decode();
            assert_eq!(frame.as_ptr(), start, "never moved while it grew");
            assert_eq!(&frame[..1000], &[round; 1000][..]);
            assert_eq!(
                rb.current().len(),
                read - want,
                "the rest is in the small buffer"
            );
            assert!(rb.large_body.is_none());
            rb.current().clear();
            match first_ptr {
                None => first_ptr = Some(start),
                Some(p) => assert_eq!(p, start, "memory of the dropped frame reused"),
            }
            drop(frame);
        }
        // Held while the frame is alive: a new buffer, and the old one stays valid.
        rb.plan(body, || t0);
        rb.current().put_bytes(1, body);
        rb.on_read(body, body);
        let kept = take(rb.current(), body).unwrap();
        rb.after_decode();
        rb.plan(body, || t0);
        assert_ne!(rb.current().as_ptr(), kept.as_ptr());
        rb.current().put_bytes(2, body);
        rb.on_read(body, body);
        take(rb.current(), body).unwrap();
        rb.after_decode();
        assert!(kept.iter().all(|b| *b == 1));
        // Released after a quiet second.
        rb.plan(2, || t0 + LARGE_KEEP);
        assert_eq!(rb.large.capacity(), 0);
    }

    #[test]
    fn large_buffers_still_held_are_reused_once_dropped_within_a_bound() {
        let t0 = Instant::now();
        let body = 1 << 20;
        let budget: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let run = |keep: usize| {
            let mut rb = RecvBuf::new();
            rb.spares.budget = budget;
            let mut held = std::collections::VecDeque::new();
            for round in 0..50u8 {
                rb.plan(body, || t0);
                rb.current().put_bytes(round, body);
                rb.on_read(body, body);
                let frame = take(rb.current(), body).unwrap();
                rb.after_decode();
                assert!(
                    frame.iter().all(|b| *b == round),
                    "a held frame never changes"
                );
                // The program holds the last `keep` frames (callers not yet run).
                held.push_back(frame);
                if held.len() > keep {
                    held.pop_front();
                }
                assert!(held.iter().all(|f| f[0] == f[body - 1]));
            }
            let spare: usize = rb.spares.list.iter().map(|(_, n)| n).sum();
            assert_eq!(spare, rb.spares.bytes);
            assert!(spare <= SPARE_BYTES);
            rb.fresh
        };
        // Frames held up to 4 at a time: a few buffers serve all 50 frames.
        assert!(run(4) <= 6, "{} fresh buffers", run(4));
        // Held longer than the spares reach (32 of 1 MiB): fresh buffers every time,
        // but never more spares.
        assert_eq!(run(40), 50);
        // Every spare was given back to the process's budget.
        assert_eq!(budget.load(Ordering::Relaxed), 0);
        // With the process's budget spent by other connections, none is kept.
        budget.store(SPARE_TOTAL_MAX - body / 2, Ordering::Relaxed);
        assert_eq!(run(4), 50);
        assert_eq!(budget.load(Ordering::Relaxed), SPARE_TOTAL_MAX - body / 2);
    }

    #[test]
    fn after_a_large_frame_the_next_start_is_read_small() {
        let t0 = Instant::now();
        let mut rb = RecvBuf::new();
        // Busy small traffic grows the reservation to its maximum.
        for _ in 0..8 {
            let room = rb.plan(2, || t0);
            rb.current().put_bytes(0, room);
            rb.on_read(room, room);
            rb.current().clear();
        }
        assert_eq!(rb.plan(2, || t0), READ_MAX);
        // A large frame's start arrives in that big read: moved (copied) once...
        rb.current().put_bytes(7, READ_MAX);
        rb.on_read(READ_MAX, READ_MAX);
        rb.after_decode();
        rb.plan(1 << 20, || t0);
        assert_eq!(rb.current().len(), READ_MAX);
        rb.current().put_bytes(7, 1 << 20);
        rb.on_read(1 << 20, 1 << 20);
        take(rb.current(), READ_MAX + (1 << 20)).unwrap();
        rb.after_decode();
        // ...but the next frame's start is read into a small reservation, so that
        // at most that much is moved again.
        assert!(rb.plan(2, || t0) <= READ_MIN);
        assert_eq!(rb.chunk, READ_MIN);
    }

    #[test]
    fn light_traffic_reads_into_the_same_buffer_while_frames_are_held() {
        let t0 = Instant::now();
        let mut rb = RecvBuf::new();
        let mut held = Vec::new();
        let mut buffers = std::collections::HashSet::new();
        for _ in 0..100 {
            let want = rb.plan(2, || t0);
            let buf = rb.current();
            buf.reserve(want);
            let room = buf.capacity() - buf.len();
            buf.put_bytes(1, 100);
            rb.on_read(100, room);
            let frame = take(rb.current(), 100).unwrap();
            // The frames of one buffer are contiguous: a new start means a new buffer.
            if held
                .last()
                .is_none_or(|p: &bytes::Bytes| p.as_ptr().wrapping_add(100) != frame.as_ptr())
            {
                buffers.insert(frame.as_ptr() as usize);
            }
            held.push(frame);
        }
        // 100 frames of 100 bytes, all still held: read into a few 8 KiB buffers (a
        // new one when less than half is left), not one buffer per read.
        assert!(buffers.len() <= 3, "{} buffers", buffers.len());
        assert!(held.iter().all(|f| f.iter().all(|b| *b == 1)));
    }
}
