#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn add(self, a: i64) -> i64;
    async fn sub(&mut self, a: i64) -> i64;
}

fn main() {}
