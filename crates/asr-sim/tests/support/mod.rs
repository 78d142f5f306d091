//! A small ARM client for the simulator's tests: real HTTP, JSON in and out.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tern_asr_sim::{RunningSimulator, SimConfig, SimOptions};

pub const API: &str = "api-version=2025-08-01";

/// A response: status, headers, JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ASR detail code of an error body (or the top-level code).
    pub fn error_code(&self) -> String {
        let e = &self.body["error"];
        e["details"][0]["code"].as_str().or(e["code"].as_str()).unwrap_or_default().to_owned()
    }

    pub fn error_message(&self) -> String {
        self.body["error"]["message"].as_str().unwrap_or_default().to_owned()
    }
}

pub struct Sim {
    pub running: RunningSimulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl Sim {
    pub async fn start(config: SimConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let running = tern_asr_sim::start(SimOptions::new(config)).await.expect("simulator starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Self { running, http, token: "test-token".into() }
    }

    pub fn url(&self) -> &str {
        self.running.url()
    }

    pub fn vault(&self) -> String {
        let i = self.running.info();
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            i.subscription_id, i.resource_group, i.vault
        )
    }

    /// `path` may be absolute (a Location URL or nextLink) or a path; api-version is added
    /// when missing.
    fn full(&self, path: &str) -> String {
        let mut u = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.url()) };
        if !u.contains("api-version=") {
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str(API);
        }
        u
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, self.full(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// The two protection containers of the estate (`.../replicationProtectionContainers/{c}`).
    pub async fn containers(&self) -> Vec<String> {
        let r = self.get(&format!("{}/replicationProtectionContainers", self.vault())).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["value"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
    }

    /// The protected item of a VM, wherever it lives now (items are named after their VM; the
    /// spec has no friendlyName filter, so it is looked up in each container).
    pub async fn item(&self, vm: &str) -> Value {
        for container in self.containers().await {
            let r = self.get(&format!("{container}/replicationProtectedItems/{vm}")).await;
            if r.status == 200 {
                return r.body;
            }
            assert_eq!(r.status, 404, "{:?}", r.body);
        }
        panic!("no protected item for {vm}")
    }

    /// A complete switch-protection body for a committed item, built the way PowerShell builds
    /// it (reprotect recording entries 13–16): one `vmManagedDisks` entry per disk of the VM that
    /// runs now (the item's `recoveryTargetDiskId`s), the cache account of the region it runs
    /// in, the resource group of the VM it came from, the item's policy and container.
    pub fn switch_body(&self, item: &Value) -> Value {
        let id = item["id"].as_str().unwrap();
        let psd = &item["properties"]["providerSpecificDetails"];
        let running = psd["recoveryFabricLocation"].as_str().unwrap();
        let staging = self.running.info().cache_storage_accounts[running].clone();
        let rg = resource_group_of(psd["fabricObjectId"].as_str().unwrap());
        let managed: Vec<Value> = psd["protectedManagedDisks"]
            .as_array()
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| {
                        json!({"diskId": d["recoveryTargetDiskId"], "primaryStagingAzureStorageAccountId": staging,
                            "recoveryResourceGroupId": rg,
                            "recoveryReplicaDiskAccountType": d["recoveryReplicaDiskAccountType"],
                            "recoveryTargetDiskAccountType": d["recoveryTargetDiskAccountType"]})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let vhds: Vec<Value> = psd["protectedDisks"]
            .as_array()
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| {
                        json!({"diskUri": d["recoveryDiskUri"], "primaryStagingAzureStorageAccountId": staging,
                            "recoveryAzureStorageAccountId": d["primaryDiskAzureStorageAccountId"]})
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({"properties": {
            "replicationProtectedItemName": item["name"],
            "providerSpecificDetails": {"instanceType": "A2A", "recoveryContainerId": container_of(id),
                "policyId": item["properties"]["policyId"], "recoveryResourceGroupId": rg,
                "vmManagedDisks": managed, "vmDisks": vhds},
        }})
    }

    /// POSTs a client request id with the request.
    pub async fn post_with_client_id(&self, path: &str, body: Option<Value>, client_id: &str) -> Reply {
        let mut req =
            self.http.post(self.full(path)).bearer_auth(&self.token).header("x-ms-client-request-id", client_id);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    /// Sends a bodiless request as the client whose `User-Agent` is `user_agent`; the status.
    pub async fn send_as(&self, method: reqwest::Method, path: &str, user_agent: &str) -> u16 {
        let req = self.http.request(method, self.full(path)).bearer_auth(&self.token).header("user-agent", user_agent);
        req.send().await.expect("request sent").status().as_u16()
    }

    /// Jumps the simulated clock.
    pub async fn advance(&self, seconds: f64) {
        let r = self
            .http
            .post(format!("{}/_sim/clock/advance", self.url()))
            .json(&json!({"seconds": seconds}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn admin(&self, path: &str) -> Value {
        self.http.get(format!("{}/_sim/{path}", self.url())).send().await.unwrap().json().await.unwrap()
    }

    pub async fn put_faults(&self, faults: Value) -> u16 {
        self.http.put(format!("{}/_sim/faults", self.url())).json(&faults).send().await.unwrap().status().as_u16()
    }

    /// GET of the job named by a 202's `x-ms-request-id` (the job's ARM id).
    pub async fn job_of(&self, accepted: &Reply) -> Value {
        let id = accepted.header("x-ms-request-id").expect("x-ms-request-id").to_owned();
        let r = self.get(&id).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    pub async fn oplog(&self) -> Vec<Value> {
        self.admin("oplog").await.as_array().cloned().unwrap_or_default()
    }
}

pub fn props<'a>(v: &'a Value, key: &str) -> &'a Value {
    &v["properties"][key]
}

pub fn allowed(item: &Value) -> Vec<String> {
    props(item, "allowedOperations").as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

pub fn state(item: &Value) -> (String, String) {
    (
        props(item, "protectionState").as_str().unwrap().to_owned(),
        props(item, "activeLocation").as_str().unwrap().to_owned(),
    )
}

/// The container id an item lives in (`.../replicationProtectionContainers/{c}`).
pub fn container_of(item_id: &str) -> String {
    let i = item_id.to_ascii_lowercase().find("/replicationprotecteditems/").unwrap();
    item_id[..i].to_owned()
}

pub fn failover_body(direction: &str, shutdown: bool, point: Option<&str>) -> Value {
    json!({"properties": {
        "failoverDirection": direction,
        "sourceSiteOperations": if shutdown { "Required" } else { "NotRequired" },
        "providerSpecificDetails": {"instanceType": "A2A", "recoveryPointId": point},
    }})
}

/// `/subscriptions/{s}/resourceGroups/{rg}` of an ARM id (any case).
pub fn resource_group_of(id: &str) -> String {
    let segs: Vec<&str> = id.split('/').collect();
    let i = segs.iter().position(|s| s.eq_ignore_ascii_case("resourceGroups")).unwrap();
    format!("/subscriptions/{}/resourceGroups/{}", segs[i - 1], segs[i + 1])
}

/// Polls `check` until it holds or `timeout` passes (tests wait on conditions, never a fixed
/// time).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A seed for randomised tests: `TERN_TEST_SEED` if set, else fresh; printed when the test
/// fails, so the run can be repeated.
#[derive(Debug)]
pub struct Seed(u64);

impl Seed {
    pub fn new() -> Self {
        let seed = std::env::var("TERN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        });
        Self(seed)
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

impl Default for Seed {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with seed {0}; repeat it with TERN_TEST_SEED={0}", self.0);
        }
    }
}

/// A config with `vms` VMs in `state`, every job done at once, no throttling.
pub fn quick(vms: usize, state: tern_asr_sim::SeedState) -> SimConfig {
    let mut c = SimConfig::default();
    c.estate.vms = vms;
    c.estate.state = state;
    c.zero_latency = true;
    c.throttle.enabled = false;
    c
}

/// The simulator's binary, checked to mention each of `needles` in its `--help`.
pub fn binary_helping_with(needles: &[&str]) -> &'static str {
    let bin = env!("CARGO_BIN_EXE_tern-asr-sim");
    let help = std::process::Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in needles {
        assert!(help.contains(needle), "--help mentions {needle}:\n{help}");
    }
    bin
}

/// Starts the simulator's binary with `args` and reads its ready line; it dies with the child.
pub async fn spawn_binary(bin: &str, args: &[&str]) -> (tokio::process::Child, tern_asr_sim::SimInfo) {
    use tokio::io::AsyncBufReadExt;
    // reqwest is built without a TLS provider of its own, even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    (child, serde_json::from_str(&line).unwrap())
}
