//! The failover worker as a process, against a real nats-server and the ASR simulator.

use std::time::Duration;

use tern_asr_sim::SimConfig;
use tern_proto::{
    Command, DrillSettings, FailoverCommand, Outcome, Phase, RecoveryPointChoice, RecoveryPointKind, SourceShutdown,
    VmRef, command,
};
use tern_testkit::stack::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-failover");

fn sim(vms: usize) -> SimConfig {
    ready_for_failback(vms)
}

fn failover(plan: &str, vm: &str) -> Command {
    let vm = VmRef { name: vm.into(), ..Default::default() };
    Command {
        command_id: tern_bus::ids::command_id(plan, &vm, Phase::Failover, 1),
        plan_id: plan.into(),
        vm: Some(vm),
        attempt: 1,
        action: Some(command::Action::Failover(FailoverCommand {
            recovery_point: Some(RecoveryPointChoice {
                kind: RecoveryPointKind::LatestProcessed as i32,
                ..Default::default()
            }),
            shut_down_source: true,
            commit_after: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn terminal(events: &[tern_proto::Event], phase: Phase) -> Option<(Outcome, tern_proto::VmEvent)> {
    events
        .iter()
        .filter(|e| kind(e).is_some_and(|(p, o)| p == phase && o.is_terminal()))
        .map(|e| (kind(e).unwrap().1, vm_event(e).clone()))
        .next()
}

#[tokio::test]
async fn a_failover_and_commit_run_to_the_end_with_every_event() {
    let mut stack = Stack::start(sim(2)).await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&failover("p1", "vm-00001")).await;
    let events = stack.wait_events("p1", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    let kinds: Vec<_> = events.iter().filter_map(kind).filter(|(_, o)| *o != Outcome::Progress).collect();
    assert_eq!(
        kinds,
        [
            (Phase::Failover, Outcome::Started),
            (Phase::Failover, Outcome::Succeeded),
            (Phase::Commit, Outcome::Started),
            (Phase::Commit, Outcome::Succeeded)
        ]
    );
    let (_, done) = terminal(&events, Phase::Failover).unwrap();
    let point = done.recovery_point.expect("the recovery point used is reported");
    assert!(!point.id.is_empty() && point.time.is_some());
    assert_eq!((point.disks_covered, point.disks_total), (2, 2));
    assert_eq!(done.source_shutdown, SourceShutdown::Succeeded as i32);
    assert!(!done.asr_job_id.is_empty() && done.duration.is_some());
    assert_eq!(
        stack.accepted_ops().await,
        [("unplannedFailover".to_owned(), "vm-00001".to_owned()), ("failoverCommit".to_owned(), "vm-00001".to_owned())]
    );
    // The item is found once (by name: the container of each region is tried); the commit of a
    // failover this delivery watched reads it no more.
    let reads = stack.admin("requests").await;
    let items: Vec<&str> = reads
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "GET")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.contains("replicationProtectedItems") && !p.contains("/recoveryPoints"))
        .collect();
    assert_eq!(items.len(), 2, "{items:#?}");
}

#[tokio::test]
async fn an_asr_failure_becomes_a_failed_event_with_the_asr_code() {
    let mut config = sim(2);
    config.faults.failures.push(
        serde_json::from_value(serde_json::json!({"vms": ["vm-00002"], "operation": "failover", "code": "28031"}))
            .unwrap(),
    );
    let mut stack = Stack::start(config).await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&failover("p2", "vm-00002")).await;
    let events = stack.wait_events("p2", "the failover to fail", |ev| terminal(ev, Phase::Failover).is_some()).await;
    let (outcome, failed) = terminal(&events, Phase::Failover).unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "28031");
    assert!(!error.recommended_action.is_empty() && !error.retryable);
    assert!(!failed.asr_job_id.is_empty());
    assert!(terminal(&events, Phase::Commit).is_none(), "no commit after a failed failover");
    assert_eq!(stack.accepted_ops().await.len(), 1);
}

#[tokio::test]
async fn a_worker_killed_mid_failover_is_replaced_and_the_failover_is_sent_once() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 60.0; // failover 2-5 s of real time
    let mut stack = Stack::start(config).await;
    let first = stack.spawn(BIN, &[]);
    stack.dispatch(&failover("p3", "vm-00001")).await;
    tern_testkit::wait_until("the failover to reach ASR", DEADLINE, || async {
        !stack.accepted_ops().await.is_empty()
    })
    .await
    .unwrap();
    stack.kill(first);
    stack.spawn(BIN, &[]);
    let events = stack.wait_events("p3", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    assert_eq!(terminal(&events, Phase::Failover).unwrap().0, Outcome::Succeeded);
    assert_eq!(terminal(&events, Phase::Commit).unwrap().0, Outcome::Succeeded);
    let ops = stack.accepted_ops().await;
    assert_eq!(ops.iter().filter(|(o, _)| o == "unplannedFailover").count(), 1, "one failover POST: {ops:?}");
    assert_eq!(ops.iter().filter(|(o, _)| o == "failoverCommit").count(), 1, "one commit POST: {ops:?}");
}

#[tokio::test]
async fn the_same_command_delivered_twice_has_one_side_effect() {
    let mut stack = Stack::start(sim(2)).await;
    let cmd = failover("p4", "vm-00001");
    // Two deliveries of the same command (different bus ids, so both are queued).
    stack.hold(&cmd).await;
    let js = stack.bus.jetstream().clone();
    for n in 0..2 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("copy-{n}").as_str());
        js.publish_with_headers("tern.commands.failover.p4", h, prost::Message::encode_to_vec(&cmd).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stack.spawn(BIN, &[]);
    stack.wait_events("p4", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    tern_testkit::wait_until("both copies to leave the queue", DEADLINE, || async {
        let mut s = stack.bus.jetstream().get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
        s.info().await.unwrap().state.messages == 0
    })
    .await
    .unwrap();
    assert_eq!(stack.accepted_ops().await.len(), 2, "one failover and one commit, not two of each");
}

#[tokio::test]
async fn an_undecodable_command_is_dead_lettered_while_the_worker_keeps_serving() {
    let mut stack = Stack::start(sim(2)).await;
    stack.spawn(BIN, &[]);
    stack
        .bus
        .jetstream()
        .publish("tern.commands.failover.p5", vec![0xff, 0xff, 0xff].into())
        .await
        .unwrap()
        .await
        .unwrap();
    stack.dispatch(&failover("p5", "vm-00002")).await;
    stack.wait_events("p5", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    let dead = tern_testkit::wait_for("a dead letter", DEADLINE, || async {
        let d = stack.bus.dead_letters().await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await
    .unwrap();
    assert!(dead[0].reason.contains("undecodable"), "{}", dead[0].reason);
}

#[tokio::test]
async fn two_workers_share_one_queue_without_duplicating_work() {
    let mut stack = Stack::start(sim(12)).await;
    stack.spawn(BIN, &[("TERN_CONCURRENCY", "2")]);
    stack.spawn(BIN, &[("TERN_CONCURRENCY", "2")]);
    for n in 1..=12 {
        stack.dispatch(&failover("p6", &format!("vm-{n:05}"))).await;
    }
    stack
        .wait_events("p6", "12 commits", |ev| {
            ev.iter().filter(|e| kind(e) == Some((Phase::Commit, Outcome::Succeeded))).count() == 12
        })
        .await;
    let ops = stack.accepted_ops().await;
    assert_eq!(ops.len(), 24, "one failover and one commit per VM: {ops:?}");
    let mut per_vm: Vec<&str> = ops.iter().filter(|(o, _)| o == "unplannedFailover").map(|(_, i)| i.as_str()).collect();
    per_vm.sort_unstable();
    per_vm.dedup();
    assert_eq!(per_vm.len(), 12);
}

#[tokio::test]
async fn a_drill_tests_the_failover_checks_the_vm_and_cleans_up() {
    let mut stack = Stack::start(sim(2)).await;
    stack.spawn(BIN, &[]);
    let mut cmd = failover("p7", "vm-00001");
    cmd.command_id = "p7.vm-00001.drill.1".into();
    if let Some(command::Action::Failover(f)) = cmd.action.as_mut() {
        f.commit_after = false;
        f.drill = Some(DrillSettings {
            test_network_id:
                "/subscriptions/s/resourceGroups/rg-app/providers/Microsoft.Network/virtualNetworks/isolated".into(),
            validation_timeout: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
            keep_test_vm: false,
        });
    }
    stack.dispatch(&cmd).await;
    let events = stack.wait_events("p7", "the drill to finish", |ev| terminal(ev, Phase::Drill).is_some()).await;
    let (outcome, done) = terminal(&events, Phase::Drill).unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{done:?}");
    assert!(done.reason.contains("ran in the target region"), "{}", done.reason);
    let ops: Vec<String> = stack.accepted_ops().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(ops, ["testFailover", "testFailoverCleanup"], "production was not touched");
    let _ = Duration::ZERO;
}

/// A drill on a VM whose test failover is up already (sent by an attempt whose record was
/// lost): Azure is read first, so the worker takes the test failover as it is, validates the
/// test VM and cleans up, and sends no second test failover.
#[tokio::test]
async fn a_drill_finds_its_test_failover_already_up_and_does_not_send_it_again() {
    let mut stack = Stack::start(sim(2)).await;
    let asr = stack.asr_client();
    let item = asr.find_item_by_vm_name("vm-00001", None).await.unwrap().unwrap();
    let earlier = asr.test_failover(&item, None, None, "an-earlier-attempt").await.unwrap();
    asr.wait_job(earlier.job.as_deref().unwrap(), None).await.unwrap();
    stack.spawn(BIN, &[]);
    let mut cmd = failover("p11", "vm-00001");
    cmd.command_id = "p11.vm-00001.drill.1".into();
    if let Some(command::Action::Failover(f)) = cmd.action.as_mut() {
        f.commit_after = false;
        f.drill = Some(DrillSettings {
            validation_timeout: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
            ..Default::default()
        });
    }
    stack.dispatch(&cmd).await;
    let events = stack.wait_events("p11", "the drill to finish", |ev| terminal(ev, Phase::Drill).is_some()).await;
    let (outcome, done) = terminal(&events, Phase::Drill).unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{done:?}");
    let ops: Vec<String> = stack.accepted_ops().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(ops, ["testFailover", "testFailoverCleanup"], "one test failover (the earlier one), then its cleanup");
}

#[tokio::test]
async fn a_worker_reports_health_readiness_and_metrics() {
    let mut stack = Stack::start(sim(2)).await;
    let w = stack.spawn(BIN, &[]);
    assert_eq!(stack.worker_http(w, "/healthz").await.0, 200);
    assert_eq!(stack.worker_http(w, "/readyz").await.0, 200);
    stack.dispatch(&failover("p8", "vm-00001")).await;
    stack.wait_events("p8", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    let metrics = tern_testkit::wait_for("the command to be counted", DEADLINE, || async {
        let (_, text) = stack.worker_http(w, "/metrics").await;
        // Counted once finished, then acked (the backlog gauges are read at each scrape).
        (text.contains(r#"tern_worker_commands_total{service="tern-failover",phase="failover",outcome="succeeded"} 1"#)
            && text.contains(r#"tern_consumer_ack_pending{consumer="failover"} 0.0"#))
        .then_some(text)
    })
    .await
    .unwrap();
    assert!(metrics.contains("tern_worker_commands_in_flight{service=\"tern-failover\"} 0.0"), "{metrics}");
    assert!(metrics.contains("tern_worker_asr_submissions_total{service=\"tern-failover\"} 2"), "{metrics}");
    for phase in ["failover", "commit"] {
        let ended =
            format!("tern_vm_phases_total{{service=\"tern-failover\",phase=\"{phase}\",outcome=\"succeeded\"}} 1");
        assert!(metrics.contains(&ended), "{ended}\n{metrics}");
        let timed = format!(
            "tern_phase_duration_seconds_count{{service=\"tern-failover\",phase=\"{phase}\",outcome=\"succeeded\"}} 1"
        );
        assert!(metrics.contains(&timed), "{timed}\n{metrics}");
    }
    assert!(metrics.contains("tern_consumer_pending{consumer=\"failover\"} 0.0"), "{metrics}");
    assert!(metrics.contains("tern_dlq_messages{} 0.0"), "{metrics}");
    // Azure requests are counted by tern-asr on the same registry.
    assert!(metrics.contains("tern_asr_requests_total{"), "{metrics}");
}

#[tokio::test]
async fn sigterm_lets_the_running_failover_finish_before_the_worker_exits() {
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 60.0; // failover 2-5 s of real time
    let mut stack = Stack::start(config).await;
    let w = stack.spawn(BIN, &[("TERN_DRAIN_TIMEOUT_SECS", "30")]);
    let mut cmd = failover("p9", "vm-00001");
    if let Some(command::Action::Failover(f)) = cmd.action.as_mut() {
        f.commit_after = false;
    }
    stack.dispatch(&cmd).await;
    tern_testkit::wait_until("the failover to reach ASR", DEADLINE, || async {
        !stack.accepted_ops().await.is_empty()
    })
    .await
    .unwrap();
    let status = stack.terminate(w).await;
    assert!(status.success(), "the worker exits cleanly: {status:?}");
    let events = stack.events("p9").await;
    assert_eq!(
        terminal(&events, Phase::Failover).map(|t| t.0),
        Some(Outcome::Succeeded),
        "the in-flight failover finished before exit"
    );
    assert_eq!(stack.accepted_ops().await.len(), 1);
}

#[tokio::test]
async fn a_drill_whose_test_vm_does_not_boot_fails_and_still_cleans_up() {
    let mut config = sim(2);
    config.faults.test_vm_boot_failures.vms = vec!["vm-00002".into()];
    let mut stack = Stack::start(config).await;
    stack.spawn(BIN, &[]);
    let mut cmd = failover("p10", "vm-00002");
    cmd.command_id = "p10.vm-00002.drill.1".into();
    if let Some(command::Action::Failover(f)) = cmd.action.as_mut() {
        f.commit_after = false;
        f.drill = Some(DrillSettings {
            test_network_id:
                "/subscriptions/s/resourceGroups/rg-app/providers/Microsoft.Network/virtualNetworks/isolated".into(),
            validation_timeout: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            keep_test_vm: true,
        });
    }
    stack.dispatch(&cmd).await;
    let events = stack.wait_events("p10", "the drill to finish", |ev| terminal(ev, Phase::Drill).is_some()).await;
    let (outcome, failed) = terminal(&events, Phase::Drill).unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "TERN-DRILL-VALIDATION-FAILED");
    assert!(error.message.contains("cleaned up"), "{}", error.message);
    let ops: Vec<String> = stack.accepted_ops().await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        ops,
        ["testFailover", "testFailoverCleanup"],
        "cleanup ran although the check failed (and keep_test_vm was set)"
    );
}

#[tokio::test]
async fn a_failed_source_shutdown_is_reported_although_job_lists_are_summaries() {
    let mut config = sim(2);
    config.faults.shutdown_failures.vms = vec!["vm-00001".into()];
    let mut stack = Stack::start(config).await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&failover("p9", "vm-00001")).await;
    let events = stack.wait_events("p9", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    let (outcome, done) = terminal(&events, Phase::Failover).unwrap();
    // Lists show the job's state only; the worker read the ended job in full, with its tasks.
    assert_eq!(outcome, Outcome::Succeeded, "the failover goes on: {done:?}");
    assert_eq!(done.source_shutdown, SourceShutdown::Failed as i32, "{done:?}");
    assert_eq!(done.error.as_ref().map(|e| e.code.as_str()), Some("TERN-SHUTDOWN-FAILED"));
    let point = done.recovery_point.expect("the recovery point is read from the job's details");
    assert!(!point.id.is_empty() && point.time.is_some());
}

/// The failover's answer is lost while its job is still a placeholder (no scenario, absent
/// from lists) and the item does not name it yet: the worker does not send again, and attaches
/// to the job once it shows, by the activity id its request id became.
#[tokio::test]
async fn a_failover_whose_answer_is_lost_in_the_placeholder_window_is_found_and_never_sent_twice() {
    use tern_asr_sim::{Operation, Span};
    let mut config = sim(2);
    config.zero_latency = false;
    config.time_compression = 10.0;
    let quick = Span { min_secs: 10.0, max_secs: 10.0 };
    (config.durations.failover, config.durations.commit, config.durations.shutdown) = (quick, quick, quick);
    config.durations.latest_processing = quick;
    // 4 s of placeholder, 8 s before the item names the job.
    config.durations.queueing = Span { min_secs: 40.0, max_secs: 40.0 };
    config.item_scenario_lag_secs = 80.0;
    config.faults.drop_response_rate = 1.0;
    config.faults.drop_response_hang_secs = 30;
    config.faults.drop_response_operations = vec![Operation::Failover];
    let mut stack = Stack::start(config).await;
    stack.spawn(BIN, &[("TERN_ASR__REQUEST_TIMEOUT", "1"), ("TERN_ASR__LOST_REQUEST_WINDOW", "60")]);
    let cmd = failover("p10", "vm-00001");
    stack.dispatch(&cmd).await;
    let events = stack.wait_events("p10", "commit to finish", |ev| terminal(ev, Phase::Commit).is_some()).await;
    let (outcome, done) = terminal(&events, Phase::Failover).unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{done:?}");
    let posts: Vec<_> = stack
        .admin("oplog")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "unplannedFailover")
        .cloned()
        .collect();
    assert_eq!(posts.len(), 1, "the failover was sent once: {posts:#?}");
    // The job the worker attached to is the one its request started.
    let key = tern_asr::client::request_key(&[&cmd.command_id, "failover", "0"]);
    let job = stack.asr_client().get_job(&done.asr_job_id).await.unwrap();
    assert!(job.started_by(&key), "{:?} vs {key}", job.properties.activity_id);
}

/// Anyone who can publish on the bus could send a well-formed failover command. The worker acts
/// only on a command whose plan holds the VM, for an item in its own vault: a forged one is
/// dead-lettered with the reason, and Azure never hears of it.
#[tokio::test]
async fn a_forged_command_changes_nothing_in_azure_and_is_dead_lettered_with_the_reason() {
    let mut stack = Stack::start(sim(2)).await;
    stack.spawn(BIN, &[]);
    // No plan holds vm-00001: nobody dispatched this.
    stack.bus.publish_command(&failover("p-forged", "vm-00001")).await.unwrap();
    // vm-00002 is held by its plan, but the command names an item of another vault.
    let mut elsewhere = failover("p-held", "vm-00002");
    let vault = stack.asr_client().config().vault_id().replace("/vaults/", "/vaults/other-");
    elsewhere.vm.as_mut().unwrap().protected_item_id =
        format!("{vault}/replicationFabrics/f/replicationProtectionContainers/c/replicationProtectedItems/vm-00002");
    stack.dispatch(&elsewhere).await;
    let dead = tern_testkit::wait_for("two dead letters", DEADLINE, || async {
        let d = stack.bus.dead_letters().await.unwrap();
        (d.len() == 2).then_some(d)
    })
    .await
    .unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("plan p-forged does not hold VM vm-00001")), "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.contains("is not one this service acts on")), "{reasons:#?}");
    let requests = stack.admin("requests").await;
    let touched: Vec<&serde_json::Value> = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("vm-0000")))
        .collect();
    assert!(touched.is_empty(), "Azure heard of neither VM: {touched:#?}");
    assert!(stack.accepted_ops().await.is_empty());
}

/// Failover and commit name the VM now running in the region failed over to, from the item the
/// worker already read: its ARM id, region, resource group, subscription, and its address where
/// the item reports one (a static target address; a dynamic one, as Azure, reports none).
#[tokio::test]
async fn failover_and_commit_events_name_the_vm_now_running() {
    let mut config = sim(2);
    config.estate.static_recovery_ip_every = 2; // vm-00002: static target address; vm-00001: dynamic
    let mut stack = Stack::start(config).await;
    stack.spawn(BIN, &[]);
    stack.dispatch(&failover("p9", "vm-00001")).await;
    stack.dispatch(&failover("p9", "vm-00002")).await;
    let commits = |ev: &[tern_proto::Event]| {
        ev.iter().filter(|e| kind(e) == Some((Phase::Commit, Outcome::Succeeded))).count() == 2
    };
    let events = stack.wait_events("p9", "both commits to finish", commits).await;
    let info = stack.sim.info().clone();
    let client = stack.asr_client();
    for (vm, ips) in [("vm-00001", vec![]), ("vm-00002", vec!["10.0.0.5".to_owned()])] {
        let of = |phase: Phase| {
            events
                .iter()
                .filter(|e| kind(e) == Some((phase, Outcome::Succeeded)))
                .map(vm_event)
                .find(|v| v.vm.as_ref().is_some_and(|r| r.name == vm))
                .unwrap_or_else(|| panic!("no {phase:?} success for {vm}: {events:#?}"))
                .clone()
        };
        let (failed_over, committed) = (of(Phase::Failover), of(Phase::Commit));
        let resource = failed_over.resource.clone().unwrap_or_else(|| panic!("{vm}: no resource"));
        assert_eq!(
            resource.arm_id,
            format!(
                "/subscriptions/{}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/{vm}",
                info.subscription_id
            )
        );
        assert_eq!(resource.region, "eastus");
        assert_eq!(resource.resource_group, "rg-app");
        assert_eq!(resource.subscription_id, info.subscription_id);
        assert_eq!(resource.private_ips, ips, "{vm}");
        assert!(failed_over.deleted_resources.is_empty());
        assert_eq!(committed.resource.as_ref(), Some(&resource), "commit names the same VM");
        // What the event names is what runs there: the VM exists in that region with that
        // address (read by the test, not the worker).
        let running = client.get_vm(&resource.arm_id).await.unwrap().expect("the VM the event names exists");
        assert_eq!(running.location.as_deref(), Some("eastus"));
        let nic = client.get_nic(&running.nic_ids()[0]).await.unwrap().expect("its NIC");
        let address = nic.properties.ip_configurations[0].properties.private_ip_address.clone().unwrap();
        assert!(ips.is_empty() || ips == [address], "{vm}: {ips:?}");
    }
    // Started events name no VM yet.
    assert!(
        events
            .iter()
            .filter(|e| kind(e).is_some_and(|(_, o)| o == Outcome::Started))
            .all(|e| vm_event(e).resource.is_none())
    );
}
