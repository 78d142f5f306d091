//! `tern dlq`: the dead letters — messages a consumer gave up on — listed, shown, replayed and
//! purged. NATS is read and written as the operator identity (it may read and delete dead
//! letters, nothing else). A replay is never a re-publish: a dead-lettered command becomes a new,
//! fenced attempt through the planner's `RetryVm`, which refuses a VM that has not failed or that
//! another plan holds; anything else (an event, garbage) cannot be replayed, only purged.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tern_bus::{Bus, DeadLetter, DeadLetterContent};
use tern_proto::{Phase, RetryVmRequest, event};

use crate::output::{self, Format, Paint, print_document, proto_json};
use crate::plan::{Stack, Target, state_word, status};

#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// One row per dead letter, oldest first: sequence, time, queue, kind, plan, VM, phase,
    /// deliveries and reason (-o json for everything, reasons in full).
    List {
        /// Only this plan's dead letters.
        #[arg(long, value_name = "ID")]
        plan: Option<String>,
        /// Only those of this consumer: failover, reprotect, cleanup (the worker queues) or
        /// planner (events the planner could not read).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// One dead letter in full: headers, reason and the payload decoded (as bytes when it does
    /// not decode).
    Show {
        /// Its sequence in the dead-letter stream (the first column of `tern dlq list`).
        seq: u64,
    },
    /// Run a dead-lettered command's VM phase again, as a new attempt through the planner
    /// (`RetryVm`); the dead letter is removed once the planner took it. Events and undecodable
    /// messages cannot be replayed: purge them.
    Replay {
        /// Its sequence in the dead-letter stream.
        seq: u64,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete dead letters: by sequence, all of them, or one plan's. Asks first on a terminal.
    Purge {
        /// Sequences in the dead-letter stream.
        #[arg(value_name = "SEQ", required_unless_present_any = ["all", "plan"], conflicts_with_all = ["all", "plan"])]
        seqs: Vec<u64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "plan")]
        all: bool,
        /// Every dead letter of this plan.
        #[arg(long, value_name = "ID")]
        plan: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs a `tern dlq` command; returns the process exit code.
pub async fn run(target: &Target, output: Format, command: DlqCommand) -> anyhow::Result<u8> {
    let stack = target.resolve()?;
    let bus = connect(&stack).await?;
    match command {
        DlqCommand::List { plan, queue } => {
            let letters: Vec<DeadLetter> = bus
                .dead_letters()
                .await?
                .into_iter()
                .filter(|d| plan.as_deref().is_none_or(|p| Summary::of(d).plan == p))
                .filter(|d| queue.as_deref().is_none_or(|q| d.queue() == q))
                .collect();
            match output {
                Format::Table => print_table(&letters),
                f => print_document(f, &Value::Array(letters.iter().map(|d| Summary::of(d).json(d)).collect()))?,
            }
            Ok(0)
        }
        DlqCommand::Show { seq } => {
            let letter = find(&bus, seq).await?;
            match output {
                Format::Table => print_details(&letter),
                f => print_document(f, &details(&letter)?)?,
            }
            Ok(0)
        }
        DlqCommand::Replay { seq, yes } => replay(&stack, &bus, output, seq, yes).await,
        DlqCommand::Purge { seqs, all, plan, yes } => {
            let doomed: Vec<u64> = if all || plan.is_some() {
                let letters = bus.dead_letters().await?;
                letters
                    .iter()
                    .filter(|d| plan.as_deref().is_none_or(|p| Summary::of(d).plan == p))
                    .map(|d| d.sequence)
                    .collect()
            } else {
                // Every one named must exist before any is deleted: a typo changes nothing.
                let mut missing = Vec::new();
                for &seq in &seqs {
                    if bus.dead_letter(seq).await?.is_none() {
                        missing.push(seq.to_string());
                    }
                }
                if !missing.is_empty() {
                    bail!(
                        "no dead letter {} in the dead-letter queue; nothing was deleted (`tern dlq list` shows what there is)",
                        missing.join(", ")
                    );
                }
                seqs
            };
            let what = match (&plan, all) {
                (Some(p), _) => format!("{} dead letter(s) of plan {p}", doomed.len()),
                (None, true) => format!("all {} dead letter(s)", doomed.len()),
                (None, false) => format!("dead letter(s) {}", list(&doomed)),
            };
            if !doomed.is_empty() && !yes && !confirm(&format!("Delete {what}?"))? {
                eprintln!("tern: nothing deleted");
                return Ok(2);
            }
            let mut removed = 0;
            for seq in &doomed {
                // One already gone (another operator's purge, a replay) is simply not counted.
                if bus.delete_dead_letter(*seq).await? {
                    removed += 1;
                }
            }
            match output {
                Format::Table => println!("removed {removed} dead letter(s)"),
                f => print_document(f, &json!({ "removed": removed, "sequences": doomed }))?,
            }
            Ok(0)
        }
    }
}

/// Connects as the operator: the identity that may read and delete dead letters.
async fn connect(stack: &Stack) -> anyhow::Result<Bus> {
    let url = stack.nats.as_deref().context("no NATS URL: pass --nats URL or run against a `tern up` stack")?;
    if stack.nats_operator_auth.credentials.is_none() {
        bail!(
            "no NATS credentials for the dead letters: pass --nats-credentials with the operator identity's \
             (`tern bus credentials` writes operator.nk), or run against a `tern up` stack"
        );
    }
    Bus::connect_with(url, "tern-cli", &stack.nats_operator_auth)
        .await
        .with_context(|| format!("cannot reach NATS at {url}; is the stack running?"))
}

async fn find(bus: &Bus, seq: u64) -> anyhow::Result<DeadLetter> {
    bus.dead_letter(seq)
        .await?
        .ok_or_else(|| anyhow!("no dead letter {seq} in the dead-letter queue (`tern dlq list` shows what there is)"))
}

async fn replay(stack: &Stack, bus: &Bus, output: Format, seq: u64, yes: bool) -> anyhow::Result<u8> {
    let letter = find(bus, seq).await?;
    let command = match letter.content() {
        DeadLetterContent::Command(command) => command,
        DeadLetterContent::Event(event) => bail!(
            "dead letter {seq} is an event ({}) that the {} consumer could not handle, not a command: an event \
             records what happened and cannot be replayed (it is still in the event stream for every other \
             reader). `tern dlq purge {seq}` removes it",
            event_type(&letter, &event),
            letter.queue()
        ),
        DeadLetterContent::Undecodable { error } => bail!(
            "dead letter {seq} cannot be replayed: its payload is not a command Tern can read ({error}), so nothing \
             could act on it. `tern dlq show {seq}` shows its bytes; `tern dlq purge {seq}` removes it"
        ),
    };
    let phase = command.action.as_ref().map_or(Phase::Unspecified, |a| a.phase());
    let vm = command.vm.as_ref().map(|v| v.name.clone()).unwrap_or_default();
    if vm.is_empty() || command.plan_id.is_empty() {
        bail!(
            "dead letter {seq} is a command that names no plan or VM; nothing can retry it. `tern dlq purge {seq}` removes it"
        );
    }
    let what = format!("{vm} of plan {} from {}", command.plan_id, phase.slug());
    if !yes && !confirm(&format!("Retry {what} (a new attempt through the planner)?"))? {
        eprintln!("tern: nothing replayed");
        return Ok(2);
    }
    let mut grpc = stack.client().await?;
    let request = RetryVmRequest { plan_id: command.plan_id.clone(), vm_name: vm.clone(), phase: phase as i32 };
    let plan = grpc.retry_vm(request).await.map_err(|s| {
        anyhow!(
            "the planner refused to retry {what}: {}; dead letter {seq} is kept (`tern dlq purge {seq}` removes it)",
            status(s)
        )
    })?;
    let plan = plan.into_inner();
    let removed = bus.delete_dead_letter(seq).await.with_context(|| {
        format!("{what} is being retried, but dead letter {seq} could not be removed: `tern dlq purge {seq}`")
    })?;
    match output {
        Format::Table => println!(
            "replayed dead letter {seq}: {what} runs again as a new attempt (plan {}); the dead letter is removed",
            state_word(plan.state)
        ),
        f => print_document(
            f,
            &json!({
                "sequence": seq,
                "plan_id": command.plan_id,
                "vm": vm,
                "phase": phase.slug(),
                "removed": removed,
                "plan": proto_json(&plan, "tern.v1.Plan")?,
            }),
        )?,
    }
    Ok(0)
}

/// Asks on the terminal; off a terminal there is nobody to ask, and the command goes ahead.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn list(seqs: &[u64]) -> String {
    seqs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// What a row says about one dead letter.
struct Summary {
    kind: &'static str,
    plan: String,
    vm: String,
    phase: String,
}

impl Summary {
    fn of(d: &DeadLetter) -> Self {
        let subject_plan = || tern_bus::subjects::plan_of(&d.original_subject).unwrap_or_default().to_owned();
        let content = d.content();
        let kind = content.kind();
        match content {
            DeadLetterContent::Command(c) => Summary {
                kind,
                plan: c.plan_id,
                vm: c.vm.map(|v| v.name).unwrap_or_default(),
                phase: c.action.map(|a| a.phase().slug().to_owned()).unwrap_or_default(),
            },
            DeadLetterContent::Event(e) => {
                let (vm, phase) = match e.body {
                    Some(event::Body::Vm(v)) => (
                        v.vm.map(|r| r.name).unwrap_or_default(),
                        Phase::try_from(v.phase).unwrap_or(Phase::Unspecified).slug().to_owned(),
                    ),
                    _ => (String::new(), tern_bus::subjects::PLAN_TOKEN.to_owned()),
                };
                Summary { kind, plan: e.plan_id, vm, phase }
            }
            DeadLetterContent::Undecodable { .. } => {
                Summary { kind, plan: subject_plan(), vm: String::new(), phase: String::new() }
            }
        }
    }

    fn json(&self, d: &DeadLetter) -> Value {
        json!({
            "sequence": d.sequence,
            "time": rfc3339(d.time),
            "queue": d.queue(),
            "stream": d.original_stream,
            "subject": d.original_subject,
            "stream_sequence": d.original_sequence,
            "kind": self.kind,
            "plan_id": self.plan,
            "vm": self.vm,
            "phase": self.phase,
            "deliveries": d.deliveries,
            "reason": d.reason,
        })
    }
}

fn print_table(letters: &[DeadLetter]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    let paint = Paint::stdout();
    let mut table =
        output::table(&["SEQ", "TIME (UTC)", "QUEUE", "KIND", "PLAN", "VM", "PHASE", "TRIES", "REASON"]).right(&[0, 7]);
    for d in letters {
        let s = Summary::of(d);
        let kind = if s.kind == "command" { s.kind.to_owned() } else { paint.dim(s.kind) };
        table.row([
            d.sequence.to_string(),
            short_time(d.time),
            d.queue().to_string(),
            kind,
            truncate(&s.plan, 14),
            truncate(&s.vm, 16),
            s.phase.clone(),
            d.deliveries.to_string(),
            truncate(&d.reason, 60),
        ]);
    }
    print!("{table}");
    println!(
        "{} dead letter(s); `tern dlq show SEQ` for one in full, `-o json` for every reason in full",
        letters.len()
    );
}

/// Everything about one dead letter, as a document.
fn details(d: &DeadLetter) -> anyhow::Result<Value> {
    let summary = Summary::of(d);
    let mut doc = summary.json(d);
    let mut headers = serde_json::Map::new();
    for (name, values) in sorted_headers(d) {
        let value = if values.len() == 1 { json!(values[0]) } else { json!(values) };
        headers.insert(name, value);
    }
    doc["headers"] = Value::Object(headers);
    doc["payload"] = match d.content() {
        DeadLetterContent::Command(c) => {
            json!({ "type": "tern.v1.Command", "command": proto_json(&c, "tern.v1.Command")? })
        }
        DeadLetterContent::Event(e) => json!({ "type": "tern.v1.Event", "event": proto_json(&e, "tern.v1.Event")? }),
        DeadLetterContent::Undecodable { error } => json!({
            "type": "undecodable",
            "note": format!("the payload does not decode ({error}): shown as bytes"),
            "bytes": d.payload.len(),
            "escaped": escaped(&d.payload),
            "hex": hex(&d.payload),
        }),
    };
    Ok(doc)
}

fn print_details(d: &DeadLetter) {
    let s = Summary::of(d);
    let paint = Paint::stdout();
    println!("{}", paint.bold(&format!("dead letter {}", d.sequence)));
    let row = |k: &str, v: &str| {
        if !v.is_empty() {
            println!("  {k:<12} {v}");
        }
    };
    row("time", &rfc3339(d.time));
    row("queue", d.queue());
    row("from", &format!("{} #{} ({})", d.original_stream, d.original_sequence, d.original_subject));
    row("kind", s.kind);
    row("plan", &s.plan);
    row("vm", &s.vm);
    row("phase", &s.phase);
    row("deliveries", &d.deliveries.to_string());
    row("reason", &d.reason);
    println!("{}", paint.bold("headers"));
    for (name, values) in sorted_headers(d) {
        for v in values {
            println!("  {name}: {v}");
        }
    }
    let payload = |title: &str, doc: anyhow::Result<Value>| match doc.and_then(|v| Ok(serde_yaml_ng::to_string(&v)?)) {
        Ok(yaml) => {
            println!("{}", paint.bold(title));
            for line in yaml.lines() {
                println!("  {line}");
            }
        }
        Err(e) => println!("{title}: not shown ({e:#})"),
    };
    match d.content() {
        DeadLetterContent::Command(c) => payload("payload (tern.v1.Command)", proto_json(&c, "tern.v1.Command")),
        DeadLetterContent::Event(e) => payload("payload (tern.v1.Event)", proto_json(&e, "tern.v1.Event")),
        DeadLetterContent::Undecodable { error } => {
            println!("{}", paint.bold(&format!("payload ({} bytes, undecodable)", d.payload.len())));
            println!("  note: it does not decode ({error}); shown escaped and as hex");
            println!("  escaped: \"{}\"", escaped(&d.payload));
            for chunk in d.payload.chunks(16) {
                println!("  {}", hex(chunk));
            }
        }
    }
    match s.kind {
        "command" => println!("`tern dlq replay {}` retries the VM's phase as a new attempt", d.sequence),
        _ => println!("cannot be replayed; `tern dlq purge {}` removes it", d.sequence),
    }
}

/// The headers by name (a header map has no order of its own).
fn sorted_headers(d: &DeadLetter) -> Vec<(String, Vec<String>)> {
    let mut headers: Vec<_> = d
        .headers
        .iter()
        .map(|(n, values)| (n.to_string(), values.iter().map(|v| v.as_str().to_owned()).collect()))
        .collect();
    headers.sort_by_key(|a| a.0.to_ascii_lowercase());
    headers
}

fn event_type(d: &DeadLetter, e: &tern_proto::Event) -> String {
    d.headers
        .get(tern_bus::headers::CE_TYPE)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| format!("event {}", e.event_id))
}

/// Bytes as a Rust-style escaped string: printable ASCII as is, the rest `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn short_time(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_bytes_read_escaped_and_as_hex() {
        assert_eq!(escaped(b"ab\xff\n"), "ab\\xff\\n");
        assert_eq!(hex(b"\x00\xffA"), "00 ff 41");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
