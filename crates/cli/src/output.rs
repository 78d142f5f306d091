//! How the CLI prints: `-o table|json|yaml` (tables through `tern_cli::columns`), protobuf
//! messages as JSON, colour that respects `NO_COLOR` and terminals, durations and times as
//! people read them.

use std::sync::OnceLock;

use anstyle::{AnsiColor, Style};
use anyhow::Context;
pub use tern_cli::columns::Columns;

/// `-o`: how a command prints what it read.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON (protobuf's JSON mapping, snake_case field names), for scripts.
    Json,
    /// The same document as YAML.
    Yaml,
}

/// A table for people (`-o table`) with this header, in bold on a terminal.
pub fn table(header: &[&str]) -> Columns {
    let paint = Paint::stdout();
    Columns::new(header.iter().map(|h| paint.bold(h)))
}

/// `--query`: a JMESPath expression (as `az` takes it), set once by `main` for the process.
static QUERY: OnceLock<String> = OnceLock::new();

/// Makes every JSON or YAML document printed from now on the result of `expression`; an
/// expression that does not compile is refused here, before anything is asked of the stack.
pub fn set_query(expression: &str) -> anyhow::Result<()> {
    compile(expression)?;
    let _ = QUERY.set(expression.to_owned());
    Ok(())
}

/// `doc` through `--query`, or as it is without one.
pub fn queried(doc: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    match QUERY.get() {
        Some(expression) => search(&compile(expression)?, doc),
        None => Ok(doc.clone()),
    }
}

fn compile(expression: &str) -> anyhow::Result<jmespath::Expression<'static>> {
    jmespath::compile(expression)
        .map_err(|e| anyhow::anyhow!("--query {expression:?} is not a JMESPath expression: {e}"))
}

fn search(expression: &jmespath::Expression<'_>, doc: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let found = expression.search(doc).with_context(|| format!("--query {:?}", expression.as_str()))?;
    serde_json::to_value(&*found).context("rendering the query's result")
}

/// Prints a document as JSON or YAML, through `--query` (the caller prints tables itself).
pub fn print_document(format: Format, doc: &serde_json::Value) -> anyhow::Result<()> {
    let doc = &queried(doc)?;
    match format {
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(doc).context("rendering YAML")?),
        _ => println!("{}", serde_json::to_string_pretty(doc).context("rendering JSON")?),
    }
    Ok(())
}

/// A Tern protobuf message in protobuf's canonical JSON mapping (timestamps RFC 3339, durations
/// `"1.5s"`, enums by name), with the .proto field names so it reads like a plan file: the same
/// mapping as the bus's JSON events ([`tern_proto::json`]).
pub fn proto_json<M: prost::Message>(message: &M, full_name: &str) -> anyhow::Result<serde_json::Value> {
    Ok(tern_proto::json::to_json(message, full_name)?)
}

/// Colours for a terminal (anstyle), on when anstream would colour stdout: off when `NO_COLOR`
/// is set, `CLICOLOR=0`, `TERM=dumb` or stdout is not a terminal; on with `CLICOLOR_FORCE`.
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Self {
        let choice = anstream::AutoStream::choice(&std::io::stdout());
        Self { on: choice != anstream::ColorChoice::Never }
    }

    /// Whether colour is on (for what draws its own, such as the progress bars).
    pub fn is_on(self) -> bool {
        self.on
    }

    fn wrap(self, style: Style, text: &str) -> String {
        if self.on { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }
    pub fn red(self, text: &str) -> String {
        self.wrap(AnsiColor::Red.on_default(), text)
    }
    pub fn green(self, text: &str) -> String {
        self.wrap(AnsiColor::Green.on_default(), text)
    }
    pub fn yellow(self, text: &str) -> String {
        self.wrap(AnsiColor::Yellow.on_default(), text)
    }
    pub fn dim(self, text: &str) -> String {
        self.wrap(Style::new().dimmed(), text)
    }
    pub fn bold(self, text: &str) -> String {
        self.wrap(Style::new().bold(), text)
    }
}

/// `90s`, `10m`, `2h`, `1d`, `1h30m` (humantime's units and combinations); a bare number is
/// seconds, as it always was here.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a duration: it must be >= 0"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 90s, 10m, 1h30m or 1d"))
}

/// A span of seconds the way people say it: `42s`, `3m05s`, `1h02m`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Seconds of a protobuf duration.
pub fn secs(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Seconds since the Unix epoch of a protobuf timestamp.
pub fn epoch(t: Option<&prost_types::Timestamp>) -> Option<f64> {
    t.map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// RFC 3339 (UTC, seconds) of epoch seconds.
pub fn rfc3339(epoch_secs: f64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(epoch_secs as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_way_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(std::time::Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h"), Ok(std::time::Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(std::time::Duration::from_secs(86400)));
        assert_eq!(parse_duration("2"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_duration("ten").unwrap_err().contains("\"ten\""));
        assert!(parse_duration("5x").unwrap_err().contains("\"5x\""));
        assert!(parse_duration("-3").unwrap_err().contains("\"-3\""));
        assert_eq!(human_secs(185.0), "3m05s");
    }

    #[test]
    fn a_query_picks_from_the_document_and_a_bad_one_is_named() {
        // Not through `set_query`: the setting is the process's, and other tests print too.
        let err = compile("plans[.plan_id").unwrap_err().to_string();
        assert!(err.contains("\"plans[.plan_id\"") && err.contains("JMESPath"), "{err}");
        let doc = serde_json::json!({ "plans": [{ "plan_id": "p1" }, { "plan_id": "p2" }] });
        assert_eq!(search(&compile("plans[].plan_id").unwrap(), &doc).unwrap(), serde_json::json!(["p1", "p2"]));
    }

    #[test]
    fn colour_is_anstyle_escapes_or_nothing() {
        assert_eq!(Paint { on: true }.red("x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Paint { on: false }.bold("x"), "x");
    }

    #[test]
    fn a_plan_renders_in_protobuf_json_with_its_field_names() {
        let plan = tern_proto::Plan {
            plan_id: "p1".into(),
            state: tern_proto::PlanState::Running as i32,
            created_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        };
        let json = proto_json(&plan, "tern.v1.Plan").unwrap();
        assert_eq!(json["plan_id"], "p1");
        assert_eq!(json["state"], "PLAN_STATE_RUNNING");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
    }
}
