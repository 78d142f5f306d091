//! ASR jobs: a timed list of tasks whose state is read off the simulated clock.
//!
//! A job is planned in full when it is created (task windows, outcome, errors); its state at
//! any moment is derived from the clock, so nothing runs in the background. The estate applies
//! the job's effect when the clock passes its end (see `Estate::advance`).

use serde_json::{Map, Value, json};

use crate::clock::{self, SimTime};
use crate::faults::{self, Operation};
use crate::wire::{self, JobDetails, JobError, JobProperties, JobTask, ProviderError, Resource, ServiceError};

/// An ASR-shaped error a task or job reports.
#[derive(Clone, Debug, PartialEq)]
pub struct AsrFault {
    /// Code, e.g. "28031".
    pub code: String,
    /// Message.
    pub message: String,
    /// Possible causes.
    pub possible_causes: String,
    /// Recommended action.
    pub recommended_action: String,
}

impl AsrFault {
    /// The fault for an ASR code, with ASR's wording unless `message` overrides it.
    pub fn from_code(code: &str, message: Option<&str>) -> Self {
        let (m, causes, action) = faults::describe(code);
        Self {
            code: code.to_owned(),
            message: message.unwrap_or(m).to_owned(),
            possible_causes: causes.to_owned(),
            recommended_action: action.to_owned(),
        }
    }

    fn wire(&self, at: SimTime, task_id: &str, activity: &str) -> JobError {
        JobError {
            service_error_details: Some(ServiceError {
                code: Some(self.code.clone()),
                message: Some(self.message.clone()),
                possible_causes: Some(self.possible_causes.clone()),
                recommended_action: Some(self.recommended_action.clone()),
                activity_id: Some(activity.to_owned()),
                ..Default::default()
            }),
            provider_error_details: Some(ProviderError {
                error_code: self.code.parse().ok(),
                error_message: Some(self.message.clone()),
                error_id: Some(activity.to_owned()),
                possible_causes: Some(self.possible_causes.clone()),
                recommended_action: Some(self.recommended_action.clone()),
                ..Default::default()
            }),
            error_level: Some("Error".into()),
            creation_time: Some(clock::format(at)),
            task_id: Some(task_id.to_owned()),
            ..Default::default()
        }
    }
}

/// How a task ends.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOutcome {
    /// Completed.
    Succeeded,
    /// Failed: the job fails with it.
    Failed(AsrFault),
    /// Failed, but the job carries on (e.g. a best-effort source shutdown).
    FailedNonFatal(AsrFault),
    /// Not run.
    Skipped,
}

/// One planned task.
#[derive(Clone, Debug)]
pub struct TaskPlan {
    /// `taskId` (e.g. `FailoverTask`; a GUID for commit tasks, excerpt entry 175).
    pub id: String,
    /// `name` (e.g. `VmFailover`): ASR's task ids and names differ (excerpt entry 148).
    pub name: String,
    /// `friendlyName`.
    pub friendly: String,
    /// When it starts.
    pub start: SimTime,
    /// When it ends.
    pub end: SimTime,
    /// How it ends.
    pub outcome: TaskOutcome,
}

/// What the job does to the estate when it ends (and, for reprotect, midway).
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Fail the item over to the other region.
    Failover {
        /// The recovery point used (id, time).
        point: (String, SimTime),
        /// The source shutdown was asked for.
        shutdown_requested: bool,
        /// ...and failed.
        shutdown_failed: bool,
    },
    /// Commit the failover.
    Commit,
    /// Cancel the failover.
    CancelFailover,
    /// Switch the recovery point of a failed-over item.
    ApplyRecoveryPoint {
        /// The new point.
        point: String,
    },
    /// Reverse replication: re-home midway; initial replication goes on after the job ends.
    Reprotect {
        /// The per-disk settings the request named, applied when the item is re-homed.
        disks: Vec<DiskSettings>,
    },
    /// One of the two jobs that end an initial replication: `PrimaryIrCompletion` (false) or
    /// `SecondaryIrCompletion` (true), after which the item is protected.
    IrCompletion {
        /// `SecondaryIrCompletion`.
        secondary: bool,
    },
    /// Create the test VM.
    TestFailover {
        /// Network it is attached to.
        network: Option<String>,
    },
    /// Remove the test VM.
    TestFailoverCleanup,
    /// Resync.
    Repair,
    /// Disable replication (the item leaves the vault).
    Disable,
    /// Purge (the item already left the vault).
    Purge,
    /// Delete a VM or NIC (by lowercase id).
    DeleteResource {
        /// The resource id.
        id: String,
    },
    /// A recovery plan job: its children do the work.
    PlanParent,
}

/// What a reprotect request asked for one disk, kept on the item afterwards and rendered in
/// `protectedManagedDisks[]` / `protectedDisks[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskSettings {
    /// Index of the disk in the item's disk list.
    pub index: usize,
    /// `primaryStagingAzureStorageAccountId` (the cache account in the region the VM runs in).
    pub staging_account: String,
    /// `recoveryAzureStorageAccountId` (unmanaged disks).
    pub recovery_account: Option<String>,
    /// `recoveryReplicaDiskAccountType`.
    pub replica_type: Option<String>,
    /// `recoveryTargetDiskAccountType`.
    pub target_type: Option<String>,
}

/// What the operation's `Location` URL returns once the job is done.
#[derive(Clone, Debug, PartialEq)]
pub enum FinalResult {
    /// The protected item (found again by lifecycle id, since reprotect moves it).
    Item {
        /// Its lifecycle id.
        lifecycle: String,
    },
    /// The protection container the item now lives in.
    Container {
        /// Region index.
        region: usize,
    },
    /// The recovery plan.
    Plan {
        /// Its name.
        name: String,
    },
    /// 204 No Content.
    Nothing,
}

/// A job.
#[derive(Clone, Debug)]
pub struct Job {
    /// GUID name.
    pub name: String,
    /// `scenarioName`.
    pub scenario: &'static str,
    /// `friendlyName`.
    pub friendly: &'static str,
    /// What it is for.
    pub operation: Operation,
    /// Lowercase name of the item it acts on.
    pub item: Option<String>,
    /// Lowercase name of the recovery plan it acts on.
    pub plan: Option<String>,
    /// `targetObjectName` (VM or plan name).
    pub target_name: String,
    /// `targetObjectId`.
    pub target_id: String,
    /// `targetInstanceType`.
    pub target_type: &'static str,
    /// `activityId`.
    pub activity: String,
    /// When it was accepted.
    pub created: SimTime,
    /// When it leaves NotStarted.
    pub starts: SimTime,
    /// When it reaches its terminal state.
    pub ends: SimTime,
    /// Its tasks.
    pub tasks: Vec<TaskPlan>,
    /// The fatal fault, if it fails.
    pub failure: Option<AsrFault>,
    /// Succeeded-with-information (a non-fatal task failed).
    pub with_information: bool,
    /// Set when cancelled.
    pub cancelled_at: Option<SimTime>,
    /// The effect has been applied.
    pub finished: bool,
    /// The effect.
    pub effect: Effect,
    /// For reprotect: when the item moves to its new container.
    pub rehome_at: Option<SimTime>,
    /// For reprotect: the item's id after the move.
    pub new_item_id: Option<String>,
    /// For reprotect: when the initial replication that follows the job ends.
    pub ir_end: Option<SimTime>,
    /// For failover jobs: (item name, VM name, recovery point id, point time).
    pub failover_details: Option<(String, String, String, SimTime)>,
    /// The resource path (ARM id) whose `/operationresults/{job}` is the Location URL.
    pub location_base: String,
    /// What the Location URL finally returns.
    pub result: FinalResult,
    /// Child jobs (recovery plan operations).
    pub children: Vec<String>,
    /// `customDetails.affectedObjectDetails`: the VM and the clouds (containers) involved.
    pub affected: Map<String, Value>,
}

/// A job's state at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    NotStarted,
    InProgress,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// ASR's `state` string.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::NotStarted => "NotStarted",
            JobState::InProgress => "InProgress",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
        }
    }

    /// Whether it is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl Job {
    /// The state at `now`.
    pub fn state(&self, now: SimTime) -> JobState {
        if let Some(c) = self.cancelled_at
            && now >= c
        {
            return JobState::Cancelled;
        }
        if now < self.starts {
            JobState::NotStarted
        } else if now < self.ends {
            JobState::InProgress
        } else if self.failure.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        }
    }

    /// Fraction of the job done at `now`, 0..=1.
    pub fn progress(&self, now: SimTime) -> f64 {
        let total = (self.ends - self.starts).as_seconds_f64();
        if total <= 0.0 {
            return 1.0;
        }
        ((now - self.starts).as_seconds_f64() / total).clamp(0.0, 1.0)
    }

    /// Whether the job is in its placeholder window (NotStarted, not cancelled): a GET answers
    /// the placeholder shape and lists leave it out.
    pub fn is_placeholder(&self, now: SimTime) -> bool {
        self.state(now) == JobState::NotStarted
    }

    /// What `GET {vault}/replicationJobs/{name}` answers at `now`.
    ///
    /// While the job is NotStarted it is a placeholder, exactly as recorded
    /// (A2AFailoverCommit-excerpt entries 8, 147, 174): `activityId` set, no scenario, no
    /// target, no tasks, `targetInstanceType` "ProtectionEntity", bare `AsrJobDetails`, and no
    /// `startTime`/`endTime` keys. Afterwards the job renders in full (entry 148 on).
    pub fn render(
        &self,
        id: String,
        now: SimTime,
        child_ids: &[(String, String, &'static str)],
    ) -> Resource<JobProperties> {
        if self.is_placeholder(now) {
            return self.render_placeholder(id);
        }
        self.render_full(id, now, child_ids)
    }

    /// What a job list (`GET {vault}/replicationJobs`, any filter and page) carries for the job:
    /// a summary with `tasks: []`, `errors: []`, `customDetails: null`, `activityId: null`, every
    /// other field as a GET gives it (excerpt entries 41–141 vs 142–143).
    pub fn render_summary(&self, id: String, now: SimTime) -> Resource<JobProperties> {
        let mut r = self.render_full(id, now, &[]);
        r.properties.tasks = Some(vec![]);
        r.properties.errors = Some(vec![]);
        r.properties.custom_details = None;
        r.properties.activity_id = None;
        r
    }

    fn render_placeholder(&self, id: String) -> Resource<JobProperties> {
        Resource {
            name: self.name.clone(),
            id,
            kind: "Microsoft.RecoveryServices/vaults/replicationJobs".into(),
            location: None,
            properties: JobProperties {
                activity_id: Some(self.activity.clone()),
                scenario_name: None,
                friendly_name: None,
                state: Some("NotStarted".into()),
                state_description: Some("NotStarted".into()),
                tasks: Some(vec![]),
                errors: Some(vec![]),
                start_time: None,
                end_time: None,
                allowed_actions: Some(vec![]),
                target_object_id: None,
                target_object_name: None,
                target_instance_type: Some("ProtectionEntity".into()),
                custom_details: Some(JobDetails {
                    instance_type: "AsrJobDetails".into(),
                    affected_object_details: Some(Map::new()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            extra: Map::new(),
        }
    }

    fn render_full(
        &self,
        id: String,
        now: SimTime,
        child_ids: &[(String, String, &'static str)],
    ) -> Resource<JobProperties> {
        let state = self.state(now);
        let description = match state {
            JobState::NotStarted => "NotStarted",
            JobState::InProgress => "InProgress",
            JobState::Succeeded if self.with_information => "CompletedWithInformation",
            JobState::Succeeded => "Completed",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
        };
        let effective_now = self.cancelled_at.map_or(now, |c| c.min(now));
        let mut errors = Vec::new();
        let tasks = self
            .tasks
            .iter()
            .map(|t| {
                let (tstate, tdesc, started, ended) = if matches!(t.outcome, TaskOutcome::Skipped) {
                    ("Other", "Skipped", false, false)
                } else if effective_now < t.start {
                    ("NotStarted", "NotStarted", false, false)
                } else if effective_now < t.end {
                    if state == JobState::Cancelled {
                        ("Cancelled", "Cancelled", true, true)
                    } else {
                        ("InProgress", "InProgress", true, false)
                    }
                } else {
                    match &t.outcome {
                        TaskOutcome::Succeeded => ("Succeeded", "Completed", true, true),
                        TaskOutcome::Failed(_) | TaskOutcome::FailedNonFatal(_) => ("Failed", "Failed", true, true),
                        TaskOutcome::Skipped => unreachable!(),
                    }
                };
                let mut task_errors = Vec::new();
                if tstate == "Failed"
                    && let TaskOutcome::Failed(f) | TaskOutcome::FailedNonFatal(f) = &t.outcome
                {
                    let e = f.wire(t.end, &t.id, &self.activity);
                    task_errors.push(e.clone());
                    errors.push(e);
                }
                let never = "0001-01-01T00:00:00".to_owned();
                let is_group = t.id == "ProtectReplicaTask" && !child_ids.is_empty();
                JobTask {
                    task_id: Some(t.id.clone()),
                    name: Some(t.name.clone()),
                    start_time: Some(if started { clock::format(t.start) } else { never.clone() }),
                    end_time: Some(if ended { clock::format(t.end) } else { never }),
                    allowed_actions: Some(vec![]),
                    friendly_name: Some(t.friendly.clone()),
                    state: Some(tstate.to_owned()),
                    state_description: Some(tdesc.to_owned()),
                    task_type: Some(if is_group { "GroupTaskDetails" } else { "TaskDetails" }.to_owned()),
                    custom_details: (!is_group).then(|| json!({"instanceType": "TaskDetails"})),
                    group_task_custom_details: is_group.then(|| group_children(child_ids)),
                    errors: Some(task_errors),
                    ..Default::default()
                }
            })
            .collect();
        let instance_type = match self.effect {
            Effect::Reprotect { .. } => "SwitchProtectionJobDetails",
            Effect::Failover { .. } => "FailoverJobDetails",
            Effect::TestFailover { .. } => "TestFailoverJobDetails",
            _ => "AsrJobDetails",
        };
        let affected = self.affected.clone();
        // As ASR reports it: `name` is the VM's internal id, `recoveryPointId` the bare point name.
        let protected_item_details = self.failover_details.as_ref().map(|(_, vm, point, at)| {
            vec![wire::FailoverItemDetails {
                name: Some(self.target_id.clone()),
                friendly_name: Some(vm.clone()),
                test_vm_name: matches!(self.effect, Effect::TestFailover { .. }).then(|| format!("{vm}-test")),
                test_vm_friendly_name: matches!(self.effect, Effect::TestFailover { .. }).then(|| format!("{vm}-test")),
                network_connection_status: Some("Connected".into()),
                recovery_point_id: Some(point.rsplit('/').next().unwrap_or(point).to_owned()),
                recovery_point_time: Some(clock::format(*at)),
                ..Default::default()
            }]
        });
        let new_item_id = match (&self.rehome_at, &self.new_item_id) {
            (Some(at), Some(id)) if now >= *at => Some(id.clone()),
            _ => None,
        };
        let mut custom_extra = Map::new();
        if instance_type == "SwitchProtectionJobDetails" && new_item_id.is_none() {
            // Present as null until the item is re-homed (reprotect entries 17–19).
            custom_extra.insert("newReplicationProtectedItemId".into(), Value::Null);
        }
        let custom = JobDetails {
            instance_type: instance_type.into(),
            affected_object_details: Some(affected),
            new_replication_protected_item_id: new_item_id,
            protected_item_details,
            extra: custom_extra,
        };
        Resource {
            name: self.name.clone(),
            id,
            kind: "Microsoft.RecoveryServices/vaults/replicationJobs".into(),
            location: None,
            properties: JobProperties {
                activity_id: Some(self.activity.clone()),
                scenario_name: Some(self.scenario.into()),
                friendly_name: Some(self.friendly.into()),
                state: Some(state.as_str().into()),
                state_description: Some(description.into()),
                tasks: Some(tasks),
                errors: Some(errors),
                start_time: Some(clock::format(self.created)),
                end_time: state.is_terminal().then(|| clock::format(self.cancelled_at.unwrap_or(self.ends).min(now))),
                allowed_actions: Some(match state {
                    JobState::InProgress | JobState::NotStarted => vec!["Cancel".into()],
                    JobState::Failed | JobState::Cancelled => vec!["Restart".into()],
                    JobState::Succeeded => vec![],
                }),
                target_object_id: Some(self.target_id.clone()),
                target_object_name: Some(self.target_name.clone()),
                target_instance_type: Some(self.target_type.into()),
                custom_details: Some(custom),
                ..Default::default()
            },
            extra: Map::new(),
        }
    }
}

fn group_children(children: &[(String, String, &'static str)]) -> Value {
    let child_tasks: Vec<Value> = children
        .iter()
        .map(|(job_id, target, state)| {
            json!({
                "taskId": "EnableDr", "name": target, "friendlyName": target, "state": state,
                "stateDescription": state, "taskType": "JobTaskDetails", "allowedActions": [], "errors": [],
                "customDetails": {"instanceType": "JobTaskDetails", "jobTask": {
                    "jobId": job_id, "jobFriendlyName": "Enable replication", "targetObjectName": target,
                    "targetInstanceType": "Vm", "jobScenarioName": "EnableDr"}}
            })
        })
        .collect();
    json!({"instanceType": "GroupTaskDetails", "childTasks": child_tasks})
}
