//! The classic ZeroMQ "Hello World" server: a REP socket answering "World".
//!
//! Run: `cargo run --example hello_server [ENDPOINT]` (default `tcp://*:5555`), then
//! `cargo run --example hello_client` in another terminal. Any libzmq REQ client works
//! too, for example Python: `zmq.Context().socket(zmq.REQ)`.

use zmtp_rpc::transport::RepSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://*:5555".into());
    let mut rep = RepSocket::new();
    let bound = rep.bind(&endpoint).await?;
    println!("hello_server listening on {bound}");
    loop {
        let request = rep.recv().await?;
        println!(
            "Received request: {}",
            String::from_utf8_lossy(&request.frames()[0])
        );
        rep.send("World").await?;
    }
}
