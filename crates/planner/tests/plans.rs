//! Plans end to end: the planner and the three workers (in-process, their real runtimes)
//! against a real nats-server and the ASR simulator over HTTP.

use std::sync::Arc;
use std::time::Duration;

use tern_planner::{ApiAuth, PlannerService};
use tern_proto::{
    CleanupOptions, GetPlanRequest, NameList, Plan, PlanSpec, PlanState, PreflightRequest, Readiness,
    RecoveryPointChoice, RecoveryPointKind, Selection, SubmitPlanRequest, VmState, Wave, selection,
};
use tern_testkit::stack::{DEADLINE, Stack, ready_for_failback};
use tokio_util::sync::CancellationToken;

struct Running {
    stack: Stack,
    grpc: tern_proto::auth::Client,
    vault_id: String,
    stop: CancellationToken,
    /// Stops the planner the stack started with.
    planner_stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every vault the simulator serves beside its first: the estate the stack acts on.
fn further_vaults(stack: &Stack) -> Vec<String> {
    stack.sim.info().vaults.iter().skip(1).map(|v| v.vault_id.clone()).collect()
}

/// A worker's settings against the stack, drawing on the fleet-wide ARM `budget` (`None`: no
/// budget).
fn worker_config_with(
    stack: &Stack,
    identity: tern_bus::Identity,
    budget: Option<tern_asr::BudgetConfig>,
) -> tern_worker::WorkerConfig {
    let info = stack.sim.info();
    tern_worker::WorkerConfig {
        service: tern_service::ServiceConfig {
            nats_url: stack.nats.url(),
            nats_credentials: stack.nats.credentials(identity),
            asr: tern_asr::AsrConfig {
                endpoint: info.url.clone(),
                subscription_id: info.subscription_id.clone(),
                resource_group: info.resource_group.clone(),
                vault: info.vault.clone(),
                vaults: further_vaults(stack),
                ..tern_asr::AsrConfig::default()
            },
            asr_token: Some("t".into()),
            budget,
            ensure_topology: false,
            poll_interval_secs: 0.1,
            ..tern_service::ServiceConfig::default()
        },
        lease_secs: 3.0,
        watcher_reads_per_sec: 100.0,
        drain_timeout_secs: 2.0,
        ..tern_worker::WorkerConfig::default()
    }
}

async fn start(config: tern_asr_sim::SimConfig, workers: bool) -> Running {
    start_watching(config, workers, Duration::from_secs(30)).await
}

/// [`start`], with the planner's watchdog looking every `watchdog`.
async fn start_watching(mut config: tern_asr_sim::SimConfig, workers: bool, watchdog: Duration) -> Running {
    config.reprotect_removes_source_vm = false; // leave something for cleanup
    let stack = Stack::start(config).await;
    let stop = CancellationToken::new();
    if workers {
        start_workers(&stack, &stop);
    }
    let vault_id = stack.asr_client().config().vault_id();
    let planner_stop = stop.child_token();
    let grpc = start_planner_watching(&stack, planner_stop.clone(), watchdog).await;
    Running { stack, grpc, vault_id, stop, planner_stop }
}

/// The three workers, in this process, until `stop`.
fn start_workers(stack: &Stack, stop: &CancellationToken) {
    start_workers_with(stack, stop, None);
}

/// [`start_workers`], drawing on the fleet-wide ARM `budget`.
fn start_workers_with(stack: &Stack, stop: &CancellationToken, budget: Option<tern_asr::BudgetConfig>) {
    use tern_bus::Identity;
    let handlers: [(Arc<dyn tern_worker::PhaseHandler>, Identity); 3] = [
        (Arc::new(tern_failover::FailoverPhase), Identity::Failover),
        (Arc::new(tern_reprotect::ReprotectPhase), Identity::Reprotect),
        (Arc::new(tern_cleanup::CleanupPhase), Identity::Cleanup),
    ];
    for (h, identity) in handlers {
        let (config, stop) = (worker_config_with(stack, identity, budget), stop.clone());
        tokio::spawn(async move { tern_worker::run_worker(config, h, stop).await });
    }
}

/// One planner replica (gRPC + progression), stopped by `stop`.
async fn start_planner(stack: &Stack, stop: CancellationToken) -> tern_proto::auth::Client {
    start_planner_watching(stack, stop, Duration::from_secs(30)).await
}

/// [`start_planner`], with its watchdog looking every `watchdog`.
async fn start_planner_watching(
    stack: &Stack,
    stop: CancellationToken,
    watchdog: Duration,
) -> tern_proto::auth::Client {
    let service =
        PlannerService::new(stack.nats.bus(tern_bus::Identity::Planner, "tern-planner").await, stack.asr_client())
            .await
            .unwrap();
    let (addr, _server) =
        tern_planner::serve_grpc(service.clone(), "127.0.0.1:0".parse().unwrap(), ApiAuth::Open, stop.clone())
            .await
            .unwrap();
    tokio::spawn(async move { service.run_progression_watching(stop, watchdog).await });
    tern_testkit::stack::planner_client(&addr.to_string(), None).await.unwrap()
}

fn names(vms: &[&str]) -> Option<Selection> {
    Some(Selection {
        by: Some(selection::By::VmNames(NameList { values: vms.iter().map(|s| (*s).to_owned()).collect() })),
    })
}

fn spec(r: &Running, vms: &[&str]) -> PlanSpec {
    PlanSpec {
        vault_id: r.vault_id.clone(),
        selection: names(vms),
        cleanup: Some(CleanupOptions { remove_leftovers: true, ..Default::default() }),
        ..Default::default()
    }
}

async fn finished(r: &mut Running, plan_id: &str) -> Plan {
    let mut grpc = r.grpc.clone();
    let ended = tern_testkit::wait_for("the plan to end", DEADLINE, || {
        let mut grpc = grpc.clone();
        let id = plan_id.to_owned();
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id: id }).await.ok()?.into_inner();
            matches!(
                PlanState::try_from(p.state),
                Ok(PlanState::Completed | PlanState::CompletedWithErrors | PlanState::Cancelled)
            )
            .then_some(p)
        }
    })
    .await;
    match ended {
        Ok(plan) => plan,
        Err(e) => {
            // Where it stuck: every VM not done, with its phase, state and reason.
            let plan = grpc.get_plan(GetPlanRequest { plan_id: plan_id.to_owned() }).await.map(|p| p.into_inner());
            let stuck: Vec<String> = plan
                .iter()
                .flat_map(|p| &p.vms)
                .filter(|v| v.state() != tern_proto::VmState::Succeeded)
                .map(|v| format!("{} {:?} {:?} {}", v.vm.as_ref().unwrap().name, v.phase(), v.state(), v.reason))
                .collect();
            panic!("{e}; VMs not done: {stuck:#?}")
        }
    }
}

#[tokio::test]
async fn a_plan_in_two_waves_fails_back_commits_reprotects_and_cleans_up() {
    let mut r = start(ready_for_failback(6), true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003", "vm-00004", "vm-00005", "vm-00006"]);
    s.waves = vec![
        Wave {
            name: "first".into(),
            vm_names: vec!["vm-00001".into(), "vm-00002".into(), "vm-00003".into()],
            ..Default::default()
        },
        Wave {
            name: "second".into(),
            vm_names: vec!["vm-00004".into(), "vm-00005".into(), "vm-00006".into()],
            ..Default::default()
        },
    ];
    let accepted = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner();
    let plan_id = accepted.plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    assert_eq!(plan.counts.unwrap().succeeded, 6);
    for vm in &plan.vms {
        assert!(vm.recovery_point.is_some() && vm.phase_durations.contains_key("failover"), "{vm:?}");
        assert!(vm.rpo.is_some() && vm.rto.is_some(), "RPO and RTO are reported: {vm:?}");
        assert!(vm.rpo.unwrap().seconds > 0, "the latest processed point is older than the failover: {vm:?}");
    }
    // The wave barrier: no wave-2 failover before every wave-1 failover.
    let ops = r.stack.accepted_ops().await;
    let failovers: Vec<&str> = ops.iter().filter(|(o, _)| o == "unplannedFailover").map(|(_, i)| i.as_str()).collect();
    assert_eq!(failovers.len(), 6);
    let first_of_wave_2 = failovers.iter().position(|v| ["vm-00004", "vm-00005", "vm-00006"].contains(v)).unwrap();
    assert_eq!(first_of_wave_2, 3, "wave 1 failed over first: {failovers:?}");
    for op in ["failoverCommit", "switchProtection"] {
        assert_eq!(ops.iter().filter(|(o, _)| o == op).count(), 6, "{op} once per VM: {ops:?}");
    }
    assert_eq!(
        ops.iter().filter(|(o, _)| o == "delete").count(),
        24,
        "each VM's leftover VM, NIC and two disks: {ops:?}"
    );
}

#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field() {
    let mut r = start(ready_for_failback(2), false).await;
    let mut custom = spec(&r, &["vm-00001", "vm-00002"]);
    custom.recovery_point =
        Some(RecoveryPointChoice { kind: RecoveryPointKind::Custom as i32, custom_id: "rp".into() });
    let mut empty = spec(&r, &[]);
    empty.selection = None;
    let mut unknown_vault = spec(&r, &["vm-00001"]);
    unknown_vault.vault_id =
        "/subscriptions/x/resourceGroups/y/providers/Microsoft.RecoveryServices/vaults/nope".into();
    let unknown_vm = spec(&r, &["vm-09999"]);
    for (s, field) in [
        (custom, "recovery_point:"),
        (empty, "selection:"),
        (unknown_vault, "vault_id:"),
        (unknown_vm, "selection.vm_names[0]:"),
    ] {
        let err = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{field} expected in {}", err.message());
    }
    let missing = r.grpc.get_plan(GetPlanRequest { plan_id: "p-nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn the_same_request_id_twice_is_one_plan_and_a_vm_is_in_one_active_plan() {
    let mut r = start(ready_for_failback(3), false).await;
    let mut s = spec(&r, &["vm-00001"]);
    s.request_id = "change-4711".into();
    let first = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s.clone()) }).await.unwrap().into_inner();
    let again = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner();
    assert!(!first.existing && again.existing);
    assert_eq!(first.plan.unwrap().plan_id, again.plan.unwrap().plan_id);
    // No worker runs: vm-00001 stays in that active plan.
    let other =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(spec(&r, &["vm-00001", "vm-00002"])) }).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::FailedPrecondition);
    assert!(other.message().contains("vm-00001") && other.message().contains("active plan"), "{}", other.message());
}

#[tokio::test]
async fn preflight_blocks_an_unhealthy_vm_and_the_plan_needs_consent_to_go_without_it() {
    let mut config = ready_for_failback(3);
    config.estate.unhealthy_every = 3;
    let mut r = start(config, true).await;
    let pre = r
        .grpc
        .preflight(PreflightRequest { spec: Some(spec(&r, &["vm-00001", "vm-00003"])) })
        .await
        .unwrap()
        .into_inner();
    assert!(!pre.ready);
    let bad = pre.vms.iter().find(|v| v.vm.as_ref().unwrap().name == "vm-00003").unwrap();
    assert_eq!(bad.readiness, Readiness::Blocked as i32);
    assert!(
        bad.checks.iter().any(|c| c.name == "replication-health" && c.detail.contains("151037")),
        "{:?}",
        bad.checks
    );
    let refused =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(spec(&r, &["vm-00001", "vm-00003"])) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("vm-00003"), "{}", refused.message());
    let mut consent = spec(&r, &["vm-00001", "vm-00003"]);
    consent.proceed_with_ready = true;
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(consent) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "left out with consent: not an error of the plan");
    let skipped = plan.vms.iter().find(|v| v.vm.as_ref().unwrap().name == "vm-00003").unwrap();
    assert!(skipped.reason.contains("blocked in preflight"), "{}", skipped.reason);
    assert!(skipped.left_out && skipped.state() == VmState::Skipped, "{skipped:?}");
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_resource_group_selects_the_vms_running_in_it_and_an_empty_one_is_refused() {
    let mut r = start(ready_for_failback(3), false).await;
    let items = r.stack.asr_client().list_items(None, None).await.unwrap();
    let running = items[0].properties.provider_specific_details.as_ref().unwrap().fabric_object_id.clone().unwrap();
    let group = tern_asr::client::resource_group_of(&running).unwrap().to_owned();
    let base = spec(&r, &[]);
    let by_group = |rg: &str| PlanSpec {
        selection: Some(Selection { by: Some(selection::By::ResourceGroup(rg.to_owned())) }),
        ..base.clone()
    };
    let pre = r.grpc.preflight(PreflightRequest { spec: Some(by_group(&group)) }).await.unwrap().into_inner();
    let mut picked: Vec<&str> = pre.vms.iter().map(|v| v.vm.as_ref().unwrap().name.as_str()).collect();
    picked.sort_unstable();
    assert_eq!(picked, ["vm-00001", "vm-00002", "vm-00003"], "every VM running in {group}");
    let err = r.grpc.preflight(PreflightRequest { spec: Some(by_group("rg-nothing-here")) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("selection: selects no replicated VM"), "{}", err.message());
}

fn vm_names(n: std::ops::RangeInclusive<usize>) -> Vec<String> {
    n.map(|i| format!("vm-{i:05}")).collect()
}

fn vm<'a>(plan: &'a Plan, name: &str) -> &'a tern_proto::VmStatus {
    plan.vms.iter().find(|v| v.vm.as_ref().unwrap().name == name).unwrap()
}

#[tokio::test]
async fn two_hundred_vms_in_three_waves_fail_back_and_the_barrier_holds() {
    let mut r = start(ready_for_failback(200), true).await;
    let all = vm_names(1..=200);
    let mut s = spec(&r, &all.iter().map(String::as_str).collect::<Vec<_>>());
    let waves = [vm_names(1..=60), vm_names(61..=140), vm_names(141..=200)];
    s.waves = waves
        .iter()
        .enumerate()
        .map(|(i, w)| Wave { name: format!("wave-{i}"), vm_names: w.clone(), ..Default::default() })
        .collect();
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{:?}", plan.counts);
    assert_eq!(plan.counts.unwrap().succeeded, 200);
    let ops = r.stack.accepted_ops().await;
    let failovers: Vec<&str> = ops.iter().filter(|(o, _)| o == "unplannedFailover").map(|(_, i)| i.as_str()).collect();
    assert_eq!(failovers.len(), 200, "one failover per VM");
    let wave_of = |vm: &str| waves.iter().position(|w| w.iter().any(|x| x == vm)).unwrap();
    let order: Vec<usize> = failovers.iter().map(|v| wave_of(v)).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "no failover of a later wave before the earlier wave finished");
    for op in ["failoverCommit", "switchProtection"] {
        assert_eq!(ops.iter().filter(|(o, _)| o == op).count(), 200, "{op} once per VM");
    }
}

#[tokio::test]
async fn a_critical_failure_halts_dispatch_and_an_optional_one_does_not() {
    let faulty = || {
        let mut c = ready_for_failback(4);
        c.faults.failures.push(
            serde_json::from_value(serde_json::json!({"vms": ["vm-00001"], "operation": "failover", "code": "28031"}))
                .unwrap(),
        );
        c
    };
    let waves = |s: &mut PlanSpec| {
        s.waves = vec![
            Wave { name: "1".into(), vm_names: vec!["vm-00001".into(), "vm-00002".into()], ..Default::default() },
            Wave { name: "2".into(), vm_names: vec!["vm-00003".into(), "vm-00004".into()], ..Default::default() },
        ];
    };
    // Critical (the default): wave 2 never starts.
    let mut r = start(faulty(), true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003", "vm-00004"]);
    waves(&mut s);
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::CompletedWithErrors);
    assert!(plan.halted && plan.reason.contains("vm-00001"), "{}", plan.reason);
    assert_eq!(vm(&plan, "vm-00001").error.as_ref().unwrap().code, "28031");
    assert!(vm(&plan, "vm-00003").reason.contains("halted"), "{}", vm(&plan, "vm-00003").reason);
    let failed_over: Vec<String> =
        r.stack.accepted_ops().await.into_iter().filter(|(o, _)| o == "unplannedFailover").map(|(_, i)| i).collect();
    assert!(
        !failed_over.iter().any(|v| v == "vm-00003" || v == "vm-00004"),
        "no dispatch after the critical failure: {failed_over:?}"
    );

    // Optional: everything else completes.
    let mut r = start(faulty(), true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003", "vm-00004"]);
    waves(&mut s);
    s.failure_policy = Some(tern_proto::FailurePolicy { optional_vms: vec!["vm-00001".into()], ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert!(!plan.halted);
    assert_eq!(plan.counts.unwrap().succeeded, 3);
    assert_eq!(plan.state(), PlanState::CompletedWithErrors);
}

/// Failover and commit only, with realistic failover durations (2-5 s of real time).
fn slow(vms: usize) -> tern_asr_sim::SimConfig {
    let mut c = ready_for_failback(vms);
    c.zero_latency = false;
    c.time_compression = 60.0;
    c
}

fn failover_only(s: &mut PlanSpec) {
    s.phases = Some(tern_proto::Phases { reprotect: Some(false), cleanup: Some(false), ..Default::default() });
}

#[tokio::test]
async fn pause_holds_new_work_resume_continues_and_cancel_lets_running_work_finish() {
    let mut r = start(slow(3), true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003"]);
    failover_only(&mut s);
    s.concurrency = Some(tern_proto::Concurrency { failover: 1, ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let paused = r
        .grpc
        .pause_plan(tern_proto::PausePlanRequest { plan_id: plan_id.clone(), reason: "change freeze".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.state(), PlanState::Paused);
    let mut grpc = r.grpc.clone();
    let id = plan_id.clone();
    let plan = tern_testkit::wait_for("vm-00001 to finish while paused", DEADLINE, || {
        let (mut grpc, id) = (grpc.clone(), id.clone());
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id: id }).await.ok()?.into_inner();
            (vm(&p, "vm-00001").state == tern_proto::VmState::Succeeded as i32).then_some(p)
        }
    })
    .await
    .unwrap();
    assert_eq!(vm(&plan, "vm-00002").state, tern_proto::VmState::Pending as i32, "nothing new while paused");
    let failovers = |ops: Vec<(String, String)>| ops.into_iter().filter(|(o, _)| o == "unplannedFailover").count();
    assert_eq!(failovers(r.stack.accepted_ops().await), 1);

    r.grpc.resume_plan(tern_proto::ResumePlanRequest { plan_id: plan_id.clone() }).await.unwrap();
    tern_testkit::wait_until("vm-00002 to start", DEADLINE, || {
        let (mut grpc, id) = (grpc.clone(), plan_id.clone());
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id: id }).await.unwrap().into_inner();
            vm(&p, "vm-00002").state == tern_proto::VmState::Running as i32
        }
    })
    .await
    .unwrap();
    r.grpc
        .cancel_plan(tern_proto::CancelPlanRequest {
            plan_id: plan_id.clone(),
            reason: "rollback window closed".into(),
        })
        .await
        .unwrap();
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Cancelled);
    assert_eq!(vm(&plan, "vm-00002").state, tern_proto::VmState::Succeeded as i32, "the running failover finished");
    assert_eq!(vm(&plan, "vm-00003").state, tern_proto::VmState::Skipped as i32);
    assert!(vm(&plan, "vm-00003").reason.contains("cancelled"));
    assert_eq!(failovers(r.stack.accepted_ops().await), 2);
    let illegal = grpc.resume_plan(tern_proto::ResumePlanRequest { plan_id }).await.unwrap_err();
    assert_eq!(illegal.code(), tonic::Code::FailedPrecondition);
}

fn once_per_vm(ops: &[(String, String)], vms: usize, wanted: &[&str]) {
    for n in 1..=vms {
        let name = format!("vm-{n:05}");
        for op in wanted {
            assert_eq!(ops.iter().filter(|(o, i)| o == op && *i == name).count(), 1, "{op} of {name} once: {ops:?}");
        }
    }
}

/// The planner as its own process, reached over gRPC.
async fn spawn_planner(stack: &mut Stack) -> (usize, tern_proto::auth::Client) {
    let i = stack.spawn(env!("CARGO_BIN_EXE_tern-planner"), &[("TERN_LISTEN", "127.0.0.1:0")]);
    let addr = stack.ready[i]["grpc"].as_str().expect("the planner names its gRPC address").to_owned();
    (i, stack.planner_client(&addr).await.unwrap())
}

#[tokio::test]
async fn a_planner_killed_mid_plan_and_started_again_finishes_it_and_nothing_runs_twice() {
    let mut r = start(slow(4), true).await;
    r.planner_stop.cancel(); // only the planner process below drives plans
    let (planner, mut grpc) = spawn_planner(&mut r.stack).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003", "vm-00004"]);
    failover_only(&mut s);
    s.concurrency = Some(tern_proto::Concurrency { failover: 2, ..Default::default() });
    let plan_id =
        grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    tern_testkit::wait_until("the first failovers to reach ASR", DEADLINE, || async {
        !r.stack.accepted_ops().await.is_empty()
    })
    .await
    .unwrap();
    r.stack.kill(planner); // SIGKILL mid-plan: no goodbye, nothing flushed
    let (_, grpc) = spawn_planner(&mut r.stack).await; // and a new one starts
    r.grpc = grpc;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{:?}", plan.counts);
    once_per_vm(&r.stack.accepted_ops().await, 4, &["unplannedFailover", "failoverCommit"]);
}

#[tokio::test]
async fn two_planner_replicas_complete_a_plan_together_without_double_dispatch() {
    let mut r = start(ready_for_failback(8), true).await;
    let mut second = start_planner(&r.stack, r.stop.child_token()).await;
    let s = spec(&r, &vm_names(1..=8).iter().map(String::as_str).collect::<Vec<_>>());
    let plan_id =
        second.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{:?}", plan.counts);
    once_per_vm(&r.stack.accepted_ops().await, 8, &["unplannedFailover", "failoverCommit", "switchProtection"]);
}

#[tokio::test]
async fn a_failed_vm_retried_after_the_fault_clears_succeeds_and_watchers_see_every_change() {
    let mut config = ready_for_failback(2);
    config.faults.failures.push(
        serde_json::from_value(serde_json::json!({"vms": ["vm-00001"], "operation": "failover", "code": "28031"}))
            .unwrap(),
    );
    let mut r = start(config, true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002"]);
    failover_only(&mut s);
    s.failure_policy = Some(tern_proto::FailurePolicy { optional_vms: vec!["vm-00001".into()], ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let mut watch =
        r.grpc.watch_plan(tern_proto::WatchPlanRequest { plan_id: plan_id.clone() }).await.unwrap().into_inner();

    // The watch stream starts with the plan as it is and ends when the plan does.
    let mut updates = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(u) = watch.message().await.unwrap() {
            updates.push(u);
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch stream did not end with the plan");
    assert!(updates.len() >= 2, "the plan as submitted, then at least its end: {} updates", updates.len());
    let last = updates.last().unwrap().plan.clone().unwrap();
    assert_eq!(last.state(), PlanState::CompletedWithErrors);
    let updated: Vec<_> = updates.iter().map(|u| u.plan.as_ref().unwrap().updated_at.unwrap()).collect();
    assert!(updated.windows(2).all(|w| w[0] != w[1]), "each update shows a change");
    assert_eq!(vm(&last, "vm-00001").error.as_ref().unwrap().code, "28031");

    // Retrying a VM that did not fail is refused and changes nothing.
    let refused = r
        .grpc
        .retry_vm(tern_proto::RetryVmRequest { plan_id: plan_id.clone(), vm_name: "vm-00002".into(), phase: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    // Nor from a phase the VM never reached: it failed at failover, so no cleanup.
    let retry = |phase: tern_proto::Phase| tern_proto::RetryVmRequest {
        plan_id: plan_id.clone(),
        vm_name: "vm-00001".into(),
        phase: phase as i32,
    };
    let refused = r.grpc.retry_vm(retry(tern_proto::Phase::Cleanup)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("not cleanup"), "{refused}");
    // The plan ended and let the VM go; another plan holds it now: a retry here is refused.
    let locks = r.stack.bus.kv::<tern_proto::VmLock>(tern_bus::Bucket::VmLocks).await.unwrap();
    let key = tern_bus::ids::vm_key(vm(&last, "vm-00001").vm.as_ref().unwrap()).to_owned();
    locks.put(&key, &tern_proto::VmLock { plan_id: "p-other".into() }).await.unwrap();
    let refused = r.grpc.retry_vm(retry(tern_proto::Phase::Unspecified)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("p-other"), "names the plan that holds it: {refused}");
    assert_eq!(locks.get(&key).await.unwrap().unwrap().value.plan_id, "p-other", "the other plan keeps it");
    locks.delete(&key).await.unwrap();

    // Clear the fault, retry: a second attempt fails the VM back.
    let http = reqwest::Client::new();
    let cleared = http.put(format!("{}/_sim/faults", r.stack.sim.info().url)).body("{}").send().await.unwrap();
    assert!(cleared.status().is_success(), "{}", cleared.text().await.unwrap());
    let retried = r
        .grpc
        .retry_vm(tern_proto::RetryVmRequest { plan_id: plan_id.clone(), vm_name: "vm-00001".into(), phase: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.state(), PlanState::Running);
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{}", plan.reason);
    let v = vm(&plan, "vm-00001");
    assert_eq!(v.attempt, 2);
    assert!(v.error.is_none());
}

#[tokio::test]
async fn a_plan_that_could_not_be_stored_leaves_its_vms_free_for_the_next() {
    let mut r = start(ready_for_failback(2), false).await;
    // The plans bucket takes nothing new for a moment (a full disk, a lost quorum).
    let js = r.stack.bus.jetstream().clone();
    let stream = format!("KV_{}", tern_bus::Bucket::Plans.name());
    let open = js.get_stream(&stream).await.unwrap().info().await.unwrap().config.clone();
    let closed = async_nats::jetstream::stream::Config {
        max_bytes: 1,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..open.clone()
    };
    js.update_stream(&closed).await.unwrap();
    let s = spec(&r, &["vm-00001", "vm-00002"]);
    let err = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    js.update_stream(&open).await.unwrap();
    // The VMs are not held by a plan that does not exist: the same plan goes through now.
    let locks = r.stack.bus.kv::<tern_proto::VmLock>(tern_bus::Bucket::VmLocks).await.unwrap();
    assert_eq!(locks.keys().await.unwrap(), Vec::<String>::new(), "no lock outlives the failed submission");
    let plan = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap();
    assert_eq!(plan.vms.len(), 2);
}

#[tokio::test]
async fn a_command_a_worker_gave_up_on_fails_its_vm_with_the_reason_instead_of_leaving_it_running() {
    let mut r = start(ready_for_failback(2), false).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002"]);
    failover_only(&mut s);
    s.failure_policy = Some(tern_proto::FailurePolicy {
        optional_vms: vec!["vm-00001".into(), "vm-00002".into()],
        ..Default::default()
    });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    // A failover worker that cannot handle what it gets: it dead-letters both commands.
    let worker =
        r.stack.bus.queue_consumer(tern_bus::WorkQueue::Failover, tern_bus::LoopOptions::default()).await.unwrap();
    let stop = CancellationToken::new();
    let handler = |_: tern_bus::Delivery<tern_proto::Command>| {
        std::future::ready(Err(tern_bus::HandlerError::reject("the item cannot be read here")))
    };
    let served = tokio::spawn(worker.run(handler, stop.clone()));
    let plan = finished(&mut r, &plan_id).await;
    // Garbage on the queue is dead-lettered too; it names no VM, but the planner counts it.
    let subject = tern_bus::subjects::command(tern_bus::WorkQueue::Failover, &plan_id).unwrap();
    r.stack.bus.jetstream().publish(subject, "garbage".into()).await.unwrap().await.unwrap();
    let counted = |kind: &str| {
        let text = tern_telemetry::metrics::registry().render();
        let series = format!("tern_dead_letters_total{{queue=\"failover\",kind=\"{kind}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
    };
    tern_testkit::wait_until("the planner to count the garbage", DEADLINE, || {
        let n = counted("undecodable");
        async move { n == Some(1.0) }
    })
    .await
    .unwrap();
    assert_eq!(counted("rejected"), Some(2.0), "both commands the worker rejected are counted");
    stop.cancel();
    assert_eq!(served.await.unwrap().dead_lettered, 3);
    assert_eq!(plan.state(), PlanState::CompletedWithErrors, "{}", plan.reason);
    for name in ["vm-00001", "vm-00002"] {
        let v = vm(&plan, name);
        assert_eq!(v.state(), tern_proto::VmState::Failed, "{name}");
        let e = v.error.as_ref().expect("the error");
        assert_eq!(e.code, "TERN-DEAD-LETTERED");
        assert!(e.message.contains("the item cannot be read here"), "the worker's reason: {}", e.message);
        assert!(e.recommended_action.contains("tern plan retry"), "{}", e.recommended_action);
    }
    // Outside consumers learn of it too: the failed events are on the stream.
    let events = r.stack.events(&plan_id).await;
    let failed = (tern_proto::Phase::Failover, tern_proto::Outcome::Failed);
    let failed = events.iter().filter(|e| tern_testkit::stack::kind(e) == Some(failed)).count();
    assert_eq!(failed, 2);
}

#[tokio::test]
async fn the_grpc_endpoint_reports_serving_health() {
    use tonic_health::pb::health_client::HealthClient;
    let r = start(ready_for_failback(1), false).await;
    let stack = &r.stack;
    let service =
        PlannerService::new(stack.nats.bus(tern_bus::Identity::Planner, "tern-planner").await, stack.asr_client())
            .await
            .unwrap();
    let (addr, _server) =
        tern_planner::serve_grpc(service, "127.0.0.1:0".parse().unwrap(), ApiAuth::Open, r.stop.child_token())
            .await
            .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest { service: "tern.v1.Planner".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// The planner's API takes only callers with a token, each in its role: without one a call is
/// `Unauthenticated`, a reader may read but not submit, an operator may do both.
#[tokio::test]
async fn the_api_refuses_callers_without_a_token_and_readers_who_would_change_a_plan() {
    let mut r = start(ready_for_failback(2), false).await;
    r.planner_stop.cancel();
    let (planner, _) = spawn_planner(&mut r.stack).await;
    let addr = r.stack.ready[planner]["grpc"].as_str().unwrap().to_owned();
    let submit = || SubmitPlanRequest { spec: Some(spec(&r, &["vm-00001"])) };

    let mut anonymous = tern_testkit::stack::planner_client(&addr, None).await.unwrap();
    let refused = anonymous.list_plans(tern_proto::ListPlansRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut forged = tern_testkit::stack::planner_client(&addr, Some("not-the-token-at-all")).await.unwrap();
    assert_eq!(forged.submit_plan(submit()).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    let reader_token = r.stack.api_token("reader");
    let mut reader = tern_testkit::stack::planner_client(&addr, Some(&reader_token)).await.unwrap();
    reader.list_plans(tern_proto::ListPlansRequest::default()).await.expect("a reader lists plans");
    let denied = reader.submit_plan(submit()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("operator"), "{}", denied.message());
    let approve = tern_proto::GateDecisionRequest {
        plan_id: "p-any".into(),
        wave: "1".into(),
        by: "eve".into(),
        ..Default::default()
    };
    let denied = reader.approve_gate(approve.clone()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "a reader approves no gate: {denied:?}");
    assert_eq!(reader.reject_gate(approve.clone()).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(reader.retry_gate(approve).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    let mut operator = r.stack.planner_client(&addr).await.unwrap();
    operator.submit_plan(submit()).await.expect("an operator submits");
    assert_eq!(reader.list_plans(tern_proto::ListPlansRequest::default()).await.unwrap().into_inner().plans.len(), 1);
}

fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: s, nanos: 0 })
}

/// Waits until the plan is in `state`.
async fn reaches(r: &Running, plan_id: &str, state: PlanState) -> Plan {
    let grpc = r.grpc.clone();
    tern_testkit::wait_for(&format!("the plan to be {state:?}"), DEADLINE, || {
        let mut grpc = grpc.clone();
        let id = plan_id.to_owned();
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id: id }).await.ok()?.into_inner();
            (p.state() == state).then_some(p)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every request the simulator was sent for `operation`, with its status.
async fn sent(r: &Running, operation: &str) -> Vec<u64> {
    let log = r.stack.admin("oplog").await;
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["operation"] == operation && e["method"] != "GET")
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_vm_no_worker_reports_on_fails_at_its_deadline_and_a_retry_brings_it_home() {
    let mut r = start_watching(ready_for_failback(1), false, Duration::from_millis(500)).await;
    let mut s = spec(&r, &["vm-00001"]);
    failover_only(&mut s);
    s.deadlines = Some(tern_proto::Deadlines { failover: secs(2), ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    // No worker takes the command: the VM does not stay "running" for ever.
    let plan = finished(&mut r, &plan_id).await;
    let v = vm(&plan, "vm-00001");
    assert_eq!(v.state(), tern_proto::VmState::Failed, "{v:?}");
    let e = v.error.as_ref().expect("the error");
    assert_eq!(e.code, "TERN-DEADLINE");
    assert!(e.message.contains("deadline of 2s"), "{}", e.message);
    assert!(e.recommended_action.contains("tern plan retry"), "{}", e.recommended_action);
    let events = r.stack.events(&plan_id).await;
    let failed = (tern_proto::Phase::Failover, tern_proto::Outcome::Failed);
    assert!(events.iter().any(|e| tern_testkit::stack::kind(e) == Some(failed)), "consumers hear of it");
    // Workers come; the operator retries; the VM comes home, failed over once.
    start_workers(&r.stack, &r.stop);
    let retry = tern_proto::RetryVmRequest { plan_id: plan_id.clone(), vm_name: "vm-00001".into(), phase: 0 };
    r.grpc.retry_vm(retry).await.unwrap();
    let plan = reaches(&r, &plan_id, PlanState::Completed).await;
    assert_eq!(vm(&plan, "vm-00001").state(), tern_proto::VmState::Succeeded);
    assert_eq!(sent(&r, "unplannedFailover").await, [202], "failed over once");
}

#[tokio::test]
async fn a_command_lost_from_its_queue_is_sent_again_and_the_vms_come_home() {
    let mut r = start_watching(ready_for_failback(2), false, Duration::from_millis(500)).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002"]);
    failover_only(&mut s);
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    // Both commands are queued; then the queue loses them (purged, as by a mistaken operator).
    let js = r.stack.bus.jetstream().clone();
    tern_testkit::wait_until("both commands to be queued", DEADLINE, || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap();
            stream.info().await.is_ok_and(|i| i.state.messages == 2)
        }
    })
    .await
    .unwrap();
    js.get_stream(tern_bus::topology::COMMANDS_STREAM).await.unwrap().purge().await.unwrap();
    start_workers(&r.stack, &r.stop);
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    assert_eq!(sent(&r, "unplannedFailover").await, [202, 202], "each VM failed over once");
}

#[tokio::test]
async fn a_finished_command_whose_outcome_the_planner_missed_moves_its_vm_on() {
    let mut r = start_watching(ready_for_failback(1), false, Duration::from_millis(500)).await;
    let mut s = spec(&r, &["vm-00001"]);
    s.phases = Some(tern_proto::Phases {
        commit: Some(false),
        reprotect: Some(false),
        cleanup: Some(false),
        ..Default::default()
    });
    let plan = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap();
    // A worker finished the command and published its outcome, which the planner never applied
    // (it gave up on it): all that is left is the worker's record.
    let vm_ref = plan.vms[0].vm.clone().unwrap();
    let command_id = tern_bus::ids::command_id(&plan.plan_id, &vm_ref, tern_proto::Phase::Failover, 1);
    let succeeded = tern_proto::Event {
        event_id: format!("{command_id}.succeeded"),
        plan_id: plan.plan_id.clone(),
        body: Some(tern_proto::event::Body::Vm(tern_proto::VmEvent {
            vm: Some(vm_ref),
            phase: tern_proto::Phase::Failover as i32,
            outcome: tern_proto::Outcome::Succeeded as i32,
            command_id: command_id.clone(),
            attempt: 1,
            reason: "failed over".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let ops = r.stack.bus.kv::<tern_proto::OperationRecord>(tern_bus::Bucket::Operations).await.unwrap();
    let record = tern_proto::OperationRecord {
        owner: "tern-failover-gone".into(),
        outcome: "succeeded".into(),
        terminal_events: vec![succeeded],
        ..Default::default()
    };
    ops.create(&command_id, &record).await.unwrap();
    let plan = finished(&mut r, &plan.plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    assert_eq!(vm(&plan, "vm-00001").reason, "failed over");
}

#[tokio::test]
async fn a_job_that_outlives_its_deadline_fails_the_attempt_and_the_automatic_retry_attaches_to_it() {
    let mut config = ready_for_failback(1);
    config.zero_latency = false;
    config.durations = tern_asr_sim::config::Durations::zero();
    config.durations.failover = tern_asr_sim::config::Span { min_secs: 8.0, max_secs: 8.0 };
    let mut r = start_watching(config, true, Duration::from_millis(500)).await;
    let mut s = spec(&r, &["vm-00001"]);
    failover_only(&mut s);
    s.deadlines = Some(tern_proto::Deadlines { failover: secs(5), ..Default::default() });
    s.failure_policy = Some(tern_proto::FailurePolicy { max_automatic_retries: 1, ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    let v = vm(&plan, "vm-00001");
    assert_eq!((v.attempt, v.automatic_retries), (2, 1), "one automatic retry: {v:?}");
    // The first attempt said why it gave up, naming the job; the second waited on that job.
    let events = r.stack.events(&plan_id).await;
    let deadline = first_failure(&events);
    assert!(deadline.contains("deadline of 5s") && deadline.contains("ASR job"), "{deadline}");
    assert_eq!(sent(&r, "unplannedFailover").await, [202], "failed over once");
}

/// The message of the first failed failover event.
fn first_failure(events: &[tern_proto::Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.body {
            Some(tern_proto::event::Body::Vm(v)) if v.outcome() == tern_proto::Outcome::Failed => {
                v.error.as_ref().map(|e| format!("{}: {}", e.code, e.message))
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_arm_outage_longer_than_every_delivery_attempt_is_waited_out_and_nothing_is_sent_twice() {
    let mut r = start_watching(ready_for_failback(3), false, Duration::from_millis(500)).await;
    let names = ["vm-00001", "vm-00002", "vm-00003"];
    let plan_id = r
        .grpc
        .submit_plan(SubmitPlanRequest { spec: Some(spec(&r, &names)) })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap()
        .plan_id;
    // ARM answers every request with a 5xx; the workers start into it.
    let faults = format!("{}/_sim/faults", r.stack.sim.url());
    let http = reqwest::Client::new();
    let put = |spec: serde_json::Value| http.put(&faults).json(&spec).send();
    assert_eq!(put(serde_json::json!({"transient_5xx_rate": 1.0})).await.unwrap().status(), 200);
    start_workers(&r.stack, &r.stop);
    // The outage outlasts a command's five delivery attempts, handed back 1, 5, 15 and 30 s apart.
    let began = std::time::Instant::now();
    tern_testkit::wait_until("a 60 s outage the workers ran into", DEADLINE * 2, || async {
        let refused = r.stack.admin("counters").await["requests"]["transient_5xx"].as_u64().unwrap_or(0);
        refused > 0 && began.elapsed() > Duration::from_secs(60)
    })
    .await
    .unwrap();
    assert_eq!(put(serde_json::json!({})).await.unwrap().status(), 200);
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    let dead: Vec<_> = r
        .stack
        .bus
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| format!("{} from {} after {} deliveries: {}", d.original_subject, d.consumer, d.deliveries, d.reason))
        .collect();
    assert!(dead.is_empty(), "nothing was dead-lettered: {dead:#?}");
    for op in ["unplannedFailover", "failoverCommit", "switchProtection"] {
        let applied = sent(&r, op).await.into_iter().filter(|s| (200..300).contains(s)).count();
        assert_eq!(applied, 3, "{op} applied once per VM");
    }
}

#[tokio::test]
async fn a_lock_left_behind_by_a_plan_that_ended_does_not_hold_its_vm() {
    let mut r = start_watching(ready_for_failback(1), false, Duration::from_millis(500)).await;
    let s = spec(&r, &["vm-00001"]);
    // A first plan ends without touching the VM: no worker takes its command before its deadline.
    let mut quick = s.clone();
    quick.deadlines = Some(tern_proto::Deadlines { failover: secs(1), ..Default::default() });
    let first =
        r.grpc.clone().submit_plan(SubmitPlanRequest { spec: Some(quick) }).await.unwrap().into_inner().plan.unwrap();
    finished(&mut r, &first.plan_id).await;
    // The ended plan's lock release was lost (a crash between storing the end and releasing).
    let locks = r.stack.bus.kv::<tern_proto::VmLock>(tern_bus::Bucket::VmLocks).await.unwrap();
    let key = tern_bus::ids::vm_key(first.vms[0].vm.as_ref().unwrap()).to_owned();
    locks.put(&key, &tern_proto::VmLock { plan_id: first.plan_id.clone() }).await.unwrap();
    // The VM is free for the next plan all the same.
    let check = r.grpc.clone().preflight(PreflightRequest { spec: Some(s.clone()) }).await.unwrap().into_inner();
    let lock = check.vms[0].checks.iter().find(|c| c.name == "vm-lock").expect("the vm-lock check");
    assert_eq!(lock.result(), Readiness::Ready, "{lock:?}");
    let second =
        r.grpc.clone().submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap();
    assert_eq!(locks.get(&key).await.unwrap().unwrap().value.plan_id, second.plan_id, "the new plan holds it");
}

#[tokio::test]
async fn a_plan_over_two_subscriptions_and_three_vaults_brings_every_vm_home_within_each_budget() {
    // Two subscriptions of two vaults each; each subscription's ARM buckets are small, and
    // Tern's fleet-wide budget is the same: per subscription, as ARM keeps it.
    let mut config = ready_for_failback(2);
    config.subscriptions = 2;
    config.vaults_per_subscription = 2;
    config.reprotect_removes_source_vm = false;
    let bucket = |capacity: f64, refill_per_sec: f64| tern_asr_sim::BucketConfig { capacity, refill_per_sec };
    config.throttle = tern_asr_sim::ThrottleConfig {
        enabled: true,
        reads: bucket(60.0, 60.0),
        writes: bucket(4.0, 4.0),
        deletes: bucket(4.0, 4.0),
    };
    // Tern's buckets a little under ARM's, as an operator sets them: their clocks differ.
    let rate =
        |capacity: f64, per_second: f64| tern_asr::Rate { capacity: capacity - 1.0, per_second: per_second * 0.8 };
    let budget = tern_asr::BudgetConfig { reads: rate(60.0, 60.0), writes: rate(4.0, 4.0), deletes: rate(4.0, 4.0) };
    let stack = Stack::start(config).await;
    let stop = CancellationToken::new();
    start_workers_with(&stack, &stop, Some(budget));
    let bus = stack.nats.bus(tern_bus::Identity::Planner, "tern-planner").await;
    let fleet = tern_service::FleetBudget::new(&bus, budget).await.unwrap();
    let home = stack.asr_client();
    // The configuration names each subscription's cache accounts (`region@subscription`).
    let mut cache = home.config().cache_storage_accounts.clone();
    for v in &stack.sim.info().vaults {
        for (region, account) in &v.cache_storage_accounts {
            cache.entry(format!("{region}@{}", v.subscription_id)).or_insert_with(|| account.clone());
        }
    }
    let asr_config =
        tern_asr::AsrConfig { vaults: further_vaults(&stack), cache_storage_accounts: cache, ..home.config().clone() };
    let asr =
        tern_asr::AsrClient::new(asr_config, tern_asr::TokenProvider::static_token("t"), Arc::new(fleet)).unwrap();
    let service = PlannerService::new(bus, asr).await.unwrap();
    let (addr, _server) =
        tern_planner::serve_grpc(service.clone(), "127.0.0.1:0".parse().unwrap(), ApiAuth::Open, stop.clone())
            .await
            .unwrap();
    tokio::spawn({
        let stop = stop.clone();
        async move { service.run_progression(stop).await }
    });
    let grpc = tern_testkit::stack::planner_client(&addr.to_string(), None).await.unwrap();
    let vaults: Vec<String> = stack.sim.info().vaults.iter().map(|v| v.vault_id.clone()).collect();
    // Three of the four vaults: both of the first subscription, the first of the second.
    let chosen = [vaults[0].clone(), vaults[1].clone(), vaults[2].clone()];
    let mut r = Running { stack, grpc, vault_id: chosen[0].clone(), stop, planner_stop: CancellationToken::new() };
    let spec = PlanSpec {
        vault_id: chosen[0].clone(),
        vault_ids: chosen[1..].to_vec(),
        selection: Some(Selection { by: Some(selection::By::AllReady(true)) }),
        cleanup: Some(CleanupOptions { remove_leftovers: true, ..Default::default() }),
        ..Default::default()
    };
    let plan = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(spec) }).await.unwrap().into_inner().plan.unwrap();
    assert_eq!(plan.vms.len(), 6, "two VMs of each chosen vault");
    let plan = finished(&mut r, &plan.plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{plan:#?}");
    let mut per_vault: std::collections::BTreeMap<String, usize> = Default::default();
    for vm in &plan.vms {
        let vm = vm.vm.as_ref().unwrap();
        assert!(vm.protected_item_id.to_ascii_lowercase().starts_with(&vm.vault_id.to_ascii_lowercase()), "{vm:?}");
        *per_vault.entry(vm.vault_id.to_ascii_lowercase()).or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> =
        chosen.iter().map(|v| (v.to_ascii_lowercase(), 2)).collect();
    assert_eq!(per_vault, expected, "each VM is acted on in its own vault");
    // Each subscription was spent within its own budget: nothing was throttled, and both were used.
    let counters = r.stack.admin("counters").await;
    let subscriptions = counters["per_subscription"].as_object().expect("counters per subscription");
    assert_eq!(subscriptions.len(), 2, "{counters:#}");
    for (sub, c) in subscriptions {
        assert_eq!(c["throttled"], 0, "subscription {sub} was throttled: {c:#}");
        assert!(c["writes"].as_u64().unwrap_or(0) >= 6, "subscription {sub} failed its VMs back: {c:#}");
    }
    // The fourth vault was not touched.
    let untouched = vaults[3].to_ascii_lowercase();
    let oplog = r.stack.admin("oplog").await;
    assert!(
        oplog.as_array().unwrap().iter().all(|e| !e.to_string().to_ascii_lowercase().contains(&untouched)),
        "nothing was done in a vault the plan did not name"
    );
}

#[tokio::test]
async fn all_vaults_on_a_planner_allowed_every_vault_finds_every_vault_the_credentials_see() {
    let mut config = ready_for_failback(1);
    config.subscriptions = 2;
    config.vaults_per_subscription = 2;
    let stack = Stack::start(config).await;
    let stop = CancellationToken::new();
    let home = stack.asr_client();
    let asr_config = tern_asr::AsrConfig { vaults: vec!["*".into()], ..home.config().clone() };
    let asr =
        tern_asr::AsrClient::new(asr_config, tern_asr::TokenProvider::static_token("t"), Arc::new(tern_asr::Unlimited))
            .unwrap();
    let bus = stack.nats.bus(tern_bus::Identity::Planner, "tern-planner").await;
    let service = PlannerService::new(bus, asr).await.unwrap();
    let (addr, _server) =
        tern_planner::serve_grpc(service, "127.0.0.1:0".parse().unwrap(), ApiAuth::Open, stop.clone()).await.unwrap();
    let mut grpc = tern_testkit::stack::planner_client(&addr.to_string(), None).await.unwrap();
    let spec = PlanSpec {
        all_vaults: true,
        selection: Some(Selection { by: Some(selection::By::AllReady(true)) }),
        ..Default::default()
    };
    let found = grpc.preflight(PreflightRequest { spec: Some(spec) }).await.unwrap().into_inner();
    let mut vaults: Vec<String> =
        found.vms.iter().map(|v| v.vm.as_ref().unwrap().vault_id.to_ascii_lowercase()).collect();
    vaults.dedup();
    let expected: Vec<String> = stack.sim.info().vaults.iter().map(|v| v.vault_id.to_ascii_lowercase()).collect();
    assert_eq!(vaults, expected, "every vault of both subscriptions, the planner's own first");
    assert_eq!(found.vms.len(), 4);
    stop.cancel();
}

fn approval_gate() -> tern_proto::GateStep {
    tern_proto::GateStep {
        description: "web team signs off".into(),
        kind: Some(tern_proto::gate_step::Kind::Approval(tern_proto::ApprovalGate {})),
        ..Default::default()
    }
}

/// vm-00001 in wave `db`, then vm-00002 in wave `web` behind `gate`.
fn db_then_web(r: &Running, gate: tern_proto::GateStep) -> PlanSpec {
    let mut s = spec(r, &["vm-00001", "vm-00002"]);
    s.waves = vec![
        Wave { name: "db".into(), vm_names: vec!["vm-00001".into()], ..Default::default() },
        Wave { name: "web".into(), vm_names: vec!["vm-00002".into()], before: vec![gate], ..Default::default() },
    ];
    s
}

/// Waits until plan wave `wave`'s `before` step 0 is in `state`.
async fn gate_reaches(r: &Running, plan_id: &str, wave: u32, state: tern_proto::GateState) -> Plan {
    let grpc = r.grpc.clone();
    tern_testkit::wait_for(&format!("the gate to be {state:?}"), DEADLINE, || {
        let mut grpc = grpc.clone();
        let id = plan_id.to_owned();
        async move {
            let p = grpc.get_plan(GetPlanRequest { plan_id: id }).await.ok()?.into_inner();
            p.gates.iter().any(|g| g.wave == wave && !g.after && g.state() == state).then_some(p)
        }
    })
    .await
    .unwrap()
}

fn failed_over(ops: &[(String, String)]) -> Vec<String> {
    ops.iter().filter(|(o, _)| o == "unplannedFailover").map(|(_, i)| i.clone()).collect()
}

/// A second wave behind an approval: its VM does not fail over while the gate waits, not across
/// a planner restart either; a rejection halts the plan (stop policy), a retry waits again, and
/// the approval lets the plan complete, with who and why kept on the gate.
#[tokio::test]
async fn a_wave_behind_an_approval_waits_for_it_across_a_restart_and_a_rejection() {
    use tern_proto::{GateDecisionRequest, GateState};
    let mut r = start(ready_for_failback(2), true).await;
    let s = db_then_web(&r, approval_gate());
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let waiting = gate_reaches(&r, &plan_id, 1, GateState::Waiting).await;
    assert_eq!(waiting.vms[1].state(), VmState::Pending, "{waiting:#?}");
    let decide = |by: &str, why: &str| GateDecisionRequest {
        plan_id: plan_id.clone(),
        wave: "web".into(),
        by: by.into(),
        reason: why.into(),
        ..Default::default()
    };

    // A restarted planner keeps the gate waiting.
    r.planner_stop.cancel();
    r.planner_stop = r.stop.child_token();
    r.grpc = start_planner(&r.stack, r.planner_stop.clone()).await;
    let plan = r.grpc.get_plan(GetPlanRequest { plan_id: plan_id.clone() }).await.unwrap().into_inner();
    assert_eq!(plan.gates.iter().filter(|g| g.state() == GateState::Waiting).count(), 1, "{plan:#?}");
    assert_eq!(failed_over(&r.stack.accepted_ops().await), ["vm-00001"], "the web tier waits");
    let wrong = r.grpc.approve_gate(GateDecisionRequest { wave: "db".into(), ..decide("ann", "") }).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition, "no gate waits in wave db: {wrong:?}");

    // Rejected under the stop policy: the plan halts and ends without the web tier.
    r.grpc.reject_gate(decide("bob", "change freeze")).await.unwrap();
    let ended = finished(&mut r, &plan_id).await;
    assert_eq!(ended.state(), PlanState::CompletedWithErrors, "{ended:#?}");
    assert!(ended.reason.contains("rejected by bob: change freeze"), "{}", ended.reason);
    assert_eq!(ended.vms[1].state(), VmState::Skipped);
    assert_eq!(ended.gates[0].state(), GateState::Rejected);

    // Retried, the gate waits again; approved, the web tier fails over and the plan completes.
    r.grpc.retry_gate(decide("ann", "")).await.unwrap();
    let again = gate_reaches(&r, &plan_id, 1, GateState::Waiting).await;
    assert_eq!((again.state(), again.vms[1].state()), (PlanState::Running, VmState::Pending), "{again:#?}");
    let approved = r.grpc.approve_gate(decide("ann", "freeze lifted")).await.unwrap().into_inner();
    assert_eq!(approved.gates[0].state(), GateState::Passed);
    let done = finished(&mut r, &plan_id).await;
    assert_eq!(done.state(), PlanState::Completed, "{done:#?}");
    let g = &done.gates[0];
    assert_eq!((g.by.as_str(), g.reason.as_str(), g.attempt), ("ann", "freeze lifted", 2));
    assert!(g.started_at.is_some() && g.ended_at.is_some());
    assert_eq!(failed_over(&r.stack.accepted_ops().await), ["vm-00001", "vm-00002"]);

    // The event stream tells each step: waiting, rejected (by whom), waiting again, approved.
    use tern_proto::PlanEventKind as K;
    let gate_events = |events: &[tern_proto::Event]| -> Vec<(K, String)> {
        events
            .iter()
            .filter_map(|e| match &e.body {
                Some(tern_proto::event::Body::Plan(p)) if p.kind().slug().starts_with("gate") => {
                    Some((p.kind(), p.by.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let events = r.stack.wait_events(&plan_id, "the gate events", |e| gate_events(e).len() >= 4).await;
    let expected = [
        (K::GateWaiting, String::new()),
        (K::GateFailed, "bob".to_owned()),
        (K::GateWaiting, String::new()),
        (K::GatePassed, "ann".to_owned()),
    ];
    assert_eq!(gate_events(&events), expected);
}

/// A plan cancelled while a gate waits ends, and the gate with it: it is not left waiting.
#[tokio::test]
async fn a_plan_cancelled_while_a_gate_waits_cancels_the_gate() {
    use tern_proto::GateState;
    let mut r = start(ready_for_failback(2), true).await;
    let s = db_then_web(&r, approval_gate());
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    gate_reaches(&r, &plan_id, 1, GateState::Waiting).await;
    let reason = "change window closed".to_owned();
    r.grpc.cancel_plan(tern_proto::CancelPlanRequest { plan_id: plan_id.clone(), reason }).await.unwrap();
    let ended = finished(&mut r, &plan_id).await;
    assert_eq!(ended.state(), PlanState::Cancelled, "{ended:#?}");
    assert_eq!(ended.gates[0].state(), GateState::Cancelled, "{ended:#?}");
    assert!(ended.gates[0].ended_at.is_some());
    assert_eq!(ended.vms[1].state(), VmState::Skipped);
    assert_eq!(failed_over(&r.stack.accepted_ops().await), ["vm-00001"], "the web tier never failed over");
}

/// A hook try in flight when its planner stops is not lost: its claim runs out and the planner
/// that runs next sends it again, with the same `hook_id`; answered, the wave goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_try_lost_with_its_planner_is_sent_again_by_the_next_one() {
    use futures::StreamExt;
    use tern_proto::{GateState, GateStep, HookGate, gate_step};
    let watchdog = Duration::from_millis(200);
    let mut r = start_watching(ready_for_failback(2), true, watchdog).await;
    // A runner that keeps every request and answers from the second try on.
    let runner = r.stack.nats.bus(tern_bus::Identity::Hooks, "hook-runner").await;
    let mut requests = runner.client().subscribe("tern.hooks.restart").await.unwrap();
    let heard: Arc<std::sync::Mutex<Vec<(std::time::Instant, serde_json::Value)>>> = Arc::default();
    let log = heard.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            let request: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let answer = request["try"].as_u64() >= Some(2);
            log.lock().unwrap().push((std::time::Instant::now(), request));
            if let (true, Some(reply)) = (answer, m.reply) {
                runner.client().publish(reply, r#"{"ok": true, "message": "drained"}"#.into()).await.unwrap();
            }
        }
    });
    let hook = HookGate { subject: "tern.hooks.restart".into(), timeout: secs(5), retries: Some(1) };
    let s = db_then_web(&r, GateStep { kind: Some(gate_step::Kind::Hook(hook)), ..Default::default() });
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let first = heard.clone();
    tern_testkit::wait_for("the hook's first try", DEADLINE, || {
        let n = first.lock().unwrap().len();
        async move { (n >= 1).then_some(()) }
    })
    .await
    .unwrap();
    // The planner stops while its try waits for an answer; another starts.
    r.planner_stop.cancel();
    r.planner_stop = r.stop.child_token();
    r.grpc = start_planner_watching(&r.stack, r.planner_stop.clone(), watchdog).await;

    let done = finished(&mut r, &plan_id).await;
    assert_eq!(done.state(), PlanState::Completed, "{done:#?}");
    assert_eq!((done.gates[0].state(), done.gates[0].reason.as_str()), (GateState::Passed, "drained"));
    let heard = heard.lock().unwrap();
    let tries: Vec<_> = heard.iter().map(|(_, r)| r["try"].as_u64()).collect();
    assert_eq!(tries, [Some(1), Some(2)], "{heard:?}");
    assert_eq!(heard[0].1["hook_id"], heard[1].1["hook_id"], "the same attempt");
    // Sent by the new planner once the lost try's claim (its timeout and 5 s: 10 s) ran out, not
    // by the old one after its timeout and back-off (7 s).
    let gap = heard[1].0 - heard[0].0;
    assert!(gap >= Duration::from_secs(9), "the second try came {gap:?} after the first");
}

/// A `wait` gate passes by itself once its time is up (the watchdog's round moves it).
#[tokio::test]
async fn a_wait_gate_passes_after_its_duration() {
    use tern_proto::{GateState, GateStep, WaitGate, gate_step};
    let mut r = start_watching(ready_for_failback(2), true, Duration::from_millis(200)).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002"]);
    let pause = GateStep { kind: Some(gate_step::Kind::Wait(WaitGate { duration: secs(1) })), ..Default::default() };
    s.waves = vec![
        Wave { name: "db".into(), vm_names: vec!["vm-00001".into()], after: vec![pause.clone()], ..Default::default() },
        Wave { name: "web".into(), vm_names: vec!["vm-00002".into()], before: vec![pause], ..Default::default() },
    ];
    let plan_id =
        r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner().plan.unwrap().plan_id;
    let done = finished(&mut r, &plan_id).await;
    assert_eq!(done.state(), PlanState::Completed, "{done:#?}");
    assert_eq!(done.gates.len(), 2, "{:#?}", done.gates);
    for g in &done.gates {
        assert_eq!(g.state(), GateState::Passed);
        let (a, b) = (g.started_at.unwrap(), g.ended_at.unwrap());
        let took = (b.seconds - a.seconds) * 1000 + i64::from((b.nanos - a.nanos) / 1_000_000);
        assert!(took >= 1000, "a wait lasts at least its duration: {took} ms");
    }
    assert!(done.gates[0].after && !done.gates[1].after, "db's after step, then web's before step");
}

/// Sets the simulator's vCPU quota of `family` in `region` (its `/_sim/capacity` control).
async fn set_quota(stack: &Stack, region: &str, family: &str, limit: i64) {
    let body = serde_json::json!({"quotas": [{"region": region, "family": family, "limit": limit}]});
    let url = format!("{}/_sim/capacity", stack.sim.info().url);
    let put = reqwest::Client::new().put(url).json(&body).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
}

#[tokio::test]
async fn a_quota_too_low_blocks_exactly_the_vms_that_would_not_fit_and_raising_it_lets_the_plan_pass() {
    let mut r = start(ready_for_failback(3), true).await;
    let asr = r.stack.asr_client();
    let sub = asr.config().subscription_id.clone();
    let items = asr.list_items(None, None).await.unwrap();
    let region = tern_planner::preflight::CapacityNeed::of(&items[0], &sub).region;
    let in_use = |usages: &[tern_asr::model::Usage]| {
        usages.iter().find(|u| u.name.value == "standardDSv3Family").map(|u| u.current_value).unwrap()
    };
    let before = in_use(&asr.usages(&sub, &region).await.unwrap());
    // Room for two of the three Standard_D2s_v3 (2 vCPUs each) in the region they fail back to.
    let limit = before + 4;
    set_quota(&r.stack, &region, "standardDSv3Family", limit).await;
    let vms = ["vm-00001", "vm-00002", "vm-00003"];
    let pre = r.grpc.preflight(PreflightRequest { spec: Some(spec(&r, &vms)) }).await.unwrap().into_inner();
    let capacity = |name: &str| {
        let v = pre.vms.iter().find(|v| v.vm.as_ref().unwrap().name == name).unwrap();
        let c = v.checks.iter().find(|c| c.name == "capacity").unwrap_or_else(|| panic!("{name}: {:?}", v.checks));
        (v.readiness(), c.result(), c.detail.clone())
    };
    for fits in ["vm-00001", "vm-00002"] {
        let (_, result, detail) = capacity(fits);
        assert_eq!(result, Readiness::Ready, "{fits}: {detail}");
    }
    let (verdict, result, detail) = capacity("vm-00003");
    assert_eq!((verdict, result), (Readiness::Blocked, Readiness::Blocked), "{detail}");
    let wanted = format!(
        "needs 2 vCPUs of standardDSv3Family in {region}: 0 of quota {limit} free ({before} in use, 4 claimed by VMs before it in this plan)"
    );
    assert_eq!(detail, wanted);
    let refused = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(spec(&r, &vms)) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("vm-00003") && !refused.message().contains("vm-00001"), "{}", refused.message());

    // Raised: the same plan passes and runs to the end.
    set_quota(&r.stack, &region, "standardDSv3Family", before + 6).await;
    let plan_id = r
        .grpc
        .submit_plan(SubmitPlanRequest { spec: Some(spec(&r, &vms)) })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap()
        .plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(plan.state(), PlanState::Completed, "{:?}", plan.vms);
    assert!(plan.vms.iter().all(|v| v.state() == VmState::Succeeded));
}
