#[zmtp_rpc::rpc_service]
pub trait Svc {
    async fn total(&self, xs: impl IntoIterator<Item = i64>) -> i64;
}

fn main() {}
