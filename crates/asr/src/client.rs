//! Typed ASR, Compute and Network operations, with at-most-once submission of side effects.
//!
//! Every mutating call carries a deterministic `x-ms-client-request-id` chosen by the caller
//! ([`request_key`]), which ASR makes the first part of the job's `activityId`, and returns a
//! [`Submission`]. When Azure's answer is lost (timeout, reset, 5xx), the client does not send
//! again: it looks for the job its request id started (lists carry no activity id, so it GETs
//! the candidates) and says whether the operation is already running, already finished, not
//! settled yet (a new job is a placeholder at first and the item does not name it at once), or
//! — once [`AsrConfig::lost_request_window`] has passed without a job — never started, so the
//! caller attaches to the job, waits, or sends again knowing it is safe.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{Instrument, debug, info};

use crate::auth::TokenProvider;
use crate::budget::Budget;
use crate::config::AsrConfig;
use crate::error::AsrError;
use crate::http::{Http, HttpStats, RawResponse, SendGuard, decode};
use crate::model::{
    ApplyRecoveryPointInput, ContainerMapping, DisableProtectionInput, Fabric, Job, JobState, ManagedDisk,
    NetworkInterface, Page, PlanFailoverInput, PlanTestFailoverInput, Policy, ProtectedItem, ProtectionContainer,
    PublicIpAddress, RecoveryPlan, RecoveryPoint, ResourceSku, StorageAccount, SwitchProtectionInput,
    TestFailoverCleanupInput, TestFailoverInput, UnplannedFailoverInput, Usage, VirtualMachine, VmDiskInput,
    VmManagedDiskInput,
};
use crate::observe::{self, Op};

/// How a submitted operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Azure accepted it now.
    Accepted,
    /// The answer was lost, but the operation is running (as `job`): attach to it.
    AlreadyRunning,
    /// The answer was lost, but the operation already ran; `job` (when found) tells how it ended.
    AlreadyFinished,
    /// The answer was lost and the operation did not start: sending it again is safe.
    NotStarted,
    /// The answer was lost and no job of the request shows yet, though one still may: do not
    /// send again; look again later ([`AsrClient::settle`]).
    Unsettled,
}

/// The result of submitting a side effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// How it stands.
    pub outcome: SubmitOutcome,
    /// The ASR job name, when known.
    pub job: Option<String>,
    /// Where to poll (the `Location` URL) when Azure sent one.
    pub location: Option<String>,
}

/// Which way a failover goes, relative to the protected item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverDirection {
    /// From the item's current primary to its recovery region (A2A's usual choice, failback included).
    PrimaryToRecovery,
    /// Back to the region the VM started in, as recovery plans express failback.
    RecoveryToPrimary,
}

impl FailoverDirection {
    /// ASR's string.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverDirection::PrimaryToRecovery => "PrimaryToRecovery",
            FailoverDirection::RecoveryToPrimary => "RecoveryToPrimary",
        }
    }
}

/// Settings of a reprotect (switch protection). Empty fields are derived from the item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReprotectSettings {
    /// Resource group the VM will be re-created in on the next failover.
    pub resource_group_id: Option<String>,
    /// Cache storage account in the region the VM runs in now, for every VM (overrides the
    /// per-region accounts).
    pub cache_storage_account_id: Option<String>,
    /// Cache storage account per Azure region (`eastus` → ARM id): the one of the region the
    /// VM runs in is used; else the client's configured one ([`AsrConfig::cache_storage_accounts`]).
    pub cache_storage_accounts: BTreeMap<String, String>,
    /// Replica and target disk type for every disk.
    pub disk_type: Option<String>,
    /// Availability set of the recovery VM.
    pub availability_set_id: Option<String>,
    /// Availability zone of the recovery VM.
    pub availability_zone: Option<String>,
    /// Proximity placement group of the recovery VM.
    pub proximity_placement_group_id: Option<String>,
    /// Capacity reservation group of the recovery VM.
    pub capacity_reservation_group_id: Option<String>,
    /// Replication policy (default: the item's).
    pub policy_id: Option<String>,
}

/// The side effects the client submits and knows how to find again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// `unplannedFailover`.
    Failover,
    /// `failoverCommit`.
    Commit,
    /// `applyRecoveryPoint`.
    ApplyRecoveryPoint,
    /// `failoverCancel`.
    CancelFailover,
    /// `switchprotection` (A2A reprotect).
    SwitchProtection,
    /// `testFailover`.
    TestFailover,
    /// `testFailoverCleanup`.
    TestFailoverCleanup,
    /// `repairReplication`.
    Repair,
    /// `remove` (disable replication).
    Disable,
}

impl Mutation {
    /// The action segment of the request path.
    pub fn action(self) -> &'static str {
        match self {
            Mutation::Failover => "unplannedFailover",
            Mutation::Commit => "failoverCommit",
            Mutation::ApplyRecoveryPoint => "applyRecoveryPoint",
            Mutation::CancelFailover => "failoverCancel",
            Mutation::SwitchProtection => "switchprotection",
            Mutation::TestFailover => "testFailover",
            Mutation::TestFailoverCleanup => "testFailoverCleanup",
            Mutation::Repair => "repairReplication",
            Mutation::Disable => "remove",
        }
    }

    /// The logical operation name of spans and metrics.
    pub fn operation(self) -> &'static str {
        match self {
            Mutation::Failover => "unplannedFailover",
            Mutation::Commit => "commit",
            Mutation::ApplyRecoveryPoint => "applyRecoveryPoint",
            Mutation::CancelFailover => "cancelFailover",
            Mutation::SwitchProtection => "switchProtection",
            Mutation::TestFailover => "testFailover",
            Mutation::TestFailoverCleanup => "testFailoverCleanup",
            Mutation::Repair => "repairReplication",
            Mutation::Disable => "disableProtection",
        }
    }

    /// The `allowedOperations` value that gates it.
    pub fn gate(self) -> &'static str {
        match self {
            Mutation::Failover => "UnplannedFailover",
            Mutation::Commit => "Commit",
            Mutation::ApplyRecoveryPoint => "ChangePit",
            Mutation::CancelFailover => "CancelFailover",
            Mutation::SwitchProtection => "SwitchProtection",
            Mutation::TestFailover => "TestFailover",
            Mutation::TestFailoverCleanup => "TestFailoverCleanup",
            Mutation::Repair => "RepairReplication",
            Mutation::Disable => "DisableProtection",
        }
    }

    /// Whether a scenario or job scenario name is this operation's. Matching is loose on
    /// purpose: ASR's scenario names are not documented (e.g. "SwitchReplicationGroupProtection").
    pub fn matches_scenario(self, scenario: &str) -> bool {
        let s = scenario.to_ascii_lowercase();
        let keys: &[&str] = match self {
            Mutation::Failover => &["unplannedfailover", "failover"],
            Mutation::Commit => &["commit"],
            Mutation::ApplyRecoveryPoint => &["changepit", "applyrecoverypoint"],
            Mutation::CancelFailover => &["cancelfailover"],
            Mutation::SwitchProtection => &["switchprotection", "switchreplicationgroupprotection", "reprotect"],
            Mutation::TestFailover => &["testfailover"],
            Mutation::TestFailoverCleanup => &["testfailovercleanup"],
            Mutation::Repair => &["resync", "repair"],
            Mutation::Disable => &["disable"],
        };
        let excluded = match self {
            Mutation::Failover => s.contains("test") || s.contains("cancel") || s.contains("commit"),
            Mutation::TestFailover => s.contains("cleanup"),
            _ => false,
        };
        !excluded && keys.iter().any(|k| s.contains(k))
    }

    /// Whether `after` shows the operation's effect on `before`.
    pub fn is_done(self, before: &ProtectedItem, after: Option<&ProtectedItem>) -> bool {
        let Some(after) = after else { return self == Mutation::Disable };
        match self {
            Mutation::Failover => after.active_location().eq_ignore_ascii_case("Recovery"),
            Mutation::Commit => after.protection_state().to_ascii_lowercase().contains("committed"),
            Mutation::CancelFailover => after.active_location().eq_ignore_ascii_case("Primary"),
            Mutation::SwitchProtection => after.container_id() != before.container_id(),
            Mutation::TestFailover => {
                after.properties.test_failover_state.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("None"))
            }
            Mutation::TestFailoverCleanup => {
                after.properties.test_failover_state.as_deref().is_none_or(|s| s.eq_ignore_ascii_case("None"))
            }
            Mutation::Repair => {
                after.properties.replication_health.as_deref().is_some_and(|h| h.eq_ignore_ascii_case("Normal"))
            }
            Mutation::ApplyRecoveryPoint | Mutation::Disable => false,
        }
    }
}

/// A deterministic `x-ms-client-request-id` for a side effect: the same parts (say a command
/// id, a step and how often it was sent) always give the same GUID, so whoever sent it — or a
/// successor after a crash — can find the job it started by its `activityId`.
pub fn request_key(parts: &[&str]) -> String {
    // A fixed namespace of Tern's own: a name-based (v5) id is stable across processes.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7e4e_2c6a_8d1f_4b0e_9a3c_5f61_d2b8_c407);
    uuid::Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes()).to_string()
}

/// How a side effect goes out: with its request id ([`request_key`]) and, for a sender that
/// may lose the right to send while it waits — a worker whose claim another takes over while
/// it waits out ARM's budget or a 429 — the [`SendGuard`] asked right before the request
/// leaves. A plain `&str` is a request id sent unguarded.
#[derive(Clone, Copy, Debug)]
pub struct Sending<'a> {
    /// The `x-ms-client-request-id`.
    pub request_id: &'a str,
    /// Asked after every wait, immediately before the request goes out.
    pub guard: Option<&'a dyn SendGuard>,
}

impl<'a> Sending<'a> {
    /// `request_id`, sent only if `guard` allows it at the moment of sending.
    pub fn guarded(request_id: &'a str, guard: &'a dyn SendGuard) -> Self {
        Self { request_id, guard: Some(guard) }
    }
}

impl<'a> From<&'a str> for Sending<'a> {
    fn from(request_id: &'a str) -> Self {
        Self { request_id, guard: None }
    }
}

impl<'a> From<&'a String> for Sending<'a> {
    fn from(request_id: &'a String) -> Self {
        Self::from(request_id.as_str())
    }
}

/// How far back of a request's send time a job's start may lie (clocks differ).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// The Azure client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AsrClient {
    http: Http,
}

/// The ASR job name from an accepted operation's headers: `x-ms-request-id` (the job's ARM
/// id) or the segment after `operationresults/` in `Location`.
pub fn job_name_from(raw: &RawResponse) -> Option<String> {
    if let Some(id) = raw.header("x-ms-request-id") {
        let lower = id.to_ascii_lowercase();
        if lower.contains("/replicationjobs/") {
            return id.rsplit('/').next().map(str::to_owned);
        }
    }
    let location = raw.header("location")?;
    let lower = location.to_ascii_lowercase();
    let at = lower.find("/operationresults/")? + "/operationresults/".len();
    let rest = &location[at..];
    Some(rest.split(['?', '/']).next().unwrap_or(rest).to_owned())
}

fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// The `api-version` of ARM's subscription list.
const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
/// Compute's Resource Skus list (its newest api-version in the REST spec).
const SKUS_API_VERSION: &str = "2021-07-01";

/// The vault an ARM id lies in (a protected item's, a job's): its prefix up to
/// `/vaults/{name}`. `None`: not inside a Recovery Services vault.
pub fn vault_of(id: &str) -> Option<&str> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.recoveryservices/vaults/")?
        + "/providers/microsoft.recoveryservices/vaults/".len();
    let end = lower[at..].find('/').map_or(id.len(), |i| at + i);
    (end > at).then(|| &id[..end])
}

/// The resource group of an ARM id (`.../resourceGroups/{rg}/...`).
pub fn resource_group_of(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    let i = parts.iter().position(|p| p.eq_ignore_ascii_case("resourcegroups"))?;
    parts.get(i + 1).map(|s| (*s).to_owned())
}

/// Query of [`AsrClient::list_jobs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Jobs started at or after this time.
    pub started_after: Option<OffsetDateTime>,
    /// Only these states (e.g. `["InProgress", "NotStarted"]`).
    pub states: Vec<String>,
}

impl JobQuery {
    fn filter(&self) -> Option<String> {
        let mut clauses = Vec::new();
        if let Some(t) = self.started_after {
            let t = t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            clauses.push(format!("startTime eq '{t}'"));
        }
        if !self.states.is_empty() {
            clauses.push(format!("jobStatus eq '{}'", self.states.join(",")));
        }
        (!clauses.is_empty()).then(|| clauses.join(" and "))
    }
}

impl AsrClient {
    /// A client for `config`, authenticating with `tokens`, drawing on `budget`.
    pub fn new(config: AsrConfig, tokens: TokenProvider, budget: Arc<dyn Budget>) -> Result<Self, AsrError> {
        config.validate().map_err(AsrError::InvalidInput)?;
        Ok(Self { http: Http::new(Arc::new(config), Arc::new(tokens), budget)? })
    }

    /// The settings.
    /// This client pointed at another vault (its ARM id): the same connection, credentials,
    /// budget and counters. Whether the service may act there is the caller's check
    /// ([`AsrConfig::allows`]).
    pub fn for_vault(&self, vault_id: &str) -> Result<Self, AsrError> {
        let config = self.config().at_vault(vault_id).map_err(AsrError::InvalidInput)?;
        Ok(Self { http: self.http.with_config(config) })
    }

    pub fn config(&self) -> &AsrConfig {
        &self.http.config
    }

    /// Requests sent so far.
    pub fn stats(&self) -> &HttpStats {
        &self.http.stats
    }

    fn asr(&self, path: &str) -> String {
        self.http.url(path, &self.http.config.api_version)
    }

    fn vault(&self, suffix: &str) -> String {
        self.asr(&format!("{}{suffix}", self.config().vault_id()))
    }

    /// Every item of a paged list, following `nextLink`.
    async fn collect<T: serde::de::DeserializeOwned>(&self, first: String, op: Op<'_>) -> Result<Vec<T>, AsrError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next {
            let page: Page<T> = self.http.get(&url, op).await?;
            out.extend(page.value);
            next = page.next_link.filter(|l| !l.is_empty());
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Topology

    /// Fabrics of the vault (one per region for A2A).
    pub async fn list_fabrics(&self) -> Result<Vec<Fabric>, AsrError> {
        self.collect(self.vault("/replicationFabrics"), Op::new("listFabrics", "GET replicationFabrics")).await
    }

    /// Protection containers of a fabric.
    pub async fn list_containers(&self, fabric: &str) -> Result<Vec<ProtectionContainer>, AsrError> {
        let url = self.vault(&format!("/replicationFabrics/{fabric}/replicationProtectionContainers"));
        self.collect(url, Op::new("listProtectionContainers", "GET replicationProtectionContainers")).await
    }

    /// Container mappings of a container.
    pub async fn list_mappings(&self, fabric: &str, container: &str) -> Result<Vec<ContainerMapping>, AsrError> {
        let url = self.vault(&format!(
            "/replicationFabrics/{fabric}/replicationProtectionContainers/{container}/replicationProtectionContainerMappings"
        ));
        self.collect(url, Op::new("listContainerMappings", "GET replicationProtectionContainerMappings")).await
    }

    /// Replication policies.
    pub async fn list_policies(&self) -> Result<Vec<Policy>, AsrError> {
        self.collect(self.vault("/replicationPolicies"), Op::new("listPolicies", "GET replicationPolicies")).await
    }

    // -----------------------------------------------------------------------------------------
    // Protected items and recovery points

    /// One protected item by ARM id.
    pub async fn get_item(&self, item_id: &str) -> Result<ProtectedItem, AsrError> {
        let detail = format!("GET item {}", last_segment(item_id));
        self.http.get(&self.asr(item_id), Op::new("getProtectedItem", &detail)).await
    }

    /// Protected items of a container (`Some(container id)`) or of the whole vault, with an
    /// optional OData `$filter` (e.g. `RecoveryPlanName eq 'rp1'`).
    pub async fn list_items(
        &self,
        container_id: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Vec<ProtectedItem>, AsrError> {
        let mut url = match container_id {
            Some(c) => self.asr(&format!("{c}/replicationProtectedItems")),
            None => self.vault("/replicationProtectedItems"),
        };
        if let Some(f) = filter {
            url.push_str(&format!("&$filter={}", urlencoding::encode(f)));
        }
        self.collect(url, Op::new("listProtectedItems", "GET replicationProtectedItems")).await
    }

    /// Finds an item again after reprotect re-homed it: same name, another container, same
    /// `lifecycleId`. Returns `None` if it is in no container of the vault.
    pub async fn find_item(&self, name: &str, lifecycle_id: Option<&str>) -> Result<Option<ProtectedItem>, AsrError> {
        for fabric in self.list_fabrics().await? {
            for container in self.list_containers(&fabric.name).await? {
                let id = format!("{}/replicationProtectedItems/{name}", container.id);
                match self.get_item(&id).await {
                    Ok(item)
                        if item.name.eq_ignore_ascii_case(name)
                            && (lifecycle_id.is_none() || item.lifecycle_id() == lifecycle_id) =>
                    {
                        return Ok(Some(item));
                    }
                    Ok(_) => {}
                    Err(e) if e.class() == crate::error::ErrorClass::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }

    /// Recovery points of an item, newest first.
    pub async fn recovery_points(&self, item_id: &str) -> Result<Vec<RecoveryPoint>, AsrError> {
        let mut points: Vec<RecoveryPoint> = self
            .collect(
                self.asr(&format!("{item_id}/recoveryPoints")),
                Op::new("listRecoveryPoints", "GET recoveryPoints"),
            )
            .await?;
        points.sort_by_key(|p| std::cmp::Reverse(p.time()));
        Ok(points)
    }

    /// Finds an item by its VM's name in a full list of the vault's items (no filter: the
    /// REST spec defines none for names), checking the name and, when given, the lifecycle id.
    pub async fn find_item_by_vm_name(
        &self,
        vm_name: &str,
        lifecycle_id: Option<&str>,
    ) -> Result<Option<ProtectedItem>, AsrError> {
        let items = self.list_items(None, None).await?;
        Ok(items.into_iter().find(|i| {
            i.friendly_name().eq_ignore_ascii_case(vm_name)
                && (lifecycle_id.is_none() || i.lifecycle_id() == lifecycle_id)
        }))
    }

    // -----------------------------------------------------------------------------------------
    // Side effects

    async fn submit(
        &self,
        item: &ProtectedItem,
        mutation: Mutation,
        url: String,
        body: Option<Value>,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let key = key.into();
        let operation = format!("POST {} {}", mutation.action(), item.friendly_name());
        let sent_at = OffsetDateTime::now_utc();
        let op = Op::new(mutation.operation(), &operation).sending(key);
        match self.http.mutate(Method::POST, &url, body.as_ref(), op).await {
            Ok(raw) => {
                info!(%operation, job = ?job_name_from(&raw), "accepted");
                Ok(Submission {
                    outcome: SubmitOutcome::Accepted,
                    job: job_name_from(&raw),
                    location: raw.header("location").map(str::to_owned),
                })
            }
            Err(e) if e.is_ambiguous() => {
                info!(%operation, error = %e, "outcome unknown; looking for the request's job instead of sending again");
                self.settle(item, mutation, &[key.request_id.to_owned()], sent_at).await
            }
            Err(e) => Err(e),
        }
    }

    /// Settles a side effect whose answer was lost, or that an earlier owner of the work may
    /// have sent: `keys` are the request ids it may have gone out with, `sent_at` the latest
    /// moment it may have been sent.
    ///
    /// The job such a request started is found by its activity id ([`Self::find_submitted`]).
    /// While none shows, the request counts as unsettled until [`AsrConfig::lost_request_window`]
    /// after `sent_at`: a new job answers as a placeholder at first, and the item does not name
    /// it at once, so "no job seen" proves nothing early on. After the window the item decides:
    /// its effect is there (already finished), or the operation is allowed (not started: safe to
    /// send), or neither (an error that invites no second send).
    pub async fn settle(
        &self,
        before: &ProtectedItem,
        mutation: Mutation,
        keys: &[String],
        sent_at: OffsetDateTime,
    ) -> Result<Submission, AsrError> {
        if let Some(job) = self.find_submitted(before, mutation, keys, sent_at - CLOCK_SKEW).await? {
            let outcome =
                if job.state().is_terminal() { SubmitOutcome::AlreadyFinished } else { SubmitOutcome::AlreadyRunning };
            return Ok(Submission { outcome, job: Some(job.name), location: None });
        }
        let window = self.config().lost_request_window;
        let waited = OffsetDateTime::now_utc() - sent_at;
        if waited < time::Duration::try_from(window).unwrap_or(time::Duration::MAX) {
            debug!(item = before.friendly_name(), ?waited, "no job of the request yet; too early to tell");
            return Ok(Submission { outcome: SubmitOutcome::Unsettled, job: None, location: None });
        }
        let after = match self.get_item(&before.id).await {
            Ok(item) => Some(item),
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => {
                self.find_item(&before.name, before.lifecycle_id()).await?
            }
            Err(e) => return Err(e),
        };
        if mutation.is_done(before, after.as_ref()) {
            return Ok(Submission { outcome: SubmitOutcome::AlreadyFinished, job: None, location: None });
        }
        if after.as_ref().is_some_and(|a| a.allows(mutation.gate()) && a.running_job_id().is_none()) {
            return Ok(Submission { outcome: SubmitOutcome::NotStarted, job: None, location: None });
        }
        // Neither started by us, nor done, nor allowed: do not invite a second send.
        Err(AsrError::Api {
            operation: format!("settle {} of {}", mutation.action(), before.friendly_name()),
            status: 409,
            code: "OutcomeUnknown".into(),
            message: format!(
                "the request's outcome is unknown: no job carries its request id, {} shows no {} effect, and does not allow it now",
                before.friendly_name(),
                mutation.action()
            ),
            possible_causes: Some("Another operation changed the item, or is running on it.".into()),
            recommended_action: Some(
                "Read the item and its jobs again before deciding to send the request again.".into(),
            ),
            retry_after: None,
        })
    }

    /// The job one of `keys` started on `item`'s VM since `since`, if any shows yet.
    ///
    /// Lists carry no activity id and a new job's placeholder neither scenario nor target
    /// (A2AFailoverCommit-excerpt.json entries 41–141, 147), so each job that may be it — the
    /// one the item names, then every listed job of this VM (or of no VM yet) whose scenario is
    /// this operation's (or none yet) — is read on its own and kept if its activity id begins
    /// with one of the keys. A job is never taken for ours on its scenario alone.
    pub async fn find_submitted(
        &self,
        item: &ProtectedItem,
        mutation: Mutation,
        keys: &[String],
        since: OffsetDateTime,
    ) -> Result<Option<Job>, AsrError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let ours = |job: &Job| keys.iter().any(|k| job.started_by(k));
        let mut checked = HashSet::new();
        let named = match self.get_item(&item.id).await {
            Ok(now) => now.running_job_id().map(|j| last_segment(j).to_ascii_lowercase()),
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(name) = named {
            let job = self.get_job(&name).await?;
            checked.insert(name);
            if ours(&job) {
                return Ok(Some(job));
            }
        }
        let vm = item.friendly_name();
        let query = JobQuery { started_after: Some(since), states: vec![] };
        let mut next: Option<String> = None;
        loop {
            let (page, link) = self.list_jobs_page(&query, next.as_deref()).await?;
            for listed in page {
                let target_fits = listed.target_name().is_none_or(|t| t.eq_ignore_ascii_case(vm));
                let scenario_fits = listed.scenario().is_none_or(|s| mutation.matches_scenario(s));
                if target_fits && scenario_fits && checked.insert(listed.name.to_ascii_lowercase()) {
                    let job = self.get_job(&listed.name).await?;
                    if ours(&job) {
                        return Ok(Some(job));
                    }
                }
            }
            match link {
                Some(link) => next = Some(link),
                None => return Ok(None),
            }
        }
    }

    fn item_action(&self, item: &ProtectedItem, mutation: Mutation) -> String {
        self.asr(&format!("{}/{}", item.id, mutation.action()))
    }

    fn body<T: Serialize>(input: &T) -> Result<Value, AsrError> {
        serde_json::to_value(input).map_err(|e| AsrError::InvalidInput(format!("request body: {e}")))
    }

    /// Unplanned failover of one item (A2A failover and failback). `recovery_point_id`
    /// `None` = latest (ASR processes pending data first). `key`: the request's id
    /// ([`request_key`]).
    pub async fn unplanned_failover(
        &self,
        item: &ProtectedItem,
        direction: FailoverDirection,
        recovery_point_id: Option<String>,
        shut_down_source: bool,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&UnplannedFailoverInput::a2a(direction.as_str(), shut_down_source, recovery_point_id))?;
        self.submit(item, Mutation::Failover, self.item_action(item, Mutation::Failover), Some(body), key).await
    }

    /// Commits a failover (the item's recovery points are discarded).
    pub async fn commit(&self, item: &ProtectedItem, key: impl Into<Sending<'_>>) -> Result<Submission, AsrError> {
        self.submit(item, Mutation::Commit, self.item_action(item, Mutation::Commit), None, key).await
    }

    /// Moves a failed-over item to another recovery point before commit.
    pub async fn apply_recovery_point(
        &self,
        item: &ProtectedItem,
        recovery_point_id: &str,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&ApplyRecoveryPointInput::a2a(recovery_point_id.to_owned()))?;
        let url = self.item_action(item, Mutation::ApplyRecoveryPoint);
        self.submit(item, Mutation::ApplyRecoveryPoint, url, Some(body), key).await
    }

    /// Cancels a failover that is not committed.
    pub async fn cancel_failover(
        &self,
        item: &ProtectedItem,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        self.submit(item, Mutation::CancelFailover, self.item_action(item, Mutation::CancelFailover), None, key).await
    }

    /// Reprotects (A2A switch protection) a committed item, built as Azure PowerShell builds
    /// it: the VM as it runs now is read, and each of its disks is named with the cache storage
    /// account of the region it runs in ([`reprotect_input`]). The item will replicate from
    /// the region it runs in now, and is re-homed under a new id (see [`Job::new_item_id`]).
    pub async fn switch_protection(
        &self,
        item: &ProtectedItem,
        settings: &ReprotectSettings,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let container = item
            .container_id()
            .ok_or_else(|| AsrError::InvalidInput(format!("item id {} has no protection container", item.id)))?;
        let vm = self.running_vm(item).await?;
        let input = reprotect_input(item, &vm, settings, self.config())?;
        let url = self.asr(&format!("{container}/switchprotection"));
        self.submit(item, Mutation::SwitchProtection, url, Some(Self::body(&input)?), key).await
    }

    /// The VM of `item` as it runs now: while failed over, the one in the recovery region
    /// (`recoveryAzureVMName` in `recoveryAzureResourceGroupId`, as PowerShell reads it),
    /// else the source VM (`fabricObjectId`).
    pub async fn running_vm(&self, item: &ProtectedItem) -> Result<VirtualMachine, AsrError> {
        let id = running_vm_id(item).ok_or_else(|| {
            AsrError::InvalidInput(format!("the item {} names no VM it runs as now", item.friendly_name()))
        })?;
        self.get_vm(&id).await?.ok_or_else(|| AsrError::Api {
            operation: format!("GET vm {}", last_segment(&id)),
            status: 404,
            code: "ResourceNotFound".into(),
            message: format!("{id}, the VM {} runs as now, does not exist", item.friendly_name()),
            possible_causes: Some("The VM was deleted or moved after the failover.".into()),
            recommended_action: Some("Check the VM in the region it failed over to.".into()),
            retry_after: None,
        })
    }

    /// Test failover into an isolated network (`None`: no network attached).
    pub async fn test_failover(
        &self,
        item: &ProtectedItem,
        network_id: Option<String>,
        recovery_point_id: Option<String>,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&TestFailoverInput::a2a("PrimaryToRecovery", network_id, recovery_point_id))?;
        self.submit(item, Mutation::TestFailover, self.item_action(item, Mutation::TestFailover), Some(body), key).await
    }

    /// Removes what a test failover created.
    pub async fn test_failover_cleanup(
        &self,
        item: &ProtectedItem,
        comments: &str,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&TestFailoverCleanupInput::new(comments))?;
        let url = self.item_action(item, Mutation::TestFailoverCleanup);
        self.submit(item, Mutation::TestFailoverCleanup, url, Some(body), key).await
    }

    /// Resynchronises an item whose replication is unhealthy.
    pub async fn repair_replication(
        &self,
        item: &ProtectedItem,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        self.submit(item, Mutation::Repair, self.item_action(item, Mutation::Repair), None, key).await
    }

    /// Disables replication (ASR cleans what it created, unmanaged disks included).
    pub async fn disable_replication(
        &self,
        item: &ProtectedItem,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&DisableProtectionInput::new())?;
        self.submit(item, Mutation::Disable, self.item_action(item, Mutation::Disable), Some(body), key).await
    }

    // -----------------------------------------------------------------------------------------
    // Jobs

    /// One job by name or ARM id.
    pub async fn get_job(&self, job: &str) -> Result<Job, AsrError> {
        let name = last_segment(job);
        let detail = format!("GET job {name}");
        self.http.get(&self.vault(&format!("/replicationJobs/{name}")), Op::new("getJob", &detail)).await
    }

    /// Jobs matching `query`, newest first (every page).
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>, AsrError> {
        let mut url = self.vault("/replicationJobs");
        if let Some(f) = query.filter() {
            url.push_str(&format!("&$filter={}", urlencoding::encode(&f)));
        }
        self.collect(url, Op::new("listJobs", "GET replicationJobs")).await
    }

    /// One page of jobs matching `query`; pass the returned link to get the next page.
    pub async fn list_jobs_page(
        &self,
        query: &JobQuery,
        next_link: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), AsrError> {
        let url = match next_link {
            Some(link) => self.asr(link),
            None => {
                let mut url = self.vault("/replicationJobs");
                if let Some(f) = query.filter() {
                    url.push_str(&format!("&$filter={}", urlencoding::encode(&f)));
                }
                url
            }
        };
        let page: Page<Job> = self.http.get(&url, Op::new("listJobs", "GET replicationJobs")).await?;
        Ok((page.value, page.next_link.filter(|l| !l.is_empty())))
    }

    /// Waits for a job to end. A failed status read is retried, never taken for a failed
    /// operation. Returns the job when it succeeded, `JobFailed` when it failed or was
    /// cancelled, `Transport` (timed out) when `deadline` passes first.
    pub async fn wait_job(&self, job: &str, deadline: Option<Duration>) -> Result<Job, AsrError> {
        let span = observe::job_wait_span(last_segment(job));
        let result = self.wait_job_polling(job, deadline, &span).instrument(span.clone()).await;
        observe::job_wait_ended(&span, &result);
        result
    }

    async fn wait_job_polling(
        &self,
        job: &str,
        deadline: Option<Duration>,
        span: &tracing::Span,
    ) -> Result<Job, AsrError> {
        let start = Instant::now();
        loop {
            match self.get_job(job).await {
                Ok(j) => {
                    observe::job_seen(span, &j);
                    match j.state() {
                        JobState::Succeeded => return Ok(j),
                        JobState::Failed | JobState::Cancelled => return Err(job_failure(&j)),
                        _ => {}
                    }
                }
                Err(e) if e.is_retryable() => debug!(job, error = %e, "job status unreadable for now"),
                Err(e) => return Err(e),
            }
            if deadline.is_some_and(|d| start.elapsed() >= d) {
                return Err(AsrError::Transport {
                    operation: format!("wait for job {job}"),
                    message: "deadline passed".into(),
                    timed_out: true,
                });
            }
            tokio::time::sleep(self.config().poll_interval).await;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Recovery plans

    /// Recovery plans of the vault.
    pub async fn list_plans(&self) -> Result<Vec<RecoveryPlan>, AsrError> {
        self.collect(
            self.vault("/replicationRecoveryPlans"),
            Op::new("listRecoveryPlans", "GET replicationRecoveryPlans"),
        )
        .await
    }

    /// One recovery plan.
    pub async fn get_plan(&self, name: &str) -> Result<RecoveryPlan, AsrError> {
        let detail = format!("GET recovery plan {name}");
        self.http
            .get(&self.vault(&format!("/replicationRecoveryPlans/{name}")), Op::new("getRecoveryPlan", &detail))
            .await
    }

    /// `op_name`: the logical operation of spans and metrics.
    async fn plan_action(
        &self,
        name: &str,
        action: &str,
        op_name: &'static str,
        body: Option<Value>,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let operation = format!("POST {action} recovery plan {name}");
        let url = self.vault(&format!("/replicationRecoveryPlans/{name}/{action}"));
        let key = key.into();
        let sent_at = OffsetDateTime::now_utc();
        let op = Op::new(op_name, &operation).sending(key);
        match self.http.mutate(Method::POST, &url, body.as_ref(), op).await {
            Ok(raw) => Ok(Submission {
                outcome: SubmitOutcome::Accepted,
                job: job_name_from(&raw),
                location: raw.header("location").map(str::to_owned),
            }),
            Err(e) if e.is_ambiguous() => {
                // As for items: the plan's job is found by the activity id the request id
                // became; nothing is sent again before the lost-request window has passed.
                let query = JobQuery { started_after: Some(sent_at - CLOCK_SKEW), states: vec![] };
                let mut checked = HashSet::new();
                for listed in self.list_jobs(&query).await? {
                    let fits = listed.target_name().is_none_or(|t| t.eq_ignore_ascii_case(name));
                    if fits && checked.insert(listed.name.clone()) {
                        let job = self.get_job(&listed.name).await?;
                        if job.started_by(key.request_id) {
                            let outcome = if job.state().is_terminal() {
                                SubmitOutcome::AlreadyFinished
                            } else {
                                SubmitOutcome::AlreadyRunning
                            };
                            return Ok(Submission { outcome, job: Some(job.name), location: None });
                        }
                    }
                }
                let window = time::Duration::try_from(self.config().lost_request_window).unwrap_or(time::Duration::MAX);
                let outcome = if OffsetDateTime::now_utc() - sent_at < window {
                    SubmitOutcome::Unsettled
                } else {
                    SubmitOutcome::NotStarted
                };
                Ok(Submission { outcome, job: None, location: None })
            }
            Err(e) => Err(e),
        }
    }

    /// Unplanned failover of a recovery plan. Its fabrics are fixed, so failback is
    /// `RecoveryToPrimary`. `point_type`: `Latest`, `LatestProcessed`,
    /// `LatestApplicationConsistent` or `LatestCrashConsistent` (see [`crate::point`]).
    pub async fn plan_failover(
        &self,
        name: &str,
        direction: FailoverDirection,
        point_type: &str,
        shut_down_source: bool,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&PlanFailoverInput::a2a(direction.as_str(), shut_down_source, point_type))?;
        self.plan_action(name, "unplannedFailover", "planUnplannedFailover", Some(body), key).await
    }

    /// Commits a recovery plan's failover.
    pub async fn plan_commit(&self, name: &str, key: impl Into<Sending<'_>>) -> Result<Submission, AsrError> {
        self.plan_action(name, "failoverCommit", "planCommit", None, key).await
    }

    /// Test failover of a recovery plan.
    pub async fn plan_test_failover(
        &self,
        name: &str,
        direction: FailoverDirection,
        network_id: Option<String>,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&PlanTestFailoverInput::a2a(direction.as_str(), network_id))?;
        self.plan_action(name, "testFailover", "planTestFailover", Some(body), key).await
    }

    /// Cleans up a recovery plan's test failover.
    pub async fn plan_test_failover_cleanup(
        &self,
        name: &str,
        comments: &str,
        key: impl Into<Sending<'_>>,
    ) -> Result<Submission, AsrError> {
        let body = Self::body(&TestFailoverCleanupInput::new(comments))?;
        self.plan_action(name, "testFailoverCleanup", "planTestFailoverCleanup", Some(body), key).await
    }

    // -----------------------------------------------------------------------------------------
    // Compute and network (cleanup)

    /// Every vault the credentials can see: the subscriptions ARM lists for them
    /// (Subscriptions - List), then each one's Recovery Services vaults (Vaults - List By
    /// Subscription Id), as ARM ids. A subscription whose vaults cannot be listed (no role on
    /// it) is left out, with the reason, rather than failing the rest.
    pub async fn discover_vaults(&self) -> Result<(Vec<String>, Vec<String>), AsrError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Subscription {
            subscription_id: String,
        }
        #[derive(serde::Deserialize)]
        struct Vault {
            id: String,
        }
        let url = self.http.url("/subscriptions", SUBSCRIPTIONS_API_VERSION);
        let subs: Vec<Subscription> = self.collect(url, Op::new("listSubscriptions", "GET subscriptions")).await?;
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        for sub in subs {
            let path = format!("/subscriptions/{}/providers/Microsoft.RecoveryServices/vaults", sub.subscription_id);
            match self.collect::<Vault>(self.asr(&path), Op::new("listVaults", "GET vaults")).await {
                Ok(vaults) => found.extend(vaults.into_iter().map(|v| v.id)),
                Err(e) => skipped.push(format!("subscription {}: {e}", sub.subscription_id)),
            }
        }
        Ok((found, skipped))
    }

    fn compute(&self, path: &str) -> String {
        self.http.url(path, &self.config().compute_api_version)
    }

    fn network(&self, path: &str) -> String {
        self.http.url(path, &self.config().network_api_version)
    }

    /// A VM with its power state, or `None` if it does not exist.
    pub async fn get_vm(&self, vm_id: &str) -> Result<Option<VirtualMachine>, AsrError> {
        let url = format!("{}&$expand=instanceView", self.compute(vm_id));
        let detail = format!("GET vm {}", last_segment(vm_id));
        match self.http.get(&url, Op::new("getVirtualMachine", &detail)).await {
            Ok(vm) => Ok(Some(vm)),
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// VMs of a resource group.
    pub async fn list_vms(&self, resource_group: &str) -> Result<Vec<VirtualMachine>, AsrError> {
        let path = format!(
            "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines",
            self.config().subscription_id
        );
        self.collect(self.compute(&path), Op::new("listVirtualMachines", "GET virtualMachines")).await
    }

    /// The vCPU quotas of `region` in `subscription` and what is in use (Compute "Usage -
    /// List"): one budgeted read (a page or two), whatever the fleet's size.
    pub async fn usages(&self, subscription: &str, region: &str) -> Result<Vec<Usage>, AsrError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{region}/usages");
        self.collect(self.compute(&path), Op::new("listUsages", &format!("GET usages {region}"))).await
    }

    /// The VM sizes offered in `region` to `subscription`, with their families, vCPUs and
    /// restrictions (Compute "Resource Skus - List" with `$filter=location eq '{region}'`, the
    /// one filter it supports, api-version 2021-07-01 as the spec's latest for this list).
    pub async fn vm_skus(&self, subscription: &str, region: &str) -> Result<Vec<ResourceSku>, AsrError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.Compute/skus");
        let url = format!("{}&%24filter=location%20eq%20%27{}%27", self.http.url(&path, SKUS_API_VERSION), region);
        let skus: Vec<ResourceSku> =
            self.collect(url, Op::new("listResourceSkus", &format!("GET skus {region}"))).await?;
        Ok(skus.into_iter().filter(|s| s.resource_type.eq_ignore_ascii_case("virtualMachines")).collect())
    }

    /// NICs of a resource group.
    pub async fn list_nics(&self, resource_group: &str) -> Result<Vec<NetworkInterface>, AsrError> {
        let path = format!(
            "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Network/networkInterfaces",
            self.config().subscription_id
        );
        self.collect(self.network(&path), Op::new("listNetworkInterfaces", "GET networkInterfaces")).await
    }

    /// A NIC, or `None`.
    pub async fn get_nic(&self, nic_id: &str) -> Result<Option<NetworkInterface>, AsrError> {
        let detail = format!("GET nic {}", last_segment(nic_id));
        self.get_optional(&self.network(nic_id), Op::new("getNetworkInterface", &detail)).await
    }

    /// A managed disk, or `None`.
    pub async fn get_disk(&self, disk_id: &str) -> Result<Option<ManagedDisk>, AsrError> {
        let detail = format!("GET disk {}", last_segment(disk_id));
        let url = self.http.url(disk_id, &self.config().disk_api_version);
        self.get_optional(&url, Op::new("getDisk", &detail)).await
    }

    /// A public IP address, or `None`.
    pub async fn get_public_ip(&self, id: &str) -> Result<Option<PublicIpAddress>, AsrError> {
        let detail = format!("GET public ip {}", last_segment(id));
        self.get_optional(&self.network(id), Op::new("getPublicIpAddress", &detail)).await
    }

    /// A storage account (to check a cache account exists, and where), or `None`.
    pub async fn get_storage_account(&self, id: &str) -> Result<Option<StorageAccount>, AsrError> {
        let detail = format!("GET storage account {}", last_segment(id));
        let url = self.http.url(id, &self.config().storage_api_version);
        self.get_optional(&url, Op::new("getStorageAccount", &detail)).await
    }

    async fn get_optional<T: serde::de::DeserializeOwned>(&self, url: &str, op: Op<'_>) -> Result<Option<T>, AsrError> {
        match self.http.get(url, op).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The provisioning state of a VM, NIC, disk or public IP (`None`: it does not exist).
    async fn provisioning_state(&self, kind: ResourceKind, id: &str) -> Result<Option<String>, AsrError> {
        Ok(match kind {
            ResourceKind::Vm => self.get_vm(id).await?.map(|v| v.properties.provisioning_state.unwrap_or_default()),
            ResourceKind::Nic => self.get_nic(id).await?.map(|n| n.properties.provisioning_state.unwrap_or_default()),
            ResourceKind::Disk => self.get_disk(id).await?.map(|d| d.properties.provisioning_state.unwrap_or_default()),
            ResourceKind::PublicIp => {
                self.get_public_ip(id).await?.map(|p| p.properties.provisioning_state.unwrap_or_default())
            }
        })
    }

    /// Deletes a VM, NIC, managed disk or public IP (by ARM id) and waits until it is gone.
    /// Deleting something already gone succeeds. Azure is read first, so something already
    /// being deleted (by an earlier attempt whose answer was lost) is waited for, never deleted
    /// a second time; after an ambiguous answer the resource is read rather than deleted again.
    /// `key`: the request's id ([`request_key`]).
    pub async fn delete_resource(&self, id: &str, key: impl Into<Sending<'_>>) -> Result<(), AsrError> {
        let key = key.into();
        let kind = ResourceKind::of(id)
            .ok_or_else(|| AsrError::InvalidInput(format!("{id} is not a VM, NIC, managed disk or public IP")))?;
        let url = match kind {
            ResourceKind::Vm => self.compute(id),
            ResourceKind::Disk => self.http.url(id, &self.config().disk_api_version),
            ResourceKind::Nic | ResourceKind::PublicIp => self.network(id),
        };
        let operation = format!("DELETE {}", last_segment(id));
        match self.provisioning_state(kind, id).await? {
            None => return Ok(()),
            Some(s) if s.eq_ignore_ascii_case("Deleting") => loop {
                tokio::time::sleep(self.config().poll_interval).await;
                if self.provisioning_state(kind, id).await?.is_none() {
                    return Ok(());
                }
            },
            Some(_) => {}
        }
        let op = Op::new(kind.delete_operation(), &operation).sending(key);
        let location = match self.http.mutate(Method::DELETE, &url, None, op).await {
            Ok(raw) => raw.header("location").map(str::to_owned),
            Err(e) if e.class() == crate::error::ErrorClass::NotFound => return Ok(()),
            Err(e) if e.is_ambiguous() => None,
            Err(e) => return Err(e),
        };
        if let Some(location) = location {
            let detail = format!("poll {operation}");
            loop {
                let raw = self.http.get_raw(&location, Op::new("pollOperation", &detail)).await?;
                if raw.status != 202 {
                    break;
                }
                tokio::time::sleep(raw.retry_after().unwrap_or(self.config().poll_interval)).await;
            }
        }
        // Confirm from Azure's state rather than trusting the answer.
        if self.provisioning_state(kind, id).await?.is_none() {
            Ok(())
        } else {
            Err(AsrError::Api {
                operation,
                status: 409,
                code: "NotDeletedYet".into(),
                message: format!("{id} still exists after its delete was accepted"),
                possible_causes: None,
                recommended_action: Some("Retry the cleanup.".into()),
                retry_after: None,
            })
        }
    }

    /// Reads the final answer of an operation's `Location` URL (202 while running).
    pub async fn poll_location(&self, location: &str) -> Result<Option<Value>, AsrError> {
        let raw = self.http.get_raw(location, Op::new("pollOperation", "poll operation")).await?;
        Ok(if raw.status == 202 { None } else { Some(raw.body) })
    }
}

/// The Compute and Network resources cleanup reads and deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResourceKind {
    Vm,
    Nic,
    Disk,
    PublicIp,
}

impl ResourceKind {
    fn of(id: &str) -> Option<Self> {
        let lower = id.to_ascii_lowercase();
        if lower.contains("/providers/microsoft.compute/virtualmachines/") {
            Some(ResourceKind::Vm)
        } else if lower.contains("/providers/microsoft.compute/disks/") {
            Some(ResourceKind::Disk)
        } else if lower.contains("/providers/microsoft.network/networkinterfaces/") {
            Some(ResourceKind::Nic)
        } else if lower.contains("/providers/microsoft.network/publicipaddresses/") {
            Some(ResourceKind::PublicIp)
        } else {
            None
        }
    }

    fn delete_operation(self) -> &'static str {
        match self {
            ResourceKind::Vm => "deleteVirtualMachine",
            ResourceKind::Nic => "deleteNetworkInterface",
            ResourceKind::Disk => "deleteDisk",
            ResourceKind::PublicIp => "deletePublicIpAddress",
        }
    }
}

/// The ARM id of the VM `item` runs as now (see [`AsrClient::running_vm`]).
pub fn running_vm_id(item: &ProtectedItem) -> Option<String> {
    let a2a = item.properties.provider_specific_details.as_ref()?;
    let some = |s: &Option<String>| s.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    if item.active_location().eq_ignore_ascii_case("Recovery") {
        match (some(&a2a.recovery_azure_resource_group_id), some(&a2a.recovery_azure_vm_name)) {
            (Some(rg), Some(name)) => Some(format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}")),
            _ => some(&a2a.recovery_fabric_object_id),
        }
    } else {
        some(&a2a.fabric_object_id)
    }
}

/// The `/subscriptions/{s}/resourceGroups/{rg}` an ARM id lies in.
fn resource_group_id_of(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    let s = parts.iter().position(|p| p.eq_ignore_ascii_case("subscriptions"))?;
    let g = parts.iter().position(|p| p.eq_ignore_ascii_case("resourcegroups"))?;
    Some(format!("/subscriptions/{}/resourceGroups/{}", parts.get(s + 1)?, parts.get(g + 1)?))
}

/// The switch-protection (reprotect) input for `item`, whose VM runs now as `vm`, built the
/// way Azure PowerShell builds it (A2AReprotectTest.json entries 13–16;
/// `UpdateAzureRmRecoveryServicesAsrProtectionDirection.cs`): every disk of the running VM is
/// named — for managed disks their ids (the item's `recoveryTargetDiskId`s), for unmanaged ones
/// their VHD URIs with the storage account the replica goes to — each with the cache storage
/// account of the region the VM runs in, the resource group the VM returns to on the next
/// failover (where it ran before), and the disk types the item keeps (else the VM disk's own).
/// No cache account for that region is an error that says where to name one.
pub fn reprotect_input(
    item: &ProtectedItem,
    vm: &VirtualMachine,
    settings: &ReprotectSettings,
    config: &AsrConfig,
) -> Result<SwitchProtectionInput, AsrError> {
    let container = item
        .container_id()
        .ok_or_else(|| AsrError::InvalidInput(format!("item id {} has no protection container", item.id)))?;
    let a2a = item.properties.provider_specific_details.clone().unwrap_or_default();
    let region = item
        .running_location()
        .map(str::to_owned)
        .or_else(|| vm.location.clone())
        .ok_or_else(|| AsrError::InvalidInput(format!("{} names no region it runs in", item.friendly_name())))?;
    let cache = settings
        .cache_storage_account_id
        .clone()
        .or_else(|| {
            // An account serves VMs of its own subscription: the item's (its vault's).
            let subscription =
                crate::budget::subscription_of(&item.id).unwrap_or_else(|| config.subscription_id.clone());
            crate::config::cache_account_for(&settings.cache_storage_accounts, &region, &subscription)
                .or_else(|| crate::config::cache_account_for(&config.cache_storage_accounts, &region, &subscription))
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            AsrError::InvalidInput(format!(
                "no cache storage account for {region}, where {} runs now: name one for that region in the plan                  (reprotect_target.cache_storage_accounts) or in the configuration (asr.cache_storage_accounts)",
                item.friendly_name()
            ))
        })?;
    // The VM comes back where it ran before the failover.
    let resource_group_id = settings
        .resource_group_id
        .clone()
        .or_else(|| a2a.fabric_object_id.as_deref().and_then(resource_group_id_of))
        .ok_or_else(|| {
            AsrError::InvalidInput(format!("the item {} names no source VM (fabricObjectId)", item.friendly_name()))
        })?;
    let disks = vm.disks();
    let mut vm_managed_disks = Vec::new();
    let mut vm_disks = Vec::new();
    for disk in &disks {
        let disk_name = disk.name.clone().unwrap_or_default();
        if let Some(id) = disk.managed_disk.as_ref().and_then(|m| m.id.clone()).filter(|i| !i.is_empty()) {
            let known = a2a.protected_managed_disks.iter().find(|d| {
                d.recovery_target_disk_id.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(&id))
                    || d.disk_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&disk_name))
            });
            let own = disk.managed_disk.as_ref().and_then(|m| m.storage_account_type.clone());
            let pick = |from_item: Option<&String>| settings.disk_type.clone().or(from_item.cloned()).or(own.clone());
            vm_managed_disks.push(VmManagedDiskInput {
                disk_id: Some(id),
                primary_staging_azure_storage_account_id: Some(cache.clone()),
                recovery_resource_group_id: Some(resource_group_id.clone()),
                recovery_replica_disk_account_type: pick(
                    known.and_then(|d| d.recovery_replica_disk_account_type.as_ref()),
                ),
                recovery_target_disk_account_type: pick(
                    known.and_then(|d| d.recovery_target_disk_account_type.as_ref()),
                ),
            });
        } else if let Some(uri) = disk.vhd.as_ref().and_then(|v| v.uri.clone()).filter(|u| !u.is_empty()) {
            let known = a2a.protected_disks.iter().find(|d| {
                d.recovery_disk_uri.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(&uri))
                    || d.disk_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&disk_name))
            });
            // The replica goes back to the storage account the disk came from.
            let recovery_account =
                known.and_then(|d| d.primary_disk_azure_storage_account_id.clone()).filter(|s| !s.is_empty());
            let recovery_account = recovery_account.ok_or_else(|| {
                AsrError::InvalidInput(format!(
                    "the item {} names no storage account for the replica of disk {uri}",
                    item.friendly_name()
                ))
            })?;
            vm_disks.push(VmDiskInput {
                disk_uri: uri,
                recovery_azure_storage_account_id: recovery_account,
                primary_staging_azure_storage_account_id: cache.clone(),
            });
        }
    }
    if vm_managed_disks.is_empty() && vm_disks.is_empty() {
        return Err(AsrError::InvalidInput(format!("the VM {} has no disks to reprotect", vm.id)));
    }
    Ok(SwitchProtectionInput::a2a(
        item.name.clone(),
        crate::model::A2ASwitchProtection {
            recovery_container_id: Some(container),
            policy_id: settings.policy_id.clone().or_else(|| item.properties.policy_id.clone()),
            recovery_resource_group_id: Some(resource_group_id),
            recovery_availability_set_id: settings.availability_set_id.clone(),
            recovery_availability_zone: settings.availability_zone.clone(),
            recovery_proximity_placement_group_id: settings.proximity_placement_group_id.clone(),
            recovery_capacity_reservation_group_id: settings.capacity_reservation_group_id.clone(),
            vm_disks,
            vm_managed_disks,
        },
    ))
}

/// The error of a failed or cancelled job, with ASR's details.
pub fn job_failure(job: &Job) -> AsrError {
    let (code, message, possible_causes, recommended_action) = job
        .first_error()
        .unwrap_or_else(|| (job.state().to_string(), format!("job ended {}", job.state()), None, None));
    AsrError::JobFailed { job: job.name.clone(), code, message, possible_causes, recommended_action }
}

/// Decodes a final resource (e.g. the item a failover's `Location` answers with).
pub fn decode_final<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, AsrError> {
    decode("final result", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn the_job_name_comes_from_the_request_id_or_the_location() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ms-request-id",
            "/Subscriptions/s/resourceGroups/r/providers/Microsoft.RecoveryServices/vaults/v/replicationJobs/7588f427"
                .parse()
                .unwrap(),
        );
        let raw = RawResponse { status: 202, headers: h, body: Value::Null };
        assert_eq!(job_name_from(&raw).as_deref(), Some("7588f427"));
        let mut h = HeaderMap::new();
        h.insert("x-ms-request-id", "0a1b2c".parse().unwrap());
        h.insert(
            "location",
            "https://management.azure.com/Subscriptions/s/x/operationresults/abc-123?api-version=2025-08-01&t=1"
                .parse()
                .unwrap(),
        );
        let raw = RawResponse { status: 202, headers: h, body: Value::Null };
        assert_eq!(job_name_from(&raw).as_deref(), Some("abc-123"));
    }

    #[test]
    fn an_item_lies_in_the_vault_its_id_names() {
        let vault = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v";
        let item =
            format!("{vault}/replicationFabrics/f/replicationProtectionContainers/c/replicationProtectedItems/vm");
        assert_eq!(vault_of(&item), Some(vault));
        assert_eq!(vault_of(vault), Some(vault));
        assert_eq!(vault_of("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(vault_of(""), None);
    }

    #[test]
    fn scenario_names_match_loosely_but_not_across_operations() {
        assert!(Mutation::SwitchProtection.matches_scenario("SwitchReplicationGroupProtection"));
        assert!(Mutation::Failover.matches_scenario("UnplannedFailover"));
        assert!(!Mutation::Failover.matches_scenario("TestFailover"));
        assert!(!Mutation::TestFailover.matches_scenario("TestFailoverCleanup"));
        assert!(Mutation::Commit.matches_scenario("CommitFailover"));
        assert_eq!(
            resource_group_of("/subscriptions/s/resourcegroups/app-rg/providers/x/y").as_deref(),
            Some("app-rg")
        );
    }
}
