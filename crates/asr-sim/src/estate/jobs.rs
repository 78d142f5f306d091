//! Jobs: planning one as a timed task list, inserting it on the timeline, reading it (GET,
//! list, operation status, `Location`), and cancelling, restarting or resuming it.

use std::cmp::Reverse;

use serde_json::{Map, Value, json};

use super::{Accepted, Estate, JobFilter, Refusal, Step, TaskSpec};
use crate::clock::{self, SimTime};
use crate::faults::Operation;
use crate::item::{Item, ItemState};
use crate::job::{AsrFault, Effect, FinalResult, Job, JobState, TaskOutcome, TaskPlan};
use crate::wire::{ArmErrorDetail, FailoverInput, JobProperties, OperationStatus, Resource};

impl Estate {
    /// Plans a job for `item` whose tasks split `total` by the given fractions. A failure, if
    /// any, ends the job at the end of the task at `fail_at` (index).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_job(
        &mut self,
        item_key: &str,
        operation: Operation,
        scenario: &'static str,
        friendly: &'static str,
        start: SimTime,
        tasks: &[TaskSpec],
        failure: Option<(usize, AsrFault)>,
        effect: Effect,
        total: std::time::Duration,
    ) -> Job {
        let durations = self.cfg.effective_durations();
        let queue = durations.queueing.pick(self.guids.unit());
        let starts = start + queue;
        let mut t = starts;
        let mut planned = Vec::new();
        let mut ends = starts;
        let mut fail = None;
        for (i, (id, name, friendly, frac)) in tasks.iter().enumerate() {
            let d = total.mul_f64(*frac);
            let end = t + d;
            let outcome = match &failure {
                Some((k, f)) if *k == i => {
                    fail = Some(f.clone());
                    TaskOutcome::Failed(f.clone())
                }
                _ => TaskOutcome::Succeeded,
            };
            let id = if id.is_empty() { self.guids.fresh() } else { (*id).to_owned() };
            planned.push(TaskPlan {
                id,
                name: (*name).to_owned(),
                friendly: (*friendly).to_owned(),
                start: t,
                end,
                outcome,
            });
            t = end;
            ends = end;
            if fail.is_some() {
                break;
            }
        }
        let activity = self.activity();
        let item = self.items.get(item_key);
        let vm = item.map(|i| i.vm_name.clone()).unwrap_or_default();
        let target_id = item.map(|i| i.lifecycle_id.clone()).unwrap_or_default();
        let location_base = item.map(|i| i.id(&self.scope, &self.regions)).unwrap_or_else(|| self.scope.vault_id());
        let lifecycle = item.map(|i| i.lifecycle_id.clone()).unwrap_or_default();
        let affected = self.affected_objects(item);
        Job {
            name: self.guids.fresh(),
            scenario,
            friendly,
            operation,
            item: item.map(|_| item_key.to_owned()),
            plan: None,
            target_name: vm,
            target_id,
            target_type: "ProtectionEntity",
            activity,
            created: start,
            starts,
            ends,
            tasks: planned,
            failure: fail,
            with_information: false,
            cancelled_at: None,
            finished: false,
            effect,
            rehome_at: None,
            new_item_id: None,
            ir_end: None,
            failover_details: None,
            location_base,
            result: FinalResult::Item { lifecycle },
            children: vec![],
            affected,
        }
    }

    /// `affectedObjectDetails` of a job about `item`, shaped as ASR reports it.
    fn affected_objects(&self, item: Option<&Item>) -> Map<String, Value> {
        let Some(item) = item else { return Map::new() };
        let (p, r) = (&self.regions[item.primary], &self.regions[item.recovery()]);
        let v = json!({
            "primaryVmId": item.lifecycle_id, "primaryVmName": item.vm_name, "recoveryVmId": "", "recoveryVmName": item.vm_name,
            "protectionProfileId": crate::ids::guid_of(&[&item.lifecycle_id, "profile"]),
            "primaryCloudId": crate::ids::guid_of(&[&p.container]), "primaryCloudName": p.container,
            "recoveryCloudId": crate::ids::guid_of(&[&r.container]), "recoveryCloudName": r.container,
            "primaryVmmId": crate::ids::guid_of(&[&p.fabric]), "primaryVmmName": p.friendly,
            "recoveryVmmId": crate::ids::guid_of(&[&r.fabric]), "recoveryVmmName": r.friendly,
            "primaryFabricProviderId": "Azure", "recoveryFabricProviderId": "Azure",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A job a client's request started (counted in `/_sim/counters`).
    pub(super) fn insert_job(&mut self, mut job: Job) -> String {
        if self.cfg.faults.job_stuck(job.operation, &job.target_name) {
            stick(&mut job);
        }
        *self.counters.jobs.entry(job.operation.name()).or_default() += 1;
        self.insert_internal_job(job)
    }

    /// A job the estate starts itself (initial-replication completion): not counted.
    pub(super) fn insert_internal_job(&mut self, job: Job) -> String {
        let name = job.name.clone();
        // Re-homing is queued first so that, at equal times, it precedes the end.
        if let Some(at) = job.rehome_at {
            self.schedule(at, Step::Rehome(name.clone()));
        }
        self.schedule(job.ends, Step::End(name.clone()));
        self.seq += 1;
        self.job_order.insert((Reverse(job.created), Reverse(self.seq), name.clone()));
        self.active_jobs.insert(name.clone());
        self.jobs.insert(name.clone(), job);
        name
    }

    /// A job that already ended before the estate was seeded (its effects are in the seed).
    pub(super) fn insert_finished_job(&mut self, job: Job) {
        self.seq += 1;
        self.job_order.insert((Reverse(job.created), Reverse(self.seq), job.name.clone()));
        self.jobs.insert(job.name.clone(), job);
    }

    pub(super) fn fault_for(&self, op: Operation, vm: &str) -> Option<(usize, AsrFault)> {
        self.cfg.faults.failure_for(op, vm).map(|r| (0, AsrFault::from_code(&r.code, r.message.as_deref())))
    }

    /// Every job, oldest first.
    pub fn jobs_oldest_first(&self) -> impl Iterator<Item = &Job> {
        self.job_order.iter().rev().filter_map(|(_, _, n)| self.jobs.get(n))
    }

    fn render_job(&self, job: &Job) -> Resource<JobProperties> {
        let now = self.now();
        let children: Vec<(String, String, &'static str)> = if matches!(job.effect, Effect::Reprotect { .. }) {
            let state = if now >= job.ends {
                job.state(now).as_str()
            } else if now >= job.starts {
                "InProgress"
            } else {
                "NotStarted"
            };
            vec![(self.scope.job_id(&crate::ids::guid_of(&[&job.name, "EnableDr"])), job.target_name.clone(), state)]
        } else {
            vec![]
        };
        job.render(self.scope.job_id(&job.name), now, &children)
    }

    /// GET a job.
    pub fn get_job(&self, name: &str) -> Result<Resource<JobProperties>, Refusal> {
        self.jobs
            .get(&name.to_ascii_lowercase())
            .map(|j| self.render_job(j))
            .ok_or_else(|| Refusal::not_found("job", name))
    }

    /// A page of jobs, newest first, as summaries (`Job::render_summary`); jobs still in their
    /// placeholder window are left out (no recording shows a list in that moment: stingy).
    pub fn list_jobs(&self, filter: &JobFilter, skip: Option<&str>) -> (Vec<Resource<JobProperties>>, Option<String>) {
        let now = self.now();
        let mut out = Vec::new();
        let mut next = None;
        let skip_n: usize = skip.and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut matched = 0usize;
        let newest_first = !filter.only_active();
        let candidates: Box<dyn Iterator<Item = &Job>> = if filter.only_active() {
            Box::new(self.active_jobs.iter().filter_map(|n| self.jobs.get(n)))
        } else {
            Box::new(self.job_order.iter().filter_map(|(_, _, n)| self.jobs.get(n)))
        };
        for job in candidates {
            // Newest first: once a job started before the window, every later one did too (no
            // request scans the estate).
            if newest_first && filter.started_before_window(job) {
                break;
            }
            if job.is_placeholder(now) || !filter.matches(job, job.state(now), &self.regions, &self.items) {
                continue;
            }
            matched += 1;
            if matched <= skip_n {
                continue;
            }
            if out.len() == self.cfg.page_size {
                next = Some((skip_n + out.len()).to_string());
                break;
            }
            out.push(job.render_summary(self.scope.job_id(&job.name), now));
        }
        (out, next)
    }

    /// The `Azure-AsyncOperation` status of a job.
    pub fn operation_status(&self, name: &str, id: String) -> Result<OperationStatus, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("operation", name))?;
        let now = self.now();
        let state = job.state(now);
        Ok(OperationStatus {
            id,
            name: job.name.clone(),
            status: match state {
                JobState::NotStarted | JobState::InProgress => "InProgress",
                JobState::Succeeded => "Succeeded",
                JobState::Failed => "Failed",
                JobState::Cancelled => "Canceled",
            }
            .into(),
            start_time: Some(clock::format(job.created)),
            end_time: state.is_terminal().then(|| clock::format(job.ends.min(now))),
            error: job.failure.as_ref().filter(|_| state == JobState::Failed).map(|f| ArmErrorDetail {
                code: f.code.clone(),
                message: f.message.clone(),
                possible_causes: Some(f.possible_causes.clone()),
                recommended_action: Some(f.recommended_action.clone()),
                details: vec![],
            }),
        })
    }

    /// What a `Location` URL answers: still running, done (with the final resource), or failed.
    pub fn operation_result(&self, base: &str, name: &str) -> Result<OperationResult, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("operation", name))?;
        if !job.location_base.eq_ignore_ascii_case(base) {
            return Err(Refusal::not_found("operation", name));
        }
        let state = job.state(self.now());
        Ok(match state {
            JobState::NotStarted | JobState::InProgress => OperationResult::Running,
            JobState::Cancelled => OperationResult::Failed(Refusal::new(
                400,
                "OperationCanceled",
                format!("The job '{}' was cancelled.", job.name),
                "JobCancelled",
                "Start the operation again if it is still needed.",
            )),
            JobState::Failed => {
                let f = job.failure.clone().expect("failed jobs carry their fault");
                let mut r = Refusal::new(400, "BadRequest", f.message.clone(), &f.code, &f.recommended_action);
                r.body.error.details[0].possible_causes = Some(f.possible_causes);
                OperationResult::Failed(r)
            }
            JobState::Succeeded => match &job.result {
                FinalResult::Nothing => OperationResult::Done(None),
                FinalResult::Item { lifecycle } => {
                    let body = self
                        .by_lifecycle
                        .get(lifecycle)
                        .and_then(|k| self.items.get(k))
                        .map(|i| serde_json::to_value(self.render_item(i)).unwrap_or(Value::Null));
                    OperationResult::Done(body)
                }
                FinalResult::Container { region } => OperationResult::Done(Some(
                    serde_json::to_value(self.render_container(*region)).unwrap_or(Value::Null),
                )),
                FinalResult::Plan { name } => OperationResult::Done(
                    self.plans.get(name).map(|p| serde_json::to_value(self.render_plan(p)).unwrap_or(Value::Null)),
                ),
            },
        })
    }

    /// Cancels a running job: its effect never applies and the item is free again.
    pub fn cancel_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let now = self.now();
        let key = name.to_ascii_lowercase();
        let job = self.jobs.get_mut(&key).ok_or_else(|| Refusal::not_found("job", name))?;
        let state = job.state(now);
        if state.is_terminal() {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' is {} and cannot be cancelled.", state.as_str()),
                "JobNotCancellable",
                "Only a job that has not finished can be cancelled.",
            ));
        }
        if job.rehome_at.is_some_and(|at| at <= now) {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' has passed the point where it can be cancelled."),
                "JobNotCancellable",
                "Wait for the job to finish.",
            ));
        }
        job.cancelled_at = Some(now);
        job.finished = true;
        let item = job.item.clone();
        let plan = job.plan.clone();
        let ir_completion = matches!(job.effect, Effect::IrCompletion { .. });
        self.active_jobs.remove(&key);
        if ir_completion
            && let Some(item) = item.as_ref().and_then(|i| self.items.get_mut(i))
            && item.state == ItemState::InitialReplication
            && let Some(r) = item.replication.as_mut()
        {
            // Unverified: a cancelled completion leaves initial replication failed; a repair
            // finishes it.
            r.failed = Some(AsrFault {
                code: "JobCancelled".into(),
                message: format!("The job '{name}' that completes initial replication was cancelled."),
                possible_causes: "The job was cancelled.".into(),
                recommended_action: "Repair replication (resynchronize) to complete protection.".into(),
            });
        }
        if let Some(item) = item.and_then(|i| self.items.get_mut(&i))
            && item.busy.as_ref().is_some_and(|b| b.job == key)
        {
            item.busy = None;
        }
        if let Some(plan) = plan.and_then(|p| self.plans.get_mut(&p)) {
            plan.busy = None;
        }
        Ok(Accepted { job: key.clone(), location_base: self.scope.job_id(&key), item: None })
    }

    /// Restarts a failed or cancelled job by running its operation again.
    pub fn restart_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let now = self.now();
        let key = name.to_ascii_lowercase();
        let job = self.jobs.get(&key).ok_or_else(|| Refusal::not_found("job", name))?;
        if !matches!(job.state(now), JobState::Failed | JobState::Cancelled) {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' is {} and cannot be restarted.", job.state(now).as_str()),
                "JobNotRestartable",
                "Only a failed or cancelled job can be restarted.",
            ));
        }
        let (op, item) = (job.operation, job.item.clone());
        let item = item.ok_or_else(|| Refusal::bad_request("job", "only protected item jobs can be restarted"))?;
        let it = self.items.get(&item).ok_or_else(|| Refusal::not_found("replication protected item", &item))?;
        let r = &self.regions[it.primary];
        let (fabric, container, item_name) = (r.fabric.clone(), r.container.clone(), it.name.clone());
        match op {
            Operation::Failover => self.failover(&fabric, &container, &item_name, &FailoverInput::default()),
            Operation::Commit => self.commit(&fabric, &container, &item_name),
            Operation::TestFailover => self.test_failover(&fabric, &container, &item_name, &FailoverInput::default()),
            Operation::TestFailoverCleanup => self.test_failover_cleanup(&fabric, &container, &item_name),
            Operation::Repair => self.repair(&fabric, &container, &item_name),
            other => Err(Refusal::bad_request("job", format!("{} jobs cannot be restarted", other.name()))),
        }
    }

    /// Resumes a suspended job (only recovery plan manual actions suspend; none here).
    pub fn resume_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("job", name))?;
        Err(Refusal::new(
            400,
            "BadRequest",
            format!("The job '{}' is {} and not suspended.", job.name, job.state(self.now()).as_str()),
            "JobNotSuspended",
            "Only a job waiting on a manual action can be resumed.",
        ))
    }
}

/// What a `Location` URL answers.
#[derive(Clone, Debug, PartialEq)]
pub enum OperationResult {
    /// 202: still running.
    Running,
    /// 200 with the body, or 204 without.
    Done(Option<Value>),
    /// The operation failed.
    Failed(Refusal),
}

/// How far away "never" is for a stuck job: ten simulated years (days of real time even at the
/// highest time compression), kept finite so every date derived from it stays valid.
const NEVER: time::Duration = time::Duration::days(3650);

/// Makes `job` one that never ends (`FaultSpec::stuck_jobs`): its tasks run as planned up to the
/// last, which stays InProgress; it neither fails nor has an effect at its end, and a re-home
/// (reprotect) still happens when its moment comes, as it would in a job stuck late.
fn stick(job: &mut Job) {
    let never = job.starts + NEVER;
    job.failure = None;
    if let Some(last) = job.tasks.last_mut() {
        last.end = never;
        last.outcome = crate::job::TaskOutcome::Succeeded;
    }
    job.ends = never;
    if let Some(ir) = job.ir_end.as_mut() {
        *ir = (*ir).max(never);
    }
}
