//! The evidence every report about a Lambda function (or a table or queue behind one) carries in
//! `diagnosis.evidence`, so that the person reading it need not open three consoles: the errors
//! in the function's logs, the figures the seed runbooks look at (this window and the one before),
//! and what changed recently (versions, aliases, configuration, the owning stack's events).
//!
//! Best effort and bounded: the reads run at once, all within `EVIDENCE_READ_TIMEOUT_MS`; one
//! that fails or runs out of time is named in `errors` and never fails the run. Log text is normalised and
//! truncated, never copied whole: payloads may hold personal data.

mod changes;
mod logs;
mod metrics;

use metrics::metrics;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::aws::AwsError;
use crate::model::{AlarmTrigger, Evidence, EvidenceConfig, Subject};

use changes::recent_changes;
use logs::read_logs;

pub use changes::{lambda_time, published_versions};
pub use logs::normalise;

/// When the reads must be done (they run at once, and a read that follows another shares its
/// time), and that time as the reports say it.
#[derive(Clone, Copy)]
struct Within {
    until: tokio::time::Instant,
    ms: u64,
}
/// The longest log message text kept.
pub const MESSAGE_CHARS: usize = 200;
/// How many distinct error messages are listed.
const TOP_ERRORS: usize = 5;
/// The log lines worth reading: errors, timeouts, out-of-memory, denials, throttling. AWS
/// matches any of the terms; the lines are classified here again, whatever the filter let by.
const LOG_PATTERN: &str = "?ERROR ?FATAL ?error ?timeout ?\"Task timed out\" ?\"signal: killed\" ?OutOfMemory ?AccessDenied ?AccessDeniedException ?ThrottlingException ?TooManyRequestsException ?ProvisionedThroughputExceededException ?\"Rate exceeded\"";

/// The clients evidence is read with; a function without one gets no evidence of that kind.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub cloudwatch: &'a aws_sdk_cloudwatch::Client,
    pub logs: Option<&'a aws_sdk_cloudwatchlogs::Client>,
    pub lambda: Option<&'a aws_sdk_lambda::Client>,
    pub cloudformation: Option<&'a aws_sdk_cloudformation::Client>,
}

/// The window evidence is read over: the span the alarm evaluated, at most the lookback, or the
/// last `lookback_minutes` for a run without one.
pub fn window(
    alarm: Option<&AlarmTrigger>,
    config: &EvidenceConfig,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let lookback = chrono::Duration::minutes(config.lookback_minutes);
    match alarm.and_then(|alarm| alarm.window) {
        Some((from, to)) if to > from => (from.max(to - lookback), to),
        _ => (now - lookback, now),
    }
}

/// Reads the evidence about `subject` over `from..to`; never fails (see `errors`).
// Over 80 lines: every piece of evidence read at once and each one's failure kept; one join over
// the reads.
pub async fn gather(
    sources: Sources<'_>,
    subject: &Subject,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    config: &EvidenceConfig,
) -> Evidence {
    let mut evidence = Evidence {
        from: crate::model::timestamp(from),
        to: crate::model::timestamp(to),
        ..Evidence::default()
    };
    let deadline = Within {
        until: tokio::time::Instant::now() + Duration::from_millis(config.read_timeout_ms),
        ms: config.read_timeout_ms,
    };
    let metrics = bounded(
        "metrics",
        deadline,
        metrics(sources.cloudwatch, subject, from, to),
    );
    let Subject::Function { name, .. } = subject else {
        match metrics.await {
            Ok(figures) => evidence.metrics = figures,
            Err(err) => evidence.errors.push(err),
        }
        return evidence;
    };
    let since = to - chrono::Duration::minutes(config.recent_changes_minutes);
    let function = async {
        let Some(lambda) = sources.lambda else {
            return (None, None);
        };
        let configuration = bounded("configuration", deadline, async {
            lambda
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk(
                        "lambda:GetFunctionConfiguration",
                        &format!("function {name}"),
                        &err,
                    )
                })
        })
        .await;
        let configuration = match configuration {
            Ok(configuration) => configuration,
            Err(err) => return (Some(Err(err.clone())), Some(Err(err))),
        };
        let log_group = configuration
            .logging_config()
            .and_then(|logging| logging.log_group())
            .map_or_else(|| format!("/aws/lambda/{name}"), str::to_string);
        let logs = async {
            let logs_client = sources.logs?;
            Some(
                read_logs(
                    logs_client,
                    &log_group,
                    (from, to),
                    config.max_events,
                    deadline,
                )
                .await,
            )
        };
        let changes = Box::pin(bounded(
            "recent changes",
            deadline,
            recent_changes(
                lambda,
                sources.cloudformation,
                name,
                configuration.last_modified(),
                since,
            ),
        ));
        let (logs, changes) = tokio::join!(Box::pin(logs), changes);
        (logs, Some(changes))
    };
    let (metrics, (logs, changes)) = tokio::join!(Box::pin(metrics), Box::pin(function));
    match metrics {
        Ok(figures) => evidence.metrics = figures,
        Err(err) => evidence.errors.push(err),
    }
    match logs {
        Some(Ok(logs)) => evidence.logs = Some(logs),
        Some(Err(err)) => evidence.errors.push(err),
        None => {}
    }
    match changes {
        Some(Ok(changes)) => evidence.recent_changes = Some(changes),
        Some(Err(err)) if !evidence.errors.contains(&err) => evidence.errors.push(err),
        _ => {}
    }
    evidence
}

/// `read` by `deadline`, its failure or its running out of time as one line.
async fn bounded<T>(
    what: &str,
    deadline: Within,
    read: impl Future<Output = Result<T, AwsError>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline.until, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Err(_) => Err(format!("{what}: not read within {} ms", deadline.ms)),
    }
}

/// What one GetMetricData call reads about a subject: its namespace and dimensions, and each
/// figure as (name in the report, metric, statistic).
struct Queries {
    namespace: &'static str,
    dimensions: Vec<(String, String)>,
    figures: Vec<(&'static str, &'static str, &'static str)>,
}

fn queries(subject: &Subject) -> Queries {
    let (namespace, dimensions, figures) = match subject {
        Subject::Function { name, qualifier } => {
            let mut dimensions = vec![("FunctionName".to_string(), name.clone())];
            if let Some(qualifier) = qualifier {
                dimensions.push(("Resource".into(), format!("{name}:{qualifier}")));
            }
            (
                "AWS/Lambda",
                dimensions,
                vec![
                    ("errors", "Errors", "Sum"),
                    ("invocations", "Invocations", "Sum"),
                    ("throttles", "Throttles", "Sum"),
                    ("duration_p99_ms", "Duration", "p99"),
                    ("duration_max_ms", "Duration", "Maximum"),
                ],
            )
        }
        Subject::Table { table, index } => {
            let mut dimensions = vec![("TableName".to_string(), table.clone())];
            if let Some(index) = index {
                dimensions.push(("GlobalSecondaryIndexName".into(), index.clone()));
            }
            (
                "AWS/DynamoDB",
                dimensions,
                vec![
                    ("consumed_read_units", "ConsumedReadCapacityUnits", "Sum"),
                    ("consumed_write_units", "ConsumedWriteCapacityUnits", "Sum"),
                    ("read_throttle_events", "ReadThrottleEvents", "Sum"),
                    ("write_throttle_events", "WriteThrottleEvents", "Sum"),
                ],
            )
        }
        Subject::Queue { name } => (
            "AWS/SQS",
            vec![("QueueName".to_string(), name.clone())],
            vec![
                (
                    "visible_max",
                    "ApproximateNumberOfMessagesVisible",
                    "Maximum",
                ),
                (
                    "oldest_age_seconds_max",
                    "ApproximateAgeOfOldestMessage",
                    "Maximum",
                ),
            ],
        ),
    };
    Queries {
        namespace,
        dimensions,
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_alarm_s_bounded_by_the_lookback() {
        let config = EvidenceConfig {
            lookback_minutes: 15,
            max_events: 100,
            recent_changes_minutes: 60,
            read_timeout_ms: 1_000,
        };
        let now = Utc::now();
        assert_eq!(
            window(None, &config, now),
            (now - chrono::Duration::minutes(15), now)
        );
    }
}
