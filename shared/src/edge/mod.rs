//! The Lambda edge every function's `main` uses: each invocation gets its deadline, a span with
//! its request id, and its output logged as one JSON line.

pub mod alarms;
pub mod answer;
pub mod approvals;
pub mod catalog;
pub mod controls;
pub mod fleet;
pub mod publish;
pub mod recognise;
pub mod runtime;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::config::ConfigError;
use crate::deadline::Deadline;
use crate::edge::publish::ReportEvents;
use crate::model::Invocation;
use crate::model::{Outcome, Report, TriggerInfo, TriggerKind};

/// An error that stops the function: a bad configuration at start-up, or a Runtime API that
/// fails.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long before the Lambda deadline an unfinished invocation is stopped, so that it still
/// answers (its report, the report's events, the log line) rather than being killed by Lambda
/// with no report at all.
pub const STOP_BEFORE_LAMBDA_DEADLINE: Duration = Duration::from_millis(1_000);

/// How long before the Lambda deadline the report events are given up on, so that the answer
/// itself still leaves in time.
const ANSWER_BEFORE_LAMBDA_DEADLINE: Duration = Duration::from_millis(300);

/// The longest an invocation can run on AWS (the largest Timeout, 15 minutes), with a minute for
/// clock skew: a deadline further ahead did not come from AWS.
const LONGEST_INVOCATION: Duration = Duration::from_secs(16 * 60);

/// How long the function may run when the deadline cannot be trusted, unless
/// `FUNCTION_TIMEOUT_SECONDS` (the template sets it to the function's Timeout) says otherwise.
const DEFAULT_FUNCTION_TIMEOUT_SECONDS: u64 = 60;

/// How long this invocation may run, and a warning when its deadline is not one AWS sends. On
/// AWS, `lambda-runtime-deadline-ms` is always a future epoch time at most 15 minutes ahead; a
/// local Runtime API may send something else (`cargo lambda watch` sends a duration, 600000, a
/// time in 1970) or no header at all, which would stop every run at once or never. Such a
/// deadline is treated as unknown: the function's own `timeout` bounds the run, and nothing else
/// changes.
pub fn invocation_budget(
    deadline_ms: Option<u64>,
    now_ms: u64,
    timeout: Duration,
) -> (Duration, Option<String>) {
    let Some(deadline_ms) = deadline_ms else {
        let warning = format!(
            "lambda-runtime-deadline-ms is missing (or not a number), which AWS never sends: \
             the run is bounded by the function's timeout instead, {}s (FUNCTION_TIMEOUT_SECONDS)",
            timeout.as_secs()
        );
        return (timeout, Some(warning));
    };
    let ahead = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    let unknown = if deadline_ms <= now_ms {
        "already past"
    } else if ahead > LONGEST_INVOCATION {
        "further ahead than any Lambda timeout"
    } else {
        return (ahead, None);
    };
    let warning = format!(
        "lambda-runtime-deadline-ms is {deadline_ms} ({unknown}; now is {now_ms}), which AWS never sends: \
         the run is bounded by the function's timeout instead, {}s (FUNCTION_TIMEOUT_SECONDS)",
        timeout.as_secs()
    );
    (timeout, Some(warning))
}

/// Logs a configuration error before it stops the cold start.
pub fn startup_failed(err: ConfigError) -> Error {
    tracing::error!(error = %err, "bad configuration: the function cannot start");
    // As text, so the runtime prints the message rather than the error's structure.
    err.to_string().into()
}

/// Serves invocations of `function` with `handle` (which must not fail: bad input is a report,
/// not an error). The output is logged as one JSON line and, where worth it, published as report
/// events; a failure to publish is logged and added to the output as `event_error`.
///
/// Every wait and retry inside `handle` is bounded by the invocation's deadline, but one AWS
/// call that never answers would still hold it past the Lambda deadline, where Lambda kills it
/// and nobody learns what it did. So `handle` is stopped `STOP_BEFORE_LAMBDA_DEADLINE` before
/// it, and the answer is a failed report that says so.
pub async fn serve<F, Fut, O>(
    function: &'static str,
    report_events: Option<ReportEvents>,
    handle: F,
) -> Result<(), Error>
where
    F: Fn(Value, Invocation) -> Fut,
    Fut: Future<Output = O>,
    O: Serialize,
{
    let timeout = Duration::from_secs(
        crate::config::Env::process()
            .number(
                "FUNCTION_TIMEOUT_SECONDS",
                DEFAULT_FUNCTION_TIMEOUT_SECONDS,
                1,
                900,
            )
            .map_err(startup_failed)?,
    );
    let handle = &handle;
    let report_events = &report_events;
    runtime::run(move |invocation: runtime::Invocation| async move {
        let request_id = invocation.request_id;
        let (budget, untrusted) = invocation_budget(invocation.deadline_ms, now_ms(), timeout);
        if let Some(warning) = untrusted {
            tracing::warn!(request_id = %request_id, "{warning}");
        }
        let lambda_deadline = Deadline::within(budget);
        let run = Invocation::new(&request_id, Deadline::after(budget));
        let started = std::time::Instant::now();
        let span = tracing::info_span!("invocation", request_id = %request_id, target = tracing::field::Empty);
        // Boxed: the handlers' futures are deep enough to hit the compiler's layout limit.
        let handled = Box::pin(handle(invocation.event, run).instrument(span.clone()));
        let stop_in = lambda_deadline.less(STOP_BEFORE_LAMBDA_DEADLINE).remaining();
        let (mut output, stopped) = match tokio::time::timeout(stop_in, handled).await {
            Ok(output) => (as_json(&output), false),
            Err(_) => {
                tracing::error!(parent: &span, "stopped before the Lambda deadline with its work unfinished");
                let mut report = stopped_at_deadline(function, &request_id);
                report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                (as_json(&report), true)
            }
        };
        if let Some(report_events) = report_events {
            let publish_in = lambda_deadline.less(ANSWER_BEFORE_LAMBDA_DEADLINE).remaining();
            let published = tokio::time::timeout(publish_in, report_events.publish(&output).instrument(span))
                .await
                .unwrap_or_else(|_| Err(report_events.out_of_time()));
            if let Err(err) = published {
                tracing::error!(request_id = %request_id, error = %err, "the report events were not published");
                if let Some(fields) = output.as_object_mut() {
                    fields.insert("event_error".into(), Value::String(err.to_string()));
                }
            }
        }
        crate::logging::log_output(&output);
        if stopped {
            // An error, not an answer: Lambda retries an asynchronous invocation with the same
            // request id, and that retry takes over the claim and the lease and adopts a change
            // this one may have made (its intent on the lease) instead of losing its record.
            let reason = output["reason"].as_str().unwrap_or_default().to_string();
            return Err(("Runbook.StoppedBeforeDeadline", reason));
        }
        Ok(output)
    })
    .await
}

/// The output as JSON; one that cannot be (never, for the reports) says so in its place.
fn as_json<O: Serialize>(output: &O) -> Value {
    serde_json::to_value(output).unwrap_or_else(|err| {
        serde_json::json!({"outcome": "failed", "reason": format!("the report could not be written as JSON: {err}")})
    })
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The report of an invocation stopped before the Lambda deadline: published and logged like any
/// other, so that people learn of it, and returned as the invocation's error.
fn stopped_at_deadline(function: &str, request_id: &str) -> Report {
    let trigger = TriggerInfo {
        kind: TriggerKind::Unknown,
        name: None,
        event_id: None,
    };
    Report::new(
        function,
        trigger,
        Outcome::Failed,
        format!(
            "stopped {}s before the Lambda deadline with its work unfinished (an AWS call did not answer in time): \
             its logs under request id {request_id} show how far it got; Lambda retries an asynchronous invocation \
             with the same request id, which adopts a change this one recorded as its intent instead of making it twice; \
             run a manual one again once AWS answers, or raise the function's Timeout if this repeats",
            STOP_BEFORE_LAMBDA_DEADLINE.as_secs_f32()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_trusted_only_as_aws_sends_it() {
        let now = 1_796_000_000_000;
        let timeout = Duration::from_secs(120);
        // AWS: a future epoch time at most 15 minutes ahead (a minute allowed for skew).
        assert_eq!(
            invocation_budget(Some(now + 1), now, timeout),
            (Duration::from_millis(1), None)
        );
        let longest = now + 16 * 60 * 1000;
        assert_eq!(
            invocation_budget(Some(longest), now, timeout),
            (LONGEST_INVOCATION, None)
        );
        // Anything else is unknown: the function's timeout bounds the run, and says why.
        for (deadline, says) in [
            (now, "already past"),
            (600_000, "already past"),
            (0, "already past"),
            (longest + 1, "further ahead than any Lambda timeout"),
        ] {
            let (budget, warning) = invocation_budget(Some(deadline), now, timeout);
            assert_eq!(budget, timeout, "{deadline}");
            let warning = warning.unwrap_or_default();
            assert!(
                warning.starts_with(&format!(
                    "lambda-runtime-deadline-ms is {deadline} ({says};"
                )) && warning.ends_with("120s (FUNCTION_TIMEOUT_SECONDS)"),
                "{warning}"
            );
        }
        let (budget, warning) = invocation_budget(None, now, timeout);
        assert_eq!(budget, timeout);
        assert!(
            warning.is_some_and(|warning| warning.starts_with("lambda-runtime-deadline-ms is missing")),
        );
    }
}
