//! The OpenTelemetry tracer provider: exporting over OTLP/gRPC, or keeping spans in the process
//! only (they still get trace and span ids, for logs and propagation).
//!
//! The exporter's gRPC channel lives on a small runtime of its own ([`ExportRuntime`], one
//! thread), not on the application's. The batch processor exports from its own thread, and the
//! channel needs a runtime to make progress; with a runtime of its own, flushing at shutdown
//! works from anywhere — inside `#[tokio::main]` as it returns, on a current-thread runtime,
//! or after the application's runtime has stopped — without deadlocking on a runtime that is
//! busy waiting for the flush.

use std::io;
use std::thread::JoinHandle;

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

const SERVICE_NAME: &str = "service.name";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
const SERVICE_VERSION: &str = "service.version";

/// A one-thread Tokio runtime the OTLP channel runs on. Dropping it stops the thread.
pub(crate) struct ExportRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ExportRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportRuntime").field("running", &self.thread.is_some()).finish()
    }
}

impl ExportRuntime {
    fn start() -> io::Result<(Self, tokio::runtime::Handle)> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("tern-otlp".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(rt.handle().clone()));
            // Serves the channel's tasks until told to stop (or the sender is dropped).
            rt.block_on(async move {
                let _ = stopped.await;
            });
        })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the OTLP exporter thread ended before starting its runtime"))??;
        Ok((Self { stop: Some(stop), thread: Some(thread) }, handle))
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This process's name for `service.instance.id`: `HOST/PID`.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", std::process::id())
}

/// The resource spans are reported under: what the SDK reads from `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`, with `service.name` = `service` unless those name one, and
/// `service.instance.id` = `HOST/PID` unless given.
pub(crate) fn resource(service: &str) -> Resource {
    let detected = Resource::builder().build();
    let mut builder = Resource::builder();
    let named = detected
        .get(&SERVICE_NAME.into())
        .is_some_and(|v| !v.as_str().is_empty() && !v.as_str().starts_with("unknown_service"));
    if !named {
        builder = builder.with_service_name(service.to_owned());
    }
    if detected.get(&SERVICE_INSTANCE_ID.into()).is_none() {
        builder = builder.with_attribute(KeyValue::new(SERVICE_INSTANCE_ID, instance_id()));
    }
    if detected.get(&SERVICE_VERSION.into()).is_none() {
        builder = builder.with_attribute(KeyValue::new(SERVICE_VERSION, env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

/// A provider that gives spans ids and exports nothing.
pub(crate) fn local_provider(service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder().with_resource(resource(service)).build()
}

/// A provider exporting over OTLP/gRPC through a batch processor. The exporter reads the
/// `OTEL_EXPORTER_OTLP_*` variables (endpoint, headers, timeout, compression) unless `endpoint`
/// is given; the batch processor reads `OTEL_BSP_*` (`OTEL_BSP_SCHEDULE_DELAY` in ms, ...); the
/// sampler `OTEL_TRACES_SAMPLER`/`_ARG`.
pub(crate) fn exporting_provider(
    service: &str,
    endpoint: Option<&str>,
) -> Result<(SdkTracerProvider, ExportRuntime), String> {
    let (runtime, handle) = ExportRuntime::start().map_err(|e| format!("cannot start the exporter thread: {e}"))?;
    let exporter = {
        // The channel spawns its connection tasks on the runtime current when it is built.
        let _on_export_runtime = handle.enter();
        let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        match endpoint {
            Some(endpoint) => builder.with_endpoint(endpoint).build(),
            None => builder.build(),
        }
    }
    .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let provider = SdkTracerProvider::builder().with_resource(resource(service)).with_batch_exporter(exporter).build();
    Ok((provider, runtime))
}
