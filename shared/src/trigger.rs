//! Recognising what invoked a function, by the shape of its input.
//!
//! Accepted shapes: the EventBridge `CloudWatch Alarm State Change` event, the CloudWatch Lambda
//! alarm action payload, an alarm notification delivered by SNS (`Records[].Sns`), the
//! EventBridge `Scheduled Event`, and a manual payload (a JSON object without `source`, parsed by
//! each function with unknown fields rejected). Anything else, other AWS services' events
//! included, is rejected with a one-line reason naming what it is, before any AWS call.

use std::collections::BTreeMap;

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmStateReasonDataMetric,
    CloudWatchAlarmStateValue, CloudWatchMetricDefinition,
};
use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::sns::SnsEvent;
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
    /// A composite alarm's rule and the alarms that triggered it (it watches no metric).
    pub composite: Option<Composite>,
    /// The SNS topic that delivered it, for an alarm notification.
    pub topic: Option<String>,
}

/// What a composite alarm's transition says: its rule, the alarms it names as triggering it,
/// and what suppresses its actions now, if anything does.
#[derive(Clone, Debug, PartialEq)]
pub struct Composite {
    pub rule: String,
    /// Alarm names, from the transition's `triggeringAlarms` (or, when it names none, the
    /// alarms of the rule).
    pub triggering: Vec<String>,
    /// `actionsSuppressedBy` and its reason (`WaitPeriod: Actions suppressed by WaitPeriod`).
    pub suppressed_by: Option<String>,
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
    config: &crate::safety::SafetyConfig,
) -> Result<Trigger, Rejection> {
    let (home, hub) = (&config.home, &config.hub);
    let trigger = recognise(event)?;
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
fn notified_alarm(event: &Value) -> Option<crate::resource::Arn> {
    let message = event
        .get("Records")?
        .get(0)?
        .get("Sns")?
        .get("Message")?
        .as_str()?;
    let message: Value = serde_json::from_str(message).ok()?;
    crate::resource::Arn::parse(message.get("AlarmArn")?.as_str()?).ok()
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

/// What an AWS service's event that has no `source` is, told from its keys (the shapes of the
/// aws_lambda_events crate's examples); a shape it does not know is read as a person's payload.
fn other_service(object: &Map<String, Value>) -> Option<String> {
    let has = |key: &str| object.contains_key(key);
    // Event source mappings (Kafka, MQ, DocumentDB, DynamoDB streams) and CloudTrail records
    // name their service.
    if let Some(source) = object.get("eventSource").and_then(Value::as_str) {
        return Some(format!("an {source} event (eventSource)"));
    }
    const SHAPES: &[(&[&str], &str)] = &[
        (
            &["requestContext"],
            "an API Gateway or function URL request",
        ),
        (&["httpMethod"], "an API Gateway request"),
        (&["routeKey"], "an API Gateway HTTP API request"),
        (&["awslogs"], "a CloudWatch Logs subscription delivery"),
        (
            &["triggerSource", "userPoolId"],
            "a Cognito user pool trigger",
        ),
        (
            &["RequestType", "ResponseURL"],
            "a CloudFormation custom resource request",
        ),
        (
            &["RequestType", "LogicalResourceId"],
            "a CloudFormation custom resource request",
        ),
        (&["claims", "issuer"], "an AppSync identity"),
        (
            &["TopicArn", "Type"],
            "an SNS message in its HTTP form (a function subscribed to a topic receives it in Records[].Sns)",
        ),
        (
            &["deliveryStreamArn"],
            "a Data Firehose transformation request",
        ),
        (&["methodArn"], "an API Gateway authorizer request"),
        (&["raw_path", "method"], "a VPC Lattice request"),
        (
            &["userRequest", "configuration"],
            "an S3 Object Lambda request",
        ),
        (&["CodePipeline.job"], "a CodePipeline job"),
        (
            &["LifecycleEventHookExecutionId"],
            "a CodeDeploy lifecycle hook",
        ),
        (
            &["SecretId", "ClientRequestToken", "Step"],
            "a Secrets Manager rotation step",
        ),
        (&["invocationSource", "bot"], "a Lex bot request"),
        (
            &["Details", "Name"],
            "an Amazon Connect contact flow request",
        ),
        (&["operation", "payload"], "an AppSync resolver request"),
        (&["arguments", "info"], "an AppSync resolver request"),
        (&["protocolData"], "an IoT custom authorizer request"),
        (&["deviceEvent"], "an IoT 1-Click event"),
        (&["clickType", "serialNumber"], "an IoT button event"),
        (&["datasetRecords"], "a Cognito Sync event"),
        (
            &["connection-id", "endpoint-id"],
            "a Client VPN connection request",
        ),
    ];
    if let Some((_, what)) = SHAPES
        .iter()
        .find(|(keys, _)| keys.iter().all(|key| has(key)))
    {
        return Some((*what).to_string());
    }
    // What a function answers AWS with, sent back as an input.
    let response = [
        "statusCode",
        "batchItemFailures",
        "dialogAction",
        "policyDocument",
        "isAuthorized",
        "isAuthenticated",
        "PhysicalResourceId",
        "records",
        "Messages",
    ]
    .iter()
    .any(|key| has(key));
    response.then(|| "an answer to or from an AWS service, not an event".to_string())
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
        state: AlarmState::from(&state.value),
        previous_state: data
            .previous_state
            .as_ref()
            .map(|previous| AlarmState::from(&previous.value)),
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
fn records(event: &Value) -> Result<Trigger, Rejection> {
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

    /// A function's settings in `region` and `account`, taking alarms from one SNS topic.
    fn config(region: &str, account: &str) -> crate::safety::SafetyConfig {
        crate::safety::SafetyConfig::from_env(&crate::config::Env::from_pairs(&[
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
            &crate::fleet::FleetConfig {
                spokes: vec!["111111111111".into()],
                regions: vec!["us-east-1".into(), "eu-west-1".into()],
                external_id: Some("external-id-of-16".into()),
            },
        );
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

    #[test]
    fn other_services_events_are_named_not_read_as_payloads() {
        let s3 = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]});
        assert!(recognise(&s3).unwrap_err().0.starts_with("an aws:s3 event"));
        let api = json!({"resource": "/", "httpMethod": "GET", "requestContext": {}});
        assert!(recognise(&api).unwrap_err().0.contains("API Gateway"));
        let kafka = json!({"eventSource": "aws:kafka", "records": {}});
        assert!(
            recognise(&kafka)
                .unwrap_err()
                .0
                .starts_with("an aws:kafka event")
        );
        // A person's payload is still one.
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
