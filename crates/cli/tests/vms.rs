//! `tern vms` as an operator uses it before a failback, against `tern up`: the vault's
//! replicated items with health and readiness, filtered, as JSON, and one VM in full.

mod common;

use std::collections::BTreeSet;

fn all_vms() -> BTreeSet<String> {
    (1..=12).map(|i| format!("vm-{i:05}")).collect()
}

/// The table's line for `vm`.
fn line_of<'a>(stdout: &'a str, vm: &str) -> &'a str {
    stdout.lines().find(|l| l.starts_with(&format!("{vm} "))).unwrap_or_else(|| panic!("no line for {vm}:\n{stdout}"))
}

#[tokio::test]
async fn an_operator_lists_the_replicated_vms_with_their_readiness_and_looks_at_one() {
    let up = common::Up::start(&["--vms", "12", "--unhealthy-every", "5"]).await;

    // The table: every VM with its state and health; the unhealthy ones blocked, with the reason.
    let out = up.tern(&["vms"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let header = out.stdout.lines().next().unwrap_or_default();
    for column in ["NAME", "STATE", "HEALTH", "ACTIVE", "RPO", "LAST DRILL", "READINESS", "REASON"] {
        assert!(header.contains(column), "column {column}: {out:?}");
    }
    assert!(!out.stdout.contains('\x1b'), "NO_COLOR: {out:?}");
    for vm in all_vms() {
        let line = line_of(&out.stdout, &vm);
        assert!(line.contains("Protected"), "{line}");
        if vm == "vm-00005" || vm == "vm-00010" {
            assert!(line.contains("Critical") && line.contains("blocked"), "{line}");
            assert!(line.contains("replication-health") && line.contains("151037"), "the reason: {line}");
        } else {
            assert!(line.contains("Normal") && !line.contains("blocked"), "{line}");
            // The simulator's VMs were never drilled: ready, with that warning.
            assert!(line.contains("warning") && line.contains("never drilled"), "{line}");
        }
    }
    assert!(out.stdout.contains("12 VMs: 0 ready, 10 warning, 2 blocked"), "{out:?}");

    // JSON: one entry per VM, with what decided its readiness.
    let out = up.tern(&["vms", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("tern vms -o json prints JSON");
    assert_eq!(doc["vault_id"], up.endpoints["vault_id"], "{doc}");
    let vms = doc["vms"].as_array().expect("vms");
    let names: BTreeSet<String> = vms.iter().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect();
    assert_eq!((vms.len(), names), (12, all_vms()), "{doc}");
    for vm in vms {
        let blocked = vm["name"] == "vm-00005" || vm["name"] == "vm-00010";
        assert_eq!(vm["readiness"], if blocked { "blocked" } else { "warning" }, "{vm}");
        assert!(vm["reason"].as_str().is_some_and(|r| !r.is_empty()), "{vm}");
        assert_eq!(vm["protection_state"], "Protected", "{vm}");
        assert_eq!(vm["replication_health"], if blocked { "Critical" } else { "Normal" }, "{vm}");
        assert_eq!((&vm["active_location"], &vm["home_location"]), (&"westus".into(), &"eastus".into()), "{vm}");
        assert!(vm["rpo_seconds"].as_i64().is_some(), "{vm}");
        assert!(vm["protected_item_id"].as_str().is_some_and(|id| id.contains("/replicationProtectedItems/")));
        let checks = vm["checks"].as_array().expect("checks");
        assert!(checks.iter().any(|c| c["name"] == "replication-health"), "{vm}");
    }

    // --state: by readiness, by protection state (any case), and a state nobody is in.
    let out = up.tern(&["vms", "--state", "blocked", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = doc["vms"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["vm-00005", "vm-00010"], "{doc}");
    let out = up.tern(&["vms", "--state", "protected"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(all_vms().iter().all(|vm| out.stdout.contains(vm.as_str())), "{out:?}");
    let out = up.tern(&["vms", "--state", "FailoverCommitted"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains("vm-0"), "{out:?}");
    assert!(out.stderr.contains("FailoverCommitted"), "says nothing matched: {out:?}");

    // No planner to ask: still the list, readiness unknown, and a note saying why.
    let out = up.tern(&["vms", "--planner", "127.0.0.1:1"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(line_of(&out.stdout, "vm-00005").contains("unknown"), "{out:?}");
    assert!(out.stderr.contains("readiness unknown") && out.stderr.contains("planner"), "{out:?}");

    // One VM in full: disks, recovery points, the target settings, every check.
    let out = up.tern(&["vms", "show", "vm-00001"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for text in [
        "vm-00001",
        "Disks",
        "OperatingSystem",
        "Premium_LRS",
        "GiB",
        "Recovery points",
        "crash-consistent",
        "2 of 2",
        "Target settings",
        "eastus",
        "rg-app",
        "Standard_D2s_v3",
        "vnet-eastus",
        "last-drill",
    ] {
        assert!(out.stdout.contains(text), "{text}: {out:?}");
    }
    let out = up.tern(&["vms", "show", "vm-00005", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let vm: serde_json::Value = serde_json::from_str(&out.stdout).expect("tern vms show -o json prints JSON");
    assert_eq!((&vm["name"], &vm["readiness"]), (&"vm-00005".into(), &"blocked".into()), "{vm}");
    assert_eq!(vm["disks"].as_array().map(Vec::len), Some(2), "{vm}");
    assert!(vm["disks"][0]["capacity_bytes"].as_i64().is_some_and(|b| b > 0), "{vm}");
    let points = vm["recovery_points"].as_array().expect("recovery points");
    assert!(!points.is_empty() && points.iter().all(|p| p["disks_total"] == 2), "{vm}");
    assert!(points.iter().any(|p| p["consistency"] == "app-consistent"), "{vm}");
    assert_eq!(vm["target"]["vm_size"], "Standard_D2s_v3", "{vm}");
    assert!(vm["target"]["resource_group"].as_str().is_some_and(|g| g.ends_with("/rg-app")), "{vm}");
    assert_eq!(vm["health_errors"][0]["code"], "151037", "{vm}");

    // A name that is not there: exit 2, naming it; nothing half-printed.
    let out = up.tern(&["vms", "show", "no-such-vm"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no-such-vm") && out.stderr.contains("tern vms"), "{out:?}");
    assert!(out.stdout.is_empty() && !out.stderr.contains("panicked"), "{out:?}");
}

#[tokio::test]
async fn without_a_stack_it_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::tern_in(dir.path(), &["vms"]);
    assert_eq!(out.code, Some(3), "no stack to reach: {out:?}");
    assert!(out.stderr.contains("tern up") && out.stderr.contains("--vault"), "{out:?}");
    let out = common::tern_in(dir.path(), &["vms", "--vault", "/subscriptions/s/resourceGroups/rg"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("not a Recovery Services vault"), "{out:?}");
}
