//! `tern-schemas [REPO_ROOT]`: writes the event contract, generated from the proto descriptors
//! and the bus's subjects and headers, into `docs/events/` (`make schemas` runs it). Schemas of
//! types that no longer exist are removed.

use std::path::PathBuf;

use anyhow::Context;
use tern_bus::schema::{SCHEMA_DIR, documents};

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os().nth(1).map_or_else(|| PathBuf::from("."), PathBuf::from);
    let docs = documents();
    let schema_dir = root.join(SCHEMA_DIR);
    std::fs::create_dir_all(&schema_dir).with_context(|| format!("creating {}", schema_dir.display()))?;
    for entry in std::fs::read_dir(&schema_dir).with_context(|| format!("reading {}", schema_dir.display()))? {
        let path = entry?.path();
        let generated = docs.iter().any(|d| root.join(&d.path) == path);
        if !generated && path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(&path).with_context(|| format!("removing the stale {}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    for doc in &docs {
        let path = root.join(&doc.path);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(doc.text.as_str()) {
            std::fs::write(&path, &doc.text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    println!("{} schemas (events and hooks) and the AsyncAPI document are up to date", docs.len() - 1);
    Ok(())
}
