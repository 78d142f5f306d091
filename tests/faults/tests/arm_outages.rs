//! Scenarios 14–16: Azure itself stops answering for a while, or answers and never finishes.
//!
//! - A regional ARM outage of several minutes mid-plan (short form: 30–60 s): every request,
//!   reads and writes, answered 503 with nothing applied. Workers must wait it out — transient
//!   errors are not attempts — and the plan completes once ARM is back.
//! - A job that never ends: the failover job of one VM stays InProgress forever. The watchdog
//!   gives up on it at the phase's deadline: that VM ends Failed with a reason naming the
//!   deadline, the others succeed, nothing stays Running.
//! - The token expires mid-job: every request answered 401 `ExpiredAuthenticationToken` until a
//!   new token is in use. Workers treat it as transient (get a new token, try again), and no
//!   side effect is sent twice.
//!

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tern_faults::{Expected, Fleet, assert_clean, check, estate, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

/// How long the outage lasts: `TERN_FAULTS_OUTAGE_SECS`, else 30–60 s (seeded).
fn outage(rng: &mut StdRng) -> Duration {
    let secs = std::env::var("TERN_FAULTS_OUTAGE_SECS").ok().and_then(|v| v.parse().ok());
    Duration::from_secs(secs.unwrap_or_else(|| rng.random_range(30..=60)))
}

/// Waits, for `how_long`, on the plan: returns early only if it has ended (nothing left to hit).
async fn hold_for(fleet: &Fleet, plan_id: &str, how_long: Duration) {
    let _ = tern_testkit::wait_until("the fault to have lasted", how_long, || async {
        fleet.plan(plan_id).await.is_some_and(|p| p.finished_at.is_some())
    })
    .await;
}

async fn requests_hit(fleet: &Fleet, counter: &str) -> u64 {
    fleet.stack.admin("counters").await["requests"][counter].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_arm_outage_of_minutes_mid_plan_is_waited_out_and_every_vm_comes_home() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start(estate(n)).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;
    tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
    let lasts = outage(&mut rng);
    fleet.set_faults(json!({"outage": true})).await;
    hold_for(&fleet, &plan_id, lasts).await;
    fleet.set_faults(json!({})).await;
    assert!(requests_hit(&fleet, "outage_503").await > 0, "the outage answered requests");

    let plan = fleet.finished(&plan_id).await;
    assert_clean("an ARM outage", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM waited the outage out and came home: {:?}", plan.counts);
}

#[tokio::test]
async fn a_job_that_never_ends_fails_its_vm_at_the_deadline_and_the_others_come_home() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(10);
    let stuck = format!("vm-{:05}", rng.random_range(1..=n));
    let mut sim = estate(n);
    sim.faults.stuck_jobs = vec![tern_asr_sim::faults::StuckRule {
        selector: tern_asr_sim::Selector { vms: vec![stuck.clone()], fraction: 0.0 },
        operation: tern_asr_sim::Operation::Failover,
    }];
    let fleet = Fleet::start(sim).await;
    // A failover takes seconds here (Azure's minutes, compressed): a minute is its deadline.
    let mut spec = fleet.spec(n);
    spec.deadlines = Some(tern_proto::Deadlines {
        failover: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    });
    let plan_id = fleet.submit(spec).await;
    let plan = fleet.finished(&plan_id).await;

    assert_clean("a job that never ends", &check(&fleet, &plan, &Expected::default()).await);
    for vm in &plan.vms {
        let name = vm.vm.as_ref().map(|r| r.name.as_str()).unwrap_or("?");
        let state = VmState::try_from(vm.state).unwrap_or_default();
        if name == stuck {
            assert_eq!(state, VmState::Failed, "{name}: {}", vm.reason);
            assert!(vm.reason.to_lowercase().contains("deadline"), "{name}'s reason names the deadline: {}", vm.reason);
        } else {
            assert_eq!(state, VmState::Succeeded, "{name}: {}", vm.reason);
        }
    }
}

#[tokio::test]
async fn a_token_expiring_mid_job_is_renewed_and_nothing_is_sent_twice() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start(estate(n)).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;
    tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
    fleet.set_faults(json!({"expired_token": true})).await;
    // Until the 401s have landed on some requests, and a few seconds more (a token refresh).
    tern_testkit::wait_until("the expired token to be refused", Duration::from_secs(30), || async {
        requests_hit(&fleet, "expired_token").await >= 5
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    hold_for(&fleet, &plan_id, Duration::from_secs(rng.random_range(3..=10))).await;
    fleet.set_faults(json!({})).await;

    let plan = fleet.finished(&plan_id).await;
    assert_clean("a token expiring mid-job", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
