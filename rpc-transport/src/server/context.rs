//! [`RequestContext`]: the request a handler is running for, readable from inside it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use rpc_core::RequestId;
use tokio::time::Instant;

/// Facts about the request being handled, available to handler code through
/// [`RequestContext::current`].
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (the same for every attempt of one call).
    pub request_id: RequestId,
    /// `"service.method"` (borrowed from the service's method table when known).
    pub method: Cow<'static, str>,
    /// Attempt number of the request as sent by the client (from 1).
    pub attempt: u32,
    /// When the caller stops waiting; the handler is cancelled then.
    pub deadline: Instant,
    /// Metadata from the request header.
    pub metadata: BTreeMap<String, String>,
    /// The client's CURVE public key, authenticated by the handshake (`None` over
    /// NULL): a handler can authorize per method by it.
    pub client_key: Option<crate::zmtp::curve::PublicKey>,
    /// Who the client is, as the server allowed it: the identity the server's
    /// [`Authenticator`](crate::socket::Authenticator) gave it, else a PLAIN client's
    /// user name (`None` otherwise).
    pub user: Option<std::sync::Arc<str>>,
}

thread_local! {
    /// The context of the handler being polled on this thread (moved in for the
    /// length of each poll by [`Handler`](super::handler::Handler)).
    static CURRENT: RefCell<Option<RequestContext>> = const { RefCell::new(None) };
}

impl RequestContext {
    /// The context of the request whose handler is running, if any. Handler code
    /// sees it, also inside futures it awaits; a task it spawns does not.
    pub fn current() -> Option<RequestContext> {
        CURRENT.with(|c| c.borrow().clone())
    }
}

/// Makes `slot` the current context until the guard drops, then moves it back.
pub(crate) fn enter(slot: &mut Option<RequestContext>) -> Entered<'_> {
    let prev = CURRENT.with(|c| c.replace(slot.take()));
    Entered { slot, prev }
}

/// Restores the previous context, and gives the handler's back to its slot.
pub(crate) struct Entered<'a> {
    slot: &'a mut Option<RequestContext>,
    prev: Option<RequestContext>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.with(|c| c.replace(self.prev.take()));
    }
}
