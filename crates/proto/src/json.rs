//! Protobuf's canonical JSON mapping of Tern messages: what the CLI prints and what the bus's
//! JSON content mode carries. One definition, so `tern events -o json` and an event read as JSON
//! off the bus are the same document.
//!
//! The mapping: .proto field names (`plan_id`, as in plan files), fields at their default value
//! left out, enums by name, `Timestamp` as RFC 3339, `Duration` as `"1.5s"`, 64-bit integers as
//! JSON numbers. Readers accept both field spellings (`plan_id` and `planId`) and 64-bit integers
//! as numbers or strings, as protobuf's JSON mapping requires.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::FILE_DESCRIPTOR_SET;

/// Why a message could not be mapped to or from JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The name is no message of `tern.v1` (or the well-known types it imports).
    #[error("{0} is not a Tern message")]
    UnknownMessage(String),
    /// The message's bytes do not decode as that type.
    #[error("re-reading a {name}: {reason}")]
    Decode {
        /// The message's full name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The JSON is not that message in protobuf's JSON mapping.
    #[error("reading a {name} from JSON: {reason}")]
    Json {
        /// The message's full name.
        name: String,
        /// What went wrong, naming the field.
        reason: String,
    },
}

/// Every message, enum and service of `proto/tern/v1`, with their doc comments (the set keeps
/// its source info).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the compiled-in descriptor set decodes"))
}

/// How Tern writes protobuf JSON (see the module's documentation).
pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false)
}

/// `message` (of type `full_name`, e.g. `tern.v1.Event`) in protobuf's JSON mapping.
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> Result<serde_json::Value, JsonError> {
    let descriptor =
        pool().get_message_by_name(full_name).ok_or_else(|| JsonError::UnknownMessage(full_name.into()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| JsonError::Decode { name: full_name.into(), reason: e.to_string() })?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &serialize_options())
        .map_err(|e| JsonError::Json { name: full_name.into(), reason: e.to_string() })
}

/// Reads a message of type `full_name` from protobuf JSON. Unknown fields are an error: a reader
/// that silently dropped them would hide a schema mismatch.
pub fn from_json<M: prost::Message + Default>(json: &[u8], full_name: &str) -> Result<M, JsonError> {
    let descriptor =
        pool().get_message_by_name(full_name).ok_or_else(|| JsonError::UnknownMessage(full_name.into()))?;
    let failed = |reason: String| JsonError::Json { name: full_name.into(), reason };
    let mut reader = serde_json::Deserializer::from_slice(json);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor, &mut reader, &DeserializeOptions::new())
        .map_err(|e| failed(e.to_string()))?;
    reader.end().map_err(|e| failed(e.to_string()))?;
    dynamic.transcode_to::<M>().map_err(|e| JsonError::Decode { name: full_name.into(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Outcome, Phase, VmEvent, VmRef, event};

    #[test]
    fn an_event_maps_to_protobuf_json_and_back() {
        let ev = Event {
            event_id: "e1".into(),
            plan_id: "p1".into(),
            time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5_000_000 }),
            body: Some(event::Body::Vm(VmEvent {
                vm: Some(VmRef { name: "web-1".into(), ..Default::default() }),
                phase: Phase::Failover as i32,
                outcome: Outcome::Succeeded as i32,
                duration: Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let json = to_json(&ev, "tern.v1.Event").unwrap();
        assert_eq!(json["plan_id"], "p1", "proto field names");
        assert_eq!(json["time"], "2023-11-14T22:13:20.005Z");
        assert_eq!(json["vm"]["phase"], "PHASE_FAILOVER", "enums by name");
        assert_eq!(json["vm"]["duration"], "1.500s");
        assert!(json.get("source").is_none(), "defaults are left out");
        let back: Event = from_json(json.to_string().as_bytes(), "tern.v1.Event").unwrap();
        assert_eq!(back, ev);
        let err = from_json::<Event>(br#"{"plan_idd": "p1"}"#, "tern.v1.Event").unwrap_err().to_string();
        assert!(err.contains("plan_idd"), "{err}");
        assert!(to_json(&ev, "tern.v1.Nope").unwrap_err().to_string().contains("tern.v1.Nope"));
    }
}
