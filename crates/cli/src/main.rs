//! `tern`: Tern's command line.
//!
//! `tern up` runs the whole stack on this machine — nats-server, the ASR simulator seeded with
//! a demo estate, the planner and the three workers, each as a child process — writes
//! `DATA_DIR/endpoints.json` once everything is ready, and stops it all on Ctrl-C or SIGTERM.
//! The other commands find that stack through the file (or `--planner` / `--nats`): `tern plan`
//! drives plans, `tern events` reads the event stream, `tern report` writes what a plan did,
//! `tern dlq` looks after the dead letters.

mod bus;
mod confirm;
mod dlq;
mod events;
mod exit;
mod output;
mod plan;
mod planfile;
mod progress;
mod report;
mod up;
mod vault;
mod vms;

use clap::{CommandFactory, Parser, Subcommand};

/// Tern: fleet-scale failback of Azure VMs protected by Azure Site Recovery.
///
/// Exit codes: 0 done, 1 a VM failed (or the plan was cancelled), 2 usage or input, 3 the stack
/// cannot be reached or refused the credentials, 4 refused by preflight.
/// Colour is off when NO_COLOR is set or the output is not a terminal.
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
        /// table, json or yaml (`plan submit -o json` prints the plan with its id).
        #[arg(long, short = 'o', value_enum, default_value_t, global = true)]
        output: output::Format,
        #[command(subcommand)]
        command: plan::PlanCommand,
    },
    /// The vault's replicated items: protection, health, RPO, readiness for failback.
    Vms {
        #[command(flatten)]
        target: plan::Target,
        #[command(flatten)]
        args: vms::VmsArgs,
    },
    /// Read the event stream the way an outside consumer does.
    Events {
        #[command(flatten)]
        target: plan::Target,
        #[command(flatten)]
        args: events::EventsArgs,
    },
    /// The dead letters: messages a consumer gave up on; list, show, replay (a command, as a new
    /// attempt through the planner) or purge them.
    Dlq {
        #[command(flatten)]
        target: plan::Target,
        /// table, json or yaml.
        #[arg(long, short = 'o', value_enum, default_value_t, global = true)]
        output: output::Format,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// What a plan did: per VM and in sum, with `tern plan estimate`'s forecast beside it, as
    /// Markdown, HTML or JSON.
    Report {
        #[command(flatten)]
        target: plan::Target,
        #[command(flatten)]
        args: report::ReportArgs,
    },
    /// Set up the NATS bus of a deployment: credentials, permissions, streams.
    Bus {
        #[command(subcommand)]
        command: bus::BusCommand,
    },
    /// Print a shell completion script: `tern completions bash > /etc/bash_completion.d/tern`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Ends the process quietly when its reader goes away (`tern events | head`), as Unix tools do,
/// instead of panicking on the failed write.
#[allow(unsafe_code)]
fn die_quietly_on_closed_pipe() {
    // SAFETY: restores the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    die_quietly_on_closed_pipe();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    runtime.block_on(run())
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Plan { target, output, command } => plan::run(&target, output, command).await,
        Command::Vms { target, args } => vms::run(&target, args).await,
        Command::Events { target, args } => events::run(&target, args).await,
        Command::Report { target, args } => report::run(&target, args).await,
        Command::Dlq { target, output, command } => dlq::run(&target, output, command).await,
        Command::Bus { command } => bus::run(command).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tern", &mut std::io::stdout());
            Ok(0)
        }
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // What to do is in the message; what kind of failure it was, in the code (`exit`).
            eprintln!("tern: {e:#}");
            std::process::ExitCode::from(exit::code_of(&e))
        }
    }
}
