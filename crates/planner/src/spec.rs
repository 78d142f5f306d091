//! Plan spec validation: a `PlanSpec` as submitted → a plan the planner can run, or an error
//! that names the offending field (gRPC `InvalidArgument`). Nothing is looked up or changed here.

use std::collections::HashSet;

use tern_proto::{Direction, OnCriticalFailure, PlanMode, PlanSpec, RecoveryPointChoice, RecoveryPointKind, selection};

/// An invalid spec: the field (protobuf path) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// E.g. `recovery_point.custom_id`, `selection.vm_names`, `waves[1].vm_names[0]`.
    pub field: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl SpecError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

impl From<SpecError> for tonic::Status {
    fn from(e: SpecError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Which VMs a plan selects, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    /// By friendly name.
    Names(Vec<String>),
    /// By protected item ARM id.
    ItemIds(Vec<String>),
    /// An ASR recovery plan (its boot groups become waves).
    RecoveryPlan(String),
    /// Every VM whose recovery VM lives in this resource group.
    ResourceGroup(String),
    /// Every VM with this tag.
    Tag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// Every VM ready for failback.
    AllReady,
}

impl Selected {
    /// How many VMs the selection names, when it names them (`None` for queries).
    pub fn named_count(&self) -> Option<usize> {
        match self {
            Selected::Names(v) | Selected::ItemIds(v) => Some(v.len()),
            _ => None,
        }
    }
}

/// A validated spec, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    /// The spec as submitted (defaults filled in).
    pub spec: PlanSpec,
    /// The selection.
    pub selected: Selected,
    /// Failback or failover.
    pub direction: Direction,
    /// Execute, preflight only, drill.
    pub mode: PlanMode,
    /// Shut the source VM down first.
    pub shut_down_source: bool,
    /// The vaults the selection draws from (ARM ids), `vault_id` first. With `all_vaults` on a
    /// planner allowed every vault (`asr.vaults = ["*"]`), its own vault: the rest are
    /// discovered when the selection is resolved (`discover`).
    pub vaults: Vec<String>,
    /// Find every vault the credentials can see when resolving the selection.
    pub discover: bool,
}

/// The longest request id accepted.
const MAX_REQUEST_ID: usize = 128;

fn unique(field: &str, values: &[String]) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for (i, v) in values.iter().enumerate() {
        if v.trim().is_empty() {
            return Err(SpecError::new(format!("{field}[{i}]"), "is empty"));
        }
        if !seen.insert(v.to_ascii_lowercase()) {
            return Err(SpecError::new(format!("{field}[{i}]"), format!("{v:?} is listed twice")));
        }
    }
    Ok(())
}

/// The longest deadline a phase may be given: a week.
const MAX_DEADLINE_SECS: i64 = 7 * 24 * 3600;
/// The most automatic retries a plan may ask for.
const MAX_AUTOMATIC_RETRIES: u32 = 10;

/// Validates `spec` for a planner acting on the vaults `asr` allows.
pub fn validate(spec: &PlanSpec, asr: &tern_asr::AsrConfig) -> Result<ValidSpec, SpecError> {
    let mut spec = spec.clone();
    if spec.request_id.len() > MAX_REQUEST_ID || spec.request_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::new(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID} characters without spaces"),
        ));
    }
    let vaults = vaults(&spec, asr)?;
    if spec.vault_id.trim().is_empty() {
        spec.vault_id = vaults[0].clone();
    }

    let selection = spec.selection.as_ref().and_then(|s| s.by.clone()).ok_or_else(|| {
        SpecError::new(
            "selection",
            "is empty: choose VMs by name, protected item id, recovery plan, resource group, tag, or all ready",
        )
    })?;
    let selected = match selection {
        selection::By::VmNames(list) => {
            if list.values.is_empty() {
                return Err(SpecError::new("selection.vm_names", "names no VM"));
            }
            unique("selection.vm_names", &list.values)?;
            Selected::Names(list.values)
        }
        selection::By::ProtectedItemIds(list) => {
            if list.values.is_empty() {
                return Err(SpecError::new("selection.protected_item_ids", "names no protected item"));
            }
            unique("selection.protected_item_ids", &list.values)?;
            if let Some((i, id)) = list
                .values
                .iter()
                .enumerate()
                .find(|(_, id)| !id.to_ascii_lowercase().contains("/replicationprotecteditems/"))
            {
                return Err(SpecError::new(
                    format!("selection.protected_item_ids[{i}]"),
                    format!("{id:?} is not a protected item ARM id"),
                ));
            }
            Selected::ItemIds(list.values)
        }
        selection::By::RecoveryPlan(name) if !name.trim().is_empty() => Selected::RecoveryPlan(name),
        selection::By::RecoveryPlan(_) => return Err(SpecError::new("selection.recovery_plan", "is empty")),
        selection::By::ResourceGroup(rg) if !rg.trim().is_empty() => Selected::ResourceGroup(rg),
        selection::By::ResourceGroup(_) => return Err(SpecError::new("selection.resource_group", "is empty")),
        selection::By::Tag(tag) => match tag.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Selected::Tag { key: k.trim().to_owned(), value: v.trim().to_owned() }
            }
            _ => return Err(SpecError::new("selection.tag", format!("{tag:?} is not key=value"))),
        },
        selection::By::AllReady(true) => Selected::AllReady,
        selection::By::AllReady(false) => {
            return Err(SpecError::new("selection.all_ready", "is false: set it, or select VMs another way"));
        }
    };

    let direction = match Direction::try_from(spec.direction) {
        Ok(Direction::Unspecified) => Direction::Failback,
        Ok(d) => d,
        Err(_) => return Err(SpecError::new("direction", format!("unknown value {}", spec.direction))),
    };
    spec.direction = direction as i32;
    let mode = match PlanMode::try_from(spec.mode) {
        Ok(PlanMode::Unspecified) => PlanMode::Execute,
        Ok(m) => m,
        Err(_) => return Err(SpecError::new("mode", format!("unknown value {}", spec.mode))),
    };
    spec.mode = mode as i32;

    let point = spec.recovery_point.get_or_insert_with(RecoveryPointChoice::default);
    let kind = RecoveryPointKind::try_from(point.kind)
        .map_err(|_| SpecError::new("recovery_point.kind", format!("unknown value {}", point.kind)))?;
    if kind == RecoveryPointKind::Unspecified {
        point.kind = RecoveryPointKind::LatestProcessed as i32;
    }
    match (kind, point.custom_id.trim().is_empty()) {
        (RecoveryPointKind::Custom, true) => {
            return Err(SpecError::new("recovery_point.custom_id", "is required with a custom recovery point"));
        }
        (RecoveryPointKind::Custom, false) => match selected.named_count() {
            Some(1) => {}
            Some(n) => {
                return Err(SpecError::new(
                    "recovery_point",
                    format!("a custom recovery point applies to exactly one VM; this plan selects {n}"),
                ));
            }
            None => {
                return Err(SpecError::new(
                    "recovery_point",
                    "a custom recovery point applies to exactly one VM; select it by name or protected item id",
                ));
            }
        },
        (_, false) => return Err(SpecError::new("recovery_point.custom_id", "is only for a custom recovery point")),
        (_, true) => {}
    }

    // Waves: ordered groups of selected VMs, each VM at most once.
    let named: Option<HashSet<String>> = match &selected {
        Selected::Names(v) => Some(v.iter().map(|n| n.to_ascii_lowercase()).collect()),
        _ => None,
    };
    if !spec.waves.is_empty() && matches!(selected, Selected::RecoveryPlan(_)) {
        return Err(SpecError::new("waves", "a recovery plan's boot groups are its waves; do not give both"));
    }
    let mut in_waves = HashSet::new();
    for (w, wave) in spec.waves.iter().enumerate() {
        if wave.vm_names.is_empty() {
            return Err(SpecError::new(format!("waves[{w}].vm_names"), "names no VM"));
        }
        for (i, vm) in wave.vm_names.iter().enumerate() {
            let field = format!("waves[{w}].vm_names[{i}]");
            if vm.trim().is_empty() {
                return Err(SpecError::new(field, "is empty"));
            }
            if !in_waves.insert(vm.to_ascii_lowercase()) {
                return Err(SpecError::new(field, format!("{vm:?} is in two waves")));
            }
            if named.as_ref().is_some_and(|n| !n.contains(&vm.to_ascii_lowercase())) {
                return Err(SpecError::new(field, format!("{vm:?} is not in selection.vm_names")));
            }
        }
        for (side, steps) in [("before", &wave.before), ("after", &wave.after)] {
            for (k, step) in steps.iter().enumerate() {
                gate_step(step, &format!("waves[{w}].{side}[{k}]"), side == "after")?;
            }
        }
    }

    if let Some(policy) = &spec.failure_policy {
        if OnCriticalFailure::try_from(policy.on_critical_failure).is_err() {
            return Err(SpecError::new(
                "failure_policy.on_critical_failure",
                format!("unknown value {}", policy.on_critical_failure),
            ));
        }
        for (i, vm) in policy.optional_vms.iter().enumerate() {
            if named.as_ref().is_some_and(|n| !n.contains(&vm.to_ascii_lowercase())) {
                return Err(SpecError::new(
                    format!("failure_policy.optional_vms[{i}]"),
                    format!("{vm:?} is not in selection.vm_names"),
                ));
            }
        }
    }

    if let Some(d) = &spec.deadlines {
        for (name, value) in [("failover", d.failover), ("reprotect", d.reprotect), ("cleanup", d.cleanup)] {
            let Some(v) = value else { continue };
            if v.seconds < 0 || v.nanos < 0 || (v.seconds == 0 && v.nanos > 0) || v.seconds > MAX_DEADLINE_SECS {
                return Err(SpecError::new(
                    format!("deadlines.{name}"),
                    format!("must be between 1 s and 7 days (0 or unset: the default), got {}s", v.seconds),
                ));
            }
        }
    }
    if let Some(policy) = &spec.failure_policy
        && policy.max_automatic_retries > MAX_AUTOMATIC_RETRIES
    {
        return Err(SpecError::new(
            "failure_policy.max_automatic_retries",
            format!("at most {MAX_AUTOMATIC_RETRIES}, got {}", policy.max_automatic_retries),
        ));
    }

    match (mode, &spec.drill) {
        (PlanMode::Drill, None) => {
            return Err(SpecError::new("drill", "is required in drill mode (at least drill.test_network_id)"));
        }
        (PlanMode::Drill, Some(d)) if d.test_network_id.trim().is_empty() => {
            return Err(SpecError::new(
                "drill.test_network_id",
                "is required: a drill fails over into an isolated network",
            ));
        }
        (PlanMode::Execute | PlanMode::PreflightOnly, Some(_)) => {
            return Err(SpecError::new("drill", "is only for drill mode"));
        }
        _ => {}
    }
    if spec.labels.keys().any(|k| k.trim().is_empty()) {
        return Err(SpecError::new("labels", "keys must not be empty"));
    }
    let shut_down_source = spec.shut_down_source.unwrap_or(true);
    let discover = spec.all_vaults && asr.vaults.iter().any(|v| v == "*");
    Ok(ValidSpec { spec, selected, direction, mode, shut_down_source, vaults, discover })
}

/// The vaults a spec draws from, `vault_id` first, each one the planner acts on.
fn vaults(spec: &PlanSpec, asr: &tern_asr::AsrConfig) -> Result<Vec<String>, SpecError> {
    let mut named: Vec<(String, String)> = Vec::new();
    if !spec.vault_id.trim().is_empty() {
        named.push(("vault_id".into(), spec.vault_id.trim().trim_end_matches('/').to_owned()));
    }
    for (i, v) in spec.vault_ids.iter().enumerate() {
        named.push((format!("vault_ids[{i}]"), v.trim().trim_end_matches('/').to_owned()));
    }
    if spec.all_vaults {
        if !named.is_empty() {
            return Err(SpecError::new(
                "all_vaults",
                "draws from every vault: name no vault_id or vault_ids beside it",
            ));
        }
        return Ok(asr.vault_ids());
    }
    if named.is_empty() {
        return Err(SpecError::new(
            "vault_id",
            "is required (the ARM id of the Recovery Services vault), or all_vaults for every vault",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (field, v) in named {
        tern_asr::config::parse_vault_id(&v).map_err(|e| SpecError::new(&field, e))?;
        if !asr.allows(&v) {
            return Err(SpecError::new(
                &field,
                format!(
                    "unknown vault {v:?}; this planner acts on {} (further vaults are listed in its asr.vaults)",
                    asr.vault_ids().join(", ")
                ),
            ));
        }
        if out.iter().any(|o| o.eq_ignore_ascii_case(&v)) {
            return Err(SpecError::new(&field, format!("{v:?} is named twice")));
        }
        out.push(v);
    }
    Ok(out)
}

/// The longest `wait` gate: a plan paused for longer than a week is a plan someone forgot.
const LONGEST_WAIT_SECS: i64 = 7 * 24 * 3600;

/// The longest a hook try may wait for its answer.
const LONGEST_HOOK_TIMEOUT_SECS: i64 = 600;
/// The most tries after the first a hook step may ask for.
const MOST_HOOK_RETRIES: u32 = 10;

/// A gate step names exactly one kind; a wait lasts between a second and a week; only `after`
/// steps say when they run.
fn gate_step(step: &tern_proto::GateStep, field: &str, after: bool) -> Result<(), SpecError> {
    use tern_proto::gate_step::Kind;
    match &step.kind {
        None => return Err(SpecError::new(field, "names no kind: give `approval`, `wait` or `hook`")),
        Some(Kind::Approval(_)) => {}
        Some(Kind::Hook(h)) => {
            tern_bus::subjects::hook_subject(&h.subject)
                .map_err(|e| SpecError::new(format!("{field}.hook.subject"), e))?;
            if let Some(t) = h.timeout
                && !(1..=LONGEST_HOOK_TIMEOUT_SECS).contains(&t.seconds)
            {
                return Err(SpecError::new(format!("{field}.hook.timeout"), "must be between 1s and 10m"));
            }
            if h.retries.is_some_and(|r| r > MOST_HOOK_RETRIES) {
                return Err(SpecError::new(
                    format!("{field}.hook.retries"),
                    format!("at most {MOST_HOOK_RETRIES} (a hook that fails that often needs a person)"),
                ));
            }
        }
        Some(Kind::Wait(w)) => {
            let secs = w.duration.map_or(0, |d| d.seconds);
            if !(1..=LONGEST_WAIT_SECS).contains(&secs) {
                return Err(SpecError::new(format!("{field}.wait"), "must last between 1s and 7 days"));
            }
        }
    }
    if !after
        && tern_proto::AfterWhen::try_from(step.run_after).unwrap_or_default() != tern_proto::AfterWhen::Unspecified
    {
        return Err(SpecError::new(format!("{field}.when"), "only `after` steps say when they run"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{DrillSettings, FailurePolicy, NameList, Selection, Wave};

    const VAULT: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v";

    fn names(v: &[&str]) -> Option<Selection> {
        Some(Selection {
            by: Some(selection::By::VmNames(NameList { values: v.iter().map(|s| (*s).to_owned()).collect() })),
        })
    }

    fn spec(vms: &[&str]) -> PlanSpec {
        PlanSpec { vault_id: VAULT.into(), selection: names(vms), ..Default::default() }
    }

    fn home() -> tern_asr::AsrConfig {
        let other = "/subscriptions/s2/resourceGroups/rg2/providers/Microsoft.RecoveryServices/vaults/v2";
        tern_asr::AsrConfig { vaults: vec![other.into()], ..tern_asr::AsrConfig::for_vault("s", "rg", "v") }
    }

    fn field(r: Result<ValidSpec, SpecError>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let v = validate(&spec(&["web-1", "web-2"]), &home()).unwrap();
        assert_eq!((v.direction, v.mode, v.shut_down_source), (Direction::Failback, PlanMode::Execute, true));
        assert_eq!(v.spec.recovery_point.unwrap().kind, RecoveryPointKind::LatestProcessed as i32);
        assert_eq!(v.selected, Selected::Names(vec!["web-1".into(), "web-2".into()]));
    }

    #[test]
    fn invalid_specs_are_refused_naming_the_field() {
        let mut s = spec(&["a", "b"]);
        s.recovery_point = Some(RecoveryPointChoice { kind: RecoveryPointKind::Custom as i32, custom_id: "rp".into() });
        let err = validate(&s, &home()).unwrap_err();
        assert_eq!(err.field, "recovery_point");
        assert!(err.problem.contains("exactly one VM") && err.problem.contains('2'), "{err}");

        assert_eq!(field(validate(&PlanSpec { vault_id: VAULT.into(), ..Default::default() }, &home())), "selection");
        assert_eq!(field(validate(&spec(&[]), &home())), "selection.vm_names");
        assert_eq!(field(validate(&spec(&["a", "A"]), &home())), "selection.vm_names[1]");
        let not_an_id =
            validate(&PlanSpec { vault_id: "/subscriptions/x/vaults/other".into(), ..spec(&["a"]) }, &home())
                .unwrap_err();
        assert!(
            not_an_id.field == "vault_id" && not_an_id.problem.contains("not a Recovery Services vault's ARM id"),
            "{not_an_id}"
        );
        let elsewhere = VAULT.replace("/vaults/v", "/vaults/w");
        let unknown = validate(&PlanSpec { vault_ids: vec![elsewhere], ..spec(&["a"]) }, &home()).unwrap_err();
        assert!(unknown.field == "vault_ids[0]" && unknown.problem.contains("unknown vault"), "{unknown}");

        let mut s = spec(&["a", "b"]);
        s.waves = vec![
            Wave { name: "1".into(), vm_names: vec!["a".into()], ..Default::default() },
            Wave { name: "2".into(), vm_names: vec!["a".into()], ..Default::default() },
        ];
        assert_eq!(field(validate(&s, &home())), "waves[1].vm_names[0]");
        s.waves = vec![Wave { name: "1".into(), vm_names: vec!["c".into()], ..Default::default() }];
        assert_eq!(field(validate(&s, &home())), "waves[0].vm_names[0]");
        let mut gated = spec(&["a"]);
        gated.waves = vec![Wave {
            name: "1".into(),
            vm_names: vec!["a".into()],
            before: vec![tern_proto::GateStep::default()],
            ..Default::default()
        }];
        assert_eq!(field(validate(&gated, &home())), "waves[0].before[0]", "a step names its kind");
        gated.waves[0].before[0].kind =
            Some(tern_proto::gate_step::Kind::Wait(tern_proto::WaitGate { duration: None }));
        assert_eq!(field(validate(&gated, &home())), "waves[0].before[0].wait", "a wait lasts");
        let hook = |subject: &str, timeout: i64, retries: Option<u32>| {
            Some(tern_proto::gate_step::Kind::Hook(tern_proto::HookGate {
                subject: subject.into(),
                timeout: Some(prost_types::Duration { seconds: timeout, nanos: 0 }),
                retries,
            }))
        };
        gated.waves[0].before[0].kind = hook("tern.hooks.dns-update", 30, Some(2));
        assert!(validate(&gated, &home()).is_ok());
        for (kind, want) in [
            (hook("tern.events.p1.failover.succeeded", 30, None), "waves[0].before[0].hook.subject"),
            (hook("tern.hooks.>", 30, None), "waves[0].before[0].hook.subject"),
            (hook("tern.hooks", 30, None), "waves[0].before[0].hook.subject"),
            (hook("tern.hooks.dns", 601, None), "waves[0].before[0].hook.timeout"),
            (hook("tern.hooks.dns", 30, Some(11)), "waves[0].before[0].hook.retries"),
        ] {
            gated.waves[0].before[0].kind = kind;
            let err = validate(&gated, &home()).unwrap_err();
            assert_eq!(err.field, want, "{err}");
        }

        let mut s = spec(&["a"]);
        s.mode = PlanMode::Drill as i32;
        assert_eq!(field(validate(&s, &home())), "drill");
        s.drill = Some(DrillSettings::default());
        assert_eq!(field(validate(&s, &home())), "drill.test_network_id");
        let mut s = spec(&["a"]);
        s.failure_policy = Some(FailurePolicy { optional_vms: vec!["zz".into()], ..Default::default() });
        assert_eq!(field(validate(&s, &home())), "failure_policy.optional_vms[0]");
        s.failure_policy = Some(FailurePolicy { max_automatic_retries: 11, ..Default::default() });
        assert_eq!(field(validate(&s, &home())), "failure_policy.max_automatic_retries");
        s.failure_policy = None;
        let week_and_a_second = prost_types::Duration { seconds: 7 * 24 * 3600 + 1, nanos: 0 };
        s.deadlines = Some(tern_proto::Deadlines { reprotect: Some(week_and_a_second), ..Default::default() });
        assert_eq!(field(validate(&s, &home())), "deadlines.reprotect");
        s.deadlines = None;
        let mut s = spec(&["a"]);
        s.recovery_point = Some(RecoveryPointChoice { kind: RecoveryPointKind::Latest as i32, custom_id: "x".into() });
        assert_eq!(field(validate(&s, &home())), "recovery_point.custom_id");
    }

    #[test]
    fn a_plan_draws_from_the_vaults_it_names_or_every_vault_the_planner_acts_on() {
        let other = "/subscriptions/s2/resourceGroups/rg2/providers/Microsoft.RecoveryServices/vaults/v2";
        let v = validate(&PlanSpec { vault_ids: vec![other.to_uppercase()], ..spec(&["a"]) }, &home()).unwrap();
        assert_eq!(v.vaults.len(), 2);
        assert!(v.vaults[0].eq_ignore_ascii_case(VAULT));
        let all = validate(&PlanSpec { vault_id: String::new(), all_vaults: true, ..spec(&["a"]) }, &home()).unwrap();
        assert_eq!(all.vaults, home().vault_ids());
        assert_eq!(all.spec.vault_id, home().vault_id(), "the planner's own vault comes first");
        assert_eq!(field(validate(&PlanSpec { all_vaults: true, ..spec(&["a"]) }, &home())), "all_vaults");
        assert_eq!(
            field(validate(&PlanSpec { vault_ids: vec![VAULT.into()], ..spec(&["a"]) }, &home())),
            "vault_ids[0]"
        );
        assert_eq!(field(validate(&PlanSpec { vault_id: String::new(), ..spec(&["a"]) }, &home())), "vault_id");
    }

    #[test]
    fn a_custom_point_for_one_vm_is_fine_and_errors_map_to_invalid_argument() {
        let mut s = spec(&["a"]);
        s.recovery_point = Some(RecoveryPointChoice { kind: RecoveryPointKind::Custom as i32, custom_id: "rp".into() });
        assert!(validate(&s, &home()).is_ok());
        let status: tonic::Status = SpecError::new("selection", "is empty").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("selection:"));
    }
}
