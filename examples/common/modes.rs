//! The `server` / `client` / both-in-one-process modes shared by the service examples.

use std::future::Future;

use zmtp_rpc::{Dispatch, Server};

/// Error type of the examples.
pub type BoxError = Box<dyn std::error::Error>;

/// `PROG server [ENDPOINT]` serves `service()` on ENDPOINT; `PROG client [ENDPOINT]`
/// runs `client` against it; `PROG` alone does both in one process on a free port.
pub async fn run<D, C, F>(
    name: &str,
    default_endpoint: &str,
    service: impl Fn() -> D,
    client: C,
) -> Result<(), BoxError>
where
    D: Dispatch,
    C: Fn(String) -> F,
    F: Future<Output = Result<(), BoxError>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| default_endpoint.to_string());
    match args.first().map(String::as_str) {
        Some("server") => {
            println!("{name} serving on {endpoint}");
            Server::builder().bind(endpoint).serve(service()).await?;
        }
        Some("client") => client(endpoint).await?,
        None => {
            let server = Server::builder()
                .bind("tcp://127.0.0.1:0")
                .add_service(service())
                .start()
                .await?;
            client(server.endpoints()[0].to_string()).await?;
            server.shutdown().await;
        }
        Some(other) => return Err(format!("unknown mode {other}: server or client").into()),
    }
    Ok(())
}
