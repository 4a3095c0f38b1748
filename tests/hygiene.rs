//! The expansion depends on nothing the caller imported: no prelude, hostile local
//! names in scope, and the facade reached under another name with `crate = "..."`.

mod renamed {
    pub use ::zmtp_rpc as rpc;
}

#[no_implicit_prelude]
mod service {
    // Local items shadowing what generated code might name without a full path.
    #[allow(dead_code, non_camel_case_types, unused_imports)]
    mod hostile {
        pub struct Result;
        pub struct Option;
        pub struct Box;
        pub struct String;
        pub struct Vec;
        pub trait Send {}
        pub trait Sync {}
        pub trait Clone {}
        pub trait Future {}
        pub struct Arc;
        pub struct serde;
        pub struct core;
    }
    #[allow(unused_imports)]
    use self::hostile::*;

    #[::zmtp_rpc::rpc_service(crate = "super::renamed::rpc")]
    pub trait Hygienic {
        async fn add(&self, a: i64, b: i64) -> i64;
        async fn greet(
            &self,
            name: ::std::string::String,
        ) -> ::core::result::Result<::std::string::String, u8>;
        async fn nothing(&self);
    }

    pub struct Impl;

    impl Hygienic for Impl {
        async fn add(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        async fn greet(
            &self,
            name: ::std::string::String,
        ) -> ::core::result::Result<::std::string::String, u8> {
            ::core::result::Result::Ok(::std::format!("hi {name}"))
        }
        async fn nothing(&self) {}
    }
}

use service::{HygienicClient, HygienicServer, Impl};

#[tokio::test]
async fn expands_and_runs_without_the_prelude() {
    let server = zmtp_rpc::Server::builder()
        .bind("inproc://hygiene")
        .add_service(HygienicServer::new(Impl))
        .start()
        .await
        .unwrap();
    let client = HygienicClient::connect(["inproc://hygiene"]).await.unwrap();
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert_eq!(client.greet("x".into()).await.unwrap(), Ok("hi x".into()));
    client.nothing().await.unwrap();
    server.shutdown().await;
}
