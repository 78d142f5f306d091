//! The Compute / Network / Storage resources cleanup and reprotect read: virtual machines,
//! network interfaces, managed disks, public IP addresses and storage accounts.

use serde::{Deserialize, Serialize};

use super::{non_empty, null_default};

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

/// One quota of a region (`GET …/providers/Microsoft.Compute/locations/{l}/usages`, Compute
/// REST "Usage - List": `value[]` of `{unit: "Count", currentValue, limit, name: {value,
/// localizedValue}}`). `name.value` is a VM family (`standardDSv3Family`) or `cores`, the
/// regional total; both count vCPUs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    /// What is counted.
    pub name: UsageName,
    /// In use now.
    pub current_value: i64,
    /// The quota.
    pub limit: i64,
    /// `Count`.
    pub unit: Option<String>,
}

/// `name` of a [`Usage`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageName {
    /// e.g. `standardDSv3Family`, `cores`.
    #[serde(deserialize_with = "null_default")]
    pub value: String,
    /// e.g. `Standard DSv3 Family vCPUs`.
    pub localized_value: Option<String>,
}

/// A resource SKU (`GET /subscriptions/{s}/providers/Microsoft.Compute/skus`, Compute REST
/// "Resource Skus - List"); only `resourceType: virtualMachines` ones are sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceSku {
    /// e.g. `virtualMachines`.
    #[serde(deserialize_with = "null_default")]
    pub resource_type: String,
    /// e.g. `Standard_D2s_v3`.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The quota family, e.g. `standardDSv3Family`.
    pub family: Option<String>,
    /// Regions it is listed in.
    #[serde(deserialize_with = "null_default")]
    pub locations: Vec<String>,
    /// e.g. `{name: "vCPUs", value: "2"}`.
    #[serde(deserialize_with = "null_default")]
    pub capabilities: Vec<SkuCapability>,
    /// Where it is not offered, and why.
    #[serde(deserialize_with = "null_default")]
    pub restrictions: Vec<SkuRestriction>,
}

impl ResourceSku {
    /// Its vCPUs (`capabilities[vCPUs]`).
    pub fn vcpus(&self) -> Option<u32> {
        self.capabilities.iter().find(|c| c.name.eq_ignore_ascii_case("vCPUs")).and_then(|c| c.value.parse().ok())
    }

    /// The restriction that keeps it out of `region` (a `Location` restriction naming it), if any.
    pub fn restricted_in(&self, region: &str) -> Option<&SkuRestriction> {
        self.restrictions.iter().find(|r| {
            r.kind.eq_ignore_ascii_case("Location")
                && (r.values.iter().any(|v| v.eq_ignore_ascii_case(region))
                    || r.restriction_info
                        .as_ref()
                        .is_some_and(|i| i.locations.iter().any(|v| v.eq_ignore_ascii_case(region))))
        })
    }
}

/// `capabilities[]` of a [`ResourceSku`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkuCapability {
    /// e.g. `vCPUs`.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// e.g. `2` (always a string).
    #[serde(deserialize_with = "null_default")]
    pub value: String,
}

/// `restrictions[]` of a [`ResourceSku`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkuRestriction {
    /// `Location` or `Zone`.
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    /// The locations (or zones) restricted.
    #[serde(deserialize_with = "null_default")]
    pub values: Vec<String>,
    /// Where.
    pub restriction_info: Option<SkuRestrictionInfo>,
    /// `QuotaId` or `NotAvailableForSubscription`.
    pub reason_code: Option<String>,
}

/// `restrictionInfo` of a [`SkuRestriction`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkuRestrictionInfo {
    /// Locations.
    #[serde(deserialize_with = "null_default")]
    pub locations: Vec<String>,
    /// Zones.
    #[serde(deserialize_with = "null_default")]
    pub zones: Vec<String>,
}
