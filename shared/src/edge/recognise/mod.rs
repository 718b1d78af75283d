//! Recognising what invoked a function, by the shape of its input.
//!
//! Accepted shapes: the EventBridge `CloudWatch Alarm State Change` event, the CloudWatch Lambda
//! alarm action payload, an alarm notification delivered by SNS (`Records[].Sns`), the
//! EventBridge `Scheduled Event`, and a manual payload (a JSON object without `source`, parsed by
//! each function with unknown fields rejected). Anything else, other AWS services' events
//! included, is rejected with a one-line reason naming what it is, before any AWS call.

mod alarm;
mod other;
mod sns;

use alarm::{alarm_action, alarm_state_change};
use other::other_service;
use sns::records;

pub use alarm::triggering_alarms;

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{AlarmTrigger, Origin, Rejection, ScheduleTrigger, Trigger};

pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// An event as it arrived, and what it was recognised as: read once, where it enters, and
/// handed down with its text (a plan made for approval stores the text, to handle it again).
#[derive(Clone, Debug)]
pub struct Recognised {
    pub event: Value,
    pub trigger: Result<Trigger, Rejection>,
}

impl Recognised {
    pub fn of(event: Value) -> Self {
        let trigger = recognise(&event);
        Self { event, trigger }
    }

    /// The trigger, unless it is refused here: an event from another account or region than
    /// `home`'s names resources by names that are not the ones this function would find under
    /// them. A `Runbook Handoff` is sent by the deployment itself, from `hub`'s account (its bus
    /// takes an organization's events too), about the place it names; a schedule is the hub's,
    /// and runs in every place it acts in.
    pub fn admitted(&self, config: &crate::model::SafetyConfig) -> Result<Trigger, Rejection> {
        admit(&self.event, self.trigger.clone()?, config)
    }
}

fn admit(
    event: &Value,
    trigger: Trigger,
    config: &crate::model::SafetyConfig,
) -> Result<Trigger, Rejection> {
    let (home, hub) = (&config.home, &config.hub);
    if let Some(refused) = unlisted_topic(&trigger, &config.alarm_topics) {
        return Err(refused);
    }
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
    if let Some(arn) = notified_alarm(event) {
        return Origin {
            account: Some(arn.account),
            region: Some(arn.region),
        };
    }
    if event.get("source").is_none() && event.get("accountId").is_none() {
        return Origin::default();
    }
    let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_string);
    Origin {
        account: text("account").or_else(|| text("accountId")),
        region: text("region"),
    }
}

/// An alarm notification comes only through the topics the deployment subscribes to
/// (ALARM_TOPIC_ARNS): why one from another is refused.
pub fn unlisted_topic(trigger: &Trigger, alarm_topics: &[String]) -> Option<Rejection> {
    match trigger {
        Trigger::Alarm(AlarmTrigger {
            topic: Some(topic), ..
        }) if !alarm_topics.contains(topic) => Some(Rejection(format!(
            "SNS message from topic {topic}, which ALARM_TOPIC_ARNS (the template's AlarmTopicArns) does not list: nothing was done"
        ))),
        _ => None,
    }
}

/// The alarm of an SNS alarm notification, by its ARN: the account and region it is in.
fn notified_alarm(event: &Value) -> Option<crate::model::Arn> {
    let message = event
        .get("Records")?
        .get(0)?
        .get("Sns")?
        .get("Message")?
        .as_str()?;
    let message: Value = serde_json::from_str(message).ok()?;
    crate::model::Arn::parse(message.get("AlarmArn")?.as_str()?).ok()
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
        // A person's decision on a plan, whatever else it holds (its own parser names any
        // other key); a control payload is not one.
        if !object.contains_key("control")
            && (object.contains_key("approve") || object.contains_key("deny"))
        {
            return Ok(Trigger::Approval(object.clone()));
        }
        if object.contains_key("Records") {
            return records(event);
        }
        if let Some(what) = other_service(object) {
            return Err(Rejection(format!(
                "{what}, which no runbook function takes: nothing was done"
            )));
        }
        if object.contains_key("control") {
            return Ok(Trigger::Control(object.clone()));
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
        (Some(crate::edge::publish::SOURCE), Some(crate::model::HANDOFF)) => {
            let parsed: CloudWatchEvent<crate::model::Handoff> =
                parse(event, crate::model::HANDOFF)?;
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

fn parse<T: DeserializeOwned>(event: &Value, what: &str) -> Result<T, Rejection> {
    serde_json::from_value(event.clone())
        .map_err(|err| Rejection(format!("malformed {what} event: {err}")))
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
    use crate::model::{AlarmState, TriggerKind};

    fn recognise_from(
        event: &Value,
        config: &crate::model::SafetyConfig,
    ) -> Result<Trigger, Rejection> {
        Recognised::of(event.clone()).admitted(config)
    }
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
    fn a_decision_is_told_by_its_keys_before_any_other_shape_but_a_control() {
        for event in [
            json!({"approve": "p-1", "by": "alice"}),
            json!({"deny": "p-1", "Records": []}),
            json!({"approve": "p-1", "statusCode": 200}),
        ] {
            assert!(
                matches!(recognise(&event), Ok(Trigger::Approval(_))),
                "{event}"
            );
        }
        assert!(matches!(
            recognise(&json!({"control": "status", "approve": "p-1"})),
            Ok(Trigger::Control(_))
        ));
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

    /// A function's settings in `region` and `account`, taking alarms from one SNS topic.
    fn config(region: &str, account: &str) -> crate::model::SafetyConfig {
        crate::model::SafetyConfig::from_env(&crate::config::Env::from_pairs(&[
            ("AWS_REGION", region),
            ("ACCOUNT_ID", account),
            ("AUDIT_TABLE", "audit"),
            (
                "ALARM_TOPIC_ARNS",
                "arn:aws:sns:us-east-1:123456789012:oncall-alarms",
            ),
        ]))
        .unwrap()
    }

    #[test]
    fn events_from_another_account_or_region_are_refused() {
        assert!(
            recognise_from(&state_change("ALARM"), &config("us-east-1", "123456789012")).is_ok()
        );
        let mut elsewhere = state_change("ALARM");
        elsewhere["region"] = json!("eu-west-1");
        let err = recognise_from(&elsewhere, &config("us-east-1", "123456789012")).unwrap_err();
        assert!(
            err.0.contains("eu-west-1") && err.0.contains("us-east-1"),
            "{err}"
        );
        let mut other = state_change("ALARM");
        other["account"] = json!("999999999999");
        assert!(
            recognise_from(&other, &config("us-east-1", "123456789012"))
                .unwrap_err()
                .0
                .contains("999999999999")
        );
        assert!(
            recognise_from(&json!({"table": "t"}), &config("us-east-1", "123456789012")).is_ok()
        );
    }

    #[test]
    fn a_handoff_comes_from_the_hub_about_the_place_it_names() {
        let hub = config("us-east-1", "123456789012");
        let spoke = hub.at(
            hub.home.elsewhere("111111111111", "eu-west-1"),
            &crate::model::FleetConfig {
                spokes: vec!["111111111111".into()],
                regions: vec!["us-east-1".into(), "eu-west-1".into()],
                external_id: Some("external-id-of-16".into()),
            },
        );
        let handoff = |sender: &str, account: Option<&str>| {
            json!({
                "version": "0", "id": "h1", "detail-type": "Runbook Handoff",
                "source": crate::edge::publish::SOURCE, "account": sender, "region": "us-east-1",
                "time": "2026-11-30T00:00:00Z", "resources": [],
                "detail": {
                    "handoff_id": "h1", "to": "limit-scaler", "runbook": "dynamodb-capacity",
                    "target": {"table": {"table": "orders", "read": true, "write": false}},
                    "alarm": "orders-read", "from": "alarm-responder/api-errors on api",
                    "reason": "throttled", "account": account, "region": "eu-west-1",
                }
            })
        };
        assert!(recognise_from(&handoff("123456789012", Some("111111111111")), &spoke).is_ok());
        let forged = recognise_from(&handoff("111111111111", Some("111111111111")), &spoke);
        assert!(forged.unwrap_err().0.contains("handoff's sender"));
        let misrouted = recognise_from(&handoff("123456789012", Some("222222222222")), &spoke);
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

    #[test]
    fn an_sns_delivery_carries_one_alarm_notification() {
        let record = |message: &str| {
            json!({
                "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:t:1",
                "Sns": {
                    "Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                    "Subject": "s", "Message": message, "Timestamp": "2026-11-23T03:12:00.000Z",
                    "SignatureVersion": "1", "Signature": "x", "SigningCertUrl": "x", "UnsubscribeUrl": "x",
                    "MessageAttributes": {}
                }
            })
        };
        let alarm = r#"{"AlarmName": "a", "AlarmDescription": null, "NewStateValue": "ALARM", "OldStateValue": "OK",
            "StateChangeTime": "2026-11-23T03:12:00.000+0000", "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a",
            "Trigger": {"MetricName": "ReadThrottleEvents", "Namespace": "AWS/DynamoDB", "Dimensions": [{"name": "TableName", "value": "orders"}]}}"#;
        let Ok(Trigger::Alarm(parsed)) = recognise(&json!({"Records": [record(alarm)]})) else {
            panic!("an alarm notification")
        };
        assert_eq!(parsed.kind, TriggerKind::AlarmSns);
        assert_eq!(parsed.event_id, "m1:ALARM@2026-11-23T03:12:00.000+0000");
        assert_eq!(parsed.metrics[0].dimension("TableName"), Some("orders"));
        assert_eq!(
            parsed.topic.as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:t")
        );
        let two = recognise(&json!({"Records": [record(alarm), record(alarm)]}));
        assert!(two.unwrap_err().0.contains("one record"));
        let other = recognise(&json!({"Records": [record("hello")]}));
        assert!(
            other
                .unwrap_err()
                .0
                .contains("is not a CloudWatch alarm notification")
        );
        // From a topic the deployment does not list, it is refused.
        let unlisted = json!({"Records": [record(alarm)]});
        let refused = recognise_from(&unlisted, &config("us-east-1", "123456789012"));
        assert!(refused.unwrap_err().0.contains("ALARM_TOPIC_ARNS"));
    }
}
