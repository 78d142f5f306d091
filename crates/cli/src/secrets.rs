//! The credentials a local stack generates for itself: the planner API's tokens, one per role,
//! written where only this user can read them. `tern up` and `tern-bench` run their planner
//! with them, and the CLI finds them through `endpoints.json`.

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
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(token.as_bytes())?;
        Ok(path)
    };
    Ok(ApiTokens { reader_file: write("api-reader.token")?, operator_file: write("api-operator.token")? })
}
