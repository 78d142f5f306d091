//! A plan followed the way an SRE follows it: one OpenTelemetry trace across every process
//! (planner and the three workers, each its own process, spans exported over OTLP to a
//! receiver in this test), and Prometheus metrics scraped from every service afterwards.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use tern_proto::{GetPlanRequest, NameList, PlanSpec, PlanState, Selection, SubmitPlanRequest, selection};
use tern_testkit::otlp::{ReceivedSpan, Receiver};
use tern_testkit::stack::{DEADLINE, Stack, ready_for_failback};

const SERVICES: [&str; 4] = ["tern-planner", "tern-failover", "tern-reprotect", "tern-cleanup"];

/// A service binary built next to the planner's (`cargo build --workspace --bins`).
fn bin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_tern-planner")).with_file_name(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins`", path.display());
    path.display().to_string()
}

struct Running {
    stack: Stack,
    otlp: Receiver,
    grpc: tern_proto::auth::Client,
    /// Process index of each service in the stack.
    index: HashMap<&'static str, usize>,
}

async fn start(vms: usize) -> Running {
    let otlp = Receiver::start().unwrap();
    let mut stack = Stack::start(ready_for_failback(vms)).await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("TERN_LISTEN", "127.0.0.1:0"),
    ];
    let mut index = HashMap::new();
    for service in SERVICES {
        index.insert(service, stack.spawn(&bin(service), &env));
    }
    let addr = stack.ready[index["tern-planner"]]["grpc"].as_str().expect("the planner's gRPC address").to_owned();
    let grpc = stack.planner_client(&addr).await.unwrap();
    Running { stack, otlp, grpc, index }
}

async fn run_plan(r: &mut Running, vms: usize) -> String {
    let names: Vec<String> = (1..=vms).map(|i| format!("vm-{i:05}")).collect();
    let spec = PlanSpec {
        vault_id: r.stack.asr_client().config().vault_id(),
        selection: Some(Selection { by: Some(selection::By::VmNames(NameList { values: names })) }),
        ..Default::default()
    };
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(spec) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let grpc = r.grpc.clone();
    let plan = tern_testkit::wait_for("the plan to end", DEADLINE, || {
        let (mut grpc, plan_id) = (grpc.clone(), plan_id.clone());
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id }).await.ok()?.into_inner();
            (p.finished_at.is_some()).then_some(p)
        }
    })
    .await
    .unwrap();
    assert_eq!(plan.state(), PlanState::Completed, "{:?}", plan.counts);
    plan_id
}

#[tokio::test]
async fn a_plan_is_one_trace_across_every_process_and_nats() {
    let mut r = start(2).await;
    let plan_id = run_plan(&mut r, 2).await;

    // Wait until every service has exported its part (batches leave every 200 ms).
    let otlp = &r.otlp;
    let spans: Vec<ReceivedSpan> = tern_testkit::wait_for("spans from every service", DEADLINE, || {
        let spans = otlp.spans();
        async move {
            let from: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            let asr = spans.iter().filter(|s| s.attr("http.response.status_code").is_some()).count();
            // A parent ends after its children, so it may come a batch later.
            let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let whole = spans.iter().all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()));
            (SERVICES.iter().all(|s| from.contains(s)) && asr > 0 && whole).then_some(spans)
        }
    })
    .await
    .unwrap();

    // One trace for the plan, rooted at SubmitPlan in the planner.
    let root = spans
        .iter()
        .find(|s| s.name == "SubmitPlan" && s.attr("tern.plan_id") == Some(plan_id.as_str()))
        .unwrap_or_else(|| panic!("no SubmitPlan span for {plan_id}: {spans:#?}"));
    assert_eq!(root.service, "tern-planner");
    let of_plan: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| s.attr("tern.plan_id") == Some(plan_id.as_str())).collect();
    let traces: BTreeSet<&str> = of_plan.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces, BTreeSet::from([root.trace_id.as_str()]), "every span of the plan is in one trace");
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
    for service in SERVICES {
        assert!(in_trace.iter().any(|s| s.service == service), "{service} has spans in the plan's trace");
    }

    // Parent/child links cross NATS: a worker span's parent is a planner span, and a planner
    // span's parent is a worker span (the progression that follows a worker's event).
    let by_id: HashMap<&str, &ReceivedSpan> = in_trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let parent_service = |s: &ReceivedSpan| by_id.get(s.parent_span_id.as_str()).map(|p| p.service.clone());
    for worker in &SERVICES[1..] {
        assert!(
            in_trace.iter().any(|s| s.service == *worker && parent_service(s).as_deref() == Some("tern-planner")),
            "a {worker} span is the child of a planner span"
        );
    }
    for s in &in_trace {
        if !s.parent_span_id.is_empty() {
            assert!(
                by_id.contains_key(s.parent_span_id.as_str()),
                "the parent of {} ({}) was exported",
                s.name,
                s.service
            );
        }
    }

    // ASR requests are spans with their status codes, under the worker that sent them.
    let asr: Vec<&&ReceivedSpan> = in_trace.iter().filter(|s| s.attr("http.response.status_code").is_some()).collect();
    assert!(
        asr.iter().any(|s| s.service == "tern-failover"
            && s.attr("http.request.method") == Some("POST")
            && matches!(s.attr("http.response.status_code"), Some("200" | "202"))),
        "the failover's POST is a span with its status: {asr:#?}"
    );
}

/// The value of the first series of `name` whose labels include all of `with`.
fn value(text: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        (n == name && with.iter().all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")))).then(|| v.parse().ok())?
    })
}

#[tokio::test]
async fn every_service_exposes_its_metrics_with_plausible_values_after_a_plan() {
    let mut r = start(3).await;
    run_plan(&mut r, 3).await;
    let mut text = HashMap::new();
    for service in SERVICES {
        let (status, body) = r.stack.worker_http(r.index[service], "/metrics").await;
        assert_eq!(status, 200, "{service}");
        text.insert(service, body);
    }
    // The Grafana dashboard in deploy/ queries only metrics that exist.
    let all: String = text.values().cloned().collect();
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/tern-dashboard.json"))
            .expect("deploy/grafana/tern-dashboard.json");
    let mut queried = BTreeSet::new();
    for (i, _) in dashboard.match_indices("tern_") {
        let name: String =
            dashboard[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| n.strip_suffix(s).map_or(n.clone(), str::to_owned));
        queried.insert(base);
    }
    queried.remove("tern_"); // the dashboard's own uid/tags
    // Families with no series yet are not rendered: no 429 happened here.
    queried.remove("tern_asr_throttled");
    for name in &queried {
        assert!(all.contains(&format!("# TYPE {name} ")), "the dashboard queries {name}, which no service exposes");
    }
    assert!(queried.len() >= 10, "{queried:?}");

    let planner = &text["tern-planner"];
    assert_eq!(value(planner, "tern_plans", &[("state", "completed")]), Some(1.0), "{planner}");
    assert_eq!(value(planner, "tern_plans", &[("state", "running")]), Some(0.0), "{planner}");
    assert!(value(planner, "tern_asr_requests_total", &[("method", "GET")]).is_some_and(|n| n > 0.0), "{planner}");
    assert_eq!(value(planner, "tern_consumer_pending", &[("consumer", "planner")]), Some(0.0), "{planner}");
    assert_eq!(value(planner, "tern_dlq_messages", &[]), Some(0.0), "{planner}");
    let none_dead = [("queue", "reprotect"), ("kind", "attempts")];
    assert_eq!(value(planner, "tern_dead_letters_total", &none_dead), Some(0.0), "from 0: {planner}");
    assert_eq!(value(planner, "tern_plan_vms", &[("phase", "failover"), ("state", "running")]), Some(0.0), "{planner}");

    let failover = &text["tern-failover"];
    assert!(
        value(failover, "tern_asr_requests_total", &[("method", "POST"), ("status", "202")])
            .or(value(failover, "tern_asr_requests_total", &[("method", "POST"), ("status", "200")]))
            .is_some_and(|n| n >= 3.0),
        "a failover POST per VM: {failover}"
    );
    for (service, phase) in
        [("tern-failover", "failover"), ("tern-reprotect", "reprotect"), ("tern-cleanup", "cleanup")]
    {
        let t = &text[service];
        assert_eq!(
            value(t, "tern_vm_phases_total", &[("phase", phase), ("outcome", "succeeded")]),
            Some(3.0),
            "{service}: {t}"
        );
        assert_eq!(value(t, "tern_phase_duration_seconds_count", &[("phase", phase)]), Some(3.0), "{service}: {t}");
        assert!(value(t, "tern_phase_duration_seconds_sum", &[("phase", phase)]).is_some_and(|s| s > 0.0), "{t}");
        assert_eq!(value(t, "tern_worker_commands_in_flight", &[]), Some(0.0), "{service}: {t}");
        assert_eq!(value(t, "tern_consumer_pending", &[]), Some(0.0), "{service}: {t}");
        assert_eq!(value(t, "tern_dlq_messages", &[]), Some(0.0), "{service}: {t}");
        assert!(value(t, "tern_asr_budget_wait_seconds_count", &[]).is_some(), "{service}: {t}");
        assert!(value(t, "tern_asr_throttled_total", &[]).is_none_or(|n| n == 0.0), "no 429s here: {t}");
    }
}
