//! Faults that last: a regional ARM outage, an expired token, jobs that never end; faults that
//! land on the next N writes (so a test knows when they have landed); and the record of deletes
//! the fault suite judges cleanup safety by.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tern_asr_sim::SeedState;

fn sub(sim: &Sim) -> String {
    sim.running.info().subscription_id.clone()
}

#[tokio::test]
async fn an_outage_answers_every_request_503_applies_nothing_and_ends_when_switched_off() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let item = sim.item("vm-00001").await;
    let id = item["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.put_faults(json!({"outage": true})).await, 200);

    let read = sim.get(&id).await;
    assert_eq!((read.status, read.error_code().as_str()), (503, "ServiceUnavailable"), "{:?}", read.body);
    assert!(read.header("retry-after").is_none(), "an outage does not say when it ends");
    let write =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!((write.status, write.error_code().as_str()), (503, "ServiceUnavailable"), "{:?}", write.body);
    let unauthenticated = sim.http.get(format!("{}{id}?{API}", sim.url())).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401, "authentication still comes first");

    let log = sim.oplog().await;
    assert_eq!(log.len(), 1, "the write is logged as sent: {log:#?}");
    assert_eq!(
        (log[0]["operation"].as_str(), log[0]["item"].as_str(), log[0]["status"].as_u64()),
        (Some("unplannedFailover"), Some("vm-00001"), Some(503))
    );
    assert_eq!(sim.admin("counters").await["requests"]["outage_503"], 2);

    assert_eq!(sim.put_faults(json!({})).await, 200);
    assert_eq!(state(&sim.item("vm-00001").await), state(&item), "nothing was applied");
    let after =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(after.status, 202, "{:?}", after.body);
}

#[tokio::test]
async fn an_expired_token_is_answered_401_as_arm_s_gateway_answers_it() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let item = sim.item("vm-00001").await;
    let id = item["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.put_faults(json!({"expired_token": true})).await, 200);

    for reply in [
        sim.get(&id).await,
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await,
    ] {
        assert_eq!(reply.status, 401, "{:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "ExpiredAuthenticationToken");
        let message = reply.error_message();
        assert!(
            message.starts_with("The access token expiry UTC time '")
                && message.contains("' is earlier than current UTC time '")
                && message.ends_with("M'."),
            "{message}"
        );
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer authorization_uri=")
                && challenge.contains("error=\"invalid_token\"")
                && challenge.contains("error_description=\"The access token has expired.\""),
            "{challenge}"
        );
        assert_eq!(reply.header("x-ms-failure-cause"), Some("gateway"));
    }
    let log = sim.oplog().await;
    assert_eq!(log.iter().map(|e| e["status"].as_u64().unwrap()).collect::<Vec<_>>(), [401], "{log:#?}");
    assert_eq!(sim.admin("counters").await["requests"]["expired_token"], 2);

    assert_eq!(sim.put_faults(json!({})).await, 200);
    assert_eq!(state(&sim.item("vm-00001").await), state(&item), "nothing was applied");
    assert_eq!(sim.get(&id).await.status, 200, "a fresh token works again");
}

#[tokio::test]
async fn a_stuck_job_stays_in_progress_however_long_one_waits_and_others_finish() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.faults.stuck_jobs = vec![tern_asr_sim::faults::StuckRule {
        selector: selector(&["vm-00001"]),
        operation: tern_asr_sim::Operation::Failover,
    }];
    let sim = Sim::start(config).await;
    let mut jobs = Vec::new();
    for vm in ["vm-00001", "vm-00002"] {
        let id = sim.item(vm).await["id"].as_str().unwrap().to_owned();
        let a =
            sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        jobs.push(a.header("x-ms-request-id").unwrap().rsplit('/').next().unwrap().to_owned());
    }
    // A week of simulated time.
    sim.advance(7.0 * 24.0 * 3600.0).await;
    let stuck = sim.get(&format!("{}/replicationJobs/{}", sim.vault(), jobs[0])).await;
    assert_eq!(props(&stuck.body, "state"), "InProgress", "{:#?}", stuck.body);
    assert!(props(&stuck.body, "endTime").is_null(), "a job that never ends has no endTime");
    let tasks = props(&stuck.body, "tasks").as_array().unwrap().clone();
    assert_eq!(tasks.last().unwrap()["state"], "InProgress", "its last task never completes: {tasks:#?}");
    let item = sim.item("vm-00001").await;
    assert_eq!(state(&item).1, "Primary", "the stuck failover has not failed the VM over");
    assert!(!allowed(&item).contains(&"UnplannedFailover".to_owned()), "and the item is busy with it");

    let done = sim.get(&format!("{}/replicationJobs/{}", sim.vault(), jobs[1])).await;
    assert_eq!(props(&done.body, "state"), "Succeeded", "{:#?}", done.body);
    assert_eq!(state(&sim.item("vm-00002").await).1, "Recovery");
}

fn selector(vms: &[&str]) -> tern_asr_sim::Selector {
    tern_asr_sim::Selector { vms: vms.iter().map(|v| (*v).to_owned()).collect(), fraction: 0.0 }
}

#[tokio::test]
async fn countdown_faults_land_on_the_next_writes_only_and_count_down_to_zero() {
    let sim = Sim::start(quick(3, SeedState::ReadyForFailback)).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for vm in ["vm-00001", "vm-00002", "vm-00003"] {
            ids.push(sim.item(vm).await["id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let body = || Some(failover_body("PrimaryToRecovery", false, None));
    assert_eq!(
        sim.put_faults(json!({"throttle_next_writes": 2, "fail_next_writes": 1, "drop_next_writes": 1,
            "drop_response_hang_secs": 30, "throttle_storm_retry_after_secs": 3}))
            .await,
        200
    );
    // Reads are never hit.
    assert_eq!(sim.get(&ids[0]).await.status, 200);
    let first = sim.post(&format!("{}/unplannedFailover", ids[0]), body()).await;
    assert_eq!((first.status, first.header("retry-after")), (429, Some("3")), "{:?}", first.body);
    let second = sim.post(&format!("{}/unplannedFailover", ids[0]), body()).await;
    assert_eq!(second.status, 429);
    let third = sim.post(&format!("{}/unplannedFailover", ids[0]), body()).await;
    assert_eq!((third.status, third.error_code().as_str()), (503, "ServiceUnavailable"));
    // A refused write does not spend the drop: only an applied one does.
    let refused = sim.post(&format!("{}/failoverCommit", ids[1]), None).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let dropped = impatient
        .post(format!("{}{}/unplannedFailover?{API}", sim.url(), ids[0]))
        .bearer_auth("t")
        .json(&failover_body("PrimaryToRecovery", false, None))
        .send()
        .await;
    assert!(dropped.is_err_and(|e| e.is_timeout()), "the fourth applied write is never answered");
    let calm = sim.post(&format!("{}/unplannedFailover", ids[2]), body()).await;
    assert_eq!(calm.status, 202, "then calm: {:?}", calm.body);

    let counters = &sim.admin("counters").await["requests"];
    let landed =
        json!([counters["next_writes_throttled"], counters["next_writes_failed"], counters["next_writes_dropped"]]);
    assert_eq!(landed, json!([2, 1, 1]));
    let left = sim.admin("faults").await;
    assert_eq!([&left["throttle_next_writes"], &left["fail_next_writes"], &left["drop_next_writes"]], [&json!(0); 3]);
    let statuses: Vec<u64> = sim.oplog().await.iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [429, 429, 503, 400, 202, 202]);
}

#[tokio::test]
async fn the_record_of_deletes_says_whose_each_was_and_whether_it_had_been_reprotected() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.reprotect_removes_source_vm = false;
    let sim = Sim::start(config).await;
    let sub = sub(&sim);
    for vm in ["vm-00001", "vm-00002"] {
        let id = sim.item(vm).await["id"].as_str().unwrap().to_owned();
        let a =
            sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        sim.advance(1000.0).await;
        assert_eq!(sim.post(&format!("{id}/failoverCommit"), None).await.status, 202);
        sim.advance(1000.0).await;
    }
    // vm-00001 is reprotected; vm-00002 is not.
    let committed = sim.item("vm-00001").await;
    let id = committed["id"].as_str().unwrap().to_owned();
    let r = sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    sim.advance(100_000.0).await;

    let vm = |rg: &str, name: &str| {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
    };
    // The VMs left in the region they failed back from.
    assert_eq!(sim.delete(&vm("rg-app-asr", "vm-00001")).await.status, 202);
    assert_eq!(sim.delete(&vm("rg-app-asr", "vm-00002")).await.status, 202);
    // And the NIC of the first, once its VM is gone.
    sim.advance(1000.0).await;
    let nic = format!(
        "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Network/networkInterfaces/vm-00001-nic"
    );
    assert_eq!(sim.delete(&nic).await.status, 202);

    let deletes = sim.admin("deletes").await;
    let rows: Vec<(String, String, bool, String, String)> = deletes
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["vm"].as_str().unwrap_or("-").to_owned(),
                d["reprotected"].as_bool().unwrap(),
                d["region"].as_str().unwrap().to_owned(),
                d["vm_region"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let (primary, secondary) = {
        let info = sim.admin("info").await;
        (info["primary_region"].as_str().unwrap().to_owned(), info["secondary_region"].as_str().unwrap().to_owned())
    };
    let row = |kind: &str, vm: &str, reprotected| {
        (kind.to_owned(), vm.to_owned(), reprotected, secondary.clone(), primary.clone())
    };
    assert_eq!(rows, [row("vm", "vm-00001", true), row("vm", "vm-00002", false), row("nic", "vm-00001", true)]);
    assert!(deletes[1]["protection_state"].as_str().unwrap().contains("Committed"), "{deletes:#?}");
    assert!(deletes[0]["resource"].as_str().unwrap().ends_with("/virtualmachines/vm-00001"));
}

#[tokio::test]
async fn a_countdown_fault_answers_the_write_it_is_spent_on_even_in_a_storm() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.put_faults(json!({"fail_next_writes": 1, "throttle_storm_rate": 1.0})).await, 200);
    let first =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(first.status, 503, "the 503 it was spent on, not the storm's 429: {:?}", first.body);
    let second =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(second.status, 429, "then the storm");
    assert_eq!(sim.admin("counters").await["requests"]["next_writes_failed"], 1);
}
