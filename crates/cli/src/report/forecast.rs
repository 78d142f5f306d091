//! The forecast beside what happened: what `tern plan estimate`'s model says of a plan as it
//! was submitted, against what the plan took — its makespan, the end of each wave's failovers,
//! and RTO as the model defines it (to the VM committed).

use std::fmt::Write as _;

use serde::Serialize;
use tern_cli::estimate::{BudgetConfig, Cause, Clock, History, Selected};
use tern_proto::Plan;

use super::{Report, percentiles};
use crate::output::human_secs;

/// What the forecast assumes besides the plan, as `tern plan estimate` takes it.
pub struct Basis {
    /// Each subscription's ARM budget; `None`: no limit.
    pub budget: Option<BudgetConfig>,
    /// Job durations of earlier plans: only of those that ended before this one was created.
    pub history: History,
    /// How time runs where the plan ran.
    pub clock: Clock,
}

/// A figure as forecast and as measured, in seconds from the plan's acceptance.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub forecast: Option<f64>,
    pub actual: Option<f64>,
}

/// RTO percentiles, from the plan's acceptance to the VM committed on both sides.
#[derive(Serialize, Debug)]
pub struct RtoPair {
    pub p50: Pair,
    pub p90: Pair,
    pub max: Pair,
    /// VMs that committed (the actual percentiles' count), of `vms` forecast.
    pub committed: usize,
}

/// One wave: when its last failover ended.
#[derive(Serialize, Debug)]
pub struct WavePair {
    pub name: String,
    /// Its VMs the forecast covers.
    pub vms: usize,
    pub failover_end_s: Pair,
}

/// `tern plan estimate`'s forecast of the plan beside what the plan took. Every time runs from
/// the plan's acceptance (its record's `created_at`, after preflight): the forecast's own
/// preflight, `preflight_s`, is left out of its figures.
#[derive(Serialize, Debug)]
pub struct ForecastReport {
    /// VMs the forecast covers: those the plan ran.
    pub vms: usize,
    /// Where the job durations came from.
    pub durations_source: String,
    /// What binds the plan in the forecast, and its share of the critical path.
    pub binding: Cause,
    pub preflight_s: f64,
    pub makespan_s: Pair,
    /// (forecast − actual) / actual, %: positive when the forecast was too long.
    pub makespan_error_pct: Option<f64>,
    /// Absent when the plan does not fail over.
    pub rto_s: Option<RtoPair>,
    /// Present when the plan fails over.
    pub waves: Vec<WavePair>,
    /// What the forecast could not know.
    pub notes: Vec<String>,
}

impl ForecastReport {
    /// The forecast of `plan` as it was submitted, beside what `report` (the same plan's)
    /// measured; why there is none when the model does not forecast such a plan.
    pub fn of(plan: &Plan, report: &Report, basis: &Basis) -> Result<Self, String> {
        let spec = plan.spec.clone().unwrap_or_default();
        let selected = Selected::of_plan(plan);
        let estimate = selected
            .inputs(&spec, &basis.history, basis.budget, 0.0, basis.clock)
            .and_then(|inputs| inputs.estimate())
            .map_err(|e| e.to_string())?;
        let accepted = estimate.accepted_s;
        let created = report.span.0;
        let phases = estimate.assumed.phases;

        // Committed, as the model counts it: the commit's end, or the failover's without one.
        let committed_in = if phases.commit { "commit" } else { "failover" };
        let committed: Vec<f64> = report
            .vms
            .iter()
            .filter_map(|v| {
                let done = v
                    .timeline
                    .iter()
                    .filter(|b| b.phase == committed_in && matches!(b.outcome.as_str(), "succeeded" | "skipped"));
                done.filter_map(|b| b.end).reduce(f64::max)
            })
            .map(|t| t - created)
            .collect();
        let actual = percentiles(committed);
        let rto_s = estimate.rto_s.map(|f| RtoPair {
            p50: Pair { forecast: Some(f.p50 - accepted), actual: actual.p50 },
            p90: Pair { forecast: Some(f.p90 - accepted), actual: actual.p90 },
            max: Pair { forecast: Some(f.max - accepted), actual: actual.max },
            committed: actual.count,
        });

        // A wave's failovers end when its last one does, failed or not: the planner's gate.
        let waves = if phases.failover {
            report
                .waves
                .iter()
                .zip(&estimate.waves)
                .map(|(w, f)| {
                    let ended = report.vms.iter().filter(|v| v.wave == w.index).flat_map(|v| &v.timeline);
                    let end = ended.filter(|b| b.phase == "failover").filter_map(|b| b.end).reduce(f64::max);
                    WavePair {
                        name: w.name.clone(),
                        vms: f.vms,
                        failover_end_s: Pair {
                            forecast: (f.vms > 0).then_some(f.failover_end_s - accepted),
                            actual: end.map(|t| t - created),
                        },
                    }
                })
                .collect()
        } else {
            Vec::new()
        };

        let makespan_s = Pair { forecast: Some(estimate.makespan_s - accepted), actual: report.makespan_s };
        let makespan_error_pct = match makespan_s {
            Pair { forecast: Some(f), actual: Some(a) } if a > 0.0 => Some((f - a) / a * 100.0),
            _ => None,
        };
        let mut notes = selected.notes;
        if spec.cleanup.is_some_and(|c| c.remove_leftovers) {
            notes.push(
                "cleanup's deletes of leftovers are not counted (as `tern plan estimate` without --leftovers)".into(),
            );
        }
        Ok(Self {
            vms: estimate.vms,
            durations_source: estimate.assumed.durations_source,
            binding: estimate.binding,
            preflight_s: accepted,
            makespan_s,
            makespan_error_pct,
            rto_s,
            waves,
            notes,
        })
    }

    /// The comparison's rows: a label, the pair, and the error in % where it is given.
    pub(super) fn rows(&self) -> Vec<(String, Pair, Option<f64>)> {
        let mut rows = vec![("Makespan".to_owned(), self.makespan_s, self.makespan_error_pct)];
        if let Some(r) = &self.rto_s {
            for (q, pair) in [("p50", r.p50), ("p90", r.p90), ("max", r.max)] {
                rows.push((format!("RTO {q} (accepted → committed)"), pair, None));
            }
        }
        for w in &self.waves {
            rows.push((format!("{}: failovers end", w.name), w.failover_end_s, None));
        }
        rows
    }

    /// What the forecast rests on, a line each.
    pub(super) fn facts(&self) -> Vec<String> {
        let mut facts = vec![
            format!("Binding: {} ({:.0} % of the critical path)", self.binding.what, self.binding.share * 100.0),
            format!("Job durations: {}", self.durations_source),
        ];
        if self.preflight_s > 0.0 {
            facts.push(format!(
                "Its preflight, before the plan was accepted, left out: {}",
                human_secs(self.preflight_s)
            ));
        }
        facts.extend(self.notes.iter().map(|n| format!("Note: {n}")));
        facts
    }
}

/// A span, or `none`.
fn or(x: Option<f64>, none: &str) -> String {
    x.map_or(none.to_owned(), human_secs)
}

/// `+12 %`, `-8 %`.
pub(super) fn pct(x: Option<f64>, none: &str) -> String {
    x.map_or(none.to_owned(), |e| format!("{e:+.0} %"))
}

const HEADING: &str = "Forecast beside actual";

impl Report {
    /// The Markdown section: the comparison, or why there is none; nothing when no forecast
    /// was asked for.
    pub(super) fn forecast_markdown(&self, s: &mut String) {
        if let Some(why) = &self.no_forecast {
            let _ = writeln!(s, "\n## {HEADING}\n\nNo forecast: {why}");
        }
        let Some(f) = &self.forecast else { return };
        let _ = writeln!(
            s,
            "\n## {HEADING}\n\nWhat `tern plan estimate`'s model forecasts for the {} VMs the plan ran, from the \
             plan's acceptance:\n",
            f.vms
        );
        for fact in f.facts() {
            let _ = writeln!(s, "- {fact}");
        }
        let _ = writeln!(s, "\n| | Forecast | Actual | Error |\n|---|---|---|---|");
        for (label, pair, error) in f.rows() {
            let _ =
                writeln!(s, "| {label} | {} | {} | {} |", or(pair.forecast, "-"), or(pair.actual, "-"), pct(error, ""));
        }
    }
}
