//! The published contract of Tern's events, generated from the proto descriptors and this crate's
//! subjects and headers: one JSON Schema (draft 2020-12) per CloudEvents type, describing the
//! JSON content mode's data, one for each of the wave hooks' request and answer, and an AsyncAPI
//! 3.0.0 document of the channels.
//!
//! `tern-schemas` writes them to `docs/events/`; a test compares the committed files with what
//! this module generates, so the documents cannot drift from the code.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use serde_json::{Map, Value, json};
use tern_proto::{Outcome, Phase, PlanEventKind};

use crate::Identity;
use crate::headers;
use crate::subjects;
use crate::topology::{EVENTS_JSON_STREAM, EVENTS_STREAM};

/// Where the schemas live, relative to the repository root.
pub const SCHEMA_DIR: &str = "docs/events/schemas";
/// Where the AsyncAPI document lives, relative to the repository root.
pub const ASYNCAPI_FILE: &str = "docs/events/asyncapi.yaml";

const EVENT: &str = "tern.v1.Event";
const VM_EVENT: &str = "tern.v1.VmEvent";
const PLAN_EVENT: &str = "tern.v1.PlanEvent";
const HOOK_REQUEST: &str = "tern.v1.HookRequest";
const HOOK_RESPONSE: &str = "tern.v1.HookResponse";

/// One CloudEvents type Tern publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// `tern.<phase>.<outcome>`: something happened to one VM in one phase.
    Vm(Phase, Outcome),
    /// `tern.plan.<kind>`: something happened to a whole plan.
    Plan(PlanEventKind),
}

impl EventType {
    /// Every type: each phase with each outcome, and each plan event kind.
    pub fn all() -> Vec<EventType> {
        let phases = [Phase::Preflight, Phase::Failover, Phase::Commit, Phase::Reprotect, Phase::Cleanup, Phase::Drill];
        let outcomes = [Outcome::Started, Outcome::Progress, Outcome::Succeeded, Outcome::Failed, Outcome::Skipped];
        let kinds = [
            PlanEventKind::Accepted,
            PlanEventKind::WaveStarted,
            PlanEventKind::WaveFinished,
            PlanEventKind::Paused,
            PlanEventKind::Resumed,
            PlanEventKind::Cancelled,
            PlanEventKind::Completed,
            PlanEventKind::CompletedWithErrors,
            PlanEventKind::GateWaiting,
            PlanEventKind::GatePassed,
            PlanEventKind::GateFailed,
        ];
        let vm = phases.into_iter().flat_map(|p| outcomes.into_iter().map(move |o| EventType::Vm(p, o)));
        vm.chain(kinds.into_iter().map(EventType::Plan)).collect()
    }

    /// The CloudEvents `type` (`tern.failover.succeeded`, `tern.plan.completed`).
    pub fn name(self) -> String {
        match self {
            EventType::Vm(phase, outcome) => format!("tern.{}.{}", phase.slug(), outcome.slug()),
            EventType::Plan(kind) => format!("tern.{}.{}", subjects::PLAN_TOKEN, kind.slug()),
        }
    }
}

/// A generated document: its path relative to the repository root, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// E.g. `docs/events/schemas/tern.failover.succeeded.json`.
    pub path: String,
    /// The exact bytes to commit.
    pub text: String,
}

/// The JSON messages of a wave hook, which are not CloudEvents: the request a plan's `hook` gate
/// step sends (core NATS, to a subject under `tern.hooks.`) and the answer it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMessage {
    /// `tern.v1.HookRequest`, from the planner to a hook runner.
    Request,
    /// `tern.v1.HookResponse`, the runner's answer on the request's reply subject.
    Response,
}

impl HookMessage {
    /// Both, request first.
    pub const ALL: [HookMessage; 2] = [HookMessage::Request, HookMessage::Response];

    /// The schema's title and file stem, named like the subjects (`tern.hooks.request`).
    pub fn name(self) -> String {
        let which = match self {
            HookMessage::Request => "request",
            HookMessage::Response => "response",
        };
        format!("{}.{which}", subjects::HOOKS_PREFIX)
    }

    /// The proto message it is the JSON mapping of.
    pub fn proto(self) -> &'static str {
        match self {
            HookMessage::Request => HOOK_REQUEST,
            HookMessage::Response => HOOK_RESPONSE,
        }
    }

    /// The schema's `$id`, beside the event schemas'.
    pub fn schema_id(self) -> String {
        format!("{}{}.json", headers::SCHEMA_BASE, self.name())
    }
}

/// Every schema (the event types', then the hooks'), then the AsyncAPI document.
pub fn documents() -> Vec<Document> {
    let mut out: Vec<Document> = EventType::all()
        .into_iter()
        .map(|ty| Document { path: format!("{SCHEMA_DIR}/{}.json", ty.name()), text: render_json(&event_schema(ty)) })
        .collect();
    out.extend(HookMessage::ALL.into_iter().map(|which| Document {
        path: format!("{SCHEMA_DIR}/{}.json", which.name()),
        text: render_json(&hook_schema(which)),
    }));
    out.push(Document { path: ASYNCAPI_FILE.into(), text: asyncapi_yaml() });
    out
}

/// JSON with sorted keys, two-space indents and a final newline, whatever order the map keeps.
fn render_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value.clone())).expect("a JSON value renders");
    text.push('\n');
    text
}

/// `value` with every object's keys in sorted order (serde_json may be built to keep insertion
/// order; the committed files must not depend on that).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn message(full_name: &str) -> MessageDescriptor {
    tern_proto::json::pool().get_message_by_name(full_name).unwrap_or_else(|| panic!("{full_name} is in the pool"))
}

/// The JSON Schema of the data of events of type `ty`: a `tern.v1.Event` in protobuf's JSON
/// mapping whose body is the one the type names.
pub fn event_schema(ty: EventType) -> Value {
    let mut defs = BTreeMap::new();
    let event = message(EVENT);
    let event_ref = message_ref(&event, &mut defs);
    let (body, body_schema, other, what) = match ty {
        EventType::Vm(phase, outcome) => {
            let vm = message_ref(&message(VM_EVENT), &mut defs);
            let schema = json!({
                "allOf": [vm],
                "properties": {
                    "phase": { "const": enum_name("tern.v1.Phase", phase as i32) },
                    "outcome": { "const": enum_name("tern.v1.Outcome", outcome as i32) },
                },
                "required": ["phase", "outcome", "vm"],
            });
            let what = format!("the {} phase of one VM {}", phase.slug(), outcome_words(outcome));
            ("vm", schema, "plan", what)
        }
        EventType::Plan(kind) => {
            let plan = message_ref(&message(PLAN_EVENT), &mut defs);
            let schema = json!({
                "allOf": [plan],
                "properties": { "kind": { "const": enum_name("tern.v1.PlanEventKind", kind as i32) } },
                "required": ["kind"],
            });
            ("plan", schema, "vm", format!("a plan: {}", kind.slug().replace('_', " ")))
        }
    };
    let name = ty.name();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": headers::dataschema(&name),
        "title": name,
        "description": format!(
            "The data of a `{name}` CloudEvent ({what}): a tern.v1.Event in protobuf's JSON mapping, \
             as published on `{json}.…` with content-type {json_type}, field names as in the .proto \
             files. The same event travels as protobuf on `{pb}.…`.\n\n{}",
            comment_of_message(&event).unwrap_or_default(),
            json = subjects::JSON_EVENTS_PREFIX,
            json_type = headers::JSON,
            pb = subjects::EVENTS_PREFIX,
        ),
        "allOf": [event_ref],
        "properties": { body: body_schema },
        "required": ["event_id", "plan_id", "time", "source", body],
        "not": { "required": [other] },
        "$defs": Value::Object(defs.into_iter().collect()),
    })
}

/// The JSON Schema of a wave hook's request or answer: the proto message in protobuf's JSON
/// mapping (`.proto` field names; fields at their default value may be left out).
pub fn hook_schema(which: HookMessage) -> Value {
    let mut defs = BTreeMap::new();
    let descriptor = message(which.proto());
    let reference = message_ref(&descriptor, &mut defs);
    let name = which.name();
    let proto = which.proto();
    let (what, properties, required) = match which {
        HookMessage::Request => (
            format!(
                "The body of the core NATS request a plan's `hook` gate step sends to the subject it names \
                 under `{prefix}.`, with {content_type} {json}: a {proto} in protobuf's JSON mapping, field \
                 names as in the .proto files. Fields at their default value (0, \"\", empty lists and \
                 maps) are left out, so read each with a default. `hook_id` is the idempotency key: the \
                 same for every try of one attempt.",
                prefix = subjects::HOOKS_PREFIX,
                content_type = headers::CONTENT_TYPE,
                json = headers::JSON,
            ),
            json!({
                "when": { "enum": ["before", "after"] },
                "wave_number": { "minimum": 1 },
                "attempt": { "minimum": 1 },
                "try": { "minimum": 1 },
            }),
            // What the planner always sets to something other than its default.
            json!(["hook_id", "plan_id", "wave_number", "when", "step_name", "attempt", "try", "deadline"]),
        ),
        HookMessage::Response => (
            format!(
                "The answer a hook runner publishes to the reply subject of a `{prefix}.…` request: a \
                 {proto} in protobuf's JSON mapping, field names as in the .proto files (a field Tern \
                 does not know makes the answer unreadable, which fails the try). A left-out `ok` is \
                 false: `{{\"ok\": true, \"message\": \"...\"}}` passes the step, anything else fails \
                 this try.",
                prefix = subjects::HOOKS_PREFIX,
            ),
            json!({}),
            json!([]),
        ),
    };
    let description = [what, comment_of_message(&descriptor).unwrap_or_default(), hooks_comment()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": which.schema_id(),
        "title": name,
        "description": description,
        "allOf": [reference],
        "$defs": Value::Object(defs.into_iter().collect()),
    });
    if properties.as_object().is_some_and(|p| !p.is_empty()) {
        schema["properties"] = properties;
    }
    if required.as_array().is_some_and(|r| !r.is_empty()) {
        schema["required"] = required;
    }
    schema
}

/// The comment at the top of hooks.proto (on its `syntax` statement): what a hook is.
fn hooks_comment() -> String {
    let file = message(HOOK_REQUEST).parent_file().file_descriptor_proto().clone();
    // 12: FileDescriptorProto's `syntax` field.
    comment(&file, &[12]).unwrap_or_default()
}

fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Started => "started",
        Outcome::Progress => "made progress",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Skipped => "was skipped",
        Outcome::Unspecified => "",
    }
}

fn enum_name(full_name: &str, number: i32) -> String {
    let descriptor = tern_proto::json::pool().get_enum_by_name(full_name).expect("the enum is in the pool");
    descriptor.get_value(number).map(|v| v.name().to_owned()).expect("the value is in the enum")
}

/// `{"$ref": "#/$defs/<name>"}`, defining the message (and everything it refers to) in `defs`.
fn message_ref(descriptor: &MessageDescriptor, defs: &mut BTreeMap<String, Value>) -> Value {
    let name = descriptor.full_name().to_owned();
    let reference = json!({ "$ref": format!("#/$defs/{name}") });
    if defs.contains_key(&name) {
        return reference;
    }
    if let Some(schema) = well_known(descriptor) {
        defs.insert(name, schema);
        return reference;
    }
    defs.insert(name.clone(), Value::Null); // a placeholder that ends recursion
    let mut properties = Map::new();
    for field in descriptor.fields() {
        let mut schema = field_schema(&field, defs);
        if let Some(text) = comment_of_field(&field) {
            schema = with_description(schema, text);
        }
        properties.insert(field.name().to_owned(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        // A field this schema does not name is a field the generator did not see: run `make schemas`.
        "additionalProperties": false,
    });
    if let Some(text) = comment_of_message(descriptor) {
        schema["description"] = Value::String(text);
    }
    defs.insert(name, schema);
    reference
}

/// Adds a description to a schema; a bare `$ref` keeps its meaning with siblings in 2020-12.
fn with_description(mut schema: Value, text: String) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert("description".into(), Value::String(text));
    }
    schema
}

/// The JSON forms protobuf gives the well-known types Tern uses.
fn well_known(descriptor: &MessageDescriptor) -> Option<Value> {
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => Some(json!({
            "type": "string",
            "format": "date-time",
            "description": "An instant, RFC 3339 in UTC (`2026-05-01T12:00:00.250Z`).",
        })),
        "google.protobuf.Duration" => Some(json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "A duration in seconds with up to nine fractional digits and the suffix `s` (`1.500s`).",
        })),
        _ => None,
    }
}

fn field_schema(field: &FieldDescriptor, defs: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("a map field's kind is its entry message") };
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": kind_schema(&value.kind(), defs) });
    }
    let one = kind_schema(&field.kind(), defs);
    if field.is_list() { json!({ "type": "array", "items": one }) } else { one }
}

fn kind_schema(kind: &Kind, defs: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({
            "anyOf": [{ "type": "number" }, { "enum": ["NaN", "Infinity", "-Infinity"] }],
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "minimum": i32::MIN, "maximum": i32::MAX })
        }
        Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX }),
        // Written as numbers; protobuf's JSON mapping lets readers and other writers use strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": ["integer", "string"], "pattern": "^-?[0-9]+$" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": ["integer", "string"], "minimum": 0, "pattern": "^[0-9]+$" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Message(m) => message_ref(m, defs),
        Kind::Enum(e) => enum_ref(e, defs),
    }
}

/// Enums by name; each value with its comment.
fn enum_ref(descriptor: &EnumDescriptor, defs: &mut BTreeMap<String, Value>) -> Value {
    let name = descriptor.full_name().to_owned();
    let reference = json!({ "$ref": format!("#/$defs/{name}") });
    if defs.contains_key(&name) {
        return reference;
    }
    let file = descriptor.parent_file_descriptor_proto();
    let values: Vec<Value> = descriptor
        .values()
        .map(|v| {
            let mut one = json!({ "const": v.name() });
            if let Some(text) = comment(file, v.path()) {
                one["description"] = Value::String(text);
            }
            one
        })
        .collect();
    let mut schema = json!({ "type": "string", "oneOf": values });
    if let Some(text) = comment(file, descriptor.path()) {
        schema["description"] = Value::String(text);
    }
    defs.insert(name, schema);
    reference
}

fn comment_of_message(descriptor: &MessageDescriptor) -> Option<String> {
    comment(descriptor.parent_file_descriptor_proto(), descriptor.path())
}

fn comment_of_field(field: &FieldDescriptor) -> Option<String> {
    comment(field.parent_message().parent_file_descriptor_proto(), field.path())
}

/// The doc comment at `path` of `file` (leading, else trailing), paragraphs kept, lines joined.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let location = file.source_code_info.iter().flat_map(|info| &info.location).find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref().or(location.trailing_comments.as_deref())?;
    Some(tidy(text)).filter(|t| !t.is_empty())
}

/// One paragraph per blank-line-separated block, its lines joined by spaces.
fn tidy(raw: &str) -> String {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in raw.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join(" "));
    }
    paragraphs.join("\n\n")
}

/// The AsyncAPI 3.0.0 document, as YAML, its sections in reading order.
pub fn asyncapi_yaml() -> String {
    let doc = asyncapi();
    let mut text =
        String::from("# Generated by `make schemas` (tern-schemas) from proto/tern/v1 and crates/bus: do not edit.\n");
    for section in ["asyncapi", "info", "defaultContentType", "servers", "channels", "operations", "components"] {
        let mut one = Map::new();
        one.insert(section.into(), sorted(doc[section].clone()));
        text.push_str(&serde_yaml_ng::to_string(&Value::Object(one)).expect("a JSON value renders as YAML"));
    }
    text
}

fn asyncapi() -> Value {
    let types = EventType::all();
    let vm_types: Vec<EventType> = types.iter().copied().filter(|t| matches!(t, EventType::Vm(..))).collect();
    let plan_types: Vec<EventType> = types.iter().copied().filter(|t| matches!(t, EventType::Plan(_))).collect();
    let phases: Vec<&str> = vm_types
        .iter()
        .filter_map(|t| match t {
            EventType::Vm(p, Outcome::Started) => Some(p.slug()),
            _ => None,
        })
        .collect();
    let outcomes: Vec<&str> = vm_types
        .iter()
        .filter_map(|t| match t {
            EventType::Vm(Phase::Failover, o) => Some(o.slug()),
            _ => None,
        })
        .collect();
    let kinds: Vec<&str> = plan_types
        .iter()
        .filter_map(|t| match t {
            EventType::Plan(k) => Some(k.slug()),
            _ => None,
        })
        .collect();

    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let channel_specs = [
        ("vmEvents", subjects::EVENTS_PREFIX, &vm_types, false),
        ("planEvents", subjects::EVENTS_PREFIX, &plan_types, false),
        ("vmEventsJson", subjects::JSON_EVENTS_PREFIX, &vm_types, true),
        ("planEventsJson", subjects::JSON_EVENTS_PREFIX, &plan_types, true),
    ];
    for (id, prefix, types, json_mode) in channel_specs {
        let plan_level = matches!(types.first(), Some(EventType::Plan(_)));
        let address = if plan_level {
            format!("{prefix}.{{plan}}.{}.{{kind}}", subjects::PLAN_TOKEN)
        } else {
            format!("{prefix}.{{plan}}.{{phase}}.{{outcome}}")
        };
        let stream = if json_mode { EVENTS_JSON_STREAM } else { EVENTS_STREAM };
        let mode = if json_mode {
            "as JSON (protobuf's JSON mapping of tern.v1.Event), published only where the services run with \
             `TERN_JSON_EVENTS=true` (`tern up` does)"
        } else {
            "as protobuf (tern.v1.Event)"
        };
        let scope = if plan_level { "Plan-level events" } else { "VM phase events" };
        let mut channel_messages = Map::new();
        for ty in types.iter() {
            let name = ty.name();
            let key = if json_mode { format!("{name}.json") } else { name.clone() };
            messages.insert(key.clone(), message_object(*ty, json_mode));
            channel_messages.insert(key.clone(), json!({ "$ref": format!("#/components/messages/{key}") }));
        }
        let mut parameters = Map::new();
        parameters.insert("plan".into(), json!({ "description": "The plan id." }));
        if plan_level {
            parameters.insert("kind".into(), json!({ "description": "What happened to the plan.", "enum": kinds }));
        } else {
            parameters.insert("phase".into(), json!({ "description": "The phase.", "enum": phases }));
            parameters.insert("outcome".into(), json!({ "description": "What happened in it.", "enum": outcomes }));
        }
        channels.insert(
            id.into(),
            json!({
                "address": address,
                "title": format!("{scope}{}", if json_mode { " (JSON)" } else { "" }),
                "description": format!(
                    "{scope} {mode}, kept by the JetStream stream {stream} for replay (limits retention). \
                     Read them with a consumer of your own on that stream (an ordered consumer, or a durable \
                     one to resume where you left off): the core NATS subscription alone does not replay."
                ),
                "servers": [{ "$ref": "#/servers/nats" }],
                "parameters": parameters,
                "messages": channel_messages,
            }),
        );
        let channel_messages: Vec<Value> = types
            .iter()
            .map(|ty| {
                let key = if json_mode { format!("{}.json", ty.name()) } else { ty.name() };
                json!({ "$ref": format!("#/channels/{id}/messages/{key}") })
            })
            .collect();
        operations.insert(
            format!("receive{}{}", &id[..1].to_uppercase(), &id[1..]),
            json!({
                "action": "receive",
                "channel": { "$ref": format!("#/channels/{id}") },
                "summary": format!("Consume {} {mode}.", scope.to_lowercase()),
                "messages": channel_messages,
            }),
        );
    }

    hooks(&mut channels, &mut operations, &mut messages);

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tern lifecycle events",
            "version": "1",
            "description": format!(
                "Every state change of a failback plan and of each of its VMs is a CloudEvents 1.0 event \
                 in binary mode on NATS JetStream: the `ce-*` headers carry the context attributes and \
                 the data is a tern.v1.Event. It is published as protobuf on `{pb}.…` (stream \
                 {EVENTS_STREAM}), and, where the services run with `TERN_JSON_EVENTS=true`, once more \
                 as JSON on `{js}.…` (stream {EVENTS_JSON_STREAM}) with the same headers and id. \
                 `ce-dataschema` names the JSON Schema of the event's type (docs/events/schemas). \
                 See docs/events.md.\n\nWave hooks are not events: a plan's `hook` gate step makes the \
                 planner send a core NATS request (no stream keeps it) to a subject under `{hooks}.`, \
                 and a hook runner answers it (channels `{HOOKS_CHANNEL}` and `{HOOK_REPLY_CHANNEL}`).",
                pb = subjects::EVENTS_PREFIX,
                js = subjects::JSON_EVENTS_PREFIX,
                hooks = subjects::HOOKS_PREFIX,
            ),
            "license": { "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0" },
            "externalDocs": { "url": "https://github.com/tern-dr/tern/blob/main/docs/events.md" },
        },
        "defaultContentType": headers::PROTOBUF,
        "servers": {
            "nats": {
                "host": "{host}",
                "protocol": "nats",
                "title": "The Tern bus",
                "description": "A nats-server with JetStream (one locally under `tern up`, a three-node \
                    cluster in production). Consumers connect as the `events-reader` identity: its nkey \
                    seed is the file endpoints.json names as `nats_credentials` (`tern up`), or the one \
                    `tern bus credentials` wrote; its replies come on the inbox prefix \
                    `_INBOX_events-reader`, which the client must be told to use. Hook runners connect \
                    as the `hooks` identity (its seed is `hooks_credentials` in endpoints.json), whose \
                    inbox prefix is `_INBOX_hooks`.",
                "variables": {
                    "host": { "default": "127.0.0.1:4222", "description": "host:port of a NATS server" },
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "CloudEventsHeaders": cloudevents_headers(),
                "HookRequestHeaders": hook_headers().0,
                "HookResponseHeaders": hook_headers().1,
            },
        },
    })
}

/// The channel of hook requests.
const HOOKS_CHANNEL: &str = "hooks";
/// The channel of hook answers: each request's own reply subject.
const HOOK_REPLY_CHANNEL: &str = "hookReplies";
const HOOK_REQUEST_MESSAGE: &str = "hookRequest";
const HOOK_RESPONSE_MESSAGE: &str = "hookResponse";

/// Wave hooks: the request channel, the reply channel, their messages, the planner's operation
/// (send, expecting the reply) and the hook runner's (receive, and answer).
fn hooks(channels: &mut Map<String, Value>, operations: &mut Map<String, Value>, messages: &mut Map<String, Value>) {
    let prefix = subjects::HOOKS_PREFIX;
    let runner = Identity::Hooks;
    let runner_name = runner.name();
    let runner_inbox = runner.inbox_prefix();
    let planner_inbox = Identity::Planner.inbox_prefix();
    let request_schema = format!("./schemas/{}.json", HookMessage::Request.name());
    let response_schema = format!("./schemas/{}.json", HookMessage::Response.name());
    let runner_rules = format!(
        "A hook runner, in any language, connects as the `{runner_name}` NATS identity (its nkey seed is \
         `hooks_credentials` in the endpoints.json `tern up` writes, or the one `tern bus credentials` \
         wrote). That identity may subscribe to `{prefix}.>` and publish only answers to the requests it \
         receives (allow_responses), nothing else; its inbox prefix is `{runner_inbox}`, which the client \
         must be told to use. Subscribe to the subject the plan names, in a queue group so that several \
         copies share the requests, and publish a {HOOK_RESPONSE} in JSON to each request's reply \
         subject within the step's timeout (the request's `deadline`). `{{\"ok\": false}}`, an answer \
         Tern cannot read, no answer in time or nobody listening fail the try: the planner tries again \
         after a back-off while the step has retries left, then the step fails under the plan's failure \
         policy. A try may come more than once (a timed-out try, a planner that restarted mid-try) and \
         `hook_id` is the same for every try of one attempt: keep the ids done and answer a repeat \
         without doing the work twice."
    );

    messages.insert(
        HOOK_REQUEST_MESSAGE.into(),
        json!({
            "name": HOOK_REQUEST_MESSAGE,
            "title": "Hook request",
            "summary": "What a plan's `hook` gate step asks of the service answering on its subject.",
            "description": format!(
                "A {HOOK_REQUEST} in protobuf's JSON mapping (.proto field names; fields at their default \
                 value left out), described by {request_schema}. Sent as a core NATS request: the NATS \
                 reply subject is where the answer goes."
            ),
            "contentType": headers::JSON,
            "headers": { "$ref": "#/components/schemas/HookRequestHeaders" },
            "payload": { "$ref": request_schema },
            "correlationId": {
                "location": "$message.payload#/hook_id",
                "description": "The idempotency key: the same for every try of one attempt, a new one for each \
                    `tern plan retry`.",
            },
        }),
    );
    messages.insert(
        HOOK_RESPONSE_MESSAGE.into(),
        json!({
            "name": HOOK_RESPONSE_MESSAGE,
            "title": "Hook answer",
            "summary": "A hook's answer: `ok` passes the step, anything else fails this try.",
            "description": format!(
                "A {HOOK_RESPONSE} in protobuf's JSON mapping, described by {response_schema}: \
                 `{{\"ok\": true, \"message\": \"...\"}}`. A left-out `ok` is false; `message` is shown to \
                 operators (the gate event, `tern plan watch`, the report). The planner reads the body \
                 only: headers are optional."
            ),
            "contentType": headers::JSON,
            "headers": { "$ref": "#/components/schemas/HookResponseHeaders" },
            "payload": { "$ref": response_schema },
        }),
    );

    channels.insert(
        HOOKS_CHANNEL.into(),
        json!({
            "address": format!("{prefix}.{{hook}}"),
            "title": "Wave hook requests",
            "description": format!(
                "{}\n\nThe planner (the `planner` identity) sends each try of a `hook` gate step here as a \
                 core NATS request: no JetStream stream keeps it, so only a runner subscribed at the time \
                 gets it. {runner_rules}",
                hooks_comment()
            ),
            "servers": [{ "$ref": "#/servers/nats" }],
            "parameters": {
                "hook": {
                    "description": format!(
                        "The subject's tail, as the plan's hook step names it (`dns-update` in \
                         `{prefix}.dns-update`): one or more dot-separated tokens of ASCII letters, digits, \
                         `-` and `_`, no wildcards; the whole subject is at most 200 characters."
                    ),
                    "examples": ["dns-update", "lb.drain"],
                },
            },
            "messages": { HOOK_REQUEST_MESSAGE: { "$ref": format!("#/components/messages/{HOOK_REQUEST_MESSAGE}") } },
        }),
    );
    channels.insert(
        HOOK_REPLY_CHANNEL.into(),
        json!({
            // Each request's own reply subject: known only at run time.
            "address": null,
            "title": "Wave hook answers",
            "description": format!(
                "The reply subject of a hook request: the requester's inbox (`{planner_inbox}.…` for the \
                 planner), set by NATS on the request, not a header. The runner publishes its answer \
                 there (the `{runner_name}` identity may publish only such answers)."
            ),
            "servers": [{ "$ref": "#/servers/nats" }],
            "messages": { HOOK_RESPONSE_MESSAGE: { "$ref": format!("#/components/messages/{HOOK_RESPONSE_MESSAGE}") } },
        }),
    );

    let reply = json!({
        "channel": { "$ref": format!("#/channels/{HOOK_REPLY_CHANNEL}") },
        "messages": [{ "$ref": format!("#/channels/{HOOK_REPLY_CHANNEL}/messages/{HOOK_RESPONSE_MESSAGE}") }],
    });
    let request = json!([{ "$ref": format!("#/channels/{HOOKS_CHANNEL}/messages/{HOOK_REQUEST_MESSAGE}") }]);
    operations.insert(
        "sendHookRequest".into(),
        json!({
            "action": "send",
            "channel": { "$ref": format!("#/channels/{HOOKS_CHANNEL}") },
            "title": "The planner calls a wave hook",
            "summary": "Send a hook gate step's request and wait for its answer.",
            "description": "The planner's side: for each try of a `hook` step it sends a request to the \
                subject the plan names and waits up to the step's timeout for the answer on the request's \
                NATS reply subject. One replica sends each try (it is claimed in the plan first).",
            "messages": request.clone(),
            "reply": reply.clone(),
        }),
    );
    operations.insert(
        "answerHookRequest".into(),
        json!({
            "action": "receive",
            "channel": { "$ref": format!("#/channels/{HOOKS_CHANNEL}") },
            "title": "A hook runner answers a wave hook",
            "summary": "Receive a hook request and publish the answer to its reply subject.",
            "description": format!("The hook runner's side. {runner_rules}"),
            "messages": request,
            "reply": reply,
        }),
    );
}

/// The NATS headers of a hook request, and of its answer, as JSON Schemas.
fn hook_headers() -> (Value, Value) {
    let request = json!({
        "type": "object",
        "properties": {
            headers::CONTENT_TYPE: { "type": "string", "const": headers::JSON, "description": "The body is JSON." },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the planner's `hook` span (a child of the plan's trace), \
                    for a runner that traces its work under it.",
            },
        },
        "required": [headers::CONTENT_TYPE],
    });
    let response = json!({
        "type": "object",
        "properties": {
            headers::CONTENT_TYPE: {
                "type": "string",
                "const": headers::JSON,
                "description": "Optional: the planner reads the body as JSON whatever the headers say.",
            },
        },
    });
    (request, response)
}

fn message_object(ty: EventType, json_mode: bool) -> Value {
    let name = ty.name();
    let schema_path = format!("./schemas/{name}.json");
    let payload = if json_mode {
        json!({ "$ref": schema_path })
    } else {
        json!({
            "schemaFormat": "application/vnd.google.protobuf;version=3",
            "schema": { "$ref": "../../proto/tern/v1/events.proto" },
        })
    };
    let (content_type, mode) = if json_mode {
        (headers::JSON, format!("protobuf's JSON mapping of tern.v1.Event, described by {schema_path}"))
    } else {
        (headers::PROTOBUF, format!("tern.v1.Event in protobuf; its JSON mapping is described by {schema_path}"))
    };
    json!({
        "name": name,
        "title": name,
        "summary": format!("A `{name}` CloudEvent."),
        "description": format!("The data is {mode}. `ce-type` is `{name}`; `ce-dataschema` is {}.", headers::dataschema(&name)),
        "contentType": content_type,
        "headers": { "$ref": "#/components/schemas/CloudEventsHeaders" },
        "payload": payload,
        "correlationId": { "location": "$message.header#/ce-id", "description": "The CloudEvents id, also the NATS dedup id." },
    })
}

/// The NATS headers of every event (CloudEvents binary mode, plus Tern's extension and W3C trace
/// context), as a JSON Schema.
fn cloudevents_headers() -> Value {
    let mut properties = Map::new();
    let mut string = |name: &str, description: &str| {
        properties.insert(name.into(), json!({ "type": "string", "description": description }));
    };
    string(headers::CE_SPECVERSION, "CloudEvents spec version: `1.0`.");
    string(headers::CE_ID, "Unique event id (= `event_id` in the data); also the NATS `Nats-Msg-Id` dedup id.");
    string(headers::CE_SOURCE, "`/tern/<service>`, e.g. `/tern/tern-failover`.");
    string(headers::CE_TYPE, "`tern.<phase>.<outcome>` or `tern.plan.<kind>`.");
    string(headers::CE_SUBJECT, "The VM's name for VM events, the plan id for plan events.");
    string(headers::CE_TIME, "When it happened, RFC 3339.");
    string(headers::CE_DATASCHEMA, "URI of the JSON Schema of this type (its `$id`): docs/events/schemas/<type>.json.");
    string(headers::CE_TERNPLAN, "Extension attribute: the plan id, to route without decoding.");
    string(headers::CONTENT_TYPE, "`application/protobuf` on tern.events, `application/json` on tern.json.events.");
    string("traceparent", "W3C trace context of the span that published the event, where there is one.");
    json!({
        "type": "object",
        "properties": properties,
        "required": [
            headers::CE_SPECVERSION, headers::CE_ID, headers::CE_SOURCE, headers::CE_TYPE,
            headers::CE_SUBJECT, headers::CE_TIME, headers::CE_DATASCHEMA, headers::CE_TERNPLAN,
            headers::CONTENT_TYPE,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_schema_whose_id_is_its_dataschema_and_that_carries_the_proto_comments() {
        let docs = documents();
        assert_eq!(docs.len(), 6 * 5 + 11 + 2 + 1);
        let schema = event_schema(EventType::Vm(Phase::Failover, Outcome::Succeeded));
        assert_eq!(schema["$id"], headers::dataschema("tern.failover.succeeded"));
        assert_eq!(schema["properties"]["vm"]["properties"]["outcome"]["const"], "OUTCOME_SUCCEEDED");
        let resource = &schema["$defs"]["tern.v1.VmResource"];
        assert!(resource["properties"]["region"]["description"].as_str().unwrap().contains("Azure region"));
        assert_eq!(schema["$defs"]["google.protobuf.Duration"]["type"], "string");
        let plan = event_schema(EventType::Plan(PlanEventKind::Completed));
        assert_eq!(plan["required"][4], "plan");
        assert!(asyncapi_yaml().contains("address: tern.json.events.{plan}.{phase}.{outcome}"));
    }

    #[test]
    fn the_hook_schemas_describe_the_request_and_answer_with_their_proto_comments() {
        let paths: Vec<String> = documents().into_iter().map(|d| d.path).collect();
        for which in HookMessage::ALL {
            let path = format!("{SCHEMA_DIR}/{}.json", which.name());
            assert!(paths.contains(&path), "{path} is not generated");
        }
        let request = hook_schema(HookMessage::Request);
        assert_eq!(request["$id"], format!("{}tern.hooks.request.json", headers::SCHEMA_BASE));
        assert_eq!(request["title"], "tern.hooks.request");
        assert_eq!(request["allOf"][0]["$ref"], "#/$defs/tern.v1.HookRequest");
        let defs = &request["$defs"];
        let fields = &defs["tern.v1.HookRequest"]["properties"];
        assert!(fields["hook_id"]["description"].as_str().unwrap().contains("idempotency key"));
        assert_eq!(fields["hook_id"]["type"], "string");
        assert_eq!(fields["deadline"]["$ref"], "#/$defs/google.protobuf.Timestamp");
        assert_eq!(fields["vms"]["items"]["$ref"], "#/$defs/tern.v1.HookVm");
        assert_eq!(fields["labels"]["additionalProperties"]["type"], "string");
        let vm = &defs["tern.v1.HookVm"]["properties"];
        assert_eq!(vm["resource"]["$ref"], "#/$defs/tern.v1.VmResource");
        assert_eq!(vm["state"]["$ref"], "#/$defs/tern.v1.VmState");
        assert!(defs["tern.v1.VmResource"]["properties"]["private_ips"]["items"]["type"] == "string");
        let states: Vec<&str> =
            defs["tern.v1.VmState"]["oneOf"].as_array().unwrap().iter().map(|v| v["const"].as_str().unwrap()).collect();
        assert!(states.contains(&"VM_STATE_SUCCEEDED"), "{states:?}");
        assert_eq!(request["properties"]["when"]["enum"], json!(["before", "after"]));
        assert!(request["required"].as_array().unwrap().contains(&json!("hook_id")));
        assert!(request["description"].as_str().unwrap().contains("core NATS, not JetStream"));

        let response = hook_schema(HookMessage::Response);
        assert_eq!(response["$id"], format!("{}tern.hooks.response.json", headers::SCHEMA_BASE));
        let answer = &response["$defs"]["tern.v1.HookResponse"];
        assert_eq!(answer["properties"]["ok"]["type"], "boolean");
        assert_eq!(answer["properties"]["message"]["type"], "string");
        assert_eq!(answer["additionalProperties"], false);
        assert!(response.get("required").is_none(), "a left-out ok is false");
    }

    /// What the planner sends names only fields the request schema knows, with the JSON types it
    /// says (a cheap check; tests/events validates samples against the schemas).
    #[test]
    fn a_request_as_the_planner_writes_it_fits_the_schema() {
        let request = tern_proto::HookRequest {
            hook_id: "p1.gate.0.before.0.1".into(),
            plan_id: "p1".into(),
            wave_number: 1,
            when: "before".into(),
            step_name: "hook #1".into(),
            attempt: 1,
            r#try: 2,
            deadline: Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 0 }),
            vms: vec![tern_proto::HookVm {
                name: "web-1".into(),
                resource: Some(tern_proto::VmResource {
                    region: "eastus".into(),
                    private_ips: vec!["10.0.0.4".into()],
                    ..Default::default()
                }),
                state: tern_proto::VmState::Succeeded as i32,
                ..Default::default()
            }],
            labels: [("team".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        };
        let body = tern_proto::json::to_json(&request, HOOK_REQUEST).unwrap();
        let schema = hook_schema(HookMessage::Request);
        let known = |def: &str, value: &Value| {
            let props = schema["$defs"][def]["properties"].as_object().unwrap();
            for key in value.as_object().unwrap().keys() {
                assert!(props.contains_key(key), "{def} has no {key}");
            }
        };
        known(HOOK_REQUEST, &body);
        known("tern.v1.HookVm", &body["vms"][0]);
        known("tern.v1.VmResource", &body["vms"][0]["resource"]);
        assert_eq!(body["vms"][0]["state"], "VM_STATE_SUCCEEDED");
        assert_eq!(body["try"], 2);
        for key in schema["required"].as_array().unwrap() {
            assert!(body.get(key.as_str().unwrap()).is_some(), "{key} is required but left out");
        }
    }

    #[test]
    fn the_asyncapi_document_has_the_hook_channels_and_operations() {
        let doc = asyncapi();
        assert_eq!(doc["channels"]["hooks"]["address"], "tern.hooks.{hook}");
        assert!(doc["channels"]["hooks"]["parameters"]["hook"]["description"].is_string());
        assert!(doc["channels"]["hookReplies"]["address"].is_null());
        let send = &doc["operations"]["sendHookRequest"];
        assert_eq!(send["action"], "send");
        assert_eq!(send["reply"]["channel"]["$ref"], "#/channels/hookReplies");
        assert_eq!(send["reply"]["messages"][0]["$ref"], "#/channels/hookReplies/messages/hookResponse");
        assert_eq!(doc["operations"]["answerHookRequest"]["action"], "receive");
        let runner = doc["operations"]["answerHookRequest"]["description"].as_str().unwrap();
        for fact in ["`hooks` NATS identity", "_INBOX_hooks", "queue group", "hook_id", "timeout"] {
            assert!(runner.contains(fact), "the runner's description does not say {fact}");
        }
        let request = &doc["components"]["messages"]["hookRequest"];
        assert_eq!(request["payload"]["$ref"], "./schemas/tern.hooks.request.json");
        assert_eq!(request["contentType"], "application/json");
        let request_headers = &doc["components"]["schemas"]["HookRequestHeaders"]["properties"];
        assert!(request_headers.get("traceparent").is_some() && request_headers.get(headers::CONTENT_TYPE).is_some());
        assert_eq!(
            doc["components"]["messages"]["hookResponse"]["payload"]["$ref"],
            "./schemas/tern.hooks.response.json"
        );
    }
}
