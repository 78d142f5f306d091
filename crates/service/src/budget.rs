//! The fleet-wide ARM budget: `tern-asr`'s token buckets kept in NATS KV and taken with
//! compare-and-set, so every process of the fleet draws on the same budget per subscription
//! (one limiter for the fleet, not one per process). A 429 pauses a bucket for everyone.

use std::fmt;
use std::time::Duration;

use tern_asr::budget::clock_ms;
use tern_asr::{AsrError, BucketState, Budget, BudgetConfig, Rate, RequestClass};
use tern_bus::{Bucket, Bus, BusError, KvError, TypedKv};
use tern_proto::ArmBudgetBucket;

/// The fleet-wide budget: one bucket per (subscription, class) in NATS KV, taken with
/// compare-and-set by every process that sends to the same subscription.
pub struct FleetBudget {
    kv: TypedKv<ArmBudgetBucket>,
    config: BudgetConfig,
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget").field("config", &self.config).finish()
    }
}

impl FleetBudget {
    /// The budget of every subscription, shared through the bus's ARM budget bucket.
    pub async fn new(bus: &Bus, config: BudgetConfig) -> Result<Self, BusError> {
        let kv = bus.kv::<ArmBudgetBucket>(Bucket::ArmBudget).await?;
        Ok(Self { kv, config })
    }

    fn key(subscription: &str, class: RequestClass) -> String {
        format!("{}.{}", subscription.to_ascii_lowercase(), class.name())
    }

    /// Applies `change` to the bucket with compare-and-set, retrying on conflicts. `change`
    /// returns the new state, or `Err(wait)` to sleep and look again.
    async fn update(
        &self,
        subscription: &str,
        class: RequestClass,
        mut change: impl FnMut(&BucketState, Rate, u64) -> Result<Option<BucketState>, Duration>,
    ) {
        let key = Self::key(subscription, class);
        let rate = self.config.rate(class);
        loop {
            let now = clock_ms();
            let current = match self.kv.get(&key).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "ARM budget unreadable; waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (state, revision) = match &current {
                Some(v) => (stored(&v.value), Some(v.revision)),
                None => (BucketState::full(rate, now), None),
            };
            let next = match change(&state, rate, now) {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let next = ArmBudgetBucket {
                tokens: next.tokens,
                updated_ms: next.updated_ms,
                paused_until_ms: next.paused_until_ms,
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

/// A bucket as `tern-asr` computes with it, from its KV record.
fn stored(b: &ArmBudgetBucket) -> BucketState {
    BucketState { tokens: b.tokens, updated_ms: b.updated_ms, paused_until_ms: b.paused_until_ms }
}

#[async_trait::async_trait]
impl Budget for FleetBudget {
    async fn acquire(&self, subscription: &str, class: RequestClass) -> Result<(), AsrError> {
        self.update(subscription, class, |state, rate, now| state.take(rate, now).map(Some)).await;
        Ok(())
    }

    async fn throttled(&self, subscription: &str, class: RequestClass, retry_after: Duration) {
        self.update(subscription, class, |state, rate, now| Ok(Some(state.throttled(rate, now, retry_after)))).await;
    }

    async fn observe_remaining(&self, subscription: &str, class: RequestClass, remaining: u64) {
        self.update(subscription, class, |state, rate, now| {
            let next = state.refilled(rate, now);
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
