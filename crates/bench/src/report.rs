//! Figures → medians → the Markdown table on stdout and the JSON record on disk.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::scenario::{RunFigures, Scenario};

/// A design target (§6 of the design).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Reported, not judged.
    None,
    /// At most this value.
    AtMost(f64),
    /// Below this value.
    Below(f64),
    /// At most this value, judged only at the design's fleet size (at other sizes the figure
    /// is shown but says nothing about the target).
    AtMostAtSize(f64, usize),
}

/// One row of the table: a figure of a scenario, how to show it, and its target.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Scenario.
    pub scenario: Scenario,
    /// Figure key in [`RunFigures::figures`].
    pub key: &'static str,
    /// What the row says.
    pub label: &'static str,
    /// Target.
    pub target: Target,
    /// The target as the design writes it.
    pub target_text: &'static str,
}

const fn row(scenario: Scenario, key: &'static str, label: &'static str) -> Row {
    Row { scenario, key, label, target: Target::None, target_text: "" }
}

const fn judged(scenario: Scenario, key: &'static str, label: &'static str, target: Target, text: &'static str) -> Row {
    Row { scenario, key, label, target, target_text: text }
}

/// The design's fleet size for S1.
pub const S1_FLEET: usize = 10_000;

use Scenario::{S1, S2, S3, S4};

/// Every row, in table order.
pub const ROWS: &[Row] = &[
    judged(S1, "makespan_s", "makespan (s)", Target::AtMostAtSize(45.0, S1_FLEET), "≤ 45 s at 10,000 VMs"),
    row(S1, "vms_per_s", "VMs per second"),
    judged(S1, "peak_rss_mib.tern-planner", "peak RSS tern-planner (MiB)", Target::AtMost(150.0), "≤ 150 MiB"),
    judged(S1, "peak_rss_mib.tern-failover", "peak RSS tern-failover (MiB)", Target::AtMost(100.0), "≤ 100 MiB"),
    judged(S1, "peak_rss_mib.tern-reprotect", "peak RSS tern-reprotect (MiB)", Target::AtMost(100.0), "≤ 100 MiB"),
    judged(S1, "peak_rss_mib.tern-cleanup", "peak RSS tern-cleanup (MiB)", Target::AtMost(100.0), "≤ 100 MiB"),
    row(S1, "peak_rss_mib.nats-server", "peak RSS nats-server (MiB)"),
    row(S1, "peak_rss_mib.tern-asr-sim", "peak RSS tern-asr-sim (MiB)"),
    row(S1, "cpu_ms_per_vm.tern-planner", "CPU ms per VM, tern-planner"),
    row(S1, "cpu_ms_per_vm.tern-failover", "CPU ms per VM, tern-failover"),
    row(S1, "cpu_ms_per_vm.tern-reprotect", "CPU ms per VM, tern-reprotect"),
    row(S1, "cpu_ms_per_vm.tern-cleanup", "CPU ms per VM, tern-cleanup"),
    row(S1, "cpu_ms_per_vm.nats-server", "CPU ms per VM, nats-server"),
    row(S1, "cpu_ms_per_vm.tern-asr-sim", "CPU ms per VM, tern-asr-sim"),
    row(S1, "cpu_ms_per_vm.total", "CPU ms per VM, all processes"),
    row(S1, "nats_msgs_per_vm", "NATS messages in per VM"),
    row(S1, "kv_writes_per_vm", "KV writes per VM"),
    row(S1, "js_api_per_vm", "JetStream API requests per VM (/jsz api.total)"),
    row(S2, "makespan_s", "makespan (s)"),
    row(S2, "estimate_s", "  forecast before the run, tern plan estimate's model (s)"),
    judged(S2, "estimate_error_pct", "  forecast's error, % of the makespan", Target::AtMost(15.0), "≤ 15 %"),
    row(S2, "lower_bound_s", "lower bound (s)"),
    row(S2, "write_bound_s", "  write-budget bound (s)"),
    row(S2, "delete_bound_s", "  delete-budget bound (s)"),
    row(S2, "job_chain_bound_s", "  longest job chain (s)"),
    row(S2, "read_budget_time_s", "time the reads issued need from the read budget (s)"),
    judged(S2, "makespan_over_bound", "makespan / lower bound", Target::AtMost(1.05), "≤ 1.05"),
    row(S2, "http_429", "ARM requests answered 429"),
    judged(S2, "http_429_pct", "429s, % of ARM requests", Target::Below(1.0), "< 1 %"),
    judged(S2, "polls_per_inflight_vm_s", "job polling reads/s per in-flight VM", Target::AtMost(0.1), "≤ 0.1"),
    row(S2, "reads_per_inflight_vm_s", "all ARM reads/s per in-flight VM"),
    row(S2, "writes_per_vm", "ARM writes per VM"),
    row(S2, "arm_reads_per_vm", "ARM reads per VM"),
    row(S3, "latency_p50_ms", "job seen ended by its worker → event, p50 (ms)"),
    judged(S3, "latency_p99_ms", "job seen ended by its worker → event, p99 (ms)", Target::AtMost(250.0), "≤ 250 ms"),
    row(S3, "latency_max_ms", "job seen ended by its worker → event, max (ms)"),
    row(S3, "latency_events", "events measured"),
    row(S3, "from_job_end_p50_ms", "job ended → event, p50 (ms, incl. polling)"),
    row(S3, "from_job_end_p99_ms", "job ended → event, p99 (ms, incl. polling)"),
    row(S3, "makespan_s", "makespan (s)"),
    row(S4, "makespan_s", "makespan (s)"),
    row(S4, "estimate_s", "  forecast before the run, tern plan estimate's model (s)"),
    row(S4, "estimate_error_pct", "  forecast's error, % of the makespan"),
    row(S4, "lower_bound_s", "lower bound: the slowest subscription's (s)"),
    row(S4, "write_bound_s", "  write-budget bound, slowest subscription (s)"),
    row(S4, "job_chain_bound_s", "  longest job chain (s)"),
    row(S4, "read_budget_time_s", "time the reads issued need from the read budget, slowest subscription (s)"),
    judged(S4, "makespan_over_bound", "makespan / the slowest subscription's bound", Target::AtMost(1.10), "≤ 1.10"),
    judged(S4, "http_429_pct", "429s, % of ARM requests", Target::Below(1.0), "< 1 %"),
    row(S4, "writes_per_vm", "ARM writes per VM"),
    row(S4, "arm_reads_per_vm", "ARM reads per VM"),
];

/// Every run of one scenario.
#[derive(Debug)]
pub struct ScenarioResult {
    /// Which.
    pub scenario: Scenario,
    /// VMs per run.
    pub vms: usize,
    /// Each run's figures.
    pub runs: Vec<RunFigures>,
}

impl ScenarioResult {
    /// The median of each figure over the runs.
    pub fn medians(&self) -> BTreeMap<String, f64> {
        let mut all: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for r in &self.runs {
            for (k, v) in &r.figures {
                all.entry(k.as_str()).or_default().push(*v);
            }
        }
        all.into_iter().map(|(k, mut v)| (k.to_owned(), median(&mut v))).collect()
    }
}

pub use tern_cli::estimate::median;

/// Whether a median meets its row's target: `Some(yes/no)`, or `None` when not judged.
fn verdict(row: &Row, value: f64, vms: usize) -> Option<bool> {
    match row.target {
        Target::None => None,
        _ if value.is_nan() => Some(false),
        Target::AtMost(t) => Some(value <= t),
        Target::Below(t) => Some(value < t),
        Target::AtMostAtSize(t, size) => (vms >= size).then_some(value <= t),
    }
}

/// A number with as many decimals as its size deserves.
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One table row, as printed and as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableRow {
    /// `S1`...
    pub scenario: String,
    /// Label.
    pub metric: String,
    /// Figure key.
    pub key: String,
    /// Median over the runs.
    pub median: f64,
    /// The design's target, if any.
    pub target: String,
    /// `yes`, `no`, or why not judged.
    pub met: String,
}

/// The table rows of the scenarios that ran.
pub fn table(results: &[ScenarioResult]) -> Vec<TableRow> {
    let mut rows = Vec::new();
    for result in results {
        let medians = result.medians();
        for row in ROWS.iter().filter(|r| r.scenario == result.scenario) {
            let Some(&value) = medians.get(row.key) else { continue };
            let met = match verdict(row, value, result.vms) {
                Some(true) => "yes".to_owned(),
                Some(false) => "**no**".to_owned(),
                None if matches!(row.target, Target::AtMostAtSize(..)) => format!("n/a ({} VMs)", result.vms),
                None => String::new(),
            };
            rows.push(TableRow {
                scenario: result.scenario.key().to_uppercase(),
                metric: row.label.to_owned(),
                key: row.key.to_owned(),
                median: value,
                target: row.target_text.to_owned(),
                met,
            });
        }
    }
    rows
}

/// The Markdown table.
pub fn markdown(results: &[ScenarioResult], rows: &[TableRow]) -> String {
    let mut out = String::new();
    for r in results {
        out.push_str(&format!(
            "- **{}** {}: {} VMs, {} run{} (medians)\n",
            r.scenario.key().to_uppercase(),
            r.scenario.title(),
            r.vms,
            r.runs.len(),
            if r.runs.len() == 1 { "" } else { "s" }
        ));
    }
    out.push_str("\n| scenario | metric | median | target | met |\n|---|---|---:|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.metric,
            format_number(row.median),
            row.target,
            row.met
        ));
    }
    out
}

/// The JSON record: settings, every run's figures and details, the medians and the table.
pub fn record(settings: Value, results: &[ScenarioResult], rows: &[TableRow]) -> Value {
    let scenarios: serde_json::Map<String, Value> = results
        .iter()
        .map(|r| {
            let runs: Vec<Value> =
                r.runs.iter().map(|run| json!({"figures": nan_free(&run.figures), "details": run.details})).collect();
            (
                r.scenario.key().to_owned(),
                json!({"title": r.scenario.title(), "vms": r.vms, "runs": runs, "median": nan_free(&r.medians())}),
            )
        })
        .collect();
    let table: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"scenario": r.scenario, "metric": r.metric, "key": r.key,
                   "median": if r.median.is_nan() { Value::Null } else { json!(r.median) },
                   "target": r.target, "met": r.met.trim_matches('*')})
        })
        .collect();
    json!({"settings": settings, "scenarios": scenarios, "table": table})
}

/// JSON has no NaN: a figure that could not be computed is `null`.
fn nan_free(figures: &BTreeMap<String, f64>) -> Value {
    Value::Object(figures.iter().map(|(k, v)| (k.clone(), if v.is_nan() { Value::Null } else { json!(v) })).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_verdicts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let makespan = ROWS.iter().find(|r| r.scenario == S1 && r.key == "makespan_s").unwrap();
        assert_eq!(verdict(makespan, 30.0, 500), None, "judged only at 10,000 VMs");
        assert_eq!(verdict(makespan, 46.0, 10_000), Some(false));
        let pct = ROWS.iter().find(|r| r.key == "http_429_pct").unwrap();
        assert_eq!(verdict(pct, 1.0, 10), Some(false), "< 1 % is strict");
        assert_eq!(format_number(73.21), "73.21");
        assert_eq!(format_number(0.01234), "0.012");
        assert_eq!(format_number(1234.4), "1234");
    }
}
