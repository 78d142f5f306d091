//! The ARM request budget: token buckets for reads, writes and deletes per subscription.
//!
//! [`Budget`] is what the client draws on, and [`BucketState`] the arithmetic of one bucket. A
//! 429 pauses the bucket until its `Retry-After`, and the `x-ms-ratelimit-remaining-*` headers
//! pull it down when ARM counts fewer tokens. [`LocalBudget`] keeps the buckets in this process;
//! [`Unlimited`] switches the budget off. The fleet-wide budget, the same buckets shared by every
//! process through NATS KV, is `tern-service`'s `FleetBudget`: this crate knows no bus.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

/// Something that hands out ARM request tokens. ARM keeps its buckets per subscription, so
/// does every budget: a request draws on the subscription its URL names.
#[async_trait::async_trait]
pub trait Budget: Send + Sync + fmt::Debug {
    /// Waits until a request of `class` to `subscription` may be sent, and takes its token.
    async fn acquire(&self, subscription: &str, class: RequestClass) -> Result<(), AsrError>;
    /// ARM answered 429: nobody sends `class` requests to `subscription` before `retry_after`
    /// has passed.
    async fn throttled(&self, subscription: &str, class: RequestClass, retry_after: Duration);
    /// ARM says this many `class` tokens of `subscription` remain.
    async fn observe_remaining(&self, subscription: &str, class: RequestClass, remaining: u64);
}

/// The subscription an ARM URL or path names (`/subscriptions/{id}/…`), lower-cased: ARM
/// compares ids without case. `None`: the URL names none.
pub fn subscription_of(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let at = lower.find("/subscriptions/")? + "/subscriptions/".len();
    let id = lower[at..].split(['/', '?']).next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// No limit (benchmarks against a simulator with throttling off).
#[derive(Debug, Default)]
pub struct Unlimited;

#[async_trait::async_trait]
impl Budget for Unlimited {
    async fn acquire(&self, _subscription: &str, _class: RequestClass) -> Result<(), AsrError> {
        Ok(())
    }
    async fn throttled(&self, _subscription: &str, _class: RequestClass, _retry_after: Duration) {}
    async fn observe_remaining(&self, _subscription: &str, _class: RequestClass, _remaining: u64) {}
}

/// A bucket's state: what [`LocalBudget`] keeps in memory, and what a fleet-wide budget keeps
/// in a shared store. Times are ms since the Unix epoch ([`clock_ms`]), so processes can share
/// a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BucketState {
    /// Tokens left.
    pub tokens: f64,
    /// When `tokens` was computed (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Nobody may take a token before this (ms since the Unix epoch), after a 429.
    pub paused_until_ms: u64,
}

/// The clock of every bucket: ms since the Unix epoch.
pub fn clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl BucketState {
    /// A full bucket at `now` (ms).
    pub fn full(rate: Rate, now: u64) -> Self {
        Self { tokens: rate.capacity, updated_ms: now, paused_until_ms: 0 }
    }

    /// The bucket refilled at `rate` up to `now` (ms).
    pub fn refilled(&self, rate: Rate, now: u64) -> Self {
        let dt = now.saturating_sub(self.updated_ms) as f64 / 1000.0;
        Self {
            tokens: (self.tokens + dt * rate.per_second).min(rate.capacity),
            updated_ms: now.max(self.updated_ms),
            paused_until_ms: self.paused_until_ms,
        }
    }

    /// Takes a token at `now` (ms): the bucket after it, or how long to wait before looking
    /// again (paused after a 429, or empty).
    pub fn take(&self, rate: Rate, now: u64) -> Result<Self, Duration> {
        if self.paused_until_ms > now {
            return Err(Duration::from_millis(self.paused_until_ms - now));
        }
        let s = self.refilled(rate, now);
        if s.tokens >= 1.0 {
            Ok(Self { tokens: s.tokens - 1.0, ..s })
        } else {
            let secs = (1.0 - s.tokens) / rate.per_second.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(secs).max(Duration::from_millis(1)))
        }
    }

    /// After a 429 at `now` (ms): empty, and nobody takes a token before `retry_after` passed.
    pub fn throttled(&self, rate: Rate, now: u64, retry_after: Duration) -> Self {
        let s = self.refilled(rate, now);
        Self { tokens: 0.0, paused_until_ms: s.paused_until_ms.max(now + retry_after.as_millis() as u64), ..s }
    }
}

/// A token bucket per subscription and class, for this process only.
#[derive(Debug)]
pub struct LocalBudget {
    config: BudgetConfig,
    buckets: Mutex<HashMap<(String, RequestClass), BucketState>>,
}

impl LocalBudget {
    /// Full buckets.
    pub fn new(config: BudgetConfig) -> Self {
        Self { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn with<R>(&self, subscription: &str, class: RequestClass, f: impl FnOnce(&mut BucketState, Rate, u64) -> R) -> R {
        let rate = self.config.rate(class);
        let now = clock_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let state = buckets.entry((subscription.to_owned(), class)).or_insert_with(|| BucketState::full(rate, now));
        f(state, rate, now)
    }
}

#[async_trait::async_trait]
impl Budget for LocalBudget {
    async fn acquire(&self, subscription: &str, class: RequestClass) -> Result<(), AsrError> {
        loop {
            let wait = self.with(subscription, class, |state, rate, now| match state.take(rate, now) {
                Ok(next) => {
                    *state = next;
                    None
                }
                Err(d) => Some(d),
            });
            match wait {
                None => return Ok(()),
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn throttled(&self, subscription: &str, class: RequestClass, retry_after: Duration) {
        self.with(subscription, class, |state, rate, now| *state = state.throttled(rate, now, retry_after));
    }

    async fn observe_remaining(&self, subscription: &str, class: RequestClass, remaining: u64) {
        self.with(subscription, class, |state, rate, now| {
            *state = state.refilled(rate, now);
            state.tokens = state.tokens.min(remaining as f64);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_draws_on_the_subscription_its_url_names() {
        let url = "https://management.azure.com/Subscriptions/AB-12/resourceGroups/rg/providers/x?api-version=1";
        assert_eq!(subscription_of(url).as_deref(), Some("ab-12"));
        assert_eq!(subscription_of("/subscriptions/s?api-version=1").as_deref(), Some("s"));
        assert_eq!(subscription_of("https://management.azure.com/providers/x"), None);
    }

    #[test]
    fn the_bucket_refills_takes_and_waits() {
        let rate = Rate { capacity: 2.0, per_second: 4.0 };
        let s = BucketState::full(rate, 1_000);
        let s = s.take(rate, 1_000).expect("a full bucket gives a token");
        let s = s.take(rate, 1_000).expect("second token");
        assert_eq!(s.take(rate, 1_000), Err(Duration::from_millis(250)), "one token per 250 ms");
        assert!(s.take(rate, 1_250).is_ok());
        let paused = s.throttled(rate, 1_250, Duration::from_millis(3_750));
        assert_eq!(paused.tokens, 0.0, "a 429 empties the bucket");
        assert_eq!(paused.take(rate, 4_000), Err(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_local_budget_spaces_requests_at_its_rate() {
        let budget = LocalBudget::new(BudgetConfig {
            writes: Rate { capacity: 1.0, per_second: 20.0 },
            ..BudgetConfig::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..5 {
            budget.acquire("s1", RequestClass::Write).await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(190), "4 refills at 20/s: {:?}", start.elapsed());
        let other = std::time::Instant::now();
        budget.acquire("s2", RequestClass::Write).await.unwrap();
        assert!(other.elapsed() < Duration::from_millis(40), "another subscription has its own bucket");
        budget.throttled("s1", RequestClass::Read, Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        budget.acquire("s1", RequestClass::Read).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(90), "a 429 pauses the class");
    }
}
