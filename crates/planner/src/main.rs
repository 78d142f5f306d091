//! `tern-planner`: the planner binary (gRPC API + plan progression).
//!
//! Settings as for the workers (`--config FILE`, then `TERN_*`): `TERN_NATS_URL`,
//! `TERN_ASR__*`, `TERN_ASR_TOKEN`, `TERN_LISTEN` for the gRPC address and `TERN_METRICS_LISTEN`
//! for `/healthz` and `/metrics`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let usage = "tern-planner: Tern's planner (gRPC API and plan progression).\n\nUsage: tern-planner [--config FILE]\n\nSettings: defaults, FILE (TOML), then TERN_* variables (TERN_NATS_URL, TERN_ASR__ENDPOINT,\nTERN_ASR__SUBSCRIPTION_ID, TERN_ASR__RESOURCE_GROUP, TERN_ASR__VAULT, TERN_ASR_TOKEN, TERN_LISTEN = gRPC address,\nTERN_METRICS_LISTEN = /healthz and /metrics).";
    let Some(config) = tern_worker::config_from_args(usage)? else { return Ok(()) };
    let _telemetry = tern_telemetry::init("tern-planner");
    let (bus, asr) = tern_worker::connect(&config, "tern-planner").await?;
    let service = tern_planner::PlannerService::new(bus, asr).await?;
    let shutdown = tern_worker::stop_on_signal();
    let (addr, server) = tern_planner::serve_grpc(service.clone(), config.listen, shutdown.clone()).await?;
    // `/healthz` and `/metrics`, on their own port (TERN_METRICS_LISTEN, default: any free one).
    let http = tern_planner::metrics::serve(config.metrics_listen, service.clone()).await?;
    println!("{}", serde_json::json!({"service": "tern-planner", "grpc": addr.to_string(), "http": http.to_string()}));
    tracing::info!(%addr, "planner ready");
    service.run_progression(shutdown).await?;
    let _ = server.await;
    Ok(())
}
