//! `tern-worker`: the runtime Tern's phase workers (`tern-failover`, `tern-reprotect`,
//! `tern-cleanup`) share.
//!
//! For each command: claim it with a KV operation record (the fence) → settle with Azure
//! (already done, a job to attach to, or start one) → record the job before waiting → keep the
//! claim and the message alive while ASR works → publish `started`, `progress` and a terminal
//! event → ack. A replacement worker attaches to the recorded job; a stale one finds its claim
//! gone and backs off. Each worker also serves `/healthz`, `/readyz` and `/metrics`.
//!
//! How a service starts — settings, bus and Azure client, endpoints, signals — is
//! `tern-service`'s; this crate holds what only workers do.

pub mod config;
pub mod events;
pub mod fence;
pub mod metrics;
pub mod runtime;
pub mod vaults;

pub use config::WorkerConfig;
pub use events::Emitter;
pub use fence::{Claim, ClaimGuard, Fence, FenceError, OperationRecord, Sightings};
pub use metrics::Metrics;
pub use runtime::{CommandRun, Failure, PhaseHandler, WorkerContext, run_worker};
pub use vaults::{Vault, Vaults};

/// Runs a worker binary: arguments, settings and telemetry as every service starts
/// ([`tern_service::start`]: `--config FILE`, `TERN_*`), until SIGINT/SIGTERM. Spans still
/// buffered are exported as it returns.
pub async fn main_for(handler: std::sync::Arc<dyn PhaseHandler>) -> anyhow::Result<()> {
    let about = format!(
        "A Tern phase worker: takes {} commands from the bus and runs them against Azure.",
        handler.queue().name()
    );
    // Held to the end: dropping it flushes the spans of the drained commands.
    let (config, _telemetry) = tern_service::start::<WorkerConfig>(handler.service(), &about)?;
    let shutdown = tern_service::stop_on_signal();
    run_worker(config, handler, shutdown).await
}
