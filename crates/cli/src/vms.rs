//! `tern vms`: the vault's replicated items, the way the Azure portal's "Replicated items" page
//! lists them, each with its readiness for failback.
//!
//! ASR is read directly through `tern-asr` (the `tern up` simulator, or Azure with the usual
//! credential chain); readiness comes from the planner's `Preflight`, the very checks a plan
//! runs, so `tern vms` and `tern plan` never disagree. Without a planner the items are still
//! listed, their readiness `unknown`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tern_asr::config::AZURE_PUBLIC_CLOUD;
use tern_asr::model::{ProtectedItem, RecoveryPoint, parse_time};
use tern_asr::{AsrClient, AsrConfig, Budget, BudgetConfig, LocalBudget, TokenProvider};
use tern_proto::{NameList, PlanSpec, PreflightCheck, PreflightRequest, Readiness, Selection, VmPreflight, selection};

use crate::output::{Format, Paint, human_secs, print_document, rfc3339};
use crate::plan::{Target, status};

/// `tern vms [--state STATE]` lists; `tern vms show NAME` shows one VM in full.
#[derive(clap::Args, Debug)]
pub struct VmsArgs {
    #[command(subcommand)]
    command: Option<VmsCommand>,
    /// Only VMs in this protection state (ASR's protectionState or its description, any case,
    /// e.g. Protected, FailoverCommitted) or of this readiness: ready, warning, blocked, unknown.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// ARM id of the Recovery Services vault (default: the `tern up` stack's).
    #[arg(long, value_name = "ID", global = true)]
    vault: Option<String>,
    /// ARM endpoint, e.g. a sovereign cloud's (default: the `tern up` stack's simulator for its
    /// vault, else Azure's public cloud).
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

/// Runs `tern vms`; returns the exit code.
pub async fn run(target: &Target, args: VmsArgs) -> anyhow::Result<u8> {
    let (vault_id, asr) = connect(target, &args).await?;
    let where_ = || format!("reading vault {vault_id} at {}", asr.config().base());
    if let Some(VmsCommand::Show { name }) = &args.command {
        let item = find(&asr, name).await.with_context(where_)?.ok_or_else(|| {
            anyhow!("no replicated VM named {name:?} in vault {}: `tern vms` lists them", asr.config().vault)
        })?;
        let points = asr.recovery_points(&item.id).await.with_context(where_)?;
        let mut vms = vec![vm(&item)];
        readiness(target, &vault_id, &mut vms).await;
        let detail = detail(vms.remove(0), &item, &points);
        match args.output {
            Format::Table => print_detail(&detail),
            f => print_document(f, &serde_json::to_value(&detail)?)?,
        }
        return Ok(0);
    }
    let mut items = asr.list_items(None, None).await.with_context(where_)?;
    items.sort_by_cached_key(|i| i.friendly_name().to_ascii_lowercase());
    let wanted = args.state.as_deref().map(squash);
    let by_readiness = wanted.as_deref().is_some_and(|s| ["ready", "warning", "blocked", "unknown"].contains(&s));
    if let Some(s) = wanted.as_deref().filter(|_| !by_readiness) {
        items.retain(|i| {
            squash(i.protection_state()) == s
                || i.properties.protection_state_description.as_deref().is_some_and(|d| squash(d) == s)
        });
    }
    let mut vms: Vec<Vm> = items.iter().map(vm).collect();
    readiness(target, &vault_id, &mut vms).await;
    if let Some(s) = wanted.as_deref().filter(|_| by_readiness) {
        vms.retain(|v| v.readiness == s);
    }
    match args.output {
        Format::Table if vms.is_empty() => match &args.state {
            Some(s) => eprintln!("no replicated VM in vault {vault_id} is {s:?}"),
            None => eprintln!("vault {vault_id} has no replicated VM"),
        },
        Format::Table => print_list(&vms),
        f => print_document(f, &serde_json::json!({ "vault_id": vault_id, "vms": vms }))?,
    }
    Ok(0)
}

/// Lower case without spaces, so `Failover committed` matches `FailoverCommitted`.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace() && *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

/// The vault to read (`--vault`, else the stack's, else the config file's) and a client for it:
/// the stack's simulator with a fixed token, or Azure with the Azure credential chain.
async fn connect(target: &Target, args: &VmsArgs) -> anyhow::Result<(String, AsrClient)> {
    let file = target.data_dir().join("endpoints.json");
    let endpoints: serde_json::Value = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let field = |k: &str| endpoints[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let configured = || target.resolve().ok().and_then(|stack| stack.vault_id);
    let vault_id = args.vault.clone().or_else(|| field("vault_id")).or_else(configured).ok_or_else(|| {
        anyhow!(
            "no Tern stack found: {} does not exist. Start one with `tern up`, or pass --vault with the \
             Recovery Services vault's ARM id (signed in to Azure, e.g. with `az login`)",
            file.display()
        )
    })?;
    let (subscription, group, vault) = parse_vault(&vault_id)?;
    let stack_vault = field("vault_id").is_some_and(|v| v.eq_ignore_ascii_case(&vault_id));
    let sim = field("sim_url").filter(|_| stack_vault);
    let endpoint = args.arm_endpoint.clone().or(sim.clone()).unwrap_or_else(|| AZURE_PUBLIC_CLOUD.into());
    let tokens = match sim.filter(|s| *s == endpoint) {
        Some(_) => TokenProvider::static_token("tern-cli"),
        None => TokenProvider::from_env(&format!("{}/.default", endpoint.trim_end_matches('/')))
            .context("no usable Azure credential")?,
    };
    let config = AsrConfig { endpoint, ..AsrConfig::for_vault(&subscription, &group, &vault) };
    // The CLI's few reads keep to a budget of its own: the fleet budget's bucket is the services'
    // to write (the CLI reads the bus as the events-reader).
    let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(BudgetConfig::default()));
    let asr = AsrClient::new(config, tokens, budget).map_err(|e| anyhow!("{e}: check --arm-endpoint and --vault"))?;
    Ok((vault_id, asr))
}

/// Subscription, resource group and name of a vault's ARM id.
fn parse_vault(id: &str) -> anyhow::Result<(String, String, String)> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let is = |i: usize, word: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(word));
    if parts.len() != 8
        || parts.iter().any(|p| p.is_empty())
        || !(is(0, "subscriptions") && is(2, "resourceGroups") && is(4, "providers"))
        || !(is(5, "Microsoft.RecoveryServices") && is(6, "vaults"))
    {
        bail!(
            "{id:?} is not a Recovery Services vault's ARM id: write \
             /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.RecoveryServices/vaults/NAME"
        );
    }
    Ok((parts[1].to_owned(), parts[3].to_owned(), parts[7].to_owned()))
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

/// ASR's view of one item.
fn vm(item: &ProtectedItem) -> Vm {
    let p = &item.properties;
    let a2a = p.provider_specific_details.clone().unwrap_or_default();
    let on_recovery = item.active_location().eq_ignore_ascii_case("Recovery");
    let active = if on_recovery { a2a.recovery_fabric_location } else { a2a.primary_fabric_location };
    let last_drill = p.last_successful_test_failover_time.as_deref().and_then(parse_time).filter(|t| t.year() > 1753);
    Vm {
        name: item.friendly_name().to_owned(),
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
async fn readiness(target: &Target, vault_id: &str, vms: &mut [Vm]) {
    if vms.is_empty() {
        return;
    }
    let ids = vms.iter().map(|v| v.protected_item_id.clone()).collect();
    let found = match preflight(target, vault_id, ids).await {
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

/// The planner's preflight of these items.
async fn preflight(target: &Target, vault_id: &str, ids: Vec<String>) -> anyhow::Result<Vec<VmPreflight>> {
    let stack = target.resolve()?;
    let mut grpc = stack.client().await?;
    let by = selection::By::ProtectedItemIds(NameList { values: ids });
    let spec =
        PlanSpec { vault_id: vault_id.to_owned(), selection: Some(Selection { by: Some(by) }), ..Default::default() };
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

/// Aligned columns (the last one unpadded); `paint` colours a padded cell of column `i`.
fn print_table(head: &[&str], rows: &[Vec<String>], paint: impl Fn(usize, &str, String) -> String) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let pad = |i: usize, s: &str| if i + 1 == head.len() { s.to_owned() } else { format!("{s:<w$}", w = widths[i]) };
    let header: Vec<String> = head.iter().enumerate().map(|(i, h)| pad(i, h)).collect();
    println!("{}", Paint::stdout().bold(&header.join("  ")));
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, c)| paint(i, c, pad(i, c))).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// Colour for a readiness or health word.
fn tint(paint: Paint, word: &str, padded: String) -> String {
    match word.to_ascii_lowercase().as_str() {
        "ready" | "normal" => paint.green(&padded),
        "warning" => paint.yellow(&padded),
        "blocked" | "critical" => paint.red(&padded),
        "unknown" | "-" => paint.dim(&padded),
        _ => padded,
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

fn print_list(vms: &[Vm]) {
    let paint = Paint::stdout();
    let head = ["NAME", "STATE", "HEALTH", "ACTIVE", "RPO", "LAST DRILL", "READINESS", "REASON"];
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            let state = if v.protection_state_description.is_empty() {
                &v.protection_state
            } else {
                &v.protection_state_description
            };
            vec![
                v.name.clone(),
                or_dash(state),
                or_dash(&v.replication_health),
                or_dash(&v.active_location),
                v.rpo_seconds.map_or("-".into(), |s| human_secs(s as f64)),
                v.last_drill.clone().unwrap_or_else(|| "never".into()),
                v.readiness.to_owned(),
                brief_reason(v),
            ]
        })
        .collect();
    print_table(&head, &rows, |i, word, padded| if i == 2 || i == 6 { tint(paint, word, padded) } else { padded });
    let count = |r: &str| vms.iter().filter(|v| v.readiness == r).count();
    let mut sum = format!(
        "{} VMs: {} ready, {} warning, {} blocked",
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
    let line =
        |k: &str, val: String| println!("{:<24}{val}", if k.is_empty() { String::new() } else { format!("{k}:") });
    line("VM", paint.bold(&v.name));
    line("Protection state", or_dash(&v.protection_state));
    line("Replication health", tint(paint, &v.replication_health, or_dash(&v.replication_health)));
    for e in &v.health_errors {
        line("", format!("{} {} — {}", e.code, e.message, e.recommended_action));
    }
    line("Active location", format!("{} (home {})", or_dash(&v.active_location), or_dash(&v.home_location)));
    line("RPO", v.rpo_seconds.map_or("-".into(), |s| human_secs(s as f64)));
    line("Last successful drill", v.last_drill.clone().unwrap_or_else(|| "never".into()));
    line("Readiness for failback", tint(paint, v.readiness, v.readiness.to_owned()));
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
    print_table(&["NAME", "TYPE", "STATE", "CAPACITY", "TARGET DISK TYPE"], &rows, |_, _, p| p);

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
    print_table(&["TIME", "TYPE", "SYNC", "DISKS"], &rows, |_, _, p| p);
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
    let rows: Vec<Vec<String>> =
        v.checks.iter().map(|c| vec![c.name.clone(), c.result.to_owned(), c.detail.clone()]).collect();
    print_table(&["CHECK", "RESULT", "DETAIL"], &rows, |i, w, p| if i == 1 { tint(paint, w, p) } else { p });
}
