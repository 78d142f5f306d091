//! The simulated estate of one vault: its topology, protected items, jobs, and the VMs, NICs,
//! managed disks, public IPs and storage accounts of its application resource groups, and the
//! ASR operations that change them. A simulator of several vaults holds one `Estate` per vault
//! (they share only the clock); the server's directory decides which one a request reaches.
//!
//! Time is lazy: operations plan their jobs in full and put the moments their effects apply
//! on a timeline; [`Estate::advance`] applies whatever the clock has passed. Nothing runs in
//! the background, and nothing scans the whole estate per request.
//!
//! This file holds [`Estate`] itself, its construction and its timeline. Each submodule adds one
//! concern's `impl Estate` block: `seed` (the demo estate), `vault` (fabrics, containers,
//! mappings, the policy), `items` (protected item lookups and lists), `filter` (`$filter` on item
//! and job lists), `jobs` (planning, reading and cancelling jobs), `operations` (item operations
//! and their validation), `effects` (what a job does when the clock passes its moments),
//! `resources` (VMs, NICs, managed disks, public IPs, storage accounts) and `plans` (recovery
//! plans).

mod effects;
mod filter;
mod items;
mod jobs;
mod operations;
mod plans;
mod resources;
mod seed;
mod vault;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use serde_json::{Value, json};

use crate::clock::{self, SimClock, SimTime};
use crate::config::{SimConfig, VaultLayout};
use crate::ids::{Guids, Scope};
use crate::item::{Item, Region};
use crate::job::Job;
use crate::wire::{ArmError, ArmErrorDetail};

use vault::region;

pub use filter::{ItemFilter, JobFilter};
pub use jobs::OperationResult;
pub use plans::{Plan, PlanOp};
pub use resources::{ManagedDiskResource, Nic, PublicIp, ResourceKind, StorageAccount, Vm};

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

/// A delete the estate accepted (`GET /_sim/deletes`): what was deleted, whose it was, and where
/// that VM's protection stood at that moment. Not Azure behaviour: a record for tests that judge
/// whether a cleanup was safe.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeleteRecord {
    /// When it was accepted (simulated time, RFC 3339).
    pub at: String,
    /// `vm`, `nic`, `disk`, `public_ip` or `protected_item`.
    pub kind: &'static str,
    /// Lowercase ARM id of what was deleted (the item's name for a protected item).
    pub resource: String,
    /// The region it was in (`eastus`, ...).
    pub region: String,
    /// The VM it was made for (None: the simulator made it for no VM, e.g. a storage account).
    pub vm: Option<String>,
    /// That VM's protected item's `protectionState` at that moment (None: no item).
    pub protection_state: Option<String>,
    /// Whether that VM's last reprotect had succeeded before this delete, with no failover since.
    pub reprotected: bool,
    /// The region that VM runs in (its item's primary) at that moment.
    pub vm_region: Option<String>,
}

/// The estate of one vault: its topology, items, jobs and the resources of its VMs.
#[derive(Debug)]
pub struct Estate {
    /// Settings, with this vault's subscription id, resource group, name and seed.
    pub cfg: SimConfig,
    /// Where this vault lives and how its resources are named.
    pub layout: VaultLayout,
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
    /// The storage accounts of the other vaults of this vault's subscription, as (ARM id,
    /// location): a storage account belongs to its subscription, not to a vault, so a
    /// reprotect here may stage data in one of them (set by the server).
    pub sibling_storage: Vec<(String, String)>,
    /// vCPUs allocated in this vault's subscription, by lowercase location, then lowercase
    /// family and `cores` — the other vaults' VMs included. Set by the server before it hands
    /// the estate a failover (quota is the subscription's, not the vault's).
    pub subscription_in_use: BTreeMap<String, BTreeMap<String, u64>>,
    plans: BTreeMap<String, Plan>,
    guids: Guids,
    seq: u64,
    /// Counters.
    pub counters: Counters,
    /// The VM each VM, NIC, managed disk and public IP was made for (lowercase ids → VM name as
    /// the item has it), for the record of deletes.
    owners: HashMap<String, String>,
    /// Lowercase VM name → item key.
    item_of_vm: HashMap<String, String>,
    /// Every delete the estate accepted, oldest first (`/_sim/deletes`).
    deletes: Vec<DeleteRecord>,
    /// The request being handled: (client request id, or a fresh GUID in its place;
    /// correlation id of its response). Jobs it creates carry them as `activityId`.
    request_ids: Option<(String, String)>,
}

impl Estate {
    /// The first vault's estate, seeded from `cfg.estate`, on a clock of its own.
    pub fn new(cfg: SimConfig) -> Self {
        let clock = SimClock::new(cfg.time_compression);
        let layout = cfg.vault_layouts().swap_remove(0);
        Self::for_vault(cfg, layout, clock)
    }

    /// The estate of the vault `layout` places, seeded from `cfg.estate` (VM names get the
    /// vault's prefix), on `clock` (vaults share one: simulated time is the same everywhere).
    pub fn for_vault(mut cfg: SimConfig, layout: VaultLayout, clock: SimClock) -> Self {
        cfg.subscription_id = layout.subscription_id.clone();
        cfg.resource_group = layout.resource_group.clone();
        cfg.vault = layout.vault.clone();
        cfg.seed = layout.seed;
        let scope = Scope {
            subscription: cfg.subscription_id.clone(),
            resource_group: cfg.resource_group.clone(),
            vault: cfg.vault.clone(),
        };
        let [primary_rg, secondary_rg] = layout.app_resource_groups.clone();
        let regions = [region(&cfg.primary_region, primary_rg), region(&cfg.secondary_region, secondary_rg)];
        let mut estate = Self {
            layout,
            clock,
            guids: Guids::new(cfg.seed),
            scope,
            regions,
            items: BTreeMap::new(),
            subscription_in_use: BTreeMap::new(),
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
            sibling_storage: Vec::new(),
            plans: BTreeMap::new(),
            seq: 0,
            counters: Counters::default(),
            owners: HashMap::new(),
            item_of_vm: HashMap::new(),
            deletes: Vec::new(),
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
