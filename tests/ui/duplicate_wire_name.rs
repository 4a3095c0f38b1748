#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn add(&self, a: i64) -> i64;
    #[rpc(name = "add")]
    async fn plus(&self, a: i64) -> i64;
}

fn main() {}
