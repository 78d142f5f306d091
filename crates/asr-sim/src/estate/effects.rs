//! What a job does to the estate when the clock passes its moments: re-homing a reprotected
//! item, a job's end (per effect), and the two jobs that complete an initial replication.

use super::resources::vm_disks;
use super::{Estate, Step};
use crate::clock::SimTime;
use crate::faults::Operation;
use crate::item::{Item, ItemState, Replication};
use crate::job::Effect;

impl Estate {
    pub(super) fn rehome(&mut self, job_name: &str, at: SimTime) {
        let Some(job) = self.jobs.get(job_name) else { return };
        if job.cancelled_at.is_some() || job.finished {
            return;
        }
        let Some(key) = job.item.clone() else { return };
        let until = job.ir_end.unwrap_or(job.ends).max(at);
        let settings = match &job.effect {
            Effect::Reprotect { disks } => disks.clone(),
            _ => vec![],
        };
        let Some(item) = self.items.get_mut(&key) else { return };
        let old = item.primary;
        self.members[old].remove(&key);
        item.primary = 1 - old;
        item.state = ItemState::Reprotecting;
        item.points_since = None;
        item.points_until = None;
        // Per-disk progress runs from now to the end of initial replication.
        item.replication = Some(Replication { since: at, until, failed: None });
        for s in settings {
            if let Some(d) = item.disks.get_mut(s.index) {
                d.staging_account = Some(s.staging_account);
                d.recovery_account = s.recovery_account;
                d.replica_type = s.replica_type;
                d.target_type = s.target_type;
            }
        }
        self.members[item.primary].insert(key.clone());
        // The VM left in the new recovery region is powered off while its disks are reused
        // (failback tutorial), and the replicas of the VM that runs now are made there.
        let (rg, vm_name) = (self.regions[old].app_rg.clone(), item.vm_name.clone());
        if let Some(vm) = self.vms.get_mut(&self.scope.vm_id(&rg, &vm_name).to_ascii_lowercase()) {
            vm.power = "deallocated";
        }
        self.create_replicas(&key);
    }

    pub(super) fn finish(&mut self, job_name: &str, at: SimTime) {
        let Some(job) = self.jobs.get_mut(job_name) else { return };
        if job.finished {
            return;
        }
        job.finished = true;
        self.active_jobs.remove(job_name);
        let job = job.clone();
        let failed = job.failure.is_some();
        let key = job.item.clone();
        let item_exists = key.as_ref().is_some_and(|k| self.items.contains_key(k));
        if let (Some(key), true) = (&key, item_exists) {
            let item = self.items.get_mut(key).expect("checked");
            if item.busy.as_ref().is_some_and(|b| b.job == job.name) {
                item.busy = None;
            }
        }
        match (&job.effect, key, item_exists) {
            (Effect::Failover { point, shutdown_requested, shutdown_failed }, Some(key), true) => {
                if failed {
                    self.items.get_mut(&key).expect("exists").state = ItemState::FailoverFailed;
                    return;
                }
                // The replicas become the disks of the VM the failover creates.
                self.remove_replicas(&key);
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::FailedOver;
                item.last_failover = Some(at);
                item.failover_point = Some(point.0.clone());
                item.points_until = Some(at);
                let (src, dst, vm, managed) = (item.primary, item.recovery(), item.vm_name.clone(), item.managed);
                let ip = item.private_ips[dst].clone();
                let disks = vm_disks(&item.disks, |d| d.name.clone());
                if *shutdown_requested && !*shutdown_failed {
                    let id = self.scope.vm_id(&self.regions[src].app_rg, &vm).to_ascii_lowercase();
                    if let Some(v) = self.vms.get_mut(&id) {
                        v.power = "deallocated";
                    }
                }
                self.create_vm(dst, &vm, managed, disks, None, ip);
            }
            (Effect::Commit, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Committed;
                item.points_since = None;
                item.points_until = None;
            }
            (Effect::ApplyRecoveryPoint { point }, Some(key), true) if !failed => {
                self.items.get_mut(&key).expect("exists").failover_point = Some(point.clone());
            }
            (Effect::CancelFailover, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Protected;
                item.points_until = None;
                let (src, dst, vm) = (item.primary, item.recovery(), item.vm_name.clone());
                self.drop_vm(&self.scope.vm_id(&self.regions[dst].app_rg, &vm).to_ascii_lowercase());
                let id = self.scope.vm_id(&self.regions[src].app_rg, &vm).to_ascii_lowercase();
                if let Some(v) = self.vms.get_mut(&id) {
                    v.power = "running";
                }
                self.create_replicas(&key);
            }
            (Effect::Reprotect { .. }, Some(key), true) => {
                if failed {
                    return; // failed before re-homing: still committed, may be retried
                }
                // The job succeeded; the VM is not protected yet: initial replication goes on
                // (excerpt entries 41–143), then the two completion jobs.
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::InitialReplication;
                item.last_reprotect = Some(at);
                item.unhealthy = false;
                item.points_since = None;
                let until = item.replication.as_ref().map_or(at, |r| r.until).max(at);
                let (recovery, vm, managed, lifecycle) =
                    (item.recovery(), item.vm_name.clone(), item.managed, item.lifecycle_id.clone());
                if self.cfg.reprotect_removes_source_vm && managed {
                    let id = self.scope.vm_id(&self.regions[recovery].app_rg, &vm).to_ascii_lowercase();
                    self.drop_vm(&id);
                }
                self.schedule(until, Step::IrEnd(lifecycle));
            }
            (Effect::IrCompletion { secondary: false }, Some(key), true) => {
                let item = &self.items[&key];
                if item.state == ItemState::InitialReplication && !item.replication_failed() {
                    let gap = self.cfg.effective_durations().ir_completion_gap.pick(self.guids.unit());
                    let lifecycle = item.lifecycle_id.clone();
                    self.schedule(at + gap, Step::SecondaryIr(lifecycle));
                }
            }
            (Effect::IrCompletion { secondary: true }, Some(key), true) => {
                let item = self.items.get_mut(&key).expect("exists");
                if item.state != ItemState::InitialReplication {
                    return;
                }
                match &job.failure {
                    Some(f) => {
                        if let Some(r) = item.replication.as_mut() {
                            r.failed = Some(f.clone());
                        }
                    }
                    None => protect(item, at),
                }
            }
            (Effect::TestFailover { network }, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::TestFailedOver;
                item.last_test_failover = Some(at);
                item.test_network = network.clone();
                let (dst, vm, managed) = (item.recovery(), format!("{}-test", item.vm_name), item.managed);
                // The test network is isolated: the test VM takes the address it would have.
                let ip = item.private_ips[dst].clone();
                let boots = !self.cfg.faults.test_vm_fails_to_boot(&item.vm_name);
                let disks = vm_disks(&item.disks, |d| format!("{}-ASRtest", d.name));
                let id = self.create_vm(dst, &vm, managed, disks, network.clone(), ip);
                if let (false, Some(v)) = (boots, self.vms.get_mut(&id)) {
                    v.power = "stopped";
                }
            }
            (Effect::TestFailoverCleanup, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Protected;
                item.test_network = None;
                let id = self
                    .scope
                    .vm_id(&self.regions[item.recovery()].app_rg, &format!("{}-test", item.vm_name))
                    .to_ascii_lowercase();
                self.drop_vm(&id);
            }
            (Effect::Repair, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.unhealthy = false;
                if item.state == ItemState::InitialReplication {
                    // A resync after a failed completion ends with the disks protected.
                    protect(item, at);
                }
            }
            (Effect::Disable, Some(key), true) if !failed => {
                // Disabling cleans up what replication created (failback tutorial); a purge does not.
                self.remove_replicas(&key);
                self.remove_item(&key);
            }
            (Effect::DeleteResource { id }, _, _) if !failed => self.delete_now(id),
            (Effect::DeleteResource { id }, _, _) => {
                // A failed delete leaves the resource as it was.
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.deleting = false;
                } else if let Some(nic) = self.nics.get_mut(id) {
                    nic.deleting = false;
                } else if let Some(d) = self.disks.get_mut(id) {
                    d.deleting = false;
                } else if let Some(p) = self.public_ips.get_mut(id) {
                    p.deleting = false;
                }
            }
            (Effect::PlanParent, _, _) => {
                if let Some(plan) = job.plan.as_ref().and_then(|p| self.plans.get_mut(p)) {
                    plan.busy = None;
                }
            }
            _ => {}
        }
    }

    /// The end of an item's initial replication: `PrimaryIrCompletion` starts
    /// (excerpt entry 122: "Finalize protection on the primary virtual machine", ~2 s).
    pub(super) fn primary_ir_completion(&mut self, lifecycle: &str, at: SimTime) {
        let Some(key) = self.by_lifecycle.get(lifecycle).cloned() else { return };
        if self.items[&key].state != ItemState::InitialReplication || self.items[&key].replication_failed() {
            return;
        }
        let total = self.cfg.effective_durations().ir_completion.pick(self.guids.unit());
        let job = self.plan_job(
            &key,
            Operation::IrCompletion,
            "PrimaryIrCompletion",
            "Finalize protection on the primary virtual machine",
            at,
            &[
                ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication", 0.6),
                ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states", 0.4),
            ],
            None,
            Effect::IrCompletion { secondary: false },
            total,
        );
        self.insert_internal_job(job);
    }

    /// `SecondaryIrCompletion` starts, with the four tasks recorded in excerpt entry 142; the
    /// item is protected when it succeeds (entries 143–144). Fault target `ir_completion`.
    pub(super) fn secondary_ir_completion(&mut self, lifecycle: &str, at: SimTime) {
        let Some(key) = self.by_lifecycle.get(lifecycle).cloned() else { return };
        if self.items[&key].state != ItemState::InitialReplication || self.items[&key].replication_failed() {
            return;
        }
        let vm = self.items[&key].vm_name.clone();
        let total = self.cfg.effective_durations().ir_completion.pick(self.guids.unit());
        let failure = self.fault_for(Operation::IrCompletion, &vm).map(|(_, f)| (1, f));
        let job = self.plan_job(
            &key,
            Operation::IrCompletion,
            "SecondaryIrCompletion",
            "Finalize protection on the recovery virtual machine",
            at,
            &[
                ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication", 0.1),
                (
                    "ReplicaConfigurationPreflightChecksTask",
                    "FailWorkflowOnIRFailureTask",
                    "Finalizing initial replication",
                    0.1,
                ),
                (
                    "ReplicaConfigurationTask",
                    "ReplicaConfiguration",
                    "Complete network and post-replication configuration",
                    0.6,
                ),
                ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states", 0.2),
            ],
            failure,
            Effect::IrCompletion { secondary: true },
            total,
        );
        self.insert_internal_job(job);
    }
}

/// The end of an initial replication (or of a repair after it failed): the disks are
/// protected, recovery points start, the item is Protected with its full operations
/// (excerpt entries 143–144).
fn protect(item: &mut Item, at: SimTime) {
    item.state = ItemState::Protected;
    item.replication = None;
    item.unhealthy = false;
    item.points_since = Some(at);
    item.points_until = None;
    for d in &mut item.disks {
        d.protected_since = d.protected_since.max(at);
    }
}
