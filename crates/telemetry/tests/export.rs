//! Span export as a Tern process does it: `init` in a child process (this test binary run
//! again as [`child`]) configured only through the environment, exporting over OTLP/gRPC to a
//! receiver in this process, then stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use tern_telemetry::receiver::{ReceivedSpan as Received, Receiver};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const DEADLINE: Duration = Duration::from_secs(20);
const CHILD_MODE: &str = "TERN_TELEMETRY_TEST_CHILD";

// ---------------------------------------------------------------------------------------------
// The child process.

/// Not a test of its own: the process the tests below start. It sets telemetry up like a Tern
/// binary, records two spans, says `READY <trace id>` and waits for SIGTERM; then it lets the
/// guard go (or shuts it down explicitly on a current-thread runtime) and exits.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else { return };
    let runtime = match mode.as_str() {
        "current-thread" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap();
    runtime.block_on(async {
        let telemetry = tern_telemetry::init("tern-telemetry-child");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let outer = tracing::info_span!("child.outer", otel.name = "outer work", tern.vm = "vm-00001");
        if let Ok(traceparent) = std::env::var("CHILD_TRACEPARENT") {
            use opentelemetry::propagation::TextMapPropagator;
            let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent)]);
            let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
            outer.set_parent(parent).unwrap();
        }
        let trace_id = outer.context().span().span_context().trace_id();
        outer.in_scope(|| {
            let inner = tracing::info_span!("child.inner");
            inner.in_scope(|| tracing::info!(step = 1, "inside"));
        });
        drop(outer);
        println!("READY {trace_id} exporting={}", telemetry.is_exporting());
        term.recv().await;
        tracing::info!("stopping");
        if mode == "current-thread" {
            // Flushing from inside a current-thread runtime must not wait on that runtime.
            telemetry.shutdown();
        }
        // Otherwise the guard is dropped here, as at the end of `#[tokio::main] async fn main`.
    });
}

struct Running {
    process: Child,
    ready: String,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    /// Starts [`child`] with `vars` (and no other `OTEL_*`/`TERN_LOG*` variable of ours).
    fn start(mode: &str, vars: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("TERN_LOG") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env(CHILD_MODE, mode).envs(vars.iter().copied());
        let mut process = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness may have written `test child ... ` on the same line.
                if let Some(at) = line.find("READY ") {
                    let _ = tx.send(line[at..].to_owned());
                }
            }
        });
        let mut stderr = process.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let ready = rx.recv_timeout(DEADLINE).expect("the child reports READY");
        Self { process, ready, stderr: Some(stderr) }
    }

    /// The trace id the child printed.
    fn trace_id(&self) -> &str {
        self.ready.split_whitespace().nth(1).unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns what the child logged.
    fn terminate(mut self) -> String {
        let status = Command::new("kill").args(["-TERM", &self.process.id().to_string()]).status().unwrap();
        assert!(status.success());
        let started = Instant::now();
        let exit = loop {
            if let Some(exit) = self.process.try_wait().unwrap() {
                break exit;
            }
            assert!(started.elapsed() < DEADLINE, "the child did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let logs = self.stderr.take().unwrap().join().unwrap();
        assert!(exit.success(), "child exited with {exit}: {logs}");
        logs
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver: an OTLP/gRPC trace service on its own thread and runtime.

fn start_receiver() -> Receiver {
    Receiver::start().expect("an OTLP receiver on loopback")
}

fn wait_for_spans(receiver: &Receiver, n: usize) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let spans = receiver.spans();
        if spans.len() >= n {
            return spans;
        }
        assert!(started.elapsed() < DEADLINE, "{n} spans did not arrive; got {spans:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn span<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name:?} in {spans:?}"))
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn a_process_stopped_by_sigterm_exports_its_spans_on_the_way_out() {
    let receiver = start_receiver();
    // A 10-minute batch schedule: only the flush at shutdown can deliver the spans in time.
    let child = Running::start(
        "multi-thread",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    assert!(child.ready.ends_with("exporting=true"), "{}", child.ready);
    assert!(receiver.spans().is_empty(), "nothing is exported before the schedule or the shutdown");
    let trace_id = child.trace_id().to_owned();
    let pid = child.process.id();
    let logs = child.terminate();
    // The child exits only once its spans are flushed: no waiting here.
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:?}\n{logs}");
    let outer = span(&spans, "outer work");
    let inner = span(&spans, "child.inner");
    assert_eq!(outer.service, "tern-telemetry-child");
    assert!(outer.instance.ends_with(&format!("/{pid}")), "service.instance.id = HOST/PID: {}", outer.instance);
    assert_eq!(outer.trace_id, trace_id);
    assert_eq!(outer.parent_span_id, "", "a root span");
    assert_eq!(outer.attr("tern.vm"), Some("vm-00001"));
    assert_eq!(inner.trace_id, trace_id);
    assert_eq!(inner.parent_span_id, outer.span_id);
    assert!(!logs.contains("ERROR"), "{logs}");
}

#[test]
fn spans_arrive_on_the_batch_schedule_while_the_process_runs() {
    let receiver = start_receiver();
    let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let child = Running::start(
        "multi-thread",
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_SERVICE_NAME", "renamed"),
            ("CHILD_TRACEPARENT", remote),
        ],
    );
    let spans = wait_for_spans(&receiver, 2);
    let outer = span(&spans, "outer work");
    assert_eq!(outer.service, "renamed", "OTEL_SERVICE_NAME wins");
    assert_eq!(outer.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "the trace it was handed continues");
    assert_eq!(outer.parent_span_id, "00f067aa0ba902b7");
    child.terminate();
}

#[test]
fn a_current_thread_runtime_flushes_at_shutdown_without_deadlock() {
    let receiver = start_receiver();
    let child = Running::start(
        "current-thread",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    child.terminate();
    assert_eq!(receiver.spans().len(), 2, "{:?}", receiver.spans());
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_logs_still_carry_trace_ids() {
    let child = Running::start("multi-thread", &[("TERN_LOG_FORMAT", "json")]);
    assert!(child.ready.ends_with("exporting=false"), "{}", child.ready);
    let trace_id = child.trace_id().to_owned();
    let logs = child.terminate();
    let inside = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "inside")
        .unwrap_or_else(|| panic!("no JSON line `inside` in {logs}"));
    assert_eq!(inside["trace_id"], trace_id.as_str(), "{inside}");
    assert_eq!(inside["span"]["name"], "child.inner");
    assert_eq!(inside["fields"]["step"], 1);
}

#[test]
fn an_unreachable_collector_does_not_hold_the_exit() {
    // Nothing listens there: the flush fails quickly and the process still exits.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let child = Running::start(
        "multi-thread",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let started = Instant::now();
    child.terminate();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
