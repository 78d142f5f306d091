//! The planner service: the gRPC API, plan state in KV, and the loop that turns worker events
//! into the next commands.
//!
//! Every change to a plan is a compare-and-set on its KV record, made by whichever planner
//! replica handles the request or event; commands are published after the record is stored
//! and carry deterministic ids, so replicas never double-dispatch and a restarted planner
//! re-publishes what may have been lost (`resync`).
//!
//! This module holds the shared state, its construction, the shared helpers and the small KV
//! records (`PlanRef`, `VmLock`); `progression`, `submit`, `control` and `grpc` hold the rest.

mod control;
mod dead_letters;
mod grpc;
mod hooks;
mod progression;
mod submit;
mod watchdog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tern_asr::AsrClient;
use tern_bus::{Bucket, Bus, KvError, TypedKv};
use tern_proto::{PlanRef, PlanState, VmLock};
use tonic::Status;

use crate::progress;
use crate::store::PlanStore;

pub use grpc::{serve_grpc, serve_grpc_tls};

/// Commands (and VM lock releases) sent at once after a step.
const SEND_CONCURRENCY: usize = 64;

/// Worker events waiting for their plan's next step, each with whoever waits for it stored.
type Pending = Vec<(tern_proto::VmEvent, tokio::sync::oneshot::Sender<Result<(), String>>)>;

/// The planner's shared state. Cheap to clone.
#[derive(Clone)]
pub struct PlannerService {
    inner: Arc<Inner>,
}

struct Inner {
    /// One lock per plan: this process applies a plan's changes one at a time, so its own
    /// event handlers never race each other's compare-and-set (other replicas still may).
    plan_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events received and not yet applied, by plan.
    pending: std::sync::Mutex<HashMap<String, Pending>>,
    /// Cancelled when the planner stops: its hook tries stop with it.
    stopping: tokio_util::sync::CancellationToken,
    /// The hook steps this process is trying now (see `hooks`).
    hooks_running: std::sync::Mutex<std::collections::HashSet<(String, crate::gates::GateKey)>>,
    /// Each plan's VM index (VM keys never change).
    indexes: std::sync::Mutex<HashMap<String, Arc<progress::VmIndex>>>,
    bus: Bus,
    asr: AsrClient,
    store: PlanStore,
    requests: TypedKv<PlanRef>,
    locks: TypedKv<VmLock>,
    /// The workers' fences: whether a command a worker gave up on is still in someone's hands.
    operations: TypedKv<tern_proto::OperationRecord>,
    vault_id: String,
}

impl std::fmt::Debug for PlannerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannerService").field("vault_id", &self.inner.vault_id).finish()
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

fn kv_status(e: KvError) -> Status {
    Status::unavailable(format!("plan store: {e}"))
}

pub(crate) fn is_terminal(state: i32) -> bool {
    matches!(
        PlanState::try_from(state),
        Ok(PlanState::Completed | PlanState::CompletedWithErrors | PlanState::Cancelled | PlanState::Failed)
    )
}

/// A VM's `failed` event the planner publishes on the workers' behalf, when none of them will
/// (its command was dead-lettered, or outlived its deadline with no worker reporting): the plan
/// applies it like any other, and every consumer of events learns of it. Its id is the one the
/// worker's own failed event would have, so the two are one event.
pub(crate) struct FailedOnBehalf<'a> {
    pub plan_id: &'a str,
    pub vm: &'a tern_proto::VmStatus,
    pub command_id: &'a str,
    /// The phase of the command (the VM's own phase may be the commit a failover command runs).
    pub command_phase: tern_proto::Phase,
    pub code: &'a str,
    pub message: String,
    pub action: String,
}

impl FailedOnBehalf<'_> {
    fn event(self) -> tern_proto::Event {
        use tern_proto::{Event, Outcome, VmEvent, event};
        let phase = self.vm.phase();
        let base = tern_bus::ids::event_base(self.command_id, self.command_phase, phase);
        let now = SystemTime::now();
        Event {
            event_id: tern_bus::ids::vm_event_id(&base, Outcome::Failed, 0),
            plan_id: self.plan_id.to_owned(),
            time: Some(now.into()),
            body: Some(event::Body::Vm(VmEvent {
                vm: self.vm.vm.clone(),
                phase: phase as i32,
                outcome: Outcome::Failed as i32,
                command_id: self.command_id.to_owned(),
                attempt: self.vm.attempt,
                finished_at: Some(now.into()),
                reason: self.message.clone(),
                error: Some(tern_proto::AsrError {
                    code: self.code.to_owned(),
                    message: self.message,
                    recommended_action: self.action,
                    retryable: true,
                    http_status: 0,
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

impl PlannerService {
    /// Publishes a VM's `failed` event on the workers' behalf ([`FailedOnBehalf`]).
    pub(crate) async fn publish_failed(&self, failed: FailedOnBehalf<'_>) -> Result<(), tern_bus::BusError> {
        self.inner.bus.publish_event(&failed.event()).await.map(|_| ())
    }

    /// The service for `asr`'s vault, keeping state on `bus`.
    pub async fn new(bus: Bus, asr: AsrClient) -> anyhow::Result<Self> {
        let vault_id = asr.config().vault_id();
        let store = PlanStore::new(&bus).await?;
        let requests = bus.kv::<PlanRef>(Bucket::Plans).await?;
        let locks = bus.kv::<VmLock>(Bucket::VmLocks).await?;
        let operations = bus.kv::<tern_proto::OperationRecord>(Bucket::Operations).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                plan_locks: std::sync::Mutex::new(HashMap::new()),
                pending: std::sync::Mutex::new(HashMap::new()),
                stopping: tokio_util::sync::CancellationToken::new(),
                hooks_running: std::sync::Mutex::new(Default::default()),
                indexes: std::sync::Mutex::new(HashMap::new()),
                bus,
                asr,
                store,
                requests,
                locks,
                operations,
                vault_id,
            }),
        })
    }

    /// The bus this planner runs on.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }
}
