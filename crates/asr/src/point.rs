//! Recovery point choice: what the user asked for → what to send to ASR, and which point
//! (and how many of the VM's disks) that means.

use crate::client::AsrClient;
use crate::error::AsrError;
use crate::model::{ProtectedItem, RecoveryPoint};

/// The recovery point a failover should use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointChoice {
    /// The last point ASR already processed: lowest RTO.
    LatestProcessed,
    /// Process all pending data first: lowest RPO, slower.
    Latest,
    /// The newest application-consistent point.
    LatestAppConsistent,
    /// The newest crash-consistent point.
    LatestCrashConsistent,
    /// A specific point (ARM id or name). Only for a single VM.
    Custom(String),
}

impl PointChoice {
    /// What a recovery plan failover sends as `recoveryPointType`. A plan cannot take a
    /// specific point: `Custom` is refused, naming the rule.
    pub fn plan_point_type(&self) -> Result<&'static str, AsrError> {
        Ok(match self {
            PointChoice::LatestProcessed => "LatestProcessed",
            PointChoice::Latest => "Latest",
            PointChoice::LatestAppConsistent => "LatestApplicationConsistent",
            PointChoice::LatestCrashConsistent => "LatestCrashConsistent",
            PointChoice::Custom(_) => {
                return Err(AsrError::InvalidInput(
                    "recovery_point: a custom recovery point applies to a single VM only, never to a recovery plan"
                        .into(),
                ));
            }
        })
    }
}

/// A resolved choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPoint {
    /// What was asked for.
    pub choice: PointChoice,
    /// The `recoveryPointId` to send; `None` means "latest" (ASR processes pending data).
    pub send: Option<String>,
    /// The point, when a specific one was chosen.
    pub point: Option<RecoveryPoint>,
    /// Disks of the VM the point covers (all of them for "latest").
    pub disks_covered: usize,
    /// Disks of the VM.
    pub disks_total: usize,
}

impl ResolvedPoint {
    /// Whether failing over to this point would bring a disk back empty.
    pub fn misses_disks(&self) -> bool {
        self.disks_covered < self.disks_total
    }
}

/// Picks the point for `choice` among `points` (newest first) of `item`.
pub fn pick(item: &ProtectedItem, points: &[RecoveryPoint], choice: &PointChoice) -> Result<ResolvedPoint, AsrError> {
    let total = item.disk_ids().len();
    let chosen = match choice {
        PointChoice::Latest => {
            return Ok(ResolvedPoint {
                choice: choice.clone(),
                send: None,
                point: None,
                disks_covered: total,
                disks_total: total,
            });
        }
        PointChoice::LatestProcessed => points.first(),
        PointChoice::LatestAppConsistent => points.iter().find(|p| p.is_app_consistent()),
        PointChoice::LatestCrashConsistent => points.iter().find(|p| !p.is_app_consistent()).or(points.first()),
        PointChoice::Custom(id) => {
            let name = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
            let found = points.iter().find(|p| p.name.eq_ignore_ascii_case(name));
            if found.is_none() {
                return Err(AsrError::InvalidInput(format!(
                    "recovery_point: {id:?} is not a recovery point of {} (it has {} points)",
                    item.friendly_name(),
                    points.len()
                )));
            }
            found
        }
    };
    let point = chosen.ok_or_else(|| AsrError::Api {
        operation: format!("choose recovery point of {}", item.friendly_name()),
        status: 409,
        code: "NoSuitableRecoveryPoint".into(),
        message: format!("{} has no recovery point of the kind asked for ({choice:?})", item.friendly_name()),
        possible_causes: Some(
            "Replication has not produced such a point yet, or a commit discarded the points.".into(),
        ),
        recommended_action: Some(
            "Choose another recovery point option, or wait for replication to produce one.".into(),
        ),
        retry_after: None,
    })?;
    let covered = point.disks().len().min(total.max(point.disks().len()));
    Ok(ResolvedPoint {
        choice: choice.clone(),
        send: Some(point.id.clone()),
        point: Some(point.clone()),
        disks_covered: covered,
        disks_total: total.max(covered),
    })
}

impl AsrClient {
    /// Resolves `choice` for `item` against its current recovery points.
    pub async fn resolve_point(&self, item: &ProtectedItem, choice: &PointChoice) -> Result<ResolvedPoint, AsrError> {
        if *choice == PointChoice::Latest {
            return pick(item, &[], choice);
        }
        let points = self.recovery_points(&item.id).await?;
        pick(item, &points, choice)
    }
}
