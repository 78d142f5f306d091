//! Tern's NATS JetStream bus: the only crate that knows subject names, stream, consumer and
//! bucket settings, header names and dedup ids.
//!
//! - [`Bus`] is the cheap-to-clone handle services hold: typed publish of commands and events,
//!   KV buckets, consumer loops, event replay and the dead-letter queue.
//! - [`Topology`] says what exists on the server and sets it up idempotently.
//! - [`ConsumerLoop`] serves a durable consumer: bounded concurrency, progress acks, nak with
//!   backoff and dead-lettering.

pub mod auth;
pub mod consumer;
pub mod headers;
pub mod ids;
pub mod kv;
pub mod schema;
pub mod subjects;
pub mod topology;
pub mod trace;

use std::time::{Duration, SystemTime};

pub use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::DeliverPolicy, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tern_proto::{Command, Event, Outcome, Phase, PlanEventKind, event};

pub use auth::{Identity, NatsAuth};
pub use consumer::{
    ConsumerLoop, Delivery, HandlerError, LoopOptions, LoopStats, REASON_KINDS, SkippedHook, reason_kind,
};
pub use headers::CloudEventAttributes;
pub use kv::{KvError, Revision, TypedKv, Versioned};
pub use subjects::{EventFilter, WorkQueue};
pub use topology::{Bucket, QueueSettings, Topology};

/// How many times a publish whose ack did not come is sent (see `Bus::publish`).
pub const PUBLISH_ATTEMPTS: u32 = 4;

/// Name of the planner's durable consumer of every event.
pub const PLANNER_EVENTS_CONSUMER: &str = "planner";

/// Name of the planner's durable consumer of the workers' dead letters: a command a worker gave
/// up on is a VM the planner must hear of.
pub const PLANNER_DLQ_CONSUMER: &str = "planner-dlq";

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url}: {source} ({})", connect_hint(source))]
    Connect {
        /// The URL tried.
        url: String,
        /// The underlying error.
        source: async_nats::ConnectError,
    },
    /// The server refused this identity a request (a NATS permission violation).
    #[error("{what}: permission denied by the NATS server ({refusal})")]
    PermissionDenied {
        /// What was attempted.
        what: String,
        /// The server's words.
        refusal: String,
    },
    /// The server URL does not parse.
    #[error("{0}")]
    Url(String),
    /// The credentials could not be read or are not NATS credentials.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// Creating or updating a stream, consumer or bucket failed.
    #[error("setting up {what} failed: {source}")]
    Topology {
        /// Which part of the topology.
        what: String,
        /// The underlying error.
        source: async_nats::Error,
    },
    /// A publish was not stored.
    #[error("publishing to {subject} failed: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// The underlying error.
        source: async_nats::Error,
    },
    /// A message was refused before anything was sent, because it is incomplete or invalid.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A consumer could not be bound or read.
    #[error("consumer {consumer} on stream {stream}: {source}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// The underlying error.
        source: async_nats::Error,
    },
    /// A KV operation failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A hook request got no answer: nobody listens on its subject, or nobody answered in time.
    #[error("{0}")]
    NoAnswer(String),
}

/// What to check when connecting failed.
fn connect_hint(error: &async_nats::ConnectError) -> &'static str {
    match error.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation => {
            "the server refused these credentials: check TERN_NATS_CREDENTIALS, or `tern bus credentials` and the server's auth.conf"
        }
        async_nats::ConnectErrorKind::Tls => "TLS failed: check the URL's scheme and TERN_NATS_CA_FILE",
        _ => "is nats-server running with JetStream enabled?",
    }
}

impl BusError {
    pub(crate) fn topology(what: String, source: impl Into<async_nats::Error>) -> Self {
        BusError::Topology { what, source: source.into() }
    }
}

/// What the server said about a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Sequence of the stored message in its stream.
    pub stream_sequence: u64,
    /// True when the server already had a message with this id and dropped this one.
    pub duplicate: bool,
}

/// A service's handle on the bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    service: String,
    refusals: Refusals,
    json_events: bool,
}

/// The permission violations the server reported on this connection, newest last (a bounded
/// window): NATS answers a refused publish with an asynchronous `-ERR`, not on the request.
#[derive(Clone, Debug, Default)]
struct Refusals(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Refusals {
    const KEPT: usize = 64;

    fn options(&self, options: async_nats::ConnectOptions, service: &str) -> async_nats::ConnectOptions {
        let refusals = self.clone();
        let service = service.to_owned();
        options.event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) = &event
                && message.to_ascii_lowercase().contains("permissions violation")
            {
                tracing::warn!(service = %service, %message, "NATS refused a request of this identity");
                let mut kept = refusals.0.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == Self::KEPT {
                    kept.pop_front();
                }
                kept.push_back(message.clone());
            }
            async {}
        })
    }

    /// The latest refusal of a subject that starts with `prefix` and holds `part`.
    fn naming(&self, prefix: &str, part: &str) -> Option<String> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let quoted = format!("\"{prefix}");
        kept.iter().rev().find(|m| m.contains(&quoted) && m.contains(part)).cloned()
    }

    /// The latest refusal that names `subject` (quoted, as the server does), or any JetStream
    /// API refusal when `subject` is `$JS.API.`.
    fn about(&self, subject: &str) -> Option<String> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let quoted = format!("\"{subject}");
        kept.iter().rev().find(|m| m.contains(&quoted)).cloned()
    }
}

impl Bus {
    /// Connects to NATS as `service` (e.g. "tern-failover"; used as connection name and as
    /// the CloudEvents source of the events this service publishes).
    pub async fn connect(url: &str, service: &str) -> Result<Self, BusError> {
        let refusals = Refusals::default();
        let client = refusals
            .options(async_nats::ConnectOptions::new(), service)
            .name(service)
            .connect(url)
            .await
            .map_err(|source| BusError::Connect { url: url.to_owned(), source })?;
        Ok(Self { refusals, ..Self::new(client, service) })
    }

    /// Connects to NATS as `service` with `auth`: its identity's inbox prefix, its credentials
    /// and, when a CA is given, TLS. A server that refuses the credentials is an error naming the
    /// identity; the error never quotes the credentials.
    pub async fn connect_with(url: &str, service: &str, auth: &NatsAuth) -> Result<Self, BusError> {
        let options = auth.connect_options().await.map_err(BusError::Credentials)?;
        let refusals = Refusals::default();
        // Several servers of a cluster, comma-separated: the client starts with any that answers.
        let servers =
            url.split(',').map(|u| u.trim().parse::<async_nats::ServerAddr>()).collect::<Result<Vec<_>, _>>().map_err(
                |e| BusError::Url(format!("{url:?} is not a NATS server URL or a comma-separated list of them: {e}")),
            )?;
        let client = refusals
            .options(options, service)
            .name(service)
            .connect(servers)
            .await
            .map_err(|source| BusError::Connect { url: format!("{url} as {}", auth.identity), source })?;
        Ok(Self { refusals, ..Self::new(client, service) })
    }

    /// Wraps an existing connection.
    pub fn new(client: async_nats::Client, service: &str) -> Self {
        let js = jetstream::new(client.clone());
        Self { client, js, service: service.to_owned(), refusals: Refusals::default(), json_events: false }
    }

    /// With `on`, every event this handle publishes is published twice: as protobuf on
    /// `tern.events.…` and as JSON (protobuf's JSON mapping, same CloudEvents headers, same dedup
    /// id) on its mirror `tern.json.events.…`, for consumers without protobuf tooling. Off by
    /// default (`json_events` in the service settings).
    pub fn with_json_events(mut self, on: bool) -> Self {
        self.json_events = on;
        self
    }

    /// Whether events are also published as JSON (see [`Self::with_json_events`]).
    pub fn json_events(&self) -> bool {
        self.json_events
    }

    /// The underlying NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The service name this handle publishes as.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Creates or updates every stream, consumer and bucket (see [`Topology::ensure`]).
    /// A request this connection's identity may not make shows up as the server's refusal.
    pub async fn ensure_topology(&self, topology: &Topology) -> Result<(), BusError> {
        let denied = |refusal| BusError::PermissionDenied { what: "setting up the bus topology".into(), refusal };
        // A refused request only times out; the refusal itself arrives at once, so watch for it.
        let refused = async {
            loop {
                if let Some(refusal) = self.refusals.about("$JS.API.") {
                    return refusal;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            done = topology.ensure(&self.js) => done.map_err(|e| self.refusals.about("$JS.API.").map_or(e, denied)),
            refusal = refused => Err(denied(refusal)),
        }
    }

    /// The latest permission violation the server reported for `subject` on this connection.
    pub fn refusal(&self, subject: &str) -> Option<String> {
        self.refusals.about(subject)
    }

    /// Queues a command for the worker of its phase. The command id is the dedup id: the
    /// server stores a command republished with the same id (within the duplicate window) once.
    pub async fn publish_command(&self, command: &Command) -> Result<PublishReceipt, BusError> {
        if command.command_id.is_empty() {
            return Err(BusError::InvalidMessage("command_id is empty".into()));
        }
        let action = command.action.as_ref().ok_or_else(|| {
            BusError::InvalidMessage(format!(
                "command {} has no action (failover, reprotect or cleanup)",
                command.command_id
            ))
        })?;
        let queue = WorkQueue::for_phase(action.phase()).expect("every command action has a worker queue");
        let subject = subjects::command(queue, &command.plan_id)?;
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::PROTOBUF);
        trace::inject_current(&mut h);
        self.publish(subject, &command.command_id, h, command.encode_to_vec().into()).await
    }

    /// Publishes `command` once more although a copy with its id may have been stored within the
    /// duplicate window (which would drop a plain [`Self::publish_command`]): for a command whose
    /// copy was lost after the bus stored it (acked by a worker that then died, dead-lettered,
    /// purged). `nonce` tells the copies apart; the command id, on which workers fence, is the
    /// same, so a copy that finds the command running or finished does nothing twice.
    pub async fn publish_command_again(&self, command: &Command, nonce: &str) -> Result<PublishReceipt, BusError> {
        let action = command
            .action
            .as_ref()
            .ok_or_else(|| BusError::InvalidMessage(format!("command {} has no action", command.command_id)))?;
        let queue = WorkQueue::for_phase(action.phase()).expect("every command action has a worker queue");
        let subject = subjects::command(queue, &command.plan_id)?;
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::PROTOBUF);
        trace::inject_current(&mut h);
        let id = format!("{}.again.{nonce}", command.command_id);
        self.publish(subject, &id, h, command.encode_to_vec().into()).await
    }

    /// Commands waiting in `queue` that no worker has taken yet.
    pub async fn queue_backlog(&self, queue: WorkQueue) -> Result<u64, BusError> {
        let err = |source: async_nats::Error| BusError::Consumer {
            stream: topology::COMMANDS_STREAM.into(),
            consumer: queue.name().into(),
            source,
        };
        let stream = self.js.get_stream(topology::COMMANDS_STREAM).await.map_err(|e| err(e.into()))?;
        let info = stream.consumer_info(queue.name()).await.map_err(|e| err(e.into()))?;
        Ok(info.num_pending)
    }

    /// Publishes a lifecycle event as a CloudEvent (binary mode). The event id is the dedup id.
    /// A missing `time` is set to now and a missing `source` to this service.
    pub async fn publish_event(&self, event: &Event) -> Result<PublishReceipt, BusError> {
        self.publish_event_as(event, None).await
    }

    /// Sends a wave hook's request (`tern.v1.HookRequest` in protobuf's JSON mapping) to
    /// `subject` and waits up to `timeout` for the answer's body. A core NATS request, traced
    /// under the current span: nothing stores it, so a planner that dies waiting sends it again.
    pub async fn hook_request(&self, subject: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, BusError> {
        subjects::hook_subject(subject).map_err(BusError::InvalidMessage)?;
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::JSON);
        trace::inject_current(&mut h);
        let request = async_nats::Request::new().payload(body.into()).headers(h).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(answer) => Ok(answer.payload.to_vec()),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::NoAnswer(format!("no service listens on {subject}"))
                }
                async_nats::RequestErrorKind::TimedOut => {
                    BusError::NoAnswer(format!("no answer on {subject} within {}s", timeout.as_secs_f32()))
                }
                _ => BusError::Publish { subject: subject.to_owned(), source: e.into() },
            }),
        }
    }

    /// Publishes an event that was published before, once more: its CloudEvent id stays the same
    /// (consumers that deduplicate see one event), but the bus stores it again even inside the
    /// duplicate window, for a consumer that missed it. `nonce` tells the copies apart.
    pub async fn publish_event_again(&self, event: &Event, nonce: &str) -> Result<PublishReceipt, BusError> {
        self.publish_event_as(event, Some(nonce)).await
    }

    async fn publish_event_as(&self, event: &Event, again: Option<&str>) -> Result<PublishReceipt, BusError> {
        let mut event = event.clone();
        if event.time.is_none() {
            event.time = Some(SystemTime::now().into());
        }
        if event.source.is_empty() {
            event.source = self.service.clone();
        }
        let attributes = CloudEventAttributes::of(&event, &self.service)?;
        let subject = match &event.body {
            Some(event::Body::Vm(vm)) => subjects::vm_event(
                &event.plan_id,
                Phase::try_from(vm.phase).unwrap_or(Phase::Unspecified),
                Outcome::try_from(vm.outcome).unwrap_or(Outcome::Unspecified),
            )?,
            Some(event::Body::Plan(plan)) => subjects::plan_event(
                &event.plan_id,
                PlanEventKind::try_from(plan.kind).unwrap_or(PlanEventKind::Unspecified),
            )?,
            None => unreachable!("CloudEventAttributes::of refuses events without a body"),
        };
        let mut h = HeaderMap::new();
        attributes.write(&event.plan_id, &mut h);
        trace::inject_current(&mut h);
        let dedup_id = match again {
            Some(nonce) => format!("{}.again.{nonce}", event.event_id),
            None => event.event_id.clone(),
        };
        if !self.json_events {
            return self.publish(subject, &dedup_id, h, event.encode_to_vec().into()).await;
        }
        // The JSON body first: an event that cannot be mapped is refused before either copy is
        // out. Then protobuf, then JSON: a publisher that fails between the two publishes the
        // event again (same dedup ids), which stores the missing copy and drops the other.
        let json = tern_proto::json::to_json(&event, "tern.v1.Event")
            .map_err(|e| BusError::InvalidMessage(format!("event {}: {e}", event.event_id)))?;
        let json = serde_json::to_vec(&json).map_err(|e| BusError::InvalidMessage(e.to_string()))?;
        let mirror = subjects::json_mirror(&subject)?;
        let mut json_headers = h.clone();
        json_headers.insert(headers::CONTENT_TYPE, headers::JSON);
        let receipt = self.publish(subject, &dedup_id, h, event.encode_to_vec().into()).await?;
        self.publish(mirror, &dedup_id, json_headers, json.into()).await?;
        Ok(receipt)
    }

    /// Publishes with `id` as the dedup id. A publish whose ack never came (nats-server died or
    /// the connection dropped with the message in flight) is sent again with the same id, up to
    /// [`PUBLISH_ATTEMPTS`] times: the server stores a message at most once per id within the
    /// duplicate window, so a retry can only make up for a lost one. Other errors return at once.
    async fn publish(
        &self,
        subject: String,
        id: &str,
        h: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishReceipt, BusError> {
        let mut attempt = 1;
        loop {
            let message = PublishMessage::build().payload(payload.clone()).headers(h.clone()).message_id(id);
            let acked = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => return Ok(PublishReceipt { stream_sequence: ack.sequence, duplicate: ack.duplicate }),
                Err(_) if let Some(refusal) = self.refusals.about(&subject) => {
                    return Err(BusError::PermissionDenied { what: format!("publishing to {subject}"), refusal });
                }
                Err(e)
                    if attempt < PUBLISH_ATTEMPTS
                        && matches!(e.kind(), PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe) =>
                {
                    tracing::warn!(%subject, %id, attempt, error = %e, "publish not acknowledged; sending it again");
                    tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(BusError::Publish { subject, source: e.into() }),
            }
        }
    }

    /// A typed view of a KV bucket.
    pub async fn kv<M: Message + Default>(&self, bucket: Bucket) -> Result<TypedKv<M>, BusError> {
        let store = self
            .js
            .get_key_value(bucket.name())
            .await
            .map_err(|e| BusError::topology(format!("bucket {}", bucket.name()), e))?;
        Ok(TypedKv::new(store, bucket.name()))
    }

    /// The consumer loop of a command queue.
    pub async fn queue_consumer(&self, queue: WorkQueue, options: LoopOptions) -> Result<ConsumerLoop, BusError> {
        ConsumerLoop::bind(&self.js, topology::COMMANDS_STREAM, queue.name(), queue.dlq_subject(), options).await
    }

    /// The consumer loop of the planner's durable event consumer.
    pub async fn planner_event_consumer(&self, options: LoopOptions) -> Result<ConsumerLoop, BusError> {
        let dlq = subjects::dlq_subject(PLANNER_EVENTS_CONSUMER);
        ConsumerLoop::bind(&self.js, topology::EVENTS_STREAM, PLANNER_EVENTS_CONSUMER, dlq, options).await
    }

    /// The consumer loop of the planner's durable consumer of the workers' dead letters (the
    /// payload is the command as published; the headers say why and where).
    pub async fn planner_dlq_consumer(&self, options: LoopOptions) -> Result<ConsumerLoop, BusError> {
        let dlq = subjects::dlq_subject(PLANNER_EVENTS_CONSUMER);
        ConsumerLoop::bind(&self.js, topology::DLQ_STREAM, PLANNER_DLQ_CONSUMER, dlq, options).await
    }

    /// Reads events the way an outside consumer does: an ordered, ephemeral consumer that
    /// replays from `start` and then follows new events.
    pub async fn events(&self, filter: &EventFilter, start: StartAt) -> Result<EventStream, BusError> {
        let subject = filter.subject()?;
        let err = |source: async_nats::Error| BusError::Consumer {
            stream: topology::EVENTS_STREAM.into(),
            consumer: format!("ordered reader of {subject}"),
            source,
        };
        let stream = self.js.get_stream(topology::EVENTS_STREAM).await.map_err(|e| err(e.into()))?;
        let deliver_policy = match start {
            StartAt::Beginning => DeliverPolicy::All,
            StartAt::New => DeliverPolicy::New,
            StartAt::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            StartAt::Since(ago) => {
                let since = SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
                let nanos = since.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
                let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                DeliverPolicy::ByStartTime { start_time }
            }
        };
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.into()))?;
        let backlog = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(|e| err(e.into()))?;
        Ok(EventStream { messages, backlog })
    }

    /// Every message now in the dead-letter queue, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let err = |source: async_nats::Error| self.dlq_error("reading the dead letters", source);
        let mut stream = self.js.get_stream(topology::DLQ_STREAM).await.map_err(|e| err(e.into()))?;
        let count = stream.info().await.map_err(|e| err(e.into()))?.state.messages;
        let mut out = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .map_err(|e| err(e.into()))?;
        let mut messages = consumer.messages().await.map_err(|e| err(e.into()))?;
        while let Ok(Some(next)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            let msg = next.map_err(|e| err(e.into()))?;
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            out.push(DeadLetter::from_message(&msg));
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The dead letter at `sequence` of the DLQ stream, if there is one.
    pub async fn dead_letter(&self, sequence: u64) -> Result<Option<DeadLetter>, BusError> {
        let what = format!("reading dead letter {sequence}");
        let err = |source: async_nats::Error| self.dlq_error(&what, source);
        let stream = self.js.get_stream_no_info(topology::DLQ_STREAM).await.map_err(|e| err(e.into()))?;
        match stream.direct_get(sequence).await {
            Ok(msg) => Ok(Some(DeadLetter::from_stored(msg))),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.into())),
        }
    }

    /// Deletes the dead letter at `sequence`; `false` when there was none.
    pub async fn delete_dead_letter(&self, sequence: u64) -> Result<bool, BusError> {
        let what = format!("deleting dead letter {sequence}");
        let err = |source: async_nats::Error| self.dlq_error(&what, source);
        let stream = self.js.get_stream_no_info(topology::DLQ_STREAM).await.map_err(|e| err(e.into()))?;
        match stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            // The server words a missing message as a failed delete (10057) or as none found.
            Err(e)
                if matches!(e.kind(), jetstream::stream::DeleteMessageErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
                        || js.to_string().contains("no message found")) =>
            {
                Ok(false)
            }
            Err(e) => Err(err(e.into())),
        }
    }

    /// A DLQ request that failed: the server's refusal when it refused this identity (which shows
    /// only as a timeout on the request itself), else the error.
    fn dlq_error(&self, what: &str, source: async_nats::Error) -> BusError {
        match self.refusals.naming("$JS.API.", topology::DLQ_STREAM) {
            Some(refusal) => BusError::PermissionDenied {
                what: format!("{what} (these NATS credentials are not the operator's?)"),
                refusal,
            },
            None => BusError::Consumer {
                stream: topology::DLQ_STREAM.into(),
                consumer: format!("dead-letter reader ({what})"),
                source,
            },
        }
    }
}

/// Where an event reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Replay everything retained.
    Beginning,
    /// Only events published from now on.
    New,
    /// Replay from this stream sequence (e.g. one past the last event a consumer processed).
    Sequence(u64),
    /// Replay events published within this much time before now.
    Since(Duration),
}

/// One event as a reader receives it.
#[derive(Clone, Debug)]
pub struct ReceivedEvent {
    /// The decoded event.
    pub event: Event,
    /// Its CloudEvents attributes (`None` if the publisher set no `ce-*` headers).
    pub attributes: Option<CloudEventAttributes>,
    /// The subject it was published to.
    pub subject: String,
    /// Its sequence in the events stream: remember it to resume with [`StartAt::Sequence`].
    pub stream_sequence: u64,
    /// The publisher's trace context.
    pub trace_context: opentelemetry::Context,
}

/// A live, replaying stream of events.
pub struct EventStream {
    messages: jetstream::consumer::pull::Ordered,
    backlog: u64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("backlog", &self.backlog).finish_non_exhaustive()
    }
}

impl EventStream {
    /// How many matching events the stream held when this reader opened: a reader that wants
    /// only what is there (not a live tail) stops after that many.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    /// The next event. An event that does not decode is returned as an error carrying its
    /// sequence; the stream goes on after it.
    pub async fn next(&mut self) -> Option<Result<ReceivedEvent, BusError>> {
        let msg = match self.messages.next().await? {
            Ok(msg) => msg,
            Err(e) => {
                return Some(Err(BusError::Consumer {
                    stream: topology::EVENTS_STREAM.into(),
                    consumer: "ordered reader".into(),
                    source: e.into(),
                }));
            }
        };
        let stream_sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let event = match Event::decode(msg.payload.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                return Some(Err(BusError::InvalidMessage(format!(
                    "event at sequence {stream_sequence} on {} does not decode: {e}",
                    msg.subject
                ))));
            }
        };
        let h = msg.headers.clone().unwrap_or_default();
        Some(Ok(ReceivedEvent {
            event,
            attributes: CloudEventAttributes::read(&h),
            subject: msg.subject.to_string(),
            stream_sequence,
            trace_context: trace::extract(&h),
        }))
    }
}

/// A message some consumer gave up on, with why.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its sequence in the DLQ stream: how `tern dlq` names it.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: time::OffsetDateTime,
    /// The DLQ subject it was published to, `tern.dlq.<consumer>`: only that consumer's identity
    /// may publish there, so this, unlike the headers, says truly who gave up.
    pub dlq_subject: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The subject it was originally published to.
    pub original_subject: String,
    /// The stream it came from.
    pub original_stream: String,
    /// The consumer that gave up (as its header says).
    pub consumer: String,
    /// Its sequence in the stream it came from.
    pub original_sequence: u64,
    /// How many times it had been delivered.
    pub deliveries: u32,
    /// The original payload, unchanged.
    pub payload: Bytes,
    /// The original headers plus the `Tern-Dlq-*` ones.
    pub headers: HeaderMap,
}

/// What a dead letter holds, as far as this build can read it.
// An event (with its VM's resource) is larger than a command; dead letters are read a few at a
// time by `tern dlq`, so the size is not worth a box that every match would have to look through.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "read one at a time, by an operator: its size does not matter")]
pub enum DeadLetterContent {
    /// A command of a worker queue.
    Command(Command),
    /// A lifecycle event.
    Event(Event),
    /// Bytes that are not a complete command or event of the stream it came from.
    Undecodable {
        /// Why not.
        error: String,
    },
}

impl DeadLetterContent {
    /// `command`, `event` or `undecodable`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeadLetterContent::Command(_) => "command",
            DeadLetterContent::Event(_) => "event",
            DeadLetterContent::Undecodable { .. } => "undecodable",
        }
    }
}

impl DeadLetter {
    fn from_message(msg: &jetstream::Message) -> Self {
        let info = msg.info().ok();
        Self::new(
            info.as_ref().map_or(0, |i| i.stream_sequence),
            info.map_or(time::OffsetDateTime::UNIX_EPOCH, |i| i.published),
            msg.subject.to_string(),
            msg.headers.clone().unwrap_or_default(),
            msg.payload.clone(),
        )
    }

    fn from_stored(msg: jetstream::message::StreamMessage) -> Self {
        // A direct get adds where the message is stored (`Nats-Stream`, `Nats-Sequence`, ...);
        // keep the headers as the message carries them, as a consumer reads it.
        let added = [
            "Nats-Stream",
            "Nats-Sequence",
            "Nats-Time-Stamp",
            "Nats-Subject",
            "Nats-Last-Sequence",
            "Nats-Num-Pending",
        ];
        let mut h = HeaderMap::new();
        for (name, values) in msg.headers.iter().filter(|(n, _)| !added.contains(&n.as_ref())) {
            for v in values {
                h.append(name.clone(), v.clone());
            }
        }
        Self::new(msg.sequence, msg.time, msg.subject.to_string(), h, msg.payload)
    }

    fn new(sequence: u64, time: time::OffsetDateTime, dlq_subject: String, h: HeaderMap, payload: Bytes) -> Self {
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        Self {
            sequence,
            time,
            dlq_subject,
            reason: get(headers::DLQ_REASON),
            original_subject: get(headers::DLQ_SUBJECT),
            original_stream: get(headers::DLQ_STREAM),
            consumer: get(headers::DLQ_CONSUMER),
            original_sequence: get(headers::DLQ_SEQUENCE).parse().unwrap_or(0),
            deliveries: get(headers::DLQ_DELIVERIES).parse().unwrap_or(0),
            payload,
            headers: h,
        }
    }

    /// The consumer that gave up, as the DLQ subject names it: a worker queue's name
    /// (`failover`, ...) or `planner` for the planner's event consumer.
    pub fn queue(&self) -> &str {
        self.dlq_subject.strip_prefix(subjects::DLQ_PREFIX).and_then(|s| s.strip_prefix('.')).unwrap_or("")
    }

    /// The payload read as what its stream holds: a command from the command queues, an event
    /// from the events stream. A command without an id or action, or an event without a body,
    /// counts as undecodable: nothing could act on it.
    pub fn content(&self) -> DeadLetterContent {
        let came_from = |stream: &str, prefix: &str| {
            self.original_stream == stream || self.original_subject.starts_with(&format!("{prefix}."))
        };
        let command = || match Command::decode(self.payload.as_ref()) {
            Ok(c) if !c.command_id.is_empty() && c.action.is_some() => DeadLetterContent::Command(c),
            Ok(_) => undecodable("decodes as a Command without a command_id or action".into()),
            Err(e) => undecodable(format!("not a Command: {e}")),
        };
        let event = || match Event::decode(self.payload.as_ref()) {
            Ok(e) if !e.event_id.is_empty() && e.body.is_some() => DeadLetterContent::Event(e),
            Ok(_) => undecodable("decodes as an Event without an event_id or body".into()),
            Err(e) => undecodable(format!("not an Event: {e}")),
        };
        if came_from(topology::COMMANDS_STREAM, subjects::COMMANDS_PREFIX) {
            command()
        } else if came_from(topology::EVENTS_STREAM, subjects::EVENTS_PREFIX) {
            event()
        } else {
            // No say where it came from: whichever it reads as.
            match (command(), event()) {
                (c @ DeadLetterContent::Command(_), _) => c,
                (_, e @ DeadLetterContent::Event(_)) => e,
                _ => undecodable("neither a Command nor an Event, from a stream Tern does not know".into()),
            }
        }
    }
}

fn undecodable(error: String) -> DeadLetterContent {
    DeadLetterContent::Undecodable { error }
}
