//! `tern-planner`: the planner binary (gRPC API + plan progression).
//!
//! Started as every service ([`tern_service::start`]: `--config FILE`, then `TERN_*`):
//! `TERN_NATS_URL`, `TERN_ASR__*`, `TERN_ASR_TOKEN`, `TERN_LISTEN` for the gRPC address and
//! `TERN_METRICS_LISTEN` for `/healthz` and `/metrics` ([`tern_planner::PlannerConfig`]).

use tern_planner::PlannerConfig;

const ABOUT: &str = "Tern's planner: the gRPC API (tern.v1.Planner) and plan progression. \
                     TERN_LISTEN is the gRPC address, TERN_METRICS_LISTEN serves /healthz and /metrics.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _telemetry) = tern_service::start::<PlannerConfig>("tern-planner", ABOUT)?;
    let (bus, asr) = tern_service::connect(&config.service, "tern-planner").await?;
    let service = tern_planner::PlannerService::new(bus, asr).await?;
    let shutdown = tern_service::stop_on_signal();
    let auth = config.api.load().map_err(anyhow::Error::msg)?;
    let tls = config.api.tls().map_err(anyhow::Error::msg)?;
    let (addr, server) =
        tern_planner::serve_grpc_tls(service.clone(), config.service.listen, auth, tls, shutdown.clone()).await?;
    // `/healthz` and `/metrics`, on their own port (TERN_METRICS_LISTEN, default: any free one).
    let http = tern_planner::metrics::serve(config.metrics_listen, service.clone()).await?;
    println!(
        "{}",
        serde_json::json!({
            "service": "tern-planner",
            "grpc": addr.to_string(),
            "tls": config.api.tls_enabled(),
            "http": http.to_string(),
        })
    );
    tracing::info!(%addr, "planner ready");
    service.run_progression_watching(shutdown, config.watchdog_interval()).await?;
    let _ = server.await;
    Ok(())
}
