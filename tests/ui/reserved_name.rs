#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn connect(&self) -> bool;
}

fn main() {}
