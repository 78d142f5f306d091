//! Scenario: the bus is a 3-node JetStream cluster, as deploy/nats/ runs it in production
//! (`sync_interval: always`, every stream, consumer and bucket with three replicas, Tern's
//! identities, TLS). The node leading the commands stream is SIGKILLed in the middle of a plan
//! and started again: the plan goes on with two nodes, completes, and nothing is duplicated or
//! lost.

use std::time::Instant;

use tern_bus::topology::COMMANDS_STREAM;
use tern_faults::{Expected, Fleet, assert_clean, check, estate, progress, vms};
use tern_proto::{Concurrency, VmState};
use tern_testkit::Seed;

/// The cluster node (`n0`..`n2`) that leads `stream` now.
async fn leader(fleet: &Fleet, stream: &str) -> Option<usize> {
    let mut stream = fleet.stack.bus.jetstream().get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.as_deref()?.strip_prefix('n')?.parse().ok()
}

#[tokio::test]
async fn a_cluster_node_killed_mid_plan_and_restarted_loses_and_duplicates_nothing() {
    let seed = Seed::new();
    let n = vms(12);
    let mut sim = estate(n);
    sim.seed = seed.value();
    let mut fleet = Fleet::start_on_cluster(sim).await;
    let mut commands = fleet.stack.bus.jetstream().get_stream(COMMANDS_STREAM).await.expect("the commands stream");
    assert_eq!(commands.info().await.unwrap().config.num_replicas, 3, "three replicas of the commands");

    let mut spec = fleet.spec(n);
    let c = (n as u32 / 3).max(1);
    spec.concurrency = Some(Concurrency { failover: c, reprotect: c, cleanup: c });
    let plan_id = fleet.submit(spec).await;
    // Some way into the plan: failovers sent, commands in flight.
    progress(&fleet, &plan_id, n).await;
    let victim = tern_testkit::wait_for("the commands stream to have a leader", tern_testkit::stack::DEADLINE, || {
        leader(&fleet, COMMANDS_STREAM)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let killed = Instant::now();
    fleet.stack.nats.kill_node(victim);
    eprintln!("killed n{victim}, the commands stream's leader");
    // The plan goes on with two of three nodes: a new leader is elected, nothing waits for n{victim}.
    progress(&fleet, &plan_id, n).await;
    fleet.stack.nats.restart_node(victim).await.unwrap_or_else(|e| panic!("restarting n{victim}: {e}"));
    eprintln!("n{victim} back after {:?}", killed.elapsed());

    let plan = fleet.finished(&plan_id).await;
    assert_clean("cluster node restart", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
}
