//! docs/PROTOCOL.md's rules on malformed input, checked from Python (a peer written from
//! the spec) and from a hand-made server reply.

#[allow(dead_code)]
#[path = "../examples/common/calc.rs"]
mod calc;
mod support;

use calc::{CalcClient, CalcServer, MyCalc};
use serde::Serialize;
use support::PyPeer;
use zmtp_rpc::{Client, RpcError, Server};

#[tokio::test]
async fn the_server_refuses_what_the_spec_refuses_and_names_the_request() {
    let (server, ep) =
        support::serve_tcp(Server::builder().add_service(CalcServer::new(MyCalc))).await;
    support::run_peer_script("conformance.py", &[&ep]).await;
    // The two bad headers, the reused id and the two oversize requests never reached
    // a dispatcher; the array arguments were refused by it (BAD_REQUEST before the
    // method). One connection served them all.
    let st = server.stats();
    assert_eq!((st.requests, st.rejected), (8, 5), "{st:?}");
}

/// A reply header with any status code.
#[derive(Serialize)]
struct ReplyHeader<'a> {
    v: u8,
    #[serde(with = "support::serde_bytes16")]
    id: [u8; 16],
    status: u8,
    message: &'a str,
}

#[tokio::test]
async fn an_unknown_status_reads_as_internal() {
    let mut py = PyPeer::new("ROUTER", &[]).await;
    let ep = py.bind("tcp://127.0.0.1:0").await;
    let client = Client::builder()
        .endpoint(&ep)
        .retries(0)
        .connect()
        .await
        .unwrap();
    let calc = CalcClient::new(client);
    let call = tokio::spawn(async move { calc.add(1, 2).await });
    // [routing id][empty][header][arguments]; the reply is matched by the header's id.
    let req = py.recv(10_000).await.expect("the request arrived");
    assert_eq!(req.len(), 4, "{req:?}");
    assert!(req[1].is_empty());
    let id = *rpc_core::RequestHeader::from_bytes(&req[2])
        .unwrap()
        .id
        .as_bytes();
    let header = rmp_serde::to_vec_named(&ReplyHeader {
        v: 1,
        id,
        status: 42,
        message: "from the future",
    })
    .unwrap();
    py.send(&[&req[0], b"", &header, b"\xc0"]).await;
    let e = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, RpcError::Internal(m) if m == "unknown status 42: from the future"),
        "{e:?}"
    );
}
