//! The failover phase: unplanned failover to the other region (failback included) with the
//! resolved recovery point and the shut-down-source option, then commit unless told not to.
//! Drill mode runs a test failover into an isolated network, checks the test VM runs, and
//! always cleans the test failover up.

use std::time::{Duration, Instant};

use tern_asr::client::{FailoverDirection, Mutation};
use tern_asr::model::{Job, ProtectedItem};
use tern_asr::point::{PointChoice, ResolvedPoint};
use tern_asr::{AsrClient, ErrorClass};
use tern_bus::WorkQueue;
use tern_proto::{
    DrillSettings, FailoverCommand, Outcome, Phase, RecoveryPointChoice, RecoveryPointKind, RecoveryPointUsed,
    SourceShutdown, command,
};
use tern_worker::runtime::{Begin, in_azure};
use tern_worker::{CommandRun, Failure, PhaseHandler};

/// The failover phase handler.
#[derive(Debug, Clone, Copy)]
pub struct FailoverPhase;

#[async_trait::async_trait]
impl PhaseHandler for FailoverPhase {
    fn service(&self) -> &'static str {
        "tern-failover"
    }

    fn queue(&self) -> WorkQueue {
        WorkQueue::Failover
    }

    async fn run(&self, run: &mut CommandRun) -> Result<&'static str, Failure> {
        let Some(command::Action::Failover(f)) = run.command.action.clone() else {
            return Err(Failure::Invalid("not a failover command".into()));
        };
        let item = run.locate().await?;
        if let Some(drill) = &f.drill {
            return drill_run(run, &item, &f, drill).await;
        }
        let watched = failover(run, &item, &f).await?;
        if f.commit_after {
            // A failover this delivery watched succeed leaves the item as it was read before,
            // but failed over: nothing else commits it, so the commit needs no second read.
            commit(run, watched.then_some(&item)).await?;
        }
        Ok("succeeded")
    }
}

fn choice(c: Option<&RecoveryPointChoice>) -> PointChoice {
    let Some(c) = c else { return PointChoice::LatestProcessed };
    match RecoveryPointKind::try_from(c.kind).unwrap_or(RecoveryPointKind::Unspecified) {
        RecoveryPointKind::Latest => PointChoice::Latest,
        RecoveryPointKind::LatestAppConsistent => PointChoice::LatestAppConsistent,
        RecoveryPointKind::LatestCrashConsistent => PointChoice::LatestCrashConsistent,
        RecoveryPointKind::Custom => PointChoice::Custom(c.custom_id.clone()),
        RecoveryPointKind::LatestProcessed | RecoveryPointKind::Unspecified => PointChoice::LatestProcessed,
    }
}

fn kind(c: Option<&RecoveryPointChoice>) -> i32 {
    c.map(|c| c.kind).filter(|k| *k != 0).unwrap_or(RecoveryPointKind::LatestProcessed as i32)
}

/// What the job says was used, completed with what resolution knew (disks covered).
fn point_used(job: Option<&Job>, resolved: Option<&ResolvedPoint>, requested: i32) -> RecoveryPointUsed {
    let details = job.and_then(|j| j.properties.custom_details.as_ref()).and_then(|d| d.protected_item_details.first());
    let time = details
        .and_then(|d| d.recovery_point_time.as_deref())
        .and_then(tern_asr::model::parse_time)
        .or_else(|| resolved.and_then(|r| r.point.as_ref()).and_then(|p| p.time()))
        .map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 });
    RecoveryPointUsed {
        id: details
            .and_then(|d| d.recovery_point_id.clone())
            .or_else(|| resolved.and_then(|r| r.send.clone()))
            .unwrap_or_default(),
        time,
        requested,
        asr_type: resolved
            .and_then(|r| r.point.as_ref())
            .and_then(|p| p.properties.recovery_point_type.clone())
            .unwrap_or_default(),
        disks_covered: resolved.map(|r| r.disks_covered as u32).unwrap_or(0),
        disks_total: resolved.map(|r| r.disks_total as u32).unwrap_or(0),
    }
}

/// Whether the source shutdown the command asked for happened (ASR proceeds either way).
fn shutdown_outcome(job: Option<&Job>, requested: bool) -> SourceShutdown {
    if !requested {
        return SourceShutdown::NotRequested;
    }
    let failed = job.is_some_and(|j| {
        j.properties.tasks.iter().any(|t| {
            let name = format!("{} {}", t.name.as_deref().unwrap_or(""), t.friendly_name.as_deref().unwrap_or(""))
                .to_ascii_lowercase();
            name.contains("shut") && t.state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Failed"))
        })
    });
    if failed { SourceShutdown::Failed } else { SourceShutdown::Succeeded }
}

/// Fails the VM over; `true` when this delivery watched the failover job succeed (the step was
/// not done before, nor found done in Azure).
async fn failover(run: &mut CommandRun, item: &ProtectedItem, f: &FailoverCommand) -> Result<bool, Failure> {
    const STEP: &str = "failover";
    if run.fence.is_done(STEP) {
        return Ok(false);
    }
    let asr: AsrClient = run.vault.asr.clone();
    run.events.emit(Phase::Failover, Outcome::Started, |_| {}).await.map_err(|e| Failure::Transient(e.to_string()))?;
    let mut resolved = None;
    let mut already = false;
    let seen = || in_azure(Mutation::Failover, item, item);
    let job = match run.begin(STEP, Phase::Failover, item, Mutation::Failover, seen).await? {
        Begin::Attach(job) => Some(job),
        Begin::Done => {
            already = true; // failed over by an earlier attempt whose record was lost
            None
        }
        Begin::Send(ticket) => {
            let r = asr
                .resolve_point(item, &choice(f.recovery_point.as_ref()))
                .await
                .map_err(Failure::asr(Phase::Failover))?;
            let submission = asr
                .unplanned_failover(
                    item,
                    FailoverDirection::PrimaryToRecovery,
                    r.send.clone(),
                    f.shut_down_source,
                    ticket.sending(),
                )
                .await
                .map_err(Failure::asr(Phase::Failover))?;
            resolved = Some(r);
            run.record(STEP, Phase::Failover, submission, item, Mutation::Failover).await?
        }
    };
    // The job as a GET shows it (its tasks say whether the source shut down, its details which
    // recovery point was used): what the watcher hands over at the end, or read now when the
    // job ended before this delivery.
    let finished = match &job {
        Some(j) => Some(run.wait(Phase::Failover, j).await?),
        None => None,
    };
    let used = point_used(finished.as_ref(), resolved.as_ref(), kind(f.recovery_point.as_ref()));
    let shutdown = shutdown_outcome(finished.as_ref(), f.shut_down_source);
    let asr_started_at = finished
        .as_ref()
        .and_then(|j| j.properties.start_time.as_deref())
        .and_then(tern_asr::model::parse_time)
        .map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 });
    // The VM now running in the region failed over to, from the item already read (before
    // the failover; the item names it then as after: excerpt entries 144–145). No read is added
    // for it: ASR reports its address only when the target address is static.
    let resource = item.recovery_vm().as_ref().map(tern_worker::events::vm_resource);
    run.events
        .emit(Phase::Failover, Outcome::Succeeded, |e| {
            e.asr_job_id = job.clone().unwrap_or_default();
            e.resource = resource;
            e.recovery_point = Some(used);
            e.asr_started_at = asr_started_at;
            e.source_shutdown = shutdown as i32;
            if shutdown == SourceShutdown::Failed {
                e.error = Some(tern_worker::events::tern_error(
                    "TERN-SHUTDOWN-FAILED",
                    "the source VM could not be shut down before failover; the failover went on",
                    "Shut the source VM down by hand if it still runs.",
                ));
            }
            if already {
                e.reason = "already failed over; nothing sent".into();
            }
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
    // Only once the event is out: a delivery that dies in between must emit it again (its id
    // is the same, so the stream keeps one), not skip the step as done and leave no record.
    run.fence.step_done(STEP).await?;
    Ok(finished.is_some())
}

/// Commits the failover. `failed_over`: the item as read before a failover this delivery
/// watched succeed — the commit is decided without reading it again; should Azure refuse the
/// commit (someone committed it meanwhile), the item is read and the decision made again.
async fn commit(run: &mut CommandRun, failed_over: Option<&ProtectedItem>) -> Result<(), Failure> {
    const STEP: &str = "commit";
    if run.fence.is_done(STEP) {
        return Ok(());
    }
    run.events.emit(Phase::Commit, Outcome::Started, |_| {}).await.map_err(|e| Failure::Transient(e.to_string()))?;
    if let Some(item) = failed_over {
        match commit_item(run, item).await {
            Err(Failure::Asr { error, .. }) if error.class() == ErrorClass::PreconditionFailed => {
                tracing::info!(error = %error, "the commit was refused; reading the item again");
            }
            done => return done,
        }
    }
    let item = run.locate().await?;
    commit_item(run, &item).await
}

async fn commit_item(run: &mut CommandRun, item: &ProtectedItem) -> Result<(), Failure> {
    const STEP: &str = "commit";
    let asr = run.vault.asr.clone();
    let item = item.clone();
    let mut already = false;
    let seen = || in_azure(Mutation::Commit, &item, &item);
    let job = match run.begin(STEP, Phase::Commit, &item, Mutation::Commit, seen).await? {
        Begin::Attach(job) => Some(job),
        Begin::Done => {
            already = true; // committed by an earlier attempt
            None
        }
        Begin::Send(ticket) => {
            let submission = asr.commit(&item, ticket.sending()).await.map_err(Failure::asr(Phase::Commit))?;
            run.record(STEP, Phase::Commit, submission, &item, Mutation::Commit).await?
        }
    };
    if let Some(j) = &job {
        run.wait_state(Phase::Commit, j).await?;
    }
    // As for failover: the VM the commit keeps, from the item already read.
    let resource = item.recovery_vm().as_ref().map(tern_worker::events::vm_resource);
    run.events
        .emit(Phase::Commit, Outcome::Succeeded, |e| {
            e.asr_job_id = job.unwrap_or_default();
            e.resource = resource;
            if already {
                e.reason = "already committed; nothing sent".into();
            }
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
    // After the event, as for failover.
    run.fence.step_done(STEP).await?;
    Ok(())
}

async fn drill_run(
    run: &mut CommandRun,
    item: &ProtectedItem,
    f: &FailoverCommand,
    drill: &DrillSettings,
) -> Result<&'static str, Failure> {
    let asr = run.vault.asr.clone();
    run.events.emit(Phase::Drill, Outcome::Started, |_| {}).await.map_err(|e| Failure::Transient(e.to_string()))?;
    if !run.fence.is_done("test_failover") {
        // Azure first: a test failover running, or up already (an attempt whose record was
        // lost), is attached to or taken as it is; nothing is sent twice.
        let seen = || in_azure(Mutation::TestFailover, item, item);
        let job = match run.begin("test_failover", Phase::Drill, item, Mutation::TestFailover, seen).await? {
            Begin::Attach(j) => Some(j),
            Begin::Done => None,
            Begin::Send(ticket) => {
                let network = (!drill.test_network_id.is_empty()).then(|| drill.test_network_id.clone());
                let r = asr
                    .resolve_point(item, &choice(f.recovery_point.as_ref()))
                    .await
                    .map_err(Failure::asr(Phase::Drill))?;
                let submission = asr
                    .test_failover(item, network, r.send, ticket.sending())
                    .await
                    .map_err(Failure::asr(Phase::Drill))?;
                run.record("test_failover", Phase::Drill, submission, item, Mutation::TestFailover).await?
            }
        };
        if let Some(j) = &job {
            run.wait_state(Phase::Drill, j).await?;
        }
        run.fence.step_done("test_failover").await?;
    }
    // Validation: the test VM exists and runs in the target region.
    let timeout = drill
        .validation_timeout
        .as_ref()
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or(Duration::from_secs(600));
    let verdict = validate_test_vm(&asr, &item.id, timeout).await;
    // Cleanup runs whatever the check said (unless the drill keeps a VM that validated).
    let keep = drill.keep_test_vm && verdict.is_ok();
    if !keep && !run.fence.is_done("test_failover_cleanup") {
        let step = "test_failover_cleanup";
        // The item is read again only when no job was recorded (it may be gone by then).
        let job = if let Some(job) = run.recorded_job(step) {
            Some(job)
        } else {
            let current = asr.get_item(&item.id).await.map_err(Failure::asr(Phase::Drill))?;
            let seen = || in_azure(Mutation::TestFailoverCleanup, item, &current);
            let mutation = Mutation::TestFailoverCleanup;
            match run.begin(step, Phase::Drill, &current, mutation, seen).await? {
                Begin::Attach(j) => Some(j),
                Begin::Done => None,
                Begin::Send(ticket) => {
                    let submission = asr
                        .test_failover_cleanup(&current, "Tern drill", ticket.sending())
                        .await
                        .map_err(Failure::asr(Phase::Drill))?;
                    run.record(step, Phase::Drill, submission, &current, Mutation::TestFailoverCleanup).await?
                }
            }
        };
        if let Some(j) = &job {
            run.wait_state(Phase::Drill, j).await?;
        }
        run.fence.step_done("test_failover_cleanup").await?;
    }
    match verdict {
        Ok(vm) => {
            run.events
                .emit(Phase::Drill, Outcome::Succeeded, |e| {
                    e.reason = format!("test VM {vm} ran in the target region; test failover cleaned up")
                })
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
            Ok("succeeded")
        }
        Err(why) => Err(Failure::Refused {
            phase: Phase::Drill,
            code: "TERN-DRILL-VALIDATION-FAILED",
            message: format!("{why}; the test failover was cleaned up"),
            action: "Check the test network and the VM's boot diagnostics, then run the drill again.",
        }),
    }
}

async fn validate_test_vm(asr: &AsrClient, item_id: &str, timeout: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let item = asr.get_item(item_id).await.map_err(|e| format!("the item could not be read: {e}"))?;
        let a2a = item.properties.provider_specific_details.as_ref();
        let vm_id = a2a.and_then(|d| d.test_failover_recovery_fabric_object_id.clone()).or_else(|| {
            let rg = a2a?.recovery_azure_resource_group_id.clone()?;
            let name = a2a?.tfo_azure_vm_name.clone()?;
            Some(format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}"))
        });
        if let Some(vm_id) = vm_id
            && let Ok(Some(vm)) = asr.get_vm(&vm_id).await
            && vm.power_state() == Some("running")
        {
            return Ok(vm.name);
        }
        if start.elapsed() >= timeout {
            return Err(format!("no running test VM for {} within {timeout:?}", item.friendly_name()));
        }
        tokio::time::sleep(Duration::from_secs(2).min(timeout)).await;
    }
}
