//! The scenarios of the design's targets (§6): S1 orchestration overhead, S2 ARM-bound,
//! S3 event latency, S4 an estate of several subscriptions and vaults whose ARM budgets work
//! in parallel. Each run starts a fresh stack, submits one plan of every ready VM,
//! follows it to its end through the bench's own event subscription, checks every VM
//! succeeded, and turns what it measured into figures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tern_proto::{
    Concurrency, FailurePolicy, GetPlanRequest, OnCriticalFailure, PlanSpec, PlanState, Selection, SubmitPlanRequest,
    VmState, selection,
};

use tern_cli::estimate::{
    AZURE_SOURCE, BudgetConfig, Clock, Estimate, Group, Inputs, JobProfile, Limits, PhaseDurations, PhasesOn, Rate,
    TERN_REQUESTS,
};

use crate::events::{Collector, Received};
use crate::probe::{self, NatsSample, ProcSample};
use crate::stack::{Stack, StackOptions};

/// Which scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Orchestration overhead: zero-latency simulator, no throttling, no client budget.
    S1,
    /// ARM-bound: ARM's buckets enforced, realistic job durations, compressed time.
    S2,
    /// Event latency: realistic job durations, no throttling.
    S3,
    /// An estate: S2 over several subscriptions and vaults, each subscription with its own
    /// ARM buckets, in one plan.
    S4,
}

/// S4's estate: subscriptions, and vaults in each (its VMs are spread evenly over the vaults).
pub const S4_SUBSCRIPTIONS: usize = 3;
/// See [`S4_SUBSCRIPTIONS`].
pub const S4_VAULTS_PER_SUBSCRIPTION: usize = 2;

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Scenario; 4] = [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4];

    /// `s1`, `s2`, `s3`.
    pub fn key(self) -> &'static str {
        match self {
            Scenario::S1 => "s1",
            Scenario::S2 => "s2",
            Scenario::S3 => "s3",
            Scenario::S4 => "s4",
        }
    }

    /// What it measures.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::S1 => "orchestration overhead (zero-latency simulator, no throttling)",
            Scenario::S2 => "ARM-bound (ARM throttling, realistic job durations, compressed time)",
            Scenario::S3 => "event latency (realistic job durations, no throttling)",
            Scenario::S4 => {
                "estate: 3 subscriptions × 2 vaults in one plan (ARM throttling per subscription, realistic job durations, compressed time)"
            }
        }
    }
}

/// Settings every run shares.
#[derive(Clone, Debug)]
pub struct BenchSettings {
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// The nats-server binary.
    pub nats_server: PathBuf,
    /// Where run directories (logs, nats store) go.
    pub out_dir: PathBuf,
    /// Per-phase concurrency of the plan (`spec.concurrency`).
    pub plan_concurrency: u32,
    /// Commands each worker runs at once (`TERN_CONCURRENCY`); the workers' default when unset.
    pub worker_concurrency: Option<usize>,
    /// How often the services poll ASR jobs (`TERN_POLL_INTERVAL_SECS`).
    pub poll_interval_secs: f64,
    /// Simulated seconds per real second in S2 and S3.
    pub time_compression: f64,
    /// Longest a plan may run before the run is abandoned.
    pub timeout: Duration,
}

/// What one run measured: named figures, plus the raw numbers behind them.
#[derive(Clone, Debug, Default)]
pub struct RunFigures {
    /// Figure key → value (see `report::ROWS` for names and units).
    pub figures: BTreeMap<String, f64>,
    /// Raw numbers and settings, for the JSON record.
    pub details: Value,
}

/// What following one plan produced.
/// Job-list reads per second each worker's job watcher may spend where nothing throttles
/// (S1, S3). The default, 2, keeps three workers well inside ARM's 25 reads/s (S2).
const UNTHROTTLED_WATCHER_READS: f64 = 20.0;

struct PlanRun {
    plan_id: String,
    makespan: Duration,
    events: Vec<Received>,
    procs_before: Vec<(&'static str, ProcSample)>,
    procs_after: Vec<(&'static str, ProcSample)>,
    nats_before: NatsSample,
    nats_after: NatsSample,
    plan_state: String,
    /// Median seconds each phase took per VM, from the final plan: where a VM's time goes.
    phase_medians: BTreeMap<String, f64>,
}

/// The median duration of each phase over the plan's VMs, in seconds.
fn phase_medians(plan: &tern_proto::Plan) -> BTreeMap<String, f64> {
    let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for vm in &plan.vms {
        for (phase, d) in &vm.phase_durations {
            by_phase.entry(phase.clone()).or_default().push(d.seconds as f64 + f64::from(d.nanos) / 1e9);
        }
    }
    by_phase
        .into_iter()
        .map(|(phase, mut v)| {
            v.sort_by(f64::total_cmp);
            (phase, v[v.len() / 2])
        })
        .collect()
}

/// Runs scenario `s` once over `vms` VMs; `index` numbers the run (and seeds the simulator).
pub async fn run(s: Scenario, vms: usize, index: usize, settings: &BenchSettings) -> anyhow::Result<RunFigures> {
    let run_dir = settings.out_dir.join("runs").join(format!("{}-{index}", s.key()));
    let vaults = if s == Scenario::S4 { S4_SUBSCRIPTIONS * S4_VAULTS_PER_SUBSCRIPTION } else { 1 };
    if !vms.is_multiple_of(vaults) {
        bail!("{} spreads its VMs evenly over {vaults} vaults: {vms} is not a multiple of {vaults}", s.key());
    }
    let mut sim_args: Vec<String> = vec![
        "--seed-vms".into(),
        (vms / vaults).to_string(),
        "--seed-state".into(),
        "ready-for-failback".into(),
        "--seed".into(),
        index.to_string(),
    ];
    let mut env: Vec<(String, String)> =
        vec![("TERN_POLL_INTERVAL_SECS".into(), settings.poll_interval_secs.to_string())];
    let mut worker_env: Vec<(String, String)> = Vec::new();
    if let Some(c) = settings.worker_concurrency {
        worker_env.push(("TERN_CONCURRENCY".into(), c.to_string()));
    }
    let compression = settings.time_compression.to_string();
    match s {
        Scenario::S1 => {
            sim_args.extend(["--zero-latency".into(), "--no-throttle".into()]);
            env.push(("TERN_BUDGET".into(), "null".into()));
            worker_env.push(("TERN_WATCHER_READS_PER_SEC".into(), UNTHROTTLED_WATCHER_READS.to_string()));
        }
        Scenario::S2 | Scenario::S4 => {
            // ARM's documented per-subscription buckets; the services keep their default client
            // budget, which is the same (tern_asr::BudgetConfig::default()).
            sim_args.extend(["--time-compression".into(), compression]);
            if s == Scenario::S4 {
                sim_args.extend([
                    "--subscriptions".into(),
                    S4_SUBSCRIPTIONS.to_string(),
                    "--vaults-per-subscription".into(),
                    S4_VAULTS_PER_SUBSCRIPTION.to_string(),
                ]);
            }
            for (flag, (capacity, rate)) in [
                ("--throttle-reads", READ_BUCKET),
                ("--throttle-writes", WRITE_BUCKET),
                ("--throttle-deletes", DELETE_BUCKET),
            ] {
                sim_args.extend([flag.into(), format!("{capacity}:{rate}")]);
            }
        }
        Scenario::S3 => {
            sim_args.extend(["--time-compression".into(), compression, "--no-throttle".into()]);
            env.push(("TERN_BUDGET".into(), "null".into()));
            worker_env.push(("TERN_WATCHER_READS_PER_SEC".into(), UNTHROTTLED_WATCHER_READS.to_string()));
        }
    }
    let options = StackOptions {
        bin_dir: settings.bin_dir.clone(),
        nats_server: settings.nats_server.clone(),
        run_dir: run_dir.clone(),
        sim_args: sim_args.clone(),
        service_env: env.clone(),
        worker_env: worker_env.clone(),
    };
    let mut stack =
        Stack::start(&options).await.with_context(|| format!("starting the stack (logs in {})", run_dir.display()))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let measured = measure(s, vms, &mut stack, &http, settings).await;
    stack.stop().await;
    let mut figures = measured.with_context(|| format!("logs in {}", run_dir.join("logs").display()))?;
    if let Value::Object(d) = &mut figures.details {
        d.insert("sim_args".into(), json!(sim_args));
        d.insert("service_env".into(), json!(env.into_iter().collect::<BTreeMap<_, _>>()));
        d.insert("worker_env".into(), json!(worker_env.into_iter().collect::<BTreeMap<_, _>>()));
        d.insert("run_dir".into(), json!(run_dir));
    }
    Ok(figures)
}

async fn measure(
    s: Scenario,
    vms: usize,
    stack: &mut Stack,
    http: &reqwest::Client,
    settings: &BenchSettings,
) -> anyhow::Result<RunFigures> {
    let subjects: Vec<String> = match s {
        // Overhead: listen only to what ends the plan and what shows progress.
        Scenario::S1 => ["plan.>", "cleanup.succeeded", "cleanup.failed", "cleanup.skipped"]
            .iter()
            .map(|t| format!("{}.*.{t}", tern_bus::subjects::EVENTS_PREFIX))
            .collect(),
        Scenario::S2 | Scenario::S3 | Scenario::S4 => vec![format!("{}.>", tern_bus::subjects::EVENTS_PREFIX)],
    };
    match s {
        Scenario::S1 => Ok(s1_figures(vms, &follow_plan(s, vms, stack, http, settings, &subjects).await?)),
        Scenario::S2 | Scenario::S4 => {
            // The forecast first, from the scenario's parameters alone.
            let e = arm_estimate(s, vms, settings)?;
            eprintln!("  estimate: {:.1} s, bound by the {}", e.makespan_s, e.binding.what);
            let run = follow_plan(s, vms, stack, http, settings, &subjects).await?;
            arm_figures(vms, &run, &e, stack, http, settings).await
        }
        Scenario::S3 => {
            s3_figures(vms, &follow_plan(s, vms, stack, http, settings, &subjects).await?, stack, http).await
        }
    }
}

/// Submits the plan, waits for its end event, samples the processes and nats-server around
/// it, and checks that every VM succeeded.
async fn follow_plan(
    s: Scenario,
    vms: usize,
    stack: &mut Stack,
    http: &reqwest::Client,
    settings: &BenchSettings,
    subjects: &[String],
) -> anyhow::Result<PlanRun> {
    let mut collector = Collector::start(&stack.nats_url, &stack.events_reader, subjects).await?;
    let mut planner = stack.planner().await?;
    let c = settings.plan_concurrency;
    let spec = PlanSpec {
        // An estate: every vault the services may act on.
        vault_id: if stack.vault_ids.len() > 1 { String::new() } else { stack.vault_ids[0].clone() },
        all_vaults: stack.vault_ids.len() > 1,
        selection: Some(Selection { by: Some(selection::By::AllReady(true)) }),
        concurrency: Some(Concurrency { failover: c, reprotect: c, cleanup: c }),
        // A failed VM must not halt the plan: the bench reports it and fails the run instead.
        failure_policy: Some(FailurePolicy {
            on_critical_failure: OnCriticalFailure::Continue as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let nats_before = probe::nats(http, &stack.nats_monitor).await?;
    let procs_before = sample_all(stack)?;

    let started = Instant::now();
    let reply = planner
        .submit_plan(SubmitPlanRequest { spec: Some(spec) })
        .await
        .map_err(|e| anyhow!("SubmitPlan failed: {} ({:?})", e.message(), e.code()))?
        .into_inner();
    let plan_id = reply.plan.context("the planner answered SubmitPlan without a plan")?.plan_id;
    eprintln!("  plan {plan_id} accepted after {:.1} s", started.elapsed().as_secs_f64());

    let deadline = started + settings.timeout;
    let mut last_report = Instant::now();
    let end = loop {
        tokio::select! {
            end = collector.ends.recv() => {
                let end = end.ok_or_else(|| anyhow!("the event subscription closed"))?;
                if end.plan_id == plan_id {
                    break end;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(why) = stack.exited() {
                    bail!("{why}");
                }
                if Instant::now() > deadline {
                    bail!("plan {plan_id} did not end within {:?} ({} of {vms} VMs finished)", settings.timeout, collector.finished_vms());
                }
                if last_report.elapsed() >= Duration::from_secs(15) {
                    last_report = Instant::now();
                    eprintln!("  {} {:>5.0} s: {} of {vms} VMs through cleanup", s.key().to_uppercase(), started.elapsed().as_secs_f64(), collector.finished_vms());
                }
            }
        }
    };
    let makespan = end.at.duration_since(started);
    let procs_after = sample_all(stack)?;
    let nats_after = probe::nats(http, &stack.nats_monitor).await?;

    let plan = planner
        .get_plan(GetPlanRequest { plan_id: plan_id.clone() })
        .await
        .map_err(|e| anyhow!("GetPlan failed: {} ({:?})", e.message(), e.code()))?
        .into_inner();
    let counts = plan.counts.unwrap_or_default();
    let plan_state = PlanState::try_from(plan.state).map(|p| p.as_str_name()).unwrap_or("unknown").to_owned();
    if counts.succeeded as usize != vms || counts.total as usize != vms {
        let failed: Vec<String> = plan
            .vms
            .iter()
            .filter(|v| v.state != VmState::Succeeded as i32)
            .take(5)
            .map(|v| {
                let name = v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or("?");
                let error = v.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
                format!(
                    "{name} ({}) {} {error}",
                    VmState::try_from(v.state).map(|s| s.as_str_name()).unwrap_or("?"),
                    v.reason
                )
            })
            .collect();
        bail!(
            "plan {plan_id} ended {} ({plan_state}) with {} of {vms} VMs succeeded ({} failed, {} skipped, total {}); first: {}",
            end.kind,
            counts.succeeded,
            counts.failed,
            counts.skipped,
            counts.total,
            failed.join("; ")
        );
    }
    let events = collector.finish();
    let phase_medians = phase_medians(&plan);
    Ok(PlanRun {
        plan_id,
        makespan,
        events,
        procs_before,
        procs_after,
        nats_before,
        nats_after,
        plan_state,
        phase_medians,
    })
}

fn sample_all(stack: &Stack) -> anyhow::Result<Vec<(&'static str, ProcSample)>> {
    stack.procs.iter().map(|p| Ok((p.name, probe::sample(p.pid)?))).collect()
}

fn base_details(run: &PlanRun, vms: usize) -> serde_json::Map<String, Value> {
    let mut d = serde_json::Map::new();
    d.insert("plan_id".into(), json!(run.plan_id));
    d.insert("plan_state".into(), json!(run.plan_state));
    d.insert("vms".into(), json!(vms));
    d.insert("makespan_s".into(), json!(run.makespan.as_secs_f64()));
    d.insert("events_received".into(), json!(run.events.len()));
    d.insert("phase_median_s".into(), json!(run.phase_medians));
    d
}

/// S1: makespan, throughput, CPU per VM, peak memory, bus traffic per VM.
fn s1_figures(vms: usize, run: &PlanRun) -> RunFigures {
    let n = vms as f64;
    let mut f = BTreeMap::new();
    let makespan = run.makespan.as_secs_f64();
    f.insert("makespan_s".into(), makespan);
    f.insert("vms_per_s".into(), n / makespan);
    let mut cpu_total = 0.0;
    let mut procs = serde_json::Map::new();
    for ((name, before), (_, after)) in run.procs_before.iter().zip(&run.procs_after) {
        let cpu = (after.cpu_secs - before.cpu_secs).max(0.0);
        cpu_total += cpu;
        f.insert(format!("cpu_ms_per_vm.{name}"), cpu * 1000.0 / n);
        f.insert(format!("peak_rss_mib.{name}"), after.peak_rss_bytes as f64 / (1024.0 * 1024.0));
        procs.insert(
            (*name).into(),
            json!({"cpu_s_during_run": cpu, "cpu_s_total": after.cpu_secs, "peak_rss_bytes": after.peak_rss_bytes}),
        );
    }
    f.insert("cpu_ms_per_vm.total".into(), cpu_total * 1000.0 / n);
    let (b, a) = (&run.nats_before, &run.nats_after);
    f.insert("nats_msgs_per_vm".into(), a.in_msgs.saturating_sub(b.in_msgs) as f64 / n);
    f.insert("kv_writes_per_vm".into(), a.kv_writes.saturating_sub(b.kv_writes) as f64 / n);
    if let (Some(x), Some(y)) = (b.js_api_total, a.js_api_total) {
        f.insert("js_api_per_vm".into(), y.saturating_sub(x) as f64 / n);
    }
    let mut d = base_details(run, vms);
    d.insert("processes".into(), Value::Object(procs));
    d.insert(
        "nats".into(),
        json!({
            "in_msgs": a.in_msgs.saturating_sub(b.in_msgs),
            "out_msgs": a.out_msgs.saturating_sub(b.out_msgs),
            "kv_writes": a.kv_writes.saturating_sub(b.kv_writes),
            "js_api_requests": a.js_api_total.zip(b.js_api_total).map(|(y, x)| y.saturating_sub(x)),
        }),
    );
    RunFigures { figures: f, details: Value::Object(d) }
}

/// ARM's documented buckets, which S2 configures in the simulator (and which the services'
/// default client budget matches): (capacity, refill per second).
const WRITE_BUCKET: (f64, f64) = (200.0, 10.0);
const DELETE_BUCKET: (f64, f64) = (200.0, 10.0);
const READ_BUCKET: (f64, f64) = (250.0, 25.0);

/// Commands a worker runs at once unless told (`TERN_CONCURRENCY`; crates/worker/src/config.rs).
const WORKER_DEFAULT_CONCURRENCY: usize = 256;

/// What `tern plan estimate`'s model forecasts for S2 or S4 before it runs, from the
/// scenario's parameters alone: each subscription with the buckets above, Azure's typical jobs
/// compressed as the simulator runs them and polled as the services poll, Tern's requests per
/// VM, and the plan's concurrency (one process per worker, each taking its own concurrency at
/// most).
fn arm_estimate(s: Scenario, vms: usize, settings: &BenchSettings) -> anyhow::Result<Estimate> {
    let bucket = |(capacity, per_second): (f64, f64)| Rate { capacity, per_second };
    let worker = settings.worker_concurrency.unwrap_or(WORKER_DEFAULT_CONCURRENCY);
    let subscriptions = if s == Scenario::S4 { S4_SUBSCRIPTIONS } else { 1 };
    let inputs = Inputs {
        // The planner lists vault after vault; it lets subscriptions take turns itself.
        groups: (1..=subscriptions)
            .map(|k| Group { subscription: format!("subscription {k}"), wave: 0, vms: vms / subscriptions })
            .collect(),
        waves: vec!["wave-1".into()],
        budget: Some(BudgetConfig {
            reads: bucket(READ_BUCKET),
            writes: bucket(WRITE_BUCKET),
            deletes: bucket(DELETE_BUCKET),
        }),
        requests: TERN_REQUESTS,
        durations: PhaseDurations::azure(&JobProfile {
            shut_down_source: true,
            latest: false,
            disable_replication: false,
            clock: Clock {
                poll_interval_secs: settings.poll_interval_secs,
                time_compression: settings.time_compression,
            },
        }),
        durations_source: AZURE_SOURCE.into(),
        concurrency: Limits::all(settings.plan_concurrency.min(u32::try_from(worker).unwrap_or(u32::MAX))),
        phases: PhasesOn::default(),
    };
    inputs.estimate().with_context(|| format!("estimating {}", s.key().to_uppercase()))
}

/// S2 and S4: makespan against the lower bound (the slowest subscription's) and the forecast,
/// 429s, and polling per in-flight VM.
async fn arm_figures(
    vms: usize,
    run: &PlanRun,
    estimate: &Estimate,
    stack: &Stack,
    http: &reqwest::Client,
    settings: &BenchSettings,
) -> anyhow::Result<RunFigures> {
    let requests = probe::sim_requests(http, &stack.sim_url).await?;
    let admitted = probe::admitted_writes(http, &stack.sim_url).await?;
    let jobs = probe::sim_jobs(http, &stack.sim_url).await?;
    let reads = probe::reads_by_kind(http, &stack.sim_url).await?;
    let received = probe::sim_requests_by_subscription(http, &stack.sim_url).await?;

    // Each subscription's buckets start full, then refill at a fixed rate: N requests of a
    // class cannot all be admitted before (N - capacity) / rate seconds. The subscriptions'
    // buckets run side by side, so the slowest subscription bounds the plan.
    let bound = |n: u64, (capacity, rate): (f64, f64)| ((n as f64 - capacity) / rate).max(0.0);
    let mut per_subscription = serde_json::Map::new();
    let (mut write_bound, mut delete_bound, mut read_budget_time) = (0.0f64, 0.0f64, 0.0f64);
    for (sub, (writes, deletes)) in &admitted.by_subscription {
        let r = received.get(sub).cloned().unwrap_or_default();
        // Reads admitted: received, less the 429s that were not answers to writes.
        let write_429s = admitted.throttled_by_subscription.get(sub).copied().unwrap_or(0);
        let reads_admitted = r.reads.saturating_sub(r.throttled.saturating_sub(write_429s));
        let (w, d, rt) =
            (bound(*writes, WRITE_BUCKET), bound(*deletes, DELETE_BUCKET), bound(reads_admitted, READ_BUCKET));
        write_bound = write_bound.max(w);
        delete_bound = delete_bound.max(d);
        read_budget_time = read_budget_time.max(rt);
        per_subscription.insert(
            sub.clone(),
            json!({"writes_admitted": writes, "deletes_admitted": deletes, "reads_admitted": reads_admitted,
                   "write_bound_s": w, "delete_bound_s": d, "read_budget_time_s": rt, "received": r}),
        );
    }
    // No VM can finish before its own jobs have run one after the other — nor before the
    // initial replication Azure runs after its reprotect job, from that job's end to the
    // completion jobs that end it (the waits before an `irCompletion` job are Azure's, not Tern's).
    let mut by_target: BTreeMap<&str, Vec<&probe::SimJob>> = BTreeMap::new();
    for j in jobs.values() {
        by_target.entry(j.target.as_str()).or_default().push(j);
    }
    let mut chains: BTreeMap<&str, f64> = BTreeMap::new();
    for (target, mut own) in by_target {
        own.sort_by_key(|j| j.created_unix_ms);
        let mut chain = 0.0;
        for (i, j) in own.iter().enumerate() {
            chain += (j.completed_unix_ms - j.created_unix_ms) as f64 / 1000.0;
            if i > 0 && j.operation == "irCompletion" {
                chain += (j.created_unix_ms - own[i - 1].completed_unix_ms).max(0) as f64 / 1000.0;
            }
        }
        chains.insert(target, chain);
    }
    let (longest_vm, job_bound) =
        chains.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| ((*k).to_owned(), *v)).unwrap_or_default();
    // The reads' time is not part of the bound (how many reads a run needs is up to Tern), but
    // when Tern's reads outgrow their bucket it is what the makespan follows.
    let lower_bound = write_bound.max(delete_bound).max(job_bound);
    let makespan = run.makespan.as_secs_f64();

    let throttled = requests.throttled + requests.storm_throttled;
    let total = requests.total();
    let inflight_vm_secs = inflight_vm_seconds(&run.events);

    let mut f = BTreeMap::new();
    f.insert("makespan_s".into(), makespan);
    f.insert("lower_bound_s".into(), lower_bound);
    f.insert("write_bound_s".into(), write_bound);
    f.insert("delete_bound_s".into(), delete_bound);
    f.insert("job_chain_bound_s".into(), job_bound);
    f.insert("read_budget_time_s".into(), read_budget_time);
    f.insert("makespan_over_bound".into(), if lower_bound > 0.0 { makespan / lower_bound } else { f64::NAN });
    f.insert("estimate_s".into(), estimate.makespan_s);
    f.insert("estimate_error_pct".into(), (estimate.makespan_s - makespan).abs() * 100.0 / makespan);
    f.insert("http_429".into(), throttled as f64);
    f.insert("http_429_pct".into(), if total > 0 { throttled as f64 * 100.0 / total as f64 } else { 0.0 });
    let per_inflight = |n: u64| if inflight_vm_secs > 0.0 { n as f64 / inflight_vm_secs } else { f64::NAN };
    f.insert("polls_per_inflight_vm_s".into(), per_inflight(reads.job_polling));
    f.insert("reads_per_inflight_vm_s".into(), per_inflight(requests.reads));
    f.insert("writes_per_vm".into(), admitted.writes() as f64 / vms as f64);
    f.insert("arm_reads_per_vm".into(), requests.reads as f64 / vms as f64);
    let mut d = base_details(run, vms);
    d.insert("sim_requests".into(), json!(requests));
    d.insert("admitted_mutations".into(), json!(admitted));
    d.insert("per_subscription".into(), Value::Object(per_subscription));
    d.insert("reads_by_kind".into(), json!(reads));
    let mut by_operation: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs.values() {
        *by_operation.entry(j.operation.as_str()).or_default() += 1;
    }
    d.insert("jobs".into(), json!(by_operation));
    d.insert("longest_job_chain_vm".into(), json!(longest_vm));
    d.insert("inflight_vm_seconds".into(), json!(inflight_vm_secs));
    d.insert("time_compression".into(), json!(settings.time_compression));
    d.insert("estimate".into(), json!(estimate));
    Ok(RunFigures { figures: f, details: Value::Object(d) })
}

/// Σ over VMs of (last event − first event) of the phases that talk to ASR: how long VMs were
/// in flight, added up.
fn inflight_vm_seconds(events: &[Received]) -> f64 {
    let mut spans: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for e in events {
        let Some(vm) = e.vm() else { continue };
        let (phase, _) = e.phase_and_outcome();
        if !matches!(phase, "failover" | "commit" | "reprotect" | "cleanup") {
            continue;
        }
        let name = vm.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let span = spans.entry(name).or_insert((e.at_unix_ms, e.at_unix_ms));
        span.0 = span.0.min(e.at_unix_ms);
        span.1 = span.1.max(e.at_unix_ms);
    }
    spans.values().map(|(a, b)| (b - a) / 1000.0).sum()
}

/// S3: from the simulator's job ending (and from Tern first reading it ended) to the bench
/// receiving the phase's `succeeded` event that names the job.
async fn s3_figures(vms: usize, run: &PlanRun, stack: &Stack, http: &reqwest::Client) -> anyhow::Result<RunFigures> {
    let jobs = probe::sim_jobs(http, &stack.sim_url).await?;
    let mut from_seen = Vec::new();
    let mut from_end = Vec::new();
    let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut succeeded, mut without_job, mut unmatched, mut unseen) = (0usize, 0usize, 0usize, 0usize);
    // The first event naming a job once its worker saw it ended: the phase's `succeeded`, or —
    // for a reprotect, whose phase succeeds only when initial replication has completed later —
    // the progress event that reports the job's success.
    let mut naming: BTreeMap<String, Vec<(f64, &str, &str)>> = BTreeMap::new();
    for e in &run.events {
        let (phase, outcome) = e.phase_and_outcome();
        let Some(vm) = e.vm() else { continue };
        if outcome == "succeeded" {
            succeeded += 1;
            if vm.asr_job_id.is_empty() {
                without_job += 1; // e.g. cleanup with nothing to delete: no job to measure from
                continue;
            }
        }
        if vm.asr_job_id.is_empty() || !matches!(outcome, "succeeded" | "progress") {
            continue;
        }
        let name = vm.asr_job_id.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
        naming.entry(name).or_default().push((e.at_unix_ms, phase, outcome));
    }
    for (name, events) in &naming {
        let Some(job) = jobs.get(name) else {
            unmatched += 1;
            continue;
        };
        let Some(&(_, phase, _)) = events.iter().find(|(_, _, o)| *o == "succeeded").or(events.first()) else {
            continue;
        };
        // Seen by the worker that acts on the job: another worker's job listing may show it
        // ended first, but that worker does nothing with it.
        let owner = match phase {
            "reprotect" => "tern-reprotect",
            "cleanup" => "tern-cleanup",
            _ => "tern-failover",
        };
        let Some(seen) = job.first_terminal_read_by.get(owner).copied().or(job.first_terminal_read_unix_ms) else {
            unseen += 1;
            continue;
        };
        let Some(at) = events.iter().map(|(at, _, _)| *at).filter(|at| *at >= seen as f64).reduce(f64::min) else {
            unseen += 1;
            continue;
        };
        from_end.push(at - job.completed_unix_ms as f64);
        let latency = at - seen as f64;
        from_seen.push(latency);
        by_phase.entry(phase.to_owned()).or_default().push(latency);
    }
    if from_seen.is_empty() {
        bail!(
            "no succeeded event could be matched to a simulator job ({succeeded} succeeded events, {unmatched} unmatched)"
        );
    }
    let mut f = BTreeMap::new();
    f.insert("latency_p50_ms".into(), percentile(&mut from_seen, 0.50));
    f.insert("latency_p99_ms".into(), percentile(&mut from_seen, 0.99));
    f.insert("latency_max_ms".into(), percentile(&mut from_seen, 1.0));
    f.insert("latency_events".into(), from_seen.len() as f64);
    f.insert("from_job_end_p50_ms".into(), percentile(&mut from_end, 0.50));
    f.insert("from_job_end_p99_ms".into(), percentile(&mut from_end, 0.99));
    f.insert("makespan_s".into(), run.makespan.as_secs_f64());
    let phases: BTreeMap<String, Value> = by_phase
        .iter_mut()
        .map(|(p, v)| {
            (p.clone(), json!({"count": v.len(), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99), "max_ms": percentile(v, 1.0)}))
        })
        .collect();
    let mut d = base_details(run, vms);
    d.insert(
        "matching".into(),
        json!({
            "succeeded_events": succeeded,
            "matched": from_seen.len(),
            "without_asr_job": without_job,
            "job_not_in_simulator": unmatched,
            "job_never_read_ended": unseen,
        }),
    );
    d.insert("by_phase".into(), json!(phases));
    Ok(RunFigures { figures: f, details: Value::Object(d) })
}

/// Nearest-rank percentile (`q` in 0..=1); sorts `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        assert_eq!(percentile(&mut [7.0], 0.99), 7.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }
}
