//! The Azure client against the ASR simulator over real HTTP: every operation end to end,
//! at-most-once submission when a response is lost, Retry-After during a 429 storm, and 1,000
//! jobs followed with few reads. (The fleet budget shared by processes is `tern-service`'s.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client_config, sim_config, start_sim};
use serde_json::{Value, json};
use tern_asr::client::{
    AsrClient, FailoverDirection, JobQuery, Mutation, ReprotectSettings, SubmitOutcome, request_key,
};
use tern_asr::point::PointChoice;
use tern_asr::watcher::{JobWatcher, WatcherOptions};
use tern_asr::{AsrError, ErrorClass, TokenProvider, Unlimited};
use tern_asr_sim::RunningSimulator;

fn client(sim: &RunningSimulator) -> AsrClient {
    AsrClient::new(client_config(sim), TokenProvider::static_token("test-token"), Arc::new(Unlimited)).unwrap()
}

async fn admin(sim: &RunningSimulator, path: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{}/_sim/{path}", sim.url())).await.unwrap().json().await.unwrap()
}

async fn item(c: &AsrClient, vm: &str) -> tern_asr::model::ProtectedItem {
    c.find_item_by_vm_name(vm, None).await.unwrap().unwrap_or_else(|| panic!("{vm} is protected"))
}

/// A request id of this test's own.
fn key(what: &str) -> String {
    request_key(&["client-test", what, &rand::random::<u64>().to_string()])
}

#[tokio::test]
async fn every_operation_works_end_to_end() {
    let mut config = sim_config(8);
    config.estate.unhealthy_every = 8;
    config.estate.recovery_plan_size = 2;
    let sim = start_sim(config).await;
    let c = client(&sim);

    // Topology.
    let fabrics = c.list_fabrics().await.unwrap();
    assert_eq!(fabrics.len(), 2);
    let containers = c.list_containers(&fabrics[0].name).await.unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(c.list_mappings(&fabrics[0].name, &containers[0].name).await.unwrap().len(), 1);
    assert!(!c.list_policies().await.unwrap().is_empty());
    assert_eq!(c.list_items(None, None).await.unwrap().len(), 8);
    let secondary = fabrics.iter().find(|f| f.name.contains("westus")).unwrap();
    let home = &c.list_containers(&secondary.name).await.unwrap()[0];
    let in_home = c.list_items(Some(&home.id), None).await.unwrap();
    assert_eq!(in_home.len(), 8, "ready for failback: all live in the secondary container");

    // Recovery point choice.
    let vm1 = item(&c, "vm-00001").await;
    assert_eq!(c.get_item(&vm1.id).await.unwrap().name, vm1.name);
    assert!(vm1.allows("UnplannedFailover") && vm1.lifecycle_id().is_some());
    let points = c.recovery_points(&vm1.id).await.unwrap();
    assert!(points.len() > 100 && points[0].time() > points[1].time(), "newest first");
    let processed = c.resolve_point(&vm1, &PointChoice::LatestProcessed).await.unwrap();
    assert_eq!(processed.send.as_deref(), Some(points[0].id.as_str()));
    assert!(!processed.misses_disks());
    let app = c.resolve_point(&vm1, &PointChoice::LatestAppConsistent).await.unwrap();
    assert!(app.point.unwrap().is_app_consistent());
    assert_eq!(c.resolve_point(&vm1, &PointChoice::Latest).await.unwrap().send, None);
    let custom = c.resolve_point(&vm1, &PointChoice::Custom(points[5].id.clone())).await.unwrap();
    assert_eq!(custom.send.as_deref(), Some(points[5].id.as_str()));
    let bogus = c.resolve_point(&vm1, &PointChoice::Custom("nope".into())).await.unwrap_err();
    assert!(bogus.to_string().contains("recovery_point"), "{bogus}");
    assert!(PointChoice::Custom("x".into()).plan_point_type().is_err(), "custom points are single-VM only");

    // Failover -> apply another point -> commit -> reprotect.
    let sub = c
        .unplanned_failover(&vm1, FailoverDirection::PrimaryToRecovery, processed.send.clone(), true, &key("fo1"))
        .await
        .unwrap();
    assert_eq!(sub.outcome, SubmitOutcome::Accepted);
    let job = c.wait_job(sub.job.as_deref().unwrap(), None).await.unwrap();
    assert!(job.activity_id().is_some(), "a GET of a job carries its activity id: {job:?}");
    let used = &job.properties.custom_details.as_ref().unwrap().protected_item_details[0];
    // ASR's job names the point (a bare GUID), where the request carried its ARM id.
    let sent_name = processed.send.as_deref().and_then(|id| id.rsplit('/').next());
    assert_eq!(used.recovery_point_id.as_deref(), sent_name, "the point actually used is reported");
    let failed_over = c.get_item(&vm1.id).await.unwrap();
    assert_eq!(failed_over.active_location(), "Recovery");
    let older = c.apply_recovery_point(&failed_over, &points[3].id, &key("arp")).await.unwrap();
    c.wait_job(older.job.as_deref().unwrap(), None).await.unwrap();
    let commit = c.commit(&c.get_item(&vm1.id).await.unwrap(), &key("commit1")).await.unwrap();
    c.wait_job(commit.job.as_deref().unwrap(), None).await.unwrap();
    let committed = c.get_item(&vm1.id).await.unwrap();
    assert!(committed.allows("SwitchProtection"));
    // Without a cache storage account for the region the VM runs in now, nothing is sent.
    let mut bare = client_config(&sim);
    bare.cache_storage_accounts.clear();
    let bare = AsrClient::new(bare, TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    let writes = admin(&sim, "oplog").await.as_array().unwrap().len();
    let err = bare.switch_protection(&committed, &ReprotectSettings::default(), &key("rp0")).await.unwrap_err();
    assert!(err.to_string().contains("no cache storage account for eastus"), "{err}");
    assert_eq!(admin(&sim, "oplog").await.as_array().unwrap().len(), writes, "nothing was sent");
    // With the region's account (from the configuration), the request names every disk of the
    // VM as it runs now, and Azure (the simulator, as strict) takes it.
    let reprotect = c.switch_protection(&committed, &ReprotectSettings::default(), &key("rp1")).await.unwrap();
    let job = c.wait_job(reprotect.job.as_deref().unwrap(), None).await.unwrap();
    let new_id = job.new_item_id().expect("the new item id is reported").to_owned();
    let rehomed = c.get_item(&new_id).await.unwrap();
    assert_eq!((rehomed.protection_state(), rehomed.lifecycle_id()), ("Protected", vm1.lifecycle_id()));
    let found = c.find_item(&vm1.name, vm1.lifecycle_id()).await.unwrap().unwrap();
    assert_eq!(found.id.to_ascii_lowercase(), new_id.to_ascii_lowercase());

    // Cancel a failover.
    let vm2 = item(&c, "vm-00002").await;
    let s = c.unplanned_failover(&vm2, FailoverDirection::PrimaryToRecovery, None, false, &key("fo2")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c.cancel_failover(&c.get_item(&vm2.id).await.unwrap(), &key("cancel")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    assert_eq!(c.get_item(&vm2.id).await.unwrap().active_location(), "Primary");

    // Test failover and cleanup.
    let vm3 = item(&c, "vm-00003").await;
    let s = c
        .test_failover(
            &vm3,
            Some("/subscriptions/x/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/iso".into()),
            None,
            &key("tfo"),
        )
        .await
        .unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c.test_failover_cleanup(&c.get_item(&vm3.id).await.unwrap(), "drill ok", &key("tfoc")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();

    // Repair the unhealthy one; disable another.
    let vm8 = item(&c, "vm-00008").await;
    assert!(vm8.allows("RepairReplication"));
    let s = c.repair_replication(&vm8, &key("repair")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let vm4 = item(&c, "vm-00004").await;
    let s = c.disable_replication(&vm4, &key("disable")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    assert_eq!(c.get_item(&vm4.id).await.unwrap_err().class(), ErrorClass::NotFound);

    // An illegal operation is refused with ASR's details and classified.
    let refused = c.commit(&c.get_item(&vm3.id).await.unwrap(), &key("bad-commit")).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::PreconditionFailed, "{refused}");
    assert!(refused.recommended_action().is_some());

    // Jobs.
    let all = c.list_jobs(&JobQuery::default()).await.unwrap();
    assert!(all.len() >= 10);
    let running = c.list_jobs(&JobQuery { states: vec!["InProgress".into()], ..JobQuery::default() }).await.unwrap();
    assert!(running.is_empty());
    assert_eq!(c.get_job(&all[0].id).await.unwrap().name, all[0].name);

    // Recovery plans: boot groups become waves.
    let plans = c.list_plans().await.unwrap();
    let plan = plans
        .iter()
        .find(|p| p.boot_groups().iter().flatten().count() == 2 && p.name.ends_with("003"))
        .unwrap_or(&plans[2])
        .clone();
    assert!(!plan.boot_groups().is_empty());
    let s = c.plan_test_failover(&plan.name, FailoverDirection::RecoveryToPrimary, None, &key("ptfo")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c.plan_test_failover_cleanup(&plan.name, "ok", &key("ptfoc")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c
        .plan_failover(
            &plan.name,
            FailoverDirection::RecoveryToPrimary,
            PointChoice::LatestProcessed.plan_point_type().unwrap(),
            true,
            &key("pfo"),
        )
        .await
        .unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    let s = c.plan_commit(&plan.name, &key("pcommit")).await.unwrap();
    c.wait_job(s.job.as_deref().unwrap(), None).await.unwrap();
    assert_eq!(c.get_plan(&plan.name).await.unwrap().name, plan.name);

    // Compute and network: what cleanup reads and deletes.
    let vms = c.list_vms("rg-app-asr").await.unwrap();
    assert!(!vms.is_empty());
    // vm-00007 is in no plan that failed over above: it still runs in the secondary region.
    let victim = vms.iter().find(|v| v.name == "vm-00007").unwrap().clone();
    let live = c.get_vm(&victim.id).await.unwrap().unwrap();
    assert_eq!(live.power_state(), Some("running"));
    let nic = live.nic_ids()[0].clone();
    c.delete_resource(&victim.id, &key("del-vm")).await.unwrap();
    assert!(c.get_vm(&victim.id).await.unwrap().is_none());
    assert!(c.get_nic(&nic).await.unwrap().is_some(), "as in Azure, deleting a VM keeps its NIC");
    c.delete_resource(&nic, &key("del-nic")).await.unwrap();
    assert!(c.get_nic(&nic).await.unwrap().is_none());
    c.delete_resource(&victim.id, &key("del-vm-again")).await.expect("deleting what is gone succeeds");
    assert!(!c.list_nics("rg-app-asr").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_token_goes_out_as_a_bearer_header() {
    let mut config = sim_config(1);
    config.token = Some("the-right-token".into());
    let sim = start_sim(config).await;
    let right =
        AsrClient::new(client_config(&sim), TokenProvider::static_token("the-right-token"), Arc::new(Unlimited))
            .unwrap();
    assert_eq!(right.list_fabrics().await.unwrap().len(), 2);
    let wrong =
        AsrClient::new(client_config(&sim), TokenProvider::static_token("another-token"), Arc::new(Unlimited)).unwrap();
    let err = wrong.list_fabrics().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unauthorized);
    assert!(!format!("{right:?}").contains("the-right-token"), "the client never prints its token");
}

/// A simulator that applies every mutation but never answers it, and an impatient client.
async fn dropping_sim(zero_latency: bool) -> (RunningSimulator, AsrClient) {
    let mut config = sim_config(2);
    config.zero_latency = zero_latency;
    config.faults.drop_response_rate = 1.0;
    config.faults.drop_response_hang_secs = 30;
    let sim = start_sim(config).await;
    let mut cfg = client_config(&sim);
    cfg.request_timeout = Duration::from_millis(700);
    let c = AsrClient::new(cfg, TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    (sim, c)
}

async fn advance(sim: &RunningSimulator, seconds: f64) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/clock/advance", sim.url()))
        .json(&json!({ "seconds": seconds }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn a_lost_response_is_found_by_its_request_id_and_never_sent_twice() {
    // Realistic durations: when the client looks, the new job is still a placeholder (absent
    // from lists, no scenario) and the item does not name it yet.
    let (sim, c) = dropping_sim(false).await;
    let vm1 = item(&c, "vm-00001").await;
    let k = key("lost");
    let sent_at = time::OffsetDateTime::now_utc();
    let sub = c.unplanned_failover(&vm1, FailoverDirection::PrimaryToRecovery, None, false, &k).await.unwrap();
    assert_eq!(sub.outcome, SubmitOutcome::Unsettled, "too early to tell: {sub:?}");
    // Later, the job shows: it is found by the activity id its request id became.
    advance(&sim, 120.0).await;
    let sub = c.settle(&vm1, Mutation::Failover, std::slice::from_ref(&k), sent_at).await.unwrap();
    assert_eq!(sub.outcome, SubmitOutcome::AlreadyRunning, "{sub:?}");
    let job = c.get_job(sub.job.as_deref().unwrap()).await.unwrap();
    assert!(job.started_by(&k), "{:?}", job.properties.activity_id);
    let posts: Vec<Value> = admin(&sim, "oplog").await.as_array().unwrap().clone();
    assert_eq!(posts.len(), 1, "exactly one POST reached Azure: {posts:#?}");
    // Another request id finds nothing: a job is never taken for ours on its scenario alone.
    let other = c.find_submitted(&vm1, Mutation::Failover, &[key("other")], sent_at).await.unwrap();
    assert!(other.is_none(), "{other:?}");

    // Zero latency: the job is over before the client looks; it is found among recent jobs.
    let (sim, c) = dropping_sim(true).await;
    let vm2 = item(&c, "vm-00002").await;
    let sub = c.unplanned_failover(&vm2, FailoverDirection::PrimaryToRecovery, None, false, &key("lost2")).await;
    let sub = sub.unwrap();
    assert_eq!(sub.outcome, SubmitOutcome::AlreadyFinished, "{sub:?}");
    assert!(sub.job.is_some(), "the finished job is found");
    assert_eq!(admin(&sim, "oplog").await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_that_never_started_counts_as_not_started_only_after_the_lost_request_window() {
    // Every request answered 503 before it reaches the estate: nothing is applied.
    let mut config = sim_config(1);
    config.faults.transient_5xx_rate = 1.0;
    let sim = start_sim(config).await;
    let mut cfg = client_config(&sim);
    cfg.lost_request_window = Duration::from_millis(1500);
    cfg.read_attempts = 1;
    let c = AsrClient::new(cfg, TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    let mut faults = admin(&sim, "faults").await;
    faults["transient_5xx_rate"] = json!(0.0);
    let put = |faults: Value| {
        let url = format!("{}/_sim/faults", sim.url());
        async move { reqwest::Client::new().put(url).json(&faults).send().await.unwrap() }
    };
    put(faults.clone()).await;
    let vm = item(&c, "vm-00001").await;
    faults["transient_5xx_rate"] = json!(1.0);
    put(faults.clone()).await;
    let k = key("never");
    let sent_at = time::OffsetDateTime::now_utc();
    // The POST and the reads that look for its job all get 503s: the client says it cannot
    // tell, rather than guess.
    let outcome = c.unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, &k).await;
    assert!(outcome.as_ref().map_or(true, |s| s.outcome == SubmitOutcome::Unsettled), "{outcome:?}");
    faults["transient_5xx_rate"] = json!(0.0);
    put(faults).await;
    let early = c.settle(&vm, Mutation::Failover, std::slice::from_ref(&k), sent_at).await.unwrap();
    assert_eq!(early.outcome, SubmitOutcome::Unsettled, "within the window: {early:?}");
    tern_testkit::wait_until("the lost-request window to pass", Duration::from_secs(10), || async {
        c.settle(&vm, Mutation::Failover, std::slice::from_ref(&k), sent_at).await.unwrap().outcome
            == SubmitOutcome::NotStarted
    })
    .await
    .unwrap();
    let applied = admin(&sim, "oplog").await.as_array().unwrap().iter().filter(|e| e["status"] == 202).count();
    assert_eq!(applied, 0, "nothing was applied");
}

#[tokio::test]
async fn during_a_429_storm_no_request_goes_out_before_its_retry_after() {
    let seed = tern_testkit::Seed::new();
    let mut config = sim_config(3);
    config.faults.seed = seed.value();
    config.faults.throttle_storm_rate = 0.4;
    config.faults.throttle_storm_retry_after_secs = 1;
    let sim = start_sim(config).await;
    let c = client(&sim);
    // Read until the storm has hit at least three requests (bounded, whatever the seed).
    for _ in 0..60 {
        c.list_fabrics().await.unwrap();
        if admin(&sim, "counters").await["requests"]["storm_throttled"].as_u64().unwrap() >= 3 {
            break;
        }
    }
    let vm = item(&c, "vm-00001").await;
    c.unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, &key("storm")).await.unwrap();
    let log = admin(&sim, "requests").await.as_array().unwrap().clone();
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    assert!(throttled >= 3, "the storm hit some requests: {log:#?}");
    for pair in log.windows(2) {
        if pair[0]["status"] == 429 {
            let gap = pair[1]["t_ms"].as_u64().unwrap() - pair[0]["t_ms"].as_u64().unwrap();
            assert!(gap >= 1000, "a request went out {gap} ms after a 429 asking for 1 s: {pair:#?}");
        }
    }
    let posts = admin(&sim, "oplog").await.as_array().unwrap().iter().filter(|e| e["status"] == 202).count();
    assert_eq!(posts, 1, "a throttled POST is sent again only because nothing was applied");
}

#[tokio::test]
async fn a_thousand_in_flight_jobs_are_followed_with_few_reads() {
    let mut config = sim_config(1000);
    config.zero_latency = false;
    config.time_compression = 100.0; // failovers take 1.2-3 s of real time
    let sim = start_sim(config).await;
    let c = client(&sim);
    let items = c.list_items(None, None).await.unwrap();
    let mut jobs = Vec::new();
    for it in &items {
        let s = c
            .unplanned_failover(
                it,
                FailoverDirection::PrimaryToRecovery,
                Some(c.recovery_points(&it.id).await.map(|p| p[0].id.clone()).unwrap_or_default())
                    .filter(|s| !s.is_empty()),
                false,
                &key(&it.name),
            )
            .await
            .unwrap();
        jobs.push(s.job.unwrap());
    }
    let watcher = JobWatcher::spawn(
        c.clone(),
        WatcherOptions { interval: Duration::from_millis(500), max_reads_per_sec: 4.0, ..WatcherOptions::default() },
    );
    let before = admin(&sim, "requests").await.as_array().unwrap().len();
    let started = std::time::Instant::now();
    let waits = jobs.iter().map(|j| watcher.wait(j));
    let results = futures::future::join_all(waits).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| r.is_ok()), "{:?}", results.iter().find(|r| r.is_err()));
    let log = admin(&sim, "requests").await.as_array().unwrap().clone();
    let job_reads: Vec<&str> = log[before..]
        .iter()
        .filter(|r| r["method"] == "GET")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.contains("replicationJobs"))
        .collect();
    // Lists, paced: a few reads a second for a thousand jobs.
    let lists = job_reads.iter().filter(|p| p.ends_with("replicationJobs")).count();
    let rate = lists as f64 / elapsed;
    assert!(rate <= 5.0, "{lists} list reads in {elapsed:.1} s = {rate:.1} reads/s for 1000 jobs");
    // Lists are summaries: each job is read once in full when it ended — once, never per poll.
    let mut gets: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for p in job_reads.iter().filter(|p| !p.ends_with("replicationJobs")) {
        *gets.entry(p.rsplit('/').next().unwrap()).or_default() += 1;
    }
    assert_eq!(gets.len(), 1000, "every ended job read in full");
    assert!(gets.values().all(|n| *n == 1), "a job was read more than once: {:?}", gets.values().max());
    assert_eq!(watcher.tracked(), 0);
    let _: Result<(), AsrError> = Ok(());
}
