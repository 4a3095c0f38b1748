//! DEALER: round-robin out, fair-queued in, no envelope of its own.

use super::{socket_common, SocketBase, SocketError};
use crate::message::Message;
use crate::zmtp::SocketType;

/// An asynchronous requester: sends round-robin over its peers, receives from all.
pub struct DealerSocket {
    base: SocketBase,
}

socket_common!(DealerSocket, crate::zmtp::SocketType::Dealer);

impl DealerSocket {
    fn from_base(base: SocketBase) -> Self {
        debug_assert_eq!(base.core.kind, SocketType::Dealer);
        DealerSocket { base }
    }

    /// Sends a message to the next peer (round-robin), waiting while no peer is
    /// connected or every peer is at its high-water mark.
    pub async fn send(&mut self, msg: impl Into<Message>) -> Result<(), SocketError> {
        let msg = msg.into();
        if msg.is_empty() {
            return Err(SocketError::EmptyMessage);
        }
        self.base.core.send_round_robin(msg).await.map(|_| ())
    }

    /// Receives the next message from any peer. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, SocketError> {
        Ok(self.base.recv().await?.msg)
    }
}
