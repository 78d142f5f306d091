//! The pull-consumer loop every Tern service uses to take work from a durable consumer.
//!
//! Per message: decode → run the handler under a span that continues the publisher's trace,
//! sending progress acks while it runs → ack, nak with backoff, or dead-letter. A message that
//! cannot be decoded, that the handler rejects, or that used up its attempts is copied to the
//! DLQ with the reason and removed from the queue. A panicking handler counts as a failed
//! attempt. Nothing here panics, and no message can wedge the consumer.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, message::PublishMessage};
use futures::{FutureExt, StreamExt};
use prost::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{BusError, headers, trace};

/// How a handler says a message was not handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// A transient failure: deliver the message again later (after `after`, or the loop's
    /// backoff for this attempt). Once the attempts are used up the message is dead-lettered.
    Retry {
        /// Why, for logs and for the DLQ record if this was the last attempt.
        reason: String,
        /// Wait at least this long before the next attempt.
        after: Option<Duration>,
    },
    /// The message can never be handled (invalid content): dead-letter it now.
    Reject {
        /// Why, recorded in the DLQ.
        reason: String,
    },
}

impl HandlerError {
    /// A transient failure with the default backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        HandlerError::Retry { reason: reason.into(), after: None }
    }

    /// A permanent failure.
    pub fn reject(reason: impl Into<String>) -> Self {
        HandlerError::Reject { reason: reason.into() }
    }
}

/// One decoded message handed to a handler.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The decoded payload.
    pub message: T,
    /// The subject it was published to.
    pub subject: String,
    /// 1 on first delivery, then 2, 3...
    pub attempt: u32,
    /// The last attempt the handler will get before the message is dead-lettered.
    pub max_attempts: u32,
    /// Sequence of the message in its stream.
    pub stream_sequence: u64,
    /// The publisher's trace context (also the parent of the span the handler runs in).
    pub trace_context: opentelemetry::Context,
    /// All headers, as published.
    pub headers: HeaderMap,
}

impl<T> Delivery<T> {
    /// Whether a `Retry` from this attempt will dead-letter the message instead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Tuning of a [`ConsumerLoop`].
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// Messages handled at once by this process.
    pub concurrency: usize,
    /// Nak delay by attempt (the last entry repeats). Used when a handler asks for a retry
    /// without saying when.
    pub backoff: Vec<Duration>,
    /// On shutdown, how long in-flight handlers may run before their messages are handed
    /// back (nak) for another process to take.
    pub drain_timeout: Duration,
    /// How long one pull request waits for messages before it is renewed.
    pub pull_expiry: Duration,
    /// Ack a message whose payload does not decode instead of dead-lettering it: for a consumer
    /// of dead letters, where garbage is expected and a second copy of it helps nobody.
    pub skip_undecodable: bool,
    /// Told of each message skipped that way (its subject and headers), so it can be counted.
    pub on_skipped: Option<SkippedHook>,
}

/// A function of a skipped message's subject and headers.
pub type SkippedFn = dyn Fn(&str, &HeaderMap) + Send + Sync;

/// What [`LoopOptions::on_skipped`] calls: the subject and headers of a skipped message.
#[derive(Clone)]
pub struct SkippedHook(pub Arc<SkippedFn>);

impl std::fmt::Debug for SkippedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkippedHook")
    }
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            backoff: [1, 5, 15, 30, 60].map(Duration::from_secs).to_vec(),
            drain_timeout: Duration::from_secs(30),
            pull_expiry: Duration::from_secs(5),
            skip_undecodable: false,
            on_skipped: None,
        }
    }
}

/// How long a loop whose durable consumer is gone waits before it pulls again.
const MISSING_CONSUMER_WAIT: Duration = Duration::from_secs(5);
/// How often a loop looks whether its durable consumer still exists, at most, while all is well.
const PRESENCE_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often a loop whose consumer is gone says so again.
const MISSING_CONSUMER_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What a loop knows of whether its durable consumer still exists. A consumer deleted by an
/// operator, or lost with a restored stream, is never created again by a service (only the
/// bootstrap identity may): the loop says so loudly, naming the fix, and pulls slowly until it
/// is back.
#[derive(Debug, Default)]
struct Presence {
    last_check: Option<std::time::Instant>,
    last_error: Option<std::time::Instant>,
    missing: bool,
}

impl Presence {
    /// Whether the consumer exists: looked up at most every [`PRESENCE_CHECK_EVERY`] while all
    /// is well, every [`MISSING_CONSUMER_WAIT`] once a pull was `refused` or it was found gone.
    async fn check(&mut self, consumer: &mut PullConsumer, shared: &Shared, refused: bool) -> bool {
        let every = if refused || self.missing { MISSING_CONSUMER_WAIT } else { PRESENCE_CHECK_EVERY };
        if self.last_check.is_some_and(|t| t.elapsed() < every) {
            return !self.missing;
        }
        self.last_check = Some(std::time::Instant::now());
        match consumer.info().await {
            Ok(_) => {
                if self.missing {
                    tracing::info!(consumer = %shared.consumer_name, "the durable consumer exists again");
                }
                self.missing = false;
                self.last_error = None; // a new loss is reported at once
            }
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => {
                self.missing = true;
                if self.last_error.is_none_or(|t| t.elapsed() >= MISSING_CONSUMER_REPORT_EVERY) {
                    self.last_error = Some(std::time::Instant::now());
                    tracing::error!(
                        stream = %shared.stream_name,
                        consumer = %shared.consumer_name,
                        "the durable consumer no longer exists: nothing reaches this service through it until it is \
                         created again — run `tern bus ensure` with the bootstrap identity"
                    );
                }
            }
            Err(e) => debug!(consumer = %shared.consumer_name, error = %e, "consumer info not read"),
        }
        !self.missing
    }
}

/// Counts of what a loop did, for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Messages acked after the handler succeeded.
    pub acked: u64,
    /// Messages handed back for another attempt (retry, panic, or shutdown).
    pub nacked: u64,
    /// Messages moved to the DLQ.
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    acked: AtomicU64,
    nacked: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Everything a message task needs, shared by all of them.
#[derive(Debug)]
struct Shared {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    stream_name: String,
    consumer_name: String,
    dlq_subject: String,
    /// Whether a dead letter is also deleted from its stream: from a work queue, yes; never from
    /// a stream other consumers read (the events).
    remove_dead_letters: bool,
    max_attempts: u32,
    ack_wait: Duration,
    options: LoopOptions,
    counters: Counters,
}

/// A durable pull consumer and the loop that serves it.
#[derive(Debug)]
pub struct ConsumerLoop {
    consumer: PullConsumer,
    shared: Arc<Shared>,
}

impl ConsumerLoop {
    /// Binds to an existing durable consumer (created by [`crate::Topology::ensure`]). Its
    /// `ack_wait` and `max_deliver` come from the server, so the loop and the topology agree.
    pub(crate) async fn bind(
        js: &jetstream::Context,
        stream_name: &str,
        consumer_name: &str,
        dlq_subject: String,
        options: LoopOptions,
    ) -> Result<Self, BusError> {
        let err = |source: async_nats::Error| BusError::Consumer {
            stream: stream_name.to_owned(),
            consumer: consumer_name.to_owned(),
            source,
        };
        let mut stream = js.get_stream(stream_name).await.map_err(|e| err(e.into()))?;
        let retention = stream.info().await.map_err(|e| err(e.into()))?.config.retention;
        let mut consumer: PullConsumer = stream.get_consumer(consumer_name).await.map_err(err)?;
        let info = consumer.info().await.map_err(|e| err(e.into()))?;
        // The server's max_deliver keeps one delivery in reserve for dead-lettering (see QueueSettings).
        let max_attempts = u32::try_from(info.config.max_deliver.saturating_sub(1)).unwrap_or(u32::MAX).max(1);
        let ack_wait = info.config.ack_wait;
        let mut options = options;
        options.concurrency = options.concurrency.max(1);
        if options.backoff.is_empty() {
            options.backoff.push(Duration::from_secs(1));
        }
        Ok(Self {
            consumer,
            shared: Arc::new(Shared {
                js: js.clone(),
                stream,
                stream_name: stream_name.to_owned(),
                consumer_name: consumer_name.to_owned(),
                dlq_subject,
                remove_dead_letters: retention == jetstream::stream::RetentionPolicy::WorkQueue,
                max_attempts,
                ack_wait,
                options,
                counters: Counters::default(),
            }),
        })
    }

    /// The number of attempts a message gets.
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts
    }

    /// Serves messages until `shutdown` is cancelled, then drains: in-flight handlers get
    /// `drain_timeout` to finish; whatever is still running is handed back to the queue.
    pub async fn run<T, H, Fut>(self, handler: H, shutdown: CancellationToken) -> LoopStats
    where
        T: Message + Default + Send + 'static,
        H: Fn(Delivery<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let shared = self.shared;
        let mut consumer = self.consumer;
        let mut presence = Presence::default();
        let concurrency = shared.options.concurrency;
        let permits = Arc::new(Semaphore::new(concurrency));
        let abandon = CancellationToken::new();
        let mut tasks = JoinSet::new();

        'serve: loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break 'serve,
            };
            let mut held = vec![first];
            while held.len() < concurrency {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            // Ask for exactly as many messages as there are free slots, so nothing waits
            // in a local buffer while its ack timer runs.
            let request = consumer.batch().max_messages(held.len()).expires(shared.options.pull_expiry).messages();
            let mut batch = tokio::select! {
                b = request => match b {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(consumer = %shared.consumer_name, error = %e, "pull request failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => continue 'serve,
                            () = shutdown.cancelled() => break 'serve,
                        }
                    }
                },
                () = shutdown.cancelled() => break 'serve,
            };
            let mut delivered = 0usize;
            loop {
                // The server ends a pull at its expiry; one that outlives it by far got no answer
                // at all (its consumer was deleted under it): end it here.
                let unanswered = shared.options.pull_expiry * 2 + Duration::from_secs(1);
                let next = tokio::select! {
                    n = tokio::time::timeout(unanswered, batch.next()) => n.unwrap_or(None),
                    () = shutdown.cancelled() => break 'serve,
                };
                match next {
                    None | Some(Err(_)) if delivered == 0 => {
                        // A pull that brought nothing: idle, or refused at once (503: nothing
                        // answers for the consumer, which was deleted). Never pull again at once.
                        let refused = matches!(next, Some(Err(_)));
                        if let Some(e) = &next.and_then(Result::err) {
                            debug!(consumer = %shared.consumer_name, error = %e, "pull batch ended early");
                        }
                        let there = presence.check(&mut consumer, &shared, refused).await;
                        let pause = match (there, refused) {
                            (false, _) => MISSING_CONSUMER_WAIT,
                            (true, true) => Duration::from_millis(250),
                            (true, false) => Duration::ZERO,
                        };
                        if !pause.is_zero() {
                            tokio::select! {
                                () = tokio::time::sleep(pause) => {}
                                () = shutdown.cancelled() => break 'serve,
                            }
                        }
                        break;
                    }
                    None => break,
                    Some(Err(e)) => {
                        debug!(consumer = %shared.consumer_name, error = %e, "pull batch ended early");
                        break;
                    }
                    Some(Ok(msg)) => {
                        delivered += 1;
                        let permit = held.pop().expect("never more messages than requested");
                        let (shared, handler, abandon) = (shared.clone(), handler.clone(), abandon.clone());
                        tasks.spawn(async move {
                            process(msg, &shared, handler.as_ref(), &abandon).await;
                            drop(permit);
                        });
                    }
                }
            }
        }

        // Drain: let in-flight work finish, then hand back what is still running.
        let drained =
            tokio::time::timeout(shared.options.drain_timeout, async { while tasks.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            warn!(consumer = %shared.consumer_name, in_flight = tasks.len(), "drain timeout: handing messages back");
            abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} })
                .await;
            tasks.abort_all();
        }
        let c = &shared.counters;
        LoopStats {
            acked: c.acked.load(Ordering::Relaxed),
            nacked: c.nacked.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

async fn process<T, H, Fut>(msg: jetstream::Message, shared: &Shared, handler: &H, abandon: &CancellationToken)
where
    T: Message + Default,
    H: Fn(Delivery<T>) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let (stream_sequence, attempt) = match msg.info() {
        Ok(info) => (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX)),
        Err(e) => {
            // Not a JetStream delivery at all; nothing sensible to ack.
            warn!(consumer = %shared.consumer_name, error = %e, "message without JetStream metadata ignored");
            return;
        }
    };
    if attempt > shared.max_attempts {
        // The reserve delivery: the previous attempt crashed or timed out without an answer.
        let reason = format!("exhausted {} delivery attempts without an ack", shared.max_attempts);
        return dead_letter(&msg, shared, stream_sequence, attempt, &reason).await;
    }
    let message = match T::decode(msg.payload.as_ref()) {
        Ok(m) => m,
        Err(_) if shared.options.skip_undecodable => {
            debug!(consumer = %shared.consumer_name, stream_sequence, "undecodable payload skipped");
            if let Some(SkippedHook(hook)) = &shared.options.on_skipped {
                hook(msg.subject.as_str(), &msg.headers.clone().unwrap_or_default());
            }
            if let Err(e) = msg.ack().await {
                debug!(error = %e, "ack failed");
            }
            shared.counters.acked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => {
            let reason = format!("undecodable payload ({} bytes) for {}: {e}", msg.payload.len(), type_name::<T>());
            return dead_letter(&msg, shared, stream_sequence, attempt, &reason).await;
        }
    };
    let headers = msg.headers.clone().unwrap_or_default();
    let trace_context = trace::extract(&headers);
    let span = info_span!(
        "bus.handle",
        consumer = %shared.consumer_name,
        subject = %msg.subject,
        attempt,
        stream_sequence,
    );
    if let Err(e) = span.set_parent(trace_context.clone()) {
        debug!(error = %e, "trace parent not set");
    }
    let delivery = Delivery {
        message,
        subject: msg.subject.to_string(),
        attempt,
        max_attempts: shared.max_attempts,
        stream_sequence,
        trace_context,
        headers,
    };

    // Build the future inside the span too, so the handler's synchronous prelude is traced.
    let work = span.in_scope(|| AssertUnwindSafe(handler(delivery)).catch_unwind());
    let mut work = std::pin::pin!(work.instrument(span));
    let mut keepalive = tokio::time::interval(keepalive_period(shared.ack_wait));
    keepalive.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = keepalive.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "progress ack failed");
                }
            }
            () = abandon.cancelled() => {
                nak(&msg, shared, None).await;
                return;
            }
        }
    };

    match result {
        Ok(Ok(())) => match msg.double_ack().await {
            Ok(()) => {
                shared.counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            // The work is done but the ack was lost: the message comes back, and the handler's
            // own fencing turns the second delivery into a no-op.
            Err(e) => warn!(consumer = %shared.consumer_name, stream_sequence, error = %e, "ack failed"),
        },
        Ok(Err(HandlerError::Reject { reason })) => {
            dead_letter(&msg, shared, stream_sequence, attempt, &format!("rejected: {reason}")).await;
        }
        Ok(Err(HandlerError::Retry { reason, after })) => {
            retry_or_give_up(&msg, shared, stream_sequence, attempt, &reason, after).await;
        }
        Err(panic) => {
            let reason = format!("handler panicked: {}", panic_message(panic.as_ref()));
            warn!(consumer = %shared.consumer_name, stream_sequence, attempt, %reason);
            retry_or_give_up(&msg, shared, stream_sequence, attempt, &reason, None).await;
        }
    }
}

async fn retry_or_give_up(
    msg: &jetstream::Message,
    shared: &Shared,
    stream_sequence: u64,
    attempt: u32,
    reason: &str,
    after: Option<Duration>,
) {
    if attempt >= shared.max_attempts {
        let reason = format!("gave up after {attempt} attempts; last error: {reason}");
        dead_letter(msg, shared, stream_sequence, attempt, &reason).await;
    } else {
        let delay = after.unwrap_or_else(|| backoff(&shared.options.backoff, attempt));
        debug!(consumer = %shared.consumer_name, stream_sequence, attempt, ?delay, reason, "retrying later");
        nak(msg, shared, Some(delay)).await;
    }
}

async fn nak(msg: &jetstream::Message, shared: &Shared, delay: Option<Duration>) {
    shared.counters.nacked.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = msg.ack_with(AckKind::Nak(delay)).await {
        // The ack wait expires instead and the message is redelivered all the same.
        debug!(error = %e, "nak failed");
    }
}

/// Copies the message to the DLQ with the reason, then removes it from the queue. If the DLQ
/// write fails the message is handed back and will be dead-lettered on its next delivery.
async fn dead_letter(msg: &jetstream::Message, shared: &Shared, stream_sequence: u64, attempt: u32, reason: &str) {
    let mut h = msg.headers.clone().unwrap_or_default();
    h.insert(headers::DLQ_REASON, reason);
    h.insert(headers::DLQ_SUBJECT, msg.subject.as_str());
    h.insert(headers::DLQ_STREAM, shared.stream_name.as_str());
    h.insert(headers::DLQ_SEQUENCE, stream_sequence.to_string().as_str());
    h.insert(headers::DLQ_CONSUMER, shared.consumer_name.as_str());
    h.insert(headers::DLQ_DELIVERIES, attempt.to_string().as_str());
    let dedup = format!("{}.{}", shared.stream_name, stream_sequence);
    let publish = PublishMessage::build().payload(msg.payload.clone()).headers(h).message_id(dedup);
    let stored = match shared.js.send_publish(shared.dlq_subject.clone(), publish).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(async_nats::Error::from),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = stored {
        warn!(consumer = %shared.consumer_name, stream_sequence, error = %e, "dead-lettering failed; handing back");
        nak(msg, shared, Some(*shared.options.backoff.last().unwrap_or(&Duration::from_secs(5)))).await;
        return;
    }
    if let Err(e) = msg.ack_with(AckKind::Term).await {
        debug!(error = %e, "term failed");
    }
    // Terminating does not remove a message from every kind of stream; deleting does. Only
    // from a work queue: a stream other consumers read keeps what this one gave up on.
    if shared.remove_dead_letters {
        let _ = shared.stream.delete_message(stream_sequence).await;
    }
    shared.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
    warn!(consumer = %shared.consumer_name, stream_sequence, attempt, reason, "message dead-lettered");
}

/// Every value [`reason_kind`] returns.
pub const REASON_KINDS: [&str; 4] = ["undecodable", "rejected", "attempts", "other"];

/// The class of a dead letter's reason (`Tern-Dlq-Reason`, as this loop words it), for
/// metrics: `undecodable`, `rejected` (by its handler), `attempts` (used up, with or without an
/// answer), or `other`.
pub fn reason_kind(reason: &str) -> &'static str {
    if reason.starts_with("undecodable payload") {
        "undecodable"
    } else if reason.starts_with("rejected:") {
        "rejected"
    } else if reason.starts_with("gave up after") || reason.starts_with("exhausted ") {
        "attempts"
    } else {
        "other"
    }
}

fn backoff(schedule: &[Duration], attempt: u32) -> Duration {
    let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX).min(schedule.len() - 1);
    schedule[i]
}

fn keepalive_period(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(100))
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>().rsplit("::").next().unwrap_or("message")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_then_repeats_its_last_step() {
        let s = [1, 5, 15].map(Duration::from_secs);
        assert_eq!(backoff(&s, 1), Duration::from_secs(1));
        assert_eq!(backoff(&s, 3), Duration::from_secs(15));
        assert_eq!(backoff(&s, 40), Duration::from_secs(15));
    }

    #[test]
    fn every_reason_this_loop_writes_has_a_kind() {
        assert_eq!(reason_kind("undecodable payload (3 bytes) for Command: x"), "undecodable");
        assert_eq!(reason_kind("rejected: no lock"), "rejected");
        assert_eq!(reason_kind("gave up after 5 attempts; last error: 500"), "attempts");
        assert_eq!(reason_kind("exhausted 5 delivery attempts without an ack"), "attempts");
        assert_eq!(reason_kind(""), "other");
    }
}
