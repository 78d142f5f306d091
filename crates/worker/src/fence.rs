//! Fencing: a KV operation record per command makes every side effect happen at most once.
//!
//! The record, keyed by the command's deterministic id, says who owns the command (with a
//! lease), which ASR job each step started, and how it ended. A worker claims the record with
//! create-if-absent, or takes it over when the owner's lease has run out; every later write is
//! compare-and-set at the revision it last saw, so a stale worker (paused, partitioned) finds
//! out on its next write and backs off.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_bus::{KvError, Revision, TypedKv};

/// The operation record of one command.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperationRecord {
    /// Instance that owns the command.
    #[prost(string, tag = "1")]
    pub owner: String,
    /// The owner's claim lasts until then (ms since the Unix epoch).
    #[prost(uint64, tag = "2")]
    pub lease_until_ms: u64,
    /// ASR job started by each step (e.g. "failover" → job name).
    #[prost(btree_map = "string, string", tag = "3")]
    pub jobs: BTreeMap<String, String>,
    /// Steps finished successfully.
    #[prost(string, repeated, tag = "4")]
    pub done_steps: Vec<String>,
    /// Terminal outcome of the whole command ("succeeded", "failed", "skipped"); empty while running.
    #[prost(string, tag = "5")]
    pub outcome: String,
    /// When the command was first claimed (ms since the Unix epoch).
    #[prost(uint64, tag = "6")]
    pub started_ms: u64,
    /// Facts a step must not forget across deliveries (e.g. the NICs of a VM being deleted).
    #[prost(btree_map = "string, string", tag = "7")]
    pub notes: BTreeMap<String, String>,
}

/// What the earlier owner of a command taken over may have done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// Its claimant name.
    pub owner: String,
    /// Until when it held the command (ms since the Unix epoch): it may have sent a side effect
    /// up to then.
    pub held_until_ms: u64,
    /// The steps done when it lost the command: it got no further than the first step after them.
    pub done_steps: Vec<String>,
}

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
    /// When this claim took the command over from an earlier owner: what that owner may have
    /// done. `None` for a command nobody held before.
    pub taken_over: Option<TakenOver>,
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
        Self { kv: kv.clone(), key: key.into(), owner: owner.into(), lease, revision, record, taken_over: None }
    }

    /// Claims `key` for `owner`: creates the record, or takes it over if its owner's lease ran
    /// out (or it is ours already).
    pub async fn claim(
        kv: &TypedKv<OperationRecord>,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, FenceError> {
        loop {
            let now = now_ms();
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
                Some(v) => {
                    let previous = TakenOver {
                        owner: v.value.owner.clone(),
                        held_until_ms: v.value.lease_until_ms.min(now),
                        done_steps: v.value.done_steps.clone(),
                    };
                    let record = OperationRecord {
                        owner: owner.into(),
                        lease_until_ms: now + lease.as_millis() as u64,
                        ..v.value
                    };
                    match kv.update(key, &record, v.revision).await {
                        Ok(revision) => {
                            let mut fence = Self::held(kv, key, owner, lease, revision, record);
                            fence.taken_over = Some(previous);
                            return Ok(Claim::Owned(Box::new(fence)));
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

    /// A fact an earlier delivery remembered.
    pub fn noted(&self, key: &str) -> Option<&str> {
        self.record.notes.get(key).map(String::as_str)
    }

    /// Marks a step done.
    pub async fn step_done(&mut self, step: &str) -> Result<(), FenceError> {
        self.write(|r| r.done_steps.push(step.to_owned())).await
    }

    /// Records the terminal outcome; later deliveries of the command find it finished.
    pub async fn finish(&mut self, outcome: &str) -> Result<(), FenceError> {
        self.write(|r| r.outcome = outcome.to_owned()).await
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

/// Lets a side effect go out only while this worker still holds the command: it renews the
/// claim immediately before the request leaves — after any wait for ARM's budget or a
/// `Retry-After` — so a worker that waited, or was frozen, past its lease and lost the command
/// to another instance sends nothing (the request fails as `AsrError::NotSent`). While the
/// request is under way the claim is renewed through the guard ([`Self::renew`]).
#[derive(Debug)]
pub struct ClaimGuard<'a>(tokio::sync::Mutex<&'a mut Fence>);

impl<'a> ClaimGuard<'a> {
    /// Guards sends with `fence`'s claim.
    pub fn new(fence: &'a mut Fence) -> Self {
        Self(tokio::sync::Mutex::new(fence))
    }

    /// [`Fence::renew`], while the guard holds the fence: to keep the claim alive beside a
    /// guarded request under way. If that request is renewing the claim at this very moment
    /// (it holds the fence), there is nothing to add, and waiting for it could deadlock a
    /// caller that does not poll the request meanwhile (a `select!` arm).
    pub async fn renew(&self) -> Result<(), FenceError> {
        match self.0.try_lock() {
            Ok(mut fence) => fence.renew().await,
            Err(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl tern_asr::SendGuard for ClaimGuard<'_> {
    async fn may_send(&self) -> Result<(), String> {
        self.0.lock().await.renew().await.map_err(|e| match e {
            FenceError::Lost => "another worker took the command over".to_owned(),
            e => format!("the claim on the command could not be renewed: {e}"),
        })
    }
}
