//! What the bench reads from outside the processes it measures: CPU time and peak memory from
//! `/proc`, message and JetStream counts from nats-server's monitoring endpoint, and the
//! simulator's admin API (`/_sim/counters`, `/_sim/oplog`, `/_sim/jobs`).

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use serde::Deserialize;
use serde_json::Value;

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Peak resident set size so far (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (utime + stime) and `/proc/PID/status` (VmHWM).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("/proc/{pid}/stat is malformed"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat has no field {}", i + 3))
    };
    let cpu_secs = (ticks(11)? + ticks(12)?) / clock_ticks_per_sec();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no VmHWM"))?;
    Ok(ProcSample { cpu_secs, peak_rss_bytes: peak_kib * 1024 })
}

#[allow(unsafe_code)]
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// nats-server's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NatsSample {
    /// Messages received from clients (`/varz` `in_msgs`).
    pub in_msgs: u64,
    /// Messages delivered to clients (`/varz` `out_msgs`).
    pub out_msgs: u64,
    /// Sum of `last_seq` over the KV buckets' streams (`KV_*`): every put, delete and purge.
    pub kv_writes: u64,
    /// JetStream API requests served (`/jsz` `api.total`), when reported.
    pub js_api_total: Option<u64>,
}

#[derive(Deserialize)]
struct Varz {
    in_msgs: u64,
    out_msgs: u64,
}

#[derive(Deserialize)]
struct Jsz {
    api: Option<JsApi>,
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Deserialize)]
struct JsApi {
    total: u64,
}

#[derive(Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Deserialize)]
struct StreamDetail {
    name: String,
    state: StreamState,
}

#[derive(Deserialize)]
struct StreamState {
    last_seq: u64,
}

/// Reads `/varz` and `/jsz?streams=true`.
pub async fn nats(http: &reqwest::Client, monitor: &str) -> anyhow::Result<NatsSample> {
    let varz: Varz = get_json(http, &format!("{monitor}/varz")).await?;
    let jsz: Jsz = get_json(http, &format!("{monitor}/jsz?streams=true")).await?;
    let kv_writes = jsz
        .account_details
        .iter()
        .flat_map(|a| &a.stream_detail)
        .filter(|s| s.name.starts_with("KV_"))
        .map(|s| s.state.last_seq)
        .sum();
    Ok(NatsSample { in_msgs: varz.in_msgs, out_msgs: varz.out_msgs, kv_writes, js_api_total: jsz.api.map(|a| a.total) })
}

/// The simulator's request counters (`/_sim/counters` `requests`).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct SimRequests {
    /// GETs received (throttled ones included).
    pub reads: u64,
    /// PUT/PATCH/POSTs received.
    pub writes: u64,
    /// DELETEs received.
    pub deletes: u64,
    /// Answered 429 because a bucket was empty.
    pub throttled: u64,
    /// Answered 429 by an injected storm (none in the bench).
    pub storm_throttled: u64,
}

impl SimRequests {
    /// Every ARM request received.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.deletes
    }
}

/// Reads `/_sim/counters`.
pub async fn sim_requests(http: &reqwest::Client, sim: &str) -> anyhow::Result<SimRequests> {
    let v: Value = get_json(http, &format!("{sim}/_sim/counters")).await?;
    serde_json::from_value(v["requests"].clone()).context("the simulator's counters have an unexpected shape")
}

/// `/_sim/counters` `per_subscription`: the requests each subscription received.
pub async fn sim_requests_by_subscription(
    http: &reqwest::Client,
    sim: &str,
) -> anyhow::Result<BTreeMap<String, SimRequests>> {
    let v: Value = get_json(http, &format!("{sim}/_sim/counters")).await?;
    let by: BTreeMap<String, SimRequests> = serde_json::from_value(v["per_subscription"].clone())
        .context("the simulator's counters have an unexpected shape")?;
    // Keyed as `tern_asr::budget::subscription_of` spells a subscription: lowercase.
    Ok(by.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
}

/// One mutating request of `/_sim/oplog`.
#[derive(Clone, Debug, Deserialize)]
pub struct OpEntry {
    /// HTTP method.
    pub method: String,
    /// HTTP status answered.
    pub status: u16,
    /// Request path (it names the subscription).
    pub path: String,
}

/// Mutating requests the simulator admitted (any answer but 429), by ARM budget class and by
/// subscription (ARM's buckets are per subscription); the totals are their sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdmittedWrites {
    /// Subscription id → (PUT/PATCH/POSTs that took a write token, DELETEs that took a delete
    /// token).
    pub by_subscription: BTreeMap<String, (u64, u64)>,
    /// Subscription id → mutating requests answered 429.
    pub throttled_by_subscription: BTreeMap<String, u64>,
}

impl AdmittedWrites {
    /// Writes admitted in every subscription.
    pub fn writes(&self) -> u64 {
        self.by_subscription.values().map(|(w, _)| w).sum()
    }

    /// Deletes admitted in every subscription.
    pub fn deletes(&self) -> u64 {
        self.by_subscription.values().map(|(_, d)| d).sum()
    }

    /// Mutating requests answered 429 in every subscription.
    pub fn throttled(&self) -> u64 {
        self.throttled_by_subscription.values().sum()
    }
}

impl serde::Serialize for AdmittedWrites {
    /// The totals beside the per-subscription counts, as the bench's JSON reports them.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({
            "writes": self.writes(),
            "deletes": self.deletes(),
            "throttled": self.throttled(),
            "by_subscription": self.by_subscription,
            "throttled_by_subscription": self.throttled_by_subscription,
        })
        .serialize(serializer)
    }
}

/// Counts `/_sim/oplog` by class.
pub async fn admitted_writes(http: &reqwest::Client, sim: &str) -> anyhow::Result<AdmittedWrites> {
    let log: Vec<OpEntry> = get_json(http, &format!("{sim}/_sim/oplog")).await?;
    let mut a = AdmittedWrites::default();
    for e in log {
        let sub = tern_asr::budget::subscription_of(&e.path).unwrap_or_default();
        match (e.status, e.method.as_str()) {
            (429, _) => *a.throttled_by_subscription.entry(sub).or_default() += 1,
            (_, "DELETE") => a.by_subscription.entry(sub).or_default().1 += 1,
            _ => a.by_subscription.entry(sub).or_default().0 += 1,
        }
    }
    Ok(a)
}

/// One ARM request of `/_sim/requests`.
#[derive(Clone, Debug, Deserialize)]
struct RequestEntry {
    method: String,
    path: String,
}

/// How many requests `/_sim/requests` keeps (the simulator's `REQUEST_LOG_LIMIT`).
const REQUEST_LOG_LIMIT: usize = 200_000;

/// GETs the simulator received, by what they read.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReadsByKind {
    /// Job state: `replicationJobs` (GET or list), `replicationOperationStatus`, `operationresults`
    /// and provider `operations` (the LRO and job polling).
    pub job_polling: u64,
    /// Protected items (GET or list).
    pub protected_items: u64,
    /// Recovery points.
    pub recovery_points: u64,
    /// Compute and network resources.
    pub compute_network: u64,
    /// Anything else (fabrics, containers, policies, ...).
    pub other: u64,
    /// The simulator's request log was full: older requests are not counted.
    pub truncated: bool,
}

/// Reads `/_sim/requests` and sorts the GETs by what they read.
pub async fn reads_by_kind(http: &reqwest::Client, sim: &str) -> anyhow::Result<ReadsByKind> {
    let log: Vec<RequestEntry> = get_json(http, &format!("{sim}/_sim/requests")).await?;
    let mut r = ReadsByKind { truncated: log.len() >= REQUEST_LOG_LIMIT, ..Default::default() };
    for e in log.iter().filter(|e| e.method == "GET") {
        let p = e.path.to_ascii_lowercase();
        let slot = if ["/replicationjobs", "/replicationoperationstatus/", "/operationresults/", "/operations/"]
            .iter()
            .any(|k| p.contains(k))
        {
            &mut r.job_polling
        } else if p.contains("/recoverypoints") {
            &mut r.recovery_points
        } else if p.contains("/replicationprotecteditems") {
            &mut r.protected_items
        } else if p.contains("/microsoft.compute/") || p.contains("/microsoft.network/") {
            &mut r.compute_network
        } else {
            &mut r.other
        };
        *slot += 1;
    }
    Ok(r)
}

/// One job of `/_sim/jobs`, in wall-clock Unix milliseconds.
#[derive(Clone, Debug, Deserialize)]
pub struct SimJob {
    /// Job name (last segment of its ARM id).
    pub name: String,
    /// Operation (`unplannedFailover`, `failoverCommit`, `switchProtection`, ...).
    pub operation: String,
    /// The VM (or deleted resource) it acts on.
    pub target: String,
    /// Accepted.
    pub created_unix_ms: i64,
    /// Ended (or will end).
    pub completed_unix_ms: i64,
    /// First read that answered it ended.
    pub first_terminal_read_unix_ms: Option<i64>,
    /// The same per client (`User-Agent` product, e.g. `tern-failover`).
    #[serde(default)]
    pub first_terminal_read_by: std::collections::BTreeMap<String, i64>,
}

/// Reads `/_sim/jobs`, keyed by lowercase job name.
pub async fn sim_jobs(http: &reqwest::Client, sim: &str) -> anyhow::Result<BTreeMap<String, SimJob>> {
    let jobs: Vec<SimJob> = get_json(http, &format!("{sim}/_sim/jobs"))
        .await
        .context("the simulator has no /_sim/jobs; rebuild tern-asr-sim")?;
    Ok(jobs.into_iter().map(|j| (j.name.to_ascii_lowercase(), j)).collect())
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> anyhow::Result<T> {
    let resp = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}");
    }
    let bytes = resp.bytes().await.with_context(|| format!("reading GET {url}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("GET {url} did not answer the expected JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.peak_rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.cpu_secs >= 0.0);
    }
}
