//! zmtp-rpc facade.
pub use rpc_transport as transport;
