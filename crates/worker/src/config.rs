//! Worker settings, layered: defaults → TOML file → `TERN_*` environment → flags.
//!
//! Environment variables map onto keys: `TERN_NATS_URL` → `nats_url`, and `__` nests:
//! `TERN_ASR__ENDPOINT` → `asr.endpoint`, `TERN_BUDGET__WRITES__PER_SECOND` →
//! `budget.writes.per_second`. Values are read as JSON when they parse (numbers, booleans),
//! else as strings. Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tern_asr::{AsrConfig, BudgetConfig};

/// Settings of a worker process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// Instance name (defaults to `<service>-<pid>`); fences record it as the owner.
    pub instance: Option<String>,
    /// Address of `/healthz`, `/readyz` and `/metrics` (the planner's gRPC address).
    pub listen: SocketAddr,
    /// The planner's `/healthz` and `/metrics` (workers serve them on `listen`).
    pub metrics_listen: SocketAddr,
    /// Commands handled at once by this process.
    pub concurrency: usize,
    /// On shutdown, how long in-flight commands may run before they are handed back (seconds).
    pub drain_timeout_secs: f64,
    /// How long a worker's claim on a command lasts without renewal (seconds). Renewed while it works.
    pub lease_secs: f64,
    /// Azure endpoint and vault.
    pub asr: AsrConfig,
    /// Bearer token (simulator, or a token obtained elsewhere); otherwise the credential chain.
    pub asr_token: Option<String>,
    /// The fleet-wide ARM budget; `None` = unlimited (a simulator without throttling).
    pub budget: Option<BudgetConfig>,
    /// How often ASR jobs are polled (seconds).
    pub poll_interval_secs: f64,
    /// Most job list requests per second of this process's job watcher.
    pub watcher_reads_per_sec: f64,
    /// Run the bus topology set-up at start (production deployments may do it out of band).
    pub ensure_topology: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            instance: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            concurrency: 256,
            drain_timeout_secs: 30.0,
            lease_secs: 60.0,
            asr: AsrConfig::default(),
            asr_token: None,
            budget: Some(BudgetConfig::default()),
            poll_interval_secs: 30.0,
            watcher_reads_per_sec: 2.0,
            ensure_topology: true,
        }
    }
}

impl WorkerConfig {
    /// Loads: defaults, then `file` (TOML), then the `TERN_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut merged = serde_json::to_value(Self::default()).map_err(|e| e.to_string())?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let parsed: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let parsed = serde_json::to_value(parsed).map_err(|e| e.to_string())?;
            merge(&mut merged, parsed);
        }
        let mut from_env = Map::new();
        for (k, v) in env {
            let Some(key) = k.strip_prefix("TERN_") else { continue };
            // Read elsewhere: logging (tern-telemetry), the `tern` CLI's own variables, and the
            // test tooling's (TERN_FAULTS_*: the fault suite's scale, inherited by the services).
            if matches!(
                key,
                "LOG"
                    | "LOG_FORMAT"
                    | "TEST_SEED"
                    | "NATS_SERVER"
                    | "AZURE_TOKEN"
                    | "DATA_DIR"
                    | "PLANNER"
                    | "NATS"
                    | "CONFIG"
            ) || key.starts_with("FAULTS_")
            {
                continue;
            }
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            let value = serde_json::from_str::<Value>(&v).unwrap_or(Value::String(v));
            insert(&mut from_env, &path, value);
        }
        merge(&mut merged, Value::Object(from_env));
        let config: Self = serde_json::from_value(merged).map_err(|e| format!("configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if !(self.lease_secs > 0.0 && self.poll_interval_secs > 0.0 && self.watcher_reads_per_sec > 0.0) {
            return Err("lease_secs, poll_interval_secs and watcher_reads_per_sec must be > 0".into());
        }
        self.asr.validate().map_err(|e| format!("asr.{e}"))
    }

    /// Lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn insert(map: &mut Map<String, Value>, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("tern-worker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.toml");
        std::fs::write(
            &file,
            "concurrency = 8\n[asr]\nsubscription_id = \"s\"\nresource_group = \"rg\"\nvault = \"v\"\n",
        )
        .unwrap();
        let c = WorkerConfig::load(
            Some(&file),
            env(&[
                ("TERN_CONCURRENCY", "16"),
                ("TERN_ASR__ENDPOINT", "http://127.0.0.1:9"),
                ("PATH", "/bin"),
                ("TERN_FAULTS_VMS", "200"),
                ("TERN_LOG_FORMAT", "json"),
                ("TERN_PLANNER", "127.0.0.1:50051"),
                ("TERN_METRICS_LISTEN", "127.0.0.1:9464"),
            ]),
        )
        .unwrap();
        assert_eq!(c.metrics_listen, SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!(c.concurrency, 16, "the environment overrides the file");
        assert_eq!(c.asr.vault, "v", "the file overrides the defaults");
        assert_eq!(c.asr.endpoint, "http://127.0.0.1:9");
        let err = WorkerConfig::load(Some(&file), env(&[("TERN_CONCURENCY", "3")])).unwrap_err();
        assert!(err.contains("concurency"), "{err}");
        let err = WorkerConfig::load(None, env(&[])).unwrap_err();
        assert!(err.contains("asr.subscription_id"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
