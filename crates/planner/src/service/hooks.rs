//! Wave hooks: the requests of a plan's `hook` gate steps, sent to the services that answer
//! them (`tern.v1.HookRequest` out, `tern.v1.HookResponse` back, over core NATS).
//!
//! A try is claimed in a plan step first (`gates::claim_try`), so of the replicas that see a
//! step due one sends it, and the claim outlives the try's timeout: a planner that dies waiting
//! leaves a claim that runs out, and the next watchdog round (here or in another replica) sends
//! the try again. The answer goes back into the plan through another step; a failed try waits
//! out its back-off in the task that sent it, or in the watchdog if that task is gone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_proto::{HookRequest, HookResponse, HookVm, Plan};
use tracing::{Instrument, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::PlannerService;
use crate::gates::{self, GateKey, Hook};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// The request of try `t` of hook step `key` (`deadline`: when the planner stops waiting).
pub(crate) fn request(plan: &Plan, key: &GateKey, t: u32, deadline: SystemTime) -> HookRequest {
    let map = gates::spec_waves(plan);
    let spec_wave =
        map.get(key.wave as usize).copied().flatten().and_then(|s| plan.spec.as_ref().and_then(|p| p.waves.get(s)));
    let step_name = gates::steps(plan, &map, key.wave, key.after)
        .get(key.step as usize)
        .map(|s| gates::step_name(s, key.step as usize))
        .unwrap_or_default();
    HookRequest {
        hook_id: key.hook_id(&plan.plan_id),
        plan_id: plan.plan_id.clone(),
        wave: spec_wave.map(|w| w.name.clone()).unwrap_or_default(),
        wave_number: key.wave + 1,
        when: if key.after { "after" } else { "before" }.to_owned(),
        step: key.step,
        step_name,
        attempt: key.attempt,
        r#try: t,
        deadline: Some(deadline.into()),
        vms: plan
            .vms
            .iter()
            .filter(|v| v.wave == key.wave)
            .map(|v| HookVm {
                name: v.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                protected_item_id: v.vm.as_ref().map(|r| r.protected_item_id.clone()).unwrap_or_default(),
                resource: v.resource.clone(),
                state: v.state,
                phase: v.phase,
            })
            .collect(),
        labels: plan.spec.as_ref().map(|s| s.labels.clone()).unwrap_or_default(),
    }
}

/// What an answer's body says: the step passes with its message, or this try failed, and why.
pub(crate) fn read_answer(body: &[u8]) -> Result<String, String> {
    let answer: HookResponse = tern_proto::json::from_json(body, "tern.v1.HookResponse")
        .map_err(|e| format!("an answer Tern cannot read ({e}): answer a tern.v1.HookResponse in JSON"))?;
    if answer.ok {
        Ok(answer.message)
    } else if answer.message.is_empty() {
        Err("the hook answered failure".to_owned())
    } else {
        Err(format!("the hook answered failure: {}", answer.message))
    }
}

impl PlannerService {
    /// Starts a task for every hook step of `plan` whose next try is due, unless this process
    /// runs one for it already.
    pub(super) fn kick_hooks(&self, plan: &Plan) {
        if self.inner.stopping.is_cancelled() {
            return;
        }
        for key in gates::hooks_due(plan, now_ms()) {
            let id = (plan.plan_id.clone(), key);
            if !self.inner.hooks_running.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.run_hook(&id.0, id.1).await;
                this.inner.hooks_running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            });
        }
    }

    /// Sends the tries of hook step `key` of plan `plan_id` until it passes or fails, or another
    /// holds it.
    async fn run_hook(&self, plan_id: &str, key: GateKey) {
        loop {
            let mut claimed = None;
            let stored = match self
                .step(plan_id, |p, _| {
                    claimed = gates::claim_try(p, &key, now_ms());
                    claimed.is_some()
                })
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(plan = %plan_id, error = %e, "hook try not claimed; the watchdog tries again");
                    return;
                }
            };
            let Some((t, Hook { subject, timeout, .. })) = claimed else { return };
            let request = request(&stored.plan, &key, t, SystemTime::now() + timeout);
            let span = tracing::info_span!(
                "hook",
                otel.name = %format!("hook {subject}"),
                otel.kind = "client",
                tern.plan_id = %plan_id,
                tern.hook_id = %request.hook_id,
                tern.try = t,
            );
            let _ = span.set_parent(tern_bus::trace::from_traceparent(&stored.plan.traceparent));
            let sending = async {
                let body = tern_proto::json::to_json(&request, "tern.v1.HookRequest")
                    .map_err(|e| e.to_string())
                    .and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string()))?;
                match self.inner.bus.hook_request(&subject, body, timeout).await {
                    Ok(answer) => read_answer(&answer),
                    Err(e) => Err(e.to_string()),
                }
            }
            .instrument(span);
            let outcome = tokio::select! {
                // The claim stays: it runs out, and the next planner sends the try again.
                _ = self.inner.stopping.cancelled() => return,
                outcome = sending => outcome,
            };
            match &outcome {
                Ok(m) => info!(plan = %plan_id, hook = %subject, try = t, message = %m, "hook passed"),
                Err(e) => warn!(plan = %plan_id, hook = %subject, try = t, error = %e, "hook try failed"),
            }
            let mut changed = None;
            let stored = match self
                .step(plan_id, |p, _| {
                    let before = p.gates.clone();
                    changed = gates::hook_answered(p, &key, t, outcome.clone(), super::now());
                    p.gates != before
                })
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(plan = %plan_id, error = %e, "hook answer not stored; its claim runs out and it is tried again");
                    return;
                }
            };
            if let Some(c) = changed {
                self.gate_event(&stored.plan, &c.status).await;
                return;
            }
            // Tried again after its back-off, unless it moved on meanwhile.
            let Some(g) =
                stored.plan.gates.iter().find(|g| {
                    g.wave == key.wave && g.after == key.after && g.step == key.step && g.attempt == key.attempt
                })
            else {
                return;
            };
            if g.state() != tern_proto::GateState::Waiting {
                return;
            }
            // A little past the back-off's end, so the claim finds it over (the wall clock and
            // the timer's clock may differ by a millisecond).
            let wait = (g.next_try_ms as i64 - now_ms()).max(0) as u64 + 20;
            tokio::select! {
                _ = self.inner.stopping.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_passes_with_its_message_and_anything_else_names_what_went_wrong() {
        assert_eq!(read_answer(br#"{"ok": true, "message": "dns updated"}"#), Ok("dns updated".into()));
        assert_eq!(
            read_answer(br#"{"ok": false, "message": "zone locked"}"#),
            Err("the hook answered failure: zone locked".into())
        );
        assert_eq!(read_answer(b"{}"), Err("the hook answered failure".into()), "ok is false when left out");
        let garbled = read_answer(b"yes").unwrap_err();
        assert!(garbled.contains("cannot read") && garbled.contains("HookResponse"), "{garbled}");
    }
}
