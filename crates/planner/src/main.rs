//! `tern-planner`: the planner binary (gRPC API + plan progression).
//!
//! Settings as for the workers (`--config FILE`, then `TERN_*`): `TERN_NATS_URL`,
//! `TERN_ASR__*`, `TERN_ASR_TOKEN`, and `TERN_LISTEN` for the gRPC address.

use std::time::Duration;

use tern_asr::{AsrClient, FleetBudget, TokenProvider, Unlimited};
use tern_bus::{Bus, Topology};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => file = args.next().map(std::path::PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "tern-planner: Tern's planner (gRPC API and plan progression).\n\nUsage: tern-planner [--config FILE]\n\nSettings: defaults, FILE (TOML), then TERN_* variables (TERN_NATS_URL, TERN_ASR__ENDPOINT,\nTERN_ASR__SUBSCRIPTION_ID, TERN_ASR__RESOURCE_GROUP, TERN_ASR__VAULT, TERN_ASR_TOKEN, TERN_LISTEN = gRPC address)."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    tracing_subscriber_init();
    let config = tern_worker::WorkerConfig::load(file.as_deref(), std::env::vars()).map_err(|e| anyhow::anyhow!(e))?;
    let bus = Bus::connect(&config.nats_url, "tern-planner").await?;
    if config.ensure_topology {
        bus.ensure_topology(&Topology::default()).await?;
    }
    let tokens = match &config.asr_token {
        Some(t) => TokenProvider::static_token(t.clone()),
        None => TokenProvider::from_env(&config.asr.scope())?,
    };
    let budget: std::sync::Arc<dyn tern_asr::Budget> = match config.budget {
        Some(b) => std::sync::Arc::new(FleetBudget::new(&bus, &config.asr.subscription_id, b).await?),
        None => std::sync::Arc::new(Unlimited),
    };
    let mut asr_config = config.asr.clone();
    asr_config.poll_interval = Duration::from_secs_f64(config.poll_interval_secs);
    let asr = AsrClient::new(asr_config, tokens, budget)?;
    let service = tern_planner::PlannerService::new(bus, asr).await?;
    let shutdown = CancellationToken::new();
    let (addr, server) = tern_planner::serve_grpc(service.clone(), config.listen, shutdown.clone()).await?;
    println!("{}", serde_json::json!({"service": "tern-planner", "grpc": addr.to_string()}));
    tracing::info!(%addr, "planner ready");
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
    service.run_progression(shutdown).await?;
    let _ = server.await;
    Ok(())
}

fn tracing_subscriber_init() {
    let filter = std::env::var("TERN_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()))
        .try_init();
}
