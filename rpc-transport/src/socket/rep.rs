//! REP: fair-queued requests; the envelope (every frame up to and including the empty
//! delimiter) is stripped on receive and put back on the reply.

use bytes::Bytes;

use super::core::PeerId;
use super::{socket_common, SocketBase, SocketError};
use crate::message::Message;

/// A lock-step replier (28/REQREP).
pub struct RepSocket {
    base: SocketBase,
    pending: Option<(PeerId, Vec<Bytes>)>,
}

socket_common!(RepSocket, crate::zmtp::SocketType::Rep);

impl RepSocket {
    fn from_base(base: SocketBase) -> Self {
        RepSocket {
            base,
            pending: None,
        }
    }

    /// Receives the next request, without its envelope. Requests without an envelope
    /// delimiter are dropped. Errors with [`SocketError::State`] while a reply is due.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, SocketError> {
        if self.pending.is_some() {
            return Err(SocketError::State("REP: the last request has no reply yet"));
        }
        loop {
            let inbound = self.base.recv().await?;
            let mut msg = inbound.msg;
            match msg.split_envelope() {
                Some(envelope) => {
                    self.pending = Some((inbound.peer, envelope));
                    return Ok(msg);
                }
                None => tracing::debug!("REP: dropping a request without delimiter"),
            }
        }
    }

    /// Sends the reply to the last request, with its envelope. If the requester is gone,
    /// or has so many replies waiting that its queue is at the high-water mark (a
    /// DEALER that sends without reading), the reply is dropped, as libzmq does: one
    /// such peer does not hold up the others.
    pub async fn send(&mut self, msg: impl Into<Message>) -> Result<(), SocketError> {
        let mut msg = msg.into();
        if msg.is_empty() {
            return Err(SocketError::EmptyMessage);
        }
        let (peer, envelope) = self
            .pending
            .take()
            .ok_or(SocketError::State("REP: no request to reply to"))?;
        msg.prepend_envelope(envelope);
        if !self.base.core.send_to_peer(peer, msg) {
            tracing::debug!("REP: requester gone; reply dropped");
        }
        Ok(())
    }
}
