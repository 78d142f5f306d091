//! The fault suite's harness: a failback plan of many VMs against real processes — nats-server,
//! the planner and the three workers, each its own process, and the ASR simulator over HTTP —
//! and the checks that must hold after any fault (`../shared/design.md` §4, invariants 1–5):
//!
//! 1. every VM ends in a terminal state with a reason;
//! 2. no side effect (per VM and operation; per resource for deletes) was sent again after Azure
//!    accepted it — judged from every mutating request the simulator *received*, not only those
//!    it applied — except one more round per failed job, up to the plan's automatic retries;
//! 3. every delete the simulator accepted was of a VM of the plan whose reprotect had succeeded
//!    in Azure before it (the simulator's record of deletes), outside the region the VM runs in;
//!    and no cleanup started, on the event stream, for a VM whose reprotect did not succeed;
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
        // The planner's watchdog looks every 2 s (30 s in production): the scenarios compress
        // Azure's time, so they compress the watchdog's too.
        let mut planner = all.clone();
        planner.push(("TERN_WATCHDOG_INTERVAL_SECS", "2"));
        for service in SERVICES {
            let env = if service == "tern-planner" { &planner } else { &all };
            index.insert(service, stack.spawn(&bin(service), env));
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

    /// Starts another instance of `service` with `env` on top of the fleet's; returns its
    /// process index in `stack`.
    pub fn start_instance(&mut self, service: &str, env: &[(&str, &str)]) -> usize {
        let mut all = vec![("TERN_LISTEN", "127.0.0.1:0")];
        all.extend_from_slice(env);
        self.stack.spawn(&bin(service), &all)
    }

    /// Commands process `i` holds now (claimed, not finished), from its `/metrics`.
    pub async fn in_flight(&self, i: usize) -> usize {
        let (status, text) = self.stack.worker_http(i, "/metrics").await;
        assert_eq!(status, 200, "/metrics of process {i}");
        text.lines()
            .filter(|l| l.starts_with("tern_worker_commands_in_flight"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as usize
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
    /// Worker crashes the scenario inflicts: a command in flight through as many of them as it
    /// has deliveries is dead-lettered ("without an ack") — it is on record for the operator,
    /// and its VM must still have come home (the watchdog sends it again).
    pub crash_dead_letters: bool,
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

    // 2. No side effect sent again after Azure accepted it (the simulator's log of every
    //    mutating request it received, applied or not).
    let oplog = fleet.stack.admin("oplog").await;
    let jobs = fleet.stack.admin("jobs").await;
    bad.extend(resent(&sent_requests(&oplog), &failed_jobs(&jobs), expected.retries));

    // 3. Every delete Azure accepted was of a VM of the plan whose reprotect had succeeded, and
    //    not in the region that VM runs in (the simulator's own record, not the workers' word).
    let deletes = fleet.stack.admin("deletes").await;
    let plan_vms: BTreeSet<String> =
        plan.vms.iter().filter_map(|v| v.vm.as_ref()).map(|r| r.name.to_ascii_lowercase()).collect();
    bad.extend(unsafe_deletes(&deletes, &plan_vms));

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
        Ok(d) => d
            .into_iter()
            .filter(|d| {
                if !(expected.crash_dead_letters && d.reason.contains("without an ack")) {
                    return true;
                }
                let command = <tern_proto::Command as prost::Message>::decode(d.payload.clone()).unwrap_or_default();
                let key = command.vm.as_ref().map(tern_bus::ids::vm_key).unwrap_or_default().to_owned();
                let home = plan.vms.iter().any(|v| {
                    v.vm.as_ref().is_some_and(|r| tern_bus::ids::vm_key(r) == key)
                        && v.state == VmState::Succeeded as i32
                });
                if !home {
                    bad.push(format!(
                        "{key}: its command was dead-lettered after worker crashes and it did not come home"
                    ));
                }
                false
            })
            .map(|d| d.payload.to_vec())
            .collect(),
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

/// One mutating request as the simulator's operation log has it (applied or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub method: String,
    pub path: String,
    pub operation: String,
    pub item: String,
    pub status: u64,
}

impl SentRequest {
    /// What "the same side effect" means: an ASR action per protected item (switchProtection is
    /// posted to the container and names its item in the body), a delete per resource.
    pub fn key(&self) -> (String, String) {
        let target = if self.method == "DELETE" { &self.path } else { &self.item };
        (self.operation.clone(), target.to_lowercase())
    }

    /// Azure accepted it.
    pub fn applied(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Every mutating request the simulator received, in order (`GET /_sim/oplog`).
pub fn sent_requests(oplog: &serde_json::Value) -> Vec<SentRequest> {
    let text = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    oplog
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| SentRequest {
            method: text(e, "method"),
            path: text(e, "path"),
            operation: text(e, "operation"),
            item: text(e, "item"),
            status: e["status"].as_u64().unwrap_or(0),
        })
        .filter(|r| r.method != "GET")
        .collect()
}

/// How many jobs failed per side effect (`GET /_sim/jobs`), keyed as [`SentRequest::key`]: a
/// delete's job names its resource by name only, so deletes are keyed by that name.
pub fn failed_jobs(jobs: &serde_json::Value) -> BTreeMap<(String, String), u32> {
    let mut failed = BTreeMap::new();
    for j in jobs.as_array().into_iter().flatten().filter(|j| j["state"] == "Failed") {
        let operation = j["operation"].as_str().unwrap_or_default().to_owned();
        let target = if operation == "delete" { j["target"].as_str() } else { j["item"].as_str() };
        *failed.entry((operation, target.unwrap_or_default().to_lowercase())).or_default() += 1;
    }
    failed
}

/// Side effects sent again after Azure accepted them. Per side effect, in the order sent:
/// requests answered before anything was applied (429, 5xx, 401) are retries a client should
/// make, until one is accepted; anything sent after that — even a request Azure refused — is a
/// second send. The one exception is a retry after a failed job: each job of that side effect
/// that failed, up to `retries` (the plan's automatic retries), lets one more round of sends
/// through.
pub fn resent(sent: &[SentRequest], failed: &BTreeMap<(String, String), u32>, retries: u32) -> Violations {
    let mut by_key: BTreeMap<(String, String), Vec<&SentRequest>> = BTreeMap::new();
    for r in sent {
        by_key.entry(r.key()).or_default().push(r);
    }
    let mut bad = Vec::new();
    for (key, sends) in by_key {
        let delete_name = key.1.rsplit('/').next().unwrap_or_default().to_owned();
        let failed_key = if key.0 == "delete" { (key.0.clone(), delete_name) } else { key.clone() };
        let mut reopenings = failed.get(&failed_key).copied().unwrap_or(0).min(retries);
        let mut accepted = false;
        let mut after = Vec::new();
        for r in sends {
            if accepted && reopenings > 0 {
                reopenings -= 1;
                accepted = false;
            }
            if accepted {
                after.push(r.status);
            } else if r.applied() {
                accepted = true;
            }
        }
        if !after.is_empty() {
            let (operation, target) = key;
            bad.push(format!("{operation} of {target} was sent again after Azure accepted it (answered {after:?})"));
        }
    }
    bad
}

/// Deletes Azure accepted (`GET /_sim/deletes`) that were not safe: of something no VM of the
/// plan owned, of a VM whose reprotect had not succeeded before the delete, or in the region the
/// VM runs in.
pub fn unsafe_deletes(deletes: &serde_json::Value, plan_vms: &BTreeSet<String>) -> Violations {
    let mut bad = Vec::new();
    for d in deletes.as_array().into_iter().flatten() {
        let resource = d["resource"].as_str().unwrap_or("?");
        let region = d["region"].as_str().unwrap_or("?");
        let Some(vm) = d["vm"].as_str() else {
            bad.push(format!("{resource} was deleted, though no VM owned it"));
            continue;
        };
        if !plan_vms.contains(&vm.to_ascii_lowercase()) {
            bad.push(format!("{resource} of {vm} was deleted, though {vm} is not in the plan"));
        }
        if d["reprotected"] != true {
            let state = d["protection_state"].as_str().unwrap_or("no protected item");
            bad.push(format!("{resource} of {vm} was deleted before its reprotect succeeded ({state})"));
        }
        if d["vm_region"].as_str() == Some(region) {
            bad.push(format!("{resource} of {vm} was deleted in {region}, the region {vm} runs in"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(operation: &str, item: &str, status: u64) -> SentRequest {
        SentRequest {
            method: "POST".into(),
            path: format!("/items/{item}/{operation}"),
            operation: operation.into(),
            item: item.into(),
            status,
        }
    }

    #[test]
    fn a_send_after_azure_accepted_is_a_violation_even_if_refused_but_retries_before_are_not() {
        let none = BTreeMap::new();
        let retried = [sent("unplannedFailover", "vm-1", 429), sent("unplannedFailover", "vm-1", 503)];
        let ok = [&retried[..], &[sent("unplannedFailover", "vm-1", 202)]].concat();
        assert!(resent(&ok, &none, 0).is_empty());
        let twice = [&ok[..], &[sent("unplannedFailover", "vm-1", 409)]].concat();
        let bad = resent(&twice, &none, 0);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("unplannedFailover of vm-1") && bad[0].contains("[409]"), "{bad:?}");
        // Other VMs and operations are other side effects.
        let others = [sent("unplannedFailover", "vm-1", 202), sent("unplannedFailover", "vm-2", 202)];
        assert!(resent(&[&others[..], &[sent("failoverCommit", "vm-1", 202)]].concat(), &none, 0).is_empty());
    }

    #[test]
    fn a_failed_job_allows_one_more_round_only_within_the_plan_s_retries() {
        let failed = BTreeMap::from([(("unplannedFailover".to_owned(), "vm-1".to_owned()), 1)]);
        let again = [
            sent("unplannedFailover", "vm-1", 202),
            sent("unplannedFailover", "vm-1", 429),
            sent("unplannedFailover", "vm-1", 202),
        ];
        assert!(resent(&again, &failed, 1).is_empty(), "one failed job, one retry allowed");
        assert_eq!(resent(&again, &failed, 0).len(), 1, "no retries in the plan: the resend is a violation");
        let thrice = [&again[..], &[sent("unplannedFailover", "vm-1", 202)]].concat();
        assert_eq!(resent(&thrice, &failed, 2).len(), 1, "one failed job allows one more round, not two");
    }

    #[test]
    fn deletes_are_safe_only_for_reprotected_vms_of_the_plan_outside_their_region() {
        let plan: BTreeSet<String> = ["vm-1".to_owned()].into();
        let delete = |vm: Option<&str>, reprotected: bool, region: &str| {
            json!({"resource": "/x", "kind": "vm", "region": region, "vm": vm, "reprotected": reprotected,
                   "protection_state": "Protected", "vm_region": "eastus"})
        };
        assert!(unsafe_deletes(&json!([delete(Some("vm-1"), true, "westus")]), &plan).is_empty());
        let bad = unsafe_deletes(
            &json!([
                delete(Some("vm-1"), false, "westus"),
                delete(Some("vm-1"), true, "eastus"),
                delete(Some("vm-9"), true, "westus"),
                delete(None, true, "westus"),
            ]),
            &plan,
        );
        assert_eq!(bad.len(), 4, "{bad:#?}");
    }
}
