//! Which vault's estate serves an ARM path: the subscriptions served, their vaults, the
//! resource groups each vault's VMs live in, and the provider operations (deletes) each vault
//! started. Every lookup is a hash lookup: nothing scans the vaults per request.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::VaultLayout;
use crate::routes::{Addressed, Route, Scope};

/// The map from ARM scopes to estates (by position in the list of vault layouts).
#[derive(Debug, Default)]
pub struct Directory {
    /// Lowercase subscription id → position.
    positions: HashMap<String, usize>,
    /// Each subscription, by position.
    subscriptions: Vec<Subscription>,
}

/// What one subscription holds. Keys are lowercase: ARM names are case-insensitive.
#[derive(Debug)]
struct Subscription {
    /// Its id as configured.
    id: String,
    /// Its first vault's estate, which answers for resource groups and operations no vault
    /// owns (so a single-vault simulator answers as it always has).
    first_vault: usize,
    /// Resource group → vault name → estate.
    vaults: HashMap<String, HashMap<String, usize>>,
    /// Application resource group → the estate whose VMs live there.
    app_groups: HashMap<String, usize>,
    /// Name of each provider operation (a delete's job) → the estate that runs it.
    provider_jobs: HashMap<String, usize>,
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

/// `s` in lowercase, copied only when it has capitals (ids and names mostly have none).
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { Cow::Borrowed(s) }
}

impl Directory {
    /// The directory of the vaults `layouts` places (in that order: estate `i` is `layouts[i]`).
    pub fn new(layouts: &[VaultLayout]) -> Self {
        let mut d = Directory::default();
        for (i, l) in layouts.iter().enumerate() {
            if l.subscription == d.subscriptions.len() {
                d.positions.insert(l.subscription_id.to_ascii_lowercase(), l.subscription);
                d.subscriptions.push(Subscription {
                    id: l.subscription_id.clone(),
                    first_vault: i,
                    vaults: HashMap::new(),
                    app_groups: HashMap::new(),
                    provider_jobs: HashMap::new(),
                });
            }
            let sub = &mut d.subscriptions[l.subscription];
            sub.vaults
                .entry(l.resource_group.to_ascii_lowercase())
                .or_default()
                .insert(l.vault.to_ascii_lowercase(), i);
            for app in &l.app_resource_groups {
                sub.app_groups.insert(app.to_ascii_lowercase(), i);
            }
        }
        d
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// The id of subscription `i` (the first's if there is no such subscription).
    pub fn subscription_id(&self, i: usize) -> &str {
        &self.subscriptions.get(i).unwrap_or(&self.subscriptions[0]).id
    }

    /// The position of subscription `id`, if served.
    pub fn subscription(&self, id: &str) -> Option<usize> {
        self.positions.get(lower(id).as_ref()).copied()
    }

    /// The subscription whose ARM budget a request naming `id` draws on: that one if served,
    /// else the first (a request that names no served subscription is still a request of this
    /// client, and ARM would not serve it for free).
    pub fn budget_of(&self, id: Option<&str>) -> usize {
        id.and_then(|id| self.subscription(id)).unwrap_or(0)
    }

    /// The estate that serves `a`, or what is missing.
    pub fn estate_of(&self, a: &Addressed) -> Result<usize, Miss> {
        let position = self.subscription(&a.subscription).ok_or_else(|| Miss::Subscription(a.subscription.clone()))?;
        let sub = &self.subscriptions[position];
        match &a.scope {
            Scope::Vault(rg, vault) => sub
                .vaults
                .get(lower(rg).as_ref())
                .ok_or_else(|| Miss::ResourceGroup(rg.clone()))?
                .get(lower(vault).as_ref())
                .copied()
                .ok_or_else(|| Miss::Vault(vault.clone())),
            Scope::ResourceGroup(rg) => Ok(sub.app_groups.get(lower(rg).as_ref()).copied().unwrap_or(sub.first_vault)),
            Scope::Subscription => {
                let job = match &a.route {
                    Route::ProviderOperationStatus(_, job) | Route::ProviderOperationResult(_, _, job) => job,
                    _ => return Ok(sub.first_vault),
                };
                Ok(sub.provider_jobs.get(lower(job).as_ref()).copied().unwrap_or(sub.first_vault))
            }
        }
    }

    /// Notes that estate `estate`, in subscription `sub`, runs the provider operation `job`.
    pub fn note_provider_job(&mut self, sub: usize, job: &str, estate: usize) {
        if let Some(s) = self.subscriptions.get_mut(sub) {
            s.provider_jobs.insert(job.to_ascii_lowercase(), estate);
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
