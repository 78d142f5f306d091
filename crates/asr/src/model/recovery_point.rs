//! Recovery points of a protected item.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{null_default, parse_time};

/// A recovery point of a protected item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPoint {
    /// ARM id (`{rpi}/recoveryPoints/{name}`).
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Recovery point name (a GUID).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Recovery point properties.
    pub properties: RecoveryPointProperties,
}

/// `properties` of a [`RecoveryPoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointProperties {
    /// Time of the point (raw).
    pub recovery_point_time: Option<String>,
    /// `ApplicationConsistent` or `CrashConsistent`.
    pub recovery_point_type: Option<String>,
    /// Provider details (A2A: sync type and covered disks).
    pub provider_specific_details: Option<RecoveryPointDetails>,
}

/// A2A `providerSpecificDetails` of a recovery point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecoveryPointDetails {
    /// Provider discriminator (`A2A`).
    #[serde(deserialize_with = "null_default")]
    pub instance_type: String,
    /// `MultiVmSyncRecoveryPoint` or `PerVmRecoveryPoint`.
    pub recovery_point_sync_type: Option<String>,
    /// Disk ids covered by the point.
    #[serde(deserialize_with = "null_default")]
    pub disks: Vec<String>,
}

impl RecoveryPoint {
    /// The point's time, parsed.
    pub fn time(&self) -> Option<OffsetDateTime> {
        parse_time(self.properties.recovery_point_time.as_deref()?)
    }

    /// Whether the point is application consistent.
    pub fn is_app_consistent(&self) -> bool {
        self.properties.recovery_point_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("ApplicationConsistent"))
    }

    /// Disk ids covered by the point (empty when not reported).
    pub fn disks(&self) -> &[String] {
        self.properties.provider_specific_details.as_ref().map_or(&[], |d| d.disks.as_slice())
    }
}
