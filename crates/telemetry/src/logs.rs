//! Log lines: human or JSON, each carrying the `trace_id` and `span_id` of the span it was
//! logged in when that span has an OpenTelemetry context.
//!
//! The ids are read from the tracing-opentelemetry layer through the subscriber's `Dispatch`,
//! which [`DispatchCapture`] records when the subscriber is installed (a formatter is not told
//! which subscriber it formats for, and asking for the current one while an event is being
//! dispatched would give back none under a scoped subscriber).

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where the installed subscriber is recorded for [`WithTraceIds`].
pub(crate) type DispatchCell = Arc<OnceLock<WeakDispatch>>;

/// A layer that does nothing but remember the `Dispatch` it was installed in.
pub(crate) struct DispatchCapture(pub(crate) DispatchCell);

impl<S: Subscriber> Layer<S> for DispatchCapture {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// An event formatter that adds `trace_id` and `span_id` to what `inner` writes: as two more
/// members of the JSON object, or as ` trace_id=… span_id=…` at the end of a human line.
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    pub(crate) json: bool,
    pub(crate) dispatch: DispatchCell,
}

impl<F> WithTraceIds<F> {
    /// The ids of the innermost span of the event's scope that has a valid OpenTelemetry context.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let scope = ctx.event_scope()?;
        for span in scope {
            // Spans the OpenTelemetry layer filtered out have no context: try their parent.
            let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) else { continue };
            let otel = cx.span();
            let sc = otel.span_context();
            if sc.is_valid() {
                return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
            }
        }
        None
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        if let Some((trace_id, span_id)) = self.ids(ctx) {
            let body_end = line.trim_end_matches('\n').len();
            if self.json {
                // The inner formatter wrote one flat object: add two members before its `}`.
                if let Some(close) = line[..body_end].rfind('}') {
                    line.insert_str(close, &format!(",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""));
                }
            } else {
                line.insert_str(body_end, &format!(" trace_id={trace_id} span_id={span_id}"));
            }
        }
        writer.write_str(&line)
    }
}
