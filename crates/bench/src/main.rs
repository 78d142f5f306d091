//! `tern-bench`: the fleet benchmark of the design's targets (§6), run against the whole stack
//! as separate processes of a release build (`make bench`, `make bench-quick`).
//!
//! Each scenario runs N times on a fresh stack; the medians go to stdout as a Markdown table
//! with the targets, every run's raw figures to `OUT/bench-<timestamp>.json` and
//! `OUT/latest.json`. Progress goes to stderr. A benchmark, not a test: it prints figures and
//! fails only when a run could not be measured (a process died, a VM did not succeed).

mod events;
mod probe;
mod report;
mod scenario;
mod stack;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use serde_json::json;

use crate::report::ScenarioResult;
use crate::scenario::{BenchSettings, Scenario};

/// Fleet benchmark: S1 orchestration overhead, S2 ARM-bound, S3 event latency, S4 an estate of
/// three subscriptions.
#[derive(Parser, Debug)]
#[command(name = "tern-bench", version)]
struct Args {
    /// Small fleets and one run each: a smoke run of every scenario in about two minutes.
    #[arg(long)]
    quick: bool,
    /// Runs of each scenario; the table shows medians (default 3, 1 with --quick).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Which,
    /// Directory of the release binaries (default: this binary's directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Where results, logs and nats stores go.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out: PathBuf,
    /// nats-server binary (default: .tools/venv/bin/nats-server, then PATH).
    #[arg(long, env = "TERN_NATS_SERVER", value_name = "PATH")]
    nats_server: Option<PathBuf>,
    /// VMs in S1 (default 10,000; 500 with --quick).
    #[arg(long, value_name = "N")]
    vms_s1: Option<usize>,
    /// VMs in S2 (default 2,000; 200 with --quick).
    #[arg(long, value_name = "N")]
    vms_s2: Option<usize>,
    /// VMs in S3 (default 500; 100 with --quick).
    #[arg(long, value_name = "N")]
    vms_s3: Option<usize>,
    /// VMs in S4, spread evenly over its 3 subscriptions × 2 vaults (default 6,000; 600 with --quick).
    #[arg(long, value_name = "N")]
    vms_s4: Option<usize>,
    /// Per-phase concurrency of the plan (spec.concurrency: failover, reprotect, cleanup).
    #[arg(long, value_name = "N", default_value_t = 500)]
    concurrency: u32,
    /// Commands each worker runs at once (TERN_CONCURRENCY; default: the workers' own).
    #[arg(long, value_name = "N")]
    worker_concurrency: Option<usize>,
    /// How often the services poll ASR jobs, seconds (TERN_POLL_INTERVAL_SECS; `tern up` uses 0.5).
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    poll_interval: f64,
    /// Simulated seconds per real second in S2 and S3 (a 10-30 minute reprotect takes 2-6 s at 300).
    #[arg(long, value_name = "FACTOR", default_value_t = 300.0)]
    time_compression: f64,
    /// Longest one plan may run, seconds, before its run is abandoned.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    S1,
    S2,
    S3,
    S4,
    All,
}

impl Args {
    fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            Which::S1 => vec![Scenario::S1],
            Which::S2 => vec![Scenario::S2],
            Which::S3 => vec![Scenario::S3],
            Which::S4 => vec![Scenario::S4],
            Which::All => Scenario::ALL.to_vec(),
        }
    }

    fn vms(&self, s: Scenario) -> usize {
        let (set, full, quick) = match s {
            Scenario::S1 => (self.vms_s1, 10_000, 500),
            Scenario::S2 => (self.vms_s2, 2_000, 200),
            Scenario::S3 => (self.vms_s3, 500, 100),
            Scenario::S4 => (self.vms_s4, 6_000, 600),
        };
        set.unwrap_or(if self.quick { quick } else { full })
    }

    fn runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 1 } else { 3 })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Ctrl-C drops the bench, and with it every child process (kill_on_drop).
    let outcome = tokio::select! {
        r = bench(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; every process of the stack was stopped")),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.runs() == 0 {
        bail!("--runs must be at least 1");
    }
    if !(args.poll_interval > 0.0 && args.time_compression > 0.0) {
        bail!("--poll-interval and --time-compression must be > 0");
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(PathBuf::from).context("this binary has no directory")?,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = std::path::absolute(&args.out)?;
    let settings = BenchSettings {
        bin_dir: bin_dir.clone(),
        nats_server: nats_server(args.nats_server.clone())?,
        out_dir: out.clone(),
        plan_concurrency: args.concurrency,
        worker_concurrency: args.worker_concurrency,
        poll_interval_secs: args.poll_interval,
        time_compression: args.time_compression,
        timeout: Duration::from_secs(args.timeout),
    };
    let started_at = now_rfc3339();
    let started = Instant::now();
    let runs = args.runs();
    let mut results = Vec::new();
    for s in args.scenarios() {
        let vms = args.vms(s);
        if vms == 0 {
            bail!("{} needs at least one VM", s.key());
        }
        let mut result = ScenarioResult { scenario: s, vms, runs: Vec::new() };
        for i in 1..=runs {
            let name = s.key().to_uppercase();
            eprintln!("{name} run {i}/{runs}: {vms} VMs, {}", s.title());
            let t = Instant::now();
            let figures = scenario::run(s, vms, i, &settings)
                .await
                .with_context(|| format!("{name} run {i}/{runs} ({vms} VMs)"))?;
            eprintln!(
                "{name} run {i}/{runs}: {} ({:.0} s with start-up)",
                summary(s, &figures.figures),
                t.elapsed().as_secs_f64()
            );
            result.runs.push(figures);
        }
        results.push(result);
    }

    let rows = report::table(&results);
    println!("{}", report::markdown(&results, &rows));
    let record = report::record(
        json!({
            "started_at": started_at,
            "duration_s": started.elapsed().as_secs_f64(),
            "quick": args.quick,
            "runs": runs,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "git_commit": git_commit(),
            "bin_dir": bin_dir,
            "nats_server": settings.nats_server,
            "plan_concurrency": settings.plan_concurrency,
            "worker_concurrency": settings.worker_concurrency,
            "poll_interval_secs": settings.poll_interval_secs,
            "time_compression": settings.time_compression,
        }),
        &results,
        &rows,
    );
    let text = serde_json::to_string_pretty(&record)? + "\n";
    let stamped = out.join(format!("bench-{}.json", started_at.replace(':', "-")));
    for path in [&stamped, &out.join("latest.json")] {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("tern-bench: results in {} (and latest.json)", stamped.display());
    Ok(())
}

/// The headline of a run, for the progress line.
fn summary(s: Scenario, f: &std::collections::BTreeMap<String, f64>) -> String {
    let g = |k: &str| f.get(k).copied().unwrap_or(f64::NAN);
    match s {
        Scenario::S1 => format!("makespan {:.1} s, {:.0} VMs/s", g("makespan_s"), g("vms_per_s")),
        Scenario::S2 | Scenario::S4 => format!(
            "makespan {:.1} s (forecast {:.1} s, {:.1} % off), lower bound {:.1} s (ratio {:.3}), {} × 429",
            g("makespan_s"),
            g("estimate_s"),
            g("estimate_error_pct"),
            g("lower_bound_s"),
            g("makespan_over_bound"),
            g("http_429")
        ),
        Scenario::S3 => format!(
            "event latency p50 {:.0} ms, p99 {:.0} ms over {} events",
            g("latency_p50_ms"),
            g("latency_p99_ms"),
            g("latency_events")
        ),
    }
}

/// nats-server: the flag or `$TERN_NATS_SERVER`, the project's tools dir, then PATH.
fn nats_server(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("nats-server {} does not exist; run `make setup`", p.display());
        }
        return Ok(p);
    }
    let tools = PathBuf::from(".tools/venv/bin/nats-server");
    if tools.is_file() {
        return Ok(std::path::absolute(tools)?);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("nats-server not found: run `make setup`, or set TERN_NATS_SERVER"))
}

fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The commit the benchmark binary was built from (`build.rs`), not what is checked out now.
fn git_commit() -> Option<String> {
    Some(env!("TERN_BENCH_BUILT_FROM")).filter(|c| !c.is_empty()).map(str::to_owned)
}
