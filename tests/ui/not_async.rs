#[zmtp_rpc::rpc_service]
pub trait Svc {
    fn add(&self, a: i64) -> i64;
}

fn main() {}
