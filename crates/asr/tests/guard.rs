//! A side effect's guard: asked immediately before the request leaves, after every wait, so a
//! sender that lost the right to send (a worker whose claim was taken over while it waited out
//! a 429) sends nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{client_config, sim_config, start_sim};
use serde_json::Value;
use tern_asr::client::{AsrClient, FailoverDirection, Sending, request_key};
use tern_asr::{AsrError, ErrorClass, SendGuard, TokenProvider, Unlimited};
use tern_asr_sim::RunningSimulator;

/// Lets the first `open_for` sends go, refuses every later one, and counts how often it was asked.
#[derive(Debug)]
struct Gate {
    open_for: usize,
    asked: AtomicUsize,
}

impl Gate {
    fn new(open_for: usize) -> Self {
        Self { open_for, asked: AtomicUsize::new(0) }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl SendGuard for Gate {
    async fn may_send(&self) -> Result<(), String> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        if n < self.open_for { Ok(()) } else { Err("another worker took the command over".into()) }
    }
}

async fn admin(sim: &RunningSimulator, path: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{}/_sim/{path}", sim.url())).await.unwrap().json().await.unwrap()
}

/// Mutating requests that reached the simulator, whatever it answered.
async fn mutations(sim: &RunningSimulator) -> Vec<Value> {
    let log = admin(sim, "requests").await;
    log.as_array().unwrap().iter().filter(|r| r["method"] != "GET").cloned().collect()
}

fn key(what: &str) -> String {
    request_key(&["guard-test", what, &rand::random::<u64>().to_string()])
}

#[tokio::test]
async fn a_refusing_guard_keeps_the_side_effect_unsent_and_an_allowing_one_lets_it_go() {
    let sim = start_sim(sim_config(2)).await;
    let c = AsrClient::new(client_config(&sim), TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    let vm = c.find_item_by_vm_name("vm-00001", None).await.unwrap().unwrap();

    let closed = Gate::new(0);
    let (k1, k2) = (key("closed"), key("open"));
    let err = c
        .unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, Sending::guarded(&k1, &closed))
        .await
        .unwrap_err();
    assert!(matches!(err, AsrError::NotSent { .. }), "{err:?}");
    assert!(err.to_string().contains("another worker took the command over"), "{err}");
    assert_eq!(err.class(), ErrorClass::Retryable, "nothing went out: whoever may still send can try again");
    assert!(!err.is_ambiguous(), "nothing went out, so nothing is to be looked for");
    assert!(mutations(&sim).await.is_empty(), "no request reached Azure");

    let open = Gate::new(1);
    let sub = c
        .unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, Sending::guarded(&k2, &open))
        .await
        .unwrap();
    assert!(sub.job.is_some());
    assert_eq!((open.asked(), mutations(&sim).await.len()), (1, 1), "asked once, sent once");
}

#[tokio::test]
async fn a_guard_that_refuses_after_a_429_stops_the_request_from_going_out_again() {
    let seed = tern_testkit::Seed::new();
    let mut config = sim_config(2);
    config.faults.seed = seed.value();
    let sim = start_sim(config).await;
    let c = AsrClient::new(client_config(&sim), TokenProvider::static_token("t"), Arc::new(Unlimited)).unwrap();
    let vm = c.find_item_by_vm_name("vm-00001", None).await.unwrap().unwrap();
    // From now on ARM throttles every request, asking for a second's wait.
    let mut faults = admin(&sim, "faults").await;
    faults["throttle_storm_rate"] = 1.0.into();
    faults["throttle_storm_retry_after_secs"] = 1.into();
    let http = reqwest::Client::new();
    let put = http.put(format!("{}/_sim/faults", sim.url())).json(&faults).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    // The first attempt goes out and is throttled; while it waits out the Retry-After, the
    // sender loses the right to send: the guard, asked again, keeps the retry unsent.
    let gate = Gate::new(1);
    let k = key("storm");
    let err = c
        .unplanned_failover(&vm, FailoverDirection::PrimaryToRecovery, None, false, Sending::guarded(&k, &gate))
        .await
        .unwrap_err();
    assert!(matches!(err, AsrError::NotSent { .. }), "{err:?} (seed {})", seed.value());
    let sent = mutations(&sim).await;
    assert_eq!(sent.len(), 1, "only the throttled first attempt reached Azure: {sent:#?}");
    assert_eq!(sent[0]["status"], 429);
    assert_eq!(gate.asked(), 2, "asked before the first attempt and again after the wait");
}
