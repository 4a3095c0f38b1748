//! A small key-value service with get, put, delete and a typed application error.
//!
//! Run the server: `cargo run --example kv_store -- server [tcp://127.0.0.1:5560]`,
//! then the client: `cargo run --example kv_store -- client [tcp://127.0.0.1:5560]`.
//! `cargo run --example kv_store` alone runs both in one process.

#[path = "common/modes.rs"]
mod modes;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use zmtp_rpc::rpc_service;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// No such key.
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// Keys must be 1 to 256 bytes.
    InvalidKey,
}

/// A key-value store.
#[rpc_service(name = "kv")]
pub trait KvStore {
    /// The value of `key`.
    async fn get(&self, key: String) -> Result<String, KvError>;
    /// Sets `key`; returns the previous value, if any.
    async fn put(&self, key: String, value: String) -> Result<Option<String>, KvError>;
    /// Removes `key`; returns its value. Not idempotent: never resent once delivered.
    #[rpc(at_most_once)]
    async fn delete(&self, key: String) -> Result<String, KvError>;
    /// Number of keys.
    async fn count(&self) -> u64;
}

#[derive(Default)]
struct Store(Mutex<HashMap<String, String>>);

fn check(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > 256 {
        Err(KvError::InvalidKey)
    } else {
        Ok(())
    }
}

impl KvStore for Store {
    async fn get(&self, key: String) -> Result<String, KvError> {
        check(&key)?;
        let map = self.0.lock().unwrap();
        map.get(&key).cloned().ok_or(KvError::NotFound { key })
    }
    async fn put(&self, key: String, value: String) -> Result<Option<String>, KvError> {
        check(&key)?;
        Ok(self.0.lock().unwrap().insert(key, value))
    }
    async fn delete(&self, key: String) -> Result<String, KvError> {
        check(&key)?;
        let removed = self.0.lock().unwrap().remove(&key);
        removed.ok_or(KvError::NotFound { key })
    }
    async fn count(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
}

async fn client(endpoint: &str) -> Result<(), modes::BoxError> {
    let kv = KvStoreClient::connect([endpoint]).await?;
    println!(
        "put color=blue -> {:?}",
        kv.put("color".into(), "blue".into()).await?
    );
    println!(
        "put color=red  -> {:?}",
        kv.put("color".into(), "red".into()).await?
    );
    println!("get color      -> {:?}", kv.get("color".into()).await?);
    println!("count          -> {}", kv.count().await?);
    println!("delete color   -> {:?}", kv.delete("color".into()).await?);
    println!("get color      -> {:?}", kv.get("color".into()).await?);
    println!(
        "put \"\"         -> {:?}",
        kv.put(String::new(), "x".into()).await?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), modes::BoxError> {
    modes::run(
        "kv_store",
        "tcp://127.0.0.1:5560",
        || KvStoreServer::new(Store::default()),
        |ep| async move { client(&ep).await },
    )
    .await
}
