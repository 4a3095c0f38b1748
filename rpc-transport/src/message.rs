//! [`Message`]: one ZeroMQ message, an ordered list of frames.

use bytes::Bytes;

/// A multipart ZeroMQ message: an ordered list of frames, each a shared, immutable
/// [`Bytes`] buffer. Cloning a message clones reference counts, never payload bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    frames: Vec<Bytes>,
}

impl Message {
    /// An empty message (no frames). A message must have a frame before it can be sent.
    pub fn new() -> Self {
        Message { frames: Vec::new() }
    }

    /// An empty message with room for `n` frames.
    pub fn with_capacity(n: usize) -> Self {
        Message {
            frames: Vec::with_capacity(n),
        }
    }

    /// A message of one frame.
    pub fn single(frame: impl Into<Bytes>) -> Self {
        Message {
            frames: vec![frame.into()],
        }
    }

    /// Appends a frame at the end.
    pub fn push(&mut self, frame: impl Into<Bytes>) {
        self.frames.push(frame.into());
    }

    /// Inserts a frame at the front (an envelope or routing id).
    pub fn push_front(&mut self, frame: impl Into<Bytes>) {
        self.frames.insert(0, frame.into());
    }

    /// Removes and returns the first frame.
    pub fn pop_front(&mut self) -> Option<Bytes> {
        if self.frames.is_empty() {
            None
        } else {
            Some(self.frames.remove(0))
        }
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// The frames, mutable.
    pub fn frames_mut(&mut self) -> &mut Vec<Bytes> {
        &mut self.frames
    }

    /// Consumes the message and returns its frames.
    pub fn into_frames(self) -> Vec<Bytes> {
        self.frames
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when the message has no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Total payload bytes over all frames.
    pub fn byte_len(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    /// The frame at `i`, if any.
    pub fn get(&self, i: usize) -> Option<&Bytes> {
        self.frames.get(i)
    }

    /// Splits off the envelope: every frame up to and including the first empty
    /// delimiter frame. Returns `None` (and leaves the message as it was) when there is
    /// no delimiter.
    pub fn split_envelope(&mut self) -> Option<Vec<Bytes>> {
        let pos = self.frames.iter().position(Bytes::is_empty)?;
        let body = self.frames.split_off(pos + 1);
        Some(std::mem::replace(&mut self.frames, body))
    }

    /// Puts an envelope (as returned by [`Message::split_envelope`]) back in front.
    pub fn prepend_envelope(&mut self, envelope: Vec<Bytes>) {
        let body = std::mem::replace(&mut self.frames, envelope);
        self.frames.extend(body);
    }
}

/// Largest joined frame that [`Outgoing::into_keeping`] copies together.
pub(crate) const KEEP_COPY_MAX: usize = 64 * 1024;

/// A message on its way to a connection: its frames, of which the last `joined` (when
/// two or more) are the parts of one wire frame, written one after the other so that a
/// large payload is never copied into a frame of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub frames: Vec<Bytes>,
    pub joined: usize,
}

impl Outgoing {
    /// `head` frames, then `payload` as one frame. Give `head` room for an envelope
    /// too, and [`Outgoing::behind`] will not move the frames again.
    pub fn with_payload(mut head: Vec<Bytes>, payload: rpc_core::Payload) -> Outgoing {
        let joined = payload.move_into(&mut head);
        Outgoing {
            frames: head,
            joined,
        }
    }

    /// The message behind `envelope` frames (put in front, in place when there is room).
    pub fn behind(mut self, envelope: impl IntoIterator<Item = Bytes>) -> Outgoing {
        let n = self.frames.len();
        self.frames.extend(envelope);
        let added = self.frames.len() - n;
        self.frames.rotate_right(added);
        self
    }

    /// This message as the reply cache keeps it for a while: a joined frame of up to
    /// [`KEEP_COPY_MAX`] bytes is copied into a buffer of its own, because its parts may
    /// be slices of much larger buffers (the request's, for a handler that answers
    /// with what it received) that the cache would otherwise hold without counting.
    /// Anything else is kept as it is.
    pub fn into_keeping(mut self) -> Outgoing {
        let cut = self.frames.len().saturating_sub(self.joined);
        let size: usize = self.frames[cut..].iter().map(Bytes::len).sum();
        if self.joined < 2 || size > KEEP_COPY_MAX {
            return self;
        }
        let mut whole = bytes::BytesMut::with_capacity(size);
        for part in self.frames.drain(cut..) {
            whole.extend_from_slice(&part);
        }
        self.frames.push(whole.freeze());
        self.joined = 1;
        self
    }

    /// Payload bytes over all frames.
    pub fn byte_len(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }
}

impl From<Message> for Outgoing {
    fn from(m: Message) -> Outgoing {
        Outgoing {
            frames: m.frames,
            joined: 1,
        }
    }
}

impl From<Vec<Bytes>> for Message {
    fn from(frames: Vec<Bytes>) -> Self {
        Message { frames }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::single(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::single(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::single(Bytes::from(v))
    }
}

impl FromIterator<Bytes> for Message {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        Message {
            frames: iter.into_iter().collect(),
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for fr in &self.frames {
            if fr.len() <= 32 {
                l.entry(fr);
            } else {
                l.entry(&format_args!("<{} bytes>", fr.len()));
            }
        }
        l.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_split_and_restore() {
        let mut m: Message = vec![
            Bytes::from_static(b"id"),
            Bytes::new(),
            Bytes::from_static(b"body"),
        ]
        .into();
        let env = m.split_envelope().unwrap();
        assert_eq!(env, vec![Bytes::from_static(b"id"), Bytes::new()]);
        assert_eq!(m.frames(), &[Bytes::from_static(b"body")]);
        m.prepend_envelope(env);
        assert_eq!(m.len(), 3);
        let mut no_delim = Message::from("x");
        assert!(no_delim.split_envelope().is_none());
        assert_eq!(no_delim.len(), 1);
    }

    #[test]
    fn kept_copies_do_not_hold_slices_of_larger_buffers() {
        let request = Bytes::from(vec![5u8; 256 * 1024]);
        let parts = |n: usize| {
            rpc_core::Payload::from_parts(vec![
                Bytes::from_static(b"\xc5"),
                request.slice(..n),
                Bytes::from_static(b"!"),
            ])
        };
        let head = || vec![Bytes::from_static(b"h")];
        let small = Outgoing::with_payload(head(), parts(20_000));
        let kept = small.clone().into_keeping();
        assert_eq!(kept.joined, 1);
        assert_eq!(kept.frames.len(), 2);
        assert_eq!(kept.byte_len(), small.byte_len());
        assert_eq!(&kept.frames[1][1..20_001], &request[..20_000]);
        assert!(!kept.frames.iter().any(|f| f.as_ptr() == request.as_ptr()));
        // Past the bound the parts are kept as they are.
        let large = Outgoing::with_payload(head(), parts(KEEP_COPY_MAX + 1));
        assert_eq!(large.clone().into_keeping(), large);
    }
}
