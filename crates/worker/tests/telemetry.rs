//! The runtime's traces and metrics, with a trivial phase in this process against a real
//! nats-server: a command continues the trace it was published in, its events carry it on,
//! and what the worker did shows on the shared metrics registry.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use tern_bus::topology::COMMANDS_STREAM;
use tern_bus::{EventFilter, StartAt, WorkQueue};
use tern_proto::{Outcome, Phase};
use tern_telemetry::metrics::registry;
use tern_testkit::stack::{Stack, failover_command, ready_for_failback};
use tern_worker::{CommandRun, Failure, PhaseHandler, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const DEADLINE: Duration = Duration::from_secs(20);

/// A failover that only publishes its events.
struct Echo;

#[async_trait::async_trait]
impl PhaseHandler for Echo {
    fn service(&self) -> &'static str {
        "tern-failover"
    }

    fn queue(&self) -> WorkQueue {
        WorkQueue::Failover
    }

    async fn run(&self, run: &mut CommandRun) -> Result<&'static str, Failure> {
        for outcome in [Outcome::Started, Outcome::Succeeded] {
            run.events.emit(Phase::Failover, outcome, |_| {}).await.map_err(|e| Failure::Transient(e.to_string()))?;
        }
        Ok("succeeded")
    }
}

fn config(stack: &Stack) -> WorkerConfig {
    let info = stack.sim.info();
    WorkerConfig {
        service: tern_service::ServiceConfig {
            nats_url: stack.nats.url(),
            nats_credentials: stack.nats.credentials(tern_bus::Identity::Failover),
            asr: tern_asr::AsrConfig {
                endpoint: info.url.clone(),
                subscription_id: info.subscription_id.clone(),
                resource_group: info.resource_group.clone(),
                vault: info.vault.clone(),
                ..tern_asr::AsrConfig::default()
            },
            asr_token: Some("t".into()),
            budget: None,
            ensure_topology: false,
            ..tern_service::ServiceConfig::default()
        },
        drain_timeout_secs: 2.0,
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_continues_its_publishers_trace_and_is_counted() {
    // No OTLP endpoint here: spans get ids and are exported nowhere.
    let _telemetry = tern_telemetry::init("tern-worker-test");
    let stack = Stack::start(ready_for_failback(1)).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(tern_worker::run_worker(config(&stack), Arc::new(Echo), stop.clone()));

    // As the planner does: publish inside a span of its own.
    let dispatch = tracing::info_span!("planner.dispatch");
    let publisher = dispatch.context().span().span_context().clone();
    assert!(publisher.is_valid());
    let command = failover_command("p1", "vm-00001");
    stack.hold(&command).await;
    stack.bus.publish_command(&command).instrument(dispatch).await.unwrap();
    // And a message no worker can read, for the dead-letter gauge.
    let subject = tern_bus::subjects::command(WorkQueue::Failover, "p2").unwrap();
    stack.bus.jetstream().publish(subject, "not a command".into()).await.unwrap().await.unwrap();

    let events = tern_testkit::wait_for("both events", DEADLINE, || async {
        let mut stream = stack.bus.events(&EventFilter::plan("p1"), StartAt::Beginning).await.unwrap();
        let mut out = Vec::new();
        while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            out.push(e);
        }
        (out.len() == 2).then_some(out)
    })
    .await
    .unwrap();
    for e in &events {
        let sc = e.trace_context.span().span_context().clone();
        assert_eq!(sc.trace_id(), publisher.trace_id(), "the event {} is in the publisher's trace", e.subject);
        assert_ne!(sc.span_id(), publisher.span_id(), "published from the worker's command span");
    }

    let text = tern_testkit::wait_for("the command and the dead letter to be counted", DEADLINE, || async {
        tern_service::metrics::refresh_bus_gauges(&stack.bus, COMMANDS_STREAM, "failover", Duration::from_secs(1))
            .await;
        let text = registry().render();
        (text.contains(r#"tern_worker_commands_total{service="tern-failover",phase="failover",outcome="succeeded"} 1"#)
            && text.contains("tern_dlq_messages{} 1.0")
            && text.contains(r#"tern_consumer_ack_pending{consumer="failover"} 0.0"#))
        .then_some(text)
    })
    .await
    .unwrap();
    for line in [
        r#"tern_worker_commands_in_flight{service="tern-failover"} 0.0"#,
        r#"tern_vm_phases_total{service="tern-failover",phase="failover",outcome="succeeded"} 1"#,
        r#"tern_phase_duration_seconds_count{service="tern-failover",phase="failover",outcome="succeeded"} 1"#,
        r#"tern_consumer_pending{consumer="failover"} 0.0"#,
        r#"tern_worker_asr_submissions_total{service="tern-failover"} 0"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    for family in [
        "# TYPE tern_worker_commands counter",
        "# TYPE tern_worker_commands_in_flight gauge",
        "# TYPE tern_phase_duration_seconds histogram",
        "# TYPE tern_vm_phases counter",
        "# TYPE tern_consumer_pending gauge",
        "# TYPE tern_consumer_ack_pending gauge",
        "# TYPE tern_dlq_messages gauge",
    ] {
        assert!(text.contains(family), "{family}\n{text}");
    }

    stop.cancel();
    worker.await.unwrap().unwrap();
}
