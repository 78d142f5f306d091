//! Progression: the event consumer that applies worker events to plans in batches, the
//! compare-and-set step every change to a plan goes through, and the commands, plan events and
//! VM lock releases a step sends.

use std::sync::Arc;

use futures::StreamExt;
use tern_bus::{Delivery, HandlerError, KvError, LoopOptions, ids};
use tern_proto::{
    CleanupCommand, Command, Event, FailoverCommand, GateState, GateStatus, Phase, Plan, PlanEvent, PlanEventKind,
    ReprotectCommand, VmState, command, event,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{PlannerService, SEND_CONCURRENCY, is_terminal, kv_status, now};
use crate::store::{self, Dirty, Snapshot};
use crate::{gates, progress};

/// Events handled at once by a planner process. Events of one plan are applied together, one
/// stored version per batch, so this is also the largest batch.
const EVENT_CONCURRENCY: usize = 512;

impl PlannerService {
    /// Follows worker events until `shutdown`, progressing plans; re-publishes the commands of
    /// running VMs first (a previous planner may have stored a dispatch and died before sending it).
    pub async fn run_progression(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run_progression_watching(shutdown, super::watchdog::DEFAULT_INTERVAL).await
    }

    /// [`Self::run_progression`], with the watchdog looking every `watchdog_every`.
    pub async fn run_progression_watching(
        &self,
        shutdown: CancellationToken,
        watchdog_every: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.resync().await;
        // The hook tries in flight stop with the planner (their claims run out, and whoever
        // runs next sends them again).
        let stopping = self.inner.stopping.clone();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            stopped.cancelled().await;
            stopping.cancel();
        });
        let watchdog = self.spawn_watchdog(watchdog_every, shutdown.clone());
        let consumer = self
            .inner
            .bus
            .planner_event_consumer(LoopOptions { concurrency: EVENT_CONCURRENCY, ..LoopOptions::default() })
            .await?;
        // Commands the workers gave up on: their VMs fail, with the reason, instead of waiting.
        let dead_letters = self.clone().follow_dead_letters(shutdown.clone()).await?;
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
        let _ = dead_letters.await;
        let _ = watchdog.await;
        Ok(())
    }

    async fn on_event(&self, event: Event) -> Result<(), HandlerError> {
        let Some(event::Body::Vm(vm)) = event.body else { return Ok(()) };
        // Only terminal outcomes, and the start of a commit, move a plan.
        let outcome = vm.outcome();
        if !(outcome.is_terminal() || (outcome == tern_proto::Outcome::Started && vm.phase() == Phase::Commit)) {
            return Ok(());
        }
        let store = &self.inner.store;
        let known = self.inner.indexes.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&event.plan_id)
            || store.last_seen(&event.plan_id).is_some();
        if !known && store.header(&event.plan_id).await.map_err(|e| HandlerError::retry(e.to_string()))?.is_none() {
            return Ok(()); // not a plan of this planner's store
        }
        self.apply_vm_event(&event.plan_id, vm).await.map_err(HandlerError::retry)
    }

    /// Applies one VM event to its plan, together with whatever else waits for the plan's next
    /// step; returns once it is stored.
    pub(super) async fn apply_vm_event(&self, plan_id: &str, vm: tern_proto::VmEvent) -> Result<(), String> {
        let (done, applied) = tokio::sync::oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plan_id.to_owned())
            .or_default()
            .push((vm, done));
        self.apply_pending(plan_id).await;
        match applied.await {
            Ok(result) => result,
            Err(_) => Err("the plan step was abandoned".into()),
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
                .filter(|(_, vm)| vm.state() == VmState::Running)
                .map(|(i, vm)| {
                    let phase = Phase::try_from(vm.phase).unwrap_or(Phase::Failover);
                    (i, if phase == Phase::Commit { Phase::Failover } else { phase })
                })
                .collect();
            self.publish_commands(plan, &running).await;
        }
    }

    /// Publishes the commands of `which` VMs, a bounded number at a time. A command that could
    /// not be sent (the bus refused or did not acknowledge it) is sent again in the background
    /// until it goes out or its VM moved on ([`Self::send_later`]); a planner that starts sends
    /// the commands of every running VM once more (`resync`).
    async fn publish_commands(&self, plan: &Plan, which: &[(usize, Phase)]) {
        let failed = std::sync::Mutex::new(Vec::new());
        futures::stream::iter(which.to_vec())
            .for_each_concurrent(SEND_CONCURRENCY, |(i, phase)| {
                let failed = &failed;
                async move {
                    if let Err(e) = self.publish_command(plan, i, phase).await {
                        warn!(plan = %plan.plan_id, error = %e, "command not published; sending it again shortly");
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push((i, phase, plan.vms[i].attempt));
                    }
                }
            })
            .await;
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
        if !failed.is_empty() {
            self.send_later(plan.plan_id.clone(), failed);
        }
    }

    /// Sends commands that could not be published again, backing off from 1 s to 30 s, each
    /// only while its VM still waits for it (running the same phase at the same attempt) and
    /// the plan has not ended. The command id is the same, so a copy that did reach the stream
    /// is dropped there, or by the worker's fence.
    fn send_later(&self, plan_id: String, mut left: Vec<(usize, Phase, u32)>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_secs(1);
            while !left.is_empty() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
                let Ok(snapshot) = this.load(&plan_id).await else { continue };
                let plan = &snapshot.plan;
                if is_terminal(plan.state) {
                    return;
                }
                left.retain(|&(i, phase, attempt)| {
                    plan.vms.get(i).is_some_and(|vm| {
                        let current = if vm.phase() == Phase::Commit { Phase::Failover } else { vm.phase() };
                        vm.state() == VmState::Running && current == phase && vm.attempt == attempt
                    })
                });
                let mut still = Vec::new();
                for (i, phase, attempt) in left {
                    if let Err(e) = this.publish_command(plan, i, phase).await {
                        warn!(plan = %plan_id, error = %e, "command still not published; trying again");
                        still.push((i, phase, attempt));
                    }
                }
                left = still;
            }
        });
    }

    /// Applies `change` to a plan with compare-and-set, dispatches what can run next, settles,
    /// stores, then publishes commands and plan events. `change` marks the VMs it changed in
    /// the `Dirty` set; fields of the plan itself it may change freely. Returns the stored plan.
    pub(super) async fn step(
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
    pub(super) async fn load(&self, plan_id: &str) -> Result<Arc<Snapshot>, Status> {
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
            let dispatched_at = now();
            // Gates open and pass as the waves move, and the waves move as gates pass: go on
            // until neither does (at most a few rounds: each one opens or passes a step).
            let mut gate_changes = gates::advance(&mut plan, dispatched_at);
            let mut dispatched = progress::dispatch(&mut plan);
            loop {
                let wave = plan.current_wave;
                let more = gates::advance(&mut plan, dispatched_at);
                if more.is_empty() && wave == plan.current_wave {
                    break;
                }
                gate_changes.extend(more);
                dispatched.extend(progress::dispatch(&mut plan));
            }
            if gate_changes.iter().any(|c| c.status.state() != GateState::Waiting) && plan.halted {
                dirty = Dirty::All; // a rejection may skip VMs
            }
            for (i, _) in &dispatched {
                // The attempt's deadline counts from here (the command carries it to the worker).
                plan.vms[*i].phase_started_at = Some(dispatched_at);
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
                let at = now();
                plan.finished_at = Some(at);
                // A step still waiting (the plan halted or was cancelled under it) waits no more.
                gates::end_waiting(&mut plan, at);
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
            for change in &gate_changes {
                self.gate_event(plan, &change.status).await;
            }
            // A hook step that opened, or that may be sent again now (the plan resumed).
            if gates::any_waiting(plan) {
                self.kick_hooks(plan);
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
        let (cmd, span) = command(plan, i, phase)?;
        self.inner.bus.publish_command(&cmd).instrument(span).await.map(|_| ())
    }

    /// [`Self::publish_command`] past the bus's duplicate window (the watchdog's resend).
    pub(super) async fn publish_command_again(
        &self,
        plan: &Plan,
        i: usize,
        phase: Phase,
        nonce: &str,
    ) -> Result<(), tern_bus::BusError> {
        let (cmd, span) = command(plan, i, phase)?;
        self.inner.bus.publish_command_again(&cmd, nonce).instrument(span).await.map(|_| ())
    }

    pub(super) async fn plan_event(&self, plan: &Plan, kind: PlanEventKind, suffix: &str, reason: &str) {
        let ev = Event {
            event_id: format!("{}.plan.{suffix}", plan.plan_id),
            plan_id: plan.plan_id.clone(),
            time: Some(now()),
            body: Some(event::Body::Plan(PlanEvent {
                kind: kind as i32,
                wave: plan.current_wave,
                reason: reason.into(),
                counts: plan.counts,
                ..Default::default()
            })),
            ..Default::default()
        };
        let span = tracing::info_span!("plan event", otel.name = %format!("plan {}", kind.slug()), tern.plan_id = %plan.plan_id);
        let _ = span.set_parent(tern_bus::trace::from_traceparent(&plan.traceparent));
        if let Err(e) = self.inner.bus.publish_event(&ev).instrument(span).await {
            warn!(plan = %plan.plan_id, error = %e, "plan event not published");
        }
    }

    /// The `gate.*` event of a gate step's new state; its id names the step, its attempt and
    /// state, so replicas announcing the same change publish it once.
    pub(super) async fn gate_event(&self, plan: &Plan, g: &GateStatus) {
        let kind = match g.state() {
            GateState::Waiting => PlanEventKind::GateWaiting,
            GateState::Passed => PlanEventKind::GatePassed,
            _ => PlanEventKind::GateFailed,
        };
        let map = gates::spec_waves(plan);
        let name = gates::steps(plan, &map, g.wave, g.after)
            .get(g.step as usize)
            .map(|s| gates::step_name(s, g.step as usize))
            .unwrap_or_default();
        let side = if g.after { "after" } else { "before" };
        let step = gates::steps(plan, &map, g.wave, g.after).get(g.step as usize);
        let hook = step.and_then(gates::hook_of);
        let reason = match g.state() {
            GateState::Waiting if is_wait(plan, &map, g) => {
                format!("{side} wave {}: {name} waits (a fixed pause)", g.wave + 1)
            }
            GateState::Waiting if hook.is_some() => format!(
                "{side} wave {}: {name} calls {} (up to {} tries of {}s)",
                g.wave + 1,
                hook.as_ref().map_or("", |h| h.subject.as_str()),
                hook.as_ref().map_or(1, |h| h.retries + 1),
                hook.as_ref().map_or(0, |h| h.timeout.as_secs())
            ),
            GateState::Failed => format!(
                "{side} wave {}: {name} failed: {}; `tern plan retry {} --wave {}` tries it again",
                g.wave + 1,
                g.reason,
                plan.plan_id,
                g.wave + 1
            ),
            GateState::Cancelled => format!("{side} wave {}: {name} no longer waits: the plan ended", g.wave + 1),
            GateState::Waiting => format!(
                "{side} wave {}: {name} waits; release it with `tern plan approve {} --wave {} --step {}`",
                g.wave + 1,
                plan.plan_id,
                g.wave + 1,
                g.step
            ),
            GateState::Rejected => format!("{side} wave {}: {name} rejected: {}", g.wave + 1, g.reason),
            _ => format!("{side} wave {}: {name} {}", g.wave + 1, g.reason),
        };
        let ev = Event {
            event_id: format!("{}.plan.gate.{}.{side}.{}.{}.{}", plan.plan_id, g.wave, g.step, g.attempt, kind.slug()),
            plan_id: plan.plan_id.clone(),
            time: Some(now()),
            body: Some(event::Body::Plan(PlanEvent {
                kind: kind as i32,
                wave: g.wave,
                reason,
                counts: plan.counts,
                step: g.step,
                after: g.after,
                by: g.by.clone(),
            })),
            ..Default::default()
        };
        if let Err(e) = self.inner.bus.publish_event(&ev).await {
            warn!(plan = %plan.plan_id, error = %e, "gate event not published");
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
}

/// Whether gate `g` is a `wait` step.
fn is_wait(plan: &Plan, map: &[Option<usize>], g: &GateStatus) -> bool {
    let step = gates::steps(plan, map, g.wave, g.after).get(g.step as usize);
    matches!(step.and_then(|s| s.kind.as_ref()), Some(tern_proto::gate_step::Kind::Wait(_)))
}

/// VM `i`'s command for `phase`, with the span it is sent under.
fn command(plan: &Plan, i: usize, phase: Phase) -> Result<(Command, tracing::Span), tern_bus::BusError> {
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
    let limit = progress::deadline(plan, phase);
    let cmd = Command {
        command_id: ids::command_id(&plan.plan_id, &vm_ref, phase, vm.attempt),
        plan_id: plan.plan_id.clone(),
        vm: Some(vm_ref),
        attempt: vm.attempt,
        // The dispatch, however often the command is sent again: the deadline counts from it.
        issued_at: Some(vm.phase_started_at.unwrap_or_else(now)),
        deadline: Some(prost_types::Duration { seconds: limit.as_secs() as i64, nanos: limit.subsec_nanos() as i32 }),
        action: Some(action),
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
    Ok((cmd, span))
}
