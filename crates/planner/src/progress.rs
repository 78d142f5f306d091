//! Plan progression as a pure state machine over the `Plan` record: apply a worker's event,
//! decide what to dispatch next, settle the plan. No I/O here — the service stores the result
//! with compare-and-set and publishes the commands.
//!
//! Per VM the phases run as a pipeline: failover (with commit) → reprotect → cleanup. Waves
//! gate failover only: wave N+1 starts failing over once every VM of wave N finished its
//! failover; later phases of a VM run as soon as its own failover is done.

use tern_proto::{
    OnCriticalFailure, Outcome, Phase, Plan, PlanCounts, PlanEventKind, PlanMode, PlanState, VmEvent, VmState, VmStatus,
};

/// Default of each per-phase concurrency limit.
pub const DEFAULT_CONCURRENCY: u32 = 200;

fn phase_on(flag: Option<bool>) -> bool {
    flag.unwrap_or(true)
}

fn phases(plan: &Plan) -> (bool, bool, bool, bool) {
    let p = plan.spec.as_ref().and_then(|s| s.phases).unwrap_or_default();
    (phase_on(p.failover), phase_on(p.commit), phase_on(p.reprotect), phase_on(p.cleanup))
}

fn is_drill(plan: &Plan) -> bool {
    plan.spec.as_ref().is_some_and(|s| s.mode() == PlanMode::Drill)
}

fn limit(plan: &Plan, phase: Phase) -> usize {
    let c = plan.spec.as_ref().and_then(|s| s.concurrency).unwrap_or_default();
    let v = match phase {
        Phase::Reprotect => c.reprotect,
        Phase::Cleanup => c.cleanup,
        _ => c.failover,
    };
    (if v == 0 { DEFAULT_CONCURRENCY } else { v }) as usize
}

/// The slot a phase occupies (commit runs inside the failover command).
fn slot(phase: Phase) -> Phase {
    match phase {
        Phase::Commit | Phase::Drill => Phase::Failover,
        p => p,
    }
}

/// The VM has not failed over in this plan: its next phase is failover (or a drill).
fn not_failed_over(v: &VmStatus) -> bool {
    matches!(vm_phase(v), Phase::Unspecified | Phase::Preflight | Phase::Failover | Phase::Drill)
}

fn vm_phase(v: &VmStatus) -> Phase {
    v.phase()
}

fn vm_state(v: &VmStatus) -> VmState {
    v.state()
}

fn terminal(v: &VmStatus) -> bool {
    matches!(vm_state(v), VmState::Succeeded | VmState::Failed | VmState::Skipped)
}

/// Whether a VM has finished its failover (successfully or not), for the wave barrier.
fn failover_finished(v: &VmStatus) -> bool {
    terminal(v) || !matches!(vm_phase(v), Phase::Failover | Phase::Drill | Phase::Unspecified)
}

/// The VM's key: lifecycle id, else name (what command ids are built from).
pub fn vm_key(v: &VmStatus) -> &str {
    v.vm.as_ref().map(tern_bus::ids::vm_key).unwrap_or("")
}

/// A phase's place in a VM's pipeline.
fn rank(phase: Phase) -> u8 {
    match phase {
        Phase::Failover | Phase::Drill => 1,
        Phase::Commit => 2,
        Phase::Reprotect => 3,
        Phase::Cleanup => 4,
        _ => 0,
    }
}

/// The phase that comes after `done` for this plan, if any.
fn next_phase(plan: &Plan, done: Phase) -> Option<Phase> {
    let (_, commit, reprotect, cleanup) = phases(plan);
    match done {
        Phase::Failover if commit => Some(Phase::Commit),
        Phase::Failover | Phase::Commit if reprotect => Some(Phase::Reprotect),
        Phase::Reprotect if cleanup => Some(Phase::Cleanup),
        _ => None,
    }
}

/// Where each VM of a plan is, by its key (lower case). A plan's VMs never change keys, so
/// one index serves the plan's whole life.
pub type VmIndex = std::collections::HashMap<String, usize>;

/// The index of `plan`'s VMs.
pub fn vm_index(plan: &Plan) -> VmIndex {
    plan.vms.iter().enumerate().map(|(i, v)| (vm_key(v).to_ascii_lowercase(), i)).collect()
}

/// Applies a worker's event to the plan. Returns whether anything changed.
pub fn apply_event(plan: &mut Plan, event: &VmEvent) -> bool {
    !apply_events(plan, &vm_index(plan), std::slice::from_ref(event)).is_empty()
}

/// Applies worker events to the plan in order. Returns the VMs that changed (the plan's own
/// fields may change with them: a critical failure halts it).
pub fn apply_events(plan: &mut Plan, index: &VmIndex, events: &[VmEvent]) -> Vec<usize> {
    let mut touched = Vec::new();
    for event in events {
        let key = event.vm.as_ref().map(tern_bus::ids::vm_key).unwrap_or("").to_ascii_lowercase();
        if let Some(&i) = index.get(&key)
            && apply_at(plan, i, event)
        {
            touched.push(i);
        }
    }
    touched
}

/// Applies a worker's event to VM `i` of the plan.
fn apply_at(plan: &mut Plan, i: usize, event: &VmEvent) -> bool {
    let phase = event.phase();
    let outcome = event.outcome();
    let drill = is_drill(plan);
    let vm = &plan.vms[i];
    let current = vm_phase(vm);
    let expected = current == phase || (current == Phase::Failover && phase == Phase::Commit);
    if !expected {
        // Events are handled concurrently: a phase's result may land after the next phase
        // began, between two phases, or after the VM ended. Its data still counts; the state
        // has moved on already.
        if matches!(outcome, Outcome::Succeeded | Outcome::Skipped) && rank(phase) < rank(current) {
            let vm = &mut plan.vms[i];
            if let Some(d) = &event.duration {
                vm.phase_durations.insert(phase.slug().to_owned(), *d);
            }
            if matches!(phase, Phase::Failover | Phase::Drill) && event.recovery_point.is_some() {
                vm.recovery_point = event.recovery_point.clone();
                report_times(vm, event);
            }
            return true;
        }
        return false;
    }
    // Only events of the attempt and phase the plan is waiting for move it.
    if terminal(vm) || event.attempt != vm.attempt || vm_state(vm) != VmState::Running {
        return false;
    }
    let halts = vm.critical && stops_on_critical(plan);
    let next = next_phase(plan, phase);
    let vm = &mut plan.vms[i];
    if let Some(d) = &event.duration {
        vm.phase_durations.insert(phase.slug().to_owned(), *d);
    }
    match outcome {
        Outcome::Started | Outcome::Progress => {
            if phase == Phase::Commit && current == Phase::Failover {
                vm.set_phase(Phase::Commit);
            }
            return phase == Phase::Commit;
        }
        Outcome::Succeeded | Outcome::Skipped => {
            if phase == Phase::Failover || phase == Phase::Drill {
                vm.recovery_point = event.recovery_point.clone();
                report_times(vm, event);
            }
            // Where the VM runs now, when the event names it (failover and commit do).
            if event.resource.as_ref().is_some_and(|r| !r.arm_id.is_empty()) {
                vm.resource = event.resource.clone();
            }
            if !event.new_protected_item_id.is_empty()
                && let Some(r) = vm.vm.as_mut()
            {
                r.protected_item_id = event.new_protected_item_id.clone();
            }
            match (drill, next) {
                (false, Some(Phase::Commit)) => {
                    vm.set_phase(Phase::Commit); // the failover worker commits right after
                }
                (false, Some(n)) => {
                    vm.set_phase(n);
                    vm.set_state(VmState::Pending);
                    vm.attempt = 1;
                }
                _ => {
                    vm.set_state(VmState::Succeeded);
                    vm.reason = if !event.reason.is_empty() {
                        event.reason.clone()
                    } else {
                        format!("{} succeeded", phase.slug())
                    };
                }
            }
        }
        Outcome::Failed => {
            let error = event.error.clone();
            let why = error
                .as_ref()
                .map(|e| format!("{} failed: {} {}", phase.slug(), e.code, e.message))
                .unwrap_or_else(|| format!("{} failed", phase.slug()));
            fail_or_retry(plan, i, phase, error, why, halts);
        }
        Outcome::Unspecified => return false,
    }
    true
}

/// Whether a critical VM's failure halts the plan (the default policy) rather than letting it go on.
fn stops_on_critical(plan: &Plan) -> bool {
    plan.spec
        .as_ref()
        .and_then(|s| s.failure_policy.as_ref())
        .is_none_or(|p| p.on_critical_failure() != OnCriticalFailure::Continue)
}

/// How many automatic retries a retryable failure gets (`FailurePolicy.max_automatic_retries`).
fn max_automatic_retries(plan: &Plan) -> u32 {
    plan.spec.as_ref().and_then(|s| s.failure_policy.as_ref()).map_or(0, |p| p.max_automatic_retries)
}

/// Ends VM `i`'s attempt at `phase` as failed: a retryable error (the error says so) is retried
/// automatically as a new attempt of the same phase while the plan's policy allows; anything else
/// fails the VM, and a critical VM's failure halts the plan when `halts`.
fn fail_or_retry(
    plan: &mut Plan,
    i: usize,
    phase: Phase,
    error: Option<tern_proto::AsrError>,
    why: String,
    halts: bool,
) {
    let retryable = error.as_ref().is_some_and(|e| e.retryable);
    let max = max_automatic_retries(plan);
    let stopping = plan.halted || plan.state() == PlanState::Cancelling;
    let vm = &mut plan.vms[i];
    if retryable && vm.automatic_retries < max && !stopping {
        vm.automatic_retries += 1;
        vm.attempt += 1;
        // A commit runs inside the failover command: the retry is the failover command again,
        // which finds the failover done in Azure and commits.
        vm.set_phase(slot(phase));
        vm.set_state(VmState::Pending);
        vm.reason = format!("retrying automatically ({} of {max}) after: {why}", vm.automatic_retries);
        vm.error = error;
        return;
    }
    vm.set_state(VmState::Failed);
    vm.error = error;
    vm.reason = why;
    if halts && !plan.halted {
        let name = plan.vms[i].vm.as_ref().map(|v| v.name.clone()).unwrap_or_default();
        plan.halted = true;
        plan.reason = format!("halted: critical VM {name} failed {}", phase.slug());
    }
}

/// Default deadline of one attempt of a phase: from how long Azure's jobs take (failover and
/// commit: ASR's two-hour RTO target; reprotect includes the initial replication of every disk,
/// hours for large disks; cleanup deletes a few resources).
pub fn default_deadline(phase: Phase) -> std::time::Duration {
    let hours = match slot(phase) {
        Phase::Reprotect => 24,
        _ => 2,
    };
    std::time::Duration::from_secs(hours * 3600)
}

/// How long one attempt of `phase` may run in this plan.
pub fn deadline(plan: &Plan, phase: Phase) -> std::time::Duration {
    let d = plan.spec.as_ref().and_then(|s| s.deadlines);
    let set = d.and_then(|d| match slot(phase) {
        Phase::Reprotect => d.reprotect,
        Phase::Cleanup => d.cleanup,
        _ => d.failover,
    });
    match set {
        Some(d) if d.seconds > 0 || d.nanos > 0 => {
            std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        }
        _ => default_deadline(phase),
    }
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000))
}

/// How long VM `i`'s current attempt has run at `now_ms` (ms since the Unix epoch); `None` when
/// it is not running or its dispatch time is unknown.
pub fn running_for(plan: &Plan, i: usize, now_ms: i64) -> Option<std::time::Duration> {
    let vm = plan.vms.get(i)?;
    if vm_state(vm) != VmState::Running {
        return None;
    }
    let started = millis(vm.phase_started_at.as_ref()?);
    Some(std::time::Duration::from_millis(now_ms.saturating_sub(started).max(0) as u64))
}

/// The code of a phase failed for outliving its deadline (by the worker or the watchdog).
pub const DEADLINE_CODE: &str = "TERN-DEADLINE";

/// A duration as people write it: `2h`, `90s`, `1h30m`.
pub fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// An operator's retry of failed VM `i` (`tern plan retry`): a new attempt of the phase it
/// failed at, or of `requested`, an earlier phase it reached. The plan runs again if it had
/// ended, and a halt is lifted; a paused plan stays paused. Refused, with the reason, for a VM
/// that has not failed, in a cancelled or cancelling plan, or for a phase the VM has not reached.
pub fn retry(plan: &mut Plan, i: usize, requested: Phase) -> Result<(), String> {
    let Some(v) = plan.vms.get(i) else { return Err(format!("no VM {i} in plan {}", plan.plan_id)) };
    let name = v.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    if v.state() != VmState::Failed {
        return Err(format!("{name} has not failed: only a failed VM can be retried"));
    }
    match plan.state() {
        PlanState::Cancelled => return Err(format!("plan {} was cancelled", plan.plan_id)),
        PlanState::Cancelling => return Err(format!("plan {} is being cancelled", plan.plan_id)),
        _ => {}
    }
    let reached = v.phase();
    let drill = |p: Phase| p == Phase::Drill;
    if requested != Phase::Unspecified && (drill(reached) != drill(requested) || rank(requested) > rank(reached)) {
        return Err(format!(
            "{name} failed at {}: it can be retried from {} or an earlier phase, not {}",
            reached.slug(),
            reached.slug(),
            requested.slug()
        ));
    }
    let v = &mut plan.vms[i];
    v.set_state(VmState::Pending);
    if requested != Phase::Unspecified {
        v.set_phase(requested);
    }
    // The failover command carries the commit.
    v.set_phase(slot(v.phase()));
    v.attempt += 1;
    v.error = None;
    v.reason = String::new();
    // The halt is lifted unless another critical VM's failure still stands.
    let stops = stops_on_critical(plan);
    plan.halted = stops && plan.vms.iter().any(|v| v.critical && v.state() == VmState::Failed);
    // A paused plan stays paused (the retry runs on resume); an ended one runs again.
    if plan.state() != PlanState::Paused {
        plan.set_state(PlanState::Running);
    }
    plan.finished_at = None;
    Ok(())
}

/// RPO (failover time − recovery point time) and RTO (failover start → VM running, i.e. the
/// failover's own duration) of a finished failover. RPO compares two of ASR's timestamps when
/// it can (the job's start and the point's time), so the two clocks are the same.
fn report_times(vm: &mut VmStatus, event: &VmEvent) {
    vm.rto = event.duration;
    let point = event.recovery_point.as_ref().and_then(|p| p.time);
    if let (Some(done), Some(point)) = (event.asr_started_at.or(event.finished_at), point) {
        let mut seconds = done.seconds.saturating_sub(point.seconds);
        let mut nanos = done.nanos - point.nanos;
        if nanos < 0 {
            seconds -= 1;
            nanos += 1_000_000_000;
        }
        vm.rpo =
            Some(if seconds < 0 { prost_types::Duration::default() } else { prost_types::Duration { seconds, nanos } });
    }
}

/// Orders a new plan's VMs so that their subscriptions take turns, each keeping its own VMs'
/// order. Dispatch takes pending VMs in plan order, so a plan listed vault after vault would
/// fill every failover slot with the first subscription's VMs while the others' ARM budgets
/// sat idle; taking turns spends every subscription's budget from the start.
pub fn interleave_subscriptions(vms: &mut [VmStatus]) {
    let mut seen: Vec<String> = Vec::new();
    let mut taken: Vec<usize> = Vec::new();
    let mut keys = Vec::with_capacity(vms.len());
    for v in vms.iter() {
        let vault = v.vm.as_ref().map_or("", |r| r.vault_id.as_str());
        let sub = tern_asr::budget::subscription_of(vault).unwrap_or_default();
        let at = seen.iter().position(|s| *s == sub).unwrap_or_else(|| {
            seen.push(sub);
            taken.push(0);
            seen.len() - 1
        });
        keys.push((taken[at], at));
        taken[at] += 1;
    }
    if seen.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..vms.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    let mut sorted: Vec<VmStatus> = order.iter().map(|&i| std::mem::take(&mut vms[i])).collect();
    vms.swap_with_slice(&mut sorted);
}

/// Picks the VMs to dispatch now (marking them running) and returns (index, phase) pairs.
pub fn dispatch(plan: &mut Plan) -> Vec<(usize, Phase)> {
    let state = plan.state();
    if !matches!(state, PlanState::Running | PlanState::Accepted) {
        return vec![];
    }
    plan.set_state(PlanState::Running);
    // Advance the wave barrier: a wave's failovers finished and its `after` gates passed.
    let waves = plan.vms.iter().map(|v| v.wave).max().map_or(0, |w| w + 1);
    let gated = crate::gates::spec_waves(plan);
    while plan.current_wave + 1 < waves
        && plan.vms.iter().filter(|v| v.wave == plan.current_wave).all(failover_finished)
        && crate::gates::all_done(plan, &gated, plan.current_wave, true)
    {
        plan.current_wave += 1;
    }
    // The current wave's failovers wait for its `before` gates.
    let before_open = crate::gates::all_done(plan, &gated, plan.current_wave, false);
    let mut running = std::collections::HashMap::new();
    for v in plan.vms.iter().filter(|v| vm_state(v) == VmState::Running) {
        *running.entry(slot(vm_phase(v)) as i32).or_insert(0usize) += 1;
    }
    let drill = is_drill(plan);
    let mut out = Vec::new();
    let current_wave = plan.current_wave;
    let plan_halted = plan.halted;
    let limits = [Phase::Failover, Phase::Reprotect, Phase::Cleanup].map(|p| (p as i32, limit(plan, p)));
    for (i, v) in plan.vms.iter_mut().enumerate() {
        if vm_state(v) != VmState::Pending {
            continue;
        }
        // Halted: no VM starts its failover, but one that already failed over goes on to be
        // reprotected and cleaned up — stopping there would leave it running unprotected.
        if plan_halted && not_failed_over(v) {
            continue;
        }
        let mut phase = vm_phase(v);
        if phase == Phase::Unspecified || (phase == Phase::Failover && drill) {
            phase = if drill { Phase::Drill } else { Phase::Failover };
        }
        if slot(phase) == Phase::Failover && (v.wave > current_wave || (v.wave == current_wave && !before_open)) {
            continue;
        }
        let slot_id = slot(phase) as i32;
        let max = limits.iter().find(|(p, _)| *p == slot_id).map_or(DEFAULT_CONCURRENCY as usize, |(_, m)| *m);
        let used = running.entry(slot_id).or_insert(0);
        if *used >= max {
            continue;
        }
        *used += 1;
        v.set_state(VmState::Running);
        v.set_phase(phase);
        v.attempt = v.attempt.max(1);
        out.push((i, phase));
    }
    out
}

/// Recomputes the counts; ends the plan when nothing more can happen. Returns the plan-level
/// event to publish when the plan ended.
pub fn settle(plan: &mut Plan) -> Option<PlanEventKind> {
    settle_tracked(plan).0
}

/// [`settle`], also saying whether it changed any VM (a stopping plan skips its pending VMs).
pub fn settle_tracked(plan: &mut Plan) -> (Option<PlanEventKind>, bool) {
    let mut skipped_any = false;
    let ended = settle_inner(plan, &mut skipped_any);
    (ended, skipped_any)
}

fn settle_inner(plan: &mut Plan, skipped_any: &mut bool) -> Option<PlanEventKind> {
    let state = plan.state();
    let stopping = plan.halted || state == PlanState::Cancelling;
    if stopping {
        // Nothing new will run: pending VMs end here, with the reason.
        let why = if state == PlanState::Cancelling {
            "not run: the plan was cancelled".to_owned()
        } else {
            format!("not run: {}", plan.reason)
        };
        // A cancel skips everything not started; a halt only the VMs not failed over yet (the
        // others are still dispatched, see `dispatch`).
        let cancelling = state == PlanState::Cancelling;
        for v in plan.vms.iter_mut().filter(|v| vm_state(v) == VmState::Pending && (cancelling || not_failed_over(v))) {
            v.set_state(VmState::Skipped);
            v.reason = why.clone();
            *skipped_any = true;
        }
    }
    plan.counts = Some(counts(plan));
    let any_running = plan.vms.iter().any(|v| vm_state(v) == VmState::Running);
    let any_pending = plan.vms.iter().any(|v| vm_state(v) == VmState::Pending);
    // A gate that waits holds the plan open (an `after` step of the last wave, say).
    let gate_waits = !stopping && crate::gates::any_waiting(plan);
    if any_running
        || any_pending
        || gate_waits
        || matches!(
            state,
            PlanState::Completed | PlanState::CompletedWithErrors | PlanState::Cancelled | PlanState::Failed
        )
    {
        return None;
    }
    if state == PlanState::Paused && !plan.vms.iter().all(terminal) {
        return None;
    }
    // A VM left out with consent (blocked in preflight) is not an error of the plan.
    let errors = plan.vms.iter().any(|v| match vm_state(v) {
        VmState::Failed => true,
        VmState::Skipped => !v.left_out,
        _ => false,
    });
    let (next, kind) = if state == PlanState::Cancelling {
        (PlanState::Cancelled, PlanEventKind::Cancelled)
    } else if errors {
        (PlanState::CompletedWithErrors, PlanEventKind::CompletedWithErrors)
    } else {
        (PlanState::Completed, PlanEventKind::Completed)
    };
    plan.set_state(next);
    Some(kind)
}

/// VM counts of a plan.
pub fn counts(plan: &Plan) -> PlanCounts {
    let mut c = PlanCounts { total: plan.vms.len() as u32, ..Default::default() };
    for v in &plan.vms {
        match vm_state(v) {
            VmState::Pending => c.pending += 1,
            VmState::Running => c.running += 1,
            VmState::Succeeded => c.succeeded += 1,
            VmState::Failed => c.failed += 1,
            VmState::Skipped => c.skipped += 1,
            VmState::Unspecified => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{AsrError, FailurePolicy, PlanSpec, VmRef};

    fn plan(waves: &[usize]) -> Plan {
        let vms = waves
            .iter()
            .enumerate()
            .map(|(i, w)| VmStatus {
                vm: Some(VmRef { name: format!("vm-{i}"), ..Default::default() }),
                state: VmState::Pending as i32,
                phase: Phase::Failover as i32,
                wave: *w as u32,
                attempt: 1,
                critical: true,
                ..Default::default()
            })
            .collect();
        Plan {
            plan_id: "p".into(),
            spec: Some(PlanSpec::default()),
            state: PlanState::Accepted as i32,
            vms,
            ..Default::default()
        }
    }

    fn ev(i: usize, phase: Phase, outcome: Outcome) -> VmEvent {
        VmEvent {
            vm: Some(VmRef { name: format!("vm-{i}"), ..Default::default() }),
            phase: phase as i32,
            outcome: outcome as i32,
            attempt: 1,
            ..Default::default()
        }
    }

    fn names(d: &[(usize, Phase)]) -> Vec<(usize, Phase)> {
        d.to_vec()
    }

    #[test]
    fn subscriptions_take_turns_each_keeping_its_own_order() {
        let vm = |sub: &str, name: &str| VmStatus {
            vm: Some(VmRef {
                vault_id: format!(
                    "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v"
                ),
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut vms = vec![vm("a", "a1"), vm("a", "a2"), vm("a", "a3"), vm("b", "b1"), vm("c", "c1"), vm("b", "b2")];
        interleave_subscriptions(&mut vms);
        let order: Vec<&str> = vms.iter().map(|v| v.vm.as_ref().unwrap().name.as_str()).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);

        let mut one = vec![vm("a", "a2"), vm("a", "a1")];
        interleave_subscriptions(&mut one);
        assert_eq!(one[0].vm.as_ref().unwrap().name, "a2", "one subscription keeps the plan's order");
    }

    #[test]
    fn a_plan_whose_only_other_vms_were_left_out_with_consent_completed() {
        let run_through = |p: &mut Plan| {
            for phase in [Phase::Failover, Phase::Commit, Phase::Reprotect, Phase::Cleanup] {
                if phase != Phase::Commit {
                    assert_eq!(dispatch(p), [(0, phase)], "the left-out VM is never dispatched");
                }
                assert!(apply_event(p, &ev(0, phase, Outcome::Succeeded)));
            }
        };
        let mut p = plan(&[0, 0]);
        p.vms[1].set_state(VmState::Skipped);
        p.vms[1].left_out = true;
        run_through(&mut p);
        assert_eq!(settle(&mut p), Some(PlanEventKind::Completed), "blocked in preflight, left out with consent");

        let mut p = plan(&[0, 0]);
        p.vms[1].set_state(VmState::Skipped);
        run_through(&mut p);
        assert_eq!(settle(&mut p), Some(PlanEventKind::CompletedWithErrors), "skipped for any other reason");
    }

    #[test]
    fn wave_two_fails_over_only_after_wave_one_finished_failing_over() {
        let mut p = plan(&[0, 0, 1]);
        assert_eq!(names(&dispatch(&mut p)), [(0, Phase::Failover), (1, Phase::Failover)]);
        assert!(apply_event(&mut p, &ev(0, Phase::Failover, Outcome::Succeeded)));
        assert_eq!(dispatch(&mut p), [], "vm-1 of wave 0 is still failing over");
        assert!(apply_event(&mut p, &ev(1, Phase::Failover, Outcome::Succeeded)));
        assert_eq!(dispatch(&mut p), [(2, Phase::Failover)], "wave 1 opens");
        // vm-0 and vm-1 commit inside the failover command, then reprotect, then clean up.
        assert!(apply_event(&mut p, &ev(0, Phase::Commit, Outcome::Succeeded)));
        assert_eq!(dispatch(&mut p), [(0, Phase::Reprotect)], "later phases pipeline per VM");
        assert!(apply_event(&mut p, &ev(0, Phase::Reprotect, Outcome::Succeeded)));
        assert_eq!(dispatch(&mut p), [(0, Phase::Cleanup)]);
        assert!(apply_event(&mut p, &ev(0, Phase::Cleanup, Outcome::Succeeded)));
        assert_eq!(p.vms[0].state(), VmState::Succeeded);
        assert_eq!(settle(&mut p), None, "others still run");
    }

    #[test]
    fn after_a_halt_a_vm_that_already_failed_over_is_still_reprotected_and_cleaned_up() {
        let mut p = plan(&[0, 0, 1]);
        assert_eq!(dispatch(&mut p).len(), 2);
        assert!(apply_event(&mut p, &ev(0, Phase::Commit, Outcome::Succeeded)));
        assert!(apply_event(&mut p, &ev(1, Phase::Failover, Outcome::Failed)));
        assert!(p.halted);
        assert_eq!(dispatch(&mut p), [(0, Phase::Reprotect)], "vm-0 runs in the primary region: protect it");
        assert_eq!(settle(&mut p), None);
        assert_eq!(p.vms[2].state(), VmState::Skipped, "vm-2 never fails over");
        assert!(apply_event(&mut p, &ev(0, Phase::Reprotect, Outcome::Succeeded)));
        assert_eq!(dispatch(&mut p), [(0, Phase::Cleanup)]);
        assert!(apply_event(&mut p, &ev(0, Phase::Cleanup, Outcome::Succeeded)));
        assert_eq!(p.vms[0].state(), VmState::Succeeded);
        assert_eq!(settle(&mut p), Some(PlanEventKind::CompletedWithErrors));
    }

    #[test]
    fn a_critical_failure_halts_dispatch_and_an_optional_one_does_not() {
        let mut p = plan(&[0, 0, 1, 1]);
        p.vms[1].critical = false;
        dispatch(&mut p);
        let mut failed = ev(1, Phase::Failover, Outcome::Failed);
        failed.error = Some(AsrError { code: "28031".into(), ..Default::default() });
        assert!(apply_event(&mut p, &failed));
        assert!(!p.halted, "vm-1 is optional");
        assert!(apply_event(&mut p, &ev(0, Phase::Failover, Outcome::Failed)));
        assert!(p.halted && p.reason.contains("vm-0"), "{}", p.reason);
        assert_eq!(dispatch(&mut p), [], "no failover starts after a critical failure");
        assert_eq!(settle(&mut p), Some(PlanEventKind::CompletedWithErrors));
        assert!(p.vms[2].reason.contains("halted"), "{}", p.vms[2].reason);
        assert_eq!(p.counts.as_ref().unwrap().failed, 2);

        let mut p = plan(&[0, 1]);
        p.spec.as_mut().unwrap().failure_policy =
            Some(FailurePolicy { on_critical_failure: OnCriticalFailure::Continue as i32, ..Default::default() });
        dispatch(&mut p);
        apply_event(&mut p, &ev(0, Phase::Failover, Outcome::Failed));
        assert_eq!(dispatch(&mut p), [(1, Phase::Failover)], "the continue policy keeps going");
    }

    #[test]
    fn a_failover_result_that_lands_after_the_commit_still_records_its_recovery_point() {
        let mut p = plan(&[0]);
        dispatch(&mut p);
        assert!(apply_event(&mut p, &ev(0, Phase::Commit, Outcome::Succeeded)), "commit first");
        assert_eq!(p.vms[0].state(), VmState::Pending, "waiting for reprotect");
        let mut late = ev(0, Phase::Failover, Outcome::Succeeded);
        late.recovery_point = Some(tern_proto::RecoveryPointUsed { id: "rp-1".into(), ..Default::default() });
        assert!(apply_event(&mut p, &late), "its data counts");
        assert_eq!(p.vms[0].recovery_point.as_ref().map(|r| r.id.as_str()), Some("rp-1"));
        assert_eq!(p.vms[0].state(), VmState::Pending, "its state does not move back");
        assert_eq!(p.vms[0].phase(), Phase::Reprotect);
        assert!(!apply_event(&mut p, &ev(0, Phase::Cleanup, Outcome::Succeeded)), "a later phase's is not data");
    }

    fn failed(i: usize, retryable: bool) -> VmEvent {
        let mut e = ev(i, Phase::Failover, Outcome::Failed);
        e.error = Some(AsrError { code: "X".into(), retryable, ..Default::default() });
        e
    }

    #[test]
    fn a_retryable_failure_is_retried_as_a_new_attempt_while_the_policy_allows() {
        let mut p = plan(&[0, 0]);
        p.spec.as_mut().unwrap().failure_policy =
            Some(FailurePolicy { max_automatic_retries: 1, ..Default::default() });
        dispatch(&mut p);
        assert!(apply_event(&mut p, &failed(0, true)));
        let v = &p.vms[0];
        assert_eq!((v.state(), v.attempt, v.automatic_retries), (VmState::Pending, 2, 1));
        assert!(v.reason.starts_with("retrying automatically (1 of 1)"), "{}", v.reason);
        assert!(!p.halted, "a retry is not a failure");
        assert_eq!(dispatch(&mut p), [(0, Phase::Failover)], "the new attempt goes out");
        let mut again = failed(0, true);
        again.attempt = 2;
        assert!(apply_event(&mut p, &again));
        assert_eq!(p.vms[0].state(), VmState::Failed, "the retries are used up");
        assert!(p.halted);
        assert!(apply_event(&mut p, &failed(1, false)));
        assert_eq!(p.vms[1].state(), VmState::Failed, "what cannot succeed by itself is not retried");
    }

    #[test]
    fn a_commit_that_fails_retryably_is_retried_as_its_failover_command() {
        let mut p = plan(&[0]);
        p.spec.as_mut().unwrap().failure_policy =
            Some(FailurePolicy { max_automatic_retries: 2, ..Default::default() });
        dispatch(&mut p);
        let mut started = ev(0, Phase::Commit, Outcome::Started);
        started.attempt = 1;
        assert!(apply_event(&mut p, &started));
        let mut commit_failed = ev(0, Phase::Commit, Outcome::Failed);
        commit_failed.error = Some(AsrError { code: "X".into(), retryable: true, ..Default::default() });
        assert!(apply_event(&mut p, &commit_failed));
        assert_eq!((p.vms[0].phase(), p.vms[0].state()), (Phase::Failover, VmState::Pending));
    }

    #[test]
    fn deadlines_default_from_azure_and_a_plan_may_set_its_own() {
        let mut p = plan(&[0]);
        assert_eq!(deadline(&p, Phase::Commit), std::time::Duration::from_secs(7200));
        assert_eq!(deadline(&p, Phase::Reprotect), std::time::Duration::from_secs(24 * 3600));
        p.spec.as_mut().unwrap().deadlines = Some(tern_proto::Deadlines {
            cleanup: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
            ..Default::default()
        });
        assert_eq!(deadline(&p, Phase::Cleanup), std::time::Duration::from_secs(90));
        dispatch(&mut p);
        p.vms[0].phase_started_at = Some(prost_types::Timestamp { seconds: 1000, nanos: 0 });
        assert_eq!(running_for(&p, 0, 1_005_000), Some(std::time::Duration::from_secs(5)));
        assert_eq!(humanize(std::time::Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn pause_stops_dispatch_cancel_skips_the_rest_and_stale_events_are_ignored() {
        let mut p = plan(&[0, 0]);
        p.spec.as_mut().unwrap().concurrency = Some(tern_proto::Concurrency { failover: 1, ..Default::default() });
        assert_eq!(dispatch(&mut p), [(0, Phase::Failover)], "one failover at a time");
        p.set_state(PlanState::Paused);
        apply_event(&mut p, &ev(0, Phase::Failover, Outcome::Succeeded));
        assert_eq!(dispatch(&mut p), [], "paused");
        let mut stale = ev(0, Phase::Reprotect, Outcome::Failed);
        stale.attempt = 7;
        assert!(!apply_event(&mut p, &stale), "another attempt's event does not count");
        p.set_state(PlanState::Cancelling);
        assert_eq!(settle(&mut p), None, "vm-0 still commits");
        apply_event(&mut p, &ev(0, Phase::Commit, Outcome::Succeeded));
        assert_eq!(settle(&mut p), Some(PlanEventKind::Cancelled));
        assert_eq!(p.vms[1].state(), VmState::Skipped);
        assert_eq!(p.vms[0].state(), VmState::Skipped, "its reprotect never ran");
    }
}
