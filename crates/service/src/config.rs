//! Service settings, layered: defaults → TOML file → `TERN_*` environment (flags only name the
//! file).
//!
//! Environment variables map onto keys: `TERN_NATS_URL` → `nats_url`, and `__` nests:
//! `TERN_ASR__ENDPOINT` → `asr.endpoint`, `TERN_BUDGET__WRITES__PER_SECOND` →
//! `budget.writes.per_second`. Values are read as JSON when they parse (numbers, booleans,
//! `null`), else as strings.
//!
//! `TERN_` is the services' prefix: a `TERN_*` variable that is not one of the service's keys
//! (nor one of [`PROCESS_VARIABLES`]) is an error naming it, as is an unknown key in the file.
//! Processes that start services hand them only the `TERN_*` variables meant for them.
//!
//! Hand-written rather than figment, which cannot keep three of these documented behaviours:
//! its `Env` reads values in its own TOML-like syntax (`{key=value}`, no `null`), so
//! `TERN_ASR__CACHE_STORAGE_ACCOUNTS={"eastus": "…"}` and `TERN_BUDGET=null`, which `tern up`
//! and the test kit pass, would no longer read; it reads only the process's environment, while
//! [`load`] takes the variables as pairs (tests, `tern up`); and it has no notion of an unknown
//! key — serde's `deny_unknown_fields` does not work with the `#[serde(flatten)]` every
//! service's settings use — let alone of the variable or file that gave it. What would be left
//! for figment is `merge`, twenty lines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tern_asr::{AsrConfig, BudgetConfig};

/// The prefix of every service setting in the environment.
pub const PREFIX: &str = "TERN_";

/// `TERN_*` variables a service reads outside its settings, in the same process: the log filter
/// and format (`tern-telemetry`) and a fixed Azure token (`tern-asr`'s credential chain).
pub const PROCESS_VARIABLES: [&str; 3] = ["TERN_LOG", "TERN_LOG_FORMAT", "TERN_AZURE_TOKEN"];

/// What every service is configured with: where the bus and Azure are, how it talks to Azure,
/// and where it listens. Flattened into each service's own settings (the planner's, a
/// worker's), so the keys stay top-level: `nats_url`, not `service.nats_url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// NATS server URL (`tls://` with a CA file).
    pub nats_url: String,
    /// This service's NATS credentials: an nkey seed file or a JWT `.creds` file
    /// (`tern bus credentials` writes one per service).
    pub nats_credentials: Option<PathBuf>,
    /// PEM file of the CA that signs the NATS servers' certificates: TLS is then required.
    pub nats_ca_file: Option<PathBuf>,
    /// A worker's `/healthz`, `/readyz` and `/metrics`; the planner's gRPC API.
    pub listen: SocketAddr,
    /// Azure endpoint and vault.
    pub asr: AsrConfig,
    /// Bearer token (simulator, or a token obtained elsewhere); otherwise the credential chain.
    pub asr_token: Option<String>,
    /// The fleet-wide ARM budget; `None` = unlimited (a simulator without throttling).
    pub budget: Option<BudgetConfig>,
    /// How often ASR jobs are polled (seconds).
    pub poll_interval_secs: f64,
    /// Run the bus topology set-up at start (production deployments may do it out of band).
    pub ensure_topology: bool,
    /// Replicas of every stream, consumer and bucket the set-up creates (`TERN_REPLICAS`): 3,
    /// for a production cluster; 1 only on a single nats-server. Never lowers what exists.
    pub replicas: usize,
    /// Also publish every event as JSON (`TERN_JSON_EVENTS`): protobuf's JSON mapping, with the
    /// same CloudEvents headers, on `tern.json.events.…` (stream `TERN_EVENTS_JSON`), for
    /// consumers without protobuf tooling. Off by default; the protobuf events are unchanged.
    pub json_events: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_credentials: None,
            nats_ca_file: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            asr: AsrConfig::default(),
            asr_token: None,
            budget: Some(BudgetConfig::default()),
            poll_interval_secs: 30.0,
            ensure_topology: true,
            replicas: 3,
            json_events: false,
        }
    }
}

impl ServiceConfig {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_secs.is_nan() || self.poll_interval_secs <= 0.0 {
            return Err("poll_interval_secs must be > 0".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("replicas must be 1 to 5 (JetStream's range), not {}", self.replicas));
        }
        self.asr.validate().map_err(|e| format!("asr.{e}"))
    }
}

/// A service's whole settings (its [`ServiceConfig`] flattened in, plus its own keys).
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// Checks the values once loaded; the error names the key.
    fn validate(&self) -> Result<(), String>;
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not TOML.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key the service does not have.
    #[error(
        "{origin}: unknown setting `{key}` (this service's settings: {known}; as variables TERN_<KEY>, '__' nests)"
    )]
    UnknownKey {
        /// The key, dotted (`asr.endpont`).
        key: String,
        /// Where it was given: the variable's name or the file's path.
        origin: String,
        /// The service's top-level keys.
        known: String,
    },
    /// A value of the wrong type or out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads `S`: its defaults, then `file` (TOML), then the `TERN_*` variables of `env`; checks
/// every key, then the values.
pub fn load<S: Settings>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<S, ConfigError> {
    let defaults = serde_json::to_value(S::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let known = || match &defaults {
        Value::Object(keys) => keys.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => String::new(),
    };
    let mut merged = defaults.clone();
    if let Some(path) = file {
        let failed = |reason: String| ConfigError::File { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let parsed: toml::Value = toml::from_str(&text).map_err(|e| failed(e.to_string()))?;
        let parsed = serde_json::to_value(parsed).map_err(|e| failed(e.to_string()))?;
        if let Some(key) = unknown_key(&defaults, &parsed, "") {
            return Err(ConfigError::UnknownKey { key, origin: path.display().to_string(), known: known() });
        }
        merge(&mut merged, parsed);
    }
    let mut from_env = Map::new();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix(PREFIX) else { continue };
        if PROCESS_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        let value = serde_json::from_str::<Value>(&raw).unwrap_or(Value::String(raw));
        let mut one = Map::new();
        insert(&mut one, &path, value.clone());
        if let Some(key) = unknown_key(&defaults, &Value::Object(one), "") {
            return Err(ConfigError::UnknownKey { key, origin: name, known: known() });
        }
        insert(&mut from_env, &path, value);
    }
    merge(&mut merged, Value::Object(from_env));
    let settings: S = serde_json::from_value(merged).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    settings.validate().map_err(ConfigError::Invalid)?;
    Ok(settings)
}

/// The first key of `given` that `known` (the defaults) lacks, dotted. An object that is empty
/// by default is a map (`asr.cache_storage_accounts`): any key goes; `null` defaults are left to
/// serde, whose structs deny unknown fields too.
fn unknown_key(known: &Value, given: &Value, prefix: &str) -> Option<String> {
    let (Value::Object(known), Value::Object(given)) = (known, given) else { return None };
    if known.is_empty() {
        return None;
    }
    given.iter().find_map(|(key, value)| {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match known.get(key) {
            None => Some(path),
            Some(default) => unknown_key(default, value, &path),
        }
    })
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

/// The `TERN_*` variables of `S`'s top-level keys, for `--help`: `TERN_ASR__*` for a table.
pub fn variables<S: Settings>() -> Vec<String> {
    let Ok(Value::Object(keys)) = serde_json::to_value(S::default()) else { return Vec::new() };
    keys.iter()
        .map(|(k, v)| {
            let table = if v.as_object().is_some_and(|o| !o.is_empty()) { "__*" } else { "" };
            format!("{PREFIX}{}{table}", k.to_ascii_uppercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service's settings as the planner and workers build theirs.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Probe {
        #[serde(flatten)]
        service: ServiceConfig,
        concurrency: usize,
    }

    impl Default for Probe {
        fn default() -> Self {
            Self { service: ServiceConfig::default(), concurrency: 256 }
        }
    }

    impl Settings for Probe {
        fn validate(&self) -> Result<(), String> {
            self.service.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("tern-service-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.toml");
        std::fs::write(
            &file,
            "concurrency = 8\n[asr]\nsubscription_id = \"s\"\nresource_group = \"rg\"\nvault = \"v\"\n[asr.cache_storage_accounts]\neastus = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/c\"\n",
        )
        .unwrap();
        let c: Probe = load(
            Some(&file),
            env(&[
                ("TERN_CONCURRENCY", "16"),
                ("TERN_ASR__ENDPOINT", "http://127.0.0.1:9"),
                ("TERN_BUDGET__WRITES__PER_SECOND", "3"),
                ("PATH", "/bin"),
                ("TERN_LOG_FORMAT", "json"),
                ("TERN_AZURE_TOKEN", "t"),
            ]),
        )
        .unwrap();
        assert_eq!(c.concurrency, 16, "the environment overrides the file");
        assert_eq!(c.service.asr.vault, "v", "the file overrides the defaults");
        assert_eq!(c.service.asr.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.service.asr.cache_storage_account("eastus").map(|id| id.ends_with("/c")), Some(true));
        assert_eq!(c.service.budget.unwrap().writes.per_second, 3.0);

        let err = load::<Probe>(Some(&file), env(&[("TERN_CONCURENCY", "3")])).unwrap_err().to_string();
        assert!(err.starts_with("TERN_CONCURENCY: unknown setting `concurency`"), "{err}");
        assert!(err.contains("concurrency, ensure_topology"), "the error lists the known keys: {err}");
        for (var, key) in [
            ("TERN_PLANNER", "planner"),
            ("TERN_FAULTS_VMS", "faults_vms"),
            ("TERN_ASR__ENDPONT", "asr.endpont"),
            ("TERN_BUDGET__WRITES__BURST", "budget.writes.burst"),
        ] {
            let err = load::<Probe>(Some(&file), env(&[(var, "1")])).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}: unknown setting `{key}`")), "{err}");
        }
        std::fs::write(dir.join("typo.toml"), "[asr]\nvalut = \"v\"\n").unwrap();
        let err = load::<Probe>(Some(&dir.join("typo.toml")), env(&[])).unwrap_err().to_string();
        assert!(err.contains("typo.toml: unknown setting `asr.valut`"), "{err}");
        let err = load::<Probe>(None, env(&[])).unwrap_err().to_string();
        assert!(err.contains("asr.subscription_id"), "{err}");
        let err = load::<Probe>(Some(&file), env(&[("TERN_POLL_INTERVAL_SECS", "0")])).unwrap_err().to_string();
        assert!(err.contains("poll_interval_secs"), "{err}");
        let variables = variables::<Probe>();
        assert!(variables.contains(&"TERN_NATS_URL".to_owned()) && variables.contains(&"TERN_ASR__*".to_owned()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
