//! Every official ASR payload the client reads parses into `tern_asr::model`, and every request
//! body the client builds has the shape of the official examples and of recorded traffic.
//!
//! Sources (see `shared/fixtures/asr/SOURCES.md`):
//! - REST spec examples under `2025-08-01/` and `2026-05-01/`: `{"parameters": {...},
//!   "responses": {"<status>": {"body": ...}}}`. Most use the Hyper-V provider; only the
//!   switch-protection example is A2A.
//! - Recorded A2A traffic: `recordings/azure-powershell/A2AReprotectTest.json` (reprotect),
//!   `recordings/azure-powershell/A2AFailoverCommit-excerpt.json` (failover + commit) and
//!   `recordings/azure-sdk-for-net/GetA2AResources.json`. Each entry's `ResponseBody` is a JSON
//!   string.
//!
//! Assertions compare parsed values with the raw JSON values, not with literals, so a field the
//! model misreads shows up as a mismatch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tern_asr::model::{
    A2ASwitchProtection, ApplyRecoveryPointInput, ContainerMapping, DisableProtectionInput, Fabric, Job, JobState,
    Page, PlanFailoverInput, PlanTestFailoverInput, Policy, ProtectedItem, ProtectionContainer, RecoveryPlan,
    RecoveryPoint, SwitchProtectionInput, TestFailoverCleanupInput, TestFailoverInput, UnplannedFailoverInput,
    VirtualMachine, VmManagedDiskInput, parse_time,
};

// ---------------------------------------------------------------------------------------------
// Fixture inventory
// ---------------------------------------------------------------------------------------------

/// Which client type a response body parses into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Item,
    ItemPage,
    RecoveryPoint,
    RecoveryPointPage,
    Job,
    JobPage,
    Fabric,
    FabricPage,
    Container,
    ContainerPage,
    Mapping,
    MappingPage,
    Policy,
    PolicyPage,
    Plan,
    PlanPage,
    Vm,
}

/// Official examples whose operation the client uses, with the type their response bodies parse into.
const EXAMPLES: &[(&str, Kind)] = &[
    // Protected items: get / list / list by container, and every item action (LRO final body = the item).
    ("2026-05-01/ReplicationProtectedItems_Get.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_List.json", Kind::ItemPage),
    ("2025-08-01/ReplicationProtectedItems_ListByReplicationProtectionContainers.json", Kind::ItemPage),
    ("2026-05-01/ReplicationProtectedItems_UnplannedFailover.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_FailoverCommit.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_FailoverCancel.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_ApplyRecoveryPoint.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_TestFailover.json", Kind::Item),
    ("2026-05-01/ReplicationProtectedItems_TestFailoverCleanup.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_PlannedFailover.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_Reprotect.json", Kind::Item),
    ("2026-05-01/ReplicationProtectedItems_RepairReplication.json", Kind::Item),
    ("2025-08-01/ReplicationProtectedItems_Create.json", Kind::Item),
    // Recovery points.
    ("2026-05-01/RecoveryPoints_Get.json", Kind::RecoveryPoint),
    ("2025-08-01/RecoveryPoints_ListByReplicationProtectedItems.json", Kind::RecoveryPointPage),
    // Jobs.
    ("2025-08-01/ReplicationJobs_Get.json", Kind::Job),
    ("2026-05-01/ReplicationJobs_List.json", Kind::JobPage),
    ("2026-05-01/ReplicationJobs_Cancel.json", Kind::Job),
    ("2026-05-01/ReplicationJobs_Restart.json", Kind::Job),
    ("2026-05-01/ReplicationJobs_Resume.json", Kind::Job),
    // Topology.
    ("2025-08-01/ReplicationFabrics_Get.json", Kind::Fabric),
    ("2025-08-01/ReplicationFabrics_List.json", Kind::FabricPage),
    ("2025-08-01/ReplicationProtectionContainers_Get.json", Kind::Container),
    ("2026-05-01/ReplicationProtectionContainers_ListByReplicationFabrics.json", Kind::ContainerPage),
    ("2026-05-01/ReplicationProtectionContainers_SwitchProtection.json", Kind::Container),
    ("2025-08-01/ReplicationProtectionContainerMappings_Get.json", Kind::Mapping),
    ("2026-05-01/ReplicationPolicies_Get.json", Kind::Policy),
    // Recovery plans.
    ("2025-08-01/ReplicationRecoveryPlans_Get.json", Kind::Plan),
    ("2025-08-01/ReplicationRecoveryPlans_List.json", Kind::PlanPage),
    ("2025-08-01/ReplicationRecoveryPlans_Create.json", Kind::Plan),
    ("2025-08-01/ReplicationRecoveryPlans_UnplannedFailover.json", Kind::Plan),
    ("2025-08-01/ReplicationRecoveryPlans_FailoverCommit.json", Kind::Plan),
    ("2026-05-01/ReplicationRecoveryPlans_PlannedFailover.json", Kind::Plan),
    ("2026-05-01/ReplicationRecoveryPlans_TestFailover.json", Kind::Plan),
    ("2026-05-01/ReplicationRecoveryPlans_TestFailoverCleanup.json", Kind::Plan),
    ("2026-05-01/ReplicationRecoveryPlans_Reprotect.json", Kind::Plan),
];

/// Official examples whose responses are not parsed, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("2025-08-01/ReplicationEvents_List.json", "replication events: not used by the client"),
    ("2025-08-01/ReplicationVaultHealth_Get.json", "vault health summary: not used by the client"),
    ("2025-08-01/ReplicationProtectedItems_Purge.json", "purge (DELETE {rpi}) answers 202/204 without a body"),
    (
        "2026-05-01/ReplicationProtectedItems_Delete.json",
        "disable protection (POST {rpi}/remove) answers 202/204 without a body; its request body is checked in \
         request_bodies_match_examples",
    ),
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixtures_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/asr");
    assert!(
        root.join("2025-08-01").is_dir() && root.join("2026-05-01").is_dir() && root.join("recordings").is_dir(),
        "ASR fixtures are missing: expected the shared fixtures (2025-08-01/, 2026-05-01/, recordings/) at {}",
        root.display()
    );
    root
}

fn read_json(relative: &str) -> Value {
    let path = fixtures_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn parse<T: DeserializeOwned>(value: &Value, ctx: &str) -> T {
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{ctx}: does not parse as {}: {e}", std::any::type_name::<T>()))
}

/// The string at `pointer`, `None` when missing or `null`.
fn raw_str<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The integer at `pointer`, `None` when missing or `null`.
fn raw_i64(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// The array at `pointer`; missing or `null` reads as empty.
fn raw_array<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value.pointer(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The strings of the array at `pointer`.
fn raw_strings(value: &Value, pointer: &str) -> Vec<String> {
    raw_array(value, pointer).iter().map(|v| v.as_str().expect("array of strings").to_owned()).collect()
}

/// Asserts an optional parsed string equals the raw value at `pointer`.
fn same(parsed: &Option<String>, raw: &Value, pointer: &str, ctx: &str) {
    assert_eq!(parsed.as_deref(), raw_str(raw, pointer), "{ctx}: {pointer}");
}

/// Asserts a raw time (if present and non-empty) parses.
fn time_parses(raw: &Value, pointer: &str, ctx: &str) {
    if let Some(t) = raw_str(raw, pointer).filter(|t| !t.is_empty()) {
        assert!(parse_time(t).is_some(), "{ctx}: {pointer} = {t:?} does not parse as a time");
    }
}

fn check_resource(id: &str, name: &str, raw: &Value, ctx: &str) {
    assert!(!id.is_empty(), "{ctx}: empty id");
    assert!(!name.is_empty(), "{ctx}: empty name");
    assert_eq!(Some(id), raw_str(raw, "/id"), "{ctx}: id");
    assert_eq!(Some(name), raw_str(raw, "/name"), "{ctx}: name");
}

fn check_page<T: DeserializeOwned>(raw: &Value, ctx: &str, check: impl Fn(&T, &Value, &str)) -> usize {
    let page: Page<T> = parse(raw, ctx);
    let raw_items = raw_array(raw, "/value");
    assert_eq!(page.value.len(), raw_items.len(), "{ctx}: page length");
    assert_eq!(page.next_link.as_deref(), raw_str(raw, "/nextLink"), "{ctx}: nextLink");
    for (i, (item, raw_item)) in page.value.iter().zip(raw_items).enumerate() {
        check(item, raw_item, &format!("{ctx} value[{i}]"));
    }
    page.value.len()
}

/// Parses `body` as `kind` and checks it against the raw JSON.
fn check_kind(kind: Kind, body: &Value, ctx: &str) {
    match kind {
        Kind::Item => check_item(&parse(body, ctx), body, ctx),
        Kind::ItemPage => _ = check_page(body, ctx, check_item),
        Kind::RecoveryPoint => check_recovery_point(&parse(body, ctx), body, ctx),
        Kind::RecoveryPointPage => _ = check_page(body, ctx, check_recovery_point),
        Kind::Job => check_job(&parse(body, ctx), body, ctx),
        Kind::JobPage => _ = check_page(body, ctx, check_job),
        Kind::Fabric => check_fabric(&parse(body, ctx), body, ctx),
        Kind::FabricPage => _ = check_page(body, ctx, check_fabric),
        Kind::Container => check_container(&parse(body, ctx), body, ctx),
        Kind::ContainerPage => _ = check_page(body, ctx, check_container),
        Kind::Mapping => check_mapping(&parse(body, ctx), body, ctx),
        Kind::MappingPage => _ = check_page(body, ctx, check_mapping),
        Kind::Policy => check_policy(&parse(body, ctx), body, ctx),
        Kind::PolicyPage => _ = check_page(body, ctx, check_policy),
        Kind::Plan => check_plan(&parse(body, ctx), body, ctx),
        Kind::PlanPage => _ = check_page(body, ctx, check_plan),
        Kind::Vm => check_vm(&parse(body, ctx), body, ctx),
    }
}

// ---------------------------------------------------------------------------------------------
// Per-type checks against the raw JSON
// ---------------------------------------------------------------------------------------------

fn check_item(item: &ProtectedItem, raw: &Value, ctx: &str) {
    check_resource(&item.id, &item.name, raw, ctx);
    let p = &item.properties;
    assert_eq!(item.protection_state(), raw_str(raw, "/properties/protectionState").unwrap_or(""), "{ctx}");
    assert_eq!(item.active_location(), raw_str(raw, "/properties/activeLocation").unwrap_or(""), "{ctx}");
    assert_eq!(item.friendly_name(), raw_str(raw, "/properties/friendlyName").unwrap_or(""), "{ctx}");
    let allowed = raw_strings(raw, "/properties/allowedOperations");
    assert_eq!(p.allowed_operations, allowed, "{ctx}: allowedOperations");
    for op in &allowed {
        assert!(item.allows(&op.to_ascii_lowercase()), "{ctx}: allows({op}) case-insensitively");
    }
    assert!(!item.allows("NoSuchOperation"), "{ctx}");
    for (parsed, key) in [
        (&p.protection_state_description, "protectionStateDescription"),
        (&p.replication_health, "replicationHealth"),
        (&p.failover_recovery_point_id, "failoverRecoveryPointId"),
        (&p.test_failover_state, "testFailoverState"),
        (&p.last_successful_failover_time, "lastSuccessfulFailoverTime"),
        (&p.last_successful_test_failover_time, "lastSuccessfulTestFailoverTime"),
        (&p.policy_id, "policyId"),
        (&p.recovery_fabric_id, "recoveryFabricId"),
        (&p.recovery_container_id, "recoveryContainerId"),
        (&p.primary_fabric_friendly_name, "primaryFabricFriendlyName"),
        (&p.recovery_fabric_friendly_name, "recoveryFabricFriendlyName"),
    ] {
        same(parsed, raw, &format!("/properties/{key}"), ctx);
    }
    time_parses(raw, "/properties/lastSuccessfulFailoverTime", ctx);
    time_parses(raw, "/properties/lastSuccessfulTestFailoverTime", ctx);

    // Current scenario and the running job.
    let raw_scenario = raw.pointer("/properties/currentScenario").filter(|v| !v.is_null());
    assert_eq!(p.current_scenario.is_some(), raw_scenario.is_some(), "{ctx}: currentScenario presence");
    if let (Some(scenario), Some(raw_scenario)) = (&p.current_scenario, raw_scenario) {
        same(&scenario.scenario_name, raw_scenario, "/scenarioName", ctx);
        same(&scenario.job_id, raw_scenario, "/jobId", ctx);
        same(&scenario.start_time, raw_scenario, "/startTime", ctx);
        time_parses(raw_scenario, "/startTime", ctx);
        let idle = raw_str(raw_scenario, "/scenarioName") == Some("None")
            || raw_str(raw_scenario, "/jobId").is_some_and(|j| j.ends_with("/replicationJobs/None"));
        if idle {
            assert_eq!(item.running_job_id(), None, "{ctx}: idle item has no running job");
        } else {
            assert_eq!(item.running_job_id(), raw_str(raw_scenario, "/jobId"), "{ctx}: running job");
        }
    }

    // Health errors.
    let raw_errors = raw_array(raw, "/properties/healthErrors");
    assert_eq!(p.health_errors.len(), raw_errors.len(), "{ctx}: healthErrors");
    for (e, raw_e) in p.health_errors.iter().zip(raw_errors) {
        same(&e.error_code, raw_e, "/errorCode", ctx);
        same(&e.error_message, raw_e, "/errorMessage", ctx);
        same(&e.possible_causes, raw_e, "/possibleCauses", ctx);
        same(&e.recommended_action, raw_e, "/recommendedAction", ctx);
        same(&e.summary_message, raw_e, "/summaryMessage", ctx);
        same(&e.error_level, raw_e, "/errorLevel", ctx);
    }

    // Provider details.
    let raw_details = raw.pointer("/properties/providerSpecificDetails").filter(|v| !v.is_null());
    assert_eq!(p.provider_specific_details.is_some(), raw_details.is_some(), "{ctx}: providerSpecificDetails");
    let (Some(d), Some(raw_d)) = (&p.provider_specific_details, raw_details) else {
        return;
    };
    assert_eq!(Some(d.instance_type.as_str()), raw_str(raw_d, "/instanceType"), "{ctx}: instanceType");
    for (parsed, key) in [
        (&d.lifecycle_id, "lifecycleId"),
        (&d.fabric_object_id, "fabricObjectId"),
        (&d.recovery_fabric_object_id, "recoveryFabricObjectId"),
        (&d.primary_fabric_location, "primaryFabricLocation"),
        (&d.recovery_fabric_location, "recoveryFabricLocation"),
        (&d.recovery_azure_vm_name, "recoveryAzureVMName"),
        (&d.recovery_azure_vm_size, "recoveryAzureVMSize"),
        (&d.recovery_azure_resource_group_id, "recoveryAzureResourceGroupId"),
        (&d.recovery_availability_set, "recoveryAvailabilitySet"),
        (&d.recovery_availability_zone, "recoveryAvailabilityZone"),
        (&d.recovery_proximity_placement_group_id, "recoveryProximityPlacementGroupId"),
        (&d.recovery_capacity_reservation_group_id, "recoveryCapacityReservationGroupId"),
        (&d.selected_recovery_azure_network_id, "selectedRecoveryAzureNetworkId"),
        (&d.monitoring_job_type, "monitoringJobType"),
        (&d.vm_protection_state, "vmProtectionState"),
    ] {
        same(parsed, raw_d, &format!("/{key}"), ctx);
    }
    assert_eq!(d.monitoring_percentage_completion, raw_i64(raw_d, "/monitoringPercentageCompletion"), "{ctx}");
    assert_eq!(d.rpo_in_seconds, raw_i64(raw_d, "/rpoInSeconds"), "{ctx}");
    assert_eq!(item.lifecycle_id(), raw_str(raw_d, "/lifecycleId").filter(|s| !s.is_empty()), "{ctx}");

    let raw_managed = raw_array(raw_d, "/protectedManagedDisks");
    assert_eq!(d.protected_managed_disks.len(), raw_managed.len(), "{ctx}: protectedManagedDisks");
    for (disk, raw_disk) in d.protected_managed_disks.iter().zip(raw_managed) {
        for (parsed, key) in [
            (&disk.disk_id, "diskId"),
            (&disk.disk_name, "diskName"),
            (&disk.disk_type, "diskType"),
            (&disk.disk_state, "diskState"),
            (&disk.recovery_resource_group_id, "recoveryResourceGroupId"),
            (&disk.recovery_replica_disk_account_type, "recoveryReplicaDiskAccountType"),
            (&disk.recovery_target_disk_account_type, "recoveryTargetDiskAccountType"),
            (&disk.primary_staging_azure_storage_account_id, "primaryStagingAzureStorageAccountId"),
        ] {
            same(parsed, raw_disk, &format!("/{key}"), ctx);
        }
        assert_eq!(disk.disk_capacity_in_bytes, raw_i64(raw_disk, "/diskCapacityInBytes"), "{ctx}");
        assert_eq!(disk.resync_required, raw_disk.pointer("/resyncRequired").and_then(Value::as_bool), "{ctx}");
        assert_eq!(disk.monitoring_percentage_completion, raw_i64(raw_disk, "/monitoringPercentageCompletion"));
    }
    let raw_unmanaged = raw_array(raw_d, "/protectedDisks");
    assert_eq!(d.protected_disks.len(), raw_unmanaged.len(), "{ctx}: protectedDisks");
    for (disk, raw_disk) in d.protected_disks.iter().zip(raw_unmanaged) {
        same(&disk.disk_uri, raw_disk, "/diskUri", ctx);
        same(&disk.recovery_azure_storage_account_id, raw_disk, "/recoveryAzureStorageAccountId", ctx);
    }
    assert_eq!(item.is_managed(), !raw_managed.is_empty(), "{ctx}: is_managed");
    let expected_disks: Vec<String> = if raw_managed.is_empty() {
        raw_unmanaged.iter().filter_map(|d| raw_str(d, "/diskUri")).map(str::to_owned).collect()
    } else {
        raw_managed.iter().filter_map(|d| raw_str(d, "/diskId")).map(str::to_owned).collect()
    };
    assert_eq!(item.disk_ids(), expected_disks, "{ctx}: disk_ids");
    if let Some(percent) = raw_i64(raw_d, "/monitoringPercentageCompletion") {
        let read = item.properties.provider_specific_details.as_ref().and_then(|d| d.monitoring_percentage_completion);
        assert_eq!(read, Some(percent), "{ctx}: the item-level figure is read");
    }
    // Sync progress is read per disk: the lowest figure of the disks not Protected yet.
    let pending: Vec<i64> = raw_managed
        .iter()
        .chain(raw_unmanaged)
        .filter(|d| raw_str(d, "/diskState") != Some("Protected"))
        .filter_map(|d| raw_i64(d, "/monitoringPercentageCompletion"))
        .collect();
    assert_eq!(item.sync_percent(), pending.iter().min().copied(), "{ctx}: sync_percent");
}

fn check_recovery_point(point: &RecoveryPoint, raw: &Value, ctx: &str) {
    check_resource(&point.id, &point.name, raw, ctx);
    let p = &point.properties;
    same(&p.recovery_point_time, raw, "/properties/recoveryPointTime", ctx);
    same(&p.recovery_point_type, raw, "/properties/recoveryPointType", ctx);
    if raw_str(raw, "/properties/recoveryPointTime").is_some() {
        assert!(point.time().is_some(), "{ctx}: recovery point time parses");
    }
    assert_eq!(
        point.is_app_consistent(),
        raw_str(raw, "/properties/recoveryPointType") == Some("ApplicationConsistent"),
        "{ctx}"
    );
    assert_eq!(point.disks(), raw_strings(raw, "/properties/providerSpecificDetails/disks").as_slice(), "{ctx}");
}

fn check_job(job: &Job, raw: &Value, ctx: &str) {
    check_resource(&job.id, &job.name, raw, ctx);
    let p = &job.properties;
    let raw_state = raw_str(raw, "/properties/state").expect("job has a state");
    assert_eq!(job.state(), JobState::parse(raw_state), "{ctx}: state");
    assert_eq!(job.state().as_str(), raw_state, "{ctx}: state round-trip");
    if ["NotStarted", "InProgress", "Succeeded", "Failed", "Cancelled", "Suspended"].contains(&raw_state) {
        assert!(!matches!(job.state(), JobState::Other(_)), "{ctx}: known state {raw_state} parsed as Other");
    }
    for (parsed, key) in [
        (&p.activity_id, "activityId"),
        (&p.scenario_name, "scenarioName"),
        (&p.friendly_name, "friendlyName"),
        (&p.state_description, "stateDescription"),
        (&p.start_time, "startTime"),
        (&p.end_time, "endTime"),
        (&p.target_object_id, "targetObjectId"),
        (&p.target_object_name, "targetObjectName"),
        (&p.target_instance_type, "targetInstanceType"),
    ] {
        same(parsed, raw, &format!("/properties/{key}"), ctx);
    }
    time_parses(raw, "/properties/startTime", ctx);
    time_parses(raw, "/properties/endTime", ctx);
    assert_eq!(p.allowed_actions, raw_strings(raw, "/properties/allowedActions"), "{ctx}");

    let raw_tasks = raw_array(raw, "/properties/tasks");
    assert_eq!(p.tasks.len(), raw_tasks.len(), "{ctx}: tasks");
    for (task, raw_task) in p.tasks.iter().zip(raw_tasks) {
        for (parsed, key) in [
            (&task.task_id, "taskId"),
            (&task.name, "name"),
            (&task.friendly_name, "friendlyName"),
            (&task.state, "state"),
            (&task.state_description, "stateDescription"),
            (&task.start_time, "startTime"),
            (&task.end_time, "endTime"),
            (&task.task_type, "taskType"),
        ] {
            same(parsed, raw_task, &format!("/{key}"), ctx);
        }
        time_parses(raw_task, "/startTime", ctx);
        time_parses(raw_task, "/endTime", ctx);
        assert_eq!(task.errors.len(), raw_array(raw_task, "/errors").len(), "{ctx}: task errors");
    }
    if let Some(raw_running) = raw_tasks.iter().find(|t| raw_str(t, "/state") == Some("InProgress")) {
        assert_eq!(
            job.current_task().and_then(|t| t.task_id.as_deref()),
            raw_str(raw_running, "/taskId"),
            "{ctx}: current task is the one in progress"
        );
    }

    let raw_errors = raw_array(raw, "/properties/errors");
    assert_eq!(p.errors.len(), raw_errors.len(), "{ctx}: errors");
    let any_error = !raw_errors.is_empty() || raw_tasks.iter().any(|t| !raw_array(t, "/errors").is_empty());
    assert_eq!(job.first_error().is_some(), any_error, "{ctx}: first_error");

    let raw_details = raw.pointer("/properties/customDetails").filter(|v| !v.is_null());
    assert_eq!(p.custom_details.is_some(), raw_details.is_some(), "{ctx}: customDetails");
    if let (Some(d), Some(raw_d)) = (&p.custom_details, raw_details) {
        assert_eq!(Some(d.instance_type.as_str()), raw_str(raw_d, "/instanceType"), "{ctx}");
        same(&d.new_replication_protected_item_id, raw_d, "/newReplicationProtectedItemId", ctx);
        assert_eq!(job.new_item_id(), raw_str(raw_d, "/newReplicationProtectedItemId"), "{ctx}: new_item_id");
        let raw_items = raw_array(raw_d, "/protectedItemDetails");
        assert_eq!(d.protected_item_details.len(), raw_items.len(), "{ctx}: protectedItemDetails");
        for (it, raw_it) in d.protected_item_details.iter().zip(raw_items) {
            for (parsed, key) in [
                (&it.name, "name"),
                (&it.friendly_name, "friendlyName"),
                (&it.recovery_point_id, "recoveryPointId"),
                (&it.recovery_point_time, "recoveryPointTime"),
                (&it.test_vm_name, "testVmName"),
                (&it.network_connection_status, "networkConnectionStatus"),
            ] {
                same(parsed, raw_it, &format!("/{key}"), ctx);
            }
            time_parses(raw_it, "/recoveryPointTime", ctx);
        }
        assert_eq!(
            d.affected_object_details.as_ref(),
            raw_d.pointer("/affectedObjectDetails").and_then(Value::as_object),
            "{ctx}: affectedObjectDetails"
        );
    }
}

fn check_fabric(fabric: &Fabric, raw: &Value, ctx: &str) {
    check_resource(&fabric.id, &fabric.name, raw, ctx);
    same(&fabric.properties.friendly_name, raw, "/properties/friendlyName", ctx);
    let details = fabric.properties.custom_details.as_ref().expect("fabric customDetails");
    assert_eq!(Some(details.instance_type.as_str()), raw_str(raw, "/properties/customDetails/instanceType"));
    same(&details.location, raw, "/properties/customDetails/location", ctx);
}

fn check_container(container: &ProtectionContainer, raw: &Value, ctx: &str) {
    check_resource(&container.id, &container.name, raw, ctx);
    let p = &container.properties;
    for (parsed, key) in [
        (&p.friendly_name, "friendlyName"),
        (&p.fabric_friendly_name, "fabricFriendlyName"),
        (&p.fabric_type, "fabricType"),
        (&p.role, "role"),
        (&p.pairing_status, "pairingStatus"),
    ] {
        same(parsed, raw, &format!("/properties/{key}"), ctx);
    }
    assert_eq!(p.protected_item_count, raw_i64(raw, "/properties/protectedItemCount"), "{ctx}");
}

fn check_mapping(mapping: &ContainerMapping, raw: &Value, ctx: &str) {
    check_resource(&mapping.id, &mapping.name, raw, ctx);
    let p = &mapping.properties;
    for (parsed, key) in [
        (&p.target_protection_container_id, "targetProtectionContainerId"),
        (&p.policy_id, "policyId"),
        (&p.state, "state"),
        (&p.source_fabric_friendly_name, "sourceFabricFriendlyName"),
        (&p.target_fabric_friendly_name, "targetFabricFriendlyName"),
    ] {
        same(parsed, raw, &format!("/properties/{key}"), ctx);
    }
}

fn check_policy(policy: &Policy, raw: &Value, ctx: &str) {
    check_resource(&policy.id, &policy.name, raw, ctx);
    same(&policy.properties.friendly_name, raw, "/properties/friendlyName", ctx);
    let d = policy.properties.provider_specific_details.as_ref().expect("policy providerSpecificDetails");
    let raw_d = raw.pointer("/properties/providerSpecificDetails").expect("raw providerSpecificDetails");
    assert_eq!(Some(d.instance_type.as_str()), raw_str(raw_d, "/instanceType"), "{ctx}");
    assert_eq!(d.recovery_point_history, raw_i64(raw_d, "/recoveryPointHistory"), "{ctx}");
    assert_eq!(d.app_consistent_frequency_in_minutes, raw_i64(raw_d, "/appConsistentFrequencyInMinutes"));
    assert_eq!(d.crash_consistent_frequency_in_minutes, raw_i64(raw_d, "/crashConsistentFrequencyInMinutes"));
}

fn check_plan(plan: &RecoveryPlan, raw: &Value, ctx: &str) {
    check_resource(&plan.id, &plan.name, raw, ctx);
    let p = &plan.properties;
    same(&p.friendly_name, raw, "/properties/friendlyName", ctx);
    same(&p.primary_fabric_id, raw, "/properties/primaryFabricId", ctx);
    same(&p.recovery_fabric_id, raw, "/properties/recoveryFabricId", ctx);
    assert_eq!(p.allowed_operations, raw_strings(raw, "/properties/allowedOperations"), "{ctx}");
    assert_eq!(p.replication_providers, raw_strings(raw, "/properties/replicationProviders"), "{ctx}");
    if let Some(scenario) = &p.current_scenario {
        same(&scenario.scenario_name, raw, "/properties/currentScenario/scenarioName", ctx);
        same(&scenario.job_id, raw, "/properties/currentScenario/jobId", ctx);
    } else {
        assert!(raw.pointer("/properties/currentScenario").is_none_or(Value::is_null), "{ctx}");
    }
    let raw_groups = raw_array(raw, "/properties/groups");
    assert_eq!(p.groups.len(), raw_groups.len(), "{ctx}: groups");
    for (group, raw_group) in p.groups.iter().zip(raw_groups) {
        assert_eq!(Some(group.group_type.as_str()), raw_str(raw_group, "/groupType"), "{ctx}");
        let raw_items = raw_array(raw_group, "/replicationProtectedItems");
        assert_eq!(group.replication_protected_items.len(), raw_items.len(), "{ctx}");
        for (it, raw_it) in group.replication_protected_items.iter().zip(raw_items) {
            same(&it.id, raw_it, "/id", ctx);
            same(&it.virtual_machine_id, raw_it, "/virtualMachineId", ctx);
        }
    }
    let expected_boot: Vec<Vec<String>> = raw_groups
        .iter()
        .filter(|g| raw_str(g, "/groupType") == Some("Boot"))
        .map(|g| {
            raw_array(g, "/replicationProtectedItems")
                .iter()
                .filter_map(|i| raw_str(i, "/id"))
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(plan.boot_groups(), expected_boot, "{ctx}: boot_groups");
}

fn check_vm(vm: &VirtualMachine, raw: &Value, ctx: &str) {
    check_resource(&vm.id, &vm.name, raw, ctx);
    same(&vm.location, raw, "/location", ctx);
    let p = &vm.properties;
    same(&p.vm_id, raw, "/properties/vmId", ctx);
    same(&p.provisioning_state, raw, "/properties/provisioningState", ctx);
    let size = p.hardware_profile.as_ref().and_then(|h| h.vm_size.clone());
    same(&size, raw, "/properties/hardwareProfile/vmSize", ctx);
    let raw_os_managed = raw.pointer("/properties/storageProfile/osDisk/managedDisk").is_some_and(|v| !v.is_null());
    assert_eq!(vm.uses_managed_disks(), raw_os_managed, "{ctx}: uses_managed_disks");
    let os_disk = p.storage_profile.as_ref().and_then(|s| s.os_disk.as_ref()).expect("os disk");
    same(&os_disk.name, raw, "/properties/storageProfile/osDisk/name", ctx);
    let os_disk_id = os_disk.managed_disk.as_ref().and_then(|m| m.id.clone());
    same(&os_disk_id, raw, "/properties/storageProfile/osDisk/managedDisk/id", ctx);
    let expected_nics: Vec<String> = raw_array(raw, "/properties/networkProfile/networkInterfaces")
        .iter()
        .filter_map(|n| raw_str(n, "/id"))
        .map(str::to_owned)
        .collect();
    assert_eq!(vm.nic_ids(), expected_nics, "{ctx}: nic_ids");
    let expected_power = raw_array(raw, "/properties/instanceView/statuses")
        .iter()
        .filter_map(|s| raw_str(s, "/code"))
        .find_map(|c| c.strip_prefix("PowerState/"));
    assert_eq!(vm.power_state(), expected_power, "{ctx}: power_state");
}

// ---------------------------------------------------------------------------------------------
// Official examples
// ---------------------------------------------------------------------------------------------

#[test]
fn every_example_file_is_classified() {
    let root = fixtures_root();
    let mut on_disk = BTreeSet::new();
    for dir in ["2025-08-01", "2026-05-01"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("list fixture dir") {
            let name = entry.expect("dir entry").file_name().into_string().expect("utf-8 file name");
            if name.ends_with(".json") {
                on_disk.insert(format!("{dir}/{name}"));
            }
        }
    }
    let listed: BTreeSet<String> =
        EXAMPLES.iter().map(|(f, _)| f.to_string()).chain(SKIPPED.iter().map(|(f, _)| f.to_string())).collect();
    assert_eq!(listed.len(), EXAMPLES.len() + SKIPPED.len(), "a file is listed twice in EXAMPLES/SKIPPED");
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "example files neither parsed nor skipped (add them to EXAMPLES or SKIPPED): {unlisted:?}"
    );
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(missing.is_empty(), "listed example files not found under {}: {missing:?}", root.display());
}

#[test]
fn official_examples_parse() {
    for (file, kind) in EXAMPLES {
        let example = read_json(file);
        let responses = example.get("responses").and_then(Value::as_object).expect("responses");
        let mut bodies = 0;
        for (status, response) in responses {
            let Some(body) = response.get("body").filter(|b| b.as_object().is_some_and(|o| !o.is_empty())) else {
                continue;
            };
            let ctx = format!("{file} [{status}]");
            check_kind(*kind, body, &ctx);
            // Item actions: the item's fabric/container names come from the request path.
            if *kind == Kind::Item {
                let item: ProtectedItem = parse(body, &ctx);
                let params = &example["parameters"];
                assert_eq!(item.fabric_name(), raw_str(params, "/fabricName"), "{ctx}: fabric_name");
                assert_eq!(item.container_name(), raw_str(params, "/protectionContainerName"), "{ctx}: container_name");
                let container_id = item.container_id().expect("container id");
                assert!(item.id.starts_with(&container_id), "{ctx}: container_id is a prefix of the id");
                assert!(
                    container_id.ends_with(&format!("/{}", raw_str(params, "/protectionContainerName").unwrap())),
                    "{ctx}: container_id ends with the container"
                );
            }
            bodies += 1;
        }
        assert!(bodies > 0, "{file}: no response body to parse (move it to SKIPPED with a reason)");
    }
}

#[test]
fn skipped_examples_are_what_the_reason_says() {
    for (file, reason) in SKIPPED {
        assert!(!reason.is_empty(), "{file}: give a reason");
        let example = read_json(file);
        let responses = example.get("responses").and_then(Value::as_object).expect("an example file");
        if reason.contains("without a body") {
            for (status, response) in responses {
                assert!(response.get("body").is_none(), "{file} [{status}]: has a body, but is skipped as body-less");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recorded A2A traffic
// ---------------------------------------------------------------------------------------------

/// The type an ARM/ASR request URI returns, from its path.
fn classify(uri: &str) -> Option<Kind> {
    let path = uri.split('?').next().unwrap_or(uri).trim_end_matches('/');
    let segments: Vec<String> = path.split('/').map(str::to_ascii_lowercase).collect();
    let last = segments.last()?.as_str();
    let prev = segments.get(segments.len().checked_sub(2)?)?.as_str();
    let collection = |name: &str| -> Option<(Kind, Kind)> {
        Some(match name {
            "replicationprotecteditems" => (Kind::Item, Kind::ItemPage),
            "recoverypoints" => (Kind::RecoveryPoint, Kind::RecoveryPointPage),
            "replicationjobs" => (Kind::Job, Kind::JobPage),
            "replicationfabrics" => (Kind::Fabric, Kind::FabricPage),
            "replicationprotectioncontainers" => (Kind::Container, Kind::ContainerPage),
            "replicationprotectioncontainermappings" => (Kind::Mapping, Kind::MappingPage),
            "replicationpolicies" => (Kind::Policy, Kind::PolicyPage),
            "replicationrecoveryplans" => (Kind::Plan, Kind::PlanPage),
            "virtualmachines" => (Kind::Vm, Kind::Vm),
            _ => return None,
        })
    };
    if let Some((_, page)) = collection(last).filter(|_| last != "virtualmachines") {
        return Some(page);
    }
    collection(prev).map(|(single, _)| single)
}

/// A recorded session entry with a parsed body.
struct Recorded {
    index: usize,
    uri: String,
    kind: Kind,
    body: Value,
}

/// Loads a recording (`{"Entries": [...]}` or a bare array of entries) and returns the entries
/// whose body the client parses; also returns the indices of entries with a body that were not
/// classified.
fn load_recording(relative: &str) -> (Vec<Recorded>, Vec<(usize, String)>) {
    let doc = read_json(relative);
    let entries = doc
        .get("Entries")
        .and_then(Value::as_array)
        .or_else(|| doc.as_array())
        .unwrap_or_else(|| panic!("{relative}: no Entries"));
    let mut parsed = Vec::new();
    let mut unclassified = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let uri = entry["RequestUri"].as_str().expect("RequestUri").to_owned();
        let text = entry["ResponseBody"].as_str().unwrap_or("");
        if text.trim().is_empty() {
            continue;
        }
        let body: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{relative} entry {index}: body is not JSON: {e}"));
        match classify(&uri) {
            Some(kind) => {
                let ctx = format!("{relative} entry {index} ({})", uri.split('?').next().unwrap_or(&uri));
                check_kind(kind, &body, &ctx);
                parsed.push(Recorded { index, uri, kind, body });
            }
            None => unclassified.push((index, uri)),
        }
    }
    (parsed, unclassified)
}

fn indices(entries: &[Recorded], kinds: &[Kind]) -> BTreeSet<usize> {
    entries.iter().filter(|e| kinds.contains(&e.kind)).map(|e| e.index).collect()
}

const ASR_KINDS: &[Kind] = &[
    Kind::Item,
    Kind::ItemPage,
    Kind::RecoveryPoint,
    Kind::RecoveryPointPage,
    Kind::Job,
    Kind::JobPage,
    Kind::Fabric,
    Kind::FabricPage,
    Kind::Container,
    Kind::ContainerPage,
    Kind::Mapping,
    Kind::MappingPage,
    Kind::Policy,
    Kind::PolicyPage,
    Kind::Plan,
    Kind::PlanPage,
];

/// A2A checks that hold for every recorded A2A item.
fn check_a2a_item(item: &ProtectedItem, raw: &Value, ctx: &str) {
    let d = item.properties.provider_specific_details.as_ref().expect("A2A details");
    assert_eq!(d.instance_type, "A2A", "{ctx}");
    assert!(d.recovery_azure_vm_size.is_some(), "{ctx}: recoveryAzureVMSize read");
    assert_eq!(
        d.recovery_azure_vm_size.as_deref(),
        raw_str(raw, "/properties/providerSpecificDetails/recoveryAzureVMSize"),
        "{ctx}"
    );
    assert!(!d.protected_managed_disks.is_empty(), "{ctx}: protectedManagedDisks read");
    assert!(item.is_managed(), "{ctx}");
    assert!(raw.pointer("/properties/providerSpecificDetails/protectedDisks").is_some_and(Value::is_null));
    assert!(d.protected_disks.is_empty(), "{ctx}: protectedDisks null reads as empty");
    assert!(item.properties.current_scenario.is_some(), "{ctx}: currentScenario read");
    assert_eq!(
        item.lifecycle_id(),
        raw_str(raw, "/properties/providerSpecificDetails/lifecycleId"),
        "{ctx}: lifecycle_id"
    );
}

#[test]
fn a2a_reprotect_recording_parses() {
    let file = "recordings/azure-powershell/A2AReprotectTest.json";
    let (entries, unclassified) = load_recording(file);

    // Entries 0-2 are vault resources (not modelled); 15 is the Compute VM; 16 is the 202 POST.
    let unclassified_idx: Vec<usize> = unclassified.iter().map(|(i, _)| *i).collect();
    assert_eq!(unclassified_idx, vec![0, 1, 2], "only the vault entries are unclassified: {unclassified:?}");
    let expected: BTreeSet<usize> = (3..=14).chain(17..=43).collect();
    assert_eq!(indices(&entries, ASR_KINDS), expected, "{file}: ASR entries parsed");
    assert_eq!(indices(&entries, &[Kind::Vm]), BTreeSet::from([15]), "{file}: the VM entry parsed");

    // The failed-over, committed item (entries 12-14).
    let mut item_before = None;
    for e in entries.iter().filter(|e| matches!(e.kind, Kind::Item | Kind::ItemPage)) {
        let (item, raw): (ProtectedItem, &Value) = match e.kind {
            Kind::Item => (parse(&e.body, file), &e.body),
            _ => {
                let page: Page<ProtectedItem> = parse(&e.body, file);
                (page.value.into_iter().next().expect("one item"), &e.body["value"][0])
            }
        };
        let ctx = format!("{file} entry {}", e.index);
        check_a2a_item(&item, raw, &ctx);
        assert!(item.lifecycle_id().is_some(), "{ctx}: lifecycle id present in this recording");
        assert_eq!(item.running_job_id(), None, "{ctx}: idle");
        assert!(item.allows("switchprotection"), "{ctx}: SwitchProtection allowed");
        // Fabric and container come from the request path of the item GET.
        let path_segments: Vec<&str> = e.uri.split('?').next().unwrap().split('/').collect();
        let after = |key: &str| path_segments.iter().position(|s| *s == key).map(|i| path_segments[i + 1]);
        assert_eq!(item.fabric_name(), after("replicationFabrics"), "{ctx}");
        assert_eq!(item.container_name(), after("replicationProtectionContainers"), "{ctx}");
        item_before = Some(item);
    }
    let item_before = item_before.expect("item entries");

    // The switch-protection job (entries 17-43): new item id appears from entry 20, job ends Succeeded.
    let jobs: Vec<(usize, Job, &Value)> = entries
        .iter()
        .filter(|e| e.kind == Kind::Job)
        .map(|e| (e.index, parse::<Job>(&e.body, file), &e.body))
        .collect();
    assert_eq!(jobs.len(), 27);
    for (index, job, raw) in &jobs {
        let ctx = format!("{file} entry {index}");
        assert_eq!(job.properties.scenario_name.as_deref(), raw_str(raw, "/properties/scenarioName"), "{ctx}");
        assert_eq!(job.new_item_id(), raw_str(raw, "/properties/customDetails/newReplicationProtectedItemId"));
        if !job.state().is_terminal() {
            assert!(job.current_task().is_some(), "{ctx}: a running job has a current task");
        }
    }
    let (last_index, last, raw_last) = jobs.last().expect("last job poll");
    assert_eq!(*last_index, 43);
    assert_eq!(last.state(), JobState::Succeeded, "{file} entry 43");
    assert_eq!(JobState::parse(raw_str(raw_last, "/properties/state").unwrap()), JobState::Succeeded);
    let new_id = last.new_item_id().expect("newReplicationProtectedItemId after reprotect");
    assert_eq!(Some(new_id), raw_str(raw_last, "/properties/customDetails/newReplicationProtectedItemId"));
    // The item is re-homed under its former recovery container (ids compared case-insensitively:
    // the service writes `/Subscriptions/` in one and `/subscriptions/` in the other).
    let recovery_container = item_before.properties.recovery_container_id.as_deref().expect("recoveryContainerId");
    let expected_new = format!("{recovery_container}/replicationProtectedItems/{}", item_before.name);
    assert!(new_id.eq_ignore_ascii_case(&expected_new), "{new_id} vs {expected_new}");
    let first_with_id = jobs.iter().find(|(_, job, _)| job.new_item_id().is_some()).map(|(i, _, _)| *i);
    assert_eq!(first_with_id, Some(20));
    // Skipped tasks are reported as state "Other" and kept as such.
    assert!(
        last.properties.tasks.iter().any(|t| matches!(t.state(), JobState::Other(ref s) if s == "Other")),
        "{file}: a skipped task is kept as Other"
    );
}

#[test]
fn a2a_failover_commit_recording_parses() {
    let file = "recordings/azure-powershell/A2AFailoverCommit-excerpt.json";
    let (entries, unclassified) = load_recording(file);
    assert!(unclassified.is_empty(), "{file}: unclassified entries with a body: {unclassified:?}");
    assert!(entries.len() > 170, "{file}: entries parsed: {}", entries.len());

    // Protected-item GETs: before failover and after commit.
    let items: Vec<(&Recorded, ProtectedItem)> =
        entries.iter().filter(|e| e.kind == Kind::Item).map(|e| (e, parse(&e.body, file))).collect();
    assert_eq!(items.len(), 2, "{file}: two item GETs");
    for (e, item) in &items {
        let ctx = format!("{file} entry {}", e.index);
        check_a2a_item(item, &e.body, &ctx);
        assert!(item.lifecycle_id().is_some(), "{ctx}");
    }
    let (before_entry, before) =
        items.iter().find(|(_, i)| i.active_location() == "Primary").expect("item before failover");
    let (after_entry, after) =
        items.iter().find(|(_, i)| i.active_location() == "Recovery").expect("item after commit");
    assert_eq!(before.protection_state(), raw_str(&before_entry.body, "/properties/protectionState").unwrap());
    assert_eq!(after.protection_state(), raw_str(&after_entry.body, "/properties/protectionState").unwrap());
    // The item-level figure is stale (33 % after initial replication ended): not sync progress.
    assert_eq!(
        raw_i64(&before_entry.body, "/properties/providerSpecificDetails/monitoringPercentageCompletion"),
        Some(33)
    );
    assert_eq!(before.sync_percent(), None, "every disk is Protected");
    assert_eq!(before.lifecycle_id(), after.lifecycle_id(), "lifecycle id is stable across failover/commit");
    assert_eq!(before.properties.health_errors.len(), 1);
    assert_eq!(
        before.properties.health_errors[0].error_code.as_deref(),
        raw_str(&before_entry.body, "/properties/healthErrors/0/errorCode")
    );

    // Jobs: placeholder polls, the failover job and the commit job.
    let jobs: Vec<(&Recorded, Job)> =
        entries.iter().filter(|e| e.kind == Kind::Job).map(|e| (e, parse(&e.body, file))).collect();
    let placeholder = jobs.iter().find(|(_, j)| j.properties.scenario_name.is_none()).expect("placeholder poll");
    assert_eq!(placeholder.1.state(), JobState::NotStarted);
    assert!(placeholder.1.current_task().is_none());

    let (failover_entry, failover) = jobs
        .iter()
        .rev()
        .find(|(_, j)| j.properties.scenario_name.as_deref() == Some("UnplannedFailover"))
        .expect("failover job");
    assert_eq!(failover.state(), JobState::parse(raw_str(&failover_entry.body, "/properties/state").unwrap()));
    assert_eq!(failover.state(), JobState::Succeeded);
    let details = failover.properties.custom_details.as_ref().expect("failover job details");
    assert_eq!(Some(details.instance_type.as_str()), Some("FailoverJobDetails"));
    let point = details.protected_item_details[0].recovery_point_id.as_deref().expect("recoveryPointId");
    assert_eq!(
        Some(point),
        raw_str(&failover_entry.body, "/properties/customDetails/protectedItemDetails/0/recoveryPointId")
    );
    // The job reports the bare point name; the committed item carries the full ARM id.
    let item_point = after.properties.failover_recovery_point_id.as_deref().expect("failoverRecoveryPointId");
    assert!(item_point.ends_with(&format!("/recoveryPoints/{point}")), "{item_point} vs {point}");

    let (commit_entry, commit) = jobs
        .iter()
        .rev()
        .find(|(_, j)| j.properties.scenario_name.as_deref() == Some("CommitFailover"))
        .expect("commit job");
    assert_eq!(commit.state(), JobState::parse(raw_str(&commit_entry.body, "/properties/state").unwrap()));
    assert!(commit.state().is_terminal());

    // Job lists polled while waiting for initial replication.
    let pages = entries.iter().filter(|e| e.kind == Kind::JobPage).count();
    assert!(pages > 90, "{file}: job list polls parsed: {pages}");
}

#[test]
fn a2a_sdk_resources_recording_parses() {
    let file = "recordings/azure-sdk-for-net/GetA2AResources.json";
    let (entries, unclassified) = load_recording(file);
    assert!(unclassified.is_empty(), "{file}: unclassified entries: {unclassified:?}");
    let kinds: Vec<Kind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            Kind::Policy,
            Kind::Fabric,
            Kind::Fabric,
            Kind::Container,
            Kind::Container,
            Kind::Mapping,
            Kind::Mapping,
            Kind::Item
        ],
        "{file}"
    );
    let item_entry = entries.last().expect("item");
    let item: ProtectedItem = parse(&item_entry.body, file);
    check_a2a_item(&item, &item_entry.body, file);
    // This item is still in initial replication: no lifecycle id yet (JSON null).
    assert!(item_entry.body.pointer("/properties/providerSpecificDetails/lifecycleId").is_some_and(Value::is_null));
    assert_eq!(item.lifecycle_id(), None);
    let fabric: Fabric = parse(&entries[1].body, file);
    assert_eq!(
        fabric.properties.custom_details.and_then(|d| d.location).as_deref(),
        raw_str(&entries[1].body, "/properties/customDetails/location")
    );
    let policy: Policy = parse(&entries[0].body, file);
    assert!(policy.properties.provider_specific_details.and_then(|d| d.recovery_point_history).is_some());
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// Replaces every `instanceType` value so provider-specific examples compare with A2A bodies.
fn normalize_instance_types(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "instanceType" {
                    *v = Value::String("<provider>".into());
                } else {
                    normalize_instance_types(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_instance_types),
        _ => {}
    }
}

/// Recursively checks that `ours` has every key of `example`, and that any key only `ours` has
/// is in `extra_ok` (A2A keys documented in asr-api.md that the Hyper-V example lacks).
fn assert_same_keys(ours: &Value, example: &Value, extra_ok: &[&str], path: &str) {
    match (ours, example) {
        (Value::Object(o), Value::Object(e)) => {
            for key in e.keys() {
                assert!(o.contains_key(key), "{path}: client body lacks {key:?} (example has it)");
            }
            for key in o.keys() {
                assert!(
                    e.contains_key(key) || extra_ok.contains(&key.as_str()),
                    "{path}: client sets {key:?}, which the example does not have"
                );
            }
            for (key, v) in o {
                if let Some(ev) = e.get(key) {
                    assert_same_keys(v, ev, extra_ok, &format!("{path}/{key}"));
                }
            }
        }
        (Value::Array(o), Value::Array(e)) => {
            assert_eq!(o.is_empty(), e.is_empty(), "{path}: array emptiness");
            for (i, (ov, ev)) in o.iter().zip(e).enumerate() {
                assert_same_keys(ov, ev, extra_ok, &format!("{path}/{i}"));
            }
        }
        (o, e) => {
            assert_eq!(std::mem::discriminant(o), std::mem::discriminant(e), "{path}: JSON type differs ({o} vs {e})")
        }
    }
}

fn example_param(file: &str, name: &str) -> Value {
    let example = read_json(file);
    example["parameters"].get(name).cloned().unwrap_or_else(|| panic!("{file}: no parameter {name}"))
}

fn to_json<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).expect("request body serializes")
}

fn normalized(mut value: Value) -> Value {
    normalize_instance_types(&mut value);
    value
}

#[test]
fn request_bodies_match_examples() {
    // Item unplanned failover.
    let ex = example_param("2026-05-01/ReplicationProtectedItems_UnplannedFailover.json", "failoverInput");
    let ours = UnplannedFailoverInput::a2a(
        raw_str(&ex, "/properties/failoverDirection").unwrap(),
        raw_str(&ex, "/properties/sourceSiteOperations").unwrap() == "Required",
        None,
    );
    assert_eq!(normalized(to_json(&ours)), normalized(ex.clone()), "unplanned failover");
    let with_point = to_json(&UnplannedFailoverInput::a2a("PrimaryToRecovery", false, Some("rp".into())));
    assert_same_keys(&with_point, &ex, &["recoveryPointId"], "unplannedFailover");

    // Item test failover (with a network).
    let ex = example_param("2025-08-01/ReplicationProtectedItems_TestFailover.json", "testfailoverInput");
    let ours = TestFailoverInput::a2a(
        raw_str(&ex, "/properties/failoverDirection").unwrap(),
        raw_str(&ex, "/properties/networkId").map(str::to_owned),
        None,
    );
    assert_eq!(normalized(to_json(&ours)), normalized(ex.clone()), "test failover");
    let with_point = to_json(&TestFailoverInput::a2a("PrimaryToRecovery", Some("n".into()), Some("rp".into())));
    assert_same_keys(&with_point, &ex, &["recoveryPointId"], "testFailover");

    // Test failover cleanup (item and plan use the same body).
    for (file, name) in [
        ("2026-05-01/ReplicationProtectedItems_TestFailoverCleanup.json", "cleanupInput"),
        ("2026-05-01/ReplicationRecoveryPlans_TestFailoverCleanup.json", "input"),
    ] {
        let ex = example_param(file, name);
        let ours = TestFailoverCleanupInput::new(raw_str(&ex, "/properties/comments").unwrap());
        assert_eq!(to_json(&ours), ex, "{file}");
    }

    // Apply recovery point.
    let ex = example_param("2025-08-01/ReplicationProtectedItems_ApplyRecoveryPoint.json", "applyRecoveryPointInput");
    let ours = ApplyRecoveryPointInput::a2a(raw_str(&ex, "/properties/recoveryPointId").unwrap());
    assert_eq!(normalized(to_json(&ours)), normalized(ex), "apply recovery point");

    // Switch protection: the A2A example (item name only) — the client always sends both disk
    // lists, as PowerShell does (the recorded body below); the example omits them.
    let ex = example_param("2026-05-01/ReplicationProtectionContainers_SwitchProtection.json", "switchInput");
    let ours = SwitchProtectionInput::a2a(
        raw_str(&ex, "/properties/replicationProtectedItemName").unwrap(),
        A2ASwitchProtection::default(),
    );
    let mut with_lists = ex.clone();
    let details = with_lists["properties"]["providerSpecificDetails"].as_object_mut().unwrap();
    details.insert("vmDisks".into(), Value::Array(vec![]));
    details.insert("vmManagedDisks".into(), Value::Array(vec![]));
    assert_eq!(to_json(&ours), with_lists, "switch protection (example)");
    // The recorded reprotect body is built in `the_recorded_reprotect_body_is_what_the_client_builds`.
    // Every optional A2A switch-protection key the client can set has the documented name.
    let recording = read_json("recordings/azure-powershell/A2AReprotectTest.json");
    let sent: Value =
        serde_json::from_str(recording["Entries"][16]["RequestBody"].as_str().expect("recorded request body"))
            .expect("recorded request body is JSON");
    let full = to_json(&SwitchProtectionInput::a2a(
        "item",
        A2ASwitchProtection {
            recovery_container_id: Some("c".into()),
            policy_id: Some("p".into()),
            recovery_resource_group_id: Some("rg".into()),
            recovery_availability_set_id: Some("as".into()),
            recovery_availability_zone: Some("1".into()),
            recovery_proximity_placement_group_id: Some("ppg".into()),
            recovery_capacity_reservation_group_id: Some("crg".into()),
            vm_disks: vec![],
            vm_managed_disks: vec![VmManagedDiskInput {
                disk_id: Some("d".into()),
                primary_staging_azure_storage_account_id: Some("sa".into()),
                recovery_resource_group_id: Some("rg".into()),
                recovery_replica_disk_account_type: Some("Premium_LRS".into()),
                recovery_target_disk_account_type: Some("Premium_LRS".into()),
            }],
        },
    ));
    assert_same_keys(
        &full,
        &sent,
        &[
            "recoveryAvailabilitySetId",
            "recoveryAvailabilityZone",
            "recoveryProximityPlacementGroupId",
            "recoveryCapacityReservationGroupId",
        ],
        "switchprotection",
    );

    // Disable protection (POST /remove).
    let ex = example_param("2026-05-01/ReplicationProtectedItems_Delete.json", "disableProtectionInput");
    let ours = to_json(&DisableProtectionInput::new());
    assert_same_keys(&ours, &ex, &["disableProtectionReason"], "remove");
    assert_eq!(
        ours.pointer("/properties/replicationProviderInput"),
        ex.pointer("/properties/replicationProviderInput"),
        "disable protection provider input"
    );

    // Recovery plan unplanned failover.
    let ex = example_param("2025-08-01/ReplicationRecoveryPlans_UnplannedFailover.json", "input");
    let ours = to_json(&PlanFailoverInput::a2a(
        raw_str(&ex, "/properties/failoverDirection").unwrap(),
        raw_str(&ex, "/properties/sourceSiteOperations").unwrap() == "Required",
        "Latest",
    ));
    assert_same_keys(&ours, &ex, &["recoveryPointType", "multiVmSyncPointOption"], "plan unplannedFailover");
    for key in ["failoverDirection", "sourceSiteOperations"] {
        assert_eq!(ours["properties"][key], ex["properties"][key], "plan failover {key}");
    }

    // Recovery plan test failover.
    let ex = example_param("2026-05-01/ReplicationRecoveryPlans_TestFailover.json", "input");
    let ours = to_json(&PlanTestFailoverInput::a2a(
        raw_str(&ex, "/properties/failoverDirection").unwrap(),
        raw_str(&ex, "/properties/networkId").map(str::to_owned),
    ));
    assert_same_keys(&ours, &ex, &["recoveryPointType", "multiVmSyncPointOption"], "plan testFailover");
    for key in ["failoverDirection", "networkType", "networkId"] {
        assert_eq!(ours["properties"][key], ex["properties"][key], "plan test failover {key}");
    }
}

#[test]
fn recorded_unplanned_failover_body_matches() {
    // The single-item failover PowerShell sent (latest point, shut down the source).
    let file = "recordings/azure-powershell/A2AFailoverCommit-excerpt.json";
    let doc = read_json(file);
    let entry = doc
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| {
            e["RequestMethod"] == "POST" && e["RequestUri"].as_str().is_some_and(|u| u.contains("/unplannedFailover"))
        })
        .expect("unplannedFailover POST");
    let sent: Value = serde_json::from_str(entry["RequestBody"].as_str().unwrap()).expect("JSON body");
    let ours = UnplannedFailoverInput::a2a(
        raw_str(&sent, "/properties/failoverDirection").unwrap(),
        raw_str(&sent, "/properties/sourceSiteOperations") == Some("Required"),
        raw_str(&sent, "/properties/providerSpecificDetails/recoveryPointId").map(str::to_owned),
    );
    assert_eq!(to_json(&ours), sent);
    let _: Map<String, Value> = serde_json::from_value(sent).expect("object body");
}

// =============================================================================================
// What the recordings say the client must live with

fn entry(file: &str, index: usize, field: &str) -> Value {
    let doc = read_json(file);
    let entries = doc.get("Entries").and_then(Value::as_array).or_else(|| doc.as_array()).expect("entries").clone();
    let raw = &entries[index][field];
    match raw {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|e| panic!("{file} #{index} {field}: {e}")),
        other => other.clone(),
    }
}

fn header(file: &str, index: usize, side: &str, name: &str) -> String {
    let doc = read_json(file);
    let entries = doc.get("Entries").and_then(Value::as_array).or_else(|| doc.as_array()).expect("entries").clone();
    entries[index][side][name][0].as_str().unwrap_or_else(|| panic!("{file} #{index} {side} {name}")).to_owned()
}

const REPROTECT: &str = "recordings/azure-powershell/A2AReprotectTest.json";
const FAILOVER: &str = "recordings/azure-powershell/A2AFailoverCommit-excerpt.json";

/// Given the committed item (entry 13), the VM as it runs now (entry 15) and the cache account
/// the user chose, the client builds exactly the body Azure PowerShell sent (entry 16).
#[test]
fn the_recorded_reprotect_body_is_what_the_client_builds() {
    let item: ProtectedItem = parse(&entry(REPROTECT, 13, "ResponseBody"), "entry 13");
    let vm: VirtualMachine = parse(&entry(REPROTECT, 15, "ResponseBody"), "entry 15");
    let sent = entry(REPROTECT, 16, "RequestBody");
    let staging =
        raw_str(&sent, "/properties/providerSpecificDetails/vmManagedDisks/0/primaryStagingAzureStorageAccountId")
            .unwrap()
            .to_owned();
    // The account of the region the VM runs in (ukwest), as a plan or the configuration names it.
    let settings = tern_asr::client::ReprotectSettings {
        cache_storage_accounts: [("UK West".to_owned(), staging.clone())].into(),
        ..Default::default()
    };
    let config = tern_asr::AsrConfig::default();
    let ours = tern_asr::client::reprotect_input(&item, &vm, &settings, &config).expect("the input builds");
    assert_eq!(to_json(&ours), sent, "the client's reprotect body is PowerShell's");
    // The disks named are the running VM's, which the item calls its recoveryTargetDiskIds.
    let target = item.properties.provider_specific_details.as_ref().unwrap().protected_managed_disks[0]
        .recovery_target_disk_id
        .clone()
        .unwrap();
    assert_eq!(ours.properties.provider_specific_details.details.vm_managed_disks[0].disk_id.as_ref(), Some(&target));
    // Without an account for that region (one for another region does not count), nothing is built.
    let elsewhere = tern_asr::client::ReprotectSettings {
        cache_storage_accounts: [("uksouth".to_owned(), staging)].into(),
        ..Default::default()
    };
    let err = tern_asr::client::reprotect_input(&item, &vm, &elsewhere, &config).unwrap_err();
    assert!(err.to_string().contains("no cache storage account for ukwest"), "{err}");
}

/// A job list is a summary (entries 41–141): no tasks, errors, custom details or activity id.
/// A GET of the same job has them (142–143). A new job's first GET is a placeholder without a
/// scenario or target (147, 174), whose activity id begins with the POST's client request id
/// (146 → 147, 173 → 174).
#[test]
fn recorded_job_lists_are_summaries_and_a_get_carries_the_request_id() {
    let page: Page<Job> = parse(&entry(FAILOVER, 141, "ResponseBody"), "entry 141");
    assert!(page.value.len() == 8 && page.value.iter().all(Job::is_summary), "every listed job is a summary");
    assert!(page.value.iter().all(|j| j.activity_id().is_none() && j.properties.tasks.is_empty()));
    let full: Job = parse(&entry(FAILOVER, 142, "ResponseBody"), "entry 142");
    assert!(!full.is_summary() && full.activity_id().is_some() && !full.properties.tasks.is_empty());
    assert_eq!(full.name, page.value[0].name, "the same job");

    for (post, placeholder) in [(146, 147), (173, 174)] {
        let request_id = header(FAILOVER, post, "RequestHeaders", "x-ms-client-request-id");
        let job: Job = parse(&entry(FAILOVER, placeholder, "ResponseBody"), "placeholder");
        assert_eq!(job.state(), JobState::NotStarted);
        assert!(job.scenario().is_none() && job.target_name().is_none(), "a placeholder names nothing");
        assert!(job.started_by(&request_id), "entry {placeholder}: {:?}", job.properties.activity_id);
        assert!(!job.started_by("90bda2d6-0000-0000-0000-000000000000"), "another id does not match");
    }
    // The job the POST started keeps the prefix once it runs, and ends with its details.
    let request_id = header(FAILOVER, 146, "RequestHeaders", "x-ms-client-request-id");
    let done: Job = parse(&entry(FAILOVER, 172, "ResponseBody"), "entry 172");
    assert!(done.started_by(&request_id));
    assert_eq!(done.properties.tasks.len(), 5);
    assert!(done.properties.custom_details.as_ref().is_some_and(|d| !d.protected_item_details.is_empty()));
}

/// A Protected, healthy item keeps a stale item-level 33 % "InitialReplication" after initial
/// replication finished (entries 144–145): sync is read per disk, where it is true.
#[test]
fn the_stale_item_level_figure_is_not_taken_for_sync_progress() {
    for index in [144, 145] {
        let item: ProtectedItem = parse(&entry(FAILOVER, index, "ResponseBody"), "item");
        let d = item.properties.provider_specific_details.as_ref().unwrap();
        assert_eq!(d.monitoring_percentage_completion, Some(33), "entry {index}: the stale figure is there");
        assert!(item.disks_not_protected().is_empty(), "entry {index}: every disk is Protected");
        assert_eq!(item.sync_percent(), None, "entry {index}: nothing is replicating");
    }
}

/// The VM facts an event carries, read from the recorded items: which side is which before a
/// failover, after its commit, and before a reprotect.
#[test]
fn recorded_items_name_their_vms() {
    let item_at = |file: &str, index: usize| -> ProtectedItem {
        let (entries, _) = load_recording(file);
        let e = entries.iter().find(|e| e.index == index && e.kind == Kind::Item).expect("item entry");
        parse(&e.body, file)
    };
    let excerpt = "recordings/azure-powershell/A2AFailoverCommit-excerpt.json";
    let sub = "/subscriptions/5e71c90f-36aa-448a-8c28-cd6d8d664acf";
    // Excerpt entry 144 (218 of the full recording): Protected, before the failover.
    let before = item_at(excerpt, 144);
    let source = before.primary_vm().expect("the source VM");
    assert_eq!(
        source.arm_id,
        format!("{sub}/resourcegroups/a2avm349/providers/microsoft.compute/virtualmachines/a2avm349")
    );
    assert_eq!(source.region, "eastus2euap");
    assert_eq!(source.private_ips, ["10.0.0.4"], "staticIPAddress is reported for a dynamic address");
    // Where the failover will run it: named before the failover, with no address (dynamic target).
    let target = before.recovery_vm().expect("the recovery VM");
    assert_eq!(
        target.arm_id,
        format!("{sub}/resourceGroups/recRG349/providers/Microsoft.Compute/virtualMachines/a2aVM349")
    );
    assert_eq!(target.region, "eastus2euap");
    assert!(target.private_ips.is_empty(), "recoveryStaticIPAddress is \"\" for a dynamic target");
    assert!(before.properties.provider_specific_details.as_ref().unwrap().recovery_fabric_object_id.is_none());

    // Excerpt entry 145 (219): committed. The roles have not flipped: the VM running now is the
    // recovery side, the same id as before (recoveryFabricObjectId agrees, in lowercase).
    let after = item_at(excerpt, 145);
    let running = after.recovery_vm().expect("the failed-over VM");
    assert_eq!(running, target);
    let lower = after.properties.provider_specific_details.as_ref().unwrap().recovery_fabric_object_id.clone();
    assert!(lower.is_some_and(|l| l.eq_ignore_ascii_case(&running.arm_id)));
    assert_eq!(after.primary_vm().expect("source").private_ips, ["10.0.0.4"], "still the source's address");

    // Reprotect entry 13: committed in ukwest, replicating nothing yet; UK South is still the
    // item's primary side until switch protection flips the roles.
    let committed = item_at("recordings/azure-powershell/A2AReprotectTest.json", 13);
    let rsub = "/subscriptions/7c943c1b-5122-4097-90c8-861411bdd574";
    let running = committed.recovery_vm().expect("the failed-over VM");
    assert_eq!(
        running.arm_id,
        format!("{rsub}/resourceGroups/vijami-alertrg-asr-1/providers/Microsoft.Compute/virtualMachines/reprotectvm")
    );
    assert_eq!(running.region, "ukwest");
    assert!(running.private_ips.is_empty());
    let left = committed.primary_vm().expect("the VM failed over from");
    assert_eq!(
        left.arm_id,
        format!("{rsub}/resourcegroups/vijami-alertrg/providers/microsoft.compute/virtualmachines/reprotectvm")
    );
    assert_eq!((left.region.as_str(), left.private_ips.as_slice()), ("uksouth", &["10.4.0.6".to_owned()][..]));
}

/// Addresses come NIC by NIC, each NIC's primary configuration first, and `null`s read as none.
#[test]
fn item_addresses_primary_configuration_first() {
    let item: ProtectedItem = serde_json::from_value(serde_json::json!({
        "id": "x", "properties": {"providerSpecificDetails": {
            "instanceType": "A2A", "fabricObjectId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v",
            "vmNics": [
                {"ipConfigs": [
                    {"isPrimary": false, "staticIPAddress": "10.0.0.9", "recoveryStaticIPAddress": null},
                    {"isPrimary": true, "staticIPAddress": "10.0.0.5", "recoveryStaticIPAddress": "10.1.0.5"}
                ]},
                {"ipConfigs": null},
                {"ipConfigs": [{"isPrimary": true, "staticIPAddress": "10.0.1.5", "recoveryStaticIPAddress": ""}]}
            ]
        }}
    }))
    .expect("parses");
    assert_eq!(item.primary_vm().unwrap().private_ips, ["10.0.0.5", "10.0.0.9", "10.0.1.5"]);
    assert_eq!(item.primary_vm().unwrap().region, "");
    assert!(item.recovery_vm().is_none(), "no recovery VM named");
}
