//! `tern-failover`: the failover worker binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tern_worker::main_for(std::sync::Arc::new(tern_failover::FailoverPhase)).await
}
