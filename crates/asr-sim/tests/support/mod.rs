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

    /// The protected item of a VM, wherever it lives now.
    pub async fn item(&self, vm: &str) -> Value {
        let r =
            self.get(&format!("{}/replicationProtectedItems?$filter=friendlyName%20eq%20'{vm}'", self.vault())).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["value"][0].clone()
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

pub fn switch_body(item: &Value) -> Value {
    let id = item["id"].as_str().unwrap();
    json!({"properties": {
        "replicationProtectedItemName": item["name"],
        "providerSpecificDetails": {"instanceType": "A2A", "recoveryContainerId": container_of(id)},
    }})
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
