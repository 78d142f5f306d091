//! `tern-asr`: the only crate that speaks HTTP to Azure.
//!
//! Azure Site Recovery plus the few Compute/Network calls cleanup needs, at a configurable
//! endpoint (Azure or `tern-asr-sim`): authentication, typed operations, long-running
//! operations, safe retries, reconciliation after ambiguous outcomes, fleet job polling and the
//! ARM request budget it draws on (its fleet-wide store, NATS KV, is `tern-service`'s: this crate
//! knows no bus).

// `AsrError` carries ASR's whole error report (code, message, possible causes, recommended
// action) so callers can surface it; errors are the rare path and never stored in bulk.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod budget;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod model;
pub mod observe;
pub mod point;
pub mod watcher;

pub use auth::{CredentialKind, TokenProvider};
pub use budget::{BucketState, Budget, BudgetConfig, LocalBudget, Rate, RequestClass, Unlimited};
pub use client::{AsrClient, FailoverDirection, JobQuery, ReprotectSettings, Sending, Submission, SubmitOutcome};
pub use config::AsrConfig;
pub use error::{AsrError, ErrorClass};
pub use http::SendGuard;
pub use observe::Op;

/// Installs ring as the process's TLS provider (idempotent). Every HTTP client Tern or
/// `azure_identity` builds needs one, and ring is the one Tern compiles in.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
