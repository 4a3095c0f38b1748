pub struct Point {
    pub x: i64,
}

#[zmtp_rpc::rpc_service]
pub trait Geometry {
    async fn norm(&self, p: Point) -> i64;
}

fn main() {}
