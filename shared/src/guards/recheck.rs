//! The re-check right before the first write of an alarm-triggered run: is the alarm still
//! firing? Minutes can pass between the alarm's event and the write (a lease wait, a slow
//! diagnosis, a delivery retried by EventBridge); a run whose alarm has recovered meanwhile does
//! nothing. An alarm that cannot be read stops the write: the re-check fails closed.

use aws_sdk_cloudwatch::types::{AlarmType, StateValue};

use crate::aws::AwsError;

/// What the alarm says now.
#[derive(Debug, PartialEq)]
pub enum AlarmNow {
    Firing,
    /// Not in ALARM: whether it is OK (rather than INSUFFICIENT_DATA), and its state, since
    /// when, and why, in words.
    NotFiring {
        ok: bool,
        said: String,
    },
    /// No alarm by that name (deleted since its event, or an event sent by hand).
    Gone,
}

/// Reads the alarm (metric or composite) by name.
pub async fn alarm_now(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    name: &str,
) -> Result<AlarmNow, AwsError> {
    let alarms = cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .alarm_types(AlarmType::MetricAlarm)
        .alarm_types(AlarmType::CompositeAlarm)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("cloudwatch:DescribeAlarms", &format!("alarm {name}"), &err)
        })?;
    let state = alarms
        .metric_alarms()
        .first()
        .map(|alarm| {
            (
                alarm.state_value(),
                alarm.state_updated_timestamp(),
                alarm.state_reason(),
            )
        })
        .or_else(|| {
            alarms.composite_alarms().first().map(|alarm| {
                (
                    alarm.state_value(),
                    alarm.state_updated_timestamp(),
                    alarm.state_reason(),
                )
            })
        });
    let Some((state, since, reason)) = state else {
        return Ok(AlarmNow::Gone);
    };
    if state == Some(&StateValue::Alarm) {
        return Ok(AlarmNow::Firing);
    }
    let since = since
        .and_then(|at| chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos()))
        .map(|at| format!(" since {}", crate::model::timestamp(at)))
        .unwrap_or_default();
    Ok(AlarmNow::NotFiring {
        ok: state == Some(&StateValue::Ok),
        said: format!(
            "{}{since} ({})",
            state.map_or("in no state", StateValue::as_str),
            reason.unwrap_or("no reason given")
        ),
    })
}
