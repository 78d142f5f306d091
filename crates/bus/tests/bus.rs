//! The bus against a real nats-server: dedup, redelivery, dead letters, KV compare-and-set,
//! trace propagation, CloudEvents headers and concurrent topology set-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use prost::Message;
use tern_bus::{
    Bucket, Bus, BusError, DeadLetter, Delivery, EventFilter, HandlerError, KvError, LoopOptions, LoopStats,
    QueueSettings, StartAt, Topology, WorkQueue, topology,
};
use tern_proto::{
    CleanupCommand, Command, Event, FailoverCommand, Outcome, Phase, PlanEvent, PlanEventKind, VmEvent, VmRef, command,
    event,
};
use tern_testkit::{NatsServer, wait_for, wait_until};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const DEADLINE: Duration = Duration::from_secs(20);

fn test_topology() -> Topology {
    Topology {
        queues: QueueSettings { ack_wait: Duration::from_secs(1), max_attempts: 3, ..QueueSettings::default() },
        ..Topology::single_server()
    }
}

fn fast_loop() -> LoopOptions {
    LoopOptions {
        concurrency: 4,
        backoff: vec![Duration::from_millis(50)],
        drain_timeout: Duration::from_secs(5),
        pull_expiry: Duration::from_millis(500),
        skip_undecodable: false,
        on_skipped: None,
    }
}

async fn start() -> (NatsServer, Bus) {
    let server = NatsServer::start().await.expect("nats-server starts");
    let bus = Bus::connect(&server.url(), "tern-test").await.expect("connects");
    bus.ensure_topology(&test_topology()).await.expect("topology");
    (server, bus)
}

fn failover_command(plan: &str, vm: &str) -> Command {
    let command = tern_testkit::stack::failover_command(plan, vm);
    Command {
        action: Some(command::Action::Failover(FailoverCommand { commit_after: true, ..Default::default() })),
        ..command
    }
}

async fn stream_messages(bus: &Bus, name: &str) -> u64 {
    let mut stream = bus.jetstream().get_stream(name).await.expect("stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// A consumer loop running in the background.
struct Served {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<LoopStats>,
}

impl Served {
    /// Graceful stop: drains in-flight work, returns what the loop did.
    async fn stop(self) -> LoopStats {
        self.shutdown.cancel();
        self.handle.await.expect("loop task")
    }

    /// Dies like a killed worker: handlers are torn down mid-flight, nothing is acked.
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

async fn serve<F, Fut>(bus: &Bus, queue: WorkQueue, handler: F) -> Served
where
    F: Fn(Delivery<Command>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let consumer = bus.queue_consumer(queue, fast_loop()).await.expect("binds the queue consumer");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(consumer.run(handler, shutdown.clone()));
    Served { shutdown, handle }
}

/// Serves `queue` with a handler that succeeds and reports `pick(delivery)` on a channel.
async fn serve_recording<T: Send + 'static>(
    bus: &Bus,
    queue: WorkQueue,
    pick: impl Fn(&Delivery<Command>) -> T + Send + Sync + 'static,
) -> (Served, mpsc::UnboundedReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |d: Delivery<Command>| {
        let _ = tx.send(pick(&d));
        std::future::ready(Ok(()))
    };
    (serve(bus, queue, handler).await, rx)
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.recv()).await.expect("received in time").expect("channel open")
}

async fn dead_letters(bus: &Bus, count: usize) -> Vec<DeadLetter> {
    wait_for(&format!("{count} dead letter(s)"), DEADLINE, || async {
        let dl = bus.dead_letters().await.expect("DLQ readable");
        (dl.len() >= count).then_some(dl)
    })
    .await
    .unwrap()
}

async fn wait_queue_empty(bus: &Bus) {
    wait_until("the command queue to be empty", DEADLINE, || async {
        stream_messages(bus, topology::COMMANDS_STREAM).await == 0
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_command_published_twice_with_the_same_id_is_stored_once() {
    let (_server, bus) = start().await;
    let cmd = failover_command("p1", "web-1");

    let first = bus.publish_command(&cmd).await.unwrap();
    let second = bus.publish_command(&cmd).await.unwrap();

    assert!(!first.duplicate);
    assert!(second.duplicate, "the server must recognise the republished command");
    assert_eq!(first.stream_sequence, second.stream_sequence);
    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 1);
    let other = bus.publish_command(&failover_command("p1", "web-2")).await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 2);
}

#[tokio::test]
async fn an_invalid_command_is_refused_and_nothing_is_stored() {
    let (_server, bus) = start().await;
    let mut no_action = failover_command("p1", "web-1");
    no_action.action = None;
    let err = bus.publish_command(&no_action).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidMessage(_)) && err.to_string().contains("no action"), "{err}");

    let bad_plan = failover_command("plan.with.dots", "web-1");
    let err = bus.publish_command(&bad_plan).await.unwrap_err();
    assert!(err.to_string().contains("plan_id"), "{err}");

    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 0);
}

#[tokio::test]
async fn commands_reach_only_the_queue_of_their_phase() {
    let (_server, bus) = start().await;
    let mut cleanup = failover_command("p1", "web-1");
    cleanup.action = Some(command::Action::Cleanup(CleanupCommand::default()));
    cleanup.command_id = "p1.web-1.cleanup.1".into();
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    bus.publish_command(&cleanup).await.unwrap();

    let (worker, mut seen) =
        serve_recording(&bus, WorkQueue::Cleanup, |d| (d.subject.clone(), d.message.command_id.clone())).await;
    assert_eq!(recv(&mut seen).await, ("tern.commands.cleanup.p1".to_owned(), "p1.web-1.cleanup.1".to_owned()));
    assert_eq!(worker.stop().await.acked, 1);
    // The failover command is still queued for its own worker.
    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 1);
}

#[tokio::test]
async fn a_message_whose_handler_dies_without_acking_is_redelivered() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();

    // First worker: takes the command and dies mid-handler.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let doomed = serve(&bus, WorkQueue::Failover, move |d: Delivery<Command>| {
        let _ = started_tx.send(d.attempt);
        std::future::pending()
    })
    .await;
    assert_eq!(recv(&mut started).await, 1);
    doomed.crash().await;

    // Second worker gets the same command again once the ack wait ran out.
    let (survivor, mut seen) =
        serve_recording(&bus, WorkQueue::Failover, |d| (d.message.command_id.clone(), d.attempt)).await;
    assert_eq!(recv(&mut seen).await, ("p1.web-1.failover.1".to_owned(), 2));
    assert_eq!(survivor.stop().await.acked, 1);
    wait_queue_empty(&bus).await;
}

#[tokio::test]
async fn a_panicking_handler_costs_an_attempt_not_the_consumer() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    let (tx, mut attempts) = mpsc::unbounded_channel();
    let worker = serve(&bus, WorkQueue::Failover, move |d: Delivery<Command>| {
        let _ = tx.send(d.attempt);
        async move {
            if d.attempt == 1 {
                panic!("simulated bug on first attempt");
            }
            Ok(())
        }
    })
    .await;
    assert_eq!(recv(&mut attempts).await, 1);
    assert_eq!(recv(&mut attempts).await, 2);
    let stats = worker.stop().await;
    assert_eq!((stats.acked, stats.nacked, stats.dead_lettered), (1, 1, 0));
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_with_its_reason_while_the_consumer_keeps_serving() {
    let (_server, bus) = start().await;
    // Garbage on the command subject: field 1 as a length-delimited string running past the end.
    let garbage = [0x0a, 0xff, 0x01, 0x02];
    bus.jetstream().publish("tern.commands.failover.p1", garbage.to_vec().into()).await.unwrap().await.unwrap();
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();

    let (worker, mut served) = serve_recording(&bus, WorkQueue::Failover, |d| d.message.command_id.clone()).await;
    assert_eq!(recv(&mut served).await, "p1.web-1.failover.1");

    let dead = dead_letters(&bus, 1).await;
    let dl = &dead[0];
    assert!(dl.reason.contains("undecodable payload") && dl.reason.contains("Command"), "{}", dl.reason);
    assert_eq!(dl.original_subject, "tern.commands.failover.p1");
    assert_eq!(dl.consumer, "failover");
    assert_eq!(dl.deliveries, 1);
    assert_eq!(dl.payload.as_ref(), &garbage);
    wait_queue_empty(&bus).await;

    // And it goes on serving what comes next.
    bus.publish_command(&failover_command("p1", "web-2")).await.unwrap();
    assert_eq!(recv(&mut served).await, "p1.web-2.failover.1");
    let stats = worker.stop().await;
    assert_eq!((stats.acked, stats.dead_lettered), (2, 1));
}

#[tokio::test]
async fn an_event_the_planner_cannot_read_is_dead_lettered_for_it_and_stays_on_the_stream_for_everyone_else() {
    let (_server, bus) = start().await;
    let garbage = [0x0a, 0xff, 0x01, 0x02];
    bus.jetstream().publish("tern.events.p1.failover.succeeded", garbage.to_vec().into()).await.unwrap().await.unwrap();
    let consumer = bus.planner_event_consumer(fast_loop()).await.expect("binds the planner's consumer");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(consumer.run(|_: Delivery<Event>| std::future::ready(Ok(())), shutdown.clone()));
    let dead = dead_letters(&bus, 1).await;
    assert_eq!(dead[0].consumer, "planner");
    assert!(dead[0].reason.contains("undecodable payload"), "{}", dead[0].reason);
    shutdown.cancel();
    let stats = handle.await.unwrap();
    assert_eq!(stats.dead_lettered, 1);
    // The events stream is everyone's: what the planner gave up on is still there to replay.
    assert_eq!(stream_messages(&bus, topology::EVENTS_STREAM).await, 1, "the event was deleted from the stream");
}

#[tokio::test]
async fn a_message_that_exhausts_its_attempts_is_dead_lettered_and_removed_from_the_queue() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let worker = serve(&bus, WorkQueue::Failover, move |_: Delivery<Command>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err(HandlerError::retry("ASR answered 503")) }
    })
    .await;

    let dead = dead_letters(&bus, 1).await;
    assert!(dead[0].reason.contains("gave up after 3 attempts; last error: ASR answered 503"), "{}", dead[0].reason);
    assert_eq!(Command::decode(dead[0].payload.as_ref()).unwrap().command_id, "p1.web-1.failover.1");
    wait_queue_empty(&bus).await;
    let stats = worker.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!((stats.nacked, stats.dead_lettered), (2, 1));
}

#[tokio::test]
async fn a_worker_crashing_on_the_last_attempt_still_gets_its_message_dead_lettered() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    let (last_tx, mut last) = mpsc::unbounded_channel();
    let doomed = serve(&bus, WorkQueue::Failover, move |d: Delivery<Command>| {
        let last_tx = last_tx.clone();
        async move {
            if !d.is_last_attempt() {
                return Err(HandlerError::retry("transient"));
            }
            let _ = last_tx.send(d.attempt);
            std::future::pending().await
        }
    })
    .await;
    assert_eq!(recv(&mut last).await, 3);
    doomed.crash().await;

    let (next, _seen) = serve_recording(&bus, WorkQueue::Failover, |d| d.attempt).await;
    let dead = dead_letters(&bus, 1).await;
    assert!(dead[0].reason.contains("exhausted 3 delivery attempts"), "{}", dead[0].reason);
    assert_eq!(dead[0].deliveries, 4);
    let stats = next.stop().await;
    assert_eq!(stats.acked, 0, "the reserve delivery never runs the handler");
    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 0);
}

#[tokio::test]
async fn progress_acks_keep_a_long_handler_from_being_redelivered() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let worker = serve(&bus, WorkQueue::Failover, move |d: Delivery<Command>| {
        let done_tx = done_tx.clone();
        async move {
            // A long ASR job: runs for 2.5x the ack wait.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let _ = done_tx.send(d.attempt);
            Ok(())
        }
    })
    .await;
    assert_eq!(recv(&mut done).await, 1);
    let stats = worker.stop().await;
    assert_eq!((stats.acked, stats.nacked), (1, 0), "no second delivery while the first was in progress");
    assert!(done.try_recv().is_err());
}

#[tokio::test]
async fn shutdown_lets_in_flight_work_finish_before_returning() {
    let (_server, bus) = start().await;
    bus.publish_command(&failover_command("p1", "web-1")).await.unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let worker = serve(&bus, WorkQueue::Failover, move |_: Delivery<Command>| {
        let _ = started_tx.send(());
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        }
    })
    .await;
    recv(&mut started).await;
    assert_eq!(worker.stop().await.acked, 1, "the in-flight command was finished and acked");
    assert_eq!(stream_messages(&bus, topology::COMMANDS_STREAM).await, 0);
}

#[derive(Clone, PartialEq, prost::Message)]
struct OperationRecord {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(uint32, tag = "2")]
    step: u32,
}

#[tokio::test]
async fn kv_compare_and_set_returns_typed_conflicts() {
    let (_server, bus) = start().await;
    let ops = bus.kv::<OperationRecord>(Bucket::Operations).await.unwrap();
    let key = "p1.web-1.failover.1";
    let rec = OperationRecord { owner: "worker-a".into(), step: 1 };

    let rev = ops.create(key, &rec).await.unwrap();
    let again = ops.create(key, &OperationRecord { owner: "worker-b".into(), step: 1 }).await.unwrap_err();
    assert!(matches!(again, KvError::AlreadyExists { .. }), "{again}");

    let rev2 = ops.update(key, &OperationRecord { step: 2, ..rec.clone() }, rev).await.unwrap();
    assert!(rev2 > rev);
    let stale = ops.update(key, &OperationRecord { owner: "worker-b".into(), step: 9 }, rev).await.unwrap_err();
    match &stale {
        KvError::Conflict { key: k, expected, .. } => assert_eq!((k.as_str(), *expected), (key, rev)),
        other => panic!("expected a conflict, got {other}"),
    }
    let now = ops.get(key).await.unwrap().unwrap();
    assert_eq!((now.value.owner.as_str(), now.value.step, now.revision), ("worker-a", 2, rev2));

    ops.delete(key).await.unwrap();
    assert_eq!(ops.get(key).await.unwrap(), None);
    ops.create(key, &rec).await.expect("a deleted key can be created again");
    assert_eq!(ops.keys().await.unwrap(), vec![key.to_owned()]);
}

#[tokio::test]
async fn trace_context_published_with_a_message_continues_on_the_other_side() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-test")),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_server, bus) = start().await;
    let publish_span = tracing::info_span!("submit_plan");
    let sent = publish_span.context().span().span_context().clone();
    assert!(sent.is_valid());
    bus.publish_command(&failover_command("p1", "web-1")).instrument(publish_span).await.unwrap();

    let (worker, mut seen) = serve_recording(&bus, WorkQueue::Failover, |d| {
        let carried = d.trace_context.span().span_context().clone();
        let current = tracing::Span::current().context().span().span_context().clone();
        let traceparent = d.headers.get("traceparent").map(|v| v.as_str().to_owned());
        (carried, current, traceparent)
    })
    .await;
    let (carried, current, traceparent) = recv(&mut seen).await;
    assert!(traceparent.unwrap().contains(&sent.trace_id().to_string()));
    assert_eq!(carried.trace_id(), sent.trace_id());
    assert_eq!(carried.span_id(), sent.span_id(), "the publisher's span is the remote parent");
    assert_eq!(current.trace_id(), sent.trace_id(), "the handler runs in a span of the same trace");
    assert_ne!(current.span_id(), sent.span_id());
    worker.stop().await;
}

fn vm_event(plan: &str, id: &str, phase: Phase, outcome: Outcome) -> Event {
    Event {
        event_id: id.into(),
        plan_id: plan.into(),
        body: Some(event::Body::Vm(VmEvent {
            vm: Some(VmRef { name: "web-1".into(), lifecycle_id: "lc-1".into(), ..Default::default() }),
            phase: phase as i32,
            outcome: outcome as i32,
            asr_job_id: "/Subscriptions/s/.../replicationJobs/j1".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn events_carry_cloudevents_headers_and_replay_for_late_subscribers() {
    let (server, bus) = start().await;
    // An outside consumer with a plain NATS client sees the binary-mode CloudEvent.
    let outsider = server.connect().await;
    let mut raw = outsider.subscribe("tern.events.>").await.unwrap();
    // `flush` only writes the socket; a request/reply on the same connection proves the server
    // has processed the SUB before anything is published.
    jetstream::new(outsider.clone()).query_account().await.unwrap();

    let succeeded = vm_event("p1", "p1.lc-1.failover.1.succeeded", Phase::Failover, Outcome::Succeeded);
    bus.publish_event(&succeeded).await.unwrap();
    let accepted = Event {
        event_id: "p1.accepted".into(),
        plan_id: "p1".into(),
        body: Some(event::Body::Plan(PlanEvent { kind: PlanEventKind::Accepted as i32, ..Default::default() })),
        ..Default::default()
    };
    bus.publish_event(&accepted).await.unwrap();
    let dup = bus.publish_event(&succeeded).await.unwrap();
    assert!(dup.duplicate, "an event re-published with the same id is stored once");

    let msg = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut raw)).await.unwrap().unwrap();
    assert_eq!(msg.subject.as_str(), "tern.events.p1.failover.succeeded");
    let h = msg.headers.clone().expect("headers");
    let header = |name: &str| h.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert_eq!(header("ce-specversion"), "1.0");
    assert_eq!(header("ce-id"), "p1.lc-1.failover.1.succeeded");
    assert_eq!(header("ce-source"), "/tern/tern-test");
    assert_eq!(header("ce-type"), "tern.failover.succeeded");
    assert_eq!(header("ce-subject"), "web-1");
    assert_eq!(header("ce-ternplan"), "p1");
    assert_eq!(header("content-type"), "application/protobuf");
    let time = header("ce-time");
    assert!(time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339).is_ok(), "{time}");
    let decoded = Event::decode(msg.payload.as_ref()).unwrap();
    assert_eq!(decoded.event_id, succeeded.event_id);
    assert_eq!(
        decoded.time.map(|t| tern_bus::headers::rfc3339(Some(&t))),
        Some(time),
        "ce-time is the event's own time"
    );
    let plan_msg = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut raw)).await.unwrap().unwrap();
    assert_eq!(plan_msg.subject.as_str(), "tern.events.p1.plan.accepted");
    let ph = plan_msg.headers.unwrap();
    assert_eq!(ph.get("ce-type").unwrap().as_str(), "tern.plan.accepted");
    assert_eq!(ph.get("ce-subject").unwrap().as_str(), "p1");

    // A consumer that connects later replays what it missed, in order, filtered by subject tokens.
    let mut all = bus.events(&EventFilter::plan("p1"), StartAt::Beginning).await.unwrap();
    let first = all.next().await.unwrap().unwrap();
    let second = all.next().await.unwrap().unwrap();
    assert_eq!(
        (first.event.event_id.as_str(), second.event.event_id.as_str()),
        ("p1.lc-1.failover.1.succeeded", "p1.accepted")
    );
    assert_eq!(first.attributes.as_ref().unwrap().ty, "tern.failover.succeeded");
    assert!(second.stream_sequence > first.stream_sequence);

    let only_plan = EventFilter { phase: Some("plan".into()), ..EventFilter::default() };
    let mut plans = bus.events(&only_plan, StartAt::Beginning).await.unwrap();
    assert_eq!(plans.next().await.unwrap().unwrap().event.event_id, "p1.accepted");

    // Resuming after the last processed sequence delivers only what came later.
    let mut resumed = bus.events(&EventFilter::all(), StartAt::Sequence(second.stream_sequence + 1)).await.unwrap();
    let later = vm_event("p1", "p1.lc-1.reprotect.1.started", Phase::Reprotect, Outcome::Started);
    bus.publish_event(&later).await.unwrap();
    let next = tokio::time::timeout(DEADLINE, resumed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.event.event_id, "p1.lc-1.reprotect.1.started");
    assert_eq!(stream_messages(&bus, topology::EVENTS_STREAM).await, 3);
}

#[tokio::test]
async fn an_event_without_id_or_body_is_refused() {
    let (_server, bus) = start().await;
    let mut ev = vm_event("p1", "", Phase::Failover, Outcome::Started);
    assert!(bus.publish_event(&ev).await.unwrap_err().to_string().contains("event_id"));
    ev.event_id = "x".into();
    ev.body = None;
    assert!(bus.publish_event(&ev).await.unwrap_err().to_string().contains("no body"));
    assert_eq!(stream_messages(&bus, topology::EVENTS_STREAM).await, 0);
}

/// Child half of the concurrent set-up test: runs only when its parent gives it a server URL.
#[test]
#[ignore = "run by two_processes_setting_up_the_topology_at_the_same_time_both_succeed"]
fn topology_setup_child() {
    let Ok(url) = std::env::var("TERN_TOPOLOGY_CHILD_URL") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let bus = Bus::connect(&url, "tern-topology-child").await.unwrap();
        for _ in 0..5 {
            bus.ensure_topology(&Topology::single_server()).await.expect("topology set-up succeeds");
        }
    });
}

#[tokio::test]
async fn two_processes_setting_up_the_topology_at_the_same_time_both_succeed() {
    let server = NatsServer::start().await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        std::process::Command::new(&exe)
            .args(["--exact", "topology_setup_child", "--ignored", "--nocapture"])
            .env("TERN_TOPOLOGY_CHILD_URL", server.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = tokio::task::spawn_blocking(move || (a.wait_with_output().unwrap(), b.wait_with_output().unwrap()))
        .await
        .unwrap();
    for out in [&a, &b] {
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let js = jetstream::new(server.connect().await);
    for name in [topology::COMMANDS_STREAM, topology::EVENTS_STREAM, topology::DLQ_STREAM] {
        js.get_stream(name).await.unwrap_or_else(|e| panic!("{name} exists: {e}"));
    }
    let mut commands = js.get_stream(topology::COMMANDS_STREAM).await.unwrap();
    assert_eq!(commands.info().await.unwrap().config.retention, jetstream::stream::RetentionPolicy::WorkQueue);
    for queue in WorkQueue::ALL {
        commands.get_consumer::<jetstream::consumer::pull::Config>(queue.name()).await.unwrap();
    }
    for bucket in Bucket::ALL {
        js.get_key_value(bucket.name()).await.unwrap();
    }
}

#[tokio::test]
async fn topology_setup_updates_settings_that_changed() {
    let (server, bus) = start().await;
    let mut changed = test_topology();
    changed.queues.ack_wait = Duration::from_secs(7);
    changed.events_max_age = Duration::from_secs(3600);
    bus.ensure_topology(&changed).await.unwrap();
    let js = jetstream::new(server.connect().await);
    let mut events = js.get_stream(topology::EVENTS_STREAM).await.unwrap();
    assert_eq!(events.info().await.unwrap().config.max_age, Duration::from_secs(3600));
    let commands = js.get_stream(topology::COMMANDS_STREAM).await.unwrap();
    let mut failover = commands.get_consumer::<jetstream::consumer::pull::Config>("failover").await.unwrap();
    assert_eq!(failover.info().await.unwrap().config.ack_wait, Duration::from_secs(7));
}

/// Log lines written while the test runs, for a test that looks at what a service says.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }
}

#[tokio::test]
async fn a_consumer_deleted_under_a_running_loop_is_reported_and_not_pulled_in_a_spin() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_server, bus) = start().await;
    let served = serve(&bus, WorkQueue::Failover, |_| async { Ok(()) }).await;
    // The loop serves: a command goes through it.
    let (tx, mut rx) = mpsc::unbounded_channel();
    served.stop().await;
    let served = serve(&bus, WorkQueue::Failover, move |d| {
        let _ = tx.send(d.message.command_id);
        async { Ok(()) }
    })
    .await;
    bus.publish_command(&failover_command("p1", "vm-1")).await.unwrap();
    recv(&mut rx).await;
    bus.jetstream()
        .get_stream(tern_bus::topology::COMMANDS_STREAM)
        .await
        .unwrap()
        .delete_consumer("failover")
        .await
        .unwrap();
    // NATS answers every pull for a deleted consumer at once (503): a loop that pulls again at
    // once spins, tens of thousands of pulls a second.
    wait_until("the loop to report its consumer gone", Duration::from_secs(20), || async {
        logs.count("durable consumer no longer exists") > 0
    })
    .await
    .unwrap();
    let before = logs.count("pull batch ended early");
    let since = std::time::Instant::now();
    wait_until("two more pulls", Duration::from_secs(30), || async {
        logs.count("pull batch ended early") >= before + 2
    })
    .await
    .unwrap();
    assert!(since.elapsed() >= Duration::from_secs(4), "two pulls {:?} apart with the consumer gone", since.elapsed());
    served.stop().await;
}
