//! `tern plan estimate` as an operator uses it before a failback, against `tern up`: the
//! forecast of a plan from the same flags and file `tern plan submit` takes, as a table and as
//! JSON or YAML, with Azure's typical job durations until a plan has run, then with that
//! plan's.

mod common;

fn json(out: &common::Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[tokio::test]
async fn an_operator_forecasts_a_plan_before_and_after_one_ran() {
    let up = common::Up::start(&["--vms", "12", "--unhealthy-every", "5"]).await;

    // Every ready VM: the blocked ones left out, saying so; Azure's durations, ARM's budget.
    let out = up.tern(&["plan", "estimate", "--all-ready", "--proceed-with-ready"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for text in [
        "10 VMs in 1 subscription, 1 wave",
        "job durations: Azure's typical",
        "budget per subscription: reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s",
        "concurrency: failover 200, reprotect 200, cleanup 200",
        "makespan ",
        "RTO        p50 ",
        "binding    reprotect jobs, initial replication included",
        "failover ends",
        "read budget",
    ] {
        assert!(out.stdout.contains(text), "{text:?} in {out:?}");
    }
    assert!(out.stdout.contains(&format!("{} ", up.endpoints["subscription_id"].as_str().unwrap_or("?"))), "{out:?}");

    // Waves from the flags; the VMs in no wave go last. JSON carries the same forecast.
    let out = up.tern(&[
        "plan",
        "estimate",
        "--vm",
        "vm-00001",
        "--vm",
        "vm-00002",
        "--vm",
        "vm-00003",
        "--wave",
        "db=vm-00002",
        "-o",
        "json",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = json(&out);
    let waves = doc["waves"].as_array().expect("waves");
    assert_eq!(waves.len(), 2, "{doc}");
    assert_eq!((&waves[0]["name"], &waves[0]["vms"]), (&"db".into(), &1.into()), "{doc}");
    assert_eq!((&waves[1]["name"], &waves[1]["vms"]), (&"the rest".into(), &2.into()), "{doc}");
    let first_wave_done = waves[0]["failover_end_s"].as_f64().unwrap();
    assert!(waves[1]["rto_s"]["p50"].as_f64().unwrap() > first_wave_done, "wave 2 fails over after wave 1: {doc}");
    assert!(doc["makespan_s"].as_f64().unwrap() > doc["rto_s"]["max"].as_f64().unwrap(), "{doc}");
    assert_eq!(doc["binding"]["what"], "reprotect jobs of wave 2 (the rest), initial replication included", "{doc}");
    assert!((doc["assumed"]["reads_per_vm"].as_f64().unwrap() - 9.27).abs() < 1e-6, "{doc}");
    assert_eq!(doc["subscriptions"][0]["id"], up.endpoints["subscription_id"], "{doc}");

    // A plan file; the budget from the config file; YAML.
    let plan = up.data_dir().join("plan.yaml");
    std::fs::write(
        &plan,
        "select:\n  vms: [vm-00001, vm-00002]\nconcurrency: { failover: 1 }\ncleanup: { remove_leftovers: true }\n",
    )
    .unwrap();
    let config = up.data_dir().join("config.toml");
    std::fs::write(&config, "[budget]\nreads = { capacity = 10, per_second = 1 }\n").unwrap();
    let (plan, config) = (plan.to_str().unwrap(), config.to_str().unwrap());
    let out = up.tern(&["plan", "estimate", "-f", plan, "--leftovers", "2", "--config", config, "-o", "yaml"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out.stdout).expect("YAML");
    assert_eq!(doc["assumed"]["concurrency"]["failover"], 1, "{doc}");
    assert_eq!(doc["assumed"]["deletes_per_vm"], 2.0, "{doc}");
    assert_eq!(doc["assumed"]["budget"]["reads"]["per_second"], 1.0, "{doc}");
    assert_eq!(doc["assumed"]["budget"]["writes"]["per_second"], 10.0, "ARM's default for the rest: {doc}");

    // Bad input: exit 2 with what to do, as other plan commands.
    let out = up.tern(&["plan", "estimate", "--vm", "no-such-vm"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no-such-vm"), "{out:?}");
    let out = up.tern(&["plan", "estimate", "--all-ready", "--leftovers", "5"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let drill = up.data_dir().join("drill.yaml");
    std::fs::write(&drill, "select: { vms: [vm-00001] }\nmode: drill\n").unwrap();
    let out = up.tern(&["plan", "estimate", "-f", drill.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("drill"), "{out:?}");

    // Once a plan ran, its phase durations (the simulator's, 300× compressed) replace Azure's.
    let out = up.tern(&["plan", "submit", "--vm", "vm-00001", "--watch"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = up.tern(&["plan", "estimate", "--vm", "vm-00002", "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = json(&out);
    let source = doc["assumed"]["durations_source"].as_str().unwrap_or_default();
    assert!(source.starts_with("medians of 1 earlier plan (1 VMs): failover, commit, reprotect, cleanup"), "{doc}");
    let makespan = doc["makespan_s"].as_f64().unwrap();
    assert!(makespan < 120.0, "the simulator's compressed jobs, not Azure's: {doc}");
    let out = up.tern(&["plan", "estimate", "--vm", "vm-00002", "--no-history", "-o", "json"]);
    let doc = json(&out);
    // Without history: Azure's typical durations, at the speed this stack's simulator runs them
    // (endpoints.json's clock), not the hours they take in Azure.
    let source = doc["assumed"]["durations_source"].as_str().unwrap_or_default();
    assert!(source.starts_with("Azure's typical") && source.contains("300× faster"), "{doc}");
    let makespan = doc["makespan_s"].as_f64().unwrap();
    assert!(makespan > 2.0 && makespan < 120.0, "{doc}");
}
