//! Dead letters as an operator looks after them with `tern dlq`, against `tern up`: garbage and
//! a forged command reach the failover queue, the worker dead-letters both; the operator lists
//! and reads them, replays the command (a new attempt through the planner, which refuses what it
//! cannot retry), is refused a replay of the garbage, and purges.

mod common;

use serde_json::Value;
use tern_bus::{Bus, Identity, NatsAuth};
use tern_proto::{Command, FailoverCommand, Phase, VmRef, command};
use tern_testkit::{stack::DEADLINE, wait_for};

/// A failover command of `plan` for `vm` that no plan dispatched (attempt 9: no real one has it).
fn forged_failover(plan: &str, vm: VmRef) -> Command {
    Command {
        command_id: tern_bus::ids::command_id(plan, &vm, Phase::Failover, 9),
        plan_id: plan.into(),
        vm: Some(vm),
        attempt: 9,
        action: Some(command::Action::Failover(FailoverCommand::default())),
        ..Default::default()
    }
}

fn json(out: &common::Output) -> Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn by_kind<'a>(letters: &'a [Value], kind: &str, plan: &str) -> &'a Value {
    letters
        .iter()
        .find(|d| d["kind"] == kind && d["plan_id"] == plan)
        .unwrap_or_else(|| panic!("no {kind} dead letter of {plan}: {letters:#?}"))
}

#[tokio::test]
async fn an_operator_lists_shows_replays_and_purges_dead_letters() {
    let up = common::Up::start(&["--vms", "4", "--fail", "vm-00001:failover:28031"]).await;
    let dir = up.data_dir();
    assert!(up.endpoints["nats_operator_credentials"].as_str().is_some_and(|f| f.ends_with("operator.nk")));
    let out = up.tern(&["dlq", "list"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("no dead letters"), "{out:?}");

    // A plan whose one VM fails its failover: the plan ends and lets the VM go.
    let out = up.tern(&["plan", "submit", "--vm", "vm-00001"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let plan_id = out.stdout.trim().to_owned();
    assert_eq!(up.tern(&["plan", "watch", &plan_id]).code, Some(1));
    let plan = json(&up.tern(&["plan", "get", &plan_id, "-o", "json"]));
    let vm = &plan["vms"][0];
    assert_eq!(vm["state"], "VM_STATE_FAILED", "{plan}");
    let field = |k: &str| vm["vm"][k].as_str().unwrap_or_default().to_owned();
    let vm_ref = VmRef {
        vault_id: field("vault_id"),
        protected_item_id: field("protected_item_id"),
        lifecycle_id: field("lifecycle_id"),
        name: field("name"),
    };

    // Garbage, a command of that plan no plan dispatched, and one of a plan that never was: the
    // failover worker dead-letters all three (the bootstrap identity may publish anything).
    let secrets = dir.join("secrets").join("nats");
    let nats = up.endpoints["nats_url"].as_str().unwrap();
    let admin = Bus::connect_with(nats, "tern-test", &NatsAuth::from_dir(Identity::Bootstrap, &secrets)).await.unwrap();
    let subject = tern_bus::subjects::command(tern_bus::WorkQueue::Failover, &plan_id).unwrap();
    admin.jetstream().publish(subject, b"\xffnot a command\x00".as_slice().into()).await.unwrap().await.unwrap();
    admin.publish_command(&forged_failover(&plan_id, vm_ref)).await.unwrap();
    let stranger = VmRef { name: "vm-00002".into(), ..Default::default() };
    admin.publish_command(&forged_failover("p-never", stranger)).await.unwrap();

    let letters: Vec<Value> = wait_for("three dead letters", DEADLINE, || {
        let out = up.tern(&["dlq", "list", "-o", "json"]);
        async move {
            let letters: Vec<Value> = serde_json::from_str(&out.stdout).ok()?;
            (letters.len() == 3).then_some(letters)
        }
    })
    .await
    .unwrap();
    let garbage = by_kind(&letters, "undecodable", &plan_id);
    let forged = by_kind(&letters, "command", &plan_id);
    let never = by_kind(&letters, "command", "p-never");
    for d in [garbage, forged, never] {
        assert_eq!(d["queue"], "failover", "{d}");
        assert_eq!(d["stream"], "TERN_COMMANDS", "{d}");
        assert!(d["deliveries"].as_u64().is_some_and(|n| n >= 1), "{d}");
    }
    assert!(garbage["reason"].as_str().unwrap().starts_with("undecodable payload"), "{garbage}");
    assert!(forged["reason"].as_str().unwrap().contains("does not hold VM"), "the worker's reason in full: {forged}");
    assert_eq!((forged["vm"].as_str(), forged["phase"].as_str()), (Some("vm-00001"), Some("failover")), "{forged}");
    let seq = |d: &Value| d["sequence"].as_u64().unwrap().to_string();
    let (garbage_seq, forged_seq, never_seq) = (seq(garbage), seq(forged), seq(never));

    // Filters, and the table for people: reasons cut short, a row each.
    assert_eq!(json(&up.tern(&["dlq", "list", "--plan", "p-never", "-o", "json"])).as_array().unwrap().len(), 1);
    assert_eq!(json(&up.tern(&["dlq", "list", "--queue", "cleanup", "-o", "json"])), Value::Array(vec![]));
    let out = up.tern(&["dlq", "list"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("3 dead letter(s)") && out.stdout.contains("vm-00001"), "{out:?}");
    assert!(out.stdout.lines().all(|l| l.chars().count() < 200), "reasons are truncated in the table: {out:?}");

    // Show: the command decoded, the garbage as bytes with a note.
    let shown = json(&up.tern(&["dlq", "show", &forged_seq, "-o", "json"]));
    assert_eq!(shown["payload"]["type"], "tern.v1.Command", "{shown}");
    assert_eq!(shown["payload"]["command"]["plan_id"], plan_id.as_str(), "{shown}");
    assert_eq!(shown["payload"]["command"]["attempt"], 9, "{shown}");
    assert!(shown["headers"]["Tern-Dlq-Reason"].as_str().is_some_and(|r| r.contains("does not hold")), "{shown}");
    let out = up.tern(&["dlq", "show", &garbage_seq]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("undecodable") && out.stdout.contains("\\xffnot a command\\x00"), "{out:?}");
    assert!(out.stdout.contains("ff 6e 6f 74"), "and as hex: {out:?}");
    let out = up.tern(&["dlq", "show", "999999"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no dead letter 999999"), "{out:?}");

    // Garbage cannot be replayed: exit 2, saying why and what removes it; it stays.
    let out = up.tern(&["dlq", "replay", &garbage_seq, "--yes"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("cannot be replayed") && out.stderr.contains(&format!("tern dlq purge {garbage_seq}")));
    // A command of a plan that never was: the planner refuses, the dead letter stays.
    let out = up.tern(&["dlq", "replay", &never_seq, "--yes"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("the planner refused") && out.stderr.contains("is kept"), "{out:?}");
    assert_eq!(json(&up.tern(&["dlq", "list", "-o", "json"])).as_array().unwrap().len(), 3, "nothing changed");

    // The failed VM's command: a new attempt through the planner, and the dead letter goes.
    let out = up.tern(&["dlq", "replay", &forged_seq, "--yes"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("replayed dead letter {forged_seq}")), "{out:?}");
    let plan = json(&up.tern(&["plan", "get", &plan_id, "-o", "json"]));
    assert_eq!(plan["vms"][0]["attempt"], 2, "RetryVm made a new attempt: {plan}");
    let left = json(&up.tern(&["dlq", "list", "-o", "json"]));
    assert!(left.as_array().unwrap().iter().all(|d| seq(d) != forged_seq), "{left}");
    let out = up.tern(&["dlq", "replay", &forged_seq, "--yes"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains(&format!("no dead letter {forged_seq}")), "{out:?}");

    // Purge: an unknown sequence is named and nothing goes; then by plan, then the rest.
    let out = up.tern(&["dlq", "purge", &never_seq, "999999", "--yes"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("999999") && out.stderr.contains("nothing was deleted"), "{out:?}");
    assert_eq!(json(&up.tern(&["dlq", "list", "-o", "json"])).as_array().unwrap().len(), 2);
    let out = up.tern(&["dlq", "purge", "--plan", &plan_id, "--yes"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("removed 1 dead letter(s)"), "{out:?}");
    let out = up.tern(&["dlq", "purge", "--all", "--yes"]);
    assert!(out.stdout.contains("removed 1 dead letter(s)"), "{out:?}");
    assert_eq!(json(&up.tern(&["dlq", "list", "-o", "json"])), Value::Array(vec![]));

    // The events-reader's credentials do not open the dead letters.
    let reader = up.endpoints["nats_credentials"].as_str().unwrap();
    let out = up.tern(&["dlq", "list", "--nats-credentials", reader]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");
}
