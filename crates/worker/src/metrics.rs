//! What a worker counts, on the process-wide Prometheus registry of `tern-telemetry` (rendered
//! at `/metrics` with everything else the process counts, e.g. `tern-asr`'s `tern_asr_*`).
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `tern_worker_commands_total` | counter | `service`, `phase`, `outcome` |
//! | `tern_worker_commands_in_flight` | gauge | `service` |
//! | `tern_worker_asr_submissions_total` | counter | `service` |
//! | `tern_phase_duration_seconds` | histogram | `service`, `phase`, `outcome` |
//! | `tern_vm_phases_total` | counter | `service`, `phase`, `outcome` |
//! | `tern_consumer_pending` | gauge | `consumer` |
//! | `tern_consumer_ack_pending` | gauge | `consumer` |
//! | `tern_dlq_messages` | gauge | — |
//!
//! `phase` is a phase slug (`failover`, `commit`, `drill`, `reprotect`, `cleanup`); the
//! consumer and DLQ gauges are read from JetStream when `/metrics` is scraped
//! ([`refresh_bus_gauges`]).

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tern_bus::Bus;
use tern_bus::topology::DLQ_STREAM;
use tern_proto::{Outcome, Phase};
use tern_telemetry::metrics::{CounterFamily, GaugeFamily, HistogramFamily, labels, registry};

struct Families {
    commands: CounterFamily,
    in_flight: GaugeFamily,
    submissions: CounterFamily,
    phase_duration: HistogramFamily,
    vm_phases: CounterFamily,
    consumer_pending: GaugeFamily,
    consumer_ack_pending: GaugeFamily,
    dlq_messages: GaugeFamily,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let r = registry();
        Families {
            // `tern_worker_commands_total{service, phase, outcome}`: commands this worker finished
            // and acked, by the command's phase and how it ended (`succeeded`, `failed`).
            // Commands handed back for later, taken over by another worker, acked as duplicates
            // of a finished one or dead-lettered are not counted.
            commands: r.counter("tern_worker_commands", "Commands finished, by service, phase and outcome"),
            // `tern_worker_commands_in_flight{service}`: commands being handled now.
            in_flight: r.gauge("tern_worker_commands_in_flight", "Commands being handled now, by service"),
            // `tern_worker_asr_submissions_total{service}`: ASR side effects (failover, commit,
            // reprotect, deletes, ...) submitted to Azure or attached to when already running.
            submissions: r
                .counter("tern_worker_asr_submissions", "ASR side effects submitted or attached to, by service"),
            // `tern_phase_duration_seconds{service, phase, outcome}`: how long a VM's phase took in
            // this worker: from the phase's `started` event (or, when it ended before one, from
            // when the worker took the command) to its terminal event.
            phase_duration: r.histogram(
                "tern_phase_duration_seconds",
                "Time from a VM's phase starting in this worker to its terminal event, by service, phase and outcome",
            ),
            // `tern_vm_phases_total{service, phase, outcome}`: terminal events this worker
            // published (`succeeded`, `failed`, `skipped`), i.e. VMs by phase and outcome. A
            // re-publication the bus dropped as a duplicate is not counted again.
            vm_phases: r.counter("tern_vm_phases", "VM phases ended, by service, phase and outcome"),
            // `tern_consumer_pending{consumer}`: messages of the durable consumer not delivered yet.
            consumer_pending: r.gauge(
                "tern_consumer_pending",
                "Messages waiting for the durable consumer, by consumer (read at scrape)",
            ),
            // `tern_consumer_ack_pending{consumer}`: messages delivered and not acked yet.
            consumer_ack_pending: r.gauge(
                "tern_consumer_ack_pending",
                "Messages delivered to the durable consumer and not acked yet, by consumer (read at scrape)",
            ),
            // `tern_dlq_messages`: messages in the dead-letter stream (`TERN_DLQ`).
            dlq_messages: r.gauge("tern_dlq_messages", "Messages in the dead-letter stream (read at scrape)"),
        }
    })
}

/// A worker's metrics (its `service` label) and readiness.
#[derive(Debug)]
pub struct Metrics {
    service: &'static str,
    /// Ready to take commands (bus connected, consumer bound): what `/readyz` answers.
    pub ready: AtomicBool,
}

impl Metrics {
    /// The metrics of `service`; its series start at zero.
    pub fn new(service: &'static str) -> Self {
        let f = families();
        let l = labels(&[("service", service)]);
        let _ = f.in_flight.get_or_create(&l);
        let _ = f.submissions.get_or_create(&l);
        Self { service, ready: AtomicBool::new(false) }
    }

    /// Counts a command as being handled until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        let gauge = families().in_flight.get_or_create(&labels(&[("service", self.service)])).clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts a finished command of `phase` (`outcome`: `succeeded`, `failed`).
    pub fn finished(&self, phase: Phase, outcome: &str) {
        let l = labels(&[("service", self.service), ("phase", phase.slug()), ("outcome", outcome)]);
        families().commands.get_or_create(&l).inc();
    }

    /// Counts an ASR side effect submitted or attached to.
    pub fn submitted(&self) {
        families().submissions.get_or_create(&labels(&[("service", self.service)])).inc();
    }
}

/// A command being handled (see [`Metrics::in_flight`]); counted out when dropped, also on
/// a panic.
#[derive(Debug)]
pub struct InFlight(tern_telemetry::metrics::FloatGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a VM's phase ended by a terminal event `service` published, that took `took`.
pub(crate) fn phase_ended(service: &str, phase: Phase, outcome: Outcome, took: Duration) {
    let f = families();
    let l = labels(&[("service", service), ("phase", phase.slug()), ("outcome", outcome.slug())]);
    f.vm_phases.get_or_create(&l).inc();
    f.phase_duration.get_or_create(&l).observe(took.as_secs_f64());
}

/// Sets `tern_consumer_pending{consumer}` and `tern_consumer_ack_pending{consumer}` from the
/// durable `consumer` of `stream`, and `tern_dlq_messages` from the dead-letter stream, reading
/// them from JetStream (the two reads run at once). A value that cannot be read within
/// `timeout` keeps its last one. For `/metrics` handlers (the planner's too).
pub async fn refresh_bus_gauges(bus: &Bus, stream: &str, consumer: &str, timeout: Duration) {
    let f = families();
    let js = bus.jetstream();
    let consumer_info = async {
        let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
        s.consumer_info(consumer).await.map(|i| (i.num_pending, i.num_ack_pending)).map_err(|e| e.to_string())
    };
    let dlq = async {
        let s = js.get_stream(DLQ_STREAM).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(s.cached_info().state.messages)
    };
    let (consumer_info, dlq) =
        tokio::join!(tokio::time::timeout(timeout, consumer_info), tokio::time::timeout(timeout, dlq));
    match consumer_info {
        Ok(Ok((pending, ack_pending))) => {
            let l = labels(&[("consumer", consumer)]);
            f.consumer_pending.get_or_create(&l).set(pending as f64);
            f.consumer_ack_pending.get_or_create(&l).set(ack_pending as f64);
        }
        Ok(Err(e)) => tracing::debug!(%stream, %consumer, error = %e, "metrics: consumer info not read"),
        Err(_) => tracing::debug!(%stream, %consumer, "metrics: consumer info not read in time"),
    }
    match dlq {
        Ok(Ok(messages)) => {
            f.dlq_messages.get_or_create(&labels(&[])).set(messages as f64);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: dead-letter stream info not read"),
        Err(_) => tracing::debug!("metrics: dead-letter stream info not read in time"),
    }
}
