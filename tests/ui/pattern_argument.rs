#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn add(&self, (a, b): (i64, i64)) -> i64;
}

fn main() {}
