//! Scenario 6: garbage on the bus, and events from a newer schema.
//!
//! **Garbage** is published with JetStream on the command subjects of a running plan
//! (`tern.commands.<queue>.<plan>`), so it lands in the work-queue stream like a command: random
//! bytes, truncated real commands, an empty payload, JSON, a command of a newer kind (an action
//! this version does not know), and a real command on the wrong queue. Undecodable bytes on an
//! event subject go to the planner's consumer the same way. Each must end in the DLQ at its first
//! delivery (no retries: it can never be handled), with exactly its payload and a reason, and the
//! plan must not notice. An oversized command is refused at publish and reaches nothing.
//!
//! **Newer-schema events** are a different thing. An event that is a valid `tern.v1.Event` plus
//! fields this version does not know (numbers 100+, every wire type, at the top level and inside
//! the VM event) comes from a newer publisher: protobuf's forward compatibility says a reader
//! skips the unknown fields and handles the rest. So the planner must handle it exactly as the
//! same event without them — it is never dead-lettered. To make that observable, the planner's
//! durable consumer is paused for a moment, and some events the failover worker publishes
//! meanwhile (commit and failover successes) are replaced in the stream by their newer-schema
//! encoding: the plan can only end, and those VMs only get their recovery point, if the planner
//! applied the newer-schema copies. Newer event *kinds* (an unknown body, an unknown outcome
//! value) are valid too: the planner has nothing to do with them, acks them, and goes on.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tern_bus::topology::{COMMANDS_STREAM, EVENTS_STREAM};
use tern_bus::{CloudEventAttributes, EventFilter, PLANNER_EVENTS_CONSUMER, StartAt, WorkQueue, subjects};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, vms};
use tern_proto::{Command, Event, Outcome, Phase, VmEvent, VmRef, VmState, event};
use tern_testkit::Seed;

/// How long the bus may take to move garbage to the DLQ, or the planner to catch up.
const SETTLE: Duration = Duration::from_secs(30);
/// How many of each kind of event the paused planner gets in newer-schema form.
const SWAPS: usize = 2;

// -------------------------------------------------------------------------------------------
// Payloads

/// Unknown fields a newer schema might add: numbers 100+, one of each wire type.
fn unknown_fields(rng: &mut StdRng) -> Vec<u8> {
    let mut b = Vec::new();
    encode_key(100, WireType::Varint, &mut b);
    encode_varint(rng.random::<u64>(), &mut b);
    // A nested message of the newer schema: { 1: "newer", 2: 7 }.
    let nested = [&[0x0a, 5][..], b"newer", &[0x10, 7]].concat();
    encode_key(101, WireType::LengthDelimited, &mut b);
    encode_varint(nested.len() as u64, &mut b);
    b.extend_from_slice(&nested);
    encode_key(102, WireType::SixtyFourBit, &mut b);
    b.extend_from_slice(&rng.random::<u64>().to_le_bytes());
    encode_key(103, WireType::ThirtyTwoBit, &mut b);
    b.extend_from_slice(&rng.random::<u32>().to_le_bytes());
    encode_key(104, WireType::LengthDelimited, &mut b);
    encode_varint(3, &mut b);
    b.extend_from_slice(b"v2!");
    b
}

/// `event` as a newer publisher would encode it: the same fields, plus unknown ones at the top
/// level and inside its body.
fn newer_schema(event: &Event, rng: &mut StdRng) -> Vec<u8> {
    let mut top = event.clone();
    let body = top.body.take();
    let mut out = top.encode_to_vec();
    out.extend(unknown_fields(rng));
    let (tag, mut inner) = match body {
        Some(event::Body::Vm(v)) => (10, v.encode_to_vec()),
        Some(event::Body::Plan(p)) => (11, p.encode_to_vec()),
        None => return out,
    };
    inner.extend(unknown_fields(rng));
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(inner.len() as u64, &mut out);
    out.extend(inner);
    assert_eq!(Event::decode(out.as_slice()).as_ref(), Ok(event), "a reader of this version sees the same event");
    out
}

/// Whether a worker of `queue` can never handle `payload` (the checks of `tern-worker`'s
/// handler): it does not decode, or it has no action this version knows, or the action belongs
/// to another queue, or it lacks its ids.
fn dead_on_arrival(queue: WorkQueue, payload: &[u8]) -> bool {
    let Ok(c) = Command::decode(payload) else { return true };
    let Some(action) = &c.action else { return true };
    let named = c.vm.as_ref().is_some_and(|v| !v.name.is_empty() || !v.protected_item_id.is_empty());
    WorkQueue::for_phase(action.phase()) != Some(queue) || c.command_id.is_empty() || c.plan_id.is_empty() || !named
}

/// Seeded bytes that do not decode as `M`.
fn noise<M: Message + Default>(rng: &mut StdRng) -> Vec<u8> {
    loop {
        let len = rng.random_range(1..=96);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if M::decode(bytes.as_slice()).is_err() {
            return bytes;
        }
    }
}

/// One piece of garbage for a command queue.
#[derive(Debug)]
struct Garbage {
    queue: WorkQueue,
    what: &'static str,
    payload: Vec<u8>,
}

/// Garbage of every kind, from the real commands captured so far.
fn command_garbage(rng: &mut StdRng, real: &[(WorkQueue, Command)]) -> Vec<Garbage> {
    let mut out = Vec::new();
    for queue in WorkQueue::ALL {
        out.push(Garbage { queue, what: "random bytes", payload: noise::<Command>(rng) });
    }
    for (queue, c) in real.choose_multiple(rng, 3) {
        let full = c.encode_to_vec();
        let cut = rng.random_range(1..full.len());
        out.push(Garbage { queue: *queue, what: "a truncated command", payload: full[..cut].to_vec() });
    }
    let queue = *WorkQueue::ALL.choose(rng).expect("queues");
    out.push(Garbage { queue, what: "an empty payload", payload: Vec::new() });
    let json = br#"{"command_id":"x","plan_id":"y","failover":{"commit_after":true}}"#.to_vec();
    out.push(Garbage { queue: WorkQueue::Failover, what: "JSON", payload: json });
    if let Some((queue, c)) = real.choose(rng) {
        // A command of a newer kind: its action is a oneof member this version does not know.
        let mut newer = Command { action: None, ..c.clone() }.encode_to_vec();
        encode_key(13, WireType::LengthDelimited, &mut newer);
        encode_varint(2, &mut newer);
        newer.extend_from_slice(&[0x08, 1]);
        out.push(Garbage { queue: *queue, what: "a command of a newer kind", payload: newer });
        // A real command on a queue that does not run its phase.
        let wrong = *WorkQueue::ALL.iter().filter(|q| *q != queue).collect::<Vec<_>>().choose(rng).expect("queues");
        out.push(Garbage { queue: *wrong, what: "a command on the wrong queue", payload: c.encode_to_vec() });
    }
    for g in &out {
        assert!(dead_on_arrival(g.queue, &g.payload), "{} on {} would be handled", g.what, g.queue.name());
    }
    out
}

// -------------------------------------------------------------------------------------------
// Bus helpers

async fn publish(fleet: &Fleet, subject: String, headers: HeaderMap, payload: Vec<u8>) -> u64 {
    let js = fleet.stack.bus.jetstream();
    let ack = js.publish_with_headers(subject.clone(), headers, Bytes::from(payload)).await.expect("sent");
    let ack = ack.await.unwrap_or_else(|e| panic!("{subject}: not stored: {e}"));
    assert!(!ack.duplicate, "{subject}: dropped as a duplicate");
    ack.sequence
}

async fn publish_garbage(fleet: &Fleet, plan_id: &str, garbage: &[Garbage]) {
    for g in garbage {
        let subject = subjects::command(g.queue, plan_id).expect("subject");
        publish(fleet, subject, HeaderMap::new(), g.payload.clone()).await;
    }
}

async fn stream(fleet: &Fleet, name: &str) -> Stream {
    fleet.stack.bus.jetstream().get_stream(name).await.expect("stream")
}

/// CloudEvents headers for `event` as a newer publisher sends them (an extension attribute this
/// version does not know included), with a fresh dedup id.
fn ce_headers(event: &Event, msg_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    CloudEventAttributes::of(event, "tern-failover").expect("a valid event").write(&event.plan_id, &mut h);
    h.insert("ce-ternschema", "2");
    h.insert(NATS_MESSAGE_ID, msg_id);
    h
}

/// The planner's durable consumer: (stream sequence delivered up to, messages not yet handled).
async fn planner_consumer(fleet: &Fleet) -> (u64, u64) {
    let events = stream(fleet, EVENTS_STREAM).await;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        events.get_consumer(PLANNER_EVENTS_CONSUMER).await.expect("the planner's consumer");
    let info = consumer.info().await.expect("consumer info");
    (info.delivered.stream_sequence, info.num_pending + info.num_ack_pending as u64)
}

/// Takes every command the planner published so far off the core subscription.
async fn captured(published: &mut async_nats::Subscriber, into: &mut Vec<(WorkQueue, Command)>) {
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), published.next()).await {
        let Ok(c) = Command::decode(msg.payload.as_ref()) else { continue };
        let queue = c.action.as_ref().and_then(|a| WorkQueue::for_phase(a.phase()));
        if let Some(queue) = queue
            && !into.iter().any(|(_, known)| known.command_id == c.command_id)
        {
            into.push((queue, c));
        }
    }
}

/// Events of kinds this version does not know, from a newer publisher: a VM event with an
/// outcome value past the enum's end, and an event whose body is a oneof member this version
/// lacks. Returns their stream sequences.
async fn publish_newer_kinds(fleet: &Fleet, plan_id: &str, rng: &mut StdRng) -> Vec<u64> {
    let outcome = Event {
        event_id: format!("{plan_id}.newer-outcome"),
        plan_id: plan_id.to_owned(),
        time: Some(std::time::SystemTime::now().into()),
        source: "tern-failover".into(),
        body: Some(event::Body::Vm(VmEvent {
            vm: Some(VmRef { name: "vm-00001".into(), ..Default::default() }),
            phase: Phase::Failover as i32,
            outcome: 42,
            attempt: 1,
            ..Default::default()
        })),
    };
    let mut h = ce_headers(&outcome, &outcome.event_id);
    h.insert("ce-type", "tern.failover.deferred");
    let subject = format!("{}.{plan_id}.failover.deferred", subjects::EVENTS_PREFIX);
    let first = publish(fleet, subject, h, newer_schema(&outcome, rng)).await;

    let body = Event { event_id: format!("{plan_id}.newer-body"), body: None, ..outcome };
    let mut payload = body.encode_to_vec();
    encode_key(12, WireType::LengthDelimited, &mut payload);
    encode_varint(4, &mut payload);
    payload.extend_from_slice(&[0x08, 3, 0x10, 1]);
    payload.extend(unknown_fields(rng));
    assert_eq!(Event::decode(payload.as_slice()).as_ref(), Ok(&body), "read as an event without a body");
    let plan_event = Event { body: Some(event::Body::Plan(Default::default())), ..body.clone() };
    let mut h = ce_headers(&plan_event, &body.event_id);
    h.insert("ce-type", "tern.plan.drift_detected");
    let subject = format!("{}.{plan_id}.{}.drift_detected", subjects::EVENTS_PREFIX, subjects::PLAN_TOKEN);
    vec![first, publish(fleet, subject, h, payload).await]
}

// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_goes_to_the_dlq_and_newer_schema_events_are_handled_as_if_plain() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start(estate(n)).await;
    let client = fleet.stack.bus.client().clone();
    let mut published = client.subscribe("tern.commands.>").await.expect("subscribe");
    client.flush().await.expect("the subscription is in place");
    let mut expected = Expected::default();

    // An oversized command is refused at publish: it reaches no queue and no DLQ.
    let js = fleet.stack.bus.jetstream();
    let oversized = Bytes::from(vec![0u8; 1024 * 1024 + 1]);
    let refused = match js.publish(subjects::command(WorkQueue::Failover, "oversized").unwrap(), oversized).await {
        Ok(ack) => ack.await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a command larger than the bus's 1 MiB limit was stored");

    let plan_id = fleet.submit(fleet.spec(n)).await;
    // Every failover command is out now (the planner dispatches on submit). Stop the planner
    // reading events for a moment; what the workers publish from here on waits in the stream.
    let events_stream = stream(&fleet, EVENTS_STREAM).await;
    let until = async_nats::datetime::add_std_duration(async_nats::datetime::now(), Duration::from_secs(60)).unwrap();
    let paused = events_stream.pause_consumer(PLANNER_EVENTS_CONSUMER, until).await.expect("pause");
    assert!(paused.paused);
    let mut snapshot = stream(&fleet, EVENTS_STREAM).await;
    let from = snapshot.info().await.expect("stream info").state.last_sequence;

    let mut real = Vec::new();
    captured(&mut published, &mut real).await;
    let garbage = command_garbage(&mut rng, &real);
    let (now, later) = garbage.split_at(rng.random_range(1..garbage.len()));
    publish_garbage(&fleet, &plan_id, now).await;
    expected.dead_letters.extend(now.iter().map(|g| g.payload.clone()));

    // Swap some of the events published while the planner is paused for their newer-schema
    // encoding: the originals go, the copies (fresh dedup ids) are all the planner will see.
    let mut live = fleet.stack.bus.events(&EventFilter::plan(&plan_id), StartAt::Sequence(from + 1)).await.unwrap();
    let mut swapped: Vec<(Event, u64)> = Vec::new();
    let (mut commits, mut failovers, swaps) = (0, 0, SWAPS.min(n));
    let swapping = tokio::time::timeout(SETTLE, async {
        while commits < swaps || failovers < swaps {
            let Some(Ok(e)) = live.next().await else { continue };
            let Some(event::Body::Vm(v)) = &e.event.body else { continue };
            if swapped.iter().any(|(s, _)| s.event_id == e.event.event_id) {
                continue; // our own copy, read back
            }
            let kind = (Phase::try_from(v.phase), Outcome::try_from(v.outcome));
            let take = match kind {
                (Ok(Phase::Commit), Ok(Outcome::Succeeded)) if commits < swaps => {
                    commits += 1;
                    true
                }
                (Ok(Phase::Failover), Ok(Outcome::Succeeded)) if failovers < swaps => {
                    failovers += 1;
                    true
                }
                _ => false,
            };
            if !take {
                continue;
            }
            let original = events_stream.get_raw_message(e.stream_sequence).await.expect("the original");
            assert!(events_stream.delete_message(e.stream_sequence).await.expect("delete"), "deleted");
            let mut headers = original.headers.clone();
            headers.insert("ce-ternschema", "2");
            headers.insert(NATS_MESSAGE_ID, format!("{}.newer-schema", e.event.event_id).as_str());
            let payload = newer_schema(&e.event, &mut rng);
            let seq = publish(&fleet, original.subject.to_string(), headers, payload).await;
            swapped.push((e.event.clone(), seq));
        }
    })
    .await;
    assert!(swapping.is_ok(), "only {commits} commits and {failovers} failovers ended while the planner was paused");

    // Undecodable events: the planner's consumer dead-letters them.
    let template = &swapped[0].0;
    let full = template.encode_to_vec();
    let cuts: Vec<Vec<u8>> =
        (1..full.len()).map(|cut| full[..cut].to_vec()).filter(|p| Event::decode(p.as_slice()).is_err()).collect();
    let truncated = cuts.choose(&mut rng).expect("a cut that does not decode").clone();
    for (i, payload) in [noise::<Event>(&mut rng), truncated].into_iter().enumerate() {
        let subject = subjects::vm_event(&plan_id, Phase::Failover, Outcome::Succeeded).unwrap();
        publish(&fleet, subject, ce_headers(template, &format!("garbage-event-{i}")), payload.clone()).await;
        expected.dead_letters.push(payload);
    }

    let (delivered, _) = planner_consumer(&fleet).await;
    assert!(delivered <= from, "the paused planner was handed event {delivered} (paused after {from})");
    events_stream.resume_consumer(PLANNER_EVENTS_CONSUMER).await.expect("resume");

    let newer_kinds = publish_newer_kinds(&fleet, &plan_id, &mut rng).await;

    tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
    captured(&mut published, &mut real).await;
    publish_garbage(&fleet, &plan_id, later).await;
    expected.dead_letters.extend(later.iter().map(|g| g.payload.clone()));

    let plan = fleet.finished(&plan_id).await;
    tern_testkit::wait_until("the garbage to reach the DLQ", SETTLE, || async {
        fleet.stack.bus.dead_letters().await.is_ok_and(|d| d.len() >= expected.dead_letters.len())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tern_testkit::wait_until("the planner to handle every event", SETTLE, || async {
        planner_consumer(&fleet).await.1 == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tern_testkit::wait_until("the command queues to empty", SETTLE, || async {
        let mut commands = stream(&fleet, COMMANDS_STREAM).await;
        commands.info().await.is_ok_and(|i| i.state.messages == 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    assert_clean("garbage and newer-schema events", &check(&fleet, &plan, &expected).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);

    // Garbage is dead-lettered at its first delivery, by the consumer of its subject, with why.
    for d in fleet.stack.bus.dead_letters().await.unwrap() {
        let events = d.original_subject.starts_with(subjects::EVENTS_PREFIX);
        let consumer =
            if events { PLANNER_EVENTS_CONSUMER } else { d.original_subject.split('.').nth(2).unwrap_or_default() };
        assert_eq!(d.consumer, consumer, "{d:?}");
        assert_eq!(d.deliveries, 1, "garbage is not retried: {d:?}");
        assert!(
            d.reason.starts_with("undecodable payload") || (!events && d.reason.starts_with("rejected: ")),
            "{d:?}"
        );
    }
    // The newer-schema events were handled, not dead-lettered: still in the stream, and the
    // planner applied what they say.
    for seq in swapped.iter().map(|(_, s)| *s).chain(newer_kinds) {
        assert!(events_stream.get_raw_message(seq).await.is_ok(), "event {seq} was removed from the stream");
    }
    let stored = fleet.stack.events(&plan_id).await;
    for (event, _) in &swapped {
        assert!(stored.contains(event), "a reader decodes {} as the worker wrote it", event.event_id);
        let Some(event::Body::Vm(v)) = &event.body else { unreachable!() };
        if v.phase == Phase::Failover as i32 {
            let name = v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or_default();
            let status = plan.vms.iter().find(|s| s.vm.as_ref().is_some_and(|r| r.name == name)).expect("in the plan");
            assert!(v.recovery_point.is_some(), "a failover reports its recovery point");
            assert_eq!(status.recovery_point, v.recovery_point, "{name}: the planner applied the newer-schema event");
        }
    }
}
