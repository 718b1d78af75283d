//! Alarms as CloudWatch shows them. An alarm notification delivered by SNS says what anyone
//! allowed to publish to the topic says, so it is acted on only as CloudWatch shows the alarm
//! now (`confirmed`). Composite alarms (`ALARM(a) OR ALARM(b)`) cut noise and watch no metric:
//! the automation follows one to its cause: the alarms that triggered it that are in ALARM now,
//! in the order the transition names them, each handled exactly as if it had fired until one
//! is acted on; one whose actions are suppressed is left alone, as CloudWatch leaves it
//! (`handle`).

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{AlarmType, CompositeAlarm, MetricAlarm, StateValue};

use super::catalog::Catalog;
use crate::aws::AwsError;
use crate::edge::recognise::triggering_alarms;
use crate::model::Invocation;
use crate::model::{AlarmState, AlarmTrigger, Composite, MetricRef};
use crate::model::{Outcome, Report, TriggerInfo, TriggerKind};

/// A metric alarm as DescribeAlarms shows it, shaped like the alarm event it sends: a
/// composite's child, or an alarm a person replays by name.
pub fn alarm_trigger(alarm: &MetricAlarm, kind: TriggerKind, event_id: String) -> AlarmTrigger {
    let dimensions = |dimensions: &[aws_sdk_cloudwatch::types::Dimension]| {
        dimensions
            .iter()
            .filter_map(|d| Some((d.name()?.to_string(), d.value()?.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    // A single-metric alarm names its metric; a metric-math alarm lists its queries.
    let metrics = match (alarm.namespace(), alarm.metric_name()) {
        (Some(namespace), Some(name)) => vec![MetricRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dimensions: dimensions(alarm.dimensions()),
        }],
        _ => alarm
            .metrics()
            .iter()
            .filter_map(|query| {
                let metric = query.metric_stat()?.metric()?;
                Some(MetricRef {
                    namespace: metric.namespace()?.to_string(),
                    name: metric.metric_name()?.to_string(),
                    dimensions: dimensions(metric.dimensions()),
                })
            })
            .collect(),
    };
    let state = state_of(alarm.state_value());
    AlarmTrigger {
        kind,
        event_id,
        alarm_name: alarm.alarm_name().unwrap_or_default().to_string(),
        alarm_arn: alarm.alarm_arn().map(str::to_string),
        state,
        previous_state: None,
        reason: alarm.state_reason().unwrap_or_default().to_string(),
        changed_at: changed_at(
            alarm.state_transitioned_timestamp(),
            alarm.state_updated_timestamp(),
        ),
        metrics,
        window: None,
        composite: None,
        topic: None,
    }
}

/// The metric alarms of `names` that exist (a child that is itself a composite, or was
/// deleted, is not among them).
pub async fn metric_alarms(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    names: &[String],
) -> Result<Vec<MetricAlarm>, AwsError> {
    let mut alarms = Vec::new();
    // DescribeAlarms takes at most 100 names at once.
    for chunk in names.chunks(100) {
        let answer = cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(chunk.to_vec()))
            .max_records(100)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "cloudwatch:DescribeAlarms",
                    &format!("alarms {}", chunk.join(", ")),
                    &err,
                )
            })?;
        alarms.extend(answer.metric_alarms().iter().cloned());
    }
    Ok(alarms)
}

/// Handles an alarm trigger: an SNS notification confirmed first, a composite followed to its
/// children, any other alarm handed to the catalog's `on_alarm` as it is. Each run's future is
/// on the heap: a runbook's future is too large for the frame that polls it on a small thread
/// stack.
pub async fn handle<F: Catalog>(
    catalog: &F,
    alarm: AlarmTrigger,
    info: TriggerInfo,
    invocation: &Invocation,
) -> Report {
    let function = F::NAME;
    let cloudwatch = catalog.alarms();
    let alarm = match confirmed(cloudwatch, alarm).await {
        Ok(alarm) => alarm,
        Err((outcome, reason)) => {
            return invocation.timed(Report::new(function, info, outcome, reason));
        }
    };
    match alarm.composite.clone() {
        Some(composite) => route(catalog, &alarm, &composite, info, invocation).await,
        None => Box::pin(catalog.on_alarm(&alarm, info, invocation)).await,
    }
}

/// The alarm of an SNS notification as CloudWatch shows it: it must exist under the notified
/// name (and ARN), and be in the notified state now; its metrics, rule and suppression are
/// CloudWatch's, not the message's. Other deliveries come from AWS itself and pass unchanged.
pub async fn confirmed(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    notified: AlarmTrigger,
) -> Result<AlarmTrigger, (Outcome, String)> {
    if notified.kind != TriggerKind::AlarmSns {
        return Ok(notified);
    }
    let name = notified.alarm_name.clone();
    let said = format!("the SNS notification {} of alarm {name}", notified.event_id);
    let answer = cloudwatch
        .describe_alarms()
        .alarm_names(&name)
        .alarm_types(AlarmType::MetricAlarm)
        .alarm_types(AlarmType::CompositeAlarm)
        .send()
        .await
        .map_err(|err| {
            let err =
                AwsError::from_sdk("cloudwatch:DescribeAlarms", &format!("alarm {name}"), &err);
            (
                Outcome::Failed,
                format!("could not confirm {said} with CloudWatch, so nothing was done: {err}"),
            )
        })?;
    let shown = match (
        answer.metric_alarms().first(),
        answer.composite_alarms().first(),
    ) {
        (Some(alarm), _) => alarm_trigger(alarm, TriggerKind::AlarmSns, notified.event_id.clone()),
        (None, Some(alarm)) => composite_trigger(alarm, notified.event_id.clone()),
        (None, None) => {
            return Err((
                Outcome::Rejected,
                format!(
                    "{said}: CloudWatch shows no such alarm here, so nothing was done (a notification is acted on only as CloudWatch shows its alarm)"
                ),
            ));
        }
    };
    if let (Some(notified_arn), Some(arn)) = (&notified.alarm_arn, &shown.alarm_arn)
        && notified_arn != arn
    {
        return Err((
            Outcome::Rejected,
            format!(
                "{said} names ARN {notified_arn}, but the alarm of that name is {arn}: nothing was done"
            ),
        ));
    }
    if shown.state != notified.state {
        return Err((
            Outcome::NoAction,
            format!(
                "{said} says {}, but CloudWatch shows it {} now: nothing to act on",
                notified.state.as_str(),
                shown.state.as_str()
            ),
        ));
    }
    Ok(AlarmTrigger {
        previous_state: notified.previous_state,
        topic: notified.topic,
        ..shown
    })
}

/// A composite alarm as DescribeAlarms shows it, shaped like its state change event.
fn composite_trigger(alarm: &CompositeAlarm, event_id: String) -> AlarmTrigger {
    let rule = alarm.alarm_rule().unwrap_or_default().to_string();
    let suppressed_by =
        alarm
            .actions_suppressed_by()
            .map(|by| match alarm.actions_suppressed_reason() {
                Some(reason) => format!("{}: {reason}", by.as_str()),
                None => by.as_str().to_string(),
            });
    AlarmTrigger {
        kind: TriggerKind::AlarmSns,
        event_id,
        alarm_name: alarm.alarm_name().unwrap_or_default().to_string(),
        alarm_arn: alarm.alarm_arn().map(str::to_string),
        state: state_of(alarm.state_value()),
        previous_state: None,
        reason: alarm.state_reason().unwrap_or_default().to_string(),
        changed_at: changed_at(
            alarm.state_transitioned_timestamp(),
            alarm.state_updated_timestamp(),
        ),
        metrics: Vec::new(),
        window: None,
        composite: Some(Composite {
            triggering: triggering_alarms(&rule, alarm.state_reason_data()),
            rule,
            suppressed_by,
        }),
        topic: None,
    }
}

/// When the alarm last changed state: CloudWatch's transition time where it gives one (the
/// update time also moves when only the reason does).
fn changed_at(
    transitioned: Option<&aws_sdk_cloudwatch::primitives::DateTime>,
    updated: Option<&aws_sdk_cloudwatch::primitives::DateTime>,
) -> chrono::DateTime<chrono::Utc> {
    transitioned
        .or(updated)
        .and_then(|at| chrono::DateTime::from_timestamp(at.secs(), 0))
        .unwrap_or_else(chrono::Utc::now)
}

fn state_of(value: Option<&StateValue>) -> AlarmState {
    match value {
        Some(StateValue::Alarm) => AlarmState::Alarm,
        Some(StateValue::Ok) => AlarmState::Ok,
        _ => AlarmState::InsufficientData,
    }
}

/// Handles a composite alarm's transition through its children in ALARM, in the order the
/// transition names them: each is handed to the catalog's `on_alarm` as if it had fired (its event id the
/// composite's and its own, so that one transition acts once per child), until one is acted on
/// (remediated, planned, awaiting approval or failed). A child its runbook leaves alone (not
/// managed, in cooldown, at its cap) does not end the search: another may be the cause. The
/// report names the composite and the child; when no child is acted on, it is the first child
/// a runbook took, or `no_action` naming them all.
// Over 80 lines: a composite's search through its children, each child's outcome deciding whether
// the search goes on; read in one place, the stop rule is visible.
async fn route<F: Catalog>(
    catalog: &F,
    alarm: &AlarmTrigger,
    composite: &Composite,
    info: TriggerInfo,
    invocation: &Invocation,
) -> Report {
    let function = F::NAME;
    let cloudwatch = catalog.alarms();
    let name = &alarm.alarm_name;
    let said = format!("composite alarm {name} ({})", composite.rule);
    let answer = |outcome, reason: String| {
        invocation.timed(Report::new(function, info.clone(), outcome, reason))
    };
    if alarm.state != AlarmState::Alarm {
        return answer(
            Outcome::NoAction,
            format!(
                "{said} is {}: nothing to act on (a remediation it led to is verified by its own alarm)",
                alarm.state.as_str()
            ),
        );
    }
    if let Some(by) = &composite.suppressed_by {
        return answer(
            Outcome::Skipped,
            format!(
                "actions suppressed by {by}: {said} is in ALARM, but CloudWatch itself does not act on it now, and neither does {function}"
            ),
        );
    }
    let mut children = match metric_alarms(cloudwatch, &composite.triggering).await {
        Ok(children) => children,
        Err(err) => {
            return answer(
                Outcome::Failed,
                format!("could not read the alarms of {said}, so nothing was done: {err}"),
            );
        }
    };
    children.sort_by_key(|child| {
        composite
            .triggering
            .iter()
            .position(|name| Some(name.as_str()) == child.alarm_name())
    });
    let mut seen = Vec::new();
    let mut left_alone: Option<Report> = None;
    for child in &children {
        let child_name = child.alarm_name().unwrap_or_default().to_string();
        let trigger = alarm_trigger(
            child,
            alarm.kind,
            format!("{}/{child_name}", alarm.event_id),
        );
        let watched = watched(&trigger);
        if trigger.state != AlarmState::Alarm {
            seen.push(format!(
                "{child_name} ({watched}, {})",
                trigger.state.as_str()
            ));
            continue;
        }
        let child_info = TriggerInfo {
            kind: alarm.kind,
            name: Some(child_name.clone()),
            event_id: Some(trigger.event_id.clone()),
        };
        let mut report = Box::pin(catalog.on_alarm(&trigger, child_info, invocation)).await;
        let Some(runbook) = report.runbook.clone() else {
            seen.push(format!("{child_name} ({watched}, ALARM)"));
            continue;
        };
        seen.push(format!(
            "{child_name} ({watched}, ALARM: {runbook} {})",
            report.outcome.as_str()
        ));
        report.notes.insert(
            0,
            format!("{said} is in ALARM because of {child_name}: handled as {child_name} firing"),
        );
        if matches!(
            report.outcome,
            Outcome::Remediated | Outcome::Planned | Outcome::AwaitingApproval | Outcome::Failed
        ) {
            return report;
        }
        left_alone.get_or_insert(report);
    }
    if let Some(mut report) = left_alone {
        report.notes.push(format!(
            "no alarm that triggers {said} was acted on: {}",
            seen.join("; ")
        ));
        return report;
    }
    let found: Vec<&str> = children
        .iter()
        .filter_map(MetricAlarm::alarm_name)
        .collect();
    let missing: Vec<&str> = composite
        .triggering
        .iter()
        .map(String::as_str)
        .filter(|name| !found.contains(name))
        .collect();
    if !missing.is_empty() {
        seen.push(format!(
            "{} (no metric alarm of that name: a composite, or deleted)",
            missing.join(", ")
        ));
    }
    answer(
        Outcome::NoAction,
        format!(
            "{said}: no alarm that triggers it maps to a runbook of {function}: {}",
            if seen.is_empty() {
                "it names none".to_string()
            } else {
                seen.join("; ")
            }
        ),
    )
}

/// `AWS/EC2 CPUUtilization InstanceId=i-1`, as a report names what an alarm watches.
fn watched(alarm: &AlarmTrigger) -> String {
    if alarm.metrics.is_empty() {
        return "no metric".into();
    }
    alarm
        .metrics
        .iter()
        .map(|metric| {
            let dimensions: Vec<String> = metric
                .dimensions
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            format!(
                "{} {} {}",
                metric.namespace,
                metric.name,
                dimensions.join(",")
            )
            .trim_end()
            .to_string()
        })
        .collect::<Vec<_>>()
        .join(" + ")
}
