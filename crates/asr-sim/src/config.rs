//! Simulator settings: identity of the estate, time, throttling, faults and seeding.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultSpec;
use crate::throttle::ThrottleConfig;

/// A duration drawn uniformly between two bounds, in simulated seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// Shortest.
    pub min_secs: f64,
    /// Longest.
    pub max_secs: f64,
}

impl Span {
    const fn new(min_secs: f64, max_secs: f64) -> Self {
        Self { min_secs, max_secs }
    }

    /// A draw, given a uniform number in [0, 1).
    pub fn pick(&self, u: f64) -> Duration {
        let lo = self.min_secs.max(0.0);
        let hi = self.max_secs.max(lo);
        Duration::from_secs_f64(lo + (hi - lo) * u)
    }
}

/// How long each kind of job takes, in simulated seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Durations {
    /// Unplanned failover (from a named recovery point).
    pub failover: Span,
    /// Extra time to process pending data when failing over to "latest".
    pub latest_processing: Span,
    /// Shutting the source VM down first.
    pub shutdown: Span,
    /// Failover commit.
    pub commit: Span,
    /// The switch-protection (reprotect) JOB only: from the 202 until the job succeeds. The
    /// replication that goes on afterwards is `initial_replication` (reprotect recording entries
    /// 17–43: the job took 9 minutes).
    pub reprotect: Span,
    /// Test failover.
    pub test_failover: Span,
    /// Test failover cleanup.
    pub test_failover_cleanup: Span,
    /// Apply recovery point.
    pub apply_recovery_point: Span,
    /// Cancel failover.
    pub cancel_failover: Span,
    /// Repair replication (resync).
    pub repair: Span,
    /// Disable replication.
    pub disable: Span,
    /// Deleting a VM or NIC.
    pub delete: Span,
    /// The placeholder window: how long a new job stays NotStarted, answering a GET with the
    /// recorded placeholder shape (A2AFailoverCommit-excerpt entries 8, 147, 174) and absent from
    /// job lists.
    pub queueing: Span,
    /// Initial replication that continues after a reprotect job has succeeded, until the
    /// `PrimaryIrCompletion` job (excerpt entries 41–122: about 14 minutes after EnableDr).
    pub initial_replication: Span,
    /// Each initial-replication completion job, `PrimaryIrCompletion` then
    /// `SecondaryIrCompletion` (excerpt entries 122, 141–143: about 2 s and 7 s).
    pub ir_completion: Span,
    /// From the end of `PrimaryIrCompletion` to the start of `SecondaryIrCompletion` (excerpt
    /// entries 122–141: about 3 minutes).
    pub ir_completion_gap: Span,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            failover: Span::new(120.0, 300.0),
            latest_processing: Span::new(30.0, 120.0),
            shutdown: Span::new(30.0, 90.0),
            commit: Span::new(30.0, 90.0),
            reprotect: Span::new(300.0, 600.0),
            test_failover: Span::new(180.0, 420.0),
            test_failover_cleanup: Span::new(60.0, 180.0),
            apply_recovery_point: Span::new(60.0, 120.0),
            cancel_failover: Span::new(60.0, 120.0),
            repair: Span::new(300.0, 900.0),
            disable: Span::new(60.0, 180.0),
            delete: Span::new(20.0, 60.0),
            queueing: Span::new(1.0, 5.0),
            initial_replication: Span::new(600.0, 1800.0),
            ir_completion: Span::new(2.0, 10.0),
            ir_completion_gap: Span::new(60.0, 240.0),
        }
    }
}

impl Durations {
    /// Every job finishes as soon as it is looked at.
    pub fn zero() -> Self {
        let z = Span::new(0.0, 0.0);
        Self {
            failover: z,
            latest_processing: z,
            shutdown: z,
            commit: z,
            reprotect: z,
            test_failover: z,
            test_failover_cleanup: z,
            apply_recovery_point: z,
            cancel_failover: z,
            repair: z,
            disable: z,
            delete: z,
            queueing: z,
            initial_replication: z,
            ir_completion: z,
            ir_completion_gap: z,
        }
    }
}

/// The replication policy recovery points are generated from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Minutes between crash-consistent points.
    pub crash_consistent_minutes: u32,
    /// Minutes between app-consistent points (a multiple of the crash-consistent interval).
    pub app_consistent_minutes: u32,
    /// Minutes of points kept.
    pub retention_minutes: u32,
    /// How far the last processed point trails now, in seconds (the RPO).
    pub processing_lag_secs: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            crash_consistent_minutes: 5,
            app_consistent_minutes: 60,
            retention_minutes: 1440,
            processing_lag_secs: 90,
        }
    }
}

/// Where the VMs of a seeded estate are in their life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SeedState {
    /// Replicating primary → secondary, running in the primary region: ready for a failover.
    Protected,
    /// Failed over to the secondary region and reprotected (replicating secondary → primary):
    /// the starting point of a failback.
    ReadyForFailback,
}

/// What to seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedSpec {
    /// Number of VMs (in each vault).
    pub vms: usize,
    /// Their state.
    pub state: SeedState,
    /// VM name prefix: VMs are `<prefix>-00001`...
    pub name_prefix: String,
    /// Every Nth VM has a data disk added recently, so older recovery points cover fewer disks (0 = none).
    pub late_disk_every: usize,
    /// Every Nth VM uses unmanaged disks (0 = none).
    pub unmanaged_every: usize,
    /// Every Nth VM has critical replication health (0 = none).
    pub unhealthy_every: usize,
    /// Every Nth VM is still in initial replication after a reprotect job that already
    /// succeeded (about 40% replicated; the two completion jobs come later) (0 = none).
    pub syncing_every: usize,
    /// Group VMs into ASR recovery plans of this many VMs in 3 boot groups (0 = no plans).
    pub recovery_plan_size: usize,
    /// Every Nth VM's NIC (in the region the VM runs in when seeded) has a public IP
    /// `<vm>-pip` (0 = none).
    pub public_ip_every: usize,
    /// Every Nth VM's replication has a static target IP (`recoveryIPAddressType: Static`), so
    /// its protected item reports the address the VM gets when it fails over; the others are
    /// `Dynamic`, as recorded, and report none (0 = none).
    pub static_recovery_ip_every: usize,
}

impl Default for SeedSpec {
    fn default() -> Self {
        Self {
            vms: 0,
            state: SeedState::ReadyForFailback,
            name_prefix: "vm".into(),
            late_disk_every: 0,
            unmanaged_every: 0,
            unhealthy_every: 0,
            syncing_every: 0,
            recovery_plan_size: 0,
            public_ip_every: 0,
            static_recovery_ip_every: 0,
        }
    }
}

/// Everything the simulator is configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Subscription id of the first subscription (the others' are derived: see
    /// [`SimConfig::vault_layouts`]).
    pub subscription_id: String,
    /// Resource group of the vaults (in every subscription).
    pub resource_group: String,
    /// Name of the first vault of every subscription (the others are `<vault>-2`, ...).
    pub vault: String,
    /// Number of subscriptions served, each with its own ARM request budget.
    pub subscriptions: usize,
    /// Number of Recovery Services vaults in each subscription, each with its own estate of
    /// `estate.vms` VMs.
    pub vaults_per_subscription: usize,
    /// The region VMs originally ran in (e.g. "eastus").
    pub primary_region: String,
    /// The disaster-recovery region (e.g. "westus").
    pub secondary_region: String,
    /// The only bearer token accepted; any non-empty token when unset.
    pub token: Option<String>,
    /// Simulated seconds per real second.
    pub time_compression: f64,
    /// Every job completes immediately and `Retry-After` is 0 (overhead benchmarks).
    pub zero_latency: bool,
    /// Job durations (ignored with `zero_latency`).
    pub durations: Durations,
    /// `Retry-After` on accepted operations, in simulated seconds (scaled to real time).
    pub retry_after_secs: u64,
    /// Items or jobs per list page.
    pub page_size: usize,
    /// ARM throttling.
    pub throttle: ThrottleConfig,
    /// Whether reprotect removes the VM left in the region the VM moved away from, with its NICs
    /// and managed disks, when the reprotect job ends (managed-disk VMs only; ASR's
    /// documentation says both).
    pub reprotect_removes_source_vm: bool,
    /// Recovery point generation.
    pub policy: PolicyConfig,
    /// Fault injection.
    pub faults: FaultSpec,
    /// vCPU quotas and VM size restrictions per region (every subscription alike).
    pub capacity: crate::capacity::CapacityConfig,
    /// Seed of ids and durations (the first vault's; the others' are derived from it).
    pub seed: u64,
    /// The VMs to create at start, in every vault (names prefixed per vault but the first).
    pub estate: SeedSpec,
    /// Simulated seconds after an operation's 202 during which its protected item still renders
    /// as before the operation: `currentScenario` idle and the idle `allowedOperations` of its
    /// state (unverified: no recording shows an item in that moment, so the stingy case). The
    /// simulator still refuses a second operation on the item meanwhile.
    pub item_scenario_lag_secs: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            subscription_id: "00000000-0000-4000-8000-000000000001".into(),
            resource_group: "rg-tern-dr".into(),
            vault: "tern-vault".into(),
            subscriptions: 1,
            vaults_per_subscription: 1,
            primary_region: "eastus".into(),
            secondary_region: "westus".into(),
            token: None,
            time_compression: 1.0,
            zero_latency: false,
            durations: Durations::default(),
            retry_after_secs: 30,
            page_size: 100,
            throttle: ThrottleConfig::default(),
            reprotect_removes_source_vm: true,
            policy: PolicyConfig::default(),
            faults: FaultSpec::default(),
            capacity: crate::capacity::CapacityConfig::default(),
            seed: 1,
            estate: SeedSpec::default(),
            item_scenario_lag_secs: 30.0,
        }
    }
}

impl SimConfig {
    /// Checks the settings; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("vault", &self.vault),
            ("primary_region", &self.primary_region),
            ("secondary_region", &self.secondary_region),
        ] {
            if v.is_empty() || v.contains('/') || v.contains(char::is_whitespace) {
                return Err(format!("{key} {v:?} must be non-empty, without '/' or spaces"));
            }
        }
        if !(1..=MAX_SUBSCRIPTIONS).contains(&self.subscriptions) {
            return Err(format!("subscriptions must be between 1 and {MAX_SUBSCRIPTIONS}, got {}", self.subscriptions));
        }
        if !(1..=MAX_VAULTS_PER_SUBSCRIPTION).contains(&self.vaults_per_subscription) {
            return Err(format!(
                "vaults_per_subscription must be between 1 and {MAX_VAULTS_PER_SUBSCRIPTION} (ASR's limit), got {}",
                self.vaults_per_subscription
            ));
        }
        if self.subscriptions * self.vaults_per_subscription > MAX_VAULTS {
            return Err(format!(
                "subscriptions × vaults_per_subscription must be at most {MAX_VAULTS}, got {} × {}",
                self.subscriptions, self.vaults_per_subscription
            ));
        }
        if let Some(k) =
            (2..=self.subscriptions).find(|&k| derived_subscription_id(k).eq_ignore_ascii_case(&self.subscription_id))
        {
            return Err(format!(
                "subscription_id {:?} is the id derived for subscription {k}; choose another or fewer subscriptions",
                self.subscription_id
            ));
        }
        if self.primary_region.eq_ignore_ascii_case(&self.secondary_region) {
            return Err("primary_region and secondary_region must differ".into());
        }
        if !(self.time_compression.is_finite() && self.time_compression > 0.0) {
            return Err(format!("time_compression must be > 0, got {}", self.time_compression));
        }
        if !(self.item_scenario_lag_secs.is_finite() && self.item_scenario_lag_secs >= 0.0) {
            return Err(format!("item_scenario_lag_secs must be >= 0, got {}", self.item_scenario_lag_secs));
        }
        if self.page_size == 0 {
            return Err("page_size must be at least 1".into());
        }
        if self.token.as_deref() == Some("") {
            return Err("token must not be empty when set".into());
        }
        let p = &self.policy;
        if p.crash_consistent_minutes == 0 || !p.app_consistent_minutes.is_multiple_of(p.crash_consistent_minutes) {
            return Err(
                "policy.app_consistent_minutes must be a multiple of a non-zero crash_consistent_minutes".into()
            );
        }
        self.faults.validate().map_err(|e| format!("faults.{e}"))
    }

    /// Every vault served, subscription by subscription: the first is exactly
    /// (`subscription_id`, `resource_group`, `vault`) with VMs `<prefix>-00001`... in `rg-app`
    /// and `rg-app-asr`, as with a single vault. Vault `v` of subscription `s` (both from 1),
    /// labelled `s{s}v{v}`:
    /// - subscription id: `subscription_id` for `s = 1`, else `00000000-0000-4000-8000-{s:012}`;
    /// - resource group: `resource_group` in every subscription;
    /// - name: `vault` for `v = 1`, else `<vault>-{v}`;
    /// - application resource groups (VMs, NICs, disks, public IPs, storage accounts):
    ///   `rg-app-s{s}v{v}` (primary region) and `rg-app-s{s}v{v}-asr` (secondary region), so a
    ///   resource group belongs to one vault;
    /// - VM names: `s{s}v{v}-<prefix>-00001`..., unique across every subscription;
    /// - seed of ids and durations: `seed` mixed with the vault's position, so no two vaults
    ///   share a job name or a lifecycle id.
    pub fn vault_layouts(&self) -> Vec<VaultLayout> {
        let mut out = Vec::with_capacity(self.subscriptions * self.vaults_per_subscription);
        for s in 1..=self.subscriptions {
            let subscription_id = if s == 1 { self.subscription_id.clone() } else { derived_subscription_id(s) };
            for v in 1..=self.vaults_per_subscription {
                let first = s == 1 && v == 1;
                let label = format!("s{s}v{v}");
                let position = (out.len()) as u64;
                out.push(VaultLayout {
                    subscription: s - 1,
                    subscription_id: subscription_id.clone(),
                    resource_group: self.resource_group.clone(),
                    vault: if v == 1 { self.vault.clone() } else { format!("{}-{v}", self.vault) },
                    app_resource_groups: if first {
                        [APP_RG.into(), format!("{APP_RG}-asr")]
                    } else {
                        [format!("{APP_RG}-{label}"), format!("{APP_RG}-{label}-asr")]
                    },
                    vm_prefix: if first { String::new() } else { format!("{label}-") },
                    seed: if first { self.seed } else { self.seed ^ position.wrapping_mul(0x9e37_79b9_7f4a_7c15) },
                });
            }
        }
        out
    }

    /// The durations in force.
    pub fn effective_durations(&self) -> Durations {
        if self.zero_latency { Durations::zero() } else { self.durations }
    }
}

/// Most subscriptions one simulator serves.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// Most vaults per subscription (ASR's limit: 500 vaults per subscription).
pub const MAX_VAULTS_PER_SUBSCRIPTION: usize = 500;

/// Most vaults one simulator serves in all (each is an estate in memory).
pub const MAX_VAULTS: usize = 10_000;

/// The application resource group VMs of the first vault live in (`-asr` in the secondary region).
const APP_RG: &str = "rg-app";

/// The id of subscription `k` (from 1) when `k > 1`.
pub fn derived_subscription_id(k: usize) -> String {
    format!("00000000-0000-4000-8000-{k:012}")
}

/// Where one vault of the simulated estate lives and how its resources are named
/// ([`SimConfig::vault_layouts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultLayout {
    /// Position of its subscription (from 0).
    pub subscription: usize,
    /// Its subscription id.
    pub subscription_id: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its name.
    pub vault: String,
    /// The resource groups its VMs, NICs, disks, public IPs and storage accounts live in:
    /// primary region, secondary region.
    pub app_resource_groups: [String; 2],
    /// What its seeded VM names start with before the seed's own prefix (`""` or `s2v1-`).
    pub vm_prefix: String,
    /// Seed of its ids and durations.
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vault_keeps_its_names_and_more_are_derived_apart() {
        let one = SimConfig::default().vault_layouts();
        assert_eq!(one.len(), 1);
        let first = &one[0];
        assert_eq!(
            (first.subscription_id.as_str(), first.resource_group.as_str(), first.vault.as_str()),
            ("00000000-0000-4000-8000-000000000001", "rg-tern-dr", "tern-vault")
        );
        assert_eq!(first.app_resource_groups, ["rg-app".to_owned(), "rg-app-asr".to_owned()]);
        assert_eq!((first.vm_prefix.as_str(), first.seed), ("", 1));

        let config = SimConfig { subscriptions: 2, vaults_per_subscription: 2, ..SimConfig::default() };
        let four = config.vault_layouts();
        assert_eq!(four[0], *first, "the first vault is the same however many there are");
        let names: Vec<_> = four
            .iter()
            .map(|l| (l.subscription, l.subscription_id.as_str(), l.vault.as_str(), l.app_resource_groups[0].as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (0, "00000000-0000-4000-8000-000000000001", "tern-vault", "rg-app"),
                (0, "00000000-0000-4000-8000-000000000001", "tern-vault-2", "rg-app-s1v2"),
                (1, "00000000-0000-4000-8000-000000000002", "tern-vault", "rg-app-s2v1"),
                (1, "00000000-0000-4000-8000-000000000002", "tern-vault-2", "rg-app-s2v2"),
            ]
        );
        assert_eq!(four[3].app_resource_groups[1], "rg-app-s2v2-asr");
        assert_eq!(four[2].vm_prefix, "s2v1-");
        let seeds: std::collections::BTreeSet<u64> = four.iter().map(|l| l.seed).collect();
        assert_eq!(seeds.len(), 4, "no two vaults share ids");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn estate_sizes_are_checked() {
        let bad = |c: SimConfig| c.validate().unwrap_err();
        assert!(bad(SimConfig { subscriptions: 0, ..SimConfig::default() }).contains("subscriptions"));
        assert!(
            bad(SimConfig { vaults_per_subscription: 501, ..SimConfig::default() }).contains("vaults_per_subscription")
        );
        let clash = SimConfig {
            subscriptions: 3,
            subscription_id: derived_subscription_id(3).to_ascii_uppercase(),
            ..SimConfig::default()
        };
        assert!(bad(clash).contains("subscription 3"));
    }
}
