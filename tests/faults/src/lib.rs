//! The fault suite's harness: a failback plan of many VMs against real processes — nats-server,
//! the planner and the three workers, each its own process, and the ASR simulator over HTTP —
//! and the checks that must hold after any fault (`../shared/design.md` §4, invariants 1–5):
//!
//! 1. every VM ends in a terminal state with a reason;
//! 2. the simulator applied at most one mutating request per VM and operation (per resource for
//!    deletes), except the retries the failure policy allows after a failed job;
//! 3. no cleanup ran for a VM whose reprotect did not succeed;
//! 4. the event stream holds a `started` and a terminal event for every VM phase that ran;
//! 5. the dead-letter queue holds exactly what the scenario injected.
//!
//! Scale comes from the environment, so `make test` runs a short form and `make chaos` a soak:
//! `TERN_FAULTS_VMS` (VMs per plan) and `TERN_FAULTS_ROUNDS` (repetitions of each fault).
//! Randomness is seeded ([`tern_testkit::Seed`]; printed when a scenario fails).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tern_asr_sim::SimConfig;
use tern_proto::{
    Event, GetPlanRequest, NameList, Outcome, Phase, Plan, PlanSpec, Selection, SubmitPlanRequest, VmState, event,
    selection,
};
use tern_testkit::stack::Stack;

/// The services, in start order.
pub const SERVICES: [&str; 4] = ["tern-planner", "tern-failover", "tern-reprotect", "tern-cleanup"];

/// How long a plan may take to end under faults (below nextest's own timeout, so the harness
/// gets to say which VMs it was still waiting for).
pub const PLAN_DEADLINE: Duration = Duration::from_secs(150);

/// VMs per plan: `TERN_FAULTS_VMS`, else `short`.
pub fn vms(short: usize) -> usize {
    std::env::var("TERN_FAULTS_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(short)
}

/// Repetitions of each fault: `TERN_FAULTS_ROUNDS`, else `short`.
pub fn rounds(short: usize) -> usize {
    std::env::var("TERN_FAULTS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(short)
}

/// A service binary of this workspace's build (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> String {
    // This test binary is target/<profile>/deps/NAME-HASH; the services are in target/<profile>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|d| d.parent()).map(PathBuf::from).unwrap_or_default();
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins`", path.display());
    path.display().to_string()
}

/// The simulator's estate: `vms` VMs ready for failback, jobs that take a little while (so
/// faults land mid-phase), no throttling unless a scenario turns it on.
pub fn estate(vms: usize) -> SimConfig {
    let mut c = tern_testkit::stack::ready_for_failback(vms);
    c.zero_latency = false;
    c.time_compression = 600.0;
    c
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    pub stack: Stack,
    /// Process index of each service in `stack`.
    pub index: HashMap<&'static str, usize>,
    pub vault_id: String,
}

impl Fleet {
    /// nats-server, the simulator with `sim`, and every service as its own process.
    pub async fn start(sim: SimConfig) -> Fleet {
        Self::start_with(sim, &[]).await
    }

    /// As [`Fleet::start`], with extra environment for every service.
    pub async fn start_with(sim: SimConfig, env: &[(&str, &str)]) -> Fleet {
        Self::start_services(Stack::start(sim).await, env)
    }

    /// As [`Fleet::start`], on a 3-node JetStream cluster ([`Stack::start_on_cluster`]).
    pub async fn start_on_cluster(sim: SimConfig) -> Fleet {
        Self::start_services(Stack::start_on_cluster(sim).await, &[])
    }

    fn start_services(mut stack: Stack, env: &[(&str, &str)]) -> Fleet {
        let mut index = HashMap::new();
        let mut all = vec![("TERN_LISTEN", "127.0.0.1:0")];
        all.extend_from_slice(env);
        for service in SERVICES {
            index.insert(service, stack.spawn(&bin(service), &all));
        }
        let vault_id = stack.asr_client().config().vault_id();
        Fleet { stack, index, vault_id }
    }

    /// A client of the planner as it runs now (its address changes when it restarts).
    pub async fn planner(&self) -> tern_proto::auth::Client {
        let addr = self.stack.ready[self.index["tern-planner"]]["grpc"].as_str().expect("the planner's address");
        self.stack.planner_client(addr).await.expect("the planner answers")
    }

    /// The spec of a failback of `vm-00001..=vm-N`.
    pub fn spec(&self, vms: usize) -> PlanSpec {
        let names = (1..=vms).map(|i| format!("vm-{i:05}")).collect();
        PlanSpec {
            vault_id: self.vault_id.clone(),
            selection: Some(Selection { by: Some(selection::By::VmNames(NameList { values: names })) }),
            ..Default::default()
        }
    }

    /// Submits `spec`; returns the plan id.
    pub async fn submit(&self, spec: PlanSpec) -> String {
        let reply = self.planner().await.submit_plan(SubmitPlanRequest { spec: Some(spec) }).await;
        reply.expect("the plan is accepted").into_inner().plan.expect("a plan").plan_id
    }

    /// The plan now, from whichever planner is up (None while none answers).
    pub async fn plan(&self, plan_id: &str) -> Option<Plan> {
        let addr = self.stack.ready[self.index["tern-planner"]]["grpc"].as_str()?.to_owned();
        let mut grpc = self.stack.planner_client(&addr).await.ok()?;
        grpc.get_plan(GetPlanRequest { plan_id: plan_id.to_owned() }).await.ok().map(|r| r.into_inner())
    }

    /// Waits for the plan to end; returns it. If it does not, says which VMs it still waits for.
    pub async fn finished(&self, plan_id: &str) -> Plan {
        let ended = tern_testkit::wait_for(&format!("plan {plan_id} to end"), PLAN_DEADLINE, || async {
            self.plan(plan_id).await.filter(|p| p.finished_at.is_some())
        })
        .await;
        match ended {
            Ok(plan) => plan,
            Err(e) => {
                let open: Vec<String> = self
                    .plan(plan_id)
                    .await
                    .map(|p| {
                        p.vms
                            .iter()
                            .filter(|v| matches!(VmState::try_from(v.state), Ok(VmState::Pending | VmState::Running)))
                            .map(|v| {
                                let name = v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or("?");
                                let phase = Phase::try_from(v.phase).unwrap_or_default().slug();
                                format!("{name} {phase} {:?}", VmState::try_from(v.state).unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                panic!("{e}; still open: {open:?}");
            }
        }
    }

    /// `PUT /_sim/faults`: replaces every fault the simulator injects.
    pub async fn set_faults(&self, spec: serde_json::Value) {
        let url = format!("{}/_sim/faults", self.stack.sim.url());
        let reply = reqwest::Client::new().put(url).json(&spec).send().await.expect("the simulator answers");
        let status = reply.status();
        let body = reply.text().await.unwrap_or_default();
        assert_eq!(status, 200, "PUT /_sim/faults {spec}: {body}");
    }

    /// Kills (SIGKILL) and restarts `service`.
    pub fn crash_and_restart(&mut self, service: &str) {
        self.stack.restart(self.index[service]);
    }
}

/// Waits until the plan's event stream has grown by `more` events: a point of the plan chosen
/// by progress, not by time.
pub async fn progress(fleet: &Fleet, plan_id: &str, more: usize) {
    let from = fleet.stack.events(plan_id).await.len();
    let _ = tern_testkit::wait_until("the plan to move on", tern_testkit::stack::DEADLINE, || async {
        fleet.stack.events(plan_id).await.len() >= from + more
    })
    .await;
}

/// What a scenario injected on purpose, for the checks.
#[derive(Debug, Default)]
pub struct Expected {
    /// Payloads the scenario published as garbage: exactly these must be in the DLQ.
    pub dead_letters: Vec<Vec<u8>>,
    /// Automatic retries the plan's policy allows after a failed job.
    pub retries: u32,
}

/// A broken invariant, said plainly.
pub type Violations = Vec<String>;

/// Checks invariants 1–5 for `plan` (ended); returns every violation found.
pub async fn check(fleet: &Fleet, plan: &Plan, expected: &Expected) -> Violations {
    let mut bad = Vec::new();
    // 1. Terminal, with a reason.
    for vm in &plan.vms {
        let name = vm.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?");
        let state = VmState::try_from(vm.state).unwrap_or(VmState::Unspecified);
        if !matches!(state, VmState::Succeeded | VmState::Failed | VmState::Skipped) {
            bad.push(format!("{name} ended the plan {state:?}"));
        } else if vm.reason.is_empty() {
            bad.push(format!("{name} is {state:?} without a reason"));
        }
    }

    // 2. At most one applied mutating request per VM and operation (per resource).
    let oplog = fleet.stack.admin("oplog").await;
    let mut applied: BTreeMap<(String, String), u32> = BTreeMap::new();
    for e in oplog.as_array().into_iter().flatten() {
        let status = e["status"].as_u64().unwrap_or(0);
        let method = e["method"].as_str().unwrap_or("");
        if (200..300).contains(&status) && method != "GET" {
            // A delete is per resource; an ASR action is per protected item (switchProtection
            // is posted to the container and names its item in the body).
            let target = if method == "DELETE" { e["path"].as_str() } else { e["item"].as_str() };
            let key = (e["operation"].as_str().unwrap_or("").to_owned(), target.unwrap_or("").to_lowercase());
            *applied.entry(key).or_default() += 1;
        }
    }
    for ((op, path), n) in &applied {
        if *n > 1 + expected.retries {
            bad.push(format!("{op} applied {n} times to {path}"));
        }
    }

    // 3 and 4, from the event stream.
    let events = fleet.stack.events(&plan.plan_id).await;
    let mut seen: BTreeMap<(String, Phase), BTreeSet<Outcome>> = BTreeMap::new();
    for e in &events {
        if let Some(event::Body::Vm(v)) = &e.body {
            let name = v.vm.as_ref().map(|r| r.name.clone()).unwrap_or_default();
            let phase = Phase::try_from(v.phase).unwrap_or(Phase::Unspecified);
            seen.entry((name, phase)).or_default().insert(Outcome::try_from(v.outcome).unwrap_or(Outcome::Unspecified));
        }
    }
    let terminal = |o: &BTreeSet<Outcome>| o.iter().any(|o| o.is_terminal());
    for ((name, phase), outcomes) in &seen {
        if outcomes.contains(&Outcome::Started) && !terminal(outcomes) {
            bad.push(format!("{name} {} started and never ended on the event stream", phase.slug()));
        }
        if terminal(outcomes) && !outcomes.contains(&Outcome::Started) && !outcomes.contains(&Outcome::Skipped) {
            bad.push(format!("{name} {} ended without a started event", phase.slug()));
        }
        if *phase == Phase::Cleanup && outcomes.contains(&Outcome::Started) {
            let reprotected =
                seen.get(&(name.clone(), Phase::Reprotect)).is_some_and(|o| o.contains(&Outcome::Succeeded));
            if !reprotected {
                bad.push(format!("{name}: cleanup ran though its reprotect did not succeed"));
            }
        }
    }
    for vm in plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32) {
        let name = vm.vm.as_ref().map(|v| v.name.clone()).unwrap_or_default();
        if !seen.get(&(name.clone(), Phase::Cleanup)).is_some_and(|o| o.contains(&Outcome::Succeeded)) {
            bad.push(format!("{name} succeeded but the stream has no cleanup success for it"));
        }
    }

    // 5. The DLQ holds exactly the injected garbage.
    let mut dead: Vec<Vec<u8>> = match fleet.stack.bus.dead_letters().await {
        Ok(d) => d.into_iter().map(|d| d.payload.to_vec()).collect(),
        Err(e) => {
            bad.push(format!("the DLQ cannot be read: {e}"));
            Vec::new()
        }
    };
    let mut want = expected.dead_letters.clone();
    dead.sort();
    want.sort();
    if dead != want {
        bad.push(format!("the DLQ holds {} messages, {} were injected", dead.len(), want.len()));
    }
    bad
}

/// Panics with every violation, or does nothing.
pub fn assert_clean(scenario: &str, violations: &Violations) {
    assert!(
        violations.is_empty(),
        "{scenario}: {} invariant violations:\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
}

/// VM events of a plan, for scenario-specific checks.
pub fn vm_events(events: &[Event]) -> impl Iterator<Item = &tern_proto::VmEvent> {
    events.iter().filter_map(|e| match &e.body {
        Some(event::Body::Vm(v)) => Some(v),
        _ => None,
    })
}
