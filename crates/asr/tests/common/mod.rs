//! The simulator and a client for it, as the client tests use them.

#![allow(dead_code)]

use std::time::Duration;

use tern_asr::AsrConfig;
use tern_asr_sim::{RunningSimulator, SeedState, SimConfig, SimOptions};

/// `vms` VMs ready for failback, no latency, no throttling.
pub fn sim_config(vms: usize) -> SimConfig {
    let mut c = SimConfig::default();
    c.estate.vms = vms;
    c.estate.state = SeedState::ReadyForFailback;
    c.zero_latency = true;
    c.throttle.enabled = false;
    c
}

pub async fn start_sim(config: SimConfig) -> RunningSimulator {
    tern_asr_sim::start(SimOptions::new(config)).await.expect("simulator starts")
}

/// The client's settings for `sim`, polling fast.
pub fn client_config(sim: &RunningSimulator) -> AsrConfig {
    let info = sim.info();
    // The estate's cache storage accounts, one per region, as the simulator names them.
    let advertised = serde_json::to_value(info).ok().map(|v| v["cache_storage_accounts"].clone());
    let cache_storage_accounts = advertised.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    AsrConfig {
        cache_storage_accounts,
        endpoint: info.url.clone(),
        subscription_id: info.subscription_id.clone(),
        resource_group: info.resource_group.clone(),
        vault: info.vault.clone(),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(20),
        ..AsrConfig::default()
    }
}
