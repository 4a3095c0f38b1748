//! W3C trace context across a call (feature `opentelemetry`): the server's
//! `rpc.request` span is a child of the client's `rpc.call` span, in the caller's
//! trace, as OpenTelemetry's SDK records them. Run by scripts/test.sh with
//! `--features opentelemetry`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use zmtp_rpc::{Client, Server};

mod support;
use support::{EchoClient, EchoServer, MyEcho};

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

// One thread: the subscriber set below is this thread's, for the server's tasks too.
#[tokio::test]
async fn the_servers_span_continues_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let server = Server::builder()
        .bind("tcp://127.0.0.1:0")
        .add_service(EchoServer::new(MyEcho))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .endpoint(server.endpoints()[0].to_string())
        .connect()
        .await
        .unwrap();
    let echo = EchoClient::new(client);
    let got = async { echo.echo("traced".into()).await }
        .instrument(tracing::info_span!("caller"))
        .await
        .unwrap();
    assert_eq!(got, "traced");
    // A call without a trace of its own still works, and is a trace of its own.
    assert_eq!(echo.echo("plain".into()).await.unwrap(), "plain");
    server.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let caller = named(&spans, "caller");
    let calls: Vec<_> = spans.iter().filter(|s| s.name == "rpc.call").collect();
    let requests: Vec<_> = spans.iter().filter(|s| s.name == "rpc.request").collect();
    assert_eq!((calls.len(), requests.len()), (2, 2), "{spans:#?}");
    let call = calls
        .iter()
        .find(|s| s.parent_span_id == caller.span_context.span_id())
        .expect("rpc.call is the caller's child");
    let request = requests
        .iter()
        .find(|s| s.span_context.trace_id() == caller.span_context.trace_id())
        .expect("an rpc.request in the caller's trace");
    assert_eq!(request.parent_span_id, call.span_context.span_id());
    // The other request continued the other call's trace, not the caller's.
    let other = requests
        .iter()
        .find(|s| s.span_context.trace_id() != caller.span_context.trace_id())
        .unwrap();
    assert!(calls
        .iter()
        .any(|c| c.span_context.span_id() == other.parent_span_id));
}
