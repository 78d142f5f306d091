//! Wave gates: the `before` and `after` steps of a plan's waves (approvals and fixed waits), as
//! pure functions over the `Plan` record like `progress`. A step's state lives in the plan's
//! header (`Plan.gates`), so it survives restarts and is shared by replicas; every change goes
//! through the same compare-and-set step as any other.
//!
//! A wave's failovers start once its `before` steps passed, in order; its `after` steps run, in
//! order, once every VM of the wave failed over (or committed), and the next wave waits for them.
//! A rejected or failed step follows the plan's failure policy: under `stop` the plan halts
//! (`tern plan retry --wave` puts the step back to waiting), under `continue` a `before` step's
//! wave is skipped with the reason and the plan goes on.

use prost_types::Timestamp;
use tern_proto::{
    AfterWhen, GateState, GateStatus, GateStep, OnCriticalFailure, Phase, Plan, PlanState, VmState, VmStatus, gate_step,
};

/// What a changed gate step announces (a `gate.*` plan event).
#[derive(Debug, Clone, PartialEq)]
pub struct GateChange {
    pub status: GateStatus,
}

/// For each of the plan's waves, the spec's wave it came from (see [`Plan::spec_waves`]).
pub fn spec_waves(plan: &Plan) -> Vec<Option<usize>> {
    plan.spec_waves()
}

/// The steps of plan wave `w` (`before` or `after`).
pub fn steps<'a>(plan: &'a Plan, map: &[Option<usize>], w: u32, after: bool) -> &'a [GateStep] {
    plan.gate_steps(map, w, after)
}

/// A step's display name: its own, or its kind and number (`approval #1`).
pub fn step_name(step: &GateStep, k: usize) -> String {
    step.display_name(k)
}

fn status(plan: &Plan, w: u32, after: bool, k: usize) -> Option<&GateStatus> {
    plan.gates.iter().find(|g| g.wave == w && g.after == after && g.step as usize == k)
}

fn continues(plan: &Plan) -> bool {
    plan.spec
        .as_ref()
        .and_then(|s| s.failure_policy.as_ref())
        .is_some_and(|p| p.on_critical_failure() == OnCriticalFailure::Continue)
}

/// Whether a step no longer holds its wave: passed, or rejected/failed under the continue policy.
fn done(plan: &Plan, g: Option<&GateStatus>) -> bool {
    match g.map(|g| g.state()) {
        Some(GateState::Passed) => true,
        Some(GateState::Rejected | GateState::Failed) => continues(plan),
        _ => false,
    }
}

/// Whether every step of wave `w` (`before` or `after`) is done.
pub fn all_done(plan: &Plan, map: &[Option<usize>], w: u32, after: bool) -> bool {
    (0..steps(plan, map, w, after).len()).all(|k| done(plan, status(plan, w, after, k)))
}

/// Whether any step waits (the plan cannot end while one does, unless it stops).
pub fn any_waiting(plan: &Plan) -> bool {
    plan.gates.iter().any(|g| g.state() == GateState::Waiting)
}

fn millis(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000))
}

fn wait_of(step: &GateStep) -> Option<std::time::Duration> {
    match &step.kind {
        Some(gate_step::Kind::Wait(w)) => {
            let d = w.duration.unwrap_or_default();
            Some(std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        }
        _ => None,
    }
}

/// Whether VM `v` reached the point a wave's `after` steps wait for.
fn reached(v: &VmStatus, when: AfterWhen) -> bool {
    let terminal = matches!(v.state(), VmState::Succeeded | VmState::Failed | VmState::Skipped);
    terminal
        || match when {
            AfterWhen::Committed => matches!(v.phase(), Phase::Reprotect | Phase::Cleanup),
            _ => matches!(v.phase(), Phase::Commit | Phase::Reprotect | Phase::Cleanup),
        }
}

/// The earliest moment a waiting `wait` step passes (ms since the epoch), for the watchdog.
pub fn next_wait_due(plan: &Plan) -> Option<i64> {
    let map = spec_waves(plan);
    plan.gates
        .iter()
        .filter(|g| g.state() == GateState::Waiting)
        .filter_map(|g| {
            let step = steps(plan, &map, g.wave, g.after).get(g.step as usize)?;
            let d = wait_of(step)?;
            Some(millis(g.started_at.as_ref()?) + d.as_millis() as i64)
        })
        .min()
}

/// Opens the steps that became reachable in the current wave and passes the waits whose time is
/// up at `now`. Returns the steps that changed. Does nothing in a plan that is not running.
pub fn advance(plan: &mut Plan, now: Timestamp) -> Vec<GateChange> {
    let mut changes = Vec::new();
    if !matches!(plan.state(), PlanState::Running | PlanState::Accepted) || plan.halted {
        return changes;
    }
    let map = spec_waves(plan);
    if map.is_empty() {
        return changes;
    }
    let w = plan.current_wave;
    for after in [false, true] {
        let list: Vec<GateStep> = steps(plan, &map, w, after).to_vec();
        if after {
            if !all_done(plan, &map, w, false) {
                break;
            }
            let when = list.first().map_or(AfterWhen::FailedOver, |s| s.run_after());
            if !plan.vms.iter().filter(|v| v.wave == w).all(|v| reached(v, when)) {
                break;
            }
        }
        for (k, step) in list.iter().enumerate() {
            let at = plan.gates.iter().position(|g| g.wave == w && g.after == after && g.step as usize == k);
            let at = match at {
                Some(at) => at,
                None => {
                    plan.gates.push(GateStatus {
                        wave: w,
                        after,
                        step: k as u32,
                        state: GateState::Waiting as i32,
                        started_at: Some(now),
                        attempt: 1,
                        ..Default::default()
                    });
                    changes.push(GateChange { status: plan.gates[plan.gates.len() - 1].clone() });
                    plan.gates.len() - 1
                }
            };
            let g = &mut plan.gates[at];
            if g.state() == GateState::Waiting
                && let Some(d) = wait_of(step)
                && g.started_at.as_ref().is_some_and(|s| millis(&now) - millis(s) >= d.as_millis() as i64)
            {
                g.set_state(GateState::Passed);
                g.ended_at = Some(now);
                changes.push(GateChange { status: g.clone() });
            }
            if !done(plan, Some(&plan.gates[at])) {
                break; // steps run in order
            }
        }
    }
    changes
}

/// Plan wave `w` named by `wave`: a wave's name in the plan file or its 1-based number.
pub fn find_wave(plan: &Plan, wave: &str) -> Result<u32, String> {
    let map = spec_waves(plan);
    let waves = plan.vms.iter().map(|v| v.wave).max().map_or(0, |w| w + 1);
    if let Some(spec) = plan.spec.as_ref()
        && let Some(s) = spec.waves.iter().position(|x| x.name.eq_ignore_ascii_case(wave))
    {
        if let Some(w) = map.iter().position(|m| *m == Some(s)) {
            return Ok(w as u32);
        }
        return Err(format!("wave {wave:?} selected no VM in plan {}: it has no gates to decide", plan.plan_id));
    }
    match wave.parse::<u32>() {
        Ok(n) if n >= 1 && n <= waves => Ok(n - 1),
        _ => Err(format!("wave: no wave {wave:?} in plan {}", plan.plan_id)),
    }
}

/// An operator's approval or rejection of a waiting approval step of plan wave `w` (`step`:
/// which one; unset: the waiting one). A rejection follows the failure policy. Refused, with
/// the reason, when no such step waits.
pub fn decide(
    plan: &mut Plan,
    w: u32,
    step: Option<u32>,
    approve: bool,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> Result<GateChange, String> {
    let map = spec_waves(plan);
    let at = plan
        .gates
        .iter()
        .position(|g| g.wave == w && g.state() == GateState::Waiting && step.is_none_or(|s| s == g.step))
        .ok_or_else(|| format!("no gate of wave {} waits in plan {}", w + 1, plan.plan_id))?;
    let g = plan.gates[at].clone();
    let Some(def) = steps(plan, &map, g.wave, g.after).get(g.step as usize) else {
        return Err(format!("plan {} has no such gate", plan.plan_id));
    };
    if !matches!(def.kind, Some(gate_step::Kind::Approval(_))) {
        return Err(format!(
            "{} of wave {} is not an approval: it passes by itself",
            step_name(def, g.step as usize),
            w + 1
        ));
    }
    let name = step_name(def, g.step as usize);
    let g = &mut plan.gates[at];
    g.set_state(if approve { GateState::Passed } else { GateState::Rejected });
    g.ended_at = Some(now);
    g.by = by.to_owned();
    g.reason = reason.to_owned();
    let changed = GateChange { status: g.clone() };
    if !approve {
        let why = format!(
            "gate {name} of wave {} rejected by {by}{}",
            w + 1,
            if reason.is_empty() { String::new() } else { format!(": {reason}") }
        );
        if continues(plan) {
            // The wave does not run; the plan goes on with the next one.
            if !changed.status.after {
                for v in plan.vms.iter_mut().filter(|v| {
                    v.wave == w
                        && v.state() == VmState::Pending
                        && matches!(v.phase(), Phase::Failover | Phase::Drill | Phase::Unspecified)
                }) {
                    v.set_state(VmState::Skipped);
                    v.reason = format!("not run: {why}");
                }
            }
        } else if !plan.halted {
            plan.halted = true;
            plan.reason =
                format!("halted: {why}; `tern plan retry {} --wave {}` to wait for it again", plan.plan_id, w + 1);
        }
    }
    Ok(changed)
}

/// An operator's retry of a rejected or failed step of plan wave `w`: it waits again (a new
/// attempt), the halt it caused is lifted and the VMs its halt skipped are pending again (their
/// indexes are returned, for their locks). The plan runs again if it had ended.
pub fn retry(plan: &mut Plan, w: u32, step: Option<u32>, now: Timestamp) -> Result<(GateChange, Vec<usize>), String> {
    match plan.state() {
        PlanState::Cancelled | PlanState::Cancelling => {
            return Err(format!("plan {} was cancelled", plan.plan_id));
        }
        _ => {}
    }
    let at = plan
        .gates
        .iter()
        .position(|g| {
            g.wave == w
                && matches!(g.state(), GateState::Rejected | GateState::Failed)
                && step.is_none_or(|s| s == g.step)
        })
        .ok_or_else(|| format!("no gate of wave {} was rejected or failed in plan {}", w + 1, plan.plan_id))?;
    let g = &mut plan.gates[at];
    g.set_state(GateState::Waiting);
    g.attempt += 1;
    g.started_at = Some(now);
    g.ended_at = None;
    g.by.clear();
    g.reason.clear();
    let changed = GateChange { status: g.clone() };
    let mut revived = Vec::new();
    if plan.halted && plan.reason.contains("rejected by") {
        for (i, v) in plan.vms.iter_mut().enumerate() {
            if v.state() == VmState::Skipped && !v.left_out && v.reason.starts_with("not run: halted") {
                v.set_state(VmState::Pending);
                v.reason.clear();
                revived.push(i);
            }
        }
        let failed_critical = plan.vms.iter().any(|v| v.critical && v.state() == VmState::Failed);
        plan.halted = failed_critical;
        if !failed_critical {
            plan.reason.clear();
        }
    }
    if plan.state() != PlanState::Paused {
        plan.set_state(PlanState::Running);
    }
    plan.finished_at = None;
    Ok((changed, revived))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{ApprovalGate, FailurePolicy, PlanSpec, VmRef, WaitGate, Wave};

    fn approval() -> GateStep {
        GateStep { kind: Some(gate_step::Kind::Approval(ApprovalGate {})), ..Default::default() }
    }

    fn wait(secs: i64) -> GateStep {
        GateStep {
            kind: Some(gate_step::Kind::Wait(WaitGate {
                duration: Some(prost_types::Duration { seconds: secs, nanos: 0 }),
            })),
            ..Default::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp { seconds: s, nanos: 0 }
    }

    fn plan(before: Vec<GateStep>) -> Plan {
        let vm = |n: &str, w: u32| VmStatus {
            vm: Some(VmRef { name: n.into(), ..Default::default() }),
            state: VmState::Pending as i32,
            phase: Phase::Failover as i32,
            wave: w,
            attempt: 1,
            critical: true,
            ..Default::default()
        };
        Plan {
            plan_id: "p".into(),
            spec: Some(PlanSpec {
                waves: vec![
                    Wave { name: "db".into(), vm_names: vec!["a".into()], ..Default::default() },
                    Wave { name: "web".into(), vm_names: vec!["b".into()], before, ..Default::default() },
                ],
                ..Default::default()
            }),
            state: PlanState::Running as i32,
            vms: vec![vm("a", 0), vm("b", 1)],
            ..Default::default()
        }
    }

    #[test]
    fn steps_open_in_order_in_the_current_wave_and_a_wait_passes_when_its_time_is_up() {
        let mut p = plan(vec![wait(30), approval()]);
        assert!(advance(&mut p, at(0)).is_empty(), "wave 2 is not current yet");
        p.current_wave = 1;
        let c = advance(&mut p, at(100));
        assert_eq!(c.len(), 1, "only the first step opens: {c:?}");
        assert!(!all_done(&p, &spec_waves(&p), 1, false));
        assert!(advance(&mut p, at(129)).is_empty());
        assert_eq!(next_wait_due(&p), Some(130_000));
        let c = advance(&mut p, at(130));
        assert_eq!(c.iter().map(|c| c.status.state()).collect::<Vec<_>>(), [GateState::Passed, GateState::Waiting]);
        assert!(decide(&mut p, 1, Some(0), true, "ann", "", at(131)).is_err(), "a wait is not approved");
        decide(&mut p, 1, None, true, "ann", "looks good", at(140)).unwrap();
        assert!(all_done(&p, &spec_waves(&p), 1, false));
        assert_eq!(find_wave(&p, "WEB"), Ok(1));
        assert_eq!(find_wave(&p, "2"), Ok(1));
    }

    #[test]
    fn a_rejection_halts_under_stop_and_skips_the_wave_under_continue() {
        let mut p = plan(vec![approval()]);
        p.current_wave = 1;
        advance(&mut p, at(0));
        decide(&mut p, 1, None, false, "bob", "change freeze", at(5)).unwrap();
        assert!(p.halted && p.reason.contains("bob") && p.reason.contains("change freeze"), "{}", p.reason);
        p.vms[1].set_state(VmState::Skipped);
        p.vms[1].reason = format!("not run: {}", p.reason);
        p.set_state(PlanState::CompletedWithErrors);
        let (_, revived) = retry(&mut p, 1, None, at(9)).unwrap();
        assert_eq!(revived, [1]);
        assert!(!p.halted && p.state() == PlanState::Running);
        assert_eq!(p.gates[0].state(), GateState::Waiting);
        assert_eq!(p.gates[0].attempt, 2);

        let mut p = plan(vec![approval()]);
        p.spec.as_mut().unwrap().failure_policy =
            Some(FailurePolicy { on_critical_failure: OnCriticalFailure::Continue as i32, ..Default::default() });
        p.current_wave = 1;
        advance(&mut p, at(0));
        decide(&mut p, 1, None, false, "bob", "", at(5)).unwrap();
        assert!(!p.halted);
        assert_eq!(p.vms[1].state(), VmState::Skipped);
        assert!(p.vms[1].reason.contains("rejected by bob"), "{}", p.vms[1].reason);
    }
}
