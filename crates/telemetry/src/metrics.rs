//! One process-wide Prometheus registry. A metric is declared where it is counted, by name,
//! and the same name always gives back the same family, so modules need not pass handles
//! around:
//!
//! ```
//! use tern_telemetry::metrics::{labels, registry};
//! let requests = registry().counter("tern_example_requests", "Requests, by status");
//! requests.get_or_create(&labels(&[("status", "200")])).inc();
//! assert!(registry().render().contains("tern_example_requests_total{status=\"200\"} 1"));
//! ```
//!
//! Counters are exposed with the `_total` suffix (OpenMetrics) and help texts get a closing
//! period added, so give them without one; render with [`Registry::render`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;
/// A counter family (`NAME_total`).
pub type CounterFamily = Family<Labels, Counter>;
/// A gauge family holding floats.
pub type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;
/// One series of a [`GaugeFamily`] (a handle: clones share the value).
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A histogram family of durations in seconds.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for durations in seconds: 50 ms to about 2 h.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0, 7200.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone)]
enum Metric {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

/// The registry: families by name.
pub struct Registry {
    inner: Mutex<(prometheus_client::registry::Registry, HashMap<String, Metric>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        inner: Mutex::new((prometheus_client::registry::Registry::default(), HashMap::new())),
    })
}

/// `[("phase", "failover")]` → owned labels.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Registry {
    fn get_or_register(&self, name: &str, help: &str, make: impl FnOnce() -> Metric) -> Metric {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (registry, known) = &mut *guard;
        if let Some(m) = known.get(name) {
            return m.clone();
        }
        let metric = make();
        match &metric {
            Metric::Counter(f) => registry.register(name, help, f.clone()),
            Metric::Gauge(f) => registry.register(name, help, f.clone()),
            Metric::Histogram(f) => registry.register(name, help, f.clone()),
        }
        known.insert(name.to_owned(), metric.clone());
        metric
    }

    /// The counter family `name` (exposed as `name_total`). Panics if `name` is another kind.
    pub fn counter(&self, name: &str, help: &str) -> CounterFamily {
        match self.get_or_register(name, help, || Metric::Counter(CounterFamily::default())) {
            Metric::Counter(f) => f,
            _ => panic!("metric {name} is not a counter"),
        }
    }

    /// The gauge family `name`. Panics if `name` is another kind.
    pub fn gauge(&self, name: &str, help: &str) -> GaugeFamily {
        match self.get_or_register(name, help, || Metric::Gauge(GaugeFamily::default())) {
            Metric::Gauge(f) => f,
            _ => panic!("metric {name} is not a gauge"),
        }
    }

    /// The duration histogram family `name` (seconds, [`DURATION_BUCKETS`]).
    pub fn histogram(&self, name: &str, help: &str) -> HistogramFamily {
        let make = || Metric::Histogram(Family::new_with_constructor(duration_histogram as fn() -> Histogram));
        match self.get_or_register(name, help, make) {
            Metric::Histogram(f) => f,
            _ => panic!("metric {name} is not a histogram"),
        }
    }

    /// Every metric in the text exposition format (OpenMetrics).
    pub fn render(&self) -> String {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &guard.0);
        out
    }
}

/// The content type of [`Registry::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_is_one_family_and_renders_with_its_labels() {
        let r = registry();
        r.counter("tern_test_things", "Things").get_or_create(&labels(&[("kind", "a")])).inc();
        r.counter("tern_test_things", "Things").get_or_create(&labels(&[("kind", "a")])).inc();
        r.gauge("tern_test_level", "Level").get_or_create(&labels(&[])).set(2.5);
        r.histogram("tern_test_seconds", "Seconds").get_or_create(&labels(&[("phase", "x")])).observe(0.3);
        let text = r.render();
        assert!(text.contains("tern_test_things_total{kind=\"a\"} 2"), "{text}");
        assert!(text.contains("tern_test_level{} 2.5"), "{text}");
        assert!(text.contains("tern_test_seconds_bucket{le=\"0.5\",phase=\"x\"} 1"), "{text}");
    }
}
