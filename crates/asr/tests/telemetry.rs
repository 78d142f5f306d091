//! The client's traces and metrics against the simulator over real HTTP: an `asr.request` span
//! per attempt under the caller's span (method, status, operation, job id, Retry-After,
//! attempt), `asr.job_wait` spans around job waits, and the `tern_asr_*` families on the shared
//! registry (requests by operation and status, 429s, budget waits).
//!
//! Each test runs on a current-thread runtime with a capturing subscriber set as the thread's
//! default, so the spans of the client (and of the watcher task it spawns) all reach it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client_config, sim_config, start_sim};
use tern_asr::client::{AsrClient, FailoverDirection, SubmitOutcome};
use tern_asr::watcher::{JobWatcher, WatcherOptions};
use tern_asr::{Budget, BudgetConfig, LocalBudget, Rate, TokenProvider, Unlimited};
use tern_asr_sim::{BucketConfig, RunningSimulator};
use tern_telemetry::metrics::registry;
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

// ---------------------------------------------------------------------------------------------
// A layer that keeps every span's name, parent and fields.

#[derive(Clone, Debug)]
struct Captured {
    id: u64,
    name: &'static str,
    /// Index of the parent in the capture.
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Capture {
    /// Span ids are reused once a span closes: the latest capture with an id is the live one.
    fn index_of(spans: &[Captured], id: u64) -> Option<usize> {
        spans.iter().rposition(|s| s.id == id)
    }

    fn spans(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent_id = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        let parent = parent_id.and_then(|p| Self::index_of(&spans, p));
        spans.push(Captured { id: id.into_u64(), name: attrs.metadata().name(), parent, fields });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(i) = Self::index_of(&spans, id.into_u64()) {
            values.record(&mut Fields(&mut spans[i].fields));
        }
    }
}

/// Captures the spans of this thread until the guard drops.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

// ---------------------------------------------------------------------------------------------
// Simulator and client.

fn client_with(sim: &RunningSimulator, budget: Arc<dyn Budget>) -> AsrClient {
    AsrClient::new(client_config(sim), TokenProvider::static_token("test-token"), budget).unwrap()
}

async fn item(c: &AsrClient, vm: &str) -> tern_asr::model::ProtectedItem {
    c.find_item_by_vm_name(vm, None).await.unwrap().unwrap_or_else(|| panic!("{vm} is protected"))
}

fn key(what: &str) -> String {
    tern_asr::client::request_key(&["telemetry-test", what, &rand::random::<u64>().to_string()])
}

/// The value of one series (`name{labels}`), 0 when absent.
fn metric(series: &str) -> f64 {
    let text = registry().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0.0)
}

fn requests(operation: &str, method: &str, status: &str) -> f64 {
    metric(&format!("tern_asr_requests_total{{operation=\"{operation}\",method=\"{method}\",status=\"{status}\"}}"))
}

/// A field recorded as seconds.
fn seconds(span: &Captured, field: &str) -> Option<f64> {
    span.get(field).map(|v| v.parse().unwrap_or_else(|_| panic!("{field} = {v:?} is no number")))
}

fn requests_of<'a>(spans: &'a [Captured], operation: &str) -> Vec<&'a Captured> {
    spans.iter().filter(|s| s.name == "asr.request" && s.get("tern.asr.operation") == Some(operation)).collect()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn a_side_effect_and_its_job_wait_are_traced_under_the_callers_span_and_counted() {
    let sim = start_sim(sim_config(2)).await;
    let c = client_with(&sim, Arc::new(Unlimited));
    let (capture, _guard) = capture();
    let (posts, gets, refused) = (
        requests("unplannedFailover", "POST", "202"),
        requests("getJob", "GET", "200"),
        metric("tern_asr_requests_total{operation=\"commit\",method=\"POST\",status=\"400\"}")
            + metric("tern_asr_requests_total{operation=\"commit\",method=\"POST\",status=\"409\"}"),
    );

    let command = tracing::info_span!("command");
    let (sub, job) = async {
        let vm = item(&c, "vm-00001").await;
        let sub =
            c.unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, true, &key("fo")).await.unwrap();
        assert_eq!(sub.outcome, SubmitOutcome::Accepted);
        let job = c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
        // A protected item cannot be committed: ASR refuses.
        let other = item(&c, "vm-00002").await;
        c.commit(&other, &key("commit")).await.unwrap_err();
        (sub, job)
    }
    .instrument(command)
    .await;
    let job_name = sub.job.clone().unwrap();
    assert_eq!(job.name, job_name);

    let spans = capture.spans();
    let root = spans.iter().position(|s| s.name == "command").expect("the command span");

    // The side effect.
    let failover = requests_of(&spans, "unplannedFailover");
    assert_eq!(failover.len(), 1, "{spans:#?}");
    let post = failover[0];
    assert_eq!(post.parent, Some(root), "a request nests under the caller's span: {post:#?}");
    assert_eq!(post.get("otel.name"), Some("POST unplannedFailover"));
    assert_eq!(post.get("otel.kind"), Some("client"));
    assert_eq!(post.get("http.request.method"), Some("POST"));
    assert_eq!(post.get("http.response.status_code"), Some("202"));
    assert_eq!(post.get("tern.asr.job_id"), Some(job_name.as_str()), "{post:#?}");
    assert_eq!(post.get("tern.asr.attempt"), Some("1"));
    assert_eq!(seconds(post, "tern.asr.retry_after_s"), Some(0.0), "the simulator at zero latency says 0");
    assert!(seconds(post, "tern.asr.budget_wait_s").is_some(), "{post:#?}");
    assert_eq!(post.get("otel.status_code"), None, "a 202 is no error");
    let path = post.get("url.path").unwrap();
    assert!(path.to_ascii_lowercase().starts_with("/subscriptions/") && path.ends_with("/unplannedFailover"), "{path}");
    assert!(!path.contains('?'), "no query string: {path}");

    // Reads before it, also under the command.
    let list = requests_of(&spans, "listProtectedItems");
    assert!(!list.is_empty() && list.iter().all(|s| s.parent == Some(root)));
    assert_eq!(list[0].get("otel.name"), Some("GET listProtectedItems"));
    assert_eq!(list[0].get("http.response.status_code"), Some("200"));

    // The job wait, and its status reads under it.
    let wait = spans.iter().position(|s| s.name == "asr.job_wait").expect("a job wait span");
    let w = &spans[wait];
    assert_eq!(w.parent, Some(root));
    assert_eq!(w.get("otel.name"), Some(format!("wait job {job_name}").as_str()));
    assert_eq!(w.get("tern.asr.job_id"), Some(job_name.as_str()));
    assert_eq!(w.get("tern.asr.job_state"), Some("Succeeded"));
    assert_eq!(w.get("otel.status_code"), None);
    let polls = requests_of(&spans, "getJob");
    assert!(!polls.is_empty());
    for p in &polls {
        assert_eq!(p.parent, Some(wait), "job reads nest under the wait: {p:#?}");
        assert_eq!(p.get("otel.name"), Some("GET getJob"));
        assert_eq!(p.get("tern.asr.job_id"), Some(job_name.as_str()), "the job named by the body");
    }

    // The refusal.
    let commit = requests_of(&spans, "commit");
    assert_eq!(commit.len(), 1);
    let status: u16 = commit[0].get("http.response.status_code").unwrap().parse().unwrap();
    assert!((400..500).contains(&status), "{:#?}", commit[0]);
    assert_eq!(commit[0].get("otel.status_code"), Some("ERROR"));
    assert_eq!(commit[0].get("error.type"), Some(status.to_string().as_str()));
    assert!(commit[0].get("tern.asr.error_code").is_some(), "ASR's code is kept: {:#?}", commit[0]);

    // Metrics.
    // `>=`: under `cargo test` the other tests of this binary share the registry.
    assert!(requests("unplannedFailover", "POST", "202") - posts >= 1.0);
    assert!(requests("getJob", "GET", "200") - gets >= polls.len() as f64);
    let refused_now = metric("tern_asr_requests_total{operation=\"commit\",method=\"POST\",status=\"400\"}")
        + metric("tern_asr_requests_total{operation=\"commit\",method=\"POST\",status=\"409\"}");
    assert!(refused_now - refused >= 1.0, "{}", registry().render());
    assert!(metric("tern_asr_budget_wait_seconds_count{class=\"write\"}") >= 2.0, "{}", registry().render());
    assert!(metric("tern_asr_budget_wait_seconds_count{class=\"read\"}") >= 3.0);
    assert!(
        metric("tern_asr_request_duration_seconds_count{operation=\"unplannedFailover\",method=\"POST\"}") >= 1.0,
        "{}",
        registry().render()
    );
    let text = registry().render();
    for help in [
        "# HELP tern_asr_requests HTTP requests sent to Azure Resource Manager",
        "# HELP tern_asr_budget_wait_seconds Time requests waited for the ARM request budget",
        "# TYPE tern_asr_budget_wait_seconds histogram",
    ] {
        assert!(text.contains(help), "{help} missing:\n{text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_429_is_counted_and_its_retry_after_traced_on_the_attempt() {
    let mut config = sim_config(1);
    // One read, then nothing for a second.
    config.throttle.enabled = true;
    config.throttle.reads = BucketConfig { capacity: 1.0, refill_per_sec: 1.0 };
    let sim = start_sim(config).await;
    let c = client_with(&sim, Arc::new(Unlimited));
    let (capture, _guard) = capture();
    let throttled = metric("tern_asr_throttled_total{operation=\"listFabrics\"}");
    let (ok, too_many) = (requests("listFabrics", "GET", "200"), requests("listFabrics", "GET", "429"));

    c.list_fabrics().await.unwrap();
    c.list_fabrics().await.expect("the 429 is waited out");

    assert!(
        metric("tern_asr_throttled_total{operation=\"listFabrics\"}") - throttled >= 1.0,
        "{}",
        registry().render()
    );
    assert!(requests("listFabrics", "GET", "429") - too_many >= 1.0);
    assert!(requests("listFabrics", "GET", "200") - ok >= 2.0);
    assert!(c.stats().throttled.load(std::sync::atomic::Ordering::Relaxed) >= 1, "HttpStats still counts 429s");

    let spans = capture.spans();
    let attempts = requests_of(&spans, "listFabrics");
    let refused = attempts.iter().find(|s| s.get("http.response.status_code") == Some("429")).expect("a 429 attempt");
    assert_eq!(seconds(refused, "tern.asr.retry_after_s"), Some(1.0), "{refused:#?}");
    assert_eq!(refused.get("otel.status_code"), Some("ERROR"));
    assert_eq!(refused.get("error.type"), Some("429"));
    let last = attempts.last().unwrap();
    assert_eq!(last.get("http.response.status_code"), Some("200"));
    assert!(last.get("tern.asr.attempt").unwrap().parse::<u32>().unwrap() >= 2, "the resend is attempt 2+: {last:#?}");
    assert_eq!(last.parent, None, "no caller span: the attempts are roots");
}

#[tokio::test(flavor = "current_thread")]
async fn time_waiting_for_the_arm_budget_is_measured() {
    let sim = start_sim(sim_config(1)).await;
    let budget =
        LocalBudget::new(BudgetConfig { reads: Rate { capacity: 1.0, per_second: 10.0 }, ..BudgetConfig::default() });
    let c = client_with(&sim, Arc::new(budget));
    let (capture, _guard) = capture();
    let (count, sum) = (
        metric("tern_asr_budget_wait_seconds_count{class=\"read\"}"),
        metric("tern_asr_budget_wait_seconds_sum{class=\"read\"}"),
    );

    for _ in 0..4 {
        c.list_policies().await.unwrap();
    }

    assert!(metric("tern_asr_budget_wait_seconds_count{class=\"read\"}") - count >= 4.0);
    let waited = metric("tern_asr_budget_wait_seconds_sum{class=\"read\"}") - sum;
    assert!(waited >= 0.2, "three reads beyond the burst wait ~0.1 s each: {waited}");
    let spans = capture.spans();
    let slow = requests_of(&spans, "listPolicies")
        .iter()
        .filter(|s| seconds(s, "tern.asr.budget_wait_s").unwrap() > 0.05)
        .count();
    assert!(slow >= 2, "the wait is on the request span: {spans:#?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lost_response_counts_as_an_error_and_marks_its_span() {
    let mut config = sim_config(1);
    config.faults.drop_response_rate = 1.0;
    config.faults.drop_response_hang_secs = 30;
    let sim = start_sim(config).await;
    let mut cfg = client_config(&sim);
    cfg.request_timeout = Duration::from_millis(700);
    let c = AsrClient::new(cfg, TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    let (capture, _guard) = capture();
    let errors = requests("unplannedFailover", "POST", "error");

    let vm = item(&c, "vm-00001").await;
    let sub = c.unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, &key("fo")).await.unwrap();
    assert_eq!(sub.outcome, SubmitOutcome::AlreadyFinished, "{sub:?}");

    assert!(requests("unplannedFailover", "POST", "error") - errors >= 1.0, "{}", registry().render());
    let spans = capture.spans();
    let post = requests_of(&spans, "unplannedFailover");
    assert_eq!(post.len(), 1, "sent once");
    assert_eq!(post[0].get("otel.status_code"), Some("ERROR"));
    assert_eq!(post[0].get("error.type"), Some("timeout"));
    assert_eq!(post[0].get("http.response.status_code"), None);
    // Reconciliation reads follow, each traced.
    assert!(!requests_of(&spans, "listJobs").is_empty(), "{spans:#?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_watched_job_wait_is_a_span_and_the_polls_are_their_own_traces() {
    let mut config = sim_config(1);
    config.zero_latency = false;
    config.time_compression = 200.0;
    let sim = start_sim(config).await;
    let c = client_with(&sim, Arc::new(Unlimited));
    let (capture, _guard) = capture();
    let vm = item(&c, "vm-00001").await;
    let sub = c.unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, &key("fo")).await.unwrap();
    let job_name = sub.job.unwrap();
    let watcher = JobWatcher::spawn(
        c.clone(),
        WatcherOptions { interval: Duration::from_millis(100), max_reads_per_sec: 20.0, ..WatcherOptions::default() },
    );

    let command = tracing::info_span!("command");
    let job = watcher.wait(&job_name).instrument(command).await.unwrap();
    assert_eq!(job.name, job_name);

    let spans = capture.spans();
    let root = spans.iter().position(|s| s.name == "command").unwrap();
    let wait = spans.iter().find(|s| s.name == "asr.job_wait").expect("a job wait span");
    assert_eq!(wait.parent, Some(root));
    assert_eq!(wait.get("otel.name"), Some(format!("wait job {job_name}").as_str()));
    assert_eq!(wait.get("tern.asr.job_id"), Some(job_name.as_str()));
    assert_eq!(wait.get("tern.asr.job_state"), Some("Succeeded"));
    let poll = spans.iter().position(|s| s.name == "asr.job_poll").expect("a poll span");
    assert_eq!(spans[poll].parent, None, "a poll serves every waiter: its own root");
    assert_eq!(spans[poll].get("tern.asr.pages"), Some("1"));
    let lists = requests_of(&spans, "listJobs");
    assert!(!lists.is_empty() && lists.iter().all(|s| s.parent.is_some_and(|p| spans[p].name == "asr.job_poll")));
}
