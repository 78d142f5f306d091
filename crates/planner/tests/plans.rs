//! Plans end to end: the planner and the three workers (in-process, their real runtimes)
//! against a real nats-server and the ASR simulator over HTTP.

use std::sync::Arc;
use std::time::Duration;

use tern_planner::PlannerService;
use tern_proto::planner_client::PlannerClient;
use tern_proto::{
    CleanupOptions, GetPlanRequest, NameList, Plan, PlanSpec, PlanState, PreflightRequest, Readiness,
    RecoveryPointChoice, RecoveryPointKind, Selection, SubmitPlanRequest, Wave, selection,
};
use tern_testkit::stack::{DEADLINE, Stack, ready_for_failback};
use tokio_util::sync::CancellationToken;

struct Running {
    stack: Stack,
    grpc: PlannerClient<tonic::transport::Channel>,
    vault_id: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn worker_config(stack: &Stack) -> tern_worker::WorkerConfig {
    let info = stack.sim.info();
    tern_worker::WorkerConfig {
        nats_url: stack.nats.url(),
        asr: tern_asr::AsrConfig {
            endpoint: info.url.clone(),
            subscription_id: info.subscription_id.clone(),
            resource_group: info.resource_group.clone(),
            vault: info.vault.clone(),
            ..tern_asr::AsrConfig::default()
        },
        asr_token: Some("t".into()),
        budget: None,
        ensure_topology: false,
        lease_secs: 3.0,
        poll_interval_secs: 0.1,
        watcher_reads_per_sec: 100.0,
        drain_timeout_secs: 2.0,
        ..tern_worker::WorkerConfig::default()
    }
}

async fn start(mut config: tern_asr_sim::SimConfig, workers: bool) -> Running {
    config.reprotect_removes_source_vm = false; // leave something for cleanup
    let stack = Stack::start(config).await;
    let stop = CancellationToken::new();
    if workers {
        let handlers: [Arc<dyn tern_worker::PhaseHandler>; 3] = [
            Arc::new(tern_failover::FailoverPhase),
            Arc::new(tern_reprotect::ReprotectPhase),
            Arc::new(tern_cleanup::CleanupPhase),
        ];
        for h in handlers {
            let (config, stop) = (worker_config(&stack), stop.clone());
            tokio::spawn(async move { tern_worker::run_worker(config, h, stop).await });
        }
    }
    let asr = stack.asr_client();
    let vault_id = asr.config().vault_id();
    let service = PlannerService::new(stack.bus.clone(), asr).await.unwrap();
    let (addr, _server) =
        tern_planner::serve_grpc(service.clone(), "127.0.0.1:0".parse().unwrap(), stop.clone()).await.unwrap();
    let progression = stop.clone();
    tokio::spawn(async move { service.run_progression(progression).await });
    let grpc = PlannerClient::connect(format!("http://{addr}")).await.unwrap();
    Running { stack, grpc, vault_id, stop }
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
    tern_testkit::wait_for("the plan to end", DEADLINE, || {
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
    .await
    .unwrap_or_else(|e| {
        let _ = &mut grpc;
        panic!("{e}")
    })
}

#[tokio::test]
async fn a_plan_in_two_waves_fails_back_commits_reprotects_and_cleans_up() {
    let mut r = start(ready_for_failback(6), true).await;
    let mut s = spec(&r, &["vm-00001", "vm-00002", "vm-00003", "vm-00004", "vm-00005", "vm-00006"]);
    s.waves = vec![
        Wave { name: "first".into(), vm_names: vec!["vm-00001".into(), "vm-00002".into(), "vm-00003".into()] },
        Wave { name: "second".into(), vm_names: vec!["vm-00004".into(), "vm-00005".into(), "vm-00006".into()] },
    ];
    let accepted = r.grpc.submit_plan(SubmitPlanRequest { spec: Some(s) }).await.unwrap().into_inner();
    let plan_id = accepted.plan.unwrap().plan_id;
    let plan = finished(&mut r, &plan_id).await;
    assert_eq!(PlanState::try_from(plan.state), Ok(PlanState::Completed), "{plan:#?}");
    assert_eq!(plan.counts.unwrap().succeeded, 6);
    for vm in &plan.vms {
        assert!(vm.recovery_point.is_some() && vm.phase_durations.contains_key("failover"), "{vm:?}");
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
    assert_eq!(ops.iter().filter(|(o, _)| o == "delete").count(), 12, "each VM's leftover VM and NIC: {ops:?}");
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
    assert_eq!(PlanState::try_from(plan.state), Ok(PlanState::CompletedWithErrors));
    let skipped = plan.vms.iter().find(|v| v.vm.as_ref().unwrap().name == "vm-00003").unwrap();
    assert!(skipped.reason.contains("blocked in preflight"), "{}", skipped.reason);
    let _ = Duration::ZERO;
}
