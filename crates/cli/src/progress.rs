//! Live progress of a plan: a bar per phase with counts, an ETA, and failures listed as they
//! happen. On a terminal the bars are indicatif's, redrawn in place, with the news printed above
//! them; elsewhere (a pipe, CI) a line is printed when something changed, at most every few
//! seconds, so logs stay short. What counts as done in a phase, and the ETA over every phase's
//! steps, are Tern's own (`rows`, `eta`): indicatif only draws them.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tern_proto::{GateState, Phase, Plan, PlanMode, VmState};

use crate::output::{Paint, human_secs};
use crate::plan::state_word;
use crate::report::{group_by_reason, name_list};

const PIPE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Progress {
    paint: Paint,
    show: bool,
    tty: bool,
    /// The bars, once the first update said which phases the plan runs (terminal only).
    bars: Option<Bars>,
    reported: HashSet<String>,
    started: Instant,
    /// Phase-steps done when watching began (a watch may attach mid-plan).
    done_at_start: Option<usize>,
    last_line: String,
    last_print: Option<Instant>,
}

/// A headline and one bar per phase, drawn together.
#[derive(Debug)]
struct Bars {
    multi: MultiProgress,
    headline: ProgressBar,
    phases: Vec<ProgressBar>,
}

impl Bars {
    fn new(paint: Paint, rows: &[Row]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let text = ProgressStyle::with_template("{msg}").expect("a valid template");
        let headline = multi.add(ProgressBar::new(0).with_style(text));
        // Colour only when `Paint` would (NO_COLOR, a terminal): the template says it or not.
        let bar = if paint.is_on() { "{bar:30.green/dim}" } else { "{bar:30}" };
        let style = ProgressStyle::with_template(&format!("  {{prefix:<10}} {bar} {{pos:>5}}/{{len:<5}}{{msg}}"))
            .expect("a valid template")
            .progress_chars("█░");
        let phases = rows
            .iter()
            .map(|r| multi.add(ProgressBar::new(r.of as u64).with_style(style.clone()).with_prefix(r.phase.slug())))
            .collect();
        Self { multi, headline, phases }
    }
}

/// One phase's numbers.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    phase: Phase,
    done: usize,
    running: usize,
    failed: usize,
    of: usize,
}

fn phases(plan: &Plan) -> Vec<Phase> {
    let spec = plan.spec.clone().unwrap_or_default();
    if spec.mode == PlanMode::Drill as i32 {
        return vec![Phase::Drill];
    }
    let p = spec.phases.unwrap_or_default();
    [
        (Phase::Failover, p.failover),
        (Phase::Commit, p.commit),
        (Phase::Reprotect, p.reprotect),
        (Phase::Cleanup, p.cleanup),
    ]
    .into_iter()
    .filter(|(_, on)| on.unwrap_or(true))
    .map(|(phase, _)| phase)
    .collect()
}

fn rows(plan: &Plan) -> Vec<Row> {
    let order = phases(plan);
    let rank = |p: i32| order.iter().position(|o| *o as i32 == p);
    // The VMs that run: a VM skipped before any phase ran (blocked in preflight, or left when
    // the plan halted) has no bar to fill.
    let runs: Vec<_> =
        plan.vms.iter().filter(|v| v.state != VmState::Skipped as i32 || !v.phase_durations.is_empty()).collect();
    order
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let mut row = Row { phase: *phase, done: 0, running: 0, failed: 0, of: runs.len() };
            for v in &runs {
                let at = rank(v.phase);
                let state = VmState::try_from(v.state).unwrap_or(VmState::Unspecified);
                match (at, state) {
                    (_, VmState::Succeeded) => row.done += 1,
                    (Some(a), _) if a > i => row.done += 1,
                    (Some(a), VmState::Running) if a == i => row.running += 1,
                    (Some(a), VmState::Failed) if a == i => row.failed += 1,
                    _ => {}
                }
            }
            row
        })
        .collect()
}

impl Progress {
    pub fn new(paint: Paint, show: bool) -> Self {
        Self {
            paint,
            show,
            tty: std::io::stdout().is_terminal(),
            bars: None,
            reported: HashSet::new(),
            started: Instant::now(),
            done_at_start: None,
            last_line: String::new(),
            last_print: None,
        }
    }

    pub fn update(&mut self, plan: &Plan) {
        if !self.show {
            return;
        }
        let rows = rows(plan);
        let news = self.news(plan);
        if self.tty {
            let headline = self.headline(plan, &rows);
            let paint = self.paint;
            let bars = self.bars.get_or_insert_with(|| Bars::new(paint, &rows));
            for line in news {
                // Above the bars, which indicatif draws again below it.
                let _ = bars.multi.println(line);
            }
            bars.headline.set_message(headline);
            for (bar, r) in bars.phases.iter().zip(&rows) {
                bar.set_length(r.of as u64);
                bar.set_position(r.done as u64);
                bar.set_message(match (r.running, r.failed) {
                    (0, 0) => String::new(),
                    (n, 0) => format!("  {n} running"),
                    (0, f) => format!("  {}", paint.red(&format!("{f} failed"))),
                    (n, f) => format!("  {n} running, {}", paint.red(&format!("{f} failed"))),
                });
            }
        } else {
            let mut out = std::io::stdout().lock();
            for line in &news {
                let _ = writeln!(out, "{line}");
            }
            let line = self.compact(plan, &rows);
            let due = self.last_print.is_none_or(|t| t.elapsed() >= PIPE_EVERY);
            if line != self.last_line && due {
                let _ = writeln!(out, "{line}");
                self.last_line = line;
                self.last_print = Some(Instant::now());
            }
            let _ = out.flush();
        }
    }

    /// The final state, printed once more so a piped log ends with it; the bars stay on screen.
    pub fn finish(&mut self, plan: &Plan) {
        if !self.show {
            return;
        }
        self.last_print = None;
        self.last_line.clear();
        self.update(plan);
        if let Some(bars) = &self.bars {
            bars.headline.abandon();
            bars.phases.iter().for_each(ProgressBar::abandon);
        }
    }

    /// VMs that failed or were skipped since the last update, one line each.
    fn news(&mut self, plan: &Plan) -> Vec<String> {
        let mut lines = Vec::new();
        let mut skipped = Vec::new();
        let mut warned = Vec::new();
        for v in &plan.vms {
            let state = VmState::try_from(v.state).unwrap_or(VmState::Unspecified);
            let name = v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or_default();
            if let Some(warning) = v.reason.strip_prefix("preflight warning: ")
                && self.reported.insert(format!("{name}/warning"))
            {
                warned.push((name, warning));
            }
            if !matches!(state, VmState::Failed | VmState::Skipped) {
                continue;
            }
            if !self.reported.insert(format!("{name}/{}/{}", v.state, v.attempt)) {
                continue;
            }
            if state == VmState::Skipped {
                skipped.push((name, v.reason.as_str()));
                continue;
            }
            let phase = Phase::try_from(v.phase).unwrap_or(Phase::Unspecified).slug();
            let what = match &v.error {
                Some(e) => crate::report::error_text(&e.code, &e.message, &e.recommended_action),
                None => v.reason.clone(),
            };
            lines.push(format!("{} {name} {phase} failed: {what}", self.paint.red("✗")));
        }
        for (names, warning) in group_by_reason(warned.into_iter()) {
            lines.push(format!("{} {} warning: {warning}", self.paint.yellow("!"), name_list(&names)));
        }
        for (names, reason) in group_by_reason(skipped.into_iter()) {
            lines.push(format!("{} {} skipped: {reason}", self.paint.yellow("–"), name_list(&names)));
        }
        for g in &plan.gates {
            // A hook's failed try is news too (its reason says why; the next try follows).
            let key = format!("gate/{}/{}/{}/{}/{}/{}", g.wave, g.after, g.step, g.attempt, g.state, g.reason);
            if self.reported.insert(key) {
                let (mark, line) = gate_line(plan, g);
                let mark = match g.state() {
                    GateState::Waiting => self.paint.yellow(mark),
                    GateState::Passed => mark.to_owned(),
                    _ => self.paint.red(mark),
                };
                lines.push(format!("{mark} {line}"));
            }
        }
        lines
    }

    /// Remaining time from the pace of phase steps since watching began.
    fn eta(&mut self, plan: &Plan, rows: &[Row]) -> Option<Duration> {
        if plan.finished_at.is_some() {
            return None;
        }
        let done: usize = rows.iter().map(|r| r.done + r.failed).sum();
        let total: usize = rows.iter().map(|r| r.of).sum();
        let base = *self.done_at_start.get_or_insert(done);
        let elapsed = self.started.elapsed().as_secs_f64();
        if done <= base || elapsed < 1.0 {
            return None;
        }
        let rate = (done - base) as f64 / elapsed;
        Some(Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate))
    }

    /// The line above the bars: plan, wave, state, and the ETA or the time taken.
    fn headline(&mut self, plan: &Plan, rows: &[Row]) -> String {
        let eta = self.eta(plan, rows);
        let elapsed = human_secs(self.started.elapsed().as_secs_f64());
        format!(
            "{} {}  wave {}  {}  {}",
            self.paint.bold("plan"),
            plan.plan_id,
            plan.current_wave + 1,
            state_word(plan.state),
            match eta {
                Some(eta) => format!("ETA {}", human_secs(eta.as_secs_f64())),
                None if plan.finished_at.is_some() => format!("ended after {elapsed}"),
                None => format!("elapsed {elapsed}"),
            }
        )
    }

    fn compact(&mut self, plan: &Plan, rows: &[Row]) -> String {
        let eta = match self.eta(plan, rows) {
            Some(e) => format!("  ETA {}", human_secs(e.as_secs_f64())),
            None => String::new(),
        };
        let parts: Vec<String> = rows
            .iter()
            .map(|r| {
                let failed = if r.failed > 0 { format!(" ({} failed)", r.failed) } else { String::new() };
                format!("{} {}/{}{failed}", r.phase.slug(), r.done, r.of)
            })
            .collect();
        format!("{:<22} {}{eta}", state_word(plan.state), parts.join("  "))
    }
}

/// One gate step's news: what it is, and for a waiting approval the commands that release it.
pub fn gate_line(plan: &Plan, g: &tern_proto::GateStatus) -> (&'static str, String) {
    let map = plan.spec_waves();
    let step = plan.gate_steps(&map, g.wave, g.after).get(g.step as usize);
    let name = step.map(|s| s.display_name(g.step as usize)).unwrap_or_else(|| "gate".into());
    let wave = map
        .get(g.wave as usize)
        .copied()
        .flatten()
        .and_then(|s| plan.spec.as_ref()?.waves.get(s))
        .map(|w| w.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| (g.wave + 1).to_string());
    let side = if g.after { "after" } else { "before" };
    let what = format!("gate {name} {side} wave {wave}");
    let why = if g.reason.is_empty() { String::new() } else { format!(": {}", g.reason) };
    match g.state() {
        GateState::Waiting => match step.and_then(|s| s.kind.as_ref()) {
            Some(tern_proto::gate_step::Kind::Wait(w)) => {
                let d = w.duration.unwrap_or_default();
                ("⏸", format!("{what} waits {}", human_secs(d.seconds as f64)))
            }
            Some(tern_proto::gate_step::Kind::Hook(h)) if g.reason.is_empty() => {
                ("⏸", format!("{what} calls {}", h.subject))
            }
            Some(tern_proto::gate_step::Kind::Hook(h)) => {
                ("⏸", format!("{what} calls {}, tries again after {}", h.subject, g.reason))
            }
            _ => {
                let about = step.map(|s| s.description.as_str()).filter(|d| !d.is_empty());
                let release = format!("tern plan approve {} --wave {wave} --step {}", plan.plan_id, g.step);
                let about = about.map(|d| format!(" ({d})")).unwrap_or_default();
                ("⏸", format!("{what} waits for approval{about}: `{release}` (or `tern plan reject …`)"))
            }
        },
        GateState::Passed if g.by.is_empty() => ("✓", format!("{what} passed{why}")),
        GateState::Passed => ("✓", format!("{what} approved by {}{why}", g.by)),
        GateState::Rejected => ("✗", format!("{what} rejected by {}{why}", g.by)),
        GateState::Cancelled => ("–", format!("{what} no longer waits: the plan ended")),
        _ => ("✗", format!("{what} failed{why}; `tern plan retry {} --wave {wave}` tries it again", plan.plan_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{PlanSpec, VmRef, VmStatus};

    fn vm(phase: Phase, state: VmState) -> VmStatus {
        VmStatus {
            vm: Some(VmRef { name: format!("{phase:?}-{state:?}"), ..Default::default() }),
            phase: phase as i32,
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_vm_counts_as_done_in_every_phase_before_the_one_it_is_in() {
        let plan = Plan {
            spec: Some(PlanSpec::default()),
            vms: vec![
                vm(Phase::Reprotect, VmState::Running),
                vm(Phase::Failover, VmState::Failed),
                vm(Phase::Cleanup, VmState::Succeeded),
                vm(Phase::Unspecified, VmState::Pending),
                // Blocked in preflight: not part of the run.
                vm(Phase::Preflight, VmState::Skipped),
            ],
            ..Default::default()
        };
        let r = rows(&plan);
        let got: Vec<_> = r.iter().map(|r| (r.phase, r.done, r.running, r.failed, r.of)).collect();
        assert_eq!(
            got,
            [
                (Phase::Failover, 2, 0, 1, 4),
                (Phase::Commit, 2, 0, 0, 4),
                (Phase::Reprotect, 1, 1, 0, 4),
                (Phase::Cleanup, 1, 0, 0, 4)
            ]
        );
    }
}
