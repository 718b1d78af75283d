//! An alarm notification delivered by SNS (`Records[].Sns`), in CloudWatch's notification
//! format: the same alarm trigger, confirmed against CloudWatch before it is acted on
//! (`edge::alarms::confirmed`).

use aws_lambda_events::event::sns::SnsEvent;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::alarm::triggering_alarms;
use super::parse;
use crate::model::{
    AlarmState, AlarmTrigger, Composite, MetricRef, Rejection, Trigger, TriggerKind,
};

/// An alarm notification delivered by SNS: the alarm in CloudWatch's notification format, one
/// record per delivery. Lenient where CloudWatch is (`AlarmDescription` is null when unset, an
/// anomaly band has no `Threshold`): only what the runbooks read is required.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmNotification {
    alarm_name: String,
    #[serde(default)]
    alarm_arn: Option<String>,
    new_state_value: String,
    #[serde(default)]
    old_state_value: Option<String>,
    #[serde(default)]
    new_state_reason: Option<String>,
    state_change_time: String,
    #[serde(default)]
    trigger: Option<NotificationTrigger>,
    #[serde(default)]
    alarm_rule: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotificationTrigger {
    #[serde(default)]
    metric_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    dimensions: Vec<NotificationDimension>,
    /// A metric-math alarm's queries.
    #[serde(default)]
    metrics: Vec<NotificationQuery>,
}

#[derive(serde::Deserialize)]
struct NotificationDimension {
    name: String,
    value: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotificationQuery {
    #[serde(default)]
    metric_stat: Option<NotificationStat>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotificationStat {
    metric: NotificationMetric,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotificationMetric {
    #[serde(default)]
    metric_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    dimensions: Vec<NotificationDimension>,
}

fn metric_ref(
    namespace: Option<String>,
    name: Option<String>,
    dimensions: Vec<NotificationDimension>,
) -> Option<MetricRef> {
    Some(MetricRef {
        namespace: namespace?,
        name: name?,
        dimensions: dimensions
            .into_iter()
            .map(|dimension| (dimension.name, dimension.value))
            .collect(),
    })
}

fn state_named(value: &str) -> AlarmState {
    match value {
        "ALARM" => AlarmState::Alarm,
        "OK" => AlarmState::Ok,
        _ => AlarmState::InsufficientData,
    }
}

/// An event of another AWS service delivered in `Records` (SQS, S3, SNS, DynamoDB streams…):
/// only an SNS alarm notification is taken.
// Over 80 lines: one SNS delivery taken apart field by field, each refusal next to the field it is
// about.
pub(super) fn records(event: &Value) -> Result<Trigger, Rejection> {
    let first = event
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first());
    let source = first
        .and_then(|record| {
            record
                .get("EventSource")
                .or_else(|| record.get("eventSource"))
        })
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    if source != "aws:sns" {
        return Err(Rejection(format!(
            "an {source} event (Records[].eventSource), which no runbook function takes: nothing was done"
        )));
    }
    let parsed: SnsEvent = parse(event, "SNS")?;
    let [record] = parsed.records.as_slice() else {
        return Err(Rejection(format!(
            "an SNS delivery to a function carries one record, this one {}: nothing was done",
            parsed.records.len()
        )));
    };
    let sns = &record.sns;
    let notification: AlarmNotification = serde_json::from_str(&sns.message).map_err(|_| {
        Rejection(format!(
            "SNS message {} from topic {} is not a CloudWatch alarm notification (subject {:?}): nothing was done",
            sns.message_id,
            sns.topic_arn,
            sns.subject.as_deref().unwrap_or_default()
        ))
    })?;
    // CloudWatch writes `2026-11-23T03:12:00.000+0000`; RFC 3339 (`…Z`) is read too.
    let changed_at = DateTime::parse_from_str(&notification.state_change_time, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(&notification.state_change_time))
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            Rejection(format!(
                "alarm notification {} (alarm {}) has an unreadable StateChangeTime {:?}: nothing was done",
                sns.message_id, notification.alarm_name, notification.state_change_time
            ))
        })?;
    let metrics = match notification.trigger {
        None => Vec::new(),
        Some(trigger) if trigger.metrics.is_empty() => {
            metric_ref(trigger.namespace, trigger.metric_name, trigger.dimensions)
                .into_iter()
                .collect()
        }
        Some(trigger) => trigger
            .metrics
            .into_iter()
            .filter_map(|query| {
                let metric = query.metric_stat?.metric;
                metric_ref(metric.namespace, metric.metric_name, metric.dimensions)
            })
            .collect(),
    };
    // What CloudWatch shows replaces the rest (`alarms::confirmed`).
    let composite = notification.alarm_rule.map(|rule| Composite {
        triggering: triggering_alarms(&rule, None),
        rule,
        suppressed_by: None,
    });
    // The message id is the delivery's (a retried delivery repeats it); the transition makes
    // it readable, and tells an ALARM from the OK that follows.
    Ok(Trigger::Alarm(AlarmTrigger {
        kind: TriggerKind::AlarmSns,
        event_id: format!(
            "{}:{}@{}",
            sns.message_id, notification.new_state_value, notification.state_change_time
        ),
        alarm_name: notification.alarm_name,
        alarm_arn: notification.alarm_arn,
        state: state_named(&notification.new_state_value),
        previous_state: notification.old_state_value.as_deref().map(state_named),
        reason: notification.new_state_reason.unwrap_or_default(),
        changed_at,
        metrics,
        window: None,
        composite,
        topic: Some(sns.topic_arn.clone()),
    }))
}
