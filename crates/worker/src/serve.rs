//! `/healthz`, `/readyz` and Prometheus `/metrics` of a worker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tern_asr::AsrClient;

/// What a worker counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Commands finished, by outcome.
    pub commands: Mutex<BTreeMap<&'static str, u64>>,
    /// Commands being handled now.
    pub in_flight: AtomicI64,
    /// ASR side effects submitted (POSTs that reached Azure or were attached to).
    pub submissions: AtomicU64,
    /// Ready to take commands (bus connected, consumer bound).
    pub ready: AtomicBool,
}

impl Metrics {
    /// Counts a finished command.
    pub fn finished(&self, outcome: &'static str) {
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()).entry(outcome).or_default() += 1;
    }
}

#[derive(Clone)]
struct AppState {
    service: &'static str,
    metrics: Arc<Metrics>,
    asr: AsrClient,
}

/// Serves the endpoints on `listen`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    service: &'static str,
    metrics: Arc<Metrics>,
    asr: AsrClient,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { service, metrics, asr });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    let svc = s.service;
    let mut out = String::new();
    out.push_str(
        "# HELP tern_worker_commands_total Commands finished, by outcome.\n# TYPE tern_worker_commands_total counter\n",
    );
    for (outcome, n) in s.metrics.commands.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out.push_str(&format!("tern_worker_commands_total{{service=\"{svc}\",outcome=\"{outcome}\"}} {n}\n"));
    }
    out.push_str(&format!(
        "# HELP tern_worker_commands_in_flight Commands being handled.\n# TYPE tern_worker_commands_in_flight gauge\ntern_worker_commands_in_flight{{service=\"{svc}\"}} {}\n",
        s.metrics.in_flight.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP tern_worker_asr_submissions_total ASR side effects submitted or attached to.\n# TYPE tern_worker_asr_submissions_total counter\ntern_worker_asr_submissions_total{{service=\"{svc}\"}} {}\n",
        s.metrics.submissions.load(Ordering::Relaxed)
    ));
    let stats = s.asr.stats();
    out.push_str("# HELP tern_asr_requests_total HTTP requests sent to Azure, by class.\n# TYPE tern_asr_requests_total counter\n");
    for (class, n) in [("read", &stats.reads), ("write", &stats.writes), ("delete", &stats.deletes)] {
        out.push_str(&format!(
            "tern_asr_requests_total{{service=\"{svc}\",class=\"{class}\"}} {}\n",
            n.load(Ordering::Relaxed)
        ));
    }
    out.push_str(&format!(
        "# HELP tern_asr_throttled_total 429 answers from Azure.\n# TYPE tern_asr_throttled_total counter\ntern_asr_throttled_total{{service=\"{svc}\"}} {}\n",
        stats.throttled.load(Ordering::Relaxed)
    ));
    ([("content-type", "text/plain; version=0.0.4")], out)
}
