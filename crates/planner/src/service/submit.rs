//! Submission: resolving a spec's selection against the vault, preflight of every selected
//! VM, and storing the new plan with its VMs locked.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use tern_asr::model::ProtectedItem;
use tern_asr::point::PointChoice;
use tern_bus::KvError;
use tern_proto::{
    Phase, Plan, PlanEventKind, PlanMode, PlanState, Readiness, SubmitPlanResponse, VmPreflight, VmState, VmStatus,
};
use tonic::Status;
use tracing::{info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{PlannerService, SEND_CONCURRENCY, hex, is_terminal, kv_status, now};
use crate::preflight::{PreflightOptions, preflight_vm};
use crate::progress;
use crate::spec::{Selected, ValidSpec, validate};
use tern_proto::{PlanRef, VmLock};

/// The VMs a plan selects, and what the vaults' items showed besides.
pub(super) struct Resolved {
    /// The vaults the selection drew from, the spec's first.
    vaults: Vec<String>,
    /// The selected items (each names its vault in its id).
    items: Vec<ProtectedItem>,
    /// Each selected item's wave, in the order of `items`.
    waves: Vec<u32>,
    /// The cache storage account items already replicate through, per vault (lower-case ARM
    /// id) and region: accounts belong to a subscription.
    cache_in_use: HashMap<String, BTreeMap<String, String>>,
}

/// The vault an item lies in, lower-case: how `Resolved::cache_in_use` and the clients are keyed.
fn vault_key(item_id: &str) -> String {
    tern_asr::client::vault_of(item_id).unwrap_or_default().to_ascii_lowercase()
}

/// VMs preflighted at once.
const PREFLIGHT_CONCURRENCY: usize = 32;

impl PlannerService {
    /// Azure at `vault` (an ARM id the spec's validation allowed).
    fn asr_at(&self, vault: &str) -> Result<tern_asr::AsrClient, Status> {
        self.inner.asr.for_vault(vault).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// The VMs a selection names across the spec's vaults, with their wave (from the spec's
    /// waves or the recovery plan's boot groups), and the cache storage account each vault's
    /// items use per region. The vaults are listed at once.
    pub(super) async fn resolve(&self, valid: &ValidSpec) -> Result<Resolved, Status> {
        let unavailable = |e: tern_asr::AsrError| Status::unavailable(format!("Azure: {e}"));
        let mut vaults = valid.vaults.clone();
        if valid.discover {
            let (found, skipped) = self.inner.asr.discover_vaults().await.map_err(unavailable)?;
            for reason in skipped {
                warn!(%reason, "a subscription's vaults could not be listed; its vaults are left out");
            }
            for v in found {
                if !vaults.iter().any(|known| known.eq_ignore_ascii_case(&v)) {
                    vaults.push(v);
                }
            }
        }
        let clients = vaults.iter().map(|v| self.asr_at(v)).collect::<Result<Vec<_>, _>>()?;
        let listed = futures::future::join_all(clients.iter().map(|asr| asr.list_items(None, None))).await;
        let mut all = Vec::new();
        let mut cache_in_use = HashMap::new();
        for (vault, items) in vaults.iter().zip(listed) {
            let items = items.map_err(unavailable)?;
            cache_in_use.insert(vault.to_ascii_lowercase(), crate::preflight::cache_accounts_in_use(&items));
            all.extend(items);
        }
        let (items, waves) = self.pick(valid, &vaults, all).await?;
        Ok(Resolved { vaults, items, waves, cache_in_use })
    }

    /// The items a selection names, and each one's wave.
    async fn pick(
        &self,
        valid: &ValidSpec,
        vaults: &[String],
        mut all: Vec<ProtectedItem>,
    ) -> Result<(Vec<ProtectedItem>, Vec<u32>), Status> {
        let unavailable = |e: tern_asr::AsrError| Status::unavailable(format!("Azure: {e}"));
        let mut waves_of: HashMap<String, u32> = HashMap::new();
        for (w, wave) in valid.spec.waves.iter().enumerate() {
            for vm in &wave.vm_names {
                waves_of.insert(vm.to_ascii_lowercase(), w as u32);
            }
        }
        let last_wave = valid.spec.waves.len() as u32;
        let wave = |name: &str| {
            waves_of.get(&name.to_ascii_lowercase()).copied().unwrap_or(if last_wave == 0 { 0 } else { last_wave })
        };
        let nonempty = |picked: Vec<(ProtectedItem, u32)>| {
            if picked.is_empty() {
                return Err(Status::invalid_argument("selection: selects no replicated VM"));
            }
            Ok(picked.into_iter().unzip())
        };
        // Whole-vault and resource-group selections keep the listed items where they are (a
        // fleet's items are tens of MiB: neither copied nor moved into another vector).
        match &valid.selected {
            Selected::AllReady | Selected::ResourceGroup(_) => {
                if let Selected::ResourceGroup(rg) = &valid.selected {
                    all.retain(|it| {
                        let a2a = it.properties.provider_specific_details.as_ref();
                        a2a.and_then(|d| d.fabric_object_id.as_deref())
                            .and_then(tern_asr::client::resource_group_of)
                            .is_some_and(|g| g.eq_ignore_ascii_case(rg))
                    });
                }
                if all.is_empty() {
                    return Err(Status::invalid_argument("selection: selects no replicated VM"));
                }
                let waves = all.iter().map(|it| wave(it.friendly_name())).collect();
                return Ok((all, waves));
            }
            _ => {}
        }
        // A name may be protected in more than one vault: such a name selects nothing until it
        // is told apart by protected item id.
        let mut by_name: HashMap<String, Vec<&ProtectedItem>> = HashMap::new();
        for item in &all {
            by_name.entry(item.friendly_name().to_ascii_lowercase()).or_default().push(item);
        }
        let by_id: HashMap<String, &ProtectedItem> = all.iter().map(|i| (i.id.to_ascii_lowercase(), i)).collect();
        let picked: Vec<(ProtectedItem, u32)> = match &valid.selected {
            Selected::Names(names) => {
                let mut out = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let item = match by_name.get(&n.to_ascii_lowercase()).map(Vec::as_slice) {
                        Some([item]) => *item,
                        Some(several) => {
                            let vaults: Vec<String> = several
                                .iter()
                                .map(|it| tern_asr::client::vault_of(&it.id).unwrap_or("?").to_owned())
                                .collect();
                            return Err(Status::invalid_argument(format!(
                                "selection.vm_names[{i}]: {n:?} is protected in {} vaults ({}); select it by protected item id",
                                several.len(),
                                vaults.join(", ")
                            )));
                        }
                        None => {
                            return Err(Status::invalid_argument(format!(
                                "selection.vm_names[{i}]: no replicated VM named {n:?} in {}",
                                if vaults.len() == 1 {
                                    "the vault".to_owned()
                                } else {
                                    format!("the plan's {} vaults", vaults.len())
                                }
                            )));
                        }
                    };
                    out.push((item.clone(), wave(n)));
                }
                out
            }
            Selected::ItemIds(ids) => {
                let mut out = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let item = by_id.get(&id.to_ascii_lowercase()).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "selection.protected_item_ids[{i}]: no such protected item {id:?}"
                        ))
                    })?;
                    out.push(((*item).clone(), wave(item.friendly_name())));
                }
                out
            }
            Selected::RecoveryPlan(name) => {
                let rp = self.asr_at(&vaults[0])?.get_plan(name).await.map_err(|e| match e.class() {
                    tern_asr::ErrorClass::NotFound => {
                        Status::invalid_argument(format!("selection.recovery_plan: no recovery plan {name:?}"))
                    }
                    _ => unavailable(e),
                })?;
                let mut out = Vec::new();
                for (w, group) in rp.boot_groups().iter().enumerate() {
                    for id in group {
                        if let Some(item) = by_id.get(&id.to_ascii_lowercase()) {
                            out.push(((*item).clone(), w as u32));
                        }
                    }
                }
                out
            }
            Selected::Tag { .. } => {
                return Err(Status::unimplemented("selection.tag: selecting by VM tag is not supported yet"));
            }
            Selected::AllReady | Selected::ResourceGroup(_) => unreachable!("handled above"),
        };
        nonempty(picked)
    }

    fn preflight_options(
        &self,
        valid: &ValidSpec,
        asr: &tern_asr::AsrClient,
        cache_in_use: &BTreeMap<String, String>,
    ) -> PreflightOptions {
        let point = valid.spec.recovery_point.clone().unwrap_or_default();
        let choice = match point.kind() {
            tern_proto::RecoveryPointKind::Latest => PointChoice::Latest,
            tern_proto::RecoveryPointKind::LatestAppConsistent => PointChoice::LatestAppConsistent,
            tern_proto::RecoveryPointKind::LatestCrashConsistent => PointChoice::LatestCrashConsistent,
            tern_proto::RecoveryPointKind::Custom => PointChoice::Custom(point.custom_id.clone()),
            _ => PointChoice::LatestProcessed,
        };
        let phases = valid.spec.phases.unwrap_or_default();
        PreflightOptions {
            point: choice,
            direction: valid.direction,
            drill: valid.mode == PlanMode::Drill,
            reprotect: phases.reprotect.unwrap_or(true),
            cache: crate::preflight::CacheAccounts::new(
                valid.spec.reprotect_target.as_ref(),
                &asr.config().cache_storage_accounts,
                cache_in_use,
                &asr.config().subscription_id,
            ),
            ..PreflightOptions::default()
        }
    }

    /// Preflight of every selected VM, each against its own vault; also the cache storage
    /// accounts it found usable, per region — keyed `region@subscription` when the plan spans
    /// more than one subscription (an account serves its own subscription's VMs).
    pub(super) async fn preflight_all(
        &self,
        valid: &ValidSpec,
        selection: &Resolved,
    ) -> Result<(Vec<VmPreflight>, BTreeMap<String, String>), Status> {
        let items = &selection.items;
        let mut per_vault: HashMap<String, (tern_asr::AsrClient, PreflightOptions)> = HashMap::new();
        for vault in &selection.vaults {
            let asr = self.asr_at(vault)?;
            let key = vault.to_ascii_lowercase();
            let in_use = selection.cache_in_use.get(&key).cloned().unwrap_or_default();
            let opts = self.preflight_options(valid, &asr, &in_use);
            per_vault.insert(key, (asr, opts));
        }
        let now = time::OffsetDateTime::now_utc();
        let per_vault = &per_vault;
        let vms = futures::stream::iter(0..items.len())
            .map(|i| async move {
                let item = &items[i];
                let key = item.lifecycle_id().unwrap_or(item.friendly_name()).to_owned();
                let locked = self.holder(&key).await;
                let Some((asr, opts)) = per_vault.get(&vault_key(&item.id)) else {
                    unreachable!("every listed item lies in a listed vault")
                };
                let mut pre = preflight_vm(asr, item, opts, locked.as_deref(), now).await;
                if let Some(vm) = pre.vm.as_mut() {
                    vm.vault_id = asr.config().vault_id();
                }
                pre
            })
            .buffered(PREFLIGHT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let vms = self.check_capacity(selection, per_vault, vms).await;
        let subscriptions: std::collections::BTreeSet<String> =
            per_vault.values().map(|(asr, _)| asr.config().subscription_id.to_ascii_lowercase()).collect();
        let mut accounts = BTreeMap::new();
        for (asr, opts) in per_vault.values() {
            for (region, account) in opts.cache.resolved() {
                let key = if subscriptions.len() > 1 {
                    format!("{region}@{}", asr.config().subscription_id.to_ascii_lowercase())
                } else {
                    region
                };
                accounts.entry(key).or_insert(account);
            }
        }
        Ok((vms, accounts))
    }

    /// Adds each VM's `capacity` check: the VMs that would fail over (not blocked by another
    /// check) are grouped by subscription and target region, each group's usages and VM sizes
    /// are read once (reads are the binding budget), and the free vCPUs are allotted in plan
    /// order (wave, then selection order), so exactly the VMs that would not fit are blocked.
    async fn check_capacity(
        &self,
        selection: &Resolved,
        per_vault: &HashMap<String, (tern_asr::AsrClient, PreflightOptions)>,
        mut vms: Vec<VmPreflight>,
    ) -> Vec<VmPreflight> {
        let items = &selection.items;
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| vms[i].readiness() != Readiness::Blocked).collect();
        order.sort_by_key(|&i| (selection.waves.get(i).copied().unwrap_or(0), i));
        let mut needs = Vec::with_capacity(order.len());
        let mut readers: BTreeMap<(String, String), &tern_asr::AsrClient> = BTreeMap::new();
        for &i in &order {
            let Some((asr, _)) = per_vault.get(&vault_key(&items[i].id)) else { continue };
            let need = crate::preflight::CapacityNeed::of(&items[i], &asr.config().subscription_id);
            if need.size.is_some() {
                readers.entry((need.subscription.clone(), need.region.clone())).or_insert(asr);
            }
            needs.push((i, need));
        }
        let reads = readers.iter().map(|((sub, region), asr)| async move {
            let read = futures::future::try_join(asr.usages(sub, region), asr.vm_skus(sub, region)).await;
            ((sub.clone(), region.clone()), read.map_err(|e| e.to_string()))
        });
        let regions: BTreeMap<(String, String), crate::preflight::RegionCapacity> =
            futures::future::join_all(reads).await.into_iter().collect();
        let only: Vec<crate::preflight::CapacityNeed> = needs.iter().map(|(_, n)| n.clone()).collect();
        for ((i, _), c) in needs.iter().zip(crate::preflight::allocate_capacity(&only, &regions)) {
            crate::preflight::add_check(&mut vms[*i], c);
        }
        vms
    }

    /// The plan that holds VM `key`, if one does: a lock whose plan has ended (its release was
    /// lost to a crash or an outage) holds nothing.
    async fn holder(&self, key: &str) -> Option<String> {
        let lock = self.inner.locks.get(key).await.ok().flatten()?;
        let plan_id = lock.value.plan_id;
        match self.inner.store.header(&plan_id).await {
            Ok(Some(plan)) if is_terminal(plan.state) => None,
            _ => Some(plan_id),
        }
    }

    /// Takes VM `key`'s lock over from a plan that has ended, with compare-and-set, so two
    /// submissions cannot both take it. A live plan keeps it, and so does one not stored yet (a
    /// submission locks its VMs before it stores the plan).
    async fn take_over_lock(&self, key: &str, lock: &VmLock) -> Result<tern_bus::Revision, KvError> {
        let taken = || KvError::AlreadyExists { bucket: tern_bus::Bucket::VmLocks.name().into(), key: key.into() };
        let Some(current) = self.inner.locks.get(key).await? else {
            return self.inner.locks.create(key, lock).await;
        };
        let ended = self.inner.store.header(&current.value.plan_id).await?.is_some_and(|p| is_terminal(p.state));
        if !ended {
            return Err(taken());
        }
        info!(key, from = %current.value.plan_id, "taking over the lock of a plan that has ended");
        self.inner.locks.update(key, lock, current.revision).await.map_err(|e| match e {
            KvError::Conflict { .. } => taken(),
            e => e,
        })
    }

    /// Releases the locks `keys` that `plan_id` holds, for a submission that did not go through.
    async fn unlock(&self, plan_id: &str, keys: &[String]) {
        for key in keys {
            if let Ok(Some(lock)) = self.inner.locks.get(key).await
                && lock.value.plan_id == plan_id
                && let Err(e) = self.inner.locks.delete(key).await
            {
                warn!(plan = %plan_id, %key, error = %e, "releasing the lock of a plan that was not stored failed");
            }
        }
    }

    pub(super) async fn submit(&self, spec: tern_proto::PlanSpec) -> Result<SubmitPlanResponse, Status> {
        let valid = validate(&spec, self.inner.asr.config())?;
        let request_key = (!spec.request_id.is_empty()).then(|| format!("request.{}", hex(&spec.request_id)));
        if let Some(key) = &request_key
            && let Some(existing) = self.inner.requests.get(key).await.map_err(kv_status)?
        {
            let plan = self.get(&existing.value.plan_id).await?;
            return Ok(SubmitPlanResponse { plan: Some(plan), existing: true });
        }
        let selection = self.resolve(&valid).await?;
        let (preflight, cache_accounts) = self.preflight_all(&valid, &selection).await?;
        let Resolved { items, waves, .. } = selection;
        let blocked: Vec<String> = preflight
            .iter()
            .filter(|p| p.readiness() == Readiness::Blocked)
            .map(|p| {
                let why = p
                    .checks
                    .iter()
                    .filter(|c| c.result() == Readiness::Blocked)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("{} ({why})", p.vm.as_ref().map(|v| v.name.as_str()).unwrap_or(""))
            })
            .collect();
        // "All ready" never selects a VM that is not ready: the blocked ones are left out.
        let proceed_with_ready = spec.proceed_with_ready || matches!(valid.selected, Selected::AllReady);
        if !blocked.is_empty() && !proceed_with_ready && valid.mode != PlanMode::PreflightOnly {
            return Err(Status::failed_precondition(format!(
                "preflight blocked {} of {} VMs: {}; fix them, or set proceed_with_ready to run the ready ones",
                blocked.len(),
                items.len(),
                blocked.iter().take(10).cloned().collect::<Vec<_>>().join(" | ")
            )));
        }
        let plan_id = format!("p-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let optional: Vec<String> = spec
            .failure_policy
            .as_ref()
            .map(|p| p.optional_vms.iter().map(|v| v.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let preflight_only = valid.mode == PlanMode::PreflightOnly;
        let mut vms = Vec::new();
        for ((item, wave), pre) in items.iter().zip(&waves).zip(&preflight) {
            let blocked = pre.readiness() == Readiness::Blocked;
            // What preflight found, so a reader of the plan sees why without a second call.
            let found = |level: Readiness| {
                let found: Vec<String> = pre
                    .checks
                    .iter()
                    .filter(|c| c.result == level as i32)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                found.join("; ")
            };
            let reason = if preflight_only {
                format!("preflight only: {}", pre.readiness().as_str_name())
            } else if blocked {
                format!("not run: blocked in preflight ({})", found(Readiness::Blocked))
            } else if pre.readiness() == Readiness::Warning {
                // Replaced by the VM's outcome when it ends.
                format!("preflight warning: {}", found(Readiness::Warning))
            } else {
                String::new()
            };
            vms.push(VmStatus {
                vm: Some(tern_proto::VmRef {
                    vault_id: pre.vm.as_ref().map(|v| v.vault_id.clone()).unwrap_or_default(),
                    protected_item_id: item.id.clone(),
                    lifecycle_id: item.lifecycle_id().unwrap_or_default().to_owned(),
                    name: item.friendly_name().to_owned(),
                }),
                state: if preflight_only || blocked { VmState::Skipped as i32 } else { VmState::Pending as i32 },
                phase: Phase::Failover as i32,
                wave: *wave,
                attempt: 1,
                reason,
                critical: !optional.contains(&item.friendly_name().to_ascii_lowercase()),
                recovery_point: pre.recovery_point.clone(),
                left_out: blocked && !preflight_only,
                // Where it runs now, from the item preflight read (no read of its own).
                resource: item.primary_vm().map(|p| tern_proto::VmResource::of_vm(&p.arm_id, &p.region, p.private_ips)),
                ..Default::default()
            });
        }
        // The listed items and their preflight are the bulk of a large submission's memory.
        drop(items);
        drop(preflight);
        // Waves are numbered densely from 0.
        let mut wave_ids: Vec<u32> = vms.iter().map(|v| v.wave).collect();
        wave_ids.sort_unstable();
        wave_ids.dedup();
        for v in &mut vms {
            v.wave = wave_ids.iter().position(|w| *w == v.wave).unwrap_or(0) as u32;
        }
        progress::interleave_subscriptions(&mut vms);
        // Lock every VM that will run; a VM already in another active plan refuses the plan.
        let to_lock: Vec<String> =
            vms.iter().filter(|v| v.state() == VmState::Pending).map(|v| progress::vm_key(v).to_owned()).collect();
        let lock = VmLock { plan_id: plan_id.clone() };
        let results: Vec<(String, Result<_, KvError>)> = futures::stream::iter(to_lock)
            .map(|key| {
                let lock = &lock;
                async move {
                    let r = match self.inner.locks.create(&key, lock).await {
                        Err(KvError::AlreadyExists { .. }) => self.take_over_lock(&key, lock).await,
                        r => r,
                    };
                    (key, r)
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let taken: Vec<String> = results.iter().filter(|(_, r)| r.is_ok()).map(|(k, _)| k.clone()).collect();
        if let Some((key, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
            // Every key tried: a create that timed out may have landed.
            let tried: Vec<String> = results.iter().map(|(k, _)| k.clone()).collect();
            self.unlock(&plan_id, &tried).await;
            if let KvError::AlreadyExists { .. } = e {
                let holder =
                    self.inner.locks.get(key).await.ok().flatten().map(|l| l.value.plan_id).unwrap_or_default();
                let name = vms
                    .iter()
                    .find(|v| progress::vm_key(v) == key)
                    .and_then(|v| v.vm.as_ref())
                    .map(|r| r.name.as_str())
                    .unwrap_or("");
                return Err(Status::failed_precondition(format!("{name} is already in active plan {holder}")));
            }
            return Err(Status::unavailable(format!("plan store: {e}")));
        }
        let root = tracing::Span::current();
        root.record("tern.plan_id", plan_id.as_str());
        // Reprotect commands carry the cache account preflight found for each region (the
        // plan's own choices stay as they are).
        let mut spec = valid.spec.clone();
        if !cache_accounts.is_empty() {
            let target = spec.reprotect_target.get_or_insert_with(Default::default);
            for (region, account) in cache_accounts {
                target.cache_storage_accounts.entry(region).or_insert(account);
            }
        }
        let mut plan = Plan {
            traceparent: tern_bus::trace::traceparent(&root.context()),
            plan_id: plan_id.clone(),
            spec: Some(spec),
            state: if preflight_only { PlanState::Completed as i32 } else { PlanState::Accepted as i32 },
            vms,
            created_at: Some(now()),
            updated_at: Some(now()),
            ..Default::default()
        };
        plan.counts = Some(progress::counts(&plan));
        // Worked out once here, not in every step of a gated plan.
        plan.spec_wave_of = plan.derive_spec_waves().into_iter().map(|s| s.map_or(-1, |s| s as i32)).collect();
        let created = match self.inner.store.create(plan).await {
            Ok(created) => created,
            Err(e) => {
                // The plan was not stored: the VMs it locked are free again (a lock names its
                // plan; one that is not this plan's is left alone).
                self.unlock(&plan_id, &taken).await;
                return Err(kv_status(e));
            }
        };
        if let Some(key) = &request_key
            && let Err(KvError::AlreadyExists { .. }) =
                self.inner.requests.create(key, &PlanRef { plan_id: plan_id.clone() }).await
        {
            // Another submission with the same request id won the race: withdraw this one.
            let _ = self.inner.store.delete(&plan_id).await;
            self.unlock(&plan_id, &taken).await;
            let winner =
                self.inner.requests.get(key).await.map_err(kv_status)?.map(|r| r.value.plan_id).unwrap_or_default();
            return Ok(SubmitPlanResponse { plan: Some(self.get(&winner).await?), existing: true });
        }
        info!(plan = %plan_id, vms = created.plan.vms.len(), "plan accepted");
        self.plan_event(&created.plan, PlanEventKind::Accepted, "accepted", "").await;
        let plan = if preflight_only {
            created.plan.clone()
        } else {
            drop(created); // the first step takes the plan over without copying it
            self.step(&plan_id, |_, _| true).await?.plan.clone()
        };
        Ok(SubmitPlanResponse { plan: Some(plan), existing: false })
    }
}
