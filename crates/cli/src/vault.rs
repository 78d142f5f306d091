//! Which vaults a command (`tern plan …`, `tern vms`) draws from: `--vault ID` (repeatable), or the vault as `az` addresses
//! it, `--vault-name NAME` with `-g/--resource-group` and `--subscription`, whose defaults come
//! from the config file (`subscription`, `resource_group`, `vault_name`, as `az config set
//! defaults.group=…` keeps them), else from the stack's own vault; or `--all-vaults`.

use anyhow::bail;

use tern_cli::estate::vault_arm_id;

/// The vault flags of a plan command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VaultArgs {
    /// ARM id of the Recovery Services vault (default: the `tern up` stack's). Repeat to draw
    /// from several vaults, in any subscription the stack acts on.
    #[arg(long, value_name = "ID", global = true)]
    pub vault: Vec<String>,
    /// The vault by name, as `az` names it: with -g/--resource-group and --subscription, which
    /// default to the config file's `resource_group` and `subscription`, else to the stack's
    /// own vault's.
    #[arg(long, value_name = "NAME", global = true, conflicts_with = "vault")]
    pub vault_name: Option<String>,
    /// The resource group of --vault-name.
    #[arg(long, short = 'g', value_name = "GROUP", global = true, requires = "vault_name")]
    pub resource_group: Option<String>,
    /// The subscription id of --vault-name.
    #[arg(long, value_name = "ID", global = true, requires = "vault_name")]
    pub subscription: Option<String>,
    /// Draw from every vault the stack acts on (its own and those its `asr.vaults` lists).
    #[arg(long, global = true, conflicts_with_all = ["vault", "vault_name"])]
    pub all_vaults: bool,
}

/// `az`-like defaults for `--vault-name`, from the config file.
#[derive(serde::Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
    pub vault_name: Option<String>,
}

impl VaultArgs {
    /// The vaults the flags name, as ARM ids, in order; empty when they name none (the caller
    /// then takes its default, or every vault with `all_vaults`). `stack_vault` is the stack's
    /// own vault, whose subscription and group a bare `--vault-name` shares when the config
    /// file sets none.
    pub fn named(&self, defaults: &Defaults, stack_vault: Option<&str>) -> anyhow::Result<Vec<String>> {
        if !self.vault.is_empty() {
            for id in &self.vault {
                tern_asr::config::parse_vault_id(id).map_err(|e| anyhow::anyhow!("--vault: {e}"))?;
            }
            return Ok(self.vault.clone());
        }
        let Some(name) = &self.vault_name else { return Ok(Vec::new()) };
        Ok(vec![by_name(name, self.subscription.as_deref(), self.resource_group.as_deref(), defaults, stack_vault)?])
    }
}

/// The config file's default vault, when it names one by `vault_name`.
pub fn default_vault(defaults: &Defaults, stack_vault: Option<&str>) -> anyhow::Result<Option<String>> {
    match &defaults.vault_name {
        Some(name) => Ok(Some(by_name(name, None, None, defaults, stack_vault)?)),
        None => Ok(None),
    }
}

fn by_name(
    name: &str,
    subscription: Option<&str>,
    group: Option<&str>,
    defaults: &Defaults,
    stack_vault: Option<&str>,
) -> anyhow::Result<String> {
    let stack = stack_vault.and_then(|id| tern_asr::config::parse_vault_id(id).ok());
    let subscription = subscription
        .map(str::to_owned)
        .or_else(|| defaults.subscription.clone())
        .or_else(|| stack.as_ref().map(|(s, _, _)| s.clone()));
    let group = group
        .map(str::to_owned)
        .or_else(|| defaults.resource_group.clone())
        .or_else(|| stack.as_ref().map(|(_, g, _)| g.clone()));
    let Some(subscription) = subscription else {
        bail!("vault {name:?}: which subscription? pass --subscription, or set `subscription` in the config file");
    };
    let Some(group) = group else {
        bail!(
            "vault {name:?}: which resource group? pass -g/--resource-group, or set `resource_group` in the config file"
        );
    };
    let id = vault_arm_id(&subscription, &group, name);
    tern_asr::config::parse_vault_id(&id).map_err(|e| anyhow::anyhow!("vault {name:?}: {e}"))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = "/subscriptions/s1/resourceGroups/rg-dr/providers/Microsoft.RecoveryServices/vaults/v1";

    fn named(args: &[&str], defaults: &Defaults) -> anyhow::Result<Vec<String>> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            vault: VaultArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        cli.vault.named(defaults, Some(STACK))
    }

    #[test]
    fn a_vault_by_name_group_and_subscription_is_the_vault_by_id() {
        let by_id = named(&["--vault", STACK], &Defaults::default()).unwrap();
        let by_name = named(&["--vault-name", "v1", "-g", "rg-dr", "--subscription", "s1"], &Defaults::default());
        assert_eq!(by_name.unwrap(), by_id);
        // The group and subscription default to the config file's, else the stack's vault's.
        assert_eq!(named(&["--vault-name", "v1"], &Defaults::default()).unwrap(), by_id);
        let defaults = Defaults {
            subscription: Some("s2".into()),
            resource_group: Some("rg-2".into()),
            vault_name: Some("v2".into()),
        };
        let other = "/subscriptions/s2/resourceGroups/rg-2/providers/Microsoft.RecoveryServices/vaults/v9";
        assert_eq!(named(&["--vault-name", "v9"], &defaults).unwrap(), [other]);
        assert_eq!(named(&["--vault-name", "v1", "-g", "rg-dr", "--subscription", "s1"], &defaults).unwrap(), by_id);
        assert_eq!(
            default_vault(&defaults, Some(STACK)).unwrap().as_deref(),
            Some("/subscriptions/s2/resourceGroups/rg-2/providers/Microsoft.RecoveryServices/vaults/v2")
        );
        assert!(named(&[], &defaults).unwrap().is_empty(), "nothing named: the caller's default");
    }

    #[test]
    fn a_vault_that_cannot_be_told_is_an_error_naming_what_is_missing() {
        let err = by_name("v1", None, None, &Defaults::default(), None).unwrap_err().to_string();
        assert!(err.contains("--subscription"), "{err}");
        let err = by_name("v1", Some("s1"), None, &Defaults::default(), None).unwrap_err().to_string();
        assert!(err.contains("-g/--resource-group"), "{err}");
        let err = named(&["-g", "rg"], &Defaults::default()).unwrap_err().to_string();
        assert!(err.contains("--vault-name"), "-g alone names no vault: {err}");
        let err = named(&["--vault", "v1"], &Defaults::default()).unwrap_err().to_string();
        assert!(err.contains("not a Recovery Services vault's ARM id"), "{err}");
        let err = named(&["--vault-name", "my vault"], &Defaults::default()).unwrap_err().to_string();
        assert!(err.contains("my vault"), "{err}");
    }
}
