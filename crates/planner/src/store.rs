//! Plan storage in the plans KV bucket, sized for tens of thousands of VMs per plan.
//!
//! A plan is a small header record `plan.<id>` (the plan without its VMs, plus the keys of its
//! VM chunks) and immutable chunk records `chunk.<id>.<n>.<nonce>` of up to [`CHUNK_VMS`] VMs
//! each. A change writes new chunks only for the slices of VMs that changed, under fresh keys,
//! then moves the header with compare-and-set: the header is the one atomic root, so a reader
//! always sees one consistent version of the plan, and two planner replicas racing on a plan
//! still conflict on one record. A writer that loses the race deletes the chunks it wrote; the
//! winner deletes the chunks it replaced. A write whose answer was lost (a timeout) is judged
//! by reading the header back, never by assuming it failed: no chunk a stored header names is
//! ever deleted.
//!
//! Chunks never change once written, so each planner keeps the last version of each plan it
//! saw and reads only the chunks whose keys moved. A step on a plan this planner wrote last
//! reads nothing at all: it writes against the cached revision and only re-reads on conflict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tern_bus::{Bucket, Bus, KvError, Revision, TypedKv};
use tern_proto::{Plan, StoredPlan, VmChunk, VmStatus};

/// VMs per chunk record: a chunk stays well under NATS's 1 MiB message limit (a VM's status
/// is about 1 KiB with its ARM ids and recovery point).
pub const CHUNK_VMS: usize = 250;

/// KV operations of one store call run this many at a time.
const PARALLEL: usize = 32;

/// How often a read retries when a chunk it was pointed at was replaced under it.
const READ_RETRIES: usize = 8;

/// One version of a plan, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The whole plan.
    pub plan: Plan,
    /// Where it is stored: what the next version is written against.
    pub base: Base,
}

/// The stored form of a plan's version: its header revision and chunk keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Base {
    /// The header's revision: write against it.
    pub revision: Revision,
    chunks: Vec<String>,
}

/// Which VMs a change touched: only their chunks are written.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Dirty {
    /// These VMs (indices into the plan's VMs).
    #[default]
    None,
    /// These VMs, by index.
    Vms(Vec<usize>),
    /// Any VM.
    All,
}

impl Dirty {
    /// Marks VM `i`.
    pub fn touch(&mut self, i: usize) {
        match self {
            Dirty::None => *self = Dirty::Vms(vec![i]),
            Dirty::Vms(v) => v.push(i),
            Dirty::All => {}
        }
    }

    /// The chunks to write, of a plan of `vms` VMs.
    fn chunks(&self, vms: usize) -> Vec<usize> {
        let mut out: Vec<usize> = match self {
            Dirty::None => vec![],
            Dirty::Vms(v) => v.iter().map(|i| i / CHUNK_VMS).collect(),
            Dirty::All => (0..vms.div_ceil(CHUNK_VMS)).collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The plans of one bucket, with this process's cache of their latest versions.
#[derive(Clone)]
pub struct PlanStore {
    headers: TypedKv<StoredPlan>,
    chunks: TypedKv<VmChunk>,
    cache: Arc<Mutex<HashMap<String, Arc<Snapshot>>>>,
}

fn header_key(id: &str) -> String {
    format!("plan.{id}")
}

fn chunk_key(id: &str, n: usize) -> String {
    format!("chunk.{id}.{n}.{:016x}", rand::random::<u64>())
}

/// The plan without its VMs (what the header record holds).
pub fn without_vms(plan: &Plan) -> Plan {
    Plan { spec: plan.spec.clone(), ..header_fields(plan) }
}

/// The plan's own fields, without its VMs or spec (cheap to copy: a step compares them).
pub fn header_fields(plan: &Plan) -> Plan {
    // Every field named, so a new field of `Plan` cannot be forgotten here.
    let Plan {
        plan_id,
        spec: _,
        state,
        counts,
        current_wave,
        created_at,
        updated_at,
        finished_at,
        vms: _,
        reason,
        halted,
        traceparent,
        gates,
        halted_by_gate,
        spec_wave_of,
    } = plan;
    Plan {
        plan_id: plan_id.clone(),
        spec: None,
        state: *state,
        counts: *counts,
        current_wave: *current_wave,
        created_at: *created_at,
        updated_at: *updated_at,
        finished_at: *finished_at,
        vms: Vec::new(),
        reason: reason.clone(),
        halted: *halted,
        traceparent: traceparent.clone(),
        gates: gates.clone(),
        halted_by_gate: *halted_by_gate,
        spec_wave_of: spec_wave_of.clone(),
    }
}

impl std::fmt::Debug for PlanStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("PlanStore").field("cached_plans", &cached).finish()
    }
}

impl PlanStore {
    /// The plan store of `bus`'s plans bucket.
    pub async fn new(bus: &Bus) -> Result<Self, tern_bus::BusError> {
        Ok(Self {
            headers: bus.kv::<StoredPlan>(Bucket::Plans).await?,
            chunks: bus.kv::<VmChunk>(Bucket::Plans).await?,
            cache: Arc::default(),
        })
    }

    fn cached(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn remember(&self, snapshot: Arc<Snapshot>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if crate::service::is_terminal(snapshot.plan.state) {
            // An ended plan is read rarely: keep no copy of it in memory.
            cache.remove(&snapshot.plan.plan_id);
            return;
        }
        match cache.get(&snapshot.plan.plan_id) {
            Some(old) if old.base.revision >= snapshot.base.revision => {}
            _ => {
                cache.insert(snapshot.plan.plan_id.clone(), snapshot);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// The last version of a plan this process read or wrote, without any I/O: possibly
    /// stale, so only a base for a compare-and-set write.
    pub fn last_seen(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.cached(id)
    }

    /// Like [`Self::last_seen`], but takes the version out of the cache, so that a writer
    /// that changes it in place need not copy it. [`Self::update`] or [`Self::keep`] puts the
    /// next version back.
    pub fn take(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Puts an unchanged version back into the cache.
    pub fn keep(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        self.remember(snapshot.clone());
        snapshot
    }

    /// The plan's current header revision (one small read), or `None`.
    pub async fn revision(&self, id: &str) -> Result<Option<Revision>, KvError> {
        Ok(self.headers.get(&header_key(id)).await?.map(|h| h.revision))
    }

    /// The ids of every stored plan.
    pub async fn ids(&self) -> Result<Vec<String>, KvError> {
        let keys = self.headers.keys().await?;
        Ok(keys.into_iter().filter_map(|k| k.strip_prefix("plan.").map(str::to_owned)).collect())
    }

    /// A plan without its VMs (one small read), or `None`.
    pub async fn header(&self, id: &str) -> Result<Option<Plan>, KvError> {
        if let Some(s) = self.cached(id)
            && crate::service::is_terminal(s.plan.state)
        {
            return Ok(Some(without_vms(&s.plan))); // an ended plan never changes again
        }
        Ok(self.headers.get(&header_key(id)).await?.and_then(|h| h.value.plan))
    }

    /// The current version of a plan, or `None`. Reads the header, and only the chunks that
    /// changed since this process last saw the plan.
    pub async fn load(&self, id: &str) -> Result<Option<Arc<Snapshot>>, KvError> {
        let mut attempt = 0;
        loop {
            let Some(header) = self.headers.get(&header_key(id)).await? else {
                self.forget(id);
                return Ok(None);
            };
            let known = self.cached(id);
            if let Some(k) = &known
                && k.base.revision == header.revision
            {
                return Ok(Some(k.clone()));
            }
            match self.assemble(header.value, header.revision, known.as_deref()).await? {
                Some(snapshot) => {
                    let snapshot = Arc::new(snapshot);
                    self.remember(snapshot.clone());
                    return Ok(Some(snapshot));
                }
                // A writer replaced a chunk between our header and chunk reads: read again.
                None if attempt < READ_RETRIES => attempt += 1,
                None => {
                    return Err(KvError::Nats {
                        op: "read",
                        bucket: Bucket::Plans.name().into(),
                        key: header_key(id),
                        source: "the plan's chunks kept changing while being read".into(),
                    });
                }
            }
        }
    }

    /// The plan of `header` with its VMs, reusing the chunks `known` already holds; `None`
    /// when a chunk has gone (replaced by a later version).
    async fn assemble(
        &self,
        header: StoredPlan,
        revision: Revision,
        known: Option<&Snapshot>,
    ) -> Result<Option<Snapshot>, KvError> {
        let reuse = |n: usize, key: &str| -> Option<Vec<VmStatus>> {
            let k = known?;
            (k.base.chunks.get(n).map(String::as_str) == Some(key)).then(|| {
                let start = n * CHUNK_VMS;
                k.plan.vms[start..(start + CHUNK_VMS).min(k.plan.vms.len())].to_vec()
            })
        };
        let parts: Vec<Result<Option<Vec<VmStatus>>, KvError>> =
            futures::stream::iter(header.chunks.clone().into_iter().enumerate())
                .map(|(n, key)| {
                    let cached = reuse(n, &key);
                    async move {
                        match cached {
                            Some(vms) => Ok(Some(vms)),
                            None => Ok(self.chunks.get(&key).await?.map(|c| c.value.vms)),
                        }
                    }
                })
                .buffered(PARALLEL)
                .collect()
                .await;
        let mut plan = header.plan.unwrap_or_default();
        for part in parts {
            match part? {
                Some(vms) => plan.vms.extend(vms),
                None => return Ok(None),
            }
        }
        Ok(Some(Snapshot { plan, base: Base { revision, chunks: header.chunks } }))
    }

    /// Writes chunks `which` of `plan` under fresh keys; returns their keys.
    async fn write_chunks(&self, plan: &Plan, which: &[usize]) -> Result<Vec<String>, KvError> {
        let results: Vec<Result<String, KvError>> = futures::stream::iter(which.to_vec())
            .map(|n| async move {
                let start = n * CHUNK_VMS;
                let vms = plan.vms[start..(start + CHUNK_VMS).min(plan.vms.len())].to_vec();
                let key = chunk_key(&plan.plan_id, n);
                self.chunks.create(&key, &VmChunk { vms }).await?;
                Ok(key)
            })
            .buffered(PARALLEL)
            .collect()
            .await;
        let mut keys = Vec::with_capacity(results.len());
        let mut failure = None;
        for r in results {
            match r {
                Ok(k) => keys.push(k),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            self.delete_chunks(&keys).await;
            return Err(e);
        }
        Ok(keys)
    }

    async fn delete_chunks(&self, keys: &[String]) {
        futures::stream::iter(keys.to_vec())
            .for_each_concurrent(PARALLEL, |k| async move {
                let _ = self.chunks.delete(&k).await;
            })
            .await;
    }

    /// Stores a new plan; fails with `AlreadyExists` if its id is taken.
    pub async fn create(&self, plan: Plan) -> Result<Arc<Snapshot>, KvError> {
        let all: Vec<usize> = (0..plan.vms.len().div_ceil(CHUNK_VMS)).collect();
        let chunks = self.write_chunks(&plan, &all).await?;
        let header = StoredPlan { plan: Some(without_vms(&plan)), chunks: chunks.clone() };
        match self.headers.create(&header_key(&plan.plan_id), &header).await {
            Ok(revision) => {
                let snapshot = Arc::new(Snapshot { plan, base: Base { revision, chunks } });
                self.remember(snapshot.clone());
                Ok(snapshot)
            }
            Err(e) => {
                match self.settle_ambiguous(&plan.plan_id, &e, &chunks).await {
                    Settled::Landed(revision) => {
                        let snapshot = Arc::new(Snapshot { plan, base: Base { revision, chunks } });
                        self.remember(snapshot.clone());
                        return Ok(snapshot);
                    }
                    Settled::NotLanded(orphans) => self.delete_chunks(&orphans).await,
                }
                Err(e)
            }
        }
    }

    /// After a header write that failed: whether it landed after all. A conflict or an existing
    /// key is a clear refusal; a timeout or a lost connection is not — the write may have been
    /// stored with its answer lost. The header is read back: if it names exactly the chunks just
    /// written, the write landed; otherwise only the written chunks it does not name are
    /// orphans. When it cannot be read, nothing is deleted: a chunk left behind wastes a little
    /// space, a chunk deleted under a stored header makes the plan unreadable.
    async fn settle_ambiguous(&self, id: &str, error: &KvError, written: &[String]) -> Settled {
        if matches!(error, KvError::Conflict { .. } | KvError::AlreadyExists { .. }) {
            return Settled::NotLanded(written.to_vec());
        }
        for _ in 0..READ_BACK_ATTEMPTS {
            match self.headers.get(&header_key(id)).await {
                Ok(current) => {
                    let current = current.map(|h| (h.revision, h.value.chunks));
                    return settle(current.as_ref().map(|(r, c)| (*r, c.as_slice())), written);
                }
                Err(e) => tracing::warn!(plan = id, error = %e, "the plan header cannot be read back; trying again"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Settled::NotLanded(Vec::new())
    }

    /// Stores `plan` as the version after `base`, writing only the chunks of the `dirty` VMs
    /// (the caller vouches that no other VM changed). Fails with `Conflict` (and leaves no
    /// trace) if the plan moved on since `base`.
    pub async fn update(&self, base: Base, plan: Plan, dirty: &Dirty) -> Result<Arc<Snapshot>, KvError> {
        let changed = dirty.chunks(plan.vms.len());
        let written = self.write_chunks(&plan, &changed).await?;
        let Base { revision: expected, mut chunks } = base;
        let mut replaced = Vec::with_capacity(changed.len());
        for (n, key) in changed.iter().zip(&written) {
            replaced.push(std::mem::replace(&mut chunks[*n], key.clone()));
        }
        let header = StoredPlan { plan: Some(without_vms(&plan)), chunks: chunks.clone() };
        match self.headers.update(&header_key(&plan.plan_id), &header, expected).await {
            Ok(revision) => {
                self.delete_chunks(&replaced).await;
                let snapshot = Arc::new(Snapshot { plan, base: Base { revision, chunks } });
                self.remember(snapshot.clone());
                Ok(snapshot)
            }
            Err(e) => {
                match self.settle_ambiguous(&plan.plan_id, &e, &chunks).await {
                    Settled::Landed(revision) => {
                        self.delete_chunks(&replaced).await;
                        let snapshot = Arc::new(Snapshot { plan, base: Base { revision, chunks } });
                        self.remember(snapshot.clone());
                        return Ok(snapshot);
                    }
                    Settled::NotLanded(orphans) => {
                        let ours: Vec<String> = written.into_iter().filter(|k| orphans.contains(k)).collect();
                        self.delete_chunks(&ours).await;
                    }
                }
                self.forget(&plan.plan_id);
                Err(e)
            }
        }
    }

    /// Removes a plan and its chunks (a submission withdrawn before anyone saw it).
    pub async fn delete(&self, id: &str) -> Result<(), KvError> {
        let header = self.headers.get(&header_key(id)).await?;
        self.headers.delete(&header_key(id)).await?;
        if let Some(h) = header {
            self.delete_chunks(&h.value.chunks).await;
        }
        self.forget(id);
        Ok(())
    }
}

/// How often a header is read back after an ambiguous write.
const READ_BACK_ATTEMPTS: usize = 5;

/// What became of a header write that failed.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// It was stored, at this revision: the write succeeded.
    Landed(Revision),
    /// It was not (or that cannot be known): these keys, among those it meant to store, no
    /// header names and may be deleted.
    NotLanded(Vec<String>),
}

/// Judges a failed header write from the header read back (`current`: its revision and chunk
/// keys) and the chunk keys the write meant to store (`meant`; for an update, the whole new
/// list — the chunks it kept and the ones it wrote).
fn settle(current: Option<(Revision, &[String])>, meant: &[String]) -> Settled {
    match current {
        Some((revision, chunks)) if chunks == meant => Settled::Landed(revision),
        Some((_, chunks)) => Settled::NotLanded(meant.iter().filter(|k| !chunks.contains(k)).cloned().collect()),
        None => Settled::NotLanded(meant.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_header_write_whose_answer_was_lost_is_judged_by_reading_it_back() {
        let meant = keys(&["c0.new", "c1.kept"]);
        assert_eq!(settle(Some((7, &meant)), &meant), Settled::Landed(7), "it landed: nothing is deleted");
        let before = keys(&["c0.old", "c1.kept"]);
        assert_eq!(
            settle(Some((6, &before)), &meant),
            Settled::NotLanded(keys(&["c0.new"])),
            "it did not: only the chunk no header names goes, never one the stored header still names"
        );
        assert_eq!(settle(None, &meant), Settled::NotLanded(meant.clone()));
    }

    #[test]
    fn a_header_keeps_every_field_but_the_vms() {
        let plan = Plan {
            plan_id: "p".into(),
            state: 3,
            current_wave: 2,
            reason: "r".into(),
            halted: true,
            traceparent: "t".into(),
            vms: vec![VmStatus::default(); 3],
            ..Default::default()
        };
        let header = without_vms(&plan);
        assert!(header.vms.is_empty());
        assert_eq!(Plan { vms: plan.vms.clone(), ..header }, plan);
    }
}
