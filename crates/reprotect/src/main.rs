//! `tern-reprotect`: the reprotect worker binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tern_worker::main_for(std::sync::Arc::new(tern_reprotect::ReprotectPhase)).await
}
