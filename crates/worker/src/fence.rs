//! Fencing: a KV operation record per command makes every side effect happen at most once.
//!
//! The record, keyed by the command's deterministic id, says who owns the command (with a
//! lease), which ASR job each step started, and how it ended. A worker claims the record with
//! create-if-absent, or takes it over when the owner's lease has run out; every later write is
//! compare-and-set at the revision it last saw, so a stale worker (paused, partitioned) finds
//! out on its next write and backs off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_bus::{KvError, Revision, TypedKv};
pub use tern_proto::OperationRecord;

/// Why a fence could not be held.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Another live worker owns the command.
    #[error("command is owned by {owner} for another {remaining:?}")]
    Busy {
        /// The owner.
        owner: String,
        /// Lease left.
        remaining: Duration,
    },
    /// Someone else took the command over since this worker last wrote: stop working on it.
    #[error("command was taken over by another worker")]
    Lost,
    /// NATS failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This worker owns the command now.
    Owned(Box<Fence>),
    /// The command already ended with this record.
    Finished(OperationRecord),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What this process saw of claims that looked expired: for each command, the record's
/// revision and when (by this process's monotonic clock) it was first seen at that revision.
/// Lease expiry compares the owner's clock (`lease_until_ms`, written by the owner) with the
/// claimer's: with hosts' clocks apart, that comparison alone would let a claimer whose clock runs
/// ahead take a command from an owner still working on it. A record unchanged for a whole lease
/// on one clock is one nobody renews, whatever the wall clocks say.
#[derive(Debug, Default)]
pub struct Sightings(std::sync::Mutex<std::collections::HashMap<String, (Revision, std::time::Instant)>>);

impl Sightings {
    /// Whether `key` has been seen at `revision` for at least `lease` (the first sighting of a
    /// revision starts the count).
    fn unchanged_for(&self, key: &str, revision: Revision, lease: Duration) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(key.to_owned()).or_insert((revision, std::time::Instant::now()));
        if entry.0 != revision {
            *entry = (revision, std::time::Instant::now());
        }
        entry.1.elapsed() >= lease
    }

    /// How long until `key`'s current sighting has lasted `lease`.
    fn left(&self, key: &str, lease: Duration) -> Duration {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(key).map_or(lease, |(_, at)| lease.saturating_sub(at.elapsed()))
    }

    fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// A held claim on a command. Clones are handles on the same claim: one works the command
/// while another keeps the claim alive ([`Self::keep_alive`]); their writes take turns.
#[derive(Debug, Clone)]
pub struct Fence {
    kv: TypedKv<OperationRecord>,
    key: String,
    owner: String,
    lease: Duration,
    held: std::sync::Arc<Held>,
}

/// The claim's record as last written, and the turn to write it: every write is a
/// compare-and-set at the revision the previous one left.
#[derive(Debug)]
struct Held {
    writing: tokio::sync::Mutex<()>,
    last: std::sync::Mutex<(Revision, OperationRecord)>,
}

impl Fence {
    fn held(
        kv: &TypedKv<OperationRecord>,
        key: &str,
        owner: &str,
        lease: Duration,
        revision: Revision,
        record: OperationRecord,
    ) -> Self {
        let held = Held { writing: tokio::sync::Mutex::new(()), last: std::sync::Mutex::new((revision, record)) };
        Self { kv: kv.clone(), key: key.into(), owner: owner.into(), lease, held: std::sync::Arc::new(held) }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, (Revision, OperationRecord)> {
        self.held.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record as last written.
    pub fn record(&self) -> OperationRecord {
        self.last().1.clone()
    }

    /// Claims `key` for `owner`: creates the record, or takes it over if its owner's lease ran
    /// out (or it is ours already). `sightings` is this process's memory of records that looked
    /// expired ([`Sightings`]).
    pub async fn claim(
        kv: &TypedKv<OperationRecord>,
        key: &str,
        owner: &str,
        lease: Duration,
        sightings: &Sightings,
    ) -> Result<Claim, FenceError> {
        Self::claim_at(kv, key, owner, lease, sightings, now_ms).await
    }

    /// [`Self::claim`] with this host's wall clock read from `clock` (ms since the Unix epoch):
    /// a host whose clock is off is what the lease rules must survive.
    pub async fn claim_at(
        kv: &TypedKv<OperationRecord>,
        key: &str,
        owner: &str,
        lease: Duration,
        sightings: &Sightings,
        clock: impl Fn() -> u64,
    ) -> Result<Claim, FenceError> {
        let mut waited = false;
        loop {
            let now = clock();
            match kv.get(key).await? {
                None => {
                    let record = OperationRecord {
                        owner: owner.into(),
                        lease_until_ms: now + lease.as_millis() as u64,
                        started_ms: now,
                        ..Default::default()
                    };
                    match kv.create(key, &record).await {
                        Ok(revision) => {
                            return Ok(Claim::Owned(Box::new(Self::held(kv, key, owner, lease, revision, record))));
                        }
                        Err(KvError::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(v) if !v.value.outcome.is_empty() => return Ok(Claim::Finished(v.value)),
                Some(v) if v.value.owner != owner && v.value.lease_until_ms > now => {
                    return Err(FenceError::Busy {
                        owner: v.value.owner.clone(),
                        remaining: Duration::from_millis(v.value.lease_until_ms - now),
                    });
                }
                // Expired by this host's clock, but clocks of two hosts disagree: take it over only
                // once this process has seen the record unchanged for a whole lease. A live owner
                // renews every third of a lease, so a host whose clock runs ahead never takes a
                // claim from one that is working. The wait is spent here, holding the message,
                // not handed back (each hand-back uses up a delivery attempt); if the record
                // changed meanwhile its owner is alive.
                Some(v) if v.value.owner != owner && !sightings.unchanged_for(key, v.revision, lease) => {
                    if waited {
                        return Err(FenceError::Busy { owner: v.value.owner.clone(), remaining: lease });
                    }
                    waited = true;
                    tokio::time::sleep(sightings.left(key, lease)).await;
                }
                Some(v) => {
                    let record = OperationRecord {
                        owner: owner.into(),
                        lease_until_ms: now + lease.as_millis() as u64,
                        ..v.value
                    };
                    match kv.update(key, &record, v.revision).await {
                        Ok(revision) => {
                            sightings.forget(key);
                            return Ok(Claim::Owned(Box::new(Self::held(kv, key, owner, lease, revision, record))));
                        }
                        Err(KvError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    async fn write(&self, change: impl Fn(&mut OperationRecord)) -> Result<(), FenceError> {
        let _turn = self.held.writing.lock().await;
        let mut adopted = 0;
        loop {
            let (revision, mut next) = {
                let last = self.last();
                (last.0, last.1.clone())
            };
            change(&mut next);
            next.lease_until_ms = now_ms() + self.lease.as_millis() as u64;
            match self.kv.update(&self.key, &next, revision).await {
                Ok(revision) => {
                    *self.last() = (revision, next);
                    return Ok(());
                }
                // A write of this claim whose caller stopped waiting for it (its future dropped
                // when the work it raced ended) may have landed all the same. The record still
                // naming this claimant says so: the name is this delivery's alone. Take the
                // record as it is and write again (a few times: such a write may land late).
                Err(KvError::Conflict { .. }) if adopted < 3 => match self.kv.get(&self.key).await? {
                    Some(v) if v.value.owner == self.owner && v.value.outcome.is_empty() => {
                        *self.last() = (v.revision, v.value);
                        adopted += 1;
                    }
                    _ => return Err(FenceError::Lost),
                },
                Err(KvError::Conflict { .. }) => return Err(FenceError::Lost),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Extends the lease; fails with `Lost` if another worker took over.
    pub async fn renew(&self) -> Result<(), FenceError> {
        self.write(|_| {}).await
    }

    /// Keeps the claim alive for as long as it is polled, renewing it every third of a lease
    /// whatever the command is doing meanwhile — a read retried through an ARM outage, a wait
    /// for ARM's budget, a slow bus — and returns only when another worker took the command
    /// over. A renewal the bus could not take is tried at the next one; a write under way
    /// renews the lease itself. Poll it beside the work (`select!`): the work stops when the
    /// claim is lost.
    pub async fn keep_alive(&self) -> FenceError {
        let every = self.lease / 3;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.held.writing.try_lock().is_err() {
                continue;
            }
            match self.renew().await {
                Ok(()) => {}
                Err(FenceError::Lost) => return FenceError::Lost,
                Err(e) => {
                    tracing::warn!(command = %self.key, error = %e, "the claim could not be renewed; trying again")
                }
            }
        }
    }

    /// Records the job a step started — before waiting on it, so a successor attaches to it.
    pub async fn record_job(&self, step: &str, job: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.jobs.insert(step.to_owned(), job.to_owned());
        })
        .await
    }

    /// Remembers a fact for later deliveries of the command.
    pub async fn note(&self, key: &str, value: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.notes.insert(key.to_owned(), value.to_owned());
        })
        .await
    }

    /// Remembers several facts in one write.
    pub async fn note_all(&self, facts: &[(&str, String)]) -> Result<(), FenceError> {
        self.write(|r| {
            for (key, value) in facts {
                r.notes.insert((*key).to_owned(), value.clone());
            }
        })
        .await
    }

    /// Forgets a fact.
    pub async fn forget(&self, key: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.notes.remove(key);
        })
        .await
    }

    /// A fact an earlier delivery remembered.
    pub fn noted(&self, key: &str) -> Option<String> {
        self.last().1.notes.get(key).cloned()
    }

    /// Marks a step done.
    pub async fn step_done(&self, step: &str) -> Result<(), FenceError> {
        self.write(|r| r.done_steps.push(step.to_owned())).await
    }

    /// Records the terminal outcome and the terminal events published for it; later deliveries
    /// of the command find it finished, and publish those events again.
    pub async fn finish(&self, outcome: &str, events: &[tern_proto::Event]) -> Result<(), FenceError> {
        self.write(|r| {
            r.outcome = outcome.to_owned();
            r.terminal_events = events.to_vec();
        })
        .await
    }

    /// The job a step started, if any.
    pub fn job(&self, step: &str) -> Option<String> {
        self.last().1.jobs.get(step).cloned()
    }

    /// Whether a step already finished.
    pub fn is_done(&self, step: &str) -> bool {
        self.last().1.done_steps.iter().any(|s| s == step)
    }

    /// This worker's name.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// The note a step's send mark is kept under ([`Fence::sent`]).
fn sent_note(step: &str) -> String {
    format!("sent.{step}")
}

impl Fence {
    /// When a request of `step`'s send `generation` may last have left (ms since the Unix
    /// epoch): the mark [`ClaimGuard`] writes before each attempt. `None` when no request of
    /// that generation can have left — whoever held the command before never got as far.
    pub fn sent(&self, step: &str, generation: u32) -> Option<u64> {
        let mark = self.noted(&sent_note(step))?;
        let (ms, marked) = mark.split_once(' ')?;
        (marked.parse::<u32>().ok()? == generation).then(|| ms.parse().ok()).flatten()
    }
}

/// Lets a side effect go out only while this worker still holds the command. Immediately before
/// each attempt leaves — after any wait for ARM's budget or a `Retry-After` — it renews the
/// claim and, in the same compare-and-set write, marks the step as possibly sent
/// ([`Fence::sent`]). A worker that waited, or was frozen, past its lease and lost the command
/// sends nothing (the request fails as `AsrError::NotSent`); and whoever holds the command next
/// knows from the mark alone whether a request of the step can have reached Azure, so it looks
/// for a lost request's job only when one can exist. An attempt ARM answered with a 429 applied
/// nothing, and its mark is taken back. While the request is under way the claim is kept alive
/// by [`Fence::keep_alive`], like all the while the command is held.
#[derive(Debug)]
pub struct ClaimGuard<'a> {
    fence: &'a Fence,
    step: String,
    generation: u32,
}

impl<'a> ClaimGuard<'a> {
    /// Guards the sends of `step`'s `generation` with `fence`'s claim.
    pub fn new(fence: &'a Fence, step: &str, generation: u32) -> Self {
        Self { fence, step: step.to_owned(), generation }
    }
}

#[async_trait::async_trait]
impl tern_asr::SendGuard for ClaimGuard<'_> {
    async fn may_send(&self) -> Result<(), String> {
        let mark = format!("{} {}", now_ms(), self.generation);
        self.fence.note(&sent_note(&self.step), &mark).await.map_err(|e| match e {
            FenceError::Lost => "another worker took the command over".to_owned(),
            e => format!("the claim on the command could not be renewed: {e}"),
        })
    }

    async fn unapplied(&self) {
        if self.fence.sent(&self.step, self.generation).is_some() {
            // Best effort: a mark left behind costs a successor a wait, never a second send.
            let _ = self.fence.forget(&sent_note(&self.step)).await;
        }
    }
}
