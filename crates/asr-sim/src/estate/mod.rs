//! The simulated estate: vault topology, protected items, jobs, VMs, NICs, managed disks,
//! public IPs and storage accounts, and the ASR operations that change them.
//!
//! Time is lazy: operations plan their jobs in full and put the moments their effects apply
//! on a timeline; [`Estate::advance`] applies whatever the clock has passed. Nothing runs in
//! the background, and nothing scans the whole estate per request.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use serde_json::{Map, Value, json};
use time::Duration;

use crate::clock::{self, SimClock, SimTime};
use crate::config::{SeedState, SimConfig};
use crate::faults::Operation;
use crate::ids::{Guids, Scope};
use crate::item::{Busy, Disk, Item, ItemState, Point, Region, RenderContext, Replication, replica_name, vhd_uri};
use crate::job::{AsrFault, DiskSettings, Effect, FinalResult, Job, JobState, TaskOutcome, TaskPlan};
use crate::validate::{self, ReprotectWorld};
use crate::wire::{
    ArmError, ArmErrorDetail, ContainerProperties, FabricProperties, FailoverInput, JobProperties, MappingProperties,
    OperationStatus, PlanFailoverInput, PolicyProperties, ProtectedItemProperties, RecoveryPlanGroup, RecoveryPlanItem,
    RecoveryPlanProperties, RecoveryPointProperties, Resource, ReverseReplicationInput, SwitchProtectionInput,
};

/// A task of a planned job: (`taskId`, `name`, `friendlyName`, share of the job's duration).
/// An empty `taskId` gets a fresh GUID (commit tasks, A2AFailoverCommit-excerpt entry 175).
type TaskSpec = (&'static str, &'static str, &'static str, f64);

/// The name of the seeded replication policy.
pub const POLICY: &str = "24-hour-retention-policy";

/// A request ASR refuses, as an HTTP status and an ARM/ASR error body.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The body (boxed: refusals travel through every `Result` of the estate).
    pub body: Box<ArmError>,
}

impl Refusal {
    /// A refusal with one ASR detail.
    pub fn new(status: u16, code: &str, message: impl Into<String>, detail_code: &str, action: &str) -> Self {
        let message = message.into();
        Self {
            status,
            body: Box::new(ArmError {
                error: ArmErrorDetail {
                    code: code.into(),
                    message: message.clone(),
                    possible_causes: None,
                    recommended_action: None,
                    details: vec![ArmErrorDetail {
                        code: detail_code.into(),
                        message,
                        possible_causes: None,
                        recommended_action: Some(action.into()),
                        details: vec![],
                    }],
                },
            }),
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("The {what} '{name}' was not found."),
            "ResourceNotFound",
            "Check the name and retry.",
        )
    }

    /// 400 for an invalid request body or parameter; names the field.
    pub fn bad_request(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "BadRequest",
            format!("Invalid value for '{field}': {problem}"),
            "InvalidParameter",
            &format!("Correct '{field}' and retry."),
        )
    }
}

/// An accepted long-running operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// The job doing it.
    pub job: String,
    /// The ARM id whose `/operationresults/{job}` is the `Location`.
    pub location_base: String,
    /// The protected item name it acts on (for the operation log).
    pub item: Option<String>,
}

/// A VM in one of the regions.
#[derive(Clone, Debug)]
pub struct Vm {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// "running", "stopped" or "deallocated".
    pub power: &'static str,
    /// Managed disks.
    pub managed: bool,
    /// NIC ids.
    pub nics: Vec<String>,
    /// VM size.
    pub size: String,
    /// `vmId`.
    pub vm_id: String,
    /// Being deleted.
    pub deleting: bool,
    /// Disk names (OS disk first). Managed disks are resources in the VM's resource group
    /// (`Estate` keeps them); unmanaged ones are VHDs in the region's `<location>vhds` account.
    pub disks: Vec<String>,
    /// Test failover network, for test VMs.
    pub network: Option<String>,
}

/// A NIC in one of the regions.
#[derive(Clone, Debug)]
pub struct Nic {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// The VM it is attached to (lowercase id).
    pub vm: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// The public IP of its first IP configuration (lowercase id).
    pub public_ip: Option<String>,
}

/// A managed disk (`Microsoft.Compute/disks`).
#[derive(Clone, Debug)]
pub struct ManagedDiskResource {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// Size in GiB.
    pub size_gb: i64,
    /// SKU (`Premium_LRS`, ...).
    pub sku: String,
    /// The VM it is attached to (lowercase id).
    pub managed_by: Option<String>,
    /// Being deleted.
    pub deleting: bool,
}

/// A public IP address (`Microsoft.Network/publicIPAddresses`).
#[derive(Clone, Debug)]
pub struct PublicIp {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
    /// The NIC whose IP configuration uses it (lowercase id).
    pub nic: Option<String>,
    /// The address.
    pub address: String,
    /// Being deleted.
    pub deleting: bool,
}

/// A storage account (`Microsoft.Storage/storageAccounts`): a region's cache account, or the
/// account holding unmanaged VHDs.
#[derive(Clone, Debug)]
pub struct StorageAccount {
    /// Name.
    pub name: String,
    /// Resource group.
    pub rg: String,
    /// Region index.
    pub region: usize,
}

/// A recovery plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Name.
    pub name: String,
    /// Region index of the plan's primary fabric (fixed for its life).
    pub primary: usize,
    /// Boot groups: lowercase item names.
    pub groups: Vec<Vec<String>>,
    /// Running job.
    pub busy: Option<String>,
    /// Last failover / test failover.
    pub last_failover: Option<SimTime>,
    /// Last test failover.
    pub last_test_failover: Option<SimTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A reprotect job moves its item to the other container (job name).
    Rehome(String),
    /// A job ends (job name).
    End(String),
    /// An item's initial replication has replicated everything: `PrimaryIrCompletion` starts
    /// (item lifecycle id).
    IrEnd(String),
    /// `SecondaryIrCompletion` starts (item lifecycle id).
    SecondaryIr(String),
}

/// Counters of what happened, for `/_sim/counters`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Jobs accepted, by operation log name.
    pub jobs: BTreeMap<&'static str, u64>,
}

/// The estate.
#[derive(Debug)]
pub struct Estate {
    /// Settings.
    pub cfg: SimConfig,
    /// Ids.
    pub scope: Scope,
    /// The two regions: 0 = primary, 1 = secondary.
    pub regions: [Region; 2],
    /// The clock.
    pub clock: SimClock,
    items: BTreeMap<String, Item>,
    by_lifecycle: HashMap<String, String>,
    members: [BTreeSet<String>; 2],
    jobs: HashMap<String, Job>,
    /// Jobs newest first: by creation time, then by the order they were made in.
    job_order: BTreeSet<(Reverse<SimTime>, Reverse<u64>, String)>,
    active_jobs: BTreeSet<String>,
    timeline: BinaryHeap<Reverse<(SimTime, u64, Step)>>,
    vms: BTreeMap<String, Vm>,
    nics: BTreeMap<String, Nic>,
    disks: BTreeMap<String, ManagedDiskResource>,
    public_ips: BTreeMap<String, PublicIp>,
    storage: BTreeMap<String, StorageAccount>,
    plans: BTreeMap<String, Plan>,
    guids: Guids,
    seq: u64,
    /// Counters.
    pub counters: Counters,
    /// Job name → the wall-clock time a client first read the job in a terminal state (the
    /// moment its completion was seen). Reads take `&self`, hence the lock.
    first_terminal_reads: std::sync::Mutex<HashMap<String, FirstReads>>,
    /// Who sends the request being handled: the first product token of its `User-Agent`.
    reader: String,
    /// The request being handled: (client request id, or a fresh GUID in its place;
    /// correlation id of its response). Jobs it creates carry them as `activityId`.
    request_ids: Option<(String, String)>,
}

/// When a job was first read ended: by anyone, and by each client (`User-Agent` product).
#[derive(Clone, Debug, Default)]
struct FirstReads {
    any: Option<time::OffsetDateTime>,
    by: BTreeMap<String, time::OffsetDateTime>,
}

/// One job's life in wall-clock time, as `/_sim/jobs` reports it (benchmarks measure event
/// latency and job chains with it).
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct JobTiming {
    /// The job's name (the last segment of its ARM id).
    pub name: String,
    /// Operation, as the operation log names it (`unplannedFailover`, `failoverCommit`, ...).
    pub operation: &'static str,
    /// ASR's `scenarioName` (`UnplannedFailover`, `SecondaryIrCompletion`, ...).
    pub scenario: &'static str,
    /// Lowercase name of the protected item it acts on, if any.
    pub item: Option<String>,
    /// `targetObjectName`: the VM (or the VM/NIC deleted, or the recovery plan).
    pub target: String,
    /// ASR's state now.
    pub state: &'static str,
    /// Wall-clock Unix milliseconds at which it was accepted.
    pub created_unix_ms: i64,
    /// Wall-clock Unix milliseconds at which it reaches (or reached) its terminal state.
    pub completed_unix_ms: i64,
    /// Wall-clock Unix milliseconds of the first read (GET or list of jobs, operation status,
    /// `Location`) that answered it terminal; `None` while no client has seen it end.
    pub first_terminal_read_unix_ms: Option<i64>,
    /// The same per client, by the first product token of its `User-Agent` (e.g.
    /// `tern-failover`): when the client that acts on the job first saw it end.
    pub first_terminal_read_by: BTreeMap<String, i64>,
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn region(location: &str, app_rg: String) -> Region {
    Region {
        location: location.to_ascii_lowercase(),
        friendly: friendly_location(location),
        fabric: format!("asr-a2a-default-{}", location.to_ascii_lowercase()),
        container: format!("asr-a2a-default-{}-container", location.to_ascii_lowercase()),
        app_rg,
    }
}

fn friendly_location(location: &str) -> String {
    // "eastus2" -> "East US 2", "uksouth" -> "UK South": good enough for display names.
    let l = location.to_ascii_lowercase();
    let mut words: Vec<String> = Vec::new();
    let mut rest = l.as_str();
    while !rest.is_empty() {
        let known = ["central", "north", "south", "east", "west", "us", "uk", "asia", "europe"];
        if let Some(k) = known.iter().find(|k| rest.starts_with(**k)) {
            words.push(if k.len() <= 2 { k.to_ascii_uppercase() } else { capitalize(k) });
            rest = &rest[k.len()..];
        } else if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            words.push(rest.to_owned());
            break;
        } else {
            words.push(capitalize(rest));
            break;
        }
    }
    words.join(" ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

impl Estate {
    /// An estate seeded from `cfg.estate`.
    pub fn new(cfg: SimConfig) -> Self {
        let scope = Scope {
            subscription: cfg.subscription_id.clone(),
            resource_group: cfg.resource_group.clone(),
            vault: cfg.vault.clone(),
        };
        let regions =
            [region(&cfg.primary_region, "rg-app".into()), region(&cfg.secondary_region, "rg-app-asr".into())];
        let mut estate = Self {
            clock: SimClock::new(cfg.time_compression),
            guids: Guids::new(cfg.seed),
            scope,
            regions,
            items: BTreeMap::new(),
            by_lifecycle: HashMap::new(),
            members: [BTreeSet::new(), BTreeSet::new()],
            jobs: HashMap::new(),
            job_order: BTreeSet::new(),
            active_jobs: BTreeSet::new(),
            timeline: BinaryHeap::new(),
            vms: BTreeMap::new(),
            nics: BTreeMap::new(),
            disks: BTreeMap::new(),
            public_ips: BTreeMap::new(),
            storage: BTreeMap::new(),
            plans: BTreeMap::new(),
            seq: 0,
            counters: Counters::default(),
            first_terminal_reads: std::sync::Mutex::new(HashMap::new()),
            reader: String::new(),
            request_ids: None,
            cfg,
        };
        // One cache storage account per region, in its application resource group: the id items
        // render as `primaryStagingAzureStorageAccountId` (reprotect entry 13 has one per item).
        for r in 0..2 {
            let name = format!("{}asrcache", estate.regions[r].location);
            estate.add_storage_account(r, &name);
        }
        let spec = estate.cfg.estate.clone();
        estate.seed(&spec);
        estate
    }

    /// Simulated now.
    pub fn now(&self) -> SimTime {
        self.clock.now()
    }

    /// Number of items.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Adds `spec.vms` VMs in `spec.state` (names continue after existing ones).
    pub fn seed(&mut self, spec: &crate::config::SeedSpec) {
        let now = self.now();
        let start = self.items.len();
        let mut new_names = Vec::new();
        for i in start..start + spec.vms {
            let n = i + 1;
            let every = |k: usize| k > 0 && n % k == 0;
            let vm_name = format!("{}-{n:05}", spec.name_prefix);
            let lifecycle = self.guids.fresh();
            let (initial_primary, primary) = match spec.state {
                SeedState::Protected => (0, 0),
                SeedState::ReadyForFailback => (0, 1),
            };
            let replicating_since = now - Duration::hours(24);
            let late = every(spec.late_disk_every);
            let disks = vec![
                Disk::new(format!("{vm_name}_OsDisk_1_{}", &lifecycle[..8]), true, 136_367_308_800, replicating_since),
                Disk::new(
                    format!("{vm_name}_DataDisk_0"),
                    false,
                    274_877_906_944,
                    if late { now - Duration::hours(2) } else { replicating_since },
                ),
            ];
            let item = Item {
                name: vm_name.clone(),
                lifecycle_id: lifecycle.clone(),
                vm_name: vm_name.clone(),
                vm_size: "Standard_D2s_v3".into(),
                os_type: if n % 3 == 0 { "Linux" } else { "Windows" }.into(),
                initial_primary,
                primary,
                state: ItemState::Protected,
                unhealthy: every(spec.unhealthy_every),
                busy: None,
                disks,
                managed: !every(spec.unmanaged_every),
                points_since: Some(replicating_since),
                points_until: None,
                last_failover: (primary != initial_primary).then(|| now - Duration::hours(30)),
                last_test_failover: None,
                failover_point: None,
                replication: None,
                test_network: None,
                group_id: self.guids.fresh(),
                plans: vec![],
            };
            if !item.managed {
                // The accounts the unmanaged disks' VHDs live in (both regions).
                for r in 0..2 {
                    let name = format!("{}vhds", self.regions[r].location);
                    self.add_storage_account(r, &name);
                }
            }
            let key = vm_name.to_ascii_lowercase();
            let vm_disks = vm_disks(&item.disks, |d| d.name.clone());
            let vm_id = self.create_vm(primary, &vm_name, item.managed, vm_disks.clone(), None);
            if every(spec.public_ip_every) {
                self.attach_public_ip(&vm_id, primary, &format!("{vm_name}-pip"));
            }
            if !self.cfg.reprotect_removes_source_vm && primary != initial_primary {
                // The VM left behind by the first failover, stopped, with its disks.
                let id = self.create_vm(initial_primary, &vm_name, item.managed, vm_disks, None);
                if let Some(vm) = self.vms.get_mut(&id) {
                    vm.power = "deallocated";
                }
            }
            self.members[primary].insert(key.clone());
            self.by_lifecycle.insert(lifecycle, key.clone());
            self.items.insert(key.clone(), item);
            self.create_replicas(&key);
            new_names.push(key.clone());
            if every(spec.syncing_every) {
                self.seed_syncing(&key, now);
            }
        }
        if spec.recovery_plan_size > 0 {
            for (k, chunk) in new_names.chunks(spec.recovery_plan_size.min(100)).enumerate() {
                let name = format!("rp-{}-{:03}", spec.name_prefix, self.plans.len() + k + 1);
                let third = chunk.len().div_ceil(3).max(1);
                let groups: Vec<Vec<String>> = chunk.chunks(third).map(|g| g.to_vec()).collect();
                for g in &groups {
                    for i in g {
                        if let Some(item) = self.items.get_mut(i) {
                            item.plans.push(name.clone());
                        }
                    }
                }
                let primary = self.items.get(&chunk[0]).map_or(0, |i| i.initial_primary);
                self.plans.insert(
                    name.to_ascii_lowercase(),
                    Plan { name, primary, groups, busy: None, last_failover: None, last_test_failover: None },
                );
            }
        }
    }

    /// A seeded item in initial replication after a reprotect job that already succeeded (the
    /// job is in the job list): about 40% replicated, completing later with the two
    /// completion jobs (excerpt entries 41–143 show that phase after EnableDr).
    fn seed_syncing(&mut self, key: &str, now: SimTime) {
        let durations = self.cfg.effective_durations();
        let job_total = durations.reprotect.pick(0.5);
        // Long enough to still be replicating even with zero latency, and to have the job end
        // before now.
        let span = durations
            .initial_replication
            .pick(0.5)
            .max(std::time::Duration::from_secs(600))
            .max(job_total.mul_f64(3.0));
        let span = Duration::seconds_f64(span.as_secs_f64());
        let (since, until) = (now - span * 0.4, now + span * 0.6);
        let mut job = self.plan_reprotect_job(key, vec![], since, job_total, false);
        // The job already re-homed the item where it was seeded.
        job.new_item_id =
            Some(self.items[key].id(&self.scope, &self.regions).replacen("/Subscriptions/", "/subscriptions/", 1));
        // Shift the planned job so that it re-homed the item at `since`.
        let shift = since - job.rehome_at.unwrap_or(job.starts);
        job.created += shift;
        job.starts += shift;
        job.ends += shift;
        for t in &mut job.tasks {
            t.start += shift;
            t.end += shift;
        }
        job.rehome_at = Some(since);
        job.ir_end = Some(until);
        job.finished = true;
        self.insert_finished_job(job);
        let Some(item) = self.items.get_mut(key) else { return };
        item.state = ItemState::InitialReplication;
        item.unhealthy = false; // as after any reprotect job
        item.points_since = None;
        item.replication = Some(Replication { since, until, failed: None });
        let lifecycle = item.lifecycle_id.clone();
        self.schedule(until, Step::IrEnd(lifecycle));
    }

    // -----------------------------------------------------------------------------------------
    // Time

    /// Applies every effect whose moment the clock has passed, each at its own moment. Jobs
    /// this creates (the initial-replication completion jobs) belong to no request.
    pub fn advance(&mut self) {
        let now = self.now();
        let request = self.request_ids.take();
        while let Some(Reverse((at, _, _))) = self.timeline.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, _, step)) = self.timeline.pop().expect("peeked");
            match step {
                Step::Rehome(job) => self.rehome(&job, at),
                Step::End(job) => self.finish(&job, at),
                Step::IrEnd(lifecycle) => self.primary_ir_completion(&lifecycle, at),
                Step::SecondaryIr(lifecycle) => self.secondary_ir_completion(&lifecycle, at),
            }
        }
        self.request_ids = request;
    }

    /// Names the ARM request about to be handled: its `x-ms-client-request-id` (`None`: it
    /// sent none, a fresh GUID stands in) and its response's `x-ms-correlation-request-id`.
    /// Jobs it creates get `activityId = "<client id> ActivityId: <correlation id>"`
    /// (A2AFailoverCommit-excerpt 146→147, 173→174; reprotect entries 16→17).
    pub fn begin_request(&mut self, client_request_id: Option<&str>, correlation_id: &str) {
        let client =
            client_request_id.map(str::to_owned).unwrap_or_else(|| crate::ids::format_guid(rand::random::<u128>()));
        self.request_ids = Some((client, correlation_id.to_owned()));
    }

    /// The request has been handled: later jobs belong to no request.
    pub fn end_request(&mut self) {
        self.request_ids = None;
    }

    /// `activityId` of a job created now.
    fn activity(&mut self) -> String {
        match &self.request_ids {
            Some((client, correlation)) => format!("{client} ActivityId: {correlation}"),
            None => format!("{} ActivityId: {}", self.guids.fresh(), self.guids.fresh()),
        }
    }

    fn schedule(&mut self, at: SimTime, step: Step) {
        self.seq += 1;
        self.timeline.push(Reverse((at, self.seq, step)));
    }

    // -----------------------------------------------------------------------------------------
    // Job planning

    /// Plans a job for `item` whose tasks split `total` by the given fractions. A failure, if
    /// any, ends the job at the end of the task at `fail_at` (index).
    #[allow(clippy::too_many_arguments)]
    fn plan_job(
        &mut self,
        item_key: &str,
        operation: Operation,
        scenario: &'static str,
        friendly: &'static str,
        start: SimTime,
        tasks: &[TaskSpec],
        failure: Option<(usize, AsrFault)>,
        effect: Effect,
        total: std::time::Duration,
    ) -> Job {
        let durations = self.cfg.effective_durations();
        let queue = durations.queueing.pick(self.guids.unit());
        let starts = start + queue;
        let mut t = starts;
        let mut planned = Vec::new();
        let mut ends = starts;
        let mut fail = None;
        for (i, (id, name, friendly, frac)) in tasks.iter().enumerate() {
            let d = total.mul_f64(*frac);
            let end = t + d;
            let outcome = match &failure {
                Some((k, f)) if *k == i => {
                    fail = Some(f.clone());
                    TaskOutcome::Failed(f.clone())
                }
                _ => TaskOutcome::Succeeded,
            };
            let id = if id.is_empty() { self.guids.fresh() } else { (*id).to_owned() };
            planned.push(TaskPlan {
                id,
                name: (*name).to_owned(),
                friendly: (*friendly).to_owned(),
                start: t,
                end,
                outcome,
            });
            t = end;
            ends = end;
            if fail.is_some() {
                break;
            }
        }
        let activity = self.activity();
        let item = self.items.get(item_key);
        let vm = item.map(|i| i.vm_name.clone()).unwrap_or_default();
        let target_id = item.map(|i| i.lifecycle_id.clone()).unwrap_or_default();
        let location_base = item.map(|i| i.id(&self.scope, &self.regions)).unwrap_or_else(|| self.scope.vault_id());
        let lifecycle = item.map(|i| i.lifecycle_id.clone()).unwrap_or_default();
        let affected = self.affected_objects(item);
        Job {
            name: self.guids.fresh(),
            scenario,
            friendly,
            operation,
            item: item.map(|_| item_key.to_owned()),
            plan: None,
            target_name: vm,
            target_id,
            target_type: "ProtectionEntity",
            activity,
            created: start,
            starts,
            ends,
            tasks: planned,
            failure: fail,
            with_information: false,
            cancelled_at: None,
            finished: false,
            effect,
            rehome_at: None,
            new_item_id: None,
            ir_end: None,
            failover_details: None,
            location_base,
            result: FinalResult::Item { lifecycle },
            children: vec![],
            affected,
        }
    }

    /// `affectedObjectDetails` of a job about `item`, shaped as ASR reports it.
    fn affected_objects(&self, item: Option<&Item>) -> Map<String, Value> {
        let Some(item) = item else { return Map::new() };
        let (p, r) = (&self.regions[item.primary], &self.regions[item.recovery()]);
        let v = json!({
            "primaryVmId": item.lifecycle_id, "primaryVmName": item.vm_name, "recoveryVmId": "", "recoveryVmName": item.vm_name,
            "protectionProfileId": crate::ids::guid_of(&[&item.lifecycle_id, "profile"]),
            "primaryCloudId": crate::ids::guid_of(&[&p.container]), "primaryCloudName": p.container,
            "recoveryCloudId": crate::ids::guid_of(&[&r.container]), "recoveryCloudName": r.container,
            "primaryVmmId": crate::ids::guid_of(&[&p.fabric]), "primaryVmmName": p.friendly,
            "recoveryVmmId": crate::ids::guid_of(&[&r.fabric]), "recoveryVmmName": r.friendly,
            "primaryFabricProviderId": "Azure", "recoveryFabricProviderId": "Azure",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A job a client's request started (counted in `/_sim/counters`).
    fn insert_job(&mut self, job: Job) -> String {
        *self.counters.jobs.entry(job.operation.name()).or_default() += 1;
        self.insert_internal_job(job)
    }

    /// A job the estate starts itself (initial-replication completion): not counted.
    fn insert_internal_job(&mut self, job: Job) -> String {
        let name = job.name.clone();
        // Re-homing is queued first so that, at equal times, it precedes the end.
        if let Some(at) = job.rehome_at {
            self.schedule(at, Step::Rehome(name.clone()));
        }
        self.schedule(job.ends, Step::End(name.clone()));
        self.seq += 1;
        self.job_order.insert((Reverse(job.created), Reverse(self.seq), name.clone()));
        self.active_jobs.insert(name.clone());
        self.jobs.insert(name.clone(), job);
        name
    }

    /// A job that already ended before the estate was seeded (its effects are in the seed).
    fn insert_finished_job(&mut self, job: Job) {
        self.seq += 1;
        self.job_order.insert((Reverse(job.created), Reverse(self.seq), job.name.clone()));
        self.jobs.insert(job.name.clone(), job);
    }

    fn fault_for(&self, op: Operation, vm: &str) -> Option<(usize, AsrFault)> {
        self.cfg.faults.failure_for(op, vm).map(|r| (0, AsrFault::from_code(&r.code, r.message.as_deref())))
    }

    // -----------------------------------------------------------------------------------------
    // Lookups

    fn region_of_fabric(&self, fabric: &str) -> Result<usize, Refusal> {
        self.regions.iter().position(|r| r.fabric.eq_ignore_ascii_case(fabric)).ok_or_else(|| {
            // ASR answers an unknown fabric this way, not with 404.
            Refusal::new(
                400,
                "BadRequest",
                format!("The fabric '{fabric}' is not registered with Site Recovery in this vault."),
                "SubscriptionIdNotRegisteredWithSrs",
                "Check the fabric name (list replicationFabrics) and retry.",
            )
        })
    }

    fn region_of_container(&self, fabric: &str, container: &str) -> Result<usize, Refusal> {
        let r = self.region_of_fabric(fabric)?;
        if self.regions[r].container.eq_ignore_ascii_case(container) {
            Ok(r)
        } else {
            Err(Refusal::not_found("protection container", container))
        }
    }

    fn item_key(&self, fabric: &str, container: &str, name: &str) -> Result<String, Refusal> {
        let r = self.region_of_container(fabric, container)?;
        let key = name.to_ascii_lowercase();
        if self.members[r].contains(&key) {
            Ok(key)
        } else {
            Err(Refusal::not_found("replication protected item", name))
        }
    }

    fn render_cx(&self) -> RenderContext<'_> {
        RenderContext {
            scope: &self.scope,
            regions: &self.regions,
            now: self.now(),
            policy: &self.cfg.policy,
            scenario_lag: Duration::seconds_f64(self.cfg.item_scenario_lag_secs),
            policy_name: POLICY,
        }
    }

    fn render_item(&self, item: &Item) -> Resource<ProtectedItemProperties> {
        item.render(&self.render_cx())
    }

    /// GET an item.
    pub fn get_item(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
    ) -> Result<Resource<ProtectedItemProperties>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        Ok(self.render_item(&self.items[&key]))
    }

    /// A page of items: of one container (`Some(fabric, container)`) or of the vault.
    pub fn list_items(
        &self,
        container: Option<(&str, &str)>,
        filter: &ItemFilter,
        skip: Option<&str>,
    ) -> Result<(Vec<Resource<ProtectedItemProperties>>, Option<String>), Refusal> {
        let region = match (container, filter.source_fabric()) {
            (Some((f, c)), _) => Some(self.region_of_container(f, c)?),
            // A source fabric filter names the container index to walk.
            (None, Some(f)) => match self.regions.iter().position(|r| r.fabric.eq_ignore_ascii_case(f)) {
                Some(r) => Some(r),
                None => return Ok((vec![], None)),
            },
            (None, None) => None,
        };
        let from = skip.map(str::to_ascii_lowercase).unwrap_or_default();
        let keys: Box<dyn Iterator<Item = &String>> = match region {
            Some(r) => Box::new(
                self.members[r].range::<String, _>((std::ops::Bound::Excluded(&from), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(
                self.items
                    .range::<String, _>((std::ops::Bound::Excluded(&from), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k),
            ),
        };
        let keys: Box<dyn Iterator<Item = &String>> = if skip.is_none() {
            match region {
                Some(r) => Box::new(self.members[r].iter()),
                None => Box::new(self.items.keys()),
            }
        } else {
            keys
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        for key in keys {
            let item = &self.items[key];
            if !filter.matches(item, &self.regions) {
                continue;
            }
            if out.len() == self.cfg.page_size {
                more = true;
                break;
            }
            out.push(self.render_item(item));
            last = Some(key.clone());
        }
        Ok((out, if more { last } else { None }))
    }

    /// Recovery points of an item, newest first.
    pub fn list_points(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
    ) -> Result<Vec<Resource<RecoveryPointProperties>>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        let item = &self.items[&key];
        let id = item.id(&self.scope, &self.regions);
        let mut points = item.points(self.now(), &self.cfg.policy);
        points.reverse();
        Ok(points.iter().map(|p| item.render_point(p, &id, &self.scope, &self.regions)).collect())
    }

    /// One recovery point.
    pub fn get_point(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
        point: &str,
    ) -> Result<Resource<RecoveryPointProperties>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        let item = &self.items[&key];
        let id = item.id(&self.scope, &self.regions);
        item.points(self.now(), &self.cfg.policy)
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(point))
            .map(|p| item.render_point(p, &id, &self.scope, &self.regions))
            .ok_or_else(|| Refusal::not_found("recovery point", point))
    }

    /// The vault resource.
    pub fn vault(&self) -> Value {
        json!({
            "id": self.scope.vault_id().replacen("/Subscriptions/", "/subscriptions/", 1),
            "name": self.scope.vault, "type": "Microsoft.RecoveryServices/vaults",
            "location": self.regions[1].location, "tags": {}, "sku": {"name": "Standard"},
            "properties": {"provisioningState": "Succeeded", "privateEndpointStateForBackup": "None",
                "privateEndpointStateForSiteRecovery": "None"},
        })
    }

    /// Fabrics.
    pub fn fabrics(&self) -> Vec<Resource<FabricProperties>> {
        (0..2).map(|r| self.render_fabric(r)).collect()
    }

    /// One fabric.
    pub fn fabric(&self, fabric: &str) -> Result<Resource<FabricProperties>, Refusal> {
        Ok(self.render_fabric(self.region_of_fabric(fabric)?))
    }

    fn render_fabric(&self, r: usize) -> Resource<FabricProperties> {
        let reg = &self.regions[r];
        let mut extra = Map::new();
        extra.insert("encryptionDetails".into(), json!({"kekState": "None", "kekCertThumbprint": null}));
        extra.insert("rolloverEncryptionDetails".into(), json!({"kekState": "None", "kekCertThumbprint": null}));
        Resource {
            id: self.scope.fabric_id(&reg.fabric),
            name: reg.fabric.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics".into(),
            location: None,
            properties: FabricProperties {
                friendly_name: Some(reg.friendly.clone()),
                internal_identifier: Some(crate::ids::guid_of(&[&reg.fabric])),
                bcdr_state: Some("Valid".into()),
                custom_details: Some(json!({
                    "instanceType": "Azure", "location": reg.location,
                    "containerIds": [self.scope.container_id(&reg.fabric, &reg.container)], "zones": [],
                })),
                health_error_details: Some(vec![]),
                health: Some("Normal".into()),
                extra,
            },
            extra: Map::new(),
        }
    }

    /// Containers of a fabric.
    pub fn containers(&self, fabric: &str) -> Result<Vec<Resource<ContainerProperties>>, Refusal> {
        Ok(vec![self.render_container(self.region_of_fabric(fabric)?)])
    }

    /// Every container.
    pub fn all_containers(&self) -> Vec<Resource<ContainerProperties>> {
        (0..2).map(|r| self.render_container(r)).collect()
    }

    /// One container.
    pub fn container(&self, fabric: &str, container: &str) -> Result<Resource<ContainerProperties>, Refusal> {
        Ok(self.render_container(self.region_of_container(fabric, container)?))
    }

    fn render_container(&self, r: usize) -> Resource<ContainerProperties> {
        let reg = &self.regions[r];
        Resource {
            id: self.scope.container_id(&reg.fabric, &reg.container),
            name: reg.container.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers".into(),
            location: None,
            properties: ContainerProperties {
                fabric_friendly_name: Some(reg.friendly.clone()),
                friendly_name: Some(reg.container.clone()),
                fabric_type: Some("Azure".into()),
                protected_item_count: Some(self.members[r].len() as i64),
                pairing_status: Some("Paired".into()),
                role: Some("Primary".into()),
                fabric_specific_details: None,
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// Container mappings of a container (one: to the other region).
    pub fn mappings(&self, fabric: &str, container: &str) -> Result<Vec<Resource<MappingProperties>>, Refusal> {
        Ok(vec![self.render_mapping(self.region_of_container(fabric, container)?)])
    }

    /// Every mapping.
    pub fn all_mappings(&self) -> Vec<Resource<MappingProperties>> {
        (0..2).map(|r| self.render_mapping(r)).collect()
    }

    /// One mapping.
    pub fn mapping(&self, fabric: &str, container: &str, name: &str) -> Result<Resource<MappingProperties>, Refusal> {
        let r = self.region_of_container(fabric, container)?;
        let m = self.render_mapping(r);
        if m.name.eq_ignore_ascii_case(name) {
            Ok(m)
        } else {
            Err(Refusal::not_found("protection container mapping", name))
        }
    }

    fn render_mapping(&self, r: usize) -> Resource<MappingProperties> {
        let (src, dst) = (&self.regions[r], &self.regions[1 - r]);
        let name = format!("{}-{}-24-hour-retention-policy", src.location, dst.location);
        Resource {
            id: format!("{}/replicationProtectionContainerMappings/{name}", self.scope.container_id(&src.fabric, &src.container)),
            name,
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectionContainerMappings".into(),
            location: None,
            properties: MappingProperties {
                target_protection_container_id: Some(self.scope.container_id(&dst.fabric, &dst.container)),
                target_protection_container_friendly_name: Some(dst.container.clone()),
                provider_specific_details: Some(json!({
                    "instanceType": "A2A", "agentAutoUpdateStatus": "Disabled",
                    "automationAccountAuthenticationType": "RunAsAccount", "automationAccountArmId": null,
                    "scheduleName": null, "jobScheduleName": null,
                })),
                health: Some("Normal".into()),
                health_error_details: Some(vec![]),
                policy_id: Some(self.scope.policy_id(POLICY)),
                state: Some("Paired".into()),
                source_protection_container_friendly_name: Some(src.container.clone()),
                source_fabric_friendly_name: Some(src.friendly.clone()),
                target_fabric_friendly_name: Some(dst.friendly.clone()),
                policy_friendly_name: Some(POLICY.into()),
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// The replication policy.
    pub fn policy(&self, name: &str) -> Result<Resource<PolicyProperties>, Refusal> {
        if !name.eq_ignore_ascii_case(POLICY) {
            return Err(Refusal::not_found("replication policy", name));
        }
        let p = &self.cfg.policy;
        Ok(Resource {
            id: self.scope.policy_id(POLICY),
            name: POLICY.into(),
            kind: "Microsoft.RecoveryServices/vaults/replicationPolicies".into(),
            location: None,
            properties: PolicyProperties {
                friendly_name: Some(POLICY.into()),
                provider_specific_details: Some(json!({
                    "instanceType": "A2A", "recoveryPointThresholdInMinutes": 0,
                    "recoveryPointHistory": p.retention_minutes, "appConsistentFrequencyInMinutes": p.app_consistent_minutes,
                    "multiVmSyncStatus": "Enabled", "crashConsistentFrequencyInMinutes": p.crash_consistent_minutes,
                    "status": false, "associatedItemsCount": self.items.len(), "dataSourceType": "VM",
                })),
                extra: Map::new(),
            },
            extra: Map::new(),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Jobs

    /// Names the client of the request about to be handled (from its `User-Agent`).
    pub fn set_reader(&mut self, user_agent: &str) {
        let product = user_agent.split_whitespace().next().unwrap_or("");
        let name = product.split('/').next().unwrap_or(product);
        if name != self.reader {
            self.reader = name.to_owned();
        }
    }

    /// Notes that a client was just told `job` is in `state`: the first terminal answer is when
    /// its completion was seen.
    fn note_read(&self, job: &Job, state: JobState) {
        if state.is_terminal() {
            let now = time::OffsetDateTime::now_utc();
            let mut seen = self.first_terminal_reads.lock().unwrap_or_else(|e| e.into_inner());
            let first = seen.entry(job.name.clone()).or_default();
            first.any.get_or_insert(now);
            first.by.entry(self.reader.clone()).or_insert(now);
        }
    }

    /// Every job's timing in wall-clock time, oldest first.
    pub fn job_timings(&self) -> Vec<JobTiming> {
        let now = self.now();
        let seen = self.first_terminal_reads.lock().unwrap_or_else(|e| e.into_inner());
        self.job_order
            .iter()
            .rev()
            .filter_map(|(_, _, n)| self.jobs.get(n))
            .map(|job| JobTiming {
                name: job.name.clone(),
                operation: job.operation.name(),
                scenario: job.scenario,
                item: job.item.clone(),
                target: job.target_name.clone(),
                state: job.state(now).as_str(),
                created_unix_ms: unix_ms(self.clock.to_wall(job.created)),
                completed_unix_ms: unix_ms(self.clock.to_wall(job.cancelled_at.unwrap_or(job.ends).min(job.ends))),
                first_terminal_read_unix_ms: seen.get(&job.name).and_then(|f| f.any).map(unix_ms),
                first_terminal_read_by: seen
                    .get(&job.name)
                    .map(|f| f.by.iter().map(|(who, t)| (who.clone(), unix_ms(*t))).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn render_job(&self, job: &Job) -> Resource<JobProperties> {
        let now = self.now();
        self.note_read(job, job.state(now));
        let children: Vec<(String, String, &'static str)> = if matches!(job.effect, Effect::Reprotect { .. }) {
            let state = if now >= job.ends {
                job.state(now).as_str()
            } else if now >= job.starts {
                "InProgress"
            } else {
                "NotStarted"
            };
            vec![(self.scope.job_id(&crate::ids::guid_of(&[&job.name, "EnableDr"])), job.target_name.clone(), state)]
        } else {
            vec![]
        };
        job.render(self.scope.job_id(&job.name), now, &children)
    }

    /// GET a job.
    pub fn get_job(&self, name: &str) -> Result<Resource<JobProperties>, Refusal> {
        self.jobs
            .get(&name.to_ascii_lowercase())
            .map(|j| self.render_job(j))
            .ok_or_else(|| Refusal::not_found("job", name))
    }

    /// A page of jobs, newest first, as summaries (`Job::render_summary`); jobs still in their
    /// placeholder window are left out (no recording shows a list in that moment: stingy).
    pub fn list_jobs(&self, filter: &JobFilter, skip: Option<&str>) -> (Vec<Resource<JobProperties>>, Option<String>) {
        let now = self.now();
        let mut out = Vec::new();
        let mut next = None;
        let skip_n: usize = skip.and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut matched = 0usize;
        let newest_first = !filter.only_active();
        let candidates: Box<dyn Iterator<Item = &Job>> = if filter.only_active() {
            Box::new(self.active_jobs.iter().filter_map(|n| self.jobs.get(n)))
        } else {
            Box::new(self.job_order.iter().filter_map(|(_, _, n)| self.jobs.get(n)))
        };
        for job in candidates {
            // Newest first: once a job started before the window, every later one did too (no
            // request scans the estate).
            if newest_first && filter.started_before_window(job) {
                break;
            }
            if job.is_placeholder(now) || !filter.matches(job, job.state(now), &self.regions, &self.items) {
                continue;
            }
            matched += 1;
            if matched <= skip_n {
                continue;
            }
            if out.len() == self.cfg.page_size {
                next = Some((skip_n + out.len()).to_string());
                break;
            }
            self.note_read(job, job.state(now));
            out.push(job.render_summary(self.scope.job_id(&job.name), now));
        }
        (out, next)
    }

    /// The `Azure-AsyncOperation` status of a job.
    pub fn operation_status(&self, name: &str, id: String) -> Result<OperationStatus, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("operation", name))?;
        let now = self.now();
        let state = job.state(now);
        self.note_read(job, state);
        Ok(OperationStatus {
            id,
            name: job.name.clone(),
            status: match state {
                JobState::NotStarted | JobState::InProgress => "InProgress",
                JobState::Succeeded => "Succeeded",
                JobState::Failed => "Failed",
                JobState::Cancelled => "Canceled",
            }
            .into(),
            start_time: Some(clock::format(job.created)),
            end_time: state.is_terminal().then(|| clock::format(job.ends.min(now))),
            error: job.failure.as_ref().filter(|_| state == JobState::Failed).map(|f| ArmErrorDetail {
                code: f.code.clone(),
                message: f.message.clone(),
                possible_causes: Some(f.possible_causes.clone()),
                recommended_action: Some(f.recommended_action.clone()),
                details: vec![],
            }),
        })
    }

    /// What a `Location` URL answers: still running, done (with the final resource), or failed.
    pub fn operation_result(&self, base: &str, name: &str) -> Result<OperationResult, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("operation", name))?;
        if !job.location_base.eq_ignore_ascii_case(base) {
            return Err(Refusal::not_found("operation", name));
        }
        let state = job.state(self.now());
        self.note_read(job, state);
        Ok(match state {
            JobState::NotStarted | JobState::InProgress => OperationResult::Running,
            JobState::Cancelled => OperationResult::Failed(Refusal::new(
                400,
                "OperationCanceled",
                format!("The job '{}' was cancelled.", job.name),
                "JobCancelled",
                "Start the operation again if it is still needed.",
            )),
            JobState::Failed => {
                let f = job.failure.clone().expect("failed jobs carry their fault");
                let mut r = Refusal::new(400, "BadRequest", f.message.clone(), &f.code, &f.recommended_action);
                r.body.error.details[0].possible_causes = Some(f.possible_causes);
                OperationResult::Failed(r)
            }
            JobState::Succeeded => match &job.result {
                FinalResult::Nothing => OperationResult::Done(None),
                FinalResult::Item { lifecycle } => {
                    let body = self
                        .by_lifecycle
                        .get(lifecycle)
                        .and_then(|k| self.items.get(k))
                        .map(|i| serde_json::to_value(self.render_item(i)).unwrap_or(Value::Null));
                    OperationResult::Done(body)
                }
                FinalResult::Container { region } => OperationResult::Done(Some(
                    serde_json::to_value(self.render_container(*region)).unwrap_or(Value::Null),
                )),
                FinalResult::Plan { name } => OperationResult::Done(
                    self.plans.get(name).map(|p| serde_json::to_value(self.render_plan(p)).unwrap_or(Value::Null)),
                ),
            },
        })
    }

    /// Cancels a running job: its effect never applies and the item is free again.
    pub fn cancel_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let now = self.now();
        let key = name.to_ascii_lowercase();
        let job = self.jobs.get_mut(&key).ok_or_else(|| Refusal::not_found("job", name))?;
        let state = job.state(now);
        if state.is_terminal() {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' is {} and cannot be cancelled.", state.as_str()),
                "JobNotCancellable",
                "Only a job that has not finished can be cancelled.",
            ));
        }
        if job.rehome_at.is_some_and(|at| at <= now) {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' has passed the point where it can be cancelled."),
                "JobNotCancellable",
                "Wait for the job to finish.",
            ));
        }
        job.cancelled_at = Some(now);
        job.finished = true;
        let item = job.item.clone();
        let plan = job.plan.clone();
        let ir_completion = matches!(job.effect, Effect::IrCompletion { .. });
        self.active_jobs.remove(&key);
        if ir_completion
            && let Some(item) = item.as_ref().and_then(|i| self.items.get_mut(i))
            && item.state == ItemState::InitialReplication
            && let Some(r) = item.replication.as_mut()
        {
            // Unverified: a cancelled completion leaves initial replication failed; a repair
            // finishes it.
            r.failed = Some(AsrFault {
                code: "JobCancelled".into(),
                message: format!("The job '{name}' that completes initial replication was cancelled."),
                possible_causes: "The job was cancelled.".into(),
                recommended_action: "Repair replication (resynchronize) to complete protection.".into(),
            });
        }
        if let Some(item) = item.and_then(|i| self.items.get_mut(&i))
            && item.busy.as_ref().is_some_and(|b| b.job == key)
        {
            item.busy = None;
        }
        if let Some(plan) = plan.and_then(|p| self.plans.get_mut(&p)) {
            plan.busy = None;
        }
        Ok(Accepted { job: key.clone(), location_base: self.scope.job_id(&key), item: None })
    }

    /// Restarts a failed or cancelled job by running its operation again.
    pub fn restart_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let now = self.now();
        let key = name.to_ascii_lowercase();
        let job = self.jobs.get(&key).ok_or_else(|| Refusal::not_found("job", name))?;
        if !matches!(job.state(now), JobState::Failed | JobState::Cancelled) {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!("The job '{name}' is {} and cannot be restarted.", job.state(now).as_str()),
                "JobNotRestartable",
                "Only a failed or cancelled job can be restarted.",
            ));
        }
        let (op, item) = (job.operation, job.item.clone());
        let item = item.ok_or_else(|| Refusal::bad_request("job", "only protected item jobs can be restarted"))?;
        let it = self.items.get(&item).ok_or_else(|| Refusal::not_found("replication protected item", &item))?;
        let r = &self.regions[it.primary];
        let (fabric, container, item_name) = (r.fabric.clone(), r.container.clone(), it.name.clone());
        match op {
            Operation::Failover => self.failover(&fabric, &container, &item_name, &FailoverInput::default()),
            Operation::Commit => self.commit(&fabric, &container, &item_name),
            Operation::TestFailover => self.test_failover(&fabric, &container, &item_name, &FailoverInput::default()),
            Operation::TestFailoverCleanup => self.test_failover_cleanup(&fabric, &container, &item_name),
            Operation::Repair => self.repair(&fabric, &container, &item_name),
            other => Err(Refusal::bad_request("job", format!("{} jobs cannot be restarted", other.name()))),
        }
    }

    /// Resumes a suspended job (only recovery plan manual actions suspend; none here).
    pub fn resume_job(&mut self, name: &str) -> Result<Accepted, Refusal> {
        let job = self.jobs.get(&name.to_ascii_lowercase()).ok_or_else(|| Refusal::not_found("job", name))?;
        Err(Refusal::new(
            400,
            "BadRequest",
            format!("The job '{}' is {} and not suspended.", job.name, job.state(self.now()).as_str()),
            "JobNotSuspended",
            "Only a job waiting on a manual action can be resumed.",
        ))
    }

    // -----------------------------------------------------------------------------------------
    // Item operations

    fn busy_check(&self, key: &str, operation: &str, allowed_op: &str) -> Result<(), Refusal> {
        let item = &self.items[key];
        if let Some(b) = &item.busy {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!(
                    "Another operation ({}) is in progress on protected item '{}' (job {}). '{operation}' cannot start until it finishes.",
                    b.scenario, item.name, b.job
                ),
                "AnotherOperationInProgress",
                "Wait for the running job to finish, then retry.",
            ));
        }
        if !item.allows(allowed_op) {
            let (state, _) = item.protection_state();
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!(
                    "The operation '{operation}' is not allowed on protected item '{}' in state '{state}'. Allowed operations: [{}].",
                    item.name,
                    item.allowed_operations().join(", ")
                ),
                "OperationNotAllowedInCurrentState",
                "Check the item's allowedOperations before starting an operation.",
            ));
        }
        Ok(())
    }

    fn mark_busy(&mut self, key: &str, scenario: &'static str, job: &str, since: SimTime) {
        if let Some(item) = self.items.get_mut(key) {
            item.busy = Some(Busy { scenario, job: job.to_owned(), since });
        }
    }

    fn accepted(&mut self, key: &str, job: Job, scenario: &'static str) -> Accepted {
        let created = job.created;
        let location_base = job.location_base.clone();
        let name = self.insert_job(job);
        self.mark_busy(key, scenario, &name, created);
        self.advance();
        Accepted {
            job: name,
            location_base,
            item: Some(self.items.get(key).map(|i| i.name.clone()).unwrap_or_default()),
        }
    }

    /// Resolves the recovery point a failover asks for: a named one (must exist), or
    /// `None` = latest (pending data is processed first, making a new point now).
    fn resolve_point(
        &self,
        item: &Item,
        requested: Option<&str>,
        now: SimTime,
    ) -> Result<(String, SimTime, bool), Refusal> {
        let id = item.id(&self.scope, &self.regions);
        match requested.filter(|s| !s.is_empty()) {
            None => {
                Ok((format!("{id}/recoveryPoints/{}", crate::item::point_name(&item.lifecycle_id, now)), now, true))
            }
            Some(rp) => {
                let name = rp.rsplit('/').next().unwrap_or(rp);
                let point: Option<Point> =
                    item.points(now, &self.cfg.policy).into_iter().find(|p| p.name.eq_ignore_ascii_case(name));
                match point {
                    Some(p) => Ok((format!("{id}/recoveryPoints/{}", p.name), p.time, false)),
                    None => Err(Refusal::new(
                        400,
                        "BadRequest",
                        format!("The recovery point '{rp}' does not exist for protected item '{}'.", item.name),
                        "RecoveryPointNotFound",
                        "List the item's recovery points and choose one of them.",
                    )),
                }
            }
        }
    }

    /// `unplannedFailover` of one item.
    pub fn failover(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &FailoverInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "UnplannedFailover", "UnplannedFailover")?;
        let item = &self.items[&key];
        match input.failover_direction.as_deref() {
            None | Some("PrimaryToRecovery") => {}
            // Absolute reading of the direction: back to the region the VM started in.
            Some("RecoveryToPrimary") if item.primary != item.initial_primary => {}
            Some(other) => {
                return Err(Refusal::bad_request(
                    "properties.failoverDirection",
                    format!("'{other}' does not fail item '{}' over to its recovery region", item.name),
                ));
            }
        }
        let shutdown_requested = match input.source_site_operations.as_deref() {
            None | Some("NotRequired") => false,
            Some("Required") => true,
            Some(other) => {
                return Err(Refusal::bad_request(
                    "properties.sourceSiteOperations",
                    format!("'{other}' is not Required or NotRequired"),
                ));
            }
        };
        let details = input.provider_specific_details.clone().unwrap_or_default();
        if let Some(t) = details.instance_type.as_deref()
            && !t.eq_ignore_ascii_case("A2A")
        {
            return Err(Refusal::bad_request(
                "properties.providerSpecificDetails.instanceType",
                format!("'{t}' does not match the item's provider A2A"),
            ));
        }
        let now = self.now();
        let (point_id, point_time, latest) = self.resolve_point(item, details.recovery_point_id.as_deref(), now)?;
        let vm = item.vm_name.clone();
        let durations = self.cfg.effective_durations();
        let mut total = durations.failover.pick(self.guids.unit());
        if latest {
            total += durations.latest_processing.pick(self.guids.unit());
        }
        if shutdown_requested {
            total += durations.shutdown.pick(self.guids.unit());
        }
        let shutdown_failed = shutdown_requested && self.cfg.faults.shutdown_fails(&vm);
        let failure = self.fault_for(Operation::Failover, &vm).map(|(_, f)| (3, f));
        // The five tasks with Azure's ids, names and friendly names (excerpt entries 148, 172).
        let tasks: [TaskSpec; 5] = [
            (
                "UnplannedFailoverPreflightChecksTask",
                "VmUfoPrerequisitesCheck",
                "Prerequisites check for failover",
                0.05,
            ),
            (
                "ShutdownVmOnPrimaryForUFO",
                "VmShutdownVmOnPrimary",
                "Shut down the virtual machine",
                if shutdown_requested { 0.2 } else { 0.0 },
            ),
            (
                "PrepareForUnPlannedFailoverTask",
                "VmPrepareForUnPlannedFailover",
                "Synchronizing the latest changes",
                if latest { 0.15 } else { 0.0 },
            ),
            ("FailoverTask", "VmFailover", "Start failover", 0.45),
            ("StartVmOnSecondary", "VmFoStartVmOnSecondary", "Start the replica virtual machine", 0.15),
        ];
        let mut job = self.plan_job(
            &key,
            Operation::Failover,
            "UnplannedFailover",
            "Failover",
            now,
            &tasks,
            failure,
            Effect::Failover { point: (point_id.clone(), point_time), shutdown_requested, shutdown_failed },
            total,
        );
        for t in &mut job.tasks {
            // Skipped tasks are Other/Skipped (excerpt entry 172's sync task).
            if (t.id == "ShutdownVmOnPrimaryForUFO" && !shutdown_requested)
                || (t.id == "PrepareForUnPlannedFailoverTask" && !latest)
            {
                t.outcome = TaskOutcome::Skipped;
            } else if t.id == "ShutdownVmOnPrimaryForUFO" && shutdown_failed {
                t.outcome = TaskOutcome::FailedNonFatal(AsrFault {
                    code: "28041".into(),
                    message: format!(
                        "The virtual machine '{vm}' could not be shut down. Failover continued without shutting it down."
                    ),
                    possible_causes: "The guest did not respond to the shutdown request.".into(),
                    recommended_action: "Shut the source virtual machine down manually if it is still running.".into(),
                });
            }
        }
        job.with_information = shutdown_failed;
        job.failover_details = Some((self.items[&key].name.clone(), vm, point_id, point_time));
        Ok(self.accepted(&key, job, "UnplannedFailover"))
    }

    /// `applyRecoveryPoint`.
    pub fn apply_recovery_point(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        point: Option<&str>,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "ChangePit", "ChangePit")?;
        let point = point
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Refusal::bad_request("properties.recoveryPointId", "is required"))?;
        let now = self.now();
        let (point_id, _, _) = self.resolve_point(&self.items[&key], Some(point), now)?;
        let total = self.cfg.effective_durations().apply_recovery_point.pick(self.guids.unit());
        let vm = self.items[&key].vm_name.clone();
        let failure = self.fault_for(Operation::ApplyRecoveryPoint, &vm).map(|(_, f)| (1, f));
        let job = self.plan_job(
            &key,
            Operation::ApplyRecoveryPoint,
            "ChangePit",
            "Change recovery point",
            now,
            &[
                ("ChangePitPreflightTask", "ChangePitPreflightTask", "Prerequisite check", 0.1),
                ("ChangePitTask", "ChangePitTask", "Changing recovery point", 0.9),
            ],
            failure,
            Effect::ApplyRecoveryPoint { point: point_id },
            total,
        );
        Ok(self.accepted(&key, job, "ChangePit"))
    }

    /// What a reprotect of `item` is checked against (see `validate`): the VM as it runs now,
    /// the vault's policies, the storage accounts, and the one resource group the simulator
    /// recovers VMs to.
    pub fn reprotect_world(&self, item: &Item) -> ReprotectWorld {
        let running = item.running_region();
        let target = 1 - running;
        let (run, here) = (&self.regions[running], &self.regions[item.primary]);
        ReprotectWorld {
            container_id: self.scope.container_id(&here.fabric, &here.container),
            policy_ids: vec![self.scope.policy_id(POLICY)],
            managed: item.managed,
            disks: item
                .disks
                .iter()
                .map(|d| {
                    if item.managed {
                        self.scope.disk_id(&run.app_rg, &d.name)
                    } else {
                        vhd_uri(&run.location, &d.name)
                    }
                })
                .collect(),
            storage_accounts: self
                .storage
                .values()
                .map(|a| (self.storage_id(a), self.regions[a.region].location.clone()))
                .collect(),
            running_location: run.location.clone(),
            target_location: self.regions[target].location.clone(),
            recovery_resource_groups: vec![self.scope.rg_id(&self.regions[target].app_rg)],
        }
    }

    /// `switchprotection` on a container: A2A reprotect of the named item, validated as Azure
    /// and PowerShell build it (reprotect entries 13–16; `validate::switch_protection`).
    pub fn switch_protection(
        &mut self,
        fabric: &str,
        container: &str,
        input: &SwitchProtectionInput,
    ) -> Result<Accepted, Refusal> {
        let name = input
            .replication_protected_item_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Refusal::bad_request("properties.replicationProtectedItemName", "is required"))?;
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "SwitchProtection", "SwitchProtection")?;
        let choices = validate::switch_protection(input, &self.reprotect_world(&self.items[&key]))?;
        self.reprotect(&key, choices, true)
    }

    /// Generic `reProtect` on an item: refused for managed-disk items (A2AReprotectInput has no
    /// vmManagedDisks, asr-api.md §3.3(b)); unmanaged ones are validated like switch protection.
    pub fn reverse_replicate(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &ReverseReplicationInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "SwitchProtection", "SwitchProtection")?;
        let choices = validate::reprotect(input, &self.reprotect_world(&self.items[&key]))?;
        self.reprotect(&key, choices, false)
    }

    /// Plans a reprotect job of `key` starting at `start`: its tasks as recorded (reprotect
    /// entry 43), the re-home moment (after the requirements are known), and the end of the
    /// initial replication that follows it.
    fn plan_reprotect_job(
        &mut self,
        key: &str,
        disks: Vec<DiskSettings>,
        start: SimTime,
        total: std::time::Duration,
        faults_apply: bool,
    ) -> Job {
        let item = &self.items[key];
        let vm = item.vm_name.clone();
        let old_region = item.primary;
        let durations = self.cfg.effective_durations();
        let failure = if faults_apply { self.fault_for(Operation::Reprotect, &vm).map(|(_, f)| (0, f)) } else { None };
        let tasks: [TaskSpec; 5] = [
            (
                "SwitchReplicationGroupProtectionPreflightTask",
                "SwitchReplicationGroupProtectionPreflightTask",
                "Prerequisite check",
                0.04,
            ),
            ("CommitFailoverTask", "VmCommitFailover", "Committing failover", 0.0),
            ("DiscoverReplicaTask", "DiscoverReplicaTask", "Discovering replica virtual machine", 0.03),
            (
                "GetSwitchProtectionRequirementsTask",
                "GetSwitchProtectionRequirementsTask",
                "Getting reprotection requirements",
                0.03,
            ),
            ("ProtectReplicaTask", "ProtectReplicaTask", "Reprotecting virtual machine (1)", 0.9),
        ];
        let mut job = self.plan_job(
            key,
            Operation::Reprotect,
            "SwitchReplicationGroupProtection",
            "Reprotect",
            start,
            &tasks,
            failure,
            Effect::Reprotect { disks },
            total,
        );
        if let Some(t) = job.tasks.get_mut(1) {
            t.outcome = TaskOutcome::Skipped;
        }
        if job.failure.is_none() {
            // The item moves to its new container once the requirements are known.
            let rehome = job.tasks.get(3).map_or(job.starts, |t| t.end);
            job.rehome_at = Some(rehome);
            let nr = &self.regions[1 - old_region];
            job.new_item_id = Some(self.scope.item_id(&nr.fabric, &nr.container, &self.items[key].name).replacen(
                "/Subscriptions/",
                "/subscriptions/",
                1,
            ));
            // Initial replication goes on after the job (excerpt entries 41–122).
            job.ir_end = Some(job.ends + durations.initial_replication.pick(self.guids.unit()));
        }
        job
    }

    fn reprotect(
        &mut self,
        key: &str,
        choices: Vec<validate::DiskChoice>,
        container_result: bool,
    ) -> Result<Accepted, Refusal> {
        let now = self.now();
        let old_region = self.items[key].primary;
        let total = self.cfg.effective_durations().reprotect.pick(self.guids.unit());
        let disks = choices
            .into_iter()
            .map(|c| DiskSettings {
                index: c.index,
                staging_account: c.staging_account,
                recovery_account: c.recovery_account,
                replica_type: c.replica_type,
                target_type: c.target_type,
            })
            .collect();
        let mut job = self.plan_reprotect_job(key, disks, now, total, true);
        if container_result {
            let r = &self.regions[old_region];
            job.location_base = self.scope.container_id(&r.fabric, &r.container);
            job.result = FinalResult::Container { region: 1 - old_region };
        }
        Ok(self.accepted(key, job, "SwitchProtection"))
    }

    /// `testFailover`.
    pub fn test_failover(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        input: &FailoverInput,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, "TestFailover", "TestFailover")?;
        let network = match input.network_type.as_deref() {
            Some("VmNetworkAsInput") | None if input.network_id.is_some() => input.network_id.clone(),
            Some("VmNetworkAsInput") => {
                return Err(Refusal::bad_request(
                    "properties.networkId",
                    "is required with networkType VmNetworkAsInput",
                ));
            }
            _ => None,
        };
        let now = self.now();
        let details = input.provider_specific_details.clone().unwrap_or_default();
        let (point_id, point_time, _) = {
            let item = &self.items[&key];
            match details.recovery_point_id.as_deref().filter(|s| !s.is_empty()) {
                Some(rp) => self.resolve_point(item, Some(rp), now)?,
                None => {
                    let latest = item.points(now, &self.cfg.policy).pop();
                    let id = item.id(&self.scope, &self.regions);
                    latest.map_or_else(
                        || self.resolve_point(item, None, now),
                        |p| Ok((format!("{id}/recoveryPoints/{}", p.name), p.time, false)),
                    )?
                }
            }
        };
        let vm = self.items[&key].vm_name.clone();
        let total = self.cfg.effective_durations().test_failover.pick(self.guids.unit());
        let failure = self.fault_for(Operation::TestFailover, &vm).map(|(_, f)| (1, f));
        let mut job = self.plan_job(
            &key,
            Operation::TestFailover,
            "TestFailover",
            "Test failover",
            now,
            &[
                (
                    "TestFailoverPreflightTask",
                    "TestFailoverPreflightTask",
                    "Prerequisites check for test failover",
                    0.1,
                ),
                ("CreateTestVmTask", "CreateTestVmTask", "Create test virtual machine", 0.6),
                ("StartTestVmTask", "StartTestVmTask", "Start the virtual machine", 0.3),
            ],
            failure,
            Effect::TestFailover { network },
            total,
        );
        job.failover_details = Some((self.items[&key].name.clone(), vm, point_id, point_time));
        Ok(self.accepted(&key, job, "TestFailover"))
    }

    /// Starts one of the operations that only need the item, its state and a job.
    fn simple_operation(
        &mut self,
        fabric: &str,
        container: &str,
        name: &str,
        op: SimpleOp,
    ) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        self.busy_check(&key, op.allowed, op.allowed)?;
        let vm = self.items[&key].vm_name.clone();
        let total = (op.duration)(&self.cfg.effective_durations()).pick(self.guids.unit());
        let failure = self.fault_for(op.operation, &vm).map(|(_, f)| (op.failing_task, f));
        let mut job = self.plan_job(
            &key,
            op.operation,
            op.scenario,
            op.friendly,
            self.now(),
            op.tasks,
            failure,
            op.effect,
            total,
        );
        if op.no_content {
            job.result = FinalResult::Nothing;
        }
        Ok(self.accepted(&key, job, op.allowed))
    }

    /// `failoverCommit`.
    pub fn commit(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "Commit",
                operation: Operation::Commit,
                scenario: "CommitFailover",
                friendly: "Commit",
                // Task ids are GUIDs, names as recorded (excerpt entry 175).
                tasks: &[
                    ("", "VmCommitPrerequisitesCheck", "Prerequisite check", 0.2),
                    ("", "VmCommit", "Commit", 0.8),
                ],
                failing_task: 1,
                effect: Effect::Commit,
                duration: |d| d.commit,
                no_content: false,
            },
        )
    }

    /// `failoverCancel`.
    pub fn cancel_failover(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "CancelFailover",
                operation: Operation::CancelFailover,
                scenario: "CancelFailover",
                friendly: "Cancel failover",
                tasks: &[("CancelFailoverTask", "CancelFailoverTask", "Cancelling failover", 1.0)],
                failing_task: 0,
                effect: Effect::CancelFailover,
                duration: |d| d.cancel_failover,
                no_content: false,
            },
        )
    }

    /// `testFailoverCleanup`.
    pub fn test_failover_cleanup(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "TestFailoverCleanup",
                operation: Operation::TestFailoverCleanup,
                scenario: "TestFailoverCleanup",
                friendly: "Cleanup test failover",
                tasks: &[("DeleteTestVmTask", "DeleteTestVmTask", "Delete the test virtual machine", 1.0)],
                failing_task: 0,
                effect: Effect::TestFailoverCleanup,
                duration: |d| d.test_failover_cleanup,
                no_content: false,
            },
        )
    }

    /// `repairReplication`.
    pub fn repair(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "RepairReplication",
                operation: Operation::Repair,
                scenario: "Resync",
                friendly: "Resynchronize",
                tasks: &[("ResyncTask", "ResyncTask", "Resynchronizing data", 1.0)],
                failing_task: 0,
                effect: Effect::Repair,
                duration: |d| d.repair,
                no_content: false,
            },
        )
    }

    /// `remove`: disable replication; the item leaves the vault when the job ends.
    pub fn disable(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        self.simple_operation(
            fabric,
            container,
            name,
            SimpleOp {
                allowed: "DisableProtection",
                operation: Operation::DisableProtection,
                scenario: "DisableDr",
                friendly: "Disable replication",
                tasks: &[
                    ("DisableProtectionTask", "DisableProtectionTask", "Disabling protection", 0.7),
                    ("CleanupTask", "CleanupTask", "Cleaning up replication resources", 0.3),
                ],
                failing_task: 0,
                effect: Effect::Disable,
                duration: |d| d.disable,
                no_content: true,
            },
        )
    }

    /// `DELETE` of an item: purge it from the vault now, without cleanup.
    pub fn purge(&mut self, fabric: &str, container: &str, name: &str) -> Result<Accepted, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        if let Some(b) = &self.items[&key].busy
            && !matches!(self.items[&key].state, ItemState::Reprotecting)
        {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!("Another operation ({}) is in progress on protected item '{name}'.", b.scenario),
                "AnotherOperationInProgress",
                "Wait for the running job to finish, then retry.",
            ));
        }
        let mut job = self.plan_job(
            &key,
            Operation::Purge,
            "PurgeProtection",
            "Delete replicated item",
            self.now(),
            &[("PurgeTask", "PurgeTask", "Removing the item from the vault", 1.0)],
            None,
            Effect::Purge,
            std::time::Duration::ZERO,
        );
        job.result = FinalResult::Nothing;
        job.item = None;
        let name = self.items[&key].name.clone();
        self.remove_item(&key);
        let location_base = job.location_base.clone();
        let job = self.insert_job(job);
        self.advance();
        Ok(Accepted { job, location_base, item: Some(name) })
    }

    fn remove_item(&mut self, key: &str) {
        if let Some(item) = self.items.remove(key) {
            self.members[item.primary].remove(key);
            self.by_lifecycle.remove(&item.lifecycle_id);
            for plan in self.plans.values_mut() {
                for g in &mut plan.groups {
                    g.retain(|k| k != key);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Effects

    fn rehome(&mut self, job_name: &str, at: SimTime) {
        let Some(job) = self.jobs.get(job_name) else { return };
        if job.cancelled_at.is_some() || job.finished {
            return;
        }
        let Some(key) = job.item.clone() else { return };
        let until = job.ir_end.unwrap_or(job.ends).max(at);
        let settings = match &job.effect {
            Effect::Reprotect { disks } => disks.clone(),
            _ => vec![],
        };
        let Some(item) = self.items.get_mut(&key) else { return };
        let old = item.primary;
        self.members[old].remove(&key);
        item.primary = 1 - old;
        item.state = ItemState::Reprotecting;
        item.points_since = None;
        item.points_until = None;
        // Per-disk progress runs from now to the end of initial replication.
        item.replication = Some(Replication { since: at, until, failed: None });
        for s in settings {
            if let Some(d) = item.disks.get_mut(s.index) {
                d.staging_account = Some(s.staging_account);
                d.recovery_account = s.recovery_account;
                d.replica_type = s.replica_type;
                d.target_type = s.target_type;
            }
        }
        self.members[item.primary].insert(key.clone());
        // The VM left in the new recovery region is powered off while its disks are reused
        // (failback tutorial), and the replicas of the VM that runs now are made there.
        let (rg, vm_name) = (self.regions[old].app_rg.clone(), item.vm_name.clone());
        if let Some(vm) = self.vms.get_mut(&self.scope.vm_id(&rg, &vm_name).to_ascii_lowercase()) {
            vm.power = "deallocated";
        }
        self.create_replicas(&key);
    }

    fn finish(&mut self, job_name: &str, at: SimTime) {
        let Some(job) = self.jobs.get_mut(job_name) else { return };
        if job.finished {
            return;
        }
        job.finished = true;
        self.active_jobs.remove(job_name);
        let job = job.clone();
        let failed = job.failure.is_some();
        let key = job.item.clone();
        let item_exists = key.as_ref().is_some_and(|k| self.items.contains_key(k));
        if let (Some(key), true) = (&key, item_exists) {
            let item = self.items.get_mut(key).expect("checked");
            if item.busy.as_ref().is_some_and(|b| b.job == job.name) {
                item.busy = None;
            }
        }
        match (&job.effect, key, item_exists) {
            (Effect::Failover { point, shutdown_requested, shutdown_failed }, Some(key), true) => {
                if failed {
                    self.items.get_mut(&key).expect("exists").state = ItemState::FailoverFailed;
                    return;
                }
                // The replicas become the disks of the VM the failover creates.
                self.remove_replicas(&key);
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::FailedOver;
                item.last_failover = Some(at);
                item.failover_point = Some(point.0.clone());
                item.points_until = Some(at);
                let (src, dst, vm, managed) = (item.primary, item.recovery(), item.vm_name.clone(), item.managed);
                let disks = vm_disks(&item.disks, |d| d.name.clone());
                if *shutdown_requested && !*shutdown_failed {
                    let id = self.scope.vm_id(&self.regions[src].app_rg, &vm).to_ascii_lowercase();
                    if let Some(v) = self.vms.get_mut(&id) {
                        v.power = "deallocated";
                    }
                }
                self.create_vm(dst, &vm, managed, disks, None);
            }
            (Effect::Commit, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Committed;
                item.points_since = None;
                item.points_until = None;
            }
            (Effect::ApplyRecoveryPoint { point }, Some(key), true) if !failed => {
                self.items.get_mut(&key).expect("exists").failover_point = Some(point.clone());
            }
            (Effect::CancelFailover, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Protected;
                item.points_until = None;
                let (src, dst, vm) = (item.primary, item.recovery(), item.vm_name.clone());
                self.drop_vm(&self.scope.vm_id(&self.regions[dst].app_rg, &vm).to_ascii_lowercase());
                let id = self.scope.vm_id(&self.regions[src].app_rg, &vm).to_ascii_lowercase();
                if let Some(v) = self.vms.get_mut(&id) {
                    v.power = "running";
                }
                self.create_replicas(&key);
            }
            (Effect::Reprotect { .. }, Some(key), true) => {
                if failed {
                    return; // failed before re-homing: still committed, may be retried
                }
                // The job succeeded; the VM is not protected yet: initial replication goes on
                // (excerpt entries 41–143), then the two completion jobs.
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::InitialReplication;
                item.unhealthy = false;
                item.points_since = None;
                let until = item.replication.as_ref().map_or(at, |r| r.until).max(at);
                let (recovery, vm, managed, lifecycle) =
                    (item.recovery(), item.vm_name.clone(), item.managed, item.lifecycle_id.clone());
                if self.cfg.reprotect_removes_source_vm && managed {
                    let id = self.scope.vm_id(&self.regions[recovery].app_rg, &vm).to_ascii_lowercase();
                    self.drop_vm(&id);
                }
                self.schedule(until, Step::IrEnd(lifecycle));
            }
            (Effect::IrCompletion { secondary: false }, Some(key), true) => {
                let item = &self.items[&key];
                if item.state == ItemState::InitialReplication && !item.replication_failed() {
                    let gap = self.cfg.effective_durations().ir_completion_gap.pick(self.guids.unit());
                    let lifecycle = item.lifecycle_id.clone();
                    self.schedule(at + gap, Step::SecondaryIr(lifecycle));
                }
            }
            (Effect::IrCompletion { secondary: true }, Some(key), true) => {
                let item = self.items.get_mut(&key).expect("exists");
                if item.state != ItemState::InitialReplication {
                    return;
                }
                match &job.failure {
                    Some(f) => {
                        if let Some(r) = item.replication.as_mut() {
                            r.failed = Some(f.clone());
                        }
                    }
                    None => protect(item, at),
                }
            }
            (Effect::TestFailover { network }, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::TestFailedOver;
                item.last_test_failover = Some(at);
                item.test_network = network.clone();
                let (dst, vm, managed) = (item.recovery(), format!("{}-test", item.vm_name), item.managed);
                let boots = !self.cfg.faults.test_vm_fails_to_boot(&item.vm_name);
                let disks = vm_disks(&item.disks, |d| format!("{}-ASRtest", d.name));
                let id = self.create_vm(dst, &vm, managed, disks, network.clone());
                if let (false, Some(v)) = (boots, self.vms.get_mut(&id)) {
                    v.power = "stopped";
                }
            }
            (Effect::TestFailoverCleanup, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.state = ItemState::Protected;
                item.test_network = None;
                let id = self
                    .scope
                    .vm_id(&self.regions[item.recovery()].app_rg, &format!("{}-test", item.vm_name))
                    .to_ascii_lowercase();
                self.drop_vm(&id);
            }
            (Effect::Repair, Some(key), true) if !failed => {
                let item = self.items.get_mut(&key).expect("exists");
                item.unhealthy = false;
                if item.state == ItemState::InitialReplication {
                    // A resync after a failed completion ends with the disks protected.
                    protect(item, at);
                }
            }
            (Effect::Disable, Some(key), true) if !failed => {
                // Disabling cleans up what replication created (failback tutorial); a purge does not.
                self.remove_replicas(&key);
                self.remove_item(&key);
            }
            (Effect::DeleteResource { id }, _, _) if !failed => self.delete_now(id),
            (Effect::DeleteResource { id }, _, _) => {
                // A failed delete leaves the resource as it was.
                if let Some(vm) = self.vms.get_mut(id) {
                    vm.deleting = false;
                } else if let Some(nic) = self.nics.get_mut(id) {
                    nic.deleting = false;
                } else if let Some(d) = self.disks.get_mut(id) {
                    d.deleting = false;
                } else if let Some(p) = self.public_ips.get_mut(id) {
                    p.deleting = false;
                }
            }
            (Effect::PlanParent, _, _) => {
                if let Some(plan) = job.plan.as_ref().and_then(|p| self.plans.get_mut(p)) {
                    plan.busy = None;
                }
            }
            _ => {}
        }
    }

    /// The end of an item's initial replication: `PrimaryIrCompletion` starts
    /// (excerpt entry 122: "Finalize protection on the primary virtual machine", ~2 s).
    fn primary_ir_completion(&mut self, lifecycle: &str, at: SimTime) {
        let Some(key) = self.by_lifecycle.get(lifecycle).cloned() else { return };
        if self.items[&key].state != ItemState::InitialReplication || self.items[&key].replication_failed() {
            return;
        }
        let total = self.cfg.effective_durations().ir_completion.pick(self.guids.unit());
        let job = self.plan_job(
            &key,
            Operation::IrCompletion,
            "PrimaryIrCompletion",
            "Finalize protection on the primary virtual machine",
            at,
            &[
                ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication", 0.6),
                ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states", 0.4),
            ],
            None,
            Effect::IrCompletion { secondary: false },
            total,
        );
        self.insert_internal_job(job);
    }

    /// `SecondaryIrCompletion` starts, with the four tasks recorded in excerpt entry 142; the
    /// item is protected when it succeeds (entries 143–144). Fault target `ir_completion`.
    fn secondary_ir_completion(&mut self, lifecycle: &str, at: SimTime) {
        let Some(key) = self.by_lifecycle.get(lifecycle).cloned() else { return };
        if self.items[&key].state != ItemState::InitialReplication || self.items[&key].replication_failed() {
            return;
        }
        let vm = self.items[&key].vm_name.clone();
        let total = self.cfg.effective_durations().ir_completion.pick(self.guids.unit());
        let failure = self.fault_for(Operation::IrCompletion, &vm).map(|(_, f)| (1, f));
        let job = self.plan_job(
            &key,
            Operation::IrCompletion,
            "SecondaryIrCompletion",
            "Finalize protection on the recovery virtual machine",
            at,
            &[
                ("CompleteInitialReplicationTask", "CompleteInitialReplication", "Complete initial replication", 0.1),
                (
                    "ReplicaConfigurationPreflightChecksTask",
                    "FailWorkflowOnIRFailureTask",
                    "Finalizing initial replication",
                    0.1,
                ),
                (
                    "ReplicaConfigurationTask",
                    "ReplicaConfiguration",
                    "Complete network and post-replication configuration",
                    0.6,
                ),
                ("UpdateDraStateTask", "UpdateDraState", "Updating the provider states", 0.2),
            ],
            failure,
            Effect::IrCompletion { secondary: true },
            total,
        );
        self.insert_internal_job(job);
    }

    // -----------------------------------------------------------------------------------------
    // Compute and network

    /// Creates a running VM with one NIC and, when managed, its disks as resources in its
    /// resource group (attached to it); the lowercase VM id.
    fn create_vm(
        &mut self,
        region: usize,
        name: &str,
        managed: bool,
        disks: Vec<NewDisk>,
        network: Option<String>,
    ) -> String {
        let rg = self.regions[region].app_rg.clone();
        let id = self.scope.vm_id(&rg, name).to_ascii_lowercase();
        let nic_name = format!("{name}-nic");
        let nic_id = self.scope.nic_id(&rg, &nic_name).to_ascii_lowercase();
        let vm_id = self.guids.fresh();
        if managed {
            for d in &disks {
                self.disks.insert(
                    self.scope.disk_id(&rg, &d.name).to_ascii_lowercase(),
                    ManagedDiskResource {
                        name: d.name.clone(),
                        rg: rg.clone(),
                        region,
                        size_gb: d.bytes / (1 << 30),
                        sku: d.sku.clone(),
                        managed_by: Some(id.clone()),
                        deleting: false,
                    },
                );
            }
        }
        self.vms.insert(
            id.clone(),
            Vm {
                name: name.to_owned(),
                rg: rg.clone(),
                region,
                power: "running",
                managed,
                nics: vec![nic_id.clone()],
                size: "Standard_D2s_v3".into(),
                vm_id,
                deleting: false,
                disks: disks.into_iter().map(|d| d.name).collect(),
                network,
            },
        );
        // The failover-created VM's NIC gets no public IP (none is configured for recovery).
        self.nics
            .insert(nic_id, Nic { name: nic_name, rg, region, vm: Some(id.clone()), deleting: false, public_ip: None });
        id
    }

    /// Gives the first NIC of `vm` a new public IP `name` in the VM's resource group.
    fn attach_public_ip(&mut self, vm: &str, region: usize, name: &str) {
        let Some(nic_id) = self.vms.get(vm).and_then(|v| v.nics.first().cloned()) else { return };
        let rg = self.regions[region].app_rg.clone();
        let id = self.public_ip_id(&rg, name).to_ascii_lowercase();
        let n = self.public_ips.len() as u32;
        let address = format!("20.{}.{}.{}", 40 + region * 10 + (n as usize >> 16), (n >> 8) & 0xff, (n & 0xff).max(1));
        self.public_ips.insert(
            id.clone(),
            PublicIp { name: name.to_owned(), rg, region, nic: Some(nic_id.clone()), address, deleting: false },
        );
        if let Some(nic) = self.nics.get_mut(&nic_id) {
            nic.public_ip = Some(id);
        }
    }

    /// Removes a VM with its NICs and managed disks (what ASR itself removes: a cancelled
    /// failover's VM, a test VM, the VM reprotect leaves behind). Public IPs stay, unassociated.
    fn drop_vm(&mut self, id: &str) {
        if let Some(vm) = self.vms.remove(id) {
            for nic in vm.nics {
                self.remove_nic(&nic);
            }
            for d in &vm.disks {
                self.disks.remove(&self.scope.disk_id(&vm.rg, d).to_ascii_lowercase());
            }
        }
    }

    fn remove_nic(&mut self, id: &str) {
        if let Some(nic) = self.nics.remove(id)
            && let Some(pip) = nic.public_ip.and_then(|p| self.public_ips.get_mut(&p))
        {
            pip.nic = None;
        }
    }

    /// The replica disks of a managed item, `<disk>-ASRReplica` in the recovery region's
    /// application resource group, unattached (excerpt entry 144), while it replicates.
    fn create_replicas(&mut self, key: &str) {
        let Some(item) = self.items.get(key) else { return };
        if !item.managed || !item.has_replicas() {
            return;
        }
        let region = item.recovery();
        let rg = self.regions[region].app_rg.clone();
        let replicas: Vec<(String, ManagedDiskResource)> = item
            .disks
            .iter()
            .map(|d| {
                let name = replica_name(&d.name);
                (
                    self.scope.disk_id(&rg, &name).to_ascii_lowercase(),
                    ManagedDiskResource {
                        name,
                        rg: rg.clone(),
                        region,
                        size_gb: d.bytes / (1 << 30),
                        sku: d.replica_type.clone().unwrap_or_else(|| "Premium_LRS".into()),
                        managed_by: None,
                        deleting: false,
                    },
                )
            })
            .collect();
        self.disks.extend(replicas);
    }

    fn remove_replicas(&mut self, key: &str) {
        let Some(item) = self.items.get(key) else { return };
        let rg = &self.regions[item.recovery()].app_rg;
        let ids: Vec<String> =
            item.disks.iter().map(|d| self.scope.disk_id(rg, &replica_name(&d.name)).to_ascii_lowercase()).collect();
        for id in ids {
            self.disks.remove(&id);
        }
    }

    fn add_storage_account(&mut self, region: usize, name: &str) {
        let rg = self.regions[region].app_rg.clone();
        let account = StorageAccount { name: name.to_owned(), rg, region };
        let id = self.storage_id(&account).to_ascii_lowercase();
        self.storage.entry(id).or_insert(account);
    }

    fn storage_id(&self, a: &StorageAccount) -> String {
        format!("{}/providers/Microsoft.Storage/storageAccounts/{}", self.scope.rg_id(&a.rg), a.name)
    }

    fn public_ip_id(&self, rg: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/publicIPAddresses/{name}", self.scope.rg_id(rg))
    }

    /// The cache storage account of each region, by location (the ready line and `/_sim/info`).
    pub fn cache_storage_accounts(&self) -> BTreeMap<String, String> {
        self.regions
            .iter()
            .map(|r| {
                let a = StorageAccount { name: format!("{}asrcache", r.location), rg: r.app_rg.clone(), region: 0 };
                (r.location.clone(), self.storage_id(&a))
            })
            .collect()
    }

    fn resolve_rg(&self, rg: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.app_rg.eq_ignore_ascii_case(rg))
    }

    /// The entries of `map` (keyed by lowercase ARM id) under `prefix`: a range, not a scan.
    fn under<'a, T>(map: &'a BTreeMap<String, T>, prefix: &str) -> impl Iterator<Item = &'a T> + 'a {
        let prefix = prefix.to_ascii_lowercase();
        map.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(&prefix)).map(|(_, v)| v)
    }

    /// GET a VM (`instance_view`: with power state).
    pub fn get_vm(&self, rg: &str, name: &str, instance_view: bool) -> Result<Value, Refusal> {
        let id = self.scope.vm_id(rg, name).to_ascii_lowercase();
        self.vms
            .get(&id)
            .map(|vm| self.render_vm(vm, instance_view))
            .ok_or_else(|| compute_not_found("Microsoft.Compute/virtualMachines", rg, name))
    }

    /// A VM's instance view.
    pub fn vm_instance_view(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.vm_id(rg, name).to_ascii_lowercase();
        self.vms
            .get(&id)
            .map(instance_view)
            .ok_or_else(|| compute_not_found("Microsoft.Compute/virtualMachines", rg, name))
    }

    /// VMs of a resource group.
    pub fn list_vms(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Compute/virtualMachines/", self.scope.rg_id(rg));
        Ok(Self::under(&self.vms, &prefix).map(|v| self.render_vm(v, false)).collect())
    }

    fn render_vm(&self, vm: &Vm, with_view: bool) -> Value {
        let r = &self.regions[vm.region];
        let os_disk = vm.disks.first().cloned().unwrap_or_else(|| format!("{}_OsDisk_1", vm.name));
        // As Compute renders it (reprotect entry 15): managed disks by id and account type,
        // unmanaged ones by VHD URI.
        let disk_ref = |name: &str| {
            if vm.managed {
                let id = self.scope.disk_id(&vm.rg, name);
                let sku = self.disks.get(&id.to_ascii_lowercase()).map_or("Premium_LRS", |d| d.sku.as_str());
                json!({"managedDisk": {"storageAccountType": sku, "id": id}})
            } else {
                json!({"vhd": {"uri": vhd_uri(&r.location, name)}})
            }
        };
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        let storage = json!({
            "osDisk": with(json!({"name": os_disk, "createOption": "Attach"}), disk_ref(&os_disk)),
            "dataDisks": vm.disks.iter().skip(1).enumerate()
                .map(|(i, d)| with(json!({"lun": i, "name": d, "createOption": "Attach"}), disk_ref(d)))
                .collect::<Vec<_>>(),
        });
        let mut props = json!({
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.size},
            "storageProfile": storage,
            "networkProfile": {"networkInterfaces": vm.nics.iter().map(|n| json!({"id": self.nics.get(n).map(|nic| self.scope.nic_id(&nic.rg, &nic.name)).unwrap_or_else(|| n.clone())})).collect::<Vec<_>>()},
            "provisioningState": if vm.deleting { "Deleting" } else { "Succeeded" },
        });
        if with_view {
            props["instanceView"] = instance_view(vm);
        }
        json!({"id": self.scope.vm_id(&vm.rg, &vm.name), "name": vm.name, "type": "Microsoft.Compute/virtualMachines", "location": r.location, "tags": {}, "properties": props})
    }

    /// GET a NIC.
    pub fn get_nic(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.nic_id(rg, name).to_ascii_lowercase();
        self.nics
            .get(&id)
            .map(|n| self.render_nic(n))
            .ok_or_else(|| compute_not_found("Microsoft.Network/networkInterfaces", rg, name))
    }

    /// NICs of a resource group.
    pub fn list_nics(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Network/networkInterfaces/", self.scope.rg_id(rg));
        Ok(Self::under(&self.nics, &prefix).map(|n| self.render_nic(n)).collect())
    }

    fn render_nic(&self, nic: &Nic) -> Value {
        let id = self.scope.nic_id(&nic.rg, &nic.name);
        let vm =
            nic.vm.as_ref().and_then(|id| self.vms.get(id)).map(|vm| json!({"id": self.scope.vm_id(&vm.rg, &vm.name)}));
        let mut ip_props = json!({"privateIPAllocationMethod": "Dynamic"});
        if let Some(pip) = nic.public_ip.as_ref().and_then(|p| self.public_ips.get(p)) {
            ip_props["publicIPAddress"] = json!({"id": self.public_ip_id(&pip.rg, &pip.name)});
        }
        json!({"id": id, "name": nic.name, "type": "Microsoft.Network/networkInterfaces",
               "location": self.regions[nic.region].location,
               "properties": {"provisioningState": if nic.deleting { "Deleting" } else { "Succeeded" }, "virtualMachine": vm,
                              "ipConfigurations": [{"name": "ipconfig1", "id": format!("{id}/ipConfigurations/ipconfig1"), "properties": ip_props}]}})
    }

    /// GET a managed disk.
    pub fn get_disk(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.scope.disk_id(rg, name).to_ascii_lowercase();
        self.disks
            .get(&id)
            .map(|d| self.render_disk(d))
            .ok_or_else(|| compute_not_found("Microsoft.Compute/disks", rg, name))
    }

    /// Managed disks of a resource group.
    pub fn list_disks(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Compute/disks/", self.scope.rg_id(rg));
        Ok(Self::under(&self.disks, &prefix).map(|d| self.render_disk(d)).collect())
    }

    fn render_disk(&self, d: &ManagedDiskResource) -> Value {
        let vm = d.managed_by.as_ref().and_then(|id| self.vms.get(id)).map(|vm| self.scope.vm_id(&vm.rg, &vm.name));
        let tier = if d.sku.starts_with("Premium") { "Premium" } else { "Standard" };
        json!({"id": self.scope.disk_id(&d.rg, &d.name), "name": d.name, "type": "Microsoft.Compute/disks",
               "location": self.regions[d.region].location, "managedBy": vm,
               "sku": {"name": d.sku, "tier": tier},
               "properties": {"diskSizeGB": d.size_gb, "diskState": if vm.is_some() { "Attached" } else { "Unattached" },
                              "provisioningState": if d.deleting { "Deleting" } else { "Succeeded" }}})
    }

    /// GET a public IP address.
    pub fn get_public_ip(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id = self.public_ip_id(rg, name).to_ascii_lowercase();
        self.public_ips
            .get(&id)
            .map(|p| self.render_public_ip(p))
            .ok_or_else(|| compute_not_found("Microsoft.Network/publicIPAddresses", rg, name))
    }

    /// Public IP addresses of a resource group.
    pub fn list_public_ips(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Network/publicIPAddresses/", self.scope.rg_id(rg));
        Ok(Self::under(&self.public_ips, &prefix).map(|p| self.render_public_ip(p)).collect())
    }

    fn render_public_ip(&self, p: &PublicIp) -> Value {
        let mut props = json!({"provisioningState": if p.deleting { "Deleting" } else { "Succeeded" },
            "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4", "ipAddress": p.address});
        if let Some(nic) = p.nic.as_ref().and_then(|n| self.nics.get(n)) {
            let nic_id = self.scope.nic_id(&nic.rg, &nic.name);
            props["ipConfiguration"] = json!({"id": format!("{nic_id}/ipConfigurations/ipconfig1")});
        }
        json!({"id": self.public_ip_id(&p.rg, &p.name), "name": p.name, "type": "Microsoft.Network/publicIPAddresses",
               "location": self.regions[p.region].location, "sku": {"name": "Standard", "tier": "Regional"},
               "properties": props})
    }

    /// GET a storage account.
    pub fn get_storage_account(&self, rg: &str, name: &str) -> Result<Value, Refusal> {
        let id =
            format!("{}/providers/Microsoft.Storage/storageAccounts/{name}", self.scope.rg_id(rg)).to_ascii_lowercase();
        self.storage
            .get(&id)
            .map(|a| self.render_storage_account(a))
            .ok_or_else(|| compute_not_found("Microsoft.Storage/storageAccounts", rg, name))
    }

    /// Storage accounts of a resource group.
    pub fn list_storage_accounts(&self, rg: &str) -> Result<Vec<Value>, Refusal> {
        self.resolve_rg(rg).ok_or_else(|| resource_group_not_found(rg))?;
        let prefix = format!("{}/providers/Microsoft.Storage/storageAccounts/", self.scope.rg_id(rg));
        Ok(Self::under(&self.storage, &prefix).map(|a| self.render_storage_account(a)).collect())
    }

    fn render_storage_account(&self, a: &StorageAccount) -> Value {
        let location = &self.regions[a.region].location;
        json!({"id": self.storage_id(a), "name": a.name, "type": "Microsoft.Storage/storageAccounts",
               "location": location, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"},
               "properties": {"provisioningState": "Succeeded", "primaryLocation": location}})
    }

    /// DELETE a VM, NIC, managed disk or public IP: accepted, gone when the delete job ends.
    /// As in Azure (Compute and Network behaviour, no recording): deleting a VM keeps its NICs
    /// and disks (no `deleteOption` is set); an attached disk (409 OperationNotAllowed), a NIC
    /// in use (400 NicInUse) and an associated public IP (400 PublicIPAddressInUse) cannot be
    /// deleted.
    pub fn delete_resource(&mut self, kind: ResourceKind, rg: &str, name: &str) -> Result<Accepted, Refusal> {
        let (id, provider) = match kind {
            ResourceKind::Vm => (self.scope.vm_id(rg, name), "Microsoft.Compute/virtualMachines"),
            ResourceKind::Nic => (self.scope.nic_id(rg, name), "Microsoft.Network/networkInterfaces"),
            ResourceKind::Disk => (self.scope.disk_id(rg, name), "Microsoft.Compute/disks"),
            ResourceKind::PublicIp => (self.public_ip_id(rg, name), "Microsoft.Network/publicIPAddresses"),
        };
        let id = id.to_ascii_lowercase();
        let arm_error = |status: u16, code: &str, message: String| {
            let mut r = Refusal::new(status, code, message, code, "");
            r.body.error.details.clear();
            r
        };
        match kind {
            ResourceKind::Nic => {
                let attached = self.nics.get(&id).and_then(|n| n.vm.clone()).filter(|vm| self.vms.contains_key(vm));
                if let Some(vm) = attached {
                    return Err(arm_error(
                        400,
                        "NicInUse",
                        format!("Network interface {id} is used by virtual machine {vm} and cannot be deleted."),
                    ));
                }
            }
            ResourceKind::Disk => {
                let attached = self.disks.get(&id).and_then(|d| d.managed_by.clone()).and_then(|vm| self.vms.get(&vm));
                if let Some(vm) = attached {
                    return Err(arm_error(
                        409,
                        "OperationNotAllowed",
                        format!(
                            "Disk {name} is attached to VM {}. Detach the disk or delete the VM first.",
                            self.scope.vm_id(&vm.rg, &vm.name)
                        ),
                    ));
                }
            }
            ResourceKind::PublicIp => {
                let used = self.public_ips.get(&id).and_then(|p| p.nic.clone()).and_then(|n| self.nics.get(&n));
                if let Some(nic) = used {
                    return Err(arm_error(
                        400,
                        "PublicIPAddressInUse",
                        format!(
                            "Public IP address {} can not be deleted since it is still allocated to resource {}/ipConfigurations/ipconfig1.",
                            self.public_ip_id(rg, name),
                            self.scope.nic_id(&nic.rg, &nic.name)
                        ),
                    ));
                }
            }
            ResourceKind::Vm => {}
        }
        let exists = match kind {
            ResourceKind::Vm => self.vms.get_mut(&id).map(|v| v.deleting = true).is_some(),
            ResourceKind::Nic => self.nics.get_mut(&id).map(|n| n.deleting = true).is_some(),
            ResourceKind::Disk => self.disks.get_mut(&id).map(|d| d.deleting = true).is_some(),
            ResourceKind::PublicIp => self.public_ips.get_mut(&id).map(|p| p.deleting = true).is_some(),
        };
        if !exists {
            return Err(compute_not_found(provider, rg, name));
        }
        let now = self.now();
        let total = self.cfg.effective_durations().delete.pick(self.guids.unit());
        let failure = self.fault_for(Operation::Delete, name).map(|(_, f)| (0, f));
        let mut job = self.plan_job(
            "",
            Operation::Delete,
            "Delete",
            "Delete",
            now,
            &[("DeleteTask", "DeleteTask", "Deleting", 1.0)],
            failure,
            Effect::DeleteResource { id: id.clone() },
            total,
        );
        job.target_name = name.to_owned();
        job.target_type = "Resource";
        job.result = FinalResult::Nothing;
        let region = self.resolve_rg(rg).unwrap_or(0);
        job.location_base = format!(
            "/subscriptions/{}/providers/{}/locations/{}",
            self.scope.subscription,
            provider.split('/').next().unwrap_or("Microsoft.Compute"),
            self.regions[region].location
        );
        let location_base = job.location_base.clone();
        let job = self.insert_job(job);
        self.advance();
        Ok(Accepted { job, location_base, item: Some(name.to_owned()) })
    }

    /// A delete job ended: the resource is gone. A VM's NICs and disks stay, detached; a NIC's
    /// public IP stays, unassociated.
    fn delete_now(&mut self, id: &str) {
        if let Some(vm) = self.vms.remove(id) {
            for nic in vm.nics {
                if let Some(n) = self.nics.get_mut(&nic) {
                    n.vm = None;
                }
            }
            for d in vm.disks {
                if let Some(disk) = self.disks.get_mut(&self.scope.disk_id(&vm.rg, &d).to_ascii_lowercase()) {
                    disk.managed_by = None;
                }
            }
        } else if self.nics.contains_key(id) {
            self.remove_nic(id);
        } else if self.disks.remove(id).is_none() {
            self.public_ips.remove(id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Recovery plans

    /// Recovery plans.
    pub fn list_plans(&self) -> Vec<Resource<RecoveryPlanProperties>> {
        self.plans.values().map(|p| self.render_plan(p)).collect()
    }

    /// One recovery plan.
    pub fn get_plan(&self, name: &str) -> Result<Resource<RecoveryPlanProperties>, Refusal> {
        self.plans
            .get(&name.to_ascii_lowercase())
            .map(|p| self.render_plan(p))
            .ok_or_else(|| Refusal::not_found("recovery plan", name))
    }

    fn render_plan(&self, plan: &Plan) -> Resource<RecoveryPlanProperties> {
        let (p, r) = (&self.regions[plan.primary], &self.regions[1 - plan.primary]);
        let item_ref = |k: &String| {
            self.items.get(k).map(|i| RecoveryPlanItem {
                id: Some(i.id(&self.scope, &self.regions)),
                virtual_machine_id: Some(i.lifecycle_id.clone()),
                extra: Map::new(),
            })
        };
        let mut groups = vec![
            RecoveryPlanGroup {
                group_type: "Shutdown".into(),
                replication_protected_items: Some(vec![]),
                start_group_actions: Some(vec![]),
                end_group_actions: Some(vec![]),
                extra: Map::new(),
            },
            RecoveryPlanGroup {
                group_type: "Failover".into(),
                replication_protected_items: Some(vec![]),
                start_group_actions: Some(vec![]),
                end_group_actions: Some(vec![]),
                extra: Map::new(),
            },
        ];
        for g in &plan.groups {
            groups.push(RecoveryPlanGroup {
                group_type: "Boot".into(),
                replication_protected_items: Some(g.iter().filter_map(item_ref).collect()),
                start_group_actions: Some(vec![]),
                end_group_actions: Some(vec![]),
                extra: Map::new(),
            });
        }
        let busy = plan.busy.as_ref().and_then(|j| self.jobs.get(j));
        Resource {
            id: self.scope.plan_id(&plan.name),
            name: plan.name.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationRecoveryPlans".into(),
            location: None,
            properties: RecoveryPlanProperties {
                friendly_name: Some(plan.name.clone()),
                primary_fabric_id: Some(self.scope.fabric_id(&p.fabric)),
                primary_fabric_friendly_name: Some(p.friendly.clone()),
                recovery_fabric_id: Some(self.scope.fabric_id(&r.fabric)),
                recovery_fabric_friendly_name: Some(r.friendly.clone()),
                failover_deployment_model: Some("ResourceManager".into()),
                replication_providers: Some(vec!["A2A".into()]),
                allowed_operations: Some(if busy.is_some() {
                    vec![]
                } else {
                    vec![
                        "UnplannedFailover".into(),
                        "TestFailover".into(),
                        "FailoverCommit".into(),
                        "TestFailoverCleanup".into(),
                    ]
                }),
                last_planned_failover_time: None,
                last_unplanned_failover_time: plan.last_failover.map(clock::format),
                last_test_failover_time: plan.last_test_failover.map(clock::format),
                current_scenario: busy.map(|j| crate::wire::CurrentScenario {
                    scenario_name: Some(j.scenario.into()),
                    job_id: Some(self.scope.job_id(&j.name)),
                    start_time: Some(clock::format(j.created)),
                    ..Default::default()
                }),
                current_scenario_status: busy.map(|j| j.state(self.now()).as_str().into()),
                current_scenario_status_description: None,
                groups: Some(groups),
                provider_specific_details: Some(vec![
                    json!({"instanceType": "A2A", "primaryZone": null, "recoveryZone": null}),
                ]),
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// A recovery plan operation: runs the item operation on every item of the plan that can
    /// take it, boot group after boot group, under one parent job.
    pub fn plan_operation(&mut self, name: &str, op: PlanOp, input: &PlanFailoverInput) -> Result<Accepted, Refusal> {
        let key = name.to_ascii_lowercase();
        let plan = self.plans.get(&key).ok_or_else(|| Refusal::not_found("recovery plan", name))?.clone();
        if op == PlanOp::Reprotect {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!(
                    "Reprotect of recovery plan '{}' is not supported: it contains A2A replicated items, which are reprotected one by one.",
                    plan.name
                ),
                "UnsupportedReplicationProviderForReprotect",
                "Reprotect each replicated item of the plan (switch protection) instead.",
            ));
        }
        if let Some(j) = &plan.busy {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!("Recovery plan '{}' is already running job {j}.", plan.name),
                "AnotherOperationInProgress",
                "Wait for the running job to finish.",
            ));
        }
        let direction = input.failover_direction.as_deref();
        if matches!(op, PlanOp::Failover | PlanOp::TestFailover)
            && !matches!(direction, Some("PrimaryToRecovery" | "RecoveryToPrimary"))
        {
            return Err(Refusal::bad_request(
                "properties.failoverDirection",
                "must be PrimaryToRecovery or RecoveryToPrimary",
            ));
        }
        let point_type = input
            .provider_specific_details
            .as_ref()
            .and_then(|d| d.first())
            .and_then(|d| d.recovery_point_type.clone());
        if let Some(t) = &point_type
            && !["Latest", "LatestProcessed", "LatestApplicationConsistent", "LatestCrashConsistent"]
                .contains(&t.as_str())
        {
            return Err(Refusal::bad_request(
                "properties.providerSpecificDetails[0].recoveryPointType",
                format!("'{t}' is not a recovery point type"),
            ));
        }
        // The plan's fabrics are fixed: failback (RecoveryToPrimary) acts on items now homed in
        // the plan's recovery fabric.
        let from = match direction {
            Some("RecoveryToPrimary") => 1 - plan.primary,
            _ => plan.primary,
        };
        let now = self.now();
        let mut children = Vec::new();
        let mut errors = Vec::new();
        for group in &plan.groups {
            for key in group {
                let Some(item) = self.items.get(key) else { continue };
                let r = &self.regions[item.primary];
                let (fabric, container, item_name) = (r.fabric.clone(), r.container.clone(), item.name.clone());
                let res = match op {
                    PlanOp::Failover if item.primary == from => {
                        let rp = self.plan_point(item, point_type.as_deref());
                        let mut fi = FailoverInput {
                            failover_direction: Some("PrimaryToRecovery".into()),
                            source_site_operations: input.source_site_operations.clone(),
                            ..Default::default()
                        };
                        fi.provider_specific_details =
                            Some(crate::wire::FailoverProviderInput { recovery_point_id: rp, ..Default::default() });
                        self.failover(&fabric, &container, &item_name, &fi)
                    }
                    PlanOp::Commit => self.commit(&fabric, &container, &item_name),
                    PlanOp::TestFailover if item.primary == from => {
                        let fi = FailoverInput {
                            network_id: input.network_id.clone(),
                            network_type: input.network_type.clone(),
                            ..Default::default()
                        };
                        self.test_failover(&fabric, &container, &item_name, &fi)
                    }
                    PlanOp::TestFailoverCleanup => self.test_failover_cleanup(&fabric, &container, &item_name),
                    _ => continue,
                };
                match res {
                    Ok(a) => children.push(a.job),
                    Err(e) => errors.push(format!("{item_name}: {}", e.body.error.message)),
                }
            }
        }
        if children.is_empty() {
            return Err(Refusal::new(
                400,
                "BadRequest",
                format!(
                    "No replicated item of recovery plan '{}' can take this operation now. {}",
                    plan.name,
                    errors.join(" ")
                ),
                "OperationNotAllowedInCurrentState",
                "Check the allowed operations of the plan's items.",
            ));
        }
        let ends = children.iter().filter_map(|c| self.jobs.get(c)).map(|j| j.ends).max().unwrap_or(now);
        let failure = children.iter().filter_map(|c| self.jobs.get(c)).find_map(|j| j.failure.clone());
        let (scenario, friendly) = match op {
            PlanOp::Failover => ("RecoveryPlanUnplannedFailover", "Unplanned failover"),
            PlanOp::Commit => ("RecoveryPlanCommitFailover", "Commit"),
            PlanOp::TestFailover => ("RecoveryPlanTestFailover", "Test failover"),
            PlanOp::TestFailoverCleanup => ("RecoveryPlanTestFailoverCleanup", "Cleanup test failover"),
            PlanOp::Reprotect => unreachable!("refused above"),
        };
        let activity = self.activity();
        let job = Job {
            name: self.guids.fresh(),
            scenario,
            friendly,
            operation: match op {
                PlanOp::Failover => Operation::Failover,
                PlanOp::Commit => Operation::Commit,
                PlanOp::TestFailover => Operation::TestFailover,
                _ => Operation::TestFailoverCleanup,
            },
            item: None,
            plan: Some(key.clone()),
            target_name: plan.name.clone(),
            target_id: crate::ids::guid_of(&[&plan.name]),
            target_type: "RecoveryPlan",
            activity,
            created: now,
            starts: now,
            ends,
            tasks: vec![TaskPlan {
                id: "RecoveryPlanGroupTask".into(),
                name: "RecoveryPlanGroupTask".into(),
                friendly: format!("{} VMs", children.len()),
                start: now,
                end: ends,
                outcome: failure.clone().map_or(TaskOutcome::Succeeded, TaskOutcome::Failed),
            }],
            failure,
            with_information: false,
            cancelled_at: None,
            finished: false,
            effect: Effect::PlanParent,
            rehome_at: None,
            new_item_id: None,
            ir_end: None,
            failover_details: None,
            location_base: self.scope.plan_id(&plan.name),
            result: FinalResult::Plan { name: key.clone() },
            children,
            affected: Map::new(),
        };
        let location_base = job.location_base.clone();
        let job = self.insert_job(job);
        if let Some(p) = self.plans.get_mut(&key) {
            p.busy = Some(job.clone());
            match op {
                PlanOp::Failover => p.last_failover = Some(now),
                PlanOp::TestFailover => p.last_test_failover = Some(now),
                _ => {}
            }
        }
        self.advance();
        Ok(Accepted { job, location_base, item: Some(plan.name) })
    }

    fn plan_point(&self, item: &Item, point_type: Option<&str>) -> Option<String> {
        let now = self.now();
        let points = item.points(now, &self.cfg.policy);
        let id = item.id(&self.scope, &self.regions);
        let pick = |p: Option<&Point>| p.map(|p| format!("{id}/recoveryPoints/{}", p.name));
        match point_type {
            Some("LatestProcessed") | Some("LatestCrashConsistent") => pick(points.last()),
            Some("LatestApplicationConsistent") => pick(points.iter().rev().find(|p| p.app_consistent)),
            _ => None, // Latest: process pending data first
        }
    }

    /// A short summary for `/_sim/counters`.
    pub fn census(&self) -> Value {
        let now = self.now();
        let mut states: BTreeMap<&str, u64> = BTreeMap::new();
        for item in self.items.values() {
            *states.entry(item.protection_state().0).or_default() += 1;
        }
        let mut job_states: BTreeMap<&str, u64> = BTreeMap::new();
        for job in self.jobs.values() {
            *job_states.entry(job.state(now).as_str()).or_default() += 1;
        }
        let running_vms: [usize; 2] =
            [0, 1].map(|r| self.vms.values().filter(|v| v.region == r && v.power == "running").count());
        json!({
            "items": self.items.len(), "items_by_protection_state": states, "jobs_by_state": job_states,
            "jobs_started": self.counters.jobs, "vms": self.vms.len(), "nics": self.nics.len(),
            "disks": self.disks.len(), "public_ips": self.public_ips.len(), "storage_accounts": self.storage.len(),
            "running_vms_by_region": {self.regions[0].location.clone(): running_vms[0], self.regions[1].location.clone(): running_vms[1]},
            "sim_time": clock::format(now),
        })
    }
}

/// The shape of an operation started by `Estate::simple_operation`.
struct SimpleOp {
    /// The `allowedOperations` value that gates it (also its `currentScenario`).
    allowed: &'static str,
    operation: Operation,
    scenario: &'static str,
    friendly: &'static str,
    tasks: &'static [TaskSpec],
    /// Which task fails when a fault is injected.
    failing_task: usize,
    effect: Effect,
    duration: fn(&crate::config::Durations) -> crate::config::Span,
    /// The Location URL ends with 204 (the item is gone).
    no_content: bool,
}

/// A Compute or Network resource kind that can be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// `Microsoft.Compute/virtualMachines`.
    Vm,
    /// `Microsoft.Network/networkInterfaces`.
    Nic,
    /// `Microsoft.Compute/disks`.
    Disk,
    /// `Microsoft.Network/publicIPAddresses`.
    PublicIp,
}

/// A disk a new VM gets.
#[derive(Clone, Debug)]
struct NewDisk {
    name: String,
    bytes: i64,
    sku: String,
}

/// The disks of a VM made for `disks` (named by `name`).
fn vm_disks(disks: &[Disk], name: impl Fn(&Disk) -> String) -> Vec<NewDisk> {
    disks.iter().map(|d| NewDisk { name: name(d), bytes: d.bytes, sku: d.sku().to_owned() }).collect()
}

/// The end of an initial replication (or of a repair after it failed): the disks are
/// protected, recovery points start, the item is Protected with its full operations
/// (excerpt entries 143–144).
fn protect(item: &mut Item, at: SimTime) {
    item.state = ItemState::Protected;
    item.replication = None;
    item.unhealthy = false;
    item.points_since = Some(at);
    item.points_until = None;
    for d in &mut item.disks {
        d.protected_since = d.protected_since.max(at);
    }
}

/// Recovery plan operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanOp {
    Failover,
    Commit,
    TestFailover,
    TestFailoverCleanup,
    Reprotect,
}

/// What a `Location` URL answers.
#[derive(Clone, Debug, PartialEq)]
pub enum OperationResult {
    /// 202: still running.
    Running,
    /// 200 with the body, or 204 without.
    Done(Option<Value>),
    /// The operation failed.
    Failed(Refusal),
}

fn instance_view(vm: &Vm) -> Value {
    json!({"statuses": [
        {"code": if vm.deleting { "ProvisioningState/deleting" } else { "ProvisioningState/succeeded" }, "level": "Info", "displayStatus": "Provisioning succeeded"},
        {"code": format!("PowerState/{}", vm.power), "level": "Info", "displayStatus": format!("VM {}", vm.power)},
    ]})
}

fn compute_not_found(provider: &str, rg: &str, name: &str) -> Refusal {
    let mut r = Refusal::new(
        404,
        "ResourceNotFound",
        format!("The Resource '{provider}/{name}' under resource group '{rg}' was not found."),
        "ResourceNotFound",
        "Check the name.",
    );
    r.body.error.details.clear();
    r
}

fn resource_group_not_found(rg: &str) -> Refusal {
    let mut r = Refusal::new(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
        "ResourceGroupNotFound",
        "Check the name.",
    );
    r.body.error.details.clear();
    r
}

/// `$filter` on protected item lists: `<field> eq '<value>'` clauses joined by `and`, over the
/// spec's `ProtectedItemsQueryParameter` fields only. Any other field is refused by name, not
/// honoured (the fidelity rule: the spec defines no other).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemFilter {
    clauses: Vec<(String, String)>,
}

impl ItemFilter {
    /// Parses a filter; fields outside `ProtectedItemsQueryParameter` are refused by name.
    pub fn parse(filter: Option<&str>) -> Result<Self, Refusal> {
        let clauses = parse_filter(
            filter,
            &[
                "sourcefabricname",
                "sourcefabriclocation",
                "recoveryplanname",
                "vcentername",
                "instancetype",
                "multivmgroupcreateoption",
                "processserverid",
            ],
        )?;
        Ok(Self { clauses })
    }

    /// The `sourceFabricName` asked for, if any.
    fn source_fabric(&self) -> Option<&str> {
        self.clauses.iter().find(|(k, _)| k == "sourcefabricname").map(|(_, v)| v.as_str())
    }

    fn matches(&self, item: &Item, regions: &[Region; 2]) -> bool {
        let source = &regions[item.primary];
        self.clauses.iter().all(|(k, v)| match k.as_str() {
            // The fabric the item replicates from now.
            "sourcefabricname" => source.fabric.eq_ignore_ascii_case(v),
            "sourcefabriclocation" => source.location.eq_ignore_ascii_case(v),
            "recoveryplanname" => item.plans.iter().any(|p| p.eq_ignore_ascii_case(v)),
            "instancetype" => v.eq_ignore_ascii_case("A2A"),
            "multivmgroupcreateoption" => v.eq_ignore_ascii_case("AutoCreated"),
            // VMware/physical fields: no A2A item matches them.
            _ => false,
        })
    }
}

/// `$filter` on job lists (JobQueryParameter fields).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFilter {
    start: Option<SimTime>,
    end: Option<SimTime>,
    status: Option<String>,
    fabric: Option<String>,
    affected_types: Option<String>,
    name: Option<String>,
}

impl JobFilter {
    /// Whether `job` started before the filter's `startTime`.
    fn started_before_window(&self, job: &Job) -> bool {
        self.start.is_some_and(|s| job.created < s)
    }

    /// Parses a filter; unknown fields and bad times are refused by name.
    pub fn parse(filter: Option<&str>) -> Result<Self, Refusal> {
        let mut f = Self::default();
        for (k, v) in parse_filter(
            filter,
            &[
                "starttime",
                "endtime",
                "jobstatus",
                "fabricid",
                "affectedobjecttypes",
                "jobname",
                "joboutputtype",
                "timezoneoffset",
            ],
        )? {
            let time = |v: &str| {
                clock::parse(v).ok_or_else(|| {
                    Refusal::bad_request(&format!("$filter {k}"), format!("'{v}' is not an RFC 3339 time"))
                })
            };
            match k.as_str() {
                "starttime" => f.start = Some(time(&v)?),
                "endtime" => f.end = Some(time(&v)?),
                "jobstatus" => f.status = Some(v),
                "fabricid" => f.fabric = Some(v),
                "affectedobjecttypes" => f.affected_types = Some(v),
                "jobname" => f.name = Some(v),
                _ => {}
            }
        }
        Ok(f)
    }

    fn only_active(&self) -> bool {
        self.status.as_deref().is_some_and(|s| {
            s.split(',')
                .all(|s| s.trim().eq_ignore_ascii_case("InProgress") || s.trim().eq_ignore_ascii_case("NotStarted"))
        })
    }

    fn matches(&self, job: &Job, state: JobState, regions: &[Region; 2], items: &BTreeMap<String, Item>) -> bool {
        if self.start.is_some_and(|s| job.created < s) || self.end.is_some_and(|e| job.created > e) {
            return false;
        }
        if let Some(st) = &self.status
            && !st.split(',').any(|s| s.trim().eq_ignore_ascii_case(state.as_str()))
        {
            return false;
        }
        if let Some(n) = &self.name
            && !job.scenario.eq_ignore_ascii_case(n)
            && !job.name.eq_ignore_ascii_case(n)
        {
            return false;
        }
        if let Some(t) = &self.affected_types
            && !t.split(',').any(|t| t.trim().eq_ignore_ascii_case(job.target_type))
        {
            return false;
        }
        if let Some(fab) = &self.fabric {
            let item_region = job.item.as_ref().and_then(|k| items.get(k)).map(|i| i.primary);
            let matches = item_region
                .is_some_and(|r| fab.to_ascii_lowercase().ends_with(&regions[r].fabric.to_ascii_lowercase()));
            if !matches {
                return false;
            }
        }
        true
    }
}

fn parse_filter(filter: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, Refusal> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else { return Ok(vec![]) };
    let mut out = Vec::new();
    for clause in split_and(filter) {
        let clause = clause.trim();
        let (field, rest) = clause
            .split_once(char::is_whitespace)
            .ok_or_else(|| Refusal::bad_request("$filter", format!("'{clause}' is not '<field> eq <value>'")))?;
        let rest = rest.trim_start();
        let value = rest
            .strip_prefix("eq")
            .map(str::trim)
            .ok_or_else(|| Refusal::bad_request("$filter", format!("only 'eq' is supported, in '{clause}'")))?;
        let value = value.trim_matches('\'').to_owned();
        let lower = field.to_ascii_lowercase();
        if !known.contains(&lower.as_str()) {
            return Err(Refusal::bad_request("$filter", format!("unknown field '{field}'")));
        }
        out.push((lower, value));
    }
    Ok(out)
}

fn split_and(s: &str) -> Vec<&str> {
    // Split on " and " outside quotes.
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && s[i..].len() >= 5 && s[i..i + 5].eq_ignore_ascii_case(" and ") {
            parts.push(&s[start..i]);
            start = i + 5;
            i += 5;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_fields_by_name() {
        let f = ItemFilter::parse(Some("RecoveryPlanName eq 'rp-1' and sourceFabricName eq 'a and b'")).unwrap();
        assert_eq!(
            f.clauses,
            vec![("recoveryplanname".into(), "rp-1".into()), ("sourcefabricname".into(), "a and b".into())]
        );
        let err = ItemFilter::parse(Some("color eq 'red'")).unwrap_err();
        assert!(err.body.error.message.contains("unknown field 'color'"));
        let err = ItemFilter::parse(Some("friendlyName eq 'vm-1'")).unwrap_err();
        assert!(err.body.error.message.contains("unknown field 'friendlyName'"), "{}", err.body.error.message);
        let err = JobFilter::parse(Some("startTime eq 'yesterday'")).unwrap_err();
        assert!(err.body.error.message.contains("RFC 3339"));
    }

    #[test]
    fn region_names_read_like_azure_display_names() {
        assert_eq!(friendly_location("eastus"), "East US");
        assert_eq!(friendly_location("uksouth"), "UK South");
        assert_eq!(friendly_location("westus2"), "West US 2");
    }
}
