//! Preflight against the ASR simulator: every verdict, with its reason.

use tern_asr::point::PointChoice;
use tern_asr_sim::SeedState;
use tern_planner::preflight::{PreflightOptions, preflight_vm};
use tern_proto::{Readiness, VmPreflight};
use tern_testkit::stack::ready_for_failback;

fn client(sim: &tern_asr_sim::RunningSimulator) -> tern_asr::AsrClient {
    let info = sim.info();
    let config = tern_asr::AsrConfig {
        endpoint: info.url.clone(),
        subscription_id: info.subscription_id.clone(),
        resource_group: info.resource_group.clone(),
        vault: info.vault.clone(),
        ..tern_asr::AsrConfig::default()
    };
    tern_asr::AsrClient::new(
        config,
        tern_asr::TokenProvider::static_token("t"),
        std::sync::Arc::new(tern_asr::Unlimited),
    )
    .unwrap()
}

fn verdict(p: &VmPreflight) -> Readiness {
    Readiness::try_from(p.readiness).unwrap()
}

fn detail<'a>(p: &'a VmPreflight, name: &str) -> (Readiness, &'a str) {
    let c = p.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} check"));
    (Readiness::try_from(c.result).unwrap(), c.detail.as_str())
}

#[tokio::test]
async fn preflight_tells_ready_warned_and_blocked_vms_apart_with_reasons() {
    let mut config = ready_for_failback(6);
    config.estate.unhealthy_every = 3; // vm-00003, vm-00006
    config.estate.syncing_every = 4; // vm-00004
    config.estate.late_disk_every = 5; // vm-00005
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(config)).await.unwrap();
    let asr = client(&sim);
    let now = time::OffsetDateTime::now_utc();
    let item = |vm: &'static str| {
        let asr = asr.clone();
        async move { asr.list_items(None, Some(&format!("friendlyName eq '{vm}'"))).await.unwrap().remove(0) }
    };
    let opts = PreflightOptions::default();

    let ready = preflight_vm(&asr, &item("vm-00001").await, &opts, None, now).await;
    assert_eq!(verdict(&ready), Readiness::Warning, "ready but never drilled: {:#?}", ready.checks);
    assert_eq!(detail(&ready, "last-drill").0, Readiness::Warning);
    assert!(
        ready.checks.iter().filter(|c| c.name != "last-drill").all(|c| c.result == Readiness::Ready as i32),
        "{:#?}",
        ready.checks
    );
    let point = ready.recovery_point.as_ref().unwrap();
    assert_eq!((point.disks_covered, point.disks_total), (2, 2));
    assert!(
        ready.reprotect_target.as_ref().unwrap().resource_group_id.ends_with("/resourceGroups/rg-app-asr"),
        "the VM returns where it runs now"
    );
    assert!(!ready.resources_to_create.is_empty());

    let unhealthy = preflight_vm(&asr, &item("vm-00003").await, &opts, None, now).await;
    assert_eq!(verdict(&unhealthy), Readiness::Blocked);
    let (r, why) = detail(&unhealthy, "replication-health");
    assert!(r == Readiness::Blocked && why.contains("151037"), "{why}");

    let syncing = preflight_vm(&asr, &item("vm-00004").await, &opts, None, now).await;
    assert_eq!(verdict(&syncing), Readiness::Blocked);
    assert_eq!(detail(&syncing, "sync").0, Readiness::Blocked);

    let locked = preflight_vm(&asr, &item("vm-00002").await, &opts, Some("plan-7"), now).await;
    assert_eq!(detail(&locked, "vm-lock"), (Readiness::Blocked, "in active plan plan-7"));

    // A point from before vm-00005's data disk was added covers 1 of 2 disks.
    let late = item("vm-00005").await;
    let points = asr.recovery_points(&late.id).await.unwrap();
    let old = PreflightOptions {
        point: PointChoice::Custom(points.last().unwrap().id.clone()),
        ..PreflightOptions::default()
    };
    let partial = preflight_vm(&asr, &late, &old, None, now).await;
    let (r, why) = detail(&partial, "recovery-point");
    assert!(r == Readiness::Warning && why.contains("1 of 2 disks"), "{why}");
}

#[tokio::test]
async fn a_vm_that_never_left_home_has_nothing_to_fail_back() {
    let mut config = ready_for_failback(1);
    config.estate.state = SeedState::Protected;
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(config)).await.unwrap();
    let asr = client(&sim);
    let item = asr.list_items(None, None).await.unwrap().remove(0);
    let p = preflight_vm(&asr, &item, &PreflightOptions::default(), None, time::OffsetDateTime::now_utc()).await;
    let (r, why) = detail(&p, "direction");
    assert!(r == Readiness::Blocked && why.contains("never failed over"), "{why}");
}
