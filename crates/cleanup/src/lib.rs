//! The cleanup phase: once the VM is confirmed running in its primary region and reprotect has
//! succeeded (design §4, invariant 3), remove the VM and NICs left in the other region — keeping
//! unmanaged-disk VMs unless the plan asks — and optionally disable replication.
//!
//! ASR is documented to remove the managed-disk leftovers itself on reprotect, but Microsoft's
//! pages disagree, so cleanup verifies and removes explicitly, and says what it found: the VM,
//! its NICs, the public IP addresses of those NICs and the VM's managed disks — never a disk the
//! item names (its replica or target disks), nor a disk or address something else still uses.

use tern_asr::client::Mutation;
use tern_asr::model::{A2AReplicationDetails, ProtectedItem, VirtualMachine};
use tern_bus::WorkQueue;
use tern_proto::{CleanupOptions, Outcome, Phase, command};
use tern_worker::runtime::{Begin, in_azure, running_job};
use tern_worker::{CommandRun, Failure, PhaseHandler};

/// Tern's code for a cleanup refused because it could destroy the only copy of the VM.
pub const UNSAFE: &str = "TERN-CLEANUP-UNSAFE";
const UNSAFE_ACTION: &str = "Finish failback and reprotect first (the item Protected, active in its primary region, \
     no job running on it) and make sure the VM runs in the primary region; then run cleanup again.";

/// Fence step: the leftovers are settled (removed, kept or reported).
const LEFTOVERS: &str = "remove_leftovers";
/// Fence notes: the NICs, managed disks and public IPs of the leftover VM, written before the VM
/// is deleted, because a deleted VM no longer names them and Azure keeps what a VM leaves behind.
const LEFTOVER_NICS: &str = "leftover_nics";
const LEFTOVER_DISKS: &str = "leftover_disks";
const LEFTOVER_PUBLIC_IPS: &str = "leftover_public_ips";
/// Fence step and job: disable replication.
const DISABLE: &str = "disable";

/// The cleanup phase handler.
#[derive(Debug, Clone, Copy)]
pub struct CleanupPhase;

#[async_trait::async_trait]
impl PhaseHandler for CleanupPhase {
    fn service(&self) -> &'static str {
        "tern-cleanup"
    }

    fn queue(&self) -> WorkQueue {
        WorkQueue::Cleanup
    }

    async fn run(&self, run: &mut CommandRun) -> Result<&'static str, Failure> {
        let Some(command::Action::Cleanup(c)) = run.command.action.clone() else {
            return Err(Failure::Invalid("not a cleanup command".into()));
        };
        let options = c.options.unwrap_or_default();
        // An earlier delivery got as far as disabling replication: the item may be gone by now,
        // so finish that rather than look for it.
        if options.disable_replication && (run.fence.is_done(DISABLE) || run.recorded_job(DISABLE).is_some()) {
            emit(run, Outcome::Started, String::new(), String::new()).await?;
            return finish_disable(run).await;
        }
        let item = run.locate().await?;
        emit(run, Outcome::Started, String::new(), String::new()).await?;
        if options.disable_replication
            && run.fence.is_done(LEFTOVERS)
            && let Some(job) = running_job(Mutation::Disable, &item)
        {
            // Our own disable, submitted just before an earlier delivery stopped: attach to it.
            run.fence.record_job(DISABLE, &job).await?;
            return finish_disable(run).await;
        }

        check_reprotected(&item).map_err(refuse)?;
        let a2a = item.properties.provider_specific_details.clone().unwrap_or_default();
        let primary_region = region_label(a2a.primary_fabric_location.as_deref(), "the primary region");
        let primary_id = a2a.fabric_object_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            refuse(format!("the item {} names no VM in {primary_region} (fabricObjectId)", item.friendly_name()))
        })?;
        let asr = run.vault.asr.clone();
        let primary = asr.get_vm(&primary_id).await.map_err(Failure::asr(Phase::Cleanup))?;
        check_primary_running(&primary_id, &primary_region, primary.as_ref()).map_err(refuse)?;
        let primary = primary.unwrap_or_default();

        let mut reason = leftovers(run, &item, &a2a, &primary_id, &primary, &options).await?;
        let mut job = String::new();
        if options.disable_replication {
            job = disable(run, Some(&item)).await?;
            reason.push_str("; replication disabled");
        }
        let resource = cleaned_vm(&item, &primary_id, &primary);
        succeeded(run, reason, job, Some(resource)).await?;
        Ok("succeeded")
    }
}

/// Whether reprotect succeeded: the item is `Protected`, active in its primary region, idle,
/// and its initial replication has completed (every disk Protected — the item-level figure
/// goes stale and proves nothing, and a Protected item may still be replicating its disks).
pub fn check_reprotected(item: &ProtectedItem) -> Result<(), String> {
    let (state, location) = (item.protection_state(), item.active_location());
    if !state.eq_ignore_ascii_case("Protected") || !location.eq_ignore_ascii_case("Primary") {
        return Err(format!(
            "reprotect has not succeeded: {} is in protection state {state:?}, active location {location:?} \
             (cleanup needs \"Protected\" and \"Primary\")",
            item.friendly_name()
        ));
    }
    if let Some(job) = item.running_job_id() {
        let scenario = item
            .properties
            .current_scenario
            .as_ref()
            .and_then(|s| s.scenario_name.as_deref())
            .unwrap_or("an operation");
        return Err(format!(
            "{scenario} is still running on {} (job {}); cleanup waits until the item is idle",
            item.friendly_name(),
            job.rsplit('/').next().unwrap_or(job)
        ));
    }
    let pending = item.disks_not_protected();
    if !pending.is_empty() {
        let disks: Vec<String> = pending
            .iter()
            .map(|d| match d.percent {
                Some(p) => format!("{} {} ({p}%)", d.disk, d.state),
                None => format!("{} {}", d.disk, d.state),
            })
            .collect();
        return Err(format!(
            "initial replication of {} has not completed ({}); cleanup waits until every disk is Protected",
            item.friendly_name(),
            disks.join(", ")
        ));
    }
    Ok(())
}

/// Whether the VM is confirmed running in the item's current primary region.
pub fn check_primary_running(vm_id: &str, region: &str, vm: Option<&VirtualMachine>) -> Result<(), String> {
    match vm.map(VirtualMachine::power_state) {
        Some(Some(p)) if p.eq_ignore_ascii_case("running") => Ok(()),
        Some(p) => Err(format!(
            "the VM is not confirmed running in {region}: {vm_id} is {}",
            p.unwrap_or("in an unknown power state")
        )),
        None => Err(format!("the VM is not confirmed running in {region}: {vm_id} does not exist")),
    }
}

fn refuse(message: String) -> Failure {
    Failure::Refused { phase: Phase::Cleanup, code: UNSAFE, message, action: UNSAFE_ACTION }
}

async fn emit(run: &mut CommandRun, outcome: Outcome, reason: String, job: String) -> Result<(), Failure> {
    run.events
        .emit(Phase::Cleanup, outcome, |e| {
            e.reason = reason;
            e.asr_job_id = job;
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))
}

/// The cleanup's terminal event: the VM whose leftovers were removed (when the item was read)
/// and every resource this command deleted, over all its deliveries.
async fn succeeded(
    run: &mut CommandRun,
    reason: String,
    job: String,
    resource: Option<tern_proto::VmResource>,
) -> Result<(), Failure> {
    let deleted = run.deleted_resources();
    run.events
        .emit(Phase::Cleanup, Outcome::Succeeded, |e| {
            e.reason = reason;
            e.asr_job_id = job;
            e.resource = resource;
            e.deleted_resources = deleted;
        })
        .await
        .map_err(|e| Failure::Transient(e.to_string()))
}

/// The VM cleanup confirmed running in the primary region: id and region from the Compute GET
/// that confirmed it (Compute's casing; ASR's lowercase `fabricObjectId` when the answer had
/// none), addresses from the item's primary side (`staticIPAddress`; no NIC is read for them).
fn cleaned_vm(item: &ProtectedItem, primary_id: &str, primary: &VirtualMachine) -> tern_proto::VmResource {
    let mut placement = item.primary_vm().unwrap_or_default();
    placement.arm_id = Some(primary.id.as_str()).filter(|s| !s.is_empty()).unwrap_or(primary_id).to_owned();
    if let Some(location) = primary.location.as_deref().filter(|s| !s.is_empty()) {
        placement.region = location.to_owned();
    }
    tern_worker::events::vm_resource(&placement)
}

fn region_label(location: Option<&str>, fallback: &str) -> String {
    location.filter(|s| !s.is_empty()).unwrap_or(fallback).to_owned()
}

/// Compares Azure locations loosely ("West US" = "westus").
fn same_region(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    norm(a) == norm(b)
}

/// The VM the item would fail over to: where the VM ran before failback.
fn leftover_vm_id(a2a: &A2AReplicationDetails) -> Option<String> {
    a2a.recovery_fabric_object_id.clone().filter(|s| !s.is_empty()).or_else(|| {
        let rg = a2a.recovery_azure_resource_group_id.as_deref().filter(|s| !s.is_empty())?;
        let name = a2a.recovery_azure_vm_name.as_deref().filter(|s| !s.is_empty())?;
        Some(format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}"))
    })
}

/// What is left: "VM a and NIC b" / "VM a, NIC b, disks c, d and public IP e".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Leftovers {
    vm: Option<String>,
    nics: Vec<String>,
    public_ips: Vec<String>,
    disks: Vec<String>,
}

impl Leftovers {
    fn is_empty(&self) -> bool {
        self.vm.is_none() && self.nics.is_empty() && self.public_ips.is_empty() && self.disks.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(vm) = &self.vm {
            parts.push(format!("VM {vm}"));
        }
        for (one, many, ids) in
            [("NIC", "NICs", &self.nics), ("public IP", "public IPs", &self.public_ips), ("disk", "disks", &self.disks)]
        {
            match ids.as_slice() {
                [] => {}
                [id] => parts.push(format!("{one} {id}")),
                ids => parts.push(format!("{many} {}", ids.join(", "))),
            }
        }
        match parts.len() {
            0 => String::new(),
            1 => parts.remove(0),
            n => {
                let last = parts.remove(n - 1);
                format!("{} and {last}", parts.join(", "))
            }
        }
    }
}

/// Space-separated ids noted in the fence.
fn noted_ids(run: &CommandRun, key: &str) -> Vec<String> {
    run.fence.noted(key).map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// The disks the item names (its own, its replicas, its failover targets): never leftovers.
fn item_disks(item: &ProtectedItem) -> Vec<String> {
    let Some(a2a) = &item.properties.provider_specific_details else { return Vec::new() };
    a2a.protected_managed_disks
        .iter()
        .flat_map(|d| [&d.disk_id, &d.recovery_target_disk_id, &d.recovery_replica_disk_id])
        .filter_map(|id| id.clone())
        .filter(|id| !id.is_empty())
        .collect()
}

fn contains(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i.eq_ignore_ascii_case(id))
}

/// Removes, keeps or reports what is left in the secondary region; returns what happened.
async fn leftovers(
    run: &mut CommandRun,
    item: &ProtectedItem,
    a2a: &A2AReplicationDetails,
    primary_id: &str,
    primary: &VirtualMachine,
    options: &CleanupOptions,
) -> Result<String, Failure> {
    let region = region_label(a2a.recovery_fabric_location.as_deref(), "the secondary region");
    if run.fence.is_done(LEFTOVERS) {
        return Ok(format!("leftovers in {region} were settled by an earlier attempt of this command"));
    }
    let Some(vm_id) = leftover_vm_id(a2a) else {
        run.fence.step_done(LEFTOVERS).await?;
        return Ok(format!("nothing left in {region}: the item names no VM there"));
    };
    if vm_id.eq_ignore_ascii_case(primary_id) {
        return Err(refuse(format!("the VM in {region} ({vm_id}) is the VM running in the primary region")));
    }
    let asr = run.vault.asr.clone();
    let vm = asr.get_vm(&vm_id).await.map_err(Failure::asr(Phase::Cleanup))?;
    if let (Some(vm), Some(primary_region)) = (&vm, a2a.primary_fabric_location.as_deref())
        && vm.location.as_deref().is_some_and(|l| same_region(l, primary_region))
    {
        return Err(refuse(format!("{vm_id} is in the primary region ({primary_region}), not in {region}")));
    }
    if vm.is_none() {
        // Gone: by an earlier delivery's DELETE, if one was sent, which then counts as ours.
        run.deleted_before(&vm_id).await?;
    }
    let primary_nics = primary.nic_ids();
    let primary_disks = primary.managed_disk_ids();
    let named_by_item = item_disks(item);
    let asr_nics: Vec<String> = match &vm {
        Some(vm) => vm.nic_ids(),
        // An earlier delivery deleted the VM; what it had is in the fence.
        None => noted_ids(run, LEFTOVER_NICS),
    };
    let nics: Vec<String> = asr_nics.into_iter().filter(|n| !contains(&primary_nics, n)).collect();
    let disks: Vec<String> = match &vm {
        Some(vm) => vm.managed_disk_ids(),
        None => noted_ids(run, LEFTOVER_DISKS),
    }
    .into_iter()
    .filter(|d| !contains(&primary_disks, d) && !contains(&named_by_item, d))
    .collect();
    let public_ips = match run.fence.noted(LEFTOVER_PUBLIC_IPS) {
        Some(_) => noted_ids(run, LEFTOVER_PUBLIC_IPS),
        None => {
            let mut ips = Vec::new();
            for nic in &nics {
                if let Some(found) = asr.get_nic(nic).await.map_err(Failure::asr(Phase::Cleanup))? {
                    ips.extend(found.public_ip_ids());
                }
            }
            ips
        }
    };
    let found = Leftovers { vm: vm.as_ref().map(|_| vm_id.clone()), nics, public_ips, disks };
    if found.is_empty() {
        run.fence.step_done(LEFTOVERS).await?;
        return Ok(format!("nothing left in {region}: {vm_id} does not exist"));
    }
    let what = found.describe();
    if let Some(vm) = &vm
        && (!vm.uses_managed_disks() || !item.is_managed())
        && !options.purge_unmanaged
    {
        run.fence.step_done(LEFTOVERS).await?;
        return Ok(format!("kept {what} in {region}: unmanaged disks (purge not requested)"));
    }
    if !options.remove_leftovers {
        run.fence.step_done(LEFTOVERS).await?;
        return Ok(format!("would remove {what} in {region} (removing leftovers not requested); removed nothing"));
    }
    if vm.is_some() {
        if run.fence.noted(LEFTOVER_NICS).is_none() {
            let notes = [
                (LEFTOVER_NICS, found.nics.join(" ")),
                (LEFTOVER_DISKS, found.disks.join(" ")),
                (LEFTOVER_PUBLIC_IPS, found.public_ips.join(" ")),
            ];
            run.fence.note_all(&notes).await?;
        }
        run.delete(Phase::Cleanup, &vm_id).await?;
    }
    // After the VM: Azure refuses to delete a NIC a VM still uses, a public IP a NIC still
    // uses, a disk a VM still uses.
    for nic in &found.nics {
        run.delete(Phase::Cleanup, nic).await?;
    }
    let mut kept = Vec::new();
    for ip in &found.public_ips {
        match asr.get_public_ip(ip).await.map_err(Failure::asr(Phase::Cleanup))? {
            Some(p) if p.properties.ip_configuration.as_ref().is_some_and(|c| c.id.is_some()) => {
                kept.push(format!(
                    "public IP {ip} (still associated with {})",
                    p.properties.ip_configuration.and_then(|c| c.id).unwrap_or_default()
                ));
            }
            _ => run.delete(Phase::Cleanup, ip).await?,
        }
    }
    for disk in &found.disks {
        match asr.get_disk(disk).await.map_err(Failure::asr(Phase::Cleanup))? {
            Some(d) if d.managed_by.as_deref().is_some_and(|m| !m.is_empty()) => {
                kept.push(format!("disk {disk} (attached to {})", d.managed_by.unwrap_or_default()));
            }
            _ => run.delete(Phase::Cleanup, disk).await?,
        }
    }
    run.fence.step_done(LEFTOVERS).await?;
    let kept = if kept.is_empty() { "kept nothing".to_owned() } else { format!("kept {}", kept.join(", ")) };
    Ok(format!("removed {what} in {region}; {kept}"))
}

/// Disables replication (attaching to a job an earlier delivery started); returns the job.
async fn disable(run: &mut CommandRun, item: Option<&ProtectedItem>) -> Result<String, Failure> {
    if run.fence.is_done(DISABLE) {
        return Ok(run.recorded_job(DISABLE).unwrap_or_default());
    }
    let asr = run.vault.asr.clone();
    let job = match (run.recorded_job(DISABLE), item) {
        (Some(job), _) => Some(job),
        (None, Some(item)) => {
            let seen = || in_azure(Mutation::Disable, item, item);
            match run.begin(DISABLE, Phase::Cleanup, item, Mutation::Disable, seen).await? {
                Begin::Attach(job) => Some(job),
                Begin::Done => None,
                Begin::Send(ticket) => {
                    let submission =
                        asr.disable_replication(item, ticket.sending()).await.map_err(Failure::asr(Phase::Cleanup))?;
                    run.record(DISABLE, Phase::Cleanup, submission, item, Mutation::Disable).await?
                }
            }
        }
        (None, None) => return Err(Failure::Transient("no disable job to attach to; will look again".into())),
    };
    if let Some(j) = &job {
        run.wait_state(Phase::Cleanup, j).await?;
    }
    run.fence.step_done(DISABLE).await?;
    Ok(job.unwrap_or_default())
}

/// Ends a delivery that resumes at disabling replication.
async fn finish_disable(run: &mut CommandRun) -> Result<&'static str, Failure> {
    let job = disable(run, None).await?;
    let reason = "leftovers were settled by an earlier attempt of this command; replication disabled".to_owned();
    // The item may be gone: no VM is named, but what was deleted is in the fence.
    succeeded(run, reason, job, None).await?;
    Ok("succeeded")
}

#[cfg(test)]
mod tests {
    use tern_asr::model::{
        CurrentScenario, InstanceView, InstanceViewStatus, ProtectedItemProperties, VirtualMachineProperties,
    };

    use super::*;

    fn item(state: &str, location: &str, scenario: Option<(&str, &str)>) -> ProtectedItem {
        ProtectedItem {
            id: "/x/replicationProtectedItems/vm-00001".into(),
            name: "vm-00001".into(),
            properties: ProtectedItemProperties {
                friendly_name: Some("vm-00001".into()),
                protection_state: Some(state.into()),
                active_location: Some(location.into()),
                current_scenario: Some(match scenario {
                    Some((name, job)) => CurrentScenario {
                        scenario_name: Some(name.into()),
                        job_id: Some(format!("/v/replicationJobs/{job}")),
                        start_time: None,
                    },
                    None => CurrentScenario {
                        scenario_name: Some("None".into()),
                        job_id: Some("/v/replicationJobs/None".into()),
                        start_time: None,
                    },
                }),
                ..Default::default()
            },
        }
    }

    fn vm(power: &str) -> VirtualMachine {
        VirtualMachine {
            id: "/s/rg-app/vm-00001".into(),
            name: "vm-00001".into(),
            properties: VirtualMachineProperties {
                instance_view: Some(InstanceView {
                    statuses: vec![InstanceViewStatus {
                        code: Some(format!("PowerState/{power}")),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_an_idle_protected_item_active_in_its_primary_counts_as_reprotected() {
        assert!(check_reprotected(&item("Protected", "Primary", None)).is_ok());
        let committed = check_reprotected(&item("UnplannedFailoverCommitted", "Recovery", None)).unwrap_err();
        assert!(
            committed.contains("\"UnplannedFailoverCommitted\"") && committed.contains("\"Recovery\""),
            "{committed}"
        );
        let syncing = check_reprotected(&item("Protected", "Primary", Some(("SwitchProtection", "j1")))).unwrap_err();
        assert!(syncing.contains("SwitchProtection is still running") && syncing.contains("j1"), "{syncing}");
        assert!(check_reprotected(&item("Protected", "Recovery", None)).is_err());
    }

    #[test]
    fn the_primary_vm_must_exist_and_run() {
        assert!(check_primary_running("id", "eastus", Some(&vm("running"))).is_ok());
        let stopped = check_primary_running("id", "eastus", Some(&vm("deallocated"))).unwrap_err();
        assert!(stopped.contains("id is deallocated") && stopped.contains("eastus"), "{stopped}");
        let gone = check_primary_running("id", "eastus", None).unwrap_err();
        assert!(gone.contains("does not exist"), "{gone}");
        let unknown = check_primary_running("id", "eastus", Some(&VirtualMachine::default())).unwrap_err();
        assert!(unknown.contains("unknown power state"), "{unknown}");
    }

    #[test]
    fn leftovers_are_named_and_found() {
        let l = |vm: Option<&str>, nics: &[&str], ips: &[&str], disks: &[&str]| Leftovers {
            vm: vm.map(str::to_owned),
            nics: nics.iter().map(|s| (*s).to_owned()).collect(),
            public_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            disks: disks.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(l(Some("v"), &["n"], &[], &[]).describe(), "VM v and NIC n");
        assert_eq!(l(None, &["n1", "n2"], &[], &[]).describe(), "NICs n1, n2");
        assert_eq!(l(Some("v"), &["n"], &["p"], &["d1", "d2"]).describe(), "VM v, NIC n, public IP p and disks d1, d2");
        let a2a = A2AReplicationDetails {
            recovery_azure_resource_group_id: Some("/subscriptions/s/resourceGroups/rg-app-asr".into()),
            recovery_azure_vm_name: Some("vm-00001".into()),
            ..Default::default()
        };
        assert_eq!(
            leftover_vm_id(&a2a).as_deref(),
            Some("/subscriptions/s/resourceGroups/rg-app-asr/providers/Microsoft.Compute/virtualMachines/vm-00001")
        );
        assert!(same_region("West US", "westus") && !same_region("eastus", "westus"));
    }
}
