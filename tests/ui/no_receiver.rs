#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn add(a: i64) -> i64;
}

fn main() {}
