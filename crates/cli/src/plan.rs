//! `tern plan …`: submit, check and follow failback plans through the planner's gRPC API.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use tern_asr::BudgetConfig;
use tern_cli::estimate::{Clock, Forecast, History, Selected};
use tern_proto::auth::{BearerToken, Client};
use tern_proto::{
    CancelPlanRequest, GetPlanRequest, ListPlansRequest, NameList, PausePlanRequest, Phase, Plan, PlanMode, PlanSpec,
    PlanState, PreflightRequest, Readiness, RecoveryPointChoice, RecoveryPointKind, ResumePlanRequest, RetryVmRequest,
    Selection, SubmitPlanRequest, VmState, VmStatus, Wave, selection,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::output::{Format, Paint, epoch, human_secs, print_document, proto_json, rfc3339, table};
use crate::planfile::PlanFile;
use crate::progress::Progress;
use crate::report::Report;
use crate::vault::{Defaults as VaultDefaults, VaultArgs};

/// Where the stack is: flags (or their `TERN_*` variables), then `DATA_DIR/endpoints.json`
/// (written by `tern up`), then the config file.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The data dir of a `tern up` stack (its endpoints.json names the planner and vault)
    /// [default: .tern].
    #[arg(long, env = "TERN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A config file (TOML: data_dir, planner, nats, vault or vault_name with resource_group and
    /// subscription, budget) [default: ~/.config/tern/config.toml
    /// when it exists].
    #[arg(long, env = "TERN_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The planner's gRPC address (HOST:PORT), instead of endpoints.json.
    #[arg(long, env = "TERN_PLANNER", global = true)]
    planner: Option<String>,
    /// The NATS server's URL (for `tern events` and reports), instead of endpoints.json.
    #[arg(long, env = "TERN_NATS", global = true)]
    nats: Option<String>,
    /// NATS credentials (an nkey seed or a JWT .creds file), instead of endpoints.json: the
    /// events-reader's for `tern events` and reports, the operator's for `tern dlq`.
    #[arg(long, global = true, value_name = "FILE")]
    nats_credentials: Option<PathBuf>,
    /// PEM file of the CA that signs the NATS servers' certificates (TLS is then required).
    #[arg(long, global = true, value_name = "FILE")]
    nats_ca_file: Option<PathBuf>,
    /// A file holding the planner API's bearer token, instead of endpoints.json.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA that signs the planner's TLS certificate: the CLI then calls it over TLS.
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for a planner that requires mTLS; with --client-key.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// What a plan covers and how (the common cases of a plan file, as flags).
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// A plan file (YAML or JSON; see docs/plan-file.md). Flags below override what it says.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// Every VM in the vault that is ready for failback.
    #[arg(long, conflicts_with = "vm")]
    all_ready: bool,
    /// A VM by name (repeat for more).
    #[arg(long, value_name = "NAME")]
    vm: Vec<String>,
    /// latest-processed (default), latest, latest-app-consistent, latest-crash-consistent or
    /// custom:ID (one VM only).
    #[arg(long, value_name = "POINT", value_parser = parse_point)]
    recovery_point: Option<RecoveryPointChoice>,
    /// A wave, in order: NAME=VM,VM,… (repeat for more). VMs in no wave go last.
    #[arg(long = "wave", visible_alias = "waves", value_name = "NAME=VMS", value_parser = parse_wave)]
    waves: Vec<Wave>,
    /// Fail over without shutting the source VM down first.
    #[arg(long)]
    no_shutdown: bool,
    /// Go ahead with the ready VMs when preflight blocks some (they are skipped with the reason).
    #[arg(long)]
    proceed_with_ready: bool,
    #[command(flatten)]
    vaults: VaultArgs,
    /// Makes submission idempotent: the same id twice is one plan.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum PlanCommand {
    /// Check every selected VM without changing anything.
    Preflight(SpecArgs),
    /// Forecast a plan before it runs: makespan, each wave's end of failover, RTO percentiles,
    /// what binds it and what would shorten it (docs/performance.md, "Forecast"). Job durations
    /// are the medians of earlier plans when there are any, else Azure's typical ones; the ARM
    /// budget per subscription is TERN_BUDGET (JSON, as the services read it), else the config
    /// file's [budget], else ARM's defaults.
    Estimate {
        #[command(flatten)]
        spec: SpecArgs,
        /// Resources cleanup deletes per VM when the plan removes leftovers (0-4; ASR usually
        /// removes a managed-disk VM's leftovers itself on reprotect).
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=4))]
        leftovers: u8,
        /// Azure's typical job durations even when earlier plans tell how long jobs take here.
        #[arg(long)]
        no_history: bool,
    },
    /// Submit a plan; prints its id. With --watch, follows it to the end.
    Submit {
        #[command(flatten)]
        spec: SpecArgs,
        /// Follow the plan until it ends (exit code as for `watch`).
        #[arg(long)]
        watch: bool,
        /// Submit without asking. On a terminal, submit first shows what will fail over, what
        /// preflight leaves out and what cleanup may delete, and asks (no: exit 1, nothing
        /// submitted); without a terminal it never asks.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// One plan with every VM.
    Get { plan_id: String },
    /// Plans, newest first, a page at a time.
    List(ListArgs),
    /// Follow a plan until it ends. Exit code 0: it did all it was asked; 1: a VM failed or the
    /// plan was cancelled.
    Watch { plan_id: String },
    /// Stop dispatching new work; running phases finish.
    Pause { plan_id: String },
    /// Continue a paused plan.
    Resume { plan_id: String },
    /// Stop dispatching and skip what has not started; running phases finish.
    Cancel { plan_id: String },
    /// Run a failed VM's phase again; with --wave, wait again for a wave's rejected gate.
    Retry {
        plan_id: String,
        #[arg(required_unless_present = "wave")]
        vm: Option<String>,
        /// The wave (name or 1-based number) whose rejected or failed gate waits again.
        #[arg(long, value_name = "NAME", conflicts_with = "vm")]
        wave: Option<String>,
        /// Which of the wave's gate steps (0-based); default: the rejected one.
        #[arg(long, value_name = "N", requires = "wave")]
        step: Option<u32>,
    },
    /// Approve a wave's waiting approval gate: the wave goes on.
    Approve(GateArgs),
    /// Reject a wave's waiting approval gate: the plan's failure policy applies (stop: the plan
    /// halts until `tern plan retry ID --wave NAME`; continue: the wave is skipped).
    Reject(GateArgs),
}

/// Which gate `tern plan approve` / `reject` decides, by whom and why.
#[derive(clap::Args, Debug)]
pub struct GateArgs {
    plan_id: String,
    /// The wave (its name in the plan file, or its 1-based number).
    #[arg(long, value_name = "NAME")]
    wave: String,
    /// Which of the wave's gate steps (0-based); default: the one waiting.
    #[arg(long, value_name = "N")]
    step: Option<u32>,
    /// Why (recorded in the plan's events and report).
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    /// Who decides (recorded); default: the OS user.
    #[arg(long = "as", value_name = "NAME")]
    by: Option<String>,
}

impl GateArgs {
    fn request(self) -> tern_proto::GateDecisionRequest {
        tern_proto::GateDecisionRequest {
            plan_id: self.plan_id,
            wave: self.wave,
            step: self.step,
            by: self.by.unwrap_or_else(os_user),
            reason: self.reason,
        }
    }
}

/// Who runs this command, as the OS knows them.
fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// `tern plan list`'s filters and paging.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only plans in this state (repeat for more): accepted, running, paused, cancelling,
    /// cancelled, completed, completed-with-errors, failed; or active (not ended) or ended.
    #[arg(long, value_enum, value_name = "STATE")]
    state: Vec<StateFilter>,
    /// Only plans created within this long before now (e.g. 90m, 1h30m, 7d).
    #[arg(long, value_name = "DURATION", value_parser = crate::output::parse_duration)]
    since: Option<std::time::Duration>,
    /// Only plans with this label (KEY=VALUE; repeat: every one must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// Only plans that include this VM.
    #[arg(long, value_name = "NAME")]
    vm: Option<String>,
    /// Plans per page (at most 1000).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// The page after the one that printed this token.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

/// A plan state, or a group of them, for `tern plan list --state`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StateFilter {
    Accepted,
    Running,
    Paused,
    Cancelling,
    Cancelled,
    Completed,
    CompletedWithErrors,
    Failed,
    /// Accepted, running, paused or cancelling.
    Active,
    /// Cancelled, completed, completed with errors or failed.
    Ended,
}

impl StateFilter {
    fn states(self) -> &'static [PlanState] {
        use PlanState as S;
        match self {
            Self::Accepted => &[S::Accepted],
            Self::Running => &[S::Running],
            Self::Paused => &[S::Paused],
            Self::Cancelling => &[S::Cancelling],
            Self::Cancelled => &[S::Cancelled],
            Self::Completed => &[S::Completed],
            Self::CompletedWithErrors => &[S::CompletedWithErrors],
            Self::Failed => &[S::Failed],
            Self::Active => &[S::Accepted, S::Running, S::Paused, S::Cancelling],
            Self::Ended => &[S::Cancelled, S::Completed, S::CompletedWithErrors, S::Failed],
        }
    }
}

impl ListArgs {
    fn request(&self) -> ListPlansRequest {
        let mut states: Vec<i32> = self.state.iter().flat_map(|f| f.states()).map(|s| *s as i32).collect();
        states.sort_unstable();
        states.dedup();
        let created_after = self.since.map(|d| {
            let at = std::time::SystemTime::now() - d;
            let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            prost_types::Timestamp { seconds: since_epoch.as_secs() as i64, nanos: since_epoch.subsec_nanos() as i32 }
        });
        ListPlansRequest {
            states,
            page_size: self.limit,
            page_token: self.page_token.clone().unwrap_or_default(),
            created_after,
            labels: self.label.iter().cloned().collect(),
            vm_name: self.vm.clone().unwrap_or_default(),
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not a label: write KEY=VALUE")),
    }
}

/// The stack's endpoints, from flags or endpoints.json.
#[derive(Debug)]
pub struct Stack {
    /// The planner's address; `None` when neither a flag nor endpoints.json names one (commands
    /// that need only NATS, such as `tern dlq list`, still work).
    pub planner: Option<String>,
    /// Where endpoints.json was looked for, for the error when the planner is needed.
    endpoints_file: PathBuf,
    /// The API token the CLI calls the planner with (the operator's, from endpoints.json).
    pub token: Option<String>,
    pub nats: Option<String>,
    /// How `tern events` connects to NATS: as the events-reader, with its credentials.
    pub nats_auth: tern_bus::NatsAuth,
    /// How `tern dlq` connects to NATS: as the operator, who may read and delete dead letters.
    pub nats_operator_auth: tern_bus::NatsAuth,
    pub vault_id: Option<String>,
    /// Every vault of the stack (endpoints.json's `vaults`, else the config file's), for `--all-vaults`.
    pub vaults: Vec<String>,
    /// The CA of the planner's TLS certificate: set, the CLI calls the planner over TLS.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key, for mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// How time runs where the stack's jobs run, for forecasts.
    pub clock: Clock,
    /// `az`-like defaults for `--vault-name`, from the config file.
    pub defaults: VaultDefaults,
}

impl Target {
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self {
            data_dir: Some(data_dir.to_owned()),
            config: None,
            planner: None,
            nats: None,
            nats_credentials: None,
            nats_ca_file: None,
            token_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// The config file's settings (empty when there is none).
    fn config(&self) -> anyhow::Result<Config> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => match std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            {
                Some(dir) => (dir.join("tern/config.toml"), false),
                None => return Ok(Config::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display())),
            Err(_) if !required => Ok(Config::default()),
            Err(e) => Err(anyhow!("cannot read config file {}: {e}", path.display())),
        }
    }

    /// The data dir whose endpoints.json names the stack.
    pub fn data_dir(&self) -> PathBuf {
        let configured = || self.config().ok().and_then(|c| c.data_dir);
        self.data_dir.clone().or_else(configured).unwrap_or_else(|| PathBuf::from(".tern"))
    }

    /// The ARM budget per subscription a forecast assumes: `TERN_BUDGET` (JSON, as the
    /// services read it; `null`: no limit), else the config file's `[budget]`, else ARM's
    /// defaults (the services' default too).
    pub fn budget(&self) -> anyhow::Result<Option<BudgetConfig>> {
        if let Ok(text) = std::env::var("TERN_BUDGET") {
            return serde_json::from_str(&text).with_context(|| {
                format!("TERN_BUDGET is not a budget: {text} (e.g. {{\"writes\": {{\"capacity\": 200, \"per_second\": 10}}}} or null)")
            });
        }
        Ok(Some(self.config()?.budget.unwrap_or_default()))
    }

    pub fn resolve(&self) -> anyhow::Result<Stack> {
        let config = self.config()?;
        let data_dir = self.data_dir.clone().or(config.data_dir).unwrap_or_else(|| PathBuf::from(".tern"));
        let file = data_dir.join("endpoints.json");
        let endpoints: Option<serde_json::Value> = match std::fs::read_to_string(&file) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?),
            Err(_) => None,
        };
        let field = |k: &str| endpoints.as_ref().and_then(|e| e[k].as_str()).map(str::to_owned);
        let planner = self.planner.clone().or_else(|| field("planner_addr")).or(config.planner);
        // The token file endpoints.json names, read now: a stack started by `tern up` takes
        // nothing without it.
        let token_file = self.token_file.clone().or_else(|| field("api_token_file").map(PathBuf::from));
        let token = match token_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the API token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let nats_ca_file =
            self.nats_ca_file.clone().or_else(|| field("nats_ca_file").map(PathBuf::from)).or(config.nats_ca_file);
        let nats_auth = tern_bus::NatsAuth {
            identity: tern_bus::Identity::EventsReader,
            credentials: self
                .nats_credentials
                .clone()
                .or_else(|| field("nats_credentials").map(PathBuf::from))
                .or(config.nats_credentials),
            ca_file: nats_ca_file.clone(),
        };
        let nats_operator_auth = tern_bus::NatsAuth {
            identity: tern_bus::Identity::Operator,
            credentials: self
                .nats_credentials
                .clone()
                .or_else(|| field("nats_operator_credentials").map(PathBuf::from))
                .or(config.nats_operator_credentials),
            ca_file: nats_ca_file,
        };
        let defaults = VaultDefaults {
            subscription: config.subscription,
            resource_group: config.resource_group,
            vault_name: config.vault_name,
        };
        let vault_id = match field("vault_id").or(config.vault) {
            Some(id) => Some(id),
            None => crate::vault::default_vault(&defaults, None)?,
        };
        Ok(Stack {
            defaults,
            planner,
            endpoints_file: file,
            token,
            nats: self.nats.clone().or_else(|| field("nats_url")).or(config.nats),
            nats_auth,
            nats_operator_auth,
            vault_id,
            vaults: endpoints
                .as_ref()
                .and_then(|e| serde_json::from_value(e["vaults"].clone()).ok())
                .or(config.vaults)
                .unwrap_or_default(),
            ca_file: self.ca_file.clone().or_else(|| field("api_ca_file").map(PathBuf::from)),
            client_identity: self.client_cert.clone().zip(self.client_key.clone()),
            clock: clock(endpoints.as_ref())?,
        })
    }
}

/// `~/.config/tern/config.toml` (or `--config`): defaults below flags, `TERN_*` variables and
/// a stack's endpoints.json.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    data_dir: Option<PathBuf>,
    planner: Option<String>,
    nats: Option<String>,
    nats_credentials: Option<PathBuf>,
    nats_operator_credentials: Option<PathBuf>,
    nats_ca_file: Option<PathBuf>,
    vault: Option<String>,
    vaults: Option<Vec<String>>,
    /// `az`-like defaults for `--vault-name` (and, with `vault_name`, the default vault).
    subscription: Option<String>,
    resource_group: Option<String>,
    vault_name: Option<String>,
    /// The ARM budget per subscription `tern plan estimate` assumes (the services' `budget`).
    budget: Option<BudgetConfig>,
}

/// Largest planner response the CLI accepts.
const MAX_MESSAGE: usize = 512 << 20;

impl Stack {
    pub async fn client(&self) -> anyhow::Result<Client> {
        let planner = self.planner.as_deref().ok_or_else(|| {
            crate::exit::unreachable(format!(
                "no Tern stack found: {} does not exist. Start one with `tern up`, or pass --planner HOST:PORT",
                self.endpoints_file.display()
            ))
        })?;
        let tls = self.ca_file.is_some() || planner.starts_with("https://");
        let url = match (planner.contains("://"), tls) {
            (true, _) => planner.to_owned(),
            (false, true) => format!("https://{planner}"),
            (false, false) => format!("http://{planner}"),
        };
        let mut endpoint =
            Channel::from_shared(url.clone()).with_context(|| format!("{url} is not a planner address"))?;
        if tls {
            let read = |path: &Path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
            let ca = self.ca_file.as_deref().ok_or_else(|| {
                anyhow!("{url} speaks TLS: pass --ca-file with the CA that signs the planner's certificate")
            })?;
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = &self.client_identity {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(config).context("the planner's TLS settings")?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            crate::exit::unreachable(format!(
                "cannot reach the planner at {url}; is the stack running (`tern up`)?: {}",
                anyhow::Error::from(e).chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
            ))
        })?;
        let token = BearerToken::new(self.token.as_deref()).map_err(anyhow::Error::msg)?;
        let client = tern_proto::auth::client(channel, token);
        // A plan of tens of thousands of VMs is tens of MiB.
        Ok(client.max_decoding_message_size(MAX_MESSAGE))
    }
}

fn parse_wave(s: &str) -> Result<Wave, String> {
    let (name, vms) = s.split_once('=').ok_or_else(|| format!("{s:?} is not a wave: write NAME=VM,VM,…"))?;
    let vm_names: Vec<String> = vms.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect();
    if vm_names.is_empty() {
        return Err(format!("wave {name:?} names no VM: write NAME=VM,VM,…"));
    }
    Ok(Wave { name: name.trim().to_owned(), vm_names, ..Default::default() })
}

pub fn parse_point(s: &str) -> Result<RecoveryPointChoice, String> {
    let kind = match s {
        "latest-processed" => RecoveryPointKind::LatestProcessed,
        "latest" => RecoveryPointKind::Latest,
        "latest-app-consistent" => RecoveryPointKind::LatestAppConsistent,
        "latest-crash-consistent" => RecoveryPointKind::LatestCrashConsistent,
        _ => match s.strip_prefix("custom:") {
            Some(id) if !id.is_empty() => {
                return Ok(RecoveryPointChoice { kind: RecoveryPointKind::Custom as i32, custom_id: id.to_owned() });
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a recovery point: use latest-processed, latest, latest-app-consistent, \
                     latest-crash-consistent or custom:ID"
                ));
            }
        },
    };
    Ok(RecoveryPointChoice { kind: kind as i32, custom_id: String::new() })
}

impl SpecArgs {
    /// Every ready VM, for `tern up --demo`.
    pub fn all_ready() -> Self {
        Self {
            file: None,
            all_ready: true,
            vm: Vec::new(),
            waves: Vec::new(),
            recovery_point: None,
            no_shutdown: false,
            proceed_with_ready: true,
            vaults: VaultArgs::default(),
            request_id: None,
        }
    }

    pub fn spec(&self, stack: &Stack) -> anyhow::Result<PlanSpec> {
        let named = self.vaults.named(&stack.defaults, stack.vault_id.as_deref())?;
        let vault = named.first().cloned().or_else(|| stack.vault_id.clone());
        let mut spec = match &self.file {
            Some(path) => PlanFile::read(path)?.spec(vault.as_deref())?,
            None => PlanSpec { vault_id: vault.clone().unwrap_or_default(), ..Default::default() },
        };
        if let Some((first, more)) = named.split_first() {
            spec.vault_id = first.clone();
            spec.vault_ids = more.to_vec();
            spec.all_vaults = false;
        }
        if self.vaults.all_vaults {
            spec.all_vaults = true;
        }
        if spec.all_vaults {
            // Every vault the stack acts on, its own first: the planner knows them.
            spec.vault_id.clear();
            spec.vault_ids.clear();
        } else if spec.vault_id.is_empty() {
            bail!(
                "which vault? pass --vault with the Recovery Services vault's ARM id, or --vault-name with \
                 -g/--resource-group and --subscription (or `vault:` in the plan file), or --all-vaults"
            );
        }
        if self.all_ready {
            spec.selection = Some(Selection { by: Some(selection::By::AllReady(true)) });
        } else if !self.vm.is_empty() {
            spec.selection = Some(Selection { by: Some(selection::By::VmNames(NameList { values: self.vm.clone() })) });
        } else if spec.selection.is_none() {
            bail!("which VMs? pass --all-ready, --vm NAME (repeatable) or -f plan.yaml");
        }
        if let Some(id) = &self.request_id {
            spec.request_id = id.clone();
        }
        if self.recovery_point.is_some() {
            spec.recovery_point = self.recovery_point.clone();
        }
        if self.no_shutdown {
            spec.shut_down_source = Some(false);
        }
        if !self.waves.is_empty() {
            spec.waves = self.waves.clone();
        }
        spec.proceed_with_ready |= self.proceed_with_ready;
        Ok(spec)
    }
}

/// Runs a plan command; returns the process exit code.
pub async fn run(target: &Target, output: Format, command: PlanCommand) -> anyhow::Result<u8> {
    let stack = target.resolve()?;
    let mut grpc = stack.client().await?;
    let print_plan = |plan: &Plan| -> anyhow::Result<()> {
        match output {
            Format::Table => print_plan_table(plan),
            f => print_document(f, &proto_json(plan, "tern.v1.Plan")?)?,
        }
        Ok(())
    };
    match command {
        PlanCommand::Preflight(args) => {
            let spec = args.spec(&stack)?;
            let report = grpc.preflight(PreflightRequest { spec: Some(spec) }).await.map_err(status)?.into_inner();
            if output != Format::Table {
                print_document(output, &proto_json(&report, "tern.v1.PreflightResponse")?)?;
                return Ok(0);
            }
            let paint = Paint::stdout();
            let mut rows = table(&["VM", "READINESS", "WHY"]);
            for vm in &report.vms {
                let name = vm.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?");
                let readiness = Readiness::try_from(vm.readiness).unwrap_or(Readiness::Unspecified);
                let why: Vec<&str> = vm
                    .checks
                    .iter()
                    .filter(|c| c.result != Readiness::Ready as i32)
                    .map(|c| c.detail.as_str())
                    .collect();
                let word = readiness_word(readiness);
                let word = match readiness {
                    Readiness::Blocked => paint.red(word),
                    Readiness::Warning => paint.yellow(word),
                    _ => paint.green(word),
                };
                rows.row([name.to_owned(), word, why.join("; ")]);
            }
            print!("{rows}");
            let blocked = report.vms.iter().filter(|v| v.readiness == Readiness::Blocked as i32).count();
            println!(
                "{} VMs, {} blocked: {}",
                report.vms.len(),
                blocked,
                if report.ready {
                    "ready"
                } else {
                    "not ready (submit with --proceed-with-ready to skip the blocked VMs)"
                }
            );
            Ok(0)
        }
        PlanCommand::Estimate { spec, leftovers, no_history } => {
            let spec = spec.spec(&stack)?;
            let budget = target.budget()?;
            let request = PreflightRequest { spec: Some(spec.clone()) };
            let preflight = grpc.preflight(request).await.map_err(status)?.into_inner();
            let history = if no_history { History::default() } else { history(&mut grpc, None).await? };
            let selected = Selected::of(&spec, &preflight);
            let estimate = selected.inputs(&spec, &history, budget, f64::from(leftovers), stack.clock)?.estimate()?;
            let forecast = Forecast { estimate, blocked: selected.blocked, notes: selected.notes };
            match output {
                Format::Table => print!("{}", forecast.table(&human_secs)),
                f => print_document(f, &serde_json::to_value(&forecast)?)?,
            }
            Ok(0)
        }
        PlanCommand::Submit { spec, watch, yes } => {
            let spec = spec.spec(&stack)?;
            if crate::confirm::wanted(&spec, yes) {
                let request = PreflightRequest { spec: Some(spec.clone()) };
                let preflight = grpc.preflight(request).await.map_err(status)?.into_inner();
                if !crate::confirm::ask(&crate::confirm::summary(&spec, &preflight))? {
                    eprintln!("nothing was submitted");
                    return Ok(1);
                }
            }
            let reply = grpc.submit_plan(SubmitPlanRequest { spec: Some(spec) }).await.map_err(status)?.into_inner();
            let plan = reply.plan.ok_or_else(|| anyhow!("the planner answered without a plan"))?;
            match output {
                Format::Table => {
                    println!("{}", plan.plan_id);
                    // On stderr: stdout stays the id alone, for scripts.
                    let left_out: Vec<&VmStatus> = plan.vms.iter().filter(|v| v.left_out).collect();
                    if !left_out.is_empty() {
                        eprintln!("left out {} VMs that preflight blocked:", left_out.len());
                        for v in left_out {
                            eprintln!("  {}: {}", v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or("?"), v.reason);
                        }
                    }
                }
                _ => print_plan(&plan)?,
            }
            if watch { watch_and_sum_up(&mut grpc, &plan.plan_id, output).await } else { Ok(0) }
        }
        PlanCommand::Get { plan_id } => {
            let plan = grpc.get_plan(GetPlanRequest { plan_id }).await.map_err(status)?.into_inner();
            print_plan(&plan)?;
            Ok(0)
        }
        PlanCommand::List(args) => {
            let reply = grpc.list_plans(args.request()).await.map_err(status)?.into_inner();
            if output != Format::Table {
                print_document(output, &proto_json(&reply, "tern.v1.ListPlansResponse")?)?;
                return Ok(0);
            }
            let mut rows = table(&["PLAN", "STATE", "CREATED", "VMS"]);
            for p in &reply.plans {
                let created = epoch(p.created_at.as_ref()).map(rfc3339).unwrap_or_default();
                rows.row([p.plan_id.clone(), state_word(p.state), created, counts(p)]);
            }
            if !rows.is_empty() {
                print!("{rows}");
            }
            if !reply.next_page_token.is_empty() {
                eprintln!("more plans: --page-token {}", reply.next_page_token);
            }
            Ok(0)
        }
        PlanCommand::Watch { plan_id } => watch_and_sum_up(&mut grpc, &plan_id, output).await,
        PlanCommand::Pause { plan_id } => {
            let plan = grpc.pause_plan(PausePlanRequest { plan_id, reason: String::new() }).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Resume { plan_id } => {
            let plan = grpc.resume_plan(ResumePlanRequest { plan_id }).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Cancel { plan_id } => {
            let plan = grpc.cancel_plan(CancelPlanRequest { plan_id, ..Default::default() }).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Retry { plan_id, vm: None, wave: Some(wave), step } => {
            let request = tern_proto::GateDecisionRequest { plan_id, wave, step, by: os_user(), reason: String::new() };
            let plan = grpc.retry_gate(request).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Retry { plan_id, vm, .. } => {
            let vm_name = vm.unwrap_or_default();
            let plan = grpc
                .retry_vm(RetryVmRequest { plan_id, vm_name, phase: Phase::Unspecified as i32 })
                .await
                .map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Approve(args) => {
            let plan = grpc.approve_gate(args.request()).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
        PlanCommand::Reject(args) => {
            let plan = grpc.reject_gate(args.request()).await.map_err(status)?;
            print_state(output, &plan.into_inner())
        }
    }
}

/// How time runs where the stack's jobs run, as a forecast assumes it: what endpoints.json's
/// `clock` says (`tern up`'s simulator runs Azure's jobs 300× fast, polled every 0.5 s), else
/// Azure's, polled at the services' default interval.
fn clock(endpoints: Option<&serde_json::Value>) -> anyhow::Result<Clock> {
    match endpoints.map(|e| &e["clock"]).filter(|c| !c.is_null()) {
        Some(c) => serde_json::from_value(c.clone()).context("endpoints.json's clock is not a clock"),
        None => Ok(Clock {
            poll_interval_secs: tern_service::ServiceConfig::default().poll_interval_secs,
            time_compression: 1.0,
        }),
    }
}

/// Earlier failback plans that ended, newest first, at most this many: their phase durations.
const HISTORY_PLANS: usize = 5;

/// The phase durations of the last plans that ended — before `ended_before` when given, so
/// that a plan's report does not forecast the plan from its own durations.
pub async fn history(grpc: &mut Client, ended_before: Option<prost_types::Timestamp>) -> anyhow::Result<History> {
    let states = vec![PlanState::Completed as i32, PlanState::CompletedWithErrors as i32];
    let listed = grpc.list_plans(ListPlansRequest { states, ..Default::default() }).await.map_err(status)?;
    let failbacks = listed.into_inner().plans.into_iter().filter(|p| {
        ended(p, ended_before)
            && matches!(
                p.spec.as_ref().map(|s| s.mode()).unwrap_or_default(),
                PlanMode::Unspecified | PlanMode::Execute
            )
    });
    let mut plans = Vec::new();
    for p in failbacks.take(HISTORY_PLANS) {
        plans.push(grpc.get_plan(GetPlanRequest { plan_id: p.plan_id }).await.map_err(status)?.into_inner());
    }
    Ok(History::of(&plans))
}

/// Whether `plan` ended before `before` (any time, without one).
fn ended(plan: &Plan, before: Option<prost_types::Timestamp>) -> bool {
    let at = |t: prost_types::Timestamp| (t.seconds, t.nanos);
    before.is_none_or(|before| plan.finished_at.is_some_and(|f| at(f) < at(before)))
}

fn print_state(output: Format, plan: &Plan) -> anyhow::Result<u8> {
    match output {
        Format::Table => println!("{}", state_word(plan.state)),
        f => print_document(f, &proto_json(plan, "tern.v1.Plan")?)?,
    }
    Ok(0)
}

async fn watch_and_sum_up(grpc: &mut Client, plan_id: &str, output: Format) -> anyhow::Result<u8> {
    let plan = follow(grpc, plan_id, output == Format::Table).await?;
    match output {
        Format::Table => print!("{}", Report::build(&plan, &[]).summary()),
        f => print_document(f, &proto_json(&plan, "tern.v1.Plan")?)?,
    }
    Ok(exit_code(&plan))
}

/// Follows a plan to its end — progress bars per phase with an ETA, failures as they happen
/// (when `show`) — and returns it as it ended.
pub async fn follow(grpc: &mut Client, plan_id: &str, show: bool) -> anyhow::Result<Plan> {
    let mut stream = grpc
        .watch_plan(tern_proto::WatchPlanRequest { plan_id: plan_id.to_owned() })
        .await
        .map_err(status)?
        .into_inner();
    let mut progress = Progress::new(Paint::stdout(), show);
    let mut last = None;
    while let Some(update) = stream.message().await.map_err(status)? {
        let Some(plan) = update.plan else { continue };
        progress.update(&plan);
        last = Some(plan);
    }
    let plan = last.ok_or_else(|| anyhow!("the planner sent nothing for plan {plan_id}"))?;
    progress.finish(&plan);
    Ok(plan)
}

/// 0 when the plan did all it was asked (VMs skipped with consent, e.g. blocked in preflight,
/// do not count against it); 1 when a VM failed or the plan was cancelled or failed.
pub fn exit_code(plan: &Plan) -> u8 {
    let failed = plan.counts.unwrap_or_default().failed > 0;
    let stopped = matches!(PlanState::try_from(plan.state), Ok(PlanState::Cancelled | PlanState::Failed));
    u8::from(failed || stopped || plan.halted)
}

fn print_plan_table(plan: &Plan) {
    println!("plan {}  {}  {}", plan.plan_id, state_word(plan.state), counts(plan));
    if !plan.reason.is_empty() {
        println!("  {}", plan.reason);
    }
    let mut rows = table(&["VM", "STATE", "PHASE", "WAVE", "REASON"]).right(&[3]);
    for vm in &plan.vms {
        let name = vm.vm.as_ref().map(|v| v.name.clone()).unwrap_or_else(|| "?".into());
        let state = word(VmState::try_from(vm.state).map(|s| s.as_str_name()), "VM_STATE_");
        let phase = word(Phase::try_from(vm.phase).map(|p| p.as_str_name()), "PHASE_");
        let error = vm.error.as_ref().map(|e| format!(" [{}] {}", e.code, e.message)).unwrap_or_default();
        rows.row([name, state, phase, (vm.wave + 1).to_string(), format!("{}{error}", vm.reason)]);
    }
    print!("{rows}");
    for g in &plan.gates {
        let (mark, line) = crate::progress::gate_line(plan, g);
        println!("{mark} {line}");
    }
}

pub fn counts(plan: &Plan) -> String {
    let c = plan.counts.unwrap_or_default();
    format!(
        "{} VMs: {} succeeded, {} running, {} pending, {} failed, {} skipped",
        c.total, c.succeeded, c.running, c.pending, c.failed, c.skipped
    )
}

pub fn state_word(state: i32) -> String {
    word(PlanState::try_from(state).map(|s| s.as_str_name()), "PLAN_STATE_").replace('_', " ")
}

/// A protobuf enum value's name as a user reads it: `VM_STATE_SUCCEEDED` → `succeeded`.
pub fn word<E>(name: Result<&str, E>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_ascii_lowercase()).unwrap_or_else(|_| "unknown".into())
}

fn readiness_word(r: Readiness) -> &'static str {
    match r {
        Readiness::Ready => "ready",
        Readiness::Warning => "warning",
        Readiness::Blocked => "blocked",
        Readiness::Unspecified => "?",
    }
}

pub use crate::exit::status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_forecasts_from_plans_that_ended_before_its_own_began() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let ended_at = |seconds| Plan { finished_at: at(seconds), ..Default::default() };
        assert!(ended(&ended_at(99), at(100)));
        assert!(!ended(&ended_at(100), at(100)), "the plan itself, or one that ended as it began");
        assert!(!ended(&ended_at(500), at(100)), "a plan that ended after it was created");
        assert!(!ended(&Plan::default(), at(100)), "a plan with no end");
        assert!(ended(&ended_at(500), None), "tern plan estimate takes every plan that ended");
    }
}
