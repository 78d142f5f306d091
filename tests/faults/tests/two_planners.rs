//! Scenario 12: two planner processes serve the same bus and race for the same events and plans;
//! each is SIGKILLed and started again in turn, alternately, at random points of the plan.
//! Whichever planner handles an event, the plan moves once: no VM dispatched twice into the same
//! phase, nothing lost, every VM home.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

#[tokio::test]
async fn two_planners_killed_alternately_mid_plan_lose_nothing_and_repeat_nothing() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(30);
    let mut fleet = Fleet::start(estate(n)).await;
    let second = fleet.start_instance("tern-planner", &[]);
    let first = fleet.index["tern-planner"];
    let plan_id = fleet.submit(fleet.spec(n)).await;
    for round in 0..2 * rounds(2) {
        tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
        // `Fleet::plan` asks the first planner; it answers again as soon as it is back.
        fleet.stack.restart(if round % 2 == 0 { first } else { second });
    }
    let plan = fleet.finished(&plan_id).await;
    assert_clean("two planners killed alternately", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
