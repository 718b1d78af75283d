//! The checks a pending verification names (`settle_by`): an alarm's state, a stack's status,
//! a backup's, a queue's depth, a metric's sum since the change.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::StateValue;
use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::AwsError;
use runbook_shared::model::{SettleBy, VerificationStatus};
use runbook_shared::store::AuditRecord;

use super::SweepClients;

/// What a metric check says when the metric has no datapoint at all since the change (AWS
/// publishes throttle figures only when there is throttling, and none without traffic).
pub(super) const NO_DATAPOINTS: &str = "no datapoints";

/// The state of the check the record names.
pub(super) async fn check(
    clients: &SweepClients<'_>,
    record: &AuditRecord,
    now: DateTime<Utc>,
) -> Result<(VerificationStatus, String), AwsError> {
    match &record.report.verification.settle_by {
        Some(SettleBy::Alarm { name }) => alarm_state(clients.cloudwatch, name).await,
        Some(SettleBy::Stack { name }) => stack_state(clients.cloudformation, name).await,
        Some(SettleBy::Backup { arn }) => backup_state(clients.dynamodb, arn).await,
        Some(SettleBy::QueueDepth {
            not_before: Some(not_before),
            ..
        }) if *not_before > now => Ok((
            VerificationStatus::Pending,
            format!(
                "not before {}: what was sent back needs its queue's visibility timeout × maxReceiveCount to fail back",
                runbook_shared::model::timestamp(*not_before)
            ),
        )),
        Some(SettleBy::QueueDepth {
            name, url, below, ..
        }) => queue_depth(clients.sqs, name, url, *below).await,
        Some(SettleBy::Metric {
            namespace,
            metrics,
            dimensions,
            max_sum,
        }) => {
            metric_sum(
                clients.cloudwatch,
                namespace,
                metrics,
                dimensions,
                *max_sum,
                record.started_at,
                now,
            )
            .await
        }
        None => Ok((
            VerificationStatus::Failed,
            "the report names no check to settle it by, so it cannot be verified".to_string(),
        )),
    }
}

/// Verified when the queue holds fewer messages than `below` (a purge: what it removed; a
/// redrive: what it left behind, plus one); as many or more means failures keep arriving (the
/// cause is still there).
async fn queue_depth(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    url: &str,
    below: i64,
) -> Result<(VerificationStatus, String), AwsError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("sqs:GetQueueAttributes", &format!("queue {name}"), &err)
        })?;
    let attributes = output.attributes.unwrap_or_default();
    let depth: i64 = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .filter_map(|key| attributes.get(key)?.parse::<i64>().ok())
    .sum();
    Ok(if depth < below {
        (
            VerificationStatus::Verified,
            format!("queue {name} holds {depth} messages, fewer than {below}"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("queue {name} holds {depth} messages, {below} or more: failures keep arriving"),
        )
    })
}

/// A backup is verified once AVAILABLE; still CREATING, it stays pending; in any other state
/// (or gone: the caller's NotFound) it failed.
async fn backup_state(
    dynamodb: &aws_sdk_dynamodb::Client,
    arn: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let output = dynamodb
        .describe_backup()
        .backup_arn(arn)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("dynamodb:DescribeBackup", &format!("backup {arn}"), &err)
        })?;
    let status = output
        .backup_description()
        .and_then(|description| description.backup_details())
        .map_or("UNKNOWN", |details| details.backup_status().as_str());
    let verdict = match status {
        "AVAILABLE" => VerificationStatus::Verified,
        "CREATING" => VerificationStatus::Pending,
        _ => VerificationStatus::Failed,
    };
    Ok((verdict, format!("backup {arn} is {status}")))
}

async fn stack_state(
    cloudformation: &aws_sdk_cloudformation::Client,
    name: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let stacks = cloudformation
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudformation:DescribeStacks",
                &format!("stack {name}"),
                &err,
            )
        })?;
    let status = stacks
        .stacks()
        .first()
        .and_then(|stack| stack.stack_status())
        .map_or("UNKNOWN", |status| status.as_str());
    Ok(if status.ends_with("_IN_PROGRESS") {
        (
            VerificationStatus::Pending,
            format!("stack {name} is still {status}"),
        )
    } else if status.ends_with("_COMPLETE")
        && status != "DELETE_COMPLETE"
        && status != "ROLLBACK_COMPLETE"
    {
        (
            VerificationStatus::Verified,
            format!("stack {name} is {status}"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("stack {name} is {status}"),
        )
    })
}

async fn alarm_state(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    name: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let alarms = cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("cloudwatch:DescribeAlarms", &format!("alarm {name}"), &err)
        })?;
    let Some(alarm) = alarms.metric_alarms().first() else {
        return Ok((
            VerificationStatus::Failed,
            format!("alarm {name} no longer exists, so the remediation cannot be verified"),
        ));
    };
    Ok(match alarm.state_value() {
        Some(StateValue::Ok) => (VerificationStatus::Verified, format!("alarm {name} is OK")),
        Some(StateValue::Alarm) => (
            VerificationStatus::Failed,
            format!("alarm {name} is still in ALARM after the check window"),
        ),
        _ => (
            VerificationStatus::Pending,
            format!("alarm {name} has insufficient data"),
        ),
    })
}

async fn metric_sum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metrics: &[String],
    dimensions: &BTreeMap<String, String>,
    max_sum: f64,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(VerificationStatus, String), AwsError> {
    // The first minute after the change may still show what it fixed.
    let start = (since + Duration::minutes(1)).min(now - Duration::minutes(1));
    let mut request = cloudwatch
        .get_metric_data()
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            start.timestamp(),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            now.timestamp(),
        ));
    for (index, metric) in metrics.iter().enumerate() {
        request = request.metric_data_queries(runbook_shared::aws::metric_query(
            format!("m{index}"),
            namespace,
            metric,
            dimensions.clone(),
            60,
            "Sum",
        ));
    }
    let output = request.send().await.map_err(|err| {
        AwsError::from_sdk(
            "cloudwatch:GetMetricData",
            &format!("{namespace} {}", metrics.join(", ")),
            &err,
        )
    })?;
    let values: Vec<f64> = output
        .metric_data_results()
        .iter()
        .flat_map(|result| result.values().iter().copied())
        .collect();
    let what = format!("{} over the window", metrics.join(" + "));
    // No datapoint is no observation, never a success: it stays pending (see
    // `settle_pending` for the give-up time).
    if values.is_empty() {
        return Ok((
            VerificationStatus::Pending,
            format!(
                "{what}: {NO_DATAPOINTS} since {}, so the verification cannot be read yet",
                runbook_shared::model::timestamp(start)
            ),
        ));
    }
    let sum: f64 = values.iter().sum();
    Ok(if sum <= max_sum {
        (
            VerificationStatus::Verified,
            format!("{what}: {sum} (max {max_sum})"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("{what}: {sum} (max {max_sum})"),
        )
    })
}
