//! Operations on one protected item: failover, apply recovery point, switch protection and
//! reprotect, test failover, commit, cancel failover, test failover cleanup, repair, disable
//! and purge, each validated as ASR validates it before its job is planned.

use super::{Accepted, Estate, POLICY, Refusal, TaskSpec};
use crate::clock::SimTime;
use crate::faults::Operation;
use crate::item::{Busy, Item, ItemState, Point, vhd_uri};
use crate::job::{AsrFault, DiskSettings, Effect, FinalResult, Job, TaskOutcome};
use crate::validate::{self, ReprotectWorld};
use crate::wire::{FailoverInput, ReverseReplicationInput, SwitchProtectionInput};

impl Estate {
    fn busy_check(&self, key: &str, operation: &str, allowed_op: &str) -> Result<(), Refusal> {
        let item = &self.items[key];
        if let Some(b) = &item.busy {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!(
                    "Another operation ({}) is in progress on protected item '{}' (job {}). '{operation}' cannot start until it finishes.",
                    b.scenario, item.name, b.job
                ),
                "AnotherOperationInProgress",
                "Wait for the running job to finish, then retry.",
            ));
        }
        if !item.allows(allowed_op) {
            let (state, _) = item.protection_state();
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!(
                    "The operation '{operation}' is not allowed on protected item '{}' in state '{state}'. Allowed operations: [{}].",
                    item.name,
                    item.allowed_operations().join(", ")
                ),
                "OperationNotAllowedInCurrentState",
                "Check the item's allowedOperations before starting an operation.",
            ));
        }
        Ok(())
    }

    fn mark_busy(&mut self, key: &str, scenario: &'static str, job: &str, since: SimTime) {
        if let Some(item) = self.items.get_mut(key) {
            item.busy = Some(Busy { scenario, job: job.to_owned(), since });
        }
    }

    fn accepted(&mut self, key: &str, job: Job, scenario: &'static str) -> Accepted {
        let created = job.created;
        let location_base = job.location_base.clone();
        let name = self.insert_job(job);
        self.mark_busy(key, scenario, &name, created);
        self.advance();
        Accepted {
            job: name,
            location_base,
            item: Some(self.items.get(key).map(|i| i.name.clone()).unwrap_or_default()),
        }
    }

    /// Resolves the recovery point a failover asks for: a named one (must exist), or
    /// `None` = latest (pending data is processed first, making a new point now).
    fn resolve_point(
        &self,
        item: &Item,
        requested: Option<&str>,
        now: SimTime,
    ) -> Result<(String, SimTime, bool), Refusal> {
        let id = item.id(&self.scope, &self.regions);
        match requested.filter(|s| !s.is_empty()) {
            None => {
                Ok((format!("{id}/recoveryPoints/{}", crate::item::point_name(&item.lifecycle_id, now)), now, true))
            }
            Some(rp) => {
                let name = rp.rsplit('/').next().unwrap_or(rp);
                let point: Option<Point> =
                    item.points(now, &self.cfg.policy).into_iter().find(|p| p.name.eq_ignore_ascii_case(name));
                match point {
                    Some(p) => Ok((format!("{id}/recoveryPoints/{}", p.name), p.time, false)),
                    None => Err(Refusal::new(
                        400,
                        "BadRequest",
                        format!("The recovery point '{rp}' does not exist for protected item '{}'.", item.name),
                        "RecoveryPointNotFound",
                        "List the item's recovery points and choose one of them.",
                    )),
                }
            }
        }
    }

    /// `unplannedFailover` of one item.
    pub fn failover(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &FailoverInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "UnplannedFailover", "UnplannedFailover")?;
        let item = &self.items[&key];
        match input.failover_direction.as_deref() {
            None | Some("PrimaryToRecovery") => {}
            // Absolute reading of the direction: back to the region the VM started in.
            Some("RecoveryToPrimary") if item.primary != item.initial_primary => {}
            Some(other) => {
                return Err(Refusal::bad_request(
                    "properties.failoverDirection",
                    format!("'{other}' does not fail item '{}' over to its recovery region", item.name),
                ));
            }
        }
        let shutdown_requested = match input.source_site_operations.as_deref() {
            None | Some("NotRequired") => false,
            Some("Required") => true,
            Some(other) => {
                return Err(Refusal::bad_request(
                    "properties.sourceSiteOperations",
                    format!("'{other}' is not Required or NotRequired"),
                ));
            }
        };
        let details = input.provider_specific_details.clone().unwrap_or_default();
        if let Some(t) = details.instance_type.as_deref()
            && !t.eq_ignore_ascii_case("A2A")
        {
            return Err(Refusal::bad_request(
                "properties.providerSpecificDetails.instanceType",
                format!("'{t}' does not match the item's provider A2A"),
            ));
        }
        let now = self.now();
        let (point_id, point_time, latest) = self.resolve_point(item, details.recovery_point_id.as_deref(), now)?;
        let vm = item.vm_name.clone();
        let durations = self.cfg.effective_durations();
        let mut total = durations.failover.pick(self.guids.unit());
        if latest {
            total += durations.latest_processing.pick(self.guids.unit());
        }
        if shutdown_requested {
            total += durations.shutdown.pick(self.guids.unit());
        }
        let shutdown_failed = shutdown_requested && self.cfg.faults.shutdown_fails(&vm);
        let mut failure = self.fault_for(Operation::Failover, &vm).map(|(_, f)| (3, f));
        if failure.is_none()
            && let Some(why) = self.capacity_refusal(item.recovery(), &item.vm_size)
        {
            // The VM cannot be created in the target region: ASR's 28031 at "Start failover",
            // Compute's reason in its message (faults.rs describes 28031).
            let message = format!(
                "The virtual machine '{vm}' could not be created in the target region {}: {why}",
                self.regions[item.recovery()].location
            );
            failure = Some((3, crate::job::AsrFault::from_code("28031", Some(&message))));
        }
        // The five tasks with Azure's ids, names and friendly names (excerpt entries 148, 172).
        let tasks: [TaskSpec; 5] = [
            (
                "UnplannedFailoverPreflightChecksTask",
                "VmUfoPrerequisitesCheck",
                "Prerequisites check for failover",
                0.05,
            ),
            (
                "ShutdownVmOnPrimaryForUFO",
                "VmShutdownVmOnPrimary",
                "Shut down the virtual machine",
                if shutdown_requested { 0.2 } else { 0.0 },
            ),
            (
                "PrepareForUnPlannedFailoverTask",
                "VmPrepareForUnPlannedFailover",
                "Synchronizing the latest changes",
                if latest { 0.15 } else { 0.0 },
            ),
            ("FailoverTask", "VmFailover", "Start failover", 0.45),
            ("StartVmOnSecondary", "VmFoStartVmOnSecondary", "Start the replica virtual machine", 0.15),
        ];
        let mut job = self.plan_job(
            &key,
            Operation::Failover,
            "UnplannedFailover",
            "Failover",
            now,
            &tasks,
            failure,
            Effect::Failover { point: (point_id.clone(), point_time), shutdown_requested, shutdown_failed },
            total,
        );
        for t in &mut job.tasks {
            // Skipped tasks are Other/Skipped (excerpt entry 172's sync task).
            if (t.id == "ShutdownVmOnPrimaryForUFO" && !shutdown_requested)
                || (t.id == "PrepareForUnPlannedFailoverTask" && !latest)
            {
                t.outcome = TaskOutcome::Skipped;
            } else if t.id == "ShutdownVmOnPrimaryForUFO" && shutdown_failed {
                t.outcome = TaskOutcome::FailedNonFatal(AsrFault {
                    code: "28041".into(),
                    message: format!(
                        "The virtual machine '{vm}' could not be shut down. Failover continued without shutting it down."
                    ),
                    possible_causes: "The guest did not respond to the shutdown request.".into(),
                    recommended_action: "Shut the source virtual machine down manually if it is still running.".into(),
                });
            }
        }
        job.with_information = shutdown_failed;
        job.failover_details = Some((self.items[&key].name.clone(), vm, point_id, point_time));
        Ok(self.accepted(&key, job, "UnplannedFailover"))
    }

    /// `applyRecoveryPoint`.
    pub fn apply_recovery_point(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        point: Option<&str>,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "ChangePit", "ChangePit")?;
        let point = point
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Refusal::bad_request("properties.recoveryPointId", "is required"))?;
        let now = self.now();
        let (point_id, _, _) = self.resolve_point(&self.items[&key], Some(point), now)?;
        let total = self.cfg.effective_durations().apply_recovery_point.pick(self.guids.unit());
        let vm = self.items[&key].vm_name.clone();
        let failure = self.fault_for(Operation::ApplyRecoveryPoint, &vm).map(|(_, f)| (1, f));
        let job = self.plan_job(
            &key,
            Operation::ApplyRecoveryPoint,
            "ChangePit",
            "Change recovery point",
            now,
            &[
                ("ChangePitPreflightTask", "ChangePitPreflightTask", "Prerequisite check", 0.1),
                ("ChangePitTask", "ChangePitTask", "Changing recovery point", 0.9),
            ],
            failure,
            Effect::ApplyRecoveryPoint { point: point_id },
            total,
        );
        Ok(self.accepted(&key, job, "ChangePit"))
    }

    /// What a reprotect of `item` is checked against (see `validate`): the VM as it runs now,
    /// the vault's policies, the storage accounts, and the one resource group the simulator
    /// recovers VMs to.
    pub fn reprotect_world(&self, item: &Item) -> ReprotectWorld {
        let running = item.running_region();
        let target = 1 - running;
        let (run, here) = (&self.regions[running], &self.regions[item.primary]);
        ReprotectWorld {
            container_id: self.scope.container_id(&here.fabric, &here.container),
            policy_ids: vec![self.scope.policy_id(POLICY)],
            managed: item.managed,
            disks: item
                .disks
                .iter()
                .map(|d| {
                    if item.managed {
                        self.scope.disk_id(&run.app_rg, &d.name)
                    } else {
                        vhd_uri(&run.location, &d.name)
                    }
                })
                .collect(),
            storage_accounts: self.own_storage().into_iter().chain(self.sibling_storage.iter().cloned()).collect(),
            running_location: run.location.clone(),
            target_location: self.regions[target].location.clone(),
            recovery_resource_groups: vec![self.scope.rg_id(&self.regions[target].app_rg)],
        }
    }

    /// `switchprotection` on a container: A2A reprotect of the named item, validated as Azure
    /// and PowerShell build it (reprotect entries 13–16; `validate::switch_protection`).
    pub fn switch_protection(
        &mut self,
        fabric: &str,
        container: &str,
        input: &SwitchProtectionInput,
    ) -> Result<Accepted, Refusal> {
        let name = input
            .replication_protected_item_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Refusal::bad_request("properties.replicationProtectedItemName", "is required"))?;
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "SwitchProtection", "SwitchProtection")?;
        let choices = validate::switch_protection(input, &self.reprotect_world(&self.items[&key]))?;
        self.reprotect(&key, choices, true)
    }

    /// Generic `reProtect` on an item: refused for managed-disk items (A2AReprotectInput has no
    /// vmManagedDisks, asr-api.md §3.3(b)); unmanaged ones are validated like switch protection.
    pub fn reverse_replicate(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &ReverseReplicationInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "SwitchProtection", "SwitchProtection")?;
        let choices = validate::reprotect(input, &self.reprotect_world(&self.items[&key]))?;
        self.reprotect(&key, choices, false)
    }

    /// Plans a reprotect job of `key` starting at `start`: its tasks as recorded (reprotect
    /// entry 43), the re-home moment (after the requirements are known), and the end of the
    /// initial replication that follows it.
    pub(super) fn plan_reprotect_job(
        &mut self,
        key: &str,
        disks: Vec<DiskSettings>,
        start: SimTime,
        total: std::time::Duration,
        faults_apply: bool,
    ) -> Job {
        let item = &self.items[key];
        let vm = item.vm_name.clone();
        let old_region = item.primary;
        let durations = self.cfg.effective_durations();
        let failure = if faults_apply { self.fault_for(Operation::Reprotect, &vm).map(|(_, f)| (0, f)) } else { None };
        let tasks: [TaskSpec; 5] = [
            (
                "SwitchReplicationGroupProtectionPreflightTask",
                "SwitchReplicationGroupProtectionPreflightTask",
                "Prerequisite check",
                0.04,
            ),
            ("CommitFailoverTask", "VmCommitFailover", "Committing failover", 0.0),
            ("DiscoverReplicaTask", "DiscoverReplicaTask", "Discovering replica virtual machine", 0.03),
            (
                "GetSwitchProtectionRequirementsTask",
                "GetSwitchProtectionRequirementsTask",
                "Getting reprotection requirements",
                0.03,
            ),
            ("ProtectReplicaTask", "ProtectReplicaTask", "Reprotecting virtual machine (1)", 0.9),
        ];
        let mut job = self.plan_job(
            key,
            Operation::Reprotect,
            "SwitchReplicationGroupProtection",
            "Reprotect",
            start,
            &tasks,
            failure,
            Effect::Reprotect { disks },
            total,
        );
        if let Some(t) = job.tasks.get_mut(1) {
            t.outcome = TaskOutcome::Skipped;
        }
        if job.failure.is_none() {
            // The item moves to its new container once the requirements are known.
            let rehome = job.tasks.get(3).map_or(job.starts, |t| t.end);
            job.rehome_at = Some(rehome);
            let nr = &self.regions[1 - old_region];
            job.new_item_id = Some(self.scope.item_id(&nr.fabric, &nr.container, &self.items[key].name).replacen(
                "/Subscriptions/",
                "/subscriptions/",
                1,
            ));
            // Initial replication goes on after the job (excerpt entries 41–122).
            job.ir_end = Some(job.ends + durations.initial_replication.pick(self.guids.unit()));
        }
        job
    }

    fn reprotect(
        &mut self,
        key: &str,
        choices: Vec<validate::DiskChoice>,
        container_result: bool,
    ) -> Result<Accepted, Refusal> {
        let now = self.now();
        let old_region = self.items[key].primary;
        let total = self.cfg.effective_durations().reprotect.pick(self.guids.unit());
        let disks = choices
            .into_iter()
            .map(|c| DiskSettings {
                index: c.index,
                staging_account: c.staging_account,
                recovery_account: c.recovery_account,
                replica_type: c.replica_type,
                target_type: c.target_type,
            })
            .collect();
        let mut job = self.plan_reprotect_job(key, disks, now, total, true);
        if container_result {
            let r = &self.regions[old_region];
            job.location_base = self.scope.container_id(&r.fabric, &r.container);
            job.result = FinalResult::Container { region: 1 - old_region };
        }
        Ok(self.accepted(key, job, "SwitchProtection"))
    }

    /// `testFailover`.
    pub fn test_failover(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &FailoverInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "TestFailover", "TestFailover")?;
        let network = match input.network_type.as_deref() {
            Some("VmNetworkAsInput") | None if input.network_id.is_some() => input.network_id.clone(),
            Some("VmNetworkAsInput") => {
                return Err(Refusal::bad_request(
                    "properties.networkId",
                    "is required with networkType VmNetworkAsInput",
                ));
            }
            _ => None,
        };
        let now = self.now();
        let details = input.provider_specific_details.clone().unwrap_or_default();
        let (point_id, point_time, _) = {
            let item = &self.items[&key];
            match details.recovery_point_id.as_deref().filter(|s| !s.is_empty()) {
                Some(rp) => self.resolve_point(item, Some(rp), now)?,
                None => {
                    let latest = item.points(now, &self.cfg.policy).pop();
                    let id = item.id(&self.scope, &self.regions);
                    latest.map_or_else(
                        || self.resolve_point(item, None, now),
                        |p| Ok((format!("{id}/recoveryPoints/{}", p.name), p.time, false)),
                    )?
                }
            }
        };
        let vm = self.items[&key].vm_name.clone();
        let total = self.cfg.effective_durations().test_failover.pick(self.guids.unit());
        let failure = self.fault_for(Operation::TestFailover, &vm).map(|(_, f)| (1, f));
        let mut job = self.plan_job(
            &key,
            Operation::TestFailover,
            "TestFailover",
            "Test failover",
            now,
            &[
                (
                    "TestFailoverPreflightTask",
                    "TestFailoverPreflightTask",
                    "Prerequisites check for test failover",
                    0.1,
                ),
                ("CreateTestVmTask", "CreateTestVmTask", "Create test virtual machine", 0.6),
                ("StartTestVmTask", "StartTestVmTask", "Start the virtual machine", 0.3),
            ],
            failure,
            Effect::TestFailover { network },
            total,
        );
        job.failover_details = Some((self.items[&key].name.clone(), vm, point_id, point_time));
        Ok(self.accepted(&key, job, "TestFailover"))
    }

    /// Starts one of the operations that only need the item, its state and a job.
    fn simple_operation(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        op: SimpleOp,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, op.allowed, op.allowed)?;
        let vm = self.items[&key].vm_name.clone();
        let total = (op.duration)(&self.cfg.effective_durations()).pick(self.guids.unit());
        let failure = self.fault_for(op.operation, &vm).map(|(_, f)| (op.failing_task, f));
        let mut job = self.plan_job(
            &key,
            op.operation,
            op.scenario,
            op.friendly,
            self.now(),
            op.tasks,
            failure,
            op.effect,
            total,
        );
        if op.no_content {
            job.result = FinalResult::Nothing;
        }
        Ok(self.accepted(&key, job, op.allowed))
    }

    /// `failoverCommit`.
    pub fn commit(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "Commit",
                operation: Operation::Commit,
                scenario: "CommitFailover",
                friendly: "Commit",
                // Task ids are GUIDs, names as recorded (excerpt entry 175).
                tasks: &[
                    ("", "VmCommitPrerequisitesCheck", "Prerequisite check", 0.2),
                    ("", "VmCommit", "Commit", 0.8),
                ],
                failing_task: 1,
                effect: Effect::Commit,
                duration: |d| d.commit,
                no_content: false,
            },
        )
    }

    /// `failoverCancel`.
    pub fn cancel_failover(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "CancelFailover",
                operation: Operation::CancelFailover,
                scenario: "CancelFailover",
                friendly: "Cancel failover",
                tasks: &[("CancelFailoverTask", "CancelFailoverTask", "Cancelling failover", 1.0)],
                failing_task: 0,
                effect: Effect::CancelFailover,
                duration: |d| d.cancel_failover,
                no_content: false,
            },
        )
    }

    /// `testFailoverCleanup`.
    pub fn test_failover_cleanup(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "TestFailoverCleanup",
                operation: Operation::TestFailoverCleanup,
                scenario: "TestFailoverCleanup",
                friendly: "Cleanup test failover",
                tasks: &[("DeleteTestVmTask", "DeleteTestVmTask", "Delete the test virtual machine", 1.0)],
                failing_task: 0,
                effect: Effect::TestFailoverCleanup,
                duration: |d| d.test_failover_cleanup,
                no_content: false,
            },
        )
    }

    /// `repairReplication`.
    pub fn repair(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "RepairReplication",
                operation: Operation::Repair,
                scenario: "Resync",
                friendly: "Resynchronize",
                tasks: &[("ResyncTask", "ResyncTask", "Resynchronizing data", 1.0)],
                failing_task: 0,
                effect: Effect::Repair,
                duration: |d| d.repair,
                no_content: false,
            },
        )
    }

    /// `remove`: disable replication; the item leaves the vault when the job ends.
    pub fn disable(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "DisableProtection",
                operation: Operation::DisableProtection,
                scenario: "DisableDr",
                friendly: "Disable replication",
                tasks: &[
                    ("DisableProtectionTask", "DisableProtectionTask", "Disabling protection", 0.7),
                    ("CleanupTask", "CleanupTask", "Cleaning up replication resources", 0.3),
                ],
                failing_task: 0,
                effect: Effect::Disable,
                duration: |d| d.disable,
                no_content: true,
            },
        )
    }

    /// `DELETE` of an item: purge it from the vault now, without cleanup.
    pub fn purge(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        if let Some(b) = &self.items[&key].busy
            && !matches!(self.items[&key].state, ItemState::Reprotecting)
        {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!("Another operation ({}) is in progress on protected item '{name}'.", b.scenario),
                "AnotherOperationInProgress",
                "Wait for the running job to finish, then retry.",
            ));
        }
        let mut job = self.plan_job(
            &key,
            Operation::Purge,
            "PurgeProtection",
            "Delete replicated item",
            self.now(),
            &[("PurgeTask", "PurgeTask", "Removing the item from the vault", 1.0)],
            None,
            Effect::Purge,
            std::time::Duration::ZERO,
        );
        job.result = FinalResult::Nothing;
        job.item = None;
        let name = self.items[&key].name.clone();
        let (vm, region) = (self.items[&key].vm_name.clone(), self.items[&key].primary);
        self.record_delete("protected_item", name.to_ascii_lowercase(), region, Some(vm));
        self.remove_item(&key);
        let location_base = job.location_base.clone();
        let job = self.insert_job(job);
        self.advance();
        Ok(Accepted { job, location_base, item: Some(name) })
    }
}

/// The shape of an operation started by `Estate::simple_operation`.
struct SimpleOp {
    /// The `allowedOperations` value that gates it (also its `currentScenario`).
    allowed: &'static str,
    operation: Operation,
    scenario: &'static str,
    friendly: &'static str,
    tasks: &'static [TaskSpec],
    /// Which task fails when a fault is injected.
    failing_task: usize,
    effect: Effect,
    duration: fn(&crate::config::Durations) -> crate::config::Span,
    /// The Location URL ends with 204 (the item is gone).
    no_content: bool,
}
