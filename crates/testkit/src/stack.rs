//! A stack for worker and service tests: a real nats-server, the ASR simulator, and service
//! processes started from their binaries.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{NatsServer, wait_for};
use serde_json::Value;
use tern_asr_sim::{RunningSimulator, SimConfig, SimOptions};
use tern_bus::{Bus, EventFilter, QueueSettings, StartAt, Topology};
use tern_proto::Event;

/// How long stack waits may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running stack. Worker processes are killed on drop.
#[derive(Debug)]
pub struct Stack {
    pub nats: NatsServer,
    pub sim: RunningSimulator,
    pub bus: Bus,
    pub workers: Vec<Child>,
    /// Each worker's health and metrics address (`127.0.0.1:PORT`).
    pub http: Vec<String>,
    /// Each process's ready line as it printed it (a planner's names its `grpc` address).
    pub ready: Vec<Value>,
    /// How each process was started (binary and extra environment), to start it again.
    launches: Vec<(String, Vec<(String, String)>)>,
    /// The planner API's tokens (`api-reader.token`, `api-operator.token`) planners run with.
    secrets: tempfile::TempDir,
    /// Whether the test means to break a NATS permission (else a violation fails it).
    violations_expected: bool,
    /// Log lines of the stack's processes that held one of its secrets.
    leaks: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every line the stack's processes logged at ERROR.
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The Azure token the stack's services and clients use (the simulator takes any).
pub const ASR_TOKEN: &str = "tern-test-azure-token-5f1c";

/// The cache storage account of each region of the simulated estate, as its ready line names
/// them (`{"eastus": "<ARM id>", ...}`): what services reprotect through.
pub fn cache_accounts(info: &tern_asr_sim::SimInfo) -> Value {
    serde_json::to_value(info)
        .ok()
        .map(|v| v["cache_storage_accounts"].clone())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()))
}

/// An estate of `vms` VMs ready for failback, where every job finishes at once and nothing
/// is throttled.
pub fn ready_for_failback(vms: usize) -> SimConfig {
    let mut c = SimConfig::default();
    c.estate.vms = vms;
    c.estate.state = tern_asr_sim::SeedState::ReadyForFailback;
    c.zero_latency = true;
    c.throttle.enabled = false;
    c
}

/// The first failover command of `vm` in `plan` (default options), as the planner would send it.
pub fn failover_command(plan: &str, vm: &str) -> tern_proto::Command {
    let vm = tern_proto::VmRef { name: vm.into(), ..Default::default() };
    tern_proto::Command {
        command_id: tern_bus::ids::command_id(plan, &vm, tern_proto::Phase::Failover, 1),
        plan_id: plan.into(),
        vm: Some(vm),
        attempt: 1,
        action: Some(tern_proto::command::Action::Failover(tern_proto::FailoverCommand::default())),
        ..Default::default()
    }
}

/// Commands come back after 2 s without an ack; claims last 3 s.
#[allow(missing_docs)]
pub fn topology() -> Topology {
    Topology {
        queues: QueueSettings { ack_wait: Duration::from_secs(2), max_attempts: 5, ..QueueSettings::default() },
        ..Topology::single_server()
    }
}

impl Stack {
    pub async fn start(sim: SimConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start_secured().await.expect("nats-server");
        Self::start_on(nats, &topology(), sim).await
    }

    /// A stack on a JetStream cluster of three ([`NatsServer::start_cluster`]): every stream,
    /// consumer and bucket with three replicas, TLS, Tern's identities.
    pub async fn start_on_cluster(sim: SimConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start_cluster(3).await.expect("a 3-node nats-server cluster");
        Self::start_on(nats, &Topology { replicas: 3, ..topology() }, sim).await
    }

    /// A stack on `nats`, its topology set up by the bootstrap identity as `topology` says.
    pub async fn start_on(nats: NatsServer, topology: &Topology, sim: SimConfig) -> Self {
        let bus = nats.bus(tern_bus::Identity::Bootstrap, "tern-test").await;
        bus.ensure_topology(topology).await.unwrap();
        let sim = tern_asr_sim::start(SimOptions::new(sim)).await.expect("simulator");
        let secrets = tempfile::tempdir().expect("a dir for the API tokens");
        for role in ["reader", "operator"] {
            std::fs::write(secrets.path().join(format!("api-{role}.token")), random_token()).unwrap();
        }
        Self {
            nats,
            sim,
            bus,
            workers: Vec::new(),
            http: Vec::new(),
            ready: Vec::new(),
            launches: Vec::new(),
            secrets,
            violations_expected: false,
            leaks: Default::default(),
            errors: Default::default(),
        }
    }

    /// The planner API's token of `role` ("reader" or "operator") that planners this stack
    /// starts accept.
    pub fn api_token(&self, role: &str) -> String {
        std::fs::read_to_string(self.secrets.path().join(format!("api-{role}.token"))).expect("the API token")
    }

    /// A client of the planner at `addr` (`HOST:PORT`) calling with the operator's token.
    pub async fn planner_client(&self, addr: &str) -> Result<tern_proto::auth::Client, tonic::transport::Error> {
        planner_client(addr, Some(&self.api_token("operator"))).await
    }

    /// Lets `plan` hold its VM, as the planner does when it accepts a plan: workers act only on
    /// commands of the plan that holds their VM.
    pub async fn hold(&self, command: &tern_proto::Command) {
        let locks = self.bus.kv::<tern_proto::VmLock>(tern_bus::Bucket::VmLocks).await.unwrap();
        let vm = command.vm.clone().unwrap_or_default();
        let lock = tern_proto::VmLock { plan_id: command.plan_id.clone() };
        locks.put(tern_bus::ids::vm_key(&vm), &lock).await.unwrap();
    }

    /// Publishes `command` as the planner dispatches it: its plan holds the VM first.
    pub async fn dispatch(&self, command: &tern_proto::Command) {
        self.hold(command).await;
        self.bus.publish_command(command).await.unwrap();
    }

    /// Starts a service process (a worker, or the planner) and waits for its ready line. It gets
    /// the stack's settings (workers also short leases and a fast watcher), then `extra`; none of
    /// this process's own `TERN_*` variables.
    pub fn spawn(&mut self, bin: &str, extra: &[(&str, &str)]) -> usize {
        let (child, ready) = self.launch(bin, extra);
        self.http.push(ready["http"].as_str().unwrap_or_default().to_owned());
        self.ready.push(ready);
        self.workers.push(child);
        self.launches.push((bin.to_owned(), extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()));
        self.workers.len() - 1
    }

    /// Starts process `i` again the way it was first started (after [`Stack::kill`] or a
    /// crash), in the same slot; its new ready line replaces the old one.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let (bin, extra) = self.launches[i].clone();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (child, ready) = self.launch(&bin, &extra);
        self.http[i] = ready["http"].as_str().unwrap_or_default().to_owned();
        self.ready[i] = ready;
        self.workers[i] = child;
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to process `i`.
    #[allow(unsafe_code)]
    pub fn signal(&self, i: usize, signal: i32) {
        let pid = self.workers[i].id() as i32;
        // SAFETY: signals a child process this stack started and has not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    fn launch(&self, bin: &str, extra: &[(&str, &str)]) -> (Child, Value) {
        let info = self.sim.info();
        let mut cmd = Command::new(bin);
        // A service refuses `TERN_*` variables it does not know: the test run's own
        // (`TERN_NATS_SERVER`, `TERN_TEST_SEED`, `TERN_FAULTS_*`, ...) stay here.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TERN_") {
                cmd.env_remove(name);
            }
        }
        // The workers' own settings; the planner has none of them, but its API's tokens.
        if bin.ends_with("tern-planner") {
            cmd.env("TERN_API__READER_TOKEN_FILE", self.secrets.path().join("api-reader.token"))
                .env("TERN_API__OPERATOR_TOKEN_FILE", self.secrets.path().join("api-operator.token"));
        } else {
            cmd.env("TERN_LEASE_SECS", "3").env("TERN_WATCHER_READS_PER_SEC", "50").env("TERN_DRAIN_TIMEOUT_SECS", "5");
        }
        // Each service connects as its own NATS identity, with only its permissions.
        let name = std::path::Path::new(bin).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(creds) = tern_bus::Identity::of_service(&name).and_then(|i| self.nats.credentials(i)) {
            cmd.env("TERN_NATS_CREDENTIALS", creds);
        }
        if let Some(ca) = self.nats.ca_file() {
            cmd.env("TERN_NATS_CA_FILE", ca);
        }
        cmd.env("TERN_NATS_URL", self.nats.url())
            .env("TERN_ASR__ENDPOINT", &info.url)
            .env("TERN_ASR__SUBSCRIPTION_ID", &info.subscription_id)
            .env("TERN_ASR__RESOURCE_GROUP", &info.resource_group)
            .env("TERN_ASR__VAULT", &info.vault)
            .env("TERN_ASR__CACHE_STORAGE_ACCOUNTS", cache_accounts(info).to_string())
            .env("TERN_ASR__LOST_REQUEST_WINDOW", "2")
            .env("TERN_ASR_TOKEN", ASR_TOKEN)
            .env("TERN_BUDGET", "null")
            .env("TERN_ENSURE_TOPOLOGY", "false")
            .env("TERN_POLL_INTERVAL_SECS", "0.2")
            .env("TERN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("worker starts");
        self.watch_for_secrets(child.stderr.take().expect("the process's stderr"));
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("ready line");
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker did not report ready: {line:?}"));
        (child, ready)
    }

    /// The secrets the stack's processes hold: API tokens, every NATS identity's nkey seed, the
    /// Azure token.
    fn secrets(&self) -> Vec<String> {
        let mut out = vec![self.api_token("reader"), self.api_token("operator"), ASR_TOKEN.to_owned()];
        for identity in tern_bus::Identity::ALL {
            if let Some(seed) = self.nats.credentials(identity).and_then(|f| std::fs::read_to_string(f).ok()) {
                out.push(seed.trim().to_owned());
            }
        }
        out
    }

    /// Passes a process's log on to the test's stderr, line by line, noting every line that holds
    /// a secret of the stack or anything shaped like an nkey seed or a private key.
    fn watch_for_secrets(&self, stderr: std::process::ChildStderr) {
        let (secrets, leaks, errors) = (self.secrets(), self.leaks.clone(), self.errors.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("ERROR") {
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                }
                if secrets.iter().any(|s| line.contains(s.as_str())) || looks_like_a_secret(&line) {
                    leaks.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                }
                eprintln!("{line}");
            }
        });
    }

    /// Every line the stack's processes have logged at ERROR so far.
    pub fn errors_logged(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A client for the stack's simulator (fast polling, no budget).
    pub fn asr_client(&self) -> tern_asr::AsrClient {
        let info = self.sim.info();
        let config = tern_asr::AsrConfig {
            endpoint: info.url.clone(),
            subscription_id: info.subscription_id.clone(),
            resource_group: info.resource_group.clone(),
            vault: info.vault.clone(),
            poll_interval: Duration::from_millis(20),
            backoff_base: Duration::from_millis(20),
            cache_storage_accounts: serde_json::from_value(cache_accounts(info)).unwrap_or_default(),
            lost_request_window: Duration::from_secs(2),
            ..tern_asr::AsrConfig::default()
        };
        tern_asr::AsrClient::new(
            config,
            tern_asr::TokenProvider::static_token(ASR_TOKEN),
            std::sync::Arc::new(tern_asr::Unlimited),
        )
        .expect("client")
    }

    /// SIGTERM: the worker drains and exits. Waits without blocking the runtime (the
    /// in-process simulator must keep serving while the worker drains). Returns the exit status.
    #[allow(unsafe_code)]
    pub async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let pid = self.workers[i].id() as i32;
        // SAFETY: signalling a child process we spawned.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let child = &mut self.workers[i];
        let mut status = None;
        wait_for("the worker to exit", DEADLINE, || {
            status = status.or_else(|| child.try_wait().ok().flatten());
            let done = status;
            async move { done }
        })
        .await
        .expect("worker exits")
    }

    /// GET a path of a worker's health/metrics server.
    pub async fn worker_http(&self, i: usize, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.http[i])).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
    }

    pub async fn admin(&self, path: &str) -> Value {
        reqwest::get(format!("{}/_sim/{path}", self.sim.url())).await.unwrap().json().await.unwrap()
    }

    /// Mutating requests the simulator accepted, as (operation, item).
    pub async fn accepted_ops(&self) -> Vec<(String, String)> {
        self.admin("oplog")
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == 202)
            .map(|e| (e["operation"].as_str().unwrap().to_owned(), e["item"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Every event of a plan so far (replayed from the start).
    /// While the bus does not answer (a server restarting, a cluster electing a leader), asks
    /// again until [`DEADLINE`].
    pub async fn events(&self, plan: &str) -> Vec<Event> {
        let filter = EventFilter::plan(plan);
        let mut stream = wait_for("the bus to replay events", DEADLINE, || async {
            self.bus.events(&filter, StartAt::Beginning).await.ok()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        for _ in 0..stream.backlog() {
            match tokio::time::timeout(DEADLINE, stream.next()).await {
                Ok(Some(Ok(e))) => out.push(e.event),
                Ok(Some(Err(_))) => continue,
                _ => break,
            }
        }
        out
    }

    /// Waits until the plan's events satisfy `done`.
    pub async fn wait_events(&self, plan: &str, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_for(what, DEADLINE, || async {
            let events = self.events(plan).await;
            done(&events).then_some(events)
        })
        .await
        .unwrap()
    }
}

/// 32 random hex characters.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let part = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", part(), part())
}

/// A client of the planner at `addr` (`HOST:PORT`), calling with `token` if one is given.
pub async fn planner_client(
    addr: &str,
    token: Option<&str>,
) -> Result<tern_proto::auth::Client, tonic::transport::Error> {
    planner_client_tls(addr, token, None).await
}

/// A client of the planner at `addr`, over TLS when `ca` (PEM) is given, trusting only that CA.
pub async fn planner_client_tls(
    addr: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> Result<tern_proto::auth::Client, tonic::transport::Error> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut channel = tonic::transport::Channel::from_shared(format!("{scheme}://{addr}")).expect("a planner address");
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("the planner's CA file");
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        channel = channel.tls_config(tls)?;
    }
    let token = tern_proto::auth::BearerToken::new(token).expect("a header-safe token");
    Ok(tern_proto::auth::client(channel.connect().await?, token))
}

impl Stack {
    /// Says the test breaks a NATS permission on purpose: the stack does not fail it for that.
    pub fn expect_permission_violations(&mut self) {
        self.violations_expected = true;
    }
}

impl Drop for Stack {
    /// Stops the processes. A permission the server refused fails the test (unless expected): every
    /// service must get by with the permissions its identity has.
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        if std::thread::panicking() {
            return;
        }
        let violations = self.nats.permission_violations();
        if !self.violations_expected && !violations.is_empty() {
            panic!(
                "nats-server refused {} request(s) of Tern's own services:\n{}",
                violations.len(),
                violations.join("\n")
            );
        }
        let leaks = self.leaks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(leaks.is_empty(), "a process of the stack logged a secret, in {} line(s)", leaks.len());
    }
}

/// (phase, outcome) of a VM event.
pub fn kind(e: &Event) -> Option<(tern_proto::Phase, tern_proto::Outcome)> {
    match &e.body {
        Some(tern_proto::event::Body::Vm(v)) => {
            Some((tern_proto::Phase::try_from(v.phase).ok()?, tern_proto::Outcome::try_from(v.outcome).ok()?))
        }
        _ => None,
    }
}

pub fn vm_event(e: &Event) -> &tern_proto::VmEvent {
    match &e.body {
        Some(tern_proto::event::Body::Vm(v)) => v,
        _ => panic!("not a VM event"),
    }
}

/// Whether a log line holds something shaped like a credential, whoever's: an nkey seed
/// (`S` + key type + 56 base32 characters), a PEM private key, or a bearer token.
pub fn looks_like_a_secret(line: &str) -> bool {
    let seed = line.as_bytes().windows(58).any(|w| {
        w[0] == b'S'
            && matches!(w[1], b'U' | b'A' | b'O' | b'N' | b'C' | b'X')
            && w[2..].iter().all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c))
    });
    let lower = line.to_ascii_lowercase();
    let bearer = lower.match_indices("bearer ").any(|(i, m)| {
        let word = line[i + m.len()..].split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c))).next();
        word.is_some_and(|w| w.len() >= 16)
    });
    seed || line.contains("PRIVATE KEY-----") || bearer
}

#[cfg(test)]
mod tests {
    use super::looks_like_a_secret;

    #[test]
    fn seeds_keys_and_bearer_tokens_look_like_secrets_and_ordinary_lines_do_not() {
        let seed = nkey_shaped();
        assert!(looks_like_a_secret(&format!("connecting with {seed}")));
        assert!(looks_like_a_secret("-----BEGIN PRIVATE KEY-----"));
        assert!(looks_like_a_secret("authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi"));
        assert!(!looks_like_a_secret("the planner's API needs a bearer token (see endpoints.json)"));
        assert!(!looks_like_a_secret(
            "INFO command finished outcome=succeeded trace_id=09d38ed71fdeb450d9542680d2f88e3a"
        ));
        assert!(!looks_like_a_secret("nkey UASYQYR36RLOM3KJC7PXEH4XECMERKX35VO32IH27FZFP6RNVCLRMRQ3 refused"));
    }

    fn nkey_shaped() -> String {
        format!("SU{}", "A2B3C4D5E6F7G".repeat(5).chars().take(56).collect::<String>())
    }
}
