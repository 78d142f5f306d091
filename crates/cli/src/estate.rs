//! The estate a `tern-asr-sim` serves, from its ready line: every vault's ARM id and the cache
//! storage accounts the services stage reprotect data in. `tern up` and `tern-bench` configure
//! the services from it alike.

use serde_json::Value;

/// A vault's ARM id, spelled as Tern spells the stack's own.
pub fn vault_arm_id(subscription: &str, group: &str, vault: &str) -> String {
    tern_asr::AsrConfig::for_vault(subscription, group, vault).vault_id()
}

/// The vaults the simulator serves and the cache storage accounts the services stage reprotect
/// data in, from its ready line.
#[derive(Clone, Debug)]
pub struct Estate {
    /// Every vault's ARM id, the first (the services' own) first.
    pub vaults: Vec<String>,
    /// By region: the first vault's accounts, as a single-vault stack has them; by
    /// `region@subscription`: another subscription's (an account serves only VMs of its own).
    pub cache_accounts: Value,
}

impl Estate {
    /// From the simulator's ready line (or `/_sim/info`); `first` is the services' own vault.
    pub fn of(sim: &Value, first: &str) -> Self {
        let mut accounts = sim["cache_storage_accounts"].as_object().cloned().unwrap_or_default();
        let mut vaults = vec![first.to_owned()];
        let first_subscription = sim["subscription_id"].as_str().unwrap_or_default();
        for v in sim["vaults"].as_array().into_iter().flatten() {
            let field = |k: &str| v[k].as_str().unwrap_or_default();
            let id = vault_arm_id(field("subscription_id"), field("resource_group"), field("vault"));
            if !vaults.iter().any(|known| known.eq_ignore_ascii_case(&id)) {
                vaults.push(id);
            }
            let subscription = field("subscription_id");
            if subscription.eq_ignore_ascii_case(first_subscription) {
                continue;
            }
            // The first vault of a subscription names its accounts; the others share them.
            for (region, account) in v["cache_storage_accounts"].as_object().into_iter().flatten() {
                accounts.entry(format!("{region}@{subscription}")).or_insert_with(|| account.clone());
            }
        }
        Self { vaults, cache_accounts: Value::Object(accounts) }
    }
}
