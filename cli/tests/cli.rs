//! The `zmtp-rpc` binary against a live server: call (results, application errors,
//! metadata, exit codes), describe, health, bench; keygen, CURVE and PLAIN.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;
use zmtp_rpc::{rpc_service, KeyPair, RequestContext, Server, ServerHandle};

#[allow(dead_code)]
#[path = "../../examples/common/calc.rs"]
mod calc;

use calc::{CalcServer, MyCalc};

/// What the tool exercises beyond the calculator: retry semantics and metadata.
#[rpc_service(name = "extra")]
pub trait Extra {
    #[rpc(at_most_once)]
    async fn charge(&self, cents: u64) -> u64;
    /// The value of metadata entry `key`, if the call carried one.
    async fn meta(&self, key: String) -> Option<String>;
}

struct MyExtra;

impl Extra for MyExtra {
    async fn charge(&self, cents: u64) -> u64 {
        cents
    }
    async fn meta(&self, key: String) -> Option<String> {
        RequestContext::current().and_then(|c| c.metadata.get(&key).cloned())
    }
}

async fn server() -> (ServerHandle, String) {
    let s = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(CalcServer::new(MyCalc))
        .add_service(ExtraServer::new(MyExtra))
        .start()
        .await
        .unwrap();
    let ep = s.endpoints()[0].to_string();
    (s, ep)
}

/// Runs the tool; fails the test if it takes more than 30 s.
async fn tool(args: &[&str]) -> Output {
    tool_env(args, &[]).await
}

/// Runs the tool with `env` added to its environment (and none of the tool's own
/// variables inherited).
async fn tool_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zmtp-rpc"));
    for var in [
        "ZMTP_RPC_CURVE_SERVER_KEY",
        "ZMTP_RPC_CURVE_SECRET_KEY",
        "ZMTP_RPC_PLAIN_USER",
        "ZMTP_RPC_PLAIN_PASSWORD",
    ] {
        cmd.env_remove(var);
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        cmd.args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the tool finishes")
    .expect("the tool runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn call_prints_json_results_and_exits_by_outcome() {
    let (_s, ep) = server().await;
    let o = tool(&["call", &ep, "calc.add", r#"{"a": 2, "b": 3}"#]).await;
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "5"));
    // The method's own error: printed, exit 1.
    let o = tool(&["call", &ep, "calc.div", r#"{"a": 1, "b": 0}"#]).await;
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "\"DivideByZero\"")
    );
    // Metadata reaches the handler.
    let o = tool(&[
        "call",
        &ep,
        "extra.meta",
        r#"{"key": "who"}"#,
        "-m",
        "who=cli",
    ])
    .await;
    assert_eq!(stdout(&o), "\"cli\"");
    // Bad JSON: usage, exit 2.
    let o = tool(&["call", &ep, "calc.add", "{nope"]).await;
    assert_eq!(o.status.code(), Some(2));
    // An unknown method: exit 5, and the text says so.
    let o = tool(&["call", &ep, "calc.nope", "{}"]).await;
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown method"));
    // Nothing listening: unavailable, exit 3, at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = tool(&["call", &dead, "calc.add", "{}", "--timeout", "3000"]).await;
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn describe_lists_methods_and_health_probes() {
    let (server, ep) = server().await;
    let o = tool(&["describe", &ep]).await;
    assert_eq!(o.status.code(), Some(0));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d[0]["name"], "calc");
    let methods = d[1]["methods"].as_array().unwrap();
    assert!(methods
        .iter()
        .any(|m| m["name"] == "extra.charge" && m["retry"] == "at_most_once"));
    let add = &d[0]["methods"][0];
    assert_eq!(add["name"], "calc.add");
    assert_eq!(
        add["args"][1],
        serde_json::json!({"name": "b", "type": "i64"})
    );
    let o = tool(&["health", &ep]).await;
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "SERVING"));
    server.shutdown().await;
    let o = tool(&["health", &ep, "--timeout", "1000"]).await;
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "NOT_SERVING")
    );
}

#[tokio::test]
async fn bench_prints_rate_and_percentiles() {
    let (_s, ep) = server().await;
    let o = tool(&[
        "bench",
        &ep,
        "calc.add",
        r#"{"a": 1, "b": 2}"#,
        "-c",
        "4",
        "-d",
        "1",
    ])
    .await;
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("calls/s, 0 failed, 4 callers"), "{out}");
    for p in ["p50", "p99", "p100"] {
        assert!(out.contains(p), "{out}");
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// The tool succeeded and printed `want`.
fn answered(o: &Output, want: &str) {
    assert_eq!(
        (o.status.code(), stdout(o).as_str()),
        (Some(0), want),
        "{}",
        stderr(o)
    );
}

/// A calculator server with `security` set on its builder.
async fn secure_server(
    security: impl FnOnce(zmtp_rpc::ServerBuilder) -> zmtp_rpc::ServerBuilder,
) -> (ServerHandle, String) {
    let b = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(CalcServer::new(MyCalc));
    let s = security(b).start().await.unwrap();
    let ep = s.endpoints()[0].to_string();
    (s, ep)
}

const ADD: &str = r#"{"a": 2, "b": 3}"#;

/// Z85 counts `-` among its digits: one key in 85 begins with it, and must still be
/// read as `--curve-server-key`'s value, not as an unknown option.
#[tokio::test]
async fn a_server_key_that_begins_with_a_dash_is_the_options_value() {
    let server_keys = (0..100_000)
        .map(|_| KeyPair::generate())
        .find(|k| k.public().to_string().starts_with('-'))
        .expect("a key beginning with '-' within 100,000 tries");
    let server_key = server_keys.public().to_string();
    let (_s, ep) = secure_server(|b| b.curve(server_keys)).await;
    let o = tool(&[
        "--curve-server-key",
        &server_key,
        "call",
        &ep,
        "calc.add",
        ADD,
    ])
    .await;
    answered(&o, "5");
}

#[tokio::test]
async fn keygen_keys_call_a_curve_server_with_an_allow_list() {
    let o = tool(&["keygen"]).await;
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let line = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (public, secret) = (line("public: "), line("secret: "));
    let keys = KeyPair::from_secret_z85(&secret).unwrap();
    assert_eq!(keys.public().to_string(), public);

    let server_keys = KeyPair::generate();
    let (_s, ep) =
        secure_server(|b| b.curve(server_keys.clone()).allow_clients([keys.public()])).await;
    let server_key = server_keys.public().to_string();
    let dir = std::env::temp_dir().join(format!("zmtp-rpc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("client.key");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let secret_path = secret_file.to_str().unwrap();

    // The allowed client, its secret key in a file.
    let curve = ["--curve-server-key", server_key.as_str()];
    let o = tool(
        &[
            &curve[..],
            &[
                "--curve-secret-key-file",
                secret_path,
                "call",
                &ep,
                "calc.add",
                ADD,
            ],
        ]
        .concat(),
    )
    .await;
    answered(&o, "5");
    // Its secret key, and the server's public key, from the environment.
    let o = tool_env(
        &["health", &ep],
        &[
            ("ZMTP_RPC_CURVE_SERVER_KEY", &server_key),
            ("ZMTP_RPC_CURVE_SECRET_KEY", &secret),
        ],
    )
    .await;
    answered(&o, "SERVING");
    std::fs::remove_dir_all(&dir).unwrap();

    // A key pair made for the run is not on the list: refused, saying so.
    let o = tool(
        &[
            &["--timeout", "3000"],
            &curve[..],
            &["call", &ep, "calc.add", ADD],
        ]
        .concat(),
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    // No security against a CURVE server: refused too.
    let o = tool(&["--timeout", "3000", "call", &ep, "calc.add", ADD]).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // A key that is not one: a usage error, before any connection.
    let o = tool(&[
        "--curve-server-key",
        "not-a-key",
        "call",
        &ep,
        "calc.add",
        ADD,
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--curve-server-key"), "{}", stderr(&o));
}

#[tokio::test]
async fn plain_calls_take_the_password_from_the_environment() {
    let (_s, ep) = secure_server(|b| b.plain().allow_users([("ops", "s3cret")])).await;
    let call = ["--plain-user", "ops", "call", ep.as_str(), "calc.add", ADD];
    let o = tool_env(&call, &[("ZMTP_RPC_PLAIN_PASSWORD", "s3cret")]).await;
    answered(&o, "5");
    let o = tool_env(
        &[&["--timeout", "3000"], &call[..]].concat(),
        &[("ZMTP_RPC_PLAIN_PASSWORD", "wrong")],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    // No password: a usage error that names the variable.
    let o = tool(&call).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ZMTP_RPC_PLAIN_PASSWORD"),
        "{}",
        stderr(&o)
    );
}
