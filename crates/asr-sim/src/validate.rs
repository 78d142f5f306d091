//! Validation of reprotect requests, as Azure and Az PowerShell build and check them.
//!
//! A pure function over the parsed request and a small [`ReprotectWorld`] (what the estate
//! knows about the item and its surroundings), so a test can replay a recorded request body
//! against a world built from the same recording (A2AReprotectTest.json entries 13, 15 and 16).
//!
//! Evidence: the recorded switch-protection body (reprotect entry 16) that PowerShell's
//! `Update-AzRecoveryServicesAsrProtectionDirection -AzureToAzure` builds from the item
//! (entry 13) and the VM that runs now (entry 15): one `vmManagedDisks` entry per disk of that
//! VM, each with a staging (cache) account in the region the VM runs in, a recovery resource
//! group and disk types; `recoveryContainerId` and `policyId` of the container mapping
//! (asr-api.md §3.3(a), §11). Every rule here beyond what that body shows is a stricter reading
//! (the fidelity rule: where evidence is missing, refuse): see docs/azure-fidelity.md.
//! Each refusal is a 400 whose message names the JSON field path.

use std::collections::{BTreeMap, BTreeSet};

use crate::estate::Refusal;
use crate::wire::{
    ReprotectProviderInput, ReverseReplicationInput, SwitchProtectionInput, VmDiskInput, VmManagedDiskInput,
};

/// Managed disk types a replica or target disk may have (`recoveryReplicaDiskAccountType`,
/// `recoveryTargetDiskAccountType`; the spec's strings, recorded: Premium_LRS).
pub const DISK_ACCOUNT_TYPES: &[&str] = &[
    "Standard_LRS",
    "Premium_LRS",
    "StandardSSD_LRS",
    "Premium_ZRS",
    "StandardSSD_ZRS",
    "PremiumV2_LRS",
    "UltraSSD_LRS",
];

/// What a reprotect request is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReprotectWorld {
    /// ARM id of the protection container the item is in now (`recoveryContainerId` must be it:
    /// it becomes the recovery side; reprotect entry 16 names the item's own container).
    pub container_id: String,
    /// ARM ids of the vault's replication policies.
    pub policy_ids: Vec<String>,
    /// The item replicates managed disks (else unmanaged VHDs).
    pub managed: bool,
    /// The disks of the VM as it runs now: managed disk ARM ids (for a committed item, the VM
    /// in the recovery region: the item's `recoveryTargetDiskId`s), or VHD URIs (unmanaged).
    pub disks: Vec<String>,
    /// Known storage accounts: ARM id → location.
    pub storage_accounts: BTreeMap<String, String>,
    /// The location the VM runs in now (staging accounts must be there).
    pub running_location: String,
    /// The location it will replicate to (unmanaged recovery accounts must be there).
    pub target_location: String,
    /// Resource groups a recovery VM may be placed in (the simulator: the application resource
    /// group of the region the item will replicate to).
    pub recovery_resource_groups: Vec<String>,
}

/// What a valid request asks for one disk of the running VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskChoice {
    /// Index of the disk in `ReprotectWorld::disks`.
    pub index: usize,
    /// `primaryStagingAzureStorageAccountId`.
    pub staging_account: String,
    /// `recoveryAzureStorageAccountId` (unmanaged disks).
    pub recovery_account: Option<String>,
    /// `recoveryReplicaDiskAccountType`.
    pub replica_type: Option<String>,
    /// `recoveryTargetDiskAccountType`.
    pub target_type: Option<String>,
}

const DETAILS: &str = "properties.providerSpecificDetails";

/// Checks a `switchprotection` body (A2ASwitchProtectionInput). The disk choices, in request
/// order, when it is acceptable.
pub fn switch_protection(input: &SwitchProtectionInput, world: &ReprotectWorld) -> Result<Vec<DiskChoice>, Refusal> {
    if input.replication_protected_item_name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(Refusal::bad_request("properties.replicationProtectedItemName", "is required"));
    }
    let details = input.provider_specific_details.clone().unwrap_or_default();
    a2a(&details, world, true)
}

/// Checks a generic `reProtect` body (A2AReprotectInput). `A2AReprotectInput` has no
/// `vmManagedDisks` (asr-api.md §3.3(b)), so managed-disk items are refused: PowerShell and the
/// CLI reprotect them with switch protection.
pub fn reprotect(input: &ReverseReplicationInput, world: &ReprotectWorld) -> Result<Vec<DiskChoice>, Refusal> {
    if world.managed {
        return Err(Refusal::bad_request(
            DETAILS,
            "use switchprotection for managed-disk A2A items (A2AReprotectInput has no vmManagedDisks)",
        ));
    }
    let details = input.provider_specific_details.clone().unwrap_or_default();
    a2a(&details, world, false)
}

fn field(path: &str) -> String {
    format!("{DETAILS}.{path}")
}

fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn required<'a>(value: &'a Option<String>, path: &str) -> Result<&'a str, Refusal> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| Refusal::bad_request(path, "is required"))
}

fn a2a(d: &ReprotectProviderInput, world: &ReprotectWorld, switch: bool) -> Result<Vec<DiskChoice>, Refusal> {
    match d.instance_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("A2A") => {}
        Some(t) => return Err(Refusal::bad_request(&field("instanceType"), format!("'{t}' is not A2A"))),
        None => return Err(Refusal::bad_request(&field("instanceType"), "is required and must be A2A")),
    }
    // Reprotect entry 16 names the container the item is in now (uksouth), which becomes the
    // recovery side; PowerShell takes it from the reverse container mapping (asr-api.md §3.3(a)).
    let container = required(&d.recovery_container_id, &field("recoveryContainerId"))?;
    if !same(container, &world.container_id) {
        return Err(Refusal::bad_request(
            &field("recoveryContainerId"),
            format!(
                "must be the container the item is protected from now ({}); it becomes the recovery side",
                world.container_id
            ),
        ));
    }
    // Reprotect entry 16: the vault's policy (the mapping's).
    let policy = required(&d.policy_id, &field("policyId"))?;
    if !world.policy_ids.iter().any(|p| same(p, policy)) {
        return Err(Refusal::bad_request(
            &field("policyId"),
            format!("'{policy}' is not a replication policy of this vault"),
        ));
    }
    // Reprotect entry 16: the resource group the VM came from (vijami-alertrg).
    recovery_group(&d.recovery_resource_group_id, &field("recoveryResourceGroupId"), world)?;
    let managed_given = d.vm_managed_disks.as_deref().unwrap_or_default();
    let vhds_given = d.vm_disks.as_deref().unwrap_or_default();
    // Reprotect entry 16: `vmDisks: []` and one `vmManagedDisks` entry per disk of the VM of
    // entry 15 (the one that runs now); unmanaged items name VHDs instead (spec).
    if world.managed {
        if !vhds_given.is_empty() {
            return Err(Refusal::bad_request(&field("vmDisks"), "must be empty: the item replicates managed disks"));
        }
        if managed_given.is_empty() {
            return Err(Refusal::bad_request(
                &field("vmManagedDisks"),
                "is required: one entry per managed disk of the virtual machine as it runs now",
            ));
        }
        managed_disks(managed_given, world)
    } else {
        if !managed_given.is_empty() {
            let why =
                if switch { "must be empty: the item replicates unmanaged disks" } else { "is not an input here" };
            return Err(Refusal::bad_request(&field("vmManagedDisks"), why));
        }
        if vhds_given.is_empty() {
            return Err(Refusal::bad_request(
                &field("vmDisks"),
                "is required: one entry per disk (VHD) of the virtual machine as it runs now",
            ));
        }
        unmanaged_disks(vhds_given, world)
    }
}

fn recovery_group(value: &Option<String>, path: &str, world: &ReprotectWorld) -> Result<(), Refusal> {
    let rg = required(value, path)?;
    if world.recovery_resource_groups.iter().any(|g| same(g, rg)) {
        Ok(())
    } else {
        Err(Refusal::bad_request(
            path,
            format!(
                "'{rg}' is not a resource group the virtual machine can be recovered to (expected one of: {})",
                world.recovery_resource_groups.join(", ")
            ),
        ))
    }
}

fn account_in(value: &Option<String>, path: &str, location: &str, world: &ReprotectWorld) -> Result<String, Refusal> {
    let id = required(value, path)?;
    let found = world.storage_accounts.iter().find(|(known, _)| same(known, id));
    match found {
        None => Err(Refusal::bad_request(path, format!("the storage account '{id}' does not exist"))),
        Some((_, at)) if !at.eq_ignore_ascii_case(location) => {
            Err(Refusal::bad_request(path, format!("the storage account '{id}' is in {at}; it must be in {location}")))
        }
        Some(_) => Ok(id.to_owned()),
    }
}

fn disk_type(value: &Option<String>, path: &str) -> Result<Option<String>, Refusal> {
    match value.as_deref() {
        None => Ok(None),
        Some(t) => {
            DISK_ACCOUNT_TYPES.iter().find(|k| k.eq_ignore_ascii_case(t)).map(|k| Some((*k).to_owned())).ok_or_else(
                || Refusal::bad_request(path, format!("'{t}' is not one of {}", DISK_ACCOUNT_TYPES.join(", "))),
            )
        }
    }
}

/// The index of `disk` among the running VM's disks, refusing unknown disks and duplicates.
fn running_disk(disk: &str, path: &str, seen: &mut BTreeSet<usize>, world: &ReprotectWorld) -> Result<usize, Refusal> {
    let index = world.disks.iter().position(|d| same(d, disk)).ok_or_else(|| {
        Refusal::bad_request(
            path,
            format!(
                "'{disk}' is not a disk of the virtual machine as it runs now in {} (its disks: {})",
                world.running_location,
                world.disks.join(", ")
            ),
        )
    })?;
    if !seen.insert(index) {
        return Err(Refusal::bad_request(path, format!("'{disk}' is named twice")));
    }
    Ok(index)
}

fn every_disk_named(seen: &BTreeSet<usize>, path: &str, world: &ReprotectWorld) -> Result<(), Refusal> {
    match (0..world.disks.len()).find(|i| !seen.contains(i)) {
        None => Ok(()),
        Some(i) => Err(Refusal::bad_request(
            path,
            format!("every disk of the virtual machine must be named; '{}' is missing", world.disks[i]),
        )),
    }
}

fn managed_disks(given: &[VmManagedDiskInput], world: &ReprotectWorld) -> Result<Vec<DiskChoice>, Refusal> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, d) in given.iter().enumerate() {
        let at = |name: &str| field(&format!("vmManagedDisks[{i}].{name}"));
        let disk = required(&d.disk_id, &at("diskId"))?;
        let index = running_disk(disk, &at("diskId"), &mut seen, world)?;
        // Reprotect entry 16: the staging (cache) account is in ukwest, where the VM of entry 15
        // runs (reprotect mechanics doc: cache account in the region the failed-over VM runs in).
        let staging = account_in(
            &d.primary_staging_azure_storage_account_id,
            &at("primaryStagingAzureStorageAccountId"),
            &world.running_location,
            world,
        )?;
        recovery_group(&d.recovery_resource_group_id, &at("recoveryResourceGroupId"), world)?;
        let replica_type = disk_type(&d.recovery_replica_disk_account_type, &at("recoveryReplicaDiskAccountType"))?;
        let target_type = disk_type(&d.recovery_target_disk_account_type, &at("recoveryTargetDiskAccountType"))?;
        out.push(DiskChoice { index, staging_account: staging, recovery_account: None, replica_type, target_type });
    }
    every_disk_named(&seen, &field("vmManagedDisks"), world)?;
    Ok(out)
}

fn unmanaged_disks(given: &[VmDiskInput], world: &ReprotectWorld) -> Result<Vec<DiskChoice>, Refusal> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, d) in given.iter().enumerate() {
        let at = |name: &str| field(&format!("vmDisks[{i}].{name}"));
        let uri = required(&d.disk_uri, &at("diskUri"))?;
        let index = running_disk(uri, &at("diskUri"), &mut seen, world)?;
        let recovery = account_in(
            &d.recovery_azure_storage_account_id,
            &at("recoveryAzureStorageAccountId"),
            &world.target_location,
            world,
        )?;
        let staging = account_in(
            &d.primary_staging_azure_storage_account_id,
            &at("primaryStagingAzureStorageAccountId"),
            &world.running_location,
            world,
        )?;
        out.push(DiskChoice {
            index,
            staging_account: staging,
            recovery_account: Some(recovery),
            replica_type: None,
            target_type: None,
        });
    }
    every_disk_named(&seen, &field("vmDisks"), world)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Input;

    fn world() -> ReprotectWorld {
        ReprotectWorld {
            container_id: "/Subscriptions/s/c".into(),
            policy_ids: vec!["/Subscriptions/s/p".into()],
            managed: true,
            disks: vec!["/subscriptions/s/resourceGroups/b/providers/Microsoft.Compute/disks/os".into()],
            storage_accounts: BTreeMap::from([("/subscriptions/s/sa/cache".into(), "westus".into())]),
            running_location: "westus".into(),
            target_location: "eastus".into(),
            recovery_resource_groups: vec!["/subscriptions/s/resourceGroups/a".into()],
        }
    }

    fn body(disks: serde_json::Value) -> SwitchProtectionInput {
        let v = serde_json::json!({"properties": {"replicationProtectedItemName": "vm",
            "providerSpecificDetails": {"instanceType": "A2A", "recoveryContainerId": "/subscriptions/s/C",
                "policyId": "/subscriptions/s/p", "recoveryResourceGroupId": "/subscriptions/s/resourcegroups/a",
                "vmManagedDisks": disks}}});
        serde_json::from_value::<Input<SwitchProtectionInput>>(v).unwrap().properties
    }

    #[test]
    fn a_complete_body_passes_and_each_rule_names_its_field() {
        let ok = serde_json::json!([{"diskId": "/SUBSCRIPTIONS/s/resourceGroups/b/providers/Microsoft.Compute/disks/OS",
            "primaryStagingAzureStorageAccountId": "/subscriptions/s/sa/cache", "recoveryResourceGroupId": "/subscriptions/s/resourceGroups/a",
            "recoveryTargetDiskAccountType": "premium_lrs"}]);
        let choices = switch_protection(&body(ok.clone()), &world()).expect("accepted");
        assert_eq!(choices[0].target_type.as_deref(), Some("Premium_LRS"));
        let twice = serde_json::json!([ok[0], ok[0]]);
        let err = switch_protection(&body(twice), &world()).unwrap_err();
        assert!(err.body.error.message.contains("vmManagedDisks[1].diskId"), "{}", err.body.error.message);
        let mut bad_type = ok.clone();
        bad_type[0]["recoveryReplicaDiskAccountType"] = "Gold".into();
        let err = switch_protection(&body(bad_type), &world()).unwrap_err();
        assert!(err.body.error.message.contains("vmManagedDisks[0].recoveryReplicaDiskAccountType"));
        let err = switch_protection(&body(serde_json::json!([])), &world()).unwrap_err();
        assert!(err.body.error.message.contains("providerSpecificDetails.vmManagedDisks'"));
    }
}
