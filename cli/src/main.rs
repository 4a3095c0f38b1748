//! `zmtp-rpc`: call, describe and probe zmtp-rpc services from a shell, as grpcurl does
//! for gRPC. JSON in, MessagePack on the wire, JSON out.
//!
//! ```text
//! zmtp-rpc call tcp://127.0.0.1:5555 calc.add '{"a": 2, "b": 3}'
//! zmtp-rpc describe tcp://127.0.0.1:5555
//! zmtp-rpc health tcp://127.0.0.1:5555      # exit 0 when serving (a Kubernetes probe)
//! zmtp-rpc bench tcp://127.0.0.1:5555 calc.add '{"a": 1, "b": 2}' -c 16 -d 10
//! ```
//!
//! Exit codes: 0 success; 1 the method answered its error type (APP_ERROR) or the
//! server is not serving; 2 bad usage; 3 unavailable; 4 deadline exceeded; 5 any other
//! failure (the text on stderr says which).

use std::process::ExitCode;
use std::time::Duration;

mod bench;

use clap::{Parser, Subcommand};
use zmtp_rpc::__private::{Reply, Status};
use zmtp_rpc::transport::client::CallOptions;
use zmtp_rpc::{Client, MethodInfo, RetryPolicy, RpcError};

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_millis(cli.timeout);
    match run(cli.command, timeout).await {
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

async fn run(command: Command, timeout: Duration) -> Result<ExitCode, Failure> {
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
            let reply = call(endpoints.split(','), &method, &args, opts).await?;
            let body = to_json(&reply)?;
            println!("{body}");
            Ok(ExitCode::from(u8::from(reply.status == Status::AppError)))
        }
        Command::Describe { endpoint } => {
            let opts = with_timeout(timeout);
            let reply = call(
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
            let client = Client::builder()
                .endpoints(endpoints.split(',').map(str::trim))
                .connect()
                .await?;
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
    }
}

/// Calls `method` with `args` on a pool of `endpoints`; OK or APP_ERROR replies.
async fn call<'a>(
    endpoints: impl IntoIterator<Item = &'a str>,
    method: &str,
    args: &serde_json::Value,
    opts: CallOptions,
) -> Result<Reply, RpcError> {
    let client = Client::builder()
        .endpoints(endpoints.into_iter().map(str::trim))
        .connect()
        .await?;
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
