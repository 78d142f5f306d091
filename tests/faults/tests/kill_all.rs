//! Scenario 10: every worker SIGKILLed at once — failover, reprotect and cleanup together, as
//! when the node they share dies — at a random point of the plan, and started again, every
//! round. Nothing is lost, nothing is done twice: each command's claim lapses, its redelivery
//! finds the operation record and the job the dead worker started, and settles from Azure's state.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_faults::{Expected, Fleet, SERVICES, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

#[tokio::test]
async fn every_worker_killed_at_once_mid_plan_and_restarted_brings_every_vm_home() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(30);
    let mut fleet = Fleet::start(estate(n)).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;
    let workers: Vec<&str> = SERVICES.iter().copied().filter(|s| *s != "tern-planner").collect();
    for _ in 0..rounds(2) {
        tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=2 * n)).await;
        // All dead before any comes back: no worker can take over another's commands.
        for w in &workers {
            fleet.stack.kill(fleet.index[w]);
        }
        for w in &workers {
            fleet.crash_and_restart(w);
        }
    }
    let plan = fleet.finished(&plan_id).await;
    let expected = Expected { crash_dead_letters: true, ..Expected::default() };
    assert_clean("every worker killed at once", &check(&fleet, &plan, &expected).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
