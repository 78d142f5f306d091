//! The bus admits only Tern's identities, each with its own permissions, on a real nats-server
//! started the way `tern up` starts it.

use std::time::Duration;

use tern_bus::{Bucket, Bus, EventFilter, Identity, NatsAuth, StartAt, Topology};
use tern_testkit::NatsServer;

async fn secured() -> (NatsServer, Bus) {
    let server = NatsServer::start_secured().await.expect("nats-server starts");
    let admin = server.bus(Identity::Bootstrap, "tern-test").await;
    admin.ensure_topology(&Topology::single_server()).await.expect("the bootstrap identity sets up the bus");
    (server, admin)
}

#[tokio::test]
async fn an_anonymous_client_is_refused() {
    let (server, _admin) = secured().await;
    let err = Bus::connect(&server.url(), "someone").await.expect_err("no credentials, no connection");
    assert!(err.to_string().to_lowercase().contains("authorization"), "{err}");
    // An nkey the server does not know is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    tern_bus::auth::generate(dir.path()).unwrap();
    let stranger = NatsAuth::from_dir(Identity::Planner, dir.path());
    assert!(Bus::connect_with(&server.url(), "stranger", &stranger).await.is_err());
}

#[tokio::test]
async fn a_workers_credentials_cannot_publish_a_command() {
    let (server, admin) = secured().await;
    let worker = server.bus(Identity::Failover, "tern-failover").await;
    let command = tern_testkit::stack::failover_command("p1", "vm-00001");
    let err = worker.publish_command(&command).await.expect_err("a worker may not queue commands");
    assert!(err.to_string().to_lowercase().contains("permission"), "{err}");
    let mut queued = admin.jetstream().get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
    assert_eq!(queued.info().await.unwrap().state.messages, 0, "nothing reached the queue");
    let violations = server.permission_violations();
    assert!(violations.iter().any(|v| v.contains("tern.commands.failover.p1")), "the server logged it: {violations:?}");

    // The planner may.
    let planner = server.bus(Identity::Planner, "tern-planner").await;
    planner.publish_command(&command).await.expect("the planner queues commands");
}

#[tokio::test]
async fn a_worker_cannot_change_the_topology_or_another_queue() {
    let (server, _admin) = secured().await;
    let worker = server.bus(Identity::Cleanup, "tern-cleanup").await;
    let err = worker.ensure_topology(&Topology::single_server()).await.expect_err("only bootstrap sets up the bus");
    assert!(err.to_string().to_lowercase().contains("permission"), "{err}");
    // Its own bucket access works; the plans are not its to read.
    worker.kv::<tern_proto::OperationRecord>(Bucket::Operations).await.expect("operations are the workers'");
    let plans = worker.kv::<tern_proto::StoredPlan>(Bucket::Plans).await;
    assert!(plans.is_err(), "a worker has no business with the plans bucket");
}

#[tokio::test]
async fn the_events_reader_replays_events_and_can_publish_nothing() {
    let (server, _admin) = secured().await;
    let planner = server.bus(Identity::Planner, "tern-planner").await;
    let event = tern_proto::Event {
        event_id: "e1".into(),
        plan_id: "p1".into(),
        body: Some(tern_proto::event::Body::Plan(tern_proto::PlanEvent {
            kind: tern_proto::PlanEventKind::Accepted as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    planner.publish_event(&event).await.expect("the planner publishes plan events");

    let reader = server.bus(Identity::EventsReader, "dns-updater").await;
    let mut events = reader.events(&EventFilter::all(), StartAt::Beginning).await.expect("readers replay events");
    let got = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("an event").unwrap().unwrap();
    assert_eq!(got.event.event_id, "e1");
    let forged = tern_proto::Event { event_id: "e2".into(), ..event };
    assert!(reader.publish_event(&forged).await.is_err(), "readers publish nothing");
    let command = tern_testkit::stack::failover_command("p1", "vm-00001");
    assert!(reader.publish_command(&command).await.is_err());
}

#[tokio::test]
async fn the_operator_lists_and_deletes_dead_letters_and_can_do_nothing_else() {
    let (server, admin) = secured().await;
    // A dead letter as the failover worker's consumer loop writes one.
    let mut headers = tern_bus::HeaderMap::new();
    headers.insert(tern_bus::headers::DLQ_REASON, "undecodable payload (3 bytes) for Command: x");
    headers.insert(tern_bus::headers::DLQ_SUBJECT, "tern.commands.failover.p1");
    headers.insert(tern_bus::headers::DLQ_STREAM, tern_bus::topology::COMMANDS_STREAM);
    admin
        .jetstream()
        .publish_with_headers(tern_bus::WorkQueue::Failover.dlq_subject(), headers, b"\xff\x01\x02".as_slice().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let operator = server.bus(Identity::Operator, "tern-cli").await;
    let listed = operator.dead_letters().await.expect("the operator lists the dead letters");
    assert_eq!(listed.len(), 1);
    let dead = &listed[0];
    assert_eq!((dead.queue(), dead.original_subject.as_str()), ("failover", "tern.commands.failover.p1"));
    assert_eq!(dead.content().kind(), "undecodable");
    let one = operator.dead_letter(dead.sequence).await.expect("and reads one").expect("that one");
    assert_eq!(one.payload, dead.payload);
    assert!(operator.dead_letter(dead.sequence + 100).await.unwrap().is_none(), "an unknown sequence is none");

    // Nothing else: no command, no plan, no event, no dead letter of its own. (A refused request
    // only times out, so all at once.)
    let command = tern_testkit::stack::failover_command("p1", "vm-00001");
    let everything = EventFilter::all();
    let (queued, plans, events, forged) = tokio::join!(
        operator.publish_command(&command),
        operator.kv::<tern_proto::StoredPlan>(Bucket::Plans),
        operator.events(&everything, StartAt::Beginning),
        async { operator.jetstream().publish("tern.dlq.failover", "x".into()).await?.await.map_err(Into::into) },
    );
    let err = queued.expect_err("only the planner queues commands");
    assert!(err.to_string().to_lowercase().contains("permission"), "{err}");
    assert!(plans.is_err(), "the plans are not its to read");
    assert!(events.is_err(), "nor the events");
    let forged: Result<_, async_nats::Error> = forged;
    assert!(forged.is_err(), "it writes no dead letters");
    let mut queued = admin.jetstream().get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
    assert_eq!(queued.info().await.unwrap().state.messages, 0, "nothing reached the queue");

    // Deleting: once, then there is nothing left to delete.
    assert!(operator.delete_dead_letter(dead.sequence).await.expect("the operator deletes dead letters"));
    assert!(!operator.delete_dead_letter(dead.sequence).await.unwrap(), "a second delete finds nothing");
    assert!(operator.dead_letters().await.unwrap().is_empty());

    // The events-reader may not look at the dead letters: the server's refusal says so.
    let reader = server.bus(Identity::EventsReader, "dns-updater").await;
    let err = reader.dead_letters().await.expect_err("dead letters are not the reader's");
    assert!(matches!(err, tern_bus::BusError::PermissionDenied { .. }), "{err}");
}

/// The first message of `stream`, read as the events-reader reads it (an ordered consumer).
async fn first_message(bus: &Bus, stream: &str) -> async_nats::jetstream::Message {
    use futures::StreamExt;
    let stream = bus.jetstream().get_stream(stream).await.expect("the stream exists");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("a message within the deadline")
        .expect("the stream goes on")
        .expect("a message")
}

#[tokio::test]
async fn with_json_events_on_every_event_is_mirrored_as_json_that_only_its_publisher_may_write() {
    use tern_bus::headers;
    use tern_proto::{Event, Outcome, Phase, VmEvent, VmRef, event};
    let (server, admin) = secured().await;
    let event = Event {
        event_id: "p1.vm-00001.failover.succeeded".into(),
        plan_id: "p1".into(),
        time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        body: Some(event::Body::Vm(VmEvent {
            vm: Some(VmRef { name: "vm-00001".into(), ..Default::default() }),
            phase: Phase::Failover as i32,
            outcome: Outcome::Succeeded as i32,
            duration: Some(prost_types::Duration { seconds: 42, nanos: 0 }),
            ..Default::default()
        })),
        ..Default::default()
    };

    // Off by default: the protobuf event only.
    let quiet = server.bus(Identity::Failover, "tern-failover").await;
    assert!(!quiet.json_events());
    quiet.publish_event(&Event { event_id: "quiet".into(), ..event.clone() }).await.expect("published");
    let count = |name: &'static str| {
        let admin = admin.clone();
        async move { admin.jetstream().get_stream(name).await.unwrap().info().await.unwrap().state.messages }
    };
    assert_eq!(count(tern_bus::topology::EVENTS_STREAM).await, 1);
    assert_eq!(count(tern_bus::topology::EVENTS_JSON_STREAM).await, 0, "no JSON unless asked for");

    // On: the same event, twice; published again, deduplicated in both streams.
    let worker = server.bus(Identity::Failover, "tern-failover").await.with_json_events(true);
    worker.publish_event(&event).await.expect("the worker publishes its event");
    let again = worker.publish_event(&event).await.expect("and again");
    assert!(again.duplicate);
    assert_eq!(count(tern_bus::topology::EVENTS_STREAM).await, 2);
    assert_eq!(count(tern_bus::topology::EVENTS_JSON_STREAM).await, 1, "the JSON copy is deduplicated too");

    let reader = server.bus(Identity::EventsReader, "dns-updater").await;
    let json = first_message(&reader, tern_bus::topology::EVENTS_JSON_STREAM).await;
    assert_eq!(json.subject.as_str(), "tern.json.events.p1.failover.succeeded");
    let h = json.headers.as_ref().expect("CloudEvents headers");
    let attributes = tern_bus::CloudEventAttributes::read(h).expect("every ce- attribute");
    let expected = tern_bus::CloudEventAttributes::of(&event, "tern-failover").unwrap();
    assert_eq!(attributes, tern_bus::CloudEventAttributes { content_type: headers::JSON.into(), ..expected });
    assert_eq!((attributes.id.as_str(), attributes.ty.as_str()), (event.event_id.as_str(), "tern.failover.succeeded"));
    assert!(attributes.dataschema.ends_with("/tern.failover.succeeded.json"), "{}", attributes.dataschema);
    assert_eq!(h.get(headers::CE_TERNPLAN).map(|v| v.as_str()), Some("p1"));
    let body: serde_json::Value = serde_json::from_slice(&json.payload).expect("the body is JSON");
    assert_eq!(body["vm"]["outcome"], "OUTCOME_SUCCEEDED", "protobuf's JSON mapping: {body}");
    assert_eq!(body["vm"]["duration"], "42s");
    let back: Event = tern_proto::json::from_json(&json.payload, "tern.v1.Event").expect("it reads back");
    assert_eq!(back, Event { source: "tern-failover".into(), ..event.clone() }, "the same event");

    // Nobody forges the mirror: not the reader, not a worker for another phase's events.
    let forge = |bus: Bus, subject: &'static str| async move {
        let ack = bus.jetstream().publish(subject, "{}".into()).await;
        let stored: Result<_, async_nats::Error> = match ack {
            Ok(ack) => ack.await.map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        stored
    };
    let cleanup_by_failover = "tern.json.events.p1.cleanup.succeeded";
    let (by_reader, by_worker) = tokio::join!(
        forge(reader.clone(), "tern.json.events.p1.failover.succeeded"),
        forge(worker.clone(), cleanup_by_failover),
    );
    assert!(by_reader.is_err(), "the events-reader publishes nothing");
    assert!(by_worker.is_err(), "the failover worker publishes no cleanup events, JSON or not");
    assert_eq!(count(tern_bus::topology::EVENTS_JSON_STREAM).await, 1, "nothing forged was stored");
    let violations = server.permission_violations();
    assert!(violations.iter().any(|v| v.contains(cleanup_by_failover)), "the server logged it: {violations:?}");
}

#[tokio::test]
async fn a_hook_runner_answers_the_planners_requests_and_can_send_nothing_of_its_own() {
    use futures::StreamExt;
    let (server, _admin) = secured().await;
    let planner = server.bus(Identity::Planner, "tern-planner").await;
    let hooks = server.bus(Identity::Hooks, "dns-hook").await;
    let mut requests = hooks.client().queue_subscribe("tern.hooks.dns-update", "dns".into()).await.unwrap();
    hooks.client().flush().await.unwrap();
    let runner = hooks.clone();
    let answering = tokio::spawn(async move {
        let m = requests.next().await.expect("a request");
        let reply = m.reply.clone().expect("a request has a reply subject");
        assert_eq!(
            m.headers.as_ref().and_then(|h| h.get(tern_bus::headers::CONTENT_TYPE)).map(|v| v.as_str()),
            Some("application/json")
        );
        runner.client().publish(reply, r#"{"ok": true, "message": "done"}"#.into()).await.unwrap();
        runner.client().flush().await.unwrap();
    });
    // A client's flush does not wait for the server to have taken its subscription: ask until
    // the server knows the runner listens.
    let answer = tern_testkit::wait_for("the runner's answer", Duration::from_secs(10), || {
        let planner = planner.clone();
        async move {
            let body = br#"{"hook_id": "p1.gate.0.before.0.1"}"#.to_vec();
            match planner.hook_request("tern.hooks.dns-update", body, Duration::from_secs(5)).await {
                Err(e) if e.to_string().contains("no service listens") => None,
                other => Some(other),
            }
        }
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("the runner's answer reaches the planner: {e}\n{}", server.log()));
    assert_eq!(answer, br#"{"ok": true, "message": "done"}"#);
    answering.await.unwrap();

    // Nobody listens on another subject: the planner hears so at once, not after its timeout.
    let started = std::time::Instant::now();
    let none = planner.hook_request("tern.hooks.nobody", b"{}".to_vec(), Duration::from_secs(30)).await;
    assert!(none.unwrap_err().to_string().contains("no service listens on tern.hooks.nobody"));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A subject outside tern.hooks. is refused before anything is sent.
    let outside = planner.hook_request("tern.commands.failover.p1", b"{}".to_vec(), Duration::from_secs(1)).await;
    assert!(outside.unwrap_err().to_string().contains("not under tern.hooks."));

    // The runner cannot pose as the planner (a request of its own), nor publish events or commands.
    for subject in ["tern.hooks.dns-update", "tern.events.p1.plan.completed", "tern.commands.failover.p1"] {
        hooks.client().publish(subject, "{}".into()).await.unwrap();
    }
    hooks.client().flush().await.unwrap();
    tern_testkit::wait_for("the server to log the hook runner's refused publishes", Duration::from_secs(10), || {
        let violations = server.permission_violations();
        let all = ["tern.hooks.dns-update", "tern.events.p1.plan.completed", "tern.commands.failover.p1"]
            .iter()
            .all(|s| violations.iter().any(|v| v.contains(s)));
        async move { all.then_some(()) }
    })
    .await
    .unwrap();
}
