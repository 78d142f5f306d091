//! ARM's per-subscription token buckets for reads, writes and deletes.
//!
//! Each request takes one token from its class's bucket; an empty bucket answers 429 with the
//! seconds until a token is back. Buckets refill in real time: the ARM budget is a real-world
//! limit even when the estate's clock is compressed.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which budget a request draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    pub fn of(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => RequestClass::Read,
            "DELETE" => RequestClass::Delete,
            _ => RequestClass::Write,
        }
    }

    /// The suffix of its `x-ms-ratelimit-remaining-subscription-*` header.
    pub fn header(self) -> &'static str {
        match self {
            RequestClass::Read => "x-ms-ratelimit-remaining-subscription-reads",
            RequestClass::Write => "x-ms-ratelimit-remaining-subscription-writes",
            RequestClass::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// Size and refill rate of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Tokens when full.
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

/// The three buckets' settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Off: every request passes and headers show full buckets.
    pub enabled: bool,
    /// GET budget (ARM default 250 @ 25/s).
    pub reads: BucketConfig,
    /// PUT/PATCH/POST budget (ARM default 200 @ 10/s).
    pub writes: BucketConfig,
    /// DELETE budget (ARM default 200 @ 10/s).
    pub deletes: BucketConfig,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reads: BucketConfig { capacity: 250.0, refill_per_sec: 25.0 },
            writes: BucketConfig { capacity: 200.0, refill_per_sec: 10.0 },
            deletes: BucketConfig { capacity: 200.0, refill_per_sec: 10.0 },
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    config: BucketConfig,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(config: BucketConfig) -> Self {
        Self { config, tokens: config.capacity, last: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.config.refill_per_sec).min(self.config.capacity);
        self.last = now;
    }
}

/// Outcome of taking a token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    /// Admitted; this many tokens are left.
    Admitted { remaining: u64 },
    /// Throttled; retry after this many seconds.
    Throttled { retry_after_secs: u64 },
}

/// The subscription's buckets.
#[derive(Debug, Clone)]
pub struct Throttle {
    enabled: bool,
    reads: Bucket,
    writes: Bucket,
    deletes: Bucket,
}

impl Throttle {
    /// Full buckets.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            enabled: config.enabled,
            reads: Bucket::new(config.reads),
            writes: Bucket::new(config.writes),
            deletes: Bucket::new(config.deletes),
        }
    }

    fn bucket(&mut self, class: RequestClass) -> &mut Bucket {
        match class {
            RequestClass::Read => &mut self.reads,
            RequestClass::Write => &mut self.writes,
            RequestClass::Delete => &mut self.deletes,
        }
    }

    /// Takes one token for a request of `class`.
    pub fn admit(&mut self, class: RequestClass, now: Instant) -> Admission {
        let enabled = self.enabled;
        let b = self.bucket(class);
        b.refill(now);
        if !enabled {
            return Admission::Admitted { remaining: b.config.capacity as u64 };
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admission::Admitted { remaining: b.tokens.floor() as u64 }
        } else {
            let wait = (1.0 - b.tokens) / b.config.refill_per_sec.max(f64::MIN_POSITIVE);
            Admission::Throttled { retry_after_secs: wait.ceil().max(1.0) as u64 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_counts_down_then_throttles_then_refills() {
        let cfg =
            ThrottleConfig { writes: BucketConfig { capacity: 3.0, refill_per_sec: 1.0 }, ..ThrottleConfig::default() };
        let mut t = Throttle::new(cfg);
        let t0 = Instant::now();
        let seen: Vec<_> = (0..4).map(|_| t.admit(RequestClass::Write, t0)).collect();
        assert_eq!(
            seen,
            vec![
                Admission::Admitted { remaining: 2 },
                Admission::Admitted { remaining: 1 },
                Admission::Admitted { remaining: 0 },
                Admission::Throttled { retry_after_secs: 1 },
            ]
        );
        assert_eq!(t.admit(RequestClass::Write, t0 + Duration::from_secs(1)), Admission::Admitted { remaining: 0 });
        assert_eq!(
            t.admit(RequestClass::Read, t0),
            Admission::Admitted { remaining: 249 },
            "reads have their own bucket"
        );
    }
}
