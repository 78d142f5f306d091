//! The simulator against official Azure payloads.
//!
//! 1. Round trip: every official REST-spec example (and every recorded ASR body) of an
//!    operation the simulator implements deserializes into the simulator's wire type and
//!    serializes back to the same JSON (absent and `null` being equal). A mismatch is reported
//!    with the file and a JSON pointer to the differing value.
//! 2. A2A field coverage: the simulator, driven over real HTTP through failover, commit and
//!    switch protection, answers with every key the recorded A2A bodies carry.
//!
//! The fixtures live outside the repository, in `/work/shared/fixtures/asr` (see `SOURCES.md`
//! there), next to the workspace root.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tern_asr_sim::wire::{
    ApplyRecoveryPointInput, ContainerProperties, FabricProperties, FailoverInput, Input, JobProperties,
    MappingProperties, Page, PlanFailoverInput, PolicyProperties, ProtectedItemProperties, RecoveryPlanProperties,
    RecoveryPointProperties, Resource, ReverseReplicationInput, SwitchProtectionInput,
};

// =============================================================================================
// Fixtures

fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/asr");
    assert!(
        dir.join("SOURCES.md").is_file(),
        "the ASR fixtures are missing: expected {} (i.e. /work/shared/fixtures/asr, beside the repository) \
         holding SOURCES.md, 2025-08-01/, 2026-05-01/ and recordings/",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()))
}

/// The entries of a recorded session (`{"Entries": [...]}` or a bare list).
fn recording(file: &str) -> Vec<Value> {
    let path = fixtures_dir().join("recordings").join(file);
    match read_json(&path) {
        Value::Array(entries) => entries,
        Value::Object(mut o) => match o.remove("Entries") {
            Some(Value::Array(entries)) => entries,
            _ => panic!("{}: no Entries list", path.display()),
        },
        _ => panic!("{}: not a recording", path.display()),
    }
}

/// A recorded body (`ResponseBody` or `RequestBody`, a JSON string); `None` when empty.
fn recorded_body(entries: &[Value], index: usize, field: &str) -> Option<Value> {
    let entry = entries.get(index).unwrap_or_else(|| panic!("recording has no entry {index}"));
    match entry.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            Some(serde_json::from_str(s).unwrap_or_else(|e| panic!("entry {index} {field} is not JSON: {e}")))
        }
        Some(Value::Object(_)) | Some(Value::Array(_)) => entry.get(field).cloned(),
        _ => None,
    }
}

const REPROTECT: &str = "azure-powershell/A2AReprotectTest.json";
const FAILOVER_COMMIT: &str = "azure-powershell/A2AFailoverCommit-excerpt.json";
const SDK_A2A: &str = "azure-sdk-for-net/GetA2AResources.json";

// =============================================================================================
// Wire types under test

/// A wire type, by name, with its round-trip check.
#[derive(Clone, Copy)]
struct Wire {
    name: &'static str,
    check: fn(&Value) -> Result<(), Vec<Diff>>,
}

macro_rules! wire {
    ($t:ty) => {
        Wire { name: stringify!($t), check: round_trip::<$t> }
    };
}

const ITEM: Wire = wire!(Resource<ProtectedItemProperties>);
const ITEM_PAGE: Wire = wire!(Page<Resource<ProtectedItemProperties>>);
const POINT: Wire = wire!(Resource<RecoveryPointProperties>);
const POINT_PAGE: Wire = wire!(Page<Resource<RecoveryPointProperties>>);
const JOB: Wire = wire!(Resource<JobProperties>);
const JOB_PAGE: Wire = wire!(Page<Resource<JobProperties>>);
const FABRIC: Wire = wire!(Resource<FabricProperties>);
const FABRIC_PAGE: Wire = wire!(Page<Resource<FabricProperties>>);
const CONTAINER: Wire = wire!(Resource<ContainerProperties>);
const CONTAINER_PAGE: Wire = wire!(Page<Resource<ContainerProperties>>);
const MAPPING: Wire = wire!(Resource<MappingProperties>);
const MAPPING_PAGE: Wire = wire!(Page<Resource<MappingProperties>>);
const POLICY: Wire = wire!(Resource<PolicyProperties>);
const POLICY_PAGE: Wire = wire!(Page<Resource<PolicyProperties>>);
const PLAN: Wire = wire!(Resource<RecoveryPlanProperties>);
const PLAN_PAGE: Wire = wire!(Page<Resource<RecoveryPlanProperties>>);
const FAILOVER_INPUT: Wire = wire!(Input<FailoverInput>);
const APPLY_INPUT: Wire = wire!(Input<ApplyRecoveryPointInput>);
const SWITCH_INPUT: Wire = wire!(Input<SwitchProtectionInput>);
const REVERSE_INPUT: Wire = wire!(Input<ReverseReplicationInput>);
const PLAN_INPUT: Wire = wire!(Input<PlanFailoverInput>);

// =============================================================================================
// Official examples: the table

/// What is done with an example's request `parameters` body.
enum Request {
    /// No request body in the example.
    None,
    /// `parameters[key]` is round-tripped through the wire type the simulator parses it with.
    RoundTrip(&'static str, Wire),
    /// `parameters[key]` exists but the simulator does not parse it (reason).
    NotParsed(&'static str, &'static str),
}

/// What is done with one example file.
enum Handling {
    /// `responses["200"].body` is round-tripped through `response`, and the request as said.
    RoundTrip { response: Wire, request: Request },
    /// Not an operation the simulator implements, or nothing to round-trip (reason).
    Skip(&'static str),
}

use Handling::{RoundTrip, Skip};

/// Every example file, by `<api-version>/<file>`. A file in the fixture folders that is not
/// listed here fails the test, so new examples are decided on, not ignored.
const EXAMPLES: &[(&str, Handling)] = &[
    // ---- Protected items
    ("2026-05-01/ReplicationProtectedItems_Get.json", RoundTrip { response: ITEM, request: Request::None }),
    ("2025-08-01/ReplicationProtectedItems_List.json", RoundTrip { response: ITEM_PAGE, request: Request::None }),
    (
        "2025-08-01/ReplicationProtectedItems_ListByReplicationProtectionContainers.json",
        RoundTrip { response: ITEM_PAGE, request: Request::None },
    ),
    (
        "2026-05-01/ReplicationProtectedItems_UnplannedFailover.json",
        RoundTrip { response: ITEM, request: Request::RoundTrip("failoverInput", FAILOVER_INPUT) },
    ),
    (
        "2025-08-01/ReplicationProtectedItems_PlannedFailover.json",
        RoundTrip {
            response: ITEM,
            request: Request::NotParsed("failoverInput", "the simulator does not serve plannedFailover on items"),
        },
    ),
    ("2025-08-01/ReplicationProtectedItems_FailoverCommit.json", RoundTrip { response: ITEM, request: Request::None }),
    ("2025-08-01/ReplicationProtectedItems_FailoverCancel.json", RoundTrip { response: ITEM, request: Request::None }),
    (
        "2025-08-01/ReplicationProtectedItems_ApplyRecoveryPoint.json",
        RoundTrip { response: ITEM, request: Request::RoundTrip("applyRecoveryPointInput", APPLY_INPUT) },
    ),
    (
        "2025-08-01/ReplicationProtectedItems_Reprotect.json",
        RoundTrip { response: ITEM, request: Request::RoundTrip("reprotectInput", REVERSE_INPUT) },
    ),
    (
        "2025-08-01/ReplicationProtectedItems_TestFailover.json",
        RoundTrip { response: ITEM, request: Request::RoundTrip("testfailoverInput", FAILOVER_INPUT) },
    ),
    (
        "2026-05-01/ReplicationProtectedItems_TestFailoverCleanup.json",
        RoundTrip {
            response: ITEM,
            request: Request::NotParsed(
                "cleanupInput",
                "the simulator ignores the testFailoverCleanup body of an item",
            ),
        },
    ),
    (
        "2026-05-01/ReplicationProtectedItems_RepairReplication.json",
        RoundTrip { response: ITEM, request: Request::None },
    ),
    (
        "2025-08-01/ReplicationProtectedItems_Create.json",
        RoundTrip {
            response: ITEM,
            request: Request::NotParsed("input", "the simulator does not serve PUT (enable replication) on items"),
        },
    ),
    (
        "2025-08-01/ReplicationProtectedItems_Purge.json",
        Skip("no body to round-trip: the example has only 202/204 without body and no request body"),
    ),
    (
        "2026-05-01/ReplicationProtectedItems_Delete.json",
        Skip(
            "no response body (202/204 only); its disableProtectionInput is ignored by the simulator's `remove` \
             (it parses no body)",
        ),
    ),
    // ---- Recovery points
    ("2026-05-01/RecoveryPoints_Get.json", RoundTrip { response: POINT, request: Request::None }),
    (
        "2025-08-01/RecoveryPoints_ListByReplicationProtectedItems.json",
        RoundTrip { response: POINT_PAGE, request: Request::None },
    ),
    // ---- Jobs
    ("2025-08-01/ReplicationJobs_Get.json", RoundTrip { response: JOB, request: Request::None }),
    ("2026-05-01/ReplicationJobs_List.json", RoundTrip { response: JOB_PAGE, request: Request::None }),
    ("2026-05-01/ReplicationJobs_Cancel.json", RoundTrip { response: JOB, request: Request::None }),
    ("2026-05-01/ReplicationJobs_Restart.json", RoundTrip { response: JOB, request: Request::None }),
    (
        "2026-05-01/ReplicationJobs_Resume.json",
        RoundTrip {
            response: JOB,
            request: Request::NotParsed("resumeJobParams", "the simulator ignores the body of a job resume"),
        },
    ),
    // ---- Topology
    ("2025-08-01/ReplicationFabrics_Get.json", RoundTrip { response: FABRIC, request: Request::None }),
    ("2025-08-01/ReplicationFabrics_List.json", RoundTrip { response: FABRIC_PAGE, request: Request::None }),
    ("2025-08-01/ReplicationProtectionContainers_Get.json", RoundTrip { response: CONTAINER, request: Request::None }),
    (
        "2026-05-01/ReplicationProtectionContainers_ListByReplicationFabrics.json",
        RoundTrip { response: CONTAINER_PAGE, request: Request::None },
    ),
    (
        "2026-05-01/ReplicationProtectionContainers_SwitchProtection.json",
        RoundTrip { response: CONTAINER, request: Request::RoundTrip("switchInput", SWITCH_INPUT) },
    ),
    (
        "2025-08-01/ReplicationProtectionContainerMappings_Get.json",
        RoundTrip { response: MAPPING, request: Request::None },
    ),
    ("2026-05-01/ReplicationPolicies_Get.json", RoundTrip { response: POLICY, request: Request::None }),
    // ---- Recovery plans
    ("2025-08-01/ReplicationRecoveryPlans_Get.json", RoundTrip { response: PLAN, request: Request::None }),
    ("2025-08-01/ReplicationRecoveryPlans_List.json", RoundTrip { response: PLAN_PAGE, request: Request::None }),
    (
        "2025-08-01/ReplicationRecoveryPlans_Create.json",
        RoundTrip {
            response: PLAN,
            request: Request::NotParsed("input", "the simulator does not serve PUT on recovery plans"),
        },
    ),
    (
        "2025-08-01/ReplicationRecoveryPlans_UnplannedFailover.json",
        RoundTrip { response: PLAN, request: Request::RoundTrip("input", PLAN_INPUT) },
    ),
    ("2025-08-01/ReplicationRecoveryPlans_FailoverCommit.json", RoundTrip { response: PLAN, request: Request::None }),
    (
        "2026-05-01/ReplicationRecoveryPlans_PlannedFailover.json",
        RoundTrip {
            response: PLAN,
            request: Request::NotParsed("input", "the simulator does not serve plannedFailover on recovery plans"),
        },
    ),
    (
        "2026-05-01/ReplicationRecoveryPlans_TestFailover.json",
        RoundTrip { response: PLAN, request: Request::RoundTrip("input", PLAN_INPUT) },
    ),
    (
        // The simulator parses every recovery plan action's body as PlanFailoverInput.
        "2026-05-01/ReplicationRecoveryPlans_TestFailoverCleanup.json",
        RoundTrip { response: PLAN, request: Request::RoundTrip("input", PLAN_INPUT) },
    ),
    ("2026-05-01/ReplicationRecoveryPlans_Reprotect.json", RoundTrip { response: PLAN, request: Request::None }),
    // ---- Not simulated
    ("2025-08-01/ReplicationEvents_List.json", Skip("replicationEvents are not simulated")),
    ("2025-08-01/ReplicationVaultHealth_Get.json", Skip("replicationVaultHealth is not simulated")),
];

// =============================================================================================
// Recorded traffic: the table

/// What is done with a range of recorded entries.
enum Part {
    /// `ResponseBody` round-tripped through the wire type.
    Response(Wire),
    /// `RequestBody` round-tripped through the wire type.
    RequestBody(Wire),
    /// Not round-tripped (reason).
    Skip(&'static str),
}

/// Every entry of each recording, by inclusive index range. An entry not covered fails the test.
const RECORDED: &[(&str, RangeInclusive<usize>, Part)] = &[
    (REPROTECT, 0..=2, Part::Skip("vault GET/list and vaultExtendedInfo: the simulator's vault body is untyped")),
    (REPROTECT, 3..=3, Part::Response(FABRIC)),
    (REPROTECT, 4..=4, Part::Response(CONTAINER_PAGE)),
    (REPROTECT, 5..=5, Part::Response(MAPPING_PAGE)),
    (REPROTECT, 6..=7, Part::Response(POLICY_PAGE)),
    (REPROTECT, 8..=8, Part::Response(FABRIC)),
    (REPROTECT, 9..=9, Part::Response(CONTAINER_PAGE)),
    (REPROTECT, 10..=10, Part::Response(MAPPING_PAGE)),
    (REPROTECT, 11..=11, Part::Response(MAPPING)),
    (REPROTECT, 12..=12, Part::Response(ITEM_PAGE)),
    (REPROTECT, 13..=14, Part::Response(ITEM)),
    (REPROTECT, 15..=15, Part::Skip("Compute VM GET: the simulator's VM body is untyped")),
    (REPROTECT, 16..=16, Part::RequestBody(SWITCH_INPUT)),
    (REPROTECT, 17..=43, Part::Response(JOB)),
    (SDK_A2A, 0..=0, Part::Response(POLICY)),
    (SDK_A2A, 1..=2, Part::Response(FABRIC)),
    (SDK_A2A, 3..=4, Part::Response(CONTAINER)),
    (SDK_A2A, 5..=6, Part::Response(MAPPING)),
    (SDK_A2A, 7..=7, Part::Response(ITEM)),
    (FAILOVER_COMMIT, 0..=40, Part::Response(JOB)),
    (FAILOVER_COMMIT, 41..=141, Part::Response(JOB_PAGE)),
    (FAILOVER_COMMIT, 142..=143, Part::Response(JOB)),
    (FAILOVER_COMMIT, 144..=145, Part::Response(ITEM)),
    (FAILOVER_COMMIT, 146..=146, Part::RequestBody(FAILOVER_INPUT)),
    (FAILOVER_COMMIT, 147..=172, Part::Response(JOB)),
    (FAILOVER_COMMIT, 173..=173, Part::Skip("POST failoverCommit: empty request body, 202 without body")),
    (FAILOVER_COMMIT, 174..=177, Part::Response(JOB)),
];

/// Round-trip differences that are known misreads of the spec by wire.rs, not to be fixed in
/// this test: (case label contains, JSON pointer pattern, why). A pattern's `*` matches one
/// segment, a leading `**` any prefix. A deserialization failure at a listed pointer is excised
/// and the rest of the document still checked. An entry that matches nothing in the cases it
/// applies to fails the test as stale.
const KNOWN_MISREADS: &[(&str, &str, &str)] = &[];

// =============================================================================================
// Round trip

/// One difference: where, and what.
struct Diff {
    pointer: String,
    message: String,
    /// The document does not deserialize (the pointer locates the offending value).
    deserialization: bool,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", if self.pointer.is_empty() { "(root)" } else { &self.pointer }, self.message)
    }
}

fn diff(pointer: &str, message: String) -> Diff {
    Diff { pointer: pointer.to_owned(), message, deserialization: false }
}

/// Drops `null`-valued object keys, recursively.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), normalize(v))).collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn show(v: Option<&Value>) -> String {
    let s = match v {
        None => "(absent)".to_owned(),
        Some(v) => v.to_string(),
    };
    match s.char_indices().nth(140) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

/// Every differing value between `expected` and `actual`, in document order (the first is the
/// first difference).
fn differences(expected: &Value, actual: &Value, pointer: &str, out: &mut Vec<Diff>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{pointer}/{}", escape_pointer(k));
                match a.get(k) {
                    Some(av) => differences(ev, av, &p, out),
                    None => out.push(diff(&p, format!("expected {}, the round trip dropped it", show(Some(ev))))),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    let p = format!("{pointer}/{}", escape_pointer(k));
                    out.push(diff(&p, format!("absent in the original, the round trip added {}", show(Some(av)))));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(ev, av, &format!("{pointer}/{i}"), out);
            }
            if e.len() != a.len() {
                let p = format!("{pointer}/{}", e.len().min(a.len()));
                out.push(diff(
                    &p,
                    format!("array length {} in the original, {} after the round trip", e.len(), a.len()),
                ));
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(diff(pointer, format!("expected {}, the round trip gave {}", show(Some(e)), show(Some(a))))),
    }
}

/// Keys of the original that a typed field shadows with a different case (`recoveryAzureVmSize`
/// next to `recoveryAzureVMSize`): the value went to `extra`, the typed field never read it.
fn case_shadows(original: &Value, back: &Value, pointer: &str, out: &mut Vec<Diff>) {
    match back {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{pointer}/{}", escape_pointer(k));
                let in_original = original.pointer(&p).is_some();
                if in_original {
                    for other in m.keys().filter(|o| *o != k && o.eq_ignore_ascii_case(k)) {
                        if original.pointer(&format!("{pointer}/{}", escape_pointer(other))).is_none() {
                            out.push(diff(
                                &p,
                                format!(
                                    "the wire type names this field `{other}` (case differs): the value went to `extra`"
                                ),
                            ));
                        }
                    }
                }
                case_shadows(original, v, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                case_shadows(original, v, &format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Removes the value at `pointer` (an object member or array element).
fn excise(root: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Narrows a deserialization failure down to the deepest value whose removal lets `root`
/// deserialize: a JSON pointer to the offending value.
fn locate(root: &Value, deserializes: &dyn Fn(&Value) -> bool) -> String {
    let mut pointer = String::new();
    loop {
        let children: Vec<String> = match root.pointer(&pointer) {
            Some(Value::Object(m)) => m.keys().map(|k| format!("{pointer}/{}", escape_pointer(k))).collect(),
            Some(Value::Array(a)) => (0..a.len()).map(|i| format!("{pointer}/{i}")).collect(),
            _ => break,
        };
        let culprit = children.into_iter().find(|child| {
            let mut pruned = root.clone();
            excise(&mut pruned, child);
            deserializes(&pruned)
        });
        match culprit {
            Some(child) => pointer = child,
            None => break,
        }
    }
    pointer
}

/// Deserializes `original` into `T` and serializes it back: the differences after
/// normalization, and keys a typed field shadows with another case (none when it round-trips).
fn round_trip<T: DeserializeOwned + Serialize>(original: &Value) -> Result<(), Vec<Diff>> {
    let typed: T = match serde_json::from_value(original.clone()) {
        Ok(t) => t,
        Err(e) => {
            let pointer = locate(original, &|v| serde_json::from_value::<T>(v.clone()).is_ok());
            let message = format!("does not deserialize: {e} (value: {})", show(original.pointer(&pointer)));
            return Err(vec![Diff { pointer, message, deserialization: true }]);
        }
    };
    let back = serde_json::to_value(&typed).map_err(|e| vec![diff("", format!("does not serialize: {e}"))])?;
    let mut diffs = Vec::new();
    differences(&normalize(original), &normalize(&back), "", &mut diffs);
    case_shadows(original, &back, "", &mut diffs);
    if diffs.is_empty() { Ok(()) } else { Err(diffs) }
}

/// Whether `pointer` matches a KNOWN_MISREADS pattern.
fn pointer_matches(pattern: &str, pointer: &str) -> bool {
    let seg_eq = |p: &str, s: &str| p == "*" || p == s;
    let ptr: Vec<&str> = pointer.split('/').skip(1).collect();
    match pattern.strip_prefix("**") {
        Some(rest) => {
            let pat: Vec<&str> = rest.split('/').skip(1).collect();
            ptr.len() >= pat.len() && pat.iter().zip(&ptr[ptr.len() - pat.len()..]).all(|(p, s)| seg_eq(p, s))
        }
        None => {
            let pat: Vec<&str> = pattern.split('/').skip(1).collect();
            pat.len() == ptr.len() && pat.iter().zip(&ptr).all(|(p, s)| seg_eq(p, s))
        }
    }
}

/// One case: a label (file and part), the wire type, the JSON.
struct Case {
    label: String,
    wire: Wire,
    json: Value,
}

/// Outcome of a set of cases.
#[derive(Default)]
struct RoundTrips {
    passed: Vec<String>,
    known: Vec<String>,
    failures: Vec<String>,
}

/// Runs `cases`, forgiving the differences `allow` lists (and reporting its stale entries).
fn run(cases: &[Case], allow: &[(&str, &str, &str)]) -> RoundTrips {
    let mut out = RoundTrips::default();
    let (mut applied, mut matched) = (vec![false; allow.len()], vec![false; allow.len()]);
    for case in cases {
        let entries: Vec<usize> = (0..allow.len()).filter(|i| case.label.contains(allow[*i].0)).collect();
        for i in &entries {
            applied[*i] = true;
        }
        let mut input = case.json.clone();
        let mut remaining = Vec::new();
        let mut forgiven = Vec::new();
        for _ in 0..32 {
            remaining.clear();
            let Err(diffs) = (case.wire.check)(&input) else { break };
            let mut retry = false;
            for d in diffs {
                match entries.iter().find(|i| pointer_matches(allow[**i].1, &d.pointer)) {
                    Some(i) => {
                        matched[*i] = true;
                        if d.deserialization {
                            excise(&mut input, &d.pointer);
                            retry = true;
                        }
                        forgiven.push(d.to_string());
                    }
                    None => remaining.push(d),
                }
            }
            if !retry {
                break;
            }
        }
        if !forgiven.is_empty() {
            out.known.push(format!("{} as {}: {}", case.label, case.wire.name, forgiven.join("; ")));
        }
        if remaining.is_empty() {
            out.passed.push(format!("{} as {}", case.label, case.wire.name));
        } else {
            let shown: Vec<String> = remaining.iter().take(12).map(Diff::to_string).collect();
            let more = match remaining.len() - shown.len() {
                0 => String::new(),
                n => format!("\n      … {n} more"),
            };
            out.failures.push(format!(
                "{} as {}: {} difference(s), the first at {}\n      {}{more}",
                case.label,
                case.wire.name,
                remaining.len(),
                if remaining[0].pointer.is_empty() { "(root)" } else { &remaining[0].pointer },
                shown.join("\n      ")
            ));
        }
    }
    for (i, (label, pattern, why)) in allow.iter().enumerate() {
        if applied[i] && !matched[i] {
            out.failures.push(format!(
                "stale KNOWN_MISREADS entry ({label:?}, {pattern:?}): nothing differs there now ({why})"
            ));
        }
    }
    out
}

/// The official example cases per EXAMPLES; skipped parts and table errors are reported too.
fn official_cases(skipped: &mut Vec<String>, errors: &mut Vec<String>) -> Vec<Case> {
    let dir = fixtures_dir();
    let mut cases = Vec::new();
    for (file, handling) in EXAMPLES {
        let path = dir.join(file);
        if !path.is_file() {
            continue; // reported by every_official_example_is_decided_on
        }
        let example = read_json(&path);
        match handling {
            Skip(reason) => skipped.push(format!("{file}: {reason}")),
            RoundTrip { response, request } => {
                match example.pointer("/responses/200/body") {
                    Some(body) => cases.push(Case {
                        label: format!("{file} responses/200/body"),
                        wire: *response,
                        json: body.clone(),
                    }),
                    None => errors.push(format!("{file}: no responses/200/body to round-trip")),
                }
                let parameter = |key: &str| example.get("parameters").and_then(|p| p.get(key)).cloned();
                match request {
                    Request::None => {}
                    Request::RoundTrip(key, wire) => match parameter(key) {
                        Some(body) => {
                            cases.push(Case { label: format!("{file} parameters/{key}"), wire: *wire, json: body })
                        }
                        None => errors.push(format!("{file}: no parameters/{key} to round-trip")),
                    },
                    Request::NotParsed(key, reason) => {
                        if parameter(key).is_none() {
                            errors.push(format!("{file}: EXAMPLES says parameters/{key} exists; it does not"));
                        }
                        skipped.push(format!("{file} parameters/{key}: {reason}"));
                    }
                }
            }
        }
    }
    cases
}

/// The recorded cases per RECORDED; skipped entries and table errors are reported too.
fn recorded_cases(skipped: &mut Vec<String>, errors: &mut Vec<String>) -> Vec<Case> {
    let mut cases = Vec::new();
    for file in [REPROTECT, SDK_A2A, FAILOVER_COMMIT] {
        let entries = recording(file);
        for index in 0..entries.len() {
            let parts: Vec<&Part> =
                RECORDED.iter().filter(|(f, r, _)| *f == file && r.contains(&index)).map(|(_, _, p)| p).collect();
            let (field, wire) = match parts.as_slice() {
                [Part::Response(w)] => ("ResponseBody", *w),
                [Part::RequestBody(w)] => ("RequestBody", *w),
                [Part::Skip(reason)] => {
                    skipped.push(format!("{file}#{index}: {reason}"));
                    continue;
                }
                [] => {
                    errors.push(format!("{file}#{index}: not in RECORDED"));
                    continue;
                }
                _ => {
                    errors.push(format!("{file}#{index}: in RECORDED more than once"));
                    continue;
                }
            };
            match recorded_body(&entries, index, field) {
                Some(json) => cases.push(Case { label: format!("{file}#{index} {field}"), wire, json }),
                None => errors.push(format!("{file}#{index}: empty {field}")),
            }
        }
        if let Some((_, r, _)) = RECORDED.iter().find(|(f, r, _)| *f == file && *r.end() >= entries.len()) {
            errors.push(format!("{file}: RECORDED names entries {r:?}; the recording has {}", entries.len()));
        }
    }
    cases
}

fn assert_round_trips(what: &str, cases: &[Case], errors: Vec<String>, allow: &[(&str, &str, &str)]) {
    let out = run(cases, allow);
    eprintln!("{what}: {} round-tripped:\n  {}", out.passed.len(), out.passed.join("\n  "));
    if !out.known.is_empty() {
        eprintln!("{what}: known wire.rs misreads forgiven (KNOWN_MISREADS):\n  {}", out.known.join("\n  "));
    }
    let failures: Vec<String> = errors.into_iter().chain(out.failures).collect();
    assert!(failures.is_empty(), "{what}: {} failure(s):\n  {}", failures.len(), failures.join("\n  "));
}

#[test]
fn every_official_example_is_decided_on() {
    let dir = fixtures_dir();
    let mut on_disk = Vec::new();
    for version in ["2025-08-01", "2026-05-01"] {
        let entries = std::fs::read_dir(dir.join(version))
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.join(version).display()));
        for entry in entries {
            let name = entry.expect("directory entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                on_disk.push(format!("{version}/{name}"));
            }
        }
    }
    let listed: Vec<&str> = EXAMPLES.iter().map(|(f, _)| *f).collect();
    let unlisted: Vec<&String> = on_disk.iter().filter(|f| !listed.contains(&f.as_str())).collect();
    let missing: Vec<&&str> = listed.iter().filter(|f| !on_disk.iter().any(|d| d == **f)).collect();
    let mut twice: Vec<&&str> = listed.iter().filter(|f| listed.iter().filter(|g| g == f).count() > 1).collect();
    twice.dedup();
    assert!(
        unlisted.is_empty() && missing.is_empty() && twice.is_empty(),
        "EXAMPLES is out of step with the fixture folders:\n  not in EXAMPLES: {unlisted:?}\n  \
         listed but missing on disk: {missing:?}\n  listed twice: {twice:?}"
    );
}

#[test]
fn official_examples_round_trip_through_the_wire_types() {
    let (mut skipped, mut errors) = (Vec::new(), Vec::new());
    let cases = official_cases(&mut skipped, &mut errors);
    eprintln!("skipped ({}):\n  {}", skipped.len(), skipped.join("\n  "));
    assert_round_trips("official examples", &cases, errors, KNOWN_MISREADS);
}

#[test]
fn recorded_a2a_bodies_round_trip_through_the_wire_types() {
    let (mut skipped, mut errors) = (Vec::new(), Vec::new());
    let cases = recorded_cases(&mut skipped, &mut errors);
    eprintln!("skipped ({}):\n  {}", skipped.len(), skipped.join("\n  "));
    assert_round_trips("recorded A2A bodies", &cases, errors, KNOWN_MISREADS);
}

// =============================================================================================
// A2A field coverage against the running simulator

const API: &str = "2025-08-01";

struct Arm {
    http: reqwest::Client,
    base: String,
}

impl Arm {
    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API}", self.base)
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(self.url(path)).bearer_auth("x").send().await.expect("GET sent");
        let status = resp.status();
        let text = resp.text().await.expect("GET body");
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// POSTs and expects 202; the job's ARM id (`x-ms-request-id`).
    async fn post(&self, path: &str, body: Option<Value>) -> String {
        let mut req = self.http.post(self.url(path)).bearer_auth("x");
        req = match body {
            Some(b) => req.json(&b),
            None => req.body(""),
        };
        let resp = req.send().await.expect("POST sent");
        let status = resp.status();
        let job = resp.headers().get("x-ms-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, 202, "POST {path}: {text}");
        job.unwrap_or_else(|| panic!("POST {path}: 202 without x-ms-request-id"))
    }

    /// GETs the job until it is terminal; it must have Succeeded.
    async fn finished_job(&self, job_id: &str) -> Value {
        for _ in 0..100 {
            let job = self.get(job_id).await;
            match job.pointer("/properties/state").and_then(Value::as_str) {
                Some("Succeeded") => return job,
                Some("NotStarted" | "InProgress") | None => tokio::time::sleep(Duration::from_millis(10)).await,
                Some(other) => panic!("job {job_id} ended {other}: {job:#}"),
            }
        }
        panic!("job {job_id} did not finish")
    }
}

/// The simulator's answers along the A2A failover → commit → switch protection path.
struct Observed {
    item_before: Value,
    points: Value,
    failover_job: Value,
    commit_job: Value,
    item_after_commit: Value,
    reprotect_job: Value,
    fabric: Value,
    containers: Value,
    mappings: Value,
    policies: Value,
}

/// `(fabric, container)` of an item's ARM id.
fn fabric_and_container(item_id: &str) -> (String, String) {
    let segs: Vec<&str> = item_id.split('/').collect();
    let after = |name: &str| {
        segs.iter()
            .position(|s| s.eq_ignore_ascii_case(name))
            .and_then(|i| segs.get(i + 1))
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| panic!("no {name} in {item_id}"))
    };
    (after("replicationFabrics"), after("replicationProtectionContainers"))
}

async fn drive_simulator() -> Observed {
    let mut config = tern_asr_sim::SimConfig::default();
    config.estate.vms = 3;
    config.estate.state = tern_asr_sim::SeedState::Protected;
    config.zero_latency = true;
    config.throttle.enabled = false;
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(config)).await.expect("simulator starts");
    let info = sim.info().clone();
    // reqwest is built with `rustls-no-provider`: it wants a crypto provider installed even for
    // plain http. The simulator's own TLS uses ring, so that one is there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arm = Arm { http: reqwest::Client::new(), base: sim.url().to_owned() };
    let vault = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
        info.subscription_id, info.resource_group, info.vault
    );

    let list = arm.get(&format!("{vault}/replicationProtectedItems")).await;
    let first_id = list.pointer("/value/0/id").and_then(Value::as_str).expect("a protected item").to_owned();
    let item_before = arm.get(&first_id).await;
    let item_id = item_before["id"].as_str().expect("item id").to_owned();
    let item_name = item_before["name"].as_str().expect("item name").to_owned();
    let points = arm.get(&format!("{item_id}/recoveryPoints")).await;

    let failover = json!({"properties": {"failoverDirection": "PrimaryToRecovery", "sourceSiteOperations": "NotRequired",
        "providerSpecificDetails": {"instanceType": "A2A"}}});
    let job = arm.post(&format!("{item_id}/unplannedFailover"), Some(failover)).await;
    let failover_job = arm.finished_job(&job).await;
    let job = arm.post(&format!("{item_id}/failoverCommit"), None).await;
    let commit_job = arm.finished_job(&job).await;
    let item_after_commit = arm.get(&item_id).await;
    assert_eq!(
        item_after_commit.pointer("/properties/protectionState").and_then(Value::as_str),
        Some("UnplannedFailoverCommitted"),
        "the item after commit: {item_after_commit:#}"
    );

    let (fabric, container) = fabric_and_container(&item_id);
    let container_id = format!("{vault}/replicationFabrics/{fabric}/replicationProtectionContainers/{container}");
    let container_arm_id = item_id
        .rsplit_once("/replicationProtectedItems/")
        .map(|(c, _)| c.to_owned())
        .expect("item id under a container");
    // The body PowerShell builds (reprotect entries 13–16): every disk of the VM that runs now,
    // the cache account of its region, the resource group the VM came from, policy, container.
    let psd = &item_after_commit["properties"]["providerSpecificDetails"];
    let staging =
        info.cache_storage_accounts[psd["recoveryFabricLocation"].as_str().expect("running location")].clone();
    let source_vm = psd["fabricObjectId"].as_str().expect("fabricObjectId");
    let segs: Vec<&str> = source_vm.split('/').collect();
    let recovery_rg = format!("/subscriptions/{}/resourceGroups/{}", segs[2], segs[4]);
    let disks: Vec<Value> = psd["protectedManagedDisks"]
        .as_array()
        .expect("managed disks")
        .iter()
        .map(|d| {
            json!({"diskId": d["recoveryTargetDiskId"], "primaryStagingAzureStorageAccountId": staging,
                "recoveryResourceGroupId": recovery_rg,
                "recoveryReplicaDiskAccountType": d["recoveryReplicaDiskAccountType"],
                "recoveryTargetDiskAccountType": d["recoveryTargetDiskAccountType"]})
        })
        .collect();
    let switch = json!({"properties": {"replicationProtectedItemName": item_name,
        "providerSpecificDetails": {"instanceType": "A2A", "recoveryContainerId": container_arm_id,
            "vmDisks": [], "vmManagedDisks": disks, "recoveryResourceGroupId": recovery_rg,
            "policyId": item_after_commit["properties"]["policyId"]}}});
    let job = arm.post(&format!("{container_id}/switchprotection"), Some(switch)).await;
    let reprotect_job = arm.finished_job(&job).await;
    assert_eq!(
        reprotect_job.pointer("/properties/scenarioName").and_then(Value::as_str),
        Some("SwitchReplicationGroupProtection"),
        "the switchprotection job: {reprotect_job:#}"
    );

    let fabrics = arm.get(&format!("{vault}/replicationFabrics")).await;
    assert!(fabrics["value"].as_array().is_some_and(|v| !v.is_empty()), "no fabrics: {fabrics}");
    let fabric_body = arm.get(&format!("{vault}/replicationFabrics/{fabric}")).await;
    let containers = arm.get(&format!("{vault}/replicationFabrics/{fabric}/replicationProtectionContainers")).await;
    let mappings = arm.get(&format!("{container_id}/replicationProtectionContainerMappings")).await;
    let policies = arm.get(&format!("{vault}/replicationPolicies")).await;
    sim.stop().await;
    Observed {
        item_before,
        points,
        failover_job,
        commit_job,
        item_after_commit,
        reprotect_job,
        fabric: fabric_body,
        containers,
        mappings,
        policies,
    }
}

/// Maps whose keys are data, not schema: not compared.
const DATA_MAPS: &[&str] = &["$.properties.providerSpecificDetails.vmSyncedConfigDetails.tags"];

/// Arrays the simulator may leave empty where the recording has elements: (path, why).
const EMPTY_OK: &[(&str, &str)] = &[(
    "$.properties.healthErrors",
    "the recorded item had a health error (no test failover yet); the simulated one is healthy",
)];

fn child_path(path: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{path}.{key}")
    } else {
        format!("{path}['{key}']")
    }
}

/// Keys `recorded` has that `actual` lacks, recursively through objects and the first element
/// of arrays; `null` counts as present. A recorded array with elements where the simulator's is
/// empty counts as a missing `[0]`. Other shape differences go to `notes`.
fn missing_keys(recorded: &Value, actual: &Value, path: &str, missing: &mut Vec<String>, notes: &mut Vec<String>) {
    if DATA_MAPS.contains(&path) {
        return;
    }
    match (recorded, actual) {
        (Value::Object(r), Value::Object(a)) => {
            for (k, rv) in r {
                let p = child_path(path, k);
                match a.get(k) {
                    Some(av) => missing_keys(rv, av, &p, missing, notes),
                    None => match a.keys().find(|o| o.eq_ignore_ascii_case(k)) {
                        Some(o) => missing.push(format!("{p} (the simulator has `{o}`: case differs)")),
                        None => missing.push(p),
                    },
                }
            }
        }
        (Value::Array(r), Value::Array(a)) => match (r.first(), a.first()) {
            (Some(rv), Some(av)) => missing_keys(rv, av, &format!("{path}[0]"), missing, notes),
            (Some(_), None) => match EMPTY_OK.iter().find(|(p, _)| *p == path) {
                Some((_, why)) => notes.push(format!("{path}: empty in the simulator, not compared ({why})")),
                None => missing.push(format!("{path}[0] (the simulator's array is empty)")),
            },
            _ => {}
        },
        (_, Value::Null) | (Value::Null, _) => {}
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => notes.push(format!(
            "{path}: recorded {}, the simulator answered {}",
            show(Some(recorded)),
            show(Some(actual))
        )),
        _ => {}
    }
}

/// Compares each (label, recorded, simulator) and fails listing every missing key.
fn assert_covers(comparisons: &[(&str, Value, &Value)]) {
    let mut report = Vec::new();
    let mut all_notes = Vec::new();
    for (label, recorded, actual) in comparisons {
        let (mut missing, mut notes) = (Vec::new(), Vec::new());
        missing_keys(recorded, actual, "$", &mut missing, &mut notes);
        if !missing.is_empty() {
            report.push(format!("{label}: {} key(s) missing:\n    {}", missing.len(), missing.join("\n    ")));
        }
        all_notes.extend(notes.into_iter().map(|n| format!("{label}: {n}")));
    }
    if !all_notes.is_empty() {
        eprintln!("not compared:\n  {}", all_notes.join("\n  "));
    }
    assert!(report.is_empty(), "the simulator lacks keys the recorded A2A bodies carry:\n  {}", report.join("\n  "));
}

fn response(entries: &[Value], index: usize) -> Value {
    recorded_body(entries, index, "ResponseBody").unwrap_or_else(|| panic!("entry {index} has no response body"))
}

#[tokio::test]
async fn simulator_carries_every_key_of_the_recorded_a2a_reprotect() {
    let rec = recording(REPROTECT);
    let seen = drive_simulator().await;
    assert!(seen.points["value"].as_array().is_some_and(|v| !v.is_empty()), "no recovery points: {}", seen.points);
    assert_covers(&[
        ("#13 protected item (failover committed) vs item after commit", response(&rec, 13), &seen.item_after_commit),
        ("#43 reprotect job (Succeeded) vs switchprotection job", response(&rec, 43), &seen.reprotect_job),
        ("#3 fabric GET", response(&rec, 3), &seen.fabric),
        ("#4 containers of the fabric", response(&rec, 4), &seen.containers),
        ("#5 mappings of the container", response(&rec, 5), &seen.mappings),
        ("#6 policies", response(&rec, 6), &seen.policies),
    ]);
}

#[tokio::test]
async fn simulator_carries_every_key_of_the_recorded_a2a_failover_and_commit() {
    let rec = recording(FAILOVER_COMMIT);
    let sdk = recording(SDK_A2A);
    let seen = drive_simulator().await;
    assert_covers(&[
        ("excerpt#144 protected item (Protected) vs item before failover", response(&rec, 144), &seen.item_before),
        ("excerpt#172 failover job (Succeeded) vs unplannedFailover job", response(&rec, 172), &seen.failover_job),
        ("excerpt#177 commit job (Succeeded) vs failoverCommit job", response(&rec, 177), &seen.commit_job),
        ("excerpt#145 protected item (committed) vs item after commit", response(&rec, 145), &seen.item_after_commit),
        ("GetA2AResources#7 protected item vs item before failover", response(&sdk, 7), &seen.item_before),
        ("GetA2AResources#0 policy vs policies[0]", response(&sdk, 0), &seen.policies["value"][0]),
        ("GetA2AResources#1 fabric vs fabric GET", response(&sdk, 1), &seen.fabric),
        ("GetA2AResources#3 container vs containers[0]", response(&sdk, 3), &seen.containers["value"][0]),
        ("GetA2AResources#5 mapping vs mappings[0]", response(&sdk, 5), &seen.mappings["value"][0]),
    ]);
}

// =============================================================================================
// Recorded shapes the simulator must answer with exactly, and a recorded request replayed

/// Keys of an object, sorted.
fn key_set(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// Whether a recorded value is "nothing": null, [] or {}.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A simulator with realistic timing and one failover just accepted: (simulator, arm, 202's job id).
async fn one_failover_accepted() -> (tern_asr_sim::RunningSimulator, Arm, String) {
    let mut config = tern_asr_sim::SimConfig::default();
    config.estate.vms = 1;
    config.estate.state = tern_asr_sim::SeedState::Protected;
    config.throttle.enabled = false;
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(config)).await.expect("simulator starts");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arm = Arm { http: reqwest::Client::new(), base: sim.url().to_owned() };
    let info = sim.info().clone();
    let vault = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
        info.subscription_id, info.resource_group, info.vault
    );
    let list = arm.get(&format!("{vault}/replicationProtectedItems")).await;
    let item_id = list.pointer("/value/0/id").and_then(Value::as_str).expect("an item").to_owned();
    let body = json!({"properties": {"failoverDirection": "PrimaryToRecovery", "sourceSiteOperations": "Required",
        "providerSpecificDetails": {"instanceType": "A2A"}}});
    let job = arm.post(&format!("{item_id}/unplannedFailover"), Some(body)).await;
    (sim, arm, job)
}

async fn advance(arm: &Arm, seconds: f64) {
    let r = arm
        .http
        .post(format!("{}/_sim/clock/advance", arm.base))
        .json(&json!({"seconds": seconds}))
        .send()
        .await
        .expect("advance sent");
    assert!(r.status().is_success());
}

#[tokio::test]
async fn a_new_job_answers_exactly_the_recorded_placeholder() {
    let rec = recording(FAILOVER_COMMIT);
    let recorded = response(&rec, 147);
    let (sim, arm, job_id) = one_failover_accepted().await;
    let got = arm.get(&job_id).await;
    assert_eq!(key_set(&got), key_set(&recorded));
    assert_eq!(key_set(&got["properties"]), key_set(&recorded["properties"]), "{got:#}");
    for (k, v) in recorded["properties"].as_object().unwrap() {
        if k == "activityId" {
            let a = got["properties"][k].as_str().expect("an activity id");
            assert!(a.contains(" ActivityId: "), "{a}");
        } else {
            assert_eq!(&got["properties"][k], v, "placeholder {k}");
        }
    }
    assert_eq!(got["type"], recorded["type"]);
    sim.stop().await;
}

#[tokio::test]
async fn a_job_list_entry_has_exactly_the_recorded_summary_shape() {
    let rec = recording(FAILOVER_COMMIT);
    // Entry 141: the list's newest job is InProgress (SecondaryIrCompletion), as ours will be.
    let recorded = response(&rec, 141)["value"][0].clone();
    assert_eq!(recorded["properties"]["state"], "InProgress");
    let (sim, arm, job_id) = one_failover_accepted().await;
    advance(&arm, 10.0).await; // past the placeholder window
    let vault = job_id.rsplit_once("/replicationJobs/").map(|(v, _)| v.to_owned()).expect("a job id");
    let list = arm.get(&format!("{vault}/replicationJobs")).await;
    let got = list["value"][0].clone();
    assert_eq!(got["properties"]["state"], "InProgress", "{got:#}");
    assert_eq!(key_set(&got), key_set(&recorded));
    assert_eq!(key_set(&got["properties"]), key_set(&recorded["properties"]), "{got:#}");
    for (k, v) in recorded["properties"].as_object().unwrap() {
        if is_empty_value(v) {
            assert_eq!(&got["properties"][k], v, "summary {k} is {v} as recorded");
        }
    }
    assert_eq!(got["properties"]["allowedActions"], recorded["properties"]["allowedActions"]);
    // The same job's GET has what the list leaves out.
    let full = arm.get(&job_id).await;
    assert!(full["properties"]["tasks"].as_array().is_some_and(|t| t.len() == 5), "{full:#}");
    assert!(full["properties"]["activityId"].is_string() && full["properties"]["customDetails"].is_object());
    sim.stop().await;
}

/// The world of the recorded reprotect: the item (entry 13), the VM that runs now (entry 15).
fn recorded_reprotect_world(rec: &[Value]) -> tern_asr_sim::validate::ReprotectWorld {
    let item = response(rec, 13);
    let vm = response(rec, 15);
    let body = recorded_body(rec, 16, "RequestBody").expect("the switchprotection body");
    let item_id = item["id"].as_str().unwrap();
    let container = item_id.rsplit_once("/replicationProtectedItems/").unwrap().0.to_owned();
    let psd = &item["properties"]["providerSpecificDetails"];
    let storage = &vm["properties"]["storageProfile"];
    let mut disks = vec![storage["osDisk"]["managedDisk"]["id"].as_str().unwrap().to_owned()];
    disks.extend(
        storage["dataDisks"].as_array().unwrap().iter().map(|d| d["managedDisk"]["id"].as_str().unwrap().to_owned()),
    );
    let running = vm["location"].as_str().unwrap().to_owned();
    let target = psd["primaryFabricLocation"].as_str().unwrap().to_owned();
    // The staging account PowerShell was given (gl-rec-rg-prod-z2zgql-ukw: in ukwest, where the
    // VM runs), and the item's own cache account in the region it came from.
    let staging =
        body["properties"]["providerSpecificDetails"]["vmManagedDisks"][0]["primaryStagingAzureStorageAccountId"]
            .as_str()
            .unwrap()
            .to_owned();
    let old_cache = psd["protectedManagedDisks"][0]["primaryStagingAzureStorageAccountId"].as_str().unwrap().to_owned();
    let source_vm = psd["fabricObjectId"].as_str().unwrap();
    let segs: Vec<&str> = source_vm.split('/').collect();
    tern_asr_sim::validate::ReprotectWorld {
        container_id: container,
        policy_ids: vec![item["properties"]["policyId"].as_str().unwrap().to_owned()],
        managed: psd["protectedManagedDisks"].as_array().is_some_and(|d| !d.is_empty()),
        disks,
        storage_accounts: [(staging, running.clone()), (old_cache, target.clone())].into_iter().collect(),
        running_location: running,
        target_location: target,
        recovery_resource_groups: vec![format!("/subscriptions/{}/resourceGroups/{}", segs[2], segs[4])],
    }
}

#[test]
fn the_recorded_switch_protection_body_is_accepted_and_its_mutations_refused() {
    use tern_asr_sim::validate;
    let rec = recording(REPROTECT);
    let world = recorded_reprotect_world(&rec);
    let body = recorded_body(&rec, 16, "RequestBody").expect("the switchprotection body");
    let parse =
        |v: &Value| serde_json::from_value::<Input<SwitchProtectionInput>>(v.clone()).expect("parses").properties;
    let accepted =
        validate::switch_protection(&parse(&body), &world).unwrap_or_else(|r| panic!("refused: {:?}", r.body));
    assert_eq!(accepted.len(), 1);
    assert!(accepted[0].staging_account.ends_with("/bootdiag0411052737"));
    assert_eq!(accepted[0].target_type.as_deref(), Some("Premium_LRS"));

    let item = response(&rec, 13);
    let left_disk = item["properties"]["providerSpecificDetails"]["protectedManagedDisks"][0]["diskId"].clone();
    let old_cache = item["properties"]["providerSpecificDetails"]["protectedManagedDisks"][0]["primaryStagingAzureStorageAccountId"].clone();
    let details = "/properties/providerSpecificDetails";
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation, &str)> = vec![
        (
            "a disk removed",
            Box::new(|b: &mut Value| b.pointer_mut(details).unwrap()["vmManagedDisks"] = json!([])),
            "properties.providerSpecificDetails.vmManagedDisks'",
        ),
        (
            "a disk of the region being left",
            Box::new(move |b: &mut Value| {
                b.pointer_mut(&format!("{details}/vmManagedDisks/0")).unwrap()["diskId"] = left_disk.clone()
            }),
            "properties.providerSpecificDetails.vmManagedDisks[0].diskId",
        ),
        (
            "a staging account in the wrong region",
            Box::new(move |b: &mut Value| {
                b.pointer_mut(&format!("{details}/vmManagedDisks/0")).unwrap()["primaryStagingAzureStorageAccountId"] =
                    old_cache.clone()
            }),
            "properties.providerSpecificDetails.vmManagedDisks[0].primaryStagingAzureStorageAccountId",
        ),
        (
            "no recoveryContainerId",
            Box::new(|b: &mut Value| {
                b.pointer_mut(details).unwrap().as_object_mut().unwrap().remove("recoveryContainerId");
            }),
            "properties.providerSpecificDetails.recoveryContainerId",
        ),
        (
            "vmDisks on a managed item",
            Box::new(|b: &mut Value| {
                b.pointer_mut(details).unwrap()["vmDisks"] =
                    json!([{"diskUri": "https://x.blob.core.windows.net/vhds/os.vhd"}])
            }),
            "properties.providerSpecificDetails.vmDisks'",
        ),
    ];
    for (what, mutate, field) in &mutations {
        let mut b = body.clone();
        mutate(&mut b);
        let refused = validate::switch_protection(&parse(&b), &world).expect_err(what);
        assert_eq!(refused.status, 400, "{what}");
        assert!(
            refused.body.error.message.contains(field),
            "{what}: {field} not named in {}",
            refused.body.error.message
        );
    }
}

// =============================================================================================
// The helpers themselves

#[test]
fn helpers_point_at_what_differs() {
    // A value of the wrong type is located by pointer.
    let bad = json!({"id": "i", "name": "n", "type": "t", "properties": {"providerSpecificDetails":
        {"instanceType": "A2A", "rpoInSeconds": "soon"}}});
    let diffs = round_trip::<Resource<ProtectedItemProperties>>(&bad).expect_err("a string is not an i64");
    assert_eq!(diffs[0].pointer, "/properties/providerSpecificDetails/rpoInSeconds", "{}", diffs[0]);
    assert!(diffs[0].deserialization);

    // Absent and null are equal; the first difference comes first.
    let mut out = Vec::new();
    let (a, b) = (json!({"a": [1, {"b": 2, "c": null}], "d/e": 3}), json!({"a": [1, {"b": 5}], "d/e": 4}));
    differences(&normalize(&a), &normalize(&b), "", &mut out);
    let pointers: Vec<&str> = out.iter().map(|d| d.pointer.as_str()).collect();
    assert_eq!(pointers, ["/a/1/b", "/d~1e"]);

    // A key the wire type spells with another case is caught.
    let shadowed = json!({"id": "i", "name": "n", "type": "t", "properties": {"providerSpecificDetails":
        {"instanceType": "A2A", "recoveryAzureVmName": "web-1"}}});
    let diffs = round_trip::<Resource<ProtectedItemProperties>>(&shadowed).expect_err("case shadow");
    assert_eq!(diffs[0].pointer, "/properties/providerSpecificDetails/recoveryAzureVmName", "{}", diffs[0]);

    assert!(pointer_matches("/value/*/type", "/value/3/type"));
    assert!(!pointer_matches("/type", "/value/3/type"));
    assert!(pointer_matches("**/a/b", "/x/y/a/b") && pointer_matches("**/a/b", "/a/b"));

    // Key coverage: nulls count as present, arrays by their first element, cases are hinted.
    let (mut missing, mut notes) = (Vec::new(), Vec::new());
    let recorded = json!({"a": {"b": 1, "c": 2}, "l": [{"x": 1}], "e": [{"y": 1}], "vmSize": 1});
    let actual = json!({"a": {"b": null}, "l": [{"x": 2}, {}], "e": [], "vmSIZE": 1});
    missing_keys(&recorded, &actual, "$", &mut missing, &mut notes);
    assert_eq!(
        missing,
        ["$.a.c", "$.e[0] (the simulator's array is empty)", "$.vmSize (the simulator has `vmSIZE`: case differs)"]
    );
}
