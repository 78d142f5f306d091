//! The worker runtime: take a command from the queue, fence it, run its phase against ASR
//! (attaching to a job already started rather than starting another), publish the lifecycle
//! events, and ack — or hand it back, or dead-letter it.

use std::sync::Arc;
use std::time::Duration;

use tern_asr::AsrError;
use tern_asr::ErrorClass;
use tern_asr::client::{Mutation, Sending, Submission, SubmitOutcome, job_failure};
use tern_asr::model::{Job, JobState, ProtectedItem};
use tern_asr::watcher::WatcherOptions;
use tern_bus::topology::COMMANDS_STREAM;
use tern_bus::{Bucket, Bus, Delivery, HandlerError, LoopOptions, TypedKv, WorkQueue};
use tern_proto::{Command, Outcome, Phase, PhaseProgress, VmLock};
use tern_service::{Endpoints, serve};

/// Prefix of a resource delete's fence step: `delete <ARM id>`.
const DELETE_STEP: &str = "delete ";

/// Fewest seconds between two reads of a syncing item's progress.
const SYNC_PROBE_MIN_SECS: f64 = 30.0;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::events::{Emitter, asr_error, tern_error};
use crate::fence::{Claim, ClaimGuard, Fence, FenceError, OperationRecord};
use crate::metrics::Metrics;
use crate::vaults::{Vault, Vaults};

/// What everything a phase needs, shared by the commands of one process.
#[derive(Debug)]
pub struct WorkerContext {
    /// The bus.
    pub bus: Bus,
    /// Azure, per vault, with each vault's job watcher.
    pub vaults: Vaults,
    /// Operation records.
    pub ops: TypedKv<OperationRecord>,
    /// Which plan holds each VM (written by the planner): a command is acted on only for the
    /// plan that holds its VM.
    pub locks: TypedKv<VmLock>,
    /// This process's name (fence owner).
    pub instance: String,
    /// Settings.
    pub config: WorkerConfig,
    /// Metrics and readiness.
    pub metrics: Arc<Metrics>,
    /// Claims this process saw looking expired ([`crate::fence::Sightings`]).
    pub sightings: crate::fence::Sightings,
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
    /// An ASR error in `phase`: transient ones are waited out, the rest fail the phase. A token
    /// ARM refused (401) or no token at all is transient too: credentials are renewed or fixed
    /// without the VM's phase having failed — unlike a 403, a missing permission, which an
    /// operator must grant.
    pub fn asr(phase: Phase) -> impl Fn(AsrError) -> Failure {
        move |error| {
            let unauthenticated = matches!(error, AsrError::Auth(_) | AsrError::Api { status: 401, .. });
            if unauthenticated
                || matches!(error.class(), tern_asr::ErrorClass::Retryable | tern_asr::ErrorClass::Throttled)
            {
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
    /// The vault its VM is protected by: Azure there, and the watcher of its jobs.
    pub vault: Arc<Vault>,
}

/// What an earlier owner of a command did about a step's side effect, as Azure shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PriorSend {
    /// Nothing: send it.
    None,
    /// It started this job (now recorded): attach to it.
    Job(String),
    /// Its effect is there, though no job of its request shows: nothing to send.
    Done,
}

/// Where a step stands before anything is sent, by its fence and by Azure ([`CommandRun::begin`]).
#[derive(Debug)]
pub enum Begin<'r> {
    /// The step's job, recorded: started by an earlier delivery or owner, or running in Azure
    /// now. Wait on it.
    Attach(String),
    /// The step's effect is there already, though no job of it is known: nothing to send.
    Done,
    /// Nothing started it: send it as the ticket says, then [`CommandRun::record`] the
    /// submission.
    Send(Ticket<'r>),
}

/// Leave to send a step's side effect: its request id, and the claim that must still hold
/// when the request leaves.
#[derive(Debug)]
pub struct Ticket<'r> {
    key: String,
    guard: ClaimGuard<'r>,
}

impl Ticket<'_> {
    /// How the request goes out (for `tern-asr`'s side-effect calls).
    pub fn sending(&self) -> Sending<'_> {
        Sending::guarded(&self.key, &self.guard)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn from_ms(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
}

impl CommandRun {
    /// The command's protected item, found again by name and lifecycle id if its id changed.
    pub async fn locate(&mut self) -> Result<ProtectedItem, Failure> {
        let run = self;
        let vm = run.command.vm.clone().unwrap_or_default();
        let asr = run.vault.asr.clone();
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
            // No filter by name exists in the REST spec: read the whole list, match the name.
            None if !vm.name.is_empty() => {
                asr.find_item_by_vm_name(&vm.name, lifecycle).await.map_err(Failure::asr(phase))?
            }
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

    /// Attempts looked back on for a job still running ([`Self::predecessor_job`]).
    const LOOK_BACK: u32 = 3;

    /// A job of `step` an earlier attempt of this command started and that has not ended: an
    /// attempt that gave up at its deadline, or failed while its job went on. Azure may not show
    /// it on the item yet (the item's scenario lags its job), so without this a retry would send
    /// the operation again, to be refused while the first job runs.
    async fn predecessor_job(&self, step: &str, phase: Phase) -> Result<Option<String>, Failure> {
        let Some(command_phase) = self.command.action.as_ref().map(|a| a.phase()) else { return Ok(None) };
        let vm = self.command.vm.clone().unwrap_or_default();
        let first = self.command.attempt.saturating_sub(Self::LOOK_BACK).max(1);
        for attempt in (first..self.command.attempt).rev() {
            let id = tern_bus::ids::command_id(&self.command.plan_id, &vm, command_phase, attempt);
            let record = self.cx.ops.get(&id).await.map_err(|e| Failure::Transient(e.to_string()))?;
            let Some(job) = record.and_then(|r| r.value.jobs.get(step).cloned()) else { continue };
            let found = self.vault.asr.get_job(&job).await.map_err(Failure::asr(phase))?;
            if !found.state().is_terminal() {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// The job a step started in an earlier delivery, if any.
    pub fn recorded_job(&self, step: &str) -> Option<String> {
        self.fence.job(step)
    }

    fn sends(&self, step: &str) -> u32 {
        self.fence.noted(&format!("sends.{step}")).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The `x-ms-client-request-id` a step's side effect goes out with: derived from the
    /// command, the step and how often the step was sent before, so whoever holds the command
    /// next finds the job it started by its `activityId`.
    fn request_key(&self, step: &str) -> String {
        tern_asr::client::request_key(&[&self.command.command_id, step, &self.sends(step).to_string()])
    }

    /// The step protocol up to the send, for a side effect of `mutation` on `item`:
    /// a job an earlier delivery recorded is attached to; then whatever an earlier delivery or
    /// owner may have sent (its guard marked the step) is settled ([`Self::prior_send`]); then
    /// Azure decides (`azure`, usually [`in_azure`]): a job of the operation running is
    /// recorded and attached to, an effect already there needs nothing. Only then is the step
    /// sent, through the returned [`Ticket`].
    pub async fn begin(
        &mut self,
        step: &str,
        phase: Phase,
        item: &ProtectedItem,
        mutation: Mutation,
        azure: impl FnOnce() -> InAzure,
    ) -> Result<Begin<'_>, Failure> {
        if let Some(job) = self.recorded_job(step) {
            return Ok(Begin::Attach(job));
        }
        if let Some(job) = self.predecessor_job(step, phase).await? {
            info!(step, %job, "an earlier attempt's job is still running; attaching");
            self.fence.record_job(step, &job).await?;
            return Ok(Begin::Attach(job));
        }
        match self.prior_send(step, phase, item, mutation).await? {
            PriorSend::Job(job) => return Ok(Begin::Attach(job)),
            PriorSend::Done => return Ok(Begin::Done),
            PriorSend::None => {}
        }
        match azure() {
            InAzure::Running(job) => {
                self.fence.record_job(step, &job).await?;
                Ok(Begin::Attach(job))
            }
            InAzure::Done => Ok(Begin::Done),
            InAzure::Absent => Ok(Begin::Send(self.ticket(step))),
        }
    }

    /// Deletes an ARM resource as a step of its own (`delete <id>`), unless an earlier delivery
    /// did: under the step's request id and claim guard, the claim kept alive while Azure works
    /// (deleting a VM takes minutes). A resource already gone counts as deleted, so a delete
    /// whose answer was lost is simply sent again.
    pub async fn delete(&mut self, phase: Phase, id: &str) -> Result<(), Failure> {
        let step = format!("{DELETE_STEP}{id}");
        if self.fence.is_done(&step) {
            return Ok(());
        }
        info!(resource = %id, "deleting");
        let asr = self.vault.asr.clone();
        {
            let ticket = self.ticket(&step);
            asr.delete_resource(id, ticket.sending()).await.map_err(Failure::asr(phase))?;
        }
        self.fence.step_done(&step).await?;
        Ok(())
    }

    /// A resource found gone whose DELETE an earlier delivery of this command may have sent (its
    /// step is marked sent, not done: that delivery stopped while Azure deleted it) is counted
    /// as deleted by this command, without sending again. Nothing happens when no delete of it
    /// was sent: something else removed it.
    pub async fn deleted_before(&mut self, id: &str) -> Result<(), Failure> {
        let step = format!("{DELETE_STEP}{id}");
        if self.fence.is_done(&step) || self.fence.sent(&step, self.sends(&step)).is_none() {
            return Ok(());
        }
        self.fence.step_done(&step).await?;
        Ok(())
    }

    /// The resources [`CommandRun::delete`] removed for this command, by every delivery of it,
    /// in the order deleted: read from the fence record, whose steps outlive a redelivery.
    pub fn deleted_resources(&self) -> Vec<String> {
        self.fence.record().done_steps.iter().filter_map(|s| s.strip_prefix(DELETE_STEP)).map(str::to_owned).collect()
    }

    fn ticket(&self, step: &str) -> Ticket<'_> {
        let generation = self.sends(step);
        Ticket { key: self.request_key(step), guard: ClaimGuard::new(&self.fence, step, generation) }
    }

    /// Every request id the step may have gone out with so far.
    fn sent_keys(&self, step: &str) -> Vec<String> {
        (0..=self.sends(step))
            .map(|n| tern_asr::client::request_key(&[&self.command.command_id, step, &n.to_string()]))
            .collect()
    }

    /// Before a step sends its side effect: whether an earlier delivery or owner of the command
    /// (a crashed or cut-off worker, or one whose answer was lost) may have sent it — its
    /// [`ClaimGuard`] marked the step before the request left ([`Fence::sent`]) — and what
    /// became of it. Without a mark nothing can have reached Azure. With one, the job is looked
    /// for by its request ids; while none shows and the lost-request window since the mark has
    /// not passed, the command is held rather than sent again.
    async fn prior_send(
        &mut self,
        step: &str,
        phase: Phase,
        item: &ProtectedItem,
        mutation: Mutation,
    ) -> Result<PriorSend, Failure> {
        let Some(sent) = self.fence.sent(step, self.sends(step)) else { return Ok(PriorSend::None) };
        let keys = self.sent_keys(step);
        let mut s = self.vault.asr.settle(item, mutation, &keys, from_ms(sent)).await.map_err(Failure::asr(phase))?;
        if s.outcome == SubmitOutcome::Unsettled {
            s = self.settle_patiently(phase, item, mutation, &keys, sent).await?;
        }
        match (s.outcome, s.job) {
            (_, Some(job)) => {
                info!(step, %job, "an earlier attempt's request started this job; attaching");
                self.fence.record_job(step, &job).await?;
                Ok(PriorSend::Job(job))
            }
            (SubmitOutcome::AlreadyFinished, None) => Ok(PriorSend::Done),
            (_, None) => {
                // Whatever may have been sent before never started: the next send gets its own
                // id, so a late job of the earlier request can still be told apart.
                self.next_generation(step).await?;
                Ok(PriorSend::None)
            }
        }
    }

    /// The step's earlier requests never started anything: the next goes out under a new id.
    async fn next_generation(&mut self, step: &str) -> Result<(), Failure> {
        let n = self.sends(step) + 1;
        self.fence.note(&format!("sends.{step}"), &n.to_string()).await?;
        Ok(())
    }

    /// Looks for a lost request's job again and again, holding the command (its claim and
    /// message kept alive) until the job shows or the lost-request window has passed:
    /// handing the command back meanwhile would use up its delivery attempts.
    async fn settle_patiently(
        &mut self,
        phase: Phase,
        item: &ProtectedItem,
        mutation: Mutation,
        keys: &[String],
        sent_ms: u64,
    ) -> Result<Submission, Failure> {
        let window = self.vault.asr.config().lost_request_window;
        let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut look = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        info!(?window, "the request's job does not show yet; looking again until it does or the window passes");
        loop {
            look.tick().await;
            let s = self.vault.asr.settle(item, mutation, keys, from_ms(sent_ms)).await.map_err(Failure::asr(phase))?;
            if s.outcome != SubmitOutcome::Unsettled {
                return Ok(s);
            }
        }
    }

    /// Takes a submission's job and records it before anything waits on it. Returns `None`
    /// when the operation had already finished without a known job.
    /// `item` and `mutation`: what was submitted, to look for its job if the answer was lost.
    pub async fn record(
        &mut self,
        step: &str,
        phase: Phase,
        submission: Submission,
        item: &ProtectedItem,
        mutation: Mutation,
    ) -> Result<Option<String>, Failure> {
        self.cx.metrics.submitted();
        let mut submission = submission;
        if submission.outcome == SubmitOutcome::Unsettled {
            // The answer was lost and the job does not show yet: look again rather than send
            // again (the guard's mark tells a successor the same, should this worker stop).
            let sent = self.fence.sent(step, self.sends(step)).unwrap_or_else(now_ms);
            let keys = self.sent_keys(step);
            submission = self.settle_patiently(phase, item, mutation, &keys, sent).await?;
        }
        match (submission.outcome, submission.job) {
            (_, Some(job)) => {
                self.fence.record_job(step, &job).await?;
                Ok(Some(job))
            }
            (SubmitOutcome::AlreadyFinished, None) => Ok(None),
            (SubmitOutcome::NotStarted, None) => {
                self.next_generation(step).await?;
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

    /// Waits for `job`, publishing progress as it advances. The
    /// job at the end is read in full (the watcher GETs it once it ended): tasks, errors and
    /// custom details are there, which the lists it follows the job with leave out.
    pub async fn wait(&mut self, phase: Phase, job: &str) -> Result<Job, Failure> {
        self.wait_job(phase, job, true).await
    }

    /// As [`Self::wait`] for a step that needs nothing of a successful job but its success: it
    /// costs no read of the job (a failed one is still read in full, for its error).
    pub async fn wait_state(&mut self, phase: Phase, job: &str) -> Result<Job, Failure> {
        self.wait_job(phase, job, false).await
    }

    async fn wait_job(&mut self, phase: Phase, job: &str, details: bool) -> Result<Job, Failure> {
        tracing::debug!(job, "waiting for the ASR job");
        let mut rx = if details { self.vault.watcher.watch(job) } else { self.vault.watcher.watch_state(job) };
        let mut last: Option<String> = None;
        loop {
            if rx.changed().await.is_err() {
                return Err(Failure::Transient("the job watcher stopped".into()));
            }
            let Some(j) = rx.borrow_and_update().clone() else { continue };
            match j.state() {
                JobState::Succeeded => return Ok(j),
                JobState::Failed | JobState::Cancelled => return Err(Failure::Asr { phase, error: job_failure(&j) }),
                _ => {}
            }
            // A list tells the job's state, not its tasks: progress is what it tells.
            let what = j.current_task().and_then(|t| t.friendly_name.clone().or(t.name.clone())).unwrap_or_else(|| {
                let name = j.properties.friendly_name.clone().or(j.properties.scenario_name.clone());
                format!("{} {}", name.unwrap_or_else(|| "job".into()), j.state()).trim().to_owned()
            });
            if last.as_ref() != Some(&what) {
                last = Some(what.clone());
                let job_name = j.name.clone();
                let _ = self
                    .events
                    .emit(phase, Outcome::Progress, |e| {
                        e.asr_job_id = job_name;
                        e.progress = Some(PhaseProgress { task: what, percent: 0 });
                    })
                    .await;
            }
        }
    }

    /// Waits until `item`'s initial replication has completed, publishing its progress. A reprotect job's success is not the end of it: replication
    /// goes on, and ends with `PrimaryIrCompletion` and `SecondaryIrCompletion` jobs
    /// (A2AFailoverCommit-excerpt.json entries 122–143). The end is seen when every disk of the
    /// item is Protected, or when the `SecondaryIrCompletion` job of the VM (started since
    /// `since`) succeeds; if it fails, the phase fails with its error. Progress is read per
    /// disk (the item-level figure goes stale), one item read at a time, rarely.
    pub async fn wait_initial_replication(
        &mut self,
        phase: Phase,
        item: &ProtectedItem,
        since: time::OffsetDateTime,
    ) -> Result<(), Failure> {
        if item.disks_not_protected().is_empty() {
            return Ok(());
        }
        let vm = item.friendly_name().to_owned();
        tracing::debug!(%vm, "waiting for initial replication to complete");
        let mut done = self.vault.watcher.expect(&vm, "SecondaryIrCompletion", since);
        // Progress costs one read per VM, from the same per-subscription budget every VM
        // shares: read it rarely (four job polls, at least 30 s apart).
        let probe_every =
            Duration::from_secs_f64((self.cx.config.service.poll_interval_secs * 4.0).max(SYNC_PROBE_MIN_SECS));
        let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + probe_every, probe_every);
        let mut last_percent = None;
        self.initial_replication_progress(phase, item, &mut last_percent).await;
        loop {
            tokio::select! {
                changed = done.changed() => {
                    if changed.is_err() {
                        return Err(Failure::Transient("the job watcher stopped".into()));
                    }
                    let Some(j) = done.borrow_and_update().clone() else { continue };
                    match j.state() {
                        JobState::Succeeded => return Ok(()),
                        JobState::Failed | JobState::Cancelled => return Err(Failure::Asr { phase, error: job_failure(&j) }),
                        _ => {}
                    }
                }
                _ = probe.tick() => {
                    if let Ok(now) = self.vault.asr.get_item(&item.id).await {
                        if now.disks_not_protected().is_empty() {
                            return Ok(());
                        }
                        self.initial_replication_progress(phase, &now, &mut last_percent).await;
                    }
                }
            }
        }
    }

    async fn initial_replication_progress(&mut self, phase: Phase, item: &ProtectedItem, last: &mut Option<u32>) {
        let percent = item.sync_percent().map(|p| p.clamp(0, 100) as u32).unwrap_or(0);
        if *last == Some(percent) {
            return;
        }
        *last = Some(percent);
        let _ = self
            .events
            .emit(phase, Outcome::Progress, |e| {
                e.progress = Some(PhaseProgress { task: "Initial replication".into(), percent });
            })
            .await;
    }
}

/// Connects, sets up, and serves `handler`'s queue until `shutdown`.
pub async fn run_worker(
    config: WorkerConfig,
    handler: Arc<dyn PhaseHandler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = handler.service();
    let instance = config.instance.clone().unwrap_or_else(|| format!("{service}-{}", std::process::id()));
    let (bus, asr) = tern_service::connect(&config.service, service).await?;
    let vaults = Vaults::new(
        asr,
        WatcherOptions {
            interval: Duration::from_secs_f64(config.service.poll_interval_secs),
            max_reads_per_sec: config.watcher_reads_per_sec,
            ..WatcherOptions::default()
        },
    );
    let ops = bus.kv::<OperationRecord>(Bucket::Operations).await?;
    let locks = bus.kv::<VmLock>(Bucket::VmLocks).await?;
    let metrics = Arc::new(Metrics::new(service));
    let endpoints =
        Endpoints::new(bus.clone(), COMMANDS_STREAM, handler.queue().name()).with_readiness(metrics.ready.clone());
    let addr = serve(config.service.listen, endpoints).await?;
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
        vaults,
        ops,
        locks,
        instance: instance.clone(),
        config,
        metrics: metrics.clone(),
        sightings: Default::default(),
    });
    metrics.ready.set(true);
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
    metrics.ready.set(false);
    info!(?stats, "worker stopped");
    Ok(())
}

async fn handle(
    cx: Arc<WorkerContext>,
    handler: Arc<dyn PhaseHandler>,
    delivery: Delivery<Command>,
) -> Result<(), HandlerError> {
    let copy = delivery.stream_sequence;
    let last_attempt = delivery.is_last_attempt();
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
    let vault = cx
        .vaults
        .of(&command.vm.clone().unwrap_or_default())
        .map_err(|why| HandlerError::reject(format!("command {}: {why}; not acted on", command.command_id)))?;
    if !dispatched_by_its_plan(&cx, &vault, &command).await? {
        info!(command = %command.command_id, "a copy of a command that already finished; acking it");
        return Ok(());
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
        let fence = match Fence::claim(&cx.ops, &command.command_id, &claimant, cx.config.lease(), &cx.sightings).await
        {
            Ok(Claim::Owned(f)) => *f,
            Ok(Claim::Finished(record)) => {
                // A copy of a finished command comes when the planner did not move on (the watchdog
                // sent it again): say again how it ended, then ack it.
                info!(outcome = %record.outcome, "command already finished; publishing its outcome again");
                for event in &record.terminal_events {
                    cx.bus
                        .publish_event_again(event, &copy.to_string())
                        .await
                        .map_err(|e| HandlerError::retry(e.to_string()))?;
                }
                return Ok(());
            }
            Err(FenceError::Busy { owner, .. }) if last_attempt => {
                // Another delivery holds the command and renews it: this copy (a resend, or a
                // redelivery while the owner works) is not lost work, and dead-lettering it would
                // only alarm an operator. Should that owner die, its own message comes back, and
                // the planner's watchdog sends the command again once the claim has run out.
                info!(%owner, "a copy of a command another delivery holds; acking it");
                return Ok(());
            }
            Err(FenceError::Busy { owner, remaining }) => {
                return Err(HandlerError::Retry { reason: format!("owned by {owner}"), after: Some(remaining) });
            }
            Err(e) => return Err(HandlerError::retry(e.to_string())),
        };
        let in_flight = cx.metrics.in_flight();
        let events = Emitter::new(cx.bus.clone(), &command, phase);
        let mut run = CommandRun { cx: cx.clone(), command: command.clone(), fence, events, vault };
        // The claim is kept alive beside the work, whatever the work awaits; losing it stops the work.
        let keeper = run.fence.clone();
        let result = tokio::select! {
            result = run_to_deadline(&mut run, handler.as_ref()) => result,
            lost = keeper.keep_alive() => Err(Failure::from(lost)),
        };
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
                let mut e = tern_error(code, message.clone(), action);
                // A new attempt of a phase past its deadline attaches to the job it waited on.
                e.retryable = code == DEADLINE_CODE;
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
        match run.fence.finish(outcome, run.events.terminal_events()).await {
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

/// The code of a phase that outlived its command's deadline.
pub const DEADLINE_CODE: &str = "TERN-DEADLINE";

/// Longest wait between two tries of a phase held up by transient trouble.
const TROUBLE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// When the command's deadline passes (ms since the Unix epoch): its dispatch (`issued_at`, else
/// the first claim) plus its `deadline`. `None`: the command sets none.
fn deadline_ms(command: &Command, first_claim_ms: u64) -> Option<u64> {
    let limit = command.deadline.as_ref().filter(|d| d.seconds > 0 || d.nanos > 0)?;
    let from = command
        .issued_at
        .as_ref()
        .map(|t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
        .unwrap_or(first_claim_ms);
    Some(from + (limit.seconds.max(0) as u64) * 1000 + (limit.nanos.max(0) as u64) / 1_000_000)
}

/// Runs the command's phase until it ends or its deadline passes. Transient trouble — ARM down
/// or throttling, a token ARM refused, the bus briefly gone — is waited out here, with backoff
/// and the command held (its claim kept alive by [`Fence::keep_alive`]), instead of handing the command back: every hand-back uses up one
/// of its delivery attempts, and an outage of minutes would use them all and dead-letter a VM
/// that only had to wait. Each try starts the phase over; its steps are fenced, so a try
/// attaches to what an earlier one started. At the deadline the phase fails with TERN-DEADLINE,
/// naming the job it waited on and the last trouble seen.
async fn run_to_deadline(run: &mut CommandRun, handler: &dyn PhaseHandler) -> Result<&'static str, Failure> {
    let end = deadline_ms(&run.command, run.fence.record().started_ms);
    let mut backoff = Duration::from_secs(1);
    let mut trouble: Option<String> = None;
    loop {
        let left = end.map(|end| Duration::from_millis(end.saturating_sub(now_ms())));
        let tried = match left {
            Some(left) if left.is_zero() => return Err(past_deadline(run, trouble)),
            Some(left) => match tokio::time::timeout(left, handler.run(run)).await {
                Ok(result) => result,
                Err(_) => return Err(past_deadline(run, trouble)),
            },
            None => handler.run(run).await,
        };
        let Err(Failure::Transient(reason)) = tried else { return tried };
        warn!(%reason, wait = ?backoff, "transient trouble; waiting it out with the command held");
        trouble = Some(reason);
        tokio::time::sleep(left.map_or(backoff, |left| backoff.min(left))).await;
        backoff = (backoff * 2).min(TROUBLE_BACKOFF_MAX);
    }
}

/// The failure of a phase that outlived its command's deadline.
fn past_deadline(run: &CommandRun, trouble: Option<String>) -> Failure {
    let limit = run.command.deadline.map(|d| Duration::from_secs(d.seconds.max(0) as u64)).unwrap_or_default();
    let phase = run.events.current_phase();
    let mut message = format!("{} did not finish within its deadline of {}s", phase.slug(), limit.as_secs());
    let mut jobs: Vec<String> = run.fence.record().jobs.into_values().collect();
    jobs.sort_unstable();
    if let Some(job) = jobs.last() {
        message.push_str(&format!("; ASR job {job} had not ended"));
    }
    if let Some(t) = trouble {
        message.push_str(&format!("; last trouble: {t}"));
    }
    Failure::Refused {
        phase,
        code: DEADLINE_CODE,
        message,
        action: "Look at the ASR job in the portal, then `tern plan retry` the VM: a new attempt attaches to a job \
                 still running. Raise the plan's `deadlines` if the phase needs longer.",
    }
}

/// Whether a command is one its plan dispatched, before anything is claimed or sent: its item
/// (if it names one) is in the command's vault (one the service acts on), and its plan holds
/// the VM's lock. A command
/// that fails either — forged, or from another estate — is refused with the reason (the queue
/// dead-letters it) and changes nothing in Azure. `Ok(false)`: a copy of a command that already
/// finished (its plan has ended and released the VM since), to ack as the duplicate it is.
async fn dispatched_by_its_plan(cx: &WorkerContext, vault: &Vault, command: &Command) -> Result<bool, HandlerError> {
    let vm = command.vm.clone().unwrap_or_default();
    let vault = vault.asr.config().vault_id();
    let item = &vm.protected_item_id;
    if !item.is_empty() && !item.to_ascii_lowercase().starts_with(&format!("{}/", vault.to_ascii_lowercase())) {
        return Err(HandlerError::reject(format!(
            "command {}: protected item {item} is not in the command's vault {vault}; not acted on",
            command.command_id
        )));
    }
    let key = tern_bus::ids::vm_key(&vm);
    let holder = cx.locks.get(key).await.map_err(|e| HandlerError::retry(e.to_string()))?.map(|l| l.value.plan_id);
    if holder.as_deref() == Some(command.plan_id.as_str()) {
        return Ok(true);
    }
    let record = cx.ops.get(&command.command_id).await.map_err(|e| HandlerError::retry(e.to_string()))?;
    if record.is_some_and(|r| !r.value.outcome.is_empty()) {
        return Ok(false);
    }
    Err(HandlerError::reject(format!(
        "command {}: plan {} does not hold VM {key} ({}); a command no plan dispatched is not acted on",
        command.command_id,
        command.plan_id,
        match holder {
            Some(other) => format!("plan {other} does"),
            None => "no plan does".to_owned(),
        }
    )))
}

/// How spans name a VM: its name, else the last segment of its protected item id.
fn vm_label(vm: &tern_proto::VmRef) -> String {
    if vm.name.is_empty() {
        vm.protected_item_id.rsplit('/').next().unwrap_or_default().to_owned()
    } else {
        vm.name.clone()
    }
}

/// What an item shows of a step's operation, read before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InAzure {
    /// The operation's job runs on the item now (started by an attempt whose record was lost):
    /// attach to it.
    Running(String),
    /// The operation's effect is there already: nothing to send.
    Done,
    /// Neither: the operation may be sent.
    Absent,
}

/// What `now` shows of `mutation`, as tern-asr's table of operations reads it: its job
/// running (by the item's current scenario), its effect already there (compared with
/// `before`, the item as the step first found it), or neither.
pub fn in_azure(mutation: Mutation, before: &ProtectedItem, now: &ProtectedItem) -> InAzure {
    if let Some(job) = running_job(mutation, now) {
        InAzure::Running(job)
    } else if mutation.is_done(before, Some(now)) {
        InAzure::Done
    } else {
        InAzure::Absent
    }
}

/// The job of `mutation` running on `item` now, if any (its name).
pub fn running_job(mutation: Mutation, item: &ProtectedItem) -> Option<String> {
    let scenario = item.properties.current_scenario.as_ref()?.scenario_name.as_deref()?;
    let job = item.running_job_id()?;
    mutation.matches_scenario(scenario).then(|| job.rsplit('/').next().unwrap_or(job).to_owned())
}
