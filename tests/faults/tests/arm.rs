//! Scenario 4: ARM misbehaves in the middle of a plan. Faults are switched on at run time with
//! `PUT /_sim/faults`, in a window per round:
//!
//! a 429 storm (reads and writes, `Retry-After: 1`) and latency spikes, while 429s and then a
//! burst of 503s (answered *before* anything is applied) are aimed at the next few writes, and
//! the answers to the next few applied writes are dropped *after* Azure applied them (the
//! connection hangs past the workers' request timeout);
//!
//! then calm. Workers wait out every `Retry-After`, settle every lost answer from Azure's state
//! (the item's current scenario, its recent jobs) instead of sending the request again, and treat
//! a 5xx as "not done, try later". The plan ends with every VM home, and Azure saw each side
//! effect accepted exactly once and never sent again afterwards (`tern_faults::check`).
//!
//! The faults aimed at writes are counted down by the simulator (`throttle_next_writes`,
//! `fail_next_writes`, `drop_next_writes`), so each window ends when exactly its faults have
//! landed: drawn by rate per request, they could miss writes entirely.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
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

/// What the faults hit so far, from the simulator's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Mutating requests answered 429 by `throttle_next_writes` (nothing applied).
    throttled_writes: u64,
    /// Mutating requests answered 503 by `fail_next_writes` (nothing applied).
    failed_writes: u64,
    /// Mutating requests applied whose answer never came (`drop_next_writes`).
    dropped: u64,
    /// Requests, reads included, answered 429 by the storm.
    storm: u64,
}

async fn tally(fleet: &Fleet) -> Tally {
    let counters = &fleet.stack.admin("counters").await["requests"];
    let n = |k: &str| counters[k].as_u64().unwrap_or(0);
    Tally {
        throttled_writes: n("next_writes_throttled"),
        failed_writes: n("next_writes_failed"),
        dropped: n("next_writes_dropped"),
        storm: n("storm_throttled"),
    }
}

/// Keeps the faults on until `landed` holds: the simulator aims them at the next writes, so
/// they land as soon as the plan sends that many. Returns what landed, and whether all of it did
/// (a plan that ended first had too few writes left).
async fn window(fleet: &Fleet, plan_id: &str, what: &str, landed: impl Fn(&Tally) -> bool) -> (Tally, bool) {
    tern_testkit::wait_until(what, WINDOW, || async { landed(&tally(fleet).await) || ended(fleet, plan_id).await })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let now = tally(fleet).await;
    let all = landed(&now);
    (now, all)
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

    let mut want = Tally::default();
    for round in 0..rounds(1) as u64 {
        if ended(&fleet, &plan_id).await {
            break;
        }
        // Early enough that the plan has writes left for every fault of the round.
        tern_faults::progress(&fleet, &plan_id, rng.random_range(1..=n.div_ceil(4))).await;
        let (throttle, fail, drop) = (rng.random_range(2..=4), rng.random_range(2..=4), rng.random_range(2..=3));
        want.throttled_writes += throttle;
        want.failed_writes += fail;
        want.dropped += drop;
        // One window for all of them: the simulator aims them at the next writes in order (429s,
        // then 503s; dropped answers at the next applied ones), so they land within the next
        // few writes the plan sends, however bunched its writes are.
        fleet
            .set_faults(json!({
                "seed": seed.value().wrapping_add(round),
                "throttle_storm_rate": rng.random_range(0.2..0.4),
                "throttle_storm_retry_after_secs": STORM_RETRY_AFTER_SECS,
                "throttle_next_writes": throttle,
                "fail_next_writes": fail,
                "drop_next_writes": drop,
                "drop_response_hang_secs": HANG_SECS,
                "latency_spike_rate": 0.05,
                "latency_spike_ms": 300,
            }))
            .await;
        let (now, all) = window(&fleet, &plan_id, "429s, 503s and lost answers to land on writes", |t| {
            t.throttled_writes >= want.throttled_writes
                && t.failed_writes >= want.failed_writes
                && t.dropped >= want.dropped
        })
        .await;
        fleet.set_faults(json!({})).await;
        if !all {
            // The first round must land whole; a later one may meet a plan with too few writes
            // left (the soak's long rounds), and then counts what landed.
            assert!(round > 0, "the plan ended before the first round's faults landed on writes: {now:?}");
            want = Tally { storm: want.storm, ..tally(&fleet).await };
            break;
        }
    }

    let plan = fleet.finished(&plan_id).await;
    assert_clean("ARM storms, 5xx bursts and lost answers", &check(&fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?}", plan.counts);

    let hit = tally(&fleet).await;
    eprintln!("faults that landed: {hit:?}");
    assert_eq!(
        (hit.throttled_writes, hit.failed_writes, hit.dropped),
        (want.throttled_writes, want.failed_writes, want.dropped),
        "every fault the scenario injected landed on a write, and no more"
    );
    assert!(hit.storm > 0, "the storm blew: {hit:?}");
    let early = impatient(&fleet).await;
    assert!(early.is_empty(), "{} requests ignored Retry-After:\n  {}", early.len(), early.join("\n  "));
}
