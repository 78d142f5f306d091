//! The plan store against a real nats-server: plans larger than one NATS message, written in
//! chunks, read back whole, and two replicas racing on one plan.

use tern_bus::{Bucket, Bus, KvError};
use tern_planner::store::{CHUNK_VMS, Dirty, PlanStore};
use tern_proto::{Plan, VmRef, VmState, VmStatus};
use tern_testkit::NatsServer;

/// A plan of `n` VMs whose statuses are about as large as real ones (long ARM ids).
fn plan(id: &str, n: usize) -> Plan {
    let vault = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg-tern-dr/providers/Microsoft.RecoveryServices/vaults/tern-vault";
    let vms = (0..n)
        .map(|i| VmStatus {
            vm: Some(VmRef {
                vault_id: vault.into(),
                protected_item_id: format!(
                    "{vault}/replicationFabrics/asr-a2a-default-westus/replicationProtectionContainers/asr-a2a-default-westus-container/replicationProtectedItems/vm-{i:05}"
                ),
                lifecycle_id: format!("00000000-0000-4000-8000-{i:012}"),
                name: format!("vm-{i:05}"),
            }),
            state: VmState::Pending as i32,
            attempt: 1,
            reason: "preflight warning: recovery-point: the latest app-consistent point is 3 hours old".into(),
            ..Default::default()
        })
        .collect();
    Plan { plan_id: id.into(), vms, ..Default::default() }
}

async fn stores(n: usize) -> (NatsServer, Vec<PlanStore>) {
    let nats = NatsServer::start().await.expect("nats-server");
    let mut out = Vec::new();
    for i in 0..n {
        let bus = Bus::connect(&nats.url(), &format!("store-{i}")).await.unwrap();
        bus.ensure_topology(&tern_testkit::stack::topology()).await.unwrap();
        out.push(PlanStore::new(&bus).await.unwrap());
    }
    (nats, out)
}

async fn keys(nats: &NatsServer) -> Vec<String> {
    let bus = Bus::connect(&nats.url(), "keys").await.unwrap();
    let mut keys = bus.kv::<Plan>(Bucket::Plans).await.unwrap().keys().await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_plan_of_ten_thousand_vms_is_stored_in_chunks_and_read_back_whole() {
    let (nats, stores) = stores(2).await;
    let big = plan("p-big", 10_000);
    assert!(prost::Message::encoded_len(&big) > 1 << 20, "larger than one NATS message");
    stores[0].create(big.clone()).await.expect("stored");
    let read = stores[1].load("p-big").await.unwrap().expect("found by another planner");
    assert_eq!(read.plan, big);
    let chunks = keys(&nats).await.iter().filter(|k| k.starts_with("chunk.p-big.")).count();
    assert_eq!(chunks, 10_000usize.div_ceil(CHUNK_VMS));
    assert!(matches!(stores[1].create(big.clone()).await, Err(KvError::AlreadyExists { .. })), "ids are unique");
}

#[tokio::test]
async fn of_two_replicas_changing_one_plan_one_wins_and_the_loser_leaves_no_chunk_behind() {
    let (nats, stores) = stores(2).await;
    let p = plan("p-race", 3 * CHUNK_VMS);
    let base = stores[0].create(p).await.unwrap();
    let seen_by_b = stores[1].load("p-race").await.unwrap().unwrap();

    let mut a = base.plan.clone();
    a.vms[0].state = VmState::Running as i32;
    let stored_a = stores[0].update(base.base.clone(), a, &Dirty::Vms(vec![0])).await.expect("A writes first");
    let mut b = seen_by_b.plan.clone();
    b.vms[2 * CHUNK_VMS].state = VmState::Failed as i32;
    let lost = stores[1].update(seen_by_b.base.clone(), b, &Dirty::Vms(vec![2 * CHUNK_VMS])).await;
    assert!(matches!(lost, Err(KvError::Conflict { .. })), "B wrote against a version that moved on: {lost:?}");

    // B reads again and sees A's change; only the chunk B changes is rewritten.
    let fresh = stores[1].load("p-race").await.unwrap().unwrap();
    assert_eq!(fresh.plan, stored_a.plan);
    let mut b = fresh.plan.clone();
    b.vms[2 * CHUNK_VMS].state = VmState::Failed as i32;
    stores[1].update(fresh.base.clone(), b, &Dirty::Vms(vec![2 * CHUNK_VMS])).await.expect("B's retry");

    let now = stores[0].load("p-race").await.unwrap().unwrap();
    assert_eq!(now.plan.vms[0].state, VmState::Running as i32);
    assert_eq!(now.plan.vms[2 * CHUNK_VMS].state, VmState::Failed as i32);
    let chunks = keys(&nats).await.iter().filter(|k| k.starts_with("chunk.p-race.")).count();
    assert_eq!(chunks, 3, "replaced and abandoned chunks are deleted");

    stores[0].delete("p-race").await.unwrap();
    assert!(stores[1].load("p-race").await.unwrap().is_none());
    assert!(keys(&nats).await.iter().all(|k| !k.contains("p-race")));
}
