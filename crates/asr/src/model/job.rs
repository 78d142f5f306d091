//! ASR jobs: the job, its tasks and errors, scenario-specific details and the job state.

use serde::{Deserialize, Serialize};

use super::{is_real_time, lenient_i64, lenient_opt_string, non_empty, null_default, parse_time};

/// An ASR job (`{vault}/replicationJobs/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    /// ARM id.
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Job name (a GUID, also found in the 202 `Location` after `operationresults/`).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Job properties.
    pub properties: JobProperties,
}

/// `properties` of a [`Job`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobProperties {
    /// Activity id (for support).
    pub activity_id: Option<String>,
    /// Scenario, e.g. `UnplannedFailover`, `SwitchReplicationGroupProtection`; `null` while
    /// the job is a `NotStarted` placeholder.
    pub scenario_name: Option<String>,
    /// Display name, e.g. `Failover`, `Reprotect`.
    pub friendly_name: Option<String>,
    /// State; read it with [`Job::state`].
    pub state: Option<String>,
    /// Refined state, e.g. `Completed`, `Skipped`.
    pub state_description: Option<String>,
    /// Job tasks in service order.
    #[serde(deserialize_with = "null_default")]
    pub tasks: Vec<JobTask>,
    /// Job-level errors.
    #[serde(deserialize_with = "null_default")]
    pub errors: Vec<JobError>,
    /// Start time (raw).
    pub start_time: Option<String>,
    /// End time (raw; absent while running).
    pub end_time: Option<String>,
    /// Actions allowed on the job, e.g. `Cancel`, `Resume`.
    #[serde(deserialize_with = "null_default")]
    pub allowed_actions: Vec<String>,
    /// Id of the target object (not an ARM id for items).
    pub target_object_id: Option<String>,
    /// Name of the target object (VM name for items).
    pub target_object_name: Option<String>,
    /// e.g. `ProtectionEntity`, `RecoveryPlan`.
    pub target_instance_type: Option<String>,
    /// Scenario-specific details.
    pub custom_details: Option<JobDetails>,
}

/// One task of a [`Job`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobTask {
    /// Task id.
    pub task_id: Option<String>,
    /// Task name.
    pub name: Option<String>,
    /// Display name.
    pub friendly_name: Option<String>,
    /// State (same vocabulary as the job state, plus `Other`).
    pub state: Option<String>,
    /// Refined state, e.g. `Skipped`.
    pub state_description: Option<String>,
    /// Start time (raw; `0001-01-01T00:00:00` when not started).
    pub start_time: Option<String>,
    /// End time (raw; `0001-01-01T00:00:00` when not finished).
    pub end_time: Option<String>,
    /// e.g. `TaskDetails`, `GroupTaskDetails`.
    pub task_type: Option<String>,
    /// Task errors.
    #[serde(deserialize_with = "null_default")]
    pub errors: Vec<JobError>,
}

/// One error of a job or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobError {
    /// Service-side error.
    pub service_error_details: Option<ServiceError>,
    /// Provider-side error.
    pub provider_error_details: Option<ProviderError>,
    /// Error level.
    pub error_level: Option<String>,
    /// Creation time (raw).
    pub creation_time: Option<String>,
    /// Task the error belongs to.
    pub task_id: Option<String>,
}

/// `serviceErrorDetails` of a [`JobError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceError {
    /// Error code (string; may be numeric).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub code: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// Possible causes.
    pub possible_causes: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
    /// Activity id.
    pub activity_id: Option<String>,
}

/// `providerErrorDetails` of a [`JobError`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderError {
    /// Numeric error code.
    #[serde(deserialize_with = "lenient_i64")]
    pub error_code: Option<i64>,
    /// Message.
    pub error_message: Option<String>,
    /// Error id.
    pub error_id: Option<String>,
    /// Possible causes.
    pub possible_causes: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
}

/// `customDetails` of a job: the fields of the variants the orchestrator reads
/// (`FailoverJobDetails`, `TestFailoverJobDetails`, `SwitchProtectionJobDetails`, `AsrJobDetails`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobDetails {
    /// Variant discriminator.
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// `SwitchProtectionJobDetails`: ARM id of the item after reprotect (the item moves container).
    pub new_replication_protected_item_id: Option<String>,
    /// `FailoverJobDetails` / `TestFailoverJobDetails`: per-item results.
    #[serde(deserialize_with = "null_default")]
    pub protected_item_details: Vec<FailoverItemDetails>,
    /// Free-form map of affected objects.
    pub affected_object_details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One entry of `protectedItemDetails` in failover job details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FailoverItemDetails {
    /// Item (VM) id, not an ARM id.
    pub name: Option<String>,
    /// Display name.
    pub friendly_name: Option<String>,
    /// Recovery point used; observed as the bare point name (GUID), not an ARM id.
    pub recovery_point_id: Option<String>,
    /// Time of the recovery point used (raw).
    pub recovery_point_time: Option<String>,
    /// Test VM name (test failover).
    pub test_vm_name: Option<String>,
    /// Network connection status (test failover).
    pub network_connection_status: Option<String>,
}

/// State of a job or task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Queued, not started.
    NotStarted,
    /// Running.
    InProgress,
    /// Finished successfully (see `stateDescription` for partial success).
    Succeeded,
    /// Finished with failure.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Waiting for a manual action; needs `resume`.
    Suspended,
    /// Any other value, kept verbatim (ASR itself reports `Other` for skipped tasks).
    Other(String),
}

impl JobState {
    /// Parses a state string case-insensitively; unknown values are kept in [`JobState::Other`].
    /// The ARM spelling `Canceled` is read as [`JobState::Cancelled`].
    pub fn parse(s: &str) -> JobState {
        let t = s.trim();
        const KNOWN: [(&str, JobState); 7] = [
            ("NotStarted", JobState::NotStarted),
            ("InProgress", JobState::InProgress),
            ("Succeeded", JobState::Succeeded),
            ("Failed", JobState::Failed),
            ("Cancelled", JobState::Cancelled),
            ("Canceled", JobState::Cancelled),
            ("Suspended", JobState::Suspended),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map_or_else(|| JobState::Other(s.to_owned()), |(_, state)| state)
    }

    /// Whether the state is final for automation: Succeeded, Failed or Cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }

    /// The canonical ASR spelling (or the kept value for [`JobState::Other`]).
    pub fn as_str(&self) -> &str {
        match self {
            JobState::NotStarted => "NotStarted",
            JobState::InProgress => "InProgress",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
            JobState::Suspended => "Suspended",
            JobState::Other(s) => s,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobError {
    fn has_details(&self) -> bool {
        self.service_error_details.is_some() || self.provider_error_details.is_some()
    }

    /// (code, message, possible causes, recommended action), service details first.
    fn summary(&self) -> (String, String, Option<String>, Option<String>) {
        let service = self.service_error_details.as_ref();
        let provider = self.provider_error_details.as_ref();
        let code = service
            .and_then(|s| non_empty(&s.code).map(str::to_owned))
            .or_else(|| provider.and_then(|p| p.error_code).map(|c| c.to_string()))
            .unwrap_or_default();
        let message = service
            .and_then(|s| non_empty(&s.message))
            .or_else(|| provider.and_then(|p| non_empty(&p.error_message)))
            .unwrap_or_default()
            .to_owned();
        let causes = service
            .and_then(|s| non_empty(&s.possible_causes))
            .or_else(|| provider.and_then(|p| non_empty(&p.possible_causes)))
            .map(str::to_owned);
        let action = service
            .and_then(|s| non_empty(&s.recommended_action))
            .or_else(|| provider.and_then(|p| non_empty(&p.recommended_action)))
            .map(str::to_owned);
        (code, message, causes, action)
    }
}

impl Job {
    /// The job's state.
    pub fn state(&self) -> JobState {
        JobState::parse(self.properties.state.as_deref().unwrap_or(""))
    }

    /// The first error as (code, message, possible causes, recommended action).
    ///
    /// Looks at job-level errors, then at each task's errors, preferring an error that carries
    /// service or provider details. The code is `serviceErrorDetails.code`, else
    /// `providerErrorDetails.errorCode` as a string.
    pub fn first_error(&self) -> Option<(String, String, Option<String>, Option<String>)> {
        let all = || self.properties.errors.iter().chain(self.properties.tasks.iter().flat_map(|t| t.errors.iter()));
        all().find(|e| e.has_details()).or_else(|| all().next()).map(JobError::summary)
    }

    /// The `activityId` (only a GET of the job carries it; lists send `null`).
    pub fn activity_id(&self) -> Option<&str> {
        non_empty(&self.properties.activity_id)
    }

    /// Whether the job's `activityId` begins with `client_request_id`: ASR makes the
    /// `x-ms-client-request-id` of the request that started a job the first part of its
    /// activity id (`"<client-request-id> ActivityId: <correlation-id>"`, recorded in
    /// A2AFailoverCommit-excerpt.json entries 146–147 and 173–174).
    pub fn started_by(&self, client_request_id: &str) -> bool {
        let Some(activity) = self.activity_id() else { return false };
        let first = activity.split_whitespace().next().unwrap_or("");
        !client_request_id.is_empty() && first.eq_ignore_ascii_case(client_request_id)
    }

    /// Whether this is what a list sends: a summary without tasks, errors, custom details
    /// and activity id (recorded in A2AFailoverCommit-excerpt.json entries 41–141).
    pub fn is_summary(&self) -> bool {
        self.properties.activity_id.is_none()
            && self.properties.tasks.is_empty()
            && self.properties.custom_details.is_none()
    }

    /// The job's target, when ASR says it (a new job's placeholder does not).
    pub fn target_name(&self) -> Option<&str> {
        non_empty(&self.properties.target_object_name)
    }

    /// The job's scenario, when ASR says it (a new job's placeholder does not).
    pub fn scenario(&self) -> Option<&str> {
        non_empty(&self.properties.scenario_name)
    }

    /// `SwitchProtectionJobDetails.newReplicationProtectedItemId`, once the service fills it in.
    pub fn new_item_id(&self) -> Option<&str> {
        non_empty(&self.properties.custom_details.as_ref()?.new_replication_protected_item_id)
    }

    /// The task in progress, else the task that started last (placeholder start times such as
    /// `0001-01-01T00:00:00` do not count as started).
    pub fn current_task(&self) -> Option<&JobTask> {
        let tasks = &self.properties.tasks;
        if let Some(task) = tasks.iter().find(|t| t.state() == JobState::InProgress) {
            return Some(task);
        }
        tasks
            .iter()
            .filter_map(|t| {
                let start = parse_time(t.start_time.as_deref()?)?;
                is_real_time(start).then_some((start, t))
            })
            .max_by_key(|(start, _)| *start)
            .map(|(_, t)| t)
    }
}

impl JobTask {
    /// The task's state.
    pub fn state(&self) -> JobState {
        JobState::parse(self.state.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_state_parse_keeps_unknown_values() {
        assert_eq!(JobState::parse("succeeded"), JobState::Succeeded);
        assert_eq!(JobState::parse("InProgress"), JobState::InProgress);
        assert_eq!(JobState::parse("Canceled"), JobState::Cancelled);
        assert_eq!(JobState::parse("Other"), JobState::Other("Other".into()));
        assert_eq!(JobState::parse("Paused"), JobState::Other("Paused".into()));
        assert!(JobState::parse("Failed").is_terminal());
        assert!(JobState::parse("cancelled").is_terminal());
        assert!(!JobState::parse("Suspended").is_terminal());
        assert!(!JobState::parse("Paused").is_terminal());
        assert_eq!(JobState::parse("Paused").to_string(), "Paused");
    }

    #[test]
    fn job_helpers() {
        let job: Job = serde_json::from_value(json!({
            "id": "j", "name": "j",
            "properties": {
                "state": "Failed",
                "errors": [],
                "tasks": [
                    {"name": "a", "state": "Succeeded", "startTime": "2025-04-09T08:49:20Z", "errors": []},
                    {"name": "b", "state": "Failed", "startTime": "2025-04-09T08:50:20Z",
                     "errors": [{"providerErrorDetails": {"errorCode": 28031, "errorMessage": "VM create failed",
                                 "recommendedAction": "Check quota"}}]},
                    {"name": "c", "state": "NotStarted", "startTime": "0001-01-01T00:00:00", "errors": []}
                ]
            }
        }))
        .expect("job");
        assert_eq!(job.state(), JobState::Failed);
        assert_eq!(job.current_task().and_then(|t| t.name.as_deref()), Some("b"));
        assert_eq!(
            job.first_error(),
            Some(("28031".into(), "VM create failed".into(), None, Some("Check quota".into())))
        );
        assert_eq!(job.new_item_id(), None);
    }
}
