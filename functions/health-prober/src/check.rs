//! Running the probes: all concurrently (bounded), each under its own timeout.

use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::StackStatus;
use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use futures_util::StreamExt;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::Deadline;
use serde::Serialize;
use serde_json::Value;

use crate::probes::{
    AlarmsProbe, HttpProbe, LambdaProbe, MetricProbe, MissingData, Probe, QueueProbe, StackProbe,
    TableProbe,
};

/// One probe's result, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub healthy: bool,
    pub latency_ms: u64,
    pub detail: String,
}

/// The clients the probes use.
#[derive(Clone)]
pub struct Clients {
    pub http: reqwest::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub lambda: aws_sdk_lambda::Client,
}

/// Runs every probe, at most `concurrency` at once, each stopped at its own timeout (or
/// `default_timeout`) and never after `stop_by`, so a stuck probe never holds up the others nor
/// the report; results keep the probes' order.
pub async fn run_all(
    clients: &Clients,
    probes: &[Probe],
    concurrency: usize,
    default_timeout: Duration,
    stop_by: Deadline,
) -> Vec<ProbeResult> {
    // Unordered, so a slow probe never keeps a free slot from the next one; sorted back after.
    let mut results: Vec<(usize, ProbeResult)> =
        futures_util::stream::iter(probes.iter().enumerate())
            .map(|(index, probe)| async move {
                (
                    index,
                    run_one(clients, probe, default_timeout, stop_by).await,
                )
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

async fn run_one(
    clients: &Clients,
    probe: &Probe,
    default_timeout: Duration,
    stop_by: Deadline,
) -> ProbeResult {
    let asked = probe
        .timeout_ms()
        .map_or(default_timeout, Duration::from_millis);
    let timeout = asked.min(stop_by.remaining());
    let started = Instant::now();
    let verdict = tokio::time::timeout(timeout, check(clients, probe)).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (healthy, detail) = verdict.unwrap_or_else(|_| {
        let capped = if timeout < asked {
            format!(
                " (its timeout of {} ms was capped so that the report, the metrics and the sweep fit in the invocation)",
                asked.as_millis()
            )
        } else {
            String::new()
        };
        (
            false,
            format!("timeout: no answer within {} ms{capped}", timeout.as_millis()),
        )
    });
    ProbeResult {
        name: probe.name().to_string(),
        kind: probe.kind().to_string(),
        target: probe.target().to_string(),
        healthy,
        latency_ms,
        detail,
    }
}

async fn check(clients: &Clients, probe: &Probe) -> (bool, String) {
    let outcome = match probe {
        Probe::Http(http) => return check_http(&clients.http, http).await,
        Probe::DynamodbTable(table) => check_table(clients, table).await,
        Probe::SqsQueue(queue) => check_queue(clients, queue).await,
        Probe::Stack(stack) => check_stack(clients, stack).await,
        Probe::Alarms(alarms) => check_alarms(clients, alarms).await,
        Probe::Lambda(function) => check_lambda(clients, function).await,
        Probe::Metric(metric) => check_metric(clients, metric).await,
    };
    outcome.unwrap_or_else(|err| {
        let detail = if err.is(FaultKind::NotFound) {
            format!("not found: {err}")
        } else {
            format!("could not check: {err}")
        };
        (false, detail)
    })
}

async fn check_http(http: &reqwest::Client, probe: &HttpProbe) -> (bool, String) {
    let method = probe
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = http.request(method, &probe.url);
    for (name, value) in &probe.headers {
        request = request.header(name, value);
    }
    if let Some(timeout) = probe.timeout_ms {
        request = request.timeout(Duration::from_millis(timeout));
    }
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return (false, format!("timeout: {err}")),
        Err(err) => return (false, format!("unreachable: {}", error_chain(&err))),
    };
    let status = response.status().as_u16();
    let expected = probe.expected_statuses();
    if !expected.contains(&status) {
        return (
            false,
            format!("wrong status {status} (expected {})", join(&expected)),
        );
    }
    let conditions = probe.conditions();
    if !conditions.is_empty() {
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(err) if err.is_timeout() => {
                return (false, format!("timeout while reading the body: {err}"));
            }
            Err(err) => {
                return (
                    false,
                    format!(
                        "unreachable: the body could not be read: {}",
                        error_chain(&err)
                    ),
                );
            }
        };
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(err) => return (false, format!("invalid JSON body: {err}")),
        };
        for condition in &conditions {
            let (ok, found) = condition.check(&body);
            if !ok {
                let found =
                    found.map_or_else(|| "nothing at that path".to_string(), Value::to_string);
                return (
                    false,
                    format!("failed condition {} (got {found})", condition.text),
                );
            }
        }
    }
    let latency = started.elapsed().as_millis();
    if let Some(max) = probe.max_latency_ms
        && latency > u128::from(max)
    {
        return (false, format!("slow: {latency} ms (max {max} ms)"));
    }
    (true, format!("status {status} in {latency} ms"))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn join(statuses: &[u16]) -> String {
    statuses
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

async fn check_table(clients: &Clients, probe: &TableProbe) -> Result<(bool, String), AwsError> {
    let resource = format!("table {}", probe.table);
    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&probe.table)
        .send()
        .await
        .map_err(|err| AwsError::from_sdk("dynamodb:DescribeTable", &resource, &err))?
        .table;
    let status = table
        .as_ref()
        .and_then(|table| table.table_status())
        .map_or("UNKNOWN", |status| status.as_str())
        .to_string();
    if status != "ACTIVE" {
        return Ok((false, format!("status {status}")));
    }
    if !probe.require_pitr {
        return Ok((true, "ACTIVE".into()));
    }
    let backups = clients
        .dynamodb
        .describe_continuous_backups()
        .table_name(&probe.table)
        .send()
        .await
        .map_err(|err| AwsError::from_sdk("dynamodb:DescribeContinuousBackups", &resource, &err))?;
    let pitr = backups
        .continuous_backups_description()
        .and_then(|description| description.point_in_time_recovery_description())
        .and_then(|pitr| pitr.point_in_time_recovery_status())
        .map_or("DISABLED", |status| status.as_str())
        .to_string();
    Ok(if pitr == "ENABLED" {
        (true, "ACTIVE, point-in-time recovery ENABLED".into())
    } else {
        (
            false,
            format!("ACTIVE, but point-in-time recovery is {pitr}"),
        )
    })
}

async fn check_queue(clients: &Clients, probe: &QueueProbe) -> Result<(bool, String), AwsError> {
    let resource = format!("queue {}", probe.queue);
    let url = if probe.queue.starts_with("https://") || probe.queue.starts_with("http://") {
        probe.queue.clone()
    } else {
        clients
            .sqs
            .get_queue_url()
            .queue_name(&probe.queue)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("sqs:GetQueueUrl", &resource, &err))?
            .queue_url
            .unwrap_or_default()
    };
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|err| AwsError::from_sdk("sqs:GetQueueAttributes", &resource, &err))?
        .attributes
        .unwrap_or_default();
    let visible: i64 = attributes
        .get(&QueueAttributeName::ApproximateNumberOfMessages)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if visible > probe.max_visible {
        return Ok((
            false,
            format!("{visible} visible messages (max {})", probe.max_visible),
        ));
    }
    let Some(max_age) = probe.max_age_seconds else {
        return Ok((true, format!("{visible} visible messages")));
    };
    let name = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(&probe.queue)
        .to_string();
    let age = latest_maximum(
        &clients.cloudwatch,
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "QueueName",
        &name,
    )
    .await?;
    Ok(match age {
        Some(age) if age > max_age as f64 => (
            false,
            format!("{visible} visible messages, oldest {age:.0} s (max {max_age} s)"),
        ),
        Some(age) => (
            true,
            format!("{visible} visible messages, oldest {age:.0} s"),
        ),
        None => (
            true,
            format!(
                "{visible} visible messages (no ApproximateAgeOfOldestMessage data in the last 10 minutes)"
            ),
        ),
    })
}

/// The newest Maximum datapoint of a metric in the last 10 minutes.
async fn latest_maximum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimension: &str,
    value: &str,
) -> Result<Option<f64>, AwsError> {
    let end = Utc::now();
    let output = cloudwatch
        .get_metric_data()
        .metric_data_queries(runbook_shared::aws::metric_query(
            "m",
            namespace,
            metric,
            [(dimension, value)],
            60,
            "Maximum",
        ))
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            (end - chrono::Duration::minutes(10)).timestamp(),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            end.timestamp(),
        ))
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudwatch:GetMetricData",
                &format!("{namespace} {metric} {value}"),
                &err,
            )
        })?;
    // GetMetricData returns the newest datapoint first.
    Ok(output
        .metric_data_results()
        .first()
        .and_then(|result| result.values().first().copied()))
}

async fn check_stack(clients: &Clients, probe: &StackProbe) -> Result<(bool, String), AwsError> {
    let resource = format!("stack {}", probe.stack);
    let stacks = clients
        .cloudformation
        .describe_stacks()
        .stack_name(&probe.stack)
        .send()
        .await
        .map_err(|err| AwsError::from_sdk("cloudformation:DescribeStacks", &resource, &err))?;
    let Some(stack) = stacks.stacks().first() else {
        return Ok((false, "not found".into()));
    };
    let status = stack
        .stack_status()
        .map_or("UNKNOWN", StackStatus::as_str)
        .to_string();
    if status.contains("FAILED") || status.contains("ROLLBACK") || status == "DELETE_COMPLETE" {
        let reason = latest_failure(clients, &probe.stack).await?;
        return Ok((
            false,
            format!(
                "{status}{}",
                reason.map_or_else(String::new, |r| format!(": {r}"))
            ),
        ));
    }
    if status.ends_with("_IN_PROGRESS") {
        let since = stack
            .last_updated_time()
            .or(stack.creation_time())
            .map(|t| t.secs())
            .unwrap_or_else(|| Utc::now().timestamp());
        let minutes = (Utc::now().timestamp() - since) / 60;
        return Ok(if minutes > probe.max_in_progress_minutes {
            (
                false,
                format!(
                    "{status} for {minutes} min (max {} min)",
                    probe.max_in_progress_minutes
                ),
            )
        } else {
            (true, format!("{status} for {minutes} min"))
        });
    }
    Ok((status.ends_with("_COMPLETE"), status))
}

/// The newest failed resource event: `<logical id> <status>: <reason>`.
async fn latest_failure(clients: &Clients, stack: &str) -> Result<Option<String>, AwsError> {
    let events = clients
        .cloudformation
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudformation:DescribeStackEvents",
                &format!("stack {stack}"),
                &err,
            )
        })?;
    Ok(events
        .stack_events()
        .iter()
        .find(|event| {
            event
                .resource_status()
                .is_some_and(|status| status.as_str().ends_with("_FAILED"))
        })
        .map(|event| {
            format!(
                "{} {}: {}",
                event.logical_resource_id().unwrap_or("?"),
                event.resource_status().map_or("", |s| s.as_str()),
                event.resource_status_reason().unwrap_or("no reason given")
            )
        }))
}

async fn check_alarms(clients: &Clients, probe: &AlarmsProbe) -> Result<(bool, String), AwsError> {
    let mut firing = Vec::new();
    let mut pages = clients
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(&probe.prefix)
        .state_value(StateValue::Alarm)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            AwsError::from_sdk(
                "cloudwatch:DescribeAlarms",
                &format!("alarms {}*", probe.prefix),
                &err,
            )
        })?;
        // The state is checked here too: not every implementation of the API honours the
        // StateValue filter next to a prefix (moto does not).
        let in_alarm = |state: Option<&StateValue>| state == Some(&StateValue::Alarm);
        firing.extend(
            page.metric_alarms()
                .iter()
                .filter(|alarm| in_alarm(alarm.state_value()))
                .filter_map(|alarm| alarm.alarm_name().map(str::to_string)),
        );
        firing.extend(
            page.composite_alarms()
                .iter()
                .filter(|alarm| in_alarm(alarm.state_value()))
                .filter_map(|alarm| alarm.alarm_name().map(str::to_string)),
        );
    }
    Ok(if firing.is_empty() {
        (
            true,
            format!("no alarm named {}* is in ALARM", probe.prefix),
        )
    } else {
        firing.sort();
        (false, format!("in ALARM: {}", firing.join(", ")))
    })
}

async fn check_lambda(clients: &Clients, probe: &LambdaProbe) -> Result<(bool, String), AwsError> {
    let configuration = clients
        .lambda
        .get_function_configuration()
        .function_name(&probe.function)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "lambda:GetFunctionConfiguration",
                &format!("function {}", probe.function),
                &err,
            )
        })?;
    let state = configuration
        .state()
        .map_or("Active", |state| state.as_str());
    // Functions that were never updated report no LastUpdateStatus.
    let update = configuration
        .last_update_status()
        .map_or("Successful", |status| status.as_str());
    let ok = state == "Active" && update == "Successful";
    let mut detail = format!("State {state}, LastUpdateStatus {update}");
    if let Some(reason) = configuration
        .state_reason()
        .or(configuration.last_update_status_reason())
    {
        detail.push_str(&format!(" ({reason})"));
    }
    Ok((ok, detail))
}

/// Every datapoint of the last `minutes` within the bounds; the detail names the worst one and
/// the bound it is held to.
async fn check_metric(clients: &Clients, probe: &MetricProbe) -> Result<(bool, String), AwsError> {
    // Up to the last whole period: a period still filling has a partial Sum or SampleCount.
    let now = Utc::now().timestamp();
    let end =
        chrono::DateTime::from_timestamp(now - now.rem_euclid(i64::from(probe.period_seconds)), 0)
            .unwrap_or_else(Utc::now);
    let output = clients
        .cloudwatch
        .get_metric_data()
        .metric_data_queries(runbook_shared::aws::metric_query(
            "m",
            &probe.namespace,
            &probe.metric,
            probe.dimensions.clone(),
            probe.period_seconds,
            &probe.stat,
        ))
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            (end - chrono::Duration::minutes(probe.minutes)).timestamp(),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            end.timestamp(),
        ))
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudwatch:GetMetricData",
                &format!("{} {}", probe.namespace, probe.metric),
                &err,
            )
        })?;
    let values: Vec<f64> = output
        .metric_data_results()
        .iter()
        .flat_map(|result| result.values().iter().copied())
        .collect();
    let window = format!("{} over the last {} min", probe.stat, probe.minutes);
    let bounds = match (probe.min, probe.max) {
        (Some(min), Some(max)) => format!("from {min} to {max}"),
        (Some(min), None) => format!("at least {min}"),
        (_, max) => format!("at most {}", max.unwrap_or(f64::INFINITY)),
    };
    if values.is_empty() {
        let healthy = probe.missing_data == MissingData::Healthy;
        return Ok((
            healthy,
            format!(
                "no data: no {window} (missing_data is {})",
                if healthy { "healthy" } else { "unhealthy" }
            ),
        ));
    }
    let highest = values.iter().copied().fold(f64::MIN, f64::max);
    let lowest = values.iter().copied().fold(f64::MAX, f64::min);
    if let Some(max) = probe.max.filter(|max| highest > *max) {
        return Ok((false, format!("{window}: {highest} is above the max {max}")));
    }
    if let Some(min) = probe.min.filter(|min| lowest < *min) {
        return Ok((false, format!("{window}: {lowest} is below the min {min}")));
    }
    let value = if probe.max.is_some() { highest } else { lowest };
    Ok((
        true,
        format!("{window}: {value} ({} datapoints, {bounds})", values.len()),
    ))
}
