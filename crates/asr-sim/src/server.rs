//! The HTTP front: authentication, per-subscription throttling, fault dice, routing to the
//! estate of the vault a path addresses, ARM response conventions (LRO headers, paging, errors)
//! and `/_sim/`; it feeds `observe` what the operation log, the request log, the counters and
//! `/_sim/jobs` report.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{self, SimClock, SimTime};
use crate::config::{SeedSpec, SimConfig};
use crate::directory::{Directory, Miss};
use crate::estate::{Accepted, Estate, ItemFilter, JobFilter, OperationResult, PlanOp, Refusal, ResourceKind};
use crate::faults::{FaultDice, FaultSpec, Operation};
use crate::observe::{self, Observations, RequestEntry};
use crate::routes::{self, AddressError, Addressed, Route};
use crate::throttle::{Admission, RequestClass, Throttle};
use crate::wire::{self, Input, Page};

/// Mutable simulator state, behind one lock.
#[derive(Debug)]
pub struct Shared {
    /// Settings; `faults` is the fault spec in force (its countdowns count down here).
    pub config: SimConfig,
    /// One estate per vault, subscription by subscription, in the order of
    /// [`SimConfig::vault_layouts`]; they share one simulated clock.
    pub estates: Vec<Estate>,
    /// Which estate serves a path.
    directory: Directory,
    /// ARM's buckets of each subscription, by position.
    throttles: Vec<Throttle>,
    dice: FaultDice,
    /// What `/_sim/` reports about the requests served (the estate knows nothing of it).
    pub observed: Observations,
}

impl Shared {
    /// Fresh estates, buckets, dice and observations from `config`.
    fn new(config: SimConfig) -> Self {
        let layouts = config.vault_layouts();
        let directory = Directory::new(&layouts);
        let clock = SimClock::new(config.time_compression);
        let estates: Vec<Estate> =
            layouts.into_iter().map(|layout| Estate::for_vault(config.clone(), layout, clock.clone())).collect();
        let mut shared = Self {
            throttles: vec![Throttle::new(config.throttle); directory.subscription_count()],
            dice: FaultDice::new(&config.faults),
            observed: Observations::new(directory.subscription_count()),
            directory,
            estates,
            config,
        };
        shared.share_storage();
        shared
    }

    /// Tells each vault the storage accounts of the other vaults of its subscription (seeding
    /// makes them): in Azure a storage account belongs to the subscription.
    fn share_storage(&mut self) {
        let owned: Vec<(String, Vec<(String, String)>)> =
            self.estates.iter().map(|e| (e.layout.subscription_id.to_ascii_lowercase(), e.own_storage())).collect();
        for (i, estate) in self.estates.iter_mut().enumerate() {
            let sub = estate.layout.subscription_id.to_ascii_lowercase();
            estate.sibling_storage = owned
                .iter()
                .enumerate()
                .filter(|(j, (s, _))| *j != i && *s == sub)
                .flat_map(|(_, (_, accounts))| accounts.iter().cloned())
                .collect();
        }
    }

    /// Subscription `sub`'s buckets (the first's if a reset took `sub` away meanwhile).
    fn throttle(&mut self, sub: usize) -> &mut Throttle {
        let sub = if sub < self.throttles.len() { sub } else { 0 };
        &mut self.throttles[sub]
    }

    /// Simulated now (every estate's clock says the same).
    pub fn now(&self) -> SimTime {
        self.estates[0].now()
    }

    /// Applies every effect the clock has passed, in every vault.
    pub fn advance_all(&mut self) {
        for estate in &mut self.estates {
            estate.advance();
        }
    }

    /// Items in every vault.
    pub fn item_count(&self) -> usize {
        self.estates.iter().map(Estate::item_count).sum()
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// `http(s)://127.0.0.1:PORT`.
    pub base_url: String,
    started: Instant,
    shared: Mutex<Shared>,
}

impl App {
    /// Fresh estates from `config`.
    pub fn new(config: SimConfig, base_url: String) -> Self {
        Self { base_url, started: Instant::now(), shared: Mutex::new(Shared::new(config)) }
    }

    /// The locked state (a panic elsewhere never wedges the simulator).
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/oplog", get(admin_oplog).delete(admin_clear_oplog))
        .route("/_sim/requests", get(admin_requests))
        .route("/_sim/info", get(admin_info))
        .route("/_sim/counters", get(admin_counters))
        .route("/_sim/jobs", get(admin_jobs))
        .route("/_sim/deletes", get(admin_deletes))
        .route("/_sim/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/_sim/capacity", get(admin_get_capacity).put(admin_put_capacity))
        .route("/_sim/seed", post(admin_seed))
        .route("/_sim/reset", post(admin_reset))
        .route("/_sim/clock/advance", post(admin_advance))
        .fallback(arm_logged)
        .with_state(app)
}

// ---------------------------------------------------------------------------------------------
// ARM

struct Request {
    method: Method,
    path: String,
    api_version: String,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl Request {
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What handling produced, before ARM headers are added.
enum Outcome {
    Json(StatusCode, Value),
    Accepted(Accepted),
    NoContent,
    Refused(Refusal),
}

/// Records every ARM request (arrival time, status) around [`arm`].
async fn arm_logged(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t_ms = app.started.elapsed().as_millis() as u64;
    let path = uri.path().to_owned();
    let response = arm(State(app.clone()), method.clone(), uri, headers, body).await;
    let entry = RequestEntry { t_ms, method: method.to_string(), path, status: response.status().as_u16() };
    app.lock().observed.log_request(entry);
    response
}

/// The ids of one ARM request and its response.
struct RequestIds {
    /// The request's `x-ms-client-request-id`, echoed when it had one (every recorded response
    /// echoes it, e.g. A2AFailoverCommit-excerpt 146/147; reprotect INDEX checks).
    client: Option<String>,
    /// `x-ms-correlation-request-id`: a GUID (excerpt 146: `9224a5ba-3f59-416f-b3c9-018c05d217a9`).
    correlation: String,
    /// `x-ms-request-id` when no job id takes its place.
    request: String,
}

fn guid() -> String {
    crate::ids::format_guid(rand::random::<u128>())
}

async fn arm(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let class = RequestClass::of(method.as_str());
    let mutating = class != RequestClass::Read;
    let ids = RequestIds {
        client: headers
            .get("x-ms-client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        correlation: guid(),
        request: guid(),
    };
    let request_id = &ids;
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                urlencoding::decode(&s.replace('+', " ")).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_owned())
            };
            (dec(k), dec(v))
        })
        .collect();
    let path = uri.path().to_owned();
    let addressed = routes::address(&path);

    // Authentication comes first, as in ARM: no token, no budget spent.
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // What a refused request would have acted on, so the operation log can tell which side
    // effect was sent even when nothing was applied.
    let sent_item = if mutating { item_in_body(&path, &body) } else { None };
    let (sub, authorized, dice, next, outage, expired) = {
        let mut s = app.lock();
        // The subscription whose budget the request draws on, and under which it is counted.
        let named = match &addressed {
            Ok(a) => Some(a.subscription.as_str()),
            Err(e) => e.subscription(),
        };
        let sub = s.directory.budget_of(named);
        s.observed.count(class, sub);
        let authorized = match (&token, &s.config.token) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(t), Some(e)) => t == e,
        };
        let spec = s.config.faults.clone();
        let dice = s.dice.roll(&spec, mutating);
        let (outage, expired) = (spec.outage, spec.expired_token && token.is_some());
        // A countdown fault is spent only on a request it answers.
        let faults = &mut s.config.faults;
        let next = if !mutating || !authorized || outage || expired {
            None
        } else if faults.throttle_next_writes > 0 {
            faults.throttle_next_writes -= 1;
            Some(NextWrite::Throttled)
        } else if faults.fail_next_writes > 0 {
            faults.fail_next_writes -= 1;
            Some(NextWrite::Failed)
        } else {
            None
        };
        (sub, authorized, dice, next, outage, expired)
    };
    if expired {
        // ARM's gateway answers an expired token before anything else (X-Ms-Failure-Cause:
        // gateway), with the token's expiry and the current time in .NET's general format.
        app.lock().observed.bump(sub, |c| c.expired_token += 1);
        if mutating {
            log_op(&app, &method, &path, sent_item.as_deref(), 401);
        }
        let now = time::OffsetDateTime::now_utc();
        let message = format!(
            "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
            dotnet_time(now - time::Duration::minutes(5)),
            dotnet_time(now)
        );
        let body = json!({"error": {"code": "ExpiredAuthenticationToken", "message": message}});
        return finish(
            StatusCode::UNAUTHORIZED,
            body.to_string(),
            request_id,
            vec![
                (
                    "www-authenticate",
                    "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\", error_description=\"The access token has expired.\"".into(),
                ),
                ("x-ms-failure-cause", "gateway".into()),
            ],
        );
    }
    if !authorized {
        app.lock().observed.bump(sub, |c| c.unauthorized += 1);
        let body = json!({"error": {"code": if token.is_none() { "AuthenticationFailed" } else { "InvalidAuthenticationToken" },
            "message": if token.is_none() { "Authentication failed. The 'Authorization' header is missing." } else { "The access token is invalid." }}});
        return finish(
            StatusCode::UNAUTHORIZED,
            body.to_string(),
            request_id,
            vec![(
                "www-authenticate",
                "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\"".into(),
            )],
        );
    }

    if outage {
        // A regional outage: ARM's front door answers, the resource provider does not. No
        // `Retry-After`: an outage does not say when it ends.
        app.lock().observed.bump(sub, |c| c.outage_503 += 1);
        if mutating {
            log_op(&app, &method, &path, sent_item.as_deref(), 503);
        }
        let body = json!({"error": {"code": "ServiceUnavailable",
            "message": "The service is currently unavailable. Please try again later."}});
        return finish(StatusCode::SERVICE_UNAVAILABLE, body.to_string(), request_id, vec![]);
    }
    if dice.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(dice.delay_ms)).await;
    }
    if next == Some(NextWrite::Throttled) {
        let retry_after = app.lock().config.faults.throttle_storm_retry_after_secs.max(1);
        app.lock().observed.bump(sub, |c| c.next_writes_throttled += 1);
        return throttled(&app, &method, &path, sent_item.as_deref(), class, sub, retry_after, request_id);
    }
    if next == Some(NextWrite::Failed) {
        // Spent on this request, so it answers it: no storm or bucket may take its place.
        app.lock().observed.bump(sub, |c| {
            c.transient_5xx += 1;
            c.next_writes_failed += 1;
        });
        log_op(&app, &method, &path, sent_item.as_deref(), 503);
        return finish(StatusCode::SERVICE_UNAVAILABLE, transient_body("ServiceUnavailable"), request_id, vec![]);
    }
    if let Some(retry_after) = dice.storm_retry_after {
        app.lock().observed.bump(sub, |c| c.storm_throttled += 1);
        return throttled(&app, &method, &path, sent_item.as_deref(), class, sub, retry_after, request_id);
    }
    // Bind the admission first: a guard in the match scrutinee would live through the arms.
    let admission = app.lock().throttle(sub).admit(class, Instant::now());
    let remaining = match admission {
        Admission::Admitted { remaining } => remaining,
        Admission::Throttled { retry_after_secs } => {
            app.lock().observed.bump(sub, |c| c.throttled += 1);
            return throttled(&app, &method, &path, sent_item.as_deref(), class, sub, retry_after_secs, request_id);
        }
    };
    let limit_header = (class.header(), remaining.to_string());
    if dice.transient_5xx {
        // Answered before the request reaches the estate: nothing is applied, as when ARM's
        // front door cannot reach the resource provider. The code names the status, as ARM's do.
        app.lock().observed.bump(sub, |c| c.transient_5xx += 1);
        let (status, code) = if mutating {
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
        };
        if mutating {
            log_op(&app, &method, &path, sent_item.as_deref(), status.as_u16());
        }
        return finish(status, transient_body(code), request_id, vec![limit_header]);
    }

    let Some(api_version) = query.iter().find(|(k, _)| k.eq_ignore_ascii_case("api-version")).map(|(_, v)| v.clone())
    else {
        let body = json!({"error": {"code": "MissingApiVersionParameter", "message": "The api-version query parameter (?api-version=) is required for all requests."}});
        return finish(StatusCode::BAD_REQUEST, body.to_string(), request_id, vec![limit_header]);
    };
    let req = Request { method: method.clone(), path: path.clone(), api_version, query, body };

    let user_agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (Handled { outcome, item, .. }, lro) = {
        let mut guard = app.lock();
        let s = &mut *guard;
        let listed = if req.method == Method::GET {
            discovery(s, &req.path).or_else(|| compute_capacity(s, &req))
        } else {
            None
        };
        if let Some(outcome) = listed {
            (Handled { outcome, item: None, ended_jobs: vec![] }, None)
        } else {
            match served_by(&s.directory, addressed, &req.path) {
                Err(refusal) => (Handled { outcome: Outcome::Refused(refusal), item: None, ended_jobs: vec![] }, None),
                Ok((e, route)) => {
                    // Only the vault asked is brought up to date: vaults share nothing but the clock.
                    // Counting the subscription's vCPUs scans its VMs: done only when a quota
                    // is set (the default limits are out of any fleet's reach).
                    if s.config.capacity.constrained()
                        && matches!(&route, Route::ItemAction(_, _, _, a) if a.eq_ignore_ascii_case("unplannedFailover"))
                    {
                        let in_use = subscription_in_use(s, e);
                        s.estates[e].subscription_in_use = in_use;
                    }
                    let estate = &mut s.estates[e];
                    estate.advance();
                    estate.begin_request(ids.client.as_deref(), &ids.correlation);
                    let handled = handle(&app, estate, &req, route);
                    estate.end_request();
                    for job in &handled.ended_jobs {
                        s.observed.saw_ended(e, job, &user_agent);
                    }
                    let mut lro = None;
                    if let Outcome::Accepted(a) = &handled.outcome {
                        if is_provider_operation(&a.location_base) {
                            s.directory.note_provider_job(s.estates[e].layout.subscription, &a.job, e);
                        }
                        lro = Some(lro_headers(&app.base_url, &s.estates[e], a, &req.api_version));
                    }
                    (handled, lro)
                }
            }
        }
    };

    let (status, body, mut extra_headers): (StatusCode, String, Vec<(&'static str, String)>) = match outcome {
        Outcome::Json(status, v) => (status, v.to_string(), vec![]),
        Outcome::NoContent => (StatusCode::NO_CONTENT, String::new(), vec![]),
        Outcome::Refused(r) => (
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            serde_json::to_string(&r.body).unwrap_or_default(),
            vec![],
        ),
        Outcome::Accepted(_) => (StatusCode::ACCEPTED, String::new(), lro.unwrap_or_default()),
    };
    extra_headers.push(limit_header);
    if mutating {
        log_op(&app, &method, &path, item.as_deref().or(sent_item.as_deref()), status.as_u16());
    }
    let droppable = mutating && status.is_success() && {
        let mut s = app.lock();
        let faults = &mut s.config.faults;
        if !faults.drops_response_of(request_operation(&method, &path)) {
            false
        } else if dice.drop_response {
            true
        } else if faults.drop_next_writes > 0 {
            faults.drop_next_writes -= 1;
            s.observed.bump(sub, |c| c.next_writes_dropped += 1);
            true
        } else {
            false
        }
    };
    if droppable {
        // The operation is applied; the client never hears back and times out.
        let hang = app.lock().config.faults.drop_response_hang_secs.max(1);
        app.lock().observed.bump(sub, |c| c.dropped_responses += 1);
        tokio::time::sleep(Duration::from_secs(hang)).await;
    }
    finish(status, body, request_id, extra_headers)
}

/// The ASR operation a mutating request starts (for `FaultSpec::drop_response_operations`).
fn request_operation(method: &Method, path: &str) -> Option<Operation> {
    let lower = path.trim_end_matches('/').to_ascii_lowercase();
    if *method == Method::DELETE {
        return Some(if lower.contains("/replicationprotecteditems/") { Operation::Purge } else { Operation::Delete });
    }
    Some(match lower.rsplit('/').next().unwrap_or("") {
        "unplannedfailover" => Operation::Failover,
        "failovercommit" => Operation::Commit,
        "switchprotection" | "reprotect" => Operation::Reprotect,
        "testfailover" => Operation::TestFailover,
        "testfailovercleanup" => Operation::TestFailoverCleanup,
        "applyrecoverypoint" => Operation::ApplyRecoveryPoint,
        "failovercancel" => Operation::CancelFailover,
        "repairreplication" => Operation::Repair,
        "remove" => Operation::DisableProtection,
        _ => return None,
    })
}

/// The body of a transient 5xx, its code naming the status as ARM's do.
fn transient_body(code: &str) -> String {
    json!({"error": {"code": code, "message": "The server encountered a transient error. Try again later."}})
        .to_string()
}

/// A countdown fault (`throttle_next_writes`, `fail_next_writes`) that answers this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextWrite {
    Throttled,
    Failed,
}

/// The protected item a mutating request names in its body (switchProtection is posted to the
/// container), for logging a request that was refused before the estate read it.
fn item_in_body(path: &str, body: &[u8]) -> Option<String> {
    if !path.trim_end_matches('/').to_ascii_lowercase().ends_with("/switchprotection") {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    v["properties"]["replicationProtectedItemName"].as_str().map(str::to_owned)
}

/// A UTC time as ARM's gateway writes it in `ExpiredAuthenticationToken`: .NET's general format,
/// `3/19/2023 8:55:46 AM`.
fn dotnet_time(t: time::OffsetDateTime) -> String {
    let (hour, meridiem) = match t.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!("{}/{}/{} {}:{:02}:{:02} {meridiem}", u8::from(t.month()), t.day(), t.year(), hour, t.minute(), t.second())
}

#[allow(clippy::too_many_arguments)]
fn throttled(
    app: &App,
    method: &Method,
    path: &str,
    item: Option<&str>,
    class: RequestClass,
    sub: usize,
    retry_after: u64,
    request_id: &RequestIds,
) -> Response {
    let kind = match class {
        RequestClass::Read => "read",
        RequestClass::Write => "write",
        RequestClass::Delete => "delete",
    };
    let sub = app.lock().directory.subscription_id(sub).to_owned();
    let body = json!({"error": {"code": "SubscriptionRequestsThrottled",
        "message": format!("Number of '{kind}' requests for subscription '{sub}' exceeded. Please try again after '{retry_after}' seconds after additional tokens are available.")}});
    if class != RequestClass::Read {
        log_op(app, method, path, item, 429);
    }
    finish(
        StatusCode::TOO_MANY_REQUESTS,
        body.to_string(),
        request_id,
        vec![("retry-after", retry_after.to_string()), (class.header(), "0".into())],
    )
}

fn finish(status: StatusCode, body: String, ids: &RequestIds, headers: Vec<(&'static str, String)>) -> Response {
    let mut resp = Response::builder().status(status);
    let has_request_id = headers.iter().any(|(k, _)| *k == "x-ms-request-id");
    for (k, v) in &headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp = resp.header(*k, v);
        }
    }
    if !has_request_id {
        resp = resp.header("x-ms-request-id", &ids.request);
    }
    if let Some(client) = ids.client.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        resp = resp.header("x-ms-client-request-id", client);
    }
    resp = resp.header("x-ms-correlation-request-id", &ids.correlation).header("cache-control", "no-cache");
    if !body.is_empty() {
        resp = resp.header("content-type", "application/json; charset=utf-8");
    }
    resp.body(Body::from(body)).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn log_op(app: &App, method: &Method, path: &str, item: Option<&str>, status: u16) {
    let mut s = app.lock();
    let at = clock::format(s.now());
    s.observed.log_op(at, method, path, item, status);
}

fn retry_after(estate: &Estate) -> String {
    if estate.cfg.zero_latency {
        return "0".into();
    }
    let real = estate.clock.to_real(Duration::from_secs(estate.cfg.retry_after_secs));
    // Whole seconds: clients reject fractions.
    (real.as_secs_f64().ceil() as u64).max(1).to_string()
}

/// Whether an operation's `Location` base is a subscription's provider location (a Compute or
/// Network delete), not an ASR resource.
fn is_provider_operation(location_base: &str) -> bool {
    location_base.starts_with("/subscriptions/") && location_base.contains("/locations/")
}

fn lro_headers(base: &str, estate: &Estate, a: &Accepted, api_version: &str) -> Vec<(&'static str, String)> {
    let v = urlencoding::encode(api_version);
    let provider_op = is_provider_operation(&a.location_base);
    let (location, status) = if provider_op {
        (
            format!("{base}{}/operationResults/{}?api-version={v}", a.location_base, a.job),
            format!("{base}{}/operations/{}?api-version={v}", a.location_base, a.job),
        )
    } else {
        (
            format!("{base}{}/operationresults/{}?api-version={v}", a.location_base, a.job),
            format!("{base}{}/replicationOperationStatus/{}?api-version={v}", estate.scope.vault_id(), a.job),
        )
    };
    vec![
        ("location", location),
        ("azure-asyncoperation", status),
        ("retry-after", retry_after(estate)),
        ("x-ms-request-id", if provider_op { a.job.clone() } else { estate.scope.job_id(&a.job) }),
    ]
}

fn page<T: Serialize>(app: &App, req: &Request, items: Vec<T>, next: Option<String>) -> Outcome {
    let next_link = next.map(|token| {
        let mut q =
            format!("api-version={}&skipToken={}", urlencoding::encode(&req.api_version), urlencoding::encode(&token));
        if let Some(f) = req.query("$filter") {
            q.push_str(&format!("&$filter={}", urlencoding::encode(f)));
        }
        // ASR hands out next links with its own '/Subscriptions/' spelling.
        let path = match req.path.strip_prefix("/subscriptions/") {
            Some(rest) => format!("/Subscriptions/{rest}"),
            None => req.path.clone(),
        };
        format!("{}{path}?{q}", app.base_url)
    });
    let page = Page { value: items, next_link, extra: Default::default() };
    Outcome::Json(StatusCode::OK, serde_json::to_value(page).unwrap_or(Value::Null))
}

fn ok<T: Serialize>(v: T) -> Outcome {
    Outcome::Json(StatusCode::OK, serde_json::to_value(v).unwrap_or(Value::Null))
}

fn body<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, Refusal> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<T>(&req.body).map_err(|e| {
        let mut r = Refusal::bad_request("request body", format!("it is not valid JSON of the expected shape: {e}"));
        r.body.error.code = "InvalidRequestContent".into();
        r
    })
}

fn method_not_allowed(req: &Request) -> Outcome {
    let mut r = Refusal::new(
        405,
        "MethodNotAllowed",
        format!("The method '{}' is not supported on '{}'.", req.method, req.path),
        "MethodNotAllowed",
        "Check the REST reference for this resource.",
    );
    r.body.error.details.clear();
    Outcome::Refused(r)
}

/// What handling an ARM request produced.
struct Handled {
    outcome: Outcome,
    /// What it acted on, for the operation log.
    item: Option<String>,
    /// The jobs its answer told the client have ended (for `/_sim/jobs`).
    ended_jobs: Vec<String>,
}

/// What a caller discovers the estate with, as ARM lists it: `GET /subscriptions` (every
/// subscription the simulator serves, Subscriptions - List) and
/// `GET /subscriptions/{s}/providers/Microsoft.RecoveryServices/vaults` (the subscription's vaults,
/// Vaults - List By Subscription Id). One page each, no `nextLink`. `None`: another path.
fn discovery(s: &Shared, path: &str) -> Option<Outcome> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        [subs] if subs.eq_ignore_ascii_case("subscriptions") => {
            let value: Vec<Value> = (0..s.directory.subscription_count())
                .map(|i| {
                    let id = s.directory.subscription_id(i);
                    json!({"id": format!("/subscriptions/{id}"), "subscriptionId": id,
                        "displayName": format!("Tern simulated subscription {}", i + 1), "state": "Enabled",
                        "authorizationSource": "RoleBased"})
                })
                .collect();
            Some(Outcome::Json(StatusCode::OK, json!({"value": value})))
        }
        [subs, sub, providers, ns, vaults]
            if subs.eq_ignore_ascii_case("subscriptions")
                && providers.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.RecoveryServices")
                && vaults.eq_ignore_ascii_case("vaults") =>
        {
            s.directory.subscription(sub)?;
            let value: Vec<Value> = s
                .estates
                .iter()
                .filter(|e| e.layout.subscription_id.eq_ignore_ascii_case(sub))
                .map(Estate::vault)
                .collect();
            Some(Outcome::Json(StatusCode::OK, json!({"value": value})))
        }
        _ => None,
    }
}

/// vCPUs allocated in the subscription of estate `e`, every vault's VMs counted, by lowercase
/// location, then lowercase family and `cores` (quota belongs to the subscription).
fn subscription_in_use(
    s: &mut Shared,
    e: usize,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
    let sub = s.estates[e].layout.subscription_id.to_ascii_lowercase();
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> = Default::default();
    for estate in s.estates.iter_mut().filter(|x| x.layout.subscription_id.eq_ignore_ascii_case(&sub)) {
        estate.advance();
        for region in estate.regions.clone() {
            let location = region.location.to_ascii_lowercase();
            estate.add_cores_in_use(&location, out.entry(location.clone()).or_default());
        }
    }
    out
}

/// Compute's capacity reads of a subscription the simulator serves:
/// `GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/usages` and
/// `GET /subscriptions/{s}/providers/Microsoft.Compute/skus` (with `$filter=location eq '{l}'`;
/// without a filter, the primary and secondary regions' entries). Shapes in `capacity`.
fn compute_capacity(s: &mut Shared, req: &Request) -> Option<Outcome> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match segs.as_slice() {
        [subs, sub, providers, ns, locations, location, usages]
            if is(subs, "subscriptions")
                && is(providers, "providers")
                && is(ns, "Microsoft.Compute")
                && is(locations, "locations")
                && is(usages, "usages") =>
        {
            let first = s.estates.iter().position(|e| e.layout.subscription_id.eq_ignore_ascii_case(sub))?;
            let location = location.to_ascii_lowercase();
            let in_use = subscription_in_use(s, first).remove(&location).unwrap_or_default();
            Some(Outcome::Json(StatusCode::OK, s.config.capacity.usages(&location, &in_use)))
        }
        [subs, sub, providers, ns, skus]
            if is(subs, "subscriptions")
                && is(providers, "providers")
                && is(ns, "Microsoft.Compute")
                && is(skus, "skus") =>
        {
            s.directory.subscription(sub)?;
            // `$filter=location eq 'eastus'` (the only filter Compute supports on this list).
            let filtered = req
                .query("$filter")
                .and_then(|f| f.split_once("eq"))
                .map(|(_, v)| v.trim().trim_matches('\'').to_ascii_lowercase());
            let regions = match filtered {
                Some(l) => vec![l],
                None => vec![s.config.primary_region.clone(), s.config.secondary_region.clone()],
            };
            let mut value = Vec::new();
            for r in regions {
                if let Value::Array(v) = s.config.capacity.skus(&r)["value"].take() {
                    value.extend(v);
                }
            }
            Some(Outcome::Json(StatusCode::OK, json!({"value": value})))
        }
        _ => None,
    }
}

/// The estate that serves an addressed path and the route within it, or the 404 that tells
/// what is missing: the subscription, the vault's resource group, the vault, or the path.
fn served_by(
    directory: &Directory,
    addressed: Result<Addressed, AddressError>,
    path: &str,
) -> Result<(usize, Route), Refusal> {
    let unknown = || ("InvalidResourceType", format!("The resource path '{path}' is not served by this simulator."));
    let subscription_not_found =
        |s: &str| ("SubscriptionNotFound", format!("The subscription '{s}' could not be found."));
    let missing = match addressed {
        Err(AddressError::NotArm) => unknown(),
        Err(AddressError::Unknown(s)) if directory.subscription(&s).is_none() => subscription_not_found(&s),
        Err(AddressError::Unknown(_)) => unknown(),
        Ok(a) => match directory.estate_of(&a) {
            Ok(_) if a.route == Route::Unserved => unknown(),
            Ok(e) => return Ok((e, a.route)),
            Err(Miss::Subscription(s)) => subscription_not_found(&s),
            Err(Miss::ResourceGroup(g)) => {
                ("ResourceGroupNotFound", format!("Resource group '{g}' could not be found."))
            }
            Err(Miss::Vault(v)) => {
                ("ResourceNotFound", format!("The Resource 'Microsoft.RecoveryServices/vaults/{v}' was not found."))
            }
        },
    };
    let (code, msg) = missing;
    let mut r = Refusal::new(404, code, msg, code, "Check the resource id.");
    r.body.error.details.clear();
    Err(r)
}

fn handle(app: &App, estate: &mut Estate, req: &Request, route: Route) -> Handled {
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    let del = req.method == Method::DELETE;
    let mut item_name = None;
    let mut ended = Vec::new();
    let result: Result<Outcome, Refusal> = (|| {
        Ok(match route {
            Route::Vault if get => ok(estate.vault()),
            Route::Fabrics if get => page(app, req, estate.fabrics(), None),
            Route::Fabric(f) if get => ok(estate.fabric(&f)?),
            Route::AllContainers if get => page(app, req, estate.all_containers(), None),
            Route::Containers(f) if get => page(app, req, estate.containers(&f)?, None),
            Route::Container(f, c) if get => ok(estate.container(&f, &c)?),
            Route::AllMappings if get => page(app, req, estate.all_mappings(), None),
            Route::Mappings(f, c) if get => page(app, req, estate.mappings(&f, &c)?, None),
            Route::Mapping(f, c, m) if get => ok(estate.mapping(&f, &c, &m)?),
            Route::Policies if get => page(app, req, vec![estate.policy(crate::estate::POLICY)?], None),
            Route::Policy(p) if get => ok(estate.policy(&p)?),
            Route::VaultItems if get => {
                let filter = ItemFilter::parse(req.query("$filter"))?;
                let (items, next) = estate.list_items(None, &filter, req.query("skipToken"))?;
                page(app, req, items, next)
            }
            Route::Items(f, c) if get => {
                let filter = ItemFilter::parse(req.query("$filter"))?;
                let (items, next) = estate.list_items(Some((&f, &c)), &filter, req.query("skipToken"))?;
                page(app, req, items, next)
            }
            Route::Item(f, c, i) if get => ok(estate.get_item(&f, &c, &i)?),
            Route::Item(f, c, i) if del => {
                let a = estate.purge(&f, &c, &i)?;
                item_name = a.item.clone();
                Outcome::Accepted(a)
            }
            Route::Points(f, c, i) if get => page(app, req, estate.list_points(&f, &c, &i)?, None),
            Route::Point(f, c, i, p) if get => ok(estate.get_point(&f, &c, &i, &p)?),
            Route::ItemAction(f, c, i, action) if post => {
                item_name = Some(i.clone());
                let a = match action.to_ascii_lowercase().as_str() {
                    "unplannedfailover" => {
                        estate.failover(&f, &c, &i, &body::<Input<wire::FailoverInput>>(req)?.properties)?
                    }
                    "failovercommit" => estate.commit(&f, &c, &i)?,
                    "applyrecoverypoint" => {
                        let input = body::<Input<wire::ApplyRecoveryPointInput>>(req)?.properties;
                        estate.apply_recovery_point(&f, &c, &i, input.recovery_point_id.as_deref())?
                    }
                    "failovercancel" => estate.cancel_failover(&f, &c, &i)?,
                    "reprotect" => {
                        let input = body::<Input<wire::ReverseReplicationInput>>(req)?.properties;
                        estate.reverse_replicate(&f, &c, &i, &input)?
                    }
                    "testfailover" => {
                        estate.test_failover(&f, &c, &i, &body::<Input<wire::FailoverInput>>(req)?.properties)?
                    }
                    "testfailovercleanup" => estate.test_failover_cleanup(&f, &c, &i)?,
                    "repairreplication" => estate.repair(&f, &c, &i)?,
                    "remove" => estate.disable(&f, &c, &i)?,
                    other => {
                        let mut r =
                            Refusal::bad_request("operation", format!("'{other}' is not a protected item operation"));
                        r.status = 404;
                        return Err(r);
                    }
                };
                item_name = a.item.clone();
                Outcome::Accepted(a)
            }
            Route::SwitchProtection(f, c) if post => {
                let input = body::<Input<wire::SwitchProtectionInput>>(req)?.properties;
                item_name = input.replication_protected_item_name.clone();
                let a = estate.switch_protection(&f, &c, &input)?;
                item_name = a.item.clone();
                Outcome::Accepted(a)
            }
            Route::ItemOperationResult(f, c, i, job) if get => {
                let base = estate.scope.item_id(&f, &c, &i);
                operation_result(estate, &base, &job, &mut ended)?
            }
            Route::ContainerOperationResult(f, c, job) if get => {
                let base = estate.scope.container_id(&f, &c);
                operation_result(estate, &base, &job, &mut ended)?
            }
            Route::PlanOperationResult(p, job) if get => {
                let base = estate.scope.plan_id(&p);
                operation_result(estate, &base, &job, &mut ended)?
            }
            Route::ProviderOperationResult(ns, loc, job) if get => {
                let base = format!("/subscriptions/{}/providers/{ns}/locations/{loc}", estate.cfg.subscription_id);
                operation_result(estate, &base, &job, &mut ended)?
            }
            Route::OperationStatus(job) if get => {
                let id = format!("{}/replicationOperationStatus/{job}", estate.scope.vault_id());
                let status = estate.operation_status(&job, id)?;
                ended.extend(observe::ended_operation(&status).map(str::to_owned));
                ok(status)
            }
            Route::ProviderOperationStatus(ns, job) if get => {
                let id = format!("/subscriptions/{}/providers/{ns}/operations/{job}", estate.cfg.subscription_id);
                let status = estate.operation_status(&job, id)?;
                ended.extend(observe::ended_operation(&status).map(str::to_owned));
                ok(status)
            }
            Route::Jobs if get => {
                let filter = JobFilter::parse(req.query("$filter"))?;
                let (jobs, next) = estate.list_jobs(&filter, req.query("skipToken"));
                ended.extend(jobs.iter().filter_map(observe::ended_job).map(str::to_owned));
                page(app, req, jobs, next)
            }
            Route::Job(j) if get => job_answer(estate, &j, &mut ended)?,
            Route::JobAction(j, action) if post => {
                item_name = Some(j.clone());
                match action.to_ascii_lowercase().as_str() {
                    "cancel" => {
                        estate.cancel_job(&j)?;
                        job_answer(estate, &j, &mut ended)?
                    }
                    "restart" => Outcome::Accepted(estate.restart_job(&j)?),
                    "resume" => Outcome::Accepted(estate.resume_job(&j)?),
                    other => {
                        return Err(Refusal::bad_request("operation", format!("'{other}' is not a job operation")));
                    }
                }
            }
            Route::Plans if get => page(app, req, estate.list_plans(), None),
            Route::Plan(p) if get => ok(estate.get_plan(&p)?),
            Route::PlanAction(p, action) if post => {
                item_name = Some(p.clone());
                let op = match action.to_ascii_lowercase().as_str() {
                    "unplannedfailover" => PlanOp::Failover,
                    "failovercommit" => PlanOp::Commit,
                    "testfailover" => PlanOp::TestFailover,
                    "testfailovercleanup" => PlanOp::TestFailoverCleanup,
                    "reprotect" => PlanOp::Reprotect,
                    other => {
                        return Err(Refusal::bad_request(
                            "operation",
                            format!("'{other}' is not a recovery plan operation"),
                        ));
                    }
                };
                let input = body::<Input<wire::PlanFailoverInput>>(req)?.properties;
                Outcome::Accepted(estate.plan_operation(&p, op, &input)?)
            }
            Route::Vms(rg) if get => page(app, req, estate.list_vms(&rg)?, None),
            Route::Vm(rg, n) if get => {
                let expand = req.query("$expand").is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
                ok(estate.get_vm(&rg, &n, expand)?)
            }
            Route::VmInstanceView(rg, n) if get => ok(estate.vm_instance_view(&rg, &n)?),
            Route::Vm(rg, n) if del => {
                item_name = Some(n.clone());
                Outcome::Accepted(estate.delete_resource(ResourceKind::Vm, &rg, &n)?)
            }
            Route::Nics(rg) if get => page(app, req, estate.list_nics(&rg)?, None),
            Route::Nic(rg, n) if get => ok(estate.get_nic(&rg, &n)?),
            Route::Nic(rg, n) if del => {
                item_name = Some(n.clone());
                Outcome::Accepted(estate.delete_resource(ResourceKind::Nic, &rg, &n)?)
            }
            Route::Disks(rg) if get => page(app, req, estate.list_disks(&rg)?, None),
            Route::Disk(rg, n) if get => ok(estate.get_disk(&rg, &n)?),
            Route::Disk(rg, n) if del => {
                item_name = Some(n.clone());
                Outcome::Accepted(estate.delete_resource(ResourceKind::Disk, &rg, &n)?)
            }
            Route::PublicIps(rg) if get => page(app, req, estate.list_public_ips(&rg)?, None),
            Route::PublicIp(rg, n) if get => ok(estate.get_public_ip(&rg, &n)?),
            Route::PublicIp(rg, n) if del => {
                item_name = Some(n.clone());
                Outcome::Accepted(estate.delete_resource(ResourceKind::PublicIp, &rg, &n)?)
            }
            Route::StorageAccounts(rg) if get => page(app, req, estate.list_storage_accounts(&rg)?, None),
            Route::StorageAccount(rg, n) if get => ok(estate.get_storage_account(&rg, &n)?),
            _ => method_not_allowed(req),
        })
    })();
    Handled { outcome: result.unwrap_or_else(Outcome::Refused), item: item_name, ended_jobs: ended }
}

/// A job's GET; `ended` gets its name when the answer tells it has ended.
fn job_answer(estate: &Estate, name: &str, ended: &mut Vec<String>) -> Result<Outcome, Refusal> {
    let job = estate.get_job(name)?;
    ended.extend(observe::ended_job(&job).map(str::to_owned));
    Ok(ok(job))
}

/// What a `Location` URL answers; `ended` gets the job's name unless it is still running.
fn operation_result(estate: &Estate, base: &str, job: &str, ended: &mut Vec<String>) -> Result<Outcome, Refusal> {
    let result = estate.operation_result(base, job)?;
    if !matches!(result, OperationResult::Running) {
        // The estate keys a job by its name, a lowercase GUID, and found it under this one lowercased.
        ended.push(job.to_ascii_lowercase());
    }
    Ok(match result {
        OperationResult::Running => {
            Outcome::Accepted(Accepted { job: job.to_owned(), location_base: base.to_owned(), item: None })
        }
        OperationResult::Done(Some(v)) => Outcome::Json(StatusCode::OK, v),
        OperationResult::Done(None) => Outcome::NoContent,
        OperationResult::Failed(r) => Outcome::Refused(r),
    })
}

// ---------------------------------------------------------------------------------------------
// /_sim/

async fn admin_oplog(State(app): State<Arc<App>>) -> Response {
    let s = app.lock();
    axum::Json(s.observed.oplog.clone()).into_response()
}

async fn admin_requests(State(app): State<Arc<App>>) -> Response {
    let s = app.lock();
    axum::Json(s.observed.requests.iter().cloned().collect::<Vec<_>>()).into_response()
}

async fn admin_clear_oplog(State(app): State<Arc<App>>) -> StatusCode {
    app.lock().observed.oplog.clear();
    StatusCode::NO_CONTENT
}

async fn admin_info(State(app): State<Arc<App>>) -> Response {
    let s = app.lock();
    let c = &s.config;
    let first = &s.estates[0];
    axum::Json(json!({
        "url": app.base_url, "subscription_id": c.subscription_id, "resource_group": c.resource_group, "vault": c.vault,
        "vault_id": first.scope.vault_id(), "primary_region": c.primary_region, "secondary_region": c.secondary_region,
        "time_compression": c.time_compression, "zero_latency": c.zero_latency, "throttle": c.throttle,
        "reprotect_removes_source_vm": c.reprotect_removes_source_vm, "sim_time": clock::format(s.now()),
        "item_scenario_lag_secs": c.item_scenario_lag_secs,
        "cache_storage_accounts": first.cache_storage_accounts(),
        "subscriptions": c.subscriptions, "vaults_per_subscription": c.vaults_per_subscription,
        "vaults": s.estates.iter().map(Estate::vault_info).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn admin_counters(State(app): State<Arc<App>>) -> Response {
    let mut s = app.lock();
    s.advance_all();
    let mut estate = s.estates[0].census();
    for more in &s.estates[1..] {
        add_census(&mut estate, &more.census());
    }
    let per_subscription: serde_json::Map<String, Value> = s
        .observed
        .per_subscription
        .iter()
        .enumerate()
        .map(|(i, c)| (s.directory.subscription_id(i).to_owned(), json!(c)))
        .collect();
    let counters = json!({"requests": s.observed.counters, "per_subscription": per_subscription, "estate": estate,
        "oplog_entries": s.observed.oplog.len()});
    axum::Json(counters).into_response()
}

/// Adds the census `more` of one vault to `total`: numbers add up, maps merge, anything else
/// (the simulated time, the same in every vault) stays.
fn add_census(total: &mut Value, more: &Value) {
    match (total, more) {
        (Value::Object(t), Value::Object(m)) => {
            for (k, v) in m {
                match t.get_mut(k) {
                    Some(tv) => add_census(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Number(t), Value::Number(m)) => {
            if let (Some(a), Some(b)) = (t.as_u64(), m.as_u64()) {
                *t = (a + b).into();
            }
        }
        _ => {}
    }
}

/// Every job of every vault with its wall-clock timing: accepted, completed, first seen
/// completed.
async fn admin_jobs(State(app): State<Arc<App>>) -> Response {
    let mut s = app.lock();
    s.advance_all();
    axum::Json(s.observed.job_timings(&s.estates)).into_response()
}

/// Every delete the simulator accepted in any vault, oldest first, with the owning VM's
/// protection then.
async fn admin_deletes(State(app): State<Arc<App>>) -> Response {
    let s = app.lock();
    if let [estate] = &s.estates[..] {
        return axum::Json(estate.deletes()).into_response();
    }
    let mut all: Vec<_> = s.estates.iter().flat_map(|e| e.deletes()).collect();
    // One clock, one format: the text of `at` sorts by time. Stable, so one vault's deletes
    // of the same moment keep their order.
    all.sort_by(|a, b| a.at.cmp(&b.at));
    axum::Json(all).into_response()
}

async fn admin_get_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.lock().config.faults.clone()).into_response()
}

fn admin_error(message: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"code": "InvalidSimulatorRequest", "message": message}})))
        .into_response()
}

async fn admin_put_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return admin_error(format!("fault spec: {e}")),
    };
    if let Err(e) = spec.validate() {
        return admin_error(format!("fault spec: {e}"));
    }
    let mut s = app.lock();
    s.dice = FaultDice::new(&spec);
    for estate in &mut s.estates {
        estate.cfg.faults = spec.clone();
    }
    s.config.faults = spec.clone();
    axum::Json(spec).into_response()
}

async fn admin_get_capacity(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.lock().config.capacity.clone()).into_response()
}

/// Replaces the quotas and size restrictions (tests raise a quota with it).
async fn admin_put_capacity(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let capacity: crate::capacity::CapacityConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return admin_error(format!("capacity: {e}")),
    };
    let mut s = app.lock();
    for estate in &mut s.estates {
        estate.cfg.capacity = capacity.clone();
    }
    s.config.capacity = capacity.clone();
    axum::Json(capacity).into_response()
}

async fn admin_seed(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let spec: SeedSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return admin_error(format!("seed spec: {e}")),
    };
    // Every vault gets the VMs, named with its own prefix.
    let mut s = app.lock();
    for estate in &mut s.estates {
        estate.seed(&spec);
    }
    s.share_storage();
    axum::Json(json!({"items": s.item_count()})).into_response()
}

async fn admin_reset(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let mut s = app.lock();
    let mut config = s.config.clone();
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<SimConfig>(&body) {
            Ok(c) => config = c,
            Err(e) => return admin_error(format!("config: {e}")),
        }
    }
    if let Err(e) = config.validate() {
        return admin_error(format!("config: {e}"));
    }
    *s = Shared::new(config);
    axum::Json(json!({"items": s.item_count()})).into_response()
}

async fn admin_advance(State(app): State<Arc<App>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Advance {
        seconds: f64,
    }
    let a: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return admin_error(format!("expected {{\"seconds\": N}}: {e}")),
    };
    if !(a.seconds.is_finite() && a.seconds >= 0.0) {
        return admin_error("seconds must be a non-negative number".into());
    }
    let mut s = app.lock();
    for estate in &mut s.estates {
        estate.clock.advance(Duration::from_secs_f64(a.seconds));
    }
    s.advance_all();
    axum::Json(json!({"sim_time": clock::format(s.now())})).into_response()
}
