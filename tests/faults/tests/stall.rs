//! Scenario 3: a failover worker (A) frozen with SIGSTOP while it holds commands, for longer
//! than its ack wait (2 s) and its lease (3 s). A second instance (B) gets the redelivered
//! commands, takes each claim over and finishes them; then A is thawed (SIGCONT). A must learn
//! from its fence that it lost every claim: it finishes nothing, fails nothing, publishes no
//! failure and sends nothing more to Azure.
//!
//! - Frozen mid-job (the scenario proper): thawed once B has finished everything.
//! - Frozen before some of its failover requests (waiting out a 429), thawed while B runs them:
//!   A's late request is refused by Azure, and that refusal must not fail the VM.
//! - The same, thawed after B finished: A must not send the request at all (its claim is
//!   checked immediately before the request leaves).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_asr_sim::{BucketConfig, SimConfig, Span};
use tern_faults::{Expected, Fleet, assert_clean, bin, check, estate, vm_events, vms};
use tern_proto::{Outcome, VmState};
use tern_testkit::Seed;
use tern_testkit::stack::DEADLINE;

const FAILOVER: &str = "tern-failover";

/// How long a failover job runs, in real seconds: long enough that A, frozen up to
/// `FREEZE_WITHIN` after the last one went out, is frozen before any of them ends.
const FAILOVER_SECS: (f64, f64) = (5.0, 7.0);

/// A is frozen at a random point this long after its last failover was accepted.
const FREEZE_WITHIN: Duration = Duration::from_millis(2000);

/// The estate, with failover jobs that run `FAILOVER_SECS` (drawn from `seed`).
fn slow_failovers(vms: usize, seed: &Seed) -> SimConfig {
    let mut c = estate(vms);
    c.seed = seed.value();
    // Sending many failovers takes a while on a loaded machine: the jobs last longer with more VMs,
    // so none ends before the last one went out and A was frozen.
    let (min, max) = FAILOVER_SECS;
    let more = vms as f64 / 20.0;
    c.durations.failover =
        Span { min_secs: (min + more) * c.time_compression, max_secs: (max + more) * c.time_compression };
    c
}

/// Process `i`'s `/metrics`, as text.
async fn scrape(fleet: &Fleet, i: usize) -> String {
    let (status, text) = fleet.stack.worker_http(i, "/metrics").await;
    assert_eq!(status, 200, "/metrics of process {i}");
    text
}

/// The sum of the series of `name` in a scrape whose labels include `labels`.
fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> usize {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let sum: f64 = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels: Vec<&str> = labels.strip_suffix('}')?.split(',').collect();
            (metric == name && want.iter().all(|w| labels.contains(&w.as_str()))).then(|| value.parse::<f64>().ok())?
        })
        .sum();
    sum as usize
}

/// Failover commands finished and acked, by outcome (`succeeded`, `failed`, or "" for both).
/// Commands taken over by another instance are not counted.
fn finished_in(scrape: &str, outcome: &str) -> usize {
    let mut labels = vec![("phase", "failover")];
    if !outcome.is_empty() {
        labels.push(("outcome", outcome));
    }
    metric(scrape, "tern_worker_commands_total", &labels)
}

/// Commands being handled (claimed, not finished yet).
fn in_flight_in(scrape: &str) -> usize {
    metric(scrape, "tern_worker_commands_in_flight", &[])
}

/// Failover commands process `i` finished (see [`finished_in`]).
async fn finished(fleet: &Fleet, i: usize, outcome: &str) -> usize {
    finished_in(&scrape(fleet, i).await, outcome)
}

/// Commands process `i` is handling now.
async fn in_flight(fleet: &Fleet, i: usize) -> usize {
    in_flight_in(&scrape(fleet, i).await)
}

/// `unplannedFailover` requests the simulator accepted.
async fn failovers_accepted(fleet: &Fleet) -> usize {
    fleet.stack.accepted_ops().await.iter().filter(|(op, _)| op == "unplannedFailover").count()
}

/// Mutating requests the simulator refused for another reason than throttling: with a single
/// plan and nothing injected, only a stale worker's second request gets refused.
async fn refused_mutations(fleet: &Fleet) -> Vec<String> {
    let oplog = fleet.stack.admin("oplog").await;
    oplog
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["method"] != "GET" && e["status"].as_u64().is_some_and(|s| s >= 300 && s != 429))
        .map(|e| format!("{} {} → {}", e["operation"], e["item"], e["status"]))
        .collect()
}

/// When A is thawed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Thaw {
    /// Once B finished every command A held.
    AfterTakeover,
    /// As soon as B took over every command A held and every failover was sent (by A or B),
    /// while B waits on their jobs.
    DuringTakeover,
}

/// With A (process `a`) frozen holding `held` commands: starts B, thaws A when `thaw` says,
/// waits for B to finish the commands A held (with their commits) and for A to let go of every
/// command. Returns B.
async fn take_over_then_thaw(fleet: &mut Fleet, a: usize, held: usize, thaw: Thaw) -> usize {
    let b = fleet.stack.spawn(&bin(FAILOVER), &[("TERN_LISTEN", "127.0.0.1:0")]);
    // B gets what A held once the ack wait ran out, takes each claim over once A's lease ran
    // out, attaches to A's jobs (or starts what A had not) and finishes every command.
    let fleet_ref = &*fleet;
    let what = match thaw {
        Thaw::AfterTakeover => "B to finish the commands A held",
        Thaw::DuringTakeover => "B to hold A's commands and send the failovers A had not",
    };
    let ready = tern_testkit::wait_until(what, DEADLINE, || async move {
        match thaw {
            Thaw::AfterTakeover => finished(fleet_ref, b, "succeeded").await >= held,
            Thaw::DuringTakeover => {
                // One scrape: a command leaves the in-flight gauge before it is counted finished.
                let s = scrape(fleet_ref, b).await;
                in_flight_in(&s) + finished_in(&s, "") >= held && failovers_accepted(fleet_ref).await >= held
            }
        }
    })
    .await;
    fleet.stack.signal(a, libc::SIGCONT);
    ready.unwrap_or_else(|e| panic!("{e}"));
    tern_testkit::wait_until("B to finish the commands A held", DEADLINE, || async {
        finished(fleet, b, "succeeded").await >= held
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Thawed, A finds its claims gone on its next fence write and lets every command go.
    tern_testkit::wait_until("A to let go of the commands it held", DEADLINE, || async {
        in_flight(fleet, a).await == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    b
}

/// Whether A, thawed, may have sent a request (refused by Azure) before it found its claim gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StaleRequests {
    /// None may have been sent.
    Forbidden,
    /// Some may have been: only their effect on the plan is checked.
    Tolerated,
}

/// What must hold once the plan ended: the invariants, every VM home, the commands A held
/// finished by B and by B only, no failure published, and (unless tolerated) no request from A
/// after its thaw.
async fn assert_a_did_nothing(
    fleet: &Fleet,
    plan_id: &str,
    n: usize,
    (a, b): (usize, usize),
    held: usize,
    stale: StaleRequests,
) {
    let plan = fleet.finished(plan_id).await;
    assert_clean("SIGSTOP past the ack wait", &check(fleet, &plan, &Expected::default()).await);
    let ok = plan.vms.iter().filter(|v| v.state == VmState::Succeeded as i32).count();
    assert_eq!(ok, n, "every VM came home: {:?} {}", plan.counts, plan.reason);

    assert_eq!(finished(fleet, b, "succeeded").await, held, "B finished every command A held");
    assert_eq!(finished(fleet, b, "failed").await, 0, "B failed none");
    let events = fleet.stack.events(plan_id).await;
    let failures: Vec<String> = vm_events(&events)
        .filter(|e| e.outcome == Outcome::Failed as i32)
        .map(|e| format!("{} {:?}", e.vm.as_ref().map(|v| v.name.as_str()).unwrap_or("?"), e.error))
        .collect();
    assert!(failures.is_empty(), "a stale worker published failures in a plan where every VM succeeded: {failures:?}");
    assert_eq!(finished(fleet, a, "").await, 0, "A, thawed, finished (or failed) none of the {held} commands it lost");
    let refused = refused_mutations(fleet).await;
    if stale == StaleRequests::Tolerated {
        eprintln!("requests A sent after its thaw, refused by Azure: {refused:?}");
    } else {
        assert!(refused.is_empty(), "A, thawed, sent requests for commands it no longer owned: {refused:?}");
    }
}

#[tokio::test]
async fn a_worker_frozen_mid_job_past_its_ack_wait_loses_its_commands_to_another_instance_and_does_nothing_when_thawed()
{
    let seed = Seed::new();
    eprintln!("seed {}", seed.value());
    let mut rng = StdRng::seed_from_u64(seed.value());
    let n = vms(20);
    let mut fleet = Fleet::start(slow_failovers(n, &seed)).await;
    let a = fleet.index[FAILOVER];
    let plan_id = fleet.submit(fleet.spec(n)).await;

    // Every failover command goes to A, the only instance so far; A starts every job, then
    // waits on them. Freeze it at a random point of that wait.
    tern_testkit::wait_until("A to start every failover", DEADLINE, || async { failovers_accepted(&fleet).await >= n })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pause = rng.random_range(Duration::ZERO..FREEZE_WITHIN);
    tokio::time::sleep(pause).await;
    let held = in_flight(&fleet, a).await;
    assert_eq!((held, finished(&fleet, a, "").await), (n, 0), "A holds every failover command and finished none");
    fleet.stack.signal(a, libc::SIGSTOP);
    eprintln!("froze A {pause:?} after its last failover went out, holding {held} commands");

    let b = take_over_then_thaw(&mut fleet, a, held, Thaw::AfterTakeover).await;
    assert_a_did_nothing(&fleet, &plan_id, n, (a, b), held, StaleRequests::Forbidden).await;
}

/// Starts a fleet where A sends half its failovers at once and must wait out a 429 (write
/// tokens come back at `n/4` a second) to send the rest, and freezes A in that wait. Returns
/// the fleet, A, the plan and how many commands A holds.
async fn freeze_before_some_failovers(n: usize, seed: &Seed) -> (Fleet, usize, String, usize) {
    let mut sim = slow_failovers(n, seed);
    let plenty = BucketConfig { capacity: 1e6, refill_per_sec: 1e6 };
    sim.throttle.enabled = true;
    sim.throttle.reads = plenty;
    sim.throttle.deletes = plenty;
    sim.throttle.writes = BucketConfig { capacity: (n / 2) as f64, refill_per_sec: (n as f64 / 4.0).max(1.0) };
    let fleet = Fleet::start(sim).await;
    let a = fleet.index[FAILOVER];
    let plan_id = fleet.submit(fleet.spec(n)).await;
    tern_testkit::wait_until("A to be throttled on a failover", DEADLINE, || async {
        fleet.stack.admin("counters").await["requests"]["throttled"].as_u64().unwrap_or(0) > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let held = in_flight(&fleet, a).await;
    fleet.stack.signal(a, libc::SIGSTOP);
    let sent = failovers_accepted(&fleet).await;
    eprintln!("froze A holding {held} commands, {sent} of whose failovers went out");
    assert!(sent < held, "A was frozen with every failover sent ({sent}/{held}): nothing left to test");
    (fleet, a, plan_id, held)
}

/// A frozen while waiting out a 429 before some of its failovers, and thawed while B runs
/// them: A's delayed failover is refused (another operation is in progress), and A must not
/// report that refusal as the VM's failure — the VM is B's now and succeeds. (Before A checked
/// its claim ahead of reporting a failure, it published `failover failed` for those VMs: the
/// planner failed them, though B failed them over and committed, and halted the plan.)
#[tokio::test]
async fn a_worker_frozen_before_its_failover_post_and_thawed_during_the_takeover_fails_no_vm() {
    let seed = Seed::new();
    let n = vms(4).max(2);
    let (mut fleet, a, plan_id, held) = freeze_before_some_failovers(n, &seed).await;
    let b = take_over_then_thaw(&mut fleet, a, held, Thaw::DuringTakeover).await;
    assert_a_did_nothing(&fleet, &plan_id, n, (a, b), held, StaleRequests::Tolerated).await;
}

/// The same, thawed after the takeover: A must not send the failover it was about to send.
#[tokio::test]
async fn a_worker_frozen_before_its_failover_post_sends_nothing_when_thawed() {
    let seed = Seed::new();
    let n = vms(4).max(2);
    let (mut fleet, a, plan_id, held) = freeze_before_some_failovers(n, &seed).await;
    let b = take_over_then_thaw(&mut fleet, a, held, Thaw::AfterTakeover).await;
    assert_a_did_nothing(&fleet, &plan_id, n, (a, b), held, StaleRequests::Forbidden).await;
}
