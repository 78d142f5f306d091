//! Claims under clock skew: a lease is written with the owner's clock and judged with the
//! claimer's, and two hosts' clocks disagree. Real nats-server, real KV.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_bus::{Bucket, Bus, Topology};
use tern_testkit::{NatsServer, wait_until};
use tern_worker::{Claim, Fence, FenceError, OperationRecord, Sightings};

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_host_whose_clock_runs_an_hour_ahead_never_takes_a_claim_its_owner_still_renews() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let bus = Bus::connect(&server.url(), "tern-test").await.unwrap();
    bus.ensure_topology(&Topology::single_server()).await.unwrap();
    let ops = bus.kv::<OperationRecord>(Bucket::Operations).await.unwrap();
    let lease = Duration::from_millis(900);
    let (here, there) = (Sightings::default(), Sightings::default());
    let Claim::Owned(mut owner) = Fence::claim(&ops, "cmd", "owner", lease, &here).await.unwrap() else {
        panic!("the first claim owns the command")
    };
    // The other host's clock is an hour ahead: by it, every lease the owner writes ran out long
    // ago. The owner keeps renewing, a third of a lease apart, as a working worker does.
    let working = tokio_util::sync::CancellationToken::new();
    let renewing = {
        let working = working.clone();
        tokio::spawn(async move {
            while !working.is_cancelled() {
                owner.renew().await.expect("the owner still holds its claim");
                tokio::time::sleep(lease / 3).await; // the owner's renewal cadence
            }
            owner
        })
    };
    let ahead = || wall_ms() + 3_600_000;
    for _ in 0..3 {
        match Fence::claim_at(&ops, "cmd", "skewed", lease, &there, ahead).await {
            Err(FenceError::Busy { .. }) => {}
            Ok(Claim::Owned(_)) => panic!("the skewed host took a claim its owner still renews"),
            other => panic!("unexpected: {other:?}"),
        }
    }
    // The owner dies (no more renewals): a lease later the skewed host takes the command over,
    // and the old owner's next write finds it lost.
    working.cancel();
    let mut owner = renewing.await.unwrap();
    wait_until("the abandoned claim to be taken over", Duration::from_secs(10), || async {
        matches!(Fence::claim_at(&ops, "cmd", "skewed", lease, &there, ahead).await, Ok(Claim::Owned(_)))
    })
    .await
    .unwrap();
    assert!(matches!(owner.renew().await, Err(FenceError::Lost)));
}
