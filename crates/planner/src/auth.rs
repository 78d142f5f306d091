//! Who may call the planner's API: the bearer tokens of its two roles (`tern_proto::auth`), read
//! from files, and the check every call goes through. A planner whose API is open says so
//! explicitly ([`ApiAuth::Open`], `TERN_API__INSECURE=true`); there is no silent default.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};
use tern_proto::auth::Role;
use tern_proto::planner_server::Planner;
use tern_proto::{
    CancelPlanRequest, GateDecisionRequest, GetPlanRequest, ListPlansRequest, ListPlansResponse, PausePlanRequest,
    Plan, PlanUpdate, PreflightRequest, PreflightResponse, ResumePlanRequest, RetryVmRequest, SubmitPlanRequest,
    SubmitPlanResponse, WatchPlanRequest,
};
use tonic::{Request, Response, Status};

use crate::PlannerService;

/// Where the API's credentials come from (`TERN_API__*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// A file holding the reader role's token (`TERN_API__READER_TOKEN_FILE`).
    pub reader_token_file: Option<PathBuf>,
    /// A file holding the operator role's token (`TERN_API__OPERATOR_TOKEN_FILE`).
    pub operator_token_file: Option<PathBuf>,
    /// Serve the API to anyone who can reach it (`TERN_API__INSECURE=true`): the explicit
    /// opt-out, for a planner behind its own authenticating proxy.
    pub insecure: bool,
    /// The API's TLS certificate chain, PEM (`TERN_API__TLS_CERT_FILE`); with the key, the API
    /// speaks only TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM (`TERN_API__TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// mTLS (`TERN_API__CLIENT_CA_FILE`): callers must also present a client certificate signed
    /// by this CA (the bearer token still decides the role).
    pub client_ca_file: Option<PathBuf>,
}

impl ApiConfig {
    /// What is wrong with these settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_tls()?;
        match (&self.reader_token_file, &self.operator_token_file, self.insecure) {
            (Some(_), Some(_), false) | (None, None, true) => Ok(()),
            (_, _, true) => {
                Err("api: insecure=true serves the API open; it cannot be combined with token files".into())
            }
            _ => Err("api: the planner's API needs credentials: set TERN_API__READER_TOKEN_FILE and \
                      TERN_API__OPERATOR_TOKEN_FILE (`tern up` generates both), or TERN_API__INSECURE=true \
                      to serve it open"
                .into()),
        }
    }

    /// Whether the API speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// What is wrong with the TLS settings, if anything.
    fn validate_tls(&self) -> Result<(), String> {
        match (&self.tls_cert_file, &self.tls_key_file, &self.client_ca_file) {
            (Some(_), Some(_), _) | (None, None, None) => Ok(()),
            (None, None, Some(_)) => Err("api: client_ca_file (mTLS) needs tls_cert_file and tls_key_file".into()),
            _ => Err("api: set both tls_cert_file and tls_key_file (PEM), or neither".into()),
        }
    }

    /// The server's TLS settings, read from their files; `None` when the API is plaintext.
    pub fn tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        self.validate_tls()?;
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else { return Ok(None) };
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("api: cannot read {}: {e}", path.display()));
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }

    /// The check these settings ask for, with the tokens read from their files.
    pub fn load(&self) -> Result<ApiAuth, String> {
        self.validate()?;
        match (&self.reader_token_file, &self.operator_token_file) {
            (Some(reader), Some(operator)) => {
                Ok(ApiAuth::Tokens { reader: read_token(reader)?, operator: read_token(operator)? })
            }
            _ => Ok(ApiAuth::Open),
        }
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path).map_err(|e| format!("api: cannot read {}: {e}", path.display()))?;
    let token = token.trim().to_owned();
    if token.len() < 16 {
        return Err(format!("api: the token in {} is shorter than 16 characters", path.display()));
    }
    Ok(token)
}

/// Who may call the API.
#[derive(Clone)]
pub enum ApiAuth {
    /// Anyone who can reach it.
    Open,
    /// A caller with either token, in its role.
    Tokens {
        /// The reader role's token.
        reader: String,
        /// The operator role's token.
        operator: String,
    },
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiAuth::Open => "ApiAuth::Open",
            ApiAuth::Tokens { .. } => "ApiAuth::Tokens(..)",
        })
    }
}

/// Equal without telling, by its timing, how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiAuth {
    /// `Ok` when the call's token grants `need`: `Unauthenticated` without a valid token,
    /// `PermissionDenied` for a reader calling an operator's method.
    pub fn check<T>(&self, request: &Request<T>, call: &str, need: Role) -> Result<(), Status> {
        let ApiAuth::Tokens { reader, operator } = self else { return Ok(()) };
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(format!(
                "{call}: the planner's API needs a bearer token (the CLI reads it from the stack's endpoints.json)"
            )));
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let role = match token {
            Some(t) if same(t, operator) => Role::Operator,
            Some(t) if same(t, reader) => Role::Reader,
            _ => return Err(Status::unauthenticated(format!("{call}: the bearer token is not valid"))),
        };
        if role < need {
            return Err(Status::permission_denied(format!(
                "{call} needs the {} role; this token is a {}'s",
                need.name(),
                role.name()
            )));
        }
        Ok(())
    }
}

/// The planner's API behind [`ApiAuth`]: every call is checked, then handed to the service.
#[derive(Clone, Debug)]
pub struct Guarded {
    service: PlannerService,
    auth: ApiAuth,
}

impl Guarded {
    /// `service`, guarded by `auth`.
    pub fn new(service: PlannerService, auth: ApiAuth) -> Self {
        Self { service, auth }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<PlanUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Planner for Guarded {
    async fn submit_plan(&self, request: Request<SubmitPlanRequest>) -> Result<Response<SubmitPlanResponse>, Status> {
        self.auth.check(&request, "SubmitPlan", Role::Operator)?;
        self.service.submit_plan(request).await
    }

    async fn preflight(&self, request: Request<PreflightRequest>) -> Result<Response<PreflightResponse>, Status> {
        self.auth.check(&request, "Preflight", Role::Reader)?;
        self.service.preflight(request).await
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "GetPlan", Role::Reader)?;
        self.service.get_plan(request).await
    }

    async fn list_plans(&self, request: Request<ListPlansRequest>) -> Result<Response<ListPlansResponse>, Status> {
        self.auth.check(&request, "ListPlans", Role::Reader)?;
        self.service.list_plans(request).await
    }

    type WatchPlanStream = WatchStream;

    async fn watch_plan(&self, request: Request<WatchPlanRequest>) -> Result<Response<Self::WatchPlanStream>, Status> {
        self.auth.check(&request, "WatchPlan", Role::Reader)?;
        self.service.watch_plan(request).await
    }

    async fn pause_plan(&self, request: Request<PausePlanRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "PausePlan", Role::Operator)?;
        self.service.pause_plan(request).await
    }

    async fn resume_plan(&self, request: Request<ResumePlanRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "ResumePlan", Role::Operator)?;
        self.service.resume_plan(request).await
    }

    async fn cancel_plan(&self, request: Request<CancelPlanRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "CancelPlan", Role::Operator)?;
        self.service.cancel_plan(request).await
    }

    async fn retry_vm(&self, request: Request<RetryVmRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "RetryVm", Role::Operator)?;
        self.service.retry_vm(request).await
    }

    async fn approve_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "ApproveGate", Role::Operator)?;
        self.service.approve_gate(request).await
    }

    async fn reject_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "RejectGate", Role::Operator)?;
        self.service.reject_gate(request).await
    }

    async fn retry_gate(&self, request: Request<GateDecisionRequest>) -> Result<Response<Plan>, Status> {
        self.auth.check(&request, "RetryGate", Role::Operator)?;
        self.service.retry_gate(request).await
    }
}
