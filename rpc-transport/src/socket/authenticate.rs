//! [`Authenticator`]: the application's say on who may connect to a CURVE or PLAIN
//! server, asked once per connection at the end of the client's handshake, and
//! allowed to wait (a database, a token service) within a time bound.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::zmtp::curve::PublicKey;
use crate::zmtp::Credentials;

/// The security mechanism a client authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMechanism {
    /// CURVE: the client proved it holds the secret key of `public_key`.
    Curve,
    /// PLAIN: a user name and password, in clear.
    Plain,
}

/// What an [`Authenticator`] decides on: the client's address and credentials.
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The mechanism.
    pub mechanism: AuthMechanism,
    /// The client's address (`127.0.0.1:40000`, an `ipc://` path, `inproc`).
    pub peer_addr: String,
    /// A CURVE client's permanent public key.
    pub public_key: Option<PublicKey>,
    /// A PLAIN client's user name.
    pub username: Option<String>,
    /// A PLAIN client's password.
    pub password: Option<Vec<u8>>,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("mechanism", &self.mechanism)
            .field("peer_addr", &self.peer_addr)
            .field("public_key", &self.public_key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// An [`Authenticator`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// The client may connect; its requests carry `user_id` (handlers read it in
    /// `RequestContext::user`; `None`: a PLAIN client's user name, nothing for
    /// CURVE, where `RequestContext::client_key` names the client).
    Allow {
        /// The identity handlers see.
        user_id: Option<String>,
    },
    /// The client may not: its handshake ends with an ERROR command carrying
    /// `reason` (the client's calls fail with it), and the server logs it with the
    /// client's address.
    Deny(String),
}

impl AuthDecision {
    /// Allowed, with no identity of its own.
    pub fn allow() -> AuthDecision {
        AuthDecision::Allow { user_id: None }
    }

    /// Allowed, known to handlers as `user_id`.
    pub fn allow_as(user_id: impl Into<String>) -> AuthDecision {
        AuthDecision::Allow {
            user_id: Some(user_id.into()),
        }
    }

    /// Refused, for this reason (which the client hears).
    pub fn deny(reason: impl Into<String>) -> AuthDecision {
        AuthDecision::Deny(reason.into())
    }

    /// As the sans-IO connection takes it.
    pub(crate) fn into_verdict(self) -> Result<Option<String>, String> {
        match self {
            AuthDecision::Allow { user_id } => Ok(user_id),
            AuthDecision::Deny(why) => Err(why),
        }
    }
}

/// A decision in progress.
pub(crate) type Deciding = Pin<Box<dyn Future<Output = AuthDecision> + Send>>;

type Hook = dyn Fn(AuthRequest) -> Deciding + Send + Sync;

/// Decides, once per connection, whether a CURVE or PLAIN client may connect: after
/// the mechanism has authenticated it (CURVE: it holds its key; the allow-list, if
/// any, passed) and before the server's READY (CURVE) or WELCOME (PLAIN). The hook
/// may wait; past its time bound (default 5 s, within the handshake timeout too) the
/// client is refused ("authentication timed out"). Calls and messages of other
/// connections go on meanwhile.
#[derive(Clone)]
pub struct Authenticator {
    hook: Arc<Hook>,
    timeout: Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator that asks `decide` (an `async` closure or a function
    /// returning a future).
    pub fn new<F, Fut>(decide: F) -> Authenticator
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AuthDecision> + Send + 'static,
    {
        Authenticator {
            hook: Arc::new(move |req| Box::pin(decide(req))),
            timeout: Duration::from_secs(5),
        }
    }

    /// How long a decision may take before the client is refused (default 5 s).
    pub fn timeout(mut self, limit: Duration) -> Authenticator {
        self.timeout = limit;
        self
    }

    /// Starts deciding on a client, within the time bound.
    pub(crate) fn start(&self, credentials: Credentials, peer_addr: &str) -> Deciding {
        let mechanism = match credentials.public_key {
            Some(_) => AuthMechanism::Curve,
            None => AuthMechanism::Plain,
        };
        let request = AuthRequest {
            mechanism,
            peer_addr: peer_addr.to_owned(),
            public_key: credentials.public_key,
            username: credentials.username,
            password: credentials.password,
        };
        let deciding = (self.hook)(request);
        let limit = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(limit, deciding)
                .await
                .unwrap_or_else(|_| {
                    AuthDecision::deny(format!("authentication timed out after {limit:?}"))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve_client() -> Credentials {
        Credentials {
            public_key: Some(crate::zmtp::curve::KeyPair::generate().public()),
            username: None,
            password: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_is_the_hooks_and_sees_the_address_and_key() {
        let auth = Authenticator::new(|req: AuthRequest| async move {
            match (req.mechanism, req.peer_addr.as_str()) {
                (AuthMechanism::Curve, "10.0.0.1:5") => AuthDecision::allow_as("ann"),
                _ => AuthDecision::deny(format!("{:?} from {}", req.mechanism, req.peer_addr)),
            }
        });
        assert_eq!(
            auth.start(curve_client(), "10.0.0.1:5").await,
            AuthDecision::allow_as("ann")
        );
        let plain = Credentials {
            public_key: None,
            username: Some("bob".into()),
            password: Some(b"pw".to_vec()),
        };
        assert_eq!(
            auth.start(plain, "10.0.0.2:6").await,
            AuthDecision::deny("Plain from 10.0.0.2:6")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_that_never_answers_is_refused_at_its_bound() {
        let auth =
            Authenticator::new(|_| std::future::pending()).timeout(Duration::from_millis(300));
        let t0 = tokio::time::Instant::now();
        let decision = auth.start(curve_client(), "x").await;
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        assert!(
            matches!(&decision, AuthDecision::Deny(why) if why.contains("timed out")),
            "{decision:?}"
        );
    }

    #[test]
    fn a_password_is_not_printed() {
        let req = AuthRequest {
            mechanism: AuthMechanism::Plain,
            peer_addr: "a".into(),
            public_key: None,
            username: Some("u".into()),
            password: Some(b"secret".to_vec()),
        };
        assert!(!format!("{req:?}").contains("secret"));
    }
}
