//! Commands the workers gave up on. A worker dead-letters a command it cannot handle or whose
//! attempts ran out; its VM would then wait for an event that never comes. The planner follows
//! the workers' dead letters and, for a command that is its VM's current one and that no worker
//! holds or finished, publishes the VM's `failed` event on the worker's behalf — with the
//! worker's reason and `tern plan retry` as the action — so the plan moves on and every consumer
//! of events learns of it.

use std::time::{SystemTime, UNIX_EPOCH};

use tern_bus::{Delivery, HandlerError, LoopOptions, SkippedHook, WorkQueue, headers, ids};
use tern_proto::{Command, VmState};
use tracing::{info, warn};

use super::{FailedOnBehalf, PlannerService};
use crate::{metrics, progress};

/// The queue a dead letter's subject (`tern.dlq.<queue>`) names.
fn queue_of(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or_default()
}

/// The code of a VM failed because its command was dead-lettered.
pub const DEAD_LETTERED: &str = "TERN-DEAD-LETTERED";

impl PlannerService {
    /// Serves the planner's consumer of the workers' dead letters until `shutdown`.
    pub(super) async fn follow_dead_letters(
        self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        // Garbage dead-lettered by a worker is skipped: it names no VM. It is counted all the same.
        let counted = |subject: &str, h: &tern_bus::HeaderMap| {
            let reason = h.get(headers::DLQ_REASON).map(|v| v.as_str()).unwrap_or_default();
            metrics::dead_letter_taken(queue_of(subject), reason);
        };
        let options = LoopOptions {
            skip_undecodable: true,
            on_skipped: Some(SkippedHook(std::sync::Arc::new(counted))),
            ..LoopOptions::default()
        };
        let consumer = self.inner.bus.planner_dlq_consumer(options).await?;
        Ok(tokio::spawn(async move {
            consumer
                .run(
                    move |d: Delivery<Command>| {
                        let this = self.clone();
                        async move { this.on_dead_letter(d).await }
                    },
                    shutdown,
                )
                .await;
        }))
    }

    async fn on_dead_letter(&self, d: Delivery<Command>) -> Result<(), HandlerError> {
        let reason = d.headers.get(headers::DLQ_REASON).map(|v| v.as_str().to_owned()).unwrap_or_default();
        // Which queue gave up: the subject says (`tern.dlq.<queue>`), which NATS lets only that
        // queue's worker publish to; a header anyone writes does not.
        let consumer = queue_of(&d.subject).to_owned();
        if d.attempt == 1 {
            metrics::dead_letter_taken(&consumer, &reason);
        }
        let command = d.message;
        let Some(phase) = command.action.as_ref().map(|a| a.phase()) else { return Ok(()) };
        // Only a command dead-lettered by the queue it belongs on: a copy on the wrong queue is
        // someone's mistake, not the VM's.
        let Some(queue) = WorkQueue::for_phase(phase).filter(|q| q.name() == consumer) else { return Ok(()) };
        // Only the VM's current command, of a plan this planner keeps.
        let Ok(plan) = self.get(&command.plan_id).await else { return Ok(()) };
        let key = command.vm.as_ref().map(ids::vm_key).unwrap_or_default();
        let Some(vm) = plan.vms.iter().find(|v| progress::vm_key(v) == key) else { return Ok(()) };
        let current = vm.state() == VmState::Running
            && vm.attempt == command.attempt
            && WorkQueue::for_phase(vm.phase()) == Some(queue);
        if !current {
            return Ok(());
        }
        // Only when no worker has it: a command another delivery still holds, or one that
        // finished (its own event tells), is not lost.
        let record =
            self.inner.operations.get(&command.command_id).await.map_err(|e| HandlerError::retry(e.to_string()))?;
        if let Some(r) = record.map(|r| r.value) {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            if !r.outcome.is_empty() || (!r.owner.is_empty() && r.lease_until_ms > now_ms) {
                info!(command = %command.command_id, "a dead-lettered copy of a command a worker holds or finished");
                return Ok(());
            }
        }
        let vm_name = vm.vm.as_ref().map(|v| v.name.clone()).unwrap_or_default();
        let message = format!("the {} worker gave up on the command: {reason}", queue.name());
        warn!(plan = %command.plan_id, vm = %vm_name, %reason, "a command was dead-lettered; failing its VM");
        let failed = FailedOnBehalf {
            plan_id: &command.plan_id,
            vm,
            command_id: &command.command_id,
            command_phase: phase,
            code: DEAD_LETTERED,
            message,
            action: format!("Fix what the reason names, then run `tern plan retry {} {vm_name}`.", command.plan_id),
        };
        self.publish_failed(failed).await.map_err(|e| HandlerError::retry(e.to_string()))?;
        Ok(())
    }
}
