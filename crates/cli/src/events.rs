//! `tern events`: the event stream read the way an outside consumer reads it (an ordered,
//! ephemeral JetStream reader on `tern.events.>`, CloudEvents attributes from the headers).

use std::time::Duration;

use anyhow::{Context, bail};
use tern_bus::{Bus, EventFilter, ReceivedEvent, StartAt};
use tern_proto::{Outcome, Phase, PlanEventKind, event};

use crate::output::{self, Format, Paint, parse_duration, proto_json};
use crate::plan::{Stack, Target};

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only this plan's events.
    #[arg(long, value_name = "ID")]
    plan: Option<String>,
    /// Only this phase: failover, commit, reprotect, cleanup, drill, or plan (plan-level events).
    #[arg(long, value_name = "PHASE", value_parser = parse_phase)]
    phase: Option<String>,
    /// Only this VM's events (by name).
    #[arg(long, value_name = "NAME")]
    vm: Option<String>,
    /// Keep reading new events until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start this long ago (e.g. 10m, 1h30m, 2d) instead of at the beginning.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "from_start")]
    since: Option<Duration>,
    /// Replay everything the stream retains (the default without --follow).
    #[arg(long)]
    from_start: bool,
    /// table, or json / yaml: one CloudEvent (structured mode, `data` in protobuf JSON) per line.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: Format,
}

fn parse_phase(s: &str) -> Result<String, String> {
    let known = [Phase::Failover, Phase::Commit, Phase::Reprotect, Phase::Cleanup, Phase::Drill, Phase::Preflight];
    if s == tern_bus::subjects::PLAN_TOKEN || known.iter().any(|p| p.slug() == s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a phase: use failover, commit, reprotect, cleanup, drill or plan"))
    }
}

/// Connects to the stack's NATS server.
pub async fn bus(stack: &Stack) -> anyhow::Result<Bus> {
    let url = stack.nats.as_deref().context("no NATS URL: pass --nats URL or run against a `tern up` stack")?;
    Bus::connect_with(url, "tern-cli", &stack.nats_auth)
        .await
        .map_err(|e| crate::exit::unreachable(format!("cannot reach NATS at {url}; is the stack running?: {e:#}")))
}

/// Every event of `filter` the stream holds now, oldest first (no live tail).
pub async fn read_all(bus: &Bus, filter: &EventFilter) -> anyhow::Result<Vec<ReceivedEvent>> {
    let mut stream = bus.events(filter, StartAt::Beginning).await?;
    let mut out = Vec::new();
    for _ in 0..stream.backlog() {
        match stream.next().await {
            Some(Ok(e)) => out.push(e),
            // An event this build cannot decode: a newer publisher's; the rest still count.
            Some(Err(_)) => continue,
            None => break,
        }
    }
    Ok(out)
}

pub async fn run(target: &Target, args: EventsArgs) -> anyhow::Result<u8> {
    let stack = target.resolve()?;
    let bus = bus(&stack).await?;
    let filter = EventFilter { plan_id: args.plan.clone(), phase: args.phase.clone(), outcome: None };
    let start = match (args.since, args.from_start, args.follow) {
        (Some(ago), _, _) => StartAt::Since(ago),
        (None, true, _) | (None, false, false) => StartAt::Beginning,
        (None, false, true) => StartAt::New,
    };
    let mut stream = bus.events(&filter, start).await?;
    let backlog = stream.backlog();
    let paint = Paint::stdout();
    let mut seen = 0u64;
    loop {
        if !args.follow && seen >= backlog {
            return Ok(0);
        }
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        seen += 1;
        let received = match next {
            None => bail!("the event stream closed"),
            Some(Err(e)) => {
                eprintln!("tern: skipped an event: {e}");
                continue;
            }
            Some(Ok(r)) => r,
        };
        if let Some(vm) = &args.vm {
            let name = match &received.event.body {
                Some(event::Body::Vm(v)) => v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or(""),
                _ => "",
            };
            if !name.eq_ignore_ascii_case(vm) {
                continue;
            }
        }
        match args.output {
            Format::Table => println!("{}", line(&received, paint)),
            Format::Json => println!("{}", serde_json::to_string(&output::queried(&cloud_event(&received)?)?)?),
            Format::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&output::queried(&cloud_event(&received)?)?)?),
        }
    }
}

/// The event as a CloudEvent in structured JSON mode.
pub fn cloud_event(r: &ReceivedEvent) -> anyhow::Result<serde_json::Value> {
    let data = proto_json(&r.event, "tern.v1.Event")?;
    let a = r.attributes.clone().unwrap_or_default();
    let mut ce = serde_json::json!({
        "specversion": if a.specversion.is_empty() { "1.0".to_owned() } else { a.specversion },
        "id": if a.id.is_empty() { r.event.event_id.clone() } else { a.id },
        "source": a.source,
        "type": a.ty,
        "subject": a.subject,
        "time": if a.time.is_empty() { tern_bus::headers::rfc3339(r.event.time.as_ref()) } else { a.time },
        "datacontenttype": "application/json",
        "ternplan": r.event.plan_id,
        "ternsequence": r.stream_sequence,
        "data": data,
    });
    // The CloudEvents distributed-tracing extension: the trace the event belongs to.
    let traceparent = tern_bus::trace::traceparent(&r.trace_context);
    if !traceparent.is_empty() {
        ce["traceparent"] = traceparent.into();
    }
    Ok(ce)
}

/// One line per event for people. Fixed widths, not a table (`output::table`): an event is
/// printed as it arrives, before the widths of the ones after it are known.
fn line(r: &ReceivedEvent, paint: Paint) -> String {
    let e = &r.event;
    let time = short_time(e.time.as_ref());
    let plan: String = e.plan_id.chars().take(8).collect();
    match &e.body {
        Some(event::Body::Vm(v)) => {
            let name = v.vm.as_ref().map(|r| r.name.as_str()).unwrap_or("?");
            let phase = Phase::try_from(v.phase).unwrap_or(Phase::Unspecified).slug();
            let outcome = Outcome::try_from(v.outcome).unwrap_or(Outcome::Unspecified);
            let padded = format!("{:<10}", outcome.slug());
            let word = match outcome {
                Outcome::Failed => paint.red(&padded),
                Outcome::Succeeded => paint.green(&padded),
                Outcome::Skipped => paint.yellow(&padded),
                _ => padded,
            };
            let detail = match (&v.error, &v.progress) {
                (Some(err), _) => format!("[{}] {}", err.code, err.message),
                (None, Some(p)) if outcome == Outcome::Progress => format!("{} {}%", p.task, p.percent),
                _ => v.reason.clone(),
            };
            format!("{time} {plan} {name:<20} {phase:<10} {word} {detail}")
        }
        Some(event::Body::Plan(p)) => {
            let kind = PlanEventKind::try_from(p.kind).unwrap_or(PlanEventKind::Unspecified).slug();
            let wave = match PlanEventKind::try_from(p.kind) {
                Ok(PlanEventKind::WaveStarted | PlanEventKind::WaveFinished) => format!(" {}", p.wave + 1),
                _ => String::new(),
            };
            format!("{time} {plan} {} {:<10} {kind}{wave} {}", paint.bold(&format!("{:<20}", "plan")), "", p.reason)
        }
        None => format!("{time} {plan} (no body)"),
    }
}

/// `2026-11-26 08:52:53.796` (UTC): what a person scans a log for.
fn short_time(t: Option<&prost_types::Timestamp>) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
            .ok()
    })
    .and_then(|t| t.format(&format).ok())
    .unwrap_or_else(|| "-".into())
}
