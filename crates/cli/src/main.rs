//! `tern`: Tern's command line.
//!
//! `tern up` runs the whole stack on this machine — nats-server, the ASR simulator seeded with
//! a demo estate, the planner and the three workers, each as a child process — writes
//! `DATA_DIR/endpoints.json` once everything is ready, and stops it all on Ctrl-C or SIGTERM.

mod up;

use clap::{Parser, Subcommand};

/// Tern: fleet-scale failback of Azure VMs protected by Azure Site Recovery.
#[derive(Parser, Debug)]
#[command(name = "tern", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run nats-server, the ASR simulator, the planner and the workers here until Ctrl-C.
    Up(up::UpArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
