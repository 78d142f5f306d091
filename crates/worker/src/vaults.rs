//! The vaults a worker acts on: one ASR client and one job watcher per vault, opened when a
//! command first names the vault. A stack serves an estate of many vaults and subscriptions;
//! the service's settings say which (`asr.vaults`), and a command for any other is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tern_asr::AsrClient;
use tern_asr::watcher::{JobWatcher, WatcherOptions};
use tern_proto::VmRef;

/// One vault: the client pointed at it and the watcher of its jobs.
#[derive(Debug, Clone)]
pub struct Vault {
    /// Azure, at this vault.
    pub asr: AsrClient,
    /// Follows this vault's jobs (ASR lists jobs per vault).
    pub watcher: JobWatcher,
}

/// Every vault this process has acted on, by lower-case ARM id.
#[derive(Debug)]
pub struct Vaults {
    home: AsrClient,
    options: WatcherOptions,
    open: Mutex<HashMap<String, Arc<Vault>>>,
}

impl Vaults {
    /// The service's own vault (`home`) and those its settings allow, watched with `options`.
    pub fn new(home: AsrClient, options: WatcherOptions) -> Self {
        let vaults = Self { home, options, open: Mutex::new(HashMap::new()) };
        let _ = vaults.open(&vaults.home.config().vault_id());
        vaults
    }

    /// The service's own vault's client.
    pub fn home(&self) -> &AsrClient {
        &self.home
    }

    /// The vault of `vm`: the one it names, else the one its protected item id lies in, else
    /// the service's own. Refused, naming the setting, when the settings do not allow it.
    pub fn of(&self, vm: &VmRef) -> Result<Arc<Vault>, String> {
        let named = if !vm.vault_id.is_empty() {
            vm.vault_id.clone()
        } else if let Some(vault) = tern_asr::client::vault_of(&vm.protected_item_id) {
            vault.to_owned()
        } else {
            self.home.config().vault_id()
        };
        if !self.home.config().allows(&named) {
            return Err(format!(
                "vault {named} is not one this service acts on (its own is {}; others are listed in asr.vaults)",
                self.home.config().vault_id()
            ));
        }
        self.open(&named)
    }

    fn open(&self, vault_id: &str) -> Result<Arc<Vault>, String> {
        let key = vault_id.trim_end_matches('/').to_ascii_lowercase();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = open.get(&key) {
            return Ok(v.clone());
        }
        let asr = self.home.for_vault(vault_id).map_err(|e| e.to_string())?;
        let watcher = JobWatcher::spawn(asr.clone(), self.options.clone());
        let vault = Arc::new(Vault { asr, watcher });
        open.insert(key, vault.clone());
        Ok(vault)
    }
}
