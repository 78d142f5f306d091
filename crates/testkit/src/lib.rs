//! Test support for Tern: real processes on loopback, and waiting on conditions with deadlines.
//!
//! - [`NatsServer`]: a real `nats-server -js` on a free loopback port in a temp dir, killed on drop.
//! - [`wait_until`] / [`wait_for`]: poll a condition until it holds or a deadline passes.
//! - [`Seed`]: a reproducible seed for randomised tests, printed if the test fails.
//! - [`stack`]: nats-server + the ASR simulator + service processes, for worker tests.

/// An OTLP trace receiver in the test process.
pub use tern_telemetry::receiver as otlp;
pub mod stack;

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

/// A running `nats-server -js` on 127.0.0.1, with its store in a temp dir. Killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> Result<Self, TestkitError> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new().prefix("tern-nats-").tempdir().map_err(io("creating a temp dir"))?;
        let mut server = Self { binary, child: None, port: 0, dir };
        server.spawn(None).await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A fresh client connection.
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to the test nats-server")
    }

    /// Kills the server with SIGKILL (no clean shutdown), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let port = self.port;
        self.spawn(Some(port)).await
    }

    async fn spawn(&mut self, port: Option<u16>) -> Result<(), TestkitError> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(io("creating the ports dir"))?;
        let log_path = self.dir.path().join("nats-server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening the server log"))?;
        let log_err = log.try_clone().map_err(io("opening the server log"))?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-n", "tern-test"])
            .arg("-sd")
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io(format!("starting {}", self.binary.display())))?;
        let pid = child.id();
        self.child = Some(child);

        // The server writes its actually bound ports to <ports_dir>/<name>_<pid>.ports.
        let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
        let port = wait_for("nats-server to write its ports file", Duration::from_secs(20), || {
            let ports_dir = ports_dir.clone();
            let ports_file = ports_file.clone();
            async move { read_client_port(&ports_file).or_else(|| any_ports_file(&ports_dir)) }
        })
        .await;
        let port = match port {
            Ok(p) => p,
            Err(e) => return Err(self.not_ready(e.to_string())),
        };
        self.port = port;

        let url = self.url();
        let ready = wait_until("JetStream to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                let Ok(client) = async_nats::connect(&url).await else { return false };
                async_nats::jetstream::new(client).query_account().await.is_ok()
            }
        })
        .await;
        if let Err(e) = ready {
            return Err(self.not_ready(e.to_string()));
        }
        Ok(())
    }

    fn not_ready(&mut self, reason: String) -> TestkitError {
        self.kill();
        let log = std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        TestkitError::NotReady { reason, log: tail.into_iter().rev().collect::<Vec<_>>().join("\n") }
    }
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
