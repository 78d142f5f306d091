//! `tern report`: what a failback did, per VM and in sum — outcome, recovery point, RPO, RTO,
//! phase durations, errors with ASR codes and what to do, what cleanup removed and kept — as
//! Markdown, JSON or one self-contained HTML file with a timeline per wave.
//!
//! Built from the plan (the planner's record) and the plan's events (the bus), so it can be
//! written at any time, also while the plan runs; `tern report` adds `tern plan estimate`'s
//! forecast of the plan beside what happened (`forecast`).

mod forecast;
mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tern_bus::ReceivedEvent;
use tern_proto::{Outcome, Phase, Plan, PlanState, RecoveryPointKind, SourceShutdown, VmState, event};

use crate::output::{self, Columns, epoch, human_secs, rfc3339, secs};
pub use forecast::{Basis, ForecastReport};

#[derive(Serialize, Debug)]
pub struct Report {
    pub plan_id: String,
    pub state: String,
    pub reason: String,
    pub vault_id: String,
    pub recovery_point: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// From the plan's acceptance (`created_at`, after preflight) to the last VM's last
    /// phase, seconds.
    pub makespan_s: Option<f64>,
    pub counts: Counts,
    pub rpo_s: Percentiles,
    /// Each VM's RTO as the planner measures it: its failover's own duration (failover start →
    /// VM running in the target region).
    pub rto_s: Percentiles,
    /// `tern plan estimate`'s forecast of the plan beside what happened; absent when there is
    /// none (see `no_forecast`) or none was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastReport>,
    /// Why there is no forecast, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_forecast: Option<String>,
    /// The VMs by subscription and vault, in the order the plan names them.
    pub subscriptions: Vec<SubscriptionReport>,
    pub waves: Vec<WaveReport>,
    /// Each wave gate step the plan reached, in the order they began waiting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateReport>,
    pub vms: Vec<VmReport>,
    /// Epoch seconds bounding every timeline bar (for rendering).
    #[serde(skip)]
    span: (f64, f64),
}

#[derive(Serialize, Debug, Default)]
pub struct Counts {
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub running: u32,
    pub pending: u32,
}

/// Nearest-rank percentiles, seconds.
#[derive(Serialize, Debug, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// One subscription's VMs: counts by outcome and RTO, in sum and per vault.
#[derive(Serialize, Debug)]
pub struct SubscriptionReport {
    pub subscription_id: String,
    pub counts: Counts,
    /// RTO of its VMs that have one (`p50` is the median).
    pub rto_s: Percentiles,
    pub vaults: Vec<VaultReport>,
}

/// One vault's VMs.
#[derive(Serialize, Debug)]
pub struct VaultReport {
    pub vault_id: String,
    /// How the report names it: the vault's name, or `subscription/name` when the plan has two
    /// vaults of that name.
    pub vault: String,
    pub counts: Counts,
    pub rto_s: Percentiles,
}

impl Counts {
    fn of<'a>(vms: impl IntoIterator<Item = &'a VmReport>) -> Self {
        let mut c = Counts::default();
        for v in vms {
            c.total += 1;
            match v.outcome.as_str() {
                "succeeded" => c.succeeded += 1,
                "failed" => c.failed += 1,
                "skipped" => c.skipped += 1,
                "running" => c.running += 1,
                "pending" => c.pending += 1,
                _ => {}
            }
        }
        c
    }
}

/// One gate step: where it is, how long it held its wave, and who decided it why.
#[derive(Serialize, Debug)]
pub struct GateReport {
    /// The wave's name (or 1-based number).
    pub wave: String,
    /// `before` or `after`.
    pub side: &'static str,
    /// 0-based among the wave's steps on that side.
    pub step: u32,
    pub name: String,
    /// `waiting`, `passed`, `failed` or `rejected`.
    pub state: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// From beginning to wait to passing, failing or being rejected.
    pub waited_s: Option<f64>,
    pub by: String,
    pub reason: String,
    pub attempt: u32,
    /// Hook steps: requests sent in the last attempt.
    pub tries: u32,
}

#[derive(Serialize, Debug)]
pub struct WaveReport {
    pub index: u32,
    pub name: String,
    pub vms: usize,
    pub succeeded: usize,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_s: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct VmReport {
    pub name: String,
    /// The vault its item is in (ARM id), that vault's subscription, and how the report names
    /// the vault.
    pub vault_id: String,
    pub subscription_id: String,
    pub vault: String,
    pub wave: u32,
    pub critical: bool,
    pub outcome: String,
    /// The phase it reached (or failed in).
    pub phase: String,
    pub reason: String,
    pub recovery_point: Option<PointReport>,
    pub rpo_s: Option<f64>,
    pub rto_s: Option<f64>,
    pub phase_durations_s: BTreeMap<String, f64>,
    pub error: Option<ErrorReport>,
    pub source_shutdown: Option<String>,
    /// What cleanup removed and kept, as the cleanup worker reported it.
    pub cleanup: Option<String>,
    pub timeline: Vec<Bar>,
}

#[derive(Serialize, Debug)]
pub struct PointReport {
    pub id: String,
    pub time: Option<String>,
    pub requested: String,
    pub asr_type: String,
    pub disks_covered: u32,
    pub disks_total: u32,
}

#[derive(Serialize, Debug)]
pub struct ErrorReport {
    pub code: String,
    pub message: String,
    pub recommended_action: String,
}

/// One phase run of one VM.
#[derive(Serialize, Debug, Clone)]
pub struct Bar {
    pub phase: String,
    pub attempt: u32,
    pub outcome: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[serde(skip)]
    start: f64,
    #[serde(skip)]
    end: Option<f64>,
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase().replace('_', " ")
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if v.is_empty() {
            return None;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    };
    Percentiles { count: v.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v.last().copied() }
}

impl Report {
    pub fn build(plan: &Plan, events: &[ReceivedEvent]) -> Self {
        // Timeline bars and cleanup notes, from the VM events.
        let mut bars: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
        let mut cleanup: BTreeMap<String, String> = BTreeMap::new();
        let mut shutdown: BTreeMap<String, String> = BTreeMap::new();
        let mut last_event = 0f64;
        for r in events {
            let Some(event::Body::Vm(v)) = &r.event.body else { continue };
            let Some(name) = v.vm.as_ref().map(|v| v.name.to_ascii_lowercase()) else { continue };
            let at = epoch(r.event.time.as_ref()).unwrap_or_default();
            last_event = last_event.max(at);
            let phase = Phase::try_from(v.phase).unwrap_or(Phase::Unspecified);
            let outcome = Outcome::try_from(v.outcome).unwrap_or(Outcome::Unspecified);
            let list = bars.entry(name.clone()).or_default();
            let open =
                list.iter_mut().rev().find(|b| b.phase == phase.slug() && b.attempt == v.attempt && b.end.is_none());
            match (outcome, open) {
                (Outcome::Started, _) => list.push(Bar {
                    phase: phase.slug().to_owned(),
                    attempt: v.attempt,
                    outcome: "running".into(),
                    started_at: rfc3339(at),
                    finished_at: None,
                    start: at,
                    end: None,
                }),
                (Outcome::Progress, _) => {}
                (o, Some(bar)) => {
                    let end = epoch(v.finished_at.as_ref()).unwrap_or(at);
                    bar.end = Some(end);
                    bar.finished_at = Some(rfc3339(end));
                    bar.outcome = o.slug().to_owned();
                }
                (o, None) if o.is_terminal() => {
                    // A terminal event without its start (e.g. skipped before starting).
                    let start = epoch(v.started_at.as_ref()).unwrap_or(at);
                    list.push(Bar {
                        phase: phase.slug().to_owned(),
                        attempt: v.attempt,
                        outcome: o.slug().to_owned(),
                        started_at: rfc3339(start),
                        finished_at: Some(rfc3339(at)),
                        start,
                        end: Some(at),
                    });
                }
                _ => {}
            }
            if phase == Phase::Cleanup && outcome == Outcome::Succeeded && !v.reason.is_empty() {
                cleanup.insert(name.clone(), v.reason.clone());
            }
            if let Ok(s @ (SourceShutdown::Succeeded | SourceShutdown::Failed | SourceShutdown::NotRequested)) =
                SourceShutdown::try_from(v.source_shutdown)
            {
                shutdown.insert(name, word(s.as_str_name(), "SOURCE_SHUTDOWN_"));
            }
        }

        let created = epoch(plan.created_at.as_ref()).unwrap_or_default();
        let finished = epoch(plan.finished_at.as_ref());
        let end = finished.unwrap_or(last_event).max(created);
        let spec = plan.spec.clone().unwrap_or_default();
        let wave_name = |w: u32| match spec.waves.get(w as usize) {
            Some(wave) if !wave.name.is_empty() => wave.name.clone(),
            None if !spec.waves.is_empty() => "the rest".to_owned(),
            _ => format!("wave {}", w + 1),
        };

        // Each VM's vault: its own record's, else its item's, else the plan's.
        let vault_of = |v: &tern_proto::VmStatus| {
            let r = v.vm.as_ref();
            let id = r.map(|r| r.vault_id.as_str()).filter(|id| !id.is_empty());
            let of_item = || r.and_then(|r| tern_asr::client::vault_of(&r.protected_item_id));
            id.or_else(of_item).unwrap_or(&spec.vault_id).trim_end_matches('/').to_owned()
        };
        let mut vault_ids: Vec<String> = Vec::new();
        for v in &plan.vms {
            let id = vault_of(v);
            if !vault_ids.iter().any(|known| known.eq_ignore_ascii_case(&id)) {
                vault_ids.push(id);
            }
        }
        let labels = crate::vms::vault_labels(vault_ids.iter().map(String::as_str));
        let vms: Vec<VmReport> = plan
            .vms
            .iter()
            .map(|v| {
                let name = v.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                let key = name.to_ascii_lowercase();
                let vault_id = vault_of(v);
                VmReport {
                    subscription_id: subscription_of(&vault_id),
                    vault: labels.get(&vault_id.to_ascii_lowercase()).cloned().unwrap_or_else(|| vault_id.clone()),
                    vault_id,
                    wave: v.wave,
                    critical: v.critical,
                    outcome: word(
                        VmState::try_from(v.state).unwrap_or(VmState::Unspecified).as_str_name(),
                        "VM_STATE_",
                    ),
                    phase: if v.state == VmState::Skipped as i32 && !bars.contains_key(&key) {
                        "not started".to_owned()
                    } else {
                        Phase::try_from(v.phase).unwrap_or(Phase::Unspecified).slug().to_owned()
                    },
                    reason: v.reason.clone(),
                    recovery_point: v.recovery_point.as_ref().map(|p| PointReport {
                        id: p.id.clone(),
                        time: epoch(p.time.as_ref()).map(rfc3339),
                        requested: word(
                            RecoveryPointKind::try_from(p.requested)
                                .unwrap_or(RecoveryPointKind::Unspecified)
                                .as_str_name(),
                            "RECOVERY_POINT_KIND_",
                        ),
                        asr_type: p.asr_type.clone(),
                        disks_covered: p.disks_covered,
                        disks_total: p.disks_total,
                    }),
                    rpo_s: secs(v.rpo.as_ref()),
                    rto_s: secs(v.rto.as_ref()),
                    phase_durations_s: v
                        .phase_durations
                        .iter()
                        .filter_map(|(k, d)| Some((k.clone(), secs(Some(d))?)))
                        .collect(),
                    error: v.error.as_ref().map(|e| ErrorReport {
                        code: e.code.clone(),
                        message: e.message.clone(),
                        recommended_action: e.recommended_action.clone(),
                    }),
                    source_shutdown: shutdown.get(&key).cloned(),
                    cleanup: cleanup.get(&key).cloned(),
                    timeline: bars.remove(&key).unwrap_or_default(),
                    name,
                }
            })
            .collect();

        let wave_count = plan.vms.iter().map(|v| v.wave + 1).max().unwrap_or(0);
        let waves = (0..wave_count)
            .map(|w| {
                let members: Vec<&VmReport> = vms.iter().filter(|v| v.wave == w).collect();
                let start = members.iter().flat_map(|v| &v.timeline).map(|b| b.start).reduce(f64::min);
                let stop = members.iter().flat_map(|v| &v.timeline).filter_map(|b| b.end).reduce(f64::max);
                WaveReport {
                    index: w,
                    name: wave_name(w),
                    vms: members.len(),
                    succeeded: members.iter().filter(|v| v.outcome == "succeeded").count(),
                    started_at: start.map(rfc3339),
                    finished_at: stop.map(rfc3339),
                    duration_s: start.zip(stop).map(|(a, b)| b - a),
                }
            })
            .collect();

        let gate_map = plan.spec_waves();
        let gates = plan
            .gates
            .iter()
            .map(|g| {
                let (start, end) = (epoch(g.started_at.as_ref()), epoch(g.ended_at.as_ref()));
                GateReport {
                    wave: wave_name(g.wave),
                    side: if g.after { "after" } else { "before" },
                    step: g.step,
                    name: plan
                        .gate_steps(&gate_map, g.wave, g.after)
                        .get(g.step as usize)
                        .map_or_else(|| format!("step #{}", g.step + 1), |s| s.display_name(g.step as usize)),
                    state: word(g.state().as_str_name(), "GATE_STATE_"),
                    started_at: start.map(rfc3339),
                    ended_at: end.map(rfc3339),
                    waited_s: start.zip(end).map(|(a, b)| b - a),
                    by: g.by.clone(),
                    reason: g.reason.clone(),
                    attempt: g.attempt,
                    tries: g.tries,
                }
            })
            .collect();

        let c = plan.counts.unwrap_or_default();
        let point = spec.recovery_point.as_ref().map_or("latest processed".to_owned(), |p| {
            let kind = RecoveryPointKind::try_from(p.kind).unwrap_or(RecoveryPointKind::LatestProcessed);
            match kind {
                RecoveryPointKind::Custom => format!("custom {}", p.custom_id),
                RecoveryPointKind::Unspecified => "latest processed".into(),
                k => word(k.as_str_name(), "RECOVERY_POINT_KIND_"),
            }
        });
        Report {
            plan_id: plan.plan_id.clone(),
            state: word(PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified).as_str_name(), "PLAN_STATE_"),
            reason: plan.reason.clone(),
            vault_id: spec.vault_id.clone(),
            recovery_point: point,
            created_at: rfc3339(created),
            finished_at: finished.map(rfc3339),
            makespan_s: finished.map(|f| f - created),
            counts: Counts {
                total: c.total,
                succeeded: c.succeeded,
                failed: c.failed,
                skipped: c.skipped,
                running: c.running,
                pending: c.pending,
            },
            rpo_s: percentiles(vms.iter().filter_map(|v| v.rpo_s).collect()),
            rto_s: percentiles(vms.iter().filter_map(|v| v.rto_s).collect()),
            forecast: None,
            no_forecast: None,
            subscriptions: by_subscription(&vms),
            waves,
            gates,
            vms,
            span: (created, end),
        }
    }

    /// The report with `tern plan estimate`'s forecast of `plan` (the plan it reports on)
    /// beside what happened, or why there is none; `basis` is the error when what the forecast
    /// needs could not be read.
    pub fn with_forecast(mut self, plan: &Plan, basis: Result<Basis, String>) -> Self {
        match basis.and_then(|basis| ForecastReport::of(plan, &self, &basis)) {
            Ok(forecast) => self.forecast = Some(forecast),
            Err(why) => self.no_forecast = Some(why),
        }
        self
    }

    /// How many vaults the plan's VMs are in.
    pub fn vault_count(&self) -> usize {
        self.subscriptions.iter().map(|s| s.vaults.len()).sum()
    }

    /// The vaults in a few words: the one's ARM id, or how many in how many subscriptions.
    fn vaults_in_words(&self) -> Option<String> {
        (self.vault_count() > 1)
            .then(|| format!("{} vaults in {} subscriptions", self.vault_count(), self.subscriptions.len()))
    }

    /// Rows of the per-vault table, a subscription's total after its vaults when it has several.
    fn vault_rows(&self) -> Vec<VaultRow<'_>> {
        let mut rows = Vec::new();
        for sub in &self.subscriptions {
            let subscription = sub.subscription_id.as_str();
            for v in &sub.vaults {
                rows.push(VaultRow { subscription, vault: v.vault.clone(), counts: &v.counts, rto: &v.rto_s });
            }
            if sub.vaults.len() > 1 {
                let vault = format!("all {} vaults", sub.vaults.len());
                rows.push(VaultRow { subscription, vault, counts: &sub.counts, rto: &sub.rto_s });
            }
        }
        rows
    }

    /// The VMs that did not succeed.
    pub fn problems(&self) -> impl Iterator<Item = &VmReport> {
        self.vms.iter().filter(|v| v.outcome != "succeeded")
    }

    /// A few lines for the end of `plan watch` and `tern up --demo`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(
            s,
            "plan {} {}: {} VMs — {} succeeded, {} failed, {} skipped{}",
            self.plan_id,
            self.state,
            c.total,
            c.succeeded,
            c.failed,
            c.skipped,
            self.makespan_s.map(|m| format!(", in {}", human_secs(m))).unwrap_or_default()
        );
        if !self.reason.is_empty() {
            let _ = writeln!(s, "  {}", self.reason);
        }
        let p = |x: Option<f64>| x.map_or("-".to_owned(), human_secs);
        if self.rpo_s.count > 0 {
            let _ = writeln!(
                s,
                "  RPO (by ASR's clock)  p50 {}  p90 {}  p99 {}  max {}",
                p(self.rpo_s.p50),
                p(self.rpo_s.p90),
                p(self.rpo_s.p99),
                p(self.rpo_s.max)
            );
        }
        if self.rto_s.count > 0 {
            let _ = writeln!(
                s,
                "  RTO                   p50 {}  p90 {}  p99 {}  max {}",
                p(self.rto_s.p50),
                p(self.rto_s.p90),
                p(self.rto_s.p99),
                p(self.rto_s.max)
            );
        }
        // Indented under the plan's line, each list aligned on its own.
        let indent = |s: &mut String, t: Columns| {
            for line in t.to_string().lines() {
                let _ = writeln!(s, "  {line}");
            }
        };
        if self.vault_count() > 1 {
            let mut vaults = Columns::new(Vec::<String>::new());
            for r in self.vault_rows() {
                let c = r.counts;
                vaults.row([
                    r.vault.clone(),
                    r.subscription.to_owned(),
                    format!(
                        "{} VMs — {} succeeded, {} failed, {} skipped; RTO p50 {}  max {}",
                        c.total,
                        c.succeeded,
                        c.failed,
                        c.skipped,
                        p(r.rto.p50),
                        p(r.rto.max)
                    ),
                ]);
            }
            indent(&mut s, vaults);
        }
        let mut problems = Columns::new(Vec::<String>::new());
        for v in self.vms.iter().filter(|v| v.outcome == "failed") {
            problems.row([v.name.clone(), v.outcome.clone(), problem(v)]);
        }
        let skipped = self.vms.iter().filter(|v| v.outcome == "skipped").map(|v| (v.name.as_str(), v.reason.as_str()));
        for (names, reason) in group_by_reason(skipped) {
            problems.row([name_list(&names), "skipped".to_owned(), reason.to_owned()]);
        }
        indent(&mut s, problems);
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(s, "# Failback report — plan `{}`\n", self.plan_id);
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| State | {} |", self.state);
        match self.vaults_in_words() {
            Some(words) => _ = writeln!(s, "| Vaults | {words} |"),
            None => _ = writeln!(s, "| Vault | `{}` |", self.vault_id),
        }
        let _ = writeln!(s, "| Recovery point | {} |", self.recovery_point);
        let _ = writeln!(s, "| Submitted | {} |", self.created_at);
        let _ = writeln!(s, "| Finished | {} |", self.finished_at.as_deref().unwrap_or("not yet"));
        let _ = writeln!(s, "| Makespan | {} |", self.makespan_s.map_or("-".into(), human_secs));
        let _ = writeln!(
            s,
            "| VMs | {} total: {} succeeded, {} failed, {} skipped, {} running, {} pending |",
            c.total, c.succeeded, c.failed, c.skipped, c.running, c.pending
        );
        let p = |x: Option<f64>| x.map_or("-".to_owned(), human_secs);
        let _ = writeln!(s, "\n| | p50 | p90 | p99 | max |\n|---|---|---|---|---|");
        for (label, q) in [("RPO (by ASR's clock)", &self.rpo_s), ("RTO (failover start → VM running)", &self.rto_s)]
        {
            let _ = writeln!(s, "| {label} | {} | {} | {} | {} |", p(q.p50), p(q.p90), p(q.p99), p(q.max));
        }
        self.forecast_markdown(&mut s);
        let head = VaultRow::HEAD.join(" | ");
        let _ = writeln!(
            s,
            "\n## By subscription and vault\n\n| Subscription | Vault | {head} |\n|---|---|{}",
            "---|".repeat(8)
        );
        for r in self.vault_rows() {
            let _ = writeln!(s, "| `{}` | {} | {} |", r.subscription, r.vault, r.cells("-").join(" | "));
        }
        let _ = writeln!(s, "\n## Waves\n\n| Wave | VMs | Succeeded | Started | Took |\n|---|---|---|---|---|");
        for w in &self.waves {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                w.name,
                w.vms,
                w.succeeded,
                w.started_at.as_deref().unwrap_or("-"),
                w.duration_s.map_or("-".into(), human_secs)
            );
        }
        if !self.gates.is_empty() {
            let _ = writeln!(
                s,
                "\n## Gates\n\n| Wave | Step | Gate | State | Began waiting | Waited | By | Why |\n|---|---|---|---|---|---|---|---|"
            );
            for g in &self.gates {
                let _ = writeln!(
                    s,
                    "| {} | {} {} | {} | {}{} | {} | {} | {} | {} |",
                    g.wave,
                    g.side,
                    g.step,
                    g.name,
                    g.state,
                    match (g.attempt, g.tries) {
                        (a, t) if a > 1 && t > 1 => format!(" (attempt {a}, {t} tries)"),
                        (a, _) if a > 1 => format!(" (attempt {a})"),
                        (_, t) if t > 1 => format!(" ({t} tries)"),
                        _ => String::new(),
                    },
                    g.started_at.as_deref().unwrap_or("-"),
                    g.waited_s.map_or("-".into(), human_secs),
                    if g.by.is_empty() { "-" } else { &g.by },
                    if g.reason.is_empty() { "-".to_owned() } else { g.reason.replace('|', "/") },
                );
            }
        }
        if self.problems().next().is_some() {
            let _ = writeln!(s, "\n## Needs attention\n");
            for v in self.problems() {
                let _ = writeln!(s, "- **{}** ({}, {}): {}", v.name, v.outcome, v.phase, problem(v));
            }
        }
        let _ = writeln!(
            s,
            "\n## VMs\n\n| VM | Vault | Wave | Outcome | Recovery point | RPO | RTO | Failover | Commit | Reprotect | Cleanup | Cleanup result |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for v in &self.vms {
            let d = |k: &str| v.phase_durations_s.get(k).map_or("-".to_owned(), |s| human_secs(*s));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.name,
                v.vault,
                v.wave + 1,
                v.outcome,
                point_text(v),
                v.rpo_s.map_or("-".into(), human_secs),
                v.rto_s.map_or("-".into(), human_secs),
                d("failover"),
                d("commit"),
                d("reprotect"),
                d("cleanup"),
                v.cleanup.as_deref().unwrap_or("-").replace('|', "/")
            );
        }
        s
    }

    /// One self-contained HTML page: no scripts, no external resources.
    pub fn html(&self) -> String {
        html::page(self)
    }
}

/// A row of the per-vault table.
struct VaultRow<'a> {
    subscription: &'a str,
    vault: String,
    counts: &'a Counts,
    rto: &'a Percentiles,
}

impl VaultRow<'_> {
    /// Headings of `cells`.
    const HEAD: [&'static str; 8] =
        ["VMs", "Succeeded", "Failed", "Skipped", "Running", "Pending", "RTO p50", "RTO max"];

    /// The counts by outcome, then RTO median and max (`none` where there is no RTO).
    fn cells(&self, none: &str) -> Vec<String> {
        let c = self.counts;
        let t = |x: Option<f64>| x.map_or(none.to_owned(), human_secs);
        let mut cells: Vec<String> =
            [c.total, c.succeeded, c.failed, c.skipped, c.running, c.pending].iter().map(u32::to_string).collect();
        cells.extend([t(self.rto.p50), t(self.rto.max)]);
        cells
    }
}

/// The subscription of a vault's ARM id (empty when it is not one).
fn subscription_of(vault_id: &str) -> String {
    tern_asr::config::parse_vault_id(vault_id).map(|(sub, _, _)| sub).unwrap_or_default()
}

/// The VMs grouped by subscription, then vault, each in first-seen order.
fn by_subscription(vms: &[VmReport]) -> Vec<SubscriptionReport> {
    let rto = |members: &[&VmReport]| percentiles(members.iter().filter_map(|v| v.rto_s).collect());
    /// A vault's id and its VMs.
    type Members<'a> = (&'a str, Vec<&'a VmReport>);
    let mut subscriptions: Vec<(&str, Vec<Members>)> = Vec::new();
    for v in vms {
        let at = match subscriptions.iter().position(|(s, _)| s.eq_ignore_ascii_case(&v.subscription_id)) {
            Some(at) => at,
            None => {
                subscriptions.push((&v.subscription_id, Vec::new()));
                subscriptions.len() - 1
            }
        };
        let vaults = &mut subscriptions[at].1;
        match vaults.iter_mut().find(|(id, _)| id.eq_ignore_ascii_case(&v.vault_id)) {
            Some((_, members)) => members.push(v),
            None => vaults.push((&v.vault_id, vec![v])),
        }
    }
    subscriptions
        .into_iter()
        .map(|(subscription, vaults)| {
            let all: Vec<&VmReport> = vaults.iter().flat_map(|(_, members)| members.iter().copied()).collect();
            SubscriptionReport {
                subscription_id: subscription.to_owned(),
                counts: Counts::of(all.iter().copied()),
                rto_s: rto(&all),
                vaults: vaults
                    .into_iter()
                    .map(|(id, members)| VaultReport {
                        vault_id: id.to_owned(),
                        vault: members[0].vault.clone(),
                        counts: Counts::of(members.iter().copied()),
                        rto_s: rto(&members),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// VMs that share a reason, in first-seen order: a halted plan skips hundreds for one cause.
pub fn group_by_reason<'a>(vms: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(Vec<&'a str>, &'a str)> {
    let mut groups: Vec<(Vec<&str>, &str)> = Vec::new();
    for (name, reason) in vms {
        match groups.iter_mut().find(|(_, r)| *r == reason) {
            Some((names, _)) => names.push(name),
            None => groups.push((vec![name], reason)),
        }
    }
    groups
}

/// `vm-1`, or `vm-1, vm-2, vm-3`, or `12 VMs (vm-1, vm-2, …)`.
pub fn name_list(names: &[&str]) -> String {
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{n} VMs ({}, {}, …)", names[0], names[1]),
    }
}

fn w_name(r: &Report, wave: u32) -> String {
    r.waves.get(wave as usize).map_or_else(|| format!("{}", wave + 1), |w| w.name.clone())
}

fn point_text(v: &VmReport) -> String {
    let Some(p) = &v.recovery_point else { return "–".into() };
    let kind = [p.asr_type.as_str(), p.requested.as_str()]
        .into_iter()
        .find(|k| !k.is_empty() && *k != "unspecified")
        .unwrap_or("point");
    let mut text = kind.to_owned();
    if let Some(time) = &p.time {
        text.push(' ');
        text.push_str(time);
    }
    if p.disks_total > 0 {
        text.push_str(&format!(" ({}/{} disks)", p.disks_covered, p.disks_total));
    }
    text
}

fn problem(v: &VmReport) -> String {
    match &v.error {
        Some(e) => error_text(&e.code, &e.message, &e.recommended_action),
        None => v.reason.clone(),
    }
}

/// `[CODE] message — what to do`: an ASR error on one line.
pub fn error_text(code: &str, message: &str, action: &str) -> String {
    if action.is_empty() { format!("[{code}] {message}") } else { format!("[{code}] {message} — {action}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_cli::estimate::Clock;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (Some(50.0), Some(90.0), Some(99.0), Some(100.0)));
        assert_eq!(percentiles(vec![]).p50, None);
        assert_eq!(percentiles(vec![7.0]).p99, Some(7.0));
    }

    #[test]
    fn a_plan_over_several_vaults_is_summed_up_per_subscription_and_vault() {
        let (s1, s2) = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002");
        let vault = |sub: &str, name: &str| {
            format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/{name}")
        };
        let (a, b, c) = (vault(s1, "tern-vault"), vault(s1, "tern-vault-2"), vault(s2, "tern-vault"));
        let vm = |name: &str, vault: &str, state: VmState, rto: Option<i64>| tern_proto::VmStatus {
            vm: Some(tern_proto::VmRef { name: name.into(), vault_id: vault.into(), ..Default::default() }),
            state: state as i32,
            rto: rto.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            ..Default::default()
        };
        let plan = Plan {
            plan_id: "p".into(),
            spec: Some(tern_proto::PlanSpec { vault_id: a.clone(), ..Default::default() }),
            vms: vec![
                vm("a1", &a, VmState::Succeeded, Some(100)),
                vm("c1", &c, VmState::Failed, None),
                vm("a2", &a, VmState::Succeeded, Some(300)),
                vm("b1", &b, VmState::Skipped, None),
                vm("a3", &a, VmState::Succeeded, Some(200)),
                vm("c2", &c, VmState::Succeeded, Some(50)),
            ],
            ..Default::default()
        };
        let report = Report::build(&plan, &[]);
        let subs: Vec<&str> = report.subscriptions.iter().map(|s| s.subscription_id.as_str()).collect();
        assert_eq!(subs, [s1, s2], "in the plan's order");
        let first = &report.subscriptions[0];
        assert_eq!((first.counts.total, first.counts.succeeded, first.counts.skipped), (4, 3, 1));
        assert_eq!((first.rto_s.p50, first.rto_s.max), (Some(200.0), Some(300.0)));
        let names: Vec<&str> = first.vaults.iter().map(|v| v.vault.as_str()).collect();
        assert_eq!(names, ["000000000001/tern-vault", "tern-vault-2"], "a name in two subscriptions is told apart");
        assert_eq!(first.vaults[1].counts.skipped, 1);
        assert_eq!(first.vaults[1].rto_s.p50, None);
        let second = &report.subscriptions[1];
        assert_eq!((second.counts.failed, second.counts.succeeded, second.rto_s.max), (1, 1, Some(50.0)));
        let c1 = report.vms.iter().find(|v| v.name == "c1").unwrap();
        assert_eq!((c1.vault_id.as_str(), c1.subscription_id.as_str()), (c.as_str(), s2));
        // Every form shows the groups; the summary too, with more than one vault.
        let md = report.markdown();
        assert!(md.contains("| Vaults | 3 vaults in 2 subscriptions |"), "{md}");
        assert!(md.contains(&format!("| `{s1}` | all 2 vaults | 4 | 3 | 0 | 1 |")), "{md}");
        assert!(md.contains("| c1 | 000000000002/tern-vault |"), "{md}");
        let html = report.html();
        assert!(html.contains("<table id=\"vaults\">") && html.contains("<td>tern-vault-2</td>"), "{html}");
        let summary = report.summary();
        assert!(summary.contains("tern-vault-2") && summary.contains("RTO p50 3m20s  max 5m00s"), "{summary}");
        // One vault: one group, and no per-vault lines in the summary.
        let single = Plan { vms: plan.vms[..1].to_vec(), ..plan.clone() };
        let report = Report::build(&single, &[]);
        assert_eq!((report.subscriptions.len(), report.vault_count()), (1, 1));
        assert_eq!(report.subscriptions[0].vaults[0].vault, "tern-vault");
        assert!(!report.summary().contains("tern-vault"), "{}", report.summary());
        assert!(report.markdown().contains(&format!("| Vault | `{a}` |")));
    }

    /// Plan time: seconds after the plan was created.
    fn at(t: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: 1_800_000_000 + t, nanos: 0 })
    }

    /// A phase of a VM, as the workers report it: started at `from`, succeeded at `to`.
    fn ran(vm: &str, phase: Phase, from: i64, to: i64) -> [ReceivedEvent; 2] {
        let event = |outcome: Outcome, t: i64| ReceivedEvent {
            event: tern_proto::Event {
                time: at(t),
                body: Some(event::Body::Vm(tern_proto::VmEvent {
                    vm: Some(tern_proto::VmRef { name: vm.into(), ..Default::default() }),
                    phase: phase as i32,
                    outcome: outcome as i32,
                    attempt: 1,
                    ..Default::default()
                })),
                ..Default::default()
            },
            attributes: None,
            subject: String::new(),
            stream_sequence: 0,
            trace_context: Default::default(),
        };
        [event(Outcome::Started, from), event(Outcome::Succeeded, to)]
    }

    /// A finished failback of two VMs in two waves (the first named `db<1>`), a third VM
    /// blocked in preflight, and earlier plans' job durations: failover 5 min, commit 1 min,
    /// reprotect 10 min, cleanup none.
    fn finished_failback() -> (Plan, Vec<ReceivedEvent>, Basis) {
        let vault = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v";
        let vm = |name: &str, wave: u32, state: VmState, ran: bool| tern_proto::VmStatus {
            vm: Some(tern_proto::VmRef { name: name.into(), vault_id: vault.into(), ..Default::default() }),
            state: state as i32,
            wave,
            phase_durations: if ran {
                [("failover", 290), ("commit", 60)]
                    .into_iter()
                    .map(|(p, seconds)| (p.to_owned(), prost_types::Duration { seconds, nanos: 0 }))
                    .collect()
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let plan = Plan {
            plan_id: "p-forecast".into(),
            state: PlanState::Completed as i32,
            spec: Some(tern_proto::PlanSpec {
                vault_id: vault.into(),
                waves: vec![tern_proto::Wave {
                    name: "db<1>".into(),
                    vm_names: vec!["vm-1".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            created_at: at(0),
            finished_at: at(1400),
            vms: vec![
                vm("vm-1", 0, VmState::Succeeded, true),
                vm("vm-2", 1, VmState::Succeeded, true),
                vm("vm-3", 1, VmState::Skipped, false),
            ],
            ..Default::default()
        };
        let events = [
            ran("vm-1", Phase::Failover, 0, 290),
            ran("vm-1", Phase::Commit, 290, 350),
            ran("vm-1", Phase::Reprotect, 350, 950),
            ran("vm-2", Phase::Failover, 300, 620),
            ran("vm-2", Phase::Commit, 620, 680),
            ran("vm-2", Phase::Reprotect, 680, 1400),
        ]
        .into_iter()
        .flatten()
        .collect();
        let history = tern_cli::estimate::History {
            plans: 1,
            vms: 10,
            medians: [("failover", 300.0), ("commit", 60.0), ("reprotect", 600.0), ("cleanup", 0.0)]
                .into_iter()
                .map(|(p, s)| (p.to_owned(), s))
                .collect(),
        };
        let basis = Basis {
            budget: Some(tern_asr::BudgetConfig::default()),
            history,
            clock: Clock { poll_interval_secs: 30.0, time_compression: 1.0 },
        };
        (plan, events, basis)
    }

    #[test]
    fn the_report_lists_each_gate_with_its_timing_and_who_decided_it_why() {
        let (mut plan, events, _) = finished_failback();
        let approval = tern_proto::GateStep {
            kind: Some(tern_proto::gate_step::Kind::Approval(tern_proto::ApprovalGate {})),
            ..Default::default()
        };
        plan.spec.as_mut().unwrap().waves[0].before = vec![approval];
        plan.gates = vec![tern_proto::GateStatus {
            wave: 0,
            step: 0,
            state: tern_proto::GateState::Passed as i32,
            started_at: Some(prost_types::Timestamp { seconds: 100, nanos: 0 }),
            ended_at: Some(prost_types::Timestamp { seconds: 400, nanos: 0 }),
            by: "ann".into(),
            reason: "db team ready".into(),
            attempt: 2,
            ..Default::default()
        }];
        let report = Report::build(&plan, &events);
        let md = report.markdown();
        assert!(md.contains("## Gates"), "{md}");
        assert!(md.contains("| db<1> | before 0 | approval #1 | passed (attempt 2) |"), "{md}");
        assert!(md.contains("| 5m00s | ann | db team ready |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&report.render(ReportFormat::Json).unwrap()).unwrap();
        assert_eq!(json["gates"][0]["waited_s"], 300.0, "{json}");
        assert_eq!(json["gates"][0]["by"], "ann", "{json}");
    }

    #[test]
    fn a_finished_plan_shows_its_forecast_beside_what_it_took() {
        let (plan, events, basis) = finished_failback();
        let report = Report::build(&plan, &events).with_forecast(&plan, Ok(basis));
        let f = report.forecast.as_ref().unwrap_or_else(|| panic!("a forecast: {:?}", report.no_forecast));
        // The VMs that ran, in their waves: vm-2 fails over once vm-1 has, and the plan ends
        // with vm-2's reprotect: 5 + 5 + 1 + 10 min. It took 1,400 s: 10 % less was forecast.
        assert_eq!(f.vms, 2, "the VM blocked in preflight is left out");
        assert_eq!(f.makespan_s, forecast::Pair { forecast: Some(1260.0), actual: Some(1400.0) });
        assert!((f.makespan_error_pct.unwrap() + 10.0).abs() < 1e-9, "{:?}", f.makespan_error_pct);
        assert_eq!(f.waves[0].failover_end_s, forecast::Pair { forecast: Some(300.0), actual: Some(290.0) });
        assert_eq!(f.waves[1].failover_end_s, forecast::Pair { forecast: Some(600.0), actual: Some(620.0) });
        // RTO on both sides runs to the commit's end, not the failover's duration the planner reports.
        let rto = f.rto_s.as_ref().unwrap();
        assert_eq!(
            (rto.p50, rto.max, rto.committed),
            (
                forecast::Pair { forecast: Some(360.0), actual: Some(350.0) },
                forecast::Pair { forecast: Some(660.0), actual: Some(680.0) },
                2
            )
        );
        assert!(f.durations_source.starts_with("medians of 1 earlier plan"), "{}", f.durations_source);
        assert!(f.binding.what.contains("reprotect"), "{:?}", f.binding);

        let md = report.markdown();
        assert!(md.contains("## Forecast beside actual"), "{md}");
        assert!(md.contains("| Makespan | 21m00s | 23m20s | -10 % |"), "{md}");
        assert!(md.contains("| RTO max (accepted → committed) | 11m00s | 11m20s |  |"), "{md}");
        assert!(md.contains("| db<1>: failovers end | 5m00s | 4m50s |  |"), "{md}");
        assert!(md.contains(&format!("- Binding: {} (48 % of the critical path)", f.binding.what)), "{md}");
        assert!(md.contains("Note: 1 VM skipped before it started is left out"), "{md}");
        assert!(md.contains("| RTO (failover start → VM running) |"), "the planner's RTO says what it is: {md}");
        let html = report.html();
        assert!(html.contains("<table id=\"forecast\">"), "{html}");
        assert!(html.contains("<td>db&#60;1&#62;: failovers end</td>") && !html.contains("db<1>"), "escaped: {html}");
        let json: serde_json::Value = serde_json::from_str(&report.render(ReportFormat::Json).unwrap()).unwrap();
        assert_eq!(json["forecast"]["makespan_s"]["forecast"], 1260.0, "{json}");
        assert_eq!(json["forecast"]["makespan_s"]["actual"], 1400.0, "{json}");
        assert!(json.get("no_forecast").is_none(), "{json}");
    }

    #[test]
    fn a_drill_has_no_forecast_and_says_why() {
        let (mut plan, events, basis) = finished_failback();
        plan.spec.as_mut().unwrap().mode = tern_proto::PlanMode::Drill as i32;
        let report = Report::build(&plan, &events).with_forecast(&plan, Ok(basis));
        assert!(report.forecast.is_none());
        let md = report.markdown();
        assert!(
            md.contains("No forecast: tern plan estimate forecasts failback plans; a drill plan is not modelled\n"),
            "{md}"
        );
        assert!(!md.contains("| Forecast | Actual |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&report.render(ReportFormat::Json).unwrap()).unwrap();
        assert!(json.get("forecast").is_none(), "{json}");
        assert!(json["no_forecast"].as_str().is_some_and(|w| w.contains("drill")), "{json}");
        assert!(report.html().contains("No forecast: tern plan estimate forecasts failback plans"));
        // What the forecast needs could not be read: the report says so and goes on.
        let report = Report::build(&plan, &events).with_forecast(&plan, Err("no planner".into()));
        assert!(report.markdown().contains("No forecast: no planner"));
        // Without a forecast asked for (`plan watch`), no section at all.
        assert!(!Report::build(&plan, &events).markdown().contains("Forecast"));
    }
}

/// `tern report`'s formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReportFormat {
    /// Markdown, for a ticket or a chat.
    #[default]
    Md,
    /// One self-contained HTML page with a timeline per wave.
    Html,
    /// Everything, for scripts.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The plan's id.
    plan_id: String,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: ReportFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

/// The report of a plan as it stands: the plan from the planner, its events from the bus.
pub async fn fetch(stack: &crate::plan::Stack, plan_id: &str) -> anyhow::Result<Report> {
    let (_, plan, events) = read(stack, plan_id).await?;
    Ok(Report::build(&plan, &events))
}

/// The plan from the planner (and the client that asked), its events from the bus.
async fn read(
    stack: &crate::plan::Stack,
    plan_id: &str,
) -> anyhow::Result<(tern_proto::auth::Client, Plan, Vec<ReceivedEvent>)> {
    let mut grpc = stack.client().await?;
    let plan = grpc
        .get_plan(tern_proto::GetPlanRequest { plan_id: plan_id.to_owned() })
        .await
        .map_err(crate::plan::status)?
        .into_inner();
    let bus = crate::events::bus(stack).await?;
    let events = crate::events::read_all(&bus, &tern_bus::EventFilter::plan(plan_id)).await?;
    Ok((grpc, plan, events))
}

/// What the forecast of `plan` needs besides the plan, as `tern plan estimate` reads it — the
/// budget, and job durations of the plans that ended before this one was created — or why it
/// cannot be had.
async fn basis(
    target: &crate::plan::Target,
    stack: &crate::plan::Stack,
    grpc: &mut tern_proto::auth::Client,
    plan: &Plan,
) -> Result<Basis, String> {
    let budget = target.budget().map_err(|e| format!("{e:#}"))?;
    let history = crate::plan::history(grpc, plan.created_at)
        .await
        .map_err(|e| format!("earlier plans' job durations could not be read: {e:#}"))?;
    Ok(Basis { budget, history, clock: stack.clock })
}

impl Report {
    pub fn render(&self, format: ReportFormat) -> anyhow::Result<String> {
        Ok(match format {
            ReportFormat::Md => self.markdown(),
            ReportFormat::Html => self.html(),
            ReportFormat::Json => {
                format!("{}\n", serde_json::to_string_pretty(&output::queried(&serde_json::to_value(self)?)?)?)
            }
        })
    }
}

pub async fn run(target: &crate::plan::Target, args: ReportArgs) -> anyhow::Result<u8> {
    let stack = target.resolve()?;
    let (mut grpc, plan, events) = read(&stack, &args.plan_id).await?;
    let basis = basis(target, &stack, &mut grpc, &plan).await;
    let report = Report::build(&plan, &events).with_forecast(&plan, basis);
    let text = report.render(args.output)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(0)
}
