#[zmtp_rpc::rpc_service(version = 2)]
pub trait Svc {
    #[rpc(idempotent)]
    async fn add(&self, a: i64) -> i64;
}

fn main() {}
