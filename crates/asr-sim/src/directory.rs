//! Which vault's estate serves an ARM path: the subscriptions served, their vaults, the
//! resource groups each vault's VMs live in, and the provider operations (deletes) each vault
//! started. Every lookup is a hash lookup: nothing scans the vaults per request.

use std::collections::{HashMap, HashSet};

use crate::config::VaultLayout;
use crate::routes::{Addressed, Route, Scope};

/// The map from ARM scopes to estates (by position in the list of vault layouts).
#[derive(Debug, Default)]
pub struct Directory {
    /// Subscription ids as configured, by position.
    subscription_ids: Vec<String>,
    /// Lowercase subscription id → position.
    subscriptions: HashMap<String, usize>,
    /// Per subscription: its first vault's estate, which answers for resource groups and
    /// operations no vault owns (so a single-vault simulator answers as it always has).
    first_vault: Vec<usize>,
    /// (subscription, lowercase resource group, lowercase vault) → estate.
    vaults: HashMap<(usize, String, String), usize>,
    /// (subscription, lowercase resource group) of every resource group holding a vault.
    vault_groups: HashSet<(usize, String)>,
    /// (subscription, lowercase application resource group) → the estate whose VMs live there.
    app_groups: HashMap<(usize, String), usize>,
    /// Per subscription: lowercase name of each provider operation (a delete's job) → the
    /// estate that runs it.
    provider_jobs: Vec<HashMap<String, usize>>,
}

/// Why no estate serves a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The subscription is not served.
    Subscription(String),
    /// No vault lives in this resource group of the subscription.
    ResourceGroup(String),
    /// No vault of this name lives in the resource group.
    Vault(String),
}

impl Directory {
    /// The directory of the vaults `layouts` places (in that order: estate `i` is `layouts[i]`).
    pub fn new(layouts: &[VaultLayout]) -> Self {
        let mut d = Directory::default();
        for (i, l) in layouts.iter().enumerate() {
            if l.subscription == d.subscription_ids.len() {
                d.subscription_ids.push(l.subscription_id.clone());
                d.subscriptions.insert(l.subscription_id.to_ascii_lowercase(), l.subscription);
                d.first_vault.push(i);
                d.provider_jobs.push(HashMap::new());
            }
            let rg = l.resource_group.to_ascii_lowercase();
            d.vaults.insert((l.subscription, rg.clone(), l.vault.to_ascii_lowercase()), i);
            d.vault_groups.insert((l.subscription, rg));
            for app in &l.app_resource_groups {
                d.app_groups.insert((l.subscription, app.to_ascii_lowercase()), i);
            }
        }
        d
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscription_ids.len()
    }

    /// The id of subscription `i` (the first's if there is no such subscription).
    pub fn subscription_id(&self, i: usize) -> &str {
        self.subscription_ids.get(i).unwrap_or(&self.subscription_ids[0])
    }

    /// The position of subscription `id`, if served.
    pub fn subscription(&self, id: &str) -> Option<usize> {
        self.subscriptions.get(&id.to_ascii_lowercase()).copied()
    }

    /// The subscription whose ARM budget a request naming `id` draws on: that one if served,
    /// else the first (a request that names no served subscription is still a request of this
    /// client, and ARM would not serve it for free).
    pub fn budget_of(&self, id: Option<&str>) -> usize {
        id.and_then(|id| self.subscription(id)).unwrap_or(0)
    }

    /// The estate that serves `a`, or what is missing.
    pub fn estate_of(&self, a: &Addressed) -> Result<usize, Miss> {
        let sub = self.subscription(&a.subscription).ok_or_else(|| Miss::Subscription(a.subscription.clone()))?;
        match &a.scope {
            Scope::Vault(rg, vault) => {
                let rg_key = rg.to_ascii_lowercase();
                if !self.vault_groups.contains(&(sub, rg_key.clone())) {
                    return Err(Miss::ResourceGroup(rg.clone()));
                }
                self.vaults
                    .get(&(sub, rg_key, vault.to_ascii_lowercase()))
                    .copied()
                    .ok_or_else(|| Miss::Vault(vault.clone()))
            }
            Scope::ResourceGroup(rg) => {
                Ok(self.app_groups.get(&(sub, rg.to_ascii_lowercase())).copied().unwrap_or(self.first_vault[sub]))
            }
            Scope::Subscription => {
                let job = match &a.route {
                    Route::ProviderOperationStatus(_, job) | Route::ProviderOperationResult(_, _, job) => job,
                    _ => return Ok(self.first_vault[sub]),
                };
                Ok(self.provider_jobs[sub].get(&job.to_ascii_lowercase()).copied().unwrap_or(self.first_vault[sub]))
            }
        }
    }

    /// Notes that estate `estate`, in subscription `sub`, runs the provider operation `job`.
    pub fn note_provider_job(&mut self, sub: usize, job: &str, estate: usize) {
        if let Some(jobs) = self.provider_jobs.get_mut(sub) {
            jobs.insert(job.to_ascii_lowercase(), estate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::routes::address;

    #[test]
    fn paths_find_their_vault_resource_group_or_operation() {
        let config = SimConfig { subscriptions: 2, vaults_per_subscription: 2, ..SimConfig::default() };
        let layouts = config.vault_layouts();
        let mut d = Directory::new(&layouts);
        let find = |d: &Directory, path: &str| d.estate_of(&address(path).unwrap());
        let s2 = &layouts[2].subscription_id;
        assert_eq!(
            find(
                &d,
                &format!(
                    "/subscriptions/{s2}/resourceGroups/RG-TERN-DR/providers/Microsoft.RecoveryServices/vaults/Tern-Vault-2"
                )
            ),
            Ok(3)
        );
        assert_eq!(
            find(
                &d,
                &format!(
                    "/subscriptions/{s2}/resourceGroups/rg-app-s2v1-asr/providers/Microsoft.Compute/virtualMachines/x"
                )
            ),
            Ok(2)
        );
        assert_eq!(
            find(
                &d,
                &format!(
                    "/subscriptions/{s2}/resourceGroups/rg-tern-dr/providers/Microsoft.RecoveryServices/vaults/tern-vault-9"
                )
            ),
            Err(Miss::Vault("tern-vault-9".into()))
        );
        assert_eq!(
            find(
                &d,
                &format!(
                    "/subscriptions/{s2}/resourceGroups/rg-app/providers/Microsoft.RecoveryServices/vaults/tern-vault"
                )
            ),
            Err(Miss::ResourceGroup("rg-app".into()))
        );
        assert_eq!(
            find(&d, "/subscriptions/nope/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"),
            Err(Miss::Subscription("nope".into()))
        );
        // Another subscription's resource group is not this one's.
        assert_eq!(
            find(
                &d,
                &format!("/subscriptions/{s2}/resourceGroups/rg-app-s1v2/providers/Microsoft.Compute/virtualMachines")
            ),
            Ok(2),
            "answered by the subscription's first vault, which has no such group"
        );
        let op = format!("/subscriptions/{s2}/providers/Microsoft.Compute/locations/eastus/operations/J");
        assert_eq!(find(&d, &op), Ok(2));
        d.note_provider_job(1, "j", 3);
        assert_eq!(find(&d, &op), Ok(3));
        assert_eq!(d.budget_of(Some(&s2.to_ascii_uppercase())), 1);
        assert_eq!(d.budget_of(Some("nope")), 0);
    }
}
