//! A service's HTTP endpoints: `/healthz`, `/readyz` where the service has a readiness to
//! report, and Prometheus `/metrics` (the process's registry, after reading its consumer's
//! backlog and the dead letters from JetStream, and whatever else the service reads at scrape).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tern_bus::Bus;
use tern_telemetry::metrics::{CONTENT_TYPE, registry};

use crate::metrics::refresh_bus_gauges;

/// How long a scrape waits for JetStream's consumer and stream info.
const SCRAPE_BUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a service takes work now: what `/readyz` answers. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Figures a service reads itself when `/metrics` is scraped (the planner's plan gauges).
#[async_trait::async_trait]
pub trait Scrape: Send + Sync + 'static {
    /// Brings the service's gauges up to date; called before every rendering.
    async fn refresh(&self);
}

/// What a service's endpoints report.
#[derive(Clone)]
pub struct Endpoints {
    bus: Bus,
    stream: &'static str,
    consumer: &'static str,
    readiness: Option<Readiness>,
    scrape: Option<Arc<dyn Scrape>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("readiness", &self.readiness)
            .field("scrape", &self.scrape.is_some())
            .finish()
    }
}

impl Endpoints {
    /// `/healthz` and `/metrics`, the latter with the backlog of the durable `consumer` of
    /// `stream` and the dead letters, read from `bus`.
    pub fn new(bus: Bus, stream: &'static str, consumer: &'static str) -> Self {
        Self { bus, stream, consumer, readiness: None, scrape: None }
    }

    /// Also `/readyz`: 200 while `readiness` is set, else 503.
    pub fn with_readiness(self, readiness: Readiness) -> Self {
        Self { readiness: Some(readiness), ..self }
    }

    /// Also `scrape`'s figures, refreshed at every scrape.
    pub fn with_scrape(self, scrape: Arc<dyn Scrape>) -> Self {
        Self { scrape: Some(scrape), ..self }
    }
}

/// Serves `endpoints` on `listen`; returns the bound address.
pub async fn serve(listen: SocketAddr, endpoints: Endpoints) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut app = Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics_text));
    if endpoints.readiness.is_some() {
        app = app.route("/readyz", get(readyz));
    }
    let app = app.with_state(endpoints);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    if e.readiness.as_ref().is_some_and(Readiness::is_ready) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(e): State<Endpoints>) -> impl IntoResponse {
    refresh_bus_gauges(&e.bus, e.stream, e.consumer, SCRAPE_BUS_TIMEOUT).await;
    if let Some(scrape) = &e.scrape {
        scrape.refresh().await;
    }
    ([("content-type", CONTENT_TYPE)], registry().render())
}
