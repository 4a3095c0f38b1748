//! REQ: strict send, receive, send...; an empty delimiter in front of each request;
//! round-robin over peers; a reply is accepted only from the peer last sent to.

use bytes::Bytes;

use super::core::PeerId;
use super::{peer_gone, socket_common, SocketBase, SocketError};
use crate::message::Message;

/// A lock-step requester (28/REQREP).
///
/// Unlike libzmq's REQ, a `recv` whose peer disconnects returns
/// [`SocketError::PeerDisconnected`] instead of waiting for ever, and the socket is
/// then ready to send again. A `recv` cancelled by a timeout keeps the request
/// outstanding: calling `recv` again still gets its reply.
///
/// A request to a [`RepSocket`](super::RepSocket) in the same process (`inproc://`;
/// `tcp://` and `ipc://` work the same way):
///
/// ```
/// use rpc_transport::{Message, RepSocket, ReqSocket};
///
/// # #[tokio::main] async fn main() -> Result<(), rpc_transport::SocketError> {
/// let mut rep = RepSocket::new();
/// rep.bind("inproc://echo-doc").await?;
/// let mut req = ReqSocket::new();
/// req.connect("inproc://echo-doc").await?;
///
/// req.send("ping").await?;
/// let asked = rep.recv().await?;
/// rep.send(asked).await?;
/// assert_eq!(req.recv().await?, Message::single("ping"));
/// # Ok(()) }
/// ```
pub struct ReqSocket {
    base: SocketBase,
    awaiting: Option<PeerId>,
}

socket_common!(ReqSocket, crate::zmtp::SocketType::Req);

impl ReqSocket {
    fn from_base(base: SocketBase) -> Self {
        ReqSocket {
            base,
            awaiting: None,
        }
    }

    /// Sends a request to the next peer (round-robin). Errors with
    /// [`SocketError::State`] while a reply is still awaited.
    pub async fn send(&mut self, msg: impl Into<Message>) -> Result<(), SocketError> {
        if self.awaiting.is_some() {
            return Err(SocketError::State("REQ: a reply is still awaited"));
        }
        let mut msg = msg.into();
        if msg.is_empty() {
            return Err(SocketError::EmptyMessage);
        }
        msg.push_front(Bytes::new());
        // Straight to the socket when it can (see `Core::send_round_robin`): for a
        // lock-step REQ, nothing of its own ever still waits in the channel.
        let peer = self.base.core.send_round_robin(msg).await?;
        self.awaiting = Some(peer);
        Ok(())
    }

    /// Receives the reply to the last request. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, SocketError> {
        let peer = self
            .awaiting
            .ok_or(SocketError::State("REQ: no request sent"))?;
        let core = self.base.core.clone();
        let mut peers = core.peer_count();
        loop {
            let inbound = tokio::select! {
                biased;
                r = self.base.recv() => r?,
                _ = peer_gone(&core, &mut peers, peer) => {
                    // A reply that arrived just before the disconnect still counts.
                    match self.base.inbound.try_recv() {
                        Ok(i) => i,
                        Err(_) => {
                            self.awaiting = None;
                            return Err(SocketError::PeerDisconnected);
                        }
                    }
                }
            };
            if inbound.peer != peer {
                tracing::debug!("REQ: dropping a reply from a peer not asked");
                continue;
            }
            let mut msg = inbound.msg;
            if msg.get(0).is_some_and(Bytes::is_empty) {
                msg.pop_front();
                self.awaiting = None;
                return Ok(msg);
            }
            tracing::debug!("REQ: dropping a reply without delimiter");
        }
    }
}
