//! ROUTER: every incoming message is prefixed with its peer's routing id; a sent
//! message's first frame says which peer it goes to.

use super::{socket_common, SocketBase, SocketError};
use crate::message::Message;

/// An asynchronous replier that addresses peers by routing id: the peer's `Identity`
/// when it sent one, else a libzmq-style generated id (0x00 + 4 bytes).
pub struct RouterSocket {
    base: SocketBase,
}

socket_common!(RouterSocket, crate::zmtp::SocketType::Router);

impl RouterSocket {
    fn from_base(base: SocketBase) -> Self {
        RouterSocket { base }
    }

    /// Receives `[routing id, frames...]` from any peer. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, SocketError> {
        let inbound = self.base.recv().await?;
        let mut msg = inbound.msg;
        msg.push_front(inbound.routing_id);
        Ok(msg)
    }

    /// Sends `[routing id, frames...]`: the first frame picks the peer and is not sent.
    /// An unknown routing id is [`SocketError::Unroutable`], and a peer whose queue is
    /// at its high-water mark is waited for; with `router_mandatory` off, both drop the
    /// message instead (libzmq's default).
    pub async fn send(&mut self, msg: impl Into<Message>) -> Result<(), SocketError> {
        let mut msg = msg.into();
        let rid = msg.pop_front().ok_or(SocketError::EmptyMessage)?;
        if msg.is_empty() {
            return Err(SocketError::EmptyMessage);
        }
        if self.base.core.send_to_routing_id(&rid, msg).await
            || !self.base.core.opts.router_mandatory
        {
            Ok(())
        } else {
            Err(SocketError::Unroutable(rid))
        }
    }
}

/// A cloneable handle that sends through a [`RouterSocket`] from other tasks. Once the
/// socket is closed no peer is routable and sends report `false`.
#[derive(Clone)]
pub struct RouterSender {
    core: std::sync::Arc<super::core::Core>,
}

impl RouterSocket {
    /// A sender usable from other tasks while this socket receives.
    pub fn sender(&self) -> RouterSender {
        RouterSender {
            core: self.base.core.clone(),
        }
    }
}

impl RouterSender {
    /// Sends `frames` to the peer with routing id `rid`; `false` when there is no
    /// such peer (it disconnected), in which case the message is dropped. A full
    /// queue is handled as by [`RouterSocket::send`].
    pub async fn send_to(&self, rid: &[u8], msg: Message) -> bool {
        self.core.send_to_routing_id(rid, msg).await
    }
}
