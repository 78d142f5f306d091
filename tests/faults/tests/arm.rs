//! Scenario 4: ARM misbehaves in the middle of a plan. Faults are switched on at run time with
//! `PUT /_sim/faults`, in windows:
//!
//! 1. a 429 storm (reads and writes, `Retry-After: 1`), latency spikes, and responses dropped
//!    *after* Azure applied the request (the connection hangs past the workers' request timeout);
//! 2. a burst of 500/503 answered *before* anything is applied, with the storm still blowing;
//!
//! then calm. Workers wait out every `Retry-After`, settle every lost answer from Azure's state
//! (the item's current scenario, its recent jobs) instead of sending the request again, and treat
//! a 5xx as "not done, try later". The plan ends with every VM home, and Azure saw each side
//! effect accepted exactly once and never sent again afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tern_faults::{Expected, Fleet, assert_clean, check, estate, rounds, vms};
use tern_proto::VmState;
use tern_testkit::Seed;

/// How long a service waits for one ARM answer (seconds). The default, 60 s, would make each
/// dropped response cost a minute; a real deployment sees the same thing, only slower.
const REQUEST_TIMEOUT_SECS: &str = "1.5";
/// How long a dropped response hangs: past the request timeout, so the client gives up on it.
const HANG_SECS: u64 = 4;
/// The `Retry-After` of a storm 429, seconds.
const STORM_RETRY_AFTER_SECS: u64 = 1;
/// How long a fault window may take to land its faults.
const WINDOW: Duration = Duration::from_secs(60);

async fn ended(fleet: &Fleet, plan_id: &str) -> bool {
    fleet.plan(plan_id).await.is_some_and(|p| p.finished_at.is_some())
}

/// One mutating request as the simulator's operation log has it.
#[derive(Debug, Clone)]
struct Op {
    method: String,
    path: String,
    operation: String,
    item: String,
    status: u64,
}

impl Op {
    /// What "the same side effect" means: an ASR action per protected item (switchProtection is
    /// posted to the container and names its item in the body), a delete per resource.
    fn key(&self) -> (String, String) {
        let target = if self.method == "DELETE" { &self.path } else { &self.item };
        (self.operation.clone(), target.to_lowercase())
    }

    fn applied(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

async fn oplog(fleet: &Fleet) -> Vec<Op> {
    let log = fleet.stack.admin("oplog").await;
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    log.as_array()
        .into_iter()
        .flatten()
        .map(|e| Op {
            method: text(e, "method"),
            path: text(e, "path"),
            operation: text(e, "operation"),
            item: text(e, "item"),
            status: e["status"].as_u64().unwrap_or(0),
        })
        .filter(|op| op.method != "GET")
        .collect()
}

/// What the faults hit so far.
#[derive(Debug, Default)]
struct Tally {
    /// Mutating requests answered 429 by the storm (nothing applied).
    throttled_writes: usize,
    /// Mutating requests answered 5xx (nothing applied).
    failed_writes: usize,
    /// Mutating requests applied whose answer never came.
    dropped: u64,
    /// Every request answered 429 by the storm.
    storm: u64,
}

async fn tally(fleet: &Fleet) -> Tally {
    let ops = oplog(fleet).await;
    let counters = &fleet.stack.admin("counters").await["requests"];
    Tally {
        throttled_writes: ops.iter().filter(|o| o.status == 429).count(),
        failed_writes: ops.iter().filter(|o| o.status >= 500).count(),
        dropped: counters["dropped_responses"].as_u64().unwrap_or(0),
        storm: counters["storm_throttled"].as_u64().unwrap_or(0),
    }
}

/// Keeps the faults on until `landed` holds (or the plan ended: nothing left to hit).
async fn window(fleet: &Fleet, plan_id: &str, what: &str, landed: impl Fn(&Tally) -> bool) {
    tern_testkit::wait_until(what, WINDOW, || async { landed(&tally(fleet).await) || ended(fleet, plan_id).await })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Side effects sent again after Azure accepted them: per side effect, anything after its first
/// 2xx — even a request Azure refused — is a second send. (Requests answered 429 or 5xx were not
/// applied, and sending them again is what a client should do.)
fn resent(ops: &[Op]) -> Vec<String> {
    let mut by_key: BTreeMap<(String, String), Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key()).or_default().push(op);
    }
    let mut bad = Vec::new();
    for ((operation, target), sent) in by_key {
        if let Some(first) = sent.iter().position(|o| o.applied())
            && sent.len() > first + 1
        {
            let after: Vec<u64> = sent[first + 1..].iter().map(|o| o.status).collect();
            bad.push(format!("{operation} of {target} was sent again after Azure accepted it (answered {after:?})"));
        }
    }
    bad
}

/// Requests that went out before the `Retry-After` of the 429 that answered their previous try.
async fn impatient(fleet: &Fleet) -> Vec<String> {
    let log = fleet.stack.admin("requests").await;
    let mut by_request: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    for r in log.as_array().into_iter().flatten() {
        let (method, path) = (r["method"].as_str().unwrap_or(""), r["path"].as_str().unwrap_or(""));
        // Reads of one URL come from many pollers, and switchProtection of every item of a
        // container shares one URL: only item actions and deletes have a URL of their own.
        if method == "GET" || path.to_ascii_lowercase().ends_with("/switchprotection") {
            continue;
        }
        let at = (r["t_ms"].as_u64().unwrap_or(0), r["status"].as_u64().unwrap_or(0));
        by_request.entry((method.to_owned(), path.to_lowercase())).or_default().push(at);
    }
    let mut bad = Vec::new();
    for ((method, path), tries) in by_request {
        for pair in tries.windows(2) {
            let gap = pair[1].0.saturating_sub(pair[0].0);
            if pair[0].1 == 429 && gap < STORM_RETRY_AFTER_SECS * 1000 {
                bad.push(format!(
                    "{method} {path} went out {gap} ms after a 429 that asked for {STORM_RETRY_AFTER_SECS} s"
                ));
            }
        }
    }
    bad
}

#[tokio::test]
async fn throttling_storms_5xx_bursts_and_lost_answers_mid_plan_never_repeat_a_side_effect() {
    let seed = Seed::new();
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let fleet = Fleet::start_with(estate(n), &[("TERN_ASR__REQUEST_TIMEOUT", REQUEST_TIMEOUT_SECS)]).await;
    let plan_id = fleet.submit(fleet.spec(n)).await;

    for round in 0..rounds(1) as u64 {
        if ended(&fleet, &plan_id).await {
            break;
        }
        tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n)).await;
        let before = tally(&fleet).await;
        fleet
            .set_faults(json!({
                "seed": seed.value().wrapping_add(round),
                "throttle_storm_rate": rng.random_range(0.2..0.4),
                "throttle_storm_retry_after_secs": STORM_RETRY_AFTER_SECS,
                "drop_response_rate": rng.random_range(0.2..0.4),
                "drop_response_hang_secs": HANG_SECS,
                "latency_spike_rate": 0.05,
                "latency_spike_ms": 300,
            }))
            .await;
        window(&fleet, &plan_id, "a 429 storm and lost answers to land on writes", |t| {
            t.throttled_writes >= before.throttled_writes + 2 && t.dropped >= before.dropped + 2
        })
        .await;

        let before = tally(&fleet).await;
        fleet
            .set_faults(json!({
                "seed": seed.value().wrapping_add(round).rotate_left(7),
                "transient_5xx_rate": rng.random_range(0.3..0.5),
                "throttle_storm_rate": 0.1,
                "throttle_storm_retry_after_secs": STORM_RETRY_AFTER_SECS,
            }))
            .await;
        // A burst, not an outage: a handful of failed writes, then calm. (Each failed write
        // costs its command one delivery attempt; see the report on long outages.)
        window(&fleet, &plan_id, "a burst of 5xx to land on writes", |t| t.failed_writes >= before.failed_writes + 3)
            .await;
        fleet.set_faults(json!({})).await;
    }

    let plan = fleet.finished(&plan_id).await;
    assert_clean("ARM storms, 5xx bursts and lost answers", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);

    let hit = tally(&fleet).await;
    eprintln!("faults that landed: {hit:?}");
    assert!(
        hit.throttled_writes > 0 && hit.failed_writes > 0 && hit.dropped > 0 && hit.storm > 0,
        "the faults landed on writes: {hit:?}"
    );
    let ops = oplog(&fleet).await;
    let again = resent(&ops);
    assert!(again.is_empty(), "{} side effects sent twice:\n  {}", again.len(), again.join("\n  "));
    let early = impatient(&fleet).await;
    assert!(early.is_empty(), "{} requests ignored Retry-After:\n  {}", early.len(), early.join("\n  "));
}
