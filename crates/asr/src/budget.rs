//! The ARM request budget: token buckets for reads, writes and deletes per subscription.
//!
//! [`FleetBudget`] keeps each bucket in NATS KV and takes tokens with compare-and-set, so every
//! process of the fleet draws on the same budget (one limiter for the fleet, not one per
//! process). A 429 pauses the bucket for everyone until its `Retry-After`, and the
//! `x-ms-ratelimit-remaining-*` headers pull the bucket down when ARM counts fewer tokens.
//! [`LocalBudget`] is the same bucket for one process; [`Unlimited`] switches it off.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tern_bus::{Bucket, Bus, KvError, TypedKv};

use crate::error::AsrError;

/// Which ARM budget a request draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// GET.
    Read,
    /// PUT, PATCH, POST.
    Write,
    /// DELETE.
    Delete,
}

impl RequestClass {
    /// The class of an HTTP method.
    pub fn of(method: &reqwest::Method) -> Self {
        match *method {
            reqwest::Method::GET | reqwest::Method::HEAD => RequestClass::Read,
            reqwest::Method::DELETE => RequestClass::Delete,
            _ => RequestClass::Write,
        }
    }

    /// Name used in keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            RequestClass::Read => "reads",
            RequestClass::Write => "writes",
            RequestClass::Delete => "deletes",
        }
    }

    /// The `x-ms-ratelimit-remaining-subscription-*` header of this class.
    pub fn remaining_header(self) -> &'static str {
        match self {
            RequestClass::Read => "x-ms-ratelimit-remaining-subscription-reads",
            RequestClass::Write => "x-ms-ratelimit-remaining-subscription-writes",
            RequestClass::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// One bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens when full (the burst).
    pub capacity: f64,
    /// Tokens added per second.
    pub per_second: f64,
}

/// The budget's buckets. Defaults are ARM's documented per-subscription limits; real
/// subscriptions show others, so these are configuration, not constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// GET.
    pub reads: Rate,
    /// PUT/PATCH/POST.
    pub writes: Rate,
    /// DELETE.
    pub deletes: Rate,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            reads: Rate { capacity: 250.0, per_second: 25.0 },
            writes: Rate { capacity: 200.0, per_second: 10.0 },
            deletes: Rate { capacity: 200.0, per_second: 10.0 },
        }
    }
}

impl BudgetConfig {
    /// The rate of a class.
    pub fn rate(&self, class: RequestClass) -> Rate {
        match class {
            RequestClass::Read => self.reads,
            RequestClass::Write => self.writes,
            RequestClass::Delete => self.deletes,
        }
    }
}

/// Something that hands out ARM request tokens.
#[async_trait::async_trait]
pub trait Budget: Send + Sync + fmt::Debug {
    /// Waits until a request of `class` may be sent, and takes its token.
    async fn acquire(&self, class: RequestClass) -> Result<(), AsrError>;
    /// ARM answered 429: nobody sends `class` requests before `retry_after` has passed.
    async fn throttled(&self, class: RequestClass, retry_after: Duration);
    /// ARM says this many `class` tokens remain.
    async fn observe_remaining(&self, class: RequestClass, remaining: u64);
}

/// No limit (benchmarks against a simulator with throttling off).
#[derive(Debug, Default)]
pub struct Unlimited;

#[async_trait::async_trait]
impl Budget for Unlimited {
    async fn acquire(&self, _class: RequestClass) -> Result<(), AsrError> {
        Ok(())
    }
    async fn throttled(&self, _class: RequestClass, _retry_after: Duration) {}
    async fn observe_remaining(&self, _class: RequestClass, _remaining: u64) {}
}

/// A bucket's state (also the KV value of [`FleetBudget`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketState {
    /// Tokens left.
    #[prost(double, tag = "1")]
    pub tokens: f64,
    /// When `tokens` was computed (ms since the Unix epoch).
    #[prost(uint64, tag = "2")]
    pub updated_ms: u64,
    /// Nobody may take a token before this (ms since the Unix epoch), after a 429.
    #[prost(uint64, tag = "3")]
    pub paused_until_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What to do with a bucket now.
enum Step {
    /// Take the token: the new state.
    Take(BucketState),
    /// Wait this long, then look again.
    Wait(Duration),
}

fn refill(state: &BucketState, rate: Rate, now: u64) -> BucketState {
    let dt = now.saturating_sub(state.updated_ms) as f64 / 1000.0;
    BucketState {
        tokens: (state.tokens + dt * rate.per_second).min(rate.capacity),
        updated_ms: now.max(state.updated_ms),
        paused_until_ms: state.paused_until_ms,
    }
}

fn step(state: &BucketState, rate: Rate, now: u64) -> Step {
    if state.paused_until_ms > now {
        return Step::Wait(Duration::from_millis(state.paused_until_ms - now));
    }
    let s = refill(state, rate, now);
    if s.tokens >= 1.0 {
        Step::Take(BucketState { tokens: s.tokens - 1.0, ..s })
    } else {
        let secs = (1.0 - s.tokens) / rate.per_second.max(f64::MIN_POSITIVE);
        Step::Wait(Duration::from_secs_f64(secs).max(Duration::from_millis(1)))
    }
}

fn full(rate: Rate, now: u64) -> BucketState {
    BucketState { tokens: rate.capacity, updated_ms: now, paused_until_ms: 0 }
}

/// A token bucket per class, for this process only.
#[derive(Debug)]
pub struct LocalBudget {
    config: BudgetConfig,
    buckets: Mutex<[Option<BucketState>; 3]>,
}

impl LocalBudget {
    /// Full buckets.
    pub fn new(config: BudgetConfig) -> Self {
        Self { config, buckets: Mutex::new([None, None, None]) }
    }

    fn with<R>(&self, class: RequestClass, f: impl FnOnce(&mut BucketState, Rate, u64) -> R) -> R {
        let rate = self.config.rate(class);
        let now = now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut buckets[class as usize];
        let state = slot.get_or_insert_with(|| full(rate, now));
        f(state, rate, now)
    }
}

#[async_trait::async_trait]
impl Budget for LocalBudget {
    async fn acquire(&self, class: RequestClass) -> Result<(), AsrError> {
        loop {
            let wait = self.with(class, |state, rate, now| match step(state, rate, now) {
                Step::Take(next) => {
                    *state = next;
                    None
                }
                Step::Wait(d) => Some(d),
            });
            match wait {
                None => return Ok(()),
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn throttled(&self, class: RequestClass, retry_after: Duration) {
        self.with(class, |state, rate, now| {
            *state = refill(state, rate, now);
            state.tokens = 0.0;
            state.paused_until_ms = state.paused_until_ms.max(now + retry_after.as_millis() as u64);
        });
    }

    async fn observe_remaining(&self, class: RequestClass, remaining: u64) {
        self.with(class, |state, rate, now| {
            *state = refill(state, rate, now);
            state.tokens = state.tokens.min(remaining as f64);
        });
    }
}

/// The fleet-wide budget: one bucket per (subscription, class) in NATS KV, taken with
/// compare-and-set by every process that uses the same subscription.
pub struct FleetBudget {
    kv: TypedKv<BucketState>,
    config: BudgetConfig,
    subscription: String,
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget").field("subscription", &self.subscription).field("config", &self.config).finish()
    }
}

impl FleetBudget {
    /// The budget of `subscription`, shared through the bus's ARM budget bucket.
    pub async fn new(bus: &Bus, subscription: &str, config: BudgetConfig) -> Result<Self, AsrError> {
        let kv = bus
            .kv::<BucketState>(Bucket::ArmBudget)
            .await
            .map_err(|e| AsrError::InvalidInput(format!("ARM budget bucket: {e}")))?;
        Ok(Self { kv, config, subscription: subscription.to_owned() })
    }

    fn key(&self, class: RequestClass) -> String {
        format!("{}.{}", self.subscription, class.name())
    }

    /// Applies `change` to the bucket with compare-and-set, retrying on conflicts. `change`
    /// returns the new state, or `Err(wait)` to sleep and look again.
    async fn update(
        &self,
        class: RequestClass,
        mut change: impl FnMut(&BucketState, Rate, u64) -> Result<Option<BucketState>, Duration>,
    ) {
        let key = self.key(class);
        let rate = self.config.rate(class);
        loop {
            let now = now_ms();
            let current = match self.kv.get(&key).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "ARM budget unreadable; waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (state, revision) = match &current {
                Some(v) => (v.value.clone(), Some(v.revision)),
                None => (full(rate, now), None),
            };
            let next = match change(&state, rate, now) {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let written = match revision {
                Some(rev) => self.kv.update(&key, &next, rev).await.map(|_| ()),
                None => self.kv.create(&key, &next).await.map(|_| ()),
            };
            match written {
                Ok(()) => return,
                Err(KvError::Conflict { .. } | KvError::AlreadyExists { .. }) => {
                    // Another process took a token in between: look again, after a tiny jitter.
                    tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 2000)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ARM budget write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Budget for FleetBudget {
    async fn acquire(&self, class: RequestClass) -> Result<(), AsrError> {
        self.update(class, |state, rate, now| match step(state, rate, now) {
            Step::Take(next) => Ok(Some(next)),
            Step::Wait(d) => Err(d),
        })
        .await;
        Ok(())
    }

    async fn throttled(&self, class: RequestClass, retry_after: Duration) {
        self.update(class, |state, rate, now| {
            let mut next = refill(state, rate, now);
            next.tokens = 0.0;
            next.paused_until_ms = next.paused_until_ms.max(now + retry_after.as_millis() as u64);
            Ok(Some(next))
        })
        .await;
    }

    async fn observe_remaining(&self, class: RequestClass, remaining: u64) {
        self.update(class, |state, rate, now| {
            let next = refill(state, rate, now);
            // Only ever lower the bucket, and only when ARM is clearly below it.
            if next.tokens > remaining as f64 + 1.0 {
                Ok(Some(BucketState { tokens: remaining as f64, ..next }))
            } else {
                Ok(None)
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_takes_and_waits() {
        let rate = Rate { capacity: 2.0, per_second: 4.0 };
        let s = full(rate, 1_000);
        let Step::Take(s) = step(&s, rate, 1_000) else { panic!("a full bucket gives a token") };
        let Step::Take(s) = step(&s, rate, 1_000) else { panic!("second token") };
        match step(&s, rate, 1_000) {
            Step::Wait(d) => assert_eq!(d, Duration::from_millis(250), "one token per 250 ms"),
            Step::Take(_) => panic!("empty"),
        }
        assert!(matches!(step(&s, rate, 1_250), Step::Take(_)));
        let paused = BucketState { paused_until_ms: 5_000, ..s };
        assert!(matches!(step(&paused, rate, 4_000), Step::Wait(d) if d == Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_local_budget_spaces_requests_at_its_rate() {
        let budget = LocalBudget::new(BudgetConfig {
            writes: Rate { capacity: 1.0, per_second: 20.0 },
            ..BudgetConfig::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..5 {
            budget.acquire(RequestClass::Write).await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(190), "4 refills at 20/s: {:?}", start.elapsed());
        budget.throttled(RequestClass::Read, Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        budget.acquire(RequestClass::Read).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(90), "a 429 pauses the class");
    }
}
