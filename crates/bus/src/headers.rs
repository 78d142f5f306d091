//! Header names, and the CloudEvents 1.0 binary-mode binding of [`Event`]s onto NATS headers.

use async_nats::HeaderMap;
use tern_proto::{Event, Outcome, Phase, PlanEventKind, event};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::BusError;

/// CloudEvents spec version.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// CloudEvents `id` (= [`Event::event_id`]).
pub const CE_ID: &str = "ce-id";
/// CloudEvents `source`: `/tern/<service>`.
pub const CE_SOURCE: &str = "ce-source";
/// CloudEvents `type`: `tern.<phase>.<outcome>` or `tern.plan.<kind>`.
pub const CE_TYPE: &str = "ce-type";
/// CloudEvents `subject`: the VM's name for VM events, the plan id for plan events.
pub const CE_SUBJECT: &str = "ce-subject";
/// CloudEvents `time`, RFC 3339.
pub const CE_TIME: &str = "ce-time";
/// CloudEvents extension attribute carrying the plan id, so consumers can route without decoding.
pub const CE_TERNPLAN: &str = "ce-ternplan";
/// CloudEvents `dataschema`: the URI of the JSON Schema of the event's type (see [`dataschema`]).
pub const CE_DATASCHEMA: &str = "ce-dataschema";
/// Media type of the data.
pub const CONTENT_TYPE: &str = "content-type";
/// The media type of every Tern payload on the protobuf subjects.
pub const PROTOBUF: &str = "application/protobuf";
/// The media type of the events on the JSON mirror subjects (protobuf's JSON mapping).
pub const JSON: &str = "application/json";

/// Where the event schemas are published: the committed `docs/events/schemas/` of the repository.
pub const SCHEMA_BASE: &str = "https://raw.githubusercontent.com/tern-dr/tern/main/docs/events/schemas/";

/// The `dataschema` of events of type `ty` (`tern.failover.succeeded`): the URI of its JSON Schema,
/// which is also that schema's `$id`. It names the schema of the JSON mapping of `tern.v1.Event`;
/// the protobuf data is the same message.
pub fn dataschema(ty: &str) -> String {
    format!("{SCHEMA_BASE}{ty}.json")
}

/// Why a message was dead-lettered.
pub const DLQ_REASON: &str = "Tern-Dlq-Reason";
/// Subject the message was originally published to.
pub const DLQ_SUBJECT: &str = "Tern-Dlq-Subject";
/// Stream it came from.
pub const DLQ_STREAM: &str = "Tern-Dlq-Stream";
/// Its sequence in that stream.
pub const DLQ_SEQUENCE: &str = "Tern-Dlq-Sequence";
/// The consumer that gave up on it.
pub const DLQ_CONSUMER: &str = "Tern-Dlq-Consumer";
/// How many times it had been delivered.
pub const DLQ_DELIVERIES: &str = "Tern-Dlq-Deliveries";

/// The CloudEvents context attributes of one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudEventAttributes {
    /// `ce-specversion`.
    pub specversion: String,
    /// `ce-id`.
    pub id: String,
    /// `ce-source`.
    pub source: String,
    /// `ce-type`.
    pub ty: String,
    /// `ce-subject`.
    pub subject: String,
    /// `ce-time`.
    pub time: String,
    /// `ce-dataschema`: the JSON Schema of this type (empty on events written before it existed).
    pub dataschema: String,
    /// `content-type`.
    pub content_type: String,
}

impl CloudEventAttributes {
    /// Derives the attributes of `event`. Fails if the event has no id or no body.
    pub fn of(event: &Event, service: &str) -> Result<Self, BusError> {
        if event.event_id.is_empty() {
            return Err(BusError::InvalidMessage("event_id is empty: every event needs a unique id".into()));
        }
        let (ty, subject) = match &event.body {
            Some(event::Body::Vm(vm)) => {
                let phase = Phase::try_from(vm.phase).unwrap_or(Phase::Unspecified);
                let outcome = Outcome::try_from(vm.outcome).unwrap_or(Outcome::Unspecified);
                let name = vm.vm.as_ref().map(|v| if v.name.is_empty() { &v.lifecycle_id } else { &v.name });
                let subject = name
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .ok_or_else(|| BusError::InvalidMessage(format!("event {}: vm.name is empty", event.event_id)))?;
                (format!("tern.{}.{}", phase.slug(), outcome.slug()), subject)
            }
            Some(event::Body::Plan(plan)) => {
                let kind = PlanEventKind::try_from(plan.kind).unwrap_or(PlanEventKind::Unspecified);
                (format!("tern.plan.{}", kind.slug()), event.plan_id.clone())
            }
            None => {
                return Err(BusError::InvalidMessage(format!("event {} has no body (vm or plan)", event.event_id)));
            }
        };
        let source = if event.source.is_empty() { service } else { &event.source };
        Ok(Self {
            specversion: "1.0".into(),
            id: event.event_id.clone(),
            source: format!("/tern/{source}"),
            ty: ty.clone(),
            subject,
            time: rfc3339(event.time.as_ref()),
            dataschema: dataschema(&ty),
            content_type: PROTOBUF.into(),
        })
    }

    /// Writes the attributes as `ce-*` headers (plus the plan extension).
    pub fn write(&self, plan_id: &str, headers: &mut HeaderMap) {
        headers.insert(CE_SPECVERSION, self.specversion.as_str());
        headers.insert(CE_ID, self.id.as_str());
        headers.insert(CE_SOURCE, self.source.as_str());
        headers.insert(CE_TYPE, self.ty.as_str());
        headers.insert(CE_SUBJECT, self.subject.as_str());
        headers.insert(CE_TIME, self.time.as_str());
        if !self.dataschema.is_empty() {
            headers.insert(CE_DATASCHEMA, self.dataschema.as_str());
        }
        headers.insert(CE_TERNPLAN, plan_id);
        headers.insert(CONTENT_TYPE, self.content_type.as_str());
    }

    /// Reads the attributes back; `None` if a required one is missing.
    pub fn read(headers: &HeaderMap) -> Option<Self> {
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        Some(Self {
            specversion: get(CE_SPECVERSION)?,
            id: get(CE_ID)?,
            source: get(CE_SOURCE)?,
            ty: get(CE_TYPE)?,
            subject: get(CE_SUBJECT).unwrap_or_default(),
            time: get(CE_TIME).unwrap_or_default(),
            dataschema: get(CE_DATASCHEMA).unwrap_or_default(),
            content_type: get(CONTENT_TYPE).unwrap_or_default(),
        })
    }
}

/// Formats a protobuf timestamp (or now, when absent or out of range) as RFC 3339.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    let at = ts
        .and_then(|t| {
            let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
            OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
        })
        .unwrap_or_else(OffsetDateTime::now_utc);
    at.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{PlanEvent, VmEvent, VmRef};

    #[test]
    fn vm_events_map_to_phase_outcome_types_and_the_vm_name() {
        let ev = Event {
            event_id: "e1".into(),
            plan_id: "p1".into(),
            time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5_000_000 }),
            body: Some(event::Body::Vm(VmEvent {
                vm: Some(VmRef { name: "web-1".into(), ..Default::default() }),
                phase: Phase::Failover as i32,
                outcome: Outcome::Succeeded as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let ce = CloudEventAttributes::of(&ev, "tern-failover").unwrap();
        assert_eq!(ce.ty, "tern.failover.succeeded");
        assert_eq!(ce.subject, "web-1");
        assert_eq!(ce.source, "/tern/tern-failover");
        assert_eq!(ce.time, "2023-11-14T22:13:20.005Z");
        assert_eq!(
            ce.dataschema,
            "https://raw.githubusercontent.com/tern-dr/tern/main/docs/events/schemas/tern.failover.succeeded.json"
        );
        let mut headers = HeaderMap::new();
        ce.write("p1", &mut headers);
        assert_eq!(headers.get(CE_DATASCHEMA).map(|v| v.as_str()), Some(ce.dataschema.as_str()));
        assert_eq!(CloudEventAttributes::read(&headers), Some(ce.clone()));
        // Events stored before `dataschema` existed still read, with none.
        let mut old = HeaderMap::new();
        CloudEventAttributes { dataschema: String::new(), ..ce.clone() }.write("p1", &mut old);
        assert!(old.get(CE_DATASCHEMA).is_none());
        assert_eq!(CloudEventAttributes::read(&old).map(|a| a.dataschema), Some(String::new()));
    }

    #[test]
    fn plan_events_use_the_plan_as_subject_and_bad_events_are_refused() {
        let mut ev = Event {
            event_id: "e2".into(),
            plan_id: "p1".into(),
            body: Some(event::Body::Plan(PlanEvent { kind: PlanEventKind::Accepted as i32, ..Default::default() })),
            ..Default::default()
        };
        let ce = CloudEventAttributes::of(&ev, "tern-planner").unwrap();
        assert_eq!((ce.ty.as_str(), ce.subject.as_str()), ("tern.plan.accepted", "p1"));
        assert!(ce.dataschema.ends_with("/docs/events/schemas/tern.plan.accepted.json"), "{}", ce.dataschema);
        ev.event_id.clear();
        assert!(CloudEventAttributes::of(&ev, "x").unwrap_err().to_string().contains("event_id"));
        ev.event_id = "e3".into();
        ev.body = None;
        assert!(CloudEventAttributes::of(&ev, "x").unwrap_err().to_string().contains("no body"));
    }
}
