//! The simulator answers as stingily as real Azure does (docs/azure-fidelity.md): job lists
//! are summaries, new jobs are placeholders, activity ids carry the client request id, the item
//! lags behind its 202, item-level sync figures go stale, a reprotect job succeeds before the VM
//! is protected, switch protection is validated as PowerShell builds it, disks / public IPs /
//! storage accounts are ARM resources, job tasks carry Azure's ids and names, unknown list
//! filters are refused. Real HTTP; time moves only by jumping the simulated clock.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tern_asr_sim::{SeedState, SimConfig, Span};

fn fixed(secs: f64) -> Span {
    Span { min_secs: secs, max_secs: secs }
}

/// Realistic but fixed durations, so a test can jump to each moment.
fn timed(vms: usize, state: SeedState) -> SimConfig {
    let mut c = SimConfig::default();
    c.estate.vms = vms;
    c.estate.state = state;
    c.throttle.enabled = false;
    c.durations.queueing = fixed(3.0);
    c.durations.failover = fixed(200.0);
    c.durations.latest_processing = fixed(30.0);
    c.durations.shutdown = fixed(40.0);
    c.durations.commit = fixed(60.0);
    c.durations.reprotect = fixed(300.0);
    c.durations.initial_replication = fixed(900.0);
    c.durations.ir_completion = fixed(5.0);
    c.durations.ir_completion_gap = fixed(120.0);
    c.durations.repair = fixed(600.0);
    c.durations.delete = fixed(30.0);
    c
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn jobs(sim: &Sim, filter: Option<&str>) -> Vec<Value> {
    let path = match filter {
        Some(f) => format!("{}/replicationJobs?$filter={}", sim.vault(), f.replace(' ', "%20")),
        None => format!("{}/replicationJobs", sim.vault()),
    };
    let r = sim.get(&path).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["value"].as_array().unwrap().clone()
}

async fn job_by_scenario(sim: &Sim, scenario: &str) -> Option<Value> {
    let summary = jobs(sim, None).await.into_iter().find(|j| props(j, "scenarioName") == scenario)?;
    let r = sim.get(summary["id"].as_str().unwrap()).await;
    assert_eq!(r.status, 200);
    Some(r.body)
}

async fn fail_over_and_commit(sim: &Sim, vm: &str) -> Value {
    let id = sim.item(vm).await["id"].as_str().unwrap().to_owned();
    let a = sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    sim.advance(1000.0).await;
    let c = sim.post(&format!("{id}/failoverCommit"), None).await;
    assert_eq!(c.status, 202, "{:?}", c.body);
    sim.advance(1000.0).await;
    let item = sim.item(vm).await;
    assert_eq!(props(&item, "protectionState"), "UnplannedFailoverCommitted");
    item
}

fn disks(item: &Value) -> Vec<Value> {
    props(item, "providerSpecificDetails")["protectedManagedDisks"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Job lists are summaries; new jobs are placeholders (excerpt 41–141, 142–143; 8, 147, 174)

#[tokio::test]
async fn a_new_job_is_a_placeholder_and_lists_carry_summaries_only() {
    let mut config = timed(2, SeedState::Protected);
    config.page_size = 1;
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let accepted = sim
        .post_with_client_id(
            &format!("{id}/unplannedFailover"),
            Some(failover_body("PrimaryToRecovery", true, None)),
            "0b7c1a6e-7d42-4c55-9d7e-1f2a3b4c5d6e",
        )
        .await;
    assert_eq!(accepted.status, 202);

    // In its placeholder window: exactly the recorded shape, and absent from lists.
    let placeholder = sim.job_of(&accepted).await;
    let p = &placeholder["properties"];
    assert_eq!(
        keys(p),
        [
            "activityId",
            "allowedActions",
            "customDetails",
            "errors",
            "friendlyName",
            "scenarioName",
            "state",
            "stateDescription",
            "targetInstanceType",
            "targetObjectId",
            "targetObjectName",
            "tasks"
        ],
        "no startTime/endTime keys: {placeholder:#}"
    );
    assert_eq!(
        (&p["scenarioName"], &p["friendlyName"], &p["targetObjectId"], &p["targetObjectName"]),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!((p["state"].as_str(), p["stateDescription"].as_str()), (Some("NotStarted"), Some("NotStarted")));
    assert_eq!((&p["tasks"], &p["errors"], &p["allowedActions"]), (&json!([]), &json!([]), &json!([])));
    assert_eq!(p["targetInstanceType"], "ProtectionEntity");
    assert_eq!(p["customDetails"], json!({"instanceType": "AsrJobDetails", "affectedObjectDetails": {}}));
    assert!(p["activityId"].as_str().unwrap().starts_with("0b7c1a6e-7d42-4c55-9d7e-1f2a3b4c5d6e ActivityId: "));
    assert!(jobs(&sim, None).await.is_empty(), "a placeholder is absent from lists");

    // After the window: the job with its five tasks, all NotStarted or running.
    sim.advance(4.0).await;
    let got = sim.job_of(&accepted).await;
    assert_eq!(
        (props(&got, "scenarioName").as_str(), props(&got, "state").as_str()),
        (Some("UnplannedFailover"), Some("InProgress"))
    );
    assert_eq!(props(&got, "tasks").as_array().unwrap().len(), 5);
    assert!(props(&got, "endTime").is_null() && got["properties"].get("endTime").is_none(), "no endTime key yet");

    // A list entry is the GET minus tasks, errors, customDetails and activityId.
    let listed = jobs(&sim, None).await;
    assert_eq!(listed.len(), 1, "page size 1: {listed:#?}");
    let summary = &listed[0];
    assert_eq!(keys(&summary["properties"]), keys(&got["properties"]), "same keys as the GET");
    assert_eq!((props(summary, "tasks"), props(summary, "errors")), (&json!([]), &json!([])));
    assert_eq!((props(summary, "customDetails"), props(summary, "activityId")), (&Value::Null, &Value::Null));
    for k in [
        "scenarioName",
        "friendlyName",
        "state",
        "stateDescription",
        "startTime",
        "allowedActions",
        "targetObjectId",
        "targetObjectName",
        "targetInstanceType",
    ] {
        assert_eq!(props(summary, k), props(&got, k), "{k}");
    }

    // Every filter and page gives summaries too.
    let id2 = sim.item("vm-00002").await["id"].as_str().unwrap().to_owned();
    let second =
        sim.post(&format!("{id2}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(second.status, 202);
    sim.advance(4.0).await;
    let first_page = sim.get(&format!("{}/replicationJobs", sim.vault())).await;
    let next = first_page.body["nextLink"].as_str().expect("two jobs, one a page").to_owned();
    let second_page = sim.get(&next).await;
    let filtered = jobs(&sim, Some("jobStatus eq 'InProgress'")).await;
    for j in first_page.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second_page.body["value"].as_array().unwrap())
        .chain(&filtered)
    {
        assert_eq!(props(j, "tasks"), &json!([]), "{j:#}");
        assert!(props(j, "customDetails").is_null() && props(j, "activityId").is_null(), "{j:#}");
    }
    // Only a GET carries the tasks.
    assert_eq!(props(&sim.job_of(&second).await, "tasks").as_array().unwrap().len(), 5);
}

// ---------------------------------------------------------------------------------------------
// 4. activityId from the client request id (excerpt 146→147, 173→174; reprotect 16→17)

#[tokio::test]
async fn responses_echo_the_client_request_id_and_jobs_carry_it_in_their_activity_id() {
    let mut config = quick(3, SeedState::ReadyForFailback);
    config.estate.recovery_plan_size = 2;
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();

    let client = "3eac45bc-62cb-4318-af5b-133574194ad7";
    let a = sim
        .post_with_client_id(
            &format!("{id}/unplannedFailover"),
            Some(failover_body("PrimaryToRecovery", false, None)),
            client,
        )
        .await;
    assert_eq!(a.status, 202);
    assert_eq!(a.header("x-ms-client-request-id"), Some(client), "echoed");
    let correlation = a.header("x-ms-correlation-request-id").unwrap().to_owned();
    assert!(is_guid(&correlation), "a GUID: {correlation}");
    assert!(is_guid(a.header("x-ms-request-id").unwrap().rsplit('/').next().unwrap()));
    assert_eq!(props(&sim.job_of(&a).await, "activityId"), &json!(format!("{client} ActivityId: {correlation}")));

    // Without a client request id: nothing echoed, a fresh GUID in its place.
    let c = sim.post(&format!("{id}/failoverCommit"), None).await;
    assert_eq!(c.status, 202);
    assert_eq!(c.header("x-ms-client-request-id"), None);
    let activity = props(&sim.job_of(&c).await, "activityId").as_str().unwrap().to_owned();
    let (prefix, rest) = activity.split_once(" ActivityId: ").unwrap();
    assert!(is_guid(prefix), "{activity}");
    assert_eq!(rest, c.header("x-ms-correlation-request-id").unwrap());

    // Reads and refusals echo it too.
    let read = sim
        .http
        .get(format!("{}{id}?{API}", sim.url()))
        .bearer_auth("t")
        .header("x-ms-client-request-id", "r-1")
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["x-ms-client-request-id"], "r-1");
    assert!(is_guid(read.headers()["x-ms-correlation-request-id"].to_str().unwrap()));
    assert!(is_guid(read.headers()["x-ms-request-id"].to_str().unwrap()));
    let anonymous =
        sim.http.get(format!("{}{id}?{API}", sim.url())).header("x-ms-client-request-id", "r-2").send().await.unwrap();
    assert_eq!(
        (anonymous.status().as_u16(), anonymous.headers()["x-ms-client-request-id"].to_str().unwrap()),
        (401, "r-2")
    );

    // A recovery plan's children carry the plan request's ids.
    let plans = sim.get(&format!("{}/replicationRecoveryPlans", sim.vault())).await.body;
    let plan = plans["value"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"properties": {"failoverDirection": "RecoveryToPrimary", "sourceSiteOperations": "NotRequired",
        "providerSpecificDetails": [{"instanceType": "A2A", "recoveryPointType": "LatestProcessed"}]}});
    let rp = sim.post_with_client_id(&format!("{plan}/unplannedFailover"), Some(body), "plan-request-1").await;
    assert_eq!(rp.status, 202, "{:?}", rp.body);
    let expected = format!("plan-request-1 ActivityId: {}", rp.header("x-ms-correlation-request-id").unwrap());
    assert_eq!(props(&sim.job_of(&rp).await, "activityId"), &json!(expected));
    let children: Vec<Value> =
        jobs(&sim, None).await.into_iter().filter(|j| props(j, "scenarioName") == "UnplannedFailover").collect();
    assert_eq!(children.len(), 2, "vm-00001 failed over already; the plan's other VMs: {children:#?}");
    for child in &children {
        let full = sim.get(child["id"].as_str().unwrap()).await.body;
        if props(&full, "targetObjectName") != "vm-00001" {
            assert_eq!(props(&full, "activityId"), &json!(expected));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The item lags behind its 202 (unverified: stingy)

#[tokio::test]
async fn the_item_shows_its_operation_only_after_the_lag_but_refuses_a_second_one_at_once() {
    let sim = Sim::start(timed(1, SeedState::Protected)).await;
    let idle = allowed(&sim.item("vm-00001").await);
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(accepted.status, 202);

    let item = sim.item("vm-00001").await;
    let scenario = props(&item, "currentScenario");
    assert_eq!(scenario["scenarioName"], "None");
    assert!(scenario["jobId"].as_str().unwrap().ends_with("/replicationJobs/None"));
    assert_eq!(scenario["startTime"], "1753-01-01T01:01:01Z");
    assert_eq!(allowed(&item), idle, "the pre-operation view");

    let second = sim.post(&format!("{id}/testFailover"), Some(json!({"properties": {"failoverDirection": "PrimaryToRecovery", "networkType": "NoNetworkAttachAsInput"}}))).await;
    assert_eq!((second.status, second.error_code().as_str()), (409, "AnotherOperationInProgress"));
    let log = sim.oplog().await;
    assert_eq!(
        (log[1]["operation"].as_str(), log[1]["status"].as_u64()),
        (Some("testFailover"), Some(409)),
        "{log:#?}"
    );

    sim.advance(29.0).await;
    assert_eq!(props(&sim.item("vm-00001").await, "currentScenario")["scenarioName"], "None");
    sim.advance(1.5).await;
    let item = sim.item("vm-00001").await;
    assert_eq!(props(&item, "currentScenario")["scenarioName"], "UnplannedFailover");
    assert_eq!(props(&item, "currentScenario")["jobId"], json!(accepted.header("x-ms-request-id").unwrap()));
    assert!(allowed(&item).is_empty());

    // The lag is a setting.
    let mut config = timed(1, SeedState::Protected);
    config.item_scenario_lag_secs = 0.0;
    let prompt = Sim::start(config).await;
    let id = prompt.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    prompt.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(props(&prompt.item("vm-00001").await, "currentScenario")["scenarioName"], "UnplannedFailover");
}

// ---------------------------------------------------------------------------------------------
// 5, 6. Stale item-level figure; reprotect job ≠ protected VM (excerpt 41–145)

#[tokio::test]
async fn seeded_items_show_the_stale_item_level_figure_and_per_disk_state() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.estate.unmanaged_every = 2;
    let sim = Sim::start(config).await;
    for vm in ["vm-00001", "vm-00002"] {
        let item = sim.item(vm).await;
        let psd = props(&item, "providerSpecificDetails");
        assert_eq!(
            (psd["monitoringPercentageCompletion"].as_i64(), psd["monitoringJobType"].as_str()),
            (Some(33), Some("InitialReplication"))
        );
        let disks = psd["protectedManagedDisks"].as_array().or(psd["protectedDisks"].as_array()).unwrap();
        for d in disks {
            assert_eq!(d["diskState"], "Protected", "{d:#}");
            assert!(d["monitoringPercentageCompletion"].is_null() && d["monitoringJobType"].is_null(), "{d:#}");
            assert!(d.get("monitoringJobType").is_some(), "the key is there, as null");
        }
    }
}

#[tokio::test]
async fn a_reprotect_job_succeeds_long_before_the_vm_is_protected_again() {
    let sim = Sim::start(timed(1, SeedState::Protected)).await;
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let accepted = sim
        .post_with_client_id(
            &format!("{}/switchprotection", container_of(&id)),
            Some(sim.switch_body(&committed)),
            "reprotect-1",
        )
        .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let request_activity =
        format!("reprotect-1 ActivityId: {}", accepted.header("x-ms-correlation-request-id").unwrap());

    // During the job, after the re-home: enabling protection, live per-disk progress.
    sim.advance(100.0).await;
    let item = sim.item("vm-00001").await;
    assert_eq!(props(&item, "protectionState"), "EnablingProtection");
    let psd = props(&item, "providerSpecificDetails");
    assert_eq!(psd["monitoringPercentageCompletion"], 0, "stale figure restarts at 0 for a third");
    for d in disks(&item) {
        assert_eq!(
            (d["diskState"].as_str(), d["monitoringJobType"].as_str()),
            (Some("InitialReplicationPending"), Some("InitialReplication"))
        );
    }

    // The job has succeeded: the VM is not protected yet.
    sim.advance(210.0).await;
    let job = sim.job_of(&accepted).await;
    assert_eq!(props(&job, "state"), "Succeeded");
    assert_eq!(props(&job, "activityId"), &json!(request_activity));
    let item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert_eq!(props(&item, "protectionStateDescription"), "Protected");
    assert_eq!(props(&item, "replicationHealth"), "Normal");
    assert_eq!(props(&item, "currentScenario")["scenarioName"], "None");
    assert_eq!(allowed(&item), ["DisableProtection"]);
    let item_id = item["id"].as_str().unwrap().to_owned();
    assert!(sim.get(&format!("{item_id}/recoveryPoints")).await.body["value"].as_array().unwrap().is_empty());
    let pct = |item: &Value| disks(item)[0]["monitoringPercentageCompletion"].as_i64().unwrap();
    let early = pct(&item);
    assert!((1..50).contains(&early), "{early}");
    assert_eq!(props(&item, "providerSpecificDetails")["monitoringPercentageCompletion"], 0);
    assert!(job_by_scenario(&sim, "PrimaryIrCompletion").await.is_none());

    // Past a third: the item-level figure reads 33 and stays there; disks go on.
    sim.advance(400.0).await;
    let item = sim.item("vm-00001").await;
    assert!(pct(&item) > early);
    assert_eq!(props(&item, "providerSpecificDetails")["monitoringPercentageCompletion"], 33);
    assert_eq!(allowed(&item), ["DisableProtection"]);

    // All replicated: PrimaryIrCompletion, not busy, not a request's job.
    sim.advance(500.0).await;
    let primary = job_by_scenario(&sim, "PrimaryIrCompletion").await.expect("PrimaryIrCompletion");
    assert_eq!(props(&primary, "friendlyName"), "Finalize protection on the primary virtual machine");
    assert_eq!(props(&primary, "targetObjectName"), "vm-00001");
    assert_eq!(props(&primary, "targetObjectId"), &props(&job, "targetObjectId").clone());
    assert_eq!(props(&primary, "targetInstanceType"), "ProtectionEntity");
    assert_eq!(props(&primary, "customDetails")["instanceType"], "AsrJobDetails");
    assert!(props(&primary, "customDetails")["affectedObjectDetails"]["primaryVmName"].is_string());
    let names: Vec<(&str, &str, &str)> = props(&primary, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["taskId"].as_str().unwrap(), t["name"].as_str().unwrap(), t["friendlyName"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication"),
            ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states"),
        ]
    );
    let activity = props(&primary, "activityId").as_str().unwrap();
    assert_ne!(activity, request_activity, "no request started it");
    assert!(is_guid(activity.split(" ActivityId: ").next().unwrap()));
    let item = sim.item("vm-00001").await;
    assert_eq!(
        (props(&item, "currentScenario")["scenarioName"].as_str(), allowed(&item)),
        (Some("None"), vec!["DisableProtection".to_owned()])
    );
    assert!(job_by_scenario(&sim, "SecondaryIrCompletion").await.is_none());

    // After the gap: SecondaryIrCompletion with the four recorded tasks; then protected.
    sim.advance(127.0).await;
    let secondary = job_by_scenario(&sim, "SecondaryIrCompletion").await.expect("SecondaryIrCompletion");
    assert_eq!(props(&secondary, "friendlyName"), "Finalize protection on the recovery virtual machine");
    let names: Vec<(&str, &str, &str)> = props(&secondary, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["taskId"].as_str().unwrap(), t["name"].as_str().unwrap(), t["friendlyName"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication"),
            (
                "ReplicaConfigurationPreflightChecksTask",
                "FailWorkflowOnIRFailureTask",
                "Finalizing initial replication"
            ),
            ("ReplicaConfigurationTask", "ReplicaConfiguration", "Complete network and post-replication configuration"),
            ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states"),
        ]
    );
    assert_eq!(allowed(&sim.item("vm-00001").await), ["DisableProtection"], "not until it has succeeded");
    sim.advance(10.0).await;
    assert_eq!(props(&sim.get(secondary["id"].as_str().unwrap()).await.body, "state"), "Succeeded");
    let item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()), "{:?}", allowed(&item));
    for d in disks(&item) {
        assert_eq!(d["diskState"], "Protected");
        assert!(d["monitoringPercentageCompletion"].is_null());
    }
    assert_eq!(props(&item, "providerSpecificDetails")["monitoringPercentageCompletion"], 33, "stale for good");
    sim.advance(600.0).await;
    assert!(
        !sim.get(&format!("{item_id}/recoveryPoints")).await.body["value"].as_array().unwrap().is_empty(),
        "points start"
    );
    let counted = sim.admin("counters").await["estate"]["jobs_started"].clone();
    assert_eq!(
        counted,
        json!({"unplannedFailover": 1, "failoverCommit": 1, "switchProtection": 1}),
        "completion jobs are not client jobs"
    );
}

#[tokio::test]
async fn with_zero_latency_a_reprotected_vm_is_fully_protected_at_once() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let a = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()));
    assert!(disks(&item).iter().all(|d| d["diskState"] == "Protected"));
    let scenarios: Vec<String> =
        jobs(&sim, None).await.iter().map(|j| props(j, "scenarioName").as_str().unwrap().to_owned()).collect();
    assert_eq!(
        &scenarios[..3],
        ["SecondaryIrCompletion", "PrimaryIrCompletion", "SwitchReplicationGroupProtection"],
        "newest first"
    );
}

#[tokio::test]
async fn a_failed_ir_completion_leaves_the_item_critical_until_a_repair() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.faults = serde_json::from_value(
        json!({"failures": [{"vms": ["vm-00001"], "operation": "ir_completion", "code": "150000"}]}),
    )
    .unwrap();
    let sim = Sim::start(config).await;
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let a = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    assert_eq!(a.status, 202);
    assert_eq!(props(&sim.job_of(&a).await, "state"), "Succeeded", "the reprotect job itself succeeds");
    let secondary = job_by_scenario(&sim, "SecondaryIrCompletion").await.unwrap();
    assert_eq!(props(&secondary, "state"), "Failed");
    assert_eq!(props(&secondary, "errors")[0]["serviceErrorDetails"]["code"], "150000");
    let item = sim.item("vm-00001").await;
    assert_eq!(props(&item, "replicationHealth"), "Critical");
    assert_eq!(props(&item, "healthErrors")[0]["errorCode"], "150000");
    assert_eq!(allowed(&item), ["DisableProtection", "RepairReplication"]);
    assert!(disks(&item).iter().all(|d| d["diskState"] == "InitialReplicationFailed"), "{:#?}", disks(&item));

    let repair = sim.post(&format!("{}/repairReplication", item["id"].as_str().unwrap()), None).await;
    assert_eq!(repair.status, 202, "{:?}", repair.body);
    let item = sim.item("vm-00001").await;
    assert_eq!((props(&item, "replicationHealth").as_str(), state(&item).0.as_str()), (Some("Normal"), "Protected"));
    assert!(disks(&item).iter().all(|d| d["diskState"] == "Protected"));
    assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()));
    sim.advance(900.0).await;
    let points = sim.get(&format!("{}/recoveryPoints", item["id"].as_str().unwrap())).await;
    assert!(!points.body["value"].as_array().unwrap().is_empty(), "points start after the repair");
}

#[tokio::test]
async fn seeded_syncing_vms_are_in_initial_replication_after_a_succeeded_reprotect() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.estate.syncing_every = 2;
    let sim = Sim::start(config).await;
    let item = sim.item("vm-00002").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    assert_eq!(allowed(&item), ["DisableProtection"]);
    assert_eq!(props(&item, "providerSpecificDetails")["monitoringPercentageCompletion"], 33);
    let pct = disks(&item)[0]["monitoringPercentageCompletion"].as_i64().unwrap();
    assert!((35..=45).contains(&pct), "about 40% replicated: {pct}");
    let seeded = jobs(&sim, None).await;
    assert_eq!(seeded.len(), 1, "{seeded:#?}");
    assert_eq!(
        (props(&seeded[0], "scenarioName").as_str(), props(&seeded[0], "state").as_str()),
        (Some("SwitchReplicationGroupProtection"), Some("Succeeded"))
    );
    let full = sim.get(seeded[0]["id"].as_str().unwrap()).await.body;
    assert_eq!(
        props(&full, "customDetails")["newReplicationProtectedItemId"].as_str().map(str::to_ascii_lowercase),
        Some(item["id"].as_str().unwrap().to_ascii_lowercase())
    );
    assert!(
        allowed(&sim.item("vm-00001").await).contains(&"UnplannedFailover".to_owned()),
        "the other VM is protected"
    );

    sim.advance(3600.0).await;
    let item = sim.item("vm-00002").await;
    assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()), "{:?}", allowed(&item));
    let scenarios: Vec<String> =
        jobs(&sim, None).await.iter().map(|j| props(j, "scenarioName").as_str().unwrap().to_owned()).collect();
    assert_eq!(scenarios, ["SecondaryIrCompletion", "PrimaryIrCompletion", "SwitchReplicationGroupProtection"]);
}

// ---------------------------------------------------------------------------------------------
// 7. Switch protection validated as Azure and PowerShell do it (reprotect entries 13–16)

#[tokio::test]
async fn switch_protection_refuses_incomplete_or_wrong_bodies_naming_the_field() {
    let mut config = quick(1, SeedState::Protected);
    config.zero_latency = false;
    let sim = Sim::start(config).await;
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let url = format!("{}/switchprotection", container_of(&id));
    let good = sim.switch_body(&committed);
    let sub = sim.running.info().subscription_id.clone();
    let eastus_cache = sim.running.info().cache_storage_accounts["eastus"].clone();

    type Mutation = Box<dyn Fn(&mut Value)>;
    fn m(f: impl Fn(&mut Value) + 'static) -> Mutation {
        Box::new(f)
    }
    fn at<'a>(b: &'a mut Value, pointer: &str) -> &'a mut Value {
        b.pointer_mut(&format!("/properties/providerSpecificDetails{pointer}")).unwrap()
    }
    let other_rg = format!("/subscriptions/{sub}/resourceGroups/rg-app-asr");
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "no item name",
            m(|b| {
                b["properties"].as_object_mut().unwrap().remove("replicationProtectedItemName");
            }),
            "properties.replicationProtectedItemName",
        ),
        (
            "not A2A",
            m(|b| at(b, "")["instanceType"] = json!("HyperVReplicaAzure")),
            "providerSpecificDetails.instanceType",
        ),
        (
            "no container",
            m(|b| {
                at(b, "").as_object_mut().unwrap().remove("recoveryContainerId");
            }),
            "providerSpecificDetails.recoveryContainerId",
        ),
        ("no policy", m(|b| at(b, "")["policyId"] = Value::Null), "providerSpecificDetails.policyId"),
        (
            "unknown policy",
            m(|b| {
                let p = at(b, "/policyId").as_str().unwrap().replace("24-hour", "12-hour");
                at(b, "")["policyId"] = json!(p);
            }),
            "providerSpecificDetails.policyId",
        ),
        (
            "no recovery rg",
            m(|b| at(b, "")["recoveryResourceGroupId"] = Value::Null),
            "providerSpecificDetails.recoveryResourceGroupId'",
        ),
        (
            "the rg it runs in",
            m(move |b| at(b, "")["recoveryResourceGroupId"] = json!(other_rg)),
            "providerSpecificDetails.recoveryResourceGroupId'",
        ),
        ("no disks", m(|b| at(b, "")["vmManagedDisks"] = json!([])), "providerSpecificDetails.vmManagedDisks'"),
        (
            "a disk left out",
            m(|b| {
                at(b, "/vmManagedDisks").as_array_mut().unwrap().pop();
            }),
            "providerSpecificDetails.vmManagedDisks'",
        ),
        (
            "a disk named twice",
            m(|b| {
                let d = at(b, "/vmManagedDisks/0").clone();
                at(b, "/vmManagedDisks")[1] = d;
            }),
            "vmManagedDisks[1].diskId",
        ),
        (
            "a disk of the region left",
            m(|b| {
                let d = at(b, "/vmManagedDisks/0/diskId").as_str().unwrap().replace("rg-app-asr", "rg-app");
                at(b, "/vmManagedDisks/0")["diskId"] = json!(d);
            }),
            "vmManagedDisks[0].diskId",
        ),
        (
            "no staging account",
            m(|b| at(b, "/vmManagedDisks/0")["primaryStagingAzureStorageAccountId"] = Value::Null),
            "vmManagedDisks[0].primaryStagingAzureStorageAccountId",
        ),
        (
            "staging in the other region",
            m(move |b| at(b, "/vmManagedDisks/1")["primaryStagingAzureStorageAccountId"] = json!(eastus_cache)),
            "vmManagedDisks[1].primaryStagingAzureStorageAccountId",
        ),
        (
            "no such staging account",
            m(|b| {
                at(b, "/vmManagedDisks/0")["primaryStagingAzureStorageAccountId"] =
                    json!("/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z")
            }),
            "vmManagedDisks[0].primaryStagingAzureStorageAccountId",
        ),
        (
            "disk rg",
            m(|b| at(b, "/vmManagedDisks/0")["recoveryResourceGroupId"] = Value::Null),
            "vmManagedDisks[0].recoveryResourceGroupId",
        ),
        (
            "disk type",
            m(|b| at(b, "/vmManagedDisks/0")["recoveryTargetDiskAccountType"] = json!("Gold_LRS")),
            "vmManagedDisks[0].recoveryTargetDiskAccountType",
        ),
        (
            "vmDisks on a managed item",
            m(|b| at(b, "")["vmDisks"] = json!([{"diskUri": "https://x/y.vhd"}])),
            "providerSpecificDetails.vmDisks'",
        ),
    ];
    for (what, mutate, field) in &cases {
        let mut body = good.clone();
        mutate(&mut body);
        let r = sim.post(&url, Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {:?}", r.body);
        assert!(r.error_message().contains(field), "{what}: expected {field} in {}", r.error_message());
    }
    assert_eq!(state(&sim.item("vm-00001").await).0, "UnplannedFailoverCommitted", "nothing was started");

    // Generic reProtect has no vmManagedDisks: refused for a managed item.
    let generic = sim
        .post(
            &format!("{id}/reProtect"),
            Some(json!({"properties": {"failoverDirection": "RecoveryToPrimary",
        "providerSpecificDetails": good["properties"]["providerSpecificDetails"]}})),
        )
        .await;
    assert_eq!(generic.status, 400);
    assert!(
        generic.error_message().contains("'properties.providerSpecificDetails'")
            && generic.error_message().contains("switchprotection"),
        "{}",
        generic.error_message()
    );

    // The complete body passes, and what it chose is kept per disk.
    let mut body = good.clone();
    for d in body.pointer_mut("/properties/providerSpecificDetails/vmManagedDisks").unwrap().as_array_mut().unwrap() {
        d["recoveryReplicaDiskAccountType"] = json!("StandardSSD_LRS");
        d["recoveryTargetDiskAccountType"] = json!("Premium_ZRS");
    }
    let ok = sim.post(&url, Some(body)).await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    sim.advance(4000.0).await;
    let item = sim.item("vm-00001").await;
    let westus_cache = &sim.running.info().cache_storage_accounts["westus"];
    for d in disks(&item) {
        assert_eq!(d["primaryStagingAzureStorageAccountId"], json!(westus_cache));
        assert_eq!(
            (d["recoveryReplicaDiskAccountType"].as_str(), d["recoveryTargetDiskAccountType"].as_str()),
            (Some("StandardSSD_LRS"), Some("Premium_ZRS"))
        );
    }
}

#[tokio::test]
async fn unmanaged_items_reprotect_with_vm_disks_only() {
    let mut config = quick(1, SeedState::Protected);
    config.estate.unmanaged_every = 1;
    let sim = Sim::start(config).await;
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let body = sim.switch_body(&committed);
    let details = body["properties"]["providerSpecificDetails"].clone();
    assert_eq!(details["vmDisks"].as_array().unwrap().len(), 2);

    let mut with_managed = details.clone();
    with_managed["vmManagedDisks"] = json!([{"diskId": "/subscriptions/x/d"}]);
    let r = sim
        .post(&format!("{id}/reProtect"), Some(json!({"properties": {"providerSpecificDetails": with_managed}})))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("vmManagedDisks"), "{}", r.error_message());
    let mut wrong_region = details.clone();
    wrong_region["vmDisks"][0]["recoveryAzureStorageAccountId"] =
        wrong_region["vmDisks"][0]["primaryStagingAzureStorageAccountId"].clone();
    let r = sim
        .post(&format!("{id}/reProtect"), Some(json!({"properties": {"providerSpecificDetails": wrong_region}})))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("vmDisks[0].recoveryAzureStorageAccountId"), "{}", r.error_message());
    let mut none = details.clone();
    none["vmDisks"] = json!([]);
    let r = sim.post(&format!("{id}/reProtect"), Some(json!({"properties": {"providerSpecificDetails": none}}))).await;
    assert!(r.error_message().contains("providerSpecificDetails.vmDisks'"), "{}", r.error_message());

    let r = sim
        .post(
            &format!("{id}/reProtect"),
            Some(json!({"properties": {"failoverDirection": "RecoveryToPrimary", "providerSpecificDetails": details}})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let item = sim.item("vm-00001").await;
    assert_eq!(state(&item), ("Protected".into(), "Primary".into()));
    let vhd = &props(&item, "providerSpecificDetails")["protectedDisks"][0];
    assert_eq!((vhd["diskState"].as_str(), vhd["monitoringJobType"].clone()), (Some("Protected"), Value::Null));
}

// ---------------------------------------------------------------------------------------------
// 7 (end), 8. Disk ids as recorded; disks, public IPs and storage accounts as ARM resources

#[tokio::test]
async fn items_name_replicas_while_protected_and_the_running_vm_s_disks_once_failed_over() {
    let sim = Sim::start(quick(1, SeedState::Protected)).await;
    let sub = sim.running.info().subscription_id.clone();
    let item = sim.item("vm-00001").await;
    for d in disks(&item) {
        assert!(d["recoveryTargetDiskId"].is_null());
        let name = d["diskName"].as_str().unwrap();
        assert_eq!(
            d["recoveryReplicaDiskId"],
            json!(format!(
                "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/disks/{name}-ASRReplica"
            ))
        );
        let replica = sim.get(d["recoveryReplicaDiskId"].as_str().unwrap()).await;
        assert_eq!(replica.status, 200, "the replica is a resource: {:?}", replica.body);
        assert!(replica.body["managedBy"].is_null());
        assert_eq!(replica.body["properties"]["diskState"], "Unattached");
    }
    let id = item["id"].as_str().unwrap().to_owned();
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    let item = sim.item("vm-00001").await;
    let vm = sim
        .get(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/virtualMachines/vm-00001"
        ))
        .await
        .body;
    let os = &vm["properties"]["storageProfile"]["osDisk"]["managedDisk"];
    assert_eq!(os["storageAccountType"], "Premium_LRS");
    let d0 = &disks(&item)[0];
    assert_eq!(d0["recoveryTargetDiskId"], os["id"], "the disk the running VM uses");
    assert_eq!(d0["recoveryReplicaDiskId"], "");
    assert_eq!(
        sim.get(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/disks/{}-ASRReplica",
            d0["diskName"].as_str().unwrap()
        ))
        .await
        .status,
        404,
        "the replica became the VM's disk"
    );
    let disk = sim.get(os["id"].as_str().unwrap()).await.body;
    assert_eq!(disk["managedBy"].as_str().map(str::to_ascii_lowercase), vm["id"].as_str().map(str::to_ascii_lowercase));
    assert_eq!(disk["properties"]["diskState"], "Attached");
}

#[tokio::test]
async fn storage_accounts_are_arm_resources_and_the_ready_line_names_the_caches() {
    let sim = Sim::start(quick(1, SeedState::Protected)).await;
    let info = sim.running.info().clone();
    assert_eq!(info.cache_storage_accounts.len(), 2);
    let sub = &info.subscription_id;
    let east = format!(
        "/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Storage/storageAccounts/eastusasrcache"
    );
    assert_eq!(info.cache_storage_accounts["eastus"], east);
    let admin = sim.admin("info").await;
    assert_eq!(admin["cache_storage_accounts"]["westus"], json!(info.cache_storage_accounts["westus"]));
    let got = sim.get(&east).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        json!({"id": east, "name": "eastusasrcache", "type": "Microsoft.Storage/storageAccounts",
        "location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "properties": {"provisioningState": "Succeeded", "primaryLocation": "eastus"}})
    );
    let item = sim.item("vm-00001").await;
    assert_eq!(disks(&item)[0]["primaryStagingAzureStorageAccountId"], json!(east), "the id items render");
    let list = sim
        .get(&format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Storage/storageAccounts"))
        .await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    let missing = sim
        .get(&format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Storage/storageAccounts/nope"))
        .await;
    assert_eq!((missing.status, missing.error_code().as_str()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn managed_disks_outlive_their_vm_and_an_attached_disk_cannot_be_deleted() {
    let mut config = quick(1, SeedState::Protected);
    config.zero_latency = false;
    config.durations = tern_asr_sim::Durations::zero();
    config.durations.delete = fixed(30.0);
    let sim = Sim::start(config).await;
    let sub = sim.running.info().subscription_id.clone();
    let rg = |g: &str| format!("/subscriptions/{sub}/resourceGroups/{g}");
    let item = sim.item("vm-00001").await;
    let os_name = disks(&item)[0]["diskName"].as_str().unwrap().to_owned();
    let os = format!("{}/providers/Microsoft.Compute/disks/{os_name}", rg("rg-app"));
    let vm = format!("{}/providers/Microsoft.Compute/virtualMachines/vm-00001", rg("rg-app"));

    let disk = sim.get(&os).await.body;
    assert_eq!(disk["managedBy"], json!(vm));
    assert_eq!(
        (disk["properties"]["diskState"].as_str(), disk["properties"]["diskSizeGB"].as_i64()),
        (Some("Attached"), Some(127))
    );
    assert_eq!(disk["sku"]["name"], "Premium_LRS");
    let listed = sim.get(&format!("{}/providers/Microsoft.Compute/disks", rg("rg-app"))).await.body;
    assert_eq!(listed["value"].as_array().unwrap().len(), 2);
    let replicas = sim.get(&format!("{}/providers/Microsoft.Compute/disks", rg("rg-app-asr"))).await.body;
    assert!(replicas["value"].as_array().unwrap().iter().all(|d| d["name"].as_str().unwrap().ends_with("-ASRReplica")));

    let refused = sim.delete(&os).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (409, "OperationNotAllowed"));
    assert!(refused.error_message().contains(&vm), "names the VM: {}", refused.error_message());

    // Deleting the VM keeps its disks (unattached) and its NIC.
    let id = item["id"].as_str().unwrap().to_owned();
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(sim.delete(&vm).await.status, 202);
    sim.advance(31.0).await;
    assert_eq!(sim.get(&vm).await.status, 404);
    let disk = sim.get(&os).await.body;
    assert!(disk["managedBy"].is_null());
    assert_eq!(disk["properties"]["diskState"], "Unattached");
    assert_eq!(
        sim.get(&format!("{}/providers/Microsoft.Network/networkInterfaces/vm-00001-nic", rg("rg-app"))).await.status,
        200
    );

    let del = sim.delete(&os).await;
    assert_eq!(del.status, 202, "{:?}", del.body);
    let location = del.header("location").unwrap().to_owned();
    assert!(location.contains("/providers/Microsoft.Compute/locations/eastus/operationResults/"), "{location}");
    assert_eq!(sim.get(&location).await.status, 202);
    assert_eq!(sim.get(&os).await.body["properties"]["provisioningState"], "Deleting");
    sim.advance(31.0).await;
    assert_eq!(sim.get(&location).await.status, 204);
    assert_eq!(sim.get(&os).await.status, 404);
    let log = sim.oplog().await;
    let last = log.last().unwrap();
    assert_eq!((last["operation"].as_str(), last["item"].as_str()), (Some("delete"), Some(os_name.as_str())));
}

#[tokio::test]
async fn public_ips_stay_with_their_nic_and_an_associated_one_cannot_be_deleted() {
    let mut config = quick(2, SeedState::Protected);
    config.estate.public_ip_every = 2;
    let sim = Sim::start(config).await;
    let sub = sim.running.info().subscription_id.clone();
    let net = |rg: &str, kind: &str, name: &str| {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{kind}/{name}")
    };
    let nic = net("rg-app", "networkInterfaces", "vm-00002-nic");
    let pip = net("rg-app", "publicIPAddresses", "vm-00002-pip");
    let got_nic = sim.get(&nic).await.body;
    assert_eq!(got_nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"], json!(pip));
    let got_pip = sim.get(&pip).await.body;
    assert_eq!(got_pip["properties"]["ipConfiguration"]["id"], json!(format!("{nic}/ipConfigurations/ipconfig1")));
    assert_eq!(got_pip["type"], "Microsoft.Network/publicIPAddresses");
    assert!(sim.get(&net("rg-app", "networkInterfaces", "vm-00001-nic")).await.body["properties"]["ipConfigurations"][0]["properties"].get("publicIPAddress").is_none(), "every 2nd VM only");
    let listed = sim
        .get(&format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Network/publicIPAddresses"))
        .await
        .body;
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);

    let refused = sim.delete(&pip).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (400, "PublicIPAddressInUse"));

    // A failover-created VM's NIC gets no public IP.
    let id = sim.item("vm-00002").await["id"].as_str().unwrap().to_owned();
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    let recovered = sim.get(&net("rg-app-asr", "networkInterfaces", "vm-00002-nic")).await.body;
    assert!(recovered["properties"]["ipConfigurations"][0]["properties"].get("publicIPAddress").is_none());

    // Deleting the VM, then its NIC, leaves the public IP unassociated; then it can go.
    let vm = format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-00002");
    assert_eq!(sim.delete(&vm).await.status, 202);
    assert_eq!(sim.delete(&nic).await.status, 202);
    let orphan = sim.get(&pip).await;
    assert_eq!(orphan.status, 200);
    assert!(orphan.body["properties"].get("ipConfiguration").is_none(), "{:?}", orphan.body);
    assert_eq!(sim.delete(&pip).await.status, 202);
    assert_eq!(sim.get(&pip).await.status, 404);
    let ops: Vec<(String, String)> = sim
        .oplog()
        .await
        .iter()
        .filter(|e| e["status"] == 202 && e["operation"] == "delete")
        .map(|e| (e["operation"].as_str().unwrap().to_owned(), e["item"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(ops.iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>(), ["vm-00002", "vm-00002-nic", "vm-00002-pip"]);
}

#[tokio::test]
async fn reprotect_removes_the_vm_it_leaves_behind_with_its_nics_and_disks() {
    let sim = Sim::start(quick(1, SeedState::Protected)).await;
    let sub = sim.running.info().subscription_id.clone();
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    let os_name = disks(&committed)[0]["diskName"].as_str().unwrap().to_owned();
    let old_disk = format!("/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/disks/{os_name}");
    assert_eq!(sim.get(&old_disk).await.status, 200);
    let id = committed["id"].as_str().unwrap().to_owned();
    let a = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    assert_eq!(a.status, 202);
    assert_eq!(
        sim.get(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-00001"
        ))
        .await
        .status,
        404
    );
    assert_eq!(
        sim.get(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Network/networkInterfaces/vm-00001-nic"
        ))
        .await
        .status,
        404
    );
    assert_eq!(sim.get(&old_disk).await.status, 404, "its disks went with it");
    let replica = sim.get(&format!("{old_disk}-ASRReplica")).await;
    assert_eq!(replica.status, 200, "the new replica in the region it now replicates to");
}

// ---------------------------------------------------------------------------------------------
// 9. Job tasks carry Azure's ids and names (excerpt 148/172, 175; reprotect 43)

#[tokio::test]
async fn jobs_carry_the_recorded_task_ids_and_names() {
    let sim = Sim::start(quick(1, SeedState::Protected)).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let points = sim.get(&format!("{id}/recoveryPoints")).await.body;
    let point = points["value"][0]["id"].as_str().unwrap().to_owned();
    let a = sim
        .post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, Some(&point))))
        .await;
    let job = sim.job_of(&a).await;
    let tasks: Vec<(String, String, String, String)> = props(&job, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            [&t["taskId"], &t["name"], &t["friendlyName"], &t["stateDescription"]]
                .map(|v| v.as_str().unwrap().to_owned())
                .into()
        })
        .collect();
    let expect = |a: &str, b: &str, c: &str, d: &str| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned());
    assert_eq!(
        tasks,
        [
            expect(
                "UnplannedFailoverPreflightChecksTask",
                "VmUfoPrerequisitesCheck",
                "Prerequisites check for failover",
                "Completed"
            ),
            expect("ShutdownVmOnPrimaryForUFO", "VmShutdownVmOnPrimary", "Shut down the virtual machine", "Skipped"),
            expect(
                "PrepareForUnPlannedFailoverTask",
                "VmPrepareForUnPlannedFailover",
                "Synchronizing the latest changes",
                "Skipped"
            ),
            expect("FailoverTask", "VmFailover", "Start failover", "Completed"),
            expect("StartVmOnSecondary", "VmFoStartVmOnSecondary", "Start the replica virtual machine", "Completed"),
        ]
    );
    assert!(
        props(&job, "tasks")
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["stateDescription"] == "Skipped")
            .all(|t| t["state"] == "Other")
    );

    let c = sim.post(&format!("{id}/failoverCommit"), None).await;
    let commit = sim.job_of(&c).await;
    let tasks = props(&commit, "tasks").as_array().unwrap();
    assert_eq!(
        tasks.iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["VmCommitPrerequisitesCheck", "VmCommit"]
    );
    assert_eq!(
        tasks.iter().map(|t| t["friendlyName"].as_str().unwrap()).collect::<Vec<_>>(),
        ["Prerequisite check", "Commit"]
    );
    assert!(tasks.iter().all(|t| is_guid(t["taskId"].as_str().unwrap())), "commit task ids are GUIDs: {tasks:#?}");

    let committed = sim.item("vm-00001").await;
    let r = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    let reprotect = sim.job_of(&r).await;
    let names: Vec<(&str, &str)> = props(&reprotect, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["taskId"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("SwitchReplicationGroupProtectionPreflightTask", "SwitchReplicationGroupProtectionPreflightTask"),
            ("CommitFailoverTask", "VmCommitFailover"),
            ("DiscoverReplicaTask", "DiscoverReplicaTask"),
            ("GetSwitchProtectionRequirementsTask", "GetSwitchProtectionRequirementsTask"),
            ("ProtectReplicaTask", "ProtectReplicaTask"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Dropped responses of chosen operations only

#[tokio::test]
async fn responses_can_be_dropped_for_chosen_operations_only() {
    let mut config = quick(1, SeedState::Protected);
    config.faults.drop_response_rate = 1.0;
    config.faults.drop_response_hang_secs = 30;
    config.faults.drop_response_operations = vec![tern_asr_sim::Operation::Commit];
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let failover = impatient
        .post(format!("{}{id}/unplannedFailover?{API}", sim.url()))
        .bearer_auth("t")
        .json(&failover_body("PrimaryToRecovery", false, None))
        .send()
        .await
        .expect("a failover is answered");
    assert_eq!(failover.status(), 202);
    let commit = impatient.post(format!("{}{id}/failoverCommit?{API}", sim.url())).bearer_auth("t").send().await;
    assert!(commit.is_err_and(|e| e.is_timeout()), "a commit is applied but not answered");
    assert_eq!(state(&sim.item("vm-00001").await).0, "UnplannedFailoverCommitted");
    assert_eq!(sim.admin("counters").await["requests"]["dropped_responses"], 1);

    // Settable at run time.
    assert_eq!(
        sim.put_faults(json!({"drop_response_rate": 1.0, "drop_response_operations": ["reprotect"]})).await,
        200
    );
    assert_eq!(sim.admin("faults").await["drop_response_operations"], json!(["reprotect"]));
    assert_eq!(sim.put_faults(json!({"drop_response_operations": ["explode"]})).await, 400);
}

// ---------------------------------------------------------------------------------------------
// The binary: new flags, the ready line, --help citing the evidence

#[tokio::test]
async fn the_binary_takes_the_new_flags_and_prints_the_caches_in_its_ready_line() {
    let bin = binary_helping_with(&[
        "--item-scenario-lag",
        "--seed-public-ip-every",
        "--drop-responses-of",
        "ir_completion",
        "A2AFailoverCommit-excerpt",
        "A2AReprotectTest",
    ]);
    let (mut child, info) = spawn_binary(
        bin,
        &[
            "--seed-vms",
            "2",
            "--zero-latency",
            "--item-scenario-lag",
            "12",
            "--seed-public-ip-every",
            "1",
            "--drop-responses-of",
            "reprotect",
            "--fail",
            "vm-00001:ir_completion:150000",
        ],
    )
    .await;
    assert_eq!(info.cache_storage_accounts.keys().collect::<Vec<_>>(), ["eastus", "westus"]);
    let http = reqwest::Client::new();
    let admin = |path: &str| http.get(format!("{}/_sim/{path}", info.url)).send();
    let sim_info: Value = admin("info").await.unwrap().json().await.unwrap();
    assert_eq!(sim_info["item_scenario_lag_secs"], 12.0);
    let faults: Value = admin("faults").await.unwrap().json().await.unwrap();
    assert_eq!(faults["drop_response_operations"], json!(["reprotect"]));
    assert_eq!(faults["failures"][0]["operation"], "ir_completion");
    let counters: Value = admin("counters").await.unwrap().json().await.unwrap();
    assert_eq!(counters["estate"]["public_ips"], 2);
    child.kill().await.unwrap();

    // The same settings from a config file.
    let path = std::env::temp_dir().join(format!("tern-asr-sim-fidelity-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "item_scenario_lag_secs = 7.5\n[faults]\ndrop_response_operations = [\"commit\", \"ir_completion\"]\n[durations.ir_completion_gap]\nmin_secs = 1.0\nmax_secs = 2.0\n",
    )
    .unwrap();
    let (mut child, info) = spawn_binary(bin, &["--config", path.to_str().unwrap()]).await;
    let admin = |path: &str| http.get(format!("{}/_sim/{path}", info.url)).send();
    let sim_info: Value = admin("info").await.unwrap().json().await.unwrap();
    assert_eq!(sim_info["item_scenario_lag_secs"], 7.5);
    let faults: Value = admin("faults").await.unwrap().json().await.unwrap();
    assert_eq!(faults["drop_response_operations"], json!(["commit", "ir_completion"]));
    child.kill().await.unwrap();
    let _ = std::fs::remove_file(&path);
}

/// Which VM, region and address an item names at each stage, as the recordings show them: the
/// primary side's address always (`staticIPAddress`, even when dynamic), the recovery side's
/// only when configured static, `recoveryFabricObjectId` null until a failover (excerpt entry
/// 144) and the failed-over VM after it (entry 145); switch protection flips the sides. Each
/// address is the one the VM's NIC has in that region.
#[tokio::test]
async fn items_name_their_vms_and_addresses_as_azure_does() {
    let mut config = quick(2, SeedState::Protected);
    config.estate.static_recovery_ip_every = 2; // vm-00002
    let sim = Sim::start(config).await;
    let sub = sim.running.info().subscription_id.clone();
    let ip_config = |item: &Value| props(item, "providerSpecificDetails")["vmNics"][0]["ipConfigs"][0].clone();
    let a2a = |item: &Value| props(item, "providerSpecificDetails").clone();
    let nic_ip = |rg: &str, vm: &str| {
        let nic =
            format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{vm}-nic");
        private_ip(&sim, nic)
    };

    let dynamic = sim.item("vm-00001").await;
    assert_eq!(a2a(&dynamic)["recoveryFabricObjectId"], Value::Null, "never failed over (entry 144)");
    let c = ip_config(&dynamic);
    assert_eq!((c["staticIPAddress"].as_str(), c["ipAddressType"].as_str()), (Some("10.0.0.4"), Some("Dynamic")));
    assert_eq!(
        (c["recoveryStaticIPAddress"].as_str(), c["recoveryIPAddressType"].as_str()),
        (Some(""), Some("Dynamic"))
    );
    assert_eq!(nic_ip("rg-app", "vm-00001").await, json!("10.0.0.4"));
    let fixed = ip_config(&sim.item("vm-00002").await);
    assert_eq!(fixed["staticIPAddress"], json!("10.0.0.5"));
    assert_eq!(
        (fixed["recoveryStaticIPAddress"].as_str(), fixed["recoveryIPAddressType"].as_str()),
        (Some("10.1.0.5"), Some("Static"))
    );

    // Failed over and committed: still the source's address; the recovery side's is not
    // reported for a dynamic target though the VM there has one (entry 145).
    let committed = fail_over_and_commit(&sim, "vm-00001").await;
    assert_eq!(
        a2a(&committed)["recoveryFabricObjectId"],
        json!(format!(
            "/subscriptions/{sub}/resourcegroups/rg-app-asr/providers/microsoft.compute/virtualmachines/vm-00001"
        ))
    );
    let c = ip_config(&committed);
    assert_eq!((c["staticIPAddress"].as_str(), c["recoveryStaticIPAddress"].as_str()), (Some("10.0.0.4"), Some("")));
    assert_eq!(nic_ip("rg-app-asr", "vm-00001").await, json!("10.1.0.4"));

    // Reprotected: the sides flip, and the VM now replicated from reports its address.
    let id = committed["id"].as_str().unwrap().to_owned();
    let a = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    sim.advance(1000.0).await;
    let reprotected = sim.item("vm-00001").await;
    assert_eq!(a2a(&reprotected)["primaryFabricLocation"], json!("westus"));
    assert_eq!(
        a2a(&reprotected)["fabricObjectId"],
        json!(format!(
            "/subscriptions/{sub}/resourcegroups/rg-app-asr/providers/microsoft.compute/virtualmachines/vm-00001"
        ))
    );
    assert_eq!(ip_config(&reprotected)["staticIPAddress"], json!("10.1.0.4"));
}

async fn private_ip(sim: &Sim, nic: String) -> Value {
    sim.get(&nic).await.body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"].clone()
}
