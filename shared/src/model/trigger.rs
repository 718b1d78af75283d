//! What invoked a function, as the edge recognised it (`edge::recognise`): an alarm
//! transition, a schedule, a stack status change, a handoff, or a person's payload.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::handoff::Handoff;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Alarm,
    AlarmAction,
    /// An alarm notification delivered by SNS.
    AlarmSns,
    Schedule,
    StackEvent,
    Manual,
    /// A `Runbook Handoff` event: another function's runbook found the cause and hands it on.
    Handoff,
    /// The input could not be recognised as any trigger.
    Unknown,
}

impl TriggerKind {
    /// A person's decision, as opposed to an alarm or a schedule: the cooldown and the action
    /// budget guard only automatic triggers.
    pub fn is_manual(self) -> bool {
        self == TriggerKind::Manual
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    pub kind: TriggerKind,
    pub name: Option<String>,
    pub event_id: Option<String>,
}

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
    Handoff(Handoff),
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
