//! Scenario 8: a plan paused mid-flight, the planner SIGKILLed and started again while it is
//! paused (once with phases still running, once after they settled). The plan stays paused:
//! the phases that were running finish, nothing new is dispatched. Resumed, it completes with
//! every VM home, nothing lost and nothing done twice.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_bus::PLANNER_EVENTS_CONSUMER;
use tern_bus::topology::{COMMANDS_STREAM, EVENTS_STREAM};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, vms};
use tern_proto::{Concurrency, PausePlanRequest, Phase, Plan, PlanState, ResumePlanRequest, VmState, VmStatus};
use tern_testkit::Seed;
use tern_testkit::stack::DEADLINE;

/// The plan as the planner has it now (waits while no planner answers, e.g. just restarted).
async fn plan_now(fleet: &Fleet, plan_id: &str) -> Plan {
    tern_testkit::wait_for("the planner to answer", DEADLINE, || fleet.plan(plan_id))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn state(plan: &Plan) -> PlanState {
    PlanState::try_from(plan.state).unwrap_or(PlanState::Unspecified)
}

/// Whether `phase` of the VM was ever dispatched: it is past that phase, or not waiting for it.
fn started(v: &VmStatus, phase: Phase) -> bool {
    v.state != VmState::Pending as i32 || v.phase > phase as i32
}

/// Requests of `operation` the simulator accepted.
async fn accepted(fleet: &Fleet, operation: &str) -> usize {
    fleet.stack.accepted_ops().await.iter().filter(|(op, _)| op == operation).count()
}

/// Commands queued and not yet taken by a worker.
async fn queued_commands(fleet: &Fleet) -> u64 {
    let mut stream = fleet.stack.bus.jetstream().get_stream(COMMANDS_STREAM).await.expect("the commands stream");
    stream.info().await.expect("the commands stream's state").state.messages
}

/// Crashes the planner, starts it again, and waits until the new one serves its API and pulls
/// events: it has resynced and would have dispatched whatever it was going to.
async fn crash_planner(fleet: &mut Fleet, plan_id: &str) {
    fleet.crash_and_restart("tern-planner");
    plan_now(fleet, plan_id).await;
    tern_testkit::wait_until("the new planner to pull events", DEADLINE, || async {
        let Ok(stream) = fleet.stack.bus.jetstream().get_stream(EVENTS_STREAM).await else { return false };
        stream.consumer_info(PLANNER_EVENTS_CONSUMER).await.is_ok_and(|i| i.num_waiting > 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts that the paused plan dispatched nothing beyond what had started: each failover and
/// reprotect the simulator accepted belongs to a VM the plan shows as having started it, and no
/// command is waiting in the queue.
async fn assert_nothing_new(fleet: &Fleet, plan: &Plan, when: &str) {
    assert_eq!(state(plan), PlanState::Paused, "{when}: the plan is still paused ({})", plan.reason);
    for (phase, operation) in [(Phase::Failover, "unplannedFailover"), (Phase::Reprotect, "switchProtection")] {
        let dispatched = plan.vms.iter().filter(|v| started(v, phase)).count();
        assert_eq!(
            accepted(fleet, operation).await,
            dispatched,
            "{when}: {operation} sent for exactly the {dispatched} VMs whose {} had started: {:?}",
            phase.slug(),
            plan.counts
        );
    }
    assert_eq!(queued_commands(fleet).await, 0, "{when}: no command is queued");
}

#[tokio::test]
async fn a_paused_plan_stays_paused_across_planner_crashes_and_completes_once_resumed() {
    let seed = Seed::new();
    eprintln!("seed {}", seed.value());
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let mut sim = estate(n);
    sim.seed = seed.value(); // job durations and ids
    let mut fleet = Fleet::start(sim).await;
    // A quarter of the VMs fail over at a time, so a pause finds most of them still waiting.
    let mut spec = fleet.spec(n);
    let c = (n as u32 / 4).max(1);
    spec.concurrency = Some(Concurrency { failover: c, ..Default::default() });
    let plan_id = fleet.submit(spec).await;

    // Pause at a random point of the first failover rounds.
    let m = rng.random_range(1..=2 * n);
    tern_testkit::wait_until(&format!("{m} events"), DEADLINE, || async {
        fleet.stack.events(&plan_id).await.len() >= m
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let request = PausePlanRequest { plan_id: plan_id.clone(), reason: "fault suite: paused".into() };
    let paused = fleet.planner().await.pause_plan(request).await.expect("the plan pauses").into_inner();
    assert_eq!(state(&paused), PlanState::Paused);
    let waiting = paused.vms.iter().filter(|v| !started(v, Phase::Failover)).count();
    eprintln!("paused after {m} events: {:?}", paused.counts);
    assert!(waiting > 0, "the pause came after every failover was dispatched: nothing to hold back");

    // Killed while phases still run: their events wait in the planner's durable consumer.
    crash_planner(&mut fleet, &plan_id).await;
    let settled = tern_testkit::wait_for("the running phases to settle", DEADLINE, || async {
        fleet.plan(&plan_id).await.filter(|p| p.vms.iter().all(|v| v.state != VmState::Running as i32))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_nothing_new(&fleet, &settled, "after a planner crash with phases running").await;
    let still_waiting = settled.vms.iter().filter(|v| !started(v, Phase::Failover)).count();
    assert_eq!(still_waiting, waiting, "no failover started while paused: {:?}", settled.counts);

    // Killed again with nothing running: the new planner resyncs and still dispatches nothing.
    crash_planner(&mut fleet, &plan_id).await;
    let again = plan_now(&fleet, &plan_id).await;
    assert_nothing_new(&fleet, &again, "after a planner crash with nothing running").await;
    assert_eq!(again.vms, settled.vms, "nothing moved while paused");

    let resumed = fleet.planner().await.resume_plan(ResumePlanRequest { plan_id: plan_id.clone() }).await;
    assert_eq!(state(&resumed.expect("the plan resumes").into_inner()), PlanState::Running);
    let plan = fleet.finished(&plan_id).await;
    assert_clean("pause, planner crash, resume", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
