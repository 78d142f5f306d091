//! `tern-planner`: the planner binary (gRPC API + plan progression).
//!
//! Settings as for the workers (`--config FILE`, then `TERN_*`): `TERN_NATS_URL`,
//! `TERN_ASR__*`, `TERN_ASR_TOKEN`, `TERN_LISTEN` for the gRPC address and `TERN_METRICS_LISTEN`
//! for `/healthz` and `/metrics`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => file = args.next().map(std::path::PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "tern-planner: Tern's planner (gRPC API and plan progression).\n\nUsage: tern-planner [--config FILE]\n\nSettings: defaults, FILE (TOML), then TERN_* variables (TERN_NATS_URL, TERN_ASR__ENDPOINT,\nTERN_ASR__SUBSCRIPTION_ID, TERN_ASR__RESOURCE_GROUP, TERN_ASR__VAULT, TERN_ASR_TOKEN, TERN_LISTEN = gRPC address,\nTERN_METRICS_LISTEN = /healthz and /metrics)."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let _telemetry = tern_telemetry::init("tern-planner");
    let config = tern_worker::WorkerConfig::load(file.as_deref(), std::env::vars()).map_err(|e| anyhow::anyhow!(e))?;
    let (bus, asr) = tern_worker::connect(&config, "tern-planner").await?;
    let service = tern_planner::PlannerService::new(bus, asr).await?;
    let shutdown = tern_worker::stop_on_signal();
    let (addr, server) = tern_planner::serve_grpc(service.clone(), config.listen, shutdown.clone()).await?;
    // `/healthz` and `/metrics`, on their own port (TERN_METRICS_LISTEN, default: any free one).
    let metrics_listen = match std::env::var("TERN_METRICS_LISTEN") {
        Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("TERN_METRICS_LISTEN={v:?}: {e}"))?,
        Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let http = tern_planner::metrics::serve(metrics_listen, service.clone()).await?;
    println!("{}", serde_json::json!({"service": "tern-planner", "grpc": addr.to_string(), "http": http.to_string()}));
    tracing::info!(%addr, "planner ready");
    service.run_progression(shutdown).await?;
    let _ = server.await;
    Ok(())
}
