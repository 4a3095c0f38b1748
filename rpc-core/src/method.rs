//! Method metadata that generated code hands to the transport.

/// Whether the client may resend a call whose outcome it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryPolicy {
    /// Resent after a timeout or a lost connection, with the same request id; servers
    /// answer a repeated id from their reply cache, so a retry to the same server does
    /// not run the method twice. (A retry to another server can.)
    #[default]
    Retry,
    /// `#[rpc(at_most_once)]`: resent only when the request provably never left the
    /// client or the server answered that it did not run it (OVERLOADED, SHUTTING_DOWN).
    AtMostOnce,
}

/// Static facts about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// Wire name, `"service.method"`.
    pub name: &'static str,
    /// Retry semantics.
    pub retry: RetryPolicy,
    /// The arguments, in order: name and Rust type as the trait spells them (for
    /// `_rpc.describe` and tools; empty for a method known only at run time).
    pub args: &'static [(&'static str, &'static str)],
    /// The return type as the trait spells it (`""` when not known).
    pub returns: &'static str,
}

impl MethodInfo {
    /// A method known by name only: no argument or return types to describe.
    pub const fn new(name: &'static str, retry: RetryPolicy) -> MethodInfo {
        MethodInfo {
            name,
            retry,
            args: &[],
            returns: "",
        }
    }

    /// The service part of the wire name.
    pub fn service(&self) -> &'static str {
        self.name.rsplit_once('.').map(|(s, _)| s).unwrap_or("")
    }

    /// The method part of the wire name.
    pub fn method(&self) -> &'static str {
        self.name
            .rsplit_once('.')
            .map(|(_, m)| m)
            .unwrap_or(self.name)
    }
}
