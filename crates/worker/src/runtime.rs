//! The worker runtime: take a command from the queue, fence it, run its phase against ASR
//! (attaching to a job already started rather than starting another), publish the lifecycle
//! events, and ack — or hand it back, or dead-letter it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tern_asr::ErrorClass;
use tern_asr::client::{Submission, SubmitOutcome, job_failure};
use tern_asr::model::{Job, JobState, ProtectedItem};
use tern_asr::watcher::{JobWatcher, WatcherOptions};
use tern_asr::{AsrClient, AsrError, FleetBudget, TokenProvider, Unlimited};
use tern_bus::{Bucket, Bus, Delivery, HandlerError, LoopOptions, Topology, TypedKv, WorkQueue};
use tern_proto::{Command, Outcome, Phase, PhaseProgress};

/// Fewest seconds between two reads of a syncing item's progress.
const SYNC_PROBE_MIN_SECS: f64 = 30.0;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::events::{Emitter, asr_error, tern_error};
use crate::fence::{Claim, Fence, FenceError, OperationRecord};
use crate::metrics::Metrics;
use crate::serve::serve;

/// What everything a phase needs, shared by the commands of one process.
#[derive(Debug)]
pub struct WorkerContext {
    /// The bus.
    pub bus: Bus,
    /// Azure.
    pub asr: AsrClient,
    /// Follows ASR jobs for the whole process.
    pub watcher: JobWatcher,
    /// Operation records.
    pub ops: TypedKv<OperationRecord>,
    /// This process's name (fence owner).
    pub instance: String,
    /// Settings.
    pub config: WorkerConfig,
    /// Metrics and readiness.
    pub metrics: Arc<Metrics>,
}

/// How a phase ended short of success.
#[derive(Debug)]
pub enum Failure {
    /// ASR refused or its job failed: the phase failed; the command is done.
    Asr {
        /// The phase.
        phase: Phase,
        /// The error, with ASR's details.
        error: AsrError,
    },
    /// Tern refuses to go on (a precondition does not hold): the phase failed; the command is done.
    Refused {
        /// The phase.
        phase: Phase,
        /// Tern's code, e.g. `TERN-REPROTECT-NOT-DONE`.
        code: &'static str,
        /// Why.
        message: String,
        /// What to do.
        action: &'static str,
    },
    /// Another worker took the command over: stop, do not ack.
    Lost,
    /// Cannot tell now (bus or Azure unreachable): hand the command back for later.
    Transient(String),
    /// The command is malformed: dead-letter it.
    Invalid(String),
}

impl From<FenceError> for Failure {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::Lost => Failure::Lost,
            other => Failure::Transient(other.to_string()),
        }
    }
}

impl Failure {
    /// An ASR error in `phase`: transient ones hand the command back, the rest fail the phase.
    pub fn asr(phase: Phase) -> impl Fn(AsrError) -> Failure {
        move |error| {
            if matches!(error.class(), tern_asr::ErrorClass::Retryable | tern_asr::ErrorClass::Throttled) {
                Failure::Transient(error.to_string())
            } else {
                Failure::Asr { phase, error }
            }
        }
    }
}

/// One phase implementation (failover, reprotect, cleanup).
#[async_trait::async_trait]
pub trait PhaseHandler: Send + Sync + 'static {
    /// The service name (`tern-failover`...).
    fn service(&self) -> &'static str;
    /// The queue it consumes.
    fn queue(&self) -> WorkQueue;
    /// Runs the command. Success means every event of the phase was published.
    async fn run(&self, run: &mut CommandRun) -> Result<&'static str, Failure>;
}

/// One command being handled: its fence, its events, and helpers for ASR steps.
#[derive(Debug)]
pub struct CommandRun {
    /// The shared context.
    pub cx: Arc<WorkerContext>,
    /// The command.
    pub command: Command,
    /// The claim on it.
    pub fence: Fence,
    /// Its events.
    pub events: Emitter,
    /// During reprotect: read this item's sync progress now and then.
    pub sync_item: Option<String>,
}

impl CommandRun {
    /// The command's protected item, found again by name and lifecycle id if its id changed.
    pub async fn locate(&mut self) -> Result<ProtectedItem, Failure> {
        let run = self;
        let vm = run.command.vm.clone().unwrap_or_default();
        let asr = run.cx.asr.clone();
        let phase = run.command.action.as_ref().map(|a| a.phase()).unwrap_or(Phase::Failover);
        if !vm.protected_item_id.is_empty() {
            match asr.get_item(&vm.protected_item_id).await {
                Ok(item) => return Ok(item),
                Err(e) if e.class() == ErrorClass::NotFound => {}
                Err(e) => return Err(Failure::asr(phase)(e)),
            }
        }
        let lifecycle = (!vm.lifecycle_id.is_empty()).then_some(vm.lifecycle_id.as_str());
        let name = vm.protected_item_id.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or(&vm.name).to_owned();
        let found = asr.find_item(&name, lifecycle).await.map_err(Failure::asr(phase))?;
        let found = match found {
            Some(i) => Some(i),
            None if !vm.name.is_empty() => asr
                .list_items(None, Some(&format!("friendlyName eq '{}'", vm.name)))
                .await
                .map_err(Failure::asr(phase))?
                .into_iter()
                .next(),
            None => None,
        };
        let item = found.ok_or_else(|| Failure::Refused {
            phase,
            code: "TERN-VM-NOT-FOUND",
            message: format!("no replicated item {name:?} (lifecycle {:?}) in the vault", vm.lifecycle_id),
            action: "Check that the VM is still protected by the vault.",
        })?;
        run.events.vm_mut().protected_item_id = item.id.clone();
        if run.events.vm_mut().lifecycle_id.is_empty() {
            run.events.vm_mut().lifecycle_id = item.lifecycle_id().unwrap_or_default().to_owned();
        }
        Ok(item)
    }

    /// The job a step started in an earlier delivery, if any.
    pub fn recorded_job(&self, step: &str) -> Option<String> {
        self.fence.job(step).map(str::to_owned)
    }

    /// Takes a submission's job and records it before anything waits on it. Returns `None`
    /// when the operation had already finished without a known job.
    pub async fn record(
        &mut self,
        step: &str,
        phase: Phase,
        submission: Submission,
    ) -> Result<Option<String>, Failure> {
        self.cx.metrics.submitted();
        match (submission.outcome, submission.job) {
            (_, Some(job)) => {
                self.fence.record_job(step, &job).await?;
                Ok(Some(job))
            }
            (SubmitOutcome::AlreadyFinished, None) => Ok(None),
            (SubmitOutcome::NotStarted, None) => {
                Err(Failure::Transient(format!("{} was not started; will submit again", phase.slug())))
            }
            (outcome, None) => Err(Failure::Asr {
                phase,
                error: AsrError::Decode {
                    operation: phase.slug().into(),
                    message: format!("{outcome:?} without a job id"),
                },
            }),
        }
    }

    /// Waits for `job`, publishing progress as its tasks advance and keeping the claim alive.
    pub async fn wait(&mut self, phase: Phase, job: &str) -> Result<Job, Failure> {
        tracing::debug!(job, "waiting for the ASR job");
        let mut rx = self.cx.watcher.watch(job);
        let mut renew = tokio::time::interval(self.cx.config.lease() / 3);
        renew.tick().await;
        // Sync progress costs one read per VM, from the same per-subscription budget every VM
        // shares: read it rarely (four job polls, at least 30 s apart).
        let probe_every = Duration::from_secs_f64((self.cx.config.poll_interval_secs * 4.0).max(SYNC_PROBE_MIN_SECS));
        let mut sync_probe = tokio::time::interval_at(tokio::time::Instant::now() + probe_every, probe_every);
        let mut last_task: Option<String> = None;
        let mut last_percent: Option<u32> = None;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(Failure::Transient("the job watcher stopped".into()));
                    }
                    let Some(j) = rx.borrow_and_update().clone() else { continue };
                    // Reprotect re-homes the item: follow its new id for sync progress.
                    if let (Some(_), Some(new_id)) = (&self.sync_item, j.new_item_id()) {
                        self.sync_item = Some(new_id.to_owned());
                    }
                    match j.state() {
                        JobState::Succeeded => return Ok(j),
                        JobState::Failed | JobState::Cancelled => return Err(Failure::Asr { phase, error: job_failure(&j) }),
                        _ => {}
                    }
                    let task = j.current_task().and_then(|t| t.friendly_name.clone().or(t.name.clone()));
                    if task.is_some() && task != last_task {
                        last_task = task.clone();
                        let job_name = j.name.clone();
                        let _ = self.events.emit(phase, Outcome::Progress, |e| {
                            e.asr_job_id = job_name;
                            e.progress = Some(PhaseProgress { task: task.unwrap_or_default(), percent: last_percent.unwrap_or(0) });
                        }).await;
                    }
                }
                _ = renew.tick() => self.fence.renew().await?,
                _ = sync_probe.tick(), if self.sync_item.is_some() => {
                    let id = self.sync_item.clone().unwrap_or_default();
                    if let Ok(item) = self.cx.asr.get_item(&id).await {
                        let percent = item.sync_percent().map(|p| p.clamp(0, 100) as u32);
                        if percent.is_some() && percent != last_percent {
                            last_percent = percent;
                            let job_name = job.to_owned();
                            let task = last_task.clone().unwrap_or_else(|| "Synchronizing".into());
                            let _ = self.events.emit(phase, Outcome::Progress, |e| {
                                e.asr_job_id = job_name;
                                e.progress = Some(PhaseProgress { task, percent: percent.unwrap_or(0) });
                            }).await;
                        }
                    }
                }
            }
        }
    }
}

/// What every Tern service starts from: the bus (its streams created when `ensure_topology`)
/// and an Azure client with the configured token source and request budget.
pub async fn connect(config: &WorkerConfig, service: &str) -> anyhow::Result<(Bus, AsrClient)> {
    let bus = Bus::connect(&config.nats_url, service).await?;
    if config.ensure_topology {
        bus.ensure_topology(&Topology::default()).await?;
    }
    let tokens = match &config.asr_token {
        Some(t) => TokenProvider::static_token(t.clone()),
        None => TokenProvider::from_env(&config.asr.scope())?,
    };
    let budget: Arc<dyn tern_asr::Budget> = match config.budget {
        Some(b) => Arc::new(FleetBudget::new(&bus, &config.asr.subscription_id, b).await?),
        None => Arc::new(Unlimited),
    };
    let mut asr_config = config.asr.clone();
    asr_config.poll_interval = Duration::from_secs_f64(config.poll_interval_secs);
    asr_config.user_agent.get_or_insert_with(|| format!("{service}/{}", env!("CARGO_PKG_VERSION")));
    Ok((bus, AsrClient::new(asr_config, tokens, budget)?))
}

/// Connects, sets up, and serves `handler`'s queue until `shutdown`.
pub async fn run_worker(
    config: WorkerConfig,
    handler: Arc<dyn PhaseHandler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = handler.service();
    let instance = config.instance.clone().unwrap_or_else(|| format!("{service}-{}", std::process::id()));
    let (bus, asr) = connect(&config, service).await?;
    let watcher = JobWatcher::spawn(
        asr.clone(),
        WatcherOptions {
            interval: Duration::from_secs_f64(config.poll_interval_secs),
            max_reads_per_sec: config.watcher_reads_per_sec,
            ..WatcherOptions::default()
        },
    );
    let ops = bus.kv::<OperationRecord>(Bucket::Operations).await?;
    let metrics = Arc::new(Metrics::new(service));
    let addr = serve(config.listen, metrics.clone(), bus.clone(), handler.queue().name()).await?;
    let consumer = bus
        .queue_consumer(
            handler.queue(),
            LoopOptions {
                concurrency: config.concurrency,
                drain_timeout: Duration::from_secs_f64(config.drain_timeout_secs),
                ..LoopOptions::default()
            },
        )
        .await?;
    let cx = Arc::new(WorkerContext {
        bus,
        asr,
        watcher,
        ops,
        instance: instance.clone(),
        config,
        metrics: metrics.clone(),
    });
    metrics.ready.store(true, Ordering::Relaxed);
    info!(%service, %instance, %addr, "worker ready");
    println!("{}", serde_json::json!({"service": service, "instance": instance, "http": addr.to_string()}));
    let stats = consumer
        .run(
            move |delivery: Delivery<Command>| {
                let (cx, handler) = (cx.clone(), handler.clone());
                async move { handle(cx, handler, delivery).await }
            },
            shutdown,
        )
        .await;
    metrics.ready.store(false, Ordering::Relaxed);
    info!(?stats, "worker stopped");
    Ok(())
}

async fn handle(
    cx: Arc<WorkerContext>,
    handler: Arc<dyn PhaseHandler>,
    delivery: Delivery<Command>,
) -> Result<(), HandlerError> {
    let command = delivery.message;
    let Some(phase) = command.action.as_ref().map(|a| a.phase()) else {
        return Err(HandlerError::reject(format!("command {} has no action", command.command_id)));
    };
    if WorkQueue::for_phase(phase) != Some(handler.queue()) {
        return Err(HandlerError::reject(format!(
            "a {} command does not belong on the {} queue",
            phase.slug(),
            handler.queue().name()
        )));
    }
    let vm_named = command.vm.as_ref().is_some_and(|v| !v.name.is_empty() || !v.protected_item_id.is_empty());
    if command.command_id.is_empty() || command.plan_id.is_empty() || !vm_named {
        return Err(HandlerError::reject("command_id, plan_id and vm (name or protected item id) are required"));
    }
    // The consumer loop runs this inside its `bus.handle` span, whose parent is the context the
    // planner published the command with: planner → NATS → this span → ASR calls and events.
    let vm = command.vm.as_ref().map(vm_label).unwrap_or_default();
    let otel_name = format!("{} {vm}", phase.slug());
    let span = info_span!(
        "command",
        otel.name = otel_name.as_str(),
        otel.kind = "consumer",
        tern.plan_id = %command.plan_id,
        tern.vm = %vm,
        tern.phase = phase.slug(),
        tern.attempt = command.attempt,
        tern.command_id = %command.command_id,
        tern.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    async move {
        // Each delivery claims on its own: a second copy of the command arriving at this same
        // process while the first is still running must back off, not share the claim.
        let claimant = format!("{}#{:08x}", cx.instance, rand::random::<u32>());
        let fence = match Fence::claim(&cx.ops, &command.command_id, &claimant, cx.config.lease()).await {
            Ok(Claim::Owned(f)) => *f,
            Ok(Claim::Finished(record)) => {
                info!(outcome = %record.outcome, "command already finished; acking the duplicate");
                return Ok(());
            }
            Err(FenceError::Busy { owner, remaining }) => {
                return Err(HandlerError::Retry { reason: format!("owned by {owner}"), after: Some(remaining) });
            }
            Err(e) => return Err(HandlerError::retry(e.to_string())),
        };
        let in_flight = cx.metrics.in_flight();
        let events = Emitter::new(cx.bus.clone(), &command, phase);
        let mut run = CommandRun { cx: cx.clone(), command: command.clone(), fence, events, sync_item: None };
        let result = handler.run(&mut run).await;
        drop(in_flight);
        // A failure is this worker's to report only while it still holds the claim: a worker that
        // was frozen or cut off past its lease may have lost the command to another, whose result
        // stands (its own failure is then a refused stale request, not the VM's).
        let result = match result {
            Err(failure @ (Failure::Asr { .. } | Failure::Refused { .. })) => match run.fence.renew().await {
                Ok(()) => Err(failure),
                Err(e) => Err(Failure::from(e)),
            },
            other => other,
        };
        let outcome = match result {
            Ok(outcome) => Ok(outcome),
            Err(Failure::Asr { phase, error }) => {
                warn!(error = %error, "phase failed");
                let e = asr_error(&error);
                let published = run
                    .events
                    .emit(phase, Outcome::Failed, |ev| {
                        ev.error = Some(e);
                        if let AsrError::JobFailed { job, .. } = &error {
                            ev.asr_job_id = job.clone();
                        }
                    })
                    .await;
                published.map(|()| "failed").map_err(|e| HandlerError::retry(e.to_string()))
            }
            Err(Failure::Refused { phase, code, message, action }) => {
                warn!(%code, %message, "phase refused");
                let e = tern_error(code, message.clone(), action);
                let published = run
                    .events
                    .emit(phase, Outcome::Failed, |ev| {
                        ev.error = Some(e);
                        ev.reason = message;
                    })
                    .await;
                published.map(|()| "failed").map_err(|e| HandlerError::retry(e.to_string()))
            }
            Err(Failure::Lost) => {
                warn!("another worker took the command over; backing off");
                return Err(HandlerError::Retry { reason: "taken over".into(), after: Some(cx.config.lease()) });
            }
            Err(Failure::Transient(reason)) => return Err(HandlerError::retry(reason)),
            Err(Failure::Invalid(reason)) => return Err(HandlerError::reject(reason)),
        }?;
        match run.fence.finish(outcome).await {
            Ok(()) | Err(FenceError::Lost) => {}
            Err(e) => return Err(HandlerError::retry(e.to_string())),
        }
        cx.metrics.finished(phase, outcome);
        let span = tracing::Span::current();
        span.record("tern.outcome", outcome);
        if outcome == "failed" {
            span.record("otel.status_code", "ERROR");
        }
        info!(%outcome, "command finished");
        Ok(())
    }
    .instrument(span)
    .await
}

/// How spans name a VM: its name, else the last segment of its protected item id.
fn vm_label(vm: &tern_proto::VmRef) -> String {
    if vm.name.is_empty() {
        vm.protected_item_id.rsplit('/').next().unwrap_or_default().to_owned()
    } else {
        vm.name.clone()
    }
}

/// The job running on `item` if its scenario name contains `scenario_key` (lowercase).
pub fn running_job_of(item: &ProtectedItem, scenario_key: &str) -> Option<String> {
    let scenario = item.properties.current_scenario.as_ref()?.scenario_name.as_deref()?.to_ascii_lowercase();
    let job = item.running_job_id()?;
    scenario.contains(scenario_key).then(|| job.rsplit('/').next().unwrap_or(job).to_owned())
}
