use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::*;

fn settings(vars: &[(&str, &str)]) -> Settings {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    Settings::from_env(|k| vars.get(k).cloned())
}

#[test]
fn the_environment_decides_filter_format_and_export() {
    let s = settings(&[]);
    assert_eq!((s.filter.as_str(), s.json, s.otel, s.export), ("info,opentelemetry=warn", false, true, false));
    assert!(s.problems.is_empty());

    assert_eq!(settings(&[("RUST_LOG", "debug")]).filter, "debug,opentelemetry=warn");
    assert_eq!(settings(&[("TERN_LOG", "info,opentelemetry=debug")]).filter, "info,opentelemetry=debug");
    assert_eq!(
        settings(&[("RUST_LOG", "debug"), ("TERN_LOG", "warn,tern_worker=debug")]).filter,
        "warn,tern_worker=debug,opentelemetry=warn"
    );
    assert!(settings(&[("TERN_LOG_FORMAT", "JSON")]).json);
    let odd = settings(&[("TERN_LOG_FORMAT", "xml")]);
    assert!(!odd.json && odd.problems.len() == 1, "{odd:?}");

    assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]).export);
    assert!(settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")]).export);
    assert!(!settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).export, "an empty endpoint is no endpoint");
    assert!(!settings(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=b")]).export);
    let none = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4317"), ("OTEL_TRACES_EXPORTER", "none")]);
    assert!(none.otel && !none.export);
    let off = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4317"), ("OTEL_SDK_DISABLED", "TRUE")]);
    assert!(!off.otel && !off.export);
}

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_owned).collect()
    }
}

/// Runs `f` under the subscriber `init` would install (with a tracer that exports nothing) and
/// returns the log lines it wrote.
fn logs_of(vars: &[(&str, &str)], f: impl FnOnce()) -> Vec<String> {
    let settings = settings(vars);
    let out = Captured::default();
    let writer = {
        let out = out.clone();
        move || out.clone()
    };
    let provider = otlp::local_provider("tern-test");
    let tracer = settings.otel.then(|| provider.tracer("tern"));
    let (subscriber, problem) = subscriber(&settings, writer, false, tracer);
    assert_eq!(problem, None);
    tracing::subscriber::with_default(subscriber, f);
    out.lines()
}

fn ids_of(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    assert!(sc.is_valid(), "the span has an OpenTelemetry context");
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

#[test]
fn json_lines_carry_the_span_fields_and_the_trace_ids() {
    let mut ids = None;
    let lines = logs_of(&[("TERN_LOG_FORMAT", "json")], || {
        tracing::info!("before any span");
        let outer = tracing::info_span!("bus.handle", consumer = "failover");
        let _outer = outer.enter();
        let command = tracing::info_span!("command", vm = "vm-00001", attempt = 2u32);
        let _command = command.enter();
        tracing::info!(outcome = "succeeded", "command finished");
        ids = Some(ids_of(&command));
    });
    let (trace_id, span_id) = ids.unwrap();
    let json: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    assert_eq!(json.len(), 2, "{lines:?}");
    assert_eq!(json[0]["fields"]["message"], "before any span");
    assert!(json[0].get("trace_id").is_none(), "no span, no trace id: {}", lines[0]);

    let line = &json[1];
    assert_eq!(line["fields"]["message"], "command finished", "{}", lines[1]);
    assert_eq!(line["fields"]["outcome"], "succeeded");
    assert_eq!(line["span"]["name"], "command");
    assert_eq!(line["span"]["vm"], "vm-00001");
    assert_eq!(line["span"]["attempt"], 2);
    assert_eq!(line["spans"][0]["consumer"], "failover", "the ancestors are listed too");
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["span_id"], span_id.as_str());
}

#[test]
fn human_lines_end_with_the_trace_ids() {
    let mut ids = None;
    let lines = logs_of(&[], || {
        tracing::info!("before any span");
        let span = tracing::info_span!("command", vm = "vm-00001");
        let _entered = span.enter();
        tracing::warn!(code = "TERN-X", "phase refused");
        ids = Some(ids_of(&span));
    });
    let (trace_id, span_id) = ids.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with("before any span"), "{}", lines[0]);
    assert!(lines[1].contains("command{vm=\"vm-00001\"}") || lines[1].contains("command{vm=vm-00001}"), "{}", lines[1]);
    assert!(lines[1].contains("phase refused code=\"TERN-X\""), "{}", lines[1]);
    assert!(lines[1].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")), "{}", lines[1]);
}

#[test]
fn a_span_continues_the_trace_it_was_given() {
    // What the bus consumer does with the `traceparent` of a message.
    let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let parent = {
        use opentelemetry::propagation::TextMapPropagator;
        let carrier = HashMap::from([("traceparent".to_owned(), remote.to_owned())]);
        TraceContextPropagator::new().extract(&carrier)
    };
    let lines = logs_of(&[("TERN_LOG_FORMAT", "json")], || {
        let span = tracing::info_span!("bus.handle");
        span.set_parent(parent).unwrap();
        span.in_scope(|| tracing::info!("handling"));
    });
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{}", lines[0]);
    assert_ne!(line["span_id"], "00f067aa0ba902b7", "a span of its own, child of the remote one");
}

#[test]
fn spans_the_tracer_does_not_see_take_their_parents_ids() {
    let mut ids = None;
    let lines = logs_of(&[("TERN_LOG", "debug"), ("TERN_LOG_FORMAT", "json")], || {
        let span = tracing::info_span!("command");
        let _entered = span.enter();
        let detail = tracing::debug_span!("detail");
        detail.in_scope(|| tracing::debug!("inside a debug span"));
        ids = Some(ids_of(&span));
    });
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["span"]["name"], "detail");
    assert_eq!(line["trace_id"], ids.unwrap().0.as_str(), "{}", lines[0]);
}

#[test]
fn with_the_sdk_disabled_lines_have_no_trace_ids() {
    let lines = logs_of(&[("OTEL_SDK_DISABLED", "true"), ("TERN_LOG_FORMAT", "json")], || {
        let span = tracing::info_span!("command");
        span.in_scope(|| tracing::info!("handling"));
    });
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["span"]["name"], "command");
    assert!(line.get("trace_id").is_none(), "{}", lines[0]);
}

#[test]
fn an_invalid_filter_falls_back_to_info_and_says_so() {
    let s = settings(&[("TERN_LOG", "tern=[")]);
    let (_, problem) = subscriber(&s, io::sink, false, None);
    assert!(problem.is_some_and(|p| p.contains("tern=[")));
}

#[test]
fn init_twice_is_harmless() {
    let first = init("tern-test");
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        assert!(!first.is_exporting(), "no endpoint, nothing exported");
    }
    let second = init("tern-test");
    assert!(!second.is_exporting());
    // The first call installed the W3C propagator and a tracer: spans have contexts to propagate.
    let span = tracing::info_span!("work");
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&span.context(), &mut carrier));
    assert!(carrier.get("traceparent").is_some_and(|t| t.starts_with("00-")), "{carrier:?}");
    second.shutdown();
    drop(first);
}
