//! ARM ids of the simulated estate, spelled the way ASR spells them (`/Subscriptions/` for
//! Site Recovery resources, `/subscriptions/` for Compute and Network), and seeded GUIDs.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// The fixed part of every id.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Subscription id.
    pub subscription: String,
    /// Vault resource group.
    pub resource_group: String,
    /// Vault name.
    pub vault: String,
}

impl Scope {
    /// `/Subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`.
    pub fn vault_id(&self) -> String {
        format!(
            "/Subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            self.subscription, self.resource_group, self.vault
        )
    }

    /// A fabric.
    pub fn fabric_id(&self, fabric: &str) -> String {
        format!("{}/replicationFabrics/{fabric}", self.vault_id())
    }

    /// A protection container.
    pub fn container_id(&self, fabric: &str, container: &str) -> String {
        format!("{}/replicationProtectionContainers/{container}", self.fabric_id(fabric))
    }

    /// A protected item.
    pub fn item_id(&self, fabric: &str, container: &str, item: &str) -> String {
        format!("{}/replicationProtectedItems/{item}", self.container_id(fabric, container))
    }

    /// A job.
    pub fn job_id(&self, job: &str) -> String {
        format!("{}/replicationJobs/{job}", self.vault_id())
    }

    /// The replication policy.
    pub fn policy_id(&self, policy: &str) -> String {
        format!("{}/replicationPolicies/{policy}", self.vault_id())
    }

    /// A recovery plan.
    pub fn plan_id(&self, plan: &str) -> String {
        format!("{}/replicationRecoveryPlans/{plan}", self.vault_id())
    }

    /// `/subscriptions/{s}/resourceGroups/{rg}`.
    pub fn rg_id(&self, rg: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{rg}", self.subscription)
    }

    /// A VM.
    pub fn vm_id(&self, rg: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Compute/virtualMachines/{name}", self.rg_id(rg))
    }

    /// A NIC.
    pub fn nic_id(&self, rg: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/networkInterfaces/{name}", self.rg_id(rg))
    }

    /// A managed disk.
    pub fn disk_id(&self, rg: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Compute/disks/{name}", self.rg_id(rg))
    }
}

/// Seeded GUIDs, so two runs with the same seed produce the same ids.
#[derive(Debug)]
pub struct Guids {
    rng: StdRng,
}

impl Guids {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed ^ 0x7e27_a5a5_0000_0001) }
    }

    /// The next GUID.
    pub fn fresh(&mut self) -> String {
        format_guid(self.rng.random())
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.rng.random()
    }
}

/// A GUID derived from a name, stable across runs (e.g. recovery point names).
pub fn guid_of(parts: &[&str]) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
    }
    format_guid(h)
}

/// A GUID (8-4-4-4-12 lower-case hex, version 4) from 128 bits.
pub fn format_guid(v: u128) -> String {
    let b = v.to_be_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    // Version 4 / variant 1 bits, so the values look like what Azure hands out.
    let mut third = hex(6..8);
    third.replace_range(0..1, "4");
    let mut fourth = hex(8..10);
    fourth.replace_range(0..1, "8");
    format!("{}-{}-{}-{}-{}", hex(0..4), hex(4..6), third, fourth, hex(10..16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_asr_spelling() {
        let s = Scope { subscription: "s".into(), resource_group: "rg".into(), vault: "v".into() };
        assert_eq!(
            s.item_id("f", "c", "i"),
            "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f/replicationProtectionContainers/c/replicationProtectedItems/i"
        );
        assert_eq!(
            s.vm_id("app", "web"),
            "/subscriptions/s/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/web"
        );
    }

    #[test]
    fn guids_are_seeded_and_well_formed() {
        let (mut a, mut b) = (Guids::new(9), Guids::new(9));
        let g = a.fresh();
        assert_eq!(g, b.fresh());
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert_eq!(guid_of(&["x", "1"]), guid_of(&["x", "1"]));
        assert_ne!(guid_of(&["x", "1"]), guid_of(&["x", "2"]));
    }
}
