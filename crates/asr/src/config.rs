//! Where Tern's Azure client points and how patient it is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Azure public cloud's Resource Manager endpoint.
pub const AZURE_PUBLIC_CLOUD: &str = "https://management.azure.com";
/// The ASR api-version Tern speaks by default (the last hand-written swagger; SDK-validated).
pub const DEFAULT_API_VERSION: &str = "2025-08-01";

/// The client's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// ARM endpoint: Azure (`https://management.azure.com`), a sovereign cloud
    /// (`https://management.usgovcloudapi.net`, `https://management.chinacloudapi.cn`), or a simulator.
    pub endpoint: String,
    /// ASR `api-version`.
    pub api_version: String,
    /// Compute `api-version`.
    pub compute_api_version: String,
    /// Network `api-version`.
    pub network_api_version: String,
    /// `api-version` of managed disks (`Microsoft.Compute/disks` has its own).
    pub disk_api_version: String,
    /// Storage `api-version` (cache storage accounts are only read).
    pub storage_api_version: String,
    /// Subscription of the vault.
    pub subscription_id: String,
    /// Resource group of the vault.
    pub resource_group: String,
    /// Recovery Services vault name.
    pub vault: String,
    /// Further vaults (ARM ids) this service may act on, beside its own (`subscription_id`,
    /// `resource_group`, `vault`): one stack serves an estate of many vaults and subscriptions.
    /// A command or plan naming a vault outside this list is refused. `["*"]`: every vault
    /// the credentials can reach (Azure's RBAC is then the only limit).
    pub vaults: Vec<String>,
    /// Limit for one HTTP request (connect + answer).
    #[serde(with = "secs")]
    pub request_timeout: Duration,
    /// Limit for establishing a connection.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Attempts for a read before giving up (429, 5xx and transport errors are retried).
    pub read_attempts: u32,
    /// First backoff step between read attempts (doubles, jittered).
    #[serde(with = "secs")]
    pub backoff_base: Duration,
    /// Largest backoff step.
    #[serde(with = "secs")]
    pub backoff_max: Duration,
    /// How often jobs are polled when no `Retry-After` says otherwise.
    #[serde(with = "secs")]
    pub poll_interval: Duration,
    /// After a side effect's answer was lost, how long its job may take to show (a new job is
    /// a placeholder at first, and the item does not name it at once): until then "no job
    /// found" does not mean "not started", and nothing is sent again.
    #[serde(with = "secs")]
    pub lost_request_window: Duration,
    /// The cache storage account reprotect stages data in, per Azure region (`eastus` → ARM
    /// id): the region a VM runs in when it is reprotected. Plans may name their own.
    pub cache_storage_accounts: BTreeMap<String, String>,
    /// Extra CA certificate (PEM) to trust, e.g. a simulator's self-signed certificate.
    pub ca_certificate: Option<PathBuf>,
    /// Product token sent before `tern-asr/VERSION` in `User-Agent` (e.g. `tern-failover/0.1.0`),
    /// so ARM's request logs tell the services apart.
    pub user_agent: Option<String>,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            endpoint: AZURE_PUBLIC_CLOUD.into(),
            api_version: DEFAULT_API_VERSION.into(),
            compute_api_version: "2024-07-01".into(),
            network_api_version: "2024-05-01".into(),
            disk_api_version: "2024-03-02".into(),
            storage_api_version: "2023-05-01".into(),
            subscription_id: String::new(),
            resource_group: String::new(),
            vault: String::new(),
            vaults: Vec::new(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_attempts: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(30),
            lost_request_window: Duration::from_secs(300),
            cache_storage_accounts: BTreeMap::new(),
            ca_certificate: None,
            user_agent: None,
        }
    }
}

impl AsrConfig {
    /// A config for a vault on Azure's public cloud.
    pub fn for_vault(subscription_id: &str, resource_group: &str, vault: &str) -> Self {
        Self {
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            vault: vault.into(),
            ..Self::default()
        }
    }

    /// These settings pointed at another vault (its ARM id): same endpoint, credentials and
    /// patience, the vault's own subscription and resource group.
    pub fn at_vault(&self, vault_id: &str) -> Result<Self, String> {
        let (subscription_id, resource_group, vault) = parse_vault_id(vault_id)?;
        Ok(Self { subscription_id, resource_group, vault, ..self.clone() })
    }

    /// Whether this service may act on the vault `vault_id`: its own, one of `vaults`, or any
    /// with `vaults = ["*"]`. Ids compare without case, as ARM compares them.
    pub fn allows(&self, vault_id: &str) -> bool {
        let want = vault_id.trim_end_matches('/');
        want.eq_ignore_ascii_case(&self.vault_id())
            || self.vaults.iter().any(|v| v == "*" || v.trim_end_matches('/').eq_ignore_ascii_case(want))
    }

    /// Every vault named in the settings: its own first, then `vaults` (without `*`).
    pub fn vault_ids(&self) -> Vec<String> {
        let mut ids = vec![self.vault_id()];
        for v in self.vaults.iter().filter(|v| v.as_str() != "*") {
            if !ids.iter().any(|i| i.eq_ignore_ascii_case(v.trim_end_matches('/'))) {
                ids.push(v.trim_end_matches('/').to_owned());
            }
        }
        ids
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            return Err(format!("endpoint {:?} must be an http(s) URL", self.endpoint));
        }
        for (key, v) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("vault", &self.vault),
            ("api_version", &self.api_version),
        ] {
            if v.is_empty() || v.contains('/') || v.contains(char::is_whitespace) {
                return Err(format!("{key} {v:?} must be non-empty, without '/' or spaces"));
            }
        }
        for (i, v) in self.vaults.iter().enumerate() {
            if v != "*" {
                parse_vault_id(v).map_err(|e| format!("vaults[{i}]: {e}"))?;
            }
        }
        if self.read_attempts == 0 {
            return Err("read_attempts must be at least 1".into());
        }
        for (region, id) in &self.cache_storage_accounts {
            if region.is_empty() || region.contains(char::is_whitespace) {
                return Err(format!("cache_storage_accounts: {region:?} is not an Azure region name (e.g. eastus)"));
            }
            if !id.to_ascii_lowercase().contains("/providers/microsoft.storage/storageaccounts/") {
                return Err(format!("cache_storage_accounts.{region}: {id:?} is not a storage account ARM id"));
            }
        }
        Ok(())
    }

    /// The configured cache storage account of `region` (compared without case or spaces) for
    /// this vault's subscription ([`cache_account_for`]).
    pub fn cache_storage_account(&self, region: &str) -> Option<&str> {
        cache_account_for(&self.cache_storage_accounts, region, &self.subscription_id)
    }

    /// The endpoint without a trailing slash.
    pub fn base(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }

    /// The OAuth scope for this endpoint (`<endpoint>/.default`).
    pub fn scope(&self) -> String {
        format!("{}/.default", self.base())
    }

    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`.
    pub fn vault_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            self.subscription_id, self.resource_group, self.vault
        )
    }
}

/// The cache storage account of `region` for VMs of `subscription`, from a map keyed by region
/// or `region@subscription`: the subscription's own entry first, else a bare region's — if its
/// account is in that subscription (a storage account serves its own subscription's VMs).
pub fn cache_account_for<'a>(
    accounts: &'a BTreeMap<String, String>,
    region: &str,
    subscription: &str,
) -> Option<&'a str> {
    let want = normalize_region(region);
    let ours = subscription.to_ascii_lowercase();
    let qualified = accounts.iter().find(|(key, _)| {
        key.split_once('@').is_some_and(|(r, sub)| normalize_region(r) == want && sub.eq_ignore_ascii_case(&ours))
    });
    let bare = || {
        accounts.iter().find(|(key, id)| {
            !key.contains('@')
                && normalize_region(key) == want
                && crate::budget::subscription_of(id).is_none_or(|s| s == ours)
        })
    };
    qualified.or_else(bare).map(|(_, id)| id.as_str())
}

/// The subscription, resource group and name of a vault's ARM id
/// (`/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{v}`).
pub fn parse_vault_id(id: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    let shape = parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case("Microsoft.RecoveryServices")
        && parts[7].eq_ignore_ascii_case("vaults")
        && [parts[2], parts[4], parts[8]].iter().all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
    if !shape {
        return Err(format!(
            "{id:?} is not a Recovery Services vault's ARM id \
             (/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.RecoveryServices/vaults/NAME)"
        ));
    }
    Ok((parts[2].to_owned(), parts[4].to_owned(), parts[8].to_owned()))
}

/// An Azure region name as ARM compares them: `West US` = `westus`.
pub fn normalize_region(region: &str) -> String {
    region.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_azure_and_validation_names_the_key() {
        let c = AsrConfig::for_vault("sub", "rg", "v");
        assert_eq!(c.scope(), "https://management.azure.com/.default");
        assert!(c.vault_id().ends_with("/vaults/v"));
        assert!(c.validate().is_ok());
        let bad = AsrConfig { vault: "a/b".into(), ..c.clone() };
        assert!(bad.validate().unwrap_err().contains("vault"));
        let sovereign = AsrConfig { endpoint: "https://management.usgovcloudapi.net/".into(), ..c };
        assert_eq!(sovereign.scope(), "https://management.usgovcloudapi.net/.default");
    }

    #[test]
    fn a_service_acts_on_its_own_vault_and_those_it_lists() {
        let other = "/subscriptions/s2/resourceGroups/rg2/providers/Microsoft.RecoveryServices/vaults/v2";
        let c = AsrConfig { vaults: vec![other.into()], ..AsrConfig::for_vault("s1", "rg1", "v1") };
        assert!(c.validate().is_ok());
        assert!(c.allows(&c.vault_id()));
        assert!(c.allows(&other.to_uppercase()), "ARM ids compare without case");
        assert!(!c.allows("/subscriptions/s3/resourceGroups/rg3/providers/Microsoft.RecoveryServices/vaults/v3"));
        assert_eq!(c.vault_ids().len(), 2);
        let moved = c.at_vault(other).unwrap();
        assert_eq!(
            (moved.subscription_id.as_str(), moved.resource_group.as_str(), moved.vault.as_str()),
            ("s2", "rg2", "v2")
        );
        assert_eq!(moved.endpoint, c.endpoint);
        let any = AsrConfig { vaults: vec!["*".into()], ..c.clone() };
        assert!(any.allows("/subscriptions/s9/resourceGroups/r/providers/Microsoft.RecoveryServices/vaults/x"));
        let bad = AsrConfig { vaults: vec!["/subscriptions/s2/resourceGroups/rg2".into()], ..c };
        assert!(bad.validate().unwrap_err().starts_with("vaults[0]: "), "{:?}", bad.validate());
    }

    #[test]
    fn a_cache_account_serves_the_vms_of_its_own_subscription() {
        let account =
            |sub: &str| format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/c");
        let map: BTreeMap<String, String> = [
            ("eastus".to_owned(), account("s1")),
            ("eastus@S2".to_owned(), account("s2")),
            ("westus".to_owned(), account("s1")),
        ]
        .into();
        assert_eq!(cache_account_for(&map, "East US", "s1"), Some(account("s1").as_str()));
        assert_eq!(cache_account_for(&map, "eastus", "s2"), Some(account("s2").as_str()), "its own entry first");
        assert_eq!(cache_account_for(&map, "westus", "s2"), None, "another subscription's account serves no VM here");
    }
}
