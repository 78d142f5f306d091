//! W3C trace-context propagation through NATS headers (`traceparent`, `tracestate`), so a span
//! started in one service continues in the next.

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the trace context of `cx` into `headers`. Writes nothing if `cx` has no valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Writes the trace context of the current `tracing` span (through its OpenTelemetry layer).
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current().context(), headers);
}

/// Reads the trace context carried by `headers` (an empty context when there is none).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The `traceparent` value of `cx` (empty when it has no valid span), to store with a record.
pub fn traceparent(cx: &Context) -> String {
    let mut map = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut map);
    map.remove("traceparent").unwrap_or_default()
}

/// The context a stored `traceparent` names (an empty context when it is empty or invalid).
pub fn from_traceparent(traceparent: &str) -> Context {
    let map = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn a_context_survives_the_round_trip_through_headers() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = HeaderMap::new();
        inject(&Context::new().with_remote_span_context(sc.clone()), &mut headers);
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = extract(&headers);
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn a_stored_traceparent_names_the_same_span() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = from_traceparent(text);
        assert_eq!(cx.span().span_context().trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(traceparent(&cx), text);
        assert_eq!(traceparent(&from_traceparent("")), "");
    }

    #[test]
    fn no_headers_means_no_parent() {
        let cx = extract(&HeaderMap::new());
        assert!(!cx.span().span_context().is_valid());
    }
}
