//! An estate of many vaults as an operator runs it from the command line, against `tern up
//! --subscriptions 2 --vaults-per-subscription 2`: every VM of every vault listed with its vault
//! and readiness, one VM looked up across the vaults, a plan over two vaults in two
//! subscriptions brought home, and its report grouped by subscription and vault.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// VMs seeded in each vault.
const PER_VAULT: usize = 2;

fn json(out: &common::Output) -> Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

/// The subscription of a vault's ARM id.
fn subscription(vault_id: &str) -> &str {
    vault_id.split('/').nth(2).unwrap_or_default()
}

#[tokio::test]
async fn an_estate_of_four_vaults_in_two_subscriptions_is_listed_failed_back_and_reported_per_vault() {
    let up = common::Up::start(&[
        "--vms",
        &PER_VAULT.to_string(),
        "--unhealthy-every",
        "0",
        "--subscriptions",
        "2",
        "--vaults-per-subscription",
        "2",
    ])
    .await;

    // endpoints.json lists the estate, the stack's own vault first.
    let vaults: Vec<String> = serde_json::from_value(up.endpoints["vaults"].clone()).expect("endpoints.json: vaults");
    assert_eq!(vaults.len(), 4, "{}", up.endpoints);
    assert_eq!(vaults[0], up.endpoints["vault_id"].as_str().unwrap(), "{}", up.endpoints);
    let subscriptions: BTreeSet<&str> = vaults.iter().map(|v| subscription(v)).collect();
    assert_eq!(subscriptions.len(), 2, "{vaults:?}");
    // The simulator's names: the first vault's VMs as ever, the others' with their vault's label.
    let prefixes = ["", "s1v2-", "s2v1-", "s2v2-"];
    let expected: BTreeMap<String, &str> = vaults
        .iter()
        .zip(prefixes)
        .flat_map(|(v, prefix)| (1..=PER_VAULT).map(move |i| (format!("{prefix}vm-{i:05}"), v.as_str())))
        .collect();

    // Every VM of every vault, each with its vault and subscription, and the planner's readiness:
    // the services act on every vault.
    let doc = json(&up.tern(&["vms", "--all-vaults", "-o", "json"]));
    assert_eq!(doc["vault_ids"], serde_json::json!(vaults), "{doc}");
    let vms = doc["vms"].as_array().expect("vms");
    let listed: BTreeMap<String, &str> =
        vms.iter().map(|v| (v["name"].as_str().unwrap().to_owned(), v["vault_id"].as_str().unwrap())).collect();
    assert_eq!((vms.len(), &listed), (expected.len(), &expected), "{doc}");
    for vm in vms {
        let vault = vm["vault_id"].as_str().unwrap();
        assert_eq!(vm["subscription_id"], subscription(vault), "{vm}");
        let item = vm["protected_item_id"].as_str().unwrap().to_ascii_lowercase();
        assert!(item.starts_with(&vault.to_ascii_lowercase()), "the item is in its vault: {vm}");
        assert_eq!(vm["readiness"], "warning", "never drilled, else ready: {vm}");
    }

    // The table: a VAULT column, a name shared by two subscriptions' vaults told apart.
    let out = up.tern(&["vms", "--all-vaults"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAME") && header.contains(" VAULT "), "{out:?}");
    let line = |vm: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{vm} "))).unwrap_or_default();
    assert!(line("vm-00001").contains("000000000001/tern-vault "), "{out:?}");
    assert!(line("s1v2-vm-00001").contains("000000000001/tern-vault-2 "), "{out:?}");
    assert!(line("s2v1-vm-00001").contains("000000000002/tern-vault "), "{out:?}");
    assert!(out.stdout.contains(&format!("{} VMs in 4 vaults", expected.len())), "{out:?}");
    // Two vaults by --vault; the stack's own alone, as ever, without the column.
    let doc = json(&up.tern(&["vms", "--vault", &vaults[3], "--vault", &vaults[1], "-o", "json"]));
    let of: BTreeSet<&str> = doc["vms"].as_array().unwrap().iter().map(|v| v["vault_id"].as_str().unwrap()).collect();
    assert_eq!(of, BTreeSet::from([vaults[1].as_str(), vaults[3].as_str()]), "{doc}");
    let out = up.tern(&["vms"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("VAULT") && out.stdout.contains(&format!("{PER_VAULT} VMs:")), "{out:?}");

    // One VM: looked for in the stack's vault, the error says where else to look; found there.
    let out = up.tern(&["vms", "show", "s2v1-vm-00002"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--all-vaults") && out.stderr.contains("3 more"), "{out:?}");
    let vm = json(&up.tern(&["vms", "show", "s2v1-vm-00002", "--all-vaults", "-o", "json"]));
    assert_eq!((&vm["vault_id"], &vm["readiness"]), (&vaults[2].clone().into(), &"warning".into()), "{vm}");
    assert_eq!(vm["disks"].as_array().map(Vec::len), Some(2), "{vm}");

    // A plan over a vault of each subscription: every VM of both comes home.
    let (a, b) = (&vaults[1], &vaults[2]);
    let out = up.tern(&["plan", "submit", "--vault", a, "--vault", b, "--all-ready"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let plan_id = out.stdout.trim().to_owned();
    let out = up.tern(&["plan", "watch", &plan_id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("{} succeeded", 2 * PER_VAULT)), "{out:?}");
    assert!(out.stdout.contains("tern-vault-2") && out.stdout.contains("RTO p50"), "per-vault lines: {out:?}");

    // The report, grouped by subscription and vault: counts and RTO per group, each VM's vault.
    let report = json(&up.tern(&["report", &plan_id, "-o", "json"]));
    let groups = report["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(groups.len(), 2, "{report}");
    for (group, vault) in groups.iter().zip([a, b]) {
        assert_eq!(group["subscription_id"], subscription(vault), "{group}");
        assert_eq!(group["vaults"].as_array().map(Vec::len), Some(1), "{group}");
        let v = &group["vaults"][0];
        assert!(v["vault_id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(vault)), "{group}");
        assert_eq!((&v["counts"]["total"], &v["counts"]["succeeded"]), (&PER_VAULT.into(), &PER_VAULT.into()));
        assert!(v["rto_s"]["p50"].as_f64().is_some() && v["rto_s"]["max"].as_f64().is_some(), "{group}");
    }
    for vm in report["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        assert!(vm["vault_id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(expected[name])), "{vm}");
        assert_eq!(vm["outcome"], "succeeded", "{vm}");
    }
    let out = up.tern(&["report", &plan_id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("## By subscription and vault"), "{out:?}");
    assert!(out.stdout.contains("| Vaults | 2 vaults in 2 subscriptions |"), "{out:?}");
    let out = up.tern(&["report", &plan_id, "-o", "html"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("<table id=\"vaults\">") && out.stdout.contains("<td>tern-vault-2</td>"), "{out:?}");
}
