//! A worker's settings: every service's ([`ServiceConfig`], flattened: its keys stay top-level)
//! plus how the worker takes and keeps commands. Loaded by `tern_service::config::load`
//! (defaults → TOML file → `TERN_*`), which names any key it does not know.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_service::{ServiceConfig, Settings};

/// Settings of a worker process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Bus, Azure, budget, `listen` (`/healthz`, `/readyz`, `/metrics`).
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Instance name (defaults to `<service>-<pid>`); fences record it as the owner.
    pub instance: Option<String>,
    /// Commands handled at once by this process.
    pub concurrency: usize,
    /// On shutdown, how long in-flight commands may run before they are handed back (seconds).
    pub drain_timeout_secs: f64,
    /// How long a worker's claim on a command lasts without renewal (seconds). Renewed while it works.
    pub lease_secs: f64,
    /// Most job list requests per second of this process's job watcher.
    pub watcher_reads_per_sec: f64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            instance: None,
            concurrency: 256,
            drain_timeout_secs: 30.0,
            lease_secs: 60.0,
            watcher_reads_per_sec: 2.0,
        }
    }
}

impl Settings for WorkerConfig {
    fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if !(self.lease_secs > 0.0 && self.watcher_reads_per_sec > 0.0) {
            return Err("lease_secs and watcher_reads_per_sec must be > 0".into());
        }
        self.service.validate()
    }
}

impl WorkerConfig {
    /// Lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tern_service::config::load;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_worker_takes_the_service_keys_and_its_own_and_refuses_the_planners() {
        let vault = [("TERN_ASR__SUBSCRIPTION_ID", "s"), ("TERN_ASR__RESOURCE_GROUP", "rg"), ("TERN_ASR__VAULT", "v")];
        let mut vars = vault.to_vec();
        vars.extend([
            ("TERN_CONCURRENCY", "16"),
            ("TERN_LEASE_SECS", "3"),
            ("TERN_LISTEN", "127.0.0.1:9464"),
            ("TERN_NATS_URL", "nats://127.0.0.1:4333"),
            ("TERN_LOG", "debug"),
        ]);
        let c: WorkerConfig = load(None, env(&vars)).unwrap();
        assert_eq!((c.concurrency, c.lease()), (16, Duration::from_secs(3)));
        assert_eq!(c.service.listen, SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!(c.service.nats_url, "nats://127.0.0.1:4333");
        let mut vars = vault.to_vec();
        vars.push(("TERN_METRICS_LISTEN", "127.0.0.1:9464"));
        let err = load::<WorkerConfig>(None, env(&vars)).unwrap_err().to_string();
        assert!(err.starts_with("TERN_METRICS_LISTEN: unknown setting `metrics_listen`"), "{err}");
        let mut vars = vault.to_vec();
        vars.push(("TERN_CONCURRENCY", "0"));
        let err = load::<WorkerConfig>(None, env(&vars)).unwrap_err().to_string();
        assert!(err.contains("concurrency must be at least 1"), "{err}");
    }
}
