//! Wave gates: the `before` and `after` steps of a plan's waves (approvals, fixed waits and
//! hooks), as pure functions over the `Plan` record like `progress`. A step's state lives in the plan's
//! header (`Plan.gates`), so it survives restarts and is shared by replicas; every change goes
//! through the same compare-and-set step as any other.
//!
//! A wave's failovers start once its `before` steps passed, in order; its `after` steps run, in
//! order, once every VM of the wave failed over (or committed), and the next wave waits for them.
//! A rejected or failed step follows the plan's failure policy: under `stop` the plan halts
//! (`tern plan retry --wave` puts the step back to waiting), under `continue` a `before` step's
//! wave is skipped with the reason and the plan goes on.
//!
//! A hook step's tries are claimed here too ([`claim_try`]): a claim holds the step until its
//! timeout has passed (`GateStatus.next_try_ms`), so of the replicas that see it due one sends
//! the request, and a try whose sender died is sent again once its claim ran out. The request
//! itself is sent outside the step (`service::hooks`); its answer comes back through
//! [`hook_answered`].

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

/// A plan that ends ends its waiting steps too: they are cancelled at `at` (a VM's retry that
/// runs the plan again opens them anew, see [`advance`]).
pub fn end_waiting(plan: &mut Plan, at: Timestamp) {
    for g in plan.gates.iter_mut().filter(|g| g.state() == GateState::Waiting) {
        g.set_state(GateState::Cancelled);
        g.ended_at = Some(at);
        g.next_try_ms = 0;
    }
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
            if g.state() == GateState::Cancelled {
                // The plan ended under it and runs again (a VM's retry): the step waits anew.
                reopen(g, now);
                changes.push(GateChange { status: g.clone() });
            }
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
        apply_policy(plan, w, changed.status.after, &why);
    }
    Ok(changed)
}

/// A rejected or failed step of plan wave `w` follows the plan's failure policy: under
/// `continue` a `before` step's wave does not run (its pending VMs are skipped with `why`) and
/// the plan goes on; under `stop` the plan halts until the step is retried.
fn apply_policy(plan: &mut Plan, w: u32, after: bool, why: &str) {
    if continues(plan) {
        if !after {
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
        plan.halted_by_gate = true;
        plan.reason = format!("halted: {why}; `tern plan retry {} --wave {}` to try it again", plan.plan_id, w + 1);
    }
}

fn reopen(g: &mut GateStatus, now: Timestamp) {
    g.set_state(GateState::Waiting);
    g.attempt += 1;
    g.started_at = Some(now);
    g.ended_at = None;
    g.by.clear();
    g.reason.clear();
    g.tries = 0;
    g.next_try_ms = 0;
}

/// Which step of which wave (and which attempt of it) a hook try belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GateKey {
    pub wave: u32,
    pub after: bool,
    pub step: u32,
    pub attempt: u32,
}

impl GateKey {
    fn of(g: &GateStatus) -> Self {
        GateKey { wave: g.wave, after: g.after, step: g.step, attempt: g.attempt }
    }

    fn matches(&self, g: &GateStatus) -> bool {
        g.wave == self.wave && g.after == self.after && g.step == self.step && g.attempt == self.attempt
    }

    /// The hook request's `hook_id`: the same for every try of one attempt.
    pub fn hook_id(&self, plan_id: &str) -> String {
        let side = if self.after { "after" } else { "before" };
        format!("{plan_id}.gate.{}.{side}.{}.{}", self.wave, self.step, self.attempt)
    }
}

/// A hook step's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub subject: String,
    pub timeout: std::time::Duration,
    /// Tries after the first.
    pub retries: u32,
}

/// The default time a hook try waits for its answer.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The default tries after the first.
pub const DEFAULT_HOOK_RETRIES: u32 = 2;
/// A claimed try holds its step this much longer than its timeout (the answer's way back).
const CLAIM_SLACK_MS: i64 = 5_000;

/// The pause before try `n + 1` after try `n` failed: 2s, 4s, 8s, … at most 30s.
pub fn backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_secs((2u64 << n.saturating_sub(1).min(4)).min(30))
}

/// The hook settings of a step, if it is a hook.
pub fn hook_of(step: &GateStep) -> Option<Hook> {
    match &step.kind {
        Some(gate_step::Kind::Hook(h)) => Some(Hook {
            subject: h.subject.clone(),
            timeout: h
                .timeout
                .map(|d| std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_HOOK_TIMEOUT),
            retries: h.retries.unwrap_or(DEFAULT_HOOK_RETRIES),
        }),
        _ => None,
    }
}

/// Whether the plan sends hook requests now: it runs (not paused, halted or ending).
fn hooks_run(plan: &Plan) -> bool {
    matches!(plan.state(), PlanState::Running | PlanState::Accepted) && !plan.halted
}

/// The waiting hook steps whose next try may be sent at `now_ms`.
pub fn hooks_due(plan: &Plan, now_ms: i64) -> Vec<GateKey> {
    if !hooks_run(plan) {
        return Vec::new();
    }
    let map = spec_waves(plan);
    plan.gates
        .iter()
        .filter(|g| g.state() == GateState::Waiting && g.next_try_ms as i64 <= now_ms)
        .filter(|g| steps(plan, &map, g.wave, g.after).get(g.step as usize).and_then(hook_of).is_some())
        .map(GateKey::of)
        .collect()
}

/// The step `key` names, its hook and its status, if it still waits in that attempt.
fn waiting_hook<'a>(plan: &'a mut Plan, key: &GateKey) -> Option<(Hook, &'a mut GateStatus)> {
    let map = spec_waves(plan);
    let hook = steps(plan, &map, key.wave, key.after).get(key.step as usize).and_then(hook_of)?;
    let g = plan.gates.iter_mut().find(|g| key.matches(g) && g.state() == GateState::Waiting)?;
    Some((hook, g))
}

/// Claims the next try of hook step `key` at `now_ms`: the try's number and the hook, or `None`
/// when the step no longer waits, the plan does not run, or another try holds it.
pub fn claim_try(plan: &mut Plan, key: &GateKey, now_ms: i64) -> Option<(u32, Hook)> {
    if !hooks_run(plan) {
        return None;
    }
    let (hook, g) = waiting_hook(plan, key)?;
    if g.next_try_ms as i64 > now_ms {
        return None;
    }
    g.tries += 1;
    g.next_try_ms = (now_ms + hook.timeout.as_millis() as i64 + CLAIM_SLACK_MS) as u64;
    Some((g.tries, hook))
}

/// The outcome of try `t` of hook step `key`: `Ok(message)` passes the step; `Err(why)` fails
/// the try, and the step fails (following the failure policy) once its tries are spent, else
/// waits for its next try after a back-off. Returns the step's change when it passed or failed;
/// `None` when it tries again or the answer came too late to count (the step moved on).
pub fn hook_answered(
    plan: &mut Plan,
    key: &GateKey,
    t: u32,
    outcome: Result<String, String>,
    now: Timestamp,
) -> Option<GateChange> {
    let (hook, g) = waiting_hook(plan, key)?;
    if g.tries != t {
        return None; // a later try was claimed meanwhile: its answer decides
    }
    match outcome {
        Ok(message) => {
            g.set_state(GateState::Passed);
            g.ended_at = Some(now);
            g.next_try_ms = 0;
            g.reason = message;
            Some(GateChange { status: g.clone() })
        }
        Err(why) if t <= hook.retries => {
            g.reason = format!("try {t} of {}: {why}", hook.retries + 1);
            g.next_try_ms = (millis(&now) + backoff(t).as_millis() as i64) as u64;
            None
        }
        Err(why) => {
            g.set_state(GateState::Failed);
            g.ended_at = Some(now);
            g.next_try_ms = 0;
            g.reason = if hook.retries == 0 { why } else { format!("{why} (tried {t} times)") };
            let changed = GateChange { status: g.clone() };
            let map = spec_waves(plan);
            let name = steps(plan, &map, key.wave, key.after)
                .get(key.step as usize)
                .map(|s| step_name(s, key.step as usize))
                .unwrap_or_default();
            let why = format!("gate {name} of wave {} failed: {}", key.wave + 1, changed.status.reason);
            apply_policy(plan, key.wave, key.after, &why);
            Some(changed)
        }
    }
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
    reopen(&mut plan.gates[at], now);
    let changed = GateChange { status: plan.gates[at].clone() };
    let mut revived = Vec::new();
    if plan.halted && plan.halted_by_gate {
        plan.halted_by_gate = false;
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
    use tern_proto::{ApprovalGate, FailurePolicy, HookGate, PlanSpec, VmRef, WaitGate, Wave};

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

    fn hook(retries: u32) -> GateStep {
        GateStep {
            kind: Some(gate_step::Kind::Hook(HookGate {
                subject: "tern.hooks.dns".into(),
                timeout: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                retries: Some(retries),
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

    #[test]
    fn a_hook_try_is_claimed_once_until_its_timeout_and_failed_tries_back_off_then_halt() {
        let mut p = plan(vec![hook(1)]);
        p.current_wave = 1;
        advance(&mut p, at(100));
        let key = GateKey { wave: 1, after: false, step: 0, attempt: 1 };
        assert_eq!(hooks_due(&p, 100_000), [key]);
        assert_eq!(key.hook_id("p"), "p.gate.1.before.0.1");
        let (t, h) = claim_try(&mut p, &key, 100_000).unwrap();
        assert_eq!((t, h.subject.as_str(), h.timeout.as_secs()), (1, "tern.hooks.dns", 10));
        assert!(claim_try(&mut p, &key, 101_000).is_none(), "a try in flight holds the step");
        assert!(hooks_due(&p, 114_000).is_empty());
        assert_eq!(hooks_due(&p, 115_000), [key], "a try whose sender vanished is due once its claim ran out");

        // The first try times out: the step waits for its second try after the back-off.
        assert!(hook_answered(&mut p, &key, 1, Err("no answer".into()), at(111)).is_none());
        assert_eq!(p.gates[0].state(), GateState::Waiting);
        assert_eq!(p.gates[0].reason, "try 1 of 2: no answer");
        assert!(claim_try(&mut p, &key, 112_000).is_none(), "not before the back-off ends");
        let (t, _) = claim_try(&mut p, &key, 113_000).unwrap();
        assert_eq!(t, 2);
        assert!(
            hook_answered(&mut p, &key, 1, Ok("late".into()), at(114)).is_none(),
            "a stale try's answer counts for nothing"
        );
        let failed = hook_answered(&mut p, &key, 2, Err("no service listens".into()), at(115)).unwrap();
        assert_eq!(failed.status.state(), GateState::Failed);
        assert!(p.halted && p.halted_by_gate, "the stop policy halts");
        assert!(p.reason.contains("tern plan retry p --wave 2"), "{}", p.reason);
        assert!(hooks_due(&p, 200_000).is_empty(), "a halted plan sends no hook");

        // A retry is a new attempt with fresh tries; an ok answer passes it with its message.
        let (c, _) = retry(&mut p, 1, None, at(200)).unwrap();
        assert_eq!((c.status.attempt, c.status.tries), (2, 0));
        assert!(!p.halted && !p.halted_by_gate);
        let key = GateKey { attempt: 2, ..key };
        let (t, _) = claim_try(&mut p, &key, 200_000).unwrap();
        let passed = hook_answered(&mut p, &key, t, Ok("3 records".into()), at(201)).unwrap();
        assert_eq!((passed.status.state(), passed.status.reason.as_str()), (GateState::Passed, "3 records"));
        assert!(all_done(&p, &spec_waves(&p), 1, false));
    }

    #[test]
    fn a_failed_hook_under_continue_skips_its_wave_and_an_ended_plan_cancels_what_waits() {
        let mut p = plan(vec![hook(0)]);
        p.spec.as_mut().unwrap().failure_policy =
            Some(FailurePolicy { on_critical_failure: OnCriticalFailure::Continue as i32, ..Default::default() });
        p.current_wave = 1;
        advance(&mut p, at(0));
        let key = GateKey { wave: 1, after: false, step: 0, attempt: 1 };
        claim_try(&mut p, &key, 0).unwrap();
        hook_answered(&mut p, &key, 1, Err("refused".into()), at(1)).unwrap();
        assert!(!p.halted);
        assert_eq!(p.vms[1].state(), VmState::Skipped);
        assert!(p.vms[1].reason.contains("failed: refused"), "{}", p.vms[1].reason);

        let mut p = plan(vec![approval()]);
        p.current_wave = 1;
        advance(&mut p, at(0));
        end_waiting(&mut p, at(4));
        assert_eq!(p.gates[0].state(), GateState::Cancelled);
        let c = advance(&mut p, at(5));
        assert_eq!(c[0].status.state(), GateState::Waiting, "a plan that runs again waits anew");
        assert_eq!(c[0].status.attempt, 2);
    }

    #[test]
    fn the_wave_map_stored_at_submission_is_read_without_the_vms() {
        let mut p = plan(vec![approval()]);
        assert_eq!(p.derive_spec_waves(), [Some(0), Some(1)]);
        p.spec_wave_of = vec![0, 1];
        p.vms.clear(); // a step reads the stored map, never the VMs
        assert_eq!(spec_waves(&p), [Some(0), Some(1)]);
        p.spec_wave_of = vec![-1];
        assert_eq!(spec_waves(&p), [None]);
    }

    #[test]
    fn backoff_doubles_from_two_seconds_to_at_most_thirty() {
        let secs: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30, 30]);
    }
}
