//! A stack for worker and service tests: a real nats-server, the ASR simulator, and service
//! processes started from their binaries.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{NatsServer, wait_for};
use serde_json::Value;
use tern_asr_sim::{RunningSimulator, SimConfig, SimOptions};
use tern_bus::{Bus, EventFilter, QueueSettings, StartAt, Topology};
use tern_proto::Event;

/// How long stack waits may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running stack. Worker processes are killed on drop.
#[derive(Debug)]
pub struct Stack {
    pub nats: NatsServer,
    pub sim: RunningSimulator,
    pub bus: Bus,
    pub workers: Vec<Child>,
}

/// Commands come back after 2 s without an ack; claims last 3 s.
#[allow(missing_docs)]
pub fn topology() -> Topology {
    Topology {
        queues: QueueSettings { ack_wait: Duration::from_secs(2), max_attempts: 5, ..QueueSettings::default() },
        ..Topology::default()
    }
}

impl Stack {
    pub async fn start(sim: SimConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await.expect("nats-server");
        let bus = Bus::connect(&nats.url(), "tern-test").await.unwrap();
        bus.ensure_topology(&topology()).await.unwrap();
        let sim = tern_asr_sim::start(SimOptions::new(sim)).await.expect("simulator");
        Self { nats, sim, bus, workers: Vec::new() }
    }

    /// Starts a worker process and waits for its ready line.
    pub fn spawn(&mut self, bin: &str, extra: &[(&str, &str)]) -> usize {
        let info = self.sim.info();
        let mut cmd = Command::new(bin);
        cmd.env("TERN_NATS_URL", self.nats.url())
            .env("TERN_ASR__ENDPOINT", &info.url)
            .env("TERN_ASR__SUBSCRIPTION_ID", &info.subscription_id)
            .env("TERN_ASR__RESOURCE_GROUP", &info.resource_group)
            .env("TERN_ASR__VAULT", &info.vault)
            .env("TERN_ASR_TOKEN", "test-token")
            .env("TERN_BUDGET", "null")
            .env("TERN_ENSURE_TOPOLOGY", "false")
            .env("TERN_LEASE_SECS", "3")
            .env("TERN_POLL_INTERVAL_SECS", "0.2")
            .env("TERN_WATCHER_READS_PER_SEC", "50")
            .env("TERN_DRAIN_TIMEOUT_SECS", "5")
            .env("TERN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("worker starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("ready line");
        assert!(line.contains("\"http\""), "worker did not report ready: {line:?}");
        self.workers.push(child);
        self.workers.len() - 1
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
    }

    pub async fn admin(&self, path: &str) -> Value {
        reqwest::get(format!("{}/_sim/{path}", self.sim.url())).await.unwrap().json().await.unwrap()
    }

    /// Mutating requests the simulator accepted, as (operation, item).
    pub async fn accepted_ops(&self) -> Vec<(String, String)> {
        self.admin("oplog")
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == 202)
            .map(|e| (e["operation"].as_str().unwrap().to_owned(), e["item"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Every event of a plan so far (replayed from the start).
    pub async fn events(&self, plan: &str) -> Vec<Event> {
        let mut stream = self.bus.events(&EventFilter::plan(plan), StartAt::Beginning).await.unwrap();
        let mut out = Vec::new();
        while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            out.push(e.event);
        }
        out
    }

    /// Waits until the plan's events satisfy `done`.
    pub async fn wait_events(&self, plan: &str, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_for(what, DEADLINE, || async {
            let events = self.events(plan).await;
            done(&events).then_some(events)
        })
        .await
        .unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// (phase, outcome) of a VM event.
pub fn kind(e: &Event) -> Option<(tern_proto::Phase, tern_proto::Outcome)> {
    match &e.body {
        Some(tern_proto::event::Body::Vm(v)) => {
            Some((tern_proto::Phase::try_from(v.phase).ok()?, tern_proto::Outcome::try_from(v.outcome).ok()?))
        }
        _ => None,
    }
}

pub fn vm_event(e: &Event) -> &tern_proto::VmEvent {
    match &e.body {
        Some(tern_proto::event::Body::Vm(v)) => v,
        _ => panic!("not a VM event"),
    }
}
