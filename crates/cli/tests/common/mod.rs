//! The `tern` binary as a user runs it: `tern up` in a temporary data dir, commands against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tern_testkit::{stack::DEADLINE, wait_for};

/// A `tern up` stack; SIGKILLed on drop if the test did not stop it.
pub struct Up {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub endpoints: serde_json::Value,
}

impl Up {
    /// `tern up ARGS --data-dir TMP`, once its endpoints.json is written.
    pub async fn start(args: &[&str]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let nats = tern_testkit::find_nats_server().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("up")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("TERN_NATS_SERVER", nats)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let file = dir.path().join("endpoints.json");
        let endpoints = wait_for("endpoints.json", DEADLINE, || {
            let text = std::fs::read_to_string(&file).ok();
            async move { text.and_then(|t| serde_json::from_str(&t).ok()) }
        })
        .await
        .unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("{e}")
        });
        Up { child, dir, endpoints }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `tern ARGS --data-dir DIR`: (exit code, stdout, stderr).
    pub fn tern(&self, args: &[&str]) -> Output {
        tern_in(self.dir.path(), args)
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        sigterm(self.child.id());
        let child = &mut self.child;
        wait_for("tern up to exit", DEADLINE, || {
            let s = child.try_wait().ok().flatten();
            async move { s }
        })
        .await
        .unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Let it stop its children; a test that failed half-way must not leak processes.
            sigterm(self.child.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
    }
}

/// What a `tern` command did.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Both streams, for assertion messages and text checks.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn tern_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[allow(unsafe_code)]
pub fn sigterm(pid: u32) {
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

/// Debian's Chromium (`make setup` installs it), or `TERN_CHROMIUM`.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("TERN_CHROMIUM") {
        return path.into();
    }
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(dir) =
            std::env::var_os("PATH").iter().flat_map(std::env::split_paths).find(|d| d.join(candidate).is_file())
        {
            return dir.join(candidate);
        }
    }
    panic!("no Chromium found: run `make setup` (installs Debian's chromium) or set TERN_CHROMIUM");
}

/// The project's Python (`make setup`'s venv, beside its nats-server), or `TERN_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("TERN_PYTHON") {
        return path.into();
    }
    let nats = tern_testkit::find_nats_server().expect("nats-server (make setup)");
    let beside = nats.parent().map(|d| d.join("python")).filter(|p| p.is_file());
    let venv = tern_testkit::workspace_root().join(".tools/venv/bin/python");
    beside.or_else(|| venv.is_file().then_some(venv)).expect("no Python venv: run `make setup`, or set TERN_PYTHON")
}
