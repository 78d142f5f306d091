//! Fault injection: seeded, reproducible, set by flags, a config file or the admin API.
//!
//! Per-VM faults (a permanent failure at a phase, a failed source shutdown) are chosen by VM
//! name or by a seeded fraction, so the same seed fails the same VMs. Per-request faults
//! (5xx, latency spikes, 429 storms, dropped responses) draw from a seeded generator.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// The ASR operations a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `unplannedFailover` (items and recovery plans).
    Failover,
    /// `failoverCommit`.
    Commit,
    /// `switchprotection` / `reProtect`.
    Reprotect,
    /// `testFailover`.
    TestFailover,
    /// `testFailoverCleanup`.
    TestFailoverCleanup,
    /// `applyRecoveryPoint`.
    ApplyRecoveryPoint,
    /// `failoverCancel`.
    CancelFailover,
    /// `repairReplication`.
    Repair,
    /// `remove` (disable replication).
    DisableProtection,
    /// `DELETE` of a protected item (purge).
    Purge,
    /// `DELETE` of a VM, NIC, managed disk or public IP.
    Delete,
    /// The `SecondaryIrCompletion` job that ends initial replication after a reprotect
    /// (A2AFailoverCommit-excerpt entries 141–143). Never a request: only a fault target.
    IrCompletion,
}

impl Operation {
    /// The name used in the operation log.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Failover => "unplannedFailover",
            Operation::Commit => "failoverCommit",
            Operation::Reprotect => "switchProtection",
            Operation::TestFailover => "testFailover",
            Operation::TestFailoverCleanup => "testFailoverCleanup",
            Operation::ApplyRecoveryPoint => "applyRecoveryPoint",
            Operation::CancelFailover => "failoverCancel",
            Operation::Repair => "repairReplication",
            Operation::DisableProtection => "remove",
            Operation::Purge => "purge",
            Operation::Delete => "delete",
            Operation::IrCompletion => "irCompletion",
        }
    }
}

/// Which VMs a per-VM fault applies to: named ones, plus a seeded fraction of all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// VM names (case-insensitive).
    pub vms: Vec<String>,
    /// Fraction (0..=1) of all VMs, chosen from the seed and the VM name.
    pub fraction: f64,
}

impl Selector {
    /// Whether `vm` is selected, given the fault seed and a salt that tells rules apart.
    pub fn matches(&self, seed: u64, salt: u64, vm: &str) -> bool {
        if self.vms.iter().any(|v| v.eq_ignore_ascii_case(vm)) {
            return true;
        }
        self.fraction > 0.0 && unit_hash(seed, salt, vm) < self.fraction
    }
}

/// A permanent failure of an operation for some VMs, with the ASR error it reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRule {
    /// The VMs.
    #[serde(flatten)]
    pub selector: Selector,
    /// The operation that fails.
    pub operation: Operation,
    /// ASR error code (e.g. "28031", "150097").
    pub code: String,
    /// Message; a known code gets ASR's own wording when omitted.
    #[serde(default)]
    pub message: Option<String>,
}

/// An operation whose job never ends for some VMs: it starts, its tasks run up to the last,
/// and the last stays InProgress forever. ASR gives a job no server-side deadline (a job's
/// resource has no expiry; `endTime` appears only once it ended), so only the client can give up
/// on it, by cancelling it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckRule {
    /// The VMs.
    #[serde(flatten)]
    pub selector: Selector,
    /// The operation whose job never ends.
    pub operation: Operation,
}

/// Every fault the simulator injects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSpec {
    /// Seed of every random choice below.
    pub seed: u64,
    /// Permanent failures.
    pub failures: Vec<FailureRule>,
    /// VMs whose shutdown before failover fails (the failover continues, as ASR's does).
    pub shutdown_failures: Selector,
    /// VMs whose test-failover VM does not boot (it is created, but stays stopped).
    pub test_vm_boot_failures: Selector,
    /// Fraction of ARM requests answered 500/503 without doing anything.
    pub transient_5xx_rate: f64,
    /// Fraction of requests delayed by `latency_spike_ms`.
    pub latency_spike_rate: f64,
    /// Length of a latency spike, real milliseconds.
    pub latency_spike_ms: u64,
    /// Fraction of requests answered 429 regardless of the buckets (a throttling storm).
    pub throttle_storm_rate: f64,
    /// `Retry-After` seconds of a storm 429.
    pub throttle_storm_retry_after_secs: u64,
    /// Fraction of mutating requests that are applied but whose response never comes: the
    /// connection hangs for `drop_response_hang_secs`, so the client times out.
    pub drop_response_rate: f64,
    /// How long a dropped response hangs, real seconds.
    pub drop_response_hang_secs: u64,
    /// Which requests `drop_response_rate` applies to: empty = every mutating request; else only
    /// requests of these operations (e.g. `["reprotect"]`).
    pub drop_response_operations: Vec<Operation>,
    /// A regional ARM outage: every authenticated ARM request, read or write, is answered `503
    /// ServiceUnavailable` and nothing is applied, until switched off.
    pub outage: bool,
    /// The caller's token has expired: every ARM request is answered `401
    /// ExpiredAuthenticationToken` (nothing applied), until switched off.
    pub expired_token: bool,
    /// Jobs that never end.
    pub stuck_jobs: Vec<StuckRule>,
    /// The next N mutating requests are answered 429 (`Retry-After`:
    /// `throttle_storm_retry_after_secs`, at least 1) without being applied. Counts down as they
    /// land, so a test knows when they have.
    pub throttle_next_writes: u32,
    /// The next N mutating requests are answered `503 ServiceUnavailable` without being applied.
    pub fail_next_writes: u32,
    /// The next N mutating requests that are applied (2xx) get no answer: the connection hangs for
    /// `drop_response_hang_secs`. Only requests `drop_response_operations` allows count.
    pub drop_next_writes: u32,
}

impl FaultSpec {
    /// The failure rule that applies to `vm` for `op`, if any.
    pub fn failure_for(&self, op: Operation, vm: &str) -> Option<&FailureRule> {
        self.failures
            .iter()
            .enumerate()
            .find(|(i, r)| r.operation == op && r.selector.matches(self.seed, *i as u64 + 1, vm))
            .map(|(_, r)| r)
    }

    /// Whether `vm`'s shutdown fails.
    pub fn shutdown_fails(&self, vm: &str) -> bool {
        self.shutdown_failures.matches(self.seed, 0x05ee_d0ff, vm)
    }

    /// Whether `vm`'s test-failover VM fails to boot.
    pub fn test_vm_fails_to_boot(&self, vm: &str) -> bool {
        self.test_vm_boot_failures.matches(self.seed, 0x7e57_b007, vm)
    }

    /// Whether the job of `op` for `vm` never ends.
    pub fn job_stuck(&self, op: Operation, vm: &str) -> bool {
        self.stuck_jobs
            .iter()
            .enumerate()
            .any(|(i, r)| r.operation == op && r.selector.matches(self.seed, 0x57ac_0000 + i as u64, vm))
    }

    /// Whether a response to a request of `operation` (`None`: a mutating request that is no
    /// ASR operation, e.g. a job cancel) may be dropped.
    pub fn drops_response_of(&self, operation: Option<Operation>) -> bool {
        self.drop_response_operations.is_empty()
            || operation.is_some_and(|op| self.drop_response_operations.contains(&op))
    }

    /// Checks the numbers make sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("transient_5xx_rate", self.transient_5xx_rate),
            ("latency_spike_rate", self.latency_spike_rate),
            ("throttle_storm_rate", self.throttle_storm_rate),
            ("drop_response_rate", self.drop_response_rate),
            ("shutdown_failures.fraction", self.shutdown_failures.fraction),
            ("test_vm_boot_failures.fraction", self.test_vm_boot_failures.fraction),
        ];
        for (name, v) in rates {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        for (i, r) in self.stuck_jobs.iter().enumerate() {
            if !(0.0..=1.0).contains(&r.selector.fraction) {
                return Err(format!("stuck_jobs[{i}].fraction must be between 0 and 1"));
            }
            if r.operation == Operation::IrCompletion {
                return Err(format!("stuck_jobs[{i}].operation: ir_completion is not a job a client waits for"));
            }
        }
        for (i, r) in self.failures.iter().enumerate() {
            if !(0.0..=1.0).contains(&r.selector.fraction) {
                return Err(format!("failures[{i}].fraction must be between 0 and 1"));
            }
            if r.code.trim().is_empty() {
                return Err(format!("failures[{i}].code is empty"));
            }
        }
        Ok(())
    }
}

/// What the per-request dice decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFaults {
    /// Answer 500/503.
    pub transient_5xx: bool,
    /// Sleep this long first (real ms).
    pub delay_ms: u64,
    /// Answer 429 with this Retry-After.
    pub storm_retry_after: Option<u64>,
    /// Apply, then hang instead of answering (mutating requests only).
    pub drop_response: bool,
}

/// The seeded generator for per-request faults.
#[derive(Debug)]
pub struct FaultDice {
    rng: StdRng,
}

impl FaultDice {
    /// A generator for `spec`.
    pub fn new(spec: &FaultSpec) -> Self {
        Self { rng: StdRng::seed_from_u64(spec.seed) }
    }

    /// Rolls for one request. Always consumes the same number of draws, so the sequence of
    /// decisions depends only on the seed and the order of requests.
    pub fn roll(&mut self, spec: &FaultSpec, mutating: bool) -> RequestFaults {
        let draws: [f64; 4] = [self.rng.random(), self.rng.random(), self.rng.random(), self.rng.random()];
        RequestFaults {
            transient_5xx: draws[0] < spec.transient_5xx_rate,
            delay_ms: if draws[1] < spec.latency_spike_rate { spec.latency_spike_ms } else { 0 },
            storm_retry_after: (draws[2] < spec.throttle_storm_rate)
                .then_some(spec.throttle_storm_retry_after_secs.max(1)),
            drop_response: mutating && draws[3] < spec.drop_response_rate,
        }
    }
}

/// A stable hash of (seed, salt, name) in [0, 1).
fn unit_hash(seed: u64, salt: u64, name: &str) -> f64 {
    // FNV-1a over the lowercased name, mixed with the seed and salt (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.rotate_left(17) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// ASR's wording for error codes the simulator knows.
pub fn describe(code: &str) -> (&'static str, &'static str, &'static str) {
    match code {
        "28031" => (
            "The virtual machine could not be created in the target region during failover.",
            "The subscription's core quota may be exhausted, the VM size may mix families in the availability set, or a policy may deny the deployment.",
            "Increase the quota or choose a size that is available, then retry the failover.",
        ),
        "28092" => (
            "The network interface could not be created for the failed-over virtual machine.",
            "The network interface quota may be exhausted, or the failure was transient.",
            "Check the network interface quota in the target region and retry.",
        ),
        "150097" => (
            "No virtual machine size suitable for the target region is available to the subscription.",
            "The VM size or the number of NICs it needs is not available in the target region.",
            "Request quota for a suitable size in the target region, or change the target size, then retry.",
        ),
        "151037" => (
            "The Site Recovery service endpoints could not be reached from the virtual machine.",
            "Outbound connectivity, DNS or a proxy blocks access to the Site Recovery endpoints.",
            "Allow outbound access to the Site Recovery service tags and check DNS, then retry.",
        ),
        "70038" => (
            "The virtual machine could not be created because a resource it requires is missing.",
            "A virtual network or other required resource does not exist in the target region.",
            "Create the missing resource and retry.",
        ),
        _ => (
            "The operation failed.",
            "An injected fault made the operation fail.",
            "Retry the operation. If it keeps failing, contact support.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_picks_the_same_vms_for_the_same_seed() {
        let sel = Selector { vms: vec![], fraction: 0.05 };
        let pick = |seed| (0..2000).filter(|i| sel.matches(seed, 1, &format!("vm-{i:05}"))).collect::<Vec<_>>();
        let a = pick(42);
        assert_eq!(a, pick(42));
        assert_ne!(a, pick(43));
        assert!((60..=140).contains(&a.len()), "about 5% of 2000, got {}", a.len());
    }

    #[test]
    fn named_vms_always_match_and_dice_are_reproducible() {
        let spec = FaultSpec { seed: 7, transient_5xx_rate: 0.3, ..FaultSpec::default() };
        assert!(Selector { vms: vec!["Web-1".into()], fraction: 0.0 }.matches(0, 0, "web-1"));
        let roll = |spec: &FaultSpec| {
            let mut dice = FaultDice::new(spec);
            (0..100).map(|_| dice.roll(spec, true).transient_5xx).collect::<Vec<_>>()
        };
        assert_eq!(roll(&spec), roll(&spec));
        assert!(
            FaultSpec { transient_5xx_rate: 1.5, ..FaultSpec::default() }
                .validate()
                .unwrap_err()
                .contains("transient_5xx_rate")
        );
    }

    #[test]
    fn stuck_jobs_pick_their_vms_and_operation_and_are_validated() {
        let spec = FaultSpec {
            seed: 3,
            stuck_jobs: vec![StuckRule {
                selector: Selector { vms: vec!["vm-00002".into()], fraction: 0.0 },
                operation: Operation::Reprotect,
            }],
            ..FaultSpec::default()
        };
        assert!(spec.job_stuck(Operation::Reprotect, "VM-00002"));
        assert!(!spec.job_stuck(Operation::Failover, "vm-00002"), "only the named operation");
        assert!(!spec.job_stuck(Operation::Reprotect, "vm-00001"));
        let mut bad = spec.clone();
        bad.stuck_jobs[0].operation = Operation::IrCompletion;
        assert!(bad.validate().unwrap_err().contains("stuck_jobs[0]"));
        let parsed: FaultSpec = serde_json::from_str(
            r#"{"stuck_jobs": [{"vms": ["vm-00002"], "operation": "reprotect"}], "outage": true}"#,
        )
        .unwrap();
        assert_eq!(parsed.stuck_jobs, spec.stuck_jobs);
        assert!(parsed.outage && !parsed.expired_token);
    }
}
