//! What every service reads from JetStream when `/metrics` is scraped, on the process-wide
//! Prometheus registry of `tern-telemetry`:
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `tern_consumer_pending` | gauge | `consumer` |
//! | `tern_consumer_ack_pending` | gauge | `consumer` |
//! | `tern_dlq_messages` | gauge | — |

use std::sync::OnceLock;
use std::time::Duration;

use tern_bus::Bus;
use tern_bus::topology::DLQ_STREAM;
use tern_telemetry::metrics::{GaugeFamily, labels, registry};

struct Families {
    consumer_pending: GaugeFamily,
    consumer_ack_pending: GaugeFamily,
    dlq_messages: GaugeFamily,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let r = registry();
        Families {
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

/// Sets `tern_consumer_pending{consumer}` and `tern_consumer_ack_pending{consumer}` from the
/// durable `consumer` of `stream`, and `tern_dlq_messages` from the dead-letter stream, reading
/// them from JetStream (the two reads run at once). A value that cannot be read within
/// `timeout` keeps its last one.
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
