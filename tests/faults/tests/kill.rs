//! Scenario 1: every service SIGKILLed at random points of a plan, several times, and started
//! again. Nothing is lost, nothing is done twice.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tern_faults::{Expected, Fleet, SERVICES, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

#[tokio::test]
async fn every_service_killed_mid_plan_and_restarted_loses_nothing_and_repeats_nothing() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(30);
    let mut fleet = Fleet::start(estate(n)).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;
    for _ in 0..rounds(1) {
        let mut order = SERVICES;
        order.shuffle(&mut rng);
        for service in order {
            tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
            fleet.crash_and_restart(service);
        }
    }
    let plan = fleet.finished(&plan_id).await;
    assert_clean("SIGKILL and restart", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
