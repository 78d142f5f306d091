//! `tern-asr-sim`: an ARM-faithful simulator of Azure Site Recovery for A2A failover and
//! failback, so Tern (and anyone rehearsing a failback plan) can run without Azure.
//!
//! It serves the ASR REST surface at any `api-version`: protected items and their recovery
//! points, unplanned failover, commit, switch protection (reprotect), test failover, jobs,
//! recovery plans, plus the Compute/Network reads and deletes cleanup needs. Operations are
//! ARM long-running operations (`202` + `Location` + `Azure-AsyncOperation` + `Retry-After`)
//! backed by jobs that advance on a simulated clock. ARM throttling, fault injection and an
//! operation log make it a test bench, not just a mock. It shares no code with `tern-asr`, so
//! a misread of the spec cannot hide by being wrong on both sides.
//!
//! The estate is one Recovery Services vault in one subscription unless
//! [`SimConfig::subscriptions`] and [`SimConfig::vaults_per_subscription`] ask for more. Every
//! vault has its own items, jobs, recovery plans and application resource groups, seeded with
//! `estate.vms` VMs each; every subscription has its own ARM request budget (reads, writes and
//! deletes buckets of `throttle`'s size). The first vault keeps the configured subscription id,
//! resource group and vault name, `rg-app`/`rg-app-asr` and VMs `vm-00001`...; the others'
//! names are derived ([`SimConfig::vault_layouts`]) and listed by [`SimInfo::vaults`] and
//! `/_sim/info`. A request only ever sees the vault (or resource group) its path names.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut config = tern_asr_sim::SimConfig::default();
//! config.estate.vms = 10;
//! config.zero_latency = true;
//! let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(config)).await?;
//! println!("{}", sim.url());
//! sim.stop().await;
//! # Ok(()) }
//! ```

pub mod capacity;
pub mod clock;
pub mod config;
pub mod directory;
pub mod estate;
pub mod faults;
pub mod ids;
pub mod item;
pub mod job;
pub mod observe;
pub mod routes;
pub mod server;
pub mod throttle;
pub mod validate;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use config::{Durations, PolicyConfig, SeedSpec, SeedState, SimConfig, Span, VaultLayout};
pub use faults::{FailureRule, FaultSpec, Operation, Selector};
pub use observe::OpEntry;
pub use server::App;
pub use throttle::{BucketConfig, ThrottleConfig};

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Settings.
    pub config: SimConfig,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1 written to `DIR/cert.pem`.
    pub tls_dir: Option<PathBuf>,
}

impl SimOptions {
    /// Plain HTTP on a free loopback port.
    pub fn new(config: SimConfig) -> Self {
        Self { config, listen: SocketAddr::from(([127, 0, 0, 1], 0)), tls_dir: None }
    }
}

/// What a client needs to reach the simulator: the one JSON line the binary prints when ready.
/// The top-level ids are the first vault's; `vaults` lists every vault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimInfo {
    /// Base URL (the ARM endpoint).
    pub url: String,
    /// Subscription id (of the first vault).
    pub subscription_id: String,
    /// Vault resource group (of the first vault).
    pub resource_group: String,
    /// Vault name (of the first vault).
    pub vault: String,
    /// PEM of the self-signed certificate, when serving HTTPS.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ca_cert: Option<String>,
    /// The cache storage account of each region (`<location>asrcache` in its application
    /// resource group), by location: what a switch protection names as
    /// `primaryStagingAzureStorageAccountId` for the region the VM runs in.
    #[serde(default)]
    pub cache_storage_accounts: std::collections::BTreeMap<String, String>,
    /// Every vault served, subscription by subscription, the first vault first.
    #[serde(default)]
    pub vaults: Vec<VaultInfo>,
}

/// One vault of the simulated estate, as the ready line and `/_sim/info` list it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultInfo {
    /// Its subscription id.
    pub subscription_id: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its name.
    pub vault: String,
    /// Its ARM id, spelled as ASR spells it (`/Subscriptions/...`).
    pub vault_id: String,
    /// The resource group its VMs, NICs, disks, public IPs and storage accounts live in, by
    /// location.
    pub resource_groups: std::collections::BTreeMap<String, String>,
    /// What the name of every VM seeded in it starts with, before the seed's own
    /// `name_prefix` (empty for the first vault, `s2v1-` for vault 1 of subscription 2).
    pub vm_name_prefix: String,
    /// Its cache storage account of each region, by location.
    pub cache_storage_accounts: std::collections::BTreeMap<String, String>,
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate could not be made or written.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A running simulator. Dropping it stops it.
#[derive(Debug)]
pub struct RunningSimulator {
    info: SimInfo,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSimulator {
    /// Base URL.
    pub fn url(&self) -> &str {
        &self.info.url
    }

    /// Connection facts.
    pub fn info(&self) -> &SimInfo {
        &self.info
    }

    /// In-process access to the estate and operation log (tests).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the simulator and returns once it accepts connections.
pub async fn start(options: SimOptions) -> Result<RunningSimulator, StartError> {
    options.config.validate().map_err(StartError::Config)?;
    let listener = std::net::TcpListener::bind(options.listen)
        .map_err(|source| StartError::Bind { addr: options.listen, source })?;
    listener.set_nonblocking(true).map_err(|source| StartError::Bind { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: options.listen, source })?;
    let scheme = if options.tls_dir.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let subscription_id = options.config.subscription_id.clone();
    let resource_group = options.config.resource_group.clone();
    let vault = options.config.vault.clone();
    let app = Arc::new(App::new(options.config, url.clone()));
    let (cache_storage_accounts, vaults) = {
        let s = app.lock();
        (s.estates[0].cache_storage_accounts(), s.estates.iter().map(estate::Estate::vault_info).collect())
    };
    let info = SimInfo { url, subscription_id, resource_group, vault, ca_cert: None, cache_storage_accounts, vaults };
    let router = server::router(app.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut info = info;
    let task = match options.tls_dir {
        None => {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|source| StartError::Bind { addr, source })?;
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            })
        }
        Some(dir) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(|e| StartError::Tls(e.to_string()))?;
            let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
            std::fs::create_dir_all(&dir).map_err(|e| StartError::Tls(format!("{}: {e}", dir.display())))?;
            let path = dir.join("cert.pem");
            std::fs::write(&path, &cert_pem).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
            info.ca_cert = Some(path.display().to_string());
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem.into_bytes(), key_pem.into_bytes())
                .await
                .map_err(|e| StartError::Tls(e.to_string()))?;
            let handle = axum_server::Handle::new();
            let shutdown = handle.clone();
            tokio::spawn(async move {
                let _ = stop_rx.await;
                shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(1)));
            });
            let server =
                axum_server::from_tcp_rustls(listener, config).map_err(|source| StartError::Bind { addr, source })?;
            tokio::spawn(async move {
                let _ = server.handle(handle).serve(router.into_make_service()).await;
            })
        }
    };
    Ok(RunningSimulator { info, app, stop: Some(stop_tx), task: Some(task) })
}
