//! A failback as an operator runs it from the command line, against `tern up`: a plan file,
//! `-o json`, live watch, the event stream, and the report in every format — the HTML one
//! rendered by a real headless Chromium.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

const PLAN: &str = "\
select:
  vms: [vm-00001, vm-00002, vm-00003, vm-00004, vm-00005, vm-00006]
recovery_point: latest-processed
waves:
  - name: data
    vms: [vm-00001, vm-00002]
  - name: apps
    vms: [vm-00003, vm-00004]
failure_policy:
  on_critical_failure: continue
labels:
  change: CHG-1042
";

fn vms() -> Vec<String> {
    (1..=6).map(|i| format!("vm-{i:05}")).collect()
}

#[tokio::test]
async fn an_operator_submits_a_plan_file_watches_it_reads_its_events_and_gets_the_report() {
    let up =
        common::Up::start(&["--vms", "8", "--fail", "vm-00003:failover:28031", "--fail-shutdown", "vm-00002"]).await;
    let dir = up.data_dir();

    // A bad plan file changes nothing and says what is wrong, where: exit 2.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, PLAN.replace("recovery_point", "recovery_pont")).unwrap();
    let out = up.tern(&["plan", "submit", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("recovery_pont") && out.stderr.contains("line 3"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    let out = up.tern(&["plan", "submit", "-f", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("missing.yaml"), "{out:?}");
    let out = up.tern(&["plan", "list", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(listed.get("plans").is_none_or(|p| p.as_array().is_some_and(Vec::is_empty)), "nothing submitted: {listed}");

    // Preflight of the file, then submission with -o json: the plan with its id.
    let file = dir.join("plan.yaml");
    std::fs::write(&file, PLAN).unwrap();
    let file = file.to_str().unwrap();
    let out = up.tern(&["plan", "preflight", "-f", file]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("6 VMs, 0 blocked: ready"), "{out:?}");
    let out = up.tern(&["plan", "submit", "-f", file, "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan submit -o json prints JSON");
    let id = plan["plan_id"].as_str().expect("the plan's id").to_owned();
    assert_eq!(plan["spec"]["labels"]["change"], "CHG-1042", "{plan}");
    assert_eq!(plan["spec"]["waves"][1]["name"], "apps", "{plan}");

    // `--query` picks from `-o json` as `az --query` does; a table or a bad expression is refused:
    // exit 2, naming what to change.
    let out = up.tern(&["plan", "list", "-o", "json", "--query", "plans[].plan_id"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let ids: Vec<String> = serde_json::from_str(&out.stdout).expect("a JSON list of plan ids");
    assert!(ids.contains(&id), "{out:?}");
    let out = up.tern(&["plan", "list", "--query", "plans[].plan_id"]);
    assert!(out.code == Some(2) && out.stderr.contains("-o json") && out.stdout.is_empty(), "{out:?}");
    let out = up.tern(&["plan", "get", &id, "-o", "yaml", "--query", "plans[.plan_id"]);
    assert!(out.code == Some(2) && out.stderr.contains("\"plans[.plan_id\" is not a JMESPath"), "{out:?}");

    // Watch to the end: the failure is listed as it happens; exit 1 because a VM failed.
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("✗ vm-00003 failover failed: [28031]"), "{out:?}");
    assert!(out.stdout.contains("5 succeeded, 1 failed"), "{out:?}");
    assert!(out.stdout.contains("cleanup 5/6"), "per-phase progress: {out:?}");
    assert!(out.stdout.contains("warning: last-drill"), "preflight warnings are listed: {out:?}");

    // The event stream, as an outside consumer reads it: a CloudEvent per line.
    let out = up.tern(&["events", "--plan", &id, "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let events: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["specversion"] == "1.0" && e["ternplan"] == id.as_str()), "{out:?}");
    let traces: BTreeSet<&str> =
        events.iter().filter_map(|e| e["traceparent"].as_str()).map(|t| t.split('-').nth(1).unwrap_or("")).collect();
    assert_eq!(traces.len(), 1, "every event carries the plan's trace: {out:?}");
    for vm in vms() {
        let of = |phase: &str, outcome: &str| {
            events.iter().any(|e| {
                let v = &e["data"]["vm"];
                v["vm"]["name"] == vm.as_str()
                    && v["phase"] == format!("PHASE_{}", phase.to_uppercase())
                    && v["outcome"] == format!("OUTCOME_{}", outcome.to_uppercase())
            })
        };
        assert!(of("failover", "started"), "{vm} failover started");
        if vm == "vm-00003" {
            assert!(of("failover", "failed"), "{vm} failover failed");
            assert!(!of("reprotect", "started"), "{vm} never reprotected");
        } else {
            assert!(of("cleanup", "succeeded"), "{vm} cleanup succeeded");
        }
    }
    let out = up.tern(&["events", "--plan", &id, "--vm", "vm-00002", "--phase", "commit"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 2 && lines.iter().all(|l| l.contains("vm-00002") && l.contains("commit")), "{out:?}");
    let out = up.tern(&["events", "--phase", "sideways"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("sideways"), "{out:?}");

    // The report: JSON for scripts, Markdown for a ticket.
    let out = up.tern(&["report", &id, "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["counts"]["succeeded"], 5, "{report}");
    assert_eq!(report["waves"].as_array().map(Vec::len), Some(3), "data, apps and the rest: {report}");
    let failed = report["vms"].as_array().unwrap().iter().find(|v| v["name"] == "vm-00003").unwrap();
    assert_eq!(failed["error"]["code"], "28031", "{failed}");
    assert!(!failed["error"]["recommended_action"].as_str().unwrap().is_empty(), "{failed}");
    // vm-00002's source did not shut down: the failover went on, and the report says so, though
    // ASR's job lists are summaries without the task that failed.
    let unshut = report["vms"].as_array().unwrap().iter().find(|v| v["name"] == "vm-00002").unwrap();
    assert_eq!(unshut["source_shutdown"], "failed", "{unshut}");
    assert_eq!(unshut["outcome"], "succeeded", "{unshut}");
    let ok = report["vms"].as_array().unwrap().iter().find(|v| v["name"] == "vm-00001").unwrap();
    assert_eq!(ok["source_shutdown"], "succeeded", "{ok}");
    assert!(ok["rpo_s"].as_f64().is_some() && ok["rto_s"].as_f64().is_some(), "{ok}");
    assert!(ok["recovery_point"]["id"].as_str().is_some_and(|s| !s.is_empty()), "{ok}");
    assert!(ok["cleanup"].as_str().is_some_and(|s| !s.is_empty()), "what cleanup did: {ok}");
    let phases: BTreeSet<&str> =
        ok["timeline"].as_array().unwrap().iter().filter_map(|b| b["phase"].as_str()).collect();
    assert_eq!(phases, BTreeSet::from(["failover", "commit", "reprotect", "cleanup"]), "{ok}");
    let out = up.tern(&["report", &id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("## Needs attention") && out.stdout.contains("**vm-00003**"), "{out:?}");
    assert!(
        out.stdout.contains("## Forecast beside actual") && out.stdout.contains("- Job durations: Azure's typical"),
        "the first plan's forecast, beside what it took: {out:?}"
    );

    // The HTML report, rendered by a real browser, shows every VM.
    let html = dir.join("report.html");
    let out = up.tern(&["report", &id, "-o", "html", "--out", html.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "self-contained");
    let dom = render(&html, &dir.join("report.png"));
    let shown: BTreeSet<String> =
        dom.split("<tr class=\"vm\"><td>").skip(1).filter_map(|row| row.split('<').next()).map(str::to_owned).collect();
    assert_eq!(shown, vms().into_iter().collect(), "the rendered page lists every VM");
    for wave in ["data", "apps", "the rest"] {
        assert!(dom.contains(&format!("<h3>{wave} ")), "a timeline for wave {wave}");
    }
    assert!(std::fs::metadata(dir.join("report.png")).is_ok_and(|m| m.len() > 10_000), "a screenshot was drawn");

    // A config file stands in for --data-dir; a bad one is named.
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", dir.display().to_string())).unwrap();
    let tern = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tern")).args(args).env("TERN_CONFIG", &config).output().unwrap()
    };
    let out = tern(&["plan", "list"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&id), "{out:?}");
    // A planner nobody listens on: exit 3, the stack cannot be reached.
    std::fs::write(&config, "planner = \"127.0.0.1:1\"\n").unwrap();
    let out = tern(&["plan", "list"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the planner"), "{out:?}");
    // A token the planner does not know: exit 3 too.
    let forged = dir.join("forged-token");
    std::fs::write(&forged, "not-the-operators-token\n").unwrap();
    let out = up.tern(&["plan", "list", "--token-file", forged.to_str().unwrap()]);
    assert_eq!(out.code, Some(3), "{out:?}");
    std::fs::write(&config, "planer = \"127.0.0.1:1\"\n").unwrap();
    let out = tern(&["plan", "list"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("planer"), "{out:?}");
}

/// Chromium's DOM of the page after rendering, and a screenshot of it.
fn render(page: &std::path::Path, png: &std::path::Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let browser = |extra: &[String]| {
        let out = Command::new(common::chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("running chromium");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    browser(&[format!("--screenshot={}", png.display())]);
    browser(&["--dump-dom".to_owned()])
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tern")).args(["completions", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(text.contains("tern") && text.contains("report"), "{shell}: {text}");
    }
}
