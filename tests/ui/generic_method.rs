#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn add<T>(&self, a: T) -> i64;
}

fn main() {}
