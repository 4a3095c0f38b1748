#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn name(&self, who: &str) -> String;
}

fn main() {}
