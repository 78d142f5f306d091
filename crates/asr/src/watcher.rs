//! Fleet job polling: one watcher per vault follows many in-flight jobs with a few list
//! requests (jobs started since the oldest one tracked, page by page) instead of one GET per
//! job per interval, and fans each job's latest state out to whoever waits on it.
//!
//! A list is a summary: each job comes without tasks, errors, custom details and activity id
//! (A2AFailoverCommit-excerpt.json entries 41–141), and a new job's placeholder does not show
//! in it at all. So lists only say what changed; a job seen ended is then read once with a GET
//! (entries 142–143 carry what lists leave out), and that full job is what its waiters get at
//! the end. A waiter can also wait for a job it cannot name yet — the next job of some scenario
//! on some VM, such as the `SecondaryIrCompletion` that ends a reprotect's initial replication
//! ([`JobWatcher::expect`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tracing::{Instrument, Span, debug, warn};

use crate::client::{AsrClient, JobQuery, job_failure};
use crate::error::AsrError;
use crate::model::{Job, JobState};
use crate::observe;

/// Ended jobs read in full at once by one poll.
const FULL_READS_AT_ONCE: usize = 32;

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
    /// A waiter needs the job in full when it succeeded (a failed job is always read in full,
    /// for its errors).
    details: bool,
    /// Listings start here: the job's start once seen, before that its registration less
    /// `start_slack`.
    since: OffsetDateTime,
    /// When the job was registered here: a poll that began earlier may not show it.
    registered: Instant,
    misses: u32,
}

/// A job expected by target and scenario, not yet known by name.
struct Expected {
    tx: watch::Sender<Option<Job>>,
    /// No job started before this can be the one (moves forward as polls cover the window).
    since: OffsetDateTime,
    registered: Instant,
    /// The job, once a listing showed it.
    job: Option<String>,
}

struct Inner {
    client: AsrClient,
    options: WatcherOptions,
    tracked: Mutex<HashMap<String, Tracked>>,
    /// (target lower case, scenario lower case) → the expectation.
    expected: Mutex<HashMap<(String, String), Expected>>,
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
        let inner = Arc::new(Inner {
            client,
            options,
            tracked: Mutex::new(HashMap::new()),
            expected: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        tokio::spawn(run(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Number of jobs being followed.
    pub fn tracked(&self) -> usize {
        self.inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.inner.expected.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits for the next job of `scenario` (e.g. `SecondaryIrCompletion`) on the VM named
    /// `target`, started at or after `since` by Azure's clock: the receiver sees it as lists
    /// show it and, once it ended, in full (one GET). Jobs are matched by target and scenario,
    /// case-insensitively.
    pub fn expect(&self, target: &str, scenario: &str, since: OffsetDateTime) -> watch::Receiver<Option<Job>> {
        let key = (target.to_ascii_lowercase(), scenario.to_ascii_lowercase());
        let mut expected = self.inner.expected.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match expected.get(&key) {
            Some(e) => e.tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                let since = since - self.inner.options.start_slack;
                expected.insert(key, Expected { tx, since, registered: Instant::now(), job: None });
                rx
            }
        };
        drop(expected);
        self.inner.wake.notify_one();
        rx
    }

    /// Follows `job` (name or ARM id): the receiver sees each new state, `None` until the first,
    /// and the job read in full (one GET) once it ended.
    pub fn watch(&self, job: &str) -> watch::Receiver<Option<Job>> {
        self.follow(job, true)
    }

    /// As [`Self::watch`], but a job that succeeded is handed over as the list showed it: only a
    /// failed or cancelled one is read in full (for its errors). For waiters that need nothing
    /// of a successful job but its state, so it costs no read.
    pub fn watch_state(&self, job: &str) -> watch::Receiver<Option<Job>> {
        self.follow(job, false)
    }

    fn follow(&self, job: &str, details: bool) -> watch::Receiver<Option<Job>> {
        let name = job.trim_end_matches('/').rsplit('/').next().unwrap_or(job).to_ascii_lowercase();
        let mut tracked = self.inner.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match tracked.get_mut(&name) {
            Some(t) => {
                t.details |= details;
                t.tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(None);
                let since = OffsetDateTime::now_utc() - self.inner.options.start_slack;
                tracked.insert(name, Tracked { tx, details, since, registered: Instant::now(), misses: 0 });
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
        let empty = inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            && inner.expected.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if empty {
            // Sleep until a job is registered (or check now and then whether we were dropped).
            let _ = tokio::time::timeout(Duration::from_secs(1), inner.wake.notified()).await;
            continue;
        }
        let started = Instant::now();
        let tracked = inner.tracked.lock().unwrap_or_else(|e| e.into_inner()).len()
            + inner.expected.lock().unwrap_or_else(|e| e.into_inner()).len();
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
    let began_wall = OffsetDateTime::now_utc();
    let since = {
        let tracked = inner.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let expected = inner.expected.lock().unwrap_or_else(|e| e.into_inner());
        tracked.values().map(|t| t.since).chain(expected.values().map(|e| e.since)).min()
    };
    let Some(since) = since else { return };
    debug!(%since, "polling jobs");
    // Page by page, newest first, one read per `read_gap`, so the read rate holds over any
    // window. Each page's news goes out at once, and paging stops as soon as every job that was
    // tracked when the poll began has been seen and every expected job has been seen or could
    // only lie on later pages than its window: the jobs we wait for are usually the newest,
    // however many finished jobs the window holds behind them.
    let query = JobQuery { started_after: Some(since), states: vec![] };
    let mut seen = std::collections::HashSet::new();
    let mut ended = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0u32;
    let mut covered_all = false;
    // Lists leave out what waiters need at the end: each job seen ended is read once, in full,
    // as soon as its page is in — several at a time, since a fleet's jobs end together (the ARM
    // budget paces them) — while the watcher waits to read the next page.
    let mut dispatched = 0usize;
    loop {
        match inner.client.list_jobs_page(&query, next.as_deref()).await {
            Ok((page, link)) => {
                pages += 1;
                span.record("tern.asr.pages", pages);
                let oldest = page
                    .iter()
                    .filter_map(|j| j.properties.start_time.as_deref().and_then(crate::model::parse_time))
                    .min();
                let all_seen = inner.take_news(page, &mut seen, &mut ended, began, oldest);
                covered_all = link.is_none() || all_seen;
                next = link.filter(|_| !all_seen);
            }
            Err(e) => {
                warn!(error = %e, "listing jobs failed; will retry");
                next = None;
            }
        }
        let full_reads = inner.deliver_all_full(ended[dispatched..].to_vec());
        dispatched = ended.len();
        if next.is_none() {
            full_reads.await;
            break;
        }
        tokio::join!(full_reads, tokio::time::sleep(inner.read_gap()));
    }
    if covered_all {
        // Every job started before this poll began (less the slack) was listed now: an
        // expected job that did not show cannot have started before then.
        let mut expected = inner.expected.lock().unwrap_or_else(|e| e.into_inner());
        for e in expected.values_mut() {
            if e.job.is_none() && e.registered < began {
                e.since = e.since.max(began_wall - inner.options.start_slack);
            }
        }
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
        inner.expected.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, e| e.tx.receiver_count() > 0);
    }
    for key in missing {
        debug!(job = %key, "job absent from listings; fetching it directly");
        if let Ok(job) = inner.client.get_job(&key).await {
            if job.state().is_terminal() {
                inner.deliver(job);
            } else {
                let mut ended = Vec::new();
                inner.take_news(vec![job], &mut seen, &mut ended, began, None);
            }
        }
    }
}

impl Inner {
    /// Hands listed jobs to their waiters; notes (in `ended`) the ones seen ended, which are
    /// read in full before their waiters hear of it. `oldest`: the earliest start on the page.
    /// Returns whether every job tracked before `began` has now been seen in this poll and every
    /// expectation registered before then is settled for this poll (seen, or the page already
    /// older than its window).
    fn take_news(
        &self,
        jobs: Vec<Job>,
        seen: &mut std::collections::HashSet<String>,
        ended: &mut Vec<String>,
        began: Instant,
        oldest: Option<OffsetDateTime>,
    ) -> bool {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs {
            let key = job.name.to_ascii_lowercase();
            let expectation = match (job.target_name(), job.scenario()) {
                (Some(t), Some(s)) => {
                    let k = (t.to_ascii_lowercase(), s.to_ascii_lowercase());
                    let start = job.properties.start_time.as_deref().and_then(crate::model::parse_time);
                    expected.get(&k).filter(|e| start.is_none_or(|st| st >= e.since)).map(|_| k)
                }
                _ => None,
            };
            if let Some(k) = expectation
                && !tracked.contains_key(&key)
            {
                // From now on the job is followed by name, for whoever expects it.
                let e = expected.get_mut(&k).expect("just found");
                e.job = Some(key.clone());
                let since = job.properties.start_time.as_deref().and_then(crate::model::parse_time).unwrap_or(e.since);
                let tx = e.tx.clone();
                tracked.insert(key.clone(), Tracked { tx, details: false, since, registered: began, misses: 0 });
                expected.remove(&k);
            }
            if let Some(t) = tracked.get_mut(&key) {
                t.misses = 0;
                // From now on the window starts at the job's own start, on Azure's clock.
                if let Some(start) = job.properties.start_time.as_deref().and_then(crate::model::parse_time) {
                    t.since = start;
                }
                if job.state() == JobState::Succeeded && !t.details {
                    // Nothing more is needed of it: the summary is the answer.
                    t.tx.send_replace(Some(job));
                    tracked.remove(&key);
                    seen.insert(key);
                    continue;
                } else if job.state().is_terminal() {
                    if !ended.contains(&key) {
                        ended.push(key.clone());
                    }
                } else if t.tx.borrow().as_ref() != Some(&job) {
                    t.tx.send_replace(Some(job));
                }
                seen.insert(key);
            }
        }
        let jobs_seen = tracked.iter().all(|(key, t)| t.registered >= began || seen.contains(key));
        let expectations_settled =
            expected.values().all(|e| e.registered >= began || oldest.is_some_and(|o| o < e.since));
        jobs_seen && expectations_settled
    }

    /// [`Self::deliver_full`] for each of `names`, [`FULL_READS_AT_ONCE`] at a time.
    async fn deliver_all_full(&self, names: Vec<String>) {
        futures::stream::iter(names)
            .for_each_concurrent(FULL_READS_AT_ONCE, |name| async move { self.deliver_full(&name).await })
            .await;
    }

    /// Reads an ended job in full and hands it to its waiters (who then stop following it).
    /// A failed read leaves it followed: the next poll sees it ended again and reads again.
    async fn deliver_full(&self, name: &str) {
        match self.client.get_job(name).await {
            Ok(job) if job.state().is_terminal() => self.deliver(job),
            Ok(job) => {
                debug!(job = %job.name, state = %job.state(), "a job listed as ended reads as running; following it")
            }
            Err(e) => debug!(job = name, error = %e, "an ended job could not be read in full yet; will read it again"),
        }
    }

    fn deliver(&self, job: Job) {
        let key = job.name.to_ascii_lowercase();
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tracked.remove(&key) {
            t.tx.send_replace(Some(job));
        }
    }
}
