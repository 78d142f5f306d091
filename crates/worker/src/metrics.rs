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
//!
//! `phase` is a phase slug (`failover`, `commit`, `drill`, `reprotect`, `cleanup`). The consumer
//! backlog and DLQ gauges every service shows are `tern-service`'s.

use std::sync::OnceLock;
use std::time::Duration;

use tern_proto::{Outcome, Phase};
use tern_service::Readiness;
use tern_telemetry::metrics::{CounterFamily, GaugeFamily, HistogramFamily, labels, registry};

struct Families {
    commands: CounterFamily,
    in_flight: GaugeFamily,
    submissions: CounterFamily,
    phase_duration: HistogramFamily,
    vm_phases: CounterFamily,
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
        }
    })
}

/// A worker's metrics (its `service` label) and readiness.
#[derive(Debug)]
pub struct Metrics {
    service: &'static str,
    /// Ready to take commands (bus connected, consumer bound): what `/readyz` answers.
    pub ready: Readiness,
}

impl Metrics {
    /// The metrics of `service`; its series start at zero.
    pub fn new(service: &'static str) -> Self {
        let f = families();
        let l = labels(&[("service", service)]);
        let _ = f.in_flight.get_or_create(&l);
        let _ = f.submissions.get_or_create(&l);
        Self { service, ready: Readiness::default() }
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
