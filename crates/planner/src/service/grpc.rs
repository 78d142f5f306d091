//! The gRPC surface: `tern.v1.Planner` on [`PlannerService`], and the server that hosts it
//! with gRPC health and server reflection.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tern_bus::KvError;
use tern_proto::planner_server::Planner;
use tern_proto::{
    CancelPlanRequest, GetPlanRequest, ListPlansRequest, ListPlansResponse, PausePlanRequest, Plan, PlanEventKind,
    PlanState, PlanUpdate, PreflightRequest, PreflightResponse, Readiness, ResumePlanRequest, RetryVmRequest,
    SubmitPlanRequest, SubmitPlanResponse, WatchPlanRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument, warn};

use super::{PlannerService, is_terminal, kv_status};
use crate::progress;
use crate::spec::validate;
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
        let mut plans = Vec::new();
        for p in self.all_plans().await? {
            if req.states.is_empty() || req.states.contains(&p.state) {
                plans.push(p);
            }
        }
        plans.sort_by_key(|p| std::cmp::Reverse(p.created_at.map(|t| (t.seconds, t.nanos))));
        if req.page_size > 0 {
            plans.truncate(req.page_size as usize);
        }
        Ok(Response::new(ListPlansResponse { plans, next_page_token: String::new() }))
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
        let key = progress::vm_key(&plan.vms[i]).to_owned();
        match self.inner.locks.create(&key, &VmLock { plan_id: plan.plan_id.clone() }).await {
            Ok(_) => {}
            Err(KvError::AlreadyExists { .. }) => {
                let holder = self.inner.locks.get(&key).await.map_err(kv_status)?.map(|l| l.value.plan_id);
                if let Some(other) = holder.filter(|h| *h != plan.plan_id) {
                    return Err(Status::failed_precondition(format!(
                        "{} is in active plan {other} now: retry it there, or after that plan ends",
                        r.vm_name
                    )));
                }
            }
            Err(e) => return Err(kv_status(e)),
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
