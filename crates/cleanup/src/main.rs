//! `tern-cleanup`: the cleanup worker binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tern_worker::main_for(std::sync::Arc::new(tern_cleanup::CleanupPhase)).await
}
