//! The peer table: handshaken connections, their routing ids, and the guard that
//! takes each out when its connection ends.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Core;
use crate::message::Outgoing;
use crate::socket::outbox::Outbox;
use crate::socket::SocketError;
use crate::sync::lock;
use crate::zmtp::{PeerInfo, SocketType};

/// A connection's number within its socket; never reused.
pub(crate) type PeerId = u64;

pub(super) struct PeerEntry {
    pub(super) id: PeerId,
    pub(super) routing_id: Bytes,
    pub(super) tx: mpsc::Sender<Outgoing>,
    pub(super) out: Arc<Outbox>,
}

pub(super) struct Peers {
    pub(super) list: Vec<PeerEntry>,
    /// Round-robin cursor into `list`.
    pub(super) rr: usize,
    /// Next generated ROUTER routing id (libzmq: 0x00 + u32 counter, random start).
    pub(super) next_routing: u32,
}

/// Removes its peer from the table when the connection's engine ends, however it ends.
pub(crate) struct PeerGuard {
    core: Arc<Core>,
    pub id: PeerId,
    pub routing_id: Bytes,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut peers = lock(&self.core.peers);
        peers.list.retain(|p| p.id != self.id);
        let n = peers.list.len();
        drop(peers);
        self.core.peer_count.send_replace(n);
    }
}

impl Core {
    /// Enters a handshaken connection in the peer table.
    pub fn add_peer(
        self: &Arc<Core>,
        id: PeerId,
        info: &PeerInfo,
        tx: mpsc::Sender<Outgoing>,
        out: Arc<Outbox>,
    ) -> Result<PeerGuard, SocketError> {
        let mut peers = lock(&self.peers);
        let routing_id = if self.kind == SocketType::Router && !info.identity.is_empty() {
            // libzmq without ROUTER_HANDOVER keeps the first connection and refuses the
            // newcomer; doing the same keeps replies from going to the wrong peer.
            if peers.list.iter().any(|p| p.routing_id == info.identity) {
                return Err(SocketError::DuplicateIdentity);
            }
            info.identity.clone()
        } else {
            loop {
                peers.next_routing = peers.next_routing.wrapping_add(1);
                let mut id = [0u8; 5];
                id[1..].copy_from_slice(&peers.next_routing.to_be_bytes());
                let id = Bytes::copy_from_slice(&id);
                if !peers.list.iter().any(|p| p.routing_id == id) {
                    break id;
                }
            }
        };
        peers.list.push(PeerEntry {
            id,
            routing_id: routing_id.clone(),
            tx,
            out,
        });
        let n = peers.list.len();
        drop(peers);
        self.peer_count.send_replace(n);
        Ok(PeerGuard {
            core: self.clone(),
            id,
            routing_id,
        })
    }

    /// The channel and outbox of the first peer that `pick` chooses.
    pub(super) fn link(
        &self,
        pick: impl Fn(&PeerEntry) -> bool,
    ) -> Option<(mpsc::Sender<Outgoing>, Arc<Outbox>)> {
        lock(&self.peers)
            .list
            .iter()
            .find(|p| pick(p))
            .map(|p| (p.tx.clone(), p.out.clone()))
    }

    /// The peer with the fewest unanswered direct requests, the first in round-robin
    /// order among equals (the turn moves on past it), its outbox, and whether there
    /// was a choice (only then are requests counted).
    pub(super) fn next_in_turn(&self) -> Option<(PeerId, Arc<Outbox>, bool)> {
        let mut peers = lock(&self.peers);
        let n = peers.list.len();
        if n == 0 {
            return None;
        }
        let start = peers.rr % n;
        let mut idx = start;
        if n > 1 {
            let mut least = usize::MAX;
            for k in 0..n {
                let i = (start + k) % n;
                let load = peers.list[i].out.in_flight();
                if load < least {
                    (least, idx) = (load, i);
                    if load == 0 {
                        break;
                    }
                }
            }
        }
        peers.rr = idx + 1;
        let p = &peers.list[idx];
        Some((p.id, p.out.clone(), n > 1))
    }

    pub fn has_peer(&self, peer: PeerId) -> bool {
        lock(&self.peers).list.iter().any(|p| p.id == peer)
    }
}
