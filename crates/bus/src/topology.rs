//! Stream, consumer and KV bucket settings, and their idempotent set-up.
//!
//! Every service runs [`Topology::ensure`] at start-up. It creates what is missing and updates
//! what drifted, and it is safe when several processes run it at the same moment: creating a
//! stream or bucket that another process just created is retried as an update.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use tracing::{debug, info};

use crate::subjects::{self, WorkQueue};
use crate::{BusError, PLANNER_DLQ_CONSUMER, PLANNER_EVENTS_CONSUMER};

/// Work-queue stream holding commands until a worker acks them.
pub const COMMANDS_STREAM: &str = "TERN_COMMANDS";
/// Limits stream holding every lifecycle event, replayable.
pub const EVENTS_STREAM: &str = "TERN_EVENTS";
/// Limits stream holding the JSON mirror of every event (filled when publishers have JSON events
/// on; empty otherwise). Its settings are the events stream's.
pub const EVENTS_JSON_STREAM: &str = "TERN_EVENTS_JSON";
/// Limits stream holding dead letters.
pub const DLQ_STREAM: &str = "TERN_DLQ";

/// The KV buckets Tern keeps state in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Plan state, keyed by plan id (planner only).
    Plans,
    /// Operation records that fence ASR side effects, keyed by command id.
    Operations,
    /// Per-VM locks: which plan is acting on a VM, keyed by VM.
    VmLocks,
    /// The fleet-wide ARM request budget: one token bucket per subscription and request class.
    ArmBudget,
}

impl Bucket {
    /// Every bucket.
    pub const ALL: [Bucket; 4] = [Bucket::Plans, Bucket::Operations, Bucket::VmLocks, Bucket::ArmBudget];

    /// The bucket's name in JetStream.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Plans => "tern-plans",
            Bucket::Operations => "tern-operations",
            Bucket::VmLocks => "tern-vm-locks",
            Bucket::ArmBudget => "tern-arm-budget",
        }
    }

    fn history(self) -> i64 {
        match self {
            Bucket::Plans => 5,
            Bucket::Operations | Bucket::VmLocks | Bucket::ArmBudget => 1,
        }
    }
}

/// Consumer settings of the command queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a delivered command may go without an ack or progress ack before it is
    /// redelivered. Consumers send progress acks at a third of this while work runs.
    pub ack_wait: Duration,
    /// How many times a command is attempted before it is dead-lettered. The server's
    /// `max_deliver` is one more: the extra delivery only moves the message to the DLQ, so a
    /// worker that crashed on the last attempt still gets its command dead-lettered.
    pub max_attempts: u32,
    /// Most unacked commands a queue hands out at once, across all its workers.
    pub max_ack_pending: i64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self { ack_wait: Duration::from_secs(30), max_attempts: 5, max_ack_pending: 20_000 }
    }
}

/// Everything `ensure` creates, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Replicas of every stream and bucket: 3 by default (a production cluster, one per zone),
    /// 1 on a single server ([`Topology::single_server`]).
    pub replicas: usize,
    /// Window in which JetStream drops a message whose `Nats-Msg-Id` it has already stored.
    pub duplicate_window: Duration,
    /// How long events are kept for replay.
    pub events_max_age: Duration,
    /// How long dead letters are kept.
    pub dlq_max_age: Duration,
    /// Largest message accepted on any stream.
    pub max_message_size: i32,
    /// Command queue consumer settings.
    pub queues: QueueSettings,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            replicas: 3,
            duplicate_window: Duration::from_secs(10 * 60),
            events_max_age: Duration::from_secs(30 * 24 * 3600),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            max_message_size: 1024 * 1024,
            queues: QueueSettings::default(),
        }
    }
}

impl Topology {
    /// The topology of one nats-server (`tern up`, tests, benchmarks): one replica of each
    /// stream, consumer and bucket. Everything else as [`Topology::default`].
    pub fn single_server() -> Self {
        Self { replicas: 1, ..Self::default() }
    }

    /// Stream configurations, by stream.
    pub fn streams(&self) -> [stream::Config; 4] {
        let base = stream::Config {
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            duplicate_window: self.duplicate_window,
            max_message_size: self.max_message_size,
            allow_direct: true,
            ..Default::default()
        };
        [
            stream::Config {
                name: COMMANDS_STREAM.into(),
                description: Some("Tern commands: planner -> phase workers (work queue)".into()),
                subjects: vec![format!("{}.>", subjects::COMMANDS_PREFIX)],
                retention: stream::RetentionPolicy::WorkQueue,
                ..base.clone()
            },
            stream::Config {
                name: EVENTS_STREAM.into(),
                description: Some("Tern lifecycle events (CloudEvents, replayable)".into()),
                subjects: vec![format!("{}.>", subjects::EVENTS_PREFIX)],
                retention: stream::RetentionPolicy::Limits,
                max_age: self.events_max_age,
                ..base.clone()
            },
            // Always there, so turning JSON events on is a publisher setting and nothing else.
            stream::Config {
                name: EVENTS_JSON_STREAM.into(),
                description: Some("Tern lifecycle events as JSON (CloudEvents, protobuf JSON mapping)".into()),
                subjects: vec![format!("{}.>", subjects::JSON_EVENTS_PREFIX)],
                retention: stream::RetentionPolicy::Limits,
                max_age: self.events_max_age,
                ..base.clone()
            },
            stream::Config {
                name: DLQ_STREAM.into(),
                description: Some("Tern dead letters: messages no consumer could handle".into()),
                subjects: vec![format!("{}.>", subjects::DLQ_PREFIX)],
                retention: stream::RetentionPolicy::Limits,
                max_age: self.dlq_max_age,
                ..base
            },
        ]
    }

    /// A durable consumer with the queues' delivery settings: explicit acks, `ack_wait`, one
    /// delivery more than the attempts (see [`QueueSettings::max_attempts`]).
    fn durable(&self, name: &str, description: String) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(name.into()),
            description: Some(description),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.queues.ack_wait,
            max_deliver: i64::from(self.queues.max_attempts) + 1,
            max_ack_pending: self.queues.max_ack_pending,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The durable consumer of a command queue.
    pub fn queue_consumer(&self, queue: WorkQueue) -> consumer::pull::Config {
        let config = self.durable(queue.name(), format!("tern-{} worker queue", queue.name()));
        consumer::pull::Config { filter_subject: queue.filter(), ..config }
    }

    /// The planner's durable consumer of every event.
    pub fn planner_events_consumer(&self) -> consumer::pull::Config {
        let config =
            self.durable(PLANNER_EVENTS_CONSUMER, "tern-planner: every lifecycle event, to progress plans".into());
        consumer::pull::Config { filter_subject: format!("{}.>", subjects::EVENTS_PREFIX), ..config }
    }

    /// The planner's durable consumer of the worker queues' dead letters (not its own: those
    /// are events it gave up on, and no VM waits on them).
    pub fn planner_dlq_consumer(&self) -> consumer::pull::Config {
        let description = "tern-planner: commands the workers gave up on, to fail their VMs".into();
        consumer::pull::Config {
            filter_subjects: WorkQueue::ALL.iter().map(|q| q.dlq_subject()).collect(),
            // Set up on a bus with history, it starts at what comes next.
            deliver_policy: consumer::DeliverPolicy::New,
            ..self.durable(PLANNER_DLQ_CONSUMER, description)
        }
    }

    /// A bucket's configuration.
    pub fn bucket(&self, bucket: Bucket) -> kv::Config {
        kv::Config {
            bucket: bucket.name().into(),
            history: bucket.history(),
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_value_size: self.max_message_size,
            ..Default::default()
        }
    }

    /// Creates or updates every stream, consumer and bucket.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<(), BusError> {
        for config in self.streams() {
            ensure_stream(js, config).await?;
        }
        let commands = js
            .get_stream(COMMANDS_STREAM)
            .await
            .map_err(|e| BusError::topology(format!("stream {COMMANDS_STREAM}"), e))?;
        for queue in WorkQueue::ALL {
            ensure_consumer(&commands, self.queue_consumer(queue)).await?;
        }
        let events =
            js.get_stream(EVENTS_STREAM).await.map_err(|e| BusError::topology(format!("stream {EVENTS_STREAM}"), e))?;
        ensure_consumer(&events, self.planner_events_consumer()).await?;
        let dlq = js.get_stream(DLQ_STREAM).await.map_err(|e| BusError::topology(format!("stream {DLQ_STREAM}"), e))?;
        ensure_consumer(&dlq, self.planner_dlq_consumer()).await?;
        for bucket in Bucket::ALL {
            ensure_bucket(js, self.bucket(bucket)).await?;
        }
        info!(replicas = self.replicas, "bus topology ready");
        Ok(())
    }
}

/// How often a create/update that raced another process is tried again.
const SETUP_ATTEMPTS: usize = 5;

/// Runs one create-or-update step, retrying when it lost a race with another process (which
/// shows up as "already in use" on create, or "not found" right after the other side's create).
async fn with_retries<T, E, F, Fut>(what: String, mut step: F) -> Result<(), BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<async_nats::Error>,
{
    let mut last = None;
    for attempt in 1..=SETUP_ATTEMPTS {
        match step().await {
            Ok(_) => {
                debug!(%what, attempt, "ready");
                return Ok(());
            }
            Err(err) => last = Some(err),
        }
    }
    Err(BusError::topology(what, last.expect("at least one attempt")))
}

/// What ensuring the topology keeps of a stream that exists already: its replicas, when it has
/// more than configured (an operator who set a stream up with 3 replicas keeps them through every
/// service start), and file storage. Limits follow the configuration. Each kept setting is
/// logged.
fn keep_existing(config: &mut stream::Config, existing: &stream::Config) {
    if existing.num_replicas > config.num_replicas {
        info!(stream = %config.name, existing = existing.num_replicas, configured = config.num_replicas,
            "keeping the existing stream's replicas");
        config.num_replicas = existing.num_replicas;
    }
    if existing.storage == stream::StorageType::File && config.storage != stream::StorageType::File {
        info!(stream = %config.name, "keeping the existing stream's file storage");
        config.storage = stream::StorageType::File;
    }
}

async fn ensure_stream(js: &jetstream::Context, mut config: stream::Config) -> Result<(), BusError> {
    if let Ok(mut existing) = js.get_stream(&config.name).await
        && let Ok(info) = existing.info().await
    {
        keep_existing(&mut config, &info.config);
    }
    with_retries(format!("stream {}", config.name), || js.create_or_update_stream(config.clone())).await
}

async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    mut config: consumer::pull::Config,
) -> Result<(), BusError> {
    let name = config.durable_name.clone().unwrap_or_default();
    if let Ok(existing) = stream.get_consumer::<consumer::pull::Config>(&name).await
        && existing.cached_info().config.num_replicas > config.num_replicas
    {
        let replicas = existing.cached_info().config.num_replicas;
        info!(consumer = %name, replicas, configured = config.num_replicas, "keeping the existing consumer's replicas");
        config.num_replicas = replicas;
    }
    with_retries(format!("consumer {name}"), || stream.create_consumer(config.clone())).await
}

async fn ensure_bucket(js: &jetstream::Context, mut config: kv::Config) -> Result<(), BusError> {
    // A bucket is the stream `KV_<bucket>`: the same rule holds for its replicas.
    if let Ok(mut existing) = js.get_stream(format!("KV_{}", config.bucket)).await
        && let Ok(info) = existing.info().await
        && info.config.num_replicas > config.num_replicas
    {
        info!(bucket = %config.bucket, replicas = info.config.num_replicas, configured = config.num_replicas,
            "keeping the existing bucket's replicas");
        config.num_replicas = info.config.num_replicas;
    }
    with_retries(format!("bucket {}", config.bucket), || js.create_or_update_key_value(config.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_streams_replicas_and_file_storage_are_never_lowered_and_limits_follow_the_configuration() {
        let configured = Topology::default().streams()[1].clone();
        let existing = stream::Config { num_replicas: 3, max_age: configured.max_age * 2, ..configured.clone() };
        let mut config = configured.clone();
        keep_existing(&mut config, &existing);
        assert_eq!(config.num_replicas, 3, "an operator's 3 replicas stay");
        assert_eq!(config.max_age, configured.max_age, "limits follow the configuration");
        let mut more = stream::Config { num_replicas: 5, ..configured.clone() };
        keep_existing(&mut more, &existing);
        assert_eq!(more.num_replicas, 5, "configured replicas above the existing ones apply");
        let mut memory = stream::Config { storage: stream::StorageType::Memory, ..configured };
        keep_existing(&mut memory, &existing);
        assert_eq!(memory.storage, stream::StorageType::File);
    }
}
