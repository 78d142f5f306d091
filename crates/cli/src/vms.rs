//! `tern vms`: the vault's replicated items, the way the Azure portal's "Replicated items" page
//! lists them, each with its readiness for failback — of one vault, several (`--vault`
//! repeated) or every vault of the stack (`--all-vaults`).
//!
//! ASR is read directly through `tern-asr` (the `tern up` simulator, or Azure with the usual
//! credential chain), each vault with its own client and all of them at once; readiness comes
//! from the planner's `Preflight` (one request over every vault shown), the very checks a plan
//! runs, so `tern vms` and `tern plan` never disagree. Without a planner the items are still
//! listed, their readiness `unknown`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tern_asr::config::AZURE_PUBLIC_CLOUD;
use tern_asr::model::{ProtectedItem, RecoveryPoint, parse_time};
use tern_asr::{AsrClient, AsrConfig, Budget, BudgetConfig, LocalBudget, TokenProvider};
use tern_proto::{NameList, PlanSpec, PreflightCheck, PreflightRequest, Readiness, Selection, VmPreflight, selection};

use crate::output::{self, Format, Paint, human_secs, print_document, rfc3339};
use crate::plan::{Target, status};
use crate::vault::VaultArgs;

/// `tern vms [--state STATE]` lists; `tern vms show NAME` shows one VM in full.
#[derive(clap::Args, Debug)]
pub struct VmsArgs {
    #[command(subcommand)]
    command: Option<VmsCommand>,
    /// Only VMs in this protection state (ASR's protectionState or its description, any case,
    /// e.g. Protected, FailoverCommitted) or of this readiness: ready, warning, blocked, unknown.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    #[command(flatten)]
    vaults: VaultArgs,
    /// ARM endpoint, e.g. a sovereign cloud's (default: the `tern up` stack's simulator for its
    /// vaults, else Azure's public cloud).
    #[arg(long, value_name = "URL", global = true)]
    arm_endpoint: Option<String>,
    /// table, json or yaml.
    #[arg(long, short = 'o', value_enum, default_value_t, global = true)]
    output: Format,
}

#[derive(clap::Subcommand, Debug)]
enum VmsCommand {
    /// One VM: disks, recovery points, target settings and every preflight check.
    Show {
        /// The VM's name (the replicated item's friendly name).
        name: String,
    },
}

/// One replicated VM, as listed (the JSON field names are these).
#[derive(Serialize, Debug)]
struct Vm {
    name: String,
    /// The vault its item is in (ARM id), and that vault's subscription.
    vault_id: String,
    subscription_id: String,
    protected_item_id: String,
    protection_state: String,
    protection_state_description: String,
    replication_health: String,
    health_errors: Vec<HealthIssue>,
    /// Region the VM runs in now; `home_location` is where failback takes it.
    active_location: String,
    home_location: String,
    rpo_seconds: Option<i64>,
    last_drill: Option<String>,
    /// ready, warning, blocked, or unknown (no planner answered).
    readiness: &'static str,
    /// The checks that decided the readiness, when not ready: `check: detail; …`.
    reason: Option<String>,
    checks: Vec<Check>,
}
#[derive(Serialize, Debug)]
struct HealthIssue {
    code: String,
    message: String,
    recommended_action: String,
}

#[derive(Serialize, Debug)]
struct Check {
    name: String,
    result: &'static str,
    detail: String,
}

/// `tern vms show`: the VM plus what the portal's item page shows.
#[derive(Serialize, Debug)]
struct Detail {
    #[serde(flatten)]
    vm: Vm,
    disks: Vec<Disk>,
    recovery_points: Vec<Point>,
    target: TargetSettings,
}

#[derive(Serialize, Debug)]
struct Disk {
    name: String,
    disk_type: String,
    state: String,
    /// Replication progress of this disk while it is not Protected yet (per disk: ASR's
    /// item-level figure goes stale).
    sync_percent: Option<i64>,
    capacity_bytes: Option<i64>,
    recovery_target_disk_type: Option<String>,
    recovery_replica_disk_type: Option<String>,
}

#[derive(Serialize, Debug)]
struct Point {
    time: String,
    /// app-consistent or crash-consistent.
    consistency: &'static str,
    sync_type: Option<String>,
    /// Of the VM's disks, how many the point covers (`None`: ASR did not say).
    disks_covered: Option<usize>,
    disks_total: usize,
    id: String,
}

/// Where a failover of the item lands, as its last reprotect set it up (ARM ids).
#[derive(Serialize, Debug)]
struct TargetSettings {
    region: Option<String>,
    resource_group: Option<String>,
    availability_zone: Option<String>,
    availability_set: Option<String>,
    proximity_placement_group: Option<String>,
    capacity_reservation_group: Option<String>,
    vm_size: Option<String>,
    network: Option<String>,
}

/// One vault being read: its ARM id, where it lives, and a client at it.
struct Vault {
    id: String,
    subscription: String,
    name: String,
    asr: AsrClient,
}

impl Vault {
    fn reading(&self) -> String {
        format!("reading vault {} at {}", self.id, self.asr.config().base())
    }
}

/// Runs `tern vms`; returns the exit code.
pub async fn run(target: &Target, args: VmsArgs) -> anyhow::Result<u8> {
    let (vaults, more) = connect(target, &args).await?;
    if let Some(VmsCommand::Show { name }) = &args.command {
        return show(target, &vaults, more, name, args.output).await;
    }
    let listed = across(&vaults, |asr| async move { asr.list_items(None, None).await }).await;
    let mut items: Vec<(usize, ProtectedItem)> = Vec::new();
    for (i, list) in listed.into_iter().enumerate() {
        items.extend(list?.into_iter().map(|item| (i, item)));
    }
    items.sort_by_cached_key(|(i, item)| (*i, item.friendly_name().to_ascii_lowercase()));
    let wanted = args.state.as_deref().map(squash);
    let by_readiness = wanted.as_deref().is_some_and(|s| ["ready", "warning", "blocked", "unknown"].contains(&s));
    if let Some(s) = wanted.as_deref().filter(|_| !by_readiness) {
        items.retain(|(_, i)| {
            squash(i.protection_state()) == s
                || i.properties.protection_state_description.as_deref().is_some_and(|d| squash(d) == s)
        });
    }
    let mut vms: Vec<Vm> = items.iter().map(|(i, item)| vm(item, &vaults[*i])).collect();
    let ids: Vec<&str> = vaults.iter().map(|v| v.id.as_str()).collect();
    readiness(target, &ids, &mut vms).await;
    if let Some(s) = wanted.as_deref().filter(|_| by_readiness) {
        vms.retain(|v| v.readiness == s);
    }
    let where_ = match ids.as_slice() {
        [one] => format!("vault {one}"),
        many => format!("the {} vaults", many.len()),
    };
    match args.output {
        Format::Table if vms.is_empty() => match &args.state {
            Some(s) => eprintln!("no replicated VM in {where_} is {s:?}"),
            None if ids.len() == 1 => eprintln!("{where_} has no replicated VM"),
            None => eprintln!("{where_} have no replicated VM"),
        },
        Format::Table => print_list(&vms, (ids.len() > 1).then(|| vault_labels(ids.iter().copied())).as_ref()),
        f => print_document(f, &serde_json::json!({ "vault_id": ids[0], "vault_ids": ids, "vms": vms }))?,
    }
    Ok(0)
}

/// `tern vms show NAME`: the VM of that name in the vaults read — in exactly one of them.
async fn show(target: &Target, vaults: &[Vault], more: usize, name: &str, output: Format) -> anyhow::Result<u8> {
    let found = across(vaults, |asr| {
        let name = name.to_owned();
        async move { find(&asr, &name).await }
    })
    .await;
    let mut hits = Vec::new();
    for (i, item) in found.into_iter().enumerate() {
        hits.extend(item?.map(|item| (vaults[i].id.clone(), (i, item))));
    }
    let names: Vec<&str> = vaults.iter().map(|v| v.name.as_str()).collect();
    let (_, (i, item)) = the_one(name, hits, &names, more)?;
    let vault = &vaults[i];
    let points = vault.asr.recovery_points(&item.id).await.with_context(|| vault.reading())?;
    let mut vms = vec![vm(&item, vault)];
    readiness(target, &[vault.id.as_str()], &mut vms).await;
    let detail = detail(vms.remove(0), &item, &points);
    match output {
        Format::Table => print_detail(&detail),
        f => print_document(f, &serde_json::to_value(&detail)?)?,
    }
    Ok(0)
}

/// The one match of `name` among what the vaults `searched` (their names) held, as (vault id,
/// match): none or several is an error saying where it looked, or which vaults hold it and how
/// to choose. `more` is how many vaults of the stack were not searched.
fn the_one<T>(name: &str, mut hits: Vec<(String, T)>, searched: &[&str], more: usize) -> anyhow::Result<(String, T)> {
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => {
            let where_ = match searched {
                [one] => format!("vault {one}"),
                many => format!("the {} vaults", many.len()),
            };
            let hint = if more > 0 {
                format!("; --all-vaults looks in every vault of the stack ({} more)", more)
            } else {
                String::new()
            };
            bail!("no replicated VM named {name:?} in {where_}: `tern vms` lists them{hint}")
        }
        n => {
            let ids: Vec<&str> = hits.iter().map(|(id, _)| id.as_str()).collect();
            bail!(
                "{name:?} is protected in {n} vaults ({}): pass --vault with the ARM id of the one to show",
                ids.join(", ")
            )
        }
    }
}

/// `op` on each vault's client, all at once; the answers in the vaults' order, each error
/// saying which vault it came from.
async fn across<T, E, F, Fut>(vaults: &[Vault], op: F) -> Vec<anyhow::Result<T>>
where
    T: Send + 'static,
    F: Fn(AsrClient) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    let tasks: Vec<_> = vaults.iter().map(|v| tokio::spawn(op(v.asr.clone()))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (vault, task) in vaults.iter().zip(tasks) {
        let answer = match task.await {
            Ok(answer) => answer.map_err(Into::into),
            Err(e) => Err(anyhow!("the read stopped: {e}")),
        };
        out.push(answer.with_context(|| vault.reading()));
    }
    out
}

/// Lower case without spaces, so `Failover committed` matches `FailoverCommitted`.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace() && *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

/// The vaults to read — `--vault` (repeatable), every vault of the stack (`--all-vaults`), else
/// the stack's own, else the config file's — each with a client: the stack's simulator with a
/// fixed token for the stack's vaults, Azure with the Azure credential chain for others. Also
/// how many of the stack's vaults were left out (for hints).
async fn connect(target: &Target, args: &VmsArgs) -> anyhow::Result<(Vec<Vault>, usize)> {
    let file = target.data_dir().join("endpoints.json");
    let endpoints: serde_json::Value = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let field = |k: &str| endpoints[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let stack = target.resolve().ok();
    let own = field("vault_id").or_else(|| stack.as_ref().and_then(|s| s.vault_id.clone()));
    // Every vault of the stack, its own first.
    let mut estate: Vec<String> = own.iter().cloned().collect();
    estate.extend(stack.iter().flat_map(|s| s.vaults.iter().cloned()));
    let estate = distinct(estate);
    let defaults = stack.as_ref().map(|s| s.defaults.clone()).unwrap_or_default();
    let named = args.vaults.named(&defaults, own.as_deref())?;
    let chosen = if args.vaults.all_vaults {
        estate.clone()
    } else if !named.is_empty() {
        distinct(named)
    } else {
        own.into_iter().collect()
    };
    if chosen.is_empty() {
        return Err(crate::exit::unreachable(format!(
            "no Tern stack found: {} does not exist. Start one with `tern up`, or pass --vault with the \
             Recovery Services vault's ARM id (signed in to Azure, e.g. with `az login`){}",
            file.display(),
            if args.vaults.all_vaults { ", or list them as `vaults` in the config file" } else { "" }
        )));
    }
    let more = estate.iter().filter(|v| !chosen.iter().any(|c| c.eq_ignore_ascii_case(v))).count();
    // The stack's simulator serves the stack's vaults; other vaults are Azure's.
    let mut served: Vec<String> = field("vault_id").into_iter().collect();
    served.extend(endpoints["vaults"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)));
    let sim = field("sim_url");
    // The CLI's few reads keep to a budget of its own: the fleet budget's bucket is the services'
    // to write (the CLI reads the bus as the events-reader).
    let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(BudgetConfig::default()));
    let mut clients: HashMap<String, AsrClient> = HashMap::new();
    let mut vaults = Vec::with_capacity(chosen.len());
    for id in chosen {
        let (subscription, group, name) = parse_vault(&id)?;
        let in_stack = served.iter().any(|v| same_vault(v, &id));
        let sim = sim.clone().filter(|_| in_stack);
        let endpoint = args.arm_endpoint.clone().or(sim.clone()).unwrap_or_else(|| AZURE_PUBLIC_CLOUD.into());
        let asr = match clients.get(&endpoint) {
            // Another vault at the same endpoint: the same connection, credentials and budget.
            Some(client) => client.for_vault(&id).map_err(|e| anyhow!("{e}: check --vault"))?,
            None => {
                let tokens = match sim.filter(|s| *s == endpoint) {
                    Some(_) => TokenProvider::static_token("tern-cli"),
                    None => TokenProvider::from_env(&format!("{}/.default", endpoint.trim_end_matches('/')))
                        .context("no usable Azure credential")?,
                };
                let config =
                    AsrConfig { endpoint: endpoint.clone(), ..AsrConfig::for_vault(&subscription, &group, &name) };
                let client = AsrClient::new(config, tokens, budget.clone())
                    .map_err(|e| anyhow!("{e}: check --arm-endpoint and --vault"))?;
                clients.insert(endpoint, client.clone());
                client
            }
        };
        vaults.push(Vault { id, subscription, name, asr });
    }
    Ok((vaults, more))
}

/// Vault ids without repeats (ARM compares ids without case) or trailing slashes, in order.
fn distinct(ids: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.trim().trim_end_matches('/').to_owned();
        if !id.is_empty() && !out.iter().any(|o| same_vault(o, &id)) {
            out.push(id);
        }
    }
    out
}

fn same_vault(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// How people tell vaults apart, by lower-case ARM id: a vault's name, or `subscription/name`
/// where two of `ids` share a name (the subscription as short as still tells them apart), with
/// the resource group too where even that does not. An id that is not a vault's stays as it is.
pub fn vault_labels<'a>(ids: impl IntoIterator<Item = &'a str>) -> HashMap<String, String> {
    let vaults: Vec<(&str, (String, String, String))> =
        ids.into_iter().filter_map(|id| Some((id, parse_vault(id).ok()?))).collect();
    let mut out = HashMap::new();
    for (id, (sub, group, name)) in &vaults {
        let twins: Vec<&str> =
            vaults.iter().filter(|(_, o)| o.2.eq_ignore_ascii_case(name)).map(|(_, o)| o.0.as_str()).collect();
        let label = if twins.len() == 1 {
            name.clone()
        } else {
            let short = short_subscription(sub, &twins);
            match twins.iter().filter(|t| t.eq_ignore_ascii_case(sub)).count() {
                1 => format!("{short}/{name}"),
                _ => format!("{short}/{group}/{name}"),
            }
        };
        out.insert(id.to_ascii_lowercase(), label);
    }
    out
}

/// A subscription id as short as tells it from `others`: its first 8 characters, else its
/// last group (a GUID's last 12), else all of it.
fn short_subscription(id: &str, others: &[&str]) -> String {
    let distinct = |cut: &dyn Fn(&str) -> String| {
        let mine = cut(id);
        others.iter().filter(|o| !o.eq_ignore_ascii_case(id)).all(|o| !cut(o).eq_ignore_ascii_case(&mine))
    };
    let head = |s: &str| s.chars().take(8).collect::<String>();
    let tail = |s: &str| s.rsplit('-').next().unwrap_or(s).to_owned();
    if distinct(&head) {
        head(id)
    } else if distinct(&tail) {
        tail(id)
    } else {
        id.to_owned()
    }
}

/// Subscription, resource group and name of a vault's ARM id.
fn parse_vault(id: &str) -> anyhow::Result<(String, String, String)> {
    tern_asr::config::parse_vault_id(id).map_err(anyhow::Error::msg)
}

/// The item of the VM called `name`: by item name first (a few reads), else by friendly name.
async fn find(asr: &AsrClient, name: &str) -> anyhow::Result<Option<ProtectedItem>> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if plain && let Some(item) = asr.find_item(name, None).await? {
        return Ok(Some(item));
    }
    let items = asr.list_items(None, None).await?;
    Ok(items.into_iter().find(|i| i.friendly_name().eq_ignore_ascii_case(name) || i.name == name))
}

/// ASR's view of one item of `vault`.
fn vm(item: &ProtectedItem, vault: &Vault) -> Vm {
    let p = &item.properties;
    let a2a = p.provider_specific_details.clone().unwrap_or_default();
    let on_recovery = item.active_location().eq_ignore_ascii_case("Recovery");
    let active = if on_recovery { a2a.recovery_fabric_location } else { a2a.primary_fabric_location };
    let last_drill = p.last_successful_test_failover_time.as_deref().and_then(parse_time).filter(|t| t.year() > 1753);
    Vm {
        name: item.friendly_name().to_owned(),
        vault_id: vault.id.clone(),
        subscription_id: vault.subscription.clone(),
        protected_item_id: item.id.clone(),
        protection_state: item.protection_state().to_owned(),
        protection_state_description: p.protection_state_description.clone().unwrap_or_default(),
        replication_health: p.replication_health.clone().unwrap_or_default(),
        health_errors: p
            .health_errors
            .iter()
            .map(|e| HealthIssue {
                code: e.error_code.clone().unwrap_or_default(),
                message: e.error_message.clone().or(e.summary_message.clone()).unwrap_or_default(),
                recommended_action: e.recommended_action.clone().unwrap_or_default(),
            })
            .collect(),
        active_location: active.unwrap_or_else(|| item.active_location().to_owned()),
        home_location: a2a.initial_primary_fabric_location.unwrap_or_default(),
        rpo_seconds: a2a.rpo_in_seconds,
        last_drill: last_drill.map(|t| rfc3339(t.unix_timestamp() as f64)),
        readiness: "unknown",
        reason: None,
        checks: Vec::new(),
    }
}

fn readiness_word(r: i32) -> &'static str {
    match Readiness::try_from(r) {
        Ok(Readiness::Ready) => "ready",
        Ok(Readiness::Warning) => "warning",
        Ok(Readiness::Blocked) => "blocked",
        _ => "unknown",
    }
}

/// Fills in each VM's readiness from the planner's preflight; on failure says so on stderr and
/// leaves them `unknown`.
async fn readiness(target: &Target, vaults: &[&str], vms: &mut [Vm]) {
    if vms.is_empty() {
        return;
    }
    let ids = vms.iter().map(|v| v.protected_item_id.clone()).collect();
    let found = match preflight(target, vaults, ids).await {
        Ok(found) => found,
        Err(e) => return eprintln!("tern: readiness unknown, the planner's preflight failed: {e:#}"),
    };
    let by_id: HashMap<String, &VmPreflight> =
        found.iter().filter_map(|p| Some((p.vm.as_ref()?.protected_item_id.to_ascii_lowercase(), p))).collect();
    for vm in vms {
        let Some(pre) = by_id.get(&vm.protected_item_id.to_ascii_lowercase()) else { continue };
        vm.readiness = readiness_word(pre.readiness);
        vm.checks = pre
            .checks
            .iter()
            .map(|c| Check { name: c.name.clone(), result: readiness_word(c.result), detail: c.detail.clone() })
            .collect();
        let decisive = |c: &&PreflightCheck| c.result == pre.readiness && pre.readiness != Readiness::Ready as i32;
        let why: Vec<String> =
            pre.checks.iter().filter(decisive).map(|c| format!("{}: {}", c.name, c.detail)).collect();
        vm.reason = (!why.is_empty()).then(|| why.join("; "));
    }
}

/// The planner's preflight of these items, of these vaults: one request over all of them.
async fn preflight(target: &Target, vaults: &[&str], ids: Vec<String>) -> anyhow::Result<Vec<VmPreflight>> {
    let stack = target.resolve()?;
    let mut grpc = stack.client().await?;
    let by = selection::By::ProtectedItemIds(NameList { values: ids });
    let (first, more) = vaults.split_first().ok_or_else(|| anyhow!("no vault to preflight"))?;
    let spec = PlanSpec {
        vault_id: (*first).to_owned(),
        vault_ids: more.iter().map(|v| (*v).to_owned()).collect(),
        selection: Some(Selection { by: Some(by) }),
        ..Default::default()
    };
    Ok(grpc.preflight(PreflightRequest { spec: Some(spec) }).await.map_err(status)?.into_inner().vms)
}

fn detail(vm: Vm, item: &ProtectedItem, points: &[RecoveryPoint]) -> Detail {
    let a2a = item.properties.provider_specific_details.clone().unwrap_or_default();
    let mut disks: Vec<Disk> = a2a
        .protected_managed_disks
        .iter()
        .map(|d| Disk {
            name: d.disk_name.clone().unwrap_or_default(),
            disk_type: d.disk_type.clone().unwrap_or_default(),
            state: d.disk_state.clone().unwrap_or_default(),
            sync_percent: d.monitoring_percentage_completion.filter(|_| d.disk_state.as_deref() != Some("Protected")),
            capacity_bytes: d.disk_capacity_in_bytes,
            recovery_target_disk_type: d.recovery_target_disk_account_type.clone(),
            recovery_replica_disk_type: d.recovery_replica_disk_account_type.clone(),
        })
        .collect();
    disks.extend(a2a.protected_disks.iter().map(|d| Disk {
        name: d.disk_name.clone().unwrap_or_default(),
        disk_type: d.disk_type.clone().unwrap_or_default(),
        state: d.disk_state.clone().unwrap_or_default(),
        sync_percent: d.monitoring_percentage_completion.filter(|_| d.disk_state.as_deref() != Some("Protected")),
        capacity_bytes: None,
        recovery_target_disk_type: Some("unmanaged".into()),
        recovery_replica_disk_type: None,
    }));
    let ids: Vec<String> = item.disk_ids().iter().map(|d| d.to_ascii_lowercase()).collect();
    let recovery_points = points
        .iter()
        .map(|p| Point {
            time: p.time().map(|t| rfc3339(t.unix_timestamp() as f64)).unwrap_or_default(),
            consistency: if p.is_app_consistent() { "app-consistent" } else { "crash-consistent" },
            sync_type: p.properties.provider_specific_details.as_ref().and_then(|d| d.recovery_point_sync_type.clone()),
            disks_covered: (!p.disks().is_empty())
                .then(|| p.disks().iter().filter(|d| ids.contains(&d.to_ascii_lowercase())).count()),
            disks_total: ids.len(),
            id: p.id.clone(),
        })
        .collect();
    let target = TargetSettings {
        region: a2a.recovery_fabric_location,
        resource_group: a2a.recovery_azure_resource_group_id,
        availability_zone: a2a.recovery_availability_zone.filter(|z| !z.is_empty()),
        availability_set: a2a.recovery_availability_set,
        proximity_placement_group: a2a.recovery_proximity_placement_group_id,
        capacity_reservation_group: a2a.recovery_capacity_reservation_group_id,
        vm_size: a2a.recovery_azure_vm_size,
        network: a2a.selected_recovery_azure_network_id,
    };
    Detail { vm, disks, recovery_points, target }
}

/// Colour for a readiness or health word.
fn tint(paint: Paint, word: &str) -> String {
    match word.to_ascii_lowercase().as_str() {
        "ready" | "normal" => paint.green(word),
        "warning" => paint.yellow(word),
        "blocked" | "critical" => paint.red(word),
        "unknown" | "-" => paint.dim(word),
        _ => word.to_owned(),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_owned() }
}

/// The first check that decided a VM's readiness, and how many more did (`show` lists them).
fn brief_reason(v: &Vm) -> String {
    let mut decisive = v.checks.iter().filter(|c| c.result == v.readiness && v.readiness != "ready");
    let Some(first) = decisive.next() else { return String::new() };
    match decisive.count() {
        0 => format!("{}: {}", first.name, first.detail),
        more => format!("{}: {} (+{more} more)", first.name, first.detail),
    }
}

/// The list as a table; with `labels` (several vaults shown), a VAULT column after the name.
fn print_list(vms: &[Vm], labels: Option<&HashMap<String, String>>) {
    let paint = Paint::stdout();
    let mut head = vec!["NAME", "STATE", "HEALTH", "ACTIVE", "RPO", "LAST DRILL", "READINESS", "REASON"];
    if labels.is_some() {
        head.insert(1, "VAULT");
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            let state = if v.protection_state_description.is_empty() {
                &v.protection_state
            } else {
                &v.protection_state_description
            };
            let mut row = vec![
                v.name.clone(),
                or_dash(state),
                or_dash(&v.replication_health),
                or_dash(&v.active_location),
                v.rpo_seconds.map_or("-".into(), |s| human_secs(s as f64)),
                v.last_drill.clone().unwrap_or_else(|| "never".into()),
                v.readiness.to_owned(),
                brief_reason(v),
            ];
            if let Some(labels) = labels {
                row.insert(
                    1,
                    labels.get(&v.vault_id.to_ascii_lowercase()).cloned().unwrap_or_else(|| v.vault_id.clone()),
                );
            }
            row
        })
        .collect();
    let (health, readiness) = if labels.is_some() { (3, 7) } else { (2, 6) };
    let mut table = output::table(&head);
    for row in rows {
        table.row(
            row.iter().enumerate().map(|(i, c)| if i == health || i == readiness { tint(paint, c) } else { c.clone() }),
        );
    }
    print!("{table}");
    let count = |r: &str| vms.iter().filter(|v| v.readiness == r).count();
    let vaults = labels.map(|l| format!(" in {} vaults", l.len())).unwrap_or_default();
    let mut sum = format!(
        "{} VMs{vaults}: {} ready, {} warning, {} blocked",
        vms.len(),
        count("ready"),
        count("warning"),
        count("blocked")
    );
    if count("unknown") > 0 {
        sum.push_str(&format!(", {} unknown", count("unknown")));
    }
    println!("{sum}");
}

/// The last segment of an ARM id (what the portal shows); a plain value as it is; `-` for none.
fn short(id: &Option<String>) -> String {
    id.as_deref().and_then(|s| s.trim_end_matches('/').rsplit('/').next()).map_or("-".into(), or_dash)
}

fn print_detail(d: &Detail) {
    let (paint, v) = (Paint::stdout(), &d.vm);
    // Labels and values, not a table: one label width for every section keeps them aligned
    // with each other, and a value may take several lines (health errors).
    let line =
        |k: &str, val: String| println!("{:<24}{val}", if k.is_empty() { String::new() } else { format!("{k}:") });
    line("VM", paint.bold(&v.name));
    line("Protection state", or_dash(&v.protection_state));
    line("Replication health", tint(paint, &or_dash(&v.replication_health)));
    for e in &v.health_errors {
        line("", format!("{} {} — {}", e.code, e.message, e.recommended_action));
    }
    line("Active location", format!("{} (home {})", or_dash(&v.active_location), or_dash(&v.home_location)));
    line("RPO", v.rpo_seconds.map_or("-".into(), |s| human_secs(s as f64)));
    line("Last successful drill", v.last_drill.clone().unwrap_or_else(|| "never".into()));
    line("Readiness for failback", tint(paint, v.readiness));
    line("Vault", v.vault_id.clone());
    line("Protected item", v.protected_item_id.clone());

    println!("\n{}", paint.bold("Disks"));
    let gib = |b: Option<i64>| b.map_or("-".into(), |b| format!("{} GiB", b / (1 << 30)));
    let rows: Vec<Vec<String>> = d
        .disks
        .iter()
        .map(|k| {
            let target = k.recovery_target_disk_type.clone().unwrap_or_else(|| "-".into());
            let state = match k.sync_percent {
                Some(p) => format!("{} ({p}%)", k.state),
                None => k.state.clone(),
            };
            vec![k.name.clone(), k.disk_type.clone(), state, gib(k.capacity_bytes), target]
        })
        .collect();
    let mut table = output::table(&["NAME", "TYPE", "STATE", "CAPACITY", "TARGET DISK TYPE"]);
    for r in rows {
        table.row(r);
    }
    print!("{table}");

    const SHOWN: usize = 10;
    println!("\n{} ({}, newest first)", paint.bold("Recovery points"), d.recovery_points.len());
    let rows: Vec<Vec<String>> = d
        .recovery_points
        .iter()
        .take(SHOWN)
        .map(|p| {
            let covered = p.disks_covered.map_or("?".into(), |c| c.to_string());
            let sync = p.sync_type.clone().unwrap_or_else(|| "-".into());
            vec![p.time.clone(), p.consistency.to_owned(), sync, format!("{covered} of {}", p.disks_total)]
        })
        .collect();
    let mut table = output::table(&["TIME", "TYPE", "SYNC", "DISKS"]);
    for r in rows {
        table.row(r);
    }
    print!("{table}");
    if d.recovery_points.len() > SHOWN {
        let oldest = d.recovery_points.last().map(|p| p.time.as_str()).unwrap_or_default();
        let app = d.recovery_points.iter().find(|p| p.consistency == "app-consistent").map(|p| p.time.as_str());
        println!(
            "… {} more back to {oldest}; latest app-consistent: {} (-o json lists every point)",
            d.recovery_points.len() - SHOWN,
            app.unwrap_or("none")
        );
    }

    println!("\n{}", paint.bold("Target settings (where a failover lands, set by the last reprotect)"));
    let t = &d.target;
    for (k, val) in [
        ("Region", &t.region),
        ("Resource group", &t.resource_group),
        ("Availability zone", &t.availability_zone),
        ("Availability set", &t.availability_set),
        ("Proximity placement", &t.proximity_placement_group),
        ("Capacity reservation", &t.capacity_reservation_group),
        ("VM size", &t.vm_size),
        ("Network", &t.network),
    ] {
        line(k, short(val));
    }

    println!("\n{}", paint.bold("Preflight"));
    if v.checks.is_empty() {
        return println!("no answer from the planner: readiness unknown");
    }
    let mut table = output::table(&["CHECK", "RESULT", "DETAIL"]);
    for c in &v.checks {
        table.row([c.name.clone(), tint(paint, c.result), c.detail.clone()]);
    }
    print!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sub: &str, group: &str, name: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.RecoveryServices/vaults/{name}")
    }

    #[test]
    fn vaults_are_named_by_name_and_told_apart_by_subscription_when_names_repeat() {
        let (s1, s2) = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002");
        let ids = [id(s1, "rg", "tern-vault"), id(s1, "rg", "tern-vault-2"), id(s2, "rg", "tern-vault")];
        let labels = vault_labels(ids.iter().map(String::as_str));
        let of = |i: usize| labels[&ids[i].to_ascii_lowercase()].as_str();
        assert_eq!((of(0), of(1), of(2)), ("000000000001/tern-vault", "tern-vault-2", "000000000002/tern-vault"));
        // Subscriptions that differ early are cut short; one vault name in two resource groups
        // of one subscription needs the group.
        let ids = [id("aaaa1111-x", "rg", "v"), id("bbbb2222-x", "rg", "v"), id("bbbb2222-x", "rg2", "v")];
        let labels = vault_labels(ids.iter().map(String::as_str));
        let of = |i: usize| labels[&ids[i].to_ascii_lowercase()].as_str();
        assert_eq!((of(0), of(1), of(2)), ("aaaa1111/v", "bbbb2222/rg/v", "bbbb2222/rg2/v"));
    }

    #[test]
    fn a_name_in_two_vaults_is_refused_naming_them_and_asking_for_one() {
        let hits =
            vec![("/subscriptions/a/…/vaults/one".to_owned(), 1), ("/subscriptions/b/…/vaults/two".to_owned(), 2)];
        let e = the_one("web-01", hits, &["one", "two"], 0).unwrap_err().to_string();
        assert!(e.contains("\"web-01\" is protected in 2 vaults"), "{e}");
        assert!(e.contains("vaults/one") && e.contains("vaults/two") && e.contains("--vault"), "{e}");
        assert_eq!(the_one("web-01", vec![("v".to_owned(), 7)], &["v"], 0).unwrap().1, 7);
        let e = the_one::<u8>("web-01", Vec::new(), &["tern-vault"], 3).unwrap_err().to_string();
        assert!(e.contains("in vault tern-vault") && e.contains("--all-vaults") && e.contains("3 more"), "{e}");
        let e = the_one::<u8>("web-01", Vec::new(), &["a", "b"], 0).unwrap_err().to_string();
        assert!(e.contains("in the 2 vaults") && !e.contains("--all-vaults"), "{e}");
    }
}
