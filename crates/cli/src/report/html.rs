//! The HTML page of a report: `templates/report.html`, checked at compile time by askama, which
//! escapes every value it prints. Here only what the page shows is put into words: spans, the
//! timeline's geometry, the rows of each table.

use askama::Template;

use super::{ErrorReport, Report, VaultRow, point_text, w_name};
use crate::output::human_secs;

/// What the page says where there is no value (the Markdown says `-`).
const NONE: &str = "–";

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Report,
    vaults_in_words: Option<String>,
    cards: Cards,
    forecast: Option<Forecast>,
    vault_head: [&'static str; 8],
    vaults: Vec<Vault<'a>>,
    problems: Vec<Problem<'a>>,
    /// What the timeline's full width stands for.
    axis: String,
    waves: Vec<Wave<'a>>,
    vms: Vec<Vm<'a>>,
}

struct Cards {
    makespan: String,
    rpo_p50: String,
    rpo_p99: String,
    rto_p50: String,
    rto_p99: String,
}

struct Forecast {
    vms: usize,
    facts: Vec<String>,
    /// Label, forecast, actual, error.
    rows: Vec<[String; 4]>,
}

struct Vault<'a> {
    subscription: &'a str,
    vault: String,
    /// Each cell with the class that tints it.
    cells: Vec<(&'static str, String)>,
}

struct Problem<'a> {
    name: &'a str,
    outcome: &'a str,
    phase: &'a str,
    error: Option<&'a ErrorReport>,
    reason: &'a str,
}

struct Wave<'a> {
    name: &'a str,
    vms: usize,
    succeeded: usize,
    /// `, 5m00s`, or nothing while the wave runs.
    took: String,
    rows: Vec<TimelineRow<'a>>,
}

struct TimelineRow<'a> {
    name: &'a str,
    segments: Vec<Segment<'a>>,
}

/// One phase of one VM on the timeline, placed in % of its width.
struct Segment<'a> {
    phase: &'a str,
    outcome: &'a str,
    failed: bool,
    left: String,
    width: String,
}

struct Vm<'a> {
    name: &'a str,
    vault: &'a str,
    wave: String,
    outcome: &'a str,
    point: String,
    rpo: String,
    rto: String,
    failover: String,
    commit: String,
    reprotect: String,
    cleanup: String,
    source_shutdown: &'a str,
    cleanup_result: &'a str,
}

fn span(x: Option<f64>) -> String {
    x.map_or(NONE.to_owned(), human_secs)
}

/// One self-contained HTML page: no scripts, no external resources.
pub(super) fn page(r: &Report) -> String {
    let (t0, t1) = r.span;
    let width = (t1 - t0).max(1.0);
    let pct = |t: f64| ((t - t0) / width * 100.0).clamp(0.0, 100.0);
    let page = Page {
        r,
        vaults_in_words: r.vaults_in_words(),
        cards: Cards {
            makespan: span(r.makespan_s),
            rpo_p50: span(r.rpo_s.p50),
            rpo_p99: span(r.rpo_s.p99),
            rto_p50: span(r.rto_s.p50),
            rto_p99: span(r.rto_s.p99),
        },
        forecast: r.forecast.as_ref().map(|f| Forecast {
            vms: f.vms,
            facts: f.facts(),
            rows: f
                .rows()
                .into_iter()
                .map(|(label, pair, error)| {
                    [label, span(pair.forecast), span(pair.actual), super::forecast::pct(error, "")]
                })
                .collect(),
        }),
        vault_head: VaultRow::HEAD,
        vaults: r
            .vault_rows()
            .into_iter()
            .map(|row| Vault {
                subscription: row.subscription,
                cells: row
                    .cells(NONE)
                    .into_iter()
                    .enumerate()
                    .map(|(i, cell)| {
                        (["", " succeeded", " failed", " skipped"].get(i).copied().unwrap_or_default(), cell)
                    })
                    .collect(),
                vault: row.vault,
            })
            .collect(),
        problems: r
            .problems()
            .map(|v| Problem {
                name: &v.name,
                outcome: &v.outcome,
                phase: &v.phase,
                error: v.error.as_ref(),
                reason: &v.reason,
            })
            .collect(),
        axis: human_secs(width),
        waves: r
            .waves
            .iter()
            .map(|w| Wave {
                name: &w.name,
                vms: w.vms,
                succeeded: w.succeeded,
                took: w.duration_s.map(|d| format!(", {}", human_secs(d))).unwrap_or_default(),
                rows: r
                    .vms
                    .iter()
                    .filter(|v| v.wave == w.index)
                    .map(|v| TimelineRow {
                        name: &v.name,
                        segments: v
                            .timeline
                            .iter()
                            .map(|b| {
                                let (left, right) = (pct(b.start), pct(b.end.unwrap_or(t1)));
                                Segment {
                                    phase: &b.phase,
                                    outcome: &b.outcome,
                                    failed: b.outcome == "failed",
                                    left: format!("{left:.2}"),
                                    width: format!("{:.2}", (right - left).max(0.0)),
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        vms: r
            .vms
            .iter()
            .map(|v| {
                let phase = |k: &str| span(v.phase_durations_s.get(k).copied());
                Vm {
                    name: &v.name,
                    vault: &v.vault,
                    wave: w_name(r, v.wave),
                    outcome: &v.outcome,
                    point: point_text(v),
                    rpo: span(v.rpo_s),
                    rto: span(v.rto_s),
                    failover: phase("failover"),
                    commit: phase("commit"),
                    reprotect: phase("reprotect"),
                    cleanup: phase("cleanup"),
                    source_shutdown: v.source_shutdown.as_deref().unwrap_or(NONE),
                    cleanup_result: v.cleanup.as_deref().unwrap_or(NONE),
                }
            })
            .collect(),
    };
    page.render().expect("the report's template renders: it only prints strings and numbers")
}
