//! Seeded simulation of plan progression (`tern_planner::progress`, free of I/O): thousands of
//! random plans, each driven by simulated workers whose events arrive in any order, twice, in
//! batches, and across planner restarts (the plan reloaded from its stored bytes). After every
//! step the invariants a user relies on are checked:
//!
//! - every VM is accounted for (the counts add up) and a terminal VM never changes state again;
//! - no phase before its predecessor: a VM's phase never goes back, cleanup only after its
//!   reprotect succeeded, and a wave fails over only once the waves before it finished failing over;
//! - no VM in two phases: only a Pending VM is dispatched, and never more than a phase's
//!   concurrency runs at once; a halted plan starts no failover;
//! - a paused or cancelling plan dispatches nothing (an operator pauses, resumes and cancels at
//!   random, and retries failed VMs);
//! - a failure is retried automatically only when it is retryable and the plan's
//!   `max_automatic_retries` allows; only an operator's retry brings a failed VM back;
//! - and at the end every plan has ended with every VM terminal: Succeeded exactly when its last
//!   attempt succeeded, Failed exactly when its last attempt failed.
//!
//! `TERN_SIM_PLANS` sets how many plans (10,000 here; `make chaos` runs 1,000,000). The seed is
//! printed when a check fails; `TERN_TEST_SEED` repeats it.

use prost::Message;
use std::collections::BTreeSet;
use tern_planner::progress;

use tern_proto::{
    AsrError, Concurrency, FailurePolicy, OnCriticalFailure, Outcome, Phase, Phases, Plan, PlanMode, PlanSpec,
    PlanState, VmEvent, VmRef, VmState, VmStatus,
};
use tern_testkit::Seed;

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn rank(p: Phase) -> u8 {
    match p {
        Phase::Failover | Phase::Drill => 1,
        Phase::Commit => 2,
        Phase::Reprotect => 3,
        Phase::Cleanup => 4,
        _ => 0,
    }
}

fn terminal(state: VmState) -> bool {
    matches!(state, VmState::Succeeded | VmState::Failed | VmState::Skipped)
}

fn random_plan(rng: &mut Rng, id: usize) -> Plan {
    let vms = 1 + rng.below(12);
    let waves = 1 + rng.below(3);
    let limit = |rng: &mut Rng| if rng.chance(30) { 0 } else { 1 + rng.below(4) as u32 };
    let spec = PlanSpec {
        mode: if rng.chance(10) { PlanMode::Drill } else { PlanMode::Execute } as i32,
        phases: Some(Phases {
            failover: None,
            commit: Some(rng.chance(85)),
            reprotect: Some(rng.chance(80)),
            cleanup: Some(rng.chance(70)),
        }),
        concurrency: Some(Concurrency { failover: limit(rng), reprotect: limit(rng), cleanup: limit(rng) }),
        failure_policy: Some(FailurePolicy {
            on_critical_failure: if rng.chance(50) {
                OnCriticalFailure::Continue
            } else {
                OnCriticalFailure::Unspecified
            } as i32,
            max_automatic_retries: rng.below(3) as u32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let vms = (0..vms)
        .map(|i| VmStatus {
            vm: Some(VmRef { name: format!("vm-{i}"), lifecycle_id: format!("lc-{id}-{i}"), ..Default::default() }),
            state: VmState::Pending as i32,
            wave: rng.below(waves) as u32,
            critical: rng.chance(30),
            ..Default::default()
        })
        .collect();
    Plan { plan_id: format!("p-{id}"), spec: Some(spec), state: PlanState::Accepted as i32, vms, ..Default::default() }
}

/// The failures scripted for one VM: (slot, attempt) of each, and of the retryable ones.
#[derive(Default, Clone)]
struct Failures {
    all: BTreeSet<(i32, u32)>,
    retryable: BTreeSet<(i32, u32)>,
}

/// What a worker publishes for a dispatched phase, in the order it publishes it.
fn script(rng: &mut Rng, plan: &Plan, i: usize, phase: Phase, failures: &mut [Failures]) -> Vec<VmEvent> {
    let v = &plan.vms[i];
    let event = |phase: Phase, outcome: Outcome| VmEvent {
        vm: v.vm.clone(),
        phase: phase as i32,
        outcome: outcome as i32,
        attempt: v.attempt,
        ..Default::default()
    };
    let mut failed = |rng: &mut Rng, phase: Phase| {
        let retryable = rng.chance(50);
        let at = (slot(phase) as i32, v.attempt);
        failures[i].all.insert(at);
        if retryable {
            failures[i].retryable.insert(at);
        }
        let mut e = event(phase, Outcome::Failed);
        e.error = Some(AsrError { code: "SIM".into(), retryable, ..Default::default() });
        e
    };
    let mut out = vec![event(phase, Outcome::Started)];
    if rng.chance(10) {
        out.push(failed(rng, phase));
        return out;
    }
    out.push(event(phase, Outcome::Succeeded));
    let commit = plan.spec.as_ref().and_then(|s| s.phases).and_then(|p| p.commit).unwrap_or(true);
    if phase == Phase::Failover && commit {
        out.push(event(Phase::Commit, Outcome::Started));
        out.push(if rng.chance(5) { failed(rng, Phase::Commit) } else { event(Phase::Commit, Outcome::Succeeded) });
    }
    out
}

fn limit_of(plan: &Plan, slot: Phase) -> usize {
    let c = plan.spec.as_ref().and_then(|s| s.concurrency).unwrap_or_default();
    let v = match slot {
        Phase::Reprotect => c.reprotect,
        Phase::Cleanup => c.cleanup,
        _ => c.failover,
    };
    if v == 0 { progress::DEFAULT_CONCURRENCY as usize } else { v as usize }
}

fn slot(p: Phase) -> Phase {
    match p {
        Phase::Commit | Phase::Drill => Phase::Failover,
        p => p,
    }
}

/// Runs one plan to its end; the error says which check broke, at which step.
fn run_plan(rng: &mut Rng, id: usize) -> Result<(), String> {
    let mut plan = random_plan(rng, id);
    let mut index = progress::vm_index(&plan);
    let mut pool: Vec<VmEvent> = Vec::new();
    let mut failures = vec![Failures::default(); plan.vms.len()];
    let mut ever_halted = false;
    let mut finished_once = vec![false; plan.vms.len()];
    let max_retries = plan.spec.as_ref().and_then(|s| s.failure_policy.as_ref()).map_or(0, |p| p.max_automatic_retries);
    let mut reprotected = vec![false; plan.vms.len()];
    for step in 0..100_000 {
        let before = plan.clone();
        // Deliver a batch of events in any order, sometimes one twice.
        let mut batch = Vec::new();
        for _ in 0..(1 + rng.below(3)).min(pool.len()) {
            let e = pool.swap_remove(rng.below(pool.len()));
            if rng.chance(10) {
                pool.push(e.clone()); // delivered again later
            }
            if e.phase() == Phase::Reprotect && e.outcome() == Outcome::Succeeded {
                reprotected[index[&e.vm.as_ref().unwrap().lifecycle_id.to_ascii_lowercase()]] = true;
            }
            batch.push(e);
        }
        progress::apply_events(&mut plan, &index, &batch);
        if rng.chance(5) {
            // A planner restart: the plan as stored.
            plan = Plan::decode(plan.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
            index = progress::vm_index(&plan);
        }
        // An operator: pause, resume or cancel now and then, as the API's transitions do.
        let operator = match plan.state() {
            PlanState::Running | PlanState::Accepted if rng.chance(1) => {
                Some(if rng.chance(70) { PlanState::Paused } else { PlanState::Cancelling })
            }
            // A paused plan with nothing in flight waits for its operator: resume it then.
            PlanState::Paused if (pool.is_empty() && rng.chance(50)) || rng.chance(2) => {
                Some(if rng.chance(85) { PlanState::Running } else { PlanState::Cancelling })
            }
            _ => None,
        };
        if let Some(next) = operator {
            plan.set_state(next);
        }
        // An operator retries a failed VM now and then (the plan runs again if it had ended).
        let mut retried = BTreeSet::new();
        if rng.chance(3)
            && let Some(i) = plan.vms.iter().position(|v| v.state() == VmState::Failed)
            && progress::retry(&mut plan, i, Phase::Unspecified).is_ok()
        {
            retried.insert(i);
        }
        let state_before = plan.state();
        let halted_before = plan.halted;
        let waves_before = plan.clone();
        let dispatched = progress::dispatch(&mut plan);
        for &(i, phase) in &dispatched {
            let at = |what: String| format!("step {step}, {}: {what}", plan.vms[i].vm.as_ref().unwrap().name);
            if waves_before.vms[i].state() != VmState::Pending {
                return Err(at(format!("dispatched while {:?}", waves_before.vms[i].state())));
            }
            if !matches!(state_before, PlanState::Running | PlanState::Accepted) {
                return Err(at(format!("dispatched while the plan is {state_before:?}")));
            }
            if halted_before && slot(phase) == Phase::Failover {
                return Err(at("a halted plan started a failover".into()));
            }
            if slot(phase) == Phase::Failover {
                let wave = plan.vms[i].wave;
                // A wave opens once every VM before it has finished failing over once; a retry
                // of such a VM later does not close the waves it opened.
                let unfinished = waves_before.vms.iter().enumerate().any(|(k, o)| {
                    o.wave < wave
                        && !finished_once[k]
                        && !terminal(o.state())
                        && matches!(o.phase(), Phase::Unspecified | Phase::Failover | Phase::Drill)
                });
                if unfinished {
                    return Err(at(format!("wave {wave} failed over before an earlier wave finished failing over")));
                }
            }
            if phase == Phase::Cleanup && !reprotected[i] {
                return Err(at("cleanup dispatched before its reprotect succeeded".into()));
            }
            pool.extend(script(rng, &plan, i, phase, &mut failures));
        }
        progress::settle(&mut plan);
        // A retry lifts a halt; the VMs it skipped stay skipped.
        ever_halted |= plan.halted;
        for (k, v) in plan.vms.iter().enumerate() {
            finished_once[k] |=
                terminal(v.state()) || !matches!(v.phase(), Phase::Unspecified | Phase::Failover | Phase::Drill);
        }
        // The checks.
        let counts = progress::counts(&plan);
        let sum = counts.pending + counts.running + counts.succeeded + counts.failed + counts.skipped;
        if sum != counts.total || counts.total as usize != plan.vms.len() {
            return Err(format!("step {step}: counts do not add up: {counts:?}"));
        }
        let policy = plan.spec.as_ref().and_then(|s| s.failure_policy.as_ref()).map(|p| p.on_critical_failure());
        let stops_on_critical = policy != Some(OnCriticalFailure::Continue);
        for (i, (a, b)) in before.vms.iter().zip(&plan.vms).enumerate() {
            let name = &b.vm.as_ref().unwrap().name;
            if b.automatic_retries > max_retries {
                return Err(format!(
                    "step {step}, {name}: {} automatic retries, above {max_retries}",
                    b.automatic_retries
                ));
            }
            if b.automatic_retries > a.automatic_retries
                && !failures[i].retryable.contains(&(slot(a.phase()) as i32, a.attempt))
            {
                return Err(format!(
                    "step {step}, {name}: retried automatically after a failure that is not retryable"
                ));
            }
            if retried.contains(&i) {
                continue; // the operator's retry brings a failed VM back, by design
            }
            if terminal(a.state()) && a.state() != b.state() {
                return Err(format!("step {step}, {name}: {:?} became {:?}", a.state(), b.state()));
            }
            if !terminal(a.state()) && b.state() == VmState::Failed && b.critical && stops_on_critical && !plan.halted {
                return Err(format!("step {step}, {name}: a critical VM failed and the plan did not halt"));
            }
            if rank(slot(b.phase())) < rank(slot(a.phase())) {
                return Err(format!("step {step}, {name}: phase went back from {:?} to {:?}", a.phase(), b.phase()));
            }
        }
        for s in [Phase::Failover, Phase::Reprotect, Phase::Cleanup] {
            let running = plan.vms.iter().filter(|v| v.state() == VmState::Running && slot(v.phase()) == s).count();
            if running > limit_of(&plan, s) {
                return Err(format!("step {step}: {running} VMs in {s:?} at once, above its limit"));
            }
        }
        let ended =
            matches!(plan.state(), PlanState::Completed | PlanState::CompletedWithErrors | PlanState::Cancelled);
        let was_ended =
            matches!(before.state(), PlanState::Completed | PlanState::CompletedWithErrors | PlanState::Cancelled);
        if was_ended && plan.state() != before.state() && retried.is_empty() {
            return Err(format!("step {step}: an ended plan went from {:?} to {:?}", before.state(), plan.state()));
        }
        if pool.is_empty() && dispatched.is_empty() && plan.state() != PlanState::Paused {
            // Nothing more can happen: the plan must have ended, every VM accounted for.
            if !ended {
                return Err(format!("step {step}: nothing left to do, yet the plan is {:?}: {counts:?}", plan.state()));
            }
            for (i, v) in plan.vms.iter().enumerate() {
                let name = &v.vm.as_ref().unwrap().name;
                if !terminal(v.state()) {
                    return Err(format!("{name} ended {:?}", v.state()));
                }
                let last_failed = failures[i].all.contains(&(slot(v.phase()) as i32, v.attempt));
                if v.state() == VmState::Succeeded && last_failed {
                    return Err(format!("{name} succeeded although its last attempt failed"));
                }
                if v.state() == VmState::Failed && !last_failed {
                    return Err(format!("{name} failed although its last attempt succeeded"));
                }
                if v.state() == VmState::Skipped && !ever_halted && plan.state() != PlanState::Cancelled {
                    return Err(format!("{name} was skipped in a plan that was neither halted nor cancelled"));
                }
            }
            return Ok(());
        }
    }
    Err("the plan did not end within 100,000 steps".into())
}

#[test]
fn ten_thousand_random_plans_keep_every_invariant_whatever_order_their_events_arrive_in() {
    let seed = Seed::new();
    let plans: usize = std::env::var("TERN_SIM_PLANS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut rng = Rng(seed.value() | 1);
    let started = std::time::Instant::now();
    for id in 0..plans {
        if let Err(e) = run_plan(&mut rng, id) {
            panic!("plan {id} of {plans}: {e}");
        }
    }
    eprintln!("{plans} plans simulated in {:?} (seed {})", started.elapsed(), seed.value());
}
