//! A forecast of a failback plan before anything runs (`tern plan estimate`, and the fleet
//! benchmark's `estimate_s`): its makespan, each wave's end of failover, every VM's RTO (plan
//! start → VM committed) as percentiles, what binds the plan and what would shorten it.
//!
//! # The model
//!
//! A deterministic discrete-event run of the plan in which nothing is random and nothing is
//! sent. Every VM follows the planner's pipeline (`crates/planner/src/progress.rs`):
//! preflight, then failover and commit in a failover slot, reprotect in a reprotect slot,
//! cleanup in a cleanup slot. In each phase the VM first sends that phase's ARM requests
//! ([`TERN_REQUESTS`]: reads, then the write or deletes), then waits for the phase's job
//! ([`PhaseDurations`]: Azure's job and Tern noticing that it ended).
//!
//! - **Budgets** are ARM's token buckets ([`tern_asr::BudgetConfig`]), one set per
//!   subscription, full at the start, drawn on by every VM of the subscription in every phase,
//!   first come first served. Requests are fluid: a VM's 3.09 reads of a phase are one draw of
//!   3.09 tokens. N requests of a class cannot all pass before (N − burst) / rate seconds.
//!   Subscriptions' budgets are used in parallel.
//! - **Preflight** reads every VM before the plan is accepted, 32 VMs at a time in plan order
//!   (the planner's window); nothing is dispatched before the last VM has been read.
//! - **Slots**: at most `concurrency` VMs per phase at once (the plan's, else the planner's
//!   default, [`PLANNER_DEFAULT_CONCURRENCY`]); commit runs in the failover slot. A free slot
//!   goes to the waiting VM first in plan order, as the planner dispatches.
//! - **Waves** gate failover only: wave N+1's failovers start once every failover of wave N
//!   has ended. As in the planner (`failover_finished`), a VM committing counts as failed over;
//!   it still holds its failover slot until its commit is done. Reprotect and cleanup of a VM
//!   follow its own commit.
//! - **RTO** of a VM runs from the plan's start (submission, preflight included) to the end of
//!   its commit; the makespan to the end of the last VM's last phase.
//!
//! What binds the plan is read off its critical path: from the VM that ends last, back through
//! every wait — a budget wait counts for that budget, a job for that phase's jobs, a wait for a
//! wave counts what the VM that ended the wave did, and a wait for a slot what the VM that freed
//! it did while holding the slot (its jobs then count for the phase's concurrency; in a plan of
//! several waves a failover slot's jobs count for that wave's failover jobs). The cause with
//! the most seconds is the binding one. What would shorten the plan is not guessed: the same
//! model runs again with the change (a subscription split in two, fewer reads per VM, twice
//! the concurrency, one wave) and the changes that help are listed with their makespan.
//!
//! # What it ignores
//!
//! Request latency and the planner's and bus's own time (S1 in docs/performance.md: ~20 ms of
//! CPU per VM in all); the spread of job durations (every VM's job takes the typical
//! time); failures, retries and 429s (the client budget keeps Tern inside ARM's buckets); how
//! many worker processes run (each takes 256 commands at once by default: the plan's
//! concurrency is taken as the limit); reads whose number depends on time rather than VMs
//! (job-list pages are counted per VM, at their measured share); and, with durations from
//! earlier plans, that those durations already hold the budget waits of those plans.

mod plan;
mod sim;

use std::collections::BTreeMap;

use serde::Serialize;
pub use tern_asr::{BudgetConfig, Rate};

pub use plan::{Forecast, Selected};
use sim::{Class, Model, Pool, Why};

/// A change must save this share of the makespan to be listed.
const WORTH_LISTING: f64 = 0.02;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// The ARM requests one VM sends in one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PhaseRequests {
    /// GETs.
    pub reads: f64,
    /// PUT/PATCH/POSTs.
    pub writes: f64,
    /// DELETEs.
    pub deletes: f64,
}

/// The ARM requests one VM sends, per phase.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Requests {
    /// Before the plan is accepted.
    pub preflight: PhaseRequests,
    pub failover: PhaseRequests,
    pub commit: PhaseRequests,
    pub reprotect: PhaseRequests,
    pub cleanup: PhaseRequests,
}

/// ARM reads Tern spends per VM for a full failback with the default recovery point (latest
/// processed): docs/performance.md, "S2: the read budget, not the write budget" — the 11.27
/// measured there less the two reads per VM that commit 48923d7 removed after that
/// measurement, 9.27 as the section's quick run of this build measured.
pub const READS_PER_VM: f64 = 9.27;

/// Most leftovers cleanup deletes for one VM: the VM, its NIC, its disk and a public IP.
pub const MAX_LEFTOVERS: f64 = 4.0;

/// What Tern sends per VM and phase: the one table the forecast draws on.
///
/// Writes: one per side effect — the failover, the commit, the switch protection. Deletes:
/// cleanup's leftovers, none unless the plan removes them ([`Requests::with_leftovers`]).
/// Reads: today's measured figures, from docs/performance.md's S2 section (where they go in its
/// table, and what has changed since): preflight 0 (it lists recovery points only for a choice
/// other than latest processed, [`Requests::for_recovery_point`]; its capacity check costs two
/// reads per subscription and target region, not per VM, so the per-VM model leaves them out);
/// failover 3 (the protected
/// item, the point list the worker resolves when it sends, the ended failover job in full);
/// commit 0 (it decides on the item the failover read); reprotect 3 (the item before, the VM as
/// it runs now, the re-homed item after); cleanup 3 (the item, the VM running in the primary
/// region, the leftover VM); the remaining 0.27 — mostly the job watchers' list pages — split
/// over the three phases that wait on jobs through them.
pub const TERN_REQUESTS: Requests = Requests {
    preflight: PhaseRequests { reads: 0.0, writes: 0.0, deletes: 0.0 },
    failover: PhaseRequests { reads: 3.09, writes: 1.0, deletes: 0.0 },
    commit: PhaseRequests { reads: 0.09, writes: 1.0, deletes: 0.0 },
    reprotect: PhaseRequests { reads: 3.09, writes: 1.0, deletes: 0.0 },
    cleanup: PhaseRequests { reads: 3.0, writes: 0.0, deletes: 0.0 },
};

impl Requests {
    fn phases(&self) -> [PhaseRequests; 5] {
        [self.preflight, self.failover, self.commit, self.reprotect, self.cleanup]
    }

    /// Reads per VM, all phases.
    pub fn reads_per_vm(&self) -> f64 {
        self.phases().iter().map(|p| p.reads).sum()
    }

    /// Writes per VM, all phases.
    pub fn writes_per_vm(&self) -> f64 {
        self.phases().iter().map(|p| p.writes).sum()
    }

    /// Deletes per VM, all phases.
    pub fn deletes_per_vm(&self) -> f64 {
        self.phases().iter().map(|p| p.deletes).sum()
    }

    /// Cleanup deletes `n` leftovers per VM (0 to [`MAX_LEFTOVERS`]).
    pub fn with_leftovers(mut self, n: f64) -> Self {
        self.cleanup.deletes = n.clamp(0.0, MAX_LEFTOVERS);
        self
    }

    /// The reads of a plan failing over to `point`: "latest" lists no recovery points at all
    /// (ASR picks the point); latest processed only when the worker sends; any other choice
    /// in preflight as well (`tern_asr::point`, `crates/planner/src/preflight.rs`).
    pub fn for_recovery_point(mut self, point: tern_proto::RecoveryPointKind) -> Self {
        use tern_proto::RecoveryPointKind as Kind;
        match point {
            Kind::Unspecified | Kind::LatestProcessed => {}
            Kind::Latest => self.failover.reads = (self.failover.reads - 1.0).max(0.0),
            Kind::LatestAppConsistent | Kind::LatestCrashConsistent | Kind::Custom => self.preflight.reads += 1.0,
        }
        self
    }

    /// Every phase's reads times `factor`.
    pub fn with_reads_scaled(mut self, factor: f64) -> Self {
        for p in [&mut self.preflight, &mut self.failover, &mut self.commit, &mut self.reprotect, &mut self.cleanup] {
            p.reads *= factor;
        }
        self
    }
}

/// Seconds one VM spends in each phase besides waiting for the budget or a slot: Azure's job,
/// and Tern noticing it ended.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PhaseDurations {
    pub failover: f64,
    pub commit: f64,
    /// The switch-protection job and the initial replication after it, to the
    /// `SecondaryIrCompletion` job that ends it.
    pub reprotect: f64,
    pub cleanup: f64,
}

/// Azure's typical job durations, in seconds (shortest, longest): `tern-asr-sim`'s
/// `Durations::default()`, where each cites the recorded Azure traffic it comes from. A test
/// keeps the two equal.
pub mod azure {
    /// A new job's placeholder window, before it runs.
    pub const QUEUEING: (f64, f64) = (1.0, 5.0);
    /// Unplanned failover from a named recovery point.
    pub const FAILOVER: (f64, f64) = (120.0, 300.0);
    /// Added when failing over to "latest" (pending data processed first).
    pub const LATEST_PROCESSING: (f64, f64) = (30.0, 120.0);
    /// Added when the source VM is shut down first.
    pub const SHUTDOWN: (f64, f64) = (30.0, 90.0);
    /// Failover commit.
    pub const COMMIT: (f64, f64) = (30.0, 90.0);
    /// The switch-protection job.
    pub const REPROTECT: (f64, f64) = (300.0, 600.0);
    /// Initial replication after it.
    pub const INITIAL_REPLICATION: (f64, f64) = (600.0, 1800.0);
    /// Each of `PrimaryIrCompletion` and `SecondaryIrCompletion`.
    pub const IR_COMPLETION: (f64, f64) = (2.0, 10.0);
    /// Between the two.
    pub const IR_COMPLETION_GAP: (f64, f64) = (60.0, 240.0);
    /// Disabling replication.
    pub const DISABLE: (f64, f64) = (60.0, 180.0);

    /// The typical (mean) duration of a span.
    pub fn mean(span: (f64, f64)) -> f64 {
        (span.0 + span.1) / 2.0
    }
}

/// How time runs where a plan runs: how often the workers list jobs, and how much faster than
/// Azure's the jobs are (a simulator's `--time-compression`; 1 against Azure).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Clock {
    /// `TERN_POLL_INTERVAL_SECS` of the workers.
    pub poll_interval_secs: f64,
    /// Simulated seconds per real second; 1 for Azure.
    pub time_compression: f64,
}

/// What a plan asks of Azure's jobs, and how time runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobProfile {
    /// The source VM is shut down before failover (the plan's default).
    pub shut_down_source: bool,
    /// The recovery point is "latest": pending data is processed first.
    pub latest: bool,
    /// Cleanup disables replication (and waits for that job).
    pub disable_replication: bool,
    /// How time runs: a job's end is noticed half a poll interval late on average, and a
    /// simulator runs jobs `time_compression` times faster.
    pub clock: Clock,
}

impl PhaseDurations {
    /// Azure's typical durations ([`azure`]) for a plan of this profile.
    pub fn azure(profile: &JobProfile) -> Self {
        use azure::mean;
        let Clock { poll_interval_secs, time_compression } = profile.clock;
        let k = if time_compression > 0.0 { time_compression } else { 1.0 };
        let noticed = poll_interval_secs.max(0.0) / 2.0;
        let job = |span: f64, jobs: f64| (span + jobs * mean(azure::QUEUEING)) / k + jobs * noticed;
        let mut failover = mean(azure::FAILOVER);
        if profile.shut_down_source {
            failover += mean(azure::SHUTDOWN);
        }
        if profile.latest {
            failover += mean(azure::LATEST_PROCESSING);
        }
        // Switch protection, initial replication, then two completion jobs; the worker waits on
        // the first job and on the last.
        let reprotect = mean(azure::REPROTECT)
            + mean(azure::INITIAL_REPLICATION)
            + 2.0 * mean(azure::IR_COMPLETION)
            + mean(azure::IR_COMPLETION_GAP);
        Self {
            failover: job(failover, 1.0),
            commit: job(mean(azure::COMMIT), 1.0),
            reprotect: (reprotect + 3.0 * mean(azure::QUEUEING)) / k + 2.0 * noticed,
            // Deletes are not waited on; disabling replication is.
            cleanup: if profile.disable_replication { job(mean(azure::DISABLE), 1.0) } else { 0.0 },
        }
    }

    fn set(&mut self, phase: &str, secs: f64) {
        match phase {
            "failover" => self.failover = secs,
            "commit" => self.commit = secs,
            "reprotect" => self.reprotect = secs,
            _ => self.cleanup = secs,
        }
    }
}

/// The phases whose durations history can give, by their slug.
const TIMED_PHASES: [&str; 4] = ["failover", "commit", "reprotect", "cleanup"];

/// Phase durations of earlier plans: the median per phase over their succeeded VMs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct History {
    /// Plans that contributed.
    pub plans: usize,
    /// VMs that contributed.
    pub vms: usize,
    /// Median seconds per phase slug, for the phases some VM ran.
    pub medians: BTreeMap<String, f64>,
}

impl History {
    /// The medians of the failback plans among `plans` (drills and preflight-only plans do
    /// not count), over their succeeded VMs.
    pub fn of(plans: &[tern_proto::Plan]) -> Self {
        let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let (mut used, mut vms) = (0, 0);
        for plan in plans {
            let mode = plan.spec.as_ref().map(|s| s.mode()).unwrap_or_default();
            if !matches!(mode, tern_proto::PlanMode::Unspecified | tern_proto::PlanMode::Execute) {
                continue;
            }
            let before = vms;
            for vm in plan.vms.iter().filter(|v| v.state() == tern_proto::VmState::Succeeded) {
                let mut any = false;
                for (phase, d) in &vm.phase_durations {
                    if TIMED_PHASES.contains(&phase.as_str()) {
                        by_phase.entry(phase.clone()).or_default().push(d.seconds as f64 + f64::from(d.nanos) / 1e9);
                        any = true;
                    }
                }
                vms += usize::from(any);
            }
            used += usize::from(vms > before);
        }
        let medians = by_phase.into_iter().map(|(phase, mut v)| (phase, median(&mut v))).collect();
        Self { plans: used, vms, medians }
    }

    /// `durations` with every phase history knows taken from it; and a sentence saying where
    /// each phase's duration came from.
    pub fn apply(&self, mut durations: PhaseDurations) -> (PhaseDurations, String) {
        if self.medians.is_empty() {
            return (durations, AZURE_SOURCE.to_owned());
        }
        let (mut known, mut rest) = (Vec::new(), Vec::new());
        for phase in TIMED_PHASES {
            match self.medians.get(phase) {
                Some(&secs) => {
                    durations.set(phase, secs);
                    known.push(phase);
                }
                None => rest.push(phase),
            }
        }
        let plans = if self.plans == 1 { "1 earlier plan".to_owned() } else { format!("{} earlier plans", self.plans) };
        let mut source = format!("medians of {plans} ({} VMs): {}", self.vms, known.join(", "));
        if !rest.is_empty() {
            source.push_str(&format!("; {}: Azure's typical", rest.join(", ")));
        }
        (durations, source)
    }
}

/// Where Azure's typical durations come from, as the forecast says it.
pub const AZURE_SOURCE: &str = "Azure's typical job durations (tern-asr-sim's defaults, from recorded Azure traffic)";

/// The planner's per-phase concurrency when a plan sets none (`tern_planner::progress::
/// DEFAULT_CONCURRENCY`; a test keeps the two equal).
pub const PLANNER_DEFAULT_CONCURRENCY: u32 = 200;

/// VMs in flight per phase at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Failover with its commit.
    pub failover: u32,
    pub reprotect: u32,
    pub cleanup: u32,
}

impl Limits {
    /// The plan's limits, its zeros taking the planner's default.
    pub fn of(c: Option<&tern_proto::Concurrency>) -> Self {
        let pick = |v: u32| if v == 0 { PLANNER_DEFAULT_CONCURRENCY } else { v };
        let c = c.copied().unwrap_or_default();
        Self { failover: pick(c.failover), reprotect: pick(c.reprotect), cleanup: pick(c.cleanup) }
    }

    /// The same limit for every phase.
    pub fn all(n: u32) -> Self {
        Self { failover: n, reprotect: n, cleanup: n }
    }

    fn get(&self, pool: Pool) -> u32 {
        match pool {
            Pool::Failover => self.failover,
            Pool::Reprotect => self.reprotect,
            Pool::Cleanup => self.cleanup,
        }
    }

    fn doubled(mut self, pool: Pool) -> Self {
        match pool {
            Pool::Failover => self.failover = self.failover.saturating_mul(2),
            Pool::Reprotect => self.reprotect = self.reprotect.saturating_mul(2),
            Pool::Cleanup => self.cleanup = self.cleanup.saturating_mul(2),
        }
        self
    }
}

/// Which phases the plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PhasesOn {
    pub failover: bool,
    pub commit: bool,
    pub reprotect: bool,
    pub cleanup: bool,
}

impl Default for PhasesOn {
    fn default() -> Self {
        Self { failover: true, commit: true, reprotect: true, cleanup: true }
    }
}

/// VMs of one subscription in one wave, consecutive in plan order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The subscription id.
    pub subscription: String,
    /// Wave index (0 = first).
    pub wave: usize,
    pub vms: usize,
}

/// Everything the forecast needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The VMs, in plan order (the order the planner dispatches them in).
    pub groups: Vec<Group>,
    /// Wave names, by index; a wave without a name is numbered.
    pub waves: Vec<String>,
    /// Each subscription's ARM budget; `None`: no limit.
    pub budget: Option<BudgetConfig>,
    pub requests: Requests,
    pub durations: PhaseDurations,
    /// Where `durations` came from, in words.
    pub durations_source: String,
    pub concurrency: Limits,
    pub phases: PhasesOn,
}

/// Why there is no forecast.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EstimateError {
    #[error("no VM to estimate: the selection holds no VM that would run")]
    NoVms,
    #[error("the ARM budget's {0} bucket must hold at least one request and refill at a rate > 0")]
    Budget(&'static str),
    #[error("concurrency of the {0} phase must be at least 1")]
    Concurrency(&'static str),
    #[error("{0} must be a number ≥ 0")]
    Negative(&'static str),
    #[error("group {0} names wave {1}, but there are {2} waves")]
    Wave(usize, usize, usize),
    #[error("tern plan estimate forecasts failback plans; a {0} plan is not modelled")]
    Mode(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// p50 / p90 / max, nearest rank, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Some(Self { p50: rank(0.5), p90: rank(0.9), max: rank(1.0) })
    }
}

/// One wave's forecast.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaveForecast {
    pub name: String,
    pub vms: usize,
    /// When its last failover ends: the next wave may start (seconds from the plan's start).
    pub failover_end_s: f64,
    /// RTO of its VMs; absent when the plan does not fail over.
    pub rto_s: Option<Percentiles>,
}

/// One subscription: what the plan asks of its budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubscriptionForecast {
    pub id: String,
    pub vms: usize,
    pub reads: f64,
    pub writes: f64,
    pub deletes: f64,
    /// (requests − burst) / rate for each class: how long its bucket needs for the plan alone.
    pub read_budget_s: f64,
    pub write_budget_s: f64,
    pub delete_budget_s: f64,
}

/// A cause on the critical path and the seconds it holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    /// In words: "write budget of subscription …", "failover jobs of wave 2", …
    pub what: String,
    pub seconds: f64,
    /// Of the makespan.
    pub share: f64,
}

/// A change that shortens the plan, run through the same model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alternative {
    pub what: String,
    pub makespan_s: f64,
    /// The RTO's p90 with the change.
    pub rto_p90_s: Option<f64>,
}

/// The forecast.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub vms: usize,
    /// From the plan's start to the end of its last VM's last phase.
    pub makespan_s: f64,
    /// When preflight is done and the plan accepted.
    pub accepted_s: f64,
    /// RTO (plan start → VM committed) of every VM; absent when the plan does not fail over.
    pub rto_s: Option<Percentiles>,
    pub waves: Vec<WaveForecast>,
    pub subscriptions: Vec<SubscriptionForecast>,
    /// The cause holding most of the critical path.
    pub binding: Cause,
    /// Every cause on the critical path, most first.
    pub critical_path: Vec<Cause>,
    /// Changes that would shorten the plan, most first.
    pub shorter: Vec<Alternative>,
    /// What the forecast assumed.
    pub assumed: Assumed,
}

/// The inputs as the forecast used them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assumed {
    pub durations_s: PhaseDurations,
    pub durations_source: String,
    pub requests_per_vm: Requests,
    pub reads_per_vm: f64,
    pub writes_per_vm: f64,
    pub deletes_per_vm: f64,
    pub concurrency: Limits,
    /// Per subscription; absent: no limit.
    pub budget: Option<BudgetConfig>,
    pub phases: PhasesOn,
}

impl Inputs {
    /// The forecast.
    pub fn estimate(&self) -> Result<Estimate, EstimateError> {
        let model = Model::new(self)?;
        let run = model.run();
        let mut rtos: Vec<f64> = run.vms.iter().filter_map(|v| v.committed).collect();
        let rto_s = Percentiles::of(&mut rtos);

        let waves = (0..model.waves)
            .map(|w| {
                let mut rto: Vec<f64> = run.vms.iter().filter(|v| v.wave == w).filter_map(|v| v.committed).collect();
                WaveForecast {
                    name: self.waves.get(w).cloned().unwrap_or_else(|| format!("wave-{}", w + 1)),
                    vms: model.vms.iter().filter(|(_, vw)| *vw == w).count(),
                    failover_end_s: run.wave_end[w],
                    rto_s: Percentiles::of(&mut rto),
                }
            })
            .collect();

        let per_vm = |class: Class| self.requests.phases().iter().map(|p| class.of(p)).sum::<f64>();
        let subscriptions = model
            .subs
            .iter()
            .enumerate()
            .map(|(s, id)| {
                let n = model.vms.iter().filter(|(vs, _)| *vs == s).count();
                let demand = |class: Class| n as f64 * per_vm(class);
                let bound = |class: Class| match &self.budget {
                    Some(b) => {
                        let r = class.rate(b);
                        ((demand(class) - r.capacity) / r.per_second).max(0.0)
                    }
                    None => 0.0,
                };
                SubscriptionForecast {
                    id: id.clone(),
                    vms: n,
                    reads: demand(Class::Read),
                    writes: demand(Class::Write),
                    deletes: demand(Class::Delete),
                    read_budget_s: bound(Class::Read),
                    write_budget_s: bound(Class::Write),
                    delete_budget_s: bound(Class::Delete),
                }
            })
            .collect();

        let path = model.critical_path(&run);
        let mut ranked: Vec<(Why, f64)> = path.into_iter().collect();
        // Most seconds first; on a tie, budgets before concurrency before jobs, earlier waves first.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let share = |secs: f64| if run.makespan > 0.0 { secs / run.makespan } else { 0.0 };
        let critical_path: Vec<Cause> = ranked
            .iter()
            .map(|&(why, secs)| Cause { what: model.describe(why, &self.waves), seconds: secs, share: share(secs) })
            .collect();
        let binding = critical_path.first().cloned().unwrap_or_else(|| Cause {
            what: "nothing: every step is instant".to_owned(),
            seconds: 0.0,
            share: 0.0,
        });
        let shorter = self.alternatives(&model, &ranked, run.makespan);

        Ok(Estimate {
            vms: model.vms.len(),
            makespan_s: run.makespan,
            accepted_s: run.accepted,
            rto_s,
            waves,
            subscriptions,
            binding,
            critical_path,
            shorter,
            assumed: Assumed {
                durations_s: self.durations,
                durations_source: self.durations_source.clone(),
                requests_per_vm: self.requests,
                reads_per_vm: self.requests.reads_per_vm(),
                writes_per_vm: self.requests.writes_per_vm(),
                deletes_per_vm: self.requests.deletes_per_vm(),
                concurrency: self.concurrency,
                budget: self.budget,
                phases: self.phases,
            },
        })
    }

    /// The changes worth trying, each run through the model; those that save at least 2 % of
    /// the makespan, most saved first.
    fn alternatives(&self, model: &Model, path: &[(Why, f64)], makespan: f64) -> Vec<Alternative> {
        let mut tries: Vec<(String, Model)> = Vec::new();
        // The busiest budget on the path: its subscription's VMs over two subscriptions.
        if let Some(&(Why::Budget { sub, class }, _)) = path.iter().find(|(w, _)| matches!(w, Why::Budget { .. })) {
            let mut m = model.clone();
            let twin = m.subs.len();
            m.subs.push(format!("{}-2", m.subs[sub]));
            let mut flip = false;
            for vm in m.vms.iter_mut().filter(|(s, _)| *s == sub) {
                if flip {
                    vm.0 = twin;
                }
                flip = !flip;
            }
            tries.push((format!("more subscriptions: the VMs of {} spread over two", model.subs[sub]), m));
            // Reads: as few as make the write budget bind instead (ARM grants so many reads per write).
            if class == Class::Read
                && let Some(b) = &model.budget
            {
                let (reads, writes) = (model.requests.reads_per_vm(), model.requests.writes_per_vm());
                let even = writes * b.reads.per_second / b.writes.per_second;
                let target = if even > 0.0 && even < reads { even } else { reads / 2.0 };
                let mut m = model.clone();
                m.requests = m.requests.with_reads_scaled(target / reads);
                tries.push((format!("fewer reads: {target:.2} per VM instead of {reads:.2}"), m));
            }
        }
        // Each phase whose slots could run short: twice the concurrency.
        for pool in Pool::ALL {
            let limit = model.limits.get(pool);
            if (limit as usize) < model.vms.len() {
                let mut m = model.clone();
                m.limits = m.limits.doubled(pool);
                tries.push((
                    format!(
                        "more concurrency: {} for the {} phase instead of {limit}",
                        limit.saturating_mul(2),
                        pool.name()
                    ),
                    m,
                ));
            }
        }
        // Several waves: one.
        if model.waves > 1 {
            let mut m = model.clone();
            m.waves = 1;
            for vm in &mut m.vms {
                vm.1 = 0;
            }
            tries.push((format!("a different wave split: one wave instead of {}", model.waves), m));
        }
        let mut out: Vec<Alternative> = tries
            .into_iter()
            .filter_map(|(what, m)| {
                let run = m.run();
                if run.makespan > makespan * (1.0 - WORTH_LISTING) {
                    return None;
                }
                let mut rto: Vec<f64> = run.vms.iter().filter_map(|v| v.committed).collect();
                Some(Alternative {
                    what,
                    makespan_s: run.makespan,
                    rto_p90_s: Percentiles::of(&mut rto).map(|p| p.p90),
                })
            })
            .collect();
        out.sort_by(|a, b| a.makespan_s.total_cmp(&b.makespan_s));
        out
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::Bucket;

    /// Azure's typical jobs of a failback with the source shut down, polled every
    /// `poll_interval_secs`, run `time_compression` times faster.
    fn durations(poll_interval_secs: f64, time_compression: f64) -> PhaseDurations {
        PhaseDurations::azure(&JobProfile {
            shut_down_source: true,
            latest: false,
            disable_replication: false,
            clock: Clock { poll_interval_secs, time_compression },
        })
    }

    /// S2's (docs/performance.md): 300× compressed, polled every 0.5 s.
    fn s2_durations() -> PhaseDurations {
        durations(0.5, 300.0)
    }

    /// Against Azure, polled every 30 s as the services do by default.
    fn azure_durations() -> PhaseDurations {
        durations(30.0, 1.0)
    }

    fn plan(groups: &[(&str, usize, usize)], durations: PhaseDurations) -> Inputs {
        let waves = groups.iter().map(|g| g.1).max().unwrap_or(0) + 1;
        Inputs {
            groups: groups.iter().map(|&(s, wave, vms)| Group { subscription: s.to_owned(), wave, vms }).collect(),
            waves: (1..=waves).map(|w| format!("wave-{w}")).collect(),
            budget: Some(BudgetConfig::default()),
            requests: TERN_REQUESTS,
            durations,
            durations_source: AZURE_SOURCE.to_owned(),
            concurrency: Limits::all(PLANNER_DEFAULT_CONCURRENCY),
            phases: PhasesOn::default(),
        }
    }

    /// Tern as it would be with a read-frugal client: 4 reads per VM, none in preflight.
    fn frugal() -> Requests {
        Requests {
            preflight: PhaseRequests::default(),
            failover: PhaseRequests { reads: 2.0, writes: 1.0, deletes: 0.0 },
            commit: PhaseRequests { reads: 0.5, writes: 1.0, deletes: 0.0 },
            reprotect: PhaseRequests { reads: 1.0, writes: 1.0, deletes: 0.0 },
            cleanup: PhaseRequests { reads: 0.5, writes: 0.0, deletes: 0.0 },
        }
    }

    fn within(actual: f64, expected: f64, pct: f64) -> bool {
        (actual - expected).abs() <= expected * pct / 100.0
    }

    #[test]
    fn the_table_holds_the_measured_reads_and_one_write_per_side_effect() {
        assert!((TERN_REQUESTS.reads_per_vm() - READS_PER_VM).abs() < 1e-9, "{}", TERN_REQUESTS.reads_per_vm());
        assert_eq!(TERN_REQUESTS.writes_per_vm(), 3.0);
        assert_eq!(TERN_REQUESTS.deletes_per_vm(), 0.0);
        assert_eq!(TERN_REQUESTS.with_leftovers(9.0).deletes_per_vm(), MAX_LEFTOVERS);
        // docs/performance.md states the figure the table comes from.
        let doc = include_str!("../../../docs/performance.md");
        assert!(
            doc.contains(&format!("{READS_PER_VM} reads per VM")),
            "docs/performance.md no longer says {READS_PER_VM}"
        );
        use tern_proto::RecoveryPointKind as Kind;
        assert!(within(TERN_REQUESTS.for_recovery_point(Kind::Latest).reads_per_vm(), READS_PER_VM - 1.0, 1e-6));
        let app = TERN_REQUESTS.for_recovery_point(Kind::LatestAppConsistent);
        assert_eq!(app.preflight.reads, 1.0);
        assert!(within(app.reads_per_vm(), READS_PER_VM + 1.0, 1e-6));
    }

    #[test]
    fn azure_durations_are_the_simulators_defaults() {
        let sim = tern_asr_sim::Durations::default();
        let span = |s: tern_asr_sim::Span| (s.min_secs, s.max_secs);
        assert_eq!(azure::QUEUEING, span(sim.queueing));
        assert_eq!(azure::FAILOVER, span(sim.failover));
        assert_eq!(azure::LATEST_PROCESSING, span(sim.latest_processing));
        assert_eq!(azure::SHUTDOWN, span(sim.shutdown));
        assert_eq!(azure::COMMIT, span(sim.commit));
        assert_eq!(azure::REPROTECT, span(sim.reprotect));
        assert_eq!(azure::INITIAL_REPLICATION, span(sim.initial_replication));
        assert_eq!(azure::IR_COMPLETION, span(sim.ir_completion));
        assert_eq!(azure::IR_COMPLETION_GAP, span(sim.ir_completion_gap));
        assert_eq!(azure::DISABLE, span(sim.disable));
        // Failover: queued, shut down, failed over; noticed half a 30 s poll later.
        let d = azure_durations();
        assert_eq!(d.failover, 3.0 + 60.0 + 210.0 + 15.0);
        assert_eq!(d.commit, 3.0 + 60.0 + 15.0);
        assert_eq!(d.reprotect, 3.0 * 3.0 + 450.0 + 1200.0 + 2.0 * 6.0 + 150.0 + 30.0);
        assert_eq!(d.cleanup, 0.0);
    }

    #[test]
    fn the_default_concurrency_is_the_planners() {
        assert_eq!(PLANNER_DEFAULT_CONCURRENCY, tern_planner::progress::DEFAULT_CONCURRENCY);
        let c = tern_proto::Concurrency { failover: 0, reprotect: 50, cleanup: 0 };
        assert_eq!(Limits::of(Some(&c)), Limits { failover: 200, reprotect: 50, cleanup: 200 });
        assert_eq!(Limits::of(None), Limits::all(200));
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let mut b = Bucket::full(Rate { capacity: 200.0, per_second: 10.0 });
        let last = (0..6000).map(|_| b.draw(0.0, 1.0)).fold(0.0, f64::max);
        assert!(within(last, 580.0, 0.01), "{last}");
        let mut b = Bucket::full(Rate { capacity: 200.0, per_second: 10.0 });
        assert_eq!(b.draw(0.0, 150.0), 0.0);
        assert_eq!(b.draw(100.0, 150.0), 100.0, "refilled to the brim meanwhile");
        assert!(within(b.draw(100.0, 100.0), 105.0, 0.01), "50 left, 50 more at 10/s");
    }

    #[test]
    fn one_subscription_is_bound_by_its_write_budget() {
        let mut inputs = plan(&[("sub-a", 0, 2000)], s2_durations());
        inputs.requests = frugal();
        let e = inputs.estimate().unwrap();
        let bound = (6000.0 - 200.0) / 10.0;
        assert!(e.makespan_s >= bound && within(e.makespan_s, bound, 3.0), "{} vs {bound}", e.makespan_s);
        assert_eq!(e.binding.what, "write budget of subscription sub-a");
        assert!(e.binding.share > 0.9, "{:?}", e.critical_path);
        assert_eq!(e.subscriptions[0].write_budget_s, bound);
        assert!(e.shorter.iter().any(|a| a.what.starts_with("more subscriptions")), "{:?}", e.shorter);
        let rto = e.rto_s.unwrap();
        assert!(rto.p50 < rto.p90 && rto.p90 <= rto.max && rto.max < e.makespan_s, "{rto:?}");
    }

    #[test]
    fn three_subscriptions_share_the_work() {
        let one = {
            let mut inputs = plan(&[("sub-a", 0, 2000)], s2_durations());
            inputs.requests = frugal();
            inputs.estimate().unwrap().makespan_s
        };
        // The same VMs over three subscriptions, listed in turn.
        let groups: Vec<(&str, usize, usize)> = (0..200).map(|i| (["sub-a", "sub-b", "sub-c"][i % 3], 0, 10)).collect();
        let mut inputs = plan(&groups, s2_durations());
        inputs.requests = frugal();
        let e = inputs.estimate().unwrap();
        assert_eq!(e.subscriptions.len(), 3);
        assert!(within(e.makespan_s, one / 3.0, 8.0), "{} vs a third of {one}", e.makespan_s);
        assert!(e.binding.what.starts_with("write budget of subscription sub-"), "{:?}", e.binding);
    }

    #[test]
    fn subscriptions_take_turns_for_failover_slots_so_their_budgets_work_in_parallel() {
        // The planner interleaves subscriptions in plan order: a plan listing one subscription's
        // VMs after the other's still spends both budgets from the start.
        let mut inputs = plan(&[("sub-a", 0, 1000), ("sub-b", 0, 1000)], s2_durations());
        inputs.requests = frugal();
        let e = inputs.estimate().unwrap();
        let mut wide = inputs.clone();
        wide.concurrency = Limits::all(2000);
        let parallel = wide.estimate().unwrap().makespan_s;
        assert!(e.makespan_s <= parallel * 1.05, "{} vs {parallel}", e.makespan_s);
        let mut one = plan(&[("sub-a", 0, 1000)], s2_durations());
        one.requests = frugal();
        let alone = one.estimate().unwrap().makespan_s;
        assert!(e.makespan_s <= alone * 1.10, "two subscriptions {} vs one {alone}", e.makespan_s);
    }

    #[test]
    fn s2_is_bound_by_its_read_budget() {
        // The build docs/performance.md measured: 11.27 reads per VM (a point list in preflight,
        // an item read before commit), 891 s for 2,000 VMs: the read budget's time.
        let mut measured = plan(&[("sub-a", 0, 2000)], s2_durations());
        measured.requests.preflight.reads += 1.0;
        measured.requests.commit.reads += 1.0;
        let e = measured.estimate().unwrap();
        let bound = (2000.0 * 11.27 - 250.0) / 25.0;
        assert!(e.makespan_s >= bound - 1.0 && within(e.makespan_s, bound, 3.0), "{} vs {bound}", e.makespan_s);
        assert!(within(e.makespan_s, 891.0, 5.0), "measured 891 s");
        assert_eq!(e.binding.what, "read budget of subscription sub-a");
        // Its preflight read one point list per VM before the plan was accepted (~70 s).
        assert!(within(e.accepted_s, (2000.0 - 250.0) / 25.0, 1.0), "{}", e.accepted_s);
        let fewer = e.shorter.iter().find(|a| a.what.starts_with("fewer reads: 7.50 per VM")).expect("fewer reads");
        assert!(within(fewer.makespan_s, 580.0, 10.0), "{fewer:?}");

        // Today's table: still the read budget, 2 reads per VM fewer.
        let e = plan(&[("sub-a", 0, 2000)], s2_durations()).estimate().unwrap();
        let bound = (2000.0 * READS_PER_VM - 250.0) / 25.0;
        assert!(within(e.makespan_s, bound, 3.0), "{} vs {bound}", e.makespan_s);
        assert_eq!((e.binding.what.as_str(), e.accepted_s), ("read budget of subscription sub-a", 0.0));
        // The quick S2 run of this build: 200 VMs in 64.5 s.
        let e = plan(&[("sub-a", 0, 200)], s2_durations()).estimate().unwrap();
        assert!(within(e.makespan_s, 64.5, 5.0), "{}", e.makespan_s);
    }

    #[test]
    fn long_failovers_of_the_first_wave_bind_a_plan_of_two_waves() {
        // Failovers of an hour (an estate's own history, say); wave 1 holds three rounds of
        // 200, wave 2 fewer than one.
        let durations = PhaseDurations { failover: 3600.0, commit: 60.0, reprotect: 600.0, cleanup: 0.0 };
        let mut inputs = plan(&[("sub-a", 0, 600), ("sub-a", 1, 100)], durations);
        inputs.concurrency.reprotect = 1000;
        let e = inputs.estimate().unwrap();
        assert_eq!(e.binding.what, "failover jobs of wave 1");
        // Wave 1: three rounds; wave 2 starts once wave 1's last failover ended.
        assert!(within(e.waves[0].failover_end_s, 2.0 * 3660.0 + 3600.0, 1.0), "{:?}", e.waves);
        assert!(within(e.waves[1].failover_end_s, e.waves[0].failover_end_s + 3600.0, 1.0), "{:?}", e.waves);
        assert!(within(e.makespan_s, e.waves[1].failover_end_s + 660.0, 1.0), "{}", e.makespan_s);
        let rto1 = e.waves[0].rto_s.unwrap();
        let rto2 = e.waves[1].rto_s.unwrap();
        assert!(rto1.max < rto2.p50, "wave 2 commits after wave 1: {rto1:?} {rto2:?}");
        // One wave would not help (four rounds instead of three and one); more slots would.
        assert_eq!(e.shorter.len(), 1, "{:?}", e.shorter);
        assert!(e.shorter[0].what.contains("400 for the failover phase"), "{:?}", e.shorter);

        // Two waves of equal jobs and fewer VMs than slots: the last wave holds its commit as
        // well (the first one's gate opens at its failovers' end), and one wave would save one
        // failover.
        let e = plan(&[("sub-a", 0, 100), ("sub-a", 1, 100)], durations).estimate().unwrap();
        assert_eq!(e.binding.what, "failover jobs of wave 2");
        assert_eq!(e.critical_path[1].what, "failover jobs of wave 1");
        assert_eq!(e.shorter.len(), 1, "{:?}", e.shorter);
        assert_eq!(e.shorter[0].what, "a different wave split: one wave instead of 2");
        assert!(within(e.shorter[0].makespan_s, e.makespan_s - 3600.0, 1.0), "{:?}", e.shorter);
    }

    #[test]
    fn azure_length_reprotects_are_bound_by_reprotect_concurrency() {
        let mut inputs = plan(&[("sub-a", 0, 2000)], azure_durations());
        inputs.budget = None;
        let e = inputs.estimate().unwrap();
        assert_eq!(e.binding.what, "concurrency of the reprotect phase");
        // Ten rounds of reprotects: 2,000 VMs, 200 at a time.
        let d = azure_durations();
        assert!(e.makespan_s > 10.0 * d.reprotect, "{}", e.makespan_s);
        // The RTO does not wait for reprotects.
        assert!(e.rto_s.unwrap().max < 11.0 * (d.failover + d.commit), "{:?}", e.rto_s);
        assert!(e.shorter[0].what.contains("400 for the reprotect phase"), "{:?}", e.shorter);
    }

    #[test]
    fn without_budget_or_slots_to_wait_for_one_vm_takes_its_jobs() {
        let e = plan(&[("sub-a", 0, 1)], azure_durations()).estimate().unwrap();
        let d = azure_durations();
        assert!(within(e.makespan_s, d.failover + d.commit + d.reprotect + d.cleanup, 0.01), "{}", e.makespan_s);
        assert_eq!(e.rto_s.unwrap().max, d.failover + d.commit);
        assert_eq!(e.binding.what, "reprotect jobs, initial replication included");
        assert!(e.shorter.is_empty(), "{:?}", e.shorter);
    }

    #[test]
    fn phases_left_out_are_not_waited_for() {
        let mut inputs = plan(&[("sub-a", 0, 10)], azure_durations());
        inputs.phases.reprotect = false;
        inputs.phases.cleanup = false;
        let d = azure_durations();
        let e = inputs.estimate().unwrap();
        assert!(within(e.makespan_s, d.failover + d.commit, 0.01), "{}", e.makespan_s);
        inputs.phases = PhasesOn { failover: false, commit: false, reprotect: true, cleanup: false };
        let e = inputs.estimate().unwrap();
        assert!(e.rto_s.is_none());
        assert!(within(e.makespan_s, d.reprotect, 0.01), "{}", e.makespan_s);
    }

    #[test]
    fn bad_inputs_are_refused_naming_what() {
        assert_eq!(plan(&[], azure_durations()).estimate().unwrap_err(), EstimateError::NoVms);
        let mut inputs = plan(&[("s", 0, 1)], azure_durations());
        inputs.concurrency.cleanup = 0;
        assert_eq!(inputs.estimate().unwrap_err(), EstimateError::Concurrency("cleanup"));
        let mut inputs = plan(&[("s", 0, 1)], azure_durations());
        inputs.budget.as_mut().unwrap().writes.per_second = 0.0;
        assert_eq!(inputs.estimate().unwrap_err(), EstimateError::Budget("write"));
        let mut inputs = plan(&[("s", 0, 1)], azure_durations());
        inputs.groups[0].wave = 3;
        assert!(matches!(inputs.estimate().unwrap_err(), EstimateError::Wave(0, 3, 1)));
    }

    fn vm(state: tern_proto::VmState, durations: &[(&str, i64)]) -> tern_proto::VmStatus {
        tern_proto::VmStatus {
            state: state as i32,
            phase_durations: durations
                .iter()
                .map(|&(p, s)| (p.to_owned(), prost_types::Duration { seconds: s, nanos: 0 }))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn history_gives_the_medians_of_succeeded_vms() {
        use tern_proto::VmState::{Failed, Succeeded};
        let done = tern_proto::Plan {
            vms: vec![
                vm(Succeeded, &[("failover", 100), ("commit", 10), ("reprotect", 900)]),
                vm(Succeeded, &[("failover", 300), ("commit", 30), ("reprotect", 1100)]),
                vm(Succeeded, &[("failover", 200), ("commit", 20), ("reprotect", 1000)]),
                vm(Failed, &[("failover", 9999)]),
            ],
            ..Default::default()
        };
        let drill = tern_proto::Plan {
            spec: Some(tern_proto::PlanSpec { mode: tern_proto::PlanMode::Drill as i32, ..Default::default() }),
            vms: vec![vm(Succeeded, &[("drill", 50), ("failover", 1)])],
            ..Default::default()
        };
        let h = History::of(&[done, drill]);
        assert_eq!((h.plans, h.vms), (1, 3));
        assert_eq!(h.medians["failover"], 200.0);
        let (d, source) = h.apply(azure_durations());
        assert_eq!((d.failover, d.commit, d.reprotect), (200.0, 20.0, 1000.0));
        assert_eq!(d.cleanup, azure_durations().cleanup);
        assert_eq!(source, "medians of 1 earlier plan (3 VMs): failover, commit, reprotect; cleanup: Azure's typical");
        let (d, source) = History::of(&[]).apply(azure_durations());
        assert_eq!((d, source.as_str()), (azure_durations(), AZURE_SOURCE));
    }
}
