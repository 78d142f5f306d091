//! ARM throttling, every fault kind (reproducible from a seed), and the operation log.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tern_asr_sim::{BucketConfig, SeedState};

#[tokio::test]
async fn buckets_count_down_in_headers_then_answer_429_with_retry_after() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.throttle.enabled = true;
    config.throttle.writes = BucketConfig { capacity: 3.0, refill_per_sec: 0.2 };
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();

    let mut remaining = Vec::new();
    for _ in 0..3 {
        // Refused operations spend write budget too, as in ARM.
        let r = sim.post(&format!("{id}/failoverCommit"), None).await;
        assert_eq!(r.status, 400);
        remaining.push(r.header("x-ms-ratelimit-remaining-subscription-writes").unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let throttled =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("5"), "one token comes back in 5 s at 0.2/s");
    assert_eq!(throttled.error_code(), "SubscriptionRequestsThrottled");
    assert_eq!(state(&sim.item("vm-00001").await).0, "Protected", "a throttled request changes nothing");

    // Reads have their own bucket.
    let read = sim.get(&id).await;
    assert_eq!(read.status, 200);
    let reads_left: u64 = read.header("x-ms-ratelimit-remaining-subscription-reads").unwrap().parse().unwrap();
    assert!((240..250).contains(&reads_left), "{reads_left}");
    let counters = sim.admin("counters").await;
    assert_eq!(counters["requests"]["throttled"], 1);
}

/// A failover of every VM; returns the names whose failover job failed with `code`.
async fn fail_over_all(sim: &Sim, vms: usize, code: &str) -> BTreeSet<String> {
    let mut failed = BTreeSet::new();
    for n in 1..=vms {
        let vm = format!("vm-{n:05}");
        let id = sim.item(&vm).await["id"].as_str().unwrap().to_owned();
        let accepted =
            sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
        assert_eq!(accepted.status, 202);
        let job = sim.job_of(&accepted).await;
        if props(&job, "state") == "Failed" {
            let error = &props(&job, "errors")[0];
            assert_eq!(error["serviceErrorDetails"]["code"], code);
            assert_eq!(error["providerErrorDetails"]["errorCode"], code.parse::<i64>().unwrap());
            assert!(!error["serviceErrorDetails"]["recommendedAction"].as_str().unwrap().is_empty());
            let item = sim.item(&vm).await;
            assert_eq!(state(&item), ("UnplannedFailoverFailed".into(), "Primary".into()));
            assert!(allowed(&item).contains(&"UnplannedFailover".to_owned()), "a failed failover may be retried");
            let location = sim.get(accepted.header("location").unwrap()).await;
            assert_eq!(
                (location.status, location.error_code().as_str()),
                (400, code),
                "the Location URL reports the failure"
            );
            failed.insert(vm);
        }
    }
    failed
}

#[tokio::test]
async fn permanent_failures_hit_the_same_vms_for_the_same_seed() {
    let seed = Seed::new();
    let faulty = |fault_seed: u64| {
        let mut config = quick(40, SeedState::ReadyForFailback);
        config.faults = serde_json::from_value(json!({
            "seed": fault_seed,
            "failures": [
                {"fraction": 0.2, "operation": "failover", "code": "28031"},
                {"vms": ["vm-00003"], "operation": "commit", "code": "150097"},
            ],
        }))
        .unwrap();
        config
    };
    let a = Sim::start(faulty(seed.value())).await;
    let b = Sim::start(faulty(seed.value())).await;
    let c = Sim::start(faulty(seed.value().wrapping_add(1))).await;
    let (fa, fb, fc) = (
        fail_over_all(&a, 40, "28031").await,
        fail_over_all(&b, 40, "28031").await,
        fail_over_all(&c, 40, "28031").await,
    );
    assert_eq!(fa, fb, "same seed, same failures");
    assert!(!fa.is_empty() && fa.len() < 20, "about 20% of 40: {fa:?}");
    assert_ne!(fa, fc, "another seed picks other VMs");

    // A named VM fails at its own phase only.
    if !fa.contains("vm-00003") {
        let id = a.item("vm-00003").await["id"].as_str().unwrap().to_owned();
        let commit = a.post(&format!("{id}/failoverCommit"), None).await;
        let job = a.job_of(&commit).await;
        assert_eq!(props(&job, "state"), "Failed");
        assert_eq!(props(&job, "errors")[0]["serviceErrorDetails"]["code"], "150097");
        assert_eq!(
            state(&a.item("vm-00003").await).0,
            "UnplannedFailoverCommitPendingStatesBegin",
            "commit may be retried"
        );
    }
}

#[tokio::test]
async fn a_failed_source_shutdown_is_recorded_and_the_failover_continues() {
    let mut config = quick(2, SeedState::ReadyForFailback);
    config.faults.shutdown_failures.vms = vec!["vm-00001".into()];
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", true, None))).await;
    let job = sim.job_of(&accepted).await;
    assert_eq!(props(&job, "state"), "Succeeded");
    assert_eq!(props(&job, "stateDescription"), "CompletedWithInformation");
    let shutdown = props(&job, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskId"] == "ShutdownVmOnPrimaryForUFO")
        .unwrap()
        .clone();
    assert_eq!(shutdown["state"], "Failed");
    assert!(
        shutdown["errors"][0]["serviceErrorDetails"]["message"].as_str().unwrap().contains("could not be shut down")
    );
    assert_eq!(state(&sim.item("vm-00001").await).1, "Recovery", "the failover went on");
    let sub = sim.running.info().subscription_id.clone();
    let source = sim.get(&format!("/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/virtualMachines/vm-00001?$expand=instanceView")).await;
    assert_eq!(
        source.body["properties"]["instanceView"]["statuses"][1]["code"], "PowerState/running",
        "the source kept running"
    );
}

async fn statuses(sim: &Sim, n: usize) -> Vec<u16> {
    let path = format!("{}/replicationFabrics", sim.vault());
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(sim.get(&path).await.status);
    }
    out
}

#[tokio::test]
async fn transient_errors_storms_and_latency_spikes_are_reproducible() {
    let seed = Seed::new();
    let config = || {
        let mut c = quick(1, SeedState::ReadyForFailback);
        c.faults.seed = seed.value();
        c.faults.transient_5xx_rate = 0.3;
        c.faults.throttle_storm_rate = 0.2;
        c.faults.throttle_storm_retry_after_secs = 7;
        c
    };
    let (a, b) = (Sim::start(config()).await, Sim::start(config()).await);
    let (sa, sb) = (statuses(&a, 60).await, statuses(&b, 60).await);
    assert_eq!(sa, sb, "the same seed gives the same sequence");
    for code in [200, 429, 500] {
        assert!(sa.contains(&code), "{code} expected among {sa:?}");
    }
    let storm = loop {
        let r = a.get(&format!("{}/replicationFabrics", a.vault())).await;
        if r.status == 429 {
            break r;
        }
    };
    assert_eq!(storm.header("retry-after"), Some("7"));
    assert!(storm.header("retry-after").is_some() && storm.status == 429);
    let counters = a.admin("counters").await;
    assert!(counters["requests"]["storm_throttled"].as_u64().unwrap() > 0);
    assert!(counters["requests"]["transient_5xx"].as_u64().unwrap() > 0);

    let mut slow = quick(1, SeedState::ReadyForFailback);
    slow.faults.latency_spike_rate = 1.0;
    slow.faults.latency_spike_ms = 300;
    let slow = Sim::start(slow).await;
    let t = Instant::now();
    assert_eq!(slow.get(&format!("{}/replicationFabrics", slow.vault())).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "a spike delays the answer");
}

#[tokio::test]
async fn a_dropped_response_still_applies_the_operation() {
    let mut config = quick(1, SeedState::ReadyForFailback);
    config.faults.drop_response_rate = 1.0;
    config.faults.drop_response_hang_secs = 30;
    let sim = Sim::start(config).await;
    let id = sim.item("vm-00001").await["id"].as_str().unwrap().to_owned();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = impatient
        .post(format!("{}{id}/unplannedFailover?{API}", sim.url()))
        .bearer_auth("t")
        .json(&failover_body("PrimaryToRecovery", false, None))
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "the client sees a timeout");
    assert_eq!(state(&sim.item("vm-00001").await).1, "Recovery", "yet the failover happened");
    let log = sim.oplog().await;
    assert_eq!((log[0]["operation"].as_str(), log[0]["status"].as_u64()), (Some("unplannedFailover"), Some(202)));
    assert_eq!(sim.admin("counters").await["requests"]["dropped_responses"], 1);
}

#[tokio::test]
async fn a_5xx_answer_applies_nothing_and_has_arm_s_error_shape() {
    let sim = Sim::start(quick(1, SeedState::ReadyForFailback)).await;
    let item = sim.item("vm-00001").await;
    let id = item["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.put_faults(json!({"transient_5xx_rate": 1.0})).await, 200);

    let write =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!((write.status, write.error_code().as_str()), (503, "ServiceUnavailable"), "{:?}", write.body);
    assert!(!write.error_message().is_empty() && write.header("x-ms-request-id").is_some(), "{write:?}");
    let read = sim.get(&id).await;
    assert_eq!((read.status, read.error_code().as_str()), (500, "InternalServerError"), "{:?}", read.body);
    let log = sim.oplog().await;
    assert_eq!(log.len(), 1, "the oplog records mutating requests only: {log:#?}");
    assert_eq!((log[0]["operation"].as_str(), log[0]["status"].as_u64()), (Some("unplannedFailover"), Some(503)));

    assert_eq!(sim.put_faults(json!({})).await, 200);
    assert_eq!(state(&sim.item("vm-00001").await), state(&item), "a 5xx left the item as it was");
    assert!(allowed(&sim.item("vm-00001").await).contains(&"UnplannedFailover".to_owned()), "and it may be sent again");
    let retried =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(retried.status, 202, "{:?}", retried.body);
    assert_eq!(sim.admin("counters").await["requests"]["transient_5xx"], 2);
}

#[tokio::test]
async fn faults_can_be_changed_at_run_time_and_bad_specs_are_refused() {
    let sim = Sim::start(quick(2, SeedState::ReadyForFailback)).await;
    assert_eq!(sim.put_faults(json!({"transient_5xx_rate": 2.0})).await, 400);
    assert_eq!(sim.put_faults(json!({"no_such_fault": 1})).await, 400);
    assert_eq!(sim.admin("faults").await["transient_5xx_rate"], 0.0, "a refused spec changes nothing");
    assert_eq!(
        sim.put_faults(json!({"failures": [{"vms": ["vm-00002"], "operation": "failover", "code": "28031"}]})).await,
        200
    );
    assert_eq!(fail_over_all(&sim, 2, "28031").await, BTreeSet::from(["vm-00002".to_owned()]));
}

#[tokio::test]
async fn the_operation_log_records_every_mutating_request() {
    let sim = Sim::start(quick(2, SeedState::ReadyForFailback)).await;
    let item = sim.item("vm-00001").await;
    let id = item["id"].as_str().unwrap().to_owned();
    sim.get(&id).await;
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    sim.post(&format!("{id}/failoverCommit"), None).await;
    let committed = sim.item("vm-00001").await;
    sim.post(&format!("{}/switchprotection", container_of(&id)), Some(sim.switch_body(&committed))).await;
    let sub = sim.running.info().subscription_id.clone();
    let del = sim
        .delete(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-app-asr/providers/Microsoft.Compute/virtualMachines/vm-00002"
        ))
        .await;
    assert_eq!(del.status, 202);

    let log: Vec<Value> = sim.oplog().await;
    let summary: Vec<(String, String, String, u64)> = log
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().into(),
                e["operation"].as_str().unwrap().into(),
                e["item"].as_str().unwrap().into(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let s = |m: &str, o: &str, i: &str, st: u64| (m.to_owned(), o.to_owned(), i.to_owned(), st);
    assert_eq!(
        summary,
        [
            s("POST", "unplannedFailover", "vm-00001", 202),
            s("POST", "unplannedFailover", "vm-00001", 400),
            s("POST", "failoverCommit", "vm-00001", 202),
            s("POST", "switchProtection", "vm-00001", 202),
            s("DELETE", "delete", "vm-00002", 202),
        ],
        "GETs are not logged; refused requests are, with their status"
    );
    for e in &log {
        let at = e["at"].as_str().unwrap();
        assert!(time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(), "{at}");
        assert!(e["path"].as_str().unwrap().to_ascii_lowercase().starts_with("/subscriptions/"));
    }
}

/// The `standardDSv3Family` usage of `region` (current, limit) as Compute's usages list shows it.
async fn ds_v3_usage(sim: &Sim, region: &str) -> (i64, i64) {
    let sub = &sim.running.info().subscription_id;
    let r = sim.get(&format!("/subscriptions/{sub}/providers/Microsoft.Compute/locations/{region}/usages")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let usage =
        r.body["value"].as_array().unwrap().iter().find(|u| u["name"]["value"] == "standardDSv3Family").unwrap();
    assert_eq!(usage["unit"], "Count");
    (usage["currentValue"].as_i64().unwrap(), usage["limit"].as_i64().unwrap())
}

#[tokio::test]
async fn a_failover_past_the_vcpu_quota_fails_with_28031_and_usages_count_the_running_vms() {
    let sim = Sim::start(quick(3, SeedState::ReadyForFailback)).await;
    let first = sim.item("vm-00001").await;
    let region = props(&first, "providerSpecificDetails")["recoveryFabricLocation"].as_str().unwrap().to_owned();
    let (before, _) = ds_v3_usage(&sim, &region).await;
    // Room for one more Standard_D2s_v3 (2 vCPUs) in the target region.
    let capacity = json!({"quotas": [{"region": region, "family": "standardDSv3Family", "limit": before + 2}]});
    let put = sim.http.put(format!("{}/_sim/capacity", sim.url())).json(&capacity).send().await.unwrap();
    assert_eq!(put.status().as_u16(), 200);
    assert_eq!(ds_v3_usage(&sim, &region).await, (before, before + 2));

    let fail_over = |vm: &'static str| {
        let sim = &sim;
        async move {
            let id = sim.item(vm).await["id"].as_str().unwrap().to_owned();
            let accepted = sim
                .post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None)))
                .await;
            assert_eq!(accepted.status, 202);
            let accepted = &accepted;
            wait_until("the failover job to end", Duration::from_secs(10), || async move {
                let job = sim.job_of(accepted).await;
                props(&job, "state") != "InProgress" && props(&job, "state") != "NotStarted"
            })
            .await;
            sim.job_of(accepted).await
        }
    };
    let fits = fail_over("vm-00001").await;
    assert_eq!(props(&fits, "state"), "Succeeded", "{fits:#}");
    assert_eq!(ds_v3_usage(&sim, &region).await.0, before + 2, "the VM it created runs there and counts");

    let over = fail_over("vm-00002").await;
    assert_eq!(props(&over, "state"), "Failed");
    let error = &props(&over, "errors")[0]["serviceErrorDetails"];
    assert_eq!(error["code"], "28031");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("standardDSv3Family") && message.contains(&format!("Current Limit: {}", before + 2)),
        "{message}"
    );
    assert_eq!(ds_v3_usage(&sim, &region).await.0, before + 2, "a failed failover creates nothing");

    // Resource SKUs of the region: the size the VMs use, its family and vCPUs, no restriction.
    let sub = &sim.running.info().subscription_id;
    let skus = sim
        .get(&format!(
            "/subscriptions/{sub}/providers/Microsoft.Compute/skus?api-version=2021-07-01&$filter=location%20eq%20%27{region}%27"
        ))
        .await;
    let d2 = skus.body["value"].as_array().unwrap().iter().find(|s| s["name"] == "Standard_D2s_v3").unwrap();
    assert_eq!(
        (d2["family"].as_str(), d2["resourceType"].as_str()),
        (Some("standardDSv3Family"), Some("virtualMachines"))
    );
    assert!(d2["capabilities"].as_array().unwrap().iter().any(|c| c["name"] == "vCPUs" && c["value"] == "2"));
    assert_eq!(d2["restrictions"], json!([]));
}
