//! The gRPC surface: `tern.v1.Planner` on [`PlannerService`], and the server that hosts it
//! with gRPC health and server reflection.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tern_bus::KvError;
use tern_proto::planner_server::Planner;
use tern_proto::{
    CancelPlanRequest, GateDecisionRequest, GetPlanRequest, ListPlansRequest, ListPlansResponse, PausePlanRequest,
    Plan, PlanEventKind, PlanState, PlanUpdate, PreflightRequest, PreflightResponse, Readiness, ResumePlanRequest,
    RetryVmRequest, SubmitPlanRequest, SubmitPlanResponse, WatchPlanRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, warn};

use super::{PlannerService, is_terminal, kv_status};
use crate::spec::validate;
use crate::{gates, progress};
use tern_proto::VmLock;

type WatchStream = Pin<Box<dyn Stream<Item = Result<PlanUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Planner for PlannerService {
    async fn submit_plan(&self, request: Request<SubmitPlanRequest>) -> Result<Response<SubmitPlanResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        // The plan's root span: the trace every later span of the plan joins.
        let span = tracing::info_span!(
            "SubmitPlan",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "tern.v1.Planner",
            rpc.method = "SubmitPlan",
            tern.plan_id = tracing::field::Empty,
        );
        self.submit(spec).instrument(span).await.map(Response::new)
    }

    async fn preflight(&self, request: Request<PreflightRequest>) -> Result<Response<PreflightResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let valid = validate(&spec, self.inner.asr.config())?;
        let selection = self.resolve(&valid).await?;
        let (vms, _) = self.preflight_all(&valid, &selection).await?;
        let ready = vms.iter().all(|v| v.readiness() != Readiness::Blocked);
        Ok(Response::new(PreflightResponse { vms, ready }))
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Result<Response<Plan>, Status> {
        self.get(&request.into_inner().plan_id).await.map(Response::new)
    }

    async fn list_plans(&self, request: Request<ListPlansRequest>) -> Result<Response<ListPlansResponse>, Status> {
        let req = request.into_inner();
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(PageKey::parse(token).ok_or_else(|| {
                Status::invalid_argument(format!("page_token: {token:?} is not a token this planner gave"))
            })?),
        };
        let at_or_after = |t: Option<prost_types::Timestamp>| {
            req.created_after.is_none_or(|a| t.is_some_and(|t| (t.seconds, t.nanos) >= (a.seconds, a.nanos)))
        };
        let vm = req.vm_name.to_ascii_lowercase();
        let mut plans: Vec<Plan> = self
            .all_plans()
            .await?
            .into_iter()
            .filter(|p| req.states.is_empty() || req.states.contains(&p.state))
            .filter(|p| at_or_after(p.created_at))
            .filter(|p| {
                let labels = p.spec.as_ref().map(|s| &s.labels);
                req.labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .filter(|p| after.as_ref().is_none_or(|a| PageKey::of(p) > *a))
            .collect();
        if !vm.is_empty() {
            // Listed plans are headers, without their VMs: read those of the plans left.
            let mut with_vm = Vec::new();
            for p in plans {
                let snapshot = self.inner.store.load(&p.plan_id).await.map_err(kv_status)?;
                let vms = snapshot.as_ref().map(|s| s.plan.vms.as_slice()).unwrap_or_default();
                if vms.iter().any(|v| v.vm.as_ref().is_some_and(|r| r.name.eq_ignore_ascii_case(&vm))) {
                    with_vm.push(p);
                }
            }
            plans = with_vm;
        }
        plans.sort_by_cached_key(PageKey::of);
        let size = match req.page_size {
            0 => MAX_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        let next_page_token = if plans.len() > size {
            plans.truncate(size);
            plans.last().map(|p| PageKey::of(p).token()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListPlansResponse { plans, next_page_token }))
    }

    type WatchPlanStream = WatchStream;

    async fn watch_plan(&self, request: Request<WatchPlanRequest>) -> Result<Response<Self::WatchPlanStream>, Status> {
        let plan_id = request.into_inner().plan_id;
        let first = self.get(&plan_id).await?;
        let this = self.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = first.updated_at;
            if tx.send(Ok(PlanUpdate { plan: Some(first.clone()) })).await.is_err() || is_terminal(first.state) {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                // Reads the small header, and the plan's changed chunks only when it moved.
                let Ok(current) = this.load(&plan_id).await else { return };
                if current.plan.updated_at != last {
                    last = current.plan.updated_at;
                    let done = is_terminal(current.plan.state);
                    let plan = current.plan.clone();
                    if tx.send(Ok(PlanUpdate { plan: Some(plan) })).await.is_err() || done {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn pause_plan(&self, request: Request<PausePlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        self.transition(
            &r.plan_id,
            &[PlanState::Running, PlanState::Accepted],
            PlanState::Paused,
            &r.reason,
            PlanEventKind::Paused,
        )
        .await
        .map(Response::new)
    }

    async fn resume_plan(&self, request: Request<ResumePlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        self.transition(&r.plan_id, &[PlanState::Paused], PlanState::Running, "", PlanEventKind::Resumed)
            .await
            .map(Response::new)
    }

    async fn cancel_plan(&self, request: Request<CancelPlanRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        let reason = if r.reason.is_empty() { "cancelled".to_owned() } else { r.reason };
        self.transition(
            &r.plan_id,
            &[PlanState::Accepted, PlanState::Running, PlanState::Paused],
            PlanState::Cancelling,
            &reason,
            PlanEventKind::Cancelled,
        )
        .await
        .map(Response::new)
    }

    async fn retry_vm(&self, request: Request<RetryVmRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        let plan = self.get(&r.plan_id).await?;
        let Some(i) =
            plan.vms.iter().position(|v| v.vm.as_ref().is_some_and(|x| x.name.eq_ignore_ascii_case(&r.vm_name)))
        else {
            return Err(Status::not_found(format!("vm_name: {:?} is not in plan {}", r.vm_name, r.plan_id)));
        };
        // Every refusal before anything is written: the lock is taken only for a valid retry.
        progress::retry(&mut plan.clone(), i, r.phase()).map_err(Status::failed_precondition)?;
        // The VM's lock: this plan's already, or free again (the plan ended and let it go). A VM
        // another plan holds now is that plan's: retrying it here would run two plans on it.
        if let Some(other) = self.take_back(&plan.plan_id, progress::vm_key(&plan.vms[i])).await? {
            return Err(Status::failed_precondition(format!(
                "{} is in active plan {other} now: retry it there, or after that plan ends",
                r.vm_name
            )));
        }
        let plan = self
            .step(&r.plan_id, |p, dirty| {
                // A concurrent retry may have been first: then there is nothing left to do.
                let retried = progress::retry(p, i, r.phase()).is_ok();
                if retried {
                    dirty.touch(i);
                }
                retried
            })
            .await?;
        Ok(Response::new(plan.plan.clone()))
    }

    async fn approve_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        self.decide_gate(request.into_inner(), true).await.map(Response::new)
    }

    async fn reject_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        self.decide_gate(request.into_inner(), false).await.map(Response::new)
    }

    async fn retry_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        let r = request.into_inner();
        let plan = self.get(&r.plan_id).await?;
        let w = gates::find_wave(&plan, &r.wave).map_err(Status::not_found)?;
        // Every refusal before anything is written, as for a VM's retry.
        let (_, revived) =
            gates::retry(&mut plan.clone(), w, r.step, super::now()).map_err(Status::failed_precondition)?;
        // The VMs the halt skipped run again: their locks are this plan's, or free again.
        for &i in &revived {
            let key = progress::vm_key(&plan.vms[i]);
            if let Some(other) = self.take_back(&plan.plan_id, key).await? {
                return Err(Status::failed_precondition(format!(
                    "{key} is in active plan {other} now: retry the gate after that plan ends"
                )));
            }
        }
        let mut changed = None;
        let stored = self
            .step(&r.plan_id, |p, dirty| match gates::retry(p, w, r.step, super::now()) {
                Ok((c, revived)) => {
                    revived.into_iter().for_each(|i| dirty.touch(i));
                    changed = Some(c);
                    true
                }
                Err(_) => {
                    changed = None; // a concurrent retry was first
                    false
                }
            })
            .await?;
        if let Some(c) = changed {
            self.gate_event(&stored.plan, &c.status).await;
            self.kick_hooks(&stored.plan);
        }
        Ok(Response::new(stored.plan.clone()))
    }
}

impl PlannerService {
    /// Takes a VM's lock back for `plan_id` before one of its VMs runs again: the lock is this
    /// plan's already, or free again (the plan ended and let it go). Returns the plan that holds
    /// it now, if another does: running the VM here would run two plans on it.
    async fn take_back(&self, plan_id: &str, key: &str) -> Result<Option<String>, Status> {
        match self.inner.locks.create(key, &VmLock { plan_id: plan_id.to_owned() }).await {
            Ok(_) => Ok(None),
            Err(KvError::AlreadyExists { .. }) => {
                let holder = self.inner.locks.get(key).await.map_err(kv_status)?.map(|l| l.value.plan_id);
                Ok(holder.filter(|h| h != plan_id))
            }
            Err(e) => Err(kv_status(e)),
        }
    }

    /// Approves or rejects a waiting approval step (`ApproveGate`, `RejectGate`).
    async fn decide_gate(&self, r: GateDecisionRequest, approve: bool) -> Result<Plan, Status> {
        if r.by.trim().is_empty() {
            return Err(Status::invalid_argument("by: who decides is required (it is recorded)"));
        }
        let plan = self.get(&r.plan_id).await?;
        let w = gates::find_wave(&plan, &r.wave).map_err(Status::not_found)?;
        gates::decide(&mut plan.clone(), w, r.step, approve, &r.by, &r.reason, super::now())
            .map_err(Status::failed_precondition)?;
        let mut changed = None;
        let mut refused = None;
        let stored = self
            .step(&r.plan_id, |p, _| match gates::decide(p, w, r.step, approve, &r.by, &r.reason, super::now()) {
                Ok(c) => {
                    changed = Some(c);
                    true
                }
                Err(e) => {
                    changed = None;
                    refused = Some(e); // another replica decided it first
                    false
                }
            })
            .await?;
        match changed {
            Some(c) => self.gate_event(&stored.plan, &c.status).await,
            None => return Err(Status::failed_precondition(refused.unwrap_or_default())),
        }
        Ok(stored.plan.clone())
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<PlanUpdate, Status>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The gRPC server: the planner, gRPC health and server reflection, on `listen`. Returns the
/// bound address and the server task.
pub async fn serve_grpc(
    service: PlannerService,
    listen: std::net::SocketAddr,
    auth: crate::ApiAuth,
    shutdown: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_grpc_tls(service, listen, auth, None, shutdown).await
}

/// As [`serve_grpc`], over TLS when `tls` is given (the API then takes no plaintext caller).
pub async fn serve_grpc_tls(
    service: PlannerService,
    listen: std::net::SocketAddr,
    auth: crate::ApiAuth,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<tern_proto::planner_server::PlannerServer<crate::auth::Guarded>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tern_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let result = builder
            .add_service(health)
            .add_service(reflection)
            .add_service(tern_proto::planner_server::PlannerServer::new(crate::auth::Guarded::new(service, auth)))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "gRPC server stopped");
        }
    });
    Ok((addr, task))
}

/// The most plans one `ListPlans` page holds (and the page size when none is asked for).
const MAX_PAGE: usize = 1000;

/// Where a plan sits in `ListPlans`' order, newest first, then by id: a page token names the
/// last plan of its page, so pages neither repeat nor skip a plan while plans are added.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PageKey {
    newest_first: std::cmp::Reverse<(i64, i32)>,
    plan_id: String,
}

impl PageKey {
    fn of(plan: &Plan) -> Self {
        let created = plan.created_at.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
        Self { newest_first: std::cmp::Reverse(created), plan_id: plan.plan_id.clone() }
    }

    fn token(&self) -> String {
        let (seconds, nanos) = self.newest_first.0;
        format!("{seconds}.{nanos}.{}", self.plan_id)
    }

    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.splitn(3, '.');
        let seconds = parts.next()?.parse().ok()?;
        let nanos = parts.next()?.parse().ok()?;
        let plan_id = parts.next().filter(|id| !id.is_empty())?.to_owned();
        Some(Self { newest_first: std::cmp::Reverse((seconds, nanos)), plan_id })
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_page_token_names_the_last_plan_of_its_page_and_reads_back() {
        let plan = |id: &str, seconds| Plan {
            plan_id: id.into(),
            created_at: Some(prost_types::Timestamp { seconds, nanos: 5 }),
            ..Default::default()
        };
        let (old, new) = (PageKey::of(&plan("p-a", 100)), PageKey::of(&plan("p-b", 200)));
        assert!(new < old, "newest first");
        assert_eq!(PageKey::parse(&old.token()), Some(old.clone()));
        assert!(PageKey::of(&plan("p-a", 200)) < new, "same time: by id");
        for bad in ["", "x", "1.2", "1.2.", "a.2.p"] {
            assert_eq!(PageKey::parse(bad), None, "{bad:?}");
        }
    }
}
