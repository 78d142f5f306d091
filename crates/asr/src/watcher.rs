//! Fleet job polling: one watcher per vault follows many in-flight jobs with a few list
//! requests (jobs started since the oldest one tracked, page by page) instead of one GET per
//! job per interval, and fans each job's latest state out to whoever waits on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tracing::{Instrument, Span, debug, warn};

use crate::client::{AsrClient, JobQuery, job_failure};
use crate::error::AsrError;
use crate::model::{Job, JobState};
use crate::observe;

/// Tuning of a [`JobWatcher`].
#[derive(Clone, Debug)]
pub struct WatcherOptions {
    /// Shortest time between two polls.
    pub interval: Duration,
    /// Most list requests per second the watcher may spend; a poll of N pages waits N / this
    /// before the next one.
    pub max_reads_per_sec: f64,
    /// How far before a job's registration its start may lie (clock skew, queueing).
    pub start_slack: Duration,
    /// A tracked job missing from this many polls in a row is fetched on its own.
    pub misses_before_get: u32,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            max_reads_per_sec: 2.0,
            start_slack: Duration::from_secs(300),
            misses_before_get: 3,
        }
    }
}

struct Tracked {
    tx: watch::Sender<Option<Job>>,
    /// Listings start here: the job's start once seen, before that its registration less
    /// `start_slack`.
    since: OffsetDateTime,
    /// When the job was registered here: a poll that began earlier may not show it.
    registered: Instant,
    misses: u32,
}

struct Inner {
    client: AsrClient,
    options: WatcherOptions,
    tracked: Mutex<HashMap<String, Tracked>>,
    wake: Notify,
}

/// Follows in-flight ASR jobs of one vault. Cheap to clone; stops when the last clone drops.
#[derive(Clone)]
pub struct JobWatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWatcher").field("tracked", &self.tracked()).finish()
    }
}

impl JobWatcher {
    /// Starts the watcher's polling task.
    pub fn spawn(client: AsrClient, options: WatcherOptions) -> Self {
        let inner = Arc::new(Inner { client, options, tracked: Mutex::new(HashMap::new()), wake: Notify::new() });
        tokio::spawn(run(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Number of jobs being followed.
    pub fn tracked(&self) -> usize {
        self.inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Follows `job` (name or ARM id): the receiver sees each new state, `None` until the first.
    pub fn watch(&self, job: &str) -> watch::Receiver<Option<Job>> {
        let name = job.trim_end_matches('/').rsplit('/').next().unwrap_or(job).to_ascii_lowercase();
        let mut tracked = self.inner.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match tracked.get(&name) {
            Some(t) => t.tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                let since = OffsetDateTime::now_utc() - self.inner.options.start_slack;
                tracked.insert(name, Tracked { tx, since, registered: Instant::now(), misses: 0 });
                rx
            }
        };
        drop(tracked);
        self.inner.wake.notify_one();
        rx
    }

    /// Waits until `job` ends: the job when it succeeded, `JobFailed` when it failed or was
    /// cancelled. The wait is an `asr.job_wait` span under the caller's span; the watcher's own
    /// list requests go to `asr.job_poll` traces, shared by every waiter.
    pub async fn wait(&self, job: &str) -> Result<Job, AsrError> {
        let name = job.trim_end_matches('/').rsplit('/').next().unwrap_or(job);
        let span = observe::job_wait_span(name);
        let result = self.wait_watching(job, &span).instrument(span.clone()).await;
        observe::job_wait_ended(&span, &result);
        result
    }

    async fn wait_watching(&self, job: &str, span: &Span) -> Result<Job, AsrError> {
        let mut rx = self.watch(job);
        loop {
            if let Some(j) = rx.borrow_and_update().clone() {
                observe::job_seen(span, &j);
                match j.state() {
                    JobState::Succeeded => return Ok(j),
                    JobState::Failed | JobState::Cancelled => return Err(job_failure(&j)),
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(AsrError::Transport {
                    operation: format!("watch job {job}"),
                    message: "the job watcher stopped".into(),
                    timed_out: false,
                });
            }
        }
    }
}

impl Inner {
    /// The time between two reads that keeps the watcher at `max_reads_per_sec`.
    fn read_gap(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.options.max_reads_per_sec.max(0.01))
    }
}

async fn run(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let empty = inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if empty {
            // Sleep until a job is registered (or check now and then whether we were dropped).
            let _ = tokio::time::timeout(Duration::from_secs(1), inner.wake.notified()).await;
            continue;
        }
        let started = Instant::now();
        let tracked = inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).len();
        let span = observe::job_poll_span(tracked);
        poll(&inner, &span).instrument(span.clone()).await;
        // The span ends here, not after the sleep.
        drop(span);
        let wait = inner.options.interval.max(inner.read_gap()).saturating_sub(started.elapsed());
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

async fn poll(inner: &Inner, span: &Span) {
    let began = Instant::now();
    let since = {
        let tracked = inner.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked.values().map(|t| t.since).min()
    };
    let Some(since) = since else { return };
    debug!(%since, "polling jobs");
    // Page by page, newest first, one read per `read_gap`, so the read rate holds over any
    // window. Each page's news goes out at once, and paging stops as soon as every job that was
    // tracked when the poll began has been seen: the jobs we wait for are usually the newest,
    // however many finished jobs the window holds behind them.
    let query = JobQuery { started_after: Some(since), states: vec![] };
    let mut seen = std::collections::HashSet::new();
    let mut next: Option<String> = None;
    let mut pages = 0u32;
    loop {
        match inner.client.list_jobs_page(&query, next.as_deref()).await {
            Ok((page, link)) => {
                pages += 1;
                span.record("tern.asr.pages", pages);
                let all_seen = inner.take_news(page, &mut seen, began);
                next = link.filter(|_| !all_seen);
            }
            Err(e) => {
                warn!(error = %e, "listing jobs failed; will retry");
                return;
            }
        }
        if next.is_none() {
            break;
        }
        tokio::time::sleep(inner.read_gap()).await;
    }
    let mut missing = Vec::new();
    {
        let mut tracked = inner.tracked.lock().unwrap_or_else(|e| e.into_inner());
        for (key, t) in tracked.iter_mut() {
            if !seen.contains(key) && t.registered < began {
                t.misses += 1;
                if t.misses >= inner.options.misses_before_get {
                    missing.push(key.clone());
                }
            }
        }
        // Nobody listens any more: stop following.
        tracked.retain(|_, t| t.tx.receiver_count() > 0);
    }
    for key in missing {
        debug!(job = %key, "job absent from listings; fetching it directly");
        if let Ok(job) = inner.client.get_job(&key).await {
            inner.take_news(vec![job], &mut seen, began);
        }
    }
}

impl Inner {
    /// Hands listed jobs to their waiters; stops following the ones that ended. Returns
    /// whether every job tracked before `began` has now been seen in this poll.
    fn take_news(&self, jobs: Vec<Job>, seen: &mut std::collections::HashSet<String>, began: Instant) -> bool {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs {
            let key = job.name.to_ascii_lowercase();
            if let Some(t) = tracked.get_mut(&key) {
                t.misses = 0;
                // From now on the window starts at the job's own start, on Azure's clock.
                if let Some(start) = job.properties.start_time.as_deref().and_then(crate::model::parse_time) {
                    t.since = start;
                }
                let done = job.state().is_terminal();
                t.tx.send_replace(Some(job));
                if done {
                    tracked.remove(&key);
                }
                seen.insert(key);
            }
        }
        tracked.iter().all(|(key, t)| t.registered >= began || seen.contains(key))
    }
}
