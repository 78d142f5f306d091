//! The planner's `/healthz` and Prometheus `/metrics`: plans by state and the VMs of running
//! plans by phase and state, read from the plan records when scraped, next to everything else
//! this process counts (ASR requests, its event consumer's backlog, the workers' dead letters
//! it took: `tern_dead_letters_total{queue,kind}`).

use std::net::SocketAddr;
use std::sync::Arc;

use tern_proto::{Phase, PlanState, VmState};
use tern_service::{Endpoints, Scrape};
use tern_telemetry::metrics::{labels, registry};

use crate::PlannerService;

/// Serves `/healthz` and `/metrics` on `listen` (`tern-service`'s endpoints, with the event
/// consumer's backlog and the plan gauges); returns the bound address.
pub async fn serve(listen: SocketAddr, service: PlannerService) -> std::io::Result<SocketAddr> {
    // Every series at 0 before the first dead letter, so a rate or an alert has a start.
    for queue in tern_bus::WorkQueue::ALL {
        for kind in tern_bus::REASON_KINDS {
            let _ = dead_letters().get_or_create(&labels(&[("queue", queue.name()), ("kind", kind)]));
        }
    }
    let endpoints =
        Endpoints::new(service.bus().clone(), tern_bus::topology::EVENTS_STREAM, tern_bus::PLANNER_EVENTS_CONSUMER)
            .with_scrape(Arc::new(PlanGauges(service)));
    tern_service::serve(listen, endpoints).await
}

/// The plan gauges, read from the plan records at each scrape.
struct PlanGauges(PlannerService);

#[async_trait::async_trait]
impl Scrape for PlanGauges {
    async fn refresh(&self) {
        if let Err(e) = refresh(&self.0).await {
            tracing::warn!(error = %e, "metrics: the plan records could not be read");
        }
    }
}

/// A dead letter of a worker queue the planner took: logged and counted as
/// `tern_dead_letters_total{queue,kind}` (`kind`: the class of its reason, see
/// [`tern_bus::reason_kind`]).
pub(crate) fn dead_letter_taken(queue: &str, reason: &str) {
    let kind = tern_bus::reason_kind(reason);
    tracing::info!(queue, kind, reason, "dead letter taken");
    dead_letters().get_or_create(&labels(&[("queue", queue), ("kind", kind)])).inc();
}

fn dead_letters() -> tern_telemetry::metrics::CounterFamily {
    registry()
        .counter("tern_dead_letters", "Dead letters of the worker queues the planner took, by queue and reason kind")
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// Sets the plan gauges from the plan records.
async fn refresh(service: &PlannerService) -> Result<(), tonic::Status> {
    let plans = service.all_plans().await?;
    let active = service.active_plans().await?;
    let by_state = registry().gauge("tern_plans", "Plans by state");
    let vms = registry().gauge("tern_plan_vms", "VMs of plans that have not ended, by phase and state");
    // Every state is written each time, so a state no plan is in any more reads 0.
    for state in (1..=8).filter_map(|s| PlanState::try_from(s).ok()) {
        let n = plans.iter().filter(|p| p.state == state as i32).count();
        by_state.get_or_create(&labels(&[("state", &word(state.as_str_name(), "PLAN_STATE_"))])).set(n as f64);
    }
    let phases = [Phase::Failover, Phase::Commit, Phase::Reprotect, Phase::Cleanup, Phase::Drill];
    let states = [VmState::Pending, VmState::Running, VmState::Succeeded, VmState::Failed, VmState::Skipped];
    for phase in phases {
        for state in states {
            let n = active
                .iter()
                .flat_map(|s| &s.plan.vms)
                .filter(|v| v.phase == phase as i32 && v.state == state as i32)
                .count();
            let l = labels(&[("phase", phase.slug()), ("state", &word(state.as_str_name(), "VM_STATE_"))]);
            vms.get_or_create(&l).set(n as f64);
        }
    }
    Ok(())
}
