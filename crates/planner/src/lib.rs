//! `tern-planner`: turns "bring these VMs home" into commands, follows the events and keeps
//! each plan's state.
//!
//! This crate holds, so far, plan spec validation ([`spec`]) and per-VM preflight
//! ([`preflight`]); the gRPC service and plan progression build on them.

pub mod auth;
pub mod config;
pub mod gates;
pub mod metrics;
pub mod preflight;
pub mod progress;
pub mod service;
pub mod spec;
pub mod store;

pub use auth::{ApiAuth, ApiConfig};
pub use config::PlannerConfig;
pub use service::{PlannerService, serve_grpc, serve_grpc_tls};
pub use spec::{Selected, SpecError, ValidSpec, validate};
