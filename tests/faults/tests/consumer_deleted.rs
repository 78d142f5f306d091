//! Scenario 11: the planner's durable consumer of the events stream is deleted mid-plan (an
//! operator's mistake, or a stream restored without its consumers), with the bootstrap
//! identity that created it. The workers go on publishing results the planner no longer
//! receives; the planner logs the loss at ERROR, naming the fix (`tern bus ensure`), and its
//! watchdog applies the outcomes the workers kept in their records, so the plan completes, every
//! VM once.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_bus::PLANNER_EVENTS_CONSUMER;
use tern_bus::topology::EVENTS_STREAM;
use tern_faults::{Expected, Fleet, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

/// How often the planner has said its consumer is gone.
fn reports(fleet: &Fleet) -> usize {
    fleet.stack.errors_logged().iter().filter(|l| l.contains("durable consumer no longer exists")).count()
}

#[tokio::test]
async fn the_planner_s_events_consumer_deleted_mid_plan_is_recovered_and_the_plan_completes() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start(estate(n)).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;
    let rounds = rounds(1);
    for round in 0..rounds {
        tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n.div_ceil(rounds))).await;
        let reported = reports(&fleet);
        let stream = fleet.stack.bus.jetstream().get_stream(EVENTS_STREAM).await.expect("the events stream");
        stream.delete_consumer(PLANNER_EVENTS_CONSUMER).await.expect("the bootstrap identity deletes the consumer");
        // The planner says so, naming the fix; meanwhile its watchdog applies what the workers
        // finished from their records, so the plan goes on.
        tern_testkit::wait_until("the planner to report its consumer gone", tern_testkit::stack::DEADLINE, || async {
            reports(&fleet) > reported
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if round + 1 < rounds {
            // An operator runs `tern bus ensure`: the planner takes its events again.
            fleet.stack.bus.ensure_topology(&tern_testkit::stack::topology()).await.expect("the topology again");
        }
    }
    let plan = fleet.finished(&plan_id).await;
    assert_clean("the planner's consumer deleted", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
