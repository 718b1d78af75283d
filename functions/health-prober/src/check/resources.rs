//! The probes of AWS resources: tables, queues, stacks, alarms, functions and metrics.

use aws_sdk_cloudformation::types::StackStatus;
use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use runbook_shared::aws::AwsError;

use super::Clients;
use crate::probes::{
    AlarmsProbe, LambdaProbe, MetricProbe, MissingData, QueueProbe, StackProbe, TableProbe,
};

pub(super) async fn check_table(
    clients: &Clients,
    probe: &TableProbe,
) -> Result<(bool, String), AwsError> {
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

pub(super) async fn check_queue(
    clients: &Clients,
    probe: &QueueProbe,
) -> Result<(bool, String), AwsError> {
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

pub(super) async fn check_stack(
    clients: &Clients,
    probe: &StackProbe,
) -> Result<(bool, String), AwsError> {
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

pub(super) async fn check_alarms(
    clients: &Clients,
    probe: &AlarmsProbe,
) -> Result<(bool, String), AwsError> {
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

pub(super) async fn check_lambda(
    clients: &Clients,
    probe: &LambdaProbe,
) -> Result<(bool, String), AwsError> {
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
pub(super) async fn check_metric(
    clients: &Clients,
    probe: &MetricProbe,
) -> Result<(bool, String), AwsError> {
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
