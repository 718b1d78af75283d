//! The Lambda edge every function's `main` uses: each invocation gets its deadline, a span with
//! its request id, and its output logged as one JSON line.

use std::future::Future;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::config::ConfigError;
use crate::deadline::Deadline;
use crate::report_events::ReportEvents;
use crate::safety::Invocation;

/// Logs a configuration error before it stops the cold start.
pub fn startup_failed(err: ConfigError) -> Error {
    tracing::error!(error = %err, "bad configuration: the function cannot start");
    // As text, so the runtime prints the message rather than the error's structure.
    err.to_string().into()
}

/// Serves invocations with `handle` (which must not fail: bad input is a report, not an error).
/// The output is logged as one JSON line and, where worth it, published as report events; a
/// failure to publish is logged and added to the output as `event_error`.
pub async fn serve<F, Fut, O>(report_events: Option<ReportEvents>, handle: F) -> Result<(), Error>
where
    F: Fn(Value, Invocation) -> Fut,
    Fut: Future<Output = O>,
    O: Serialize,
{
    let handle = &handle;
    let report_events = &report_events;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = Invocation::new(&event.context.request_id, Deadline::from_epoch_millis(event.context.deadline));
        let span = tracing::info_span!("invocation", request_id = %event.context.request_id, target = tracing::field::Empty);
        // Boxed: the handlers' futures are deep enough to hit the compiler's layout limit.
        let output = Box::pin(handle(event.payload, invocation).instrument(span.clone())).await;
        let mut output = serde_json::to_value(&output)?;
        if let Some(report_events) = report_events
            && let Err(err) = report_events.publish(&output).instrument(span).await
        {
            tracing::error!(error = %err, "the report events were not published");
            if let Some(fields) = output.as_object_mut() {
                fields.insert("event_error".into(), Value::String(err.to_string()));
            }
        }
        crate::logging::log_output(&output);
        Ok::<_, Error>(output)
    }))
    .await
}
