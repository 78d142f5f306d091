//! Compute, Network and Storage resources: VMs, NICs, managed disks (replicas included), public
//! IPs and storage accounts, indexed by lowercase ARM id; their reads, resource group lists and
//! deletes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::DeleteRecord;
use super::{Accepted, Estate, Refusal};
use crate::faults::Operation;
use crate::item::{Disk, replica_name, vhd_uri};
use crate::job::{Effect, FinalResult};

/// A VM in one of the regions.
#[derive(Clone, Debug)]
pub struct Vm {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// "running", "stopped" or "deallocated".
    pub power: &'static str,
    /// Managed disks.
    pub managed: bool,
    /// NIC ids.
    pub nics: Vec<String>,
    /// VM size.
    pub size: String,
    /// `vmId`.
    pub vm_id: String,
    /// Being deleted.
    pub deleting: bool,
    /// Disk names (OS disk first). Managed disks are resources in the VM's resource group
    /// (`Estate` keeps them); unmanaged ones are VHDs in the region's `<location>vhds` account.
    pub disks: Vec<String>,
    /// Test failover network, for test VMs.
    pub network: Option<String>,
}

/// A NIC in one of the regions.
#[derive(Clone, Debug)]
pub struct Nic {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// The VM it is attached to (lowercase id).
    pub vm: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// The public IP of its first IP configuration (lowercase id).
    pub public_ip: Option<String>,
    /// The private address of its first IP configuration.
    pub private_ip: String,
}

/// A managed disk (`Microsoft.Compute/disks`).
#[derive(Clone, Debug)]
pub struct ManagedDiskResource {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// Size in GiB.
    pub size_gb: i64,
    /// SKU (`Premium_LRS`, ...).
    pub sku: String,
    /// The VM it is attached to (lowercase id).
    pub managed_by: Option<String>,
    /// Being deleted.
    pub deleting: bool,
}

/// A public IP address (`Microsoft.Network/publicIPAddresses`).
#[derive(Clone, Debug)]
pub struct PublicIp {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// The NIC whose IP configuration uses it (lowercase id).
    pub nic: Option<String>,
    /// The address.
    pub address: String,
    /// Being deleted.
    pub deleting: bool,
}

/// A storage account (`Microsoft.Storage/storageAccounts`): a region's cache account, or the
/// account holding unmanaged VHDs.
#[derive(Clone, Debug)]
pub struct StorageAccount {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
}

impl Estate {
    /// Adds the vCPUs this vault holds in `location` to `into` (by lowercase family and
    /// `cores`): every VM not deallocated (a stopped VM keeps its allocation), and every
    /// failover or test failover under way towards it — its VM is counted from the moment the
    /// job is accepted (stingier than Azure, which takes the quota when the task creates the
    /// VM), so concurrent failovers cannot together overrun a quota.
    pub fn add_cores_in_use(&self, location: &str, into: &mut BTreeMap<String, u64>) {
        let mut add = |size: &str| {
            if let Some(s) = crate::capacity::size(size) {
                *into.entry(s.family.to_ascii_lowercase()).or_default() += u64::from(s.vcpus);
                *into.entry(crate::capacity::TOTAL.to_owned()).or_default() += u64::from(s.vcpus);
            }
        };
        for vm in self.vms.values() {
            if !vm.deleting
                && vm.power != "deallocated"
                && self.regions[vm.region].location.eq_ignore_ascii_case(location)
            {
                add(&vm.size);
            }
        }
        for job in self.active_jobs.iter().filter_map(|n| self.jobs.get(n)) {
            if job.finished
                || job.failure.is_some()
                || !matches!(job.operation, Operation::Failover | Operation::TestFailover)
            {
                continue;
            }
            let Some(item) = job.item.as_ref().and_then(|k| self.items.get(k)) else { continue };
            if self.regions[item.recovery()].location.eq_ignore_ascii_case(location) {
                add(&item.vm_size);
            }
        }
    }

    /// Why a VM of `size` cannot be created in region `region` now (Compute's words), from
    /// the subscription's allocation the server gave this estate.
    pub(super) fn capacity_refusal(&self, region: usize, size: &str) -> Option<String> {
        let location = self.regions[region].location.to_ascii_lowercase();
        let empty = BTreeMap::new();
        let in_use = self.subscription_in_use.get(&location).unwrap_or(&empty);
        self.cfg.capacity.refusal(&location, size, in_use)
    }

    /// Creates a running VM with one NIC (private address `private_ip`) and, when managed, its
    /// disks as resources in its resource group (attached to it); the lowercase VM id.
    pub(super) fn create_vm(
        &mut self,
        region: usize,
        name: &str,
        managed: bool,
        disks: Vec<NewDisk>,
        network: Option<String>,
        private_ip: String,
    ) -> String {
        let rg = self.regions[region].app_rg.clone();
        let id = self.scope.vm_id(&rg, name).to_ascii_lowercase();
        // The item's size (its `recoveryAzureVMSize`), which the VM is created with.
        let size = self
            .item_of_vm
            .get(&name.to_ascii_lowercase())
            .and_then(|k| self.items.get(k))
            .map_or_else(|| "Standard_D2s_v3".to_owned(), |i| i.vm_size.clone());
        let nic_name = format!("{name}-nic");
        let nic_id = self.scope.nic_id(&rg, &nic_name).to_ascii_lowercase();
        let vm_id = self.guids.fresh();
        for owned in [&id, &nic_id] {
            self.owners.insert(owned.clone(), name.to_owned());
        }
        if managed {
            for d in &disks {
                self.owners.insert(self.scope.disk_id(&rg, &d.name).to_ascii_lowercase(), name.to_owned());
            }
            for d in &disks {
                self.disks.insert(
                    self.scope.disk_id(&rg, &d.name).to_ascii_lowercase(),
                    ManagedDiskResource {
                        name: d.name.clone(),
                        rg: rg.clone(),
                        region,
                        size_gb: d.bytes / (1 << 30),
                        sku: d.sku.clone(),
                        managed_by: Some(id.clone()),
                        deleting: false,
                    },
                );
            }
        }
        self.vms.insert(
            id.clone(),
            Vm {
                name: name.to_owned(),
                rg: rg.clone(),
                region,
                power: "running",
                managed,
                nics: vec![nic_id.clone()],
                size,
                vm_id,
                deleting: false,
                disks: disks.into_iter().map(|d| d.name).collect(),
                network,
            },
        );
        // The failover-created VM's NIC gets no public IP (none is configured for recovery).
        self.nics.insert(
            nic_id,
            Nic { name: nic_name, rg, region, vm: Some(id.clone()), deleting: false, public_ip: None, private_ip },
        );
        id
    }

    /// Gives the first NIC of `vm` a new public IP `name` in the VM's resource group.
    pub(super) fn attach_public_ip(&mut self, vm: &str, region: usize, name: &str) {
        let Some(nic_id) = self.vms.get(vm).and_then(|v| v.nics.first().cloned()) else { return };
        let rg = self.regions[region].app_rg.clone();
        let id = self.public_ip_id(&rg, name).to_ascii_lowercase();
        if let Some(owner) = self.owners.get(vm).cloned() {
            self.owners.insert(id.clone(), owner);
        }
        let n = self.public_ips.len() as u32;
        let address = format!("20.{}.{}.{}", 40 + region * 10 + (n as usize >> 16), (n >> 8) & 0xff, (n & 0xff).max(1));
        self.public_ips.insert(
            id.clone(),
            PublicIp { name: name.to_owned(), rg, region, nic: Some(nic_id.clone()), address, deleting: false },
        );
        if let Some(nic) = self.nics.get_mut(&nic_id) {
            nic.public_ip = Some(id);
        }
    }

    /// Removes a VM with its NICs and managed disks (what ASR itself removes: a cancelled
    /// failover's VM, a test VM, the VM reprotect leaves behind). Public IPs stay, unassociated.
    pub(super) fn drop_vm(&mut self, id: &str) {
        if let Some(vm) = self.vms.remove(id) {
            for nic in vm.nics {
                self.remove_nic(&nic);
            }
            for d in &vm.disks {
                self.disks.remove(&self.scope.disk_id(&vm.rg, d).to_ascii_lowercase());
            }
        }
    }

    fn remove_nic(&mut self, id: &str) {
        if let Some(nic) = self.nics.remove(id)
            && let Some(pip) = nic.public_ip.and_then(|p| self.public_ips.get_mut(&p))
        {
            pip.nic = None;
        }
    }

    /// The replica disks of a managed item, `<disk>-ASRReplica` in the recovery region's
    /// application resource group, unattached (excerpt entry 144), while it replicates.
    pub(super) fn create_replicas(&mut self, key: &str) {
        let Some(item) = self.items.get(key) else { return };
        if !item.managed || !item.has_replicas() {
            return;
        }
        let region = item.recovery();
        let rg = self.regions[region].app_rg.clone();
        let replicas: Vec<(String, ManagedDiskResource)> = item
            .disks
            .iter()
            .map(|d| {
                let name = replica_name(&d.name);
                (
                    self.scope.disk_id(&rg, &name).to_ascii_lowercase(),
                    ManagedDiskResource {
                        name,
                        rg: rg.clone(),
                        region,
                        size_gb: d.bytes / (1 << 30),
                        sku: d.replica_type.clone().unwrap_or_else(|| "Premium_LRS".into()),
                        managed_by: None,
                        deleting: false,
                    },
                )
            })
            .collect();
        let vm = item.vm_name.clone();
        for (id, _) in &replicas {
            self.owners.insert(id.clone(), vm.clone());
        }
        self.disks.extend(replicas);
    }

    pub(super) fn remove_replicas(&mut self, key: &str) {
        let Some(item) = self.items.get(key) else { return };
        let rg = &self.regions[item.recovery()].app_rg;
        let ids: Vec<String> =
            item.disks.iter().map(|d| self.scope.disk_id(rg, &replica_name(&d.name)).to_ascii_lowercase()).collect();
        for id in ids {
            self.disks.remove(&id);
        }
    }

    pub(super) fn add_storage_account(&mut self, region: usize, name: &str) {
        let rg = self.regions[region].app_rg.clone();
        let account = StorageAccount { name: name.to_owned(), rg, region };
        let id = self.storage_id(&account).to_ascii_lowercase();
        self.storage.entry(id).or_insert(account);
    }

    /// This vault's storage accounts, as (ARM id, location).
    pub fn own_storage(&self) -> Vec<(String, String)> {
        self.storage.values().map(|a| (self.storage_id(a), self.regions[a.region].location.clone())).collect()
    }

    pub(super) fn storage_id(&self, a: &StorageAccount) -> String {
        format!("{}/providers/Microsoft.Storage/storageAccounts/{}", self.scope.rg_id(&a.rg), a.name)
    }

    fn public_ip_id(&self, rg: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/publicIPAddresses/{name}", self.scope.rg_id(rg))
    }

    /// The cache storage account of each region, by location (the ready line and `/_sim/info`).
    pub fn cache_storage_accounts(&self) -> BTreeMap<String, String> {
        self.regions
            .iter()
            .map(|r| {
                let a = StorageAccount { name: format!("{}asrcache", r.location), rg: r.app_rg.clone(), region: 0 };
                (r.location.clone(), self.storage_id(&a))
            })
            .collect()
    }

    /// This vault as the ready line and `/_sim/info` list it.
    pub fn vault_info(&self) -> crate::VaultInfo {
        crate::VaultInfo {
            subscription_id: self.scope.subscription.clone(),
            resource_group: self.scope.resource_group.clone(),
            vault: self.scope.vault.clone(),
            vault_id: self.scope.vault_id(),
            resource_groups: self.regions.iter().map(|r| (r.location.clone(), r.app_rg.clone())).collect(),
            vm_name_prefix: self.layout.vm_prefix.clone(),
            cache_storage_accounts: self.cache_storage_accounts(),
        }
    }

    fn resolve_rg(&self, rg: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.app_rg.eq_ignore_ascii_case(rg))
    }

    /// The entries of `map` (keyed by lowercase ARM id) under `prefix`: a range, not a scan.
    fn under<'a, T>(map: &'a BTreeMap<String, T>, prefix: &str) -> impl Iterator<Item = &'a T> + 'a {
        let prefix = prefix.to_ascii_lowercase();
        map.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(&prefix)).map(|(_, v)| v)
    }

    /// GET a VM (`instance_view`: with power state).
    pub fn get_vm(&self, rg: &str, name: &str, instance_view: bool) -> Result<Value, Refusal> {
        let id = self.scope.vm_id(rg, name).to_ascii_lowercase();
        self.vms
            .get(&id)
            .map(|vm| self.render_vm(vm, instance_view))
            .ok_or_else(|| compute_not_found("Microsoft.Compute/virtualMachines", rg, name))
    }

    /// A VM's instance view.
    pub fn vm_instance_view(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.vm_id(rg, name).to_ascii_lowercase();
        self.vms
            .get(&id)
            .map(instance_view)
            .ok_or_else(|| compute_not_found("Microsoft.Compute/virtualMachines", rg, name))
    }

    /// VMs of a resource group.
    pub fn list_vms(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Compute/virtualMachines/", self.scope.rg_id(rg));
        Ok(Self::under(&self.vms, &prefix).map(|v| self.render_vm(v, false)).collect())
    }

    fn render_vm(&self, vm: &Vm, with_view: bool) -> Value {
        let r = &self.regions[vm.region];
        let os_disk = vm.disks.first().cloned().unwrap_or_else(|| format!("{}_OsDisk_1", vm.name));
        // As Compute renders it (reprotect entry 15): managed disks by id and account type,
        // unmanaged ones by VHD URI.
        let disk_ref = |name: &str| {
            if vm.managed {
                let id = self.scope.disk_id(&vm.rg, name);
                let sku = self.disks.get(&id.to_ascii_lowercase()).map_or("Premium_LRS", |d| d.sku.as_str());
                json!({"managedDisk": {"storageAccountType": sku, "id": id}})
            } else {
                json!({"vhd": {"uri": vhd_uri(&r.location, name)}})
            }
        };
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        let storage = json!({
            "osDisk": with(json!({"name": os_disk, "createOption": "Attach"}), disk_ref(&os_disk)),
            "dataDisks": vm.disks.iter().skip(1).enumerate()
                .map(|(i, d)| with(json!({"lun": i, "name": d, "createOption": "Attach"}), disk_ref(d)))
                .collect::<Vec<_>>(),
        });
        let mut props = json!({
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.size},
            "storageProfile": storage,
            "networkProfile": {"networkInterfaces": vm.nics.iter().map(|n| json!({"id": self.nics.get(n).map(|nic| self.scope.nic_id(&nic.rg, &nic.name)).unwrap_or_else(|| n.clone())})).collect::<Vec<_>>()},
            "provisioningState": if vm.deleting { "Deleting" } else { "Succeeded" },
        });
        if with_view {
            props["instanceView"] = instance_view(vm);
        }
        json!({"id": self.scope.vm_id(&vm.rg, &vm.name), "name": vm.name, "type": "Microsoft.Compute/virtualMachines", "location": r.location, "tags": {}, "properties": props})
    }

    /// GET a NIC.
    pub fn get_nic(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.nic_id(rg, name).to_ascii_lowercase();
        self.nics
            .get(&id)
            .map(|n| self.render_nic(n))
            .ok_or_else(|| compute_not_found("Microsoft.Network/networkInterfaces", rg, name))
    }

    /// NICs of a resource group.
    pub fn list_nics(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Network/networkInterfaces/", self.scope.rg_id(rg));
        Ok(Self::under(&self.nics, &prefix).map(|n| self.render_nic(n)).collect())
    }

    fn render_nic(&self, nic: &Nic) -> Value {
        let id = self.scope.nic_id(&nic.rg, &nic.name);
        let vm =
            nic.vm.as_ref().and_then(|id| self.vms.get(id)).map(|vm| json!({"id": self.scope.vm_id(&vm.rg, &vm.name)}));
        let mut ip_props = json!({"privateIPAllocationMethod": "Dynamic", "privateIPAddress": nic.private_ip});
        if let Some(pip) = nic.public_ip.as_ref().and_then(|p| self.public_ips.get(p)) {
            ip_props["publicIPAddress"] = json!({"id": self.public_ip_id(&pip.rg, &pip.name)});
        }
        json!({"id": id, "name": nic.name, "type": "Microsoft.Network/networkInterfaces",
               "location": self.regions[nic.region].location,
               "properties": {"provisioningState": if nic.deleting { "Deleting" } else { "Succeeded" }, "virtualMachine": vm,
                              "ipConfigurations": [{"name": "ipconfig1", "id": format!("{id}/ipConfigurations/ipconfig1"), "properties": ip_props}]}})
    }

    /// GET a managed disk.
    pub fn get_disk(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.disk_id(rg, name).to_ascii_lowercase();
        self.disks
            .get(&id)
            .map(|d| self.render_disk(d))
            .ok_or_else(|| compute_not_found("Microsoft.Compute/disks", rg, name))
    }

    /// Managed disks of a resource group.
    pub fn list_disks(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Compute/disks/", self.scope.rg_id(rg));
        Ok(Self::under(&self.disks, &prefix).map(|d| self.render_disk(d)).collect())
    }

    fn render_disk(&self, d: &ManagedDiskResource) -> Value {
        let vm = d.managed_by.as_ref().and_then(|id| self.vms.get(id)).map(|vm| self.scope.vm_id(&vm.rg, &vm.name));
        let tier = if d.sku.starts_with("Premium") { "Premium" } else { "Standard" };
        json!({"id": self.scope.disk_id(&d.rg, &d.name), "name": d.name, "type": "Microsoft.Compute/disks",
               "location": self.regions[d.region].location, "managedBy": vm,
               "sku": {"name": d.sku, "tier": tier},
               "properties": {"diskSizeGB": d.size_gb, "diskState": if vm.is_some() { "Attached" } else { "Unattached" },
                              "provisioningState": if d.deleting { "Deleting" } else { "Succeeded" }}})
    }

    /// GET a public IP address.
    pub fn get_public_ip(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.public_ip_id(rg, name).to_ascii_lowercase();
        self.public_ips
            .get(&id)
            .map(|p| self.render_public_ip(p))
            .ok_or_else(|| compute_not_found("Microsoft.Network/publicIPAddresses", rg, name))
    }

    /// Public IP addresses of a resource group.
    pub fn list_public_ips(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Network/publicIPAddresses/", self.scope.rg_id(rg));
        Ok(Self::under(&self.public_ips, &prefix).map(|p| self.render_public_ip(p)).collect())
    }

    fn render_public_ip(&self, p: &PublicIp) -> Value {
        let mut props = json!({"provisioningState": if p.deleting { "Deleting" } else { "Succeeded" },
            "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4", "ipAddress": p.address});
        if let Some(nic) = p.nic.as_ref().and_then(|n| self.nics.get(n)) {
            let nic_id = self.scope.nic_id(&nic.rg, &nic.name);
            props["ipConfiguration"] = json!({"id": format!("{nic_id}/ipConfigurations/ipconfig1")});
        }
        json!({"id": self.public_ip_id(&p.rg, &p.name), "name": p.name, "type": "Microsoft.Network/publicIPAddresses",
               "location": self.regions[p.region].location, "sku": {"name": "Standard", "tier": "Regional"},
               "properties": props})
    }

    /// GET a storage account.
    pub fn get_storage_account(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id =
            format!("{}/providers/Microsoft.Storage/storageAccounts/{name}", self.scope.rg_id(rg)).to_ascii_lowercase();
        self.storage
            .get(&id)
            .map(|a| self.render_storage_account(a))
            .ok_or_else(|| compute_not_found("Microsoft.Storage/storageAccounts", rg, name))
    }

    /// Storage accounts of a resource group.
    pub fn list_storage_accounts(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Storage/storageAccounts/", self.scope.rg_id(rg));
        Ok(Self::under(&self.storage, &prefix).map(|a| self.render_storage_account(a)).collect())
    }

    fn render_storage_account(&self, a: &StorageAccount) -> Value {
        let location = &self.regions[a.region].location;
        json!({"id": self.storage_id(a), "name": a.name, "type": "Microsoft.Storage/storageAccounts",
               "location": location, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"},
               "properties": {"provisioningState": "Succeeded", "primaryLocation": location}})
    }

    /// DELETE a VM, NIC, managed disk or public IP: accepted, gone when the delete job ends.
    /// As in Azure (Compute and Network behaviour, no recording): deleting a VM keeps its NICs
    /// and disks (no `deleteOption` is set); an attached disk (409 OperationNotAllowed), a NIC
    /// in use (400 NicInUse) and an associated public IP (400 PublicIPAddressInUse) cannot be
    /// deleted.
    pub fn delete_resource(&mut self, kind: ResourceKind, rg: &str, name: &str) -> Result<Accepted, Refusal> {
        let (id, provider) = match kind {
            ResourceKind::Vm => (self.scope.vm_id(rg, name), "Microsoft.Compute/virtualMachines"),
            ResourceKind::Nic => (self.scope.nic_id(rg, name), "Microsoft.Network/networkInterfaces"),
            ResourceKind::Disk => (self.scope.disk_id(rg, name), "Microsoft.Compute/disks"),
            ResourceKind::PublicIp => (self.public_ip_id(rg, name), "Microsoft.Network/publicIPAddresses"),
        };
        let id = id.to_ascii_lowercase();
        let arm_error = |status: u16, code: &str, message: String| {
            let mut r = Refusal::new(status, code, message, code, "");
            r.body.error.details.clear();
            r
        };
        match kind {
            ResourceKind::Nic => {
                let attached = self.nics.get(&id).and_then(|n| n.vm.clone()).filter(|vm| self.vms.contains_key(vm));
                if let Some(vm) = attached {
                    return Err(arm_error(
                        400,
                        "NicInUse",
                        format!("Network interface {id} is used by virtual machine {vm} and cannot be deleted."),
                    ));
                }
            }
            ResourceKind::Disk => {
                let attached = self.disks.get(&id).and_then(|d| d.managed_by.clone()).and_then(|vm| self.vms.get(&vm));
                if let Some(vm) = attached {
                    return Err(arm_error(
                        409,
                        "OperationNotAllowed",
                        format!(
                            "Disk {name} is attached to VM {}. Detach the disk or delete the VM first.",
                            self.scope.vm_id(&vm.rg, &vm.name)
                        ),
                    ));
                }
            }
            ResourceKind::PublicIp => {
                let used = self.public_ips.get(&id).and_then(|p| p.nic.clone()).and_then(|n| self.nics.get(&n));
                if let Some(nic) = used {
                    return Err(arm_error(
                        400,
                        "PublicIPAddressInUse",
                        format!(
                            "Public IP address {} can not be deleted since it is still allocated to resource {}/ipConfigurations/ipconfig1.",
                            self.public_ip_id(rg, name),
                            self.scope.nic_id(&nic.rg, &nic.name)
                        ),
                    ));
                }
            }
            ResourceKind::Vm => {}
        }
        let exists = match kind {
            ResourceKind::Vm => self.vms.get_mut(&id).map(|v| v.deleting = true).is_some(),
            ResourceKind::Nic => self.nics.get_mut(&id).map(|n| n.deleting = true).is_some(),
            ResourceKind::Disk => self.disks.get_mut(&id).map(|d| d.deleting = true).is_some(),
            ResourceKind::PublicIp => self.public_ips.get_mut(&id).map(|p| p.deleting = true).is_some(),
        };
        if !exists {
            return Err(compute_not_found(provider, rg, name));
        }
        let kind_name = match kind {
            ResourceKind::Vm => "vm",
            ResourceKind::Nic => "nic",
            ResourceKind::Disk => "disk",
            ResourceKind::PublicIp => "public_ip",
        };
        let region = self.resolve_rg(rg).unwrap_or(0);
        let owner = self.owners.get(&id).cloned();
        self.record_delete(kind_name, id.clone(), region, owner);
        let now = self.now();
        let total = self.cfg.effective_durations().delete.pick(self.guids.unit());
        let failure = self.fault_for(Operation::Delete, name).map(|(_, f)| (0, f));
        let mut job = self.plan_job(
            "",
            Operation::Delete,
            "Delete",
            "Delete",
            now,
            &[("DeleteTask", "DeleteTask", "Deleting", 1.0)],
            failure,
            Effect::DeleteResource { id: id.clone() },
            total,
        );
        job.target_name = name.to_owned();
        job.target_type = "Resource";
        job.result = FinalResult::Nothing;
        let region = self.resolve_rg(rg).unwrap_or(0);
        job.location_base = format!(
            "/subscriptions/{}/providers/{}/locations/{}",
            self.scope.subscription,
            provider.split('/').next().unwrap_or("Microsoft.Compute"),
            self.regions[region].location
        );
        let location_base = job.location_base.clone();
        let job = self.insert_job(job);
        self.advance();
        Ok(Accepted { job, location_base, item: Some(name.to_owned()) })
    }

    /// Notes an accepted delete of `resource` (in region `region`) made for VM `owner`, with
    /// where that VM's protection stands now.
    pub(super) fn record_delete(&mut self, kind: &'static str, resource: String, region: usize, owner: Option<String>) {
        let item =
            owner.as_ref().and_then(|vm| self.item_of_vm.get(&vm.to_ascii_lowercase())).and_then(|k| self.items.get(k));
        let record = DeleteRecord {
            at: crate::clock::format(self.now()),
            kind,
            resource,
            region: self.regions[region].location.clone(),
            vm: owner,
            protection_state: item.map(|i| i.protection_state().0.to_owned()),
            reprotected: item.is_some_and(|i| {
                i.last_reprotect.is_some_and(|r| r <= self.now() && i.last_failover.is_none_or(|f| f <= r))
            }),
            // Failed over and not re-homed yet, a VM runs in its item's recovery region.
            vm_region: item.map(|i| {
                let running = match i.state {
                    crate::item::ItemState::FailedOver | crate::item::ItemState::Committed => i.recovery(),
                    _ => i.primary,
                };
                self.regions[running].location.clone()
            }),
        };
        self.deletes.push(record);
    }

    /// Every delete accepted so far, oldest first.
    pub fn deletes(&self) -> &[DeleteRecord] {
        &self.deletes
    }

    /// A delete job ended: the resource is gone. A VM's NICs and disks stay, detached; a NIC's
    /// public IP stays, unassociated.
    pub(super) fn delete_now(&mut self, id: &str) {
        if let Some(vm) = self.vms.remove(id) {
            for nic in vm.nics {
                if let Some(n) = self.nics.get_mut(&nic) {
                    n.vm = None;
                }
            }
            for d in vm.disks {
                if let Some(disk) = self.disks.get_mut(&self.scope.disk_id(&vm.rg, &d).to_ascii_lowercase()) {
                    disk.managed_by = None;
                }
            }
        } else if self.nics.contains_key(id) {
            self.remove_nic(id);
        } else if self.disks.remove(id).is_none() {
            self.public_ips.remove(id);
        }
    }
}

/// A Compute or Network resource kind that can be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// `Microsoft.Compute/virtualMachines`.
    Vm,
    /// `Microsoft.Network/networkInterfaces`.
    Nic,
    /// `Microsoft.Compute/disks`.
    Disk,
    /// `Microsoft.Network/publicIPAddresses`.
    PublicIp,
}

/// A disk a new VM gets.
#[derive(Clone, Debug)]
pub(super) struct NewDisk {
    name: String,
    bytes: i64,
    sku: String,
}

/// The disks of a VM made for `disks` (named by `name`).
pub(super) fn vm_disks(disks: &[Disk], name: impl Fn(&Disk) -> String) -> Vec<NewDisk> {
    disks.iter().map(|d| NewDisk { name: name(d), bytes: d.bytes, sku: d.sku().to_owned() }).collect()
}

fn instance_view(vm: &Vm) -> Value {
    json!({"statuses": [
        {"code": if vm.deleting { "ProvisioningState/deleting" } else { "ProvisioningState/succeeded" }, "level": "Info", "displayStatus": "Provisioning succeeded"},
        {"code": format!("PowerState/{}", vm.power), "level": "Info", "displayStatus": format!("VM {}", vm.power)},
    ]})
}

fn compute_not_found(provider: &str, rg: &str, name: &str) -> Refusal {
    let mut r = Refusal::new(
        404,
        "ResourceNotFound",
        format!("The Resource '{provider}/{name}' under resource group '{rg}' was not found."),
        "ResourceNotFound",
        "Check the name.",
    );
    r.body.error.details.clear();
    r
}

fn resource_group_not_found(rg: &str) -> Refusal {
    let mut r = Refusal::new(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
        "ResourceGroupNotFound",
        "Check the name.",
    );
    r.body.error.details.clear();
    r
}
