//! A REP server on one port that says which server answered.
//!
//! Run several: `cargo run --example server_on_port 5556`, `... 5557`, `... 5558`, then
//! `cargo run --example client_to_many 5556 5557 5558`. Each reply reads
//! "Response from server listening on PORT #n -- request data: ...".

use zmtp_rpc::transport::RepSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: server_on_port PORT")?
        .parse()?;
    let mut rep = RepSocket::new();
    // Port 0 picks a free port; the replies name the port actually bound.
    let port = rep
        .bind(&format!("tcp://*:{port}"))
        .await?
        .port()
        .unwrap_or(port);
    println!("server_on_port listening on tcp://*:{port}");
    let mut n: u64 = 0;
    loop {
        let request = rep.recv().await?;
        n += 1;
        let data = String::from_utf8_lossy(&request.frames()[0]).into_owned();
        let reply =
            format!("Response from server listening on {port} #{n} -- request data: {data}");
        println!("{reply}");
        rep.send(reply.as_str()).await?;
    }
}
