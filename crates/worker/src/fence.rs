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

/// A held claim on a command.
#[derive(Debug)]
pub struct Fence {
    kv: TypedKv<OperationRecord>,
    key: String,
    owner: String,
    lease: Duration,
    revision: Revision,
    /// The record as last written.
    pub record: OperationRecord,
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
        Self { kv: kv.clone(), key: key.into(), owner: owner.into(), lease, revision, record }
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

    async fn write(&mut self, change: impl FnOnce(&mut OperationRecord)) -> Result<(), FenceError> {
        let mut next = self.record.clone();
        change(&mut next);
        next.lease_until_ms = now_ms() + self.lease.as_millis() as u64;
        match self.kv.update(&self.key, &next, self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                self.record = next;
                Ok(())
            }
            Err(KvError::Conflict { .. }) => Err(FenceError::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// Extends the lease; fails with `Lost` if another worker took over.
    pub async fn renew(&mut self) -> Result<(), FenceError> {
        self.write(|_| {}).await
    }

    /// Records the job a step started — before waiting on it, so a successor attaches to it.
    pub async fn record_job(&mut self, step: &str, job: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.jobs.insert(step.to_owned(), job.to_owned());
        })
        .await
    }

    /// Remembers a fact for later deliveries of the command.
    pub async fn note(&mut self, key: &str, value: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.notes.insert(key.to_owned(), value.to_owned());
        })
        .await
    }

    /// Remembers several facts in one write.
    pub async fn note_all(&mut self, facts: &[(&str, String)]) -> Result<(), FenceError> {
        self.write(|r| {
            for (key, value) in facts {
                r.notes.insert((*key).to_owned(), value.clone());
            }
        })
        .await
    }

    /// Forgets a fact.
    pub async fn forget(&mut self, key: &str) -> Result<(), FenceError> {
        self.write(|r| {
            r.notes.remove(key);
        })
        .await
    }

    /// A fact an earlier delivery remembered.
    pub fn noted(&self, key: &str) -> Option<&str> {
        self.record.notes.get(key).map(String::as_str)
    }

    /// Marks a step done.
    pub async fn step_done(&mut self, step: &str) -> Result<(), FenceError> {
        self.write(|r| r.done_steps.push(step.to_owned())).await
    }

    /// Records the terminal outcome and the terminal events published for it; later deliveries
    /// of the command find it finished, and publish those events again.
    pub async fn finish(&mut self, outcome: &str, events: &[tern_proto::Event]) -> Result<(), FenceError> {
        self.write(|r| {
            r.outcome = outcome.to_owned();
            r.terminal_events = events.to_vec();
        })
        .await
    }

    /// The job a step started, if any.
    pub fn job(&self, step: &str) -> Option<&str> {
        self.record.jobs.get(step).map(String::as_str)
    }

    /// Whether a step already finished.
    pub fn is_done(&self, step: &str) -> bool {
        self.record.done_steps.iter().any(|s| s == step)
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
        let (ms, marked) = self.noted(&sent_note(step))?.split_once(' ')?;
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
/// nothing, and its mark is taken back. While the request is under way the claim is renewed
/// through the guard ([`Self::renew`]).
#[derive(Debug)]
pub struct ClaimGuard<'a> {
    fence: tokio::sync::Mutex<&'a mut Fence>,
    step: String,
    generation: u32,
}

impl<'a> ClaimGuard<'a> {
    /// Guards the sends of `step`'s `generation` with `fence`'s claim.
    pub fn new(fence: &'a mut Fence, step: &str, generation: u32) -> Self {
        Self { fence: tokio::sync::Mutex::new(fence), step: step.to_owned(), generation }
    }

    /// [`Fence::renew`], while the guard holds the fence: to keep the claim alive beside a
    /// guarded request under way. If that request is renewing the claim at this very moment
    /// (it holds the fence), there is nothing to add, and waiting for it could deadlock a
    /// caller that does not poll the request meanwhile (a `select!` arm).
    pub async fn renew(&self) -> Result<(), FenceError> {
        match self.fence.try_lock() {
            Ok(mut fence) => fence.renew().await,
            Err(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl tern_asr::SendGuard for ClaimGuard<'_> {
    async fn may_send(&self) -> Result<(), String> {
        let mark = format!("{} {}", now_ms(), self.generation);
        self.fence.lock().await.note(&sent_note(&self.step), &mark).await.map_err(|e| match e {
            FenceError::Lost => "another worker took the command over".to_owned(),
            e => format!("the claim on the command could not be renewed: {e}"),
        })
    }

    async fn unapplied(&self) {
        let mut fence = self.fence.lock().await;
        if fence.sent(&self.step, self.generation).is_some() {
            // Best effort: a mark left behind costs a successor a wait, never a second send.
            let _ = fence.forget(&sent_note(&self.step)).await;
        }
    }
}
