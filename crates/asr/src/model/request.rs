//! Request bodies of the ASR actions the orchestrator posts: item failover, test failover and
//! its cleanup, apply recovery point, switch protection (reprotect), disable protection, and
//! recovery-plan failover / test failover.

use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
