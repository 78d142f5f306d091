//! Scenario 7: permanent failures on 5 % of the VMs (ASR codes 28031 at failover and 150097 at
//! reprotect), with critical and optional VMs mixed. A failed VM ends with its code and a reason,
//! is never cleaned up, and the policy decides whether the others go on.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tern_asr_sim::faults::{FailureRule, Operation, Selector};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, vms};
use tern_proto::{FailurePolicy, Plan, VmState};
use tern_testkit::Seed;

/// `count` distinct VM names of `1..=n`, seeded.
fn pick(rng: &mut StdRng, n: usize, count: usize) -> Vec<String> {
    let mut all: Vec<usize> = (1..=n).collect();
    all.shuffle(rng);
    all.into_iter().take(count).map(|i| format!("vm-{i:05}")).collect()
}

fn fail(vm: &str, operation: Operation, code: &str) -> FailureRule {
    FailureRule {
        selector: Selector { vms: vec![vm.to_owned()], fraction: 0.0 },
        operation,
        code: code.to_owned(),
        message: None,
    }
}

fn vm<'a>(plan: &'a Plan, name: &str) -> &'a tern_proto::VmStatus {
    plan.vms.iter().find(|v| v.vm.as_ref().is_some_and(|r| r.name == name)).unwrap()
}

#[tokio::test]
async fn optional_vms_that_fail_for_good_end_with_their_code_and_the_rest_come_home() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(40);
    // 5 % fail (at least two: one of each kind); as many again are optional and fine.
    let failing = pick(&mut rng, n, (n / 20).max(2));
    let mut sim = estate(n);
    for (i, name) in failing.iter().enumerate() {
        sim.faults.failures.push(if i % 2 == 0 {
            fail(name, Operation::Failover, "28031")
        } else {
            fail(name, Operation::Reprotect, "150097")
        });
    }
    let fleet = Fleet::start(sim).await;
    let mut optional = failing.clone();
    optional.extend((1..=n).map(|i| format!("vm-{i:05}")).filter(|v| !failing.contains(v) && rng.random_bool(0.05)));
    let mut spec = fleet.spec(n);
    spec.failure_policy = Some(FailurePolicy { optional_vms: optional, ..Default::default() });
    let plan = fleet.finished(&fleet.submit(spec).await).await;

    assert_clean("permanent failures on optional VMs", &check(&fleet, &plan, &Expected::default()).await);
    assert!(!plan.halted, "optional VMs never stop a plan: {}", plan.reason);
    for (i, name) in failing.iter().enumerate() {
        let v = vm(&plan, name);
        let code = if i % 2 == 0 { "28031" } else { "150097" };
        assert_eq!(VmState::try_from(v.state), Ok(VmState::Failed), "{name}: {}", v.reason);
        assert_eq!(v.error.as_ref().map(|e| e.code.as_str()), Some(code), "{name}");
        assert!(v.error.as_ref().is_some_and(|e| !e.recommended_action.is_empty()), "{name}: what to do");
    }
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n - failing.len(), "every other VM came home: {:?}", plan.counts);
}

#[tokio::test]
async fn a_critical_vm_that_fails_for_good_halts_the_plan_and_nothing_is_left_half_done() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(40);
    let critical = pick(&mut rng, n, 1).remove(0);
    let mut sim = estate(n);
    sim.faults.failures.push(fail(&critical, Operation::Failover, "28031"));
    let fleet = Fleet::start(sim).await;
    let plan = fleet.finished(&fleet.submit(fleet.spec(n)).await).await;

    assert_clean("a critical VM failing for good", &check(&fleet, &plan, &Expected::default()).await);
    assert!(plan.halted, "the stop policy halts the plan");
    assert_eq!(VmState::try_from(vm(&plan, &critical).state), Ok(VmState::Failed));
    assert!(plan.reason.contains(&critical), "the plan says which VM halted it: {}", plan.reason);
    // The halt stops new failovers; a VM that already failed over is still brought to the end
    // (reprotected, cleaned up) rather than left running unprotected in the primary region.
    let events = fleet.stack.events(&plan.plan_id).await;
    let failed_over: std::collections::BTreeSet<String> = tern_faults::vm_events(&events)
        .filter(|v| v.phase == tern_proto::Phase::Failover as i32 && v.outcome == tern_proto::Outcome::Succeeded as i32)
        .filter_map(|v| v.vm.as_ref().map(|r| r.name.clone()))
        .collect();
    for name in &failed_over {
        assert_eq!(
            VmState::try_from(vm(&plan, name).state),
            Ok(VmState::Succeeded),
            "{name}: {}",
            vm(&plan, name).reason
        );
    }
    for v in plan.vms.iter().filter(|v| v.state == VmState::Skipped as i32) {
        assert!(v.reason.contains("halted"), "{:?}", v);
    }
}
