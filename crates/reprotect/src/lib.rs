//! The reprotect phase: A2A switch protection of a committed item, so it replicates from the
//! region it now runs in. The item is re-homed under a new id (its `lifecycleId` stays); the
//! worker re-resolves it, reports sync progress, and succeeds once it is Protected.

use tern_asr::ErrorClass;
use tern_asr::client::ReprotectSettings;
use tern_bus::WorkQueue;
use tern_proto::{Outcome, Phase, ReprotectTarget, command};
use tern_worker::runtime::running_job_of;
use tern_worker::{CommandRun, Failure, PhaseHandler};

/// The reprotect phase handler.
#[derive(Debug, Clone, Copy)]
pub struct ReprotectPhase;

fn settings(t: Option<&ReprotectTarget>) -> ReprotectSettings {
    let t = t.cloned().unwrap_or_default();
    let some = |s: String| (!s.is_empty()).then_some(s);
    ReprotectSettings {
        resource_group_id: some(t.resource_group_id),
        cache_storage_account_id: some(t.cache_storage_account_id),
        disk_type: some(t.disk_type),
        availability_set_id: some(t.availability_set_id),
        availability_zone: some(t.availability_zone),
        proximity_placement_group_id: some(t.proximity_placement_group_id),
        capacity_reservation_group_id: some(t.capacity_reservation_group_id),
        policy_id: None,
    }
}

/// Whether the item now lives under another id than the one the command was issued for.
fn rehomed_since_command(run: &CommandRun, current_id: &str) -> bool {
    let issued_for = run.command.vm.as_ref().map(|v| v.protected_item_id.as_str()).unwrap_or("");
    !issued_for.is_empty() && !issued_for.eq_ignore_ascii_case(current_id)
}

#[async_trait::async_trait]
impl PhaseHandler for ReprotectPhase {
    fn service(&self) -> &'static str {
        "tern-reprotect"
    }

    fn queue(&self) -> WorkQueue {
        WorkQueue::Reprotect
    }

    async fn run(&self, run: &mut CommandRun) -> Result<&'static str, Failure> {
        const STEP: &str = "reprotect";
        let Some(command::Action::Reprotect(r)) = run.command.action.clone() else {
            return Err(Failure::Invalid("not a reprotect command".into()));
        };
        let asr = run.cx.asr.clone();
        let item = run.locate().await?;
        run.events
            .emit(Phase::Reprotect, Outcome::Started, |_| {})
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let mut reason = String::new();
        if !run.fence.is_done(STEP) {
            let job = if let Some(job) = run.recorded_job(STEP) {
                Some(job)
            } else if let Some(job) = running_job_of(&item, "protection").or_else(|| running_job_of(&item, "reprotect"))
            {
                run.fence.record_job(STEP, &job).await?;
                Some(job)
            } else if item.allows("SwitchProtection") {
                let submission = asr
                    .switch_protection(&item, &settings(r.target.as_ref()))
                    .await
                    .map_err(Failure::asr(Phase::Reprotect))?;
                run.record(STEP, Phase::Reprotect, submission).await?
            } else if item.protection_state().eq_ignore_ascii_case("Protected") && rehomed_since_command(run, &item.id)
            {
                // Protected under another id than the command named: an earlier attempt
                // reprotected it (a Protected item still under its own id was never failed over).
                reason = "already reprotected (re-homed under a new id); nothing sent".into();
                None
            } else {
                return Err(Failure::Refused {
                    phase: Phase::Reprotect,
                    code: "TERN-REPROTECT-NOT-ALLOWED",
                    message: format!(
                        "{} is {} and does not allow switch protection (allowed: {:?})",
                        item.friendly_name(),
                        item.protection_state(),
                        item.properties.allowed_operations
                    ),
                    action: "Reprotect needs a committed failover: commit it first.",
                });
            };
            if let Some(job) = &job {
                run.sync_item = Some(item.id.clone());
                run.wait(Phase::Reprotect, job).await?;
            }
            run.fence.step_done(STEP).await?;
        }
        // The item lives under a new id now: find it again and check it is Protected. Its new
        // home is the container it replicated to (one read); else search the vault.
        let expected = item
            .properties
            .recovery_container_id
            .as_deref()
            .map(|c| format!("{c}/replicationProtectedItems/{}", item.name));
        let moved = match expected {
            Some(id) => match asr.get_item(&id).await {
                Ok(found) if found.lifecycle_id() == item.lifecycle_id() => Some(found),
                Ok(_) => None,
                Err(e) if e.class() == ErrorClass::NotFound => None,
                Err(e) => return Err(Failure::asr(Phase::Reprotect)(e)),
            },
            None => None,
        };
        let found = match moved {
            Some(i) => Some(i),
            None => asr.find_item(&item.name, item.lifecycle_id()).await.map_err(Failure::asr(Phase::Reprotect))?,
        };
        let rehomed = found.ok_or_else(|| Failure::Refused {
            phase: Phase::Reprotect,
            code: "TERN-REPROTECT-ITEM-LOST",
            message: format!("{} is in no protection container after reprotect", item.friendly_name()),
            action: "Check the vault: the item may have been removed.",
        })?;
        if !rehomed.protection_state().eq_ignore_ascii_case("Protected") {
            return Err(Failure::Transient(format!(
                "{} is {}, not Protected yet",
                rehomed.friendly_name(),
                rehomed.protection_state()
            )));
        }
        run.events.vm_mut().protected_item_id = rehomed.id.clone();
        let job = run.recorded_job(STEP).unwrap_or_default();
        run.events
            .emit(Phase::Reprotect, Outcome::Succeeded, |e| {
                e.asr_job_id = job;
                e.new_protected_item_id = rehomed.id.clone();
                e.reason = reason;
            })
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        Ok("succeeded")
    }
}
