//! How a vault is laid out: replication fabrics, protection containers, container mappings,
//! replication policies and recovery plans.

use serde::{Deserialize, Serialize};

use super::item::CurrentScenario;
use super::{lenient_i64, non_empty, null_default};

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
