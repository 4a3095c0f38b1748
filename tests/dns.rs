//! DNS discovery against a real DNS server: dnsmasq, started by the test on 127.0.0.1
//! with a hosts file that the test rewrites and reloads (SIGHUP), serving the A
//! records of a pool of workers on 127.0.0.1, .2 and .3 (all loopback on Linux).

#[allow(dead_code)]
#[path = "../examples/common/calc.rs"]
mod calc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use calc::{CalcClient, CalcServer, MyCalc};
use zmtp_rpc::{Client, DnsDiscovery, Server, ServerHandle};

const NAME: &str = "workers.zmtp.test";

/// dnsmasq: `ZMTP_RPC_DNSMASQ`, else on the PATH or in /usr/sbin. The test fails
/// (never skips) without it: `scripts/test.sh` installs it.
fn dnsmasq() -> PathBuf {
    if let Some(p) = std::env::var_os("ZMTP_RPC_DNSMASQ") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.exists());
    found.expect("no dnsmasq: run scripts/test.sh (it installs it) or set ZMTP_RPC_DNSMASQ")
}

/// A dnsmasq process answering from `hosts`; killed when dropped.
struct Dns {
    child: Child,
    addr: SocketAddr,
    hosts: PathBuf,
}

impl Dns {
    /// dnsmasq answering `records` (A records of `NAME`) and the `extra` options.
    fn start(dir: &Path, records: &[&str], extra: &[String]) -> Dns {
        let hosts = dir.join("hosts");
        write_hosts(&hosts, records);
        // dnsmasq takes no port 0: a port free a moment ago, tried a few times.
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .unwrap()
                .port();
            if let Some(child) = spawn_dnsmasq(port, &hosts, extra) {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                return Dns { child, addr, hosts };
            }
        }
        panic!("dnsmasq did not stay up on any of 5 ports");
    }

    /// Starts dnsmasq again on the same port with other options (it reads command-line
    /// records such as SRV only when it starts).
    fn restart(&mut self, extra: &[String]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if let Some(child) = spawn_dnsmasq(self.addr.port(), &self.hosts, extra) {
                self.child = child;
                return;
            }
        }
        panic!("dnsmasq did not start again on port {}", self.addr.port());
    }

    /// A client of the pool `uri`, asking this server, resolving every 50-200 ms.
    async fn client(&self, uri: &str) -> Client {
        let discovery = DnsDiscovery::new(uri)
            .unwrap()
            .nameserver(self.addr)
            .ttl_bounds(Duration::from_millis(50), Duration::from_millis(200));
        Client::builder()
            .discover(discovery.stream())
            .connect()
            .await
            .unwrap()
    }

    /// Rewrites the records and has dnsmasq read them again.
    fn set(&self, records: &[&str]) {
        write_hosts(&self.hosts, records);
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq on 127.0.0.1:`port`, if it stays up.
fn spawn_dnsmasq(port: u16, hosts: &Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new(dnsmasq())
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--local-ttl=1",
            "--pid-file=",
            "--user=root",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts");
    // A port taken meanwhile makes it exit at once.
    std::thread::sleep(Duration::from_millis(200));
    if child.try_wait().unwrap().is_none() {
        Some(child)
    } else {
        None
    }
}

fn write_hosts(path: &Path, ips: &[&str]) {
    let text: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
    std::fs::write(path, text).unwrap();
}

async fn worker(ip: &str, port: u16) -> ServerHandle {
    Server::builder()
        .bind(format!("tcp://{ip}:{port}"))
        .add_service(CalcServer::new(MyCalc))
        .start()
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

fn pool(client: &Client) -> Vec<String> {
    let mut eps: Vec<_> = client.endpoints().into_iter().map(|e| e.endpoint).collect();
    eps.sort();
    eps
}

#[tokio::test]
async fn a_pool_follows_its_dns_records_and_no_call_fails_over_a_change() {
    let dir = std::env::temp_dir().join(format!("zmtp-rpc-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w1 = worker("127.0.0.1", 0).await;
    let port = match &w1.endpoints()[0] {
        zmtp_rpc::transport::socket::Endpoint::Tcp { port, .. } => *port,
        other => panic!("{other}"),
    };
    let (w2, w3) = (
        worker("127.0.0.2", port).await,
        worker("127.0.0.3", port).await,
    );
    let ep = |i: u8| format!("tcp://127.0.0.{i}:{port}");
    let dns = Dns::start(&dir, &["127.0.0.1", "127.0.0.2"], &[]);

    let client = dns.client(&format!("dns://{NAME}:{port}")).await;
    until("both first records in the pool", || {
        pool(&client) == [ep(1), ep(2)]
    })
    .await;

    // Calls run all along; none may fail because of a change.
    let calc = CalcClient::new(client.clone());
    let (stop, failures, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = tokio::spawn({
        let (stop, failures, calls) = (stop.clone(), failures.clone(), calls.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if calc.add(2, 3).await.map_or(true, |s| s != 5) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // A worker added to the records gets calls.
    dns.set(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    until("the added worker serves calls", || w3.stats().requests > 10).await;
    assert_eq!(pool(&client), [ep(1), ep(2), ep(3)]);

    // A worker removed from the records leaves the pool and gets no new call.
    dns.set(&["127.0.0.2", "127.0.0.3"]);
    until("the removed worker leaves the pool", || {
        pool(&client) == [ep(2), ep(3)]
    })
    .await;
    // Calls that were in flight there may still end there; then none.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (served, before) = (w1.stats().requests, calls.load(Ordering::Relaxed));
    until("more calls made after the removal", || {
        calls.load(Ordering::Relaxed) > before + 200
    })
    .await;
    assert_eq!(w1.stats().requests, served, "a removed worker got calls");

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed over the changes"
    );
    assert!(w2.stats().requests > 0 && w3.stats().requests > 0);
    drop(dns);
    for w in [w1, w2, w3] {
        w.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_srv_pool_takes_hosts_and_ports_from_the_records() {
    let dir = std::env::temp_dir().join(format!("zmtp-rpc-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two workers on one address, on ports of their own: what SRV records are for.
    let (w1, w2) = (worker("127.0.0.1", 0).await, worker("127.0.0.1", 0).await);
    let (e1, e2) = (w1.endpoints()[0].to_string(), w2.endpoints()[0].to_string());
    let port = |e: &str| e.rsplit(':').next().unwrap().to_string();
    let srv = |ports: &[&str]| -> Vec<String> {
        ports
            .iter()
            .map(|p| format!("--srv-host=_rpc._tcp.{NAME},{NAME},{p}"))
            .collect()
    };
    let mut dns = Dns::start(&dir, &["127.0.0.1"], &srv(&[&port(&e1), &port(&e2)]));
    let client = dns.client(&format!("dns+srv://_rpc._tcp.{NAME}")).await;
    let mut both = vec![e1.clone(), e2.clone()];
    both.sort();
    until("both SRV targets in the pool", || pool(&client) == both).await;
    let calc = CalcClient::new(client.clone());
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
    // The first worker's record goes away.
    dns.restart(&srv(&[&port(&e2)]));
    until("the first worker leaves the pool", || {
        pool(&client) == [e2.clone()]
    })
    .await;
    let served = w1.stats().requests;
    for _ in 0..50 {
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
    }
    assert_eq!(w1.stats().requests, served);
    drop(dns);
    w1.shutdown().await;
    w2.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dns_endpoint_that_cannot_parse_says_why() {
    let e = Client::builder()
        .endpoint("dns://workers.example")
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expected dns://host:port"), "{e}");
}
