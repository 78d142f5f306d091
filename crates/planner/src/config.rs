//! The planner's settings: every service's ([`ServiceConfig`], flattened: its keys stay
//! top-level; `listen` is the gRPC address) plus where `/healthz` and `/metrics` are served.
//! Loaded by `tern_service::config::load` (defaults → TOML file → `TERN_*`), which names any key
//! it does not know — the workers' own keys (`concurrency`, `lease_secs`, ...) included.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tern_service::{ServiceConfig, Settings};

/// Settings of a planner process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlannerConfig {
    /// Bus, Azure, budget, and `listen`: the gRPC API's address.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// `/healthz` and `/metrics` (`TERN_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// Who may call the gRPC API (`TERN_API__*`): token files of its two roles, or an explicit
    /// `insecure`.
    pub api: crate::ApiConfig,
    /// How often the watchdog looks at every running VM (`TERN_WATCHDOG_INTERVAL_SECS`, seconds):
    /// a lost command is sent again, and a VM past its deadline failed, within about two rounds.
    pub watchdog_interval_secs: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api: crate::ApiConfig::default(),
            watchdog_interval_secs: 30.0,
        }
    }
}

impl PlannerConfig {
    /// How often the watchdog looks.
    pub fn watchdog_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.watchdog_interval_secs)
    }
}

impl Settings for PlannerConfig {
    fn validate(&self) -> Result<(), String> {
        self.service.validate()?;
        self.api.validate()?;
        if !(0.1..=3600.0).contains(&self.watchdog_interval_secs) {
            return Err(format!(
                "watchdog_interval_secs: must be between 0.1 and 3600 seconds, got {}",
                self.watchdog_interval_secs
            ));
        }
        // A bearer token in plaintext is anyone's who can see the traffic: off this machine, the
        // API speaks TLS (or is explicitly open).
        let tokens = self.api.reader_token_file.is_some();
        if tokens && !self.api.tls_enabled() && !self.service.listen.ip().is_loopback() {
            return Err(format!(
                "api: the API would take bearer tokens in plaintext on {}: set TERN_API__TLS_CERT_FILE and \
                 TERN_API__TLS_KEY_FILE, or listen on loopback only",
                self.service.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tern_service::config::load;

    use super::*;

    #[test]
    fn the_planner_takes_the_service_keys_and_its_metrics_address_and_refuses_worker_keys() {
        let vault = [
            ("TERN_ASR__SUBSCRIPTION_ID", "s"),
            ("TERN_ASR__RESOURCE_GROUP", "rg"),
            ("TERN_ASR__VAULT", "v"),
            ("TERN_API__INSECURE", "true"),
        ];
        let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            vault.iter().chain(extra).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let c: PlannerConfig = load(
            None,
            env(&[
                ("TERN_LISTEN", "127.0.0.1:50051"),
                ("TERN_METRICS_LISTEN", "127.0.0.1:9464"),
                ("TERN_BUDGET", "null"),
            ]),
        )
        .unwrap();
        assert_eq!(c.service.listen, SocketAddr::from(([127, 0, 0, 1], 50051)));
        assert_eq!(c.metrics_listen, SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!(c.service.budget, None);
        let err = load::<PlannerConfig>(None, env(&[("TERN_CONCURRENCY", "8")])).unwrap_err().to_string();
        assert!(err.starts_with("TERN_CONCURRENCY: unknown setting `concurrency`"), "{err}");
    }

    #[test]
    fn the_api_needs_both_token_files_or_an_explicit_insecure() {
        let base = [("TERN_ASR__SUBSCRIPTION_ID", "s"), ("TERN_ASR__RESOURCE_GROUP", "rg"), ("TERN_ASR__VAULT", "v")];
        let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            base.iter().chain(extra).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let err = load::<PlannerConfig>(None, env(&[])).unwrap_err().to_string();
        assert!(err.contains("the planner's API needs credentials"), "{err}");
        assert!(err.contains("TERN_API__OPERATOR_TOKEN_FILE") && err.contains("TERN_API__INSECURE"), "{err}");
        let half = load::<PlannerConfig>(None, env(&[("TERN_API__OPERATOR_TOKEN_FILE", "/x")])).unwrap_err();
        assert!(half.to_string().contains("needs credentials"), "{half}");
        let both = env(&[("TERN_API__OPERATOR_TOKEN_FILE", "/o"), ("TERN_API__READER_TOKEN_FILE", "/r")]);
        let c: PlannerConfig = load(None, both).unwrap();
        assert_eq!(c.api.operator_token_file.as_deref(), Some(std::path::Path::new("/o")));
        let err = c.api.load().unwrap_err();
        assert!(err.contains("cannot read /r"), "a missing token file is named: {err}");
    }

    #[test]
    fn tokens_off_this_machine_need_tls_and_tls_needs_both_files() {
        let base = [
            ("TERN_ASR__SUBSCRIPTION_ID", "s"),
            ("TERN_ASR__RESOURCE_GROUP", "rg"),
            ("TERN_ASR__VAULT", "v"),
            ("TERN_API__OPERATOR_TOKEN_FILE", "/o"),
            ("TERN_API__READER_TOKEN_FILE", "/r"),
        ];
        let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            base.iter().chain(extra).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let err = load::<PlannerConfig>(None, env(&[("TERN_LISTEN", "0.0.0.0:50051")])).unwrap_err().to_string();
        assert!(err.contains("plaintext on 0.0.0.0:50051") && err.contains("TERN_API__TLS_CERT_FILE"), "{err}");
        let tls =
            [("TERN_LISTEN", "0.0.0.0:50051"), ("TERN_API__TLS_CERT_FILE", "/c"), ("TERN_API__TLS_KEY_FILE", "/k")];
        let c: PlannerConfig = load(None, env(&tls)).unwrap();
        assert!(c.api.tls_enabled());
        assert!(c.api.tls().unwrap_err().contains("cannot read /c"));
        let err = load::<PlannerConfig>(None, env(&[("TERN_API__TLS_CERT_FILE", "/c")])).unwrap_err().to_string();
        assert!(err.contains("both tls_cert_file and tls_key_file"), "{err}");
        let err = load::<PlannerConfig>(None, env(&[("TERN_API__CLIENT_CA_FILE", "/ca")])).unwrap_err().to_string();
        assert!(err.contains("mTLS"), "{err}");
    }
}
