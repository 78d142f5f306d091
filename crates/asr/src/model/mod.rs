//! The client's view of the ARM / Azure Site Recovery JSON it reads and writes.
//!
//! This module owns the serde types for:
//! - ASR resources the orchestrator reads: replication protected items (with the A2A
//!   provider details), recovery points, jobs, fabrics, protection containers, container
//!   mappings, replication policies and recovery plans, plus the paged list envelope
//!   ([`Page`]);
//! - the few Compute / Network resources cleanup needs ([`VirtualMachine`],
//!   [`NetworkInterface`]);
//! - ARM error bodies ([`ArmErrorBody`]) and the Azure-AsyncOperation status body
//!   ([`OperationStatus`]);
//! - the request bodies of the ASR actions the orchestrator posts (failover, test failover,
//!   cleanup, apply recovery point, switch protection, disable protection, recovery-plan
//!   failover / test failover).
//!
//! They live in one file per kind — `item`, `recovery_point`, `job`, `topology` (fabrics,
//! containers, mappings, policies, recovery plans), `compute`, `arm` (list page, error body,
//! operation status) and `request` — and are all re-exported here, so callers name
//! `tern_asr::model::X` whichever file holds it. This file keeps the serde and time helpers
//! they share.
//!
//! Shapes follow the REST reference (`asr-api.md` §2–§4, §7), the official REST examples and
//! recorded A2A traffic. Response types are deliberately tolerant: every field defaults when
//! missing or `null`, unknown fields are ignored, and enum-like strings are kept as strings
//! (with typed accessors such as [`Job::state`]) so a new Azure value never breaks parsing.
//! Times are kept as the raw strings Azure sent; [`parse_time`] turns them into
//! [`OffsetDateTime`]s. HTTP, auth and polling live elsewhere in the crate.

mod arm;
mod compute;
mod item;
mod job;
mod recovery_point;
mod request;
mod topology;

pub use arm::{ArmErrorBody, ArmErrorDetail, OperationStatus, Page};
pub use compute::{
    HardwareProfile, InstanceView, InstanceViewStatus, IpConfiguration, IpConfigurationProperties, ManagedDisk,
    ManagedDiskProperties, ManagedDiskRef, NetworkInterface, NetworkInterfaceProperties, NetworkProfile,
    PublicIpAddress, PublicIpAddressProperties, ResourceSku, SkuCapability, SkuRestriction, SkuRestrictionInfo,
    StorageAccount, StorageProfile, SubResource, Usage, UsageName, VhdRef, VirtualMachine, VirtualMachineProperties,
    VmDisk,
};
pub use item::{
    A2AIpConfig, A2AManagedDisk, A2AReplicationDetails, A2AUnmanagedDisk, A2AVmNic, CurrentScenario, DiskSync,
    HealthError, ProtectedItem, ProtectedItemProperties, VmPlacement,
};
pub use job::{
    FailoverItemDetails, Job, JobDetails, JobError, JobProperties, JobState, JobTask, ProviderError, ServiceError,
};
pub use recovery_point::{RecoveryPoint, RecoveryPointDetails, RecoveryPointProperties};
pub use request::{
    A2AFailoverProviderInput, A2ASwitchProtection, ApplyRecoveryPointInput, ApplyRecoveryPointInputProperties,
    DisableProtectionInput, DisableProtectionInputProperties, PlanA2AFailoverDetails, PlanFailoverInput,
    PlanFailoverInputProperties, PlanTestFailoverInput, PlanTestFailoverInputProperties, ProviderInput,
    SwitchProtectionInput, SwitchProtectionInputProperties, SwitchProtectionProviderInput, TestFailoverCleanupInput,
    TestFailoverCleanupInputProperties, TestFailoverInput, TestFailoverInputProperties, UnplannedFailoverInput,
    UnplannedFailoverInputProperties, VmDiskInput, VmManagedDiskInput,
};
pub use topology::{
    ContainerMapping, ContainerMappingProperties, Fabric, FabricCustomDetails, FabricProperties, Policy, PolicyDetails,
    PolicyProperties, ProtectionContainer, ProtectionContainerProperties, RecoveryPlan, RecoveryPlanGroup,
    RecoveryPlanItem, RecoveryPlanProperties,
};

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Deserializes `null` (or a missing value, via `#[serde(default)]`) as `T::default()`.
///
/// Azure sends `null` for empty arrays (e.g. A2A `protectedDisks`) and occasionally for
/// strings; plain `Vec`/`String` fields would otherwise reject it.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON scalar that should be an integer but might arrive as a float or a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientNumber {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Deserializes an optional integer, accepting numbers, floats (truncated) and numeric strings.
/// A non-numeric string becomes `None`.
fn lenient_i64<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Option::<LenientNumber>::deserialize(deserializer)? {
        None => None,
        Some(LenientNumber::Int(i)) => Some(i),
        Some(LenientNumber::Float(f)) => f.is_finite().then_some(f as i64),
        Some(LenientNumber::Text(s)) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
        }
    })
}

/// A JSON scalar that should be a string but might arrive as a number (ASR error codes).
#[derive(Deserialize)]
#[serde(untagged)]
enum LenientText {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl LenientText {
    fn into_string(self) -> String {
        match self {
            LenientText::Text(s) => s,
            LenientText::Int(i) => i.to_string(),
            LenientText::Float(f) => f.to_string(),
            LenientText::Bool(b) => b.to_string(),
        }
    }
}

/// Deserializes a string that may be sent as a number; `null` becomes `""`.
fn lenient_string<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<LenientText>::deserialize(deserializer)?.map(LenientText::into_string).unwrap_or_default())
}

/// Deserializes an optional string that may be sent as a number.
fn lenient_opt_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<LenientText>::deserialize(deserializer)?.map(LenientText::into_string))
}

/// Returns the non-empty string inside `s`, if any.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

/// Parses a time as ASR writes it.
///
/// Accepts RFC 3339 with any number of fractional digits (`2025-04-09T08:49:20.8930892Z`,
/// `2025-04-09T08:58:22Z`, `...+01:00`) and the offset-less form ASR uses for placeholders and
/// some fields (`0001-01-01T00:00:00`, `9999-12-31T23:59:59.9999999`), which is read as UTC.
/// Placeholder values such as `0001-01-01T00:00:00` and `1753-01-01T01:01:01Z` parse like any
/// other time; callers that care must treat them as "not set" themselves.
/// Returns `None` for empty or unparseable input.
pub fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // No offset after the time part: treat as UTC.
    let time_part = s.find(['T', 't', ' ']).map(|i| &s[i + 1..])?;
    let has_offset = time_part.ends_with(['Z', 'z']) || time_part.contains(['+', '-']);
    if has_offset {
        return None;
    }
    let mut with_z = String::with_capacity(s.len() + 1);
    with_z.push_str(&s[..s.len() - time_part.len() - 1]);
    with_z.push('T');
    with_z.push_str(time_part);
    with_z.push('Z');
    OffsetDateTime::parse(&with_z, &Rfc3339).ok()
}

/// Whether a parsed ASR time is a real time rather than a placeholder
/// (`0001-01-01T00:00:00`, `1753-01-01T01:01:01Z`).
fn is_real_time(t: OffsetDateTime) -> bool {
    t.year() > 1753
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_time_accepts_asr_forms() {
        let t = parse_time("2025-04-09T08:49:20.8930892Z").expect("7 fractional digits");
        assert_eq!((t.year(), t.hour(), t.minute(), t.second()), (2025, 8, 49, 20));
        assert_eq!(t.nanosecond(), 893_089_200);

        let t = parse_time("2025-04-09T08:58:22Z").expect("whole seconds");
        assert_eq!(t.unix_timestamp(), 1_744_189_102);

        let t = parse_time("0001-01-01T00:00:00").expect("no offset");
        assert_eq!((t.year(), t.offset().is_utc()), (1, true));
        assert!(!is_real_time(t));

        let t = parse_time("1753-01-01T01:01:01Z").expect("idle scenario start");
        assert_eq!(t.year(), 1753);
        assert!(!is_real_time(t));

        let t = parse_time("9999-12-31T23:59:59.9999999").expect("no offset, fraction");
        assert_eq!(t.year(), 9999);

        let t = parse_time("2025-04-09T10:58:22+02:00").expect("offset");
        assert_eq!(t.unix_timestamp(), 1_744_189_102);

        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("not a time"), None);
        assert_eq!(parse_time("2025-04-09T08:58:22-0"), None);
    }
}
