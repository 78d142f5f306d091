//! One benchmark stack: nats-server, the simulator, the planner and the three workers as
//! separate processes of a release build, started the way `tern up` starts them, and stopped
//! (SIGTERM, then SIGKILL) when the run is over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tern_cli::procs::{Procs, connect_bus, free_port};
use tokio::process::Command;
use tonic::transport::Channel;

/// How long one process may take to report ready (the simulator seeds 10,000 VMs first).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a process may take to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest gRPC message the bench accepts: a 10,000-VM plan is many megabytes.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024 * 1024;

/// The Tern services, in start order after the simulator.
pub const SERVICES: [&str; 4] = ["tern-planner", "tern-failover", "tern-reprotect", "tern-cleanup"];

/// What a stack is started with.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// The nats-server binary.
    pub nats_server: PathBuf,
    /// This run's directory: the nats store and every process's log.
    pub run_dir: PathBuf,
    /// Flags of `tern-asr-sim` (seeding, time, throttling).
    pub sim_args: Vec<String>,
    /// Environment of the four services, on top of the connection settings.
    pub service_env: Vec<(String, String)>,
    /// Environment of the three workers only (their own settings, which the planner refuses).
    pub worker_env: Vec<(String, String)>,
}

/// A running stack. Dropping it kills every process (`kill_on_drop`); [`Stack::stop`] stops
/// them in order first.
#[derive(Debug)]
pub struct Stack {
    /// The processes, in start order.
    pub procs: Procs,
    /// `nats://127.0.0.1:PORT`.
    pub nats_url: String,
    /// How an outside consumer of events connects: the events-reader's credentials.
    pub events_reader: tern_bus::NatsAuth,
    /// `http://127.0.0.1:PORT` of nats-server's monitoring endpoint (`/varz`, `/jsz`).
    pub nats_monitor: String,
    /// The simulator's base URL (ARM and `/_sim/`).
    pub sim_url: String,
    /// The planner's gRPC address.
    pub planner_addr: String,
    /// The operator's API token, as `tern up` would give the CLI.
    api_token: String,
    /// ARM id of every simulated vault, the services' own first.
    pub vault_ids: Vec<String>,
}

impl Stack {
    /// Starts nats-server, creates the bus topology, then starts the simulator and the
    /// services, each once the one before reported ready.
    pub async fn start(options: &StackOptions) -> anyhow::Result<Stack> {
        let mut stack = Stack {
            procs: Procs::new(&options.run_dir.join("logs"))?,
            nats_url: String::new(),
            events_reader: tern_bus::NatsAuth::anonymous(tern_bus::Identity::EventsReader),
            nats_monitor: String::new(),
            sim_url: String::new(),
            planner_addr: String::new(),
            api_token: String::new(),
            vault_ids: Vec::new(),
        };

        let (port, monitor) = (free_port()?, free_port()?);
        let store = options.run_dir.join("nats");
        if store.exists() {
            std::fs::remove_dir_all(&store).with_context(|| format!("clearing {}", store.display()))?;
        }
        // Measured as deployed: every service with its own NATS identity and permissions.
        let credentials = options.run_dir.join("secrets").join("nats");
        let auth_conf = tern_bus::auth::generate(&credentials).context("generating NATS credentials")?;
        let mut cmd = Command::new(&options.nats_server);
        cmd.arg("-c").arg(&auth_conf);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string(), "-sd"]).arg(&store);
        stack.procs.spawn(cmd, "nats-server")?;
        stack.nats_url = format!("nats://127.0.0.1:{port}");
        stack.nats_monitor = format!("http://127.0.0.1:{monitor}");
        stack.events_reader = tern_bus::NatsAuth::from_dir(tern_bus::Identity::EventsReader, &credentials);
        let bootstrap = tern_bus::NatsAuth::from_dir(tern_bus::Identity::Bootstrap, &credentials);
        let bus = connect_bus(&stack.nats_url, "tern-bench", &bootstrap, READY_TIMEOUT).await?;
        bus.ensure_topology(&tern_bus::Topology::single_server()).await.context("creating the JetStream streams")?;
        drop(bus);

        let mut cmd = Command::new(binary(&options.bin_dir, "tern-asr-sim")?);
        cmd.args(&options.sim_args).env("TERN_LOG", "warn");
        let sim = stack.procs.start_ready(cmd, "tern-asr-sim", READY_TIMEOUT).await?;
        let field = |k: &str| {
            sim[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("the simulator's ready line has no {k}: {sim}"))
        };
        let (sim_url, subscription, group, vault) =
            (field("url")?, field("subscription_id")?, field("resource_group")?, field("vault")?);
        stack.sim_url = sim_url.clone();
        let estate = tern_cli::estate::Estate::of(&sim, &tern_cli::estate::vault_arm_id(&subscription, &group, &vault));
        let further_vaults = serde_json::to_string(&estate.vaults[1..])?;
        stack.vault_ids = estate.vaults;

        let mut connection = vec![
            ("TERN_NATS_URL", stack.nats_url.clone()),
            ("TERN_ASR__ENDPOINT", sim_url),
            ("TERN_ASR__SUBSCRIPTION_ID", subscription),
            ("TERN_ASR__RESOURCE_GROUP", group),
            ("TERN_ASR__VAULT", vault),
            // The estate's cache storage accounts, per region and subscription, as the simulator
            // names them.
            ("TERN_ASR__CACHE_STORAGE_ACCOUNTS", estate.cache_accounts.to_string()),
            // Simulated time runs fast: a lost request's job shows within a fraction of a second.
            ("TERN_ASR__LOST_REQUEST_WINDOW", "5".to_owned()),
            ("TERN_ASR_TOKEN", "tern-bench".to_owned()),
            ("TERN_ENSURE_TOPOLOGY", "false".to_owned()),
            ("TERN_LISTEN", "127.0.0.1:0".to_owned()),
            ("TERN_LOG", "warn".to_owned()),
        ];
        if stack.vault_ids.len() > 1 {
            // Every service acts on every vault of the estate: its own, and these.
            connection.push(("TERN_ASR__VAULTS", further_vaults));
        }
        let tokens = tern_cli::secrets::generate_api_tokens(&options.run_dir.join("secrets"))?;
        stack.api_token = std::fs::read_to_string(&tokens.operator_file)?;
        for name in SERVICES {
            let mut cmd = Command::new(binary(&options.bin_dir, name)?);
            // The bench's own settings win over anything inherited from the caller's shell.
            cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
            cmd.envs(connection.iter().map(|(k, v)| (*k, v.as_str())));
            cmd.envs(options.service_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(identity) = tern_bus::Identity::of_service(name) {
                cmd.env("TERN_NATS_CREDENTIALS", tern_bus::auth::credentials_file(&credentials, identity));
            }
            if name == "tern-planner" {
                cmd.envs(tokens.planner_env());
            } else {
                cmd.envs(options.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            let ready = stack.procs.start_ready(cmd, name, READY_TIMEOUT).await?;
            if name == "tern-planner" {
                stack.planner_addr = ready["grpc"]
                    .as_str()
                    .ok_or_else(|| anyhow!("the planner's ready line has no gRPC address: {ready}"))?
                    .to_owned();
            }
        }
        Ok(stack)
    }

    /// A process that has exited, if any: a crash mid-run makes the run worthless.
    pub fn exited(&mut self) -> Option<String> {
        let (name, status) = self.procs.exited()?;
        Some(format!("{name} exited during the run ({status}); see {}", self.procs.log_path(name).display()))
    }

    /// A gRPC client of the planner that accepts plans of any size.
    pub async fn planner(&self) -> anyhow::Result<tern_proto::auth::Client> {
        let url = format!("http://{}", self.planner_addr);
        let channel = Channel::from_shared(url.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot reach the planner at {url}"))?;
        let token = tern_proto::auth::BearerToken::new(Some(&self.api_token)).map_err(anyhow::Error::msg)?;
        Ok(tern_proto::auth::client(channel, token)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// SIGTERM in reverse start order (workers first, nats-server last), SIGKILL after
    /// [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        self.procs.stop(STOP_TIMEOUT, "tern-bench").await;
    }
}

/// `dir/name`, which must exist: the bench measures a release build, never whatever is on PATH.
fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{} not found; build the release binaries first (`cargo build --release --bins`)", path.display());
    }
    Ok(path)
}
