//! The example event consumers (examples/consumers/) against `tern up`: each reads the JSON
//! mirror as the events-reader, checks every event against the schema its `dataschema` names, and
//! keeps a DNS-style record of where every failed-over VM now runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tern_testkit::{stack::DEADLINE, wait_for};

const VMS: usize = 4;

const PLAN: &str = "\
select:
  vms: [vm-00001, vm-00002, vm-00003, vm-00004]
recovery_point: latest-processed
";

fn go() -> Option<PathBuf> {
    std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join("go")).find(|p| p.is_file())
}

/// A consumer process; SIGTERMed and reaped on drop.
struct Consumer {
    name: &'static str,
    child: Child,
    records: PathBuf,
    log: PathBuf,
}

impl Consumer {
    fn start(name: &'static str, mut cmd: Command, dir: &Path) -> Consumer {
        let records = dir.join(format!("{name}-records.json"));
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .arg("--records")
            .arg(&records)
            .arg("--schemas")
            .arg(tern_testkit::workspace_root().join("docs/events/schemas"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {name} consumer: {e}"));
        Consumer { name, child, records, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The record file once it names every VM, else why not, within the deadline.
    async fn records(&mut self) -> serde_json::Value {
        let (records, child) = (&self.records, &mut self.child);
        let found = wait_for(&format!("the {} consumer's records of {VMS} VMs", self.name), DEADLINE * 3, || {
            let exited = child.try_wait().ok().flatten();
            let text = std::fs::read_to_string(records).ok();
            async move {
                if let Some(status) = exited {
                    return Some(Err(format!("it exited early ({status})")));
                }
                let doc: serde_json::Value = serde_json::from_str(&text?).ok()?;
                (doc.as_object()?.len() >= VMS).then_some(Ok(doc))
            }
        })
        .await;
        match found {
            Ok(Ok(doc)) => doc,
            Ok(Err(why)) => panic!("the {} consumer: {why}\n{}", self.name, self.log()),
            Err(e) => panic!("{e}\n{}", self.log()),
        }
    }

    /// SIGTERM; the exit status says whether every event matched its schema.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        common::sigterm(self.child.id());
        let child = &mut self.child;
        let status = wait_for(&format!("the {} consumer to exit", self.name), DEADLINE, || {
            let s = child.try_wait().ok().flatten();
            async move { s }
        })
        .await
        .unwrap();
        (status, self.log())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn the_example_consumers_keep_a_record_of_every_failed_over_vm_from_schema_valid_json_events() {
    let mut up = common::Up::start(&["--vms", "6"]).await;
    let dir = up.data_dir().to_owned();
    let endpoints = dir.join("endpoints.json");
    let root = tern_testkit::workspace_root();

    let mut consumers = Vec::new();
    let mut python = Command::new(common::python());
    python.arg(root.join("examples/consumers/python/consumer.py")).arg("--endpoints").arg(&endpoints);
    consumers.push(Consumer::start("python", python, &dir));
    match go() {
        Some(go) => {
            let mut cmd = Command::new(go);
            cmd.current_dir(root.join("examples/consumers/go"))
                .args(["run", "-mod=mod", "."])
                .arg("--endpoints")
                .arg(&endpoints);
            consumers.push(Consumer::start("go", cmd, &dir));
        }
        None => println!("go not found: the Go consumer was not run"),
    }

    let file = dir.join("plan.yaml");
    std::fs::write(&file, PLAN).unwrap();
    let out = up.tern(&["plan", "submit", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let plan_id = plan["plan_id"].as_str().unwrap().to_owned();
    // To its end: then every kind of event a failback publishes has reached the consumers.
    let out = up.tern(&["plan", "watch", &plan_id]);
    assert_eq!(out.code, Some(0), "{out:?}");

    for mut consumer in consumers {
        let name = consumer.name;
        let records = consumer.records().await;
        // Every event of the plan, up to its last, was read and matched its schema.
        let completed = format!("tern.plan.completed {plan_id}");
        let log = &consumer.log;
        wait_for(&format!("the {name} consumer to read the plan's last event"), DEADLINE, || {
            let seen = std::fs::read_to_string(log).is_ok_and(|l| l.contains(&completed));
            async move { seen.then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", consumer.log()));
        let (status, log) = consumer.stop().await;
        assert!(status.success(), "the {name} consumer refused an event (schema or headers):\n{log}");
        assert!(!log.contains("refused"), "{log}");

        // The record says where each VM runs now, as the failover event told it.
        for i in 1..=VMS {
            let vm = format!("vm-{i:05}");
            let record = &records[&vm];
            assert_eq!(record["plan_id"], plan_id.as_str(), "{name}: {vm}: {records}");
            assert!(
                record["arm_id"]
                    .as_str()
                    .is_some_and(|id| id.contains("/providers/Microsoft.Compute/virtualMachines/")),
                "{name}: {vm} has no ARM id: {records}"
            );
            assert!(record["region"].as_str().is_some_and(|r| !r.is_empty()), "{name}: {vm} has no region: {records}");
        }
    }
    up.stop().await;
}
