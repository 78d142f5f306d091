//! What the simulator records about its clients, for `/_sim/` and the benchmark: the operation
//! log, the request log, request counters, and when each client first saw each job ended. None
//! of it is Azure behaviour, so the estate knows nothing of it; the server feeds it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::http::Method;
use serde::Serialize;
use time::OffsetDateTime;

use crate::clock::SimTime;
use crate::estate::Estate;
use crate::throttle::RequestClass;
use crate::wire::{JobProperties, OperationStatus, Resource};

/// One mutating ARM request, as `/_sim/oplog` reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpEntry {
    /// When it arrived (simulated time, RFC 3339).
    pub at: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Operation name (e.g. `unplannedFailover`, `switchProtection`, `failoverCommit`, `delete`).
    pub operation: String,
    /// The protected item's name (or the VM/NIC name for deletes; the plan for plan operations).
    pub item: String,
    /// HTTP status answered.
    pub status: u16,
}

/// One ARM request as `/_sim/requests` reports it (every request, reads included).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RequestEntry {
    /// Real milliseconds since the simulator started, when the request arrived.
    pub t_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Status answered.
    pub status: u16,
}

/// How many requests `/_sim/requests` remembers.
const REQUEST_LOG_LIMIT: usize = 200_000;

/// Request counters for `/_sim/counters`: in total, and per subscription (the one whose budget
/// a request drew on).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RequestCounters {
    /// ARM requests received, by class.
    pub reads: u64,
    pub writes: u64,
    pub deletes: u64,
    /// Answered 429 because a bucket was empty.
    pub throttled: u64,
    /// Answered 429 by an injected storm.
    pub storm_throttled: u64,
    /// Answered 5xx by injection.
    pub transient_5xx: u64,
    /// Applied but never answered.
    pub dropped_responses: u64,
    /// Answered 401.
    pub unauthorized: u64,
    /// Answered 401 `ExpiredAuthenticationToken` (`expired_token`).
    pub expired_token: u64,
    /// Answered 503 by a regional outage (`outage`).
    pub outage_503: u64,
    /// Mutating requests answered 429 by `throttle_next_writes`.
    pub next_writes_throttled: u64,
    /// Mutating requests answered 503 by `fail_next_writes` (also in `transient_5xx`).
    pub next_writes_failed: u64,
    /// Mutating requests applied and left unanswered by `drop_next_writes` (also in
    /// `dropped_responses`).
    pub next_writes_dropped: u64,
}

/// When a job was first read ended: by anyone, and by each client (`User-Agent` product).
#[derive(Clone, Debug, Default)]
struct FirstReads {
    any: Option<OffsetDateTime>,
    by: BTreeMap<String, OffsetDateTime>,
}

/// One job's life in wall-clock time, as `/_sim/jobs` reports it (benchmarks measure event
/// latency and job chains with it).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct JobTiming {
    /// The job's name (the last segment of its ARM id).
    pub name: String,
    /// The ARM id of the vault the job belongs to.
    pub vault_id: String,
    /// Operation, as the operation log names it (`unplannedFailover`, `failoverCommit`, ...).
    pub operation: &'static str,
    /// ASR's `scenarioName` (`UnplannedFailover`, `SecondaryIrCompletion`, ...).
    pub scenario: &'static str,
    /// Lowercase name of the protected item it acts on, if any.
    pub item: Option<String>,
    /// `targetObjectName`: the VM (or the VM/NIC deleted, or the recovery plan).
    pub target: String,
    /// ASR's state now.
    pub state: &'static str,
    /// Wall-clock Unix milliseconds at which it was accepted.
    pub created_unix_ms: i64,
    /// Wall-clock Unix milliseconds at which it reaches (or reached) its terminal state.
    pub completed_unix_ms: i64,
    /// Wall-clock Unix milliseconds of the first read (GET or list of jobs, operation status,
    /// `Location`) that answered it terminal; `None` while no client has seen it end.
    pub first_terminal_read_unix_ms: Option<i64>,
    /// The same per client, by the first product token of its `User-Agent` (e.g.
    /// `tern-failover`): when the client that acts on the job first saw it end.
    pub first_terminal_read_by: BTreeMap<String, i64>,
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Everything recorded about the requests served since the estate was made.
#[derive(Debug, Default)]
pub struct Observations {
    /// The operation log.
    pub oplog: Vec<OpEntry>,
    /// Every recent request with its real arrival time.
    pub requests: VecDeque<RequestEntry>,
    /// Request counters, all subscriptions together.
    pub counters: RequestCounters,
    /// Request counters of each subscription, by position: they add up to `counters`.
    pub per_subscription: Vec<RequestCounters>,
    /// (Estate, job name) → when clients were first told it had ended (the moment its
    /// completion was seen).
    first_terminal_reads: HashMap<(usize, String), FirstReads>,
}

impl Observations {
    /// Nothing observed yet, for `subscriptions` subscriptions.
    pub fn new(subscriptions: usize) -> Self {
        Self { per_subscription: vec![RequestCounters::default(); subscriptions], ..Self::default() }
    }

    /// Counts an ARM request by class, for subscription `sub`.
    pub fn count(&mut self, class: RequestClass, sub: usize) {
        self.bump(sub, |c| match class {
            RequestClass::Read => c.reads += 1,
            RequestClass::Write => c.writes += 1,
            RequestClass::Delete => c.deletes += 1,
        });
    }

    /// Applies `f` to the totals and to subscription `sub`'s counters.
    pub fn bump(&mut self, sub: usize, f: impl Fn(&mut RequestCounters)) {
        f(&mut self.counters);
        if let Some(c) = self.per_subscription.get_mut(sub) {
            f(c);
        }
    }

    /// Remembers an ARM request, forgetting the oldest past `REQUEST_LOG_LIMIT`.
    pub fn log_request(&mut self, entry: RequestEntry) {
        if self.requests.len() == REQUEST_LOG_LIMIT {
            self.requests.pop_front();
        }
        self.requests.push_back(entry);
    }

    /// Logs a mutating request answered `status` at simulated time `at`; `item` is what it acted
    /// on, read from the path when the handler did not name it.
    pub fn log_op(&mut self, at: String, method: &Method, path: &str, item: Option<&str>, status: u16) {
        let operation = operation_name(method, path);
        let item = item.map(str::to_owned).unwrap_or_else(|| item_from_path(path));
        self.oplog.push(OpEntry { at, method: method.to_string(), path: path.to_owned(), operation, item, status });
    }

    /// Notes that the client `user_agent` was just told job `name` of estate `estate` has
    /// ended: the first such answer is when its completion was seen.
    pub fn saw_ended(&mut self, estate: usize, name: &str, user_agent: &str) {
        let now = OffsetDateTime::now_utc();
        let first = self.first_terminal_reads.entry((estate, name.to_owned())).or_default();
        first.any.get_or_insert(now);
        first.by.entry(client(user_agent).to_owned()).or_insert(now);
    }

    /// Every job's timing in wall-clock time, oldest first, of every estate (they share one
    /// clock).
    pub fn job_timings(&self, estates: &[Estate]) -> Vec<JobTiming> {
        let mut timed: Vec<(SimTime, JobTiming)> = Vec::new();
        for (e, estate) in estates.iter().enumerate() {
            let now = estate.now();
            let vault_id = estate.scope.vault_id();
            timed.extend(estate.jobs_oldest_first().map(|job| {
                let seen = self.first_terminal_reads.get(&(e, job.name.clone()));
                let timing = JobTiming {
                    name: job.name.clone(),
                    vault_id: vault_id.clone(),
                    operation: job.operation.name(),
                    scenario: job.scenario,
                    item: job.item.clone(),
                    target: job.target_name.clone(),
                    state: job.state(now).as_str(),
                    created_unix_ms: unix_ms(estate.clock.to_wall(job.created)),
                    completed_unix_ms: unix_ms(
                        estate.clock.to_wall(job.cancelled_at.unwrap_or(job.ends).min(job.ends)),
                    ),
                    first_terminal_read_unix_ms: seen.and_then(|f| f.any).map(unix_ms),
                    first_terminal_read_by: seen
                        .map(|f| f.by.iter().map(|(who, t)| (who.clone(), unix_ms(*t))).collect())
                        .unwrap_or_default(),
                };
                (job.created, timing)
            }));
        }
        if estates.len() > 1 {
            // Stable: jobs of one estate created at the same moment keep their order.
            timed.sort_by_key(|(created, _)| *created);
        }
        timed.into_iter().map(|(_, t)| t).collect()
    }
}

/// The job a job answer (a GET or a list entry) tells has ended: one with an `endTime`, which
/// ASR gives only to ended jobs.
pub fn ended_job(job: &Resource<JobProperties>) -> Option<&str> {
    job.properties.end_time.is_some().then_some(job.name.as_str())
}

/// The job an `Azure-AsyncOperation` status tells has ended: one with an `endTime`.
pub fn ended_operation(status: &OperationStatus) -> Option<&str> {
    status.end_time.is_some().then_some(status.name.as_str())
}

/// Who sends a request: the first product token of its `User-Agent` (e.g. `tern-failover`).
fn client(user_agent: &str) -> &str {
    let product = user_agent.split_whitespace().next().unwrap_or("");
    product.split('/').next().unwrap_or(product)
}

fn operation_name(method: &Method, path: &str) -> String {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if *method == Method::DELETE {
        if path.to_ascii_lowercase().contains("/replicationprotecteditems/") { "purge".into() } else { "delete".into() }
    } else if last.eq_ignore_ascii_case("switchprotection") {
        "switchProtection".into()
    } else if *method == Method::POST {
        last.to_owned()
    } else {
        format!("{}:{last}", method.as_str().to_ascii_lowercase())
    }
}

fn item_from_path(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    for key in [
        "replicationprotecteditems",
        "virtualmachines",
        "networkinterfaces",
        "disks",
        "publicipaddresses",
        "replicationrecoveryplans",
        "replicationjobs",
    ] {
        if let Some(i) = segs.iter().position(|s| s.eq_ignore_ascii_case(key)) {
            return segs.get(i + 1).map(|s| (*s).to_owned()).unwrap_or_default();
        }
    }
    String::new()
}
