//! `tern-service`: what every Tern service (the planner and the phase workers) starts with.
//!
//! A service binary calls [`start`] (its command line with clap, its settings from the file and
//! the `TERN_*` variables, telemetry), [`connect`] (the bus, and the Azure client with its token
//! source and the [`FleetBudget`]), [`serve`] (`/healthz`, `/readyz`, `/metrics`) and
//! [`stop_on_signal`]; then runs its own loop. Nothing here knows plans or commands.

pub mod budget;
pub mod config;
pub mod metrics;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use tern_asr::{AsrClient, AsrError, TokenProvider, Unlimited};
use tern_bus::{Bus, BusError, Identity, NatsAuth, Topology};

pub use budget::FleetBudget;
pub use config::{ConfigError, ServiceConfig, Settings};
pub use serve::{Endpoints, Readiness, Scrape, serve};

/// A service's command line. Everything else comes from the settings file and `TERN_*`.
#[derive(clap::Parser, Debug)]
#[command(version)]
pub struct ServiceArgs {
    /// Settings file (TOML): over the defaults, under the TERN_* variables.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// Parses this process's arguments as `service`'s (with `about` and `S`'s variables in
    /// `--help`). `--help` and `--version` print and exit 0; an unknown argument exits 2 with
    /// clap's error.
    pub fn parse<S: Settings>(service: &'static str, about: &str) -> Self {
        let settings = format!(
            "Settings: defaults, then FILE (TOML), then TERN_* variables, one per key ('__' nests: \
             TERN_ASR__VAULT is asr.vault):\n  {}\nLogs: TERN_LOG (filter), TERN_LOG_FORMAT=json; traces: OTEL_EXPORTER_OTLP_ENDPOINT.",
            config::variables::<S>().join(", ")
        );
        let command = Self::command().name(service).bin_name(service).about(about.to_owned()).after_help(settings);
        Self::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// The settings: defaults, then `--config FILE`, then this process's `TERN_*` variables.
    pub fn settings<S: Settings>(&self) -> Result<S, ConfigError> {
        config::load(self.config.as_deref(), std::env::vars())
    }
}

/// A service binary's start: its arguments ([`ServiceArgs::parse`]), its settings, then
/// telemetry ([`tern_telemetry::init`]: logs to stderr, spans over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Hold the returned guard until `main` returns: dropping
/// it exports the spans still buffered.
pub fn start<S: Settings>(service: &'static str, about: &str) -> Result<(S, tern_telemetry::Telemetry), ConfigError> {
    let settings = ServiceArgs::parse::<S>(service, about).settings()?;
    Ok((settings, tern_telemetry::init(service)))
}

/// Why a service could not reach the bus or set up its Azure client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// NATS: connecting, the topology or the budget bucket.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Setting up the topology was refused: these credentials are not the bootstrap identity's.
    #[error(
        "setting up the bus was refused: {reason} (only the bootstrap identity may create streams, consumers and \
         buckets: run `tern bus ensure` with its credentials, and start services with TERN_ENSURE_TOPOLOGY=false)"
    )]
    NotBootstrap {
        /// What NATS said.
        reason: String,
    },
    /// The Azure client or its credentials.
    #[error(transparent)]
    Asr(#[from] AsrError),
    /// The streams, consumers and buckets could not be set up with the configured replicas.
    #[error(
        "setting up the bus with {replicas} replicas failed: {reason} (a single nats-server holds one \
         replica: set TERN_REPLICAS=1 there; a cluster needs at least as many JetStream servers)"
    )]
    Topology {
        /// The configured replicas.
        replicas: usize,
        /// What NATS said.
        reason: String,
    },
}

/// Connects `service` to the bus (setting up the topology unless told not to) and builds its
/// Azure client: a fixed token or the credential chain, the fleet-wide budget (or none), and a
/// `User-Agent` naming the service.
pub async fn connect(config: &ServiceConfig, service: &str) -> Result<(Bus, AsrClient), ConnectError> {
    let bus = connect_bus(config, service).await?;
    if config.ensure_topology {
        let topology = Topology { replicas: config.replicas, ..Topology::default() };
        bus.ensure_topology(&topology).await.map_err(|e| {
            let reason = e.to_string();
            if reason.contains("ermission") {
                ConnectError::NotBootstrap { reason }
            } else {
                ConnectError::Topology { replicas: config.replicas, reason }
            }
        })?;
    }
    let tokens = match &config.asr_token {
        Some(t) => TokenProvider::static_token(t.clone()),
        None => TokenProvider::from_env(&config.asr.scope())?,
    };
    let budget: Arc<dyn tern_asr::Budget> = match config.budget {
        Some(b) => Arc::new(FleetBudget::new(&bus, b).await?),
        None => Arc::new(Unlimited),
    };
    let mut asr_config = config.asr.clone();
    asr_config.poll_interval = Duration::from_secs_f64(config.poll_interval_secs);
    asr_config.user_agent.get_or_insert_with(|| format!("{service}/{}", env!("CARGO_PKG_VERSION")));
    Ok((bus, AsrClient::new(asr_config, tokens, budget)?))
}

/// Connects `service` to the bus with its credentials (`nats_credentials`, `nats_ca_file`), as the
/// NATS identity named after it (`tern-planner` is `planner`), publishing events as JSON too when
/// `json_events` is on.
pub async fn connect_bus(config: &ServiceConfig, service: &str) -> Result<Bus, ConnectError> {
    let Some(identity) = Identity::of_service(service) else {
        return Ok(Bus::connect(&config.nats_url, service).await?.with_json_events(config.json_events));
    };
    if config.nats_credentials.is_none() {
        tracing::warn!(%identity, "connecting to NATS without credentials (set TERN_NATS_CREDENTIALS)");
    }
    let auth =
        NatsAuth { identity, credentials: config.nats_credentials.clone(), ca_file: config.nats_ca_file.clone() };
    Ok(Bus::connect_with(&config.nats_url, service, &auth).await?.with_json_events(config.json_events))
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
