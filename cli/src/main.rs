//! `zmtp-rpc`: call, describe and probe zmtp-rpc services from a shell, as grpcurl does
//! for gRPC. JSON in, MessagePack on the wire, JSON out.
//!
//! ```text
//! zmtp-rpc call tcp://127.0.0.1:5555 calc.add '{"a": 2, "b": 3}'
//! zmtp-rpc describe tcp://127.0.0.1:5555
//! zmtp-rpc health tcp://127.0.0.1:5555      # exit 0 when serving (a Kubernetes probe)
//! zmtp-rpc bench tcp://127.0.0.1:5555 calc.add '{"a": 1, "b": 2}' -c 16 -d 10
//! zmtp-rpc keygen                           # a CURVE key pair, in Z85
//! zmtp-rpc --curve-server-key "$KEY" health tcp://10.0.0.5:5555
//! ```
//!
//! Security, for every command (docs/SECURITY.md): `--curve-server-key` (or
//! `ZMTP_RPC_CURVE_SERVER_KEY`) calls over CURVE, as the client whose secret key is in
//! `--curve-secret-key-file` or `ZMTP_RPC_CURVE_SECRET_KEY` (without one, a key pair
//! made for this run, which a server with an allow-list refuses); `--plain-user` (or
//! `ZMTP_RPC_PLAIN_USER`) calls over PLAIN with the password in
//! `ZMTP_RPC_PLAIN_PASSWORD`. Secrets are never taken on the command line, where any
//! user of the machine can read them.
//!
//! Exit codes: 0 success; 1 the method answered its error type (APP_ERROR) or the
//! server is not serving; 2 bad usage; 3 unavailable; 4 deadline exceeded; 5 any other
//! failure (the text on stderr says which).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod bench;

use clap::{Parser, Subcommand};
use zmtp_rpc::__private::{Reply, Status};
use zmtp_rpc::transport::client::CallOptions;
use zmtp_rpc::{Client, ClientBuilder, KeyPair, MethodInfo, PublicKey, RetryPolicy, RpcError};

#[derive(Parser)]
#[command(
    name = "zmtp-rpc",
    version,
    about = "Call, describe and probe zmtp-rpc services"
)]
struct Cli {
    /// Deadline of the call, in milliseconds.
    #[arg(long, default_value_t = 5000, global = true)]
    timeout: u64,
    /// The server's CURVE public key (Z85): calls go over CURVE. Z85 has `-` among its
    /// digits: a key may begin with one, and is still this option's value.
    #[arg(
        long,
        global = true,
        env = "ZMTP_RPC_CURVE_SERVER_KEY",
        value_name = "Z85",
        allow_hyphen_values = true
    )]
    curve_server_key: Option<String>,
    /// A file holding this client's CURVE secret key (Z85), else
    /// `ZMTP_RPC_CURVE_SECRET_KEY`; without either, a key pair made for this run.
    #[arg(long, global = true, value_name = "PATH")]
    curve_secret_key_file: Option<PathBuf>,
    /// PLAIN user name: calls go over PLAIN, with the password in
    /// `ZMTP_RPC_PLAIN_PASSWORD`.
    #[arg(long, global = true, env = "ZMTP_RPC_PLAIN_USER", value_name = "NAME")]
    plain_user: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calls a method with JSON arguments (a map of named arguments) and prints the
    /// JSON result.
    Call {
        /// Server endpoints; the call fails over among them (comma-separated).
        endpoints: String,
        /// `service.method`.
        method: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// Metadata entries `key=value` (repeatable).
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
    },
    /// Lists a server's services, methods and their retry semantics.
    Describe {
        /// The server's endpoint.
        endpoint: String,
    },
    /// Exits 0 when the server is serving, 1 otherwise.
    Health {
        /// The server's endpoint.
        endpoint: String,
    },
    /// Calls a method as fast as it answers from several callers for a while, then
    /// prints calls per second and latency percentiles.
    Bench {
        /// Server endpoints (comma-separated).
        endpoints: String,
        /// `service.method`.
        method: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// Callers at once.
        #[arg(long, short = 'c', default_value_t = 16)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, short = 'd', default_value_t = 10)]
        duration: u64,
    },
    /// Makes a CURVE key pair and prints it in Z85, as libzmq's `curve_keygen` does:
    /// the public key for servers' allow-lists (or the server's clients), the secret
    /// key for `--curve-secret-key-file` (or the server's `KeyPair::from_secret_z85`).
    Keygen,
}

/// How the tool's client authenticates, from its options and environment.
enum Security {
    Null,
    Curve { keys: KeyPair, server: PublicKey },
    Plain { user: String, password: String },
}

impl Security {
    fn from_cli(cli: &Cli) -> Result<Security, Failure> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (&cli.curve_server_key, &cli.plain_user) {
            (Some(_), Some(_)) => Err(Failure::Usage(
                "--curve-server-key and --plain-user: one mechanism at a time".into(),
            )),
            (Some(server), None) => {
                let server: PublicKey = server.trim().parse().map_err(|e| {
                    Failure::Usage(format!("--curve-server-key is not a public key: {e}"))
                })?;
                let secret = match &cli.curve_secret_key_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                        Failure::Usage(format!("--curve-secret-key-file {}: {e}", path.display()))
                    })?),
                    None => env("ZMTP_RPC_CURVE_SECRET_KEY"),
                };
                let keys = match secret {
                    Some(text) => KeyPair::from_secret_z85(text.trim()).map_err(|e| {
                        Failure::Usage(format!("the CURVE secret key is not a key: {e}"))
                    })?,
                    None => KeyPair::generate(),
                };
                Ok(Security::Curve { keys, server })
            }
            (None, Some(user)) => {
                let password = env("ZMTP_RPC_PLAIN_PASSWORD").ok_or_else(|| {
                    Failure::Usage("--plain-user needs ZMTP_RPC_PLAIN_PASSWORD".into())
                })?;
                Ok(Security::Plain {
                    user: user.clone(),
                    password,
                })
            }
            (None, None) => {
                if cli.curve_secret_key_file.is_some() {
                    return Err(Failure::Usage(
                        "--curve-secret-key-file needs --curve-server-key".into(),
                    ));
                }
                Ok(Security::Null)
            }
        }
    }

    /// A client builder for `endpoints` with this security.
    fn client<'a>(&self, endpoints: impl IntoIterator<Item = &'a str>) -> ClientBuilder {
        let b = Client::builder().endpoints(endpoints.into_iter().map(str::trim));
        match self {
            Security::Null => b,
            Security::Curve { keys, server } => b.curve(keys.clone(), *server),
            Security::Plain { user, password } => b.plain(user.clone(), password.as_bytes()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_millis(cli.timeout);
    let outcome = match Security::from_cli(&cli) {
        Ok(security) => run(cli.command, timeout, &security).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            eprintln!("zmtp-rpc: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Rpc(e)) => {
            eprintln!("zmtp-rpc: {e}");
            ExitCode::from(match e {
                RpcError::Unavailable { .. } => 3,
                RpcError::DeadlineExceeded => 4,
                _ => 5,
            })
        }
    }
}

/// Why a command failed.
enum Failure {
    /// The command line is wrong.
    Usage(String),
    /// The call failed.
    Rpc(RpcError),
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Failure {
        Failure::Rpc(e)
    }
}

/// Arguments given on the command line: a JSON object (PROTOCOL.md §4: named).
fn json_object(text: &str) -> Result<serde_json::Value, Failure> {
    let args: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("arguments are not JSON: {e}")))?;
    if !args.is_object() {
        return Err(Failure::Usage("arguments must be a JSON object".into()));
    }
    Ok(args)
}

/// Call options with the tool's `--timeout`.
fn with_timeout(timeout: Duration) -> CallOptions {
    CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    }
}

async fn run(
    command: Command,
    timeout: Duration,
    security: &Security,
) -> Result<ExitCode, Failure> {
    match command {
        Command::Call {
            endpoints,
            method,
            args,
            metadata,
        } => {
            let args = json_object(&args)?;
            let mut opts = with_timeout(timeout);
            for kv in metadata {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage(format!("metadata {kv:?}: key=value")))?;
                opts.metadata.insert(k.into(), v.into());
            }
            let reply = call(security, endpoints.split(','), &method, &args, opts).await?;
            let body = to_json(&reply)?;
            println!("{body}");
            Ok(ExitCode::from(u8::from(reply.status == Status::AppError)))
        }
        Command::Describe { endpoint } => {
            let opts = with_timeout(timeout);
            let reply = call(
                security,
                [endpoint.as_str()],
                "_rpc.describe",
                &serde_json::json!({}),
                opts,
            )
            .await?;
            let body = to_json(&reply)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            endpoints,
            method,
            args,
            concurrency,
            duration,
        } => {
            let args = json_object(&args)?;
            let payload = zmtp_rpc::__private::codec::encode_payload(&args)?;
            let client = security.client(endpoints.split(',')).connect().await?;
            bench::run(
                client,
                method_info(&method),
                payload,
                timeout,
                concurrency.max(1),
                Duration::from_secs(duration),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { endpoint } => {
            let opts = with_timeout(timeout);
            let serving = match call(
                security,
                [endpoint.as_str()],
                "_rpc.health",
                &serde_json::json!({}),
                opts,
            )
            .await
            {
                Ok(reply) => to_json(&reply)? == serde_json::json!("SERVING"),
                Err(e) => {
                    eprintln!("zmtp-rpc: {e}");
                    false
                }
            };
            println!("{}", if serving { "SERVING" } else { "NOT_SERVING" });
            Ok(ExitCode::from(u8::from(!serving)))
        }
        Command::Keygen => {
            let keys = KeyPair::generate();
            println!("public: {}", keys.public());
            println!("secret: {}", keys.secret_z85());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Calls `method` with `args` on a pool of `endpoints`; OK or APP_ERROR replies.
async fn call<'a>(
    security: &Security,
    endpoints: impl IntoIterator<Item = &'a str>,
    method: &str,
    args: &serde_json::Value,
    opts: CallOptions,
) -> Result<Reply, RpcError> {
    let client = security.client(endpoints).connect().await?;
    let payload = zmtp_rpc::__private::codec::encode_payload(args)?;
    client.call(method_info(method), payload, opts).await
}

/// A method known only at run time: a method table entry of the process's lifetime
/// (one per invocation of the tool).
fn method_info(method: &str) -> &'static MethodInfo {
    Box::leak(Box::new(MethodInfo::new(
        Box::leak(method.to_owned().into_boxed_str()),
        RetryPolicy::Retry,
    )))
}

/// A reply's body as JSON.
fn to_json(reply: &Reply) -> Result<serde_json::Value, Failure> {
    zmtp_rpc::__private::codec::decode_payload(&reply.body).map_err(Failure::Rpc)
}
