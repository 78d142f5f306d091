//! The operator's habits on a fresh `tern up`: "all ready" goes ahead without the VMs that are
//! not, a terminal asks before anything changes, vaults named as `az` names them, and plans
//! listed with filters, a page at a time.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

fn json(out: &common::Output) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn plan_ids(doc: &serde_json::Value) -> Vec<String> {
    let plans = doc["plans"].as_array().map(Vec::as_slice).unwrap_or_default();
    plans.iter().map(|p| p["plan_id"].as_str().unwrap().to_owned()).collect()
}

/// `tern ARGS` on a terminal (util-linux's `script` gives it one), answering `answer`.
fn on_a_terminal(up: &common::Up, args: &[&str], answer: &str) -> common::Output {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = vec![quote(env!("CARGO_BIN_EXE_tern"))];
    line.extend(args.iter().map(|a| quote(a)));
    line.extend(["--data-dir".to_owned(), quote(up.data_dir().to_str().unwrap())]);
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &line.join(" "), "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux's `script`");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    common::Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn all_ready_leaves_out_the_blocked_vms_and_the_plan_completes() {
    // Every 20th VM has critical replication health: vm-00020 and vm-00040 are not ready.
    let up = common::Up::start(&["--vms", "40", "--unhealthy-every", "20"]).await;
    let vault = up.endpoints["vault_id"].as_str().unwrap().to_owned();

    // On a terminal, submit says what would happen and asks; "no" submits nothing.
    let out = on_a_terminal(&up, &["plan", "submit", "--vm", "vm-00001", "--vm", "vm-00020"], "n\n");
    assert_eq!(out.code, Some(1), "declined: {out:?}");
    let text = out.text();
    assert!(text.contains("This plan fails over 1 VM, shutting each source VM down first: vm-00001"), "{text}");
    assert!(text.contains("Left out, blocked in preflight: vm-00020"), "{text}");
    assert!(text.contains("Cleanup") && text.contains("Submit? [y/N]"), "{text}");
    assert!(text.contains("nothing was submitted"), "{text}");
    assert_eq!(plan_ids(&json(&up.tern(&["plan", "list", "-o", "json"]))), Vec::<String>::new());

    // The vault by name, group and subscription is the vault by id.
    let (subscription, group, name) = tern_asr::config::parse_vault_id(&vault).unwrap();
    let by_id = json(&up.tern(&["plan", "preflight", "--vm", "vm-00002", "--vault", &vault, "-o", "json"]));
    let name_flags = ["--vault-name", &name, "-g", &group, "--subscription", &subscription];
    let mut args = vec!["plan", "preflight", "--vm", "vm-00002", "-o", "json"];
    args.extend(name_flags);
    let by_name = json(&up.tern(&args));
    assert_eq!(by_name["vms"][0]["vm"], by_id["vms"][0]["vm"], "{by_name}");
    assert_eq!(by_id["vms"][0]["vm"]["vault_id"].as_str(), Some(vault.as_str()), "{by_id}");
    let mut args = vec!["vms", "show", "vm-00002", "-o", "json"];
    args.extend(name_flags);
    assert_eq!(json(&up.tern(&args))["vault_id"].as_str(), Some(vault.as_str()), "tern vms takes the same flags");
    let out = up.tern(&["plan", "preflight", "--vm", "vm-00002", "--vault-name", "no-such-vault", "-o", "json"]);
    assert_ne!(out.code, Some(0), "a vault the stack does not act on: {out:?}");
    assert!(out.stderr.contains("no-such-vault"), "{out:?}");

    // A preflight-only plan with a label, to list later.
    let file = up.data_dir().join("check.yaml");
    std::fs::write(&file, "mode: preflight-only\nselect: { vms: [vm-00003] }\nlabels: { change: CHG-7 }\n").unwrap();
    let checked = json(&up.tern(&["plan", "submit", "-f", file.to_str().unwrap(), "-o", "json"]));
    let checked = checked["plan_id"].as_str().unwrap().to_owned();

    // "All ready" selects the ready VMs; the others are listed as left out, with the reason.
    let plan = json(&up.tern(&["plan", "submit", "--all-ready", "-o", "json"]));
    let id = plan["plan_id"].as_str().unwrap().to_owned();
    let vms = plan["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 40, "{plan}");
    let left_out: BTreeSet<&str> = vms
        .iter()
        .filter(|v| v["left_out"] == true)
        .inspect(|v| {
            let reason = v["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("blocked in preflight") && reason.contains("replication"), "{v}");
        })
        .map(|v| v["vm"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(left_out, BTreeSet::from(["vm-00020", "vm-00040"]), "{plan}");
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("completed") && !out.stdout.contains("completed with errors"), "{out:?}");
    assert!(out.stdout.contains("38 succeeded"), "{out:?}");
    let done = json(&up.tern(&["plan", "get", &id, "-o", "json"]));
    assert_eq!(done["state"], "PLAN_STATE_COMPLETED", "{done}");

    // Listed newest first, a page at a time, and filtered.
    let first = json(&up.tern(&["plan", "list", "--limit", "1", "-o", "json"]));
    assert_eq!(plan_ids(&first), [id.as_str()]);
    let token = first["next_page_token"].as_str().expect("a second page");
    let second = json(&up.tern(&["plan", "list", "--limit", "1", "--page-token", token, "-o", "json"]));
    assert_eq!(plan_ids(&second), [checked.as_str()]);
    assert!(second["next_page_token"].as_str().is_none_or(str::is_empty), "{second}");
    let out = up.tern(&["plan", "list", "--limit", "1"]);
    assert!(out.stderr.contains("--page-token"), "the table says how to get the next page: {out:?}");
    let listed = |filter: &[&str]| {
        let mut args = vec!["plan", "list", "-o", "json"];
        args.extend(filter);
        plan_ids(&json(&up.tern(&args)))
    };
    assert_eq!(listed(&["--label", "change=CHG-7"]), [checked.as_str()]);
    assert_eq!(listed(&["--state", "completed", "--vm", "VM-00001"]), [id.as_str()]);
    assert_eq!(listed(&["--state", "active"]), Vec::<String>::new());
    assert_eq!(listed(&["--since", "1h30m"]), [id.as_str(), checked.as_str()]);
    assert_eq!(listed(&["--vm", "vm-99999"]), Vec::<String>::new());
    let out = up.tern(&["plan", "list", "--page-token", "forged"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("page_token"), "{out:?}");
}

/// `tern up --quota` sets the simulator's vCPU quota: preflight blocks exactly the VMs that would
/// not fit, naming the quota, the need and what is free.
#[tokio::test]
async fn a_quota_given_to_tern_up_blocks_exactly_the_vms_that_would_not_fit() {
    // Four 2-vCPU VMs fail back to eastus, whose regional total is 5 vCPUs: two fit.
    let mut up = common::Up::start(&["--vms", "4", "--quota", "eastus:cores:5"]).await;
    let vms = ["--vm", "vm-00001", "--vm", "vm-00002", "--vm", "vm-00003", "--vm", "vm-00004"];
    let out = up.tern(&[&["plan", "preflight", "-o", "json"][..], &vms].concat());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let capacity = |name: &str| -> (String, String) {
        let vm = doc["vms"].as_array().unwrap().iter().find(|v| v["vm"]["name"] == name).unwrap();
        let c = vm["checks"].as_array().unwrap().iter().find(|c| c["name"] == "capacity").expect("a capacity check");
        (c["result"].as_str().unwrap().to_owned(), c["detail"].as_str().unwrap().to_owned())
    };
    for name in ["vm-00001", "vm-00002"] {
        assert_eq!(capacity(name).0, "READINESS_READY", "{name}: {doc}");
    }
    for name in ["vm-00003", "vm-00004"] {
        let (result, detail) = capacity(name);
        assert_eq!(result, "READINESS_BLOCKED", "{name}: {doc}");
        assert_eq!(
            detail,
            "needs 2 vCPUs of the regional total (cores) in eastus: 1 of quota 5 free (0 in use, 4 claimed by VMs before it in this plan)"
        );
    }
    up.stop().await;
}
