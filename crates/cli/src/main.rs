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

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Tern: fleet-scale failback of Azure VMs protected by Azure Site Recovery.
///
/// Exit codes: 0 done, 1 a VM failed (or the plan was cancelled), 2 usage or input, 3 the stack
/// cannot be reached or refused the credentials, 4 refused by preflight.
/// Colour is off when NO_COLOR is set or the output is not a terminal.
#[derive(Parser, Debug)]
#[command(name = "tern", version)]
struct Cli {
    /// A JMESPath expression applied to what `-o json` or `-o yaml` prints, as `az --query`
    /// (e.g. `plan list -o json --query 'plans[].plan_id'`).
    #[arg(long, global = true, value_name = "EXPR")]
    query: Option<String>,
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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.query.as_deref().map_or(Ok(()), |q| set_query(&matches, q)) {
        Ok(()) => execute(cli.command).await,
        Err(e) => Err(e),
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

/// `--query` for the command's JSON or YAML; refused where it prints a table, Markdown or HTML.
fn set_query(matches: &clap::ArgMatches, expression: &str) -> anyhow::Result<()> {
    // The innermost command that has `-o` says what it prints (its default, unless given).
    let mut chain = vec![matches];
    while let Some((_, sub)) = chain[chain.len() - 1].subcommand() {
        chain.push(sub);
    }
    let output = chain.iter().rev().find_map(|m| {
        m.try_get_raw("output").ok().flatten().and_then(|mut v| v.next()).map(|v| v.to_string_lossy().into_owned())
    });
    match output.as_deref() {
        Some("json" | "yaml") => output::set_query(expression),
        Some(other) => anyhow::bail!("--query filters JSON or YAML, not -o {other}: add -o json or -o yaml"),
        None => anyhow::bail!("--query filters JSON or YAML output, and this command has no -o"),
    }
}

async fn execute(command: Command) -> anyhow::Result<u8> {
    match command {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLI_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");

    /// Every command's `--help`, as one Markdown page.
    fn reference() -> String {
        // The same text on every machine: no terminal width, no variable's value.
        let mut tern = hide_env_values(Cli::command()).term_width(100);
        tern.build();
        let mut page = String::from(
            "# `tern` command reference\n\nEvery command's `--help`. Generated from the CLI's definitions: \
             `make cli-docs` writes it, and a test of `tern-cli` fails when it differs.\n",
        );
        section(&mut tern, &mut page);
        page
    }

    fn hide_env_values(command: clap::Command) -> clap::Command {
        command.mut_args(|a| a.hide_env_values(true)).mut_subcommands(hide_env_values)
    }

    fn section(command: &mut clap::Command, page: &mut String) {
        let name = command.get_bin_name().unwrap_or(command.get_name()).to_owned();
        // Without the trailing spaces clap puts on blank lines, which editors remove.
        let help: Vec<String> =
            command.render_long_help().to_string().lines().map(|l| l.trim_end().to_owned()).collect();
        page.push_str(&format!("\n## `{name}`\n\n```text\n{}\n```\n", help.join("\n").trim_end()));
        for sub in command.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            section(sub, page);
        }
    }

    #[test]
    fn docs_cli_md_is_every_command_s_help() {
        let page = reference();
        if std::env::var_os("TERN_BLESS").is_some() {
            std::fs::write(CLI_MD, &page).unwrap();
        }
        let committed = std::fs::read_to_string(CLI_MD).unwrap_or_default();
        assert!(
            committed == page,
            "docs/cli.md is not the CLI's help: regenerate it with `make cli-docs` \
             (TERN_BLESS=1 cargo test -p tern-cli --bin tern docs_cli_md)"
        );
    }
}
