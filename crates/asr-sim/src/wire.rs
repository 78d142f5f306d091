//! The ARM/ASR JSON shapes the simulator reads and writes, field names as in the REST spec.
//!
//! Every struct keeps the fields it does not model in `extra`, so an official example
//! deserializes and serializes back to the same JSON (absent and `null` being equivalent, as
//! they are to every ARM client). Unset options serialize as `null`, as ASR itself does.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a struct does not model, kept verbatim.
pub type Extra = Map<String, Value>;

/// An ARM resource envelope.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Resource<P> {
    pub id: String,
    pub name: String,
    /// `type` is read-only and optional in ARM (job examples omit it).
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub properties: P,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A page of a list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Page<T> {
    pub value: Vec<T>,
    pub next_link: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Replication protected items

/// `ReplicationProtectedItemProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectedItemProperties {
    pub friendly_name: Option<String>,
    pub protected_item_type: Option<String>,
    pub protectable_item_id: Option<String>,
    pub recovery_services_provider_id: Option<String>,
    pub primary_fabric_friendly_name: Option<String>,
    pub primary_fabric_provider: Option<String>,
    pub recovery_fabric_friendly_name: Option<String>,
    pub recovery_fabric_id: Option<String>,
    pub primary_protection_container_friendly_name: Option<String>,
    pub recovery_protection_container_friendly_name: Option<String>,
    pub protection_state: Option<String>,
    pub protection_state_description: Option<String>,
    pub active_location: Option<String>,
    pub test_failover_state: Option<String>,
    pub test_failover_state_description: Option<String>,
    pub switch_provider_state: Option<String>,
    pub switch_provider_state_description: Option<String>,
    pub allowed_operations: Option<Vec<String>>,
    pub replication_health: Option<String>,
    pub failover_health: Option<String>,
    pub health_errors: Option<Vec<HealthError>>,
    pub policy_id: Option<String>,
    pub policy_friendly_name: Option<String>,
    pub last_successful_failover_time: Option<String>,
    pub last_successful_test_failover_time: Option<String>,
    pub current_scenario: Option<CurrentScenario>,
    pub failover_recovery_point_id: Option<String>,
    pub provider_specific_details: Option<ProviderDetails>,
    pub recovery_container_id: Option<String>,
    pub event_correlation_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CurrentScenarioDetails`: the operation running on an item ("None" when idle).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CurrentScenario {
    pub scenario_name: Option<String>,
    pub job_id: Option<String>,
    pub start_time: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `HealthError` (the fields the simulator sets; the rest is kept in `extra`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthError {
    pub error_code: Option<String>,
    pub error_level: Option<String>,
    pub error_category: Option<String>,
    pub summary_message: Option<String>,
    pub error_message: Option<String>,
    pub possible_causes: Option<String>,
    pub recommended_action: Option<String>,
    pub creation_time_utc: Option<String>,
    pub customer_resolvability: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `providerSpecificDetails` of a protected item: typed for A2A, kept whole for other providers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderDetails {
    pub instance_type: String,
    pub fabric_object_id: Option<String>,
    pub initial_primary_fabric_location: Option<String>,
    pub initial_recovery_fabric_location: Option<String>,
    pub initial_primary_zone: Option<String>,
    pub initial_recovery_zone: Option<String>,
    pub primary_fabric_location: Option<String>,
    pub recovery_fabric_location: Option<String>,
    pub os_type: Option<String>,
    #[serde(rename = "recoveryAzureVMSize")]
    pub recovery_azure_vm_size: Option<String>,
    #[serde(rename = "recoveryAzureVMName")]
    pub recovery_azure_vm_name: Option<String>,
    pub recovery_azure_resource_group_id: Option<String>,
    pub recovery_availability_set: Option<String>,
    pub recovery_availability_zone: Option<String>,
    pub recovery_proximity_placement_group_id: Option<String>,
    pub recovery_capacity_reservation_group_id: Option<String>,
    pub selected_recovery_azure_network_id: Option<String>,
    pub selected_tfo_azure_network_id: Option<String>,
    pub recovery_fabric_object_id: Option<String>,
    pub test_failover_recovery_fabric_object_id: Option<String>,
    pub monitoring_percentage_completion: Option<i64>,
    pub monitoring_job_type: Option<String>,
    pub lifecycle_id: Option<String>,
    pub rpo_in_seconds: Option<i64>,
    pub last_rpo_calculated_time: Option<String>,
    pub last_heartbeat: Option<String>,
    pub vm_protection_state: Option<String>,
    pub vm_protection_state_description: Option<String>,
    pub protected_managed_disks: Option<Vec<ManagedDisk>>,
    pub protected_disks: Option<Vec<UnmanagedDisk>>,
    pub unprotected_disks: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2AProtectedManagedDiskDetails`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedDisk {
    pub disk_id: Option<String>,
    pub disk_name: Option<String>,
    pub disk_capacity_in_bytes: Option<i64>,
    pub disk_type: Option<String>,
    pub disk_state: Option<String>,
    pub recovery_resource_group_id: Option<String>,
    pub recovery_target_disk_id: Option<String>,
    pub recovery_replica_disk_id: Option<String>,
    pub recovery_replica_disk_account_type: Option<String>,
    pub recovery_target_disk_account_type: Option<String>,
    pub primary_staging_azure_storage_account_id: Option<String>,
    pub resync_required: Option<bool>,
    pub monitoring_percentage_completion: Option<i64>,
    pub monitoring_job_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2AProtectedDiskDetails` (unmanaged disks).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct UnmanagedDisk {
    pub disk_uri: Option<String>,
    pub disk_name: Option<String>,
    pub disk_capacity_in_bytes: Option<i64>,
    pub disk_type: Option<String>,
    pub disk_state: Option<String>,
    pub recovery_azure_storage_account_id: Option<String>,
    pub primary_disk_azure_storage_account_id: Option<String>,
    pub recovery_disk_uri: Option<String>,
    pub primary_staging_azure_storage_account_id: Option<String>,
    pub resync_required: Option<bool>,
    pub monitoring_percentage_completion: Option<i64>,
    pub monitoring_job_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Recovery points

/// `RecoveryPointProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointProperties {
    pub recovery_point_time: Option<String>,
    pub recovery_point_type: Option<String>,
    pub provider_specific_details: Option<RecoveryPointDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2ARecoveryPointDetails`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointDetails {
    pub instance_type: String,
    pub recovery_point_sync_type: Option<String>,
    pub disks: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// `JobProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct JobProperties {
    pub activity_id: Option<String>,
    pub scenario_name: Option<String>,
    pub friendly_name: Option<String>,
    pub state: Option<String>,
    pub state_description: Option<String>,
    pub tasks: Option<Vec<JobTask>>,
    pub errors: Option<Vec<JobError>>,
    /// Absent (not `null`) while a job is a placeholder (A2AFailoverCommit-excerpt entry 147).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Absent (not `null`) until the job has ended (excerpt entries 141–142).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub allowed_actions: Option<Vec<String>>,
    pub target_object_id: Option<String>,
    pub target_object_name: Option<String>,
    pub target_instance_type: Option<String>,
    pub custom_details: Option<JobDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ASRTask`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct JobTask {
    pub task_id: Option<String>,
    pub name: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub allowed_actions: Option<Vec<String>>,
    pub friendly_name: Option<String>,
    pub state: Option<String>,
    pub state_description: Option<String>,
    pub task_type: Option<String>,
    pub custom_details: Option<Value>,
    pub group_task_custom_details: Option<Value>,
    pub errors: Option<Vec<JobError>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `JobErrorDetails`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct JobError {
    pub service_error_details: Option<ServiceError>,
    pub provider_error_details: Option<ProviderError>,
    pub error_level: Option<String>,
    pub creation_time: Option<String>,
    pub task_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ServiceError`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceError {
    pub code: Option<String>,
    pub message: Option<String>,
    pub possible_causes: Option<String>,
    pub recommended_action: Option<String>,
    pub activity_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ProviderError`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderError {
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub error_id: Option<String>,
    pub possible_causes: Option<String>,
    pub recommended_action: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `JobDetails` and its variants (`instanceType` says which).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct JobDetails {
    pub instance_type: String,
    pub affected_object_details: Option<Map<String, Value>>,
    /// `SwitchProtectionJobDetails`: the item's id after it was re-homed. Absent from the other
    /// variants (excerpt entries 147, 177); a switch-protection job carries it as `null` until
    /// set (reprotect entry 17), through `extra`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_replication_protected_item_id: Option<String>,
    /// `FailoverJobDetails` / `TestFailoverJobDetails`; absent from the other variants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_item_details: Option<Vec<FailoverItemDetails>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `FailoverReplicationProtectedItemDetails`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverItemDetails {
    pub name: Option<String>,
    pub friendly_name: Option<String>,
    pub test_vm_name: Option<String>,
    pub test_vm_friendly_name: Option<String>,
    pub network_connection_status: Option<String>,
    pub network_friendly_name: Option<String>,
    pub subnet: Option<String>,
    pub recovery_point_id: Option<String>,
    pub recovery_point_time: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of an `Azure-AsyncOperation` status URL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OperationStatus {
    pub id: String,
    pub name: String,
    pub status: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ArmErrorDetail>,
}

// ---------------------------------------------------------------------------------------------
// Topology

/// `FabricProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FabricProperties {
    pub friendly_name: Option<String>,
    pub internal_identifier: Option<String>,
    pub bcdr_state: Option<String>,
    pub custom_details: Option<Value>,
    pub health_error_details: Option<Vec<Value>>,
    pub health: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ProtectionContainerProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerProperties {
    pub fabric_friendly_name: Option<String>,
    pub friendly_name: Option<String>,
    pub fabric_type: Option<String>,
    pub protected_item_count: Option<i64>,
    pub pairing_status: Option<String>,
    pub role: Option<String>,
    pub fabric_specific_details: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ProtectionContainerMappingProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MappingProperties {
    pub target_protection_container_id: Option<String>,
    pub target_protection_container_friendly_name: Option<String>,
    pub provider_specific_details: Option<Value>,
    pub health: Option<String>,
    pub health_error_details: Option<Vec<Value>>,
    pub policy_id: Option<String>,
    pub state: Option<String>,
    pub source_protection_container_friendly_name: Option<String>,
    pub source_fabric_friendly_name: Option<String>,
    pub target_fabric_friendly_name: Option<String>,
    pub policy_friendly_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `PolicyProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyProperties {
    pub friendly_name: Option<String>,
    pub provider_specific_details: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `RecoveryPlanProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanProperties {
    pub friendly_name: Option<String>,
    pub primary_fabric_id: Option<String>,
    pub primary_fabric_friendly_name: Option<String>,
    pub recovery_fabric_id: Option<String>,
    pub recovery_fabric_friendly_name: Option<String>,
    pub failover_deployment_model: Option<String>,
    pub replication_providers: Option<Vec<String>>,
    pub allowed_operations: Option<Vec<String>>,
    pub last_planned_failover_time: Option<String>,
    pub last_unplanned_failover_time: Option<String>,
    pub last_test_failover_time: Option<String>,
    pub current_scenario: Option<CurrentScenario>,
    pub current_scenario_status: Option<String>,
    pub current_scenario_status_description: Option<String>,
    pub groups: Option<Vec<RecoveryPlanGroup>>,
    pub provider_specific_details: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `RecoveryPlanGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanGroup {
    pub group_type: String,
    pub replication_protected_items: Option<Vec<RecoveryPlanItem>>,
    pub start_group_actions: Option<Vec<Value>>,
    pub end_group_actions: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `RecoveryPlanProtectedItem`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPlanItem {
    pub id: Option<String>,
    pub virtual_machine_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// A request wrapper: `{"properties": ...}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Input<P> {
    pub properties: P,
}

/// `UnplannedFailoverInputProperties` (item) — also `TestFailoverInputProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverInput {
    pub failover_direction: Option<String>,
    pub source_site_operations: Option<String>,
    pub network_type: Option<String>,
    pub network_id: Option<String>,
    pub provider_specific_details: Option<FailoverProviderInput>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2AUnplannedFailoverInput` / `A2ATestFailoverInput` / `A2AApplyRecoveryPointInput`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverProviderInput {
    pub instance_type: Option<String>,
    pub recovery_point_id: Option<String>,
    pub cloud_service_creation_option: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ApplyRecoveryPointInputProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ApplyRecoveryPointInput {
    pub recovery_point_id: Option<String>,
    pub provider_specific_details: Option<FailoverProviderInput>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Recovery plan `UnplannedFailover`/`TestFailover` input properties.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanFailoverInput {
    pub failover_direction: Option<String>,
    pub source_site_operations: Option<String>,
    pub network_type: Option<String>,
    pub network_id: Option<String>,
    pub provider_specific_details: Option<Vec<PlanProviderInput>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `RecoveryPlanA2AFailoverInput`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanProviderInput {
    pub instance_type: Option<String>,
    pub recovery_point_type: Option<String>,
    pub multi_vm_sync_point_option: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `SwitchProtectionInputProperties`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SwitchProtectionInput {
    pub replication_protected_item_name: Option<String>,
    pub provider_specific_details: Option<ReprotectProviderInput>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ReverseReplicationInputProperties` (generic reProtect).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReverseReplicationInput {
    pub failover_direction: Option<String>,
    pub provider_specific_details: Option<ReprotectProviderInput>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2ASwitchProtectionInput` / `A2AReprotectInput`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReprotectProviderInput {
    pub instance_type: Option<String>,
    pub recovery_container_id: Option<String>,
    pub policy_id: Option<String>,
    pub recovery_resource_group_id: Option<String>,
    pub recovery_availability_set_id: Option<String>,
    pub recovery_availability_zone: Option<String>,
    pub recovery_proximity_placement_group_id: Option<String>,
    pub recovery_capacity_reservation_group_id: Option<String>,
    /// `A2AVmManagedDiskInputDetails` (switch protection only; `A2AReprotectInput` has none).
    pub vm_managed_disks: Option<Vec<VmManagedDiskInput>>,
    /// `A2AVmDiskInputDetails` (unmanaged disks).
    pub vm_disks: Option<Vec<VmDiskInput>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2AVmManagedDiskInputDetails`: one managed disk of a switch protection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VmManagedDiskInput {
    pub disk_id: Option<String>,
    pub primary_staging_azure_storage_account_id: Option<String>,
    pub recovery_resource_group_id: Option<String>,
    pub recovery_replica_disk_account_type: Option<String>,
    pub recovery_target_disk_account_type: Option<String>,
    pub recovery_disk_encryption_set_id: Option<String>,
    pub disk_encryption_info: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `A2AVmDiskInputDetails`: one unmanaged (VHD) disk of a reprotect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VmDiskInput {
    pub disk_uri: Option<String>,
    pub recovery_azure_storage_account_id: Option<String>,
    pub primary_staging_azure_storage_account_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// ARM error envelope: `{"error": {...}}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ArmError {
    pub error: ArmErrorDetail,
}

/// ARM error body, with ASR's extra detail fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub possible_causes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommended_action: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmErrorDetail>,
}
