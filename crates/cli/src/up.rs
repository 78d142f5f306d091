//! `tern up`: the whole stack on this machine, as child processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tern_cli::estate::{Estate, vault_arm_id};
use tern_cli::procs::{Procs, connect_bus, free_port, withhold_tern_variables};
use tokio::process::Command;

/// How long one process may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Simulated seconds per real second: a 10-30 minute reprotect takes 2-6 seconds.
const TIME_COMPRESSION: &str = "300";
/// How often the services list jobs: simulated jobs take seconds.
const POLL_INTERVAL_SECS: &str = "0.5";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the stack keeps its state, logs and `endpoints.json`.
    #[arg(long, env = "TERN_DATA_DIR", default_value = ".tern")]
    data_dir: PathBuf,
    /// VMs in the demo estate (all failed over and reprotected, ready for failback), in each
    /// vault.
    #[arg(long, default_value_t = 200)]
    vms: usize,
    /// Subscriptions the simulated estate spans, each with its own ARM budget.
    #[arg(long, default_value_t = 1, value_name = "N")]
    subscriptions: usize,
    /// Recovery Services vaults in each subscription. The first vault keeps the default names
    /// (VMs vm-00001…); vault V of subscription S names its VMs sSvV-vm-00001…. Every service
    /// acts on every vault, and endpoints.json lists them (`vaults`).
    #[arg(long, default_value_t = 1, value_name = "M")]
    vaults_per_subscription: usize,
    /// Every Nth demo VM has critical replication health, so preflight has something to block.
    #[arg(long, default_value_t = 50)]
    unhealthy_every: usize,
    /// Make one operation fail for one VM, as ASR would: VM:OPERATION:CODE (repeatable; e.g.
    /// vm-00007:failover:28031). The simulator checks the form.
    #[arg(long, value_name = "VM:OP:CODE")]
    fail: Vec<String>,
    /// Make the source shutdown before this VM's failover fail (repeatable); the failover goes
    /// on, and the report says the source was not shut down.
    #[arg(long, value_name = "VM")]
    fail_shutdown: Vec<String>,
    /// A vCPU quota in a target region, for every subscription: REGION:FAMILY:LIMIT (repeatable;
    /// FAMILY a usage name such as standardDSv3Family, or `cores` for the regional total; e.g.
    /// eastus:standardDSv3Family:8). Preflight blocks the VMs that would not fit; a failover
    /// over quota fails with 28031. The simulator checks the form.
    #[arg(long, value_name = "REGION:FAMILY:LIMIT")]
    quota: Vec<String>,
    /// A VM size not available in a region (repeatable; e.g. eastus:Standard_D4s_v3): preflight
    /// blocks its VMs. The simulator checks the form.
    #[arg(long, value_name = "REGION:SIZE")]
    restrict_sku: Vec<String>,
    /// Also fail back every ready VM, follow the plan to its end, print the report summary,
    /// write the HTML report and stop. Without --fail, two VMs fail as ASR would (quota at
    /// failover, connectivity at reprotect) so the report has something to show.
    #[arg(long)]
    demo: bool,
}

/// What `--demo` makes fail when no `--fail` is given: one VM per kind of failure.
const DEMO_FAILURES: [&str; 2] = ["vm-00042:failover:28031", "vm-00137:reprotect:151037"];

/// Runs the stack until stopped (exit code 0), or with `--demo` until its plan ends (0 when it
/// ran to its end, failures injected by the demo included, else 1).
pub async fn run(mut args: UpArgs) -> anyhow::Result<u8> {
    if args.demo && args.fail.is_empty() {
        args.fail = DEMO_FAILURES.iter().map(|f| f.to_string()).collect();
    }
    if args.vms == 0 {
        bail!("--vms must be at least 1");
    }
    if args.subscriptions == 0 || args.vaults_per_subscription == 0 {
        bail!("--subscriptions and --vaults-per-subscription must be at least 1");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    let endpoints_file = args.data_dir.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints_file);
    let mut procs = Procs::new(&args.data_dir.join("logs"))?;
    let started = start(&args, &mut procs).await;
    let outcome = match started {
        Ok(endpoints) => {
            let text = serde_json::to_string_pretty(&endpoints)?;
            std::fs::write(&endpoints_file, format!("{text}\n"))
                .with_context(|| format!("writing {}", endpoints_file.display()))?;
            println!("tern up: the stack is running (Ctrl-C stops it)");
            let mut lines = tern_cli::columns::Columns::new(Vec::<String>::new());
            for key in ["nats_url", "planner_addr", "sim_url", "vault_id"] {
                lines.row(["  ".to_owned() + key, endpoints[key].as_str().unwrap_or_default().to_owned()]);
            }
            let vaults = endpoints["vaults"].as_array().map_or(1, Vec::len);
            if vaults > 1 {
                let estate = format!("{vaults} vaults in {} subscriptions", args.subscriptions);
                lines.row(["  vaults".to_owned(), format!("{estate} (`tern vms --all-vaults` lists their VMs)")]);
            }
            lines.row(["  endpoints".to_owned(), endpoints_file.display().to_string()]);
            lines.row(["  logs".to_owned(), args.data_dir.join("logs").display().to_string()]);
            print!("{lines}");
            if args.demo {
                demo(&args.data_dir, !args.fail.is_empty()).await
            } else {
                wait_for_stop(&mut procs).await.map(|()| 0)
            }
        }
        Err(e) => Err(e),
    };
    procs.stop(STOP_TIMEOUT, "tern up").await;
    let _ = std::fs::remove_file(&endpoints_file);
    outcome
}

/// Fails back every VM ready for failback (skipping the ones preflight blocks), follows it to
/// the end, prints the report summary and writes the HTML report.
async fn demo(data_dir: &Path, injected: bool) -> anyhow::Result<u8> {
    let stack = crate::plan::Target::with_data_dir(data_dir).resolve()?;
    let mut grpc = stack.client().await?;
    println!("\ntern up --demo: failing back every VM ready for failback");
    let mut spec = crate::plan::SpecArgs::all_ready().spec(&stack)?;
    if stack.vaults.len() > 1 {
        // An estate of many vaults: the demo brings all of it home.
        spec.vault_id.clear();
        spec.all_vaults = true;
    }
    // A failed VM must not hold the others back: fail back everything that can be.
    spec.failure_policy = Some(tern_proto::FailurePolicy {
        on_critical_failure: tern_proto::OnCriticalFailure::Continue as i32,
        ..Default::default()
    });
    let reply = grpc
        .submit_plan(tern_proto::SubmitPlanRequest { spec: Some(spec) })
        .await
        .map_err(crate::plan::status)?
        .into_inner();
    let plan_id = reply.plan.context("the planner answered without a plan")?.plan_id;
    let plan = crate::plan::follow(&mut grpc, &plan_id, true).await?;
    let report = crate::report::fetch(&stack, &plan_id).await?;
    println!();
    print!("{}", report.summary());
    let dir = data_dir.join("reports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let html = std::path::absolute(dir.join(format!("{plan_id}.html")))?;
    std::fs::write(&html, report.html()).with_context(|| format!("writing {}", html.display()))?;
    println!("\nHTML report: {}", html.display());
    let ran_to_the_end = matches!(
        tern_proto::PlanState::try_from(plan.state),
        Ok(tern_proto::PlanState::Completed | tern_proto::PlanState::CompletedWithErrors)
    ) && !plan.halted;
    if injected && ran_to_the_end {
        // The failures were asked for (--fail); the demo did what it set out to do.
        println!("(the failed VMs failed as injected with --fail; see their ASR codes and actions above)");
        return Ok(0);
    }
    Ok(crate::plan::exit_code(&plan))
}

/// Starts every process in dependency order; returns the endpoints.
async fn start(args: &UpArgs, procs: &mut Procs) -> anyhow::Result<Value> {
    let nats_bin = find_nats_server()?;
    let port = free_port()?;
    // The simulator starts from a fresh estate each time, so the bus does too: plans and VM
    // locks from an earlier run would name VMs and jobs that no longer exist.
    let store = args.data_dir.join("nats");
    if store.exists() {
        std::fs::remove_dir_all(&store).with_context(|| format!("clearing {}", store.display()))?;
    }
    // NATS admits only Tern's identities, each with its own permissions: one nkey per service,
    // the events-reader's and the operator's for the CLI, and the bootstrap identity's, which
    // alone sets up the bus.
    let credentials = args.data_dir.join("secrets").join("nats");
    let auth_conf = tern_bus::auth::generate(&credentials)
        .with_context(|| format!("generating NATS credentials in {}", credentials.display()))?;
    let mut cmd = Command::new(&nats_bin);
    cmd.arg("-c").arg(&auth_conf);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(&store);
    procs.spawn(cmd, "nats-server")?;
    let nats_url = format!("nats://127.0.0.1:{port}");
    let as_identity = |identity| tern_bus::NatsAuth::from_dir(identity, &credentials);
    let bus = connect_bus(&nats_url, "tern-up", &as_identity(tern_bus::Identity::Bootstrap), READY_TIMEOUT).await?;
    bus.ensure_topology(&tern_bus::Topology::single_server()).await.context("creating the JetStream streams")?;

    let mut cmd = Command::new(sibling("tern-asr-sim")?);
    cmd.args(["--seed-vms", &args.vms.to_string(), "--seed-state", "ready-for-failback"]);
    cmd.args(["--time-compression", TIME_COMPRESSION]);
    if (args.subscriptions, args.vaults_per_subscription) != (1, 1) {
        cmd.args(["--subscriptions", &args.subscriptions.to_string()]);
        cmd.args(["--vaults-per-subscription", &args.vaults_per_subscription.to_string()]);
    }
    if args.unhealthy_every > 0 {
        cmd.args(["--seed-unhealthy-every", &args.unhealthy_every.to_string()]);
    }
    for rule in &args.fail {
        cmd.args(["--fail", rule]);
    }
    for vm in &args.fail_shutdown {
        cmd.args(["--fail-shutdown", vm]);
    }
    for rule in &args.quota {
        cmd.args(["--quota", rule]);
    }
    for rule in &args.restrict_sku {
        cmd.args(["--restrict-sku", rule]);
    }
    let sim = procs.start_ready(cmd, "tern-asr-sim", READY_TIMEOUT).await?;
    let field =
        |k: &str| sim[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("the simulator did not say its {k}"));
    let (sim_url, subscription, group, vault) =
        (field("url")?, field("subscription_id")?, field("resource_group")?, field("vault")?);

    let vault_id = vault_arm_id(&subscription, &group, &vault);
    let estate = Estate::of(&sim, &vault_id);
    let cache_accounts = estate.cache_accounts.to_string();
    let further_vaults = serde_json::to_string(&estate.vaults[1..])?;
    let mut env = vec![
        ("TERN_NATS_URL", nats_url.as_str()),
        ("TERN_ASR__ENDPOINT", sim_url.as_str()),
        ("TERN_ASR__SUBSCRIPTION_ID", subscription.as_str()),
        ("TERN_ASR__RESOURCE_GROUP", group.as_str()),
        ("TERN_ASR__VAULT", vault.as_str()),
        ("TERN_ASR__CACHE_STORAGE_ACCOUNTS", cache_accounts.as_str()),
        // Simulated time runs 300× fast: a lost request's job shows within a fraction of a second.
        ("TERN_ASR__LOST_REQUEST_WINDOW", "5"),
        ("TERN_ASR_TOKEN", "tern-up"),
        ("TERN_ENSURE_TOPOLOGY", "false"),
        ("TERN_LISTEN", "127.0.0.1:0"),
        ("TERN_POLL_INTERVAL_SECS", POLL_INTERVAL_SECS),
        ("TERN_JSON_EVENTS", "true"),
    ];
    if estate.vaults.len() > 1 {
        // Every service acts on every vault of the estate: its own, and these.
        env.push(("TERN_ASR__VAULTS", further_vaults.as_str()));
    }
    // The planner's API takes only callers with one of these tokens; the CLI finds the
    // operator's through endpoints.json.
    let tokens = tern_cli::secrets::generate_api_tokens(&args.data_dir.join("secrets"))?;
    // ... over TLS, with a certificate of its own that the CLI trusts through endpoints.json.
    let tls = tern_cli::secrets::generate_api_tls(&args.data_dir.join("secrets"))?;
    let mut ready = Vec::new();
    for name in ["tern-planner", "tern-failover", "tern-reprotect", "tern-cleanup"] {
        let mut cmd = Command::new(sibling(name)?);
        withhold_tern_variables(&mut cmd);
        cmd.envs(env.iter().copied());
        if let Some(identity) = tern_bus::Identity::of_service(name) {
            cmd.env("TERN_NATS_CREDENTIALS", tern_bus::auth::credentials_file(&credentials, identity));
        }
        if name == "tern-planner" {
            cmd.envs(tokens.planner_env());
            cmd.envs(tls.planner_env());
        }
        ready.push(procs.start_ready(cmd, name, READY_TIMEOUT).await?);
    }
    let planner_addr =
        ready[0]["grpc"].as_str().ok_or_else(|| anyhow!("the planner did not say its gRPC address"))?.to_owned();
    Ok(json!({
        "nats_url": nats_url,
        "nats_credentials": absolute(&tern_bus::auth::credentials_file(&credentials, tern_bus::Identity::EventsReader)),
        "nats_operator_credentials":
            absolute(&tern_bus::auth::credentials_file(&credentials, tern_bus::Identity::Operator)),
        // What wave hook runners answer as (examples/hooks/).
        "hooks_credentials": absolute(&tern_bus::auth::credentials_file(&credentials, tern_bus::Identity::Hooks)),
        "planner_addr": planner_addr,
        "planner_http": ready[0]["http"],
        "api_token_file": absolute(&tokens.operator_file),
        "api_reader_token_file": absolute(&tokens.reader_file),
        "api_ca_file": absolute(&tls.cert_file),
        "sim_url": sim_url,
        "subscription_id": subscription,
        "resource_group": group,
        "vault": vault,
        "vault_id": vault_id,
        "vaults": estate.vaults,
        // How time runs here, so `tern plan estimate` and `tern report` forecast this stack's
        // plans at its speed rather than Azure's.
        "clock": {
            "poll_interval_secs": POLL_INTERVAL_SECS.parse::<f64>()?,
            "time_compression": TIME_COMPRESSION.parse::<f64>()?,
        },
        "workers": {
            "failover": ready[1]["http"],
            "reprotect": ready[2]["http"],
            "cleanup": ready[3]["http"],
        },
    }))
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned()).display().to_string()
}

/// Waits for Ctrl-C or SIGTERM; a child exiting on its own is an error.
async fn wait_for_stop(procs: &mut Procs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exited = async {
        loop {
            if let Some(gone) = procs.exited() {
                return gone;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        (name, status) = exited => Err(anyhow!("{name} stopped on its own ({status}); the stack is going down")),
    }
}

/// A Tern binary installed next to this one (as `cargo build` and packages lay them out), else
/// on `PATH`.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(name)));
    here.filter(|p| p.is_file()).or_else(|| on_path(name)).ok_or_else(|| {
        anyhow!("{name} not found next to tern or on PATH; build the workspace (`cargo build`) or install it")
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// nats-server: `$TERN_NATS_SERVER`, the project's tools dir (`make setup`), then `PATH`.
fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TERN_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let tools = PathBuf::from(".tools/venv/bin/nats-server");
    if tools.is_file() {
        return Ok(tools);
    }
    on_path("nats-server").ok_or_else(|| {
        anyhow!("nats-server not found: run `make setup`, put nats-server >= 2.10 on PATH or set TERN_NATS_SERVER")
    })
}
