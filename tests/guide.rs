//! The code of docs/GUIDE.md, sections 2 to 4, as the guide shows it (on a free
//! port instead of 5555): what a new user copies must compile and work.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zmtp_rpc::{rpc_service, Client, Server};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum CalcError {
    DivideByZero,
}

#[rpc_service] // wire names: "calc.add", "calc.div"
pub trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
}

struct MyCalc;
impl Calc for MyCalc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            Err(CalcError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
}

/// Section 3: a server on TCP, a client of it, a graceful shutdown.
#[tokio::test]
async fn server_and_client() {
    let server = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(CalcServer::new(MyCalc))
        .start()
        .await
        .unwrap();
    let calc = CalcClient::new(
        Client::builder()
            .endpoints([server.endpoints()[0].to_string()])
            .call_timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap(),
    );
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.div(7, 0).await.unwrap(), Err(CalcError::DivideByZero));
    server.shutdown().await;
}

/// Section 4: in-process over `inproc://`, in paused time.
#[tokio::test(start_paused = true)]
async fn deadlines_are_kept() {
    let server = Server::builder()
        .bind("inproc://calc-test")
        .add_service(CalcServer::new(MyCalc))
        .start()
        .await
        .unwrap();
    let client = Client::connect(["inproc://calc-test"]).await.unwrap();
    assert!(client.wait_healthy(1, Duration::from_secs(5)).await);
    let calc = CalcClient::new(client);
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    server.shutdown().await;
}
