//! Scenario 5: duplicate and replayed old commands. Every command the planner publishes is
//! captured as it goes out (a core subscription on `tern.commands.>` sees each publish with its
//! headers) and published again:
//!
//! - at once with the same `Nats-Msg-Id`: JetStream's dedupe must drop it (`duplicate` ack);
//! - at once with a fresh `Nats-Msg-Id` (seeded half of them), so a second copy really reaches a
//!   worker while the first may still run;
//! - late, once the command's phase has ended (seeded half of them): a replay of an old command
//!   while the VM is in a later phase;
//! - after the plan ended, every command once more.
//!
//! Workers fence every copy on the command's operation record: the plan ends with every VM home,
//! Azure saw no second side effect (not even after the plan), and no copy was dead-lettered.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_bus::topology::COMMANDS_STREAM;
use tern_bus::{EventFilter, StartAt};
use tern_faults::{Expected, Fleet, PLAN_DEADLINE, assert_clean, check, estate, vms};
use tern_proto::{Command, Event, Outcome, Phase, VmState, command, event};
use tern_testkit::Seed;

/// Marks the copies this test publishes, so its own subscription does not capture them again.
const COPY_HEADER: &str = "Tern-Test-Copy";

/// How long the queues may take to work off the copies once the plan ended.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// A command as the planner published it.
#[derive(Debug, Clone)]
struct Captured {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    command: Command,
}

impl Captured {
    fn id(&self) -> &str {
        &self.command.command_id
    }

    /// The phase whose end ends the command: a failover command commits too.
    fn last_phase(&self) -> Phase {
        match &self.command.action {
            Some(command::Action::Failover(f)) if f.commit_after && f.drill.is_none() => Phase::Commit,
            Some(command::Action::Failover(f)) if f.drill.is_some() => Phase::Drill,
            Some(command::Action::Failover(_)) => Phase::Failover,
            Some(command::Action::Reprotect(_)) => Phase::Reprotect,
            Some(command::Action::Cleanup(_)) => Phase::Cleanup,
            None => Phase::Unspecified,
        }
    }
}

/// Publishes a copy of `c` through JetStream with `msg_id`; returns whether JetStream dropped it
/// as a duplicate.
async fn publish_copy(fleet: &Fleet, c: &Captured, msg_id: &str, kind: &str) -> bool {
    let mut headers = c.headers.clone();
    headers.insert(NATS_MESSAGE_ID, msg_id);
    headers.insert(COPY_HEADER, kind);
    let js = fleet.stack.bus.jetstream();
    let ack = js.publish_with_headers(c.subject.clone(), headers, c.payload.clone()).await.expect("publish sent");
    ack.await.expect("JetStream stores or drops the copy").duplicate
}

/// Commands waiting in, or handed out by, the work-queue stream.
async fn queued(fleet: &Fleet) -> u64 {
    let mut stream = fleet.stack.bus.jetstream().get_stream(COMMANDS_STREAM).await.expect("the commands stream");
    stream.info().await.map(|i| i.state.messages).unwrap_or(u64::MAX)
}

/// What the test did with the commands it saw.
#[derive(Debug, Default)]
struct Copies {
    captured: HashMap<String, Captured>,
    /// Command ids in the order they were published.
    order: Vec<String>,
    /// Same-id copies JetStream dropped.
    deduped: usize,
    /// Fresh-id copies published at once.
    doubled: usize,
    /// Commands chosen for a replay once their phase ended.
    to_replay: HashSet<String>,
    /// Commands whose phase ended while the plan ran.
    ended: HashSet<String>,
    /// Commands replayed while the plan ran.
    replayed: HashSet<String>,
}

impl Copies {
    /// A command the planner just published: copy it at once.
    async fn published(&mut self, fleet: &Fleet, plan_id: &str, rng: &mut StdRng, msg: async_nats::Message) {
        let headers = msg.headers.clone().unwrap_or_default();
        if headers.get(COPY_HEADER).is_some() {
            return;
        }
        let command = Command::decode(msg.payload.as_ref()).expect("the planner publishes commands");
        if command.plan_id != plan_id || self.captured.contains_key(&command.command_id) {
            return;
        }
        let msg_id = headers.get(NATS_MESSAGE_ID).map(|v| v.as_str().to_owned());
        assert_eq!(msg_id.as_deref(), Some(command.command_id.as_str()), "the command id is the dedup id");
        let c = Captured { subject: msg.subject.to_string(), headers, payload: msg.payload.clone(), command };
        // The same id again: JetStream's dedupe drops it.
        assert!(publish_copy(fleet, &c, c.id(), "same-id").await, "{}: a same-id copy was stored", c.id());
        self.deduped += 1;
        // A fresh id: a real second delivery, while the first may be running.
        if rng.random_bool(0.5) {
            let fresh = format!("{}.duplicate", c.id());
            assert!(!publish_copy(fleet, &c, &fresh, "duplicate").await, "{fresh} was dropped");
            self.doubled += 1;
        }
        if rng.random_bool(0.5) {
            self.to_replay.insert(c.id().to_owned());
        }
        self.order.push(c.id().to_owned());
        self.captured.insert(c.id().to_owned(), c);
    }

    /// An event of the plan: once a command's phase ended, replay the command if it was chosen.
    async fn event(&mut self, fleet: &Fleet, e: &Event) {
        let Some(event::Body::Vm(v)) = &e.body else { return };
        let Some(c) = self.captured.get(&v.command_id) else { return };
        let outcome = Outcome::try_from(v.outcome).unwrap_or(Outcome::Unspecified);
        let done =
            outcome.is_terminal() && (Phase::try_from(v.phase) == Ok(c.last_phase()) || outcome == Outcome::Failed);
        if !done {
            return;
        }
        self.ended.insert(c.id().to_owned());
        // A replay of an old command: its phase is over, the VM has moved on.
        if self.to_replay.contains(c.id()) && self.replayed.insert(c.id().to_owned()) {
            let fresh = format!("{}.replay", c.id());
            assert!(!publish_copy(fleet, c, &fresh, "replay").await, "{fresh} was dropped");
        }
    }
}

#[tokio::test]
async fn duplicated_and_replayed_commands_are_fenced_and_change_nothing() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start(estate(n)).await;
    let client = fleet.stack.bus.client().clone();
    let mut published = client.subscribe("tern.commands.>").await.expect("subscribe");
    client.flush().await.expect("the subscription is in place");

    let plan_id = fleet.submit(fleet.spec(n)).await;
    let mut events = fleet.stack.bus.events(&EventFilter::plan(&plan_id), StartAt::Beginning).await.expect("events");
    let mut copies = Copies::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let watched = tokio::time::timeout(PLAN_DEADLINE, async {
        loop {
            tokio::select! {
                biased;
                Some(msg) = published.next() => copies.published(&fleet, &plan_id, &mut rng, msg).await,
                Some(Ok(e)) = events.next() => copies.event(&fleet, &e.event).await,
                _ = tick.tick() => {
                    if fleet.plan(&plan_id).await.is_some_and(|p| p.finished_at.is_some()) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(watched.is_ok(), "plan {plan_id} did not end within {PLAN_DEADLINE:?}");
    let plan = fleet.finished(&plan_id).await;
    // Commands the loop had not got to yet when the plan ended.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), published.next()).await {
        copies.published(&fleet, &plan_id, &mut rng, msg).await;
    }
    assert_eq!(copies.captured.len(), 3 * n, "a failover, a reprotect and a cleanup command per VM");

    // The plan is over: every command once more, as if an old backlog were replayed.
    let applied_at_end = fleet.stack.accepted_ops().await;
    for (id, c) in copies.order.iter().map(|id| (id, &copies.captured[id])) {
        let fresh = format!("{id}.after-the-plan");
        assert!(!publish_copy(&fleet, c, &fresh, "late-replay").await, "{fresh} was dropped");
    }
    tern_testkit::wait_until("the queues to work off every copy", DRAIN_DEADLINE, || async {
        queued(&fleet).await == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    assert_clean("duplicate and replayed commands", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
    assert_eq!(fleet.stack.accepted_ops().await, applied_at_end, "replays after the plan sent nothing to Azure");
    assert_eq!(copies.deduped, 3 * n, "every same-id copy was dropped by JetStream");
    assert!(
        copies.doubled > 0 && !copies.replayed.is_empty(),
        "copies reached the workers: {} duplicates, {} replays",
        copies.doubled,
        copies.replayed.len()
    );
    let due: HashSet<String> = copies.to_replay.intersection(&copies.ended).cloned().collect();
    assert_eq!(copies.replayed, due, "every chosen command was replayed once its phase ended");
    eprintln!(
        "{} same-id copies dropped, {} duplicates, {} mid-plan replays, {} replays after the plan",
        copies.deduped,
        copies.doubled,
        copies.replayed.len(),
        copies.order.len()
    );
}
