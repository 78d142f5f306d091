//! The watchdog, with one rule: every running VM of a plan is either progressing or is made to.
//!
//! Each round it looks at every running VM of every plan that has not ended, and at the
//! workers' record of its command (the fence, bucket `tern-operations`):
//!
//! - **finished**, but the plan still waits: the planner missed the terminal events (it gave up
//!   on them, or they were lost) — it applies the ones the worker kept in the record;
//! - **never taken**, and nothing waits in the command's queue: the command was lost (a publish
//!   whose copy vanished, a purge, a dead letter nobody reported) — it is sent again under the
//!   same command id, so it can never run twice;
//! - **taken, but its claim ran out long ago**: the worker died and no copy is being delivered
//!   again — it is sent again, and the next worker takes the claim over;
//! - **past its deadline** (`PlanSpec.deadlines`) by more than a grace period, with no terminal
//!   event — the worker that held it gave up without a word, or none holds it: the planner
//!   publishes the VM's `failed` event (TERN-DEADLINE) on the workers' behalf, which fails the
//!   VM with a reason the operator can act on (`tern plan retry`), or retries it under
//!   `max_automatic_retries`.
//!
//! It also passes the `wait` gates whose time is up (see `gates`): a wait passes at the first
//! round after its duration, so it lasts up to one interval longer than written. And it sends
//! the hook tries that are due and that no task of this process is sending (see `hooks`).
//!
//! Every action is idempotent, so replicas may watch at once, and a restarted planner picks up
//! where the last one left off: the state is the plan record and the fence, never this process.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_bus::{WorkQueue, ids};
use tern_proto::{Phase, Plan, VmEvent, event};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{FailedOnBehalf, PlannerService, is_terminal};
use crate::progress;

/// How often the watchdog looks by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// What the watchdog decided for one running VM.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Someone is on it, within its deadline.
    Progressing,
    /// Apply the terminal events the worker kept.
    Apply(Vec<VmEvent>),
    /// Send the command again.
    Resend(&'static str),
    /// Fail it for having outlived its deadline.
    Expire,
}

/// Judges one running VM from how long its attempt has run and its command's fence record. The
/// caller judges only commands at least two rounds old: a younger one is still on its way.
fn judge(
    ran: Duration,
    limit: Duration,
    every: Duration,
    record: Option<&tern_proto::OperationRecord>,
    backlog: u64,
    now_ms: i64,
) -> Verdict {
    let grace = every * 2 + Duration::from_secs(10);
    let overdue = ran > limit + grace;
    // Past the deadline, a finished command whose events the plan still does not take (it
    // waits for another phase) is expired like any other: the VM cannot stay running.
    if let Some(r) = record
        && !r.outcome.is_empty()
        && !overdue
    {
        let events: Vec<VmEvent> = r
            .terminal_events
            .iter()
            .filter_map(|e| match &e.body {
                Some(event::Body::Vm(v)) => Some(v.clone()),
                _ => None,
            })
            .collect();
        if !events.is_empty() {
            return Verdict::Apply(events);
        }
    }
    if overdue {
        return Verdict::Expire;
    }
    match record {
        None if backlog == 0 => Verdict::Resend("no worker took it and its queue is empty"),
        None => Verdict::Progressing, // queued behind others
        Some(r) if r.outcome.is_empty() && (r.lease_until_ms as i64) + (grace.as_millis() as i64) < now_ms => {
            Verdict::Resend("its worker's claim ran out and no copy of it was delivered again")
        }
        Some(_) => Verdict::Progressing,
    }
}

impl PlannerService {
    /// Runs the watchdog every `every` until `shutdown`.
    pub(super) fn spawn_watchdog(&self, every: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => this.watch_once(every).await,
                }
            }
        })
    }

    /// One round over every plan that has not ended.
    pub async fn watch_once(&self, every: Duration) {
        let Ok(ids) = self.inner.store.ids().await else { return };
        let mut backlogs: HashMap<WorkQueue, u64> = HashMap::new();
        for id in ids {
            let Ok(Some(header)) = self.inner.store.header(&id).await else { continue };
            if is_terminal(header.state) {
                continue;
            }
            let Ok(snapshot) = self.load(&id).await else { continue };
            // A `wait` gate whose time is up passes in a step (the step opens what follows).
            if crate::gates::next_wait_due(&snapshot.plan).is_some_and(|due| due <= now_ms()) {
                info!(plan = %id, "watchdog: a wait gate's time is up");
                if let Err(e) = self.step(&id, |_, _| false).await {
                    warn!(plan = %id, error = %e, "watchdog: the wait gate did not pass; next round");
                }
            }
            // A hook try whose sender is gone (a restart, another replica that died) is sent
            // again once its claim ran out.
            self.kick_hooks(&snapshot.plan);
            self.watch_plan(&snapshot.plan, every, &mut backlogs).await;
        }
    }

    async fn watch_plan(&self, plan: &Plan, every: Duration, backlogs: &mut HashMap<WorkQueue, u64>) {
        let now = now_ms();
        for (i, vm) in plan.vms.iter().enumerate() {
            let Some(ran) = progress::running_for(plan, i, now) else { continue };
            // A command younger than two rounds is on its way: not worth a read.
            if ran < every * 2 {
                continue;
            }
            let phase = vm.phase();
            let command_phase = match phase {
                Phase::Commit => Phase::Failover,
                p => p,
            };
            let Some(queue) = WorkQueue::for_phase(command_phase) else { continue };
            let vm_ref = vm.vm.clone().unwrap_or_default();
            let command_id = ids::command_id(&plan.plan_id, &vm_ref, command_phase, vm.attempt);
            let record = match self.inner.operations.get(&command_id).await {
                Ok(r) => r.map(|r| r.value),
                Err(e) => {
                    warn!(error = %e, "watchdog: the workers' records cannot be read; looking again next round");
                    return;
                }
            };
            let backlog = match (&record, backlogs.get(&queue)) {
                (Some(_), _) => 0,
                (None, Some(b)) => *b,
                (None, None) => {
                    // Unknown backlog: assume the command is queued (never send twice for nothing).
                    let b = self.inner.bus.queue_backlog(queue).await.unwrap_or(u64::MAX);
                    backlogs.insert(queue, b);
                    b
                }
            };
            let limit = progress::deadline(plan, phase);
            let name = vm_ref.name.clone();
            match judge(ran, limit, every, record.as_ref(), backlog, now) {
                Verdict::Progressing => {}
                Verdict::Apply(events) => {
                    info!(plan = %plan.plan_id, vm = %name, "watchdog: the command finished and the plan missed it; applying its outcome");
                    for e in events {
                        if let Err(e) = self.apply_vm_event(&plan.plan_id, e).await {
                            warn!(plan = %plan.plan_id, vm = %name, error = %e, "watchdog: not applied; next round");
                        }
                    }
                }
                Verdict::Resend(why) => {
                    info!(plan = %plan.plan_id, vm = %name, command = %command_id, why, "watchdog: sending the command again");
                    let nonce = (now / every.as_millis().max(1) as i64).to_string();
                    if let Err(e) = self.publish_command_again(plan, i, command_phase, &nonce).await {
                        warn!(plan = %plan.plan_id, vm = %name, error = %e, "watchdog: not sent; next round");
                    }
                }
                Verdict::Expire => {
                    warn!(plan = %plan.plan_id, vm = %name, phase = phase.slug(), ?ran, ?limit, "watchdog: past its deadline; failing it");
                    if let Err(e) = self.expire(plan, i, &command_id, command_phase, limit).await {
                        warn!(plan = %plan.plan_id, vm = %name, error = %e, "watchdog: not failed; next round");
                    }
                }
            }
        }
    }

    /// Publishes VM `i`'s `failed` event for outliving its deadline, on the workers' behalf.
    async fn expire(
        &self,
        plan: &Plan,
        i: usize,
        command_id: &str,
        command_phase: Phase,
        limit: Duration,
    ) -> Result<(), tern_bus::BusError> {
        let vm = &plan.vms[i];
        let name = vm.vm.as_ref().map(|v| v.name.clone()).unwrap_or_default();
        let failed = FailedOnBehalf {
            plan_id: &plan.plan_id,
            vm,
            command_id,
            command_phase,
            code: progress::DEADLINE_CODE,
            message: format!(
                "{} did not end within its deadline of {}, and no worker reported on it",
                vm.phase().slug(),
                progress::humanize(limit)
            ),
            action: format!(
                "See the VM's last events and its ASR job in the portal, then run `tern plan retry {} {name}`: a \
                 new attempt attaches to a job still running in Azure. Raise `deadlines` in the plan if the phase \
                 needs longer.",
                plan.plan_id
            ),
        };
        self.publish_failed(failed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{Event, OperationRecord, Outcome};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_command_is_left_alone_while_someone_holds_it_within_its_deadline() {
        let live = OperationRecord { owner: "w".into(), lease_until_ms: 10_000, ..Default::default() };
        assert_eq!(judge(S * 60, S * 3600, S * 5, Some(&live), 0, 9_000), Verdict::Progressing);
        assert_eq!(judge(S * 60, S * 3600, S * 5, None, 3, 9_000), Verdict::Progressing, "queued behind others");
    }

    #[test]
    fn a_lost_command_is_sent_again_and_a_dead_claim_is_handed_on() {
        assert!(matches!(judge(S * 60, S * 3600, S * 5, None, 0, 0), Verdict::Resend(_)));
        let dead = OperationRecord { owner: "w".into(), lease_until_ms: 1_000, ..Default::default() };
        assert!(matches!(judge(S * 60, S * 3600, S * 5, Some(&dead), 0, 100_000), Verdict::Resend(_)));
        assert_eq!(judge(S * 60, S * 3600, S * 5, Some(&dead), 0, 2_000), Verdict::Progressing, "not long enough");
    }

    #[test]
    fn a_finished_command_is_applied_and_an_overdue_one_expires() {
        let vm_event = VmEvent { outcome: Outcome::Succeeded as i32, ..Default::default() };
        let done = OperationRecord {
            outcome: "succeeded".into(),
            terminal_events: vec![Event { body: Some(event::Body::Vm(vm_event.clone())), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(judge(S * 70, S * 60, S * 5, Some(&done), 0, 0), Verdict::Apply(vec![vm_event]));
        assert_eq!(judge(S * 9999, S * 60, S * 5, Some(&done), 0, 0), Verdict::Expire, "applying did not help");
        let live = OperationRecord { owner: "w".into(), lease_until_ms: u64::MAX, ..Default::default() };
        assert_eq!(judge(S * 81, S * 60, S * 5, Some(&live), 0, 0), Verdict::Expire, "past deadline + grace");
        assert_eq!(judge(S * 79, S * 60, S * 5, Some(&live), 0, 0), Verdict::Progressing, "within the grace");
    }
}
