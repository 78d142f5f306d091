//! `tern-asr-sim`: run the Azure Site Recovery simulator.
//!
//! Settings are layered: defaults → `--config FILE` (TOML or JSON) → flags. When ready it
//! prints one JSON line on stdout (`url`, `subscription_id`, `resource_group`, `vault`,
//! `cache_storage_accounts` of the first vault, `vaults` listing every vault, and `ca_cert`
//! with `--tls-dir`) and serves until SIGINT/SIGTERM. Logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use tern_asr_sim::{BucketConfig, FailureRule, Operation, SeedState, Selector, SimConfig, SimOptions};

/// An ARM-faithful Azure Site Recovery simulator (A2A failover, failback, reprotect, jobs,
/// recovery plans, throttling, fault injection). Admin endpoints live under /_sim/: oplog,
/// info, counters, jobs, faults (GET/PUT), seed, reset, clock/advance.
///
/// It serves --subscriptions subscriptions (default 1), each with its own ARM request budget,
/// and --vaults-per-subscription vaults in each (default 1), each seeded with --seed-vms VMs.
/// The first vault is --subscription-id/--resource-group/--vault with VMs vm-00001... in
/// rg-app/rg-app-asr; the others are derived: subscription S has id
/// 00000000-0000-4000-8000-<S as 12 digits> (S > 1), vault V is named <vault>-V (V > 1) in the
/// same resource group, and vault V of subscription S keeps its VMs, named sSvV-vm-00001..., in
/// rg-app-sSvV and rg-app-sSvV-asr. /_sim/info lists every vault.
///
/// It answers as stingily as real Azure does, from recorded evidence
/// (docs/azure-fidelity.md): job lists are summaries (A2AFailoverCommit-excerpt entries
/// 41–141); a new job is a NotStarted placeholder first (entries 8, 147, 174); a job's
/// activityId carries the request's x-ms-client-request-id (146→147); reprotect is validated as
/// PowerShell builds it (A2AReprotectTest entries 13–16); the item is protected only after
/// initial replication and its two completion jobs (excerpt entries 122–143).
#[derive(Parser, Debug)]
#[command(name = "tern-asr-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Settings file (TOML or JSON, keys as in SimConfig: subscription_id, subscriptions,
    /// vaults_per_subscription, time_compression, durations, throttle, faults, estate, ...).
    /// Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve HTTPS with a self-signed certificate for 127.0.0.1, written to DIR/cert.pem
    /// (Azure SDKs refuse bearer tokens over plain HTTP).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,

    /// Number of VMs to seed in every vault.
    #[arg(long, value_name = "N")]
    seed_vms: Option<usize>,

    /// Number of subscriptions served, each with its own ARM request budget (default 1).
    #[arg(long, value_name = "N")]
    subscriptions: Option<usize>,

    /// Number of Recovery Services vaults in each subscription (default 1; at most 500).
    #[arg(long, value_name = "M")]
    vaults_per_subscription: Option<usize>,

    /// State of the seeded VMs.
    #[arg(long, value_enum)]
    seed_state: Option<SeedState>,

    /// VM name prefix of seeded VMs (<prefix>-00001, ...; sSvV-<prefix>-00001 in vault V of
    /// subscription S, but the first).
    #[arg(long, value_name = "PREFIX")]
    seed_prefix: Option<String>,

    /// Every Nth seeded VM has a data disk added 2 hours ago: older recovery points cover 1 of 2 disks.
    #[arg(long, value_name = "N")]
    seed_late_disk_every: Option<usize>,

    /// Every Nth seeded VM uses unmanaged disks.
    #[arg(long, value_name = "N")]
    seed_unmanaged_every: Option<usize>,

    /// Every Nth seeded VM has critical replication health (error 151037).
    #[arg(long, value_name = "N")]
    seed_unhealthy_every: Option<usize>,

    /// Every Nth seeded VM is in initial replication after a reprotect job that already
    /// succeeded (about 40% replicated; PrimaryIrCompletion and SecondaryIrCompletion come
    /// later, as in A2AFailoverCommit-excerpt entries 41–143).
    #[arg(long, value_name = "N")]
    seed_syncing_every: Option<usize>,

    /// Every Nth seeded VM's NIC has a public IP `<vm>-pip` (in the region the VM runs in when
    /// seeded; a failover-created VM's NIC gets none).
    #[arg(long, value_name = "N")]
    seed_public_ip_every: Option<usize>,

    /// Every Nth seeded VM's replication has a static target IP, which its protected item
    /// reports (the others are dynamic and report none, as Azure does).
    #[arg(long, value_name = "N")]
    seed_static_recovery_ip_every: Option<usize>,

    /// Simulated seconds after an operation's 202 during which the item still shows no
    /// currentScenario and its idle allowedOperations (unverified, stingy: no recording shows
    /// the item in that moment); a second operation is refused meanwhile all the same.
    #[arg(long, value_name = "SECS")]
    item_scenario_lag: Option<f64>,

    /// Group seeded VMs into ASR recovery plans of this many VMs (max 100), 3 boot groups each.
    #[arg(long, value_name = "SIZE")]
    seed_recovery_plan_size: Option<usize>,

    /// Subscription id of the first subscription.
    #[arg(long)]
    subscription_id: Option<String>,

    /// Resource group of the vaults (in every subscription).
    #[arg(long)]
    resource_group: Option<String>,

    /// Name of the first vault of every subscription (the others are <vault>-2, ...).
    #[arg(long)]
    vault: Option<String>,

    /// Region the VMs originally ran in.
    #[arg(long)]
    primary_region: Option<String>,

    /// Disaster-recovery region.
    #[arg(long)]
    secondary_region: Option<String>,

    /// Accept only this bearer token (default: any non-empty token).
    #[arg(long, env = "TERN_ASR_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Simulated seconds per real second (job durations and Retry-After shrink by this factor).
    #[arg(long, value_name = "FACTOR")]
    time_compression: Option<f64>,

    /// Every job completes at once and Retry-After is 0 (for overhead benchmarks); a reprotect's
    /// initial replication and its PrimaryIrCompletion/SecondaryIrCompletion jobs too, in order,
    /// so the VM is fully protected right after the reprotect.
    #[arg(long)]
    zero_latency: bool,

    /// Retry-After of accepted operations, in simulated seconds.
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,

    /// Items or jobs per list page (nextLink beyond).
    #[arg(long, value_name = "N")]
    page_size: Option<usize>,

    /// Turn ARM throttling off.
    #[arg(long)]
    no_throttle: bool,

    /// Read bucket as CAPACITY:REFILL_PER_SEC (ARM default 250:25).
    #[arg(long, value_name = "CAP:RATE", value_parser = parse_bucket)]
    throttle_reads: Option<BucketConfig>,

    /// Write bucket as CAPACITY:REFILL_PER_SEC (ARM default 200:10).
    #[arg(long, value_name = "CAP:RATE", value_parser = parse_bucket)]
    throttle_writes: Option<BucketConfig>,

    /// Delete bucket as CAPACITY:REFILL_PER_SEC (ARM default 200:10).
    #[arg(long, value_name = "CAP:RATE", value_parser = parse_bucket)]
    throttle_deletes: Option<BucketConfig>,

    /// Reprotect leaves the VM, its NICs and disks in the region the VM moved away from
    /// (default: removes them when the reprotect job ends, for managed-disk VMs, as the failback
    /// tutorial says).
    #[arg(long)]
    reprotect_keeps_source_vm: bool,

    /// Seed of ids and job durations.
    #[arg(long)]
    seed: Option<u64>,

    /// Seed of every fault decision.
    #[arg(long, value_name = "SEED")]
    fault_seed: Option<u64>,

    /// Fail an operation permanently for one VM: VM:OPERATION:CODE (e.g. vm-00007:failover:28031).
    /// Operations: failover, commit, reprotect, test_failover, test_failover_cleanup,
    /// apply_recovery_point, cancel_failover, repair, disable_protection, purge, delete,
    /// ir_completion (the SecondaryIrCompletion job after a reprotect fails with CODE,
    /// cf. A2AFailoverCommit-excerpt entries 141–143: the item stays Critical until a repair).
    #[arg(long, value_name = "VM:OP:CODE", value_parser = parse_fail)]
    fail: Vec<FailureRule>,

    /// A vCPU quota in a region, for every subscription: REGION:FAMILY:LIMIT (FAMILY a usage
    /// name such as standardDSv3Family, or cores for the regional total; repeatable). A
    /// failover whose VM would exceed it fails with 28031. Unnamed ones are generous.
    #[arg(long, value_name = "REGION:FAMILY:LIMIT", value_parser = parse_quota)]
    quota: Vec<tern_asr_sim::capacity::QuotaRule>,

    /// A VM size not offered to the subscriptions in a region: REGION:SIZE (repeatable).
    #[arg(long, value_name = "REGION:SIZE", value_parser = parse_restriction)]
    restrict_sku: Vec<tern_asr_sim::capacity::SkuRestriction>,

    /// Fail an operation permanently for a seeded fraction of VMs: OPERATION:FRACTION:CODE.
    #[arg(long, value_name = "OP:FRACTION:CODE", value_parser = parse_fail_fraction)]
    fail_fraction: Vec<FailureRule>,

    /// Fraction of VMs whose shutdown before failover fails (the failover continues).
    #[arg(long, value_name = "FRACTION")]
    shutdown_failure_fraction: Option<f64>,

    /// The source shutdown before this VM's failover fails; the failover goes on, its job
    /// "CompletedWithInformation" with the shutdown task Failed (repeatable).
    #[arg(long, value_name = "VM")]
    fail_shutdown: Vec<String>,

    /// Fraction of ARM requests answered 500/503.
    #[arg(long, value_name = "RATE")]
    transient_5xx_rate: Option<f64>,

    /// Latency spikes as RATE:MILLISECONDS.
    #[arg(long, value_name = "RATE:MS", value_parser = parse_pair)]
    latency_spike: Option<(f64, u64)>,

    /// 429 storm as RATE:RETRY_AFTER_SECS (429 regardless of the buckets).
    #[arg(long, value_name = "RATE:SECS", value_parser = parse_pair)]
    throttle_storm: Option<(f64, u64)>,

    /// Dropped responses as RATE:HANG_SECS: mutating requests applied, then never answered.
    #[arg(long, value_name = "RATE:SECS", value_parser = parse_pair)]
    drop_responses: Option<(f64, u64)>,

    /// Drop responses only of this operation (repeatable; default: every mutating request),
    /// e.g. --drop-responses-of reprotect.
    #[arg(long, value_name = "OPERATION", value_parser = parse_operation)]
    drop_responses_of: Vec<Operation>,

    /// Log filter (e.g. info, debug).
    #[arg(long, default_value = "info", env = "TERN_LOG")]
    log: String,
}

fn parse_bucket(s: &str) -> Result<BucketConfig, String> {
    let (c, r) = s.split_once(':').ok_or("expected CAPACITY:REFILL_PER_SEC, e.g. 200:10")?;
    let capacity: f64 = c.parse().map_err(|_| format!("capacity {c:?} is not a number"))?;
    let refill_per_sec: f64 = r.parse().map_err(|_| format!("refill {r:?} is not a number"))?;
    if capacity < 1.0 || refill_per_sec <= 0.0 {
        return Err("capacity must be >= 1 and refill > 0".into());
    }
    Ok(BucketConfig { capacity, refill_per_sec })
}

fn parse_operation(s: &str) -> Result<Operation, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown operation {s:?} (failover, commit, reprotect, test_failover, ...)"))
}

fn parse_fail(s: &str) -> Result<FailureRule, String> {
    let parts: Vec<&str> = s.splitn(3, ':').collect();
    let [vm, op, code] = parts[..] else { return Err("expected VM:OPERATION:CODE".into()) };
    Ok(FailureRule {
        selector: Selector { vms: vec![vm.to_owned()], fraction: 0.0 },
        operation: parse_operation(op)?,
        code: code.to_owned(),
        message: None,
    })
}

fn parse_fail_fraction(s: &str) -> Result<FailureRule, String> {
    let parts: Vec<&str> = s.splitn(3, ':').collect();
    let [op, fraction, code] = parts[..] else { return Err("expected OPERATION:FRACTION:CODE".into()) };
    let fraction: f64 = fraction.parse().map_err(|_| format!("fraction {fraction:?} is not a number"))?;
    Ok(FailureRule {
        selector: Selector { vms: vec![], fraction },
        operation: parse_operation(op)?,
        code: code.to_owned(),
        message: None,
    })
}

fn parse_quota(s: &str) -> Result<tern_asr_sim::capacity::QuotaRule, String> {
    let parts: Vec<&str> = s.splitn(3, ':').collect();
    let [region, family, limit] = parts[..] else { return Err("expected REGION:FAMILY:LIMIT".into()) };
    let limit = limit.parse().map_err(|_| format!("limit {limit:?} is not a whole number"))?;
    Ok(tern_asr_sim::capacity::QuotaRule { region: region.to_ascii_lowercase(), family: family.to_owned(), limit })
}

fn parse_restriction(s: &str) -> Result<tern_asr_sim::capacity::SkuRestriction, String> {
    let (region, size) = s.split_once(':').ok_or("expected REGION:SIZE")?;
    Ok(tern_asr_sim::capacity::SkuRestriction { region: region.to_ascii_lowercase(), size: size.to_owned() })
}

fn parse_pair(s: &str) -> Result<(f64, u64), String> {
    let (a, b) = s.split_once(':').ok_or("expected RATE:NUMBER")?;
    Ok((
        a.parse().map_err(|_| format!("{a:?} is not a number"))?,
        b.parse().map_err(|_| format!("{b:?} is not a whole number"))?,
    ))
}

fn load_config(path: &PathBuf) -> anyhow::Result<SimConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid simulator config", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not a valid simulator config", path.display()))?
    };
    Ok(config)
}

fn build_config(a: &Args) -> anyhow::Result<SimConfig> {
    let mut c = match &a.config {
        Some(p) => load_config(p)?,
        None => SimConfig::default(),
    };
    macro_rules! set {
        ($field:expr, $value:expr) => {
            if let Some(v) = $value.clone() {
                $field = v;
            }
        };
    }
    set!(c.estate.vms, a.seed_vms);
    set!(c.subscriptions, a.subscriptions);
    set!(c.vaults_per_subscription, a.vaults_per_subscription);
    set!(c.estate.state, a.seed_state);
    set!(c.estate.name_prefix, a.seed_prefix);
    set!(c.estate.late_disk_every, a.seed_late_disk_every);
    set!(c.estate.unmanaged_every, a.seed_unmanaged_every);
    set!(c.estate.unhealthy_every, a.seed_unhealthy_every);
    set!(c.estate.syncing_every, a.seed_syncing_every);
    set!(c.estate.recovery_plan_size, a.seed_recovery_plan_size);
    set!(c.estate.public_ip_every, a.seed_public_ip_every);
    set!(c.estate.static_recovery_ip_every, a.seed_static_recovery_ip_every);
    set!(c.item_scenario_lag_secs, a.item_scenario_lag);
    set!(c.subscription_id, a.subscription_id);
    set!(c.resource_group, a.resource_group);
    set!(c.vault, a.vault);
    set!(c.primary_region, a.primary_region);
    set!(c.secondary_region, a.secondary_region);
    set!(c.time_compression, a.time_compression);
    set!(c.retry_after_secs, a.retry_after);
    set!(c.page_size, a.page_size);
    set!(c.seed, a.seed);
    set!(c.faults.seed, a.fault_seed);
    set!(c.throttle.reads, a.throttle_reads);
    set!(c.throttle.writes, a.throttle_writes);
    set!(c.throttle.deletes, a.throttle_deletes);
    set!(c.faults.shutdown_failures.fraction, a.shutdown_failure_fraction);
    c.faults.shutdown_failures.vms.extend(a.fail_shutdown.iter().cloned());
    set!(c.faults.transient_5xx_rate, a.transient_5xx_rate);
    if a.token.is_some() {
        c.token = a.token.clone();
    }
    if a.zero_latency {
        c.zero_latency = true;
    }
    if a.no_throttle {
        c.throttle.enabled = false;
    }
    if a.reprotect_keeps_source_vm {
        c.reprotect_removes_source_vm = false;
    }
    c.faults.failures.extend(a.fail.iter().cloned());
    c.faults.failures.extend(a.fail_fraction.iter().cloned());
    for q in &a.quota {
        c.capacity.set_limit(&q.region, &q.family, q.limit);
    }
    c.capacity.restricted.extend(a.restrict_sku.iter().cloned());
    if let Some((rate, ms)) = a.latency_spike {
        (c.faults.latency_spike_rate, c.faults.latency_spike_ms) = (rate, ms);
    }
    if let Some((rate, secs)) = a.throttle_storm {
        (c.faults.throttle_storm_rate, c.faults.throttle_storm_retry_after_secs) = (rate, secs);
    }
    if let Some((rate, secs)) = a.drop_responses {
        (c.faults.drop_response_rate, c.faults.drop_response_hang_secs) = (rate, secs);
    }
    c.faults.drop_response_operations.extend(a.drop_responses_of.iter().copied());
    if let Err(e) = c.validate() {
        bail!("invalid configuration: {e}");
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()))
        .init();
    let config = build_config(&args)?;
    let vms = config.estate.vms * config.subscriptions * config.vaults_per_subscription;
    let (subscriptions, vaults_per_subscription) = (config.subscriptions, config.vaults_per_subscription);
    let sim = tern_asr_sim::start(SimOptions { config, listen: args.listen, tls_dir: args.tls_dir.clone() }).await?;
    println!("{}", serde_json::to_string(sim.info())?);
    tracing::info!(url = %sim.url(), subscriptions, vaults_per_subscription, vms, "tern-asr-sim ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stopping");
    sim.stop().await;
    Ok(())
}
