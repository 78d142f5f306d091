//! Test support for Tern: real processes on loopback, and waiting on conditions with deadlines.
//!
//! - [`NatsServer`]: a real `nats-server -js` on a free loopback port in a temp dir, killed on drop.
//! - [`wait_until`] / [`wait_for`]: poll a condition until it holds or a deadline passes.
//! - [`Seed`]: a reproducible seed for randomised tests, printed if the test fails.
//! - [`stack`]: nats-server + the ASR simulator + service processes, for worker tests.
//! - [`TcpProxy`]: a loopback TCP proxy the test can cut, blackhole and heal (a partition).

/// An OTLP trace receiver in the test process.
pub use tern_telemetry::receiver as otlp;
mod proxy;
pub mod stack;

pub use proxy::{Link, TcpProxy};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest nats-server Tern supports: async-nats needs 2.10.8 to create KV buckets.
pub const MIN_NATS_SERVER: (u32, u32, u32) = (2, 10, 8);

/// Why the test kit could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No usable nats-server binary.
    #[error(
        "{0}\nInstall one with `make setup` (it puts nats-server into .tools/venv/bin), \
         or point TERN_NATS_SERVER at a nats-server >= 2.10.8 binary."
    )]
    NatsServerMissing(String),
    /// The server did not become ready.
    #[error("nats-server did not become ready: {reason}\n--- server log ---\n{log}")]
    NotReady {
        /// What was waited for.
        reason: String,
        /// The tail of the server's log.
        log: String,
    },
    /// Process or file-system failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// Finds the nats-server binary: `$TERN_NATS_SERVER`, then the project's tools dir
/// (`.tools/venv/bin/nats-server`, installed by `make setup`), then `PATH`. Checks its version.
pub fn find_nats_server() -> Result<PathBuf, TestkitError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("TERN_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(workspace_root().join(".tools/venv/bin/nats-server"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    let mut rejected = Vec::new();
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        match server_version(&candidate) {
            Some(v) if v >= MIN_NATS_SERVER => return Ok(candidate),
            Some((a, b, c)) => rejected.push(format!("{} is v{a}.{b}.{c}, too old", candidate.display())),
            None => rejected.push(format!("{} does not report a version", candidate.display())),
        }
    }
    let found = if rejected.is_empty() { "none found".to_owned() } else { rejected.join("; ") };
    Err(TestkitError::NatsServerMissing(format!("no nats-server >= 2.10.8 ({found}).")))
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn server_version(bin: &Path) -> Option<(u32, u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let v = text.rsplit(" v").next()?.trim();
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// A running `nats-server -js` on 127.0.0.1 (or a JetStream cluster of several), with its store
/// in a temp dir. Killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// With credentials: the dir of every identity's nkey and the server's `auth.conf`.
    credentials: Option<PathBuf>,
    /// With TLS: the servers' self-signed certificate, which clients trust as their CA.
    tls: Option<PathBuf>,
    /// One node, or the nodes of a cluster.
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    child: Option<Child>,
    /// The client port (0 until a lone server has picked one).
    port: u16,
    /// The route port, in a cluster.
    cluster_port: Option<u16>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> Result<Self, TestkitError> {
        let mut server = Self::new(false)?;
        server.nodes.push(Node { child: None, port: 0, cluster_port: None });
        server.spawn(0).await?;
        Ok(server)
    }

    /// Starts a server that admits only Tern's identities, each with its permissions
    /// ([`tern_bus::auth::generate`]), as `tern up` runs it. [`NatsServer::connect`] then
    /// connects as the bootstrap identity.
    pub async fn start_secured() -> Result<Self, TestkitError> {
        let mut server = Self::new(true)?;
        server.nodes.push(Node { child: None, port: 0, cluster_port: None });
        server.spawn(0).await?;
        Ok(server)
    }

    /// Starts a JetStream cluster of `nodes` servers as `deploy/nats/` runs one in production:
    /// `sync_interval: always`, Tern's identities and permissions, TLS for clients (a
    /// self-signed certificate: [`NatsServer::ca_file`]). Waits until JetStream answers.
    pub async fn start_cluster(nodes: usize) -> Result<Self, TestkitError> {
        let mut server = Self::new(true)?;
        let cert =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(|e| {
                TestkitError::Io { what: "generating a TLS certificate".into(), source: std::io::Error::other(e) }
            })?;
        let tls = server.dir.path().join("tls");
        std::fs::create_dir_all(&tls).map_err(io("creating the TLS dir"))?;
        std::fs::write(tls.join("cert.pem"), cert.cert.pem()).map_err(io("writing the certificate"))?;
        std::fs::write(tls.join("key.pem"), cert.signing_key.serialize_pem()).map_err(io("writing the key"))?;
        server.tls = Some(tls.join("cert.pem"));
        for _ in 0..nodes {
            let (port, cluster_port) = (free_port()?, free_port()?);
            server.nodes.push(Node { child: None, port, cluster_port: Some(cluster_port) });
        }
        for i in 0..nodes {
            server.launch(i)?;
        }
        server.wait_ready(0).await?;
        Ok(server)
    }

    fn new(secured: bool) -> Result<Self, TestkitError> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new().prefix("tern-nats-").tempdir().map_err(io("creating a temp dir"))?;
        let credentials = if secured {
            let credentials = dir.path().join("credentials");
            tern_bus::auth::generate(&credentials).map_err(io("generating NATS credentials"))?;
            Some(credentials)
        } else {
            None
        };
        Ok(Self { binary, dir, credentials, tls: None, nodes: Vec::new() })
    }

    /// How `identity` connects to this server: its nkey when the server is secured, and the CA
    /// when it speaks TLS.
    pub fn auth(&self, identity: tern_bus::Identity) -> tern_bus::NatsAuth {
        let mut auth = match &self.credentials {
            Some(dir) => tern_bus::NatsAuth::from_dir(identity, dir),
            None => tern_bus::NatsAuth::anonymous(identity),
        };
        auth.ca_file = self.tls.clone();
        auth
    }

    /// The nkey seed file of `identity`, when the server is secured.
    pub fn credentials(&self, identity: tern_bus::Identity) -> Option<PathBuf> {
        self.credentials.as_deref().map(|dir| tern_bus::auth::credentials_file(dir, identity))
    }

    /// The PEM file clients verify the servers' TLS certificate with, when they speak TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.clone()
    }

    /// The permission violations the servers logged so far (a refused publish or subscribe).
    pub fn permission_violations(&self) -> Vec<String> {
        self.log().lines().filter(|l| l.contains(" Violation - ")).map(str::to_owned).collect()
    }

    /// The servers' logs so far.
    pub fn log(&self) -> String {
        (0..self.nodes.len())
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        if self.nodes.len() == 1 {
            self.dir.path().join("nats-server.log")
        } else {
            self.dir.path().join(format!("nats-server-{i}.log"))
        }
    }

    /// `nats://127.0.0.1:<port>`; a cluster's nodes comma-separated (`tls://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        self.nodes.iter().map(|n| format!("{scheme}://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// The client port (of the first node).
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.node_store(0)
    }

    fn node_store(&self, i: usize) -> PathBuf {
        if self.nodes.len() == 1 { self.dir.path().join("store") } else { self.dir.path().join(format!("store-{i}")) }
    }

    /// A fresh client connection (as the bootstrap identity on a secured server).
    pub async fn connect(&self) -> async_nats::Client {
        self.bus(tern_bus::Identity::Bootstrap, "tern-test").await.client().clone()
    }

    /// A bus handle connected as `identity`.
    pub async fn bus(&self, identity: tern_bus::Identity, name: &str) -> tern_bus::Bus {
        tern_bus::Bus::connect_with(&self.url(), name, &self.auth(identity))
            .await
            .expect("connect to the test nats-server")
    }

    /// Kills every node with SIGKILL (no clean shutdown), keeping the stores.
    pub fn kill(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Kills node `i` with SIGKILL, keeping its store.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every node again on the same ports with the same stores.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        if self.nodes.len() == 1 {
            return self.spawn(0).await;
        }
        for i in 0..self.nodes.len() {
            self.launch(i)?;
        }
        self.wait_ready(0).await
    }

    /// Starts node `i` of a cluster again (after [`NatsServer::kill_node`]) and waits until it
    /// answers.
    pub async fn restart_node(&mut self, i: usize) -> Result<(), TestkitError> {
        self.kill_node(i);
        self.launch(i)?;
        self.wait_ready(i).await
    }

    fn log_files(&self, i: usize) -> Result<(std::fs::File, std::fs::File), TestkitError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(io("opening the server log"))?;
        let log_err = log.try_clone().map_err(io("opening the server log"))?;
        Ok((log, log_err))
    }

    /// Starts node `i` of a cluster from a configuration file of its own.
    fn launch(&mut self, i: usize) -> Result<(), TestkitError> {
        let routes: Vec<String> =
            self.nodes.iter().filter_map(|n| n.cluster_port).map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let node = &self.nodes[i];
        let mut conf = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: tern\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            node.port,
            self.node_store(i).display(),
            node.cluster_port.expect("a cluster node has a route port"),
            routes.join(", "),
        );
        if let Some(cert) = &self.tls {
            let key = cert.with_file_name("key.pem");
            conf.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(dir) = &self.credentials {
            // nats-server resolves an include against the including file's directory.
            let auth = tern_bus::auth::server_config_file(dir);
            let relative = auth.strip_prefix(self.dir.path()).unwrap_or(&auth);
            conf.push_str(&format!("include \"{}\"\n", relative.display()));
        }
        let path = self.dir.path().join(format!("node-{i}.conf"));
        std::fs::write(&path, conf).map_err(io("writing a node's configuration"))?;
        let (log, log_err) = self.log_files(i)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c").arg(&path).stdin(Stdio::null()).stdout(log).stderr(log_err);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io(format!("starting {}", self.binary.display())))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers JetStream requests.
    async fn wait_ready(&mut self, i: usize) -> Result<(), TestkitError> {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        let url = format!("{scheme}://127.0.0.1:{}", self.nodes[i].port);
        let auth = self.auth(tern_bus::Identity::Bootstrap);
        let ready = wait_until("JetStream to answer", Duration::from_secs(30), || {
            let (url, auth) = (url.clone(), auth.clone());
            async move {
                let Ok(bus) = tern_bus::Bus::connect_with(&url, "tern-test", &auth).await else { return false };
                bus.jetstream().query_account().await.is_ok()
            }
        })
        .await;
        match ready {
            Ok(()) => Ok(()),
            Err(e) => Err(self.not_ready(e.to_string())),
        }
    }

    /// Starts a lone server: on a free port the first time, then on the same one.
    async fn spawn(&mut self, i: usize) -> Result<(), TestkitError> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(io("creating the ports dir"))?;
        let (log, log_err) = self.log_files(i)?;
        let port = self.nodes[i].port;
        let port_arg = if port == 0 { "-1".to_owned() } else { port.to_string() };
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-n", "tern-test"])
            .arg("-sd")
            .arg(self.node_store(i))
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        if let Some(dir) = &self.credentials {
            cmd.arg("-c").arg(tern_bus::auth::server_config_file(dir));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io(format!("starting {}", self.binary.display())))?;
        let pid = child.id();
        self.nodes[i].child = Some(child);

        // The server writes its actually bound ports to <ports_dir>/<name>_<pid>.ports.
        let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
        let port = wait_for("nats-server to write its ports file", Duration::from_secs(20), || {
            let ports_dir = ports_dir.clone();
            let ports_file = ports_file.clone();
            async move { read_client_port(&ports_file).or_else(|| any_ports_file(&ports_dir)) }
        })
        .await;
        match port {
            Ok(p) => self.nodes[i].port = p,
            Err(e) => return Err(self.not_ready(e.to_string())),
        }
        self.wait_ready(i).await
    }

    fn not_ready(&mut self, reason: String) -> TestkitError {
        self.kill();
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        TestkitError::NotReady { reason, log: tail.into_iter().rev().collect::<Vec<_>>().join("\n") }
    }
}

/// A loopback port that was free a moment ago (for a cluster's nodes, which must know each
/// other's ports before they start).
fn free_port() -> Result<u16, TestkitError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io("finding a free port"))?;
    Ok(listener.local_addr().map_err(io("finding a free port"))?.port())
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_client_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json.get("nats")?.as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

fn any_ports_file(dir: &Path) -> Option<u16> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| read_client_port(&e.path()))
}

/// Asks Linux to kill the child when the test process dies, so no server outlives a crashed test.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub waited: Duration,
}

/// Polls `check` until it returns true or `timeout` passes. Polls often at first, then every
/// 100 ms. This is how tests wait: on a condition with a deadline, never a fixed sleep.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `check` until it returns `Some(value)` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout { what: what.to_owned(), waited: start.elapsed() });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A seed for randomised tests: `TERN_TEST_SEED` if set, else fresh. If the test panics the
/// seed is printed, so the run can be repeated with `TERN_TEST_SEED=<seed>`.
#[derive(Debug)]
pub struct Seed(u64);

impl Seed {
    /// Picks the seed.
    pub fn new() -> Self {
        let seed = std::env::var("TERN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        });
        Self(seed)
    }

    /// The value.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_starts_answers_and_restarts_on_the_same_port_and_store() {
        let mut server = NatsServer::start().await.expect("nats-server starts");
        let client = server.connect().await;
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream created");
        js.publish("keep.one", "x".into()).await.unwrap().await.unwrap();
        let port = server.port();

        server.restart().await.expect("restarts");
        assert_eq!(server.port(), port);
        let js = async_nats::jetstream::new(server.connect().await);
        let mut stream = js.get_stream("KEEP").await.expect("stream survives a restart");
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    }

    #[tokio::test]
    async fn waiting_reports_what_it_waited_for() {
        let err = wait_until("the impossible", Duration::from_millis(30), || async { false }).await.unwrap_err();
        assert!(err.to_string().contains("the impossible"), "{err}");
        let mut n = 0;
        let v = wait_for("a count of 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { (n >= 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
