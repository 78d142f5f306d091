//! Preflight against the ASR simulator: every verdict, with its reason.

use std::collections::BTreeMap;
use tern_asr::point::PointChoice;
use tern_asr_sim::SeedState;

use tern_planner::preflight::{CacheAccounts, PreflightOptions, cache_accounts_in_use, preflight_vm};
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

/// The estate's cache storage account of each region, as the simulator names them.
fn advertised(sim: &tern_asr_sim::RunningSimulator) -> BTreeMap<String, String> {
    serde_json::from_value(tern_testkit::stack::cache_accounts(sim.info())).unwrap()
}

/// Preflight options whose cache storage accounts come from `configured`.
fn options(configured: &BTreeMap<String, String>) -> PreflightOptions {
    let subscription = tern_asr_sim::SimConfig::default().subscription_id;
    PreflightOptions {
        cache: CacheAccounts::new(None, configured, &BTreeMap::new(), &subscription),
        ..PreflightOptions::default()
    }
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
        async move { asr.find_item_by_vm_name(vm, None).await.unwrap().unwrap() }
    };
    let opts = options(&advertised(&sim));

    let ready = preflight_vm(&asr, &item("vm-00001").await, &opts, None, now).await;
    assert_eq!(verdict(&ready), Readiness::Warning, "ready but never drilled: {:#?}", ready.checks);
    assert_eq!(detail(&ready, "last-drill").0, Readiness::Warning);
    assert!(
        ready.checks.iter().filter(|c| c.name != "last-drill").all(|c| c.result() == Readiness::Ready),
        "{:#?}",
        ready.checks
    );
    // "Latest processed" is chosen when the failover is sent: preflight lists no points for it.
    let point = ready.recovery_point.as_ref().unwrap();
    assert_eq!((point.id.as_str(), point.disks_total), ("", 0));
    let (r, why) = detail(&ready, "recovery-point");
    assert!(r == Readiness::Ready && why.contains("chosen when the failover is sent"), "{why}");
    let requests: Vec<serde_json::Value> =
        reqwest::get(format!("{}/_sim/requests", sim.url())).await.unwrap().json().await.unwrap();
    let listed = requests.iter().filter(|r| r["path"].as_str().unwrap_or("").contains("/recoveryPoints")).count();
    assert_eq!(listed, 0, "no recovery point list for latest processed");
    let target = ready.reprotect_target.as_ref().unwrap();
    assert!(target.resource_group_id.ends_with("/resourceGroups/rg-app-asr"), "the VM returns where it runs now");
    let (r, why) = detail(&ready, "cache-storage-account");
    assert!(r == Readiness::Ready && why.contains("eastus"), "{why}");
    assert_eq!(target.cache_storage_account_id, advertised(&sim)["eastus"], "reprotect stages in eastus");
    assert!(ready.resources_to_create.is_empty(), "Tern creates nothing");

    let unhealthy = preflight_vm(&asr, &item("vm-00003").await, &opts, None, now).await;
    assert_eq!(verdict(&unhealthy), Readiness::Blocked);
    let (r, why) = detail(&unhealthy, "replication-health");
    assert!(r == Readiness::Blocked && why.contains("151037"), "{why}");

    // vm-00004's reprotect job succeeded and it reads Protected and healthy, but its disks still
    // replicate: it is not ready.
    let syncing_item = item("vm-00004").await;
    assert_eq!(syncing_item.protection_state(), "Protected");
    let syncing = preflight_vm(&asr, &syncing_item, &opts, None, now).await;
    assert_eq!(verdict(&syncing), Readiness::Blocked);
    let (r, why) = detail(&syncing, "sync");
    assert!(r == Readiness::Blocked && why.contains("initial replication has not completed"), "{why}");
    assert!(why.contains("InitialReplicationPending"), "{why}");

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

/// A Protected, healthy item keeps a stale item-level `monitoringPercentageCompletion: 33`
/// ("InitialReplication") after its initial replication finished, as Azure was recorded doing
/// (A2AFailoverCommit-excerpt.json entries 144–145): it is ready.
#[tokio::test]
async fn a_healthy_item_with_a_stale_item_level_figure_is_ready() {
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(ready_for_failback(1))).await.unwrap();
    let asr = client(&sim);
    let item = asr.list_items(None, None).await.unwrap().remove(0);
    let a2a = item.properties.provider_specific_details.as_ref().unwrap();
    assert_eq!(a2a.monitoring_percentage_completion, Some(33), "the recorded stale figure");
    assert_eq!(a2a.monitoring_job_type.as_deref(), Some("InitialReplication"));
    let p = preflight_vm(&asr, &item, &options(&advertised(&sim)), None, time::OffsetDateTime::now_utc()).await;
    assert_eq!(detail(&p, "sync"), (Readiness::Ready, "every disk is Protected"));
    assert_ne!(verdict(&p), Readiness::Blocked, "{:#?}", p.checks);
}

/// Reprotect needs a cache storage account in the region the VM will run in; where none is
/// known, or the one named does not exist there, the VM is blocked with the reason.
#[tokio::test]
async fn the_cache_storage_account_of_the_region_the_vm_lands_in_is_resolved_or_the_vm_blocked() {
    let sim = tern_asr_sim::start(tern_asr_sim::SimOptions::new(ready_for_failback(1))).await.unwrap();
    let asr = client(&sim);
    let item = asr.list_items(None, None).await.unwrap().remove(0);
    let now = time::OffsetDateTime::now_utc();
    let accounts = advertised(&sim);

    // None known: blocked, saying where to name one.
    let p = preflight_vm(&asr, &item, &options(&BTreeMap::new()), None, now).await;
    let (r, why) = detail(&p, "cache-storage-account");
    assert_eq!(r, Readiness::Blocked);
    assert!(why.contains("no cache storage account is known for eastus"), "{why}");
    assert!(why.contains("reprotect_target.cache_storage_accounts.eastus"), "{why}");

    // The westus account named for eastus: it is not in eastus.
    let wrong = BTreeMap::from([("eastus".to_owned(), accounts["westus"].clone())]);
    let p = preflight_vm(&asr, &item, &options(&wrong), None, now).await;
    let (r, why) = detail(&p, "cache-storage-account");
    assert!(r == Readiness::Blocked && why.contains("is in westus, not in eastus"), "{why}");

    // One that does not exist.
    let missing =
        BTreeMap::from([("eastus".to_owned(), accounts["eastus"].replace("eastusasrcache", "nosuchaccount"))]);
    let p = preflight_vm(&asr, &item, &options(&missing), None, now).await;
    let (r, why) = detail(&p, "cache-storage-account");
    assert!(r == Readiness::Blocked && why.contains("does not exist"), "{why}");

    // The vault already replicates from eastus through an account: that one is used.
    reqwest::Client::new()
        .post(format!("{}/_sim/seed", sim.url()))
        .json(&serde_json::json!({"vms": 1, "state": "protected", "name_prefix": "home"}))
        .send()
        .await
        .unwrap();
    let all = asr.list_items(None, None).await.unwrap();
    let in_use = cache_accounts_in_use(&all);
    assert_eq!(in_use.get("eastus"), Some(&accounts["eastus"]), "{in_use:?}");
    let opts = PreflightOptions {
        cache: CacheAccounts::new(None, &BTreeMap::new(), &in_use, &asr.config().subscription_id),
        ..PreflightOptions::default()
    };
    let p = preflight_vm(&asr, &item, &opts, None, now).await;
    let (r, why) = detail(&p, "cache-storage-account");
    assert!(r == Readiness::Ready && why.contains("already used by the vault"), "{why}");

    // A drill reprotects nothing: no account needed.
    let drill = PreflightOptions { drill: true, ..options(&BTreeMap::new()) };
    let p = preflight_vm(&asr, &item, &drill, None, now).await;
    assert!(p.checks.iter().all(|c| c.name != "cache-storage-account"), "{:#?}", p.checks);
}
