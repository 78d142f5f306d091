//! `tern plan …`: submit, check and follow failback plans through the planner's gRPC API.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use tern_proto::planner_client::PlannerClient;
use tern_proto::{
    CancelPlanRequest, GetPlanRequest, ListPlansRequest, NameList, PausePlanRequest, Phase, Plan, PlanSpec, PlanState,
    PreflightRequest, Readiness, RecoveryPointChoice, RecoveryPointKind, ResumePlanRequest, RetryVmRequest, Selection,
    SubmitPlanRequest, VmState, selection,
};
use tonic::transport::Channel;

/// Where the stack is: `DATA_DIR/endpoints.json` (written by `tern up`) or explicit flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The data dir of a `tern up` stack (its endpoints.json names the planner and vault).
    #[arg(long, env = "TERN_DATA_DIR", default_value = ".tern", global = true)]
    data_dir: PathBuf,
    /// The planner's gRPC address (HOST:PORT), instead of endpoints.json.
    #[arg(long, env = "TERN_PLANNER", global = true)]
    planner: Option<String>,
}

/// What a plan covers and how (the common cases of a plan file, as flags).
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
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
    /// Fail over without shutting the source VM down first.
    #[arg(long)]
    no_shutdown: bool,
    /// Go ahead with the ready VMs when preflight blocks some (they are skipped with the reason).
    #[arg(long)]
    proceed_with_ready: bool,
    /// ARM id of the Recovery Services vault (default: the `tern up` stack's).
    #[arg(long, value_name = "ID")]
    vault: Option<String>,
    /// Makes submission idempotent: the same id twice is one plan.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum PlanCommand {
    /// Check every selected VM without changing anything.
    Preflight(SpecArgs),
    /// Submit a plan; prints its id. With --watch, follows it to the end.
    Submit {
        #[command(flatten)]
        spec: SpecArgs,
        /// Follow the plan until it ends (exit code as for `watch`).
        #[arg(long)]
        watch: bool,
    },
    /// One plan with every VM.
    Get { plan_id: String },
    /// Plans, newest first.
    List,
    /// Follow a plan until it ends. Exit code 0: it did all it was asked; 1: a VM failed or the
    /// plan was cancelled.
    Watch { plan_id: String },
    /// Stop dispatching new work; running phases finish.
    Pause { plan_id: String },
    /// Continue a paused plan.
    Resume { plan_id: String },
    /// Stop dispatching and skip what has not started; running phases finish.
    Cancel { plan_id: String },
    /// Run a failed VM's phase again.
    Retry { plan_id: String, vm: String },
}

/// The stack's endpoints, from flags or endpoints.json.
#[derive(Debug)]
pub struct Stack {
    pub planner: String,
    pub vault_id: Option<String>,
}

impl Target {
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_owned(), planner: None }
    }

    pub fn resolve(&self) -> anyhow::Result<Stack> {
        let file = self.data_dir.join("endpoints.json");
        let endpoints: Option<serde_json::Value> = match std::fs::read_to_string(&file) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?),
            Err(_) => None,
        };
        let field = |k: &str| endpoints.as_ref().and_then(|e| e[k].as_str()).map(str::to_owned);
        let planner = self.planner.clone().or_else(|| field("planner_addr")).ok_or_else(|| {
            anyhow!(
                "no Tern stack found: {} does not exist. Start one with `tern up`, or pass --planner HOST:PORT",
                file.display()
            )
        })?;
        Ok(Stack { planner, vault_id: field("vault_id") })
    }
}

impl Stack {
    pub async fn client(&self) -> anyhow::Result<PlannerClient<Channel>> {
        let url = if self.planner.contains("://") { self.planner.clone() } else { format!("http://{}", self.planner) };
        PlannerClient::connect(url.clone())
            .await
            .with_context(|| format!("cannot reach the planner at {url}; is the stack running (`tern up`)?"))
    }
}

fn parse_point(s: &str) -> Result<RecoveryPointChoice, String> {
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
            all_ready: true,
            vm: Vec::new(),
            recovery_point: None,
            no_shutdown: false,
            proceed_with_ready: true,
            vault: None,
            request_id: None,
        }
    }

    fn spec(&self, stack: &Stack) -> anyhow::Result<PlanSpec> {
        let vault_id = self
            .vault
            .clone()
            .or_else(|| stack.vault_id.clone())
            .ok_or_else(|| anyhow!("which vault? pass --vault with the Recovery Services vault's ARM id"))?;
        let by = if self.all_ready {
            selection::By::AllReady(true)
        } else if !self.vm.is_empty() {
            selection::By::VmNames(NameList { values: self.vm.clone() })
        } else {
            bail!("which VMs? pass --all-ready or --vm NAME (repeatable)");
        };
        Ok(PlanSpec {
            request_id: self.request_id.clone().unwrap_or_default(),
            vault_id,
            selection: Some(Selection { by: Some(by) }),
            recovery_point: self.recovery_point.clone(),
            shut_down_source: self.no_shutdown.then_some(false),
            proceed_with_ready: self.proceed_with_ready,
            ..Default::default()
        })
    }
}

/// Runs a plan command; returns the process exit code.
pub async fn run(target: &Target, command: PlanCommand) -> anyhow::Result<u8> {
    let stack = target.resolve()?;
    let mut grpc = stack.client().await?;
    match command {
        PlanCommand::Preflight(args) => {
            let spec = args.spec(&stack)?;
            let report = grpc.preflight(PreflightRequest { spec: Some(spec) }).await.map_err(status)?.into_inner();
            for vm in &report.vms {
                let name = vm.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?");
                let readiness = Readiness::try_from(vm.readiness).unwrap_or(Readiness::Unspecified);
                let why: Vec<&str> = vm
                    .checks
                    .iter()
                    .filter(|c| c.result != Readiness::Ready as i32)
                    .map(|c| c.detail.as_str())
                    .collect();
                println!("{name:<24} {:<8} {}", readiness_word(readiness), why.join("; "));
            }
            let blocked = report.vms.iter().filter(|v| v.readiness == Readiness::Blocked as i32).count();
            println!(
                "{} VMs, {} blocked: {}",
                report.vms.len(),
                blocked,
                if report.ready { "ready" } else { "not ready" }
            );
            Ok(0)
        }
        PlanCommand::Submit { spec, watch } => {
            let spec = spec.spec(&stack)?;
            let reply = grpc.submit_plan(SubmitPlanRequest { spec: Some(spec) }).await.map_err(status)?.into_inner();
            let plan = reply.plan.ok_or_else(|| anyhow!("the planner answered without a plan"))?;
            println!("{}", plan.plan_id);
            if watch { follow(&mut grpc, &plan.plan_id).await } else { Ok(0) }
        }
        PlanCommand::Get { plan_id } => {
            let plan = grpc.get_plan(GetPlanRequest { plan_id }).await.map_err(status)?.into_inner();
            print_plan(&plan);
            Ok(0)
        }
        PlanCommand::List => {
            let plans = grpc.list_plans(ListPlansRequest::default()).await.map_err(status)?.into_inner().plans;
            for p in plans {
                println!("{}  {:<22} {}", p.plan_id, state_word(p.state), counts(&p));
            }
            Ok(0)
        }
        PlanCommand::Watch { plan_id } => follow(&mut grpc, &plan_id).await,
        PlanCommand::Pause { plan_id } => {
            let plan = grpc.pause_plan(PausePlanRequest { plan_id, reason: String::new() }).await.map_err(status)?;
            println!("{}", state_word(plan.into_inner().state));
            Ok(0)
        }
        PlanCommand::Resume { plan_id } => {
            let plan = grpc.resume_plan(ResumePlanRequest { plan_id }).await.map_err(status)?;
            println!("{}", state_word(plan.into_inner().state));
            Ok(0)
        }
        PlanCommand::Cancel { plan_id } => {
            let plan = grpc.cancel_plan(CancelPlanRequest { plan_id, ..Default::default() }).await.map_err(status)?;
            println!("{}", state_word(plan.into_inner().state));
            Ok(0)
        }
        PlanCommand::Retry { plan_id, vm } => {
            let plan = grpc
                .retry_vm(RetryVmRequest { plan_id, vm_name: vm, phase: Phase::Unspecified as i32 })
                .await
                .map_err(status)?;
            println!("{}", state_word(plan.into_inner().state));
            Ok(0)
        }
    }
}

/// Prints a line each time the plan changes, then the summary; 0 when every VM succeeded.
pub async fn follow(grpc: &mut PlannerClient<Channel>, plan_id: &str) -> anyhow::Result<u8> {
    let mut stream = grpc
        .watch_plan(tern_proto::WatchPlanRequest { plan_id: plan_id.to_owned() })
        .await
        .map_err(status)?
        .into_inner();
    let mut last = None;
    let mut line = String::new();
    while let Some(update) = stream.message().await.map_err(status)? {
        let Some(plan) = update.plan else { continue };
        let now = format!("{:<22} {}", state_word(plan.state), counts(&plan));
        if now != line {
            println!("{now}");
            line = now;
        }
        last = Some(plan);
    }
    let plan = last.ok_or_else(|| anyhow!("the planner sent nothing for plan {plan_id}"))?;
    print_summary(&plan);
    Ok(exit_code(&plan))
}

/// 0 when the plan did all it was asked (VMs skipped with consent, e.g. blocked in preflight,
/// do not count against it); 1 when a VM failed or the plan was cancelled or failed.
fn exit_code(plan: &Plan) -> u8 {
    let failed = plan.counts.unwrap_or_default().failed > 0;
    let stopped = matches!(PlanState::try_from(plan.state), Ok(PlanState::Cancelled | PlanState::Failed));
    u8::from(failed || stopped || plan.halted)
}

fn print_plan(plan: &Plan) {
    println!("plan {}  {}  {}", plan.plan_id, state_word(plan.state), counts(plan));
    if !plan.reason.is_empty() {
        println!("  {}", plan.reason);
    }
    for vm in &plan.vms {
        let name = vm.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?");
        let state = word(VmState::try_from(vm.state).map(|s| s.as_str_name()), "VM_STATE_");
        let phase = word(Phase::try_from(vm.phase).map(|p| p.as_str_name()), "PHASE_");
        let error = vm.error.as_ref().map(|e| format!(" [{}] {}", e.code, e.message)).unwrap_or_default();
        println!("  {name:<24} {state:<10} {phase:<10} wave {:<3} {}{error}", vm.wave + 1, vm.reason);
    }
}

/// The end-of-plan summary: outcome, RPO/RTO medians, and each VM that did not succeed.
pub fn print_summary(plan: &Plan) {
    println!("plan {} {}: {}", plan.plan_id, state_word(plan.state), counts(plan));
    if !plan.reason.is_empty() {
        println!("  {}", plan.reason);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let secs = |d: &Option<prost_types::Duration>| d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    let rpo = median(plan.vms.iter().filter_map(|v| secs(&v.rpo)).collect());
    let rto = median(plan.vms.iter().filter_map(|v| secs(&v.rto)).collect());
    if let (Some(rpo), Some(rto)) = (rpo, rto) {
        println!("  median RPO {rpo:.0} s (by ASR's clock), median RTO {rto:.1} s");
    }
    for vm in plan.vms.iter().filter(|v| v.state != VmState::Succeeded as i32) {
        let name = vm.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?");
        let state = word(VmState::try_from(vm.state).map(|s| s.as_str_name()), "VM_STATE_");
        let what = match &vm.error {
            Some(e) if !e.recommended_action.is_empty() => {
                format!("[{}] {} — {}", e.code, e.message, e.recommended_action)
            }
            Some(e) => format!("[{}] {}", e.code, e.message),
            None => vm.reason.clone(),
        };
        println!("  {name:<24} {state:<10} {what}");
    }
}

fn counts(plan: &Plan) -> String {
    let c = plan.counts.unwrap_or_default();
    format!(
        "{} VMs: {} succeeded, {} running, {} pending, {} failed, {} skipped",
        c.total, c.succeeded, c.running, c.pending, c.failed, c.skipped
    )
}

fn state_word(state: i32) -> String {
    word(PlanState::try_from(state).map(|s| s.as_str_name()), "PLAN_STATE_").replace('_', " ")
}

/// A protobuf enum value's name as a user reads it: `VM_STATE_SUCCEEDED` → `succeeded`.
fn word<E>(name: Result<&str, E>, prefix: &str) -> String {
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

/// A gRPC error as the user should read it.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_owned() })
}
