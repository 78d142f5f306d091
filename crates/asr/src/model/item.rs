//! Replication protected items: the item, its A2A provider details and protected disks, and
//! the per-disk replication state read from them ([`DiskSync`]).

use serde::{Deserialize, Serialize};

use super::{lenient_i64, lenient_opt_string, non_empty, null_default};

/// A replication protected item ("RPI"): one replicated VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectedItem {
    /// ARM id (`.../replicationFabrics/{f}/replicationProtectionContainers/{c}/replicationProtectedItems/{name}`).
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Item name (last id segment).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Item properties.
    pub properties: ProtectedItemProperties,
}

/// `properties` of a [`ProtectedItem`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectedItemProperties {
    /// Display name (usually the VM name).
    pub friendly_name: Option<String>,
    /// Protection state, e.g. `Protected`, `UnplannedFailoverCommitPendingStatesBegin`.
    pub protection_state: Option<String>,
    /// Human-readable protection state, e.g. `Failover committed`.
    pub protection_state_description: Option<String>,
    /// `Primary` or `Recovery`.
    pub active_location: Option<String>,
    /// Operations ASR allows now (e.g. `UnplannedFailover`, `Commit`, `SwitchProtection`).
    #[serde(deserialize_with = "null_default")]
    pub allowed_operations: Vec<String>,
    /// `None`, `Normal`, `Warning` or `Critical`.
    pub replication_health: Option<String>,
    /// The scenario (job) running on the item; scenario `None` when idle.
    pub current_scenario: Option<CurrentScenario>,
    /// Recovery point used by the last failover.
    pub failover_recovery_point_id: Option<String>,
    /// Test failover state, e.g. `None`, `WaitingForCompletion`, `MarkedForDeletion`.
    pub test_failover_state: Option<String>,
    /// Time of the last successful failover (raw).
    pub last_successful_failover_time: Option<String>,
    /// Time of the last successful test failover (raw).
    pub last_successful_test_failover_time: Option<String>,
    /// Health errors on the item.
    #[serde(deserialize_with = "null_default")]
    pub health_errors: Vec<HealthError>,
    /// Replication policy ARM id.
    pub policy_id: Option<String>,
    /// Recovery fabric ARM id.
    pub recovery_fabric_id: Option<String>,
    /// Recovery protection container ARM id.
    pub recovery_container_id: Option<String>,
    /// Primary fabric display name (region for A2A, e.g. `UK South`).
    pub primary_fabric_friendly_name: Option<String>,
    /// Recovery fabric display name.
    pub recovery_fabric_friendly_name: Option<String>,
    /// Provider details. Read with the A2A shape; for other providers only `instance_type`
    /// is meaningful.
    pub provider_specific_details: Option<A2AReplicationDetails>,
}

/// `currentScenario` of an item or recovery plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CurrentScenario {
    /// Scenario name, `None` when idle.
    pub scenario_name: Option<String>,
    /// ARM id of the running job (`.../replicationJobs/None` when idle).
    pub job_id: Option<String>,
    /// Start time (raw; `1753-01-01T01:01:01Z` when idle).
    pub start_time: Option<String>,
}

/// One entry of `healthErrors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthError {
    /// ASR error code (numeric string, e.g. `161011`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Possible causes.
    pub possible_causes: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
    /// Summary message.
    pub summary_message: Option<String>,
    /// `Warning`, `Error`, ...
    pub error_level: Option<String>,
}

/// A2A `providerSpecificDetails` of a protected item (`instanceType: "A2A"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct A2AReplicationDetails {
    /// Provider discriminator: `A2A` (others, e.g. `HyperVReplicaAzure`, are read but not modelled).
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// Stable id across switch protection; a good correlation key.
    pub lifecycle_id: Option<String>,
    /// ARM id of the source VM.
    pub fabric_object_id: Option<String>,
    /// ARM id of the VM after failover.
    pub recovery_fabric_object_id: Option<String>,
    /// Region the VM ran in when replication was first enabled: "home" for failback.
    pub initial_primary_fabric_location: Option<String>,
    /// ARM id of the test VM while a test failover is up.
    pub test_failover_recovery_fabric_object_id: Option<String>,
    /// Name a test failover gives its VM.
    #[serde(rename = "tfoAzureVMName")]
    pub tfo_azure_vm_name: Option<String>,
    /// Primary region, e.g. `uksouth`.
    pub primary_fabric_location: Option<String>,
    /// Recovery region, e.g. `ukwest`.
    pub recovery_fabric_location: Option<String>,
    /// Name of the VM in the recovery region (JSON `recoveryAzureVMName`).
    #[serde(rename = "recoveryAzureVMName")]
    pub recovery_azure_vm_name: Option<String>,
    /// Size of the VM in the recovery region (JSON `recoveryAzureVMSize`).
    #[serde(rename = "recoveryAzureVMSize")]
    pub recovery_azure_vm_size: Option<String>,
    /// Recovery resource group ARM id.
    pub recovery_azure_resource_group_id: Option<String>,
    /// Recovery availability set ARM id.
    pub recovery_availability_set: Option<String>,
    /// Recovery availability zone.
    pub recovery_availability_zone: Option<String>,
    /// Recovery proximity placement group ARM id.
    pub recovery_proximity_placement_group_id: Option<String>,
    /// Recovery capacity reservation group ARM id.
    pub recovery_capacity_reservation_group_id: Option<String>,
    /// Recovery virtual network ARM id.
    pub selected_recovery_azure_network_id: Option<String>,
    /// Progress of initial replication / resync, percent.
    #[serde(deserialize_with = "lenient_i64")]
    pub monitoring_percentage_completion: Option<i64>,
    /// What `monitoring_percentage_completion` measures, e.g. `InitialReplication`.
    pub monitoring_job_type: Option<String>,
    /// Provider-level protection state.
    pub vm_protection_state: Option<String>,
    /// Current RPO in seconds.
    #[serde(deserialize_with = "lenient_i64")]
    pub rpo_in_seconds: Option<i64>,
    /// Protected managed disks (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub protected_managed_disks: Vec<A2AManagedDisk>,
    /// Protected unmanaged disks (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub protected_disks: Vec<A2AUnmanagedDisk>,
    /// The VM's NICs as replicated (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub vm_nics: Vec<A2AVmNic>,
}

/// One entry of A2A `vmNics`: a NIC of the replicated VM and its IP configurations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct A2AVmNic {
    /// ARM id of the NIC on the primary side.
    pub source_nic_arm_id: Option<String>,
    /// IP configurations (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub ip_configs: Vec<A2AIpConfig>,
}

/// One entry of A2A `vmNics[].ipConfigs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct A2AIpConfig {
    /// IP configuration name.
    pub name: Option<String>,
    /// Whether it is the NIC's primary IP configuration.
    pub is_primary: Option<bool>,
    /// The primary side's private address (JSON `staticIPAddress`: reported even when it is
    /// allocated dynamically).
    #[serde(rename = "staticIPAddress")]
    pub static_ip_address: Option<String>,
    /// `Dynamic` or `Static` (JSON `ipAddressType`).
    #[serde(rename = "ipAddressType")]
    pub ip_address_type: Option<String>,
    /// The address the VM gets in the recovery region; `""` unless configured static (JSON
    /// `recoveryStaticIPAddress`).
    #[serde(rename = "recoveryStaticIPAddress")]
    pub recovery_static_ip_address: Option<String>,
    /// `Dynamic` or `Static` (JSON `recoveryIPAddressType`).
    #[serde(rename = "recoveryIPAddressType")]
    pub recovery_ip_address_type: Option<String>,
}

/// Where a VM of a protected item runs, as the item names it: what an event consumer needs to
/// address it without asking Azure again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmPlacement {
    /// ARM id of the VM (ASR spells some ids in lowercase: compare case-insensitively).
    pub arm_id: String,
    /// Azure region (`eastus`), when the item names it.
    pub region: String,
    /// Private IP addresses the item reports for that side, the first NIC's primary
    /// configuration first; empty when ASR reports none.
    pub private_ips: Vec<String>,
}

impl A2AReplicationDetails {
    /// The non-empty addresses `field` gives, NIC by NIC, each NIC's primary configuration
    /// first; each address once.
    fn addresses(&self, field: impl Fn(&A2AIpConfig) -> &Option<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for nic in &self.vm_nics {
            let primary_first = nic
                .ip_configs
                .iter()
                .filter(|c| c.is_primary == Some(true))
                .chain(nic.ip_configs.iter().filter(|c| c.is_primary != Some(true)));
            for config in primary_first {
                if let Some(ip) = non_empty(field(config))
                    && !out.iter().any(|o| o == ip)
                {
                    out.push(ip.to_owned());
                }
            }
        }
        out
    }
}

/// One entry of A2A `protectedManagedDisks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct A2AManagedDisk {
    /// ARM id of the source managed disk.
    pub disk_id: Option<String>,
    /// Disk name.
    pub disk_name: Option<String>,
    /// `OperatingSystem` or `Data`.
    pub disk_type: Option<String>,
    /// e.g. `Protected`, `InitialReplicationPending`.
    pub disk_state: Option<String>,
    /// Disk size in bytes.
    #[serde(deserialize_with = "lenient_i64")]
    pub disk_capacity_in_bytes: Option<i64>,
    /// Recovery resource group ARM id.
    pub recovery_resource_group_id: Option<String>,
    /// Replica disk SKU, e.g. `Premium_LRS`.
    pub recovery_replica_disk_account_type: Option<String>,
    /// Target disk SKU, e.g. `Premium_LRS`.
    pub recovery_target_disk_account_type: Option<String>,
    /// Cache storage account ARM id.
    pub primary_staging_azure_storage_account_id: Option<String>,
    /// Whether the disk needs a resync.
    pub resync_required: Option<bool>,
    /// Per-disk replication progress, percent.
    #[serde(deserialize_with = "lenient_i64")]
    pub monitoring_percentage_completion: Option<i64>,
    /// What `monitoring_percentage_completion` measures, e.g. `InitialReplication`.
    pub monitoring_job_type: Option<String>,
    /// The disk a failover creates (set while failed over or committed: the running VM's disk).
    pub recovery_target_disk_id: Option<String>,
    /// The replica disk in the recovery region (set while protected).
    pub recovery_replica_disk_id: Option<String>,
}

/// One entry of A2A `protectedDisks` (unmanaged, VHD-based disks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct A2AUnmanagedDisk {
    /// VHD URI of the source disk.
    pub disk_uri: Option<String>,
    /// Disk name.
    pub disk_name: Option<String>,
    /// `OperatingSystem` or `Data`.
    pub disk_type: Option<String>,
    /// Disk protection state.
    pub disk_state: Option<String>,
    /// Recovery storage account ARM id.
    pub recovery_azure_storage_account_id: Option<String>,
    /// Cache storage account ARM id.
    pub primary_staging_azure_storage_account_id: Option<String>,
    /// Storage account of the source disk.
    pub primary_disk_azure_storage_account_id: Option<String>,
    /// VHD URI of the disk in the recovery region.
    pub recovery_disk_uri: Option<String>,
    /// Per-disk replication progress, percent.
    #[serde(deserialize_with = "lenient_i64")]
    pub monitoring_percentage_completion: Option<i64>,
    /// What `monitoring_percentage_completion` measures.
    pub monitoring_job_type: Option<String>,
}

/// How far a protected item's disks have replicated, read per disk (the item-level figure
/// goes stale: a Protected item keeps `monitoringPercentageCompletion: 33` after its initial
/// replication finished, recorded in A2AFailoverCommit-excerpt.json entries 144–145).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSync {
    /// Disk name (or id).
    pub disk: String,
    /// `diskState`, e.g. `Protected`, `InitialReplicationPending`, `InitialReplicationFailed`.
    pub state: String,
    /// The disk's own progress, when it reports one.
    pub percent: Option<i64>,
}

impl DiskSync {
    /// Whether the disk replicates normally (`diskState` Protected).
    pub fn is_protected(&self) -> bool {
        self.state.eq_ignore_ascii_case("Protected")
    }
}

impl ProtectedItem {
    /// Display name, or `""` when absent.
    pub fn friendly_name(&self) -> &str {
        self.properties.friendly_name.as_deref().unwrap_or("")
    }

    /// Protection state (e.g. `Protected`), or `""` when absent.
    pub fn protection_state(&self) -> &str {
        self.properties.protection_state.as_deref().unwrap_or("")
    }

    /// Active location (`Primary` / `Recovery`), or `""` when absent.
    pub fn active_location(&self) -> &str {
        self.properties.active_location.as_deref().unwrap_or("")
    }

    /// Whether `op` is in `allowedOperations` (case-insensitive).
    pub fn allows(&self, op: &str) -> bool {
        self.properties.allowed_operations.iter().any(|a| a.eq_ignore_ascii_case(op))
    }

    /// ARM id of the job currently running on the item, if any.
    ///
    /// Idle items report scenario `None` and job id `.../replicationJobs/None`; both read as idle.
    pub fn running_job_id(&self) -> Option<&str> {
        let scenario = self.properties.current_scenario.as_ref()?;
        if scenario.scenario_name.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("None")) {
            return None;
        }
        let job_id = non_empty(&scenario.job_id)?;
        let idle = job_id.len() >= "/replicationJobs/None".len()
            && job_id[job_id.len() - "/replicationJobs/None".len()..].eq_ignore_ascii_case("/replicationJobs/None");
        (!idle).then_some(job_id)
    }

    /// A2A lifecycle id (stable across switch protection), if present.
    pub fn lifecycle_id(&self) -> Option<&str> {
        non_empty(&self.properties.provider_specific_details.as_ref()?.lifecycle_id)
    }

    /// Protected disk identities: managed disk ARM ids, or unmanaged disk VHD URIs when the
    /// item has no managed disks.
    pub fn disk_ids(&self) -> Vec<String> {
        let Some(details) = &self.properties.provider_specific_details else {
            return Vec::new();
        };
        if !details.protected_managed_disks.is_empty() {
            details.protected_managed_disks.iter().filter_map(|d| non_empty(&d.disk_id)).map(str::to_owned).collect()
        } else {
            details.protected_disks.iter().filter_map(|d| non_empty(&d.disk_uri)).map(str::to_owned).collect()
        }
    }

    /// Whether the item replicates managed disks.
    pub fn is_managed(&self) -> bool {
        self.properties.provider_specific_details.as_ref().is_some_and(|d| !d.protected_managed_disks.is_empty())
    }

    /// Fabric name taken from the item's ARM id.
    pub fn fabric_name(&self) -> Option<&str> {
        segment_after(&self.id, "replicationFabrics")
    }

    /// Protection container name taken from the item's ARM id.
    pub fn container_name(&self) -> Option<&str> {
        segment_after(&self.id, "replicationProtectionContainers")
    }

    /// ARM id of the item's protection container (prefix of the item id).
    pub fn container_id(&self) -> Option<String> {
        prefix_through(&self.id, "replicationProtectionContainers").map(str::to_owned)
    }

    /// Each disk's replication state, managed or unmanaged. Never the item-level
    /// `monitoringPercentageCompletion`, which ASR leaves stale.
    pub fn disk_sync(&self) -> Vec<DiskSync> {
        let Some(d) = self.properties.provider_specific_details.as_ref() else { return Vec::new() };
        let name = |n: &Option<String>, id: &Option<String>| {
            non_empty(n).or_else(|| non_empty(id)).unwrap_or("disk").to_owned()
        };
        let managed = d.protected_managed_disks.iter().map(|m| DiskSync {
            disk: name(&m.disk_name, &m.disk_id),
            state: m.disk_state.clone().unwrap_or_default(),
            percent: m.monitoring_percentage_completion,
        });
        let unmanaged = d.protected_disks.iter().map(|u| DiskSync {
            disk: name(&u.disk_name, &u.disk_uri),
            state: u.disk_state.clone().unwrap_or_default(),
            percent: u.monitoring_percentage_completion,
        });
        managed.chain(unmanaged).collect()
    }

    /// The disks that are not replicating normally yet (initial replication pending or
    /// failed); empty when every disk is Protected.
    pub fn disks_not_protected(&self) -> Vec<DiskSync> {
        self.disk_sync().into_iter().filter(|d| !d.is_protected()).collect()
    }

    /// Initial replication progress in percent, read per disk: the lowest figure of the disks
    /// still replicating; `None` when every disk is Protected (or none reports a figure).
    pub fn sync_percent(&self) -> Option<i64> {
        self.disks_not_protected().iter().filter_map(|d| d.percent).min()
    }

    /// The VM the item replicates from (the source of the replication), with its region and
    /// addresses: `fabricObjectId`, `primaryFabricLocation` and each IP configuration's
    /// `staticIPAddress`, which ASR fills for the primary side even when the address is dynamic
    /// (A2AReprotectTest.json entry 13: `10.4.0.6` with `ipAddressType: Dynamic`;
    /// A2AFailoverCommit-excerpt.json entries 144–145). Once failed over, that is the VM the
    /// failover left behind; after a reprotect (roles flipped), the VM that now runs.
    pub fn primary_vm(&self) -> Option<VmPlacement> {
        let d = self.properties.provider_specific_details.as_ref()?;
        Some(VmPlacement {
            arm_id: non_empty(&d.fabric_object_id)?.to_owned(),
            region: non_empty(&d.primary_fabric_location).unwrap_or_default().to_owned(),
            private_ips: d.addresses(|c| &c.static_ip_address),
        })
    }

    /// The VM a failover of the item runs in the recovery region, with its region and
    /// addresses. The id is `recoveryAzureResourceGroupId` + `recoveryAzureVMName`, which the
    /// item carries before the failover as after it (excerpt entries 144–145; reprotect entry
    /// 13), with the casing the resources were named with; else `recoveryFabricObjectId`
    /// (lowercase, set only once failed over: null at entry 144, the VM at 145). The addresses
    /// are `recoveryStaticIPAddress`, which ASR reports only when the target address is static:
    /// both recordings have a dynamic target and `""` there, also after the failover (entry
    /// 145), so most items report none — Compute's VM answer carries NIC ids, not addresses,
    /// and reading each NIC would cost a read per VM.
    pub fn recovery_vm(&self) -> Option<VmPlacement> {
        let d = self.properties.provider_specific_details.as_ref()?;
        let composed = match (non_empty(&d.recovery_azure_resource_group_id), non_empty(&d.recovery_azure_vm_name)) {
            (Some(rg), Some(name)) => {
                Some(format!("{}/providers/Microsoft.Compute/virtualMachines/{name}", rg.trim_end_matches('/')))
            }
            _ => None,
        };
        Some(VmPlacement {
            arm_id: composed.or_else(|| non_empty(&d.recovery_fabric_object_id).map(str::to_owned))?,
            region: non_empty(&d.recovery_fabric_location).unwrap_or_default().to_owned(),
            private_ips: d.addresses(|c| &c.recovery_static_ip_address),
        })
    }

    /// The region the VM runs in now: the recovery region while failed over, else the primary.
    pub fn running_location(&self) -> Option<&str> {
        let d = self.properties.provider_specific_details.as_ref()?;
        let loc = if self.active_location().eq_ignore_ascii_case("Recovery") {
            &d.recovery_fabric_location
        } else {
            &d.primary_fabric_location
        };
        non_empty(loc)
    }
}

/// Splits an ARM id into segments and returns the one after `key` (case-insensitive).
fn segment_after<'a>(id: &'a str, key: &str) -> Option<&'a str> {
    let mut segments = id.split('/');
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case(key) {
            return segments.next().filter(|s| !s.is_empty());
        }
    }
    None
}

/// Returns the prefix of an ARM id up to and including the segment that follows `key`.
fn prefix_through<'a>(id: &'a str, key: &str) -> Option<&'a str> {
    let mut offset = 0;
    let mut found = false;
    for segment in id.split('/') {
        let end = offset + segment.len();
        if found {
            return (!segment.is_empty()).then(|| &id[..end]);
        }
        if segment.eq_ignore_ascii_case(key) {
            found = true;
        }
        offset = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item_with_scenario(scenario: serde_json::Value) -> ProtectedItem {
        serde_json::from_value(json!({
            "id": "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f1/replicationProtectionContainers/c1/replicationProtectedItems/i1",
            "name": "i1",
            "properties": { "currentScenario": scenario }
        }))
        .expect("item parses")
    }

    #[test]
    fn running_job_id_treats_none_scenario_as_idle() {
        let idle = item_with_scenario(json!({
            "scenarioName": "None",
            "jobId": "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/None",
            "startTime": "1753-01-01T01:01:01Z"
        }));
        assert_eq!(idle.running_job_id(), None);

        let idle_by_id = item_with_scenario(json!({
            "scenarioName": "UnplannedFailover",
            "jobId": "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/None"
        }));
        assert_eq!(idle_by_id.running_job_id(), None);

        let busy_id = "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/f11a4875-b807-4bd6-b564-aa6d0d60e1a3";
        let busy = item_with_scenario(json!({ "scenarioName": "UnplannedFailover", "jobId": busy_id }));
        assert_eq!(busy.running_job_id(), Some(busy_id));

        assert_eq!(item_with_scenario(json!(null)).running_job_id(), None);
    }

    #[test]
    fn item_id_helpers() {
        let item = item_with_scenario(json!(null));
        assert_eq!(item.fabric_name(), Some("f1"));
        assert_eq!(item.container_name(), Some("c1"));
        assert_eq!(
            item.container_id().as_deref(),
            Some(
                "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f1/replicationProtectionContainers/c1"
            )
        );
        assert!(!item.is_managed());
        assert!(item.disk_ids().is_empty());
    }

    #[test]
    fn tolerant_parsing_of_nulls_and_unknown_fields() {
        let item: ProtectedItem = serde_json::from_value(json!({
            "id": "x", "name": null, "somethingNew": {"a": 1},
            "properties": {
                "allowedOperations": null,
                "healthErrors": null,
                "providerSpecificDetails": {
                    "instanceType": "A2A", "protectedDisks": null, "protectedManagedDisks": null,
                    "rpoInSeconds": "46", "monitoringPercentageCompletion": 12.0
                }
            }
        }))
        .expect("tolerant");
        assert_eq!(item.name, "");
        assert!(item.properties.allowed_operations.is_empty());
        let details = item.properties.provider_specific_details.as_ref().expect("details");
        assert_eq!(details.rpo_in_seconds, Some(46));
        assert_eq!(details.monitoring_percentage_completion, Some(12));
        // Sync is read per disk, never from the item-level figure (ASR leaves it stale).
        assert_eq!(item.sync_percent(), None);
    }
}
