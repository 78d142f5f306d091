//! Recovery plans: reads, and plan operations that run an item operation on every item of the
//! plan under one parent job.

use serde_json::{Map, json};

use super::{Accepted, Estate, Refusal};
use crate::clock::{self, SimTime};
use crate::faults::Operation;
use crate::item::{Item, Point};
use crate::job::{Effect, FinalResult, Job, TaskOutcome, TaskPlan};
use crate::wire::{
    FailoverInput, PlanFailoverInput, RecoveryPlanGroup, RecoveryPlanItem, RecoveryPlanProperties, Resource,
};

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

impl Estate {
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

    pub(super) fn render_plan(&self, plan: &Plan) -> Resource<RecoveryPlanProperties> {
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
