//! [`DnsDiscovery`]: a pool that follows a DNS name (cargo feature `dns`, on by
//! default in `zmtp-rpc`), resolved with hickory-resolver.
//!
//! `dns://workers.example:5555` is every A and AAAA address of the name, each one
//! endpoint on that port (a Kubernetes headless service, Consul's DNS interface);
//! `dns+srv://_rpc._tcp.example` takes host and port from the SRV records. The name is
//! resolved again when its records' TTL runs out; what each answer changes is decided
//! by [`Refresh`](super::dns_refresh::Refresh), a pure value.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rpc_core::RpcError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dns_refresh::{Answer, Bounds, Refresh};
use super::PoolChange;

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A and AAAA records of `host`, each address on `port`.
    Addresses { host: String, port: u16 },
    /// SRV records of `name`: their targets' addresses on their ports.
    Srv { name: String },
}

/// Follows a DNS name as a pool: give [`DnsDiscovery::stream`] to
/// [`ClientBuilder::discover`](super::ClientBuilder::discover), or write the name as an
/// endpoint (`ClientBuilder::endpoint("dns://workers.example:5555")`) to use the
/// defaults.
///
/// Defaults: the system's resolver configuration (`/etc/resolv.conf`); resolved again
/// when the TTL runs out, at least every 60 s and at most every second; an empty answer
/// empties the pool after 30 s of them; a failed resolution keeps the last good set.
///
/// ```
/// use std::time::Duration;
/// use rpc_transport::client::{Client, DnsDiscovery};
///
/// # #[tokio::main] async fn main() -> Result<(), rpc_core::RpcError> {
/// let workers = DnsDiscovery::new("dns://workers.prod.svc.cluster.local:5555")?
///     .ttl_bounds(Duration::from_secs(2), Duration::from_secs(30));
/// // Returns at once; calls wait (within their deadline) for the first answer.
/// let client = Client::builder().discover(workers.stream()).connect().await?;
/// # drop(client);
/// // A name without a port says so.
/// let e = DnsDiscovery::new("dns://workers.example").unwrap_err();
/// assert!(e.to_string().contains("expected dns://host:port"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    target: Target,
    nameserver: Option<SocketAddr>,
    bounds: Bounds,
}

impl DnsDiscovery {
    /// Discovery for `dns://host:port` or `dns+srv://name`.
    pub fn new(uri: &str) -> Result<DnsDiscovery, RpcError> {
        let bad = |why: &str| RpcError::Config(format!("{uri}: {why}"));
        let target = if let Some(name) = uri.strip_prefix("dns+srv://") {
            if name.is_empty() || name.contains(['/', ' ']) {
                return Err(bad("expected dns+srv://_service._tcp.name"));
            }
            Target::Srv { name: name.into() }
        } else if let Some(rest) = uri.strip_prefix("dns://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected dns://host:port"))?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?;
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(bad("expected dns://host:port"));
            }
            Target::Addresses {
                host: host.into(),
                port,
            }
        } else {
            return Err(bad("expected dns://host:port or dns+srv://name"));
        };
        Ok(DnsDiscovery {
            target,
            nameserver: None,
            bounds: Bounds {
                min_ttl: Duration::from_secs(1),
                max_ttl: Duration::from_secs(60),
                grace: Duration::from_secs(30),
            },
        })
    }

    /// Asks this name server (UDP, then TCP) instead of the system's.
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.nameserver = Some(addr);
        self
    }

    /// Bounds of the time between resolutions: the records' TTL, clamped to
    /// `[min, max]`. A failed resolution is tried again after `min`.
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.bounds.min_ttl = min;
        self.bounds.max_ttl = max.max(min);
        self
    }

    /// How long the name must answer with no records before the pool is emptied.
    pub fn empty_grace(mut self, grace: Duration) -> Self {
        self.bounds.grace = grace;
        self
    }

    /// The pool's changes, as [`ClientBuilder::discover`](super::ClientBuilder::discover)
    /// takes them. Resolution starts at the first poll (inside the client's runtime)
    /// and stops when the stream is dropped.
    pub fn stream(self) -> DnsChanges {
        DnsChanges(State::Idle(Some(self)))
    }

    fn resolver(&self) -> Result<TokioResolver, NetError> {
        let mut builder = match self.nameserver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        // This loop decides when to ask again; a cache would answer for it.
        opts.cache_size = 0;
        builder.build()
    }

    /// Resolves the target once.
    async fn resolve(&self, resolver: &TokioResolver) -> Answer {
        let result = match &self.target {
            Target::Addresses { host, port } => resolver.lookup_ip(host.as_str()).await.map(|l| {
                let until = l.valid_until();
                let eps = l.iter().map(|ip| endpoint(ip, *port)).collect();
                (eps, until)
            }),
            Target::Srv { name } => Self::resolve_srv(resolver, name).await,
        };
        match result {
            Ok((endpoints, until)) if !BTreeSet::is_empty(&endpoints) => Answer::Found {
                endpoints,
                ttl: Instant::from_std(until).saturating_duration_since(Instant::now()),
            },
            Ok(_) => Answer::Empty,
            Err(e) if e.is_no_records_found() => Answer::Empty,
            Err(e) => {
                tracing::warn!(target = ?self.target, error = %e, "DNS resolution failed; keeping the pool");
                Answer::Failed
            }
        }
    }

    async fn resolve_srv(
        resolver: &TokioResolver,
        name: &str,
    ) -> Result<(BTreeSet<String>, std::time::Instant), NetError> {
        let srv = resolver.srv_lookup(name).await?;
        let mut until = srv.valid_until();
        let mut eps = BTreeSet::new();
        let records = srv.answers().iter().filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.target.clone(), srv.port)),
            _ => None,
        });
        for (target, port) in records.collect::<Vec<_>>() {
            let ips = resolver.lookup_ip(target).await?;
            until = until.min(ips.valid_until());
            eps.extend(ips.iter().map(|ip| endpoint(ip, port)));
        }
        Ok((eps, until))
    }

    /// Resolves until `tx` closes, sending the pool's changes.
    async fn run(self, tx: mpsc::Sender<PoolChange>) {
        let resolver = match self.resolver() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target = ?self.target, error = %e, "no DNS resolver: the pool stays empty");
                return;
            }
        };
        let mut refresh = Refresh::new(self.bounds);
        loop {
            let answer = self.resolve(&resolver).await;
            let now = Instant::now();
            let (changes, next) = refresh.on_answer(answer, now.into_std());
            for change in changes {
                tracing::info!(target = ?self.target, ?change, "DNS: pool changes");
                if tx.send(change).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(Instant::from_std(next)) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// `tcp://ip:port`, IPv6 in brackets.
fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
        IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
    }
}

/// The changes of a DNS pool: see [`DnsDiscovery::stream`].
#[derive(Debug)]
pub struct DnsChanges(State);

#[derive(Debug)]
enum State {
    Idle(Option<DnsDiscovery>),
    Running(mpsc::Receiver<PoolChange>),
}

impl futures_core::Stream for DnsChanges {
    type Item = PoolChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolChange>> {
        if let State::Idle(d) = &mut self.0 {
            let (tx, rx) = mpsc::channel(64);
            if let Some(d) = d.take() {
                tokio::spawn(d.run(tx));
            }
            self.0 = State::Running(rx);
        }
        match &mut self.0 {
            State::Running(rx) => rx.poll_recv(cx),
            State::Idle(_) => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_or_say_what_is_wrong() {
        let d = DnsDiscovery::new("dns://workers.example:5555").unwrap();
        assert_eq!(
            d.target,
            Target::Addresses {
                host: "workers.example".into(),
                port: 5555
            }
        );
        let d = DnsDiscovery::new("dns+srv://_rpc._tcp.example").unwrap();
        assert_eq!(
            d.target,
            Target::Srv {
                name: "_rpc._tcp.example".into()
            }
        );
        for bad in [
            "dns://workers.example",
            "dns://workers.example:0",
            "dns://:5555",
            "dns://h:99999",
            "dns+srv://",
            "tcp://h:1",
        ] {
            let e = DnsDiscovery::new(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad}: ")), "{e}");
        }
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(endpoint("10.0.0.7".parse().unwrap(), 5), "tcp://10.0.0.7:5");
        assert_eq!(endpoint("::1".parse().unwrap(), 5), "tcp://[::1]:5");
    }
}
