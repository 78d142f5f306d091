//! The cleanup worker as a process, against a real nats-server and the ASR simulator.
//!
//! Leftovers are made the way they happen: each VM is failed back through the simulator's API
//! (failover → commit → reprotect) with a simulator whose reprotect leaves the old VM and its
//! NIC behind in the secondary region.

use tern_asr::client::request_key;
use tern_asr::model::ProtectedItem;
use tern_asr::{AsrClient, FailoverDirection, ReprotectSettings};
use tern_asr_sim::SimConfig;
use tern_proto::{CleanupCommand, CleanupOptions, Command, Outcome, Phase, VmEvent, VmRef, command};
use tern_testkit::stack::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-cleanup");

/// VMs running in the secondary region (westus), ready to fail back to eastus; reprotect keeps
/// the VM it moves away from.
fn sim(vms: usize) -> SimConfig {
    let mut c = ready_for_failback(vms);
    c.reprotect_removes_source_vm = false;
    c
}

fn asr(stack: &Stack) -> AsrClient {
    stack.asr_client()
}

async fn item(c: &AsrClient, vm: &str) -> Option<ProtectedItem> {
    c.find_item_by_vm_name(vm, None).await.unwrap()
}

/// Fails `vm` back to eastus and commits; reprotects it too when `reprotect`.
async fn fail_back(c: &AsrClient, vm: &str, reprotect: bool) {
    let it = item(c, vm).await.unwrap();
    let sub = c
        .unplanned_failover(&it, FailoverDirection::PrimaryToRecovery, None, true, &request_key(&[vm, "fo"]))
        .await
        .unwrap();
    c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    let sub = c.commit(&c.get_item(&it.id).await.unwrap(), &request_key(&[vm, "commit"])).await.unwrap();
    c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    if reprotect {
        let committed = c.get_item(&it.id).await.unwrap();
        let sub =
            c.switch_protection(&committed, &ReprotectSettings::default(), &request_key(&[vm, "rp"])).await.unwrap();
        c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    }
}

/// (VM id in eastus, VM id in westus, NIC id in westus) of a failed-back VM.
async fn ids(c: &AsrClient, vm: &str) -> (String, String, String) {
    let it = item(c, vm).await.unwrap();
    let a2a = it.properties.provider_specific_details.unwrap();
    let (primary, secondary) = (a2a.fabric_object_id.unwrap(), a2a.recovery_fabric_object_id.unwrap());
    assert!(primary.contains("/rg-app/") && secondary.contains("/rg-app-asr/"), "{primary} {secondary}");
    let leftover = c.get_vm(&secondary).await.unwrap().expect("reprotect left the old VM in westus");
    let nic = leftover.nic_ids().pop().expect("the leftover VM has a NIC");
    (primary, secondary, nic)
}

fn cleanup(plan: &str, vm: &str, options: CleanupOptions) -> Command {
    let vm = VmRef { name: vm.into(), ..Default::default() };
    Command {
        command_id: tern_bus::ids::command_id(plan, &vm, Phase::Cleanup, 1),
        plan_id: plan.into(),
        vm: Some(vm),
        attempt: 1,
        action: Some(command::Action::Cleanup(CleanupCommand { options: Some(options) })),
        ..Default::default()
    }
}

fn remove() -> CleanupOptions {
    CleanupOptions { remove_leftovers: true, ..Default::default() }
}

/// The cleanup outcomes of the plan's VMs, as (vm, outcome, event).
fn terminals(events: &[tern_proto::Event]) -> Vec<(String, Outcome, VmEvent)> {
    events
        .iter()
        .filter(|e| kind(e).is_some_and(|(p, o)| p == Phase::Cleanup && o.is_terminal()))
        .map(|e| {
            let v = vm_event(e).clone();
            (v.vm.clone().unwrap_or_default().name, kind(e).unwrap().1, v)
        })
        .collect()
}

async fn finished(stack: &Stack, plan: &str, vms: usize) -> Vec<(String, Outcome, VmEvent)> {
    let events = stack.wait_events(plan, "cleanup to finish", |ev| terminals(ev).len() >= vms).await;
    let mut out = terminals(&events);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every DELETE the simulator saw, as (resource name, status).
async fn deletes(stack: &Stack) -> Vec<(String, u64)> {
    stack
        .admin("oplog")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "delete")
        .map(|e| (e["item"].as_str().unwrap().to_owned(), e["status"].as_u64().unwrap()))
        .collect()
}

/// The names (last id segment) of `ids`.
fn names(ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| id.rsplit('/').next().unwrap_or_default().to_owned()).collect()
}

/// The resources the simulator accepted a DELETE for, by name, in the order sent.
async fn accepted_deletes(stack: &Stack) -> Vec<String> {
    deletes(stack).await.into_iter().filter(|(_, s)| *s == 202).map(|(r, _)| r).collect()
}

async fn power(c: &AsrClient, vm_id: &str) -> Option<String> {
    c.get_vm(vm_id).await.unwrap().map(|vm| vm.power_state().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn leftovers_in_the_secondary_region_are_deleted_once_and_named() {
    let mut stack = Stack::start(sim(2)).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    let (primary, secondary, nic) = ids(&c, "vm-00001").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p1", "vm-00001", remove())).await;
    let done = finished(&stack, "p1", 1).await;
    let (_, outcome, event) = &done[0];
    assert_eq!(*outcome, Outcome::Succeeded, "{event:?}");
    assert!(event.reason.starts_with("removed VM "), "{}", event.reason);
    assert!(event.reason.contains(&secondary) && event.reason.contains(&nic), "{}", event.reason);
    assert!(event.reason.contains("westus") && event.reason.ends_with("kept nothing"), "{}", event.reason);
    assert!(event.error.is_none() && event.duration.is_some());
    // The event names the VM whose leftovers went (as the Compute GET that confirmed it running
    // spells it, in eastus, with the address its item reports) and exactly what was deleted,
    // in the order deleted: the VM, its NIC, then its disks.
    let sub = stack.sim.info().subscription_id.clone();
    let resource = event.resource.clone().expect("the VM cleaned up after");
    assert_eq!(
        resource.arm_id,
        format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-00001")
    );
    assert!(resource.arm_id.eq_ignore_ascii_case(&primary));
    assert_eq!(
        (resource.region.as_str(), resource.resource_group.as_str(), resource.subscription_id.as_str()),
        ("eastus", "rg-app", sub.as_str())
    );
    assert_eq!(resource.private_ips, ["10.0.0.4"]);
    assert_eq!(names(&event.deleted_resources), accepted_deletes(&stack).await, "{:?}", event.deleted_resources);
    assert_eq!(event.deleted_resources.len(), 4, "{:?}", event.deleted_resources);
    assert!(
        event.deleted_resources[0].eq_ignore_ascii_case(&secondary)
            && event.deleted_resources[1].eq_ignore_ascii_case(&nic)
    );
    let mut sent = deletes(&stack).await;
    sent.sort();
    assert_eq!(sent.iter().filter(|(r, s)| r == "vm-00001" && *s == 202).count(), 1, "one VM delete: {sent:?}");
    assert_eq!(
        sent.iter().filter(|(r, s)| r == "vm-00001-nic" && *s == 202).count(),
        1,
        "one NIC delete, accepted: {sent:?}"
    );
    // The VM's own disks go too (Azure keeps them when a VM is deleted); never the replicas.
    let disks: Vec<&(String, u64)> = sent.iter().filter(|(r, _)| r.starts_with("vm-00001_")).collect();
    assert_eq!(disks.len(), 2, "the OS and the data disk: {sent:?}");
    assert!(sent.iter().all(|(r, _)| !r.contains("ASRReplica")), "no replica disk: {sent:?}");
    assert_eq!(sent.len(), 4, "nothing else deleted: {sent:?}");
    assert!(c.get_vm(&secondary).await.unwrap().is_none() && c.get_nic(&nic).await.unwrap().is_none());
    assert_eq!(power(&c, &primary).await.as_deref(), Some("running"), "the VM still runs in eastus");
    let it = item(&c, "vm-00001").await.unwrap();
    assert_eq!((it.protection_state(), it.active_location()), ("Protected", "Primary"), "replication untouched");
}

#[tokio::test]
async fn cleanup_is_refused_until_reprotect_has_succeeded() {
    let mut config = sim(2);
    config.estate.syncing_every = 2; // vm-00002: reprotect still syncing
    let mut stack = Stack::start(config).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", false).await; // failed over and committed, not reprotected
    stack.spawn(BIN, &[]);
    let purge = CleanupOptions { remove_leftovers: true, purge_unmanaged: true, disable_replication: true };
    for vm in ["vm-00001", "vm-00002"] {
        stack.dispatch(&cleanup("p2", vm, purge)).await;
    }
    let done = finished(&stack, "p2", 2).await;
    for (vm, outcome, event) in &done {
        assert_eq!(*outcome, Outcome::Failed, "{vm}: {event:?}");
        let error = event.error.as_ref().unwrap();
        assert_eq!(error.code, "TERN-CLEANUP-UNSAFE", "{vm}");
        assert!(!error.recommended_action.is_empty() && !error.retryable);
        assert_eq!(event.reason, error.message);
    }
    let committed = &done[0].2.reason;
    assert!(committed.contains("reprotect has not succeeded") && committed.contains("UnplannedFailoverCommitted"));
    // vm-00002's reprotect job succeeded and it reads Protected, but its disks still replicate:
    // cleanup waits for initial replication to complete.
    let syncing = &done[1].2.reason;
    assert!(syncing.contains("initial replication of vm-00002 has not completed"), "{syncing}");
    assert!(syncing.contains("InitialReplicationPending"), "{syncing}");
    assert_eq!(deletes(&stack).await, [], "nothing deleted");
    let ops: Vec<String> = stack.accepted_ops().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(ops, ["unplannedFailover", "failoverCommit"], "only the test's own operations");
    for vm in ["vm-00001", "vm-00002"] {
        assert!(item(&c, vm).await.is_some(), "{vm} still replicated");
    }
}

#[tokio::test]
async fn unmanaged_disk_vms_are_kept_unless_a_purge_is_asked_for() {
    let mut config = sim(2);
    config.estate.unmanaged_every = 1;
    let mut stack = Stack::start(config).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    fail_back(&c, "vm-00002", true).await;
    let (_, kept, _) = ids(&c, "vm-00001").await;
    let (_, purged, _) = ids(&c, "vm-00002").await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p3", "vm-00001", remove())).await;
    let purge = CleanupOptions { remove_leftovers: true, purge_unmanaged: true, ..Default::default() };
    stack.dispatch(&cleanup("p3", "vm-00002", purge)).await;
    let done = finished(&stack, "p3", 2).await;
    assert!(done.iter().all(|(_, o, _)| *o == Outcome::Succeeded), "{done:?}");
    let reason = &done[0].2.reason;
    assert!(reason.starts_with(&format!("kept VM {kept}")), "{reason}");
    assert!(reason.contains("unmanaged disks (purge not requested)"), "{reason}");
    assert!(done[1].2.reason.starts_with(&format!("removed VM {purged}")), "{}", done[1].2.reason);
    assert!(done[0].2.deleted_resources.is_empty(), "nothing deleted for the kept VM");
    assert_eq!(names(&done[1].2.deleted_resources)[0], "vm-00002");
    assert!(c.get_vm(&kept).await.unwrap().is_some(), "the unmanaged VM is kept");
    assert!(c.get_vm(&purged).await.unwrap().is_none(), "the purged one is gone");
    let sent = deletes(&stack).await;
    assert!(sent.iter().all(|(r, _)| r.starts_with("vm-00002")), "only the purged VM was touched: {sent:?}");
}

#[tokio::test]
async fn without_remove_leftovers_cleanup_only_reports() {
    let mut stack = Stack::start(sim(2)).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    let (_, secondary, nic) = ids(&c, "vm-00001").await;
    let disks = c.get_vm(&secondary).await.unwrap().unwrap().managed_disk_ids().join(", ");
    stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p4", "vm-00001", CleanupOptions::default())).await;
    let done = finished(&stack, "p4", 1).await;
    let (_, outcome, event) = &done[0];
    assert_eq!(*outcome, Outcome::Succeeded, "{event:?}");
    assert_eq!(
        event.reason,
        format!(
            "would remove VM {secondary}, NIC {nic} and disks {disks} in westus (removing leftovers not requested); \
             removed nothing"
        )
    );
    assert_eq!(deletes(&stack).await, []);
    assert!(event.deleted_resources.is_empty());
    assert!(event.resource.is_some(), "the VM is named even when nothing is removed");
    assert!(c.get_vm(&secondary).await.unwrap().is_some() && c.get_nic(&nic).await.unwrap().is_some());
}

#[tokio::test]
async fn the_same_command_delivered_twice_deletes_once() {
    let mut stack = Stack::start(sim(2)).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    let cmd = cleanup("p5", "vm-00001", remove());
    // Two deliveries of the same command (different bus ids, so both are queued).
    stack.hold(&cmd).await;
    let js = stack.bus.jetstream().clone();
    for n in 0..2 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("copy-{n}").as_str());
        js.publish_with_headers("tern.commands.cleanup.p5", h, prost::Message::encode_to_vec(&cmd).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stack.spawn(BIN, &[("TERN_CONCURRENCY", "2")]);
    let done = finished(&stack, "p5", 1).await;
    assert_eq!(done[0].1, Outcome::Succeeded, "{:?}", done[0].2);
    tern_testkit::wait_until("both copies to leave the queue", DEADLINE, || async {
        let mut s = stack.bus.jetstream().get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
        s.info().await.unwrap().state.messages == 0
    })
    .await
    .unwrap();
    let sent = deletes(&stack).await;
    assert_eq!(sent.iter().filter(|(r, _)| r == "vm-00001").count(), 1, "{sent:?}");
    assert_eq!(sent.iter().filter(|(r, _)| r == "vm-00001-nic").count(), 1, "{sent:?}");
    // A copy that finds the command finished says again how it ended, under the same event id:
    // consumers that deduplicate see one outcome.
    let events = stack.events("p5").await;
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| kind(e).is_some_and(|(p, o)| p == Phase::Cleanup && o.is_terminal()))
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one terminal event for two deliveries: {ids:?}");
    assert_eq!(terminals(&events).len(), 2, "the copy published the outcome again, for a planner that missed it");
    for (_, _, event) in terminals(&events) {
        assert_eq!(names(&event.deleted_resources), accepted_deletes(&stack).await, "each deleted once, both times");
    }
}

#[tokio::test]
async fn disable_replication_removes_the_item_after_the_leftovers() {
    let mut stack = Stack::start(sim(2)).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    let (primary, secondary, _) = ids(&c, "vm-00001").await;
    stack.spawn(BIN, &[]);
    let options = CleanupOptions { remove_leftovers: true, disable_replication: true, ..Default::default() };
    stack.dispatch(&cleanup("p6", "vm-00001", options)).await;
    let done = finished(&stack, "p6", 1).await;
    let (_, outcome, event) = &done[0];
    assert_eq!(*outcome, Outcome::Succeeded, "{event:?}");
    assert!(event.reason.starts_with("removed VM ") && event.reason.ends_with("; replication disabled"));
    assert!(!event.asr_job_id.is_empty(), "the disable job is reported");
    assert!(item(&c, "vm-00001").await.is_none(), "the item is gone");
    assert!(item(&c, "vm-00002").await.is_some(), "the other VM still replicates");
    assert!(c.get_vm(&secondary).await.unwrap().is_none());
    assert_eq!(power(&c, &primary).await.as_deref(), Some("running"));
    let ops: Vec<String> = stack.accepted_ops().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(ops.iter().filter(|o| *o == "remove").count(), 1, "{ops:?}");
}

/// Realistic durations under compression; setup jumps the clock past each job.
async fn fail_back_quickly(stack: &Stack, c: &AsrClient, vm: &str) {
    let advance = || async {
        reqwest::Client::new()
            .post(format!("{}/_sim/clock/advance", stack.sim.url()))
            .json(&serde_json::json!({"seconds": 4000}))
            .send()
            .await
            .unwrap();
    };
    let it = item(c, vm).await.unwrap();
    let sub = c
        .unplanned_failover(&it, FailoverDirection::PrimaryToRecovery, None, true, &request_key(&[vm, "fo"]))
        .await
        .unwrap();
    advance().await;
    c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    let sub = c.commit(&c.get_item(&it.id).await.unwrap(), &request_key(&[vm, "commit"])).await.unwrap();
    advance().await;
    c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    let committed = c.get_item(&it.id).await.unwrap();
    let sub = c.switch_protection(&committed, &ReprotectSettings::default(), &request_key(&[vm, "rp"])).await.unwrap();
    advance().await;
    let job = c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    // Initial replication goes on after the job, and ends with its completion jobs.
    advance().await;
    let rehomed = c.get_item(job.new_item_id().unwrap()).await.unwrap();
    assert!(rehomed.disks_not_protected().is_empty(), "initial replication completed: {:?}", rehomed.disk_sync());
}

#[tokio::test]
async fn a_failed_delete_becomes_a_failed_event_with_its_code() {
    let mut config = sim(2);
    config.faults.failures.push(
        serde_json::from_value(
            serde_json::json!({"vms": ["vm-00001"], "operation": "delete", "code": "ResourceDeletionFailed"}),
        )
        .unwrap(),
    );
    let mut stack = Stack::start(config).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p7", "vm-00001", remove())).await;
    let done = finished(&stack, "p7", 1).await;
    let (_, outcome, event) = &done[0];
    assert_eq!(*outcome, Outcome::Failed, "{event:?}");
    assert_eq!(event.error.as_ref().unwrap().code, "ResourceDeletionFailed");
}

#[tokio::test]
async fn a_worker_killed_mid_delete_is_replaced_and_the_vm_is_deleted_once() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 10.0; // a VM delete takes 2-6 s of real time
    let mut stack = Stack::start(config).await;
    let c = asr(&stack);
    fail_back_quickly(&stack, &c, "vm-00001").await;
    let first = stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p8", "vm-00001", remove())).await;
    tern_testkit::wait_until("the VM delete to reach Azure", DEADLINE, || async {
        deletes(&stack).await.iter().any(|(r, s)| r == "vm-00001" && *s == 202)
    })
    .await
    .unwrap();
    stack.kill(first);
    stack.spawn(BIN, &[]);
    let done = finished(&stack, "p8", 1).await;
    assert_eq!(done[0].1, Outcome::Succeeded, "{:?}", done[0].2);
    let sent = deletes(&stack).await;
    assert_eq!(sent.iter().filter(|(r, _)| r == "vm-00001").count(), 1, "the VM was deleted once: {sent:?}");
    // The successor's event lists what both deliveries deleted, the VM once, in order.
    let deleted = names(&done[0].2.deleted_resources);
    assert_eq!(deleted, accepted_deletes(&stack).await, "{sent:?}");
    assert_eq!(deleted.first().map(String::as_str), Some("vm-00001"), "{deleted:?}");
}

#[tokio::test]
async fn an_undecodable_command_is_dead_lettered_and_the_worker_goes_on() {
    let mut stack = Stack::start(sim(2)).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    stack.spawn(BIN, &[]);
    stack.bus.jetstream().publish("tern.commands.cleanup.p9", vec![0x12, 0x80].into()).await.unwrap().await.unwrap();
    stack.dispatch(&cleanup("p9", "vm-00001", remove())).await;
    assert_eq!(finished(&stack, "p9", 1).await[0].1, Outcome::Succeeded);
    let dead = tern_testkit::wait_for("a dead letter", DEADLINE, || async {
        let d = stack.bus.dead_letters().await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead[0].original_subject, "tern.commands.cleanup.p9");
}

#[tokio::test]
async fn the_public_ip_of_a_leftover_nic_is_removed_after_the_nic() {
    let mut config = sim(1);
    config.estate.public_ip_every = 1;
    let mut stack = Stack::start(config).await;
    let c = asr(&stack);
    fail_back(&c, "vm-00001", true).await;
    let (primary, secondary, nic) = ids(&c, "vm-00001").await;
    let pip = c.get_nic(&nic).await.unwrap().unwrap().public_ip_ids().pop().expect("the leftover NIC has a public IP");
    stack.spawn(BIN, &[]);
    stack.dispatch(&cleanup("p10", "vm-00001", remove())).await;
    let done = finished(&stack, "p10", 1).await;
    let (_, outcome, event) = &done[0];
    assert_eq!(*outcome, Outcome::Succeeded, "{event:?}");
    assert!(event.reason.contains(&format!("public IP {pip}")), "{}", event.reason);
    assert!(c.get_public_ip(&pip).await.unwrap().is_none(), "the address is gone");
    assert!(c.get_vm(&secondary).await.unwrap().is_none() && c.get_nic(&nic).await.unwrap().is_none());
    // Azure refuses to delete an address a NIC still uses: the NIC went first.
    let sent = deletes(&stack).await;
    let at = |name: &str| sent.iter().position(|(r, _)| r == name).unwrap_or_else(|| panic!("{name}: {sent:?}"));
    let pip_name = pip.rsplit('/').next().unwrap();
    assert!(at("vm-00001-nic") < at(pip_name), "{sent:?}");
    assert_eq!(sent.iter().filter(|(_, s)| *s != 202).count(), 0, "nothing refused: {sent:?}");
    assert_eq!(power(&c, &primary).await.as_deref(), Some("running"));
}
