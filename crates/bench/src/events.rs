//! The bench as an outside event consumer: a core NATS subscription to Tern's event subjects,
//! every message stamped with the moment it arrived.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use prost::Message;
use tern_proto::{Event, event};
use tokio::sync::mpsc;

/// One event as the bench received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived, wall-clock Unix milliseconds (compared with the simulator's times).
    pub at_unix_ms: f64,
    /// Its subject: `tern.events.<plan>.<phase>.<outcome|kind>`.
    pub subject: String,
    /// The decoded event (`None` if the payload was not an `Event`).
    pub event: Option<Event>,
}

impl Received {
    /// The `<phase>` and `<outcome>` tokens of the subject.
    pub fn phase_and_outcome(&self) -> (&str, &str) {
        let mut t = self.subject.split('.').skip(3);
        (t.next().unwrap_or(""), t.next().unwrap_or(""))
    }

    /// The VM event, if this is one.
    pub fn vm(&self) -> Option<&tern_proto::VmEvent> {
        match self.event.as_ref()?.body.as_ref()? {
            event::Body::Vm(vm) => Some(vm),
            event::Body::Plan(_) => None,
        }
    }
}

/// A plan-level event that ends a plan.
#[derive(Clone, Debug)]
pub struct PlanEnd {
    /// The plan.
    pub plan_id: String,
    /// `completed`, `completed_with_errors` or `cancelled`.
    pub kind: String,
    /// When it arrived.
    pub at: Instant,
}

/// The plan-level event kinds after which a plan does nothing more.
const PLAN_END_KINDS: [&str; 3] = ["completed", "completed_with_errors", "cancelled"];

/// A running subscription. Every event is kept; plan ends are also sent on `ends`.
#[derive(Debug)]
pub struct Collector {
    events: Arc<Mutex<Vec<Received>>>,
    finished_vms: Arc<AtomicUsize>,
    /// Plan-end events as they arrive.
    pub ends: mpsc::UnboundedReceiver<PlanEnd>,
    task: tokio::task::JoinHandle<()>,
    _client: async_nats::Client,
}

impl Collector {
    /// Subscribes to `subjects` on `nats_url`; returns once the server has the subscriptions.
    /// It reads as an outside consumer does: as the events-reader (`auth`).
    pub async fn start(nats_url: &str, auth: &tern_bus::NatsAuth, subjects: &[String]) -> anyhow::Result<Collector> {
        let client = auth
            .connect_options()
            .await
            .map_err(anyhow::Error::msg)?
            .name("tern-bench")
            // Never drop an event because the bench fell behind for a moment.
            .subscription_capacity(1 << 20)
            .connect(nats_url)
            .await
            .with_context(|| format!("connecting to {nats_url}"))?;
        let mut subs = Vec::new();
        for s in subjects {
            subs.push(client.subscribe(s.clone()).await.with_context(|| format!("subscribing to {s}"))?);
        }
        // The subscriptions are in place once the server has answered a round trip.
        client.flush().await.context("flushing the subscriptions")?;
        let mut merged = futures::stream::select_all(subs);
        let events = Arc::new(Mutex::new(Vec::new()));
        let finished_vms = Arc::new(AtomicUsize::new(0));
        let (tx, ends) = mpsc::unbounded_channel();
        let (store, finished) = (events.clone(), finished_vms.clone());
        let task = tokio::spawn(async move {
            while let Some(msg) = merged.next().await {
                let at = Instant::now();
                let at_unix_ms =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0;
                let received = Received {
                    at_unix_ms,
                    subject: msg.subject.to_string(),
                    event: Event::decode(msg.payload.as_ref()).ok(),
                };
                let (phase, outcome) = received.phase_and_outcome();
                if phase == tern_bus::subjects::PLAN_TOKEN && PLAN_END_KINDS.contains(&outcome) {
                    let plan_id = received.subject.split('.').nth(2).unwrap_or_default().to_owned();
                    let _ = tx.send(PlanEnd { plan_id, kind: outcome.to_owned(), at });
                } else if phase == "cleanup" && matches!(outcome, "succeeded" | "failed" | "skipped") {
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                store.lock().unwrap_or_else(|e| e.into_inner()).push(received);
            }
        });
        Ok(Collector { events, finished_vms, ends, task, _client: client })
    }

    /// VMs whose last phase (cleanup) has ended so far.
    pub fn finished_vms(&self) -> usize {
        self.finished_vms.load(Ordering::Relaxed)
    }

    /// Stops listening and hands back every event received.
    pub fn finish(self) -> Vec<Received> {
        self.task.abort();
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
