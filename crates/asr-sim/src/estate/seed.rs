//! Seeding: the demo estate's VMs, protected items, replicas and recovery plans, in the state
//! the configuration asks for.

use time::Duration;

use super::resources::vm_disks;
use super::{Estate, Plan, Step};
use crate::clock::SimTime;
use crate::config::SeedState;
use crate::item::{Disk, Item, ItemState, Replication};

impl Estate {
    /// Adds `spec.vms` VMs in `spec.state` (names continue after existing ones), named
    /// `<vault prefix><spec prefix>-00001`... (the vault prefix is empty for the first vault).
    pub fn seed(&mut self, spec: &crate::config::SeedSpec) {
        let mut spec = spec.clone();
        spec.name_prefix = format!("{}{}", self.layout.vm_prefix, spec.name_prefix);
        let spec = &spec;
        let now = self.now();
        let start = self.items.len();
        let mut new_names = Vec::new();
        for i in start..start + spec.vms {
            let n = i + 1;
            let every = |k: usize| k > 0 && n % k == 0;
            let vm_name = format!("{}-{n:05}", spec.name_prefix);
            let lifecycle = self.guids.fresh();
            let (initial_primary, primary) = match spec.state {
                SeedState::Protected => (0, 0),
                SeedState::ReadyForFailback => (0, 1),
            };
            let replicating_since = now - Duration::hours(24);
            let late = every(spec.late_disk_every);
            let disks = vec![
                Disk::new(format!("{vm_name}_OsDisk_1_{}", &lifecycle[..8]), true, 136_367_308_800, replicating_since),
                Disk::new(
                    format!("{vm_name}_DataDisk_0"),
                    false,
                    274_877_906_944,
                    if late { now - Duration::hours(2) } else { replicating_since },
                ),
            ];
            let item = Item {
                name: vm_name.clone(),
                lifecycle_id: lifecycle.clone(),
                vm_name: vm_name.clone(),
                vm_size: "Standard_D2s_v3".into(),
                os_type: if n % 3 == 0 { "Linux" } else { "Windows" }.into(),
                initial_primary,
                primary,
                state: ItemState::Protected,
                unhealthy: every(spec.unhealthy_every),
                busy: None,
                disks,
                managed: !every(spec.unmanaged_every),
                points_since: Some(replicating_since),
                points_until: None,
                last_failover: (primary != initial_primary).then(|| now - Duration::hours(30)),
                last_reprotect: (primary != initial_primary).then(|| now - Duration::hours(24)),
                last_test_failover: None,
                failover_point: None,
                replication: None,
                test_network: None,
                group_id: self.guids.fresh(),
                plans: vec![],
                private_ips: [private_ip(0, n), private_ip(1, n)],
                static_recovery_ip: every(spec.static_recovery_ip_every),
            };
            if !item.managed {
                // The accounts the unmanaged disks' VHDs live in (both regions).
                for r in 0..2 {
                    let name = format!("{}vhds", self.regions[r].location);
                    self.add_storage_account(r, &name);
                }
            }
            let key = vm_name.to_ascii_lowercase();
            let vm_disks = vm_disks(&item.disks, |d| d.name.clone());
            let ip = item.private_ips[primary].clone();
            let vm_id = self.create_vm(primary, &vm_name, item.managed, vm_disks.clone(), None, ip);
            if every(spec.public_ip_every) {
                self.attach_public_ip(&vm_id, primary, &format!("{vm_name}-pip"));
            }
            if !self.cfg.reprotect_removes_source_vm && primary != initial_primary {
                // The VM left behind by the first failover, stopped, with its disks.
                let ip = item.private_ips[initial_primary].clone();
                let id = self.create_vm(initial_primary, &vm_name, item.managed, vm_disks, None, ip);
                if let Some(vm) = self.vms.get_mut(&id) {
                    vm.power = "deallocated";
                }
            }
            self.members[primary].insert(key.clone());
            self.by_lifecycle.insert(lifecycle, key.clone());
            self.item_of_vm.insert(vm_name.to_ascii_lowercase(), key.clone());
            self.items.insert(key.clone(), item);
            self.create_replicas(&key);
            new_names.push(key.clone());
            if every(spec.syncing_every) {
                self.seed_syncing(&key, now);
            }
        }
        if spec.recovery_plan_size > 0 {
            for (k, chunk) in new_names.chunks(spec.recovery_plan_size.min(100)).enumerate() {
                let name = format!("rp-{}-{:03}", spec.name_prefix, self.plans.len() + k + 1);
                let third = chunk.len().div_ceil(3).max(1);
                let groups: Vec<Vec<String>> = chunk.chunks(third).map(|g| g.to_vec()).collect();
                for g in &groups {
                    for i in g {
                        if let Some(item) = self.items.get_mut(i) {
                            item.plans.push(name.clone());
                        }
                    }
                }
                let primary = self.items.get(&chunk[0]).map_or(0, |i| i.initial_primary);
                self.plans.insert(
                    name.to_ascii_lowercase(),
                    Plan { name, primary, groups, busy: None, last_failover: None, last_test_failover: None },
                );
            }
        }
    }

    /// A seeded item in initial replication after a reprotect job that already succeeded (the
    /// job is in the job list): about 40% replicated, completing later with the two
    /// completion jobs (excerpt entries 41–143 show that phase after EnableDr).
    fn seed_syncing(&mut self, key: &str, now: SimTime) {
        let durations = self.cfg.effective_durations();
        let job_total = durations.reprotect.pick(0.5);
        // Long enough to still be replicating even with zero latency, and to have the job end
        // before now.
        let span = durations
            .initial_replication
            .pick(0.5)
            .max(std::time::Duration::from_secs(600))
            .max(job_total.mul_f64(3.0));
        let span = Duration::seconds_f64(span.as_secs_f64());
        let (since, until) = (now - span * 0.4, now + span * 0.6);
        let mut job = self.plan_reprotect_job(key, vec![], since, job_total, false);
        // The job already re-homed the item where it was seeded.
        job.new_item_id =
            Some(self.items[key].id(&self.scope, &self.regions).replacen("/Subscriptions/", "/subscriptions/", 1));
        // Shift the planned job so that it re-homed the item at `since`.
        let shift = since - job.rehome_at.unwrap_or(job.starts);
        job.created += shift;
        job.starts += shift;
        job.ends += shift;
        for t in &mut job.tasks {
            t.start += shift;
            t.end += shift;
        }
        job.rehome_at = Some(since);
        job.ir_end = Some(until);
        job.finished = true;
        self.insert_finished_job(job);
        let Some(item) = self.items.get_mut(key) else { return };
        item.state = ItemState::InitialReplication;
        item.unhealthy = false; // as after any reprotect job
        item.points_since = None;
        item.replication = Some(Replication { since, until, failed: None });
        let lifecycle = item.lifecycle_id.clone();
        self.schedule(until, Step::IrEnd(lifecycle));
    }
}

/// The private address of the `n`th seeded VM's NIC in `region`: one /16 per region
/// (10.0.0.0/16 and 10.1.0.0/16 for the first 62,500 VMs), hosts from .4 as Azure reserves the
/// first four addresses of a subnet; unique per vault, as each vault's VMs have their own
/// networks.
pub(crate) fn private_ip(region: usize, n: usize) -> String {
    let k = n.saturating_sub(1);
    let block = k / 250;
    format!("10.{}.{}.{}", region + 2 * (block / 256), block % 256, k % 250 + 4)
}
