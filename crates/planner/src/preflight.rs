//! Preflight: every check a VM must pass before a plan changes anything, read from Azure.
//!
//! Per VM: protection state, direction (is there anything to fail back?), replication health,
//! sync complete, allowed operations, target resource group reachable, the chosen recovery
//! point and the disks it covers, the cache storage account reprotect will stage data in,
//! another active plan holding the VM, how long ago it was last drilled, and (across the plan,
//! `allocate_capacity`) whether its size is offered and fits the vCPU quota of the region it
//! fails over to. The verdict is the
//! worst check: ready, warning, or blocked with the reason. It also shows the reprotect target
//! settings the VM will get.
//!
//! Sync is judged from what is true on Azure: a running operation, and each disk's state. The
//! item-level `monitoringPercentageCompletion` is never read: ASR leaves it stale (a Protected,
//! healthy item keeps 33 % after its initial replication finished — A2AFailoverCommit-excerpt.json
//! entries 144–145).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use tern_asr::AsrClient;
use tern_asr::model::ProtectedItem;
use tern_asr::point::{PointChoice, ResolvedPoint};
use tern_proto::{Direction, PreflightCheck, Readiness, RecoveryPointUsed, ReprotectTarget, VmPreflight, VmRef};

/// What the plan asks of each VM.
#[derive(Clone, Debug)]
pub struct PreflightOptions {
    /// The recovery point every VM will use.
    pub point: PointChoice,
    /// Failback (back to the region the VM started in) or failover (away from it).
    pub direction: Direction,
    /// A drill (test failover) instead of a real failover.
    pub drill: bool,
    /// A successful drill older than this draws a warning (Microsoft recommends one every six months).
    pub drill_window: time::Duration,
    /// The target resource groups checked so far: VMs sharing a group share one read.
    pub groups: GroupChecks,
    /// Reprotect runs after the failover: the cache storage account it needs is checked.
    pub reprotect: bool,
    /// Where each region's cache storage account comes from, and what checking it found.
    pub cache: CacheAccounts,
}

/// Where a cache storage account was named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSource {
    /// The plan (`reprotect_target`).
    Plan,
    /// The planner's configuration (`asr.cache_storage_accounts`).
    Configuration,
    /// Items of the vault already replicate from that region through it.
    Vault,
}

impl CacheSource {
    fn words(self) -> &'static str {
        match self {
            CacheSource::Plan => "named by the plan",
            CacheSource::Configuration => "from the planner's configuration",
            CacheSource::Vault => "already used by the vault",
        }
    }
}

/// What checking one region's cache storage account found: its description, or why not.
type CheckedAccount = Arc<tokio::sync::OnceCell<Result<String, String>>>;

/// The cache storage accounts of a plan, per region: where each comes from, and (checked once
/// however many VMs run there) whether it exists in that region.
#[derive(Clone, Debug, Default)]
pub struct CacheAccounts {
    /// One account for every VM, whatever its region (the plan's `cache_storage_account_id`).
    pub every_region: Option<String>,
    /// Candidates per normalized region, best first.
    pub candidates: BTreeMap<String, Vec<(String, CacheSource)>>,
    checked: Arc<Mutex<BTreeMap<String, CheckedAccount>>>,
}

impl CacheAccounts {
    /// Accounts from the plan, then the configuration, then what the vault's items use — for
    /// VMs of `subscription`: a storage account serves its own subscription's VMs, and a key
    /// `region@subscription` names one subscription's account.
    pub fn new(
        plan: Option<&ReprotectTarget>,
        configured: &BTreeMap<String, String>,
        used_by_vault: &BTreeMap<String, String>,
        subscription: &str,
    ) -> Self {
        let norm = tern_asr::config::normalize_region;
        let ours = subscription.to_ascii_lowercase();
        let serves_us = |key: &str, account: &str| {
            let named = key.split_once('@').map(|(_, sub)| sub.to_ascii_lowercase());
            let owner = tern_asr::budget::subscription_of(account);
            named.is_none_or(|s| s == ours) && owner.is_none_or(|s| s == ours)
        };
        let region_of = |key: &str| key.split_once('@').map_or(key, |(r, _)| r).to_owned();
        let mut candidates: BTreeMap<String, Vec<(String, CacheSource)>> = BTreeMap::new();
        let plan_map = plan.map(|t| t.cache_storage_accounts.iter().map(|(r, a)| (r.clone(), a.clone())).collect());
        let plan_map: Vec<(String, String)> = plan_map.unwrap_or_default();
        for (source, map) in [
            (CacheSource::Plan, plan_map),
            (CacheSource::Configuration, configured.iter().map(|(r, a)| (r.clone(), a.clone())).collect()),
            (CacheSource::Vault, used_by_vault.iter().map(|(r, a)| (r.clone(), a.clone())).collect()),
        ] {
            // Subscription-qualified keys first: they are the more specific.
            let mut map: Vec<(String, String)> =
                map.into_iter().filter(|(key, account)| !account.is_empty() && serves_us(key, account)).collect();
            map.sort_by_key(|(key, _)| !key.contains('@'));
            for (key, account) in map {
                candidates.entry(norm(&region_of(&key))).or_default().push((account, source));
            }
        }
        let every_region = plan.map(|t| t.cache_storage_account_id.clone()).filter(|s| !s.is_empty());
        Self { every_region, candidates, checked: Arc::default() }
    }

    /// The account of `region`, checked: its ARM id, or why there is none to use.
    pub async fn check(&self, asr: &AsrClient, region: &str) -> Result<String, String> {
        let region = tern_asr::config::normalize_region(region);
        let cell = self.checked.lock().unwrap_or_else(|e| e.into_inner()).entry(region.clone()).or_default().clone();
        cell.get_or_init(|| async {
            let (account, source) = match (&self.every_region, self.candidates.get(&region).and_then(|c| c.first())) {
                (Some(a), _) => (a.clone(), CacheSource::Plan),
                (None, Some((a, s))) => (a.clone(), *s),
                (None, None) => {
                    return Err(format!(
                        "no cache storage account is known for {region}, where the VM will run when it is reprotected: \
                         name one in the plan (reprotect_target.cache_storage_accounts.{region}) or in the planner's \
                         configuration (asr.cache_storage_accounts.{region})"
                    ));
                }
            };
            match asr.get_storage_account(&account).await {
                Ok(Some(found)) => {
                    let at = found.location.clone().unwrap_or_default();
                    if tern_asr::config::normalize_region(&at) == region {
                        Ok(format!("{account} ({}, in {region})", source.words()))
                    } else {
                        Err(format!(
                            "the cache storage account {account} ({}) is in {at}, not in {region}",
                            source.words()
                        ))
                    }
                }
                Ok(None) => Err(format!("the cache storage account {account} ({}) does not exist", source.words())),
                Err(e) => Err(format!("the cache storage account {account} could not be checked: {e}")),
            }
        })
        .await
        .clone()
    }

    /// The accounts found usable so far, per region (what reprotect commands carry).
    pub fn resolved(&self) -> BTreeMap<String, String> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked
            .iter()
            .filter(|(_, cell)| cell.get().is_some_and(Result::is_ok))
            .filter_map(|(region, _)| self.account_of(region).map(|a| (region.clone(), a)))
            .collect()
    }

    fn account_of(&self, region: &str) -> Option<String> {
        self.every_region
            .clone()
            .or_else(|| self.candidates.get(region).and_then(|c| c.first()).map(|(a, _)| a.clone()))
    }
}

/// The cache storage account each region's items already replicate through
/// (`protectedManagedDisks[].primaryStagingAzureStorageAccountId` of items replicating from it).
pub fn cache_accounts_in_use(items: &[ProtectedItem]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some(a2a) = &item.properties.provider_specific_details else { continue };
        let Some(region) = a2a.primary_fabric_location.as_deref().filter(|r| !r.is_empty()) else { continue };
        let staging = a2a
            .protected_managed_disks
            .iter()
            .filter_map(|d| d.primary_staging_azure_storage_account_id.clone())
            .chain(a2a.protected_disks.iter().filter_map(|d| d.primary_staging_azure_storage_account_id.clone()))
            .find(|s| !s.is_empty());
        if let Some(account) = staging {
            out.entry(tern_asr::config::normalize_region(region)).or_insert(account);
        }
    }
    out
}

/// The outcome of checking each target resource group, each checked once however many VMs
/// go there (a fleet usually has a handful of groups).
#[derive(Clone, Debug, Default)]
pub struct GroupChecks(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::OnceCell<PreflightCheck>>>>,
    >,
);

impl GroupChecks {
    async fn check(&self, asr: &AsrClient, rg: &str) -> PreflightCheck {
        use Readiness::{Blocked, Ready};
        let cell = self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(rg.to_ascii_lowercase()).or_default().clone();
        cell.get_or_init(|| async {
            match asr.list_vms(rg).await {
                Ok(_) => check("target-resource-group", Ready, format!("{rg} is reachable")),
                Err(e) if e.class() == tern_asr::ErrorClass::NotFound => {
                    check("target-resource-group", Blocked, format!("{rg} does not exist in the target region"))
                }
                Err(e) => check("target-resource-group", Blocked, format!("{rg} could not be checked: {e}")),
            }
        })
        .await
        .clone()
    }
}

impl Default for PreflightOptions {
    fn default() -> Self {
        Self {
            point: PointChoice::LatestProcessed,
            direction: Direction::Failback,
            drill: false,
            drill_window: time::Duration::days(183),
            groups: GroupChecks::default(),
            reprotect: true,
            cache: CacheAccounts::default(),
        }
    }
}

fn check(name: &str, result: Readiness, detail: impl Into<String>) -> PreflightCheck {
    PreflightCheck { name: name.into(), result: result as i32, detail: detail.into() }
}

fn worst(checks: &[PreflightCheck]) -> Readiness {
    let rank = |r: i32| match Readiness::try_from(r).unwrap_or(Readiness::Blocked) {
        Readiness::Blocked => 3,
        Readiness::Warning => 2,
        _ => 1,
    };
    match checks.iter().map(|c| rank(c.result)).max().unwrap_or(1) {
        3 => Readiness::Blocked,
        2 => Readiness::Warning,
        _ => Readiness::Ready,
    }
}

/// The resource group of an ARM id.
fn resource_group(id: &str) -> Option<String> {
    tern_asr::client::resource_group_of(id)
}

/// Runs every check for one VM. `locked_by` is the active plan holding the VM, if any.
pub async fn preflight_vm(
    asr: &AsrClient,
    item: &ProtectedItem,
    options: &PreflightOptions,
    locked_by: Option<&str>,
    now: OffsetDateTime,
) -> VmPreflight {
    use Readiness::{Blocked, Ready, Warning};
    let a2a = item.properties.provider_specific_details.clone().unwrap_or_default();
    let mut checks = Vec::new();

    let state = item.protection_state();
    checks.push(if state.eq_ignore_ascii_case("Protected") {
        check("protection-state", Ready, "Protected")
    } else {
        check("protection-state", Blocked, format!("is {state}; a failback starts from Protected"))
    });

    let home = a2a.initial_primary_fabric_location.clone().unwrap_or_default();
    let from = a2a.primary_fabric_location.clone().unwrap_or_default();
    let away_from_home = !home.is_empty() && !from.eq_ignore_ascii_case(&home);
    checks.push(match (options.direction, away_from_home) {
        (Direction::Failover, true) => check(
            "direction",
            Blocked,
            format!("replicates from {from}, away from its home {home}: fail it back instead"),
        ),
        (Direction::Failover, false) | (_, true) => check(
            "direction",
            Ready,
            format!("replicates {from} → {}", a2a.recovery_fabric_location.clone().unwrap_or_default()),
        ),
        (_, false) => check(
            "direction",
            Blocked,
            format!(
                "replicates from its home region {from}: it was never failed over, so there is nothing to fail back"
            ),
        ),
    });

    let health = item.properties.replication_health.clone().unwrap_or_default();
    let health_error = item.properties.health_errors.first();
    checks.push(match health.to_ascii_lowercase().as_str() {
        "normal" => check("replication-health", Ready, "Normal"),
        "warning" => check(
            "replication-health",
            Warning,
            format!("Warning: {}", health_error.and_then(|e| e.summary_message.clone()).unwrap_or_default()),
        ),
        _ => check(
            "replication-health",
            Blocked,
            format!(
                "{health}: {} ({}) — {}",
                health_error
                    .and_then(|e| e.error_message.clone().or(e.summary_message.clone()))
                    .unwrap_or_else(|| "replication is unhealthy".into()),
                health_error.and_then(|e| e.error_code.clone()).unwrap_or_default(),
                health_error
                    .and_then(|e| e.recommended_action.clone())
                    .unwrap_or_else(|| "repair replication first".into())
            ),
        ),
    });

    let pending = item.disks_not_protected();
    checks.push(match item.running_job_id() {
        Some(job) => check(
            "sync",
            Blocked,
            format!(
                "an operation is running ({}, job {job})",
                item.properties.current_scenario.as_ref().and_then(|s| s.scenario_name.clone()).unwrap_or_default()
            ),
        ),
        None if !pending.is_empty() => {
            let disks: Vec<String> = pending
                .iter()
                .map(|d| match d.percent {
                    Some(p) => {
                        format!("{} {} {p}%", d.disk, if d.state.is_empty() { "without a state" } else { &d.state })
                    }
                    None => format!("{} {}", d.disk, if d.state.is_empty() { "without a state" } else { &d.state }),
                })
                .collect();
            check("sync", Blocked, format!("initial replication has not completed: {}", disks.join(", ")))
        }
        None => check("sync", Ready, "every disk is Protected"),
    });

    let needed = if options.drill { "TestFailover" } else { "UnplannedFailover" };
    checks.push(if item.allows(needed) {
        check("allowed-operations", Ready, format!("{needed} is allowed"))
    } else {
        check(
            "allowed-operations",
            Blocked,
            format!("{needed} is not allowed now (allowed: {})", item.properties.allowed_operations.join(", ")),
        )
    });

    let target_rg = a2a.recovery_azure_resource_group_id.clone().unwrap_or_default();
    checks.push(match resource_group(&target_rg) {
        None => check("target-resource-group", Blocked, "the item names no recovery resource group"),
        Some(rg) => options.groups.check(asr, &rg).await,
    });

    let mut used = None;
    let resolution = if options.point == PointChoice::LatestProcessed {
        // The newest processed point is the one to use when the failover is sent, and the
        // worker lists the points then: listing them here too would cost a read per VM for a
        // point that is stale by the time it is used. The item's own figure says how far
        // replication lags; which disks the point covers is known once it is chosen.
        Ok(ResolvedPoint {
            choice: PointChoice::LatestProcessed,
            send: None,
            point: None,
            disks_covered: 0,
            disks_total: 0,
        })
    } else {
        asr.resolve_point(item, &options.point).await
    };
    match resolution {
        Ok(p) => {
            let time = p.point.as_ref().and_then(|pt| pt.time());
            used = Some(RecoveryPointUsed {
                id: p.send.clone().unwrap_or_default(),
                time: time
                    .map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }),
                asr_type: p.point.as_ref().and_then(|pt| pt.properties.recovery_point_type.clone()).unwrap_or_default(),
                disks_covered: p.disks_covered as u32,
                disks_total: p.disks_total as u32,
                ..Default::default()
            });
            checks.push(if p.misses_disks() {
                check(
                    "recovery-point",
                    Warning,
                    format!(
                        "the chosen point covers {} of {} disks: the others would come back empty",
                        p.disks_covered, p.disks_total
                    ),
                )
            } else {
                check(
                    "recovery-point",
                    Ready,
                    match (time, &options.point) {
                        (Some(t), _) => {
                            format!("{:?} point of {t}, covering all {} disks", options.point, p.disks_total)
                        }
                        (None, PointChoice::LatestProcessed) => match a2a.rpo_in_seconds {
                            Some(rpo) => format!("latest processed: chosen when the failover is sent (RPO {rpo} s)"),
                            None => "latest processed: chosen when the failover is sent".into(),
                        },
                        (None, _) => "latest: ASR processes pending data first".into(),
                    },
                )
            });
        }
        Err(e) => checks.push(check("recovery-point", Blocked, e.to_string())),
    }

    checks.push(match locked_by {
        Some(plan) => check("vm-lock", Blocked, format!("in active plan {plan}")),
        None => check("vm-lock", Ready, "in no other active plan"),
    });

    let last_drill =
        item.properties.last_successful_test_failover_time.as_deref().and_then(tern_asr::model::parse_time);
    checks.push(match last_drill {
        Some(t) if now - t <= options.drill_window => check("last-drill", Ready, format!("drilled at {t}")),
        Some(t) => check(
            "last-drill",
            Warning,
            format!("last drill at {t}, more than {} days ago", options.drill_window.whole_days()),
        ),
        None => check("last-drill", Warning, "never drilled: a drill is recommended every six months"),
    });

    // The cache account reprotect stages data in: in the region the VM will run in then.
    let lands_in = a2a.recovery_fabric_location.clone().unwrap_or_default();
    let mut cache_account = String::new();
    if options.reprotect && !options.drill {
        checks.push(match options.cache.check(asr, &lands_in).await {
            Ok(detail) => {
                cache_account =
                    options.cache.account_of(&tern_asr::config::normalize_region(&lands_in)).unwrap_or_default();
                check("cache-storage-account", Ready, detail)
            }
            Err(why) => check("cache-storage-account", Blocked, why),
        });
    }

    // What reprotect will set after the failback: the VM returns to where it runs now.
    let managed = a2a.protected_managed_disks.first();
    let source_rg = a2a
        .fabric_object_id
        .as_deref()
        .and_then(resource_group)
        .map(|rg| format!("/subscriptions/{}/resourceGroups/{rg}", asr.config().subscription_id));
    let target = ReprotectTarget {
        resource_group_id: source_rg.unwrap_or_default(),
        cache_storage_account_id: cache_account,
        disk_type: managed.and_then(|d| d.recovery_target_disk_account_type.clone()).unwrap_or_default(),
        availability_set_id: a2a.recovery_availability_set.clone().unwrap_or_default(),
        availability_zone: a2a.recovery_availability_zone.clone().unwrap_or_default(),
        proximity_placement_group_id: a2a.recovery_proximity_placement_group_id.clone().unwrap_or_default(),
        capacity_reservation_group_id: a2a.recovery_capacity_reservation_group_id.clone().unwrap_or_default(),
        ..Default::default()
    };
    // Tern creates nothing: a missing cache account blocks the VM above instead.
    let resources_to_create = Vec::new();

    VmPreflight {
        vm: Some(VmRef {
            vault_id: String::new(),
            protected_item_id: item.id.clone(),
            lifecycle_id: item.lifecycle_id().unwrap_or_default().to_owned(),
            name: item.friendly_name().to_owned(),
        }),
        readiness: worst(&checks) as i32,
        checks,
        recovery_point: used,
        reprotect_target: Some(target),
        resources_to_create,
    }
}

/// What one VM will claim of its target region's capacity when it fails over: the size the
/// item will be created with (`recoveryAzureVMSize`) in the region it fails over to, in its
/// vault's subscription (quota is per subscription and region).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityNeed {
    /// Subscription id, lower-case.
    pub subscription: String,
    /// Normalized target region.
    pub region: String,
    /// VM size, if the item names one.
    pub size: Option<String>,
}

impl CapacityNeed {
    /// The need of `item` in `subscription`.
    pub fn of(item: &ProtectedItem, subscription: &str) -> Self {
        let a2a = item.properties.provider_specific_details.as_ref();
        Self {
            subscription: subscription.to_ascii_lowercase(),
            region: tern_asr::config::normalize_region(
                a2a.and_then(|d| d.recovery_fabric_location.as_deref()).unwrap_or_default(),
            ),
            size: a2a.and_then(|d| d.recovery_azure_vm_size.clone()).filter(|s| !s.is_empty()),
        }
    }
}

/// A region's capacity as Compute shows it: its usages and the VM sizes it offers (one read
/// of each per subscription and region, however many VMs go there), or why it could not be read.
pub type RegionCapacity = Result<(Vec<tern_asr::model::Usage>, Vec<tern_asr::model::ResourceSku>), String>;

/// The `capacity` check of each VM, allocating the regions' free vCPUs to the VMs in the order
/// given (plan order): a VM whose family or regional total (`cores`) would go over its quota,
/// counting what is in use and what the VMs before it in this plan claimed, is blocked; the
/// others claim their vCPUs. A VM blocked, or whose size is restricted or not offered, claims
/// nothing, so exactly the VMs that would not fit are blocked.
///
/// A VM whose source still runs in the target region is counted as a new VM there (its
/// vCPUs are in `currentValue` and claimed again): stingier than ASR, which may reuse it.
pub fn allocate_capacity(
    needs: &[CapacityNeed],
    regions: &BTreeMap<(String, String), RegionCapacity>,
) -> Vec<PreflightCheck> {
    use Readiness::{Blocked, Ready, Warning};
    // vCPUs claimed so far by this plan, per (subscription, region, lower-case usage name).
    let mut claimed: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let mut out = Vec::with_capacity(needs.len());
    for need in needs {
        let region = &need.region;
        let Some(size) = &need.size else {
            out.push(check("capacity", Warning, "the item names no target VM size: capacity not checked"));
            continue;
        };
        let capacity = regions.get(&(need.subscription.clone(), region.clone()));
        let (usages, skus) = match capacity {
            Some(Ok((u, s))) => (u, s),
            Some(Err(why)) => {
                out.push(check("capacity", Warning, format!("capacity in {region} could not be checked: {why}")));
                continue;
            }
            None => {
                out.push(check("capacity", Warning, format!("capacity in {region} was not read")));
                continue;
            }
        };
        let Some(sku) = skus.iter().find(|s| s.name.eq_ignore_ascii_case(size)) else {
            out.push(check(
                "capacity",
                Blocked,
                format!("{size} is not offered in {region} (not in its resource SKUs)"),
            ));
            continue;
        };
        if let Some(r) = sku.restricted_in(region) {
            out.push(check(
                "capacity",
                Blocked,
                format!(
                    "{size} is not available in {region}: restricted ({})",
                    r.reason_code.as_deref().unwrap_or("no reason given")
                ),
            ));
            continue;
        }
        let (Some(family), Some(vcpus)) = (sku.family.clone(), sku.vcpus()) else {
            out.push(check("capacity", Warning, format!("{size} lists no family or vCPUs: capacity not checked")));
            continue;
        };
        let vcpus = i64::from(vcpus);
        let mut short = None;
        let mut fits = Vec::new();
        let mut unlisted = Vec::new();
        for quota in [family.as_str(), "cores"] {
            let Some(usage) = usages.iter().find(|u| u.name.value.eq_ignore_ascii_case(quota)) else {
                unlisted.push(quota);
                continue;
            };
            let key = (need.subscription.clone(), region.clone(), quota.to_ascii_lowercase());
            let earlier = claimed.get(&key).copied().unwrap_or(0);
            let free = usage.limit - usage.current_value - earlier;
            let what = if quota == "cores" { "the regional total (cores)".to_owned() } else { quota.to_owned() };
            let plan_part =
                if earlier > 0 { format!(", {earlier} claimed by VMs before it in this plan") } else { String::new() };
            let figures =
                format!("{} of quota {} free ({} in use{plan_part})", free.max(0), usage.limit, usage.current_value);
            if vcpus > free {
                short = Some(format!("needs {vcpus} vCPUs of {what} in {region}: {figures}"));
                break;
            }
            fits.push(format!("{what}: {figures}"));
        }
        match short {
            Some(why) => out.push(check("capacity", Blocked, why)),
            None => {
                for quota in [family.as_str(), "cores"] {
                    *claimed
                        .entry((need.subscription.clone(), region.clone(), quota.to_ascii_lowercase()))
                        .or_default() += vcpus;
                }
                let fit = format!("{size} ({vcpus} vCPUs of {family})");
                // A quota Compute does not list is one Tern cannot vouch for: a warning, not a pass.
                out.push(if unlisted.is_empty() {
                    check("capacity", Ready, format!("{fit} fits in {region}; {}", fits.join("; ")))
                } else {
                    check(
                        "capacity",
                        Warning,
                        format!(
                            "{fit}: Compute lists no usage of {} in {region}, so it was not checked{}",
                            unlisted.join(" or "),
                            if fits.is_empty() { String::new() } else { format!("; {}", fits.join("; ")) }
                        ),
                    )
                });
            }
        }
    }
    out
}

/// Adds a check to a VM's preflight, and its verdict with it.
pub fn add_check(pre: &mut VmPreflight, c: PreflightCheck) {
    pre.checks.push(c);
    pre.readiness = worst(&pre.checks) as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_asr::model::{ResourceSku, SkuCapability, SkuRestriction, Usage, UsageName};

    fn usage(name: &str, current: i64, limit: i64) -> Usage {
        Usage {
            name: UsageName { value: name.into(), localized_value: None },
            current_value: current,
            limit,
            unit: None,
        }
    }

    fn sku(name: &str, family: &str, vcpus: u32) -> ResourceSku {
        ResourceSku {
            resource_type: "virtualMachines".into(),
            name: name.into(),
            family: Some(family.into()),
            capabilities: vec![SkuCapability { name: "vCPUs".into(), value: vcpus.to_string() }],
            ..ResourceSku::default()
        }
    }

    fn need(size: Option<&str>) -> CapacityNeed {
        CapacityNeed { subscription: "s".into(), region: "eastus".into(), size: size.map(str::to_owned) }
    }

    #[test]
    fn the_free_vcpus_go_to_the_vms_in_plan_order_and_exactly_the_ones_that_do_not_fit_are_blocked() {
        let mut restricted = sku("Standard_B2s", "standardBSFamily", 2);
        restricted.restrictions = vec![SkuRestriction {
            kind: "Location".into(),
            values: vec!["eastus".into()],
            reason_code: Some("NotAvailableForSubscription".into()),
            ..SkuRestriction::default()
        }];
        let regions = BTreeMap::from([(
            ("s".to_owned(), "eastus".to_owned()),
            Ok((
                vec![usage("cores", 8, 100), usage("standardDSv3Family", 8, 14)],
                vec![
                    sku("Standard_D2s_v3", "standardDSv3Family", 2),
                    sku("Standard_D4s_v3", "standardDSv3Family", 4),
                    restricted,
                ],
            )),
        )]);
        let needs = [
            need(Some("Standard_D4s_v3")), // 4 of 6 free: fits, 2 left
            need(Some("Standard_D4s_v3")), // 4 > 2: blocked, claims nothing
            need(Some("Standard_D2s_v3")), // 2 of 2: fits
            need(Some("Standard_D2s_v3")), // 0 left: blocked
            need(Some("Standard_B2s")),    // restricted
            need(None),                    // unknown size: a warning
        ];
        let checks = allocate_capacity(&needs, &regions);
        let results: Vec<Readiness> = checks.iter().map(|c| Readiness::try_from(c.result).unwrap()).collect();
        use Readiness::{Blocked, Ready, Warning};
        assert_eq!(results, [Ready, Blocked, Ready, Blocked, Blocked, Warning]);
        assert_eq!(
            checks[1].detail,
            "needs 4 vCPUs of standardDSv3Family in eastus: 2 of quota 14 free (8 in use, 4 claimed by VMs before it in this plan)"
        );
        assert!(checks[4].detail.contains("NotAvailableForSubscription"), "{}", checks[4].detail);

        // The regional total binds too.
        let regions = BTreeMap::from([(
            ("s".to_owned(), "eastus".to_owned()),
            Ok((
                vec![usage("cores", 9, 10), usage("standardDSv3Family", 0, 100)],
                vec![sku("Standard_D2s_v3", "standardDSv3Family", 2)],
            )),
        )]);
        let checks = allocate_capacity(&[need(Some("Standard_D2s_v3"))], &regions);
        assert_eq!(
            checks[0].detail,
            "needs 2 vCPUs of the regional total (cores) in eastus: 1 of quota 10 free (9 in use)"
        );

        // A family Compute lists no usage of is not vouched for: a warning that says so.
        let regions = BTreeMap::from([(
            ("s".to_owned(), "eastus".to_owned()),
            Ok((vec![usage("cores", 0, 10)], vec![sku("Standard_D2s_v3", "standardDSv3Family", 2)])),
        )]);
        let checks = allocate_capacity(&[need(Some("Standard_D2s_v3"))], &regions);
        assert_eq!(Readiness::try_from(checks[0].result), Ok(Warning));
        assert!(checks[0].detail.contains("lists no usage of standardDSv3Family"), "{}", checks[0].detail);
    }
}
