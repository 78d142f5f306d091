//! Plan control: reading plans, and moving a plan between states (pause, resume, cancel).

use std::sync::Arc;

use futures::StreamExt;
use tern_proto::{Plan, PlanEventKind, PlanState};
use tonic::Status;

use super::{PlannerService, SEND_CONCURRENCY, is_terminal, kv_status};
use crate::store::Snapshot;

impl PlannerService {
    /// Every plan without its VMs.
    pub(crate) async fn all_plans(&self) -> Result<Vec<Plan>, Status> {
        let store = &self.inner.store;
        let ids = store.ids().await.map_err(kv_status)?;
        let headers: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move { store.header(&id).await })
            .buffered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut plans = Vec::with_capacity(headers.len());
        for header in headers {
            plans.extend(header.map_err(kv_status)?);
        }
        Ok(plans)
    }

    /// The plans that have not ended, with their VMs.
    pub(crate) async fn active_plans(&self) -> Result<Vec<Arc<Snapshot>>, Status> {
        let mut out = Vec::new();
        for plan in self.all_plans().await?.into_iter().filter(|p| !is_terminal(p.state)) {
            out.extend(self.inner.store.load(&plan.plan_id).await.map_err(kv_status)?);
        }
        Ok(out)
    }

    pub(super) async fn get(&self, plan_id: &str) -> Result<Plan, Status> {
        if plan_id.is_empty() {
            return Err(Status::invalid_argument("plan_id: is empty"));
        }
        Ok(self.load(plan_id).await?.plan.clone())
    }

    pub(super) async fn transition(
        &self,
        plan_id: &str,
        from: &[PlanState],
        to: PlanState,
        reason: &str,
        kind: PlanEventKind,
    ) -> Result<Plan, Status> {
        let current = self.get(plan_id).await?;
        let state = current.state();
        if !from.contains(&state) {
            return Err(Status::failed_precondition(format!(
                "plan {plan_id} is {}: it cannot become {}",
                state.as_str_name(),
                to.as_str_name()
            )));
        }
        let reason = reason.to_owned();
        let stored = self
            .step(plan_id, |p, _| {
                let s = p.state();
                if from.contains(&s) {
                    p.set_state(to);
                    if !reason.is_empty() {
                        p.reason = reason.clone();
                    }
                    true
                } else {
                    false
                }
            })
            .await?;
        let plan = stored.plan.clone();
        self.plan_event(
            &plan,
            kind,
            &format!("{}.{}", kind.slug(), plan.updated_at.map(|t| t.seconds).unwrap_or(0)),
            &reason,
        )
        .await;
        Ok(plan)
    }
}
