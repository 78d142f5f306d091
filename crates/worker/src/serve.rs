//! `/healthz`, `/readyz` and Prometheus `/metrics` of a worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tern_bus::Bus;
use tern_bus::topology::COMMANDS_STREAM;
use tern_telemetry::metrics::{CONTENT_TYPE, registry};

use crate::metrics::{Metrics, refresh_bus_gauges};

/// How long a scrape waits for JetStream's consumer and stream info.
const SCRAPE_BUS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    bus: Bus,
    consumer: &'static str,
}

/// Serves the endpoints on `listen`; returns the bound address. `/metrics` renders the
/// process's registry after reading the backlog of `consumer` (on the commands stream) and of
/// the DLQ from `bus`.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    bus: Bus,
    consumer: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, bus, consumer });
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
    refresh_bus_gauges(&s.bus, COMMANDS_STREAM, s.consumer, SCRAPE_BUS_TIMEOUT).await;
    ([("content-type", CONTENT_TYPE)], registry().render())
}
