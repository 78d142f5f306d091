//! How a client proves who it is to the planner's API, and what each call needs: a bearer token
//! in the `authorization` metadata of every call, and two roles. A reader may get, list and
//! watch plans, run preflight and read reports; an operator may also submit, pause, resume,
//! cancel and retry.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::planner_client::PlannerClient;

/// What a caller of the planner's API may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read plans, watch them, run preflight.
    Reader,
    /// Everything a reader may, and change plans: submit, pause, resume, cancel, retry.
    Operator,
}

impl Role {
    /// The role's name in messages and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call; without a token it adds nothing (a
/// planner run with its API open).
#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// The interceptor for `token`; an error if it cannot be sent as a header.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Self(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| "the API token has characters a header cannot carry".to_owned()),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A planner client that sends its token with every call.
pub type Client = PlannerClient<InterceptedService<Channel, BearerToken>>;

/// A client of the planner over `channel`, sending `token` (if any) with every call.
pub fn client(channel: Channel, token: BearerToken) -> Client {
    PlannerClient::with_interceptor(channel, token)
}
