//! The planner service: the gRPC API, plan state in KV, and the loop that turns worker events
//! into the next commands.
//!
//! Every change to a plan is a compare-and-set on its KV record, made by whichever planner
//! replica handles the request or event; commands are published after the record is stored
//! and carry deterministic ids, so replicas never double-dispatch and a restarted planner
//! re-publishes what may have been lost (`resync`).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use futures::StreamExt;
use tern_asr::AsrClient;
use tern_asr::model::ProtectedItem;
use tern_asr::point::PointChoice;
use tern_bus::{Bucket, Bus, Delivery, HandlerError, KvError, LoopOptions, TypedKv, ids};
use tern_proto::planner_server::Planner;
use tern_proto::{
    CancelPlanRequest, CleanupCommand, Command, Event, FailoverCommand, GetPlanRequest, ListPlansRequest,
    ListPlansResponse, PausePlanRequest, Phase, Plan, PlanEvent, PlanEventKind, PlanMode, PlanState, PlanUpdate,
    PreflightRequest, PreflightResponse, Readiness, ReprotectCommand, ResumePlanRequest, RetryVmRequest,
    SubmitPlanRequest, SubmitPlanResponse, VmPreflight, VmState, VmStatus, WatchPlanRequest, command, event,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::preflight::{PreflightOptions, preflight_vm};
use crate::progress;
use crate::spec::{Selected, ValidSpec, validate};
use crate::store::{self, Dirty, PlanStore, Snapshot};

/// Events handled at once by a planner process. Events of one plan are applied together, one
/// stored version per batch, so this is also the largest batch.
const EVENT_CONCURRENCY: usize = 512;

/// The VMs a plan selects, and what the vault's items showed besides.
struct Resolved {
    /// The selected items.
    items: Vec<ProtectedItem>,
    /// Each selected item's wave, in the order of `items`.
    waves: Vec<u32>,
    /// The cache storage account items already replicate through, per region.
    cache_in_use: BTreeMap<String, String>,
}

/// VMs preflighted at once.
const PREFLIGHT_CONCURRENCY: usize = 32;

/// Commands (and VM lock releases) sent at once after a step.
const SEND_CONCURRENCY: usize = 64;

/// Worker events waiting for their plan's next step, each with whoever waits for it stored.
type Pending = Vec<(tern_proto::VmEvent, tokio::sync::oneshot::Sender<Result<(), String>>)>;

/// A submission's request id → its plan.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlanRef {
    /// The plan.
    #[prost(string, tag = "1")]
    pub plan_id: String,
}

/// Which plan holds a VM.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VmLock {
    /// The plan.
    #[prost(string, tag = "1")]
    pub plan_id: String,
}

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
    /// Each plan's VM index (VM keys never change).
    indexes: std::sync::Mutex<HashMap<String, Arc<progress::VmIndex>>>,
    bus: Bus,
    asr: AsrClient,
    store: PlanStore,
    requests: TypedKv<PlanRef>,
    locks: TypedKv<VmLock>,
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

impl PlannerService {
    /// The service for `asr`'s vault, keeping state on `bus`.
    pub async fn new(bus: Bus, asr: AsrClient) -> anyhow::Result<Self> {
        let vault_id = asr.config().vault_id();
        let store = PlanStore::new(&bus).await?;
        let requests = bus.kv::<PlanRef>(Bucket::Plans).await?;
        let locks = bus.kv::<VmLock>(Bucket::VmLocks).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                plan_locks: std::sync::Mutex::new(HashMap::new()),
                pending: std::sync::Mutex::new(HashMap::new()),
                indexes: std::sync::Mutex::new(HashMap::new()),
                bus,
                asr,
                store,
                requests,
                locks,
                vault_id,
            }),
        })
    }

    /// Follows worker events until `shutdown`, progressing plans; re-publishes the commands of
    /// running VMs first (a previous planner may have stored a dispatch and died before sending it).
    pub async fn run_progression(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.resync().await;
        let consumer = self
            .inner
            .bus
            .planner_event_consumer(LoopOptions { concurrency: EVENT_CONCURRENCY, ..LoopOptions::default() })
            .await?;
        let this = self.clone();
        consumer
            .run(
                move |d: Delivery<Event>| {
                    let this = this.clone();
                    async move { this.on_event(d.message).await }
                },
                shutdown,
            )
            .await;
        Ok(())
    }

    async fn on_event(&self, event: Event) -> Result<(), HandlerError> {
        let Some(event::Body::Vm(vm)) = event.body else { return Ok(()) };
        // Only terminal outcomes, and the start of a commit, move a plan.
        let outcome = tern_proto::Outcome::try_from(vm.outcome).unwrap_or_default();
        if !(outcome.is_terminal() || (outcome == tern_proto::Outcome::Started && vm.phase == Phase::Commit as i32)) {
            return Ok(());
        }
        let store = &self.inner.store;
        let known = self.inner.indexes.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&event.plan_id)
            || store.last_seen(&event.plan_id).is_some();
        if !known && store.header(&event.plan_id).await.map_err(|e| HandlerError::retry(e.to_string()))?.is_none() {
            return Ok(()); // not a plan of this planner's store
        }
        let (done, applied) = tokio::sync::oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(event.plan_id.clone())
            .or_default()
            .push((vm, done));
        self.apply_pending(&event.plan_id).await;
        match applied.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HandlerError::retry(e)),
            Err(_) => Err(HandlerError::retry("the plan step was abandoned")),
        }
    }

    /// Applies every event waiting for `plan_id` in one step (group commit): under load,
    /// hundreds of events cost one stored version instead of one each. Whoever gets the plan's
    /// lock applies what has gathered meanwhile, its own event or others'.
    async fn apply_pending(&self, plan_id: &str) {
        let lock = self.plan_lock(plan_id);
        let _serialized = lock.lock().await;
        let batch = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(plan_id).unwrap_or_default();
        if batch.is_empty() {
            return; // a step before this one took our event
        }
        let (events, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let index = self.vm_index(plan_id).await;
        let result = match index {
            Ok(index) => {
                self.step_locked(plan_id, |p, dirty| {
                    let touched = progress::apply_events(p, &index, &events);
                    let changed = !touched.is_empty();
                    touched.into_iter().for_each(|i| dirty.touch(i));
                    changed
                })
                .await
            }
            Err(e) => Err(e),
        };
        for done in waiting {
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| e.message().to_owned()));
        }
    }

    /// The index of a plan's VMs, built once per plan and process.
    async fn vm_index(&self, plan_id: &str) -> Result<Arc<progress::VmIndex>, Status> {
        if let Some(index) = self.inner.indexes.lock().unwrap_or_else(|e| e.into_inner()).get(plan_id) {
            return Ok(index.clone());
        }
        let snapshot = match self.inner.store.last_seen(plan_id) {
            Some(s) => s,
            None => self.load(plan_id).await?,
        };
        let index = Arc::new(progress::vm_index(&snapshot.plan));
        self.inner.indexes.lock().unwrap_or_else(|e| e.into_inner()).insert(plan_id.to_owned(), index.clone());
        Ok(index)
    }

    fn plan_lock(&self, plan_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.plan_locks.lock().unwrap_or_else(|e| e.into_inner()).entry(plan_id.to_owned()).or_default().clone()
    }

    /// Re-publishes the command of every running VM of every active plan (ids are
    /// deterministic: the bus or the workers' fences drop what already ran).
    pub async fn resync(&self) {
        let Ok(ids) = self.inner.store.ids().await else { return };
        for id in ids {
            let Ok(Some(header)) = self.inner.store.header(&id).await else { continue };
            if is_terminal(header.state) {
                continue;
            }
            let Ok(Some(snapshot)) = self.inner.store.load(&id).await else { continue };
            let plan = &snapshot.plan;
            let running: Vec<(usize, Phase)> = plan
                .vms
                .iter()
                .enumerate()
                .filter(|(_, vm)| vm.state == VmState::Running as i32)
                .map(|(i, vm)| {
                    let phase = Phase::try_from(vm.phase).unwrap_or(Phase::Failover);
                    (i, if phase == Phase::Commit { Phase::Failover } else { phase })
                })
                .collect();
            self.publish_commands(plan, &running).await;
        }
    }

    /// Publishes the commands of `which` VMs, a bounded number at a time. A command that
    /// could not be sent is logged: `resync` sends it when a planner starts.
    async fn publish_commands(&self, plan: &Plan, which: &[(usize, Phase)]) {
        futures::stream::iter(which.to_vec())
            .for_each_concurrent(SEND_CONCURRENCY, |(i, phase)| async move {
                if let Err(e) = self.publish_command(plan, i, phase).await {
                    warn!(plan = %plan.plan_id, error = %e, "command not published; resync will send it");
                }
            })
            .await;
    }

    /// Applies `change` to a plan with compare-and-set, dispatches what can run next, settles,
    /// stores, then publishes commands and plan events. `change` marks the VMs it changed in
    /// the `Dirty` set; fields of the plan itself it may change freely. Returns the stored plan.
    async fn step(
        &self,
        plan_id: &str,
        change: impl FnMut(&mut Plan, &mut Dirty) -> bool,
    ) -> Result<Arc<Snapshot>, Status> {
        let lock = self.plan_lock(plan_id);
        let _serialized = lock.lock().await;
        self.step_locked(plan_id, change).await
    }

    /// The current version of a plan from the store (reads only what changed since this
    /// process last saw it).
    async fn load(&self, plan_id: &str) -> Result<Arc<Snapshot>, Status> {
        self.inner
            .store
            .load(plan_id)
            .await
            .map_err(kv_status)?
            .ok_or_else(|| Status::not_found(format!("plan {plan_id}")))
    }

    /// [`Self::step`], with the plan's lock held by the caller.
    ///
    /// A step costs what it changes, not the plan's size: it changes this process's last
    /// version in place (taken out of the cache, not copied) and writes only the chunks of the
    /// VMs it touched; a stale version fails the write's compare-and-set and is read again.
    async fn step_locked(
        &self,
        plan_id: &str,
        mut change: impl FnMut(&mut Plan, &mut Dirty) -> bool,
    ) -> Result<Arc<Snapshot>, Status> {
        let store = &self.inner.store;
        let mut cached = store.take(plan_id);
        loop {
            let (current, verified) = match cached.take() {
                Some(c) => (c, false),
                None => {
                    let loaded = self.load(plan_id).await?;
                    store.take(plan_id); // the cache's reference, so the step need not copy
                    (loaded, true)
                }
            };
            let Snapshot { mut plan, base } = Arc::try_unwrap(current).unwrap_or_else(|shared| (*shared).clone());
            let header_before = store::header_fields(&plan);
            let mut dirty = Dirty::None;
            let changed = change(&mut plan, &mut dirty);
            let wave_before = plan.current_wave;
            let dispatched = progress::dispatch(&mut plan);
            for (i, _) in &dispatched {
                dirty.touch(*i);
            }
            let (ended, skipped) = progress::settle_tracked(&mut plan);
            if skipped {
                dirty = Dirty::All;
            }
            if !changed && dirty == Dirty::None && ended.is_none() && store::header_fields(&plan) == header_before {
                if !verified && store.revision(plan_id).await.map_err(kv_status)? != Some(base.revision) {
                    continue; // another replica moved it: decide again on its version
                }
                return Ok(store.keep(Snapshot { plan, base }));
            }
            plan.updated_at = Some(now());
            if ended.is_some() {
                plan.finished_at = Some(now());
            }
            let stored = match store.update(base, plan, &dirty).await {
                Ok(s) => s,
                Err(KvError::Conflict { .. }) => continue,
                Err(e) => return Err(kv_status(e)),
            };
            let plan = &stored.plan;
            self.publish_commands(plan, &dispatched).await;
            if plan.current_wave != wave_before {
                self.plan_event(plan, PlanEventKind::WaveStarted, &format!("wave.{}", plan.current_wave), "").await;
            }
            if let Some(kind) = ended {
                self.plan_event(plan, kind, kind.slug(), &plan.reason).await;
                self.release_locks(plan).await;
                // An ended plan is read rarely: keep no index of it (the store keeps no copy).
                self.inner.indexes.lock().unwrap_or_else(|e| e.into_inner()).remove(plan_id);
            }
            return Ok(stored);
        }
    }

    async fn publish_command(&self, plan: &Plan, i: usize, phase: Phase) -> Result<(), tern_bus::BusError> {
        let default_spec = tern_proto::PlanSpec::default();
        let spec = plan.spec.as_ref().unwrap_or(&default_spec);
        let vm = &plan.vms[i];
        let vm_ref = vm.vm.clone().unwrap_or_default();
        let phases = spec.phases.unwrap_or_default();
        let action = match phase {
            Phase::Failover | Phase::Drill => command::Action::Failover(FailoverCommand {
                direction: spec.direction,
                recovery_point: spec.recovery_point.clone(),
                shut_down_source: spec.shut_down_source.unwrap_or(true),
                commit_after: phase == Phase::Failover && phases.commit.unwrap_or(true),
                drill: (phase == Phase::Drill).then(|| spec.drill.clone().unwrap_or_default()),
            }),
            Phase::Reprotect => command::Action::Reprotect(ReprotectCommand { target: spec.reprotect_target.clone() }),
            Phase::Cleanup => command::Action::Cleanup(CleanupCommand { options: spec.cleanup }),
            other => return Err(tern_bus::BusError::InvalidMessage(format!("no command for phase {}", other.slug()))),
        };
        let cmd = Command {
            command_id: ids::command_id(&plan.plan_id, &vm_ref, phase, vm.attempt),
            plan_id: plan.plan_id.clone(),
            vm: Some(vm_ref),
            attempt: vm.attempt,
            issued_at: Some(now()),
            action: Some(action),
            ..Default::default()
        };
        // One span per VM and phase, a child of the plan's root span however late it starts;
        // the worker continues it from the command's headers.
        let span = tracing::info_span!(
            "dispatch",
            otel.name = %format!("{} {}", phase.slug(), cmd.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("")),
            otel.kind = "producer",
            tern.plan_id = %plan.plan_id,
            tern.vm = %cmd.vm.as_ref().map(|v| v.name.as_str()).unwrap_or(""),
            tern.phase = phase.slug(),
            tern.attempt = vm.attempt,
            tern.command_id = %cmd.command_id,
        );
        let _ = span.set_parent(tern_bus::trace::from_traceparent(&plan.traceparent));
        self.inner.bus.publish_command(&cmd).instrument(span).await.map(|_| ())
    }

    async fn plan_event(&self, plan: &Plan, kind: PlanEventKind, suffix: &str, reason: &str) {
        let ev = Event {
            event_id: format!("{}.plan.{suffix}", plan.plan_id),
            plan_id: plan.plan_id.clone(),
            time: Some(now()),
            body: Some(event::Body::Plan(PlanEvent {
                kind: kind as i32,
                wave: plan.current_wave,
                reason: reason.into(),
                counts: plan.counts,
            })),
            ..Default::default()
        };
        let span = tracing::info_span!("plan event", otel.name = %format!("plan {}", kind.slug()), tern.plan_id = %plan.plan_id);
        let _ = span.set_parent(tern_bus::trace::from_traceparent(&plan.traceparent));
        if let Err(e) = self.inner.bus.publish_event(&ev).instrument(span).await {
            warn!(plan = %plan.plan_id, error = %e, "plan event not published");
        }
    }

    async fn release_locks(&self, plan: &Plan) {
        futures::stream::iter(0..plan.vms.len())
            .for_each_concurrent(SEND_CONCURRENCY, |i| async move {
                let key = progress::vm_key(&plan.vms[i]);
                if let Ok(Some(lock)) = self.inner.locks.get(key).await
                    && lock.value.plan_id == plan.plan_id
                {
                    let _ = self.inner.locks.delete(key).await;
                }
            })
            .await;
    }

    /// The VMs a selection names, with their wave (from the spec's waves or the recovery plan's
    /// boot groups), and the cache storage account the vault's items use in each region.
    async fn resolve(&self, valid: &ValidSpec) -> Result<Resolved, Status> {
        let asr = &self.inner.asr;
        let unavailable = |e: tern_asr::AsrError| Status::unavailable(format!("Azure: {e}"));
        let all = asr.list_items(None, None).await.map_err(unavailable)?;
        let in_use = crate::preflight::cache_accounts_in_use(&all);
        let (items, waves) = self.pick(valid, all).await?;
        Ok(Resolved { items, waves, cache_in_use: in_use })
    }

    /// The items a selection names, and each one's wave.
    async fn pick(
        &self,
        valid: &ValidSpec,
        mut all: Vec<ProtectedItem>,
    ) -> Result<(Vec<ProtectedItem>, Vec<u32>), Status> {
        let asr = &self.inner.asr;
        let unavailable = |e: tern_asr::AsrError| Status::unavailable(format!("Azure: {e}"));
        let mut waves_of: HashMap<String, u32> = HashMap::new();
        for (w, wave) in valid.spec.waves.iter().enumerate() {
            for vm in &wave.vm_names {
                waves_of.insert(vm.to_ascii_lowercase(), w as u32);
            }
        }
        let last_wave = valid.spec.waves.len() as u32;
        let wave = |name: &str| {
            waves_of.get(&name.to_ascii_lowercase()).copied().unwrap_or(if last_wave == 0 { 0 } else { last_wave })
        };
        let nonempty = |picked: Vec<(ProtectedItem, u32)>| {
            if picked.is_empty() {
                return Err(Status::invalid_argument("selection: selects no replicated VM"));
            }
            Ok(picked.into_iter().unzip())
        };
        // Whole-vault and resource-group selections keep the listed items where they are (a
        // fleet's items are tens of MiB: neither copied nor moved into another vector).
        match &valid.selected {
            Selected::AllReady | Selected::ResourceGroup(_) => {
                if let Selected::ResourceGroup(rg) = &valid.selected {
                    all.retain(|it| {
                        let a2a = it.properties.provider_specific_details.as_ref();
                        a2a.and_then(|d| d.fabric_object_id.as_deref())
                            .and_then(tern_asr::client::resource_group_of)
                            .is_some_and(|g| g.eq_ignore_ascii_case(rg))
                    });
                }
                if all.is_empty() {
                    return Err(Status::invalid_argument("selection: selects no replicated VM"));
                }
                let waves = all.iter().map(|it| wave(it.friendly_name())).collect();
                return Ok((all, waves));
            }
            _ => {}
        }
        let by_name: HashMap<String, &ProtectedItem> =
            all.iter().map(|i| (i.friendly_name().to_ascii_lowercase(), i)).collect();
        let by_id: HashMap<String, &ProtectedItem> = all.iter().map(|i| (i.id.to_ascii_lowercase(), i)).collect();
        let picked: Vec<(ProtectedItem, u32)> = match &valid.selected {
            Selected::Names(names) => {
                let mut out = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let item = by_name.get(&n.to_ascii_lowercase()).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "selection.vm_names[{i}]: no replicated VM named {n:?} in the vault"
                        ))
                    })?;
                    out.push(((*item).clone(), wave(n)));
                }
                out
            }
            Selected::ItemIds(ids) => {
                let mut out = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let item = by_id.get(&id.to_ascii_lowercase()).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "selection.protected_item_ids[{i}]: no such protected item {id:?}"
                        ))
                    })?;
                    out.push(((*item).clone(), wave(item.friendly_name())));
                }
                out
            }
            Selected::RecoveryPlan(name) => {
                let rp = asr.get_plan(name).await.map_err(|e| match e.class() {
                    tern_asr::ErrorClass::NotFound => {
                        Status::invalid_argument(format!("selection.recovery_plan: no recovery plan {name:?}"))
                    }
                    _ => unavailable(e),
                })?;
                let mut out = Vec::new();
                for (w, group) in rp.boot_groups().iter().enumerate() {
                    for id in group {
                        if let Some(item) = by_id.get(&id.to_ascii_lowercase()) {
                            out.push(((*item).clone(), w as u32));
                        }
                    }
                }
                out
            }
            Selected::Tag { .. } => {
                return Err(Status::unimplemented("selection.tag: selecting by VM tag is not supported yet"));
            }
            Selected::AllReady | Selected::ResourceGroup(_) => unreachable!("handled above"),
        };
        nonempty(picked)
    }

    fn preflight_options(&self, valid: &ValidSpec, cache_in_use: &BTreeMap<String, String>) -> PreflightOptions {
        let point = valid.spec.recovery_point.clone().unwrap_or_default();
        let choice = match tern_proto::RecoveryPointKind::try_from(point.kind).unwrap_or_default() {
            tern_proto::RecoveryPointKind::Latest => PointChoice::Latest,
            tern_proto::RecoveryPointKind::LatestAppConsistent => PointChoice::LatestAppConsistent,
            tern_proto::RecoveryPointKind::LatestCrashConsistent => PointChoice::LatestCrashConsistent,
            tern_proto::RecoveryPointKind::Custom => PointChoice::Custom(point.custom_id.clone()),
            _ => PointChoice::LatestProcessed,
        };
        let phases = valid.spec.phases.unwrap_or_default();
        PreflightOptions {
            point: choice,
            direction: valid.direction,
            drill: valid.mode == PlanMode::Drill,
            reprotect: phases.reprotect.unwrap_or(true),
            cache: crate::preflight::CacheAccounts::new(
                valid.spec.reprotect_target.as_ref(),
                &self.inner.asr.config().cache_storage_accounts,
                cache_in_use,
            ),
            ..PreflightOptions::default()
        }
    }

    /// Preflight of every selected VM; also the cache storage accounts it found usable.
    async fn preflight_all(
        &self,
        valid: &ValidSpec,
        selection: &Resolved,
    ) -> (Vec<VmPreflight>, BTreeMap<String, String>) {
        let items = &selection.items;
        let opts = self.preflight_options(valid, &selection.cache_in_use);
        let now = time::OffsetDateTime::now_utc();
        let opts = &opts;
        let vms = futures::stream::iter(0..items.len())
            .map(|i| async move {
                let item = &items[i];
                let key = item.lifecycle_id().unwrap_or(item.friendly_name()).to_owned();
                let locked = self.inner.locks.get(&key).await.ok().flatten().map(|l| l.value.plan_id);
                preflight_vm(&self.inner.asr, item, opts, locked.as_deref(), now).await
            })
            .buffered(PREFLIGHT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        (vms, opts.cache.resolved())
    }

    async fn submit(&self, spec: tern_proto::PlanSpec) -> Result<SubmitPlanResponse, Status> {
        let valid = validate(&spec, &self.inner.vault_id)?;
        let request_key = (!spec.request_id.is_empty()).then(|| format!("request.{}", hex(&spec.request_id)));
        if let Some(key) = &request_key
            && let Some(existing) = self.inner.requests.get(key).await.map_err(kv_status)?
        {
            let plan = self.get(&existing.value.plan_id).await?;
            return Ok(SubmitPlanResponse { plan: Some(plan), existing: true });
        }
        let selection = self.resolve(&valid).await?;
        let (preflight, cache_accounts) = self.preflight_all(&valid, &selection).await;
        let Resolved { items, waves, .. } = selection;
        let blocked: Vec<String> = preflight
            .iter()
            .filter(|p| p.readiness == Readiness::Blocked as i32)
            .map(|p| {
                let why = p
                    .checks
                    .iter()
                    .filter(|c| c.result == Readiness::Blocked as i32)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("{} ({why})", p.vm.as_ref().map(|v| v.name.as_str()).unwrap_or(""))
            })
            .collect();
        if !blocked.is_empty() && !spec.proceed_with_ready && valid.mode != PlanMode::PreflightOnly {
            return Err(Status::failed_precondition(format!(
                "preflight blocked {} of {} VMs: {}; fix them, or set proceed_with_ready to run the ready ones",
                blocked.len(),
                items.len(),
                blocked.iter().take(10).cloned().collect::<Vec<_>>().join(" | ")
            )));
        }
        let plan_id = format!("p-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let optional: Vec<String> = spec
            .failure_policy
            .as_ref()
            .map(|p| p.optional_vms.iter().map(|v| v.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let preflight_only = valid.mode == PlanMode::PreflightOnly;
        let mut vms = Vec::new();
        for ((item, wave), pre) in items.iter().zip(&waves).zip(&preflight) {
            let blocked = pre.readiness == Readiness::Blocked as i32;
            // What preflight found, so a reader of the plan sees why without a second call.
            let found = |level: Readiness| {
                let found: Vec<String> = pre
                    .checks
                    .iter()
                    .filter(|c| c.result == level as i32)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                found.join("; ")
            };
            let reason = if preflight_only {
                format!("preflight only: {}", Readiness::try_from(pre.readiness).unwrap_or_default().as_str_name())
            } else if blocked {
                format!("not run: blocked in preflight ({})", found(Readiness::Blocked))
            } else if pre.readiness == Readiness::Warning as i32 {
                // Replaced by the VM's outcome when it ends.
                format!("preflight warning: {}", found(Readiness::Warning))
            } else {
                String::new()
            };
            vms.push(VmStatus {
                vm: Some(tern_proto::VmRef {
                    vault_id: self.inner.vault_id.clone(),
                    protected_item_id: item.id.clone(),
                    lifecycle_id: item.lifecycle_id().unwrap_or_default().to_owned(),
                    name: item.friendly_name().to_owned(),
                }),
                state: if preflight_only || blocked { VmState::Skipped as i32 } else { VmState::Pending as i32 },
                phase: Phase::Failover as i32,
                wave: *wave,
                attempt: 1,
                reason,
                critical: !optional.contains(&item.friendly_name().to_ascii_lowercase()),
                recovery_point: pre.recovery_point.clone(),
                ..Default::default()
            });
        }
        // The listed items and their preflight are the bulk of a large submission's memory.
        drop(items);
        drop(preflight);
        // Waves are numbered densely from 0.
        let mut wave_ids: Vec<u32> = vms.iter().map(|v| v.wave).collect();
        wave_ids.sort_unstable();
        wave_ids.dedup();
        for v in &mut vms {
            v.wave = wave_ids.iter().position(|w| *w == v.wave).unwrap_or(0) as u32;
        }
        // Lock every VM that will run; a VM already in another active plan refuses the plan.
        let to_lock: Vec<String> =
            vms.iter().filter(|v| v.state == VmState::Pending as i32).map(|v| progress::vm_key(v).to_owned()).collect();
        let lock = VmLock { plan_id: plan_id.clone() };
        let results: Vec<(String, Result<_, KvError>)> = futures::stream::iter(to_lock)
            .map(|key| {
                let lock = &lock;
                async move {
                    let r = self.inner.locks.create(&key, lock).await;
                    (key, r)
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let taken: Vec<String> = results.iter().filter(|(_, r)| r.is_ok()).map(|(k, _)| k.clone()).collect();
        if let Some((key, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
            for k in &taken {
                let _ = self.inner.locks.delete(k).await;
            }
            if let KvError::AlreadyExists { .. } = e {
                let holder =
                    self.inner.locks.get(key).await.ok().flatten().map(|l| l.value.plan_id).unwrap_or_default();
                let name = vms
                    .iter()
                    .find(|v| progress::vm_key(v) == key)
                    .and_then(|v| v.vm.as_ref())
                    .map(|r| r.name.as_str())
                    .unwrap_or("");
                return Err(Status::failed_precondition(format!("{name} is already in active plan {holder}")));
            }
            return Err(Status::unavailable(format!("plan store: {e}")));
        }
        let root = tracing::Span::current();
        root.record("tern.plan_id", plan_id.as_str());
        // Reprotect commands carry the cache account preflight found for each region (the
        // plan's own choices stay as they are).
        let mut spec = valid.spec.clone();
        if !cache_accounts.is_empty() {
            let target = spec.reprotect_target.get_or_insert_with(Default::default);
            for (region, account) in cache_accounts {
                target.cache_storage_accounts.entry(region).or_insert(account);
            }
        }
        let mut plan = Plan {
            traceparent: tern_bus::trace::traceparent(&root.context()),
            plan_id: plan_id.clone(),
            spec: Some(spec),
            state: if preflight_only { PlanState::Completed as i32 } else { PlanState::Accepted as i32 },
            vms,
            created_at: Some(now()),
            updated_at: Some(now()),
            ..Default::default()
        };
        plan.counts = Some(progress::counts(&plan));
        let created = self.inner.store.create(plan).await.map_err(kv_status)?;
        if let Some(key) = &request_key
            && let Err(KvError::AlreadyExists { .. }) =
                self.inner.requests.create(key, &PlanRef { plan_id: plan_id.clone() }).await
        {
            // Another submission with the same request id won the race: withdraw this one.
            let _ = self.inner.store.delete(&plan_id).await;
            for k in &taken {
                let _ = self.inner.locks.delete(k).await;
            }
            let winner =
                self.inner.requests.get(key).await.map_err(kv_status)?.map(|r| r.value.plan_id).unwrap_or_default();
            return Ok(SubmitPlanResponse { plan: Some(self.get(&winner).await?), existing: true });
        }
        info!(plan = %plan_id, vms = created.plan.vms.len(), "plan accepted");
        self.plan_event(&created.plan, PlanEventKind::Accepted, "accepted", "").await;
        let plan = if preflight_only {
            created.plan.clone()
        } else {
            drop(created); // the first step takes the plan over without copying it
            self.step(&plan_id, |_, _| true).await?.plan.clone()
        };
        Ok(SubmitPlanResponse { plan: Some(plan), existing: false })
    }

    /// The bus this planner runs on.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Every plan without its VMs.
    pub(crate) async fn all_plans(&self) -> Result<Vec<Plan>, Status> {
        let store = &self.inner.store;
        let ids = store.ids().await.map_err(kv_status)?;
        let headers: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move { store.header(&id).await })
            .buffered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut plans = Vec::with_capacity(headers.len());
        for header in headers {
            plans.extend(header.map_err(kv_status)?);
        }
        Ok(plans)
    }

    /// The plans that have not ended, with their VMs.
    pub(crate) async fn active_plans(&self) -> Result<Vec<Arc<Snapshot>>, Status> {
        let mut out = Vec::new();
        for plan in self.all_plans().await?.into_iter().filter(|p| !is_terminal(p.state)) {
            out.extend(self.inner.store.load(&plan.plan_id).await.map_err(kv_status)?);
        }
        Ok(out)
    }

    async fn get(&self, plan_id: &str) -> Result<Plan, Status> {
        if plan_id.is_empty() {
            return Err(Status::invalid_argument("plan_id: is empty"));
        }
        Ok(self.load(plan_id).await?.plan.clone())
    }

    async fn transition(
        &self,
        plan_id: &str,
        from: &[PlanState],
        to: PlanState,
        reason: &str,
        kind: PlanEventKind,
    ) -> Result<Plan, Status> {
        let current = self.get(plan_id).await?;
        let state = PlanState::try_from(current.state).unwrap_or_default();
        if !from.contains(&state) {
            return Err(Status::failed_precondition(format!(
                "plan {plan_id} is {}: it cannot become {}",
                state.as_str_name(),
                to.as_str_name()
            )));
        }
        let reason = reason.to_owned();
        let stored = self
            .step(plan_id, |p, _| {
                let s = PlanState::try_from(p.state).unwrap_or_default();
                if from.contains(&s) {
                    p.state = to as i32;
                    if !reason.is_empty() {
                        p.reason = reason.clone();
                    }
                    true
                } else {
                    false
                }
            })
            .await?;
        let plan = stored.plan.clone();
        self.plan_event(
            &plan,
            kind,
            &format!("{}.{}", kind.slug(), plan.updated_at.map(|t| t.seconds).unwrap_or(0)),
            &reason,
        )
        .await;
        Ok(plan)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<PlanUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Planner for PlannerService {
    async fn submit_plan(&self, request: Request<SubmitPlanRequest>) -> Result<Response<SubmitPlanResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        // The plan's root span: the trace every later span of the plan joins.
        let span = tracing::info_span!(
            "SubmitPlan",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "tern.v1.Planner",
            rpc.method = "SubmitPlan",
            tern.plan_id = tracing::field::Empty,
        );
        self.submit(spec).instrument(span).await.map(Response::new)
    }

    async fn preflight(&self, request: Request<PreflightRequest>) -> Result<Response<PreflightResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let valid = validate(&spec, &self.inner.vault_id)?;
        let selection = self.resolve(&valid).await?;
        let (vms, _) = self.preflight_all(&valid, &selection).await;
        let ready = vms.iter().all(|v| v.readiness != Readiness::Blocked as i32);
        Ok(Response::new(PreflightResponse { vms, ready }))
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Result<Response<Plan>, Status> {
        self.get(&request.into_inner().plan_id).await.map(Response::new)
    }

    async fn list_plans(&self, request: Request<ListPlansRequest>) -> Result<Response<ListPlansResponse>, Status> {
        let req = request.into_inner();
        let mut plans = Vec::new();
        for p in self.all_plans().await? {
            if req.states.is_empty() || req.states.contains(&p.state) {
                plans.push(p);
            }
        }
        plans.sort_by_key(|p| std::cmp::Reverse(p.created_at.map(|t| (t.seconds, t.nanos))));
        if req.page_size > 0 {
            plans.truncate(req.page_size as usize);
        }
        Ok(Response::new(ListPlansResponse { plans, next_page_token: String::new() }))
    }

    type WatchPlanStream = WatchStream;

    async fn watch_plan(&self, request: Request<WatchPlanRequest>) -> Result<Response<Self::WatchPlanStream>, Status> {
        let plan_id = request.into_inner().plan_id;
        let first = self.get(&plan_id).await?;
        let this = self.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = first.updated_at;
            if tx.send(Ok(PlanUpdate { plan: Some(first.clone()) })).await.is_err() || is_terminal(first.state) {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                // Reads the small header, and the plan's changed chunks only when it moved.
                let Ok(current) = this.load(&plan_id).await else { return };
                if current.plan.updated_at != last {
                    last = current.plan.updated_at;
                    let done = is_terminal(current.plan.state);
                    let plan = current.plan.clone();
                    if tx.send(Ok(PlanUpdate { plan: Some(plan) })).await.is_err() || done {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn pause_plan(&self, request: Request<PausePlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        self.transition(
            &r.plan_id,
            &[PlanState::Running, PlanState::Accepted],
            PlanState::Paused,
            &r.reason,
            PlanEventKind::Paused,
        )
        .await
        .map(Response::new)
    }

    async fn resume_plan(&self, request: Request<ResumePlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        self.transition(&r.plan_id, &[PlanState::Paused], PlanState::Running, "", PlanEventKind::Resumed)
            .await
            .map(Response::new)
    }

    async fn cancel_plan(&self, request: Request<CancelPlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        let reason = if r.reason.is_empty() { "cancelled".to_owned() } else { r.reason };
        self.transition(
            &r.plan_id,
            &[PlanState::Accepted, PlanState::Running, PlanState::Paused],
            PlanState::Cancelling,
            &reason,
            PlanEventKind::Cancelled,
        )
        .await
        .map(Response::new)
    }

    async fn retry_vm(&self, request: Request<RetryVmRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        let plan = self.get(&r.plan_id).await?;
        let Some(i) =
            plan.vms.iter().position(|v| v.vm.as_ref().is_some_and(|x| x.name.eq_ignore_ascii_case(&r.vm_name)))
        else {
            return Err(Status::not_found(format!("vm_name: {:?} is not in plan {}", r.vm_name, r.plan_id)));
        };
        if plan.vms[i].state != VmState::Failed as i32 {
            return Err(Status::failed_precondition(format!(
                "{} has not failed: only a failed VM can be retried",
                r.vm_name
            )));
        }
        if PlanState::try_from(plan.state) == Ok(PlanState::Cancelled) {
            return Err(Status::failed_precondition(format!("plan {} was cancelled", r.plan_id)));
        }
        let key = progress::vm_key(&plan.vms[i]).to_owned();
        match self.inner.locks.create(&key, &VmLock { plan_id: plan.plan_id.clone() }).await {
            Ok(_) | Err(KvError::AlreadyExists { .. }) => {}
            Err(e) => return Err(kv_status(e)),
        }
        let requested = Phase::try_from(r.phase).unwrap_or(Phase::Unspecified);
        let plan = self
            .step(&r.plan_id, |p, dirty| {
                let v = &mut p.vms[i];
                if v.state != VmState::Failed as i32 {
                    return false;
                }
                dirty.touch(i);
                v.state = VmState::Pending as i32;
                if requested != Phase::Unspecified {
                    v.phase = requested as i32;
                }
                if v.phase == Phase::Commit as i32 {
                    v.phase = Phase::Failover as i32; // the failover command carries the commit
                }
                v.attempt += 1;
                v.error = None;
                v.reason = String::new();
                p.halted = false;
                p.state = PlanState::Running as i32;
                p.finished_at = None;
                true
            })
            .await?;
        Ok(Response::new(plan.plan.clone()))
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<PlanUpdate, Status>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The gRPC server: the planner, gRPC health and server reflection, on `listen`. Returns the
/// bound address and the server task.
pub async fn serve_grpc(
    service: PlannerService,
    listen: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<tern_proto::planner_server::PlannerServer<PlannerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tern_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(tern_proto::planner_server::PlannerServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "gRPC server stopped");
        }
    });
    Ok((addr, task))
}
