//! From a plan to the model and back: what `tern plan estimate` feeds it (the VMs the
//! planner's preflight answers with, the spec's options) and what it prints; and what `tern
//! report` feeds it (the VMs a submitted plan ran).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::columns::Columns;

use super::{
    BudgetConfig, Clock, Estimate, EstimateError, Group, History, Inputs, JobProfile, Limits, Percentiles,
    PhaseDurations, PhasesOn, Rate, TERN_REQUESTS,
};

/// The VMs a plan runs, by subscription and wave: as the planner's preflight found them
/// before it is submitted ([`Selected::of`]), or as its record holds them after
/// ([`Selected::of_plan`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Selected {
    /// In plan order.
    pub groups: Vec<Group>,
    /// Names of the waves, in order: those that hold a VM before submission, the plan's after.
    pub waves: Vec<String>,
    /// VMs preflight blocks: they would be skipped (or the plan refused).
    pub blocked: Vec<String>,
    /// What the forecast could not know, in words.
    pub notes: Vec<String>,
}

impl Selected {
    /// Groups the VMs preflight answered with by subscription (from the vault each one is in)
    /// and wave (from the spec, by name; VMs in no wave make a last one), in plan order.
    pub fn of(spec: &tern_proto::PlanSpec, preflight: &tern_proto::PreflightResponse) -> Self {
        let mut out = Self::default();
        let named: BTreeMap<String, usize> = spec
            .waves
            .iter()
            .enumerate()
            .flat_map(|(w, wave)| wave.vm_names.iter().map(move |n| (n.to_ascii_lowercase(), w)))
            .collect();
        let rest = spec.waves.len();
        let mut vms: Vec<(String, usize)> = Vec::new();
        for pre in &preflight.vms {
            let vm = pre.vm.clone().unwrap_or_default();
            if pre.readiness == tern_proto::Readiness::Blocked as i32 {
                out.blocked.push(vm.name);
                continue;
            }
            let wave = named.get(&vm.name.to_ascii_lowercase()).copied().unwrap_or(rest);
            vms.push((subscription(spec, &vm), wave));
        }
        // Waves are numbered densely, as the planner numbers them.
        let used: BTreeSet<usize> = vms.iter().map(|(_, w)| *w).collect();
        let dense: BTreeMap<usize, usize> = used.iter().enumerate().map(|(i, w)| (*w, i)).collect();
        out.waves = used.iter().enumerate().map(|(i, &w)| wave_name(spec, w, i)).collect();
        out.groups = groups(vms.into_iter().map(|(subscription, wave)| (subscription, dense[&wave])));
        if matches!(
            spec.selection.as_ref().and_then(|s| s.by.as_ref()),
            Some(tern_proto::selection::By::RecoveryPlan(_))
        ) && spec.waves.is_empty()
        {
            out.notes.push(
                "a recovery plan's boot groups become waves only when the plan is submitted: one wave assumed"
                    .to_owned(),
            );
        }
        if !out.blocked.is_empty() {
            out.notes.push(format!(
                "{} VMs blocked in preflight are left out{}",
                out.blocked.len(),
                if spec.proceed_with_ready { "" } else { " (submit refuses the plan without --proceed-with-ready)" }
            ));
        }
        out
    }

    /// The VMs a submitted plan runs, as its record holds them: in its order, by subscription
    /// and in its waves (which keep their numbers, as in the planner, also when none of a
    /// wave's VMs ran). VMs skipped before any phase of theirs ended — blocked in preflight, or
    /// left when the plan stopped — are left out.
    pub fn of_plan(plan: &tern_proto::Plan) -> Self {
        let spec = plan.spec.clone().unwrap_or_default();
        let mut out = Self::default();
        let never_ran =
            |v: &tern_proto::VmStatus| v.state() == tern_proto::VmState::Skipped && v.phase_durations.is_empty();
        let waves = plan.vms.iter().map(|v| v.wave as usize + 1).max().unwrap_or(0);
        out.waves = (0..waves).map(|w| wave_name(&spec, w, w)).collect();
        let unnamed = tern_proto::VmRef::default();
        let ran = plan.vms.iter().filter(|v| !never_ran(v));
        out.groups = groups(ran.map(|v| (subscription(&spec, v.vm.as_ref().unwrap_or(&unnamed)), v.wave as usize)));
        let left_out = plan.vms.iter().filter(|v| never_ran(v)).count();
        if left_out > 0 {
            out.notes.push(match left_out {
                1 => "1 VM skipped before it started is left out".to_owned(),
                n => format!("{n} VMs skipped before they started are left out"),
            });
        }
        out
    }

    /// The model's inputs for this plan: its phases, recovery point, shutdown, concurrency and
    /// cleanup options from `spec`; job durations from `history` where it knows them, else
    /// Azure's at `clock`; `leftovers` deleted per VM when the plan removes leftovers.
    pub fn inputs(
        &self,
        spec: &tern_proto::PlanSpec,
        history: &History,
        budget: Option<BudgetConfig>,
        leftovers: f64,
        clock: Clock,
    ) -> Result<Inputs, EstimateError> {
        match spec.mode() {
            tern_proto::PlanMode::Drill => return Err(EstimateError::Mode("drill")),
            tern_proto::PlanMode::PreflightOnly => return Err(EstimateError::Mode("preflight-only")),
            _ => {}
        }
        let cleanup = spec.cleanup.unwrap_or_default();
        let profile = JobProfile {
            shut_down_source: spec.shut_down_source.unwrap_or(true),
            latest: spec.recovery_point.as_ref().is_some_and(|p| p.kind() == tern_proto::RecoveryPointKind::Latest),
            disable_replication: cleanup.disable_replication,
            clock,
        };
        let (durations, mut durations_source) = history.apply(PhaseDurations::azure(&profile));
        if clock.time_compression != 1.0 && durations_source.contains("Azure's typical") {
            durations_source
                .push_str(&format!(", {}× faster as this stack's simulator runs them", clock.time_compression));
        }
        let phases = spec.phases.unwrap_or_default();
        Ok(Inputs {
            groups: self.groups.clone(),
            waves: self.waves.clone(),
            budget,
            requests: TERN_REQUESTS
                .for_recovery_point(spec.recovery_point.as_ref().map(|p| p.kind()).unwrap_or_default())
                .with_leftovers(if cleanup.remove_leftovers { leftovers } else { 0.0 }),
            durations,
            durations_source,
            concurrency: Limits::of(spec.concurrency.as_ref()),
            phases: PhasesOn {
                failover: phases.failover.unwrap_or(true),
                commit: phases.commit.unwrap_or(true),
                reprotect: phases.reprotect.unwrap_or(true),
                cleanup: phases.cleanup.unwrap_or(true),
            },
        })
    }
}

/// A VM's subscription: its vault's, else its item's, else the plan's vault's.
fn subscription(spec: &tern_proto::PlanSpec, vm: &tern_proto::VmRef) -> String {
    [&vm.vault_id, &vm.protected_item_id, &spec.vault_id]
        .into_iter()
        .find_map(|id| tern_asr::budget::subscription_of(id))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The name of the spec's wave `w` (VMs in no wave: "the rest"); an unnamed one is numbered `i + 1`.
fn wave_name(spec: &tern_proto::PlanSpec, w: usize, i: usize) -> String {
    match spec.waves.get(w) {
        Some(wave) if !wave.name.is_empty() => wave.name.clone(),
        None if !spec.waves.is_empty() => "the rest".to_owned(),
        _ => format!("wave-{}", i + 1),
    }
}

/// VMs given as (subscription, wave) in plan order, as groups of consecutive VMs alike.
fn groups(vms: impl IntoIterator<Item = (String, usize)>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (subscription, wave) in vms {
        match out.last_mut() {
            Some(g) if g.subscription == subscription && g.wave == wave => g.vms += 1,
            _ => out.push(Group { subscription, wave, vms: 1 }),
        }
    }
    out
}

/// What `tern plan estimate` prints: the forecast, and the VMs it left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forecast {
    #[serde(flatten)]
    pub estimate: Estimate,
    /// VMs preflight blocks.
    pub blocked: Vec<String>,
    pub notes: Vec<String>,
}

impl Forecast {
    /// The forecast for people; `secs` writes a span of seconds.
    pub fn table(&self, secs: &dyn Fn(f64) -> String) -> String {
        let e = &self.estimate;
        let a = &e.assumed;
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut out = format!(
            "{} in {}, {}\n",
            plural(e.vms, "VM", "VMs"),
            plural(e.subscriptions.len(), "subscription", "subscriptions"),
            plural(e.waves.len(), "wave", "waves")
        );
        out.push_str(&format!("  job durations: {}\n", a.durations_source));
        let d = &a.durations_s;
        out.push_str(&format!(
            "    failover {}, commit {}, reprotect {}, cleanup {}\n",
            secs(d.failover),
            secs(d.commit),
            secs(d.reprotect),
            secs(d.cleanup)
        ));
        out.push_str(&format!(
            "  ARM requests per VM: {:.2} reads, {} writes, {} deletes\n",
            a.reads_per_vm, a.writes_per_vm, a.deletes_per_vm
        ));
        let rate = |r: Rate| format!("{} + {}/s", r.capacity, r.per_second);
        out.push_str(&match &a.budget {
            Some(b) => format!(
                "  budget per subscription: reads {}, writes {}, deletes {}\n",
                rate(b.reads),
                rate(b.writes),
                rate(b.deletes)
            ),
            None => "  budget per subscription: none\n".to_owned(),
        });
        let c = &a.concurrency;
        out.push_str(&format!(
            "  concurrency: failover {}, reprotect {}, cleanup {}\n\n",
            c.failover, c.reprotect, c.cleanup
        ));

        out.push_str(&format!("makespan   {}  (plan accepted after {})\n", secs(e.makespan_s), secs(e.accepted_s)));
        let pct = |p: Option<Percentiles>| match p {
            Some(p) => [secs(p.p50), secs(p.p90), secs(p.max)],
            None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
        };
        let [p50, p90, max] = pct(e.rto_s);
        out.push_str(&format!("RTO        p50 {p50}  p90 {p90}  max {max}  (plan start → VM committed)\n"));
        out.push_str(&format!(
            "binding    {} ({:.0} % of the critical path)\n",
            e.binding.what,
            e.binding.share * 100.0
        ));
        if e.shorter.is_empty() {
            out.push_str("shorter    nothing Tern sets: the time is Azure's jobs\n");
        }
        let mut shorter = Columns::new(Vec::<String>::new());
        for s in &e.shorter {
            let rto = s.rto_p90_s.map(|r| format!("  (RTO p90 {})", secs(r))).unwrap_or_default();
            shorter.row([s.what.clone(), format!("{}{rto}", secs(s.makespan_s))]);
        }
        // Under the labels above (`makespan   `): the first line says what the list is.
        for (i, line) in shorter.to_string().lines().enumerate() {
            out.push_str(&format!("{:<10} {line}\n", if i == 0 { "shorter" } else { "" }));
        }

        let mut waves =
            Columns::new(["wave", "name", "VMs", "failover ends", "RTO p50", "p90", "max"]).right(&[2, 3, 4, 5, 6]);
        for (i, w) in e.waves.iter().enumerate() {
            let [p50, p90, max] = pct(w.rto_s);
            waves.row([(i + 1).to_string(), w.name.clone(), w.vms.to_string(), secs(w.failover_end_s), p50, p90, max]);
        }
        out.push_str(&format!("\n{waves}"));

        let mut subscriptions = Columns::new([
            "subscription",
            "VMs",
            "reads",
            "writes",
            "deletes",
            "read budget",
            "write budget",
            "delete budget",
        ])
        .right(&[1, 2, 3, 4, 5, 6, 7]);
        for s in &e.subscriptions {
            subscriptions.row([
                s.id.clone(),
                s.vms.to_string(),
                format!("{:.0}", s.reads),
                format!("{:.0}", s.writes),
                format!("{:.0}", s.deletes),
                secs(s.read_budget_s),
                secs(s.write_budget_s),
                secs(s.delete_budget_s),
            ]);
        }
        out.push_str(&format!("\n{subscriptions}"));

        let path: Vec<String> = e
            .critical_path
            .iter()
            .map(|c| format!("{} {} ({:.0} %)", c.what, secs(c.seconds), c.share * 100.0))
            .collect();
        if !path.is_empty() {
            out.push_str(&format!("\ncritical path: {}\n", path.join("; ")));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}
