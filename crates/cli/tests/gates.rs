//! Wave gates as an operator meets them against `tern up`: a wave that waits for
//! `tern plan approve`, a hook answered by the example runner (examples/hooks/), and a hook
//! nobody answers, which halts the plan until `tern plan retry` finds it answered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tern_testkit::{stack::DEADLINE, wait_for};

use common::{Output, Up};

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Submits the plan file `text` (with `--yes`: no question on a pipe anyway); its id.
fn submit(up: &Up, text: &str) -> String {
    let file = up.data_dir().join("plan.yaml");
    std::fs::write(&file, text).unwrap();
    let plan = json(&up.tern(&["plan", "submit", "-f", file.to_str().unwrap(), "-o", "json", "--yes"]));
    plan["plan_id"].as_str().unwrap().to_owned()
}

fn plan(up: &Up, id: &str) -> serde_json::Value {
    json(&up.tern(&["plan", "get", id, "-o", "json"]))
}

/// The plan once `ready` says so of it, within the deadline.
async fn plan_when(up: &Up, id: &str, what: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_for(what, DEADLINE * 2, || {
        let p = plan(up, id);
        let hit = ready(&p).then_some(p);
        async move { hit }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", plan(up, id)))
}

fn vm<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["vms"].as_array().unwrap().iter().find(|v| v["vm"]["name"] == name).unwrap_or_else(|| panic!("{name}: {plan}"))
}

/// The example hook runner (examples/hooks/python/dns_hook.py), answering on `subject` as the
/// `hooks` identity; SIGTERMed and reaped on drop.
struct Runner {
    child: Child,
    log: PathBuf,
    records: PathBuf,
}

impl Runner {
    async fn start(up: &Up, subject: &str) -> Runner {
        let dir = up.data_dir();
        let records = dir.join(format!("{subject}.json"));
        let log = dir.join(format!("{subject}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(common::python())
            .arg(tern_testkit::workspace_root().join("examples/hooks/python/dns_hook.py"))
            .arg("--endpoints")
            .arg(dir.join("endpoints.json"))
            .args(["--subject", subject, "--records"])
            .arg(&records)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting the example hook runner");
        let mut runner = Runner { child, log, records };
        let (log, child) = (&runner.log, &mut runner.child);
        wait_for("the hook runner to listen", DEADLINE, || {
            let exited = child.try_wait().ok().flatten();
            let listening = std::fs::read_to_string(log).is_ok_and(|l| l.contains("listening on"));
            async move {
                assert!(exited.is_none(), "the hook runner exited ({exited:?})");
                listening.then_some(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runner.log()));
        runner
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn records(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.records).unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        common::sigterm(self.child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_wave_behind_an_approval_does_not_fail_over_until_tern_plan_approve() {
    let mut up = Up::start(&["--vms", "4"]).await;
    let id = submit(
        &up,
        "\
select: { vms: [vm-00001, vm-00002] }
waves:
  - name: db
    vms: [vm-00001]
  - name: web
    vms: [vm-00002]
    before:
      - approval: { description: the app owner confirms the database is back }
",
    );
    let waiting =
        plan_when(&up, &id, "the web wave's approval to wait", |p| p["gates"][0]["state"] == "GATE_STATE_WAITING")
            .await;
    // The database failed over; the web tier has not begun.
    assert_ne!(vm(&waiting, "vm-00001")["phase"], "PHASE_FAILOVER", "{waiting}");
    assert_eq!(vm(&waiting, "vm-00002")["state"], "VM_STATE_PENDING", "{waiting}");
    assert_eq!(vm(&waiting, "vm-00002")["phase"], "PHASE_FAILOVER", "{waiting}");
    // `tern plan get` says how to release it.
    let shown = up.tern(&["plan", "get", &id]);
    assert!(shown.text().contains(&format!("tern plan approve {id} --wave web")), "{shown:?}");
    // A wave name that is not the plan's changes nothing.
    let wrong = up.tern(&["plan", "approve", &id, "--wave", "cache", "--as", "ann"]);
    assert_ne!(wrong.code, Some(0), "{wrong:?}");
    assert_eq!(vm(&plan(&up, &id), "vm-00002")["state"], "VM_STATE_PENDING");

    let out = up.tern(&["plan", "approve", &id, "--wave", "web", "--as", "ann", "--reason", "db is back"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let done = plan(&up, &id);
    assert_eq!(done["state"], "PLAN_STATE_COMPLETED", "{done}");
    let gate = &done["gates"][0];
    assert_eq!(
        (gate["state"].as_str(), gate["by"].as_str(), gate["reason"].as_str()),
        (Some("GATE_STATE_PASSED"), Some("ann"), Some("db is back"))
    );
    assert_eq!(vm(&done, "vm-00002")["state"], "VM_STATE_SUCCEEDED", "{done}");
    up.stop().await;
}

#[tokio::test]
async fn a_hook_answered_by_the_example_runner_updates_its_records_and_the_next_wave_goes_on() {
    let mut up = Up::start(&["--vms", "4"]).await;
    let runner = Runner::start(&up, "tern.hooks.dns-update").await;
    let id = submit(
        &up,
        "\
select: { vms: [vm-00001, vm-00002, vm-00003] }
labels: { change: CHG-7 }
waves:
  - name: db
    vms: [vm-00001, vm-00002]
    after:
      - name: point dns at the database
        hook: { subject: tern.hooks.dns-update, timeout: 20s }
  - name: web
    vms: [vm-00003]
",
    );
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", runner.log());
    let done = plan(&up, &id);
    assert_eq!(done["state"], "PLAN_STATE_COMPLETED", "{done}");
    let gate = &done["gates"][0];
    assert_eq!(gate["state"], "GATE_STATE_PASSED", "{done}");
    assert!(gate["reason"].as_str().is_some_and(|r| r.contains("2 records updated")), "the runner's message: {done}");
    assert!(out.text().contains("point dns at the database"), "watch shows the hook: {out:?}");

    // Each VM of the wave is recorded where it now runs: the target region's VM, from the
    // failover's event, with the request's identity.
    let records = runner.records();
    for name in ["vm-00001", "vm-00002"] {
        let record = &records[name];
        let (arm_id, region) = (record["arm_id"].as_str().unwrap_or(""), record["region"].as_str().unwrap_or(""));
        assert_eq!(arm_id, vm(&done, name)["resource"]["arm_id"], "{records}");
        assert!(arm_id.contains("/providers/Microsoft.Compute/virtualMachines/"), "{records}");
        assert!(!region.is_empty(), "{records}");
        assert_eq!(record["plan_id"], id.as_str(), "{records}");
        assert_eq!(record["hook_id"], format!("{id}.gate.0.after.0.1"), "{records}");
    }
    assert!(records.get("vm-00003").is_none(), "only the wave's VMs: {records}");
    assert_eq!(vm(&done, "vm-00003")["state"], "VM_STATE_SUCCEEDED");
    up.stop().await;
}

/// A `hooks` client that receives the requests on `subject` and answers none.
async fn silent_runner(up: &Up, subject: &str) -> (async_nats::Client, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seed = Path::new(up.endpoints["hooks_credentials"].as_str().expect("hooks_credentials in endpoints.json"));
    let auth = tern_bus::NatsAuth::from_dir(tern_bus::Identity::Hooks, seed.parent().unwrap());
    let url = up.endpoints["nats_url"].as_str().unwrap();
    let client = auth.connect_options().await.unwrap().connect(url).await.unwrap();
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heard = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            heard.lock().unwrap().push(serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null));
        }
    });
    (client, seen)
}

// Two threads: the silent runner's task reads requests while the test waits on `tern`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_nobody_answers_halts_the_plan_and_tern_plan_retry_resumes_it() {
    let mut up = Up::start(&["--vms", "4"]).await;
    let (silent, heard) = silent_runner(&up, "tern.hooks.lb-drain").await;
    let id = submit(
        &up,
        "\
select: { vms: [vm-00001, vm-00002] }
waves:
  - name: db
    vms: [vm-00001]
  - name: web
    vms: [vm-00002]
    before:
      - hook: { subject: tern.hooks.lb-drain, timeout: 1s, retries: 1 }
",
    );
    // Two tries, unanswered: the step fails and the stop policy halts the plan.
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let halted = plan(&up, &id);
    let gate = &halted["gates"][0];
    assert_eq!(gate["state"], "GATE_STATE_FAILED", "{halted}");
    assert!(gate["reason"].as_str().is_some_and(|r| r.contains("no answer on tern.hooks.lb-drain")), "{halted}");
    assert!(halted["reason"].as_str().is_some_and(|r| r.contains(&format!("tern plan retry {id} --wave 2"))));
    assert_eq!(vm(&halted, "vm-00002")["state"], "VM_STATE_SKIPPED", "not failed over: {halted}");
    assert_eq!(vm(&halted, "vm-00001")["state"], "VM_STATE_SUCCEEDED", "{halted}");
    assert!(out.text().contains("tern plan retry"), "watch says how to go on: {out:?}");
    {
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 2, "one request per try: {heard:?}");
        let tries: Vec<_> = heard.iter().map(|r| r["try"].as_u64()).collect();
        assert_eq!(tries, [Some(1), Some(2)], "{heard:?}");
        assert_eq!(heard[0]["hook_id"], heard[1]["hook_id"], "one idempotency key per attempt");
        // The request names the wave's VM and where it runs before its failover.
        let vms = heard[0]["vms"].as_array().unwrap();
        assert_eq!(vms.len(), 1, "{heard:?}");
        assert_eq!(vms[0]["name"], "vm-00002");
        assert!(
            vms[0]["resource"]["arm_id"]
                .as_str()
                .is_some_and(|a| a.to_ascii_lowercase().contains("/virtualmachines/vm-00002")),
            "{heard:?}"
        );
        assert_eq!(heard[0]["wave"], "web");
        assert_eq!(heard[0]["when"], "before");
    }
    drop(silent);

    // Someone answers now; the retry is a new attempt and the plan completes.
    let runner = Runner::start(&up, "tern.hooks.lb-drain").await;
    let out = up.tern(&["plan", "retry", &id, "--wave", "web"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = up.tern(&["plan", "watch", &id]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", runner.log());
    let done = plan(&up, &id);
    assert_eq!(done["state"], "PLAN_STATE_COMPLETED", "{done}");
    assert_eq!(done["gates"][0]["attempt"], 2, "{done}");
    assert_eq!(vm(&done, "vm-00002")["state"], "VM_STATE_SUCCEEDED", "{done}");
    assert_eq!(runner.records()["vm-00002"]["hook_id"], format!("{id}.gate.1.before.0.2"));
    up.stop().await;
}
