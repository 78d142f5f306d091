//! The reprotect phase: A2A switch protection of a committed item, so it replicates from the
//! region it now runs in. The request is built as Azure PowerShell builds it: the VM as it runs
//! now is read and each of its disks named, with the cache storage account of its region (the
//! command carries one per region). The item is re-homed under a new id (its `lifecycleId`
//! stays); the worker re-resolves it and reports the job's success — but the VM is protected
//! again only once initial replication has completed (its disks Protected, its
//! `SecondaryIrCompletion` job done), and only then does the phase succeed.

use tern_asr::ErrorClass;
use tern_asr::client::{Mutation, ReprotectSettings};
use tern_bus::WorkQueue;
use tern_proto::{Outcome, Phase, PhaseProgress, ReprotectTarget, command};
use tern_worker::runtime::{Begin, InAzure, running_job};
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
        cache_storage_accounts: t.cache_storage_accounts.into_iter().collect(),
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
        const SYNC: &str = "initial_replication";
        let Some(command::Action::Reprotect(r)) = run.command.action.clone() else {
            return Err(Failure::Invalid("not a reprotect command".into()));
        };
        let asr = run.vault.asr.clone();
        let item = run.locate().await?;
        run.events
            .emit(Phase::Reprotect, Outcome::Started, |_| {})
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let mut reason = String::new();
        if !run.fence.is_done(STEP) {
            // Protected under another id than the command named: an earlier attempt reprotected
            // it (a Protected item still under its own id was never failed over).
            let rehomed =
                item.protection_state().eq_ignore_ascii_case("Protected") && rehomed_since_command(run, &item.id);
            let seen = || match running_job(Mutation::SwitchProtection, &item) {
                Some(job) => InAzure::Running(job),
                None if rehomed => InAzure::Done,
                None => InAzure::Absent,
            };
            let job = match run.begin(STEP, Phase::Reprotect, &item, Mutation::SwitchProtection, seen).await? {
                Begin::Attach(job) => Some(job),
                Begin::Done => {
                    reason = "already reprotected (re-homed under a new id); nothing sent".into();
                    None
                }
                Begin::Send(ticket) => {
                    if !item.allows("SwitchProtection") {
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
                    }
                    let submission = asr
                        .switch_protection(&item, &settings(r.target.as_ref()), ticket.sending())
                        .await
                        .map_err(Failure::asr(Phase::Reprotect))?;
                    run.record(STEP, Phase::Reprotect, submission, &item, Mutation::SwitchProtection).await?
                }
            };
            if let Some(job) = &job {
                run.wait_state(Phase::Reprotect, job).await?;
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
        if !run.fence.is_done(SYNC) {
            // The job succeeded; the VM is protected again only once its initial replication has
            // completed. Say so now, then wait for it.
            let pending = rehomed.disks_not_protected().len();
            if pending > 0 {
                let job_name = job.clone();
                let percent = rehomed.sync_percent().map(|p| p.clamp(0, 100) as u32).unwrap_or(0);
                run.events
                    .emit(Phase::Reprotect, Outcome::Progress, |e| {
                        e.asr_job_id = job_name;
                        e.reason =
                            format!("reprotect job succeeded; initial replication of {pending} disk(s) in progress");
                        e.progress = Some(PhaseProgress { task: "Reprotect job succeeded".into(), percent });
                    })
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
            }
            let since = claimed_at(run);
            run.wait_initial_replication(Phase::Reprotect, &rehomed, since).await?;
            run.fence.step_done(SYNC).await?;
        }
        // The VM now protected: the re-homed item's primary side (switch protection flips the
        // roles), read above. Its `fabricObjectId` is lowercase as ASR writes it; the VM GET the
        // reprotect request is built from stays inside the client and is not read again here.
        let resource = rehomed.primary_vm().as_ref().map(tern_worker::events::vm_resource);
        run.events
            .emit(Phase::Reprotect, Outcome::Succeeded, |e| {
                e.asr_job_id = job;
                e.new_protected_item_id = rehomed.id.clone();
                e.resource = resource;
                e.reason = if reason.is_empty() {
                    "reprotected; initial replication completed".into()
                } else {
                    format!("{reason}; initial replication completed")
                };
            })
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        Ok("succeeded")
    }
}

/// When the command was first claimed: no job of its reprotect can have started before.
fn claimed_at(run: &CommandRun) -> time::OffsetDateTime {
    let ms = i128::from(run.fence.record().started_ms);
    time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap_or_else(|_| time::OffsetDateTime::now_utc())
}
