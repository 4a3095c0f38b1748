//! ZeroMQ socket types, their wire names, and which pairs may talk.

use std::fmt;

/// A ZeroMQ socket type as announced in READY's `Socket-Type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// REQ: lock-step requester.
    Req,
    /// REP: lock-step replier.
    Rep,
    /// DEALER: asynchronous requester.
    Dealer,
    /// ROUTER: asynchronous replier with routing ids.
    Router,
    /// PAIR.
    Pair,
    /// PUB.
    Pub,
    /// SUB.
    Sub,
    /// XPUB.
    XPub,
    /// XSUB.
    XSub,
    /// PUSH.
    Push,
    /// PULL.
    Pull,
}

impl SocketType {
    /// The name as it travels in READY.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
            SocketType::Pair => "PAIR",
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::XPub => "XPUB",
            SocketType::XSub => "XSUB",
            SocketType::Push => "PUSH",
            SocketType::Pull => "PULL",
        }
    }

    /// Parses a wire name. Names are matched exactly as libzmq does (upper case).
    pub fn from_wire(name: &[u8]) -> Option<SocketType> {
        Some(match name {
            b"REQ" => SocketType::Req,
            b"REP" => SocketType::Rep,
            b"DEALER" => SocketType::Dealer,
            b"ROUTER" => SocketType::Router,
            b"PAIR" => SocketType::Pair,
            b"PUB" => SocketType::Pub,
            b"SUB" => SocketType::Sub,
            b"XPUB" => SocketType::XPub,
            b"XSUB" => SocketType::XSub,
            b"PUSH" => SocketType::Push,
            b"PULL" => SocketType::Pull,
            _ => return None,
        })
    }

    /// Whether a socket of this type may talk to a peer of type `peer` (28/REQREP and
    /// the other patterns' RFCs; libzmq's `mechanism_t::check_socket_type`).
    pub fn is_compatible(self, peer: SocketType) -> bool {
        use SocketType::*;
        match self {
            Req => matches!(peer, Rep | Router),
            Rep => matches!(peer, Req | Dealer),
            Dealer => matches!(peer, Rep | Dealer | Router),
            Router => matches!(peer, Req | Dealer | Router),
            Pair => peer == Pair,
            Pub | XPub => matches!(peer, Sub | XSub),
            Sub | XSub => matches!(peer, Pub | XPub),
            Push => peer == Pull,
            Pull => peer == Push,
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SocketType::{self, *};

    #[test]
    fn reqrep_pairs_match_the_table() {
        let all = [Req, Rep, Dealer, Router];
        let valid = [
            (Req, Rep),
            (Req, Router),
            (Rep, Req),
            (Rep, Dealer),
            (Dealer, Rep),
            (Dealer, Dealer),
            (Dealer, Router),
            (Router, Req),
            (Router, Dealer),
            (Router, Router),
        ];
        for a in all {
            for b in all {
                assert_eq!(a.is_compatible(b), valid.contains(&(a, b)), "{a}-{b}");
                // The relation is symmetric.
                assert_eq!(a.is_compatible(b), b.is_compatible(a));
            }
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for t in [
            Req, Rep, Dealer, Router, Pair, Pub, Sub, XPub, XSub, Push, Pull,
        ] {
            assert_eq!(SocketType::from_wire(t.as_str().as_bytes()), Some(t));
        }
        assert_eq!(SocketType::from_wire(b"req"), None);
    }
}
