//! Claims under clock skew: a lease is written with the owner's clock and judged with the
//! claimer's, and two hosts' clocks disagree. Real nats-server, real KV.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_bus::{Bucket, Bus, Topology, TypedKv};
use tern_testkit::{NatsServer, wait_until};
use tern_worker::{Claim, Fence, FenceError, OperationRecord, Sightings};

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

const LEASE: Duration = Duration::from_millis(900);

/// A bus with its operation records, and a command "cmd" claimed by "owner" for [`LEASE`].
async fn claimed() -> (NatsServer, TypedKv<OperationRecord>, Fence) {
    let server = NatsServer::start().await.expect("nats-server starts");
    let bus = Bus::connect(&server.url(), "tern-test").await.unwrap();
    bus.ensure_topology(&Topology::single_server()).await.unwrap();
    let ops = bus.kv::<OperationRecord>(Bucket::Operations).await.unwrap();
    let Claim::Owned(owner) = Fence::claim(&ops, "cmd", "owner", LEASE, &Sightings::default()).await.unwrap() else {
        panic!("the first claim owns the command")
    };
    (server, ops, *owner)
}

#[tokio::test]
async fn a_host_whose_clock_runs_an_hour_ahead_never_takes_a_claim_its_owner_still_renews() {
    let (_server, ops, owner) = claimed().await;
    let there = Sightings::default();
    // The other host's clock is an hour ahead: by it, every lease the owner writes ran out long
    // ago. The owner keeps renewing, a third of a lease apart, as a working worker does.
    let working = tokio_util::sync::CancellationToken::new();
    let renewing = {
        let working = working.clone();
        tokio::spawn(async move {
            while !working.is_cancelled() {
                owner.renew().await.expect("the owner still holds its claim");
                tokio::time::sleep(LEASE / 3).await; // the owner's renewal cadence
            }
            owner
        })
    };
    let ahead = || wall_ms() + 3_600_000;
    for _ in 0..3 {
        match Fence::claim_at(&ops, "cmd", "skewed", LEASE, &there, ahead).await {
            Err(FenceError::Busy { .. }) => {}
            Ok(Claim::Owned(_)) => panic!("the skewed host took a claim its owner still renews"),
            other => panic!("unexpected: {other:?}"),
        }
    }
    // The owner dies (no more renewals): a lease later the skewed host takes the command over,
    // and the old owner's next write finds it lost.
    working.cancel();
    let owner = renewing.await.unwrap();
    wait_until("the abandoned claim to be taken over", Duration::from_secs(10), || async {
        matches!(Fence::claim_at(&ops, "cmd", "skewed", LEASE, &there, ahead).await, Ok(Claim::Owned(_)))
    })
    .await
    .unwrap();
    assert!(matches!(owner.renew().await, Err(FenceError::Lost)));
}

#[tokio::test]
async fn a_claim_kept_alive_holds_while_its_work_awaits_something_slow() {
    let (_server, ops, owner) = claimed().await;
    let there = Sightings::default();
    // The work awaits something that never renews — a read retried through an ARM outage, a
    // wait for ARM's budget — for four LEASEs, with the claim kept alive beside it. Meanwhile a
    // second copy of the command tries to claim it, again and again.
    let keeper = owner.clone();
    let slow_work = tokio::time::sleep(LEASE * 4);
    let contender = async {
        let mut tries = 0;
        while tries < 4 {
            match Fence::claim(&ops, "cmd", "copy", LEASE, &there).await {
                Err(FenceError::Busy { .. }) => tries += 1,
                Ok(Claim::Owned(_)) => panic!("a copy took the claim from an owner whose work was only slow"),
                other => panic!("unexpected: {other:?}"),
            }
        }
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(slow_work, contender) } => {}
        lost = keeper.keep_alive() => panic!("the claim was lost while kept alive: {lost}"),
    }
    // The work goes on under the same claim.
    owner.step_done("step").await.expect("the owner still holds its claim");
    assert!(owner.is_done("step"));
}
