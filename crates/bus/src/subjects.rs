//! Subject names. Only this module spells them out; everything else asks it.
//!
//! ```text
//! tern.commands.<queue>.<plan>                  commands, work-queue stream TERN_COMMANDS
//! tern.events.<plan>.<phase>.<outcome>          VM phase events, stream TERN_EVENTS
//! tern.events.<plan>.plan.<kind>                plan-level events, stream TERN_EVENTS
//! tern.json.events.<plan>.<phase>.<outcome>     the same events as JSON (opt-in), TERN_EVENTS_JSON
//! tern.json.events.<plan>.plan.<kind>           the same plan events as JSON, TERN_EVENTS_JSON
//! tern.dlq.<consumer>                           dead letters, stream TERN_DLQ
//! tern.hooks.<name…>                            wave hook requests (core NATS request/reply, no stream)
//! ```
//!
//! External scripts depend on the `tern.commands.` and `tern.events.` prefixes: keep them.
//! The layout keeps NATS permissions short: the planner publishes `tern.commands.>`; the
//! failover worker consumes only its queue and publishes `tern.events.*.{failover,commit,drill}.>`.

use tern_proto::{Outcome, Phase, PlanEventKind};

use crate::BusError;

/// Prefix of every command subject.
pub const COMMANDS_PREFIX: &str = "tern.commands";
/// Prefix of every event subject.
pub const EVENTS_PREFIX: &str = "tern.events";
/// Prefix of the JSON mirror of every event subject: `tern.json.events.…` carries what
/// `tern.events.…` does, in protobuf's JSON mapping, when publishers have JSON events on.
pub const JSON_EVENTS_PREFIX: &str = "tern.json.events";
/// Prefix of every dead-letter subject.
pub const DLQ_PREFIX: &str = "tern.dlq";
/// Prefix of every hook subject: a plan's `hook` gate steps send their requests under it, and
/// hook runners (the `hooks` identity) may receive there and nowhere else.
pub const HOOKS_PREFIX: &str = "tern.hooks";
/// The longest hook subject a plan may name.
const LONGEST_HOOK_SUBJECT: usize = 200;

/// The `<phase>` token of plan-level events.
pub const PLAN_TOKEN: &str = "plan";

/// The three command queues, one per worker binary. Each is a non-overlapping subject space
/// of the work-queue stream, consumed by exactly one durable consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// Failover, commit and drill (`tern-failover`).
    Failover,
    /// Switch protection and sync (`tern-reprotect`).
    Reprotect,
    /// Cleanup of the region the VM left (`tern-cleanup`).
    Cleanup,
}

impl WorkQueue {
    /// Every queue.
    pub const ALL: [WorkQueue; 3] = [WorkQueue::Failover, WorkQueue::Reprotect, WorkQueue::Cleanup];

    /// The queue's name: its subject token and its durable consumer's name.
    pub fn name(self) -> &'static str {
        match self {
            WorkQueue::Failover => "failover",
            WorkQueue::Reprotect => "reprotect",
            WorkQueue::Cleanup => "cleanup",
        }
    }

    /// The queue that runs a phase, if any (preflight runs in the planner).
    pub fn for_phase(phase: Phase) -> Option<WorkQueue> {
        match phase {
            Phase::Failover | Phase::Commit | Phase::Drill => Some(WorkQueue::Failover),
            Phase::Reprotect => Some(WorkQueue::Reprotect),
            Phase::Cleanup => Some(WorkQueue::Cleanup),
            Phase::Preflight | Phase::Unspecified => None,
        }
    }

    /// `tern.commands.<queue>.>`: what the queue's consumer takes.
    pub fn filter(self) -> String {
        format!("{COMMANDS_PREFIX}.{}.>", self.name())
    }

    /// `tern.dlq.<queue>`: where its dead letters go.
    pub fn dlq_subject(self) -> String {
        dlq_subject(self.name())
    }
}

/// `tern.commands.<queue>.<plan>`.
pub fn command(queue: WorkQueue, plan_id: &str) -> Result<String, BusError> {
    token("plan_id", plan_id)?;
    Ok(format!("{COMMANDS_PREFIX}.{}.{plan_id}", queue.name()))
}

/// `tern.commands.*.<plan>`: every queued command of a plan (used to purge on cancel).
pub fn plan_commands(plan_id: &str) -> Result<String, BusError> {
    token("plan_id", plan_id)?;
    Ok(format!("{COMMANDS_PREFIX}.*.{plan_id}"))
}

/// `tern.events.<plan>.<phase>.<outcome>`.
pub fn vm_event(plan_id: &str, phase: Phase, outcome: Outcome) -> Result<String, BusError> {
    token("plan_id", plan_id)?;
    Ok(format!("{EVENTS_PREFIX}.{plan_id}.{}.{}", phase.slug(), outcome.slug()))
}

/// `tern.events.<plan>.plan.<kind>`.
pub fn plan_event(plan_id: &str, kind: PlanEventKind) -> Result<String, BusError> {
    token("plan_id", plan_id)?;
    Ok(format!("{EVENTS_PREFIX}.{plan_id}.{PLAN_TOKEN}.{}", kind.slug()))
}

/// The JSON mirror of an event subject: `tern.events.<rest>` → `tern.json.events.<rest>`.
pub fn json_mirror(event_subject: &str) -> Result<String, BusError> {
    event_subject
        .strip_prefix(EVENTS_PREFIX)
        .filter(|rest| rest.starts_with('.'))
        .map(|rest| format!("{JSON_EVENTS_PREFIX}{rest}"))
        .ok_or_else(|| BusError::InvalidMessage(format!("{event_subject} is not an event subject")))
}

/// Checks a hook subject a plan names: `tern.hooks.` and one or more tokens of ASCII letters,
/// digits, `-` and `_` (no wildcards: a request goes to one subject). Says what is wrong.
pub fn hook_subject(subject: &str) -> Result<(), String> {
    let Some(rest) = subject.strip_prefix(HOOKS_PREFIX).and_then(|r| r.strip_prefix('.')) else {
        return Err(format!("{subject:?} is not under {HOOKS_PREFIX}.: hook runners may answer only there"));
    };
    if subject.len() > LONGEST_HOOK_SUBJECT {
        return Err(format!("{subject:?} is longer than {LONGEST_HOOK_SUBJECT} characters"));
    }
    for token in rest.split('.') {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!(
                "{subject:?}: token {token:?} must be letters, digits, `-` or `_` (no wildcards, no empty tokens)"
            ));
        }
    }
    Ok(())
}

/// `tern.dlq.<consumer>`.
pub fn dlq_subject(consumer: &str) -> String {
    format!("{DLQ_PREFIX}.{consumer}")
}

/// The plan a command or event subject names (`tern.commands.<queue>.<plan>`,
/// `tern.events.<plan>.…`), if it is one.
pub fn plan_of(subject: &str) -> Option<&str> {
    let mut tokens = subject.split('.');
    let plan = match (tokens.next(), tokens.next()) {
        (Some("tern"), Some("commands")) => tokens.nth(1),
        (Some("tern"), Some("events")) => tokens.next(),
        (Some("tern"), Some("json")) if tokens.next() == Some("events") => tokens.next(),
        _ => None,
    };
    plan.filter(|p| !p.is_empty())
}

/// Which events a reader wants. Unset fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this plan.
    pub plan_id: Option<String>,
    /// Only this phase token: a [`Phase::slug`] or [`PLAN_TOKEN`] for plan-level events.
    pub phase: Option<String>,
    /// Only this outcome token: an [`Outcome::slug`] or a [`PlanEventKind::slug`].
    pub outcome: Option<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every event of one plan.
    pub fn plan(plan_id: impl Into<String>) -> Self {
        Self { plan_id: Some(plan_id.into()), ..Self::default() }
    }

    /// The NATS subject filter, with `*` for unset tokens.
    pub fn subject(&self) -> Result<String, BusError> {
        let part = |name: &'static str, value: &Option<String>| -> Result<String, BusError> {
            match value {
                Some(v) => token(name, v).map(|()| v.clone()),
                None => Ok("*".to_owned()),
            }
        };
        if self.plan_id.is_none() && self.phase.is_none() && self.outcome.is_none() {
            return Ok(format!("{EVENTS_PREFIX}.>"));
        }
        Ok(format!(
            "{EVENTS_PREFIX}.{}.{}.{}",
            part("plan_id", &self.plan_id)?,
            part("phase", &self.phase)?,
            part("outcome", &self.outcome)?
        ))
    }
}

/// Checks that `value` can be one subject token: non-empty, no `.`, `*`, `>` or whitespace.
pub fn token(field: &'static str, value: &str) -> Result<(), BusError> {
    let bad = value.is_empty()
        || value.len() > 256
        || value.chars().any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control());
    if bad {
        return Err(BusError::InvalidMessage(format!(
            "{field} {value:?} cannot be a subject token: it must be 1-256 characters without '.', '*', '>' or whitespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_layout() {
        assert_eq!(command(WorkQueue::Reprotect, "p1").unwrap(), "tern.commands.reprotect.p1");
        assert_eq!(vm_event("p1", Phase::Failover, Outcome::Succeeded).unwrap(), "tern.events.p1.failover.succeeded");
        assert_eq!(plan_event("p1", PlanEventKind::WaveStarted).unwrap(), "tern.events.p1.plan.wave_started");
        assert_eq!(WorkQueue::Cleanup.filter(), "tern.commands.cleanup.>");
        assert_eq!(WorkQueue::Failover.dlq_subject(), "tern.dlq.failover");
        assert_eq!(plan_of("tern.commands.reprotect.p1"), Some("p1"));
        assert_eq!(plan_of("tern.events.p1.plan.accepted"), Some("p1"));
        assert_eq!(plan_of("tern.dlq.failover"), None);
        let mirror = json_mirror("tern.events.p1.failover.succeeded").unwrap();
        assert_eq!(mirror, "tern.json.events.p1.failover.succeeded");
        assert_eq!(plan_of(&mirror), Some("p1"));
        assert!(json_mirror("tern.eventsx.p1").is_err() && json_mirror("tern.commands.failover.p1").is_err());
    }

    #[test]
    fn filters_use_wildcards_for_unset_tokens() {
        assert_eq!(EventFilter::all().subject().unwrap(), "tern.events.>");
        assert_eq!(EventFilter::plan("p1").subject().unwrap(), "tern.events.p1.*.*");
        let f = EventFilter { phase: Some("reprotect".into()), outcome: Some("failed".into()), ..Default::default() };
        assert_eq!(f.subject().unwrap(), "tern.events.*.reprotect.failed");
    }

    #[test]
    fn a_plan_id_that_would_break_the_subject_is_rejected_by_name() {
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            let err = command(WorkQueue::Failover, bad).unwrap_err().to_string();
            assert!(err.contains("plan_id"), "{err}");
        }
    }

    #[test]
    fn every_phase_that_workers_run_has_a_queue() {
        assert_eq!(WorkQueue::for_phase(Phase::Commit), Some(WorkQueue::Failover));
        assert_eq!(WorkQueue::for_phase(Phase::Drill), Some(WorkQueue::Failover));
        assert_eq!(WorkQueue::for_phase(Phase::Preflight), None);
    }
}
