//! Tern's telemetry, set up by one call in every binary: logs (`tracing`), OpenTelemetry traces
//! exported over OTLP when the standard `OTEL_*` variables ask for it, W3C trace-context
//! propagation, and the Prometheus metrics registry every service renders at `/metrics`
//! ([`metrics`]).
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     let _telemetry = tern_telemetry::init("tern-example");
//!     // ... run; spans still buffered are exported when `_telemetry` is dropped.
//! }
//! ```
//!
//! What [`init`] reads from the environment:
//!
//! | Variable | Effect |
//! |---|---|
//! | `TERN_LOG`, else `RUST_LOG` | Log filter (`EnvFilter` directives); default `info`. The OpenTelemetry SDK's own messages are held to `warn` unless the filter names `opentelemetry` |
//! | `TERN_LOG_FORMAT` | `json` for one JSON object per line; anything else: human lines |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | Either one set: export spans over OTLP/gRPC there. Neither: export nothing |
//! | `OTEL_EXPORTER_OTLP_*` (headers, timeout, compression, …) | Read by the exporter |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | Resource; `service.name` defaults to the name given to [`init`] |
//! | `OTEL_BSP_SCHEDULE_DELAY` (ms) and other `OTEL_BSP_*` | Batch span processor |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | Sampler (default: parent-based, always on) |
//! | `OTEL_TRACES_EXPORTER=none` | Export nothing even with an endpoint |
//! | `OTEL_SDK_DISABLED=true` | No OpenTelemetry at all: no export, no trace ids in logs, nothing propagated |
//!
//! Without an endpoint, spans still get OpenTelemetry trace and span ids (kept in the process,
//! exported nowhere): log lines carry them and the bus propagates them in `traceparent`
//! headers, so the logs of every service a request crossed can be joined by `trace_id`.
//!
//! Log lines carry `trace_id` and `span_id` (of the innermost span with an OpenTelemetry
//! context); JSON lines also have the current span (`span`) and its ancestors (`spans`) with
//! their fields, and the event's own fields under `fields`.
//!
//! Spans (not log lines) at `info` and above are traced, whatever the log filter says; the
//! HTTP/2 and gRPC libraries' own spans are not.

pub mod metrics;
pub mod receiver;

mod logs;
mod otlp;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::logs::{DispatchCapture, DispatchCell, WithTraceIds};
use crate::otlp::ExportRuntime;

/// What the environment asks for (see the crate documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    /// `EnvFilter` directives for the logs.
    filter: String,
    /// JSON log lines.
    json: bool,
    /// Install the OpenTelemetry layer (trace ids, propagation).
    otel: bool,
    /// Export spans over OTLP.
    export: bool,
    /// Unknown or unusable settings, to log once logging works.
    problems: Vec<String>,
}

impl Settings {
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut filter = set("TERN_LOG").or_else(|| set("RUST_LOG")).unwrap_or_else(|| "info".into());
        if !filter.contains("opentelemetry") {
            // The SDK's own diagnostics: only its warnings and errors (failed exports), unless asked.
            filter.push_str(",opentelemetry=warn");
        }
        let json = match set("TERN_LOG_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
            Some("json") => true,
            None | Some("human" | "text" | "pretty" | "full") => false,
            Some(other) => {
                problems.push(format!("TERN_LOG_FORMAT={other:?} is not known (json or human): logging human lines"));
                false
            }
        };
        let otel = !set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter_none = set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        Self { filter, json, otel, export: otel && endpoint && !exporter_none, problems }
    }
}

/// Keeps telemetry running; flushes and stops the span exporter when dropped or
/// [`shut down`](Telemetry::shutdown). Hold it in `main` until the end:
/// `let _telemetry = tern_telemetry::init("tern-planner");` (not `let _ = …`, which drops it at
/// once).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    runtime: Option<ExportRuntime>,
    exporting: bool,
}

impl Telemetry {
    fn inert() -> Self {
        Self { provider: None, runtime: None, exporting: false }
    }

    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the spans still buffered (waiting at most about 5 s for the collector), then
    /// stops the exporter. Spans started afterwards are not recorded. Same as dropping.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        let Some(provider) = self.provider.take() else { return };
        let runtime = self.runtime.take();
        let exporting = self.exporting;
        let finish = move || {
            // Blocks until the batch processor has exported what it holds; the export runs on
            // the exporter's own runtime (see `otlp`), never on the caller's.
            if let Err(e) = provider.shutdown()
                && exporting
            {
                tracing::warn!(error = %e, "flushing spans at shutdown failed; some spans may be lost");
            }
            drop(runtime);
        };
        // On a multi-thread runtime's worker, let the runtime move other tasks off this thread
        // while it blocks; elsewhere (a current-thread runtime, `block_on`'s thread, no runtime)
        // just block.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(finish);
            }
            _ => finish(),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.close();
    }
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Sets up logs, trace propagation and (when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set) span export for the process `service`; see the
/// crate documentation for the variables read. Call it once, early in `main`, inside the Tokio
/// runtime or not. A second call changes nothing and returns an inert guard; so does a call in
/// a process where another global `tracing` subscriber is already installed.
pub fn init(service: &str) -> Telemetry {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Telemetry::inert();
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let settings = Settings::from_env(|k| std::env::var(k).ok());
    let mut problems = settings.problems.clone();
    let mut runtime = None;
    let provider = settings.otel.then(|| {
        if settings.export {
            match otlp::exporting_provider(service, None) {
                Ok((provider, rt)) => {
                    runtime = Some(rt);
                    return provider;
                }
                Err(e) => problems.push(format!("{e}; exporting no spans")),
            }
        }
        otlp::local_provider(service)
    });
    let exporting = runtime.is_some();
    let tracer = provider.as_ref().map(|p| p.tracer("tern"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let (subscriber, filter_problem) = subscriber(&settings, std::io::stderr, ansi, tracer);
    problems.extend(filter_problem);
    if subscriber.try_init().is_err() {
        // Another subscriber was installed first: leave it alone and record nothing.
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Telemetry::inert();
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    for problem in problems {
        tracing::warn!("telemetry: {problem}");
    }
    tracing::debug!(service, exporting, json = settings.json, "telemetry set up");
    Telemetry { provider, runtime, exporting }
}

/// Which spans go to OpenTelemetry: `info` and above, except the transport libraries' own
/// (which include the OTLP exporter's requests).
fn otel_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

/// The subscriber: the log layer (filtered by `settings.filter`) writing to `writer`, the
/// OpenTelemetry layer when there is a tracer, and the capture of the installed dispatch the log
/// formatter reads trace ids through. Also returns a complaint about an invalid filter.
fn subscriber<W>(
    settings: &Settings,
    writer: W,
    ansi: bool,
    tracer: Option<SdkTracer>,
) -> (impl Subscriber + Send + Sync + 'static, Option<String>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, problem) = match EnvFilter::try_new(&settings.filter) {
        Ok(f) => (f, None),
        Err(e) => {
            (EnvFilter::new("info"), Some(format!("log filter {:?} is invalid ({e}): using info", settings.filter)))
        }
    };
    let dispatch = DispatchCell::default();
    let log_layer: Box<dyn Layer<Registry> + Send + Sync> = if settings.json {
        let format = tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(true);
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds { inner: format, json: true, dispatch: dispatch.clone() })
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    } else {
        let format = tracing_subscriber::fmt::format().with_ansi(ansi);
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .event_format(WithTraceIds { inner: format, json: false, dispatch: dispatch.clone() })
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    };
    let otel_layer = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t).with_filter(otel_filter()));
    let subscriber = tracing_subscriber::registry().with(log_layer).with(otel_layer).with(DispatchCapture(dispatch));
    (subscriber, problem)
}

#[cfg(test)]
mod tests;
