//! The A2A lifecycle through the simulator's HTTP API: state and allowed operations at each
//! step of failover → commit → reprotect → failback → commit → reprotect, recovery points,
//! refusals of illegal operations, and paging at scale.

mod support;

use serde_json::{Value, json};
use support::*;
use tern_asr_sim::{SeedState, SimConfig};

/// Realistic job durations, driven by jumping the simulated clock.
fn realistic(vms: usize, state: SeedState) -> SimConfig {
    let mut c = SimConfig::default();
    c.estate.vms = vms;
    c.estate.state = state;
    c.throttle.enabled = false;
    c
}

/// One protected VM whose failover takes exactly `secs` simulated seconds from its acceptance.
fn timed_failover(secs: f64) -> SimConfig {
    let mut c = realistic(1, SeedState::Protected);
    let fixed = |secs| tern_asr_sim::Span { min_secs: secs, max_secs: secs };
    c.durations.failover = fixed(secs);
    c.durations.queueing = fixed(0.0);
    c.durations.latest_processing = fixed(0.0);
    c
}

async fn vm_power(sim: &Sim, rg: &str, vm: &str) -> Option<String> {
    let r = sim
        .get(&format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/instanceView",
            sim.running.info().subscription_id
        ))
        .await;
    if r.status == 404 {
        return None;
    }
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["statuses"][1]["code"].as_str().map(|s| s.trim_start_matches("PowerState/").to_owned())
}

async fn finish(sim: &Sim, accepted: &Reply) -> Value {
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    sim.advance(4000.0).await;
    let job = sim.job_of(accepted).await;
    assert_eq!(props(&job, "state"), "Succeeded", "{job:#}");
    job
}

#[tokio::test]
async fn a_vm_goes_through_failover_commit_reprotect_failback_commit_reprotect() {
    let sim = Sim::start(realistic(2, SeedState::Protected)).await;
    let mut item = sim.item("vm-00001").await;
    let lifecycle = props(&item, "providerSpecificDetails")["lifecycleId"].clone();
    let first_home = container_of(item["id"].as_str().unwrap());
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert!(first_home.ends_with("asr-a2a-default-eastus-container"), "{first_home}");
    assert_eq!(allowed(&item), ["UnplannedFailover", "TestFailover", "DisableProtection"]);
    assert_eq!(vm_power(&sim, "rg-app", "vm-00001").await.as_deref(), Some("running"));
    assert_eq!(vm_power(&sim, "rg-app-asr", "vm-00001").await, None);

    // 1. Failover to the secondary region, to "latest" (pending data processed first), shutting the source down.
    let id = item["id"].as_str().unwrap().to_owned();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", true, None))).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    assert!(accepted.header("location").unwrap().contains("/operationresults/"));
    assert!(accepted.header("azure-asyncoperation").unwrap().contains("/replicationOperationStatus/"));
    assert_eq!(accepted.header("retry-after"), Some("30"));
    let job = sim.job_of(&accepted).await;
    assert!(matches!(props(&job, "state").as_str(), Some("NotStarted" | "InProgress")), "{job:#}");
    item = sim.item("vm-00001").await;
    assert_eq!(props(&item, "currentScenario")["scenarioName"], "None", "the item lags behind its 202");
    sim.advance(30.0).await; // past the item's scenario lag
    item = sim.item("vm-00001").await;
    assert_eq!(props(&item, "currentScenario")["scenarioName"], "UnplannedFailover");
    assert_eq!(props(&item, "currentScenario")["jobId"], json!(accepted.header("x-ms-request-id").unwrap()));
    assert!(allowed(&item).is_empty(), "nothing else may start while the failover runs");
    let location = sim.get(accepted.header("location").unwrap()).await;
    assert_eq!(location.status, 202, "the Location URL answers 202 while the job runs");
    sim.advance(60.0).await;
    let job = sim.job_of(&accepted).await;
    assert_eq!(props(&job, "state"), "InProgress");
    let tasks = props(&job, "tasks").as_array().unwrap().clone();
    assert!(
        tasks.iter().any(|t| t["state"] == "Succeeded") && tasks.iter().any(|t| t["state"] != "Succeeded"),
        "tasks advance one by one: {tasks:#?}"
    );

    let job = finish(&sim, &accepted).await;
    assert!(props(&job, "tasks").as_array().unwrap().iter().all(|t| t["state"] == "Succeeded"), "{job:#}");
    assert_eq!(props(&job, "customDetails")["instanceType"], "FailoverJobDetails");
    item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("UnplannedFailoverCommitPendingStatesBegin".into(), "Recovery".into()));
    assert_eq!(allowed(&item), ["Commit", "ChangePit", "CancelFailover", "DisableProtection"]);
    assert_eq!(vm_power(&sim, "rg-app-asr", "vm-00001").await.as_deref(), Some("running"));
    assert_eq!(
        vm_power(&sim, "rg-app", "vm-00001").await.as_deref(),
        Some("deallocated"),
        "the source was shut down first"
    );
    let final_result = sim.get(accepted.header("location").unwrap()).await;
    assert_eq!(final_result.status, 200);
    assert_eq!(final_result.body["name"], "vm-00001", "the Location URL finally answers with the item");

    // 2. Commit: recovery points are discarded.
    let points = sim.get(&format!("{id}/recoveryPoints")).await;
    assert!(!points.body["value"].as_array().unwrap().is_empty());
    finish(&sim, &sim.post(&format!("{id}/failoverCommit"), None).await).await;
    item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("UnplannedFailoverCommitted".into(), "Recovery".into()));
    assert_eq!(allowed(&item), ["CompleteMigration", "DisableProtection", "SwitchProtection"]);
    assert!(sim.get(&format!("{id}/recoveryPoints")).await.body["value"].as_array().unwrap().is_empty());

    // 3. Reprotect (switch protection) secondary -> primary: the item is re-homed under a new id.
    let accepted = sim.post(&format!("{first_home}/switchprotection"), Some(sim.switch_body(&item))).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    sim.advance(200.0).await;
    let job = sim.job_of(&accepted).await;
    assert_eq!(props(&job, "scenarioName"), "SwitchReplicationGroupProtection");
    assert_eq!(props(&job, "state"), "InProgress");
    let new_id = props(&job, "customDetails")["newReplicationProtectedItemId"]
        .as_str()
        .expect("new id known once re-homed")
        .to_owned();
    assert!(new_id.contains("asr-a2a-default-westus-container"), "{new_id}");
    assert_eq!(sim.get(&id).await.status, 404, "the old id is gone");
    let syncing = sim.get(&new_id).await.body;
    assert_eq!(props(&syncing, "protectionState"), "EnablingProtection");
    let disk = &props(&syncing, "providerSpecificDetails")["protectedManagedDisks"][0];
    assert_eq!(disk["diskState"], "InitialReplicationPending");
    let pct = disk["monitoringPercentageCompletion"].as_i64().unwrap();
    assert!((0..100).contains(&pct), "sync progress is reported per disk: {pct}");
    assert_eq!(props(&syncing, "providerSpecificDetails")["lifecycleId"], lifecycle, "lifecycleId is stable");
    finish(&sim, &accepted).await;
    let container = sim.get(accepted.header("location").unwrap()).await;
    assert_eq!(container.status, 200);
    assert!(
        container.body["name"].as_str().unwrap().contains("westus"),
        "switch protection ends with the container the item lives in now"
    );
    item = sim.get(&new_id).await.body;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()));
    assert_eq!(vm_power(&sim, "rg-app", "vm-00001").await, None, "reprotect removed the VM left in the old region");

    // 4. Failback to the primary region from the latest processed point (no pending-data step).
    sim.advance(900.0).await; // let recovery points accumulate after the reprotect
    let points = sim.get(&format!("{new_id}/recoveryPoints")).await.body;
    let point = points["value"][0]["id"].as_str().expect("points exist again after reprotect").to_owned();
    let accepted = sim
        .post(&format!("{new_id}/unplannedFailover"), Some(failover_body("RecoveryToPrimary", true, Some(&point))))
        .await;
    let job = finish(&sim, &accepted).await;
    let process = props(&job, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == "PrepareForUnPlannedFailoverTask")
        .unwrap()
        .clone();
    assert_eq!(process["stateDescription"], "Skipped", "a named point needs no processing");
    let point_name = point.rsplit('/').next().unwrap();
    assert_eq!(
        props(&job, "customDetails")["protectedItemDetails"][0]["recoveryPointId"],
        json!(point_name),
        "jobs name the point, as ASR does"
    );
    item = sim.get(&new_id).await.body;
    assert_eq!(state(&item), ("UnplannedFailoverCommitPendingStatesBegin".into(), "Recovery".into()));
    assert_eq!(props(&item, "failoverRecoveryPointId"), &json!(point));
    assert_eq!(vm_power(&sim, "rg-app", "vm-00001").await.as_deref(), Some("running"));

    // 5. Commit and 6. reprotect primary -> secondary again: back where it started.
    finish(&sim, &sim.post(&format!("{new_id}/failoverCommit"), None).await).await;
    item = sim.get(&new_id).await.body;
    assert_eq!(state(&item), ("UnplannedFailoverCommitted".into(), "Recovery".into()));
    let accepted = sim.post(&format!("{}/switchprotection", container_of(&new_id)), Some(sim.switch_body(&item))).await;
    finish(&sim, &accepted).await;
    item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert_eq!(container_of(item["id"].as_str().unwrap()), first_home);
    assert_eq!(props(&item, "providerSpecificDetails")["lifecycleId"], lifecycle);
    assert_eq!(vm_power(&sim, "rg-app", "vm-00001").await.as_deref(), Some("running"));
    assert_eq!(vm_power(&sim, "rg-app-asr", "vm-00001").await, None, "the secondary copy was cleaned by reprotect");

    // The other VM was never touched.
    assert_eq!(state(&sim.item("vm-00002").await), ("Protected".into(), "Primary".into()));
    let ops: Vec<String> = sim.oplog().await.iter().map(|e| e["operation"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        ops,
        [
            "unplannedFailover",
            "failoverCommit",
            "switchProtection",
            "unplannedFailover",
            "failoverCommit",
            "switchProtection"
        ]
    );
}

#[tokio::test]
async fn illegal_operations_are_refused_with_asr_errors_and_change_nothing() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.zero_latency = false;
    config.estate.recovery_plan_size = 2;
    let sim = Sim::start(config).await;
    let item = sim.item("vm-00001").await;
    let id = item["id"].as_str().unwrap().to_owned();

    let commit = sim.post(&format!("{id}/failoverCommit"), None).await;
    assert_eq!((commit.status, commit.error_code().as_str()), (400, "OperationNotAllowedInCurrentState"));
    assert!(
        commit.error_message().contains("UnplannedFailover"),
        "the message lists what is allowed: {}",
        commit.error_message()
    );
    let switch = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&item))).await;
    assert_eq!(switch.status, 400, "reprotect needs a committed failover");

    let bad_point = sim
        .post(
            &format!("{id}/unplannedFailover"),
            Some(failover_body("PrimaryToRecovery", false, Some(&format!("{id}/recoveryPoints/nope")))),
        )
        .await;
    assert_eq!((bad_point.status, bad_point.error_code().as_str()), (400, "RecoveryPointNotFound"));
    let bad_direction =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("Sideways", false, None))).await;
    assert_eq!(bad_direction.status, 400);
    assert!(
        bad_direction.error_message().contains("properties.failoverDirection"),
        "{}",
        bad_direction.error_message()
    );
    let garbage = sim
        .http
        .post(format!("{}{id}/unplannedFailover?{API}", sim.url()))
        .bearer_auth("t")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(garbage.text().await.unwrap().contains("InvalidRequestContent"));

    let unknown_fabric = sim.get(&format!("{}/replicationFabrics/nowhere", sim.vault())).await;
    assert_eq!(
        (unknown_fabric.status, unknown_fabric.error_code().as_str()),
        (400, "SubscriptionIdNotRegisteredWithSrs")
    );
    let unknown_item = sim.get(&format!("{}/replicationProtectedItems/ghost", container_of(&id))).await;
    assert_eq!(unknown_item.status, 404);
    let unknown_action = sim.post(&format!("{id}/explode"), None).await;
    assert_eq!(unknown_action.status, 404);

    let anonymous = sim.http.get(format!("{}{id}?{API}", sim.url())).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let no_version = sim.http.get(format!("{}{id}", sim.url())).bearer_auth("t").send().await.unwrap();
    assert_eq!(no_version.status(), 400);
    assert!(no_version.text().await.unwrap().contains("MissingApiVersionParameter"));

    let plans = sim.get(&format!("{}/replicationRecoveryPlans", sim.vault())).await;
    let plan = plans.body["value"][0]["id"].as_str().unwrap().to_owned();
    let plan_reprotect = sim.post(&format!("{plan}/reProtect"), None).await;
    assert_eq!(
        (plan_reprotect.status, plan_reprotect.error_code().as_str()),
        (400, "UnsupportedReplicationProviderForReprotect")
    );

    // A second operation while one runs.
    let first =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(first.status, 202);
    let second = sim.post(&format!("{id}/testFailover"), Some(json!({"properties": {"failoverDirection": "PrimaryToRecovery", "networkType": "NoNetworkAttachAsInput"}}))).await;
    assert_eq!((second.status, second.error_code().as_str()), (409, "AnotherOperationInProgress"));

    // Nothing but the one accepted failover changed anything.
    assert_eq!(state(&sim.item("vm-00002").await), ("Protected".into(), "Primary".into()));
    let accepted: Vec<Value> = sim.oplog().await.into_iter().filter(|e| e["status"] == 202).collect();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    let counters = sim.admin("counters").await;
    assert_eq!(counters["estate"]["jobs_started"], json!({"unplannedFailover": 1}));
}

#[tokio::test]
async fn recovery_points_follow_the_policy_and_cover_only_disks_present_when_taken() {
    let mut config = quick(1, SeedState::ReadyForFailback);
    config.estate.late_disk_every = 1;
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let points = sim.get(&format!("{id}/recoveryPoints")).await.body["value"].as_array().unwrap().clone();
    assert!(points.len() > 250, "24 hours of 5-minute points: {}", points.len());
    let covered = |p: &Value| p["properties"]["providerSpecificDetails"]["disks"].as_array().unwrap().len();
    assert_eq!(covered(&points[0]), 2, "the newest point covers both disks");
    assert_eq!(covered(points.last().unwrap()), 1, "a point from before the data disk was added covers 1 of 2 disks");
    let app_consistent =
        points.iter().filter(|p| p["properties"]["recoveryPointType"] == "ApplicationConsistent").count();
    assert!(
        (points.len() / 12).abs_diff(app_consistent) <= 1,
        "one app-consistent point an hour: {app_consistent} of {}",
        points.len()
    );
    let one = sim.get(points[3]["id"].as_str().unwrap()).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, points[3]);

    // "Latest" processes pending data first: a newer point than the latest processed one.
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    let job = sim.job_of(&accepted).await;
    let used = &props(&job, "customDetails")["protectedItemDetails"][0];
    assert!(
        used["recoveryPointTime"].as_str().unwrap() > points[0]["properties"]["recoveryPointTime"].as_str().unwrap()
    );
    let process = props(&job, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == "PrepareForUnPlannedFailoverTask")
        .unwrap()
        .clone();
    assert_eq!(
        (process["name"].as_str(), process["state"].as_str()),
        (Some("VmPrepareForUnPlannedFailover"), Some("Succeeded"))
    );
}

#[tokio::test]
async fn lists_page_with_next_links_and_filter() {
    let mut config = quick(250, SeedState::ReadyForFailback);
    config.page_size = 100;
    let sim = Sim::start(config).await;
    let mut url = format!("{}/replicationProtectedItems", sim.vault());
    let mut names = Vec::new();
    loop {
        let page = sim.get(&url).await;
        assert_eq!(page.status, 200);
        names.extend(page.body["value"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()));
        match page.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("/Subscriptions/") && next.contains("api-version=2025-08-01"), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(names.len(), 250);
    names.dedup();
    assert_eq!(names.len(), 250, "no item twice across pages");

    // Only the spec's ProtectedItemsQueryParameter fields filter; any other is refused by name.
    let by_fabric = sim
        .get(&format!(
            "{}/replicationProtectedItems?$filter=sourceFabricName%20eq%20'asr-a2a-default-westus'%20and%20instanceType%20eq%20'A2A'",
            sim.vault()
        ))
        .await;
    assert_eq!(by_fabric.status, 200, "{:?}", by_fabric.body);
    assert_eq!(by_fabric.body["value"].as_array().unwrap().len(), 100, "first page of the 250 in westus");
    let elsewhere = sim
        .get(&format!("{}/replicationProtectedItems?$filter=sourceFabricLocation%20eq%20'eastus'", sim.vault()))
        .await;
    assert!(elsewhere.body["value"].as_array().unwrap().is_empty());
    let vmware = sim.get(&format!("{}/replicationProtectedItems?$filter=vCenterName%20eq%20'vc1'", sim.vault())).await;
    assert!(vmware.body["value"].as_array().unwrap().is_empty(), "no A2A item has a vCenter");
    for field in ["friendlyName", "protectionState", "replicationHealth", "activeLocation", "lifecycleId", "color"] {
        let bad = sim.get(&format!("{}/replicationProtectedItems?$filter={field}%20eq%20'x'", sim.vault())).await;
        assert_eq!(bad.status, 400, "{field}: {:?}", bad.body);
        assert!(bad.error_message().contains(field), "{field}: {}", bad.error_message());
    }

    let container = container_of(sim.item("vm-00001").await["id"].as_str().unwrap());
    let in_container = sim.get(&format!("{container}/replicationProtectedItems")).await;
    assert_eq!(in_container.body["value"].as_array().unwrap().len(), 100);
    assert!(in_container.body["nextLink"].is_string());
}

#[tokio::test]
async fn jobs_list_filters_by_state() {
    let mut config = quick(3, SeedState::ReadyForFailback);
    config.zero_latency = false;
    let sim = Sim::start(config).await;
    for vm in ["vm-00001", "vm-00002"] {
        let id = sim.item(vm).await["id"].as_str().unwrap().to_owned();
        assert_eq!(
            sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None)))
                .await
                .status,
            202
        );
    }
    let running =
        sim.get(&format!("{}/replicationJobs?$filter=jobStatus%20eq%20'InProgress,NotStarted'", sim.vault())).await;
    assert!(running.body["value"].as_array().unwrap().is_empty(), "placeholders are absent from lists");
    sim.advance(10.0).await; // past the placeholder window
    let running =
        sim.get(&format!("{}/replicationJobs?$filter=jobStatus%20eq%20'InProgress,NotStarted'", sim.vault())).await;
    assert_eq!(running.body["value"].as_array().unwrap().len(), 2);
    sim.advance(4000.0).await;
    let running = sim.get(&format!("{}/replicationJobs?$filter=jobStatus%20eq%20'InProgress'", sim.vault())).await;
    assert!(running.body["value"].as_array().unwrap().is_empty());
    let done = sim.get(&format!("{}/replicationJobs?$filter=jobStatus%20eq%20'Succeeded'", sim.vault())).await;
    assert_eq!(done.body["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn twenty_thousand_items_are_served() {
    let sim = Sim::start(quick(20_000, SeedState::ReadyForFailback)).await;
    let counters = sim.admin("counters").await;
    assert_eq!(counters["estate"]["items"], 20_000);
    let item = sim.item("vm-19999").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    let id = item["id"].as_str().unwrap();
    assert_eq!(
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None)))
            .await
            .status,
        202
    );
    assert_eq!(state(&sim.item("vm-19999").await).1, "Recovery");
}

#[tokio::test]
async fn recovery_plans_fail_over_their_items_and_refuse_a2a_reprotect() {
    let mut config = quick(6, SeedState::ReadyForFailback);
    config.estate.recovery_plan_size = 6;
    let sim = Sim::start(config).await;
    let plans = sim.get(&format!("{}/replicationRecoveryPlans", sim.vault())).await.body;
    let plan = plans["value"][0].clone();
    let groups = props(&plan, "groups").as_array().unwrap().clone();
    let kinds: Vec<&str> = groups.iter().map(|g| g["groupType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Shutdown", "Failover", "Boot", "Boot", "Boot"]);
    let plan_id = plan["id"].as_str().unwrap().to_owned();
    let in_plan = sim
        .get(&format!(
            "{}/replicationProtectedItems?$filter=RecoveryPlanName%20eq%20'{}'",
            sim.vault(),
            plan["name"].as_str().unwrap()
        ))
        .await;
    assert_eq!(in_plan.body["value"].as_array().unwrap().len(), 6);

    // Test failover and its cleanup through the plan.
    let tfo = sim.post(&format!("{plan_id}/testFailover"), Some(json!({"properties": {"failoverDirection": "RecoveryToPrimary", "networkType": "VmNetworkAsInput", "networkId": "/subscriptions/s/resourceGroups/rg-app/providers/Microsoft.Network/virtualNetworks/isolated"}}))).await;
    assert_eq!(props(&sim.job_of(&tfo).await, "state"), "Succeeded");
    let item = sim.item("vm-00004").await;
    assert_eq!(props(&item, "testFailoverState"), "WaitingForCompletion");
    assert_eq!(allowed(&item), ["TestFailoverCleanup"]);
    let cleanup = sim
        .post(&format!("{plan_id}/testFailoverCleanup"), Some(json!({"properties": {"comments": "drill done"}})))
        .await;
    assert_eq!(props(&sim.job_of(&cleanup).await, "state"), "Succeeded");
    assert_eq!(props(&sim.item("vm-00004").await, "testFailoverState"), "None");

    // Failback through the plan: its fabrics are fixed, so failback is RecoveryToPrimary.
    let failover = sim.post(&format!("{plan_id}/unplannedFailover"), Some(json!({"properties": {"failoverDirection": "RecoveryToPrimary", "sourceSiteOperations": "Required", "providerSpecificDetails": [{"instanceType": "A2A", "recoveryPointType": "LatestProcessed"}]}}))).await;
    assert_eq!(failover.status, 202, "{:?}", failover.body);
    let job = sim.job_of(&failover).await;
    assert_eq!(
        (props(&job, "state").as_str(), props(&job, "targetInstanceType").as_str()),
        (Some("Succeeded"), Some("RecoveryPlan"))
    );
    for n in 1..=6 {
        assert_eq!(state(&sim.item(&format!("vm-{n:05}")).await).1, "Recovery");
    }
    let commit = sim.post(&format!("{plan_id}/failoverCommit"), None).await;
    assert_eq!(props(&sim.job_of(&commit).await, "state"), "Succeeded");
    assert_eq!(state(&sim.item("vm-00006").await).0, "UnplannedFailoverCommitted");
    let bad = sim.post(&format!("{plan_id}/unplannedFailover"), Some(json!({"properties": {"failoverDirection": "RecoveryToPrimary", "providerSpecificDetails": [{"instanceType": "A2A", "recoveryPointType": "Yesterday"}]}}))).await;
    assert_eq!(bad.status, 400);
    assert!(bad.error_message().contains("recoveryPointType"));
}

#[tokio::test]
async fn the_admin_api_seeds_and_resets_the_estate() {
    let sim = Sim::start(quick(2, SeedState::ReadyForFailback)).await;
    let added = sim
        .http
        .post(format!("{}/_sim/seed", sim.url()))
        .json(&json!({"vms": 3, "state": "protected", "name_prefix": "db"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.json::<Value>().await.unwrap()["items"], 5);
    assert_eq!(state(&sim.item("db-00005").await), ("Protected".into(), "Primary".into()));
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(sim.oplog().await.len(), 1);
    let bad = sim
        .http
        .post(format!("{}/_sim/seed", sim.url()))
        .json(&json!({"vms": 1, "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let reset = sim.http.post(format!("{}/_sim/reset", sim.url())).send().await.unwrap();
    assert_eq!(reset.json::<Value>().await.unwrap()["items"], 2);
    assert!(sim.oplog().await.is_empty());
    assert_eq!(state(&sim.item("vm-00001").await).1, "Primary", "reset restores the seeded estate");
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn the_jobs_endpoint_tells_when_each_job_ended_and_was_first_seen_ended_in_wall_time() {
    // A 60-second failover at 600x compression ends 100 ms of real time after it is accepted.
    let mut config = timed_failover(60.0);
    config.time_compression = 600.0;
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let before = unix_ms_now();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let jobs = sim.admin("jobs").await;
    let job = &jobs[0];
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs:#}");
    assert_eq!(job["operation"], "unplannedFailover");
    assert_eq!(job["target"], "vm-00001");
    assert_eq!(job["name"].as_str(), accepted.header("x-ms-request-id").unwrap().rsplit('/').next());
    let (created, completed) = (job["created_unix_ms"].as_i64().unwrap(), job["completed_unix_ms"].as_i64().unwrap());
    assert!((before - 5..=unix_ms_now() + 5).contains(&created), "accepted now: {created} vs {before}");
    assert!((80..=120).contains(&(completed - created)), "60 simulated s at 600x: {} ms", completed - created);
    assert_eq!(job["first_terminal_read_unix_ms"], Value::Null, "nobody has seen it end");

    // Once it has ended, the admin API does not count as seeing it; a client's GET does.
    while unix_ms_now() <= completed + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(sim.admin("jobs").await[0]["first_terminal_read_unix_ms"], Value::Null);
    assert_eq!(props(&sim.job_of(&accepted).await, "state"), "Succeeded");
    let seen = sim.admin("jobs").await[0]["first_terminal_read_unix_ms"].as_i64().expect("seen once read");
    assert!(seen >= completed && seen <= unix_ms_now(), "{seen} vs {completed}");
    sim.job_of(&accepted).await;
    assert_eq!(sim.admin("jobs").await[0]["first_terminal_read_unix_ms"], seen, "the first read counts, not the last");
    let by = sim.admin("jobs").await[0]["first_terminal_read_by"].clone();
    let by = by.as_object().expect("per client");
    assert!(by.len() == 1 && by.values().all(|t| *t == seen), "one client, who saw it first: {by:?}");
    assert_eq!(sim.admin("jobs").await[0]["state"], "Succeeded");
}

#[tokio::test]
async fn every_read_that_answers_a_job_ended_counts_as_its_client_seeing_it_end() {
    let sim = Sim::start(timed_failover(600.0)).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let location = accepted.header("location").unwrap().to_owned();
    let status = accepted.header("azure-asyncoperation").unwrap().to_owned();
    let list = format!("{}/replicationJobs", sim.vault());
    let seen_by = |jobs: &Value, i: usize| -> Vec<String> {
        jobs[i]["first_terminal_read_by"].as_object().unwrap().keys().cloned().collect()
    };

    // The Location, the operation status and a job list each tell the job's end to whoever reads
    // them, named by the product token of its User-Agent; reads while it runs do not count.
    assert_eq!(sim.send_as(reqwest::Method::GET, &location, "early/1.0").await, 202, "still running");
    for url in [&status, &list] {
        assert_eq!(sim.send_as(reqwest::Method::GET, url, "early/1.0").await, 200);
    }
    sim.advance(700.0).await;
    let clients = [(&location, "tern-failover/0.1 (linux)"), (&status, "tern-watcher"), (&list, "tern-planner/0.1")];
    for (url, client) in clients {
        assert_eq!(sim.send_as(reqwest::Method::GET, url, client).await, 200);
    }
    assert_eq!(seen_by(&sim.admin("jobs").await, 0), ["tern-failover", "tern-planner", "tern-watcher"]);

    // Cancelling answers the job cancelled: the client that cancelled it has seen it end.
    let commit =
        sim.post(&format!("{}/failoverCommit", sim.item("vm-00001").await["id"].as_str().unwrap()), None).await;
    assert_eq!(commit.status, 202, "{:?}", commit.body);
    let job = commit.header("x-ms-request-id").unwrap().to_owned();
    assert_eq!(sim.send_as(reqwest::Method::POST, &format!("{job}/cancel"), "tern-cleanup").await, 200);
    let jobs = sim.admin("jobs").await;
    assert_eq!(jobs[1]["state"], "Cancelled");
    assert_eq!(seen_by(&jobs, 1), ["tern-cleanup"]);
}

#[tokio::test]
async fn deleting_a_vm_keeps_its_nic_and_a_nic_in_use_cannot_be_deleted() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let sub = sim.running.info().subscription_id.clone();
    let vm =
        format!("/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/virtualMachines/vm-00001");
    let nic = format!(
        "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Network/networkInterfaces/vm-00001-nic"
    );
    let in_use = sim.delete(&nic).await;
    assert_eq!((in_use.status, in_use.error_code().as_str()), (400, "NicInUse"));
    assert_eq!(sim.delete(&vm).await.status, 202);
    assert_eq!(sim.get(&vm).await.status, 404);
    let kept = sim.get(&nic).await;
    assert_eq!(kept.status, 200, "as in Azure, the NIC outlives its VM");
    assert!(kept.body["properties"]["virtualMachine"].is_null());
    assert_eq!(sim.delete(&nic).await.status, 202);
    assert_eq!(sim.get(&nic).await.status, 404);
}
