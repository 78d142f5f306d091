//! Plan files: a failback plan written down in YAML (or JSON), mapped onto the planner's
//! `PlanSpec`. Unknown keys are errors, so a typo never silently changes what a plan does.
//!
//! ```yaml
//! vault: /subscriptions/…/vaults/prod-vault   # optional against `tern up`
//! select:
//!   vms: [sql-01, sql-02, web-01, web-02]     # or all_ready / protected_items / recovery_plan / resource_group
//! recovery_point: latest-app-consistent       # latest-processed (default) | latest | custom:ID
//! shutdown_source: true
//! waves:
//!   - name: data
//!     vms: [sql-01, sql-02]
//!   - name: web
//!     vms: [web-01, web-02]
//!     before:                                 # gates: each must pass before the wave fails over
//!       - approval: { description: web team signs off }   # `tern plan approve ID --wave web`
//!       - wait: 5m                                         # a fixed pause
//!     after:                                  # once every VM of the wave failed over
//!       - hook: { subject: tern.hooks.dns-update, timeout: 30s, retries: 2 }   # a NATS request
//!         when: committed                     # or failed_over (default)
//! failure_policy:
//!   optional_vms: [web-02]
//!   on_critical_failure: stop
//!   max_automatic_retries: 1                  # retryable failures get a new attempt
//! deadlines: { failover: 2h, reprotect: 24h, cleanup: 2h }   # the defaults
//! proceed_with_ready: false
//! labels: { change: CHG-1042 }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use tern_proto::{
    CleanupOptions, Concurrency, DrillSettings, FailurePolicy, NameList, OnCriticalFailure, PlanMode, PlanSpec,
    ReprotectTarget, Selection, Wave, selection,
};

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// ARM id of the Recovery Services vault.
    #[serde(default)]
    pub vault: Option<String>,
    /// Further vaults the selection draws from (ARM ids, any subscription the stack acts on).
    #[serde(default)]
    pub vaults: Vec<String>,
    /// Draw from every vault the stack acts on.
    #[serde(default)]
    pub all_vaults: bool,
    /// Makes submission idempotent.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Which VMs.
    pub select: Option<Select>,
    /// execute (default), preflight-only or drill.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// latest-processed (default), latest, latest-app-consistent, latest-crash-consistent, custom:ID.
    #[serde(default)]
    pub recovery_point: Option<String>,
    /// Shut the source VM down before failover (default true).
    #[serde(default)]
    pub shutdown_source: Option<bool>,
    #[serde(default)]
    pub phases: Option<PhasesFile>,
    #[serde(default)]
    pub waves: Vec<WaveFile>,
    #[serde(default)]
    pub concurrency: Option<ConcurrencyFile>,
    #[serde(default)]
    pub failure_policy: Option<FailurePolicyFile>,
    /// How long each phase of a VM may run, e.g. `90m` (failover includes its commit).
    #[serde(default)]
    pub deadlines: Option<DeadlinesFile>,
    #[serde(default)]
    pub cleanup: Option<CleanupFile>,
    #[serde(default)]
    pub reprotect_target: Option<ReprotectTargetFile>,
    #[serde(default)]
    pub drill: Option<DrillFile>,
    #[serde(default)]
    pub proceed_with_ready: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Exactly one way of choosing VMs.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Select {
    vms: Option<Vec<String>>,
    protected_items: Option<Vec<String>>,
    recovery_plan: Option<String>,
    resource_group: Option<String>,
    tag: Option<String>,
    all_ready: Option<bool>,
}

impl Select {
    fn by(&self) -> anyhow::Result<selection::By> {
        let mut ways = Vec::new();
        if let Some(v) = &self.vms {
            ways.push(selection::By::VmNames(NameList { values: v.clone() }));
        }
        if let Some(v) = &self.protected_items {
            ways.push(selection::By::ProtectedItemIds(NameList { values: v.clone() }));
        }
        if let Some(s) = &self.recovery_plan {
            ways.push(selection::By::RecoveryPlan(s.clone()));
        }
        if let Some(s) = &self.resource_group {
            ways.push(selection::By::ResourceGroup(s.clone()));
        }
        if let Some(s) = &self.tag {
            ways.push(selection::By::Tag(s.clone()));
        }
        if let Some(b) = self.all_ready {
            ways.push(selection::By::AllReady(b));
        }
        match ways.len() {
            1 => Ok(ways.remove(0)),
            n => bail!(
                "`select` must give exactly one of vms, all_ready, protected_items, recovery_plan, resource_group or tag (it gives {n})"
            ),
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Execute,
    PreflightOnly,
    Drill,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PhasesFile {
    failover: Option<bool>,
    commit: Option<bool>,
    reprotect: Option<bool>,
    cleanup: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WaveFile {
    #[serde(default)]
    name: String,
    vms: Vec<String>,
    #[serde(default)]
    before: Vec<GateFile>,
    #[serde(default)]
    after: Vec<GateFile>,
}

/// One gate step: exactly one of `approval`, `wait` or `hook`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    #[serde(default)]
    name: String,
    approval: Option<ApprovalFile>,
    /// A pause, as `30s`, `5m`, `1h30m`.
    wait: Option<String>,
    hook: Option<HookFile>,
    /// For `after` steps: `failed_over` (default) or `committed`.
    when: Option<AfterWhenFile>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    #[serde(default)]
    description: String,
}

/// A hook step: a request to `subject`, `timeout` per try (default 30s), `retries` tries after
/// the first (default 2).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    subject: String,
    timeout: Option<String>,
    retries: Option<u32>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum AfterWhenFile {
    FailedOver,
    Committed,
}

impl GateFile {
    fn step(&self, field: &str, after: bool) -> anyhow::Result<tern_proto::GateStep> {
        use tern_proto::gate_step::Kind;
        let duration = |text: &str, what: &str| -> anyhow::Result<prost_types::Duration> {
            let d = crate::output::parse_duration(text).map_err(|e| anyhow::anyhow!("{field}.{what}: {e}"))?;
            Ok(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
        };
        let (kind, description) = match (&self.approval, &self.wait, &self.hook) {
            (Some(a), None, None) => (Kind::Approval(tern_proto::ApprovalGate {}), a.description.clone()),
            (None, Some(w), None) => {
                (Kind::Wait(tern_proto::WaitGate { duration: Some(duration(w, "wait")?) }), String::new())
            }
            (None, None, Some(h)) => {
                let timeout = h.timeout.as_deref().map(|t| duration(t, "hook.timeout")).transpose()?;
                let hook = tern_proto::HookGate { subject: h.subject.clone(), timeout, retries: h.retries };
                (Kind::Hook(hook), h.description.clone())
            }
            _ => bail!("{field}: give exactly one of `approval`, `wait` or `hook`"),
        };
        if self.when.is_some() && !after {
            bail!("{field}.when: only `after` steps say when they run");
        }
        let run_after = match self.when {
            None => tern_proto::AfterWhen::Unspecified,
            Some(AfterWhenFile::FailedOver) => tern_proto::AfterWhen::FailedOver,
            Some(AfterWhenFile::Committed) => tern_proto::AfterWhen::Committed,
        };
        Ok(tern_proto::GateStep { name: self.name.clone(), description, kind: Some(kind), run_after: run_after as i32 })
    }
}

impl WaveFile {
    fn wave(&self, i: usize) -> anyhow::Result<Wave> {
        let steps = |list: &[GateFile], side: &str, after: bool| -> anyhow::Result<Vec<tern_proto::GateStep>> {
            list.iter().enumerate().map(|(k, g)| g.step(&format!("waves[{i}].{side}[{k}]"), after)).collect()
        };
        Ok(Wave {
            name: self.name.clone(),
            vm_names: self.vms.clone(),
            before: steps(&self.before, "before", false)?,
            after: steps(&self.after, "after", true)?,
        })
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyFile {
    #[serde(default)]
    failover: u32,
    #[serde(default)]
    reprotect: u32,
    #[serde(default)]
    cleanup: u32,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum OnCritical {
    Stop,
    Continue,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FailurePolicyFile {
    #[serde(default)]
    optional_vms: Vec<String>,
    #[serde(default)]
    on_critical_failure: Option<OnCritical>,
    #[serde(default)]
    max_automatic_retries: u32,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CleanupFile {
    #[serde(default)]
    remove_leftovers: bool,
    #[serde(default)]
    purge_unmanaged: bool,
    #[serde(default)]
    disable_replication: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ReprotectTargetFile {
    #[serde(default)]
    resource_group_id: String,
    #[serde(default)]
    cache_storage_account_id: String,
    /// Cache storage account per Azure region (`eastus: /subscriptions/…/storageAccounts/x`).
    #[serde(default)]
    cache_storage_accounts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    disk_type: String,
    #[serde(default)]
    availability_set_id: String,
    #[serde(default)]
    availability_zone: String,
    #[serde(default)]
    proximity_placement_group_id: String,
    #[serde(default)]
    capacity_reservation_group_id: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesFile {
    #[serde(default)]
    failover: Option<String>,
    #[serde(default)]
    reprotect: Option<String>,
    #[serde(default)]
    cleanup: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct DrillFile {
    #[serde(default)]
    test_network_id: String,
    /// How long to keep the test VM for validation, e.g. `30m`.
    #[serde(default)]
    validation_timeout: Option<String>,
    #[serde(default)]
    keep_test_vm: bool,
}

impl PlanFile {
    /// Reads and checks a plan file; the error names the file, the key and the line.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read plan file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("plan file {} is not a valid plan", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: PlanFile = serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(file)
    }

    /// The spec this file describes. `vault` is the fallback when the file names none.
    pub fn spec(&self, vault: Option<&str>) -> anyhow::Result<PlanSpec> {
        let by = match &self.select {
            Some(select) => select.by()?,
            None => bail!(
                "`select` is missing: say which VMs (vms, all_ready, protected_items, recovery_plan or resource_group)"
            ),
        };
        let recovery_point = match &self.recovery_point {
            Some(p) => Some(crate::plan::parse_point(p).map_err(|e| anyhow::anyhow!("recovery_point: {e}"))?),
            None => None,
        };
        let duration = |field: &str, text: Option<&str>| -> anyhow::Result<Option<prost_types::Duration>> {
            let Some(t) = text else { return Ok(None) };
            let d = crate::output::parse_duration(t).map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
            Ok(Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }))
        };
        let validation_timeout =
            duration("drill.validation_timeout", self.drill.as_ref().and_then(|d| d.validation_timeout.as_deref()))?;
        let deadlines = match &self.deadlines {
            Some(d) => Some(tern_proto::Deadlines {
                failover: duration("deadlines.failover", d.failover.as_deref())?,
                reprotect: duration("deadlines.reprotect", d.reprotect.as_deref())?,
                cleanup: duration("deadlines.cleanup", d.cleanup.as_deref())?,
            }),
            None => None,
        };
        Ok(PlanSpec {
            request_id: self.request_id.clone().unwrap_or_default(),
            vault_id: self.vault.clone().or_else(|| vault.map(str::to_owned)).unwrap_or_default(),
            vault_ids: self.vaults.clone(),
            all_vaults: self.all_vaults,
            selection: Some(Selection { by: Some(by) }),
            mode: match self.mode {
                None => PlanMode::Unspecified,
                Some(Mode::Execute) => PlanMode::Execute,
                Some(Mode::PreflightOnly) => PlanMode::PreflightOnly,
                Some(Mode::Drill) => PlanMode::Drill,
            } as i32,
            recovery_point,
            shut_down_source: self.shutdown_source,
            phases: self.phases.as_ref().map(|p| tern_proto::Phases {
                failover: p.failover,
                commit: p.commit,
                reprotect: p.reprotect,
                cleanup: p.cleanup,
            }),
            waves: self.waves.iter().enumerate().map(|(i, w)| w.wave(i)).collect::<anyhow::Result<_>>()?,
            concurrency: self.concurrency.as_ref().map(|c| Concurrency {
                failover: c.failover,
                reprotect: c.reprotect,
                cleanup: c.cleanup,
            }),
            failure_policy: self.failure_policy.as_ref().map(|f| FailurePolicy {
                optional_vms: f.optional_vms.clone(),
                on_critical_failure: match f.on_critical_failure {
                    None => OnCriticalFailure::Unspecified,
                    Some(OnCritical::Stop) => OnCriticalFailure::Stop,
                    Some(OnCritical::Continue) => OnCriticalFailure::Continue,
                } as i32,
                max_automatic_retries: f.max_automatic_retries,
            }),
            cleanup: self.cleanup.as_ref().map(|c| CleanupOptions {
                remove_leftovers: c.remove_leftovers,
                purge_unmanaged: c.purge_unmanaged,
                disable_replication: c.disable_replication,
            }),
            reprotect_target: self.reprotect_target.as_ref().map(|t| ReprotectTarget {
                resource_group_id: t.resource_group_id.clone(),
                cache_storage_account_id: t.cache_storage_account_id.clone(),
                disk_type: t.disk_type.clone(),
                availability_set_id: t.availability_set_id.clone(),
                availability_zone: t.availability_zone.clone(),
                proximity_placement_group_id: t.proximity_placement_group_id.clone(),
                capacity_reservation_group_id: t.capacity_reservation_group_id.clone(),
                cache_storage_accounts: t.cache_storage_accounts.clone().into_iter().collect(),
            }),
            drill: self.drill.as_ref().map(|d| DrillSettings {
                test_network_id: d.test_network_id.clone(),
                validation_timeout,
                keep_test_vm: d.keep_test_vm,
            }),
            proceed_with_ready: self.proceed_with_ready,
            labels: self.labels.clone().into_iter().collect(),
            deadlines,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_maps_onto_a_plan_spec() {
        let doc: String = include_str!("planfile.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")))
            .collect();
        let spec = PlanFile::parse(&doc).unwrap().spec(Some("/vault")).unwrap();
        assert_eq!(spec.vault_id, "/subscriptions/…/vaults/prod-vault");
        assert_eq!(spec.waves.len(), 2);
        assert_eq!(spec.waves[1].vm_names, ["web-01", "web-02"]);
        assert_eq!(spec.waves[1].before.len(), 2);
        assert!(matches!(spec.waves[1].before[0].kind, Some(tern_proto::gate_step::Kind::Approval(_))));
        assert_eq!(spec.waves[1].before[0].description, "web team signs off");
        assert_eq!(spec.waves[1].after[0].run_after(), tern_proto::AfterWhen::Committed);
        match &spec.waves[1].after[0].kind {
            Some(tern_proto::gate_step::Kind::Hook(h)) => {
                assert_eq!(h.subject, "tern.hooks.dns-update");
                assert_eq!(h.timeout.map(|t| t.seconds), Some(30));
                assert_eq!(h.retries, Some(2));
            }
            other => panic!("a hook step: {other:?}"),
        }
        let both = "select: { vms: [a] }\nwaves: [{ vms: [a], before: [{ wait: 1s, approval: {} }] }]";
        let err = PlanFile::parse(both).unwrap().spec(Some("/v")).unwrap_err().to_string();
        assert!(err.contains("waves[0].before[0]"), "{err}");
        assert_eq!(spec.recovery_point.unwrap().kind, tern_proto::RecoveryPointKind::LatestAppConsistent as i32);
        assert_eq!(spec.failure_policy.unwrap().on_critical_failure, OnCriticalFailure::Stop as i32);
        assert_eq!(spec.labels["change"], "CHG-1042");
        assert_eq!(spec.shut_down_source, Some(true));
    }

    #[test]
    fn the_reference_in_docs_parses() {
        let doc = include_str!("../../../docs/plan-file.md");
        let yaml: String = doc
            .lines()
            .skip_while(|l| *l != "```yaml")
            .skip(1)
            .take_while(|l| *l != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        let spec = PlanFile::parse(&yaml).unwrap().spec(None).unwrap();
        assert_eq!(spec.concurrency.unwrap().reprotect, 50);
        assert_eq!(spec.drill.unwrap().validation_timeout.unwrap().seconds, 1800);
        assert_eq!(spec.reprotect_target.unwrap().availability_zone, "2");
    }

    #[test]
    fn a_typo_is_an_error_that_names_the_key_and_the_line() {
        let err = PlanFile::parse("select:\n  all_ready: true\nrecovery_pont: latest\n").unwrap_err().to_string();
        assert!(err.contains("recovery_pont") && err.contains("line 3"), "{err}");
        let err = PlanFile::parse("select:\n  vm: [a]\n").unwrap_err().to_string();
        assert!(err.contains("vm") && err.contains("line 2"), "{err}");
        let two = PlanFile::parse("select:\n  vms: [a]\n  all_ready: true\n").unwrap().spec(None).unwrap_err();
        assert!(two.to_string().contains("exactly one"), "{two}");
        let err = PlanFile::parse("recovery_point: yesterday\nselect: {vms: [a]}\n").unwrap().spec(None).unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
        let err = PlanFile::parse("proceed_with_ready: true\n").unwrap().spec(None).unwrap_err();
        assert!(err.to_string().contains("select"), "{err}");
    }
}
