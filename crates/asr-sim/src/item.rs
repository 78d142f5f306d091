//! A replication protected item: one replicated VM, its state machine and its rendering.
//!
//! States follow the A2A lifecycle (Protected → failed over → committed → reprotecting →
//! Protected the other way). `allowedOperations` is derived from the state, the way ASR
//! gates what a client may do next.

use serde_json::{Map, Value, json};
use time::Duration;

use crate::clock::{self, SimTime};
use crate::config::PolicyConfig;
use crate::ids::{Scope, guid_of};
use crate::wire::{
    CurrentScenario, HealthError, ManagedDisk, ProtectedItemProperties, ProviderDetails, RecoveryPointDetails,
    RecoveryPointProperties, Resource, UnmanagedDisk,
};

/// A region of the estate: one fabric, one container, one application resource group.
#[derive(Clone, Debug)]
pub struct Region {
    /// Azure location, e.g. "eastus".
    pub location: String,
    /// Display name, e.g. "East US".
    pub friendly: String,
    /// Fabric name: `asr-a2a-default-<location>`.
    pub fabric: String,
    /// Container name: `asr-a2a-default-<location>-container`.
    pub container: String,
    /// Resource group the VMs of this region live in.
    pub app_rg: String,
}

/// Where an item is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemState {
    /// Replicating; running in its primary region.
    Protected,
    /// A failover failed; still running in the primary region.
    FailoverFailed,
    /// Failed over, commit pending.
    FailedOver,
    /// Failover committed: running in the recovery region, not replicating.
    Committed,
    /// Reprotect running: re-homed, syncing.
    Reprotecting,
    /// The reprotect job succeeded, initial replication goes on (then `PrimaryIrCompletion` and
    /// `SecondaryIrCompletion`, A2AFailoverCommit-excerpt entries 122–143), or it failed at the
    /// end.
    InitialReplication,
    /// A test failover is up and waits for cleanup.
    TestFailedOver,
}

/// An initial replication: the sync after a reprotect, from the re-home moment to its end.
#[derive(Clone, Debug, PartialEq)]
pub struct Replication {
    /// When it started (the item was re-homed).
    pub since: SimTime,
    /// When all data is replicated (the `PrimaryIrCompletion` job starts then).
    pub until: SimTime,
    /// The `SecondaryIrCompletion` job failed with this: replication health is critical until a
    /// repair.
    pub failed: Option<crate::job::AsrFault>,
}

impl Replication {
    /// Fraction replicated at `now`, 0..=1.
    pub fn progress(&self, now: SimTime) -> f64 {
        let total = (self.until - self.since).as_seconds_f64();
        if total <= 0.0 {
            return 1.0;
        }
        ((now - self.since).as_seconds_f64() / total).clamp(0.0, 1.0)
    }
}

/// One disk of a VM.
#[derive(Clone, Debug)]
pub struct Disk {
    /// Disk name.
    pub name: String,
    /// OS disk or data disk.
    pub os: bool,
    /// Size.
    pub bytes: i64,
    /// When it started being replicated: older recovery points do not cover it.
    pub protected_since: SimTime,
    /// `primaryStagingAzureStorageAccountId` a reprotect named (else the region's cache account).
    pub staging_account: Option<String>,
    /// `recoveryAzureStorageAccountId` a reprotect named (unmanaged disks).
    pub recovery_account: Option<String>,
    /// `recoveryReplicaDiskAccountType` a reprotect named (else Premium_LRS).
    pub replica_type: Option<String>,
    /// `recoveryTargetDiskAccountType` a reprotect named (else Premium_LRS).
    pub target_type: Option<String>,
}

impl Disk {
    /// A disk replicated since `since`, with default settings.
    pub fn new(name: String, os: bool, bytes: i64, since: SimTime) -> Self {
        Self {
            name,
            os,
            bytes,
            protected_since: since,
            staging_account: None,
            recovery_account: None,
            replica_type: None,
            target_type: None,
        }
    }

    /// The managed disk SKU of the replica (and of the disk a failover makes of it).
    pub fn sku(&self) -> &str {
        self.target_type.as_deref().unwrap_or("Premium_LRS")
    }
}

/// The operation running on an item.
#[derive(Clone, Debug)]
pub struct Busy {
    /// `currentScenario.scenarioName`.
    pub scenario: &'static str,
    /// Job name.
    pub job: String,
    /// When it started.
    pub since: SimTime,
}

/// A replicated VM.
#[derive(Clone, Debug)]
pub struct Item {
    /// ARM name of the protected item.
    pub name: String,
    /// Stable across reprotect.
    pub lifecycle_id: String,
    /// VM name (`friendlyName`).
    pub vm_name: String,
    /// VM size.
    pub vm_size: String,
    /// "Windows" or "Linux".
    pub os_type: String,
    /// Region the VM ran in when replication was first enabled.
    pub initial_primary: usize,
    /// Region the item replicates from now (whose container holds it).
    pub primary: usize,
    /// Lifecycle state.
    pub state: ItemState,
    /// Replication health is critical (resync needed).
    pub unhealthy: bool,
    /// Operation in progress.
    pub busy: Option<Busy>,
    /// Disks.
    pub disks: Vec<Disk>,
    /// Managed disks (false: unmanaged storage-account disks).
    pub managed: bool,
    /// Recovery points exist from here (None: not replicating, e.g. after commit).
    pub points_since: Option<SimTime>,
    /// Recovery points stop here (frozen by a failover until commit).
    pub points_until: Option<SimTime>,
    /// Last successful failover.
    pub last_failover: Option<SimTime>,
    /// When the last reprotect job succeeded.
    pub last_reprotect: Option<SimTime>,
    /// Last successful test failover.
    pub last_test_failover: Option<SimTime>,
    /// Recovery point of the last failover.
    pub failover_point: Option<String>,
    /// The initial replication after a reprotect (re-home → end), while it matters.
    pub replication: Option<Replication>,
    /// Network of the running test failover.
    pub test_network: Option<String>,
    /// Multi-VM group id (A2A consistency group).
    pub group_id: String,
    /// Recovery plans this item is in.
    pub plans: Vec<String>,
    /// Private IP address of the VM's NIC in each region (index = region): the address the VM
    /// has when it runs there.
    pub private_ips: [String; 2],
    /// The replication's target IP is configured static (`recoveryIPAddressType: Static`), so
    /// the item reports the address the VM gets in the recovery region; with the default
    /// (`Dynamic`, both recordings) it reports none.
    pub static_recovery_ip: bool,
}

/// A recovery point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// GUID name.
    pub name: String,
    /// When it was taken.
    pub time: SimTime,
    /// Application-consistent (else crash-consistent).
    pub app_consistent: bool,
}

impl Item {
    /// The other region.
    pub fn recovery(&self) -> usize {
        1 - self.primary
    }

    /// `protectionState`, `protectionStateDescription`.
    pub fn protection_state(&self) -> (&'static str, &'static str) {
        match self.state {
            ItemState::Protected => ("Protected", "Protected"),
            ItemState::TestFailedOver => ("Protected", "Cleanup test failover pending"),
            ItemState::FailoverFailed => ("UnplannedFailoverFailed", "Failover failed"),
            ItemState::FailedOver => ("UnplannedFailoverCommitPendingStatesBegin", "Failover completed"),
            ItemState::Committed => ("UnplannedFailoverCommitted", "Failover committed"),
            ItemState::Reprotecting => ("EnablingProtection", "Enabling protection"),
            // Unverified: no recording shows the item between the reprotect job and
            // SecondaryIrCompletion; "Protected" says nothing more (stingy).
            ItemState::InitialReplication => ("Protected", "Protected"),
        }
    }

    /// `activeLocation`.
    pub fn active_location(&self) -> &'static str {
        match self.state {
            ItemState::FailedOver | ItemState::Committed => "Recovery",
            _ => "Primary",
        }
    }

    /// The region the VM runs in.
    pub fn running_region(&self) -> usize {
        if self.active_location() == "Recovery" { self.recovery() } else { self.primary }
    }

    /// `allowedOperations` as enforced: nothing while an operation runs, else the idle list.
    pub fn allowed_operations(&self) -> Vec<&'static str> {
        if self.busy.is_some() {
            return vec![];
        }
        self.idle_operations()
    }

    /// The initial replication ended with a failed `SecondaryIrCompletion`.
    pub fn replication_failed(&self) -> bool {
        self.state == ItemState::InitialReplication && self.replication.as_ref().is_some_and(|r| r.failed.is_some())
    }

    /// Replication health is critical: seeded so, or initial replication failed.
    pub fn critical(&self) -> bool {
        self.unhealthy || self.replication_failed()
    }

    /// The disks are being replicated (re-homed by a reprotect, not yet protected, not failed).
    pub fn replicating(&self) -> bool {
        matches!(self.state, ItemState::Reprotecting | ItemState::InitialReplication) && !self.replication_failed()
    }

    /// The item replicates (its replica disks exist in the recovery region).
    pub fn has_replicas(&self) -> bool {
        !matches!(self.state, ItemState::FailedOver | ItemState::Committed)
    }

    /// The operations of the item's state when nothing runs on it.
    pub fn idle_operations(&self) -> Vec<&'static str> {
        if self.state == ItemState::InitialReplication {
            // Unverified: no recovery point exists yet, so nothing but disabling (and, once the
            // completion failed, repairing) is offered.
            return if self.replication_failed() {
                vec!["DisableProtection", "RepairReplication"]
            } else {
                vec!["DisableProtection"]
            };
        }
        let mut ops = match self.state {
            ItemState::Protected | ItemState::FailoverFailed => {
                vec!["UnplannedFailover", "TestFailover", "DisableProtection"]
            }
            ItemState::FailedOver => vec!["Commit", "ChangePit", "CancelFailover", "DisableProtection"],
            ItemState::Committed => vec!["CompleteMigration", "DisableProtection", "SwitchProtection"],
            ItemState::Reprotecting | ItemState::InitialReplication => vec!["DisableProtection"],
            ItemState::TestFailedOver => vec!["TestFailoverCleanup"],
        };
        if self.unhealthy && matches!(self.state, ItemState::Protected | ItemState::FailoverFailed) {
            ops.push("RepairReplication");
        }
        ops
    }

    /// Whether `operation` (an `allowedOperations` value) is allowed now.
    pub fn allows(&self, operation: &str) -> bool {
        self.allowed_operations().contains(&operation)
    }

    /// Recovery points at `now`, oldest first.
    pub fn points(&self, now: SimTime, policy: &PolicyConfig) -> Vec<Point> {
        let Some(since) = self.points_since else { return vec![] };
        let step = Duration::minutes(i64::from(policy.crash_consistent_minutes.max(1)));
        let app_every = i64::from((policy.app_consistent_minutes / policy.crash_consistent_minutes.max(1)).max(1));
        let latest = self.points_until.unwrap_or(now - Duration::seconds(i64::from(policy.processing_lag_secs)));
        let oldest = since.max(now - Duration::minutes(i64::from(policy.retention_minutes)));
        if latest < since {
            return vec![];
        }
        // Points sit on a grid anchored at `since`: index k is at since + (k+1) * step.
        let first = (((oldest - since).as_seconds_f64() / step.as_seconds_f64()).ceil() as i64).max(1);
        let last = ((latest - since).as_seconds_f64() / step.as_seconds_f64()).floor() as i64;
        (first..=last)
            .map(|k| {
                let time = since + step * (k as i32);
                Point { name: point_name(&self.lifecycle_id, time), time, app_consistent: k % app_every == 0 }
            })
            .collect()
    }

    /// The disks a point taken at `at` covers.
    pub fn disks_covered_at(&self, at: SimTime) -> impl Iterator<Item = &Disk> {
        self.disks.iter().filter(move |d| d.protected_since <= at)
    }
}

/// Recovery point names are GUIDs derived from the VM and the time, stable across requests.
pub fn point_name(lifecycle: &str, at: SimTime) -> String {
    guid_of(&[lifecycle, &at.unix_timestamp().to_string()])
}

/// Everything rendering needs besides the item.
#[derive(Debug)]
pub struct RenderContext<'a> {
    /// Id scope.
    pub scope: &'a Scope,
    /// Both regions.
    pub regions: &'a [Region; 2],
    /// Now.
    pub now: SimTime,
    /// Policy (for RPO).
    pub policy: &'a PolicyConfig,
    /// How long after an operation's 202 the item still renders as before it
    /// (`SimConfig::item_scenario_lag_secs`).
    pub scenario_lag: Duration,
    /// Name of the replication policy.
    pub policy_name: &'a str,
}

impl Item {
    /// The item's ARM id now.
    pub fn id(&self, scope: &Scope, regions: &[Region; 2]) -> String {
        let r = &regions[self.primary];
        scope.item_id(&r.fabric, &r.container, &self.name)
    }

    /// Whether the item renders as before its running operation (the scenario lag).
    pub fn in_scenario_lag(&self, now: SimTime, lag: Duration) -> bool {
        self.busy.as_ref().is_some_and(|b| now < b.since + lag)
    }

    /// The item-level `monitoringPercentageCompletion`: stale, as recorded. A Protected,
    /// healthy item keeps 33 after initial replication finished (excerpt entries 144–145), so
    /// seeded items show 33; during an initial replication it is 0 until a third is
    /// replicated, then 33 for good. Live progress is per disk only.
    pub fn item_level_percent(&self, now: SimTime) -> i64 {
        match &self.replication {
            Some(r) if self.replicating() && r.progress(now) * 3.0 < 1.0 => 0,
            _ => 33,
        }
    }

    /// The item's JSON resource.
    pub fn render(&self, cx: &RenderContext<'_>) -> Resource<ProtectedItemProperties> {
        let (scope, regions) = (cx.scope, cx.regions);
        let p = &regions[self.primary];
        let r = &regions[self.recovery()];
        let (state, description) = self.protection_state();
        let job_id = |job: &str| scope.job_id(job);
        // Unverified (no recording shows an item right after the 202): for `scenario_lag` the
        // item still shows no scenario and its idle operations; the estate refuses meanwhile.
        let lagging = self.in_scenario_lag(cx.now, cx.scenario_lag);
        let scenario = match &self.busy {
            Some(b) if !lagging => CurrentScenario {
                scenario_name: Some(b.scenario.into()),
                job_id: Some(job_id(&b.job)),
                start_time: Some(clock::format(b.since)),
                ..Default::default()
            },
            _ => CurrentScenario {
                scenario_name: Some("None".into()),
                job_id: Some(job_id("None")),
                start_time: Some("1753-01-01T01:01:01Z".into()),
                ..Default::default()
            },
        };
        let allowed = if lagging { self.idle_operations() } else { self.allowed_operations() };
        let vm_lower = |region: &Region| scope.vm_id(&region.app_rg, &self.vm_name).to_ascii_lowercase();
        let test_failed_over = self.state == ItemState::TestFailedOver;
        // Per-disk progress: live while the disks replicate (percent measured from the re-home
        // to the end of initial replication), otherwise Protected with no figure (excerpt 144).
        let (disk_state, monitoring, job_type) = if self.replicating() {
            let pct = self.replication.as_ref().map_or(0, |r| (r.progress(cx.now) * 100.0).floor() as i64);
            ("InitialReplicationPending", Some(pct), Some("InitialReplication".to_owned()))
        } else if self.replication_failed() {
            ("InitialReplicationFailed", None, None)
        } else {
            ("Protected", None, None)
        };
        let health = if self.critical() { "Critical" } else { "Normal" };
        let mut health_errors = Vec::new();
        let fault = match (&self.replication, self.unhealthy) {
            (Some(Replication { failed: Some(f), .. }), _) if self.replication_failed() => Some(f.clone()),
            (_, true) => Some(crate::job::AsrFault::from_code("151037", None)),
            _ => None,
        };
        if let Some(f) = fault {
            health_errors.push(HealthError {
                error_code: Some(f.code.clone()),
                error_level: Some("Error".into()),
                error_category: Some("Replication".into()),
                summary_message: Some(
                    if self.replication_failed() {
                        "Initial replication failed"
                    } else {
                        "Replication is not progressing"
                    }
                    .into(),
                ),
                error_message: Some(f.message.clone()),
                possible_causes: Some(f.possible_causes.clone()),
                recommended_action: Some(f.recommended_action.clone()),
                creation_time_utc: Some(clock::format(cx.now)),
                customer_resolvability: Some("Allowed".into()),
                ..Default::default()
            });
        }
        let rpo = self.points_since.map(|_| i64::from(cx.policy.processing_lag_secs));
        let cache =
            format!("{}/providers/Microsoft.Storage/storageAccounts/{}asrcache", scope.rg_id(&p.app_rg), p.location);
        // Disk ids as recorded: a replicating item names its replica and no target (excerpt
        // 144); a failed-over or committed one names the disk the running VM uses and an empty
        // replica (excerpt 145, reprotect entry 13).
        let failed_over = !self.has_replicas();
        let managed_disks = self.managed.then(|| {
            self.disks
                .iter()
                .map(|d| ManagedDisk {
                    disk_id: Some(scope.disk_id(&p.app_rg, &d.name).to_ascii_lowercase()),
                    disk_name: Some(d.name.clone()),
                    disk_capacity_in_bytes: Some(d.bytes),
                    disk_type: Some(if d.os { "OperatingSystem" } else { "Data" }.into()),
                    disk_state: Some(disk_state.into()),
                    recovery_resource_group_id: Some(scope.rg_id(&r.app_rg)),
                    recovery_target_disk_id: failed_over.then(|| scope.disk_id(&r.app_rg, &d.name)),
                    recovery_replica_disk_id: Some(if failed_over {
                        String::new()
                    } else {
                        scope.disk_id(&r.app_rg, &replica_name(&d.name))
                    }),
                    recovery_replica_disk_account_type: Some(
                        d.replica_type.clone().unwrap_or_else(|| "Premium_LRS".into()),
                    ),
                    recovery_target_disk_account_type: Some(d.sku().to_owned()),
                    primary_staging_azure_storage_account_id: Some(
                        d.staging_account.clone().unwrap_or_else(|| cache.clone()),
                    ),
                    resync_required: Some(self.critical()),
                    monitoring_percentage_completion: monitoring,
                    monitoring_job_type: job_type.clone(),
                    extra: disk_extra(&d.name),
                })
                .collect()
        });
        let unmanaged_disks = (!self.managed).then(|| {
            self.disks
                .iter()
                .map(|d| UnmanagedDisk {
                    disk_uri: Some(vhd_uri(&p.location, &d.name)),
                    disk_name: Some(d.name.clone()),
                    disk_capacity_in_bytes: Some(d.bytes),
                    disk_type: Some(if d.os { "OperatingSystem" } else { "Data" }.into()),
                    disk_state: Some(disk_state.into()),
                    recovery_azure_storage_account_id: Some(d.recovery_account.clone().unwrap_or_else(|| {
                        format!(
                            "{}/providers/Microsoft.Storage/storageAccounts/{}vhds",
                            scope.rg_id(&r.app_rg),
                            r.location
                        )
                    })),
                    primary_disk_azure_storage_account_id: Some(format!(
                        "{}/providers/Microsoft.Storage/storageAccounts/{}vhds",
                        scope.rg_id(&p.app_rg),
                        p.location
                    )),
                    recovery_disk_uri: Some(vhd_uri(&r.location, &d.name)),
                    primary_staging_azure_storage_account_id: Some(
                        d.staging_account.clone().unwrap_or_else(|| cache.clone()),
                    ),
                    resync_required: Some(self.critical()),
                    monitoring_percentage_completion: monitoring,
                    monitoring_job_type: job_type.clone(),
                    ..Default::default()
                })
                .collect()
        });
        let item_percent = self.item_level_percent(cx.now);
        let details = ProviderDetails {
            instance_type: "A2A".into(),
            fabric_object_id: Some(vm_lower(p)),
            initial_primary_fabric_location: Some(regions[self.initial_primary].location.clone()),
            initial_recovery_fabric_location: Some(regions[1 - self.initial_primary].location.clone()),
            initial_primary_zone: Some(String::new()),
            initial_recovery_zone: Some(String::new()),
            primary_fabric_location: Some(p.location.clone()),
            recovery_fabric_location: Some(r.location.clone()),
            os_type: Some(self.os_type.clone()),
            recovery_azure_vm_size: Some(self.vm_size.clone()),
            recovery_azure_vm_name: Some(self.vm_name.clone()),
            recovery_azure_resource_group_id: Some(scope.rg_id(&r.app_rg)),
            recovery_availability_set: None,
            recovery_availability_zone: None,
            recovery_proximity_placement_group_id: None,
            recovery_capacity_reservation_group_id: None,
            selected_recovery_azure_network_id: Some(format!(
                "{}/providers/microsoft.network/virtualnetworks/vnet-{}",
                scope.rg_id(&r.app_rg).to_ascii_lowercase(),
                r.location
            )),
            selected_tfo_azure_network_id: self.test_network.clone(),
            // Null on an item never failed over (excerpt entry 144, Protected before the
            // failover); the failed-over VM once a failover ran (entry 145, reprotect entry 13).
            // Unverified after a reprotect (no recording): kept, as the VM still exists there.
            recovery_fabric_object_id: (self.last_failover.is_some() || failed_over).then(|| vm_lower(r)),
            test_failover_recovery_fabric_object_id: test_failed_over
                .then(|| scope.vm_id(&r.app_rg, &format!("{}-test", self.vm_name)).to_ascii_lowercase()),
            // Stale at item level, as recorded (excerpt 144–145); see `item_level_percent`.
            monitoring_percentage_completion: Some(item_percent),
            monitoring_job_type: Some("InitialReplication".into()),
            lifecycle_id: Some(self.lifecycle_id.clone()),
            rpo_in_seconds: rpo,
            last_rpo_calculated_time: rpo.map(|_| clock::format(cx.now)),
            last_heartbeat: Some(clock::format(cx.now)),
            vm_protection_state: Some(state.into()),
            vm_protection_state_description: Some(description.into()),
            protected_managed_disks: managed_disks,
            protected_disks: unmanaged_disks,
            unprotected_disks: None,
            extra: a2a_extra(self, scope, p, r),
        };
        let mut extra = Map::new();
        extra.insert("failoverHealth".into(), json!("Normal"));
        Resource {
            id: self.id(scope, regions),
            name: self.name.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems"
                .into(),
            location: None,
            properties: ProtectedItemProperties {
                friendly_name: Some(self.vm_name.clone()),
                protected_item_type: Some(String::new()),
                protectable_item_id: None,
                recovery_services_provider_id: Some(format!(
                    "{}/replicationRecoveryServicesProviders/{}",
                    scope.fabric_id(&p.fabric),
                    guid_of(&[&p.fabric])
                )),
                primary_fabric_friendly_name: Some(p.friendly.clone()),
                primary_fabric_provider: Some("AzureFabric".into()),
                recovery_fabric_friendly_name: Some(r.friendly.clone()),
                recovery_fabric_id: Some(scope.fabric_id(&r.fabric)),
                primary_protection_container_friendly_name: Some(p.container.clone()),
                recovery_protection_container_friendly_name: Some(r.container.clone()),
                protection_state: Some(state.into()),
                protection_state_description: Some(description.into()),
                active_location: Some(self.active_location().into()),
                test_failover_state: Some(if test_failed_over { "WaitingForCompletion" } else { "None" }.into()),
                test_failover_state_description: Some(
                    if test_failed_over { "Waiting for user input" } else { "None" }.into(),
                ),
                switch_provider_state: Some("None".into()),
                switch_provider_state_description: None,
                allowed_operations: Some(allowed.into_iter().map(String::from).collect()),
                replication_health: Some(health.into()),
                failover_health: None,
                health_errors: Some(health_errors),
                policy_id: Some(scope.policy_id(cx.policy_name)),
                policy_friendly_name: Some(cx.policy_name.into()),
                last_successful_failover_time: self.last_failover.map(clock::format),
                last_successful_test_failover_time: self.last_test_failover.map(clock::format),
                current_scenario: Some(scenario),
                failover_recovery_point_id: self.failover_point.clone(),
                provider_specific_details: Some(details),
                recovery_container_id: Some(scope.container_id(&r.fabric, &r.container)),
                event_correlation_id: None,
                extra,
            },
            extra: Map::new(),
        }
    }

    /// A recovery point's JSON resource.
    pub fn render_point(
        &self,
        point: &Point,
        item_id: &str,
        scope: &Scope,
        regions: &[Region; 2],
    ) -> Resource<RecoveryPointProperties> {
        let p = &regions[self.primary];
        let disks =
            self.disks_covered_at(point.time).map(|d| scope.disk_id(&p.app_rg, &d.name).to_ascii_lowercase()).collect();
        Resource {
            id: format!("{item_id}/recoveryPoints/{}", point.name),
            name: point.name.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems/recoveryPoints".into(),
            location: None,
            properties: RecoveryPointProperties {
                recovery_point_time: Some(clock::format(point.time)),
                recovery_point_type: Some(if point.app_consistent { "ApplicationConsistent" } else { "CrashConsistent" }.into()),
                provider_specific_details: Some(RecoveryPointDetails {
                    instance_type: "A2A".into(),
                    recovery_point_sync_type: Some("PerVmRecoveryPoint".into()),
                    disks: Some(disks),
                    ..Default::default()
                }),
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }
}

/// The name of a disk's replica in the recovery region (excerpt entry 144).
pub fn replica_name(disk: &str) -> String {
    format!("{disk}-ASRReplica")
}

/// The VHD of an unmanaged disk in `location`'s storage account.
pub fn vhd_uri(location: &str, disk: &str) -> String {
    format!("https://{location}vhds.blob.core.windows.net/vhds/{disk}.vhd")
}

fn disk_extra(name: &str) -> Map<String, Value> {
    let v = json!({
        "recoveryOrignalTargetDiskId": null, "recoveryDiskEncryptionSetId": null, "primaryDiskEncryptionSetId": null,
        "dataPendingInStagingStorageAccountInMB": 0.0, "dataPendingAtSourceAgentInMB": 0.0,
        "allowedDiskLevelOperation": [], "isDiskEncrypted": false, "secretIdentifier": null, "dekKeyVaultArmId": null,
        "isDiskKeyEncrypted": false, "keyIdentifier": null, "kekKeyVaultArmId": null,
        "failoverDiskName": name, "tfoDiskName": format!("{name}-ASRtest"),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `staticIPAddress`, `recoveryStaticIPAddress` and `recoveryIPAddressType` of the item's one
/// IP configuration. As recorded (excerpt entries 144–145, reprotect entry 13): the primary
/// side's address is reported even when allocated dynamically (`ipAddressType: Dynamic`, e.g.
/// "10.4.0.6"), before and after a failover; the recovery side's only when it is configured
/// static — with `Dynamic` it is `""`, also after the failover created the VM there. Unverified
/// after a reprotect (no recording): the item reports its new primary's address the same way.
fn ip_config(item: &Item) -> (String, String, &'static str) {
    let source = item.private_ips[item.primary].clone();
    if item.static_recovery_ip {
        (source, item.private_ips[item.recovery()].clone(), "Static")
    } else {
        (source, String::new(), "Dynamic")
    }
}

fn a2a_extra(item: &Item, scope: &Scope, primary: &Region, recovery: &Region) -> Map<String, Value> {
    let nic = scope.nic_id(&primary.app_rg, &format!("{}-nic", item.vm_name));
    let (source_ip, recovery_ip, recovery_ip_type) = ip_config(item);
    let v = json!({
        "initialPrimaryExtendedLocation": null, "initialRecoveryExtendedLocation": null,
        "multiVmGroupId": item.group_id, "multiVmGroupName": "", "multiVmGroupCreateOption": "AutoCreated",
        "managementId": guid_of(&[&item.lifecycle_id, "management"]),
        "recoveryBootDiagStorageAccountId": null, "recoveryCloudService": null,
        "vmNics": [{
            "nicId": guid_of(&[&item.lifecycle_id, "nic"]), "replicaNicId": null, "sourceNicArmId": nic,
            "vMNetworkName": format!("{}/providers/Microsoft.Network/virtualNetworks/vnet-{}", scope.rg_id(&primary.app_rg), primary.location),
            "recoveryVMNetworkId": format!("{}/providers/microsoft.network/virtualnetworks/vnet-{}", scope.rg_id(&recovery.app_rg).to_ascii_lowercase(), recovery.location),
            "ipConfigs": [{
                "name": "ipconfig1", "isPrimary": true, "subnetName": "default", "staticIPAddress": source_ip,
                "ipAddressType": "Dynamic", "isSeletedForFailover": true, "recoverySubnetName": "default",
                "recoveryStaticIPAddress": recovery_ip, "recoveryIPAddressType": recovery_ip_type,
                "recoveryPublicIPAddressId": null,
                "recoveryLBBackendAddressPoolIds": null, "tfoSubnetName": null, "tfoStaticIPAddress": null,
                "tfoPublicIPAddressId": null, "tfoLBBackendAddressPoolIds": null,
            }],
            "selectionType": "SelectedByDefault", "recoveryNetworkSecurityGroupId": null,
            "enableAcceleratedNetworkingOnRecovery": false, "tfoVMNetworkId": null, "tfoNetworkSecurityGroupId": null,
            "enableAcceleratedNetworkingOnTfo": null, "recoveryNicName": null, "recoveryNicResourceGroupName": null,
            "reuseExistingNic": false, "tfoRecoveryNicName": null, "tfoRecoveryNicResourceGroupName": null,
            "tfoReuseExistingNic": false, "targetNicName": null,
        }],
        "vmSyncedConfigDetails": {"tags": {}, "inputEndpoints": []},
        "agentVersion": "9.65.7397.1", "agentExpiryDate": "9999-12-31T23:59:59.9999999Z",
        "agentCertificateExpiryDate": "9999-12-31T23:59:59.9999999Z",
        "isReplicationAgentUpdateRequired": false, "isReplicationAgentCertificateUpdateRequired": false,
        "rtoInSeconds": null, "primaryAvailabilityZone": null, "primaryExtendedLocation": null,
        "recoveryExtendedLocation": null, "vmEncryptionType": "NotEncrypted",
        "tfoAzureVMName": format!("{}-test", item.vm_name), "recoveryAzureGeneration": "V2",
        "autoProtectionOfDataDisk": "Disabled", "recoveryVirtualMachineScaleSetId": null, "churnOptionSelected": "Normal",
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
