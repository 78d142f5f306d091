//! The one place that sends HTTP to Azure: bearer token, ARM budget, `Retry-After`, retries.
//!
//! Reads are retried on 429, 5xx and transport errors (honouring `Retry-After`, else jittered
//! exponential backoff). Mutations are sent once: only a 429 — ARM's promise that nothing was
//! applied — is answered by waiting and sending again. Any other doubt (timeout, reset, 5xx) is
//! returned to the caller as an ambiguous error, to be settled by reading Azure's state.
//!
//! Every attempt is an `asr.request` span under the caller's span, and is counted in the
//! `tern_asr_*` metrics (see [`crate::observe`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{Instrument, Span, debug, warn};

use crate::auth::TokenProvider;
use crate::budget::{Budget, RequestClass};
use crate::config::AsrConfig;
use crate::error::AsrError;
use crate::observe::{self, Op};

/// Consecutive 429s a request waits out before the error is returned.
const MAX_THROTTLED: u32 = 50;

/// What came back.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body parsed as JSON (`Null` when empty).
    pub body: Value,
}

impl RawResponse {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After` (seconds, or an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

/// Request counters, by class.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// GETs sent.
    pub reads: AtomicU64,
    /// POST/PUT/PATCH sent.
    pub writes: AtomicU64,
    /// DELETEs sent.
    pub deletes: AtomicU64,
    /// 429s received.
    pub throttled: AtomicU64,
}

impl HttpStats {
    fn count(&self, class: RequestClass) {
        match class {
            RequestClass::Read => &self.reads,
            RequestClass::Write => &self.writes,
            RequestClass::Delete => &self.deletes,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// The HTTP executor shared by every operation of a client.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    tokens: Arc<TokenProvider>,
    budget: Arc<dyn Budget>,
    pub(crate) config: Arc<AsrConfig>,
    pub(crate) stats: Arc<HttpStats>,
    /// The configured endpoint's scheme, host and port: the only place the token goes.
    endpoint: Option<Origin>,
}

/// A URL's scheme, lower-case host and port.
type Origin = (String, String, Option<u16>);

fn origin(url: &str) -> Option<Origin> {
    let u = reqwest::Url::parse(url).ok()?;
    Some((u.scheme().to_owned(), u.host_str()?.to_ascii_lowercase(), u.port_or_known_default()))
}

impl Http {
    pub(crate) fn new(
        config: Arc<AsrConfig>,
        tokens: Arc<TokenProvider>,
        budget: Arc<dyn Budget>,
    ) -> Result<Self, AsrError> {
        crate::install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(64)
            .user_agent(match &config.user_agent {
                Some(product) => format!("{product} tern-asr/{}", env!("CARGO_PKG_VERSION")),
                None => concat!("tern-asr/", env!("CARGO_PKG_VERSION")).to_owned(),
            });
        if let Some(path) = &config.ca_certificate {
            let pem = std::fs::read(path)
                .map_err(|e| AsrError::InvalidInput(format!("ca_certificate {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| AsrError::InvalidInput(format!("ca_certificate {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| AsrError::InvalidInput(format!("HTTP client: {e}")))?;
        let endpoint = origin(config.base());
        Ok(Self { client, tokens, budget, config, stats: Arc::new(HttpStats::default()), endpoint })
    }

    /// An absolute URL for `path` (already absolute URLs — nextLink, Location — are kept),
    /// with `api-version` added when missing.
    pub fn url(&self, path: &str, api_version: &str) -> String {
        let mut url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.config.base())
        };
        if !url.contains("api-version=") {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("api-version=");
            url.push_str(api_version);
        }
        url
    }

    /// One attempt, in its own `asr.request` span (a child of the caller's current span).
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        op: Op<'_>,
        attempt: u32,
    ) -> Result<RawResponse, AsrError> {
        let span = observe::request_span(method, url, op, attempt);
        self.attempt(method, url, body, op, &span).instrument(span.clone()).await
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        op: Op<'_>,
        span: &Span,
    ) -> Result<RawResponse, AsrError> {
        let operation = op.detail;
        // The bearer token goes to the configured ARM endpoint and nowhere else, whatever a
        // response (a `nextLink`, a `Location`) or a command points at.
        if let Err(e) = self.on_endpoint(url, operation) {
            observe::not_sent(span, "foreign host");
            return Err(e);
        }
        let class = RequestClass::of(method);
        let subscription = self.subscription_of(url);
        let waiting = Instant::now();
        if let Err(e) = self.budget.acquire(&subscription, class).await {
            observe::not_sent(span, "budget");
            return Err(e);
        }
        observe::budget_waited(span, class, waiting.elapsed());
        let token = match self.tokens.bearer().await {
            Ok(t) => t,
            Err(e) => {
                observe::not_sent(span, "token");
                return Err(e);
            }
        };
        // Last, after every wait: the sender may have lost the right to send meanwhile.
        if let Some(guard) = op.guard
            && let Err(reason) = guard.may_send().await
        {
            observe::not_sent(span, "guard");
            return Err(AsrError::NotSent { operation: operation.to_owned(), reason });
        }
        // Every request names itself, as Azure's SDKs do; a side effect with the caller's
        // deterministic id (see `Op::request_id`).
        let request_id = match op.request_id {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut req =
            self.client.request(method.clone(), url).bearer_auth(token).header("x-ms-client-request-id", request_id);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.stats.count(class);
        let sent = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                observe::transport_failed(span, method, op, None, e.is_timeout(), sent.elapsed());
                return Err(AsrError::Transport {
                    operation: operation.to_owned(),
                    message: e.to_string(),
                    timed_out: e.is_timeout(),
                });
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                observe::transport_failed(span, method, op, Some(status), e.is_timeout(), sent.elapsed());
                return Err(AsrError::Transport {
                    operation: operation.to_owned(),
                    message: format!("reading the body: {e}"),
                    timed_out: e.is_timeout(),
                });
            }
        };
        let took = sent.elapsed();
        if let Some(remaining) =
            headers.get(class.remaining_header()).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
        {
            self.budget.observe_remaining(&subscription, class, remaining).await;
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let raw = RawResponse { status, headers, body };
        observe::responded(span, method, url, op, &raw, took);
        if status == 429 {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if status == 401 {
            // ARM no longer takes the token (expired early, revoked, or this host's clock is
            // off): the next request asks the credential for a new one instead of the cache.
            self.tokens.invalidate().await;
        }
        if status >= 400 {
            let e = api_error(operation, &raw);
            observe::refused(span, &e);
            return Err(e);
        }
        Ok(raw)
    }

    /// Whether `url` is on the configured endpoint: same scheme, host and port.
    /// The same executor with other settings (another vault).
    pub(crate) fn with_config(&self, config: AsrConfig) -> Self {
        Self { config: Arc::new(config), ..self.clone() }
    }

    /// The subscription whose ARM budget a request to `url` draws on: the one it names, else
    /// (a URL naming none, such as a tenant-level list) the configured one.
    fn subscription_of(&self, url: &str) -> String {
        crate::budget::subscription_of(url).unwrap_or_else(|| self.config.subscription_id.to_ascii_lowercase())
    }

    fn on_endpoint(&self, url: &str, operation: &str) -> Result<(), AsrError> {
        match (origin(url), &self.endpoint) {
            (Some(a), Some(b)) if a == *b => Ok(()),
            _ => Err(AsrError::InvalidInput(format!(
                "{operation}: {} is not on the configured ARM endpoint {}; Azure's token is sent nowhere else",
                observe::url_origin(url),
                self.config.base()
            ))),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff_base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
        let capped = base.min(self.config.backoff_max.as_secs_f64());
        // Full jitter in [capped/2, capped].
        Duration::from_secs_f64(capped * (0.5 + rand::random::<f64>() * 0.5))
    }

    /// GET with retries on 429, 5xx and transport errors.
    pub async fn get_raw(&self, url: &str, op: Op<'_>) -> Result<RawResponse, AsrError> {
        let operation = op.detail;
        let mut attempt = 0;
        let mut throttled = 0u32;
        loop {
            match self.send_once(&Method::GET, url, None, op, attempt + throttled + 1).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let wait = match &e {
                        // Throttling is a "wait", not a failure: it does not use up attempts.
                        AsrError::Api { status: 429, retry_after, .. } if throttled < MAX_THROTTLED => {
                            throttled += 1;
                            let wait = retry_after.unwrap_or(self.config.backoff_base);
                            self.budget.throttled(&self.subscription_of(url), RequestClass::Read, wait).await;
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        e if e.is_ambiguous() && !matches!(e, AsrError::Api { status: 429, .. }) => Some(match &e {
                            AsrError::Api { retry_after: Some(d), .. } => *d,
                            _ => self.backoff(attempt),
                        }),
                        _ => None,
                    };
                    attempt += 1;
                    match wait {
                        Some(d) if attempt < self.config.read_attempts => {
                            debug!(%operation, attempt, ?d, error = %e, "read failed; retrying");
                            tokio::time::sleep(d).await;
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// GET and decode.
    pub async fn get<T: DeserializeOwned>(&self, url: &str, op: Op<'_>) -> Result<T, AsrError> {
        let raw = self.get_raw(url, op).await?;
        decode(op.detail, raw.body)
    }

    /// Sends a mutation once. A 429 (nothing applied) waits for `Retry-After` and sends again;
    /// everything else comes back as it is — ambiguous outcomes included.
    pub async fn mutate(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<RawResponse, AsrError> {
        let operation = op.detail;
        let class = RequestClass::of(&method);
        let mut throttled = 0u32;
        loop {
            let answer = self.send_once(&method, url, body, op, throttled + 1).await;
            if let (Err(AsrError::Api { status: 429, .. }), Some(guard)) = (&answer, op.guard) {
                guard.unapplied().await;
            }
            match answer {
                Err(AsrError::Api { status: 429, retry_after, .. }) if throttled < MAX_THROTTLED => {
                    throttled += 1;
                    let wait = retry_after.unwrap_or(self.config.backoff_base);
                    warn!(%operation, ?wait, "throttled by ARM; waiting for Retry-After");
                    self.budget.throttled(&self.subscription_of(url), class, wait).await;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Asked immediately before a side effect leaves, after every wait for ARM's budget, a token
/// or a `Retry-After`: a worker whose claim on its command was taken over while it waited (or
/// while it was frozen) must not send what it was about to send.
#[async_trait::async_trait]
pub trait SendGuard: Send + Sync + std::fmt::Debug {
    /// `Ok` lets the request go now; `Err` says why it must not go.
    async fn may_send(&self) -> Result<(), String>;

    /// The request [`Self::may_send`] let go was answered with nothing applied (a 429): it will
    /// be asked again before the next attempt.
    async fn unapplied(&self) {}
}

/// Decodes a JSON body into `T`, naming the operation on failure.
pub fn decode<T: DeserializeOwned>(operation: &str, body: Value) -> Result<T, AsrError> {
    serde_json::from_value(body)
        .map_err(|e| AsrError::Decode { operation: operation.to_owned(), message: e.to_string() })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs.max(0.0)).ok();
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let d = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from_secs_f64(d.as_seconds_f64().max(0.0)).unwrap_or_default())
}

/// Builds the typed error of an error response, digging ASR's details out of the body.
fn api_error(operation: &str, raw: &RawResponse) -> AsrError {
    let e = &raw.body["error"];
    let detail = e["details"].as_array().and_then(|d| d.first());
    let pick = |key: &str| detail.and_then(|d| d[key].as_str()).or_else(|| e[key].as_str()).map(str::to_owned);
    let code = pick("code").unwrap_or_else(|| format!("HTTP{}", raw.status));
    let message =
        e["message"].as_str().map(str::to_owned).or_else(|| pick("message")).unwrap_or_else(|| match &raw.body {
            Value::String(s) => s.clone(),
            _ => "no error message".into(),
        });
    AsrError::Api {
        operation: operation.to_owned(),
        status: raw.status,
        code,
        message,
        possible_causes: pick("possibleCauses"),
        recommended_action: pick("recommendedAction"),
        retry_after: raw.retry_after(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn asr_error_details_are_dug_out() {
        let raw = RawResponse {
            status: 400,
            headers: HeaderMap::new(),
            body: json!({"error": {"code": "BadRequest", "message": "The operation failed.", "details": [
                {"code": "28031", "message": "m", "possibleCauses": "quota", "recommendedAction": "increase quota"}]}}),
        };
        match api_error("op", &raw) {
            AsrError::Api { code, message, possible_causes, recommended_action, .. } => {
                assert_eq!(code, "28031");
                assert_eq!(message, "The operation failed.");
                assert_eq!(possible_causes.as_deref(), Some("quota"));
                assert_eq!(recommended_action.as_deref(), Some("increase quota"));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past means now");
    }
}
