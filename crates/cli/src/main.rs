//! `tern`: Tern's command line.
//!
//! `tern up` runs the whole stack on this machine — nats-server, the ASR simulator seeded with
//! a demo estate, the planner and the three workers, each as a child process — writes
//! `DATA_DIR/endpoints.json` once everything is ready, and stops it all on Ctrl-C or SIGTERM.
//! `tern plan …` finds that stack through the file (or `--planner`) and drives plans.

mod plan;
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
    /// Submit, check and follow failback plans.
    Plan {
        #[command(flatten)]
        target: plan::Target,
        #[command(subcommand)]
        command: plan::PlanCommand,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Plan { target, command } => plan::run(&target, command).await,
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // Exit codes: 0 ok, 1 some VMs failed, 2 a usage or input error (what to do is in the message).
            eprintln!("tern: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
