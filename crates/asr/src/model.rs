//! The client's view of the ARM / Azure Site Recovery JSON it reads and writes.
//!
//! This module owns the serde types for:
//! - ASR resources the orchestrator reads: replication protected items (with the A2A
//!   provider details), recovery points, jobs, fabrics, protection containers, container
//!   mappings, replication policies and recovery plans, plus the paged list envelope
//!   ([`Page`]);
//! - the few Compute / Network resources cleanup needs ([`VirtualMachine`],
//!   [`NetworkInterface`]);
//! - ARM error bodies ([`ArmErrorBody`]) and the Azure-AsyncOperation status body
//!   ([`OperationStatus`]);
//! - the request bodies of the ASR actions the orchestrator posts (failover, test failover,
//!   cleanup, apply recovery point, switch protection, disable protection, recovery-plan
//!   failover / test failover).
//!
//! Shapes follow the REST reference (`asr-api.md` §2–§4, §7), the official REST examples and
//! recorded A2A traffic. Response types are deliberately tolerant: every field defaults when
//! missing or `null`, unknown fields are ignored, and enum-like strings are kept as strings
//! (with typed accessors such as [`Job::state`]) so a new Azure value never breaks parsing.
//! Times are kept as the raw strings Azure sent; [`parse_time`] turns them into
//! [`OffsetDateTime`]s. HTTP, auth and polling live elsewhere in the crate.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deserializes `null` (or a missing value, via `#[serde(default)]`) as `T::default()`.
///
/// Azure sends `null` for empty arrays (e.g. A2A `protectedDisks`) and occasionally for
/// strings; plain `Vec`/`String` fields would otherwise reject it.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON scalar that should be an integer but might arrive as a float or a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientNumber {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Deserializes an optional integer, accepting numbers, floats (truncated) and numeric strings.
/// A non-numeric string becomes `None`.
fn lenient_i64<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Option::<LenientNumber>::deserialize(deserializer)? {
        None => None,
        Some(LenientNumber::Int(i)) => Some(i),
        Some(LenientNumber::Float(f)) => f.is_finite().then_some(f as i64),
        Some(LenientNumber::Text(s)) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
        }
    })
}

/// A JSON scalar that should be a string but might arrive as a number (ASR error codes).
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientText {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl LenientText {
    fn into_string(self) -> String {
        match self {
            LenientText::Text(s) => s,
            LenientText::Int(i) => i.to_string(),
            LenientText::Float(f) => f.to_string(),
            LenientText::Bool(b) => b.to_string(),
        }
    }
}

/// Deserializes a string that may be sent as a number; `null` becomes `""`.
fn lenient_string<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<LenientText>::deserialize(deserializer)?.map(LenientText::into_string).unwrap_or_default())
}

/// Deserializes an optional string that may be sent as a number.
fn lenient_opt_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<LenientText>::deserialize(deserializer)?.map(LenientText::into_string))
}

/// Returns the non-empty string inside `s`, if any.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

/// Parses a time as ASR writes it.
///
/// Accepts RFC 3339 with any number of fractional digits (`2025-04-09T08:49:20.8930892Z`,
/// `2025-04-09T08:58:22Z`, `...+01:00`) and the offset-less form ASR uses for placeholders and
/// some fields (`0001-01-01T00:00:00`, `9999-12-31T23:59:59.9999999`), which is read as UTC.
/// Placeholder values such as `0001-01-01T00:00:00` and `1753-01-01T01:01:01Z` parse like any
/// other time; callers that care must treat them as "not set" themselves.
/// Returns `None` for empty or unparseable input.
pub fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // No offset after the time part: treat as UTC.
    let time_part = s.find(['T', 't', ' ']).map(|i| &s[i + 1..])?;
    let has_offset = time_part.ends_with(['Z', 'z']) || time_part.contains(['+', '-']);
    if has_offset {
        return None;
    }
    let mut with_z = String::with_capacity(s.len() + 1);
    with_z.push_str(&s[..s.len() - time_part.len() - 1]);
    with_z.push('T');
    with_z.push_str(time_part);
    with_z.push('Z');
    OffsetDateTime::parse(&with_z, &Rfc3339).ok()
}

/// Whether a parsed ASR time is a real time rather than a placeholder
/// (`0001-01-01T00:00:00`, `1753-01-01T01:01:01Z`).
fn is_real_time(t: OffsetDateTime) -> bool {
    t.year() > 1753
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

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

/// One page of an ARM list response: `{"value": [...], "nextLink": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    /// The items on this page (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub value: Vec<T>,
    /// Absolute URL of the next page, if any.
    pub next_link: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self { value: Vec::new(), next_link: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Replication protected item
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Recovery point
// ---------------------------------------------------------------------------------------------

/// A recovery point of a protected item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPoint {
    /// ARM id (`{rpi}/recoveryPoints/{name}`).
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Recovery point name (a GUID).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Recovery point properties.
    pub properties: RecoveryPointProperties,
}

/// `properties` of a [`RecoveryPoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointProperties {
    /// Time of the point (raw).
    pub recovery_point_time: Option<String>,
    /// `ApplicationConsistent` or `CrashConsistent`.
    pub recovery_point_type: Option<String>,
    /// Provider details (A2A: sync type and covered disks).
    pub provider_specific_details: Option<RecoveryPointDetails>,
}

/// A2A `providerSpecificDetails` of a recovery point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointDetails {
    /// Provider discriminator (`A2A`).
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// `MultiVmSyncRecoveryPoint` or `PerVmRecoveryPoint`.
    pub recovery_point_sync_type: Option<String>,
    /// Disk ids covered by the point.
    #[serde(deserialize_with = "null_default")]
    pub disks: Vec<String>,
}

impl RecoveryPoint {
    /// The point's time, parsed.
    pub fn time(&self) -> Option<OffsetDateTime> {
        parse_time(self.properties.recovery_point_time.as_deref()?)
    }

    /// Whether the point is application consistent.
    pub fn is_app_consistent(&self) -> bool {
        self.properties.recovery_point_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("ApplicationConsistent"))
    }

    /// Disk ids covered by the point (empty when not reported).
    pub fn disks(&self) -> &[String] {
        self.properties.provider_specific_details.as_ref().map_or(&[], |d| d.disks.as_slice())
    }
}

// ---------------------------------------------------------------------------------------------
// Job
// ---------------------------------------------------------------------------------------------

/// An ASR job (`{vault}/replicationJobs/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Job name (a GUID, also found in the 202 `Location` after `operationresults/`).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Job properties.
    pub properties: JobProperties,
}

/// `properties` of a [`Job`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobProperties {
    /// Activity id (for support).
    pub activity_id: Option<String>,
    /// Scenario, e.g. `UnplannedFailover`, `SwitchReplicationGroupProtection`; `null` while
    /// the job is a `NotStarted` placeholder.
    pub scenario_name: Option<String>,
    /// Display name, e.g. `Failover`, `Reprotect`.
    pub friendly_name: Option<String>,
    /// State; read it with [`Job::state`].
    pub state: Option<String>,
    /// Refined state, e.g. `Completed`, `Skipped`.
    pub state_description: Option<String>,
    /// Job tasks in service order.
    #[serde(deserialize_with = "null_default")]
    pub tasks: Vec<JobTask>,
    /// Job-level errors.
    #[serde(deserialize_with = "null_default")]
    pub errors: Vec<JobError>,
    /// Start time (raw).
    pub start_time: Option<String>,
    /// End time (raw; absent while running).
    pub end_time: Option<String>,
    /// Actions allowed on the job, e.g. `Cancel`, `Resume`.
    #[serde(deserialize_with = "null_default")]
    pub allowed_actions: Vec<String>,
    /// Id of the target object (not an ARM id for items).
    pub target_object_id: Option<String>,
    /// Name of the target object (VM name for items).
    pub target_object_name: Option<String>,
    /// e.g. `ProtectionEntity`, `RecoveryPlan`.
    pub target_instance_type: Option<String>,
    /// Scenario-specific details.
    pub custom_details: Option<JobDetails>,
}

/// One task of a [`Job`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobTask {
    /// Task id.
    pub task_id: Option<String>,
    /// Task name.
    pub name: Option<String>,
    /// Display name.
    pub friendly_name: Option<String>,
    /// State (same vocabulary as the job state, plus `Other`).
    pub state: Option<String>,
    /// Refined state, e.g. `Skipped`.
    pub state_description: Option<String>,
    /// Start time (raw; `0001-01-01T00:00:00` when not started).
    pub start_time: Option<String>,
    /// End time (raw; `0001-01-01T00:00:00` when not finished).
    pub end_time: Option<String>,
    /// e.g. `TaskDetails`, `GroupTaskDetails`.
    pub task_type: Option<String>,
    /// Task errors.
    #[serde(deserialize_with = "null_default")]
    pub errors: Vec<JobError>,
}

/// One error of a job or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobError {
    /// Service-side error.
    pub service_error_details: Option<ServiceError>,
    /// Provider-side error.
    pub provider_error_details: Option<ProviderError>,
    /// Error level.
    pub error_level: Option<String>,
    /// Creation time (raw).
    pub creation_time: Option<String>,
    /// Task the error belongs to.
    pub task_id: Option<String>,
}

/// `serviceErrorDetails` of a [`JobError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceError {
    /// Error code (string; may be numeric).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub code: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// Possible causes.
    pub possible_causes: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
    /// Activity id.
    pub activity_id: Option<String>,
}

/// `providerErrorDetails` of a [`JobError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderError {
    /// Numeric error code.
    #[serde(deserialize_with = "lenient_i64")]
    pub error_code: Option<i64>,
    /// Message.
    pub error_message: Option<String>,
    /// Error id.
    pub error_id: Option<String>,
    /// Possible causes.
    pub possible_causes: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
}

/// `customDetails` of a job: the fields of the variants the orchestrator reads
/// (`FailoverJobDetails`, `TestFailoverJobDetails`, `SwitchProtectionJobDetails`, `AsrJobDetails`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobDetails {
    /// Variant discriminator.
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// `SwitchProtectionJobDetails`: ARM id of the item after reprotect (the item moves container).
    pub new_replication_protected_item_id: Option<String>,
    /// `FailoverJobDetails` / `TestFailoverJobDetails`: per-item results.
    #[serde(deserialize_with = "null_default")]
    pub protected_item_details: Vec<FailoverItemDetails>,
    /// Free-form map of affected objects.
    pub affected_object_details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One entry of `protectedItemDetails` in failover job details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverItemDetails {
    /// Item (VM) id, not an ARM id.
    pub name: Option<String>,
    /// Display name.
    pub friendly_name: Option<String>,
    /// Recovery point used; observed as the bare point name (GUID), not an ARM id.
    pub recovery_point_id: Option<String>,
    /// Time of the recovery point used (raw).
    pub recovery_point_time: Option<String>,
    /// Test VM name (test failover).
    pub test_vm_name: Option<String>,
    /// Network connection status (test failover).
    pub network_connection_status: Option<String>,
}

/// State of a job or task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Queued, not started.
    NotStarted,
    /// Running.
    InProgress,
    /// Finished successfully (see `stateDescription` for partial success).
    Succeeded,
    /// Finished with failure.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Waiting for a manual action; needs `resume`.
    Suspended,
    /// Any other value, kept verbatim (ASR itself reports `Other` for skipped tasks).
    Other(String),
}

impl JobState {
    /// Parses a state string case-insensitively; unknown values are kept in [`JobState::Other`].
    /// The ARM spelling `Canceled` is read as [`JobState::Cancelled`].
    pub fn parse(s: &str) -> JobState {
        let t = s.trim();
        const KNOWN: [(&str, JobState); 7] = [
            ("NotStarted", JobState::NotStarted),
            ("InProgress", JobState::InProgress),
            ("Succeeded", JobState::Succeeded),
            ("Failed", JobState::Failed),
            ("Cancelled", JobState::Cancelled),
            ("Canceled", JobState::Cancelled),
            ("Suspended", JobState::Suspended),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map_or_else(|| JobState::Other(s.to_owned()), |(_, state)| state)
    }

    /// Whether the state is final for automation: Succeeded, Failed or Cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }

    /// The canonical ASR spelling (or the kept value for [`JobState::Other`]).
    pub fn as_str(&self) -> &str {
        match self {
            JobState::NotStarted => "NotStarted",
            JobState::InProgress => "InProgress",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
            JobState::Suspended => "Suspended",
            JobState::Other(s) => s,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobError {
    fn has_details(&self) -> bool {
        self.service_error_details.is_some() || self.provider_error_details.is_some()
    }

    /// (code, message, possible causes, recommended action), service details first.
    fn summary(&self) -> (String, String, Option<String>, Option<String>) {
        let service = self.service_error_details.as_ref();
        let provider = self.provider_error_details.as_ref();
        let code = service
            .and_then(|s| non_empty(&s.code).map(str::to_owned))
            .or_else(|| provider.and_then(|p| p.error_code).map(|c| c.to_string()))
            .unwrap_or_default();
        let message = service
            .and_then(|s| non_empty(&s.message))
            .or_else(|| provider.and_then(|p| non_empty(&p.error_message)))
            .unwrap_or_default()
            .to_owned();
        let causes = service
            .and_then(|s| non_empty(&s.possible_causes))
            .or_else(|| provider.and_then(|p| non_empty(&p.possible_causes)))
            .map(str::to_owned);
        let action = service
            .and_then(|s| non_empty(&s.recommended_action))
            .or_else(|| provider.and_then(|p| non_empty(&p.recommended_action)))
            .map(str::to_owned);
        (code, message, causes, action)
    }
}

impl Job {
    /// The job's state.
    pub fn state(&self) -> JobState {
        JobState::parse(self.properties.state.as_deref().unwrap_or(""))
    }

    /// The first error as (code, message, possible causes, recommended action).
    ///
    /// Looks at job-level errors, then at each task's errors, preferring an error that carries
    /// service or provider details. The code is `serviceErrorDetails.code`, else
    /// `providerErrorDetails.errorCode` as a string.
    pub fn first_error(&self) -> Option<(String, String, Option<String>, Option<String>)> {
        let all = || self.properties.errors.iter().chain(self.properties.tasks.iter().flat_map(|t| t.errors.iter()));
        all().find(|e| e.has_details()).or_else(|| all().next()).map(JobError::summary)
    }

    /// The `activityId` (only a GET of the job carries it; lists send `null`).
    pub fn activity_id(&self) -> Option<&str> {
        non_empty(&self.properties.activity_id)
    }

    /// Whether the job's `activityId` begins with `client_request_id`: ASR makes the
    /// `x-ms-client-request-id` of the request that started a job the first part of its
    /// activity id (`"<client-request-id> ActivityId: <correlation-id>"`, recorded in
    /// A2AFailoverCommit-excerpt.json entries 146–147 and 173–174).
    pub fn started_by(&self, client_request_id: &str) -> bool {
        let Some(activity) = self.activity_id() else { return false };
        let first = activity.split_whitespace().next().unwrap_or("");
        !client_request_id.is_empty() && first.eq_ignore_ascii_case(client_request_id)
    }

    /// Whether this is what a list sends: a summary without tasks, errors, custom details
    /// and activity id (recorded in A2AFailoverCommit-excerpt.json entries 41–141).
    pub fn is_summary(&self) -> bool {
        self.properties.activity_id.is_none()
            && self.properties.tasks.is_empty()
            && self.properties.custom_details.is_none()
    }

    /// The job's target, when ASR says it (a new job's placeholder does not).
    pub fn target_name(&self) -> Option<&str> {
        non_empty(&self.properties.target_object_name)
    }

    /// The job's scenario, when ASR says it (a new job's placeholder does not).
    pub fn scenario(&self) -> Option<&str> {
        non_empty(&self.properties.scenario_name)
    }

    /// `SwitchProtectionJobDetails.newReplicationProtectedItemId`, once the service fills it in.
    pub fn new_item_id(&self) -> Option<&str> {
        non_empty(&self.properties.custom_details.as_ref()?.new_replication_protected_item_id)
    }

    /// The task in progress, else the task that started last (placeholder start times such as
    /// `0001-01-01T00:00:00` do not count as started).
    pub fn current_task(&self) -> Option<&JobTask> {
        let tasks = &self.properties.tasks;
        if let Some(task) = tasks.iter().find(|t| t.state() == JobState::InProgress) {
            return Some(task);
        }
        tasks
            .iter()
            .filter_map(|t| {
                let start = parse_time(t.start_time.as_deref()?)?;
                is_real_time(start).then_some((start, t))
            })
            .max_by_key(|(start, _)| *start)
            .map(|(_, t)| t)
    }
}

impl JobTask {
    /// The task's state.
    pub fn state(&self) -> JobState {
        JobState::parse(self.state.as_deref().unwrap_or(""))
    }
}

// ---------------------------------------------------------------------------------------------
// Fabric, container, mapping, policy
// ---------------------------------------------------------------------------------------------

/// A replication fabric (one per Azure region for A2A).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Fabric {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Fabric name, e.g. `asr-a2a-default-uksouth`.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Fabric properties.
    pub properties: FabricProperties,
}

/// `properties` of a [`Fabric`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FabricProperties {
    /// Display name (region display name for A2A, e.g. `UK South`).
    pub friendly_name: Option<String>,
    /// Fabric-type details.
    pub custom_details: Option<FabricCustomDetails>,
}

/// `customDetails` of a fabric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FabricCustomDetails {
    /// `Azure` for A2A fabrics.
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// Region, e.g. `uksouth` (Azure fabrics only).
    pub location: Option<String>,
}

/// A protection container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectionContainer {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Container name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Container properties.
    pub properties: ProtectionContainerProperties,
}

/// `properties` of a [`ProtectionContainer`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectionContainerProperties {
    /// Display name.
    pub friendly_name: Option<String>,
    /// Display name of the fabric.
    pub fabric_friendly_name: Option<String>,
    /// e.g. `Azure`.
    pub fabric_type: Option<String>,
    /// e.g. `Primary`.
    pub role: Option<String>,
    /// e.g. `Paired`.
    pub pairing_status: Option<String>,
    /// Number of protected items in the container.
    #[serde(deserialize_with = "lenient_i64")]
    pub protected_item_count: Option<i64>,
}

/// A protection container mapping (source container → target container + policy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerMapping {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Mapping name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Mapping properties.
    pub properties: ContainerMappingProperties,
}

/// `properties` of a [`ContainerMapping`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerMappingProperties {
    /// Target container ARM id.
    pub target_protection_container_id: Option<String>,
    /// Replication policy ARM id.
    pub policy_id: Option<String>,
    /// e.g. `Paired`.
    pub state: Option<String>,
    /// Source fabric display name.
    pub source_fabric_friendly_name: Option<String>,
    /// Target fabric display name.
    pub target_fabric_friendly_name: Option<String>,
}

/// A replication policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Policy name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Policy properties.
    pub properties: PolicyProperties,
}

/// `properties` of a [`Policy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyProperties {
    /// Display name.
    pub friendly_name: Option<String>,
    /// Provider details (A2A fields).
    pub provider_specific_details: Option<PolicyDetails>,
}

/// A2A `providerSpecificDetails` of a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyDetails {
    /// Provider discriminator (`A2A`).
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// Retention of recovery points, minutes.
    #[serde(deserialize_with = "lenient_i64")]
    pub recovery_point_history: Option<i64>,
    /// App-consistent snapshot frequency, minutes.
    #[serde(deserialize_with = "lenient_i64")]
    pub app_consistent_frequency_in_minutes: Option<i64>,
    /// Crash-consistent snapshot frequency, minutes.
    #[serde(deserialize_with = "lenient_i64")]
    pub crash_consistent_frequency_in_minutes: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Recovery plan
// ---------------------------------------------------------------------------------------------

/// A recovery plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlan {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Plan name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Plan properties.
    pub properties: RecoveryPlanProperties,
}

/// `properties` of a [`RecoveryPlan`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanProperties {
    /// Display name.
    pub friendly_name: Option<String>,
    /// Primary fabric ARM id (never flips on failover).
    pub primary_fabric_id: Option<String>,
    /// Recovery fabric ARM id (never flips on failover).
    pub recovery_fabric_id: Option<String>,
    /// Operations allowed now.
    #[serde(deserialize_with = "null_default")]
    pub allowed_operations: Vec<String>,
    /// Scenario currently running on the plan.
    pub current_scenario: Option<CurrentScenario>,
    /// Groups in order: Shutdown, Failover, then Boot groups.
    #[serde(deserialize_with = "null_default")]
    pub groups: Vec<RecoveryPlanGroup>,
    /// Replication providers in the plan, e.g. `["A2A"]`.
    #[serde(deserialize_with = "null_default")]
    pub replication_providers: Vec<String>,
}

/// One group of a recovery plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanGroup {
    /// `Shutdown`, `Failover` or `Boot`.
    #[serde(deserialize_with = "null_default")]
    pub group_type: String,
    /// Items in the group.
    #[serde(deserialize_with = "null_default")]
    pub replication_protected_items: Vec<RecoveryPlanItem>,
}

/// One item of a recovery plan group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanItem {
    /// Protected item ARM id.
    pub id: Option<String>,
    /// Virtual machine id (not an ARM id).
    pub virtual_machine_id: Option<String>,
}

impl RecoveryPlan {
    /// Protected item ids of each `Boot` group, in plan order.
    pub fn boot_groups(&self) -> Vec<Vec<String>> {
        self.properties
            .groups
            .iter()
            .filter(|g| g.group_type.eq_ignore_ascii_case("Boot"))
            .map(|g| g.replication_protected_items.iter().filter_map(|i| non_empty(&i.id)).map(str::to_owned).collect())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Compute / Network
// ---------------------------------------------------------------------------------------------

/// A Compute virtual machine (the fields cleanup needs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachine {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// VM name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Region.
    pub location: Option<String>,
    /// VM properties.
    pub properties: VirtualMachineProperties,
}

/// `properties` of a [`VirtualMachine`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualMachineProperties {
    /// Compute's unique VM id.
    pub vm_id: Option<String>,
    /// e.g. `Succeeded`, `Deleting`.
    pub provisioning_state: Option<String>,
    /// Size.
    pub hardware_profile: Option<HardwareProfile>,
    /// Disks.
    pub storage_profile: Option<StorageProfile>,
    /// NICs.
    pub network_profile: Option<NetworkProfile>,
    /// Present with `$expand=instanceView`.
    pub instance_view: Option<InstanceView>,
}

/// `hardwareProfile` of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HardwareProfile {
    /// e.g. `Standard_DS1_v2`.
    pub vm_size: Option<String>,
}

/// `storageProfile` of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageProfile {
    /// OS disk.
    pub os_disk: Option<VmDisk>,
    /// Data disks.
    #[serde(deserialize_with = "null_default")]
    pub data_disks: Vec<VmDisk>,
}

/// An OS or data disk reference of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmDisk {
    /// Disk name.
    pub name: Option<String>,
    /// Managed disk reference (managed-disk VMs).
    pub managed_disk: Option<ManagedDiskRef>,
    /// VHD reference (unmanaged-disk VMs).
    pub vhd: Option<VhdRef>,
}

/// `managedDisk` of a VM disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedDiskRef {
    /// Managed disk ARM id.
    pub id: Option<String>,
    /// Disk SKU, e.g. `Premium_LRS`.
    pub storage_account_type: Option<String>,
}

/// `vhd` of an unmanaged VM disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VhdRef {
    /// Blob URI.
    pub uri: Option<String>,
}

/// `networkProfile` of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkProfile {
    /// NIC references.
    #[serde(deserialize_with = "null_default")]
    pub network_interfaces: Vec<SubResource>,
}

/// A reference to another ARM resource: `{"id": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubResource {
    /// ARM id.
    pub id: Option<String>,
}

/// A VM instance view (`properties.instanceView` or `GET .../instanceView`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InstanceView {
    /// Statuses, e.g. `ProvisioningState/succeeded`, `PowerState/running`.
    #[serde(deserialize_with = "null_default")]
    pub statuses: Vec<InstanceViewStatus>,
}

/// One instance view status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InstanceViewStatus {
    /// e.g. `PowerState/deallocated`.
    pub code: Option<String>,
    /// e.g. `Info`.
    pub level: Option<String>,
    /// e.g. `VM deallocated`.
    pub display_status: Option<String>,
}

impl InstanceView {
    /// The power state (`running`, `deallocated`, ...) from the `PowerState/<x>` status.
    pub fn power_state(&self) -> Option<&str> {
        self.statuses.iter().find_map(|s| {
            let code = s.code.as_deref()?;
            let (kind, value) = code.split_once('/')?;
            kind.eq_ignore_ascii_case("PowerState").then_some(value)
        })
    }
}

impl VirtualMachine {
    /// The power state from the instance view, if it was expanded.
    pub fn power_state(&self) -> Option<&str> {
        self.properties.instance_view.as_ref()?.power_state()
    }

    /// Whether the VM's disks are managed disks.
    pub fn uses_managed_disks(&self) -> bool {
        let Some(storage) = &self.properties.storage_profile else {
            return false;
        };
        storage.os_disk.iter().chain(storage.data_disks.iter()).any(|d| d.managed_disk.is_some())
    }

    /// The VM's disks, OS disk first.
    pub fn disks(&self) -> Vec<&VmDisk> {
        let Some(storage) = &self.properties.storage_profile else { return Vec::new() };
        storage.os_disk.iter().chain(storage.data_disks.iter()).collect()
    }

    /// ARM ids of the VM's managed disks, OS disk first.
    pub fn managed_disk_ids(&self) -> Vec<String> {
        self.disks()
            .into_iter()
            .filter_map(|d| d.managed_disk.as_ref().and_then(|m| non_empty(&m.id)))
            .map(str::to_owned)
            .collect()
    }

    /// ARM ids of the VM's NICs.
    pub fn nic_ids(&self) -> Vec<String> {
        self.properties
            .network_profile
            .iter()
            .flat_map(|n| n.network_interfaces.iter())
            .filter_map(|r| non_empty(&r.id))
            .map(str::to_owned)
            .collect()
    }
}

/// A network interface (the fields cleanup needs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkInterface {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// NIC name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Region.
    pub location: Option<String>,
    /// NIC properties.
    pub properties: NetworkInterfaceProperties,
}

/// `properties` of a [`NetworkInterface`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkInterfaceProperties {
    /// e.g. `Succeeded`.
    pub provisioning_state: Option<String>,
    /// The VM the NIC is attached to, if any.
    pub virtual_machine: Option<SubResource>,
    /// IP configurations.
    #[serde(deserialize_with = "null_default")]
    pub ip_configurations: Vec<IpConfiguration>,
}

/// One IP configuration of a NIC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpConfiguration {
    /// Name.
    pub name: Option<String>,
    /// Properties.
    pub properties: IpConfigurationProperties,
}

/// `properties` of an [`IpConfiguration`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpConfigurationProperties {
    /// Private address.
    #[serde(rename = "privateIPAddress")]
    pub private_ip_address: Option<String>,
    /// The public IP address resource, if one is associated.
    #[serde(rename = "publicIPAddress")]
    pub public_ip_address: Option<SubResource>,
}

impl NetworkInterface {
    /// ARM ids of the public IP addresses associated with the NIC.
    pub fn public_ip_ids(&self) -> Vec<String> {
        self.properties
            .ip_configurations
            .iter()
            .filter_map(|c| c.properties.public_ip_address.as_ref().and_then(|p| non_empty(&p.id)))
            .map(str::to_owned)
            .collect()
    }
}

/// A managed disk (`Microsoft.Compute/disks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedDisk {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Disk name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Region.
    pub location: Option<String>,
    /// The VM the disk is attached to, if any.
    pub managed_by: Option<String>,
    /// Properties.
    pub properties: ManagedDiskProperties,
}

/// `properties` of a [`ManagedDisk`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedDiskProperties {
    /// e.g. `Succeeded`, `Deleting`.
    pub provisioning_state: Option<String>,
    /// e.g. `Attached`, `Unattached`, `Reserved`.
    pub disk_state: Option<String>,
}

/// A public IP address (`Microsoft.Network/publicIPAddresses`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PublicIpAddress {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Region.
    pub location: Option<String>,
    /// Properties.
    pub properties: PublicIpAddressProperties,
}

/// `properties` of a [`PublicIpAddress`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PublicIpAddressProperties {
    /// e.g. `Succeeded`, `Deleting`.
    pub provisioning_state: Option<String>,
    /// The NIC IP configuration it is associated with, if any.
    pub ip_configuration: Option<SubResource>,
}

/// A storage account (reprotect's cache account), read to check it exists and where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageAccount {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Region.
    pub location: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Errors and async operation status
// ---------------------------------------------------------------------------------------------

/// An ARM error response body: `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmErrorBody {
    /// The error.
    pub error: ArmErrorDetail,
}

/// An ARM error (ASR puts its own code and advice in `details`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmErrorDetail {
    /// Error code (named like `BadRequest` or numeric like `150261`).
    #[serde(deserialize_with = "lenient_string")]
    pub code: String,
    /// Message.
    #[serde(deserialize_with = "lenient_string")]
    pub message: String,
    /// ASR possible causes.
    pub possible_causes: Option<String>,
    /// ASR recommended action.
    pub recommended_action: Option<String>,
    /// Nested errors.
    #[serde(deserialize_with = "null_default")]
    pub details: Vec<ArmErrorDetail>,
}

impl ArmErrorDetail {
    /// The ASR code: the first detail's code if present, else the top-level code.
    pub fn asr_code(&self) -> &str {
        self.details.first().map(|d| d.code.as_str()).filter(|c| !c.is_empty()).unwrap_or(&self.code)
    }

    /// The first recommended action found in the details (depth first), else the top-level one.
    pub fn recommended_action(&self) -> Option<&str> {
        self.details.iter().find_map(|d| d.recommended_action()).or_else(|| non_empty(&self.recommended_action))
    }
}

impl std::fmt::Display for ArmErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(detail) = self.details.first() {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// The Azure-AsyncOperation status body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OperationStatus {
    /// Operation id.
    pub id: Option<String>,
    /// Operation name.
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub status: Option<String>,
    /// Start time (raw).
    pub start_time: Option<String>,
    /// End time (raw).
    pub end_time: Option<String>,
    /// Error when failed.
    pub error: Option<ArmErrorDetail>,
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// The A2A provider discriminator.
const A2A: &str = "A2A";

fn source_site_operations(shut_down_source: bool) -> String {
    if shut_down_source { "Required" } else { "NotRequired" }.to_owned()
}

fn network_type(network_id: &Option<String>) -> String {
    if network_id.is_some() { "VmNetworkAsInput" } else { "NoNetworkAttachAsInput" }.to_owned()
}

/// A provider input that carries only its discriminator: `{"instanceType": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInput {
    /// Provider discriminator.
    pub instance_type: String,
}

/// A2A provider input of item failover / test failover: `{"instanceType":"A2A","recoveryPointId"?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct A2AFailoverProviderInput {
    /// `A2A`.
    pub instance_type: String,
    /// Recovery point ARM id; omitted for the latest point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_point_id: Option<String>,
}

/// Body of `POST {rpi}/unplannedFailover`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnplannedFailoverInput {
    /// Properties.
    pub properties: UnplannedFailoverInputProperties,
}

/// `properties` of [`UnplannedFailoverInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnplannedFailoverInputProperties {
    /// `PrimaryToRecovery` or `RecoveryToPrimary`.
    pub failover_direction: String,
    /// `Required` (shut down the source first) or `NotRequired`.
    pub source_site_operations: String,
    /// A2A details.
    pub provider_specific_details: A2AFailoverProviderInput,
}

impl UnplannedFailoverInput {
    /// A2A unplanned failover; `recovery_point_id: None` means the latest point.
    pub fn a2a(direction: &str, shut_down_source: bool, recovery_point_id: Option<String>) -> Self {
        Self {
            properties: UnplannedFailoverInputProperties {
                failover_direction: direction.to_owned(),
                source_site_operations: source_site_operations(shut_down_source),
                provider_specific_details: A2AFailoverProviderInput {
                    instance_type: A2A.to_owned(),
                    recovery_point_id,
                },
            },
        }
    }
}

/// Body of `POST {rpi}/testFailover`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFailoverInput {
    /// Properties.
    pub properties: TestFailoverInputProperties,
}

/// `properties` of [`TestFailoverInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFailoverInputProperties {
    /// `PrimaryToRecovery` or `RecoveryToPrimary`.
    pub failover_direction: String,
    /// `VmNetworkAsInput` or `NoNetworkAttachAsInput`.
    pub network_type: String,
    /// Test network ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    /// A2A details.
    pub provider_specific_details: A2AFailoverProviderInput,
}

impl TestFailoverInput {
    /// A2A test failover into `network_id` (or with no network attached when `None`).
    pub fn a2a(direction: &str, network_id: Option<String>, recovery_point_id: Option<String>) -> Self {
        Self {
            properties: TestFailoverInputProperties {
                failover_direction: direction.to_owned(),
                network_type: network_type(&network_id),
                network_id,
                provider_specific_details: A2AFailoverProviderInput {
                    instance_type: A2A.to_owned(),
                    recovery_point_id,
                },
            },
        }
    }
}

/// Body of `POST {rpi}/testFailoverCleanup` and `POST {rp}/testFailoverCleanup`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFailoverCleanupInput {
    /// Properties.
    pub properties: TestFailoverCleanupInputProperties,
}

/// `properties` of [`TestFailoverCleanupInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFailoverCleanupInputProperties {
    /// Operator comments; omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
}

impl TestFailoverCleanupInput {
    /// Cleanup with `comments` (an empty string omits the field).
    pub fn new(comments: impl Into<String>) -> Self {
        let comments = comments.into();
        Self { properties: TestFailoverCleanupInputProperties { comments: (!comments.is_empty()).then_some(comments) } }
    }
}

/// Body of `POST {rpi}/applyRecoveryPoint`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRecoveryPointInput {
    /// Properties.
    pub properties: ApplyRecoveryPointInputProperties,
}

/// `properties` of [`ApplyRecoveryPointInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRecoveryPointInputProperties {
    /// Recovery point ARM id.
    pub recovery_point_id: String,
    /// `{"instanceType":"A2A"}`.
    pub provider_specific_details: ProviderInput,
}

impl ApplyRecoveryPointInput {
    /// A2A change of recovery point after failover.
    pub fn a2a(recovery_point_id: impl Into<String>) -> Self {
        Self {
            properties: ApplyRecoveryPointInputProperties {
                recovery_point_id: recovery_point_id.into(),
                provider_specific_details: ProviderInput { instance_type: A2A.to_owned() },
            },
        }
    }
}

/// Body of `POST .../replicationProtectionContainers/{c}/switchprotection` (A2A reprotect).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProtectionInput {
    /// Properties.
    pub properties: SwitchProtectionInputProperties,
}

/// `properties` of [`SwitchProtectionInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProtectionInputProperties {
    /// Name of the item to reprotect.
    pub replication_protected_item_name: String,
    /// A2A details.
    pub provider_specific_details: SwitchProtectionProviderInput,
}

/// A2A `providerSpecificDetails` of switch protection: `instanceType` plus the caller's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProtectionProviderInput {
    /// `A2A`.
    pub instance_type: String,
    /// Caller-provided settings.
    #[serde(flatten)]
    pub details: A2ASwitchProtection,
}

/// A2A switch-protection settings; `None` fields are omitted, both disk lists are always sent
/// (as Azure PowerShell sends them: A2AReprotectTest.json entry 16).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct A2ASwitchProtection {
    /// Target container: the reverse mapping's target (the original primary container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_container_id: Option<String>,
    /// Policy of the reverse mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Resource group the VM will be recreated in on failback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_resource_group_id: Option<String>,
    /// Availability set ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_availability_set_id: Option<String>,
    /// Availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_availability_zone: Option<String>,
    /// Proximity placement group ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_proximity_placement_group_id: Option<String>,
    /// Capacity reservation group ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_capacity_reservation_group_id: Option<String>,
    /// Per unmanaged disk settings (disks of the failed-over VM); empty for managed disks.
    pub vm_disks: Vec<VmDiskInput>,
    /// Per managed disk settings (disks of the failed-over VM); empty for unmanaged disks.
    pub vm_managed_disks: Vec<VmManagedDiskInput>,
}

/// One unmanaged (VHD) disk of switch protection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmDiskInput {
    /// VHD URI of the disk of the VM as it runs now.
    pub disk_uri: String,
    /// Storage account the replica goes to, in the region replication goes to.
    pub recovery_azure_storage_account_id: String,
    /// Cache storage account in the region the VM runs in now.
    pub primary_staging_azure_storage_account_id: String,
}

/// One managed disk of switch protection; `None` fields are omitted (the service requires
/// `diskId`, `primaryStagingAzureStorageAccountId` and `recoveryResourceGroupId`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmManagedDiskInput {
    /// Managed disk ARM id of the failed-over VM's disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// Cache storage account in the region where the VM now runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_staging_azure_storage_account_id: Option<String>,
    /// Resource group for the disk on failback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_resource_group_id: Option<String>,
    /// Replica disk SKU, e.g. `Premium_LRS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_replica_disk_account_type: Option<String>,
    /// Target disk SKU, e.g. `Premium_LRS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_target_disk_account_type: Option<String>,
}

impl SwitchProtectionInput {
    /// A2A switch protection (reprotect) of `item_name`.
    pub fn a2a(item_name: impl Into<String>, details: A2ASwitchProtection) -> Self {
        Self {
            properties: SwitchProtectionInputProperties {
                replication_protected_item_name: item_name.into(),
                provider_specific_details: SwitchProtectionProviderInput { instance_type: A2A.to_owned(), details },
            },
        }
    }
}

/// Body of `POST {rpi}/remove` (disable replication with cleanup).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisableProtectionInput {
    /// Properties.
    pub properties: DisableProtectionInputProperties,
}

/// `properties` of [`DisableProtectionInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisableProtectionInputProperties {
    /// `NotSpecified` or `MigrationComplete`.
    pub disable_protection_reason: String,
    /// Provider input; A2A has none, so the base type's discriminator is sent.
    pub replication_provider_input: ProviderInput,
}

impl DisableProtectionInput {
    /// Disable protection: reason `NotSpecified`, base provider input
    /// (`DisableProtectionProviderSpecificInput`, as in the REST example; A2A defines no subtype).
    pub fn new() -> Self {
        Self {
            properties: DisableProtectionInputProperties {
                disable_protection_reason: "NotSpecified".to_owned(),
                replication_provider_input: ProviderInput {
                    instance_type: "DisableProtectionProviderSpecificInput".to_owned(),
                },
            },
        }
    }
}

impl Default for DisableProtectionInput {
    fn default() -> Self {
        Self::new()
    }
}

/// A2A entry of a recovery-plan failover's `providerSpecificDetails` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanA2AFailoverDetails {
    /// `A2A`.
    pub instance_type: String,
    /// `Latest`, `LatestProcessed`, `LatestApplicationConsistent` or `LatestCrashConsistent`.
    pub recovery_point_type: String,
    /// `UsePerVmRecoveryPoint` or `UseMultiVmSyncRecoveryPoint`.
    pub multi_vm_sync_point_option: String,
}

impl PlanA2AFailoverDetails {
    fn new(recovery_point_type: &str) -> Self {
        Self {
            instance_type: A2A.to_owned(),
            recovery_point_type: recovery_point_type.to_owned(),
            multi_vm_sync_point_option: "UsePerVmRecoveryPoint".to_owned(),
        }
    }
}

/// Body of `POST {rp}/unplannedFailover`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFailoverInput {
    /// Properties.
    pub properties: PlanFailoverInputProperties,
}

/// `properties` of [`PlanFailoverInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFailoverInputProperties {
    /// `PrimaryToRecovery` or `RecoveryToPrimary` (plan fabrics never flip).
    pub failover_direction: String,
    /// `Required` or `NotRequired`.
    pub source_site_operations: String,
    /// One entry per provider.
    pub provider_specific_details: Vec<PlanA2AFailoverDetails>,
}

impl PlanFailoverInput {
    /// A2A recovery-plan unplanned failover using per-VM recovery points of `recovery_point_type`.
    pub fn a2a(direction: &str, shut_down_source: bool, recovery_point_type: &str) -> Self {
        Self {
            properties: PlanFailoverInputProperties {
                failover_direction: direction.to_owned(),
                source_site_operations: source_site_operations(shut_down_source),
                provider_specific_details: vec![PlanA2AFailoverDetails::new(recovery_point_type)],
            },
        }
    }
}

/// Body of `POST {rp}/testFailover`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanTestFailoverInput {
    /// Properties.
    pub properties: PlanTestFailoverInputProperties,
}

/// `properties` of [`PlanTestFailoverInput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanTestFailoverInputProperties {
    /// `PrimaryToRecovery` or `RecoveryToPrimary`.
    pub failover_direction: String,
    /// `VmNetworkAsInput` or `NoNetworkAttachAsInput`.
    pub network_type: String,
    /// Test network ARM id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    /// One entry per provider.
    pub provider_specific_details: Vec<PlanA2AFailoverDetails>,
}

impl PlanTestFailoverInput {
    /// A2A recovery-plan test failover into `network_id` (none attached when `None`), using the
    /// latest processed per-VM recovery points (the PowerShell default for test failover).
    pub fn a2a(direction: &str, network_id: Option<String>) -> Self {
        Self {
            properties: PlanTestFailoverInputProperties {
                failover_direction: direction.to_owned(),
                network_type: network_type(&network_id),
                network_id,
                provider_specific_details: vec![PlanA2AFailoverDetails::new("LatestProcessed")],
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_time_accepts_asr_forms() {
        let t = parse_time("2025-04-09T08:49:20.8930892Z").expect("7 fractional digits");
        assert_eq!((t.year(), t.hour(), t.minute(), t.second()), (2025, 8, 49, 20));
        assert_eq!(t.nanosecond(), 893_089_200);

        let t = parse_time("2025-04-09T08:58:22Z").expect("whole seconds");
        assert_eq!(t.unix_timestamp(), 1_744_189_102);

        let t = parse_time("0001-01-01T00:00:00").expect("no offset");
        assert_eq!((t.year(), t.offset().is_utc()), (1, true));
        assert!(!is_real_time(t));

        let t = parse_time("1753-01-01T01:01:01Z").expect("idle scenario start");
        assert_eq!(t.year(), 1753);
        assert!(!is_real_time(t));

        let t = parse_time("9999-12-31T23:59:59.9999999").expect("no offset, fraction");
        assert_eq!(t.year(), 9999);

        let t = parse_time("2025-04-09T10:58:22+02:00").expect("offset");
        assert_eq!(t.unix_timestamp(), 1_744_189_102);

        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("not a time"), None);
        assert_eq!(parse_time("2025-04-09T08:58:22-0"), None);
    }

    #[test]
    fn job_state_parse_keeps_unknown_values() {
        assert_eq!(JobState::parse("succeeded"), JobState::Succeeded);
        assert_eq!(JobState::parse("InProgress"), JobState::InProgress);
        assert_eq!(JobState::parse("Canceled"), JobState::Cancelled);
        assert_eq!(JobState::parse("Other"), JobState::Other("Other".into()));
        assert_eq!(JobState::parse("Paused"), JobState::Other("Paused".into()));
        assert!(JobState::parse("Failed").is_terminal());
        assert!(JobState::parse("cancelled").is_terminal());
        assert!(!JobState::parse("Suspended").is_terminal());
        assert!(!JobState::parse("Paused").is_terminal());
        assert_eq!(JobState::parse("Paused").to_string(), "Paused");
    }

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

    #[test]
    fn job_helpers() {
        let job: Job = serde_json::from_value(json!({
            "id": "j", "name": "j",
            "properties": {
                "state": "Failed",
                "errors": [],
                "tasks": [
                    {"name": "a", "state": "Succeeded", "startTime": "2025-04-09T08:49:20Z", "errors": []},
                    {"name": "b", "state": "Failed", "startTime": "2025-04-09T08:50:20Z",
                     "errors": [{"providerErrorDetails": {"errorCode": 28031, "errorMessage": "VM create failed",
                                 "recommendedAction": "Check quota"}}]},
                    {"name": "c", "state": "NotStarted", "startTime": "0001-01-01T00:00:00", "errors": []}
                ]
            }
        }))
        .expect("job");
        assert_eq!(job.state(), JobState::Failed);
        assert_eq!(job.current_task().and_then(|t| t.name.as_deref()), Some("b"));
        assert_eq!(
            job.first_error(),
            Some(("28031".into(), "VM create failed".into(), None, Some("Check quota".into())))
        );
        assert_eq!(job.new_item_id(), None);
    }

    #[test]
    fn arm_error_helpers() {
        let body: ArmErrorBody = serde_json::from_value(json!({"error": {
            "code": "BadRequest", "message": "The operation has failed.",
            "details": [{"code": "SubscriptionIdNotRegisteredWithSrs", "message": "m",
                         "possibleCauses": "p", "recommendedAction": "r"}]
        }}))
        .expect("error body");
        assert_eq!(body.error.asr_code(), "SubscriptionIdNotRegisteredWithSrs");
        assert_eq!(body.error.recommended_action(), Some("r"));

        let numeric: ArmErrorBody = serde_json::from_value(
            json!({"error": {"code": 150261, "message": "Replication policy creation failed."}}),
        )
        .expect("numeric code");
        assert_eq!(numeric.error.asr_code(), "150261");
        assert_eq!(numeric.error.recommended_action(), None);
    }

    #[test]
    fn request_bodies_serialize_to_documented_json() {
        let rp = "/Subscriptions/s/.../recoveryPoints/p1".to_owned();
        assert_eq!(
            serde_json::to_value(UnplannedFailoverInput::a2a("RecoveryToPrimary", false, Some(rp.clone()))).unwrap(),
            json!({"properties": {
                "failoverDirection": "RecoveryToPrimary",
                "sourceSiteOperations": "NotRequired",
                "providerSpecificDetails": {"instanceType": "A2A", "recoveryPointId": rp}
            }})
        );
        assert_eq!(
            serde_json::to_value(UnplannedFailoverInput::a2a("PrimaryToRecovery", true, None)).unwrap(),
            json!({"properties": {
                "failoverDirection": "PrimaryToRecovery",
                "sourceSiteOperations": "Required",
                "providerSpecificDetails": {"instanceType": "A2A"}
            }})
        );
        assert_eq!(
            serde_json::to_value(TestFailoverInput::a2a("PrimaryToRecovery", Some("vnet".into()), None)).unwrap(),
            json!({"properties": {
                "failoverDirection": "PrimaryToRecovery", "networkType": "VmNetworkAsInput", "networkId": "vnet",
                "providerSpecificDetails": {"instanceType": "A2A"}
            }})
        );
        assert_eq!(
            serde_json::to_value(TestFailoverInput::a2a("PrimaryToRecovery", None, None)).unwrap(),
            json!({"properties": {
                "failoverDirection": "PrimaryToRecovery", "networkType": "NoNetworkAttachAsInput",
                "providerSpecificDetails": {"instanceType": "A2A"}
            }})
        );
        assert_eq!(
            serde_json::to_value(TestFailoverCleanupInput::new("done")).unwrap(),
            json!({"properties": {"comments": "done"}})
        );
        assert_eq!(serde_json::to_value(TestFailoverCleanupInput::new("")).unwrap(), json!({"properties": {}}));
        assert_eq!(
            serde_json::to_value(ApplyRecoveryPointInput::a2a(rp.clone())).unwrap(),
            json!({"properties": {"recoveryPointId": rp, "providerSpecificDetails": {"instanceType": "A2A"}}})
        );
        let switch = SwitchProtectionInput::a2a(
            "item1",
            A2ASwitchProtection {
                recovery_container_id: Some("c".into()),
                policy_id: Some("p".into()),
                recovery_resource_group_id: Some("rg".into()),
                vm_managed_disks: vec![VmManagedDiskInput {
                    disk_id: Some("d".into()),
                    primary_staging_azure_storage_account_id: Some("sa".into()),
                    recovery_resource_group_id: Some("rg".into()),
                    recovery_replica_disk_account_type: Some("Premium_LRS".into()),
                    recovery_target_disk_account_type: None,
                }],
                ..Default::default()
            },
        );
        assert_eq!(
            serde_json::to_value(switch).unwrap(),
            json!({"properties": {
                "replicationProtectedItemName": "item1",
                "providerSpecificDetails": {
                    "instanceType": "A2A", "recoveryContainerId": "c", "policyId": "p", "recoveryResourceGroupId": "rg",
                    "vmDisks": [],
                    "vmManagedDisks": [{"diskId": "d", "primaryStagingAzureStorageAccountId": "sa",
                                        "recoveryResourceGroupId": "rg", "recoveryReplicaDiskAccountType": "Premium_LRS"}]
                }
            }})
        );
        assert_eq!(
            serde_json::to_value(DisableProtectionInput::new()).unwrap(),
            json!({"properties": {
                "disableProtectionReason": "NotSpecified",
                "replicationProviderInput": {"instanceType": "DisableProtectionProviderSpecificInput"}
            }})
        );
        assert_eq!(
            serde_json::to_value(PlanFailoverInput::a2a("RecoveryToPrimary", true, "Latest")).unwrap(),
            json!({"properties": {
                "failoverDirection": "RecoveryToPrimary", "sourceSiteOperations": "Required",
                "providerSpecificDetails": [{"instanceType": "A2A", "recoveryPointType": "Latest",
                                             "multiVmSyncPointOption": "UsePerVmRecoveryPoint"}]
            }})
        );
        assert_eq!(
            serde_json::to_value(PlanTestFailoverInput::a2a("PrimaryToRecovery", None)).unwrap(),
            json!({"properties": {
                "failoverDirection": "PrimaryToRecovery", "networkType": "NoNetworkAttachAsInput",
                "providerSpecificDetails": [{"instanceType": "A2A", "recoveryPointType": "LatestProcessed",
                                             "multiVmSyncPointOption": "UsePerVmRecoveryPoint"}]
            }})
        );
    }
}
