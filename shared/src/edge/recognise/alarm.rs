//! An alarm transition from EventBridge (`CloudWatch Alarm State Change`) or from the alarm's
//! Lambda action, and the alarms a composite's rule or reason names.

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmStateReasonDataMetric,
    CloudWatchAlarmStateValue, CloudWatchMetricDefinition,
};
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use serde_json::Value;

use super::{ALARM_STATE_CHANGE, parse};
use crate::model::{
    AlarmState, AlarmTrigger, Composite, MetricRef, Rejection, Trigger, TriggerKind,
};

/// The state an event names (INSUFFICIENT_DATA, and any state a newer API might add: neither
/// acts).
fn state_of(value: &CloudWatchAlarmStateValue) -> AlarmState {
    match value {
        CloudWatchAlarmStateValue::Alarm => AlarmState::Alarm,
        CloudWatchAlarmStateValue::Ok => AlarmState::Ok,
        _ => AlarmState::InsufficientData,
    }
}

pub(super) fn alarm_state_change(event: &Value) -> Result<Trigger, Rejection> {
    let parsed: CloudWatchEvent<CloudWatchAlarmData<Value, Value>> =
        parse(event, ALARM_STATE_CHANGE)?;
    let event_id = parsed
        .id
        .ok_or_else(|| Rejection("alarm state change event without an id".into()))?;
    // The alarm is the event's `detail`; some senders (an example of the aws_lambda_events
    // crate among them) put it in `alarmData`, as the alarm action does.
    let detail = match parsed.detail {
        Some(detail) => detail,
        None => event
            .get("alarmData")
            .map(|data| serde_json::from_value(data.clone()))
            .transpose()
            .map_err(|err| Rejection(format!("malformed {ALARM_STATE_CHANGE} event: {err}")))?
            .ok_or_else(|| Rejection("alarm state change event without a detail".into()))?,
    };
    alarm_trigger(
        TriggerKind::Alarm,
        event_id,
        parsed.resources.into_iter().next(),
        detail,
    )
}

pub(super) fn alarm_action(event: &Value) -> Result<Trigger, Rejection> {
    let parsed: CloudWatchAlarm<Value, Value> = parse(event, "CloudWatch alarm action")?;
    let timestamp = parsed
        .alarm_data
        .state
        .as_ref()
        .map(|state| state.timestamp.to_rfc3339());
    // The alarm action payload has no event id: an alarm transition is identified by the alarm
    // and the time of its state change, which is what a re-delivery repeats.
    let event_id = format!(
        "{}@{}",
        parsed
            .alarm_arn
            .as_deref()
            .unwrap_or(&parsed.alarm_data.alarm_name),
        timestamp.unwrap_or_else(|| parsed.time.to_rfc3339())
    );
    alarm_trigger(
        TriggerKind::AlarmAction,
        event_id,
        parsed.alarm_arn,
        parsed.alarm_data,
    )
}

fn alarm_trigger(
    kind: TriggerKind,
    event_id: String,
    alarm_arn: Option<String>,
    data: CloudWatchAlarmData<Value, Value>,
) -> Result<Trigger, Rejection> {
    let state = data
        .state
        .ok_or_else(|| Rejection(format!("alarm {} event has no state", data.alarm_name)))?;
    let metrics = data
        .configuration
        .get("metrics")
        .and_then(Value::as_array)
        .map(|metrics| {
            metrics
                .iter()
                .filter_map(|metric| {
                    serde_json::from_value::<CloudWatchMetricDefinition>(metric.clone()).ok()
                })
                .map(|metric| MetricRef {
                    namespace: metric.metric_stat.metric.namespace.unwrap_or_default(),
                    name: metric.metric_stat.metric.name,
                    dimensions: metric.metric_stat.metric.dimensions.into_iter().collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let window = state
        .reason_data
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<CloudWatchAlarmStateReasonDataMetric>(text).ok())
        .and_then(|data| Some((data.start_date?, data.query_date?)));
    let composite = data
        .configuration
        .get("alarmRule")
        .and_then(Value::as_str)
        .map(|rule| Composite {
            rule: rule.to_string(),
            triggering: triggering_alarms(rule, state.reason_data.as_ref().and_then(Value::as_str)),
            suppressed_by: state.actions_suppressed_by.as_ref().map(|by| {
                match &state.actions_suppressed_reason {
                    Some(reason) => format!("{by}: {reason}"),
                    None => by.clone(),
                }
            }),
        });
    Ok(Trigger::Alarm(AlarmTrigger {
        kind,
        event_id,
        alarm_name: data.alarm_name,
        alarm_arn,
        state: state_of(&state.value),
        previous_state: data
            .previous_state
            .as_ref()
            .map(|previous| state_of(&previous.value)),
        reason: state.reason,
        changed_at: state.timestamp,
        metrics,
        window,
        composite,
        topic: None,
    }))
}

/// The names of the alarms that put a composite in its state, in the order it gives them: those
/// its reason data (`triggeringAlarms`) names, or, when it names none, those its rule puts in
/// ALARM.
pub fn triggering_alarms(rule: &str, reason_data: Option<&str>) -> Vec<String> {
    let data: Value = reason_data
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let named: Vec<String> = data
        .get("triggeringAlarms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|alarm| alarm.get("arn")?.as_str())
        .map(alarm_name_of)
        .collect();
    if named.is_empty() {
        alarms_of_rule(rule)
    } else {
        named
    }
}

/// The alarms a composite's rule puts in ALARM: `ALARM(name)`, `ALARM("name")` (a quoted
/// name may hold parentheses) or `ALARM(arn)`, as names.
fn alarms_of_rule(rule: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = rule;
    while let Some(start) = rest.find("ALARM(") {
        rest = rest[start + "ALARM(".len()..].trim_start();
        let (reference, after) = match rest.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some(split) => split,
                None => break,
            },
            None => match rest.split_once(')') {
                Some(split) => split,
                None => break,
            },
        };
        let name = alarm_name_of(reference.trim());
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        rest = after;
    }
    names
}

/// `arn:aws:cloudwatch:us-east-1:123456789012:alarm:name` → `name`; a name stays as it is.
fn alarm_name_of(reference: &str) -> String {
    match reference.split_once(":alarm:") {
        Some((arn, name)) if arn.starts_with("arn:") => name.to_string(),
        _ => reference.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_rules_name_their_alarms() {
        assert_eq!(
            alarms_of_rule(r#"ALARM(a) OR (ALARM("b c") AND NOT OK(d)) OR ALARM(a)"#),
            vec!["a", "b c"]
        );
        assert!(alarms_of_rule("TRUE").is_empty());
        // CDK writes ARNs; a quoted name may hold parentheses.
        assert_eq!(
            alarms_of_rule(
                r#"ALARM("arn:aws:cloudwatch:us-east-1:123456789012:alarm:orders (read)") OR ALARM(arn:aws:cloudwatch:us-east-1:123456789012:alarm:cpu)"#
            ),
            vec!["orders (read)", "cpu"]
        );
        // The transition's own list comes first, in its order; the rule only when it has none.
        let reason = r#"{"triggeringAlarms": [{"arn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:z"}, {"arn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a"}]}"#;
        assert_eq!(
            triggering_alarms("ALARM(a) OR ALARM(z)", Some(reason)),
            vec!["z", "a"]
        );
        assert_eq!(triggering_alarms("ALARM(a)", Some("{}")), vec!["a"]);
    }
}
