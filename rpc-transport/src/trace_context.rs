//! W3C Trace Context across a call: the caller's span goes in the request's
//! metadata as `traceparent`, and the server's `rpc.request` span continues it
//! (feature `opentelemetry`, with `tracing-opentelemetry`'s layer installed by the
//! program).
//!
//! The header is `version-traceid-parentid-flags` in lowercase hex
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>). A header that does not
//! parse is ignored (the server's span then starts a trace of its own), as the
//! recommendation asks; its length is checked before anything else is read.

use std::collections::BTreeMap;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The metadata key, as W3C and gRPC's OpenTelemetry integration spell it.
pub const TRACEPARENT: &str = "traceparent";

/// Length of a version-00 header: 2 + 1 + 32 + 1 + 16 + 1 + 2.
const LEN: usize = 55;

/// Adds `span`'s trace context to `meta` (nothing when it has none, or the caller
/// set a `traceparent` of its own).
pub(crate) fn inject(span: &tracing::Span, meta: &mut BTreeMap<String, String>) {
    if meta.contains_key(TRACEPARENT) {
        return;
    }
    let cx = span.context();
    if let Some(header) = format(cx.span().span_context()) {
        meta.insert(TRACEPARENT.to_string(), header);
    }
}

/// Makes `span` a child of the remote span named in `meta`, if any parses.
pub(crate) fn continue_from(span: &tracing::Span, meta: &BTreeMap<String, String>) {
    if let Some(sc) = meta.get(TRACEPARENT).and_then(|h| parse(h)) {
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

/// The `traceparent` header of a valid span context.
pub fn format(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// A remote span context from a `traceparent` header; `None` for anything the
/// recommendation says to ignore (wrong length or separators, upper-case or non-hex
/// digits, version `ff`, all-zero ids, a version-00 header with trailing data).
pub fn parse(header: &str) -> Option<SpanContext> {
    let b = header.as_bytes();
    if b.len() < LEN || !header.is_ascii() {
        return None;
    }
    let version = &header[0..2];
    if !is_hex(version) || version == "ff" {
        return None;
    }
    // Later versions may add fields after a dash; version 00 has none.
    if (version == "00" && b.len() != LEN) || (b.len() > LEN && b[LEN] != b'-') {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&header[3..35], &header[36..52], &header[53..55]);
    if !(is_hex(trace) && is_hex(parent) && is_hex(flags)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(parent).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Lowercase hex digits only.
fn is_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendations_example_parses_and_prints_the_same() {
        let sc = parse(GOOD).unwrap();
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format(&sc).as_deref(), Some(GOOD));
    }

    #[test]
    fn what_the_recommendation_says_to_ignore_is_ignored() {
        let bad = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ];
        for h in bad {
            assert!(parse(h).is_none(), "{h:?} parsed");
        }
    }

    #[test]
    fn a_later_version_with_more_fields_keeps_the_first_four() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-whatever";
        let sc = parse(later).unwrap();
        assert!(!sc.is_sampled());
        assert!(parse(&later.replace("-whatever", "xwhatever")).is_none());
    }

    #[test]
    fn an_invalid_context_gives_no_header() {
        assert_eq!(format(&SpanContext::empty_context()), None);
    }
}
