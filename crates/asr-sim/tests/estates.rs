//! Several subscriptions, each with several vaults: every vault holds only its own items, VMs
//! and jobs; a subscription never sees another's resources; each subscription spends its own
//! ARM budget; and the admin API reports every vault and each subscription's requests.

mod support;

use serde_json::{Value, json};
use support::*;
use tern_asr_sim::{BucketConfig, SeedState, SimConfig, VaultInfo};

/// `vms` VMs ready for failback in each of 2 vaults of each of 2 subscriptions.
fn two_by_two(vms: usize) -> SimConfig {
    let mut c = quick(vms, SeedState::ReadyForFailback);
    c.subscriptions = 2;
    c.vaults_per_subscription = 2;
    c
}

/// The vaults as `/_sim/info` lists them.
async fn vaults(sim: &Sim) -> Vec<VaultInfo> {
    serde_json::from_value(sim.admin("info").await["vaults"].clone()).expect("info.vaults")
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`.
fn vault_path(v: &VaultInfo) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
        v.subscription_id, v.resource_group, v.vault
    )
}

/// Every protected item of a vault (the vault-wide list, following nextLinks).
async fn items_of(sim: &Sim, v: &VaultInfo) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(format!("{}/replicationProtectedItems", vault_path(v)));
    while let Some(url) = next {
        let r = sim.get(&url).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        out.extend(r.body["value"].as_array().unwrap().iter().cloned());
        next = r.body["nextLink"].as_str().map(str::to_owned);
    }
    out
}

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

/// The VMs of a resource group of subscription `sub`, as `(status, names)`.
async fn vms_in(sim: &Sim, sub: &str, rg: &str) -> (u16, Vec<String>) {
    let r =
        sim.get(&format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines")).await;
    let names = r.body["value"].as_array().map(|vms| names(vms)).unwrap_or_default();
    (r.status, names)
}

#[tokio::test]
async fn each_vault_holds_only_its_own_items_and_vms() {
    let sim = Sim::start(two_by_two(3)).await;
    let all = vaults(&sim).await;
    let ids: Vec<_> =
        all.iter().map(|v| (v.subscription_id.as_str(), v.resource_group.as_str(), v.vault.as_str())).collect();
    let (s1, s2) = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002");
    assert_eq!(
        ids,
        [
            (s1, "rg-tern-dr", "tern-vault"),
            (s1, "rg-tern-dr", "tern-vault-2"),
            (s2, "rg-tern-dr", "tern-vault"),
            (s2, "rg-tern-dr", "tern-vault-2"),
        ]
    );
    assert_eq!(sim.running.info().vaults, all, "the ready line lists the same vaults");
    let info = sim.admin("info").await;
    assert_eq!(
        (&info["subscription_id"], &info["vault"], &info["vault_id"]),
        (&json!(s1), &json!("tern-vault"), &json!(all[0].vault_id)),
        "the top-level fields stay the first vault's"
    );
    assert_eq!(all[0].vm_name_prefix, "", "the first vault keeps today's names");
    assert_eq!(all[3].vm_name_prefix, "s2v2-");
    assert_eq!(all[3].resource_groups["eastus"], "rg-app-s2v2");
    assert_eq!(all[3].resource_groups["westus"], "rg-app-s2v2-asr");

    for v in &all {
        let items = items_of(&sim, v).await;
        let expected: Vec<String> = (1..=3).map(|n| format!("{}vm-{n:05}", v.vm_name_prefix)).collect();
        assert_eq!(names(&items), expected, "vault {}", v.vault_id);
        for item in &items {
            let id = item["id"].as_str().unwrap().to_ascii_lowercase();
            assert!(id.starts_with(&v.vault_id.to_ascii_lowercase()), "{id} is under {}", v.vault_id);
            let vm = props(item, "providerSpecificDetails")["fabricObjectId"].as_str().unwrap().to_ascii_lowercase();
            let home = |rg: &str| format!("/subscriptions/{}/resourcegroups/{rg}/", v.subscription_id);
            assert!(
                v.resource_groups.values().any(|rg| vm.starts_with(&home(&rg.to_ascii_lowercase()))),
                "{vm} lives in a resource group of {}",
                v.vault_id
            );
        }
        // Ready for failback: the VMs run in the secondary region's resource group of their vault.
        let (status, vms) = vms_in(&sim, &v.subscription_id, &v.resource_groups["westus"]).await;
        assert_eq!((status, vms), (200, expected.clone()));
        // Each vault's topology is its own.
        let containers = sim.get(&format!("{}/replicationProtectionContainers", vault_path(v))).await;
        for c in containers.body["value"].as_array().unwrap() {
            assert!(c["id"].as_str().unwrap().to_ascii_lowercase().starts_with(&v.vault_id.to_ascii_lowercase()));
        }
    }

    // Seeding adds the VMs to every vault, each under its own prefix.
    let added = sim
        .http
        .post(format!("{}/_sim/seed", sim.url()))
        .json(&json!({"vms": 1, "name_prefix": "db"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.json::<Value>().await.unwrap()["items"], 16);
    for v in &all {
        let seeded = names(&items_of(&sim, v).await);
        let db = format!("{}db-00004", v.vm_name_prefix);
        assert!(seeded.contains(&db) && seeded.len() == 4, "vault {} has {seeded:?}", v.vault_id);
    }
    let counters = sim.admin("counters").await;
    assert_eq!(counters["estate"]["items"], 16, "the census covers every vault");
    assert_eq!(counters["estate"]["running_vms_by_region"]["westus"], 16);
}

#[tokio::test]
async fn a_failover_in_one_vault_makes_its_job_in_that_vault_only() {
    let sim = Sim::start(two_by_two(2)).await;
    let all = vaults(&sim).await;
    let target = &all[3];
    let item = items_of(&sim, target).await.into_iter().find(|i| i["name"] == "s2v2-vm-00001").unwrap();
    let id = item["id"].as_str().unwrap().to_owned();
    let accepted =
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let job_id = accepted.header("x-ms-request-id").unwrap().to_owned();
    assert!(job_id.starts_with(&format!("{}/replicationJobs/", target.vault_id)), "{job_id}");
    let location = accepted.header("location").unwrap().to_ascii_lowercase();
    assert!(location.contains(&vault_path(target).to_ascii_lowercase()), "{location}");
    let job_name = job_id.rsplit('/').next().unwrap().to_owned();
    let status_url = accepted.header("azure-asyncoperation").unwrap().to_owned();
    assert!(status_url.contains(&format!("{}/replicationOperationStatus/{job_name}", target.vault_id)), "{status_url}");
    assert_eq!(sim.get(&status_url).await.body["status"], "Succeeded");

    let job = sim.job_of(&accepted).await;
    assert_eq!(props(&job, "state"), "Succeeded");
    assert_eq!(sim.get(accepted.header("location").unwrap()).await.status, 200, "its Location answers");
    for v in &all {
        let list = sim.get(&format!("{}/replicationJobs", vault_path(v))).await;
        assert_eq!(list.status, 200);
        let listed: Vec<&str> =
            list.body["value"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
        let single = sim.get(&format!("{}/replicationJobs/{job_name}", vault_path(v))).await;
        if v == target {
            assert_eq!(listed, [job_name.as_str()]);
            assert_eq!(single.status, 200);
        } else {
            assert!(listed.is_empty(), "vault {} lists {listed:?}", v.vault_id);
            assert_eq!(single.status, 404, "vault {} has no job {job_name}", v.vault_id);
            for item in items_of(&sim, v).await {
                assert_eq!(state(&item).0, "Protected", "other vaults are untouched");
            }
        }
    }
    let failed_over = items_of(&sim, target).await.into_iter().find(|i| i["name"] == "s2v2-vm-00001").unwrap();
    assert_eq!(state(&failed_over).0, "UnplannedFailoverCommitPendingStatesBegin");

    let jobs = sim.admin("jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!((&jobs[0]["name"], &jobs[0]["vault_id"]), (&json!(job_name), &json!(target.vault_id)));
    let oplog = sim.oplog().await;
    assert_eq!(oplog.len(), 1);
    assert_eq!(
        oplog[0]["path"].as_str().unwrap().to_ascii_lowercase(),
        format!("{id}/unplannedFailover").to_ascii_lowercase()
    );
    assert_eq!(oplog[0]["item"], "s2v2-vm-00001");
}

#[tokio::test]
async fn a_subscription_never_sees_another_subscriptions_resources() {
    let mut config = two_by_two(1);
    config.reprotect_removes_source_vm = false;
    let sim = Sim::start(config).await;
    let all = vaults(&sim).await;
    let (s1, s2) = (&all[0], &all[2]);
    let vm_path = |sub: &str, rg: &str| {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/s2v1-vm-00001")
    };
    let rg = &s2.resource_groups["westus"];
    assert_eq!(sim.get(&vm_path(&s2.subscription_id, rg)).await.status, 200);
    assert_eq!(sim.get(&vm_path(&s1.subscription_id, rg)).await.status, 404, "s1 has no such VM");
    assert_eq!(vms_in(&sim, &s1.subscription_id, rg).await.0, 404, "s1 has no such resource group");
    for v in &all[..2] {
        let (_, vms) = vms_in(&sim, &s1.subscription_id, &v.resource_groups["westus"]).await;
        assert!(vms.iter().all(|n| !n.starts_with("s2")), "{vms:?}");
    }

    // s2's item addressed through s1's vault of the same name is not there.
    let item = items_of(&sim, s2).await.remove(0);
    let id = item["id"].as_str().unwrap();
    let through_s1 = id.replacen(&s2.subscription_id, &s1.subscription_id, 1);
    assert_eq!(sim.get(&through_s1).await.status, 404);
    let refused = sim
        .post(&format!("{through_s1}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None)))
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(state(&sim.get(id).await.body).0, "Protected", "nothing happened to s2's item");

    // A delete in s2 is polled in s2 only.
    let deleted = sim.delete(&vm_path(&s2.subscription_id, &s2.resource_groups["eastus"])).await;
    assert_eq!(deleted.status, 202, "{:?}", deleted.body);
    let location = deleted.header("location").unwrap().to_owned();
    assert!(location.contains(&format!("/subscriptions/{}/providers/", s2.subscription_id)), "{location}");
    assert!(matches!(sim.get(&location).await.status, 200 | 204), "s2 answers for its operation");
    let elsewhere = location.replacen(&s2.subscription_id, &s1.subscription_id, 1);
    assert_eq!(sim.get(&elsewhere).await.status, 404, "s1 knows no such operation");
    let deletes = sim.admin("deletes").await;
    assert_eq!(deletes.as_array().unwrap().len(), 1);
    assert!(deletes[0]["resource"].as_str().unwrap().starts_with(&format!("/subscriptions/{}/", s2.subscription_id)));

    // Unknown subscriptions and vaults answer as they always have.
    let unknown = sim.get("/subscriptions/00000000-0000-4000-8000-000000000003/resourceGroups/rg-tern-dr/providers/Microsoft.RecoveryServices/vaults/tern-vault").await;
    assert_eq!((unknown.status, unknown.error_code().as_str()), (404, "SubscriptionNotFound"));
    let vault3 = sim
        .get(&format!(
            "/subscriptions/{}/resourceGroups/rg-tern-dr/providers/Microsoft.RecoveryServices/vaults/tern-vault-3",
            s2.subscription_id
        ))
        .await;
    assert_eq!((vault3.status, vault3.error_code().as_str()), (404, "ResourceNotFound"));
}

/// The id of the first protected item of a vault.
async fn first_item(sim: &Sim, v: &VaultInfo) -> String {
    items_of(sim, v).await.remove(0)["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_subscription_spends_its_own_arm_budget() {
    let mut config = two_by_two(1);
    config.throttle.enabled = true;
    config.throttle.reads = BucketConfig { capacity: 20.0, refill_per_sec: 0.01 };
    config.throttle.writes = BucketConfig { capacity: 3.0, refill_per_sec: 0.01 };
    let sim = Sim::start(config).await;
    let all = vaults(&sim).await;
    let (s1, s2) = (&all[0].subscription_id, &all[2].subscription_id);
    let (s1v1, s1v2, s2v1) =
        (first_item(&sim, &all[0]).await, first_item(&sim, &all[1]).await, first_item(&sim, &all[2]).await);

    // Refused commits spend s1's write budget, whichever of its vaults they go to.
    let mut remaining = Vec::new();
    for id in [&s1v1, &s1v2, &s1v1] {
        let r = sim.post(&format!("{id}/failoverCommit"), None).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        remaining.push(r.header("x-ms-ratelimit-remaining-subscription-writes").unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let throttled = sim.post(&format!("{s1v2}/failoverCommit"), None).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.error_code(), "SubscriptionRequestsThrottled");
    assert!(throttled.error_message().contains(s1.as_str()), "{}", throttled.error_message());
    // s1 reads until its read bucket is empty too.
    let mut reads = 0;
    let answer = loop {
        let r = sim.get(&s1v2).await;
        if r.status != 200 || reads > 40 {
            break r;
        }
        reads += 1;
    };
    assert_eq!((answer.status, reads), (429, 18), "20 reads, 2 of them the item lists");
    assert!(answer.header("retry-after").is_some());

    // s2's budget is untouched: its writes and reads find their buckets as s2 left them.
    let own =
        sim.post(&format!("{s2v1}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
    assert_eq!(own.status, 202, "{:?}", own.body);
    assert_eq!(own.header("x-ms-ratelimit-remaining-subscription-writes"), Some("2"));
    let read = sim.get(&s2v1).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-ms-ratelimit-remaining-subscription-reads"), Some("18"), "s2 listed its items once");
    // ... and s1 is still throttled.
    assert_eq!(sim.post(&format!("{s1v1}/failoverCommit"), None).await.status, 429);

    let counters = sim.admin("counters").await;
    let per = &counters["per_subscription"];
    let (c1, c2) = (&per[s1], &per[s2]);
    assert_eq!((&c1["reads"], &c1["writes"], &c1["throttled"]), (&json!(21), &json!(5), &json!(3)));
    assert_eq!((&c2["reads"], &c2["writes"], &c2["throttled"]), (&json!(2), &json!(1), &json!(0)));
    assert_eq!(counters["requests"]["throttled"], 3);
}

#[tokio::test]
async fn counters_per_subscription_add_up_to_the_totals() {
    let mut config = two_by_two(2);
    config.throttle.enabled = true;
    config.throttle.deletes = BucketConfig { capacity: 1.0, refill_per_sec: 0.01 };
    let sim = Sim::start(config).await;
    let all = vaults(&sim).await;
    for v in &all {
        let items = items_of(&sim, v).await;
        let id = items[0]["id"].as_str().unwrap();
        sim.post(&format!("{id}/unplannedFailover"), Some(failover_body("PrimaryToRecovery", false, None))).await;
        let nic = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}vm-00002-nic",
            v.subscription_id, v.resource_groups["westus"], v.vm_name_prefix
        );
        sim.delete(&nic).await;
    }
    // Requests that name no served subscription, or come without a token, are counted too.
    sim.get("/subscriptions/someone-else/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines").await;
    let anonymous = sim.http.get(format!("{}{}/replicationJobs?{API}", sim.url(), vault_path(&all[2]))).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);

    let counters = sim.admin("counters").await;
    let totals = counters["requests"].as_object().unwrap();
    let per = counters["per_subscription"].as_object().unwrap();
    assert_eq!(per.keys().collect::<Vec<_>>(), [&all[0].subscription_id, &all[2].subscription_id]);
    for (key, total) in totals {
        let sum: u64 = per.values().map(|c| c[key].as_u64().unwrap()).sum();
        assert_eq!(sum, total.as_u64().unwrap(), "{key}: per subscription {per:?}, total {total}");
    }
    let s2 = &per[&all[2].subscription_id];
    assert_eq!(
        (&s2["writes"], &s2["deletes"], &s2["throttled"], &s2["unauthorized"]),
        (&json!(2), &json!(2), &json!(1), &json!(1))
    );
    assert_eq!(counters["requests"]["deletes"], 4);
    assert_eq!(counters["requests"]["throttled"], 2, "one delete per subscription found its bucket empty");
}

#[tokio::test]
async fn the_binary_takes_the_number_of_subscriptions_and_vaults() {
    let bin = binary_helping_with(&["--subscriptions", "--vaults-per-subscription", "rg-app-sSvV"]);
    let (mut child, info) = spawn_binary(
        bin,
        &["--subscriptions", "3", "--vaults-per-subscription", "2", "--seed-vms", "2", "--zero-latency"],
    )
    .await;
    assert_eq!(info.vaults.len(), 6);
    assert_eq!(info.vaults[5].subscription_id, "00000000-0000-4000-8000-000000000003");
    assert_eq!(info.vaults[5].vault, "tern-vault-2");
    let counters: Value = reqwest::get(format!("{}/_sim/counters", info.url)).await.unwrap().json().await.unwrap();
    assert_eq!(counters["estate"]["items"], 12, "--seed-vms seeds every vault");
    assert_eq!(counters["per_subscription"].as_object().unwrap().len(), 3);
    child.kill().await.unwrap();

    let refused = std::process::Command::new(bin).args(["--vaults-per-subscription", "0"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("vaults_per_subscription"));
}

#[tokio::test]
async fn the_subscriptions_and_their_vaults_are_listed_as_arm_lists_them() {
    let sim = Sim::start(two_by_two(1)).await;
    let known = vaults(&sim).await;
    let subs = sim.get("/subscriptions").await;
    assert_eq!(subs.status, 200, "{:?}", subs.body);
    let ids: Vec<&str> =
        subs.body["value"].as_array().unwrap().iter().map(|s| s["subscriptionId"].as_str().unwrap()).collect();
    assert_eq!(ids, [known[0].subscription_id.as_str(), known[2].subscription_id.as_str()]);
    let second = &known[2].subscription_id;
    let listed = sim.get(&format!("/subscriptions/{second}/providers/Microsoft.RecoveryServices/vaults")).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let vault_ids: Vec<String> = listed.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    let expected: Vec<String> = known[2..].iter().map(|v| v.vault_id.to_ascii_lowercase()).collect();
    assert_eq!(vault_ids, expected, "a subscription lists its own vaults only");
    let unknown = sim
        .get("/subscriptions/00000000-0000-4000-8000-0000000000ff/providers/Microsoft.RecoveryServices/vaults")
        .await;
    assert_eq!(unknown.status, 404);
}
