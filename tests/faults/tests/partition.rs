//! Scenario 13: a network partition between one worker and NATS while it holds claims. A second
//! instance of a worker (failover, reprotect or cleanup, chosen by the seed) reaches nats-server
//! only through a [`TcpProxy`]; once it holds commands, the proxy cuts every connection and
//! refuses new ones. The instance keeps running and can still reach Azure, but not its claims or
//! its queue: its commands come back after the ack wait and the other instance takes them over.
//! The partition heals later, at a random point. The cut-off instance must send no side effect
//! again that the other one sent (every mutating request the simulator received is counted), and
//! every VM comes home.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::{Seed, TcpProxy};

/// How long to wait for the proxied instance to hold commands of a phase.
const HOLDS_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_worker_cut_off_from_nats_while_holding_claims_sends_nothing_twice_and_every_vm_comes_home() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(30);
    let mut fleet = Fleet::start(estate(n)).await;
    let service = *["tern-failover", "tern-reprotect", "tern-cleanup"].choose(&mut rng).expect("a worker");
    let nats_url = fleet.stack.nats.url();
    let upstream = format!("127.0.0.1:{}", fleet.stack.nats.port()).parse().expect("nats-server's address");
    let proxy = TcpProxy::start(upstream).expect("the proxy listens");
    let cut_off = fleet.start_instance(service, &[("TERN_NATS_URL", &proxy.url_for(&nats_url))]);
    eprintln!("partitioning a second instance of {service} from NATS");
    let plan_id = fleet.submit(fleet.spec(n)).await;

    for _ in 0..rounds(1) {
        // Cut while it holds commands (mid-job: it has claimed them and sent to Azure).
        let holds = tern_testkit::wait_until("the proxied worker to hold commands", HOLDS_WITHIN, || async {
            fleet.in_flight(cut_off).await > 0 || fleet.plan(&plan_id).await.is_some_and(|p| p.finished_at.is_some())
        })
        .await;
        holds.unwrap_or_else(|e| panic!("{e}"));
        let held = fleet.in_flight(cut_off).await;
        proxy.cut();
        eprintln!("cut while {service} held {held} commands");
        // The other instance takes them over while the partition lasts; it heals later.
        tern_faults::progress(&fleet, &plan_id, rng.random_range(n / 2..=n)).await;
        proxy.heal();
    }

    let plan = fleet.finished(&plan_id).await;
    assert_clean("a worker partitioned from NATS", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);
    assert!(proxy.accepted() > 1, "the cut-off instance tried to reconnect");
}
