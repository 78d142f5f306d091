//! `tern-worker`: the runtime Tern's phase workers (`tern-failover`, `tern-reprotect`,
//! `tern-cleanup`) share.
//!
//! For each command: claim it with a KV operation record (the fence) → settle with Azure
//! (already done, a job to attach to, or start one) → record the job before waiting → keep the
//! claim and the message alive while ASR works → publish `started`, `progress` and a terminal
//! event → ack. A replacement worker attaches to the recorded job; a stale one finds its claim
//! gone and backs off. Each worker also serves `/healthz`, `/readyz` and `/metrics`.

pub mod config;
pub mod events;
pub mod fence;
pub mod metrics;
pub mod runtime;
pub mod serve;

pub use config::WorkerConfig;
pub use events::Emitter;
pub use fence::{Claim, ClaimGuard, Fence, FenceError, OperationRecord};
pub use metrics::Metrics;
pub use runtime::{CommandRun, Failure, PhaseHandler, WorkerContext, connect, run_worker};

/// Runs a worker binary: config from `--config FILE` and `TERN_*`, telemetry set up by
/// [`tern_telemetry::init`] (logs to stderr, spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set), stops gracefully on SIGINT/SIGTERM. Spans still buffered are exported as it
/// returns.
pub async fn main_for(handler: std::sync::Arc<dyn PhaseHandler>) -> anyhow::Result<()> {
    let usage = format!(
        "{service}: a Tern phase worker.\n\nUsage: {service} [--config FILE]\n\nSettings: defaults, then FILE (TOML), then TERN_* environment variables\n(TERN_NATS_URL, TERN_ASR__ENDPOINT, TERN_ASR__SUBSCRIPTION_ID, TERN_ASR__RESOURCE_GROUP,\nTERN_ASR__VAULT, TERN_ASR_TOKEN, TERN_CONCURRENCY, TERN_LISTEN, TERN_BUDGET, ...; '__' nests).",
        service = handler.service()
    );
    let Some(config) = config_from_args(&usage)? else { return Ok(()) };
    // Held to the end: dropping it flushes the spans of the drained commands.
    let _telemetry = tern_telemetry::init(handler.service());
    let shutdown = stop_on_signal();
    run_worker(config, handler, shutdown).await
}

/// A service binary's command line: `--config FILE` (then `TERN_*` variables) gives the
/// settings; `--help` prints `usage` and gives `None`; anything else is an error.
pub fn config_from_args(usage: &str) -> anyhow::Result<Option<WorkerConfig>> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => file = args.next().map(std::path::PathBuf::from),
            "--help" | "-h" => {
                println!("{usage}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    WorkerConfig::load(file.as_deref(), std::env::vars()).map(Some).map_err(|e| anyhow::anyhow!(e))
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        stop.cancel();
    });
    shutdown
}
