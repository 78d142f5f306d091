//! Child processes of a local stack, shared by `tern up` and the fleet benchmark: each started
//! with its stderr in `LOGS/NAME.log`, Tern services waited on until they print their JSON
//! ready line, and all stopped in reverse start order (SIGTERM, then SIGKILL).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process.
#[derive(Debug)]
pub struct Proc {
    /// Its binary's name.
    pub name: &'static str,
    /// Its pid.
    pub pid: u32,
    child: Child,
}

/// The processes of a stack, in start order. Dropping it kills them (`kill_on_drop`).
#[derive(Debug)]
pub struct Procs {
    list: Vec<Proc>,
    logs: PathBuf,
}

impl Procs {
    /// No process yet; logs go to `logs` (created).
    pub fn new(logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        Ok(Self { list: Vec::new(), logs: logs.to_owned() })
    }

    /// The processes, in start order.
    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.list.iter()
    }

    /// The log file of process `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `cmd` as `name`, stdout discarded.
    pub fn spawn(&mut self, cmd: Command, name: &'static str) -> anyhow::Result<()> {
        self.start(cmd, name, Stdio::null()).map(drop)
    }

    fn start(&mut self, mut cmd: Command, name: &'static str, stdout: Stdio) -> anyhow::Result<&mut Child> {
        let path = self.log_path(name);
        let log = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(log).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited as soon as it started"))?;
        self.list.push(Proc { name, pid, child });
        Ok(&mut self.list.last_mut().expect("just pushed").child)
    }

    /// Starts a Tern process and waits up to `timeout` for the JSON line it prints on stdout
    /// when ready; returns that line.
    pub async fn start_ready(&mut self, cmd: Command, name: &'static str, timeout: Duration) -> anyhow::Result<Value> {
        let log = self.log_path(name);
        let stdout = self.start(cmd, name, Stdio::piped())?.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| anyhow!("{name} did not report ready within {timeout:?}; see {}", log.display()))?
            .with_context(|| format!("reading {name}'s ready line"))?
            .ok_or_else(|| anyhow!("{name} exited before it was ready; see {}", log.display()))?;
        // Keep reading so a later line on stdout never blocks or kills the process.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        serde_json::from_str(&line).with_context(|| format!("{name}'s ready line is not JSON: {line:?}"))
    }

    /// A process that has exited, with its status.
    pub fn exited(&mut self) -> Option<(&'static str, ExitStatus)> {
        self.list.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(status)) => Some((p.name, status)),
            _ => None,
        })
    }

    /// SIGTERM in reverse start order (workers drain first, nats-server last); a process still
    /// running after `timeout` is killed, and named on stderr after `who`.
    pub async fn stop(&mut self, timeout: Duration, who: &str) {
        while let Some(mut p) = self.list.pop() {
            terminate(p.pid);
            if tokio::time::timeout(timeout, p.child.wait()).await.is_err() {
                eprintln!("{who}: {} did not stop within {timeout:?}; killing it", p.name);
                let _ = p.child.kill().await;
            }
        }
    }
}

#[allow(unsafe_code)]
fn terminate(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: sends a signal to a child process this process started and has not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// Withholds this process's `TERN_*` variables from a Tern service started with `cmd`, all but the
/// ones every service reads in-process (`tern_service::config::PROCESS_VARIABLES`: log filter
/// and format, a fixed Azure token). A service refuses a `TERN_*` variable it does not know, and
/// ours may be the CLI's own (`TERN_DATA_DIR`, `TERN_PLANNER`, ...) or a tool's
/// (`TERN_NATS_SERVER`, `TERN_TEST_SEED`, ...). Set the service's settings after this.
pub fn withhold_tern_variables(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with(tern_service::config::PREFIX)
            && !tern_service::config::PROCESS_VARIABLES.contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
}

/// Connects to a nats-server that is starting, for up to `timeout`.
pub async fn connect_bus(
    url: &str,
    client: &str,
    auth: &tern_bus::NatsAuth,
    timeout: Duration,
) -> anyhow::Result<tern_bus::Bus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tern_bus::Bus::connect_with(url, client, auth).await {
            Ok(bus) => return Ok(bus),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(anyhow!("nats-server at {url} did not answer within {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}
