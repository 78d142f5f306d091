//! The credentials a local stack generates for itself: the planner API's tokens, one per role,
//! and its TLS certificate, written where only this user can read them. `tern up` and
//! `tern-bench` run their planner with them, and the CLI finds them through `endpoints.json`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where a stack's API tokens are.
#[derive(Clone, Debug)]
pub struct ApiTokens {
    /// The reader role's token file.
    pub reader_file: PathBuf,
    /// The operator role's token file.
    pub operator_file: PathBuf,
}

impl ApiTokens {
    /// The planner's settings that point at these files.
    pub fn planner_env(&self) -> [(&'static str, String); 2] {
        [
            ("TERN_API__READER_TOKEN_FILE", self.reader_file.display().to_string()),
            ("TERN_API__OPERATOR_TOKEN_FILE", self.operator_file.display().to_string()),
        ]
    }
}

/// Fresh tokens for both roles in `dir` (created `0700`; each file `0600`), replacing any from
/// an earlier run.
pub fn generate_api_tokens(dir: &Path) -> anyhow::Result<ApiTokens> {
    private_dir(dir)?;
    let write = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        write_new(&path, &token, 0o600)?;
        Ok(path)
    };
    Ok(ApiTokens { reader_file: write("api-reader.token")?, operator_file: write("api-operator.token")? })
}

/// Creates `dir` (and its parents) readable by this user only.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `text` to a new `path` with `mode`, replacing a file an earlier run left there.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The planner API's TLS certificate and key.
#[derive(Clone, Debug)]
pub struct ApiTls {
    /// The certificate (PEM), self-signed for `127.0.0.1` and `localhost`: what the CLI trusts.
    pub cert_file: PathBuf,
    /// Its private key (PEM, `0600`).
    pub key_file: PathBuf,
}

impl ApiTls {
    /// The planner's settings that point at these files.
    pub fn planner_env(&self) -> [(&'static str, String); 2] {
        [
            ("TERN_API__TLS_CERT_FILE", self.cert_file.display().to_string()),
            ("TERN_API__TLS_KEY_FILE", self.key_file.display().to_string()),
        ]
    }
}

/// A fresh self-signed certificate for a planner on this machine, in `dir` (created `0700`),
/// replacing any from an earlier run.
pub fn generate_api_tls(dir: &Path) -> anyhow::Result<ApiTls> {
    private_dir(dir)?;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .context("generating the API's TLS certificate")?;
    let (cert_file, key_file) = (dir.join("api-tls.crt"), dir.join("api-tls.key"));
    write_new(&cert_file, &cert.cert.pem(), 0o644)?;
    write_new(&key_file, &cert.signing_key.serialize_pem(), 0o600)?;
    Ok(ApiTls { cert_file, key_file })
}
