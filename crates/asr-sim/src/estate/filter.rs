//! `$filter` on protected item and job lists: `<field> eq '<value>'` clauses joined by `and`,
//! over the fields the spec defines for each list.

use std::collections::BTreeMap;

use super::Refusal;
use crate::clock::{self, SimTime};
use crate::item::{Item, Region};
use crate::job::{Job, JobState};

/// `$filter` on protected item lists: `<field> eq '<value>'` clauses joined by `and`, over the
/// spec's `ProtectedItemsQueryParameter` fields only. Any other field is refused by name, not
/// honoured (the fidelity rule: the spec defines no other).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemFilter {
    clauses: Vec<(String, String)>,
}

impl ItemFilter {
    /// Parses a filter; fields outside `ProtectedItemsQueryParameter` are refused by name.
    pub fn parse(filter: Option<&str>) -> Result<Self, Refusal> {
        let clauses = parse_filter(
            filter,
            &[
                "sourcefabricname",
                "sourcefabriclocation",
                "recoveryplanname",
                "vcentername",
                "instancetype",
                "multivmgroupcreateoption",
                "processserverid",
            ],
        )?;
        Ok(Self { clauses })
    }

    /// The `sourceFabricName` asked for, if any.
    pub(super) fn source_fabric(&self) -> Option<&str> {
        self.clauses.iter().find(|(k, _)| k == "sourcefabricname").map(|(_, v)| v.as_str())
    }

    pub(super) fn matches(&self, item: &Item, regions: &[Region; 2]) -> bool {
        let source = &regions[item.primary];
        self.clauses.iter().all(|(k, v)| match k.as_str() {
            // The fabric the item replicates from now.
            "sourcefabricname" => source.fabric.eq_ignore_ascii_case(v),
            "sourcefabriclocation" => source.location.eq_ignore_ascii_case(v),
            "recoveryplanname" => item.plans.iter().any(|p| p.eq_ignore_ascii_case(v)),
            "instancetype" => v.eq_ignore_ascii_case("A2A"),
            "multivmgroupcreateoption" => v.eq_ignore_ascii_case("AutoCreated"),
            // VMware/physical fields: no A2A item matches them.
            _ => false,
        })
    }
}

/// `$filter` on job lists (JobQueryParameter fields).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFilter {
    start: Option<SimTime>,
    end: Option<SimTime>,
    status: Option<String>,
    fabric: Option<String>,
    affected_types: Option<String>,
    name: Option<String>,
}

impl JobFilter {
    /// Whether `job` started before the filter's `startTime`.
    pub(super) fn started_before_window(&self, job: &Job) -> bool {
        self.start.is_some_and(|s| job.created < s)
    }

    /// Parses a filter; unknown fields and bad times are refused by name.
    pub fn parse(filter: Option<&str>) -> Result<Self, Refusal> {
        let mut f = Self::default();
        for (k, v) in parse_filter(
            filter,
            &[
                "starttime",
                "endtime",
                "jobstatus",
                "fabricid",
                "affectedobjecttypes",
                "jobname",
                "joboutputtype",
                "timezoneoffset",
            ],
        )? {
            let time = |v: &str| {
                clock::parse(v).ok_or_else(|| {
                    Refusal::bad_request(&format!("$filter {k}"), format!("'{v}' is not an RFC 3339 time"))
                })
            };
            match k.as_str() {
                "starttime" => f.start = Some(time(&v)?),
                "endtime" => f.end = Some(time(&v)?),
                "jobstatus" => f.status = Some(v),
                "fabricid" => f.fabric = Some(v),
                "affectedobjecttypes" => f.affected_types = Some(v),
                "jobname" => f.name = Some(v),
                _ => {}
            }
        }
        Ok(f)
    }

    pub(super) fn only_active(&self) -> bool {
        self.status.as_deref().is_some_and(|s| {
            s.split(',')
                .all(|s| s.trim().eq_ignore_ascii_case("InProgress") || s.trim().eq_ignore_ascii_case("NotStarted"))
        })
    }

    pub(super) fn matches(
        &self,
        job: &Job,
        state: JobState,
        regions: &[Region; 2],
        items: &BTreeMap<String, Item>,
    ) -> bool {
        if self.start.is_some_and(|s| job.created < s) || self.end.is_some_and(|e| job.created > e) {
            return false;
        }
        if let Some(st) = &self.status
            && !st.split(',').any(|s| s.trim().eq_ignore_ascii_case(state.as_str()))
        {
            return false;
        }
        if let Some(n) = &self.name
            && !job.scenario.eq_ignore_ascii_case(n)
            && !job.name.eq_ignore_ascii_case(n)
        {
            return false;
        }
        if let Some(t) = &self.affected_types
            && !t.split(',').any(|t| t.trim().eq_ignore_ascii_case(job.target_type))
        {
            return false;
        }
        if let Some(fab) = &self.fabric {
            let item_region = job.item.as_ref().and_then(|k| items.get(k)).map(|i| i.primary);
            let matches = item_region
                .is_some_and(|r| fab.to_ascii_lowercase().ends_with(&regions[r].fabric.to_ascii_lowercase()));
            if !matches {
                return false;
            }
        }
        true
    }
}

fn parse_filter(filter: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, Refusal> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else { return Ok(vec![]) };
    let mut out = Vec::new();
    for clause in split_and(filter) {
        let clause = clause.trim();
        let (field, rest) = clause
            .split_once(char::is_whitespace)
            .ok_or_else(|| Refusal::bad_request("$filter", format!("'{clause}' is not '<field> eq <value>'")))?;
        let rest = rest.trim_start();
        let value = rest
            .strip_prefix("eq")
            .map(str::trim)
            .ok_or_else(|| Refusal::bad_request("$filter", format!("only 'eq' is supported, in '{clause}'")))?;
        let value = value.trim_matches('\'').to_owned();
        let lower = field.to_ascii_lowercase();
        if !known.contains(&lower.as_str()) {
            return Err(Refusal::bad_request("$filter", format!("unknown field '{field}'")));
        }
        out.push((lower, value));
    }
    Ok(out)
}

fn split_and(s: &str) -> Vec<&str> {
    // Split on " and " outside quotes.
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && s[i..].len() >= 5 && s[i..i + 5].eq_ignore_ascii_case(" and ") {
            parts.push(&s[start..i]);
            start = i + 5;
            i += 5;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_fields_by_name() {
        let f = ItemFilter::parse(Some("RecoveryPlanName eq 'rp-1' and sourceFabricName eq 'a and b'")).unwrap();
        assert_eq!(
            f.clauses,
            vec![("recoveryplanname".into(), "rp-1".into()), ("sourcefabricname".into(), "a and b".into())]
        );
        let err = ItemFilter::parse(Some("color eq 'red'")).unwrap_err();
        assert!(err.body.error.message.contains("unknown field 'color'"));
        let err = ItemFilter::parse(Some("friendlyName eq 'vm-1'")).unwrap_err();
        assert!(err.body.error.message.contains("unknown field 'friendlyName'"), "{}", err.body.error.message);
        let err = JobFilter::parse(Some("startTime eq 'yesterday'")).unwrap_err();
        assert!(err.body.error.message.contains("RFC 3339"));
    }
}
