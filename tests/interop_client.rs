//! The raw reliable client (`Client::request`) against plain libzmq REP servers
//! (pyzmq), as the Guide's lpclient but with failover.

mod support;

use std::time::Duration;

use support::PyPeer;
use zmtp_rpc::Client;

#[tokio::test]
async fn raw_requests_fail_over_when_a_libzmq_rep_server_dies() {
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["a", "b", "c"] {
        let mut p = PyPeer::new("REP", &[]).await;
        endpoints.push(p.bind("tcp://127.0.0.1:*").await);
        p.ok(&format!("serve {name}")).await;
        servers.push(p);
    }
    let client = Client::builder()
        .endpoints(endpoints)
        .attempt_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    assert!(client.wait_healthy(3, Duration::from_secs(10)).await);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..60u32 {
        if n == 20 {
            drop(servers.remove(1)); // killed: its REP process is gone
        }
        let body = format!("Hello {n:08}");
        let reply = client.request(body.as_str()).await.unwrap();
        let text = String::from_utf8(reply.frames()[0].to_vec()).unwrap();
        let (server, echoed) = text.split_once(':').unwrap();
        assert_eq!(echoed, body, "reply for another request");
        if n >= 25 {
            assert_ne!(server, "b", "request served by the dead server");
        }
        seen.insert(server.to_string());
    }
    assert_eq!(seen.len(), 3, "every server was used: {seen:?}");
}
