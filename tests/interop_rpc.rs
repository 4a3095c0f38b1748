//! Other languages, tested: a Python client and a Python server written from
//! docs/PROTOCOL.md alone (tests/peers/rpc_client.py, rpc_server.py).

#[allow(dead_code)]
#[path = "../examples/common/calc.rs"]
mod calc;
mod support;

use std::process::Stdio;

use calc::{CalcClient, CalcError, CalcServer, MyCalc};
use tokio::process::Command;
use zmtp_rpc::Server;

#[tokio::test]
async fn a_python_req_client_calls_a_rust_service() {
    let (server, ep) =
        support::serve_tcp(Server::builder().add_service(CalcServer::new(MyCalc))).await;
    support::run_peer_script("rpc_client.py", &[&ep]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_rust_client_calls_a_python_router_server() {
    let mut cmd = Command::new(support::python());
    cmd.arg(support::peer_script("rpc_server.py"))
        .stdin(Stdio::piped());
    let mut server = support::spawn_first_line(cmd).await;
    let ready = server.first.clone();
    let ep = ready
        .strip_prefix("READY ")
        .expect("READY line")
        .to_string();
    let calc = CalcClient::connect([ep]).await.unwrap();
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.div(-7, 2).await.unwrap(), Ok(-3));
    assert_eq!(calc.div(1, 0).await.unwrap(), Err(CalcError::DivideByZero));
    assert_eq!(
        calc.mul(i64::MAX, 2).await.unwrap(),
        Err(CalcError::Overflow { op: "mul".into() })
    );
    drop(server.child.stdin.take());
}
