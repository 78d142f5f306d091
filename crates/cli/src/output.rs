//! How the CLI prints: `-o table|json|yaml`, protobuf messages as JSON, colour that respects
//! `NO_COLOR` and terminals, durations and times as people read them.

use std::io::IsTerminal;

use anyhow::Context;

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

/// Prints a document as JSON or YAML (the caller prints tables itself).
pub fn print_document(format: Format, doc: &serde_json::Value) -> anyhow::Result<()> {
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

/// Colours for a terminal; plain text when `NO_COLOR` is set or stdout is not a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self { on: !no_color && std::io::stdout().is_terminal() }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
    pub fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }
    pub fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }
    pub fn yellow(self, text: &str) -> String {
        self.wrap("33", text)
    }
    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
    pub fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
}

/// `90s`, `10m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration: use e.g. 90s, 10m, 2h or 1d"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("{s:?} is not a duration: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs_f64(value * scale))
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
        assert_eq!(parse_duration("2"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_duration("ten").unwrap_err().contains("\"ten\""));
        assert!(parse_duration("5w").unwrap_err().contains("unit"));
        assert_eq!(human_secs(185.0), "3m05s");
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
