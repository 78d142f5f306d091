//! The reprotect worker as a process, against a real nats-server and the ASR simulator.

use tern_asr::AsrClient;
use tern_asr::client::{FailoverDirection, request_key};
use tern_asr_sim::SimConfig;
use tern_proto::{Command, Outcome, Phase, ReprotectCommand, VmRef, command};
use tern_testkit::stack::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-reprotect");

fn sim(vms: usize) -> SimConfig {
    ready_for_failback(vms)
}

fn client(stack: &Stack) -> AsrClient {
    stack.asr_client()
}

async fn advance(stack: &Stack, seconds: f64) {
    reqwest::Client::new()
        .post(format!("{}/_sim/clock/advance", stack.sim.url()))
        .json(&serde_json::json!({"seconds": seconds}))
        .send()
        .await
        .unwrap();
}

/// Fails `vm` over and commits, as the failover worker would have, so reprotect can start.
async fn failed_over_and_committed(stack: &Stack, vm: &str) {
    let c = client(stack);
    let item = c.find_item_by_vm_name(vm, None).await.unwrap().unwrap();
    let s = c
        .unplanned_failover(&item, FailoverDirection::PrimaryToRecovery, None, false, &request_key(&[vm, "fo"]))
        .await
        .unwrap();
    advance(stack, 4000.0).await;
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c.commit(&c.get_item(&item.id).await.unwrap(), &request_key(&[vm, "commit"])).await.unwrap();
    advance(stack, 4000.0).await;
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
}

fn reprotect(plan: &str, vm: &str) -> Command {
    let vm = VmRef { name: vm.into(), ..Default::default() };
    Command {
        command_id: tern_bus::ids::command_id(plan, &vm, Phase::Reprotect, 1),
        plan_id: plan.into(),
        vm: Some(vm),
        attempt: 1,
        action: Some(command::Action::Reprotect(ReprotectCommand::default())),
        ..Default::default()
    }
}

fn terminal(events: &[tern_proto::Event]) -> Option<(Outcome, tern_proto::VmEvent)> {
    events
        .iter()
        .filter(|e| kind(e).is_some_and(|(p, o)| p == Phase::Reprotect && o.is_terminal()))
        .map(|e| (kind(e).unwrap().1, vm_event(e).clone()))
        .next()
}

fn switch_posts(ops: &[(String, String)]) -> usize {
    ops.iter().filter(|(o, _)| o == "switchProtection").count()
}

#[tokio::test]
async fn a_committed_vm_is_reprotected_and_re_resolved_under_its_new_id() {
    let mut stack = Stack::start(sim(2)).await;
    failed_over_and_committed(&stack, "vm-00001").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&reprotect("r1", "vm-00001")).await;
    let events = stack.wait_events("r1", "reprotect to finish", |ev| terminal(ev).is_some()).await;
    let (outcome, done) = terminal(&events).unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{done:?}");
    assert!(
        done.new_protected_item_id.contains("asr-a2a-default-eastus-container"),
        "re-homed to the primary region: {}",
        done.new_protected_item_id
    );
    assert_eq!(
        done.vm.as_ref().unwrap().protected_item_id,
        done.new_protected_item_id,
        "events name the item by its new id"
    );
    assert_eq!(switch_posts(&stack.accepted_ops().await), 1);
    // The event names the VM now protected (the source of the new replication, in eastus) as
    // the re-homed item does: ASR's lowercase id, its region and the address it reports.
    let sub = stack.sim.info().subscription_id.clone();
    let resource = done.resource.clone().expect("the VM now protected");
    assert_eq!(
        resource.arm_id,
        format!("/subscriptions/{sub}/resourcegroups/rg-app/providers/microsoft.compute/virtualmachines/vm-00001")
    );
    assert_eq!(
        (resource.region.as_str(), resource.resource_group.as_str(), resource.subscription_id.as_str()),
        ("eastus", "rg-app", sub.as_str())
    );
    assert_eq!(resource.private_ips, ["10.0.0.4"], "the seeded address of vm-00001 in eastus");
    let c = client(&stack);
    let vm = c.get_vm(&resource.arm_id).await.unwrap().expect("the VM exists");
    let nic = c.get_nic(&vm.nic_ids()[0]).await.unwrap().expect("its NIC");
    assert_eq!(nic.properties.ip_configurations[0].properties.private_ip_address.as_deref(), Some("10.0.0.4"));
}

#[tokio::test]
async fn reprotect_before_commit_is_refused_and_an_asr_failure_carries_its_code() {
    let mut config = sim(3);
    config.faults.failures.push(
        serde_json::from_value(serde_json::json!({"vms": ["vm-00002"], "operation": "reprotect", "code": "151037"}))
            .unwrap(),
    );
    let mut stack = Stack::start(config).await;
    failed_over_and_committed(&stack, "vm-00002").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&reprotect("r2", "vm-00003")).await; // never failed over
    stack.dispatch(&reprotect("r3", "vm-00002")).await;
    let refused = stack.wait_events("r2", "the refusal", |ev| terminal(ev).is_some()).await;
    let (outcome, ev) = terminal(&refused).unwrap();
    assert_eq!((outcome, ev.error.unwrap().code.as_str()), (Outcome::Failed, "TERN-REPROTECT-NOT-ALLOWED"));
    let failed = stack.wait_events("r3", "the failure", |ev| terminal(ev).is_some()).await;
    let (outcome, ev) = terminal(&failed).unwrap();
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(ev.error.unwrap().code, "151037");
}

#[tokio::test]
async fn a_worker_killed_mid_reprotect_is_replaced_and_switch_protection_is_sent_once() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 300.0; // reprotect takes 2-6 s of real time
    let mut stack = Stack::start(config).await;
    failed_over_and_committed(&stack, "vm-00001").await;
    let first = stack.spawn(BIN, &[]);
    stack.dispatch(&reprotect("r4", "vm-00001")).await;
    tern_testkit::wait_until("switch protection to reach ASR", DEADLINE, || async {
        switch_posts(&stack.accepted_ops().await) == 1
    })
    .await
    .unwrap();
    stack.kill(first);
    stack.spawn(BIN, &[]);
    let events = stack.wait_events("r4", "reprotect to finish", |ev| terminal(ev).is_some()).await;
    assert_eq!(terminal(&events).unwrap().0, Outcome::Succeeded);
    assert_eq!(switch_posts(&stack.accepted_ops().await), 1, "one switch protection POST");
}

#[tokio::test]
async fn duplicates_and_garbage_do_not_disturb_the_worker() {
    let mut stack = Stack::start(sim(2)).await;
    failed_over_and_committed(&stack, "vm-00001").await;
    let cmd = reprotect("r5", "vm-00001");
    stack.hold(&cmd).await;
    let js = stack.bus.jetstream().clone();
    js.publish("tern.commands.reprotect.r5", vec![0x0a, 0xff].into()).await.unwrap().await.unwrap();
    for n in 0..2 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("copy-{n}").as_str());
        js.publish_with_headers("tern.commands.reprotect.r5", h, prost::Message::encode_to_vec(&cmd).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stack.spawn(BIN, &[]);
    stack.wait_events("r5", "reprotect to finish", |ev| terminal(ev).is_some()).await;
    tern_testkit::wait_until("the queue to drain", DEADLINE, || async {
        let mut s = stack.bus.jetstream().get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
        s.info().await.unwrap().state.messages == 0
    })
    .await
    .unwrap();
    assert_eq!(switch_posts(&stack.accepted_ops().await), 1, "two deliveries, one side effect");
    assert_eq!(stack.bus.dead_letters().await.unwrap().len(), 1, "the garbage is dead-lettered");
}

/// The simulator's record of a job: (operation or scenario, item, wall-clock end in ms).
async fn jobs(stack: &Stack) -> Vec<serde_json::Value> {
    stack.admin("jobs").await.as_array().unwrap().clone()
}

fn at_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn the_vm_is_protected_again_only_when_initial_replication_has_completed() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 300.0; // the job takes 1-2 s, initial replication 2-6 s more
    let mut stack = Stack::start(config).await;
    failed_over_and_committed(&stack, "vm-00001").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&reprotect("r6", "vm-00001")).await;
    let events = stack.wait_events("r6", "reprotect to finish", |ev| terminal(ev).is_some()).await;
    let (outcome, done) = terminal(&events).unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{done:?}");
    // The job's success was reported on its way, before the phase succeeded.
    let job_done = events
        .iter()
        .filter(|e| kind(e) == Some((Phase::Reprotect, Outcome::Progress)))
        .map(vm_event)
        .find(|v| v.reason.contains("reprotect job succeeded"))
        .unwrap_or_else(|| panic!("no progress event says the job succeeded: {events:#?}"));
    // The phase succeeded only after ASR's SecondaryIrCompletion job ended (the end of initial
    // replication), which itself came after the switch-protection job.
    let jobs = jobs(&stack).await;
    let end_of = |scenario: &str| {
        jobs.iter()
            .filter(|j| j["target"] == "vm-00001" && (j["scenario"] == scenario || j["operation"] == scenario))
            .filter_map(|j| j["completed_unix_ms"].as_i64())
            .max()
    };
    let switch = end_of("switchProtection").unwrap_or_else(|| panic!("no switch protection job: {jobs:#?}"));
    let secondary =
        end_of("SecondaryIrCompletion").unwrap_or_else(|| panic!("no SecondaryIrCompletion job: {jobs:#?}"));
    assert!(switch < secondary, "initial replication ends after the job");
    let succeeded = at_ms(done.finished_at.as_ref().unwrap());
    assert!(succeeded >= secondary, "the phase succeeded at {succeeded}, before replication completed at {secondary}");
    assert!(at_ms(job_done.started_at.as_ref().or(done.started_at.as_ref()).unwrap()) <= succeeded);
    // The item is Protected with every disk Protected.
    let item = client(&stack).get_item(&done.new_protected_item_id).await.unwrap();
    assert!(item.disks_not_protected().is_empty(), "{:?}", item.disk_sync());
}

#[tokio::test]
async fn a_failed_initial_replication_fails_the_phase_with_its_code() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 300.0;
    config.faults.failures.push(
        serde_json::from_value(
            serde_json::json!({"vms": ["vm-00001"], "operation": "ir_completion", "code": "150097"}),
        )
        .unwrap(),
    );
    let mut stack = Stack::start(config).await;
    failed_over_and_committed(&stack, "vm-00001").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&reprotect("r7", "vm-00001")).await;
    let events = stack.wait_events("r7", "reprotect to end", |ev| terminal(ev).is_some()).await;
    let (outcome, ev) = terminal(&events).unwrap();
    assert_eq!(outcome, Outcome::Failed, "{ev:?}");
    assert_eq!(ev.error.unwrap().code, "150097");
}
