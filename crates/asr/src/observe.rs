//! Traces and metrics of the client: one `asr.request` span per HTTP attempt, one
//! `asr.job_wait` span per job wait, and the `tern_asr_*` families on the shared registry.
//!
//! Spans are created where the work starts, so they are children of whatever span is current
//! then (a worker's command span); the work is `instrument`ed with them across its awaits.
//!
//! | Span | Fields |
//! |---|---|
//! | `asr.request` (`otel.name` = `"{METHOD} {operation}"`, kind client) | `http.request.method`, `http.response.status_code`, `url.path`, `tern.asr.operation`, `tern.asr.attempt`, `tern.asr.budget_wait_s`, `tern.asr.retry_after_s`, `tern.asr.job_id`, `tern.asr.error_code`, `error.type`, `otel.status_code` |
//! | `asr.job_wait` (`otel.name` = `"wait job {name}"`) | `tern.asr.job_id`, `tern.asr.job_state`, `tern.asr.error_code`, `error.type`, `otel.status_code` |
//! | `asr.job_poll` (root; the job watcher's list requests) | `tern.asr.tracked`, `tern.asr.pages` |
//!
//! | Metric | Labels |
//! |---|---|
//! | `tern_asr_requests_total` | `operation`, `method`, `status` (HTTP status, or `error`) |
//! | `tern_asr_throttled_total` | `operation` |
//! | `tern_asr_budget_wait_seconds` (histogram) | `class` (`read`, `write`, `delete`) |
//! | `tern_asr_request_duration_seconds` (histogram) | `operation`, `method` |

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tern_telemetry::metrics::{CounterFamily, HistogramFamily, labels, registry};
use tracing::Span;
use tracing::field::Empty;

use crate::budget::RequestClass;
use crate::client::Sending;
use crate::error::AsrError;
use crate::http::{RawResponse, SendGuard};
use crate::model::Job;

/// What a request is for.
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    /// The logical operation (`getJob`, `unplannedFailover`, …): the `tern.asr.operation` span
    /// field and the `operation` metric label. A fixed set, so label cardinality stays bounded.
    pub name: &'static str,
    /// What errors and logs say about this request (e.g. `GET job 7588f427`).
    pub detail: &'a str,
    /// The `x-ms-client-request-id` to send; `None` sends a fresh one. A side effect sends a
    /// deterministic one: ASR makes it the prefix of its job's `activityId`, so the job can be
    /// found again after a lost answer.
    pub request_id: Option<&'a str>,
    /// Asked right before the request goes out (after any wait): a refusal keeps it unsent.
    pub guard: Option<&'a dyn SendGuard>,
}

impl<'a> Op<'a> {
    /// `name` (logical, bounded) described as `detail` in errors.
    pub fn new(name: &'static str, detail: &'a str) -> Self {
        Self { name, detail, request_id: None, guard: None }
    }

    /// The same, a side effect sent as `sending` says (its request id, its guard).
    pub fn sending(self, sending: Sending<'a>) -> Self {
        Self { request_id: Some(sending.request_id), guard: sending.guard, ..self }
    }
}

struct Metrics {
    requests: CounterFamily,
    throttled: CounterFamily,
    budget_wait: HistogramFamily,
    duration: HistogramFamily,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = registry();
        Metrics {
            requests: r.counter(
                "tern_asr_requests",
                "HTTP requests sent to Azure Resource Manager, by operation, method and status",
            ),
            throttled: r.counter("tern_asr_throttled", "429 answers from Azure Resource Manager, by operation"),
            budget_wait: r
                .histogram("tern_asr_budget_wait_seconds", "Time requests waited for the ARM request budget, by class"),
            duration: r.histogram(
                "tern_asr_request_duration_seconds",
                "Duration of HTTP requests to Azure Resource Manager, by operation and method",
            ),
        }
    })
}

fn class_label(class: RequestClass) -> &'static str {
    match class {
        RequestClass::Read => "read",
        RequestClass::Write => "write",
        RequestClass::Delete => "delete",
    }
}

/// The span of one HTTP attempt (`attempt` counts from 1, throttled resends included).
pub(crate) fn request_span(method: &Method, url: &str, op: Op<'_>, attempt: u32) -> Span {
    let otel_name = format!("{} {}", method.as_str(), op.name);
    tracing::info_span!(
        "asr.request",
        otel.name = otel_name.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.response.status_code = Empty,
        url.path = url_path(url),
        error.type = Empty,
        tern.asr.operation = op.name,
        tern.asr.attempt = attempt,
        tern.asr.budget_wait_s = Empty,
        tern.asr.retry_after_s = Empty,
        tern.asr.job_id = Empty,
        tern.asr.error_code = Empty,
    )
}

/// The request passed the budget after `waited`.
pub(crate) fn budget_waited(span: &Span, class: RequestClass, waited: Duration) {
    span.record("tern.asr.budget_wait_s", waited.as_secs_f64());
    metrics().budget_wait.get_or_create(&labels(&[("class", class_label(class))])).observe(waited.as_secs_f64());
}

/// The request was not sent: the budget or the token failed.
pub(crate) fn not_sent(span: &Span, error_type: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}

/// A sent request ended without a usable response (connect, timeout, reset, body cut off);
/// `status` when the status line had arrived.
pub(crate) fn transport_failed(
    span: &Span,
    method: &Method,
    op: Op<'_>,
    status: Option<u16>,
    timed_out: bool,
    took: Duration,
) {
    if let Some(s) = status {
        span.record("http.response.status_code", s);
    }
    span.record("otel.status_code", "ERROR");
    span.record("error.type", if timed_out { "timeout" } else { "transport" });
    count(method, op, "error", took);
}

/// A response came back (any status).
pub(crate) fn responded(span: &Span, method: &Method, url: &str, op: Op<'_>, raw: &RawResponse, took: Duration) {
    span.record("http.response.status_code", raw.status);
    if let Some(d) = raw.retry_after() {
        span.record("tern.asr.retry_after_s", d.as_secs_f64());
    }
    if let Some(job) = job_id_of(url, raw) {
        span.record("tern.asr.job_id", job.as_str());
    }
    if raw.status >= 400 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", raw.status.to_string().as_str());
    }
    if raw.status == 429 {
        metrics().throttled.get_or_create(&labels(&[("operation", op.name)])).inc();
    }
    count(method, op, &raw.status.to_string(), took);
}

/// The ASR error code of a refused request.
pub(crate) fn refused(span: &Span, error: &AsrError) {
    if let Some(code) = error.code() {
        span.record("tern.asr.error_code", code);
    }
}

fn count(method: &Method, op: Op<'_>, status: &str, took: Duration) {
    let m = metrics();
    m.requests.get_or_create(&labels(&[("operation", op.name), ("method", method.as_str()), ("status", status)])).inc();
    m.duration
        .get_or_create(&labels(&[("operation", op.name), ("method", method.as_str())]))
        .observe(took.as_secs_f64());
}

/// The span of a wait for job `name`.
pub(crate) fn job_wait_span(name: &str) -> Span {
    let otel_name = format!("wait job {name}");
    tracing::info_span!(
        "asr.job_wait",
        otel.name = otel_name.as_str(),
        otel.status_code = Empty,
        error.type = Empty,
        tern.asr.job_id = name,
        tern.asr.job_state = Empty,
        tern.asr.error_code = Empty,
    )
}

/// The job's latest state, as a wait sees it.
pub(crate) fn job_seen(span: &Span, job: &Job) {
    span.record("tern.asr.job_state", job.state().as_str());
}

/// How a job wait ended.
pub(crate) fn job_wait_ended(span: &Span, result: &Result<Job, AsrError>) {
    match result {
        Ok(job) => job_seen(span, job),
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            let kind = match e {
                AsrError::JobFailed { .. } => "job_failed",
                AsrError::Transport { timed_out: true, .. } => "timeout",
                AsrError::Transport { .. } => "transport",
                _ => "error",
            };
            span.record("error.type", kind);
            if let Some(code) = e.code() {
                span.record("tern.asr.error_code", code);
            }
        }
    }
}

/// A root span for one poll of the job watcher: its list requests serve every waiter, so they
/// belong to no single caller's trace.
pub(crate) fn job_poll_span(tracked: usize) -> Span {
    tracing::info_span!(parent: None, "asr.job_poll", otel.name = "poll jobs", tern.asr.tracked = tracked, tern.asr.pages = Empty)
}

/// The path of `url` (no query: it may carry tokens such as `skipToken`).
pub(crate) fn url_path(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.path().to_owned(),
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// The scheme, host and port of `url` (nothing after: paths and queries may carry secrets).
pub(crate) fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "a URL that does not parse".to_owned(),
    }
}

/// The ASR job an ASR response names: an accepted operation's `x-ms-request-id` or `Location`
/// (see [`crate::client::job_name_from`]), its `Azure-AsyncOperation` status URL, or a job
/// resource in the body. Only for Recovery Services paths: Compute and Network operation ids
/// are not jobs.
pub(crate) fn job_id_of(url: &str, raw: &RawResponse) -> Option<String> {
    let path = url_path(url).to_ascii_lowercase();
    if !path.contains("/microsoft.recoveryservices/") {
        return None;
    }
    if let Some(job) = crate::client::job_name_from(raw) {
        return Some(job);
    }
    if let Some(status) = raw.header("azure-asyncoperation") {
        let path = url_path(status);
        let lower = path.to_ascii_lowercase();
        if let Some(at) = lower.find("/replicationoperationstatus/") {
            let rest = &path[at + "/replicationoperationstatus/".len()..];
            if let Some(name) = rest.split('/').next().filter(|n| !n.is_empty()) {
                return Some(name.to_owned());
            }
        }
    }
    match &raw.body {
        Value::Object(o) => o
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| id.to_ascii_lowercase().contains("/replicationjobs/"))
            .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
            .map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    const VAULT: &str =
        "https://management.azure.com/subscriptions/s/resourceGroups/r/providers/Microsoft.RecoveryServices/vaults/v";

    fn raw(headers: &[(&'static str, &str)], body: Value) -> RawResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        RawResponse { status: 202, headers: h, body }
    }

    #[test]
    fn the_path_drops_the_query() {
        assert_eq!(
            url_path("https://h/subscriptions/s/x?api-version=1&skipToken=secret"),
            "/subscriptions/s/x".to_owned()
        );
        assert_eq!(url_path("/a/b?c=d"), "/a/b");
    }

    #[test]
    fn the_job_comes_from_headers_or_the_body_of_asr_responses_only() {
        let url = format!("{VAULT}/replicationFabrics/f/x/unplannedFailover?api-version=1");
        let by_status = raw(
            &[("azure-asyncoperation", &format!("{VAULT}/replicationOperationStatus/j-1?api-version=1"))],
            json!(null),
        );
        assert_eq!(job_id_of(&url, &by_status).as_deref(), Some("j-1"));
        let by_location = raw(&[("location", &format!("{VAULT}/x/operationresults/j-2?api-version=1"))], json!(null));
        assert_eq!(job_id_of(&url, &by_location).as_deref(), Some("j-2"));
        let get_job = raw(&[], json!({"id": "/subscriptions/s/x/replicationJobs/j-3", "name": "j-3"}));
        assert_eq!(job_id_of(&format!("{VAULT}/replicationJobs/j-3?api-version=1"), &get_job).as_deref(), Some("j-3"));
        assert_eq!(job_id_of(&url, &raw(&[], json!({"id": "/subscriptions/s/items/i"}))), None);
        let compute = "https://h/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/vm";
        let delete = raw(
            &[("location", "https://h/subscriptions/s/providers/Microsoft.Compute/locations/l/operationResults/op")],
            json!(null),
        );
        assert_eq!(job_id_of(compute, &delete), None, "a Compute operation is no ASR job");
    }
}
