//! Recognising what invoked a function, by the shape of its input.
//!
//! Accepted shapes: the EventBridge `CloudWatch Alarm State Change` event, the CloudWatch Lambda
//! alarm action payload, the EventBridge `Scheduled Event`, and a manual payload (a JSON object
//! without `source`, parsed by each function with unknown fields rejected). Anything else is
//! rejected with a one-line reason, before any AWS call.

use std::collections::BTreeMap;

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmStateReasonDataMetric,
    CloudWatchAlarmStateValue, CloudWatchMetricDefinition,
};
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::report::{TriggerInfo, TriggerKind};

pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmState {
    Alarm,
    Ok,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Alarm => "ALARM",
            AlarmState::Ok => "OK",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl From<&CloudWatchAlarmStateValue> for AlarmState {
    fn from(value: &CloudWatchAlarmStateValue) -> Self {
        match value {
            CloudWatchAlarmStateValue::Alarm => AlarmState::Alarm,
            CloudWatchAlarmStateValue::Ok => AlarmState::Ok,
            // INSUFFICIENT_DATA, and any state a newer API might add: neither acts.
            _ => AlarmState::InsufficientData,
        }
    }
}

/// One metric an alarm watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricRef {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
}

impl MetricRef {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions.get(name).map(String::as_str)
    }
}

/// An alarm transition, from either delivery path.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmTrigger {
    pub kind: TriggerKind,
    pub event_id: String,
    pub alarm_name: String,
    pub alarm_arn: Option<String>,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
    /// The metrics the alarm watches (metric-math expressions are left out).
    pub metrics: Vec<MetricRef>,
    /// The span of time the alarm evaluated (its reasonData's startDate to queryDate), when
    /// the event says: the window the evidence for an action is read over.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleTrigger {
    pub event_id: String,
    /// The schedule rule's ARN.
    pub rule: Option<String>,
    pub time: DateTime<Utc>,
}

/// Where an event comes from: the account and region it names, when it names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub account: Option<String>,
    pub region: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    Alarm(AlarmTrigger),
    Schedule(ScheduleTrigger),
    /// A `CloudFormation Stack Status Change` event: its `detail` and the event id.
    StackEvent {
        event_id: String,
        detail: Value,
    },
    /// A manual payload, to be parsed by the function (unknown fields are its errors to report).
    Manual(Map<String, Value>),
    /// A kill-switch payload (`{"control": …}`), which every function serves the same way.
    Control(Map<String, Value>),
    /// A person's decision on a plan (`{"approve": …}` or `{"deny": …}`).
    Approval(Map<String, Value>),
    /// A `Runbook Handoff` event's detail.
    Handoff(crate::handoff::Handoff),
}

impl Trigger {
    /// The trigger section of the report. Manual payloads carry the invocation's request id,
    /// which Lambda keeps across the retries of an asynchronous invocation.
    pub fn info(&self, request_id: &str) -> TriggerInfo {
        match self {
            Trigger::Alarm(alarm) => TriggerInfo {
                kind: alarm.kind,
                name: Some(alarm.alarm_name.clone()),
                event_id: Some(alarm.event_id.clone()),
            },
            Trigger::Schedule(schedule) => TriggerInfo {
                kind: TriggerKind::Schedule,
                name: schedule.rule.clone(),
                event_id: Some(schedule.event_id.clone()),
            },
            Trigger::StackEvent { event_id, detail } => TriggerInfo {
                kind: TriggerKind::StackEvent,
                name: detail
                    .get("stack-id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                event_id: Some(event_id.clone()),
            },
            Trigger::Handoff(handoff) => TriggerInfo {
                kind: TriggerKind::Handoff,
                name: handoff.alarm.clone(),
                event_id: Some(handoff.handoff_id.clone()),
            },
            Trigger::Manual(_) | Trigger::Control(_) | Trigger::Approval(_) => TriggerInfo {
                kind: TriggerKind::Manual,
                name: None,
                event_id: Some(request_id.to_string()),
            },
        }
    }
}

/// Why an input was not accepted, in one line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Recognises the trigger from the input's shape, and refuses an event from another account or
/// region than `home`'s: the resources it names by name are not the ones this function would
/// find under those names. A `Runbook Handoff` is sent by the deployment itself, from `hub`'s
/// account (its bus takes an organization's events too), about the place it names; a schedule
/// is the hub's, and runs in every place it acts in.
pub fn recognise_from(
    event: &Value,
    home: &crate::resource::Home,
    hub: &crate::resource::Home,
) -> Result<Trigger, Rejection> {
    let trigger = recognise(event)?;
    let mut origin = origin_of(event);
    match &trigger {
        Trigger::Handoff(handoff) => {
            if let Some(sender) = &origin.account {
                hub.require_home(&hub.partition, &hub.region, sender, "the handoff's sender")?;
            }
            origin = Origin {
                account: handoff.account.clone(),
                region: handoff.region.clone(),
            };
        }
        Trigger::Schedule(_) => {
            if let Some(sender) = &origin.account {
                hub.require_home(&hub.partition, &hub.region, sender, "the schedule")?;
            }
            origin = Origin::default();
        }
        _ => {}
    }
    if let Some(account) = &origin.account {
        home.require_home(&home.partition, &home.region, account, "the event")?;
    }
    if let Some(region) = &origin.region {
        home.require_home(&home.partition, region, &home.account, "the event")?;
    }
    Ok(trigger)
}

/// The `account` and `region` an EventBridge event (`source`) or an alarm action (`accountId`)
/// names; a person's payload names none (a control's `account` names the switch to set).
pub fn origin_of(event: &Value) -> Origin {
    if event.get("source").is_none() && event.get("accountId").is_none() {
        return Origin::default();
    }
    let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_string);
    Origin {
        account: text("account").or_else(|| text("accountId")),
        region: text("region"),
    }
}

/// A person's decision on a plan (`{"approve": …}` or `{"deny": …}`: no `source`, no
/// `control`), told from the input's keys alone: every invocation asks, before recognising it.
pub fn approval_payload(event: &Value) -> Option<&Map<String, Value>> {
    let object = event.as_object()?;
    let decision = !object.contains_key("source")
        && !object.contains_key("control")
        && (object.contains_key("approve") || object.contains_key("deny"));
    decision.then_some(object)
}

/// Recognises the trigger from the input's shape.
pub fn recognise(event: &Value) -> Result<Trigger, Rejection> {
    let Some(object) = event.as_object() else {
        return Err(Rejection(format!(
            "expected a JSON object (an EventBridge event, a CloudWatch alarm action or a manual payload), got {}",
            json_kind(event)
        )));
    };
    let Some(source) = object.get("source") else {
        if object.contains_key("control") {
            return Ok(Trigger::Control(object.clone()));
        }
        if let Some(decision) = approval_payload(event) {
            return Ok(Trigger::Approval(decision.clone()));
        }
        return Ok(Trigger::Manual(object.clone()));
    };
    let detail_type = object.get("detail-type").and_then(Value::as_str);
    match (source.as_str(), detail_type) {
        (Some("aws.cloudwatch"), Some(ALARM_STATE_CHANGE)) => alarm_state_change(event),
        (Some("aws.cloudwatch"), _) if object.contains_key("alarmData") => alarm_action(event),
        (Some("aws.events"), Some(SCHEDULED_EVENT)) => {
            let parsed: CloudWatchEvent<Value> = parse(event, "Scheduled Event")?;
            Ok(Trigger::Schedule(ScheduleTrigger {
                event_id: parsed
                    .id
                    .ok_or_else(|| Rejection("Scheduled Event without an id".into()))?,
                rule: parsed.resources.into_iter().next(),
                time: parsed.time,
            }))
        }
        (Some("aws.cloudformation"), Some("CloudFormation Stack Status Change")) => {
            let parsed: CloudWatchEvent<Value> =
                parse(event, "CloudFormation Stack Status Change")?;
            Ok(Trigger::StackEvent {
                event_id: parsed
                    .id
                    .ok_or_else(|| Rejection("stack status event without an id".into()))?,
                detail: parsed.detail.unwrap_or(Value::Null),
            })
        }
        (Some(crate::report_events::SOURCE), Some(crate::handoff::DETAIL_TYPE)) => {
            let parsed: CloudWatchEvent<crate::handoff::Handoff> =
                parse(event, crate::handoff::DETAIL_TYPE)?;
            parsed
                .detail
                .map(Trigger::Handoff)
                .ok_or_else(|| Rejection("Runbook Handoff event without a detail".into()))
        }
        (source, detail_type) => Err(Rejection(format!(
            "unrecognised event: source {} with detail-type {}; expected a CloudWatch alarm state change, a CloudWatch alarm action, a Scheduled Event, a Runbook Handoff or a manual payload",
            source.map_or_else(|| object["source"].to_string(), |s| format!("{s:?}")),
            detail_type.map_or("(none)".to_string(), |d| format!("{d:?}")),
        ))),
    }
}

fn alarm_state_change(event: &Value) -> Result<Trigger, Rejection> {
    let parsed: CloudWatchEvent<CloudWatchAlarmData<Value, Value>> =
        parse(event, ALARM_STATE_CHANGE)?;
    let event_id = parsed
        .id
        .ok_or_else(|| Rejection("alarm state change event without an id".into()))?;
    let detail = parsed
        .detail
        .ok_or_else(|| Rejection("alarm state change event without a detail".into()))?;
    alarm_trigger(
        TriggerKind::Alarm,
        event_id,
        parsed.resources.into_iter().next(),
        detail,
    )
}

fn alarm_action(event: &Value) -> Result<Trigger, Rejection> {
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
    Ok(Trigger::Alarm(AlarmTrigger {
        kind,
        event_id,
        alarm_name: data.alarm_name,
        alarm_arn,
        state: AlarmState::from(&state.value),
        previous_state: data
            .previous_state
            .as_ref()
            .map(|previous| AlarmState::from(&previous.value)),
        reason: state.reason,
        changed_at: state.timestamp,
        metrics,
        window,
    }))
}

fn parse<T: DeserializeOwned>(event: &Value, what: &str) -> Result<T, Rejection> {
    serde_json::from_value(event.clone())
        .map_err(|err| Rejection(format!("malformed {what} event: {err}")))
}

/// Parses a manual payload into the function's request type, whose `deny_unknown_fields`
/// error names the allowed fields.
pub fn parse_manual<T: DeserializeOwned>(payload: &Map<String, Value>) -> Result<T, Rejection> {
    serde_json::from_value(Value::Object(payload.clone()))
        .map_err(|err| Rejection(format!("invalid manual payload: {err}")))
}

/// Parses the manual payload of one runbook, its `runbook` key taken out: a field it does not
/// use, or one it needs and lacks, is named with the runbook.
pub fn parse_runbook_request<T: DeserializeOwned>(
    payload: &Map<String, Value>,
    runbook: &str,
) -> Result<T, Rejection> {
    let mut fields = payload.clone();
    fields.remove("runbook");
    serde_json::from_value(Value::Object(fields)).map_err(|err| {
        let text = err.to_string();
        let field = |prefix: &str| text.strip_prefix(prefix)?.split('`').next();
        Rejection(if let Some(field) = field("unknown field `") {
            format!("\"{field}\" is not used by \"runbook\": \"{runbook}\" ({text})")
        } else if let Some(field) = field("missing field `") {
            format!("\"{field}\" is required with \"runbook\": \"{runbook}\"")
        } else {
            format!("invalid manual payload for \"runbook\": \"{runbook}\": {text}")
        })
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_change(state: &str) -> Value {
        json!({
            "version": "0", "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
            "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "account": "123456789012", "time": "2026-11-23T08:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:orders-read"],
            "detail": {
                "alarmName": "orders-read",
                "state": {"value": state, "reason": "Threshold Crossed", "timestamp": "2026-11-23T08:00:00.000+0000"},
                "previousState": {"value": "OK", "reason": "", "timestamp": "2026-11-23T07:00:00.000+0000"},
                "configuration": {"metrics": [
                    {"id": "m1", "returnData": true, "metricStat": {"period": 60, "stat": "Sum",
                        "metric": {"namespace": "AWS/DynamoDB", "name": "ReadThrottleEvents",
                                   "dimensions": {"TableName": "orders"}}}},
                    {"id": "e1", "expression": "m1 * 2", "returnData": false}
                ]}
            }
        })
    }

    #[test]
    fn recognises_alarm_state_change_and_skips_expressions() {
        let Trigger::Alarm(alarm) = recognise(&state_change("ALARM")).unwrap() else {
            panic!()
        };
        assert_eq!(alarm.kind, TriggerKind::Alarm);
        assert_eq!(alarm.state, AlarmState::Alarm);
        assert_eq!(alarm.previous_state, Some(AlarmState::Ok));
        assert_eq!(alarm.metrics.len(), 1);
        assert_eq!(alarm.metrics[0].dimension("TableName"), Some("orders"));
        assert_eq!(alarm.event_id, "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92");
        assert_eq!(alarm.window, None);
        let mut with_reason = state_change("ALARM");
        with_reason["detail"]["state"]["reasonData"] = json!(
            "{\"version\":\"1.0\",\"queryDate\":\"2026-11-23T08:00:00.000+0000\",\"startDate\":\"2026-11-23T07:55:00.000+0000\",\"statistic\":\"Maximum\",\"period\":300,\"recentDatapoints\":[2900.0],\"threshold\":2500.0}"
        );
        let Trigger::Alarm(alarm) = recognise(&with_reason).unwrap() else {
            panic!()
        };
        let (start, end) = alarm.window.expect("window");
        assert_eq!((end - start).num_seconds(), 300);
    }

    #[test]
    fn recognises_alarm_action_with_a_stable_event_id() {
        let event = json!({
            "source": "aws.cloudwatch",
            "alarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:orders-read",
            "accountId": "123456789012", "time": "2026-11-23T08:00:01.000+0000", "region": "us-east-1",
            "alarmData": {
                "alarmName": "orders-read",
                "state": {"value": "ALARM", "reason": "r", "timestamp": "2026-11-23T08:00:00.000+0000"},
                "configuration": {"metrics": []}
            }
        });
        let Trigger::Alarm(alarm) = recognise(&event).unwrap() else {
            panic!()
        };
        assert_eq!(alarm.kind, TriggerKind::AlarmAction);
        assert!(alarm.event_id.starts_with(
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:orders-read@2026-11-23T08:00:00"
        ));
    }

    #[test]
    fn events_from_another_account_or_region_are_refused() {
        let home = crate::resource::Home::from_env(&crate::config::Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert!(recognise_from(&state_change("ALARM"), &home, &home).is_ok());
        let mut elsewhere = state_change("ALARM");
        elsewhere["region"] = json!("eu-west-1");
        let err = recognise_from(&elsewhere, &home, &home).unwrap_err();
        assert!(
            err.0.contains("eu-west-1") && err.0.contains("us-east-1"),
            "{err}"
        );
        let mut other = state_change("ALARM");
        other["account"] = json!("999999999999");
        assert!(
            recognise_from(&other, &home, &home)
                .unwrap_err()
                .0
                .contains("999999999999")
        );
        assert!(recognise_from(&json!({"table": "t"}), &home, &home).is_ok());
    }

    #[test]
    fn a_handoff_comes_from_the_hub_about_the_place_it_names() {
        let env = |region, account| {
            crate::resource::Home::from_env(&crate::config::Env::from_pairs(&[
                ("AWS_REGION", region),
                ("ACCOUNT_ID", account),
            ]))
            .unwrap()
        };
        let hub = env("us-east-1", "123456789012");
        let spoke = env("eu-west-1", "111111111111");
        let handoff = |sender: &str, account: Option<&str>| {
            json!({
                "version": "0", "id": "h1", "detail-type": "Runbook Handoff",
                "source": crate::report_events::SOURCE, "account": sender, "region": "us-east-1",
                "time": "2026-11-30T00:00:00Z", "resources": [],
                "detail": {
                    "handoff_id": "h1", "to": "limit-scaler", "runbook": "dynamodb-capacity",
                    "target": {"table": {"table": "orders", "read": true, "write": false}},
                    "alarm": "orders-read", "from": "alarm-responder/api-errors on api",
                    "reason": "throttled", "account": account, "region": "eu-west-1",
                }
            })
        };
        assert!(
            recognise_from(&handoff("123456789012", Some("111111111111")), &spoke, &hub).is_ok()
        );
        let forged = recognise_from(&handoff("111111111111", Some("111111111111")), &spoke, &hub);
        assert!(forged.unwrap_err().0.contains("handoff's sender"));
        let misrouted =
            recognise_from(&handoff("123456789012", Some("222222222222")), &spoke, &hub);
        assert!(misrouted.unwrap_err().0.contains("222222222222"));
    }

    #[test]
    fn rejects_other_shapes_with_a_reason() {
        assert!(recognise(&json!([1])).unwrap_err().0.contains("an array"));
        let other = json!({"source": "aws.s3", "detail-type": "Object Created"});
        assert!(recognise(&other).unwrap_err().0.contains("aws.s3"));
        let mut broken = state_change("ALARM");
        broken["detail"]["state"] = json!("ALARM");
        assert!(recognise(&broken).unwrap_err().0.starts_with("malformed"));
        assert!(matches!(
            recognise(&json!({"table": "t"})),
            Ok(Trigger::Manual(_))
        ));
    }
}
