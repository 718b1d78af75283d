//! The alarms alarm-responder acts on: which runbook and target an alarm chooses, and an
//! alarm's current state replayed by hand.

use std::collections::BTreeMap;

use runbook_shared::aws::AwsError;
use runbook_shared::edge::alarms as shown;
use runbook_shared::model::TriggerKind;
use runbook_shared::model::{AlarmTrigger, MetricRef, Rejection};

use crate::api_errors::ApiErrors;
use crate::dynamodb_backup::TableBackup;
use crate::lambda_resources::Resources;
use crate::lambda_rollback::Rollback;
use crate::stack_recovery::StackRecovery;
use crate::{Job, RUNBOOK_TAG, Responder, ResponderRunbook};

impl Responder {
    /// The alarm as it is now, shaped like the alarm event it would send.
    pub(crate) async fn replay(&self, alarm_name: &str) -> Result<Option<AlarmTrigger>, AwsError> {
        let alarms =
            shown::metric_alarms(&self.clients.cloudwatch, &[alarm_name.to_string()]).await?;
        Ok(alarms.first().map(|alarm| {
            shown::alarm_trigger(alarm, TriggerKind::Manual, format!("replay:{alarm_name}"))
        }))
    }

    /// The alarm's tags (none when they cannot be read: the metric chooses the runbook then).
    async fn tags(&self, alarm: &AlarmTrigger) -> BTreeMap<String, String> {
        let Some(arn) = &alarm.alarm_arn else {
            return BTreeMap::new();
        };
        match self
            .clients
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
        {
            Ok(output) => output
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_string(), tag.value()?.to_string())))
                .collect(),
            Err(err) => {
                let err = AwsError::from_sdk("cloudwatch:ListTagsForResource", arn, &err);
                tracing::warn!(error = %err, "alarm tags unreadable: the runbook is inferred from the metric");
                BTreeMap::new()
            }
        }
    }

    /// The runbook and target an alarm chooses: its tag `runbook`, else its `AWS/Lambda`
    /// metric (`Errors` rolls back, `Duration` raises resources); `Err` says why none.
    pub(crate) async fn job_of(&self, alarm: &AlarmTrigger) -> Result<Job, String> {
        let tags = self.tags(alarm).await;
        let lambda_metrics: Vec<&MetricRef> = alarm
            .metrics
            .iter()
            .filter(|m| m.namespace == "AWS/Lambda")
            .collect();
        let mut watched: Vec<String> = lambda_metrics
            .iter()
            .filter_map(|m| {
                let function = m.dimension("FunctionName")?;
                Some(m.dimension("Resource").unwrap_or(function).to_string())
            })
            .collect();
        watched.sort_unstable();
        watched.dedup();
        if watched.len() > 1 {
            return Err(format!(
                "alarm {} watches several functions ({}), so the one to act on cannot be told from the alarm: nothing was changed; alarm on each function, or run the runbook by hand on the one to change",
                alarm.alarm_name,
                watched.join(", ")
            ));
        }
        let metric = lambda_metrics.first().copied();
        let runbook = match tags.get(RUNBOOK_TAG) {
            None if ApiErrors::watched_by(alarm) => ResponderRunbook::ApiErrors,
            Some(tagged) => ResponderRunbook::from_id(tagged).ok_or_else(|| {
                format!(
                    "alarm {}'s tag {RUNBOOK_TAG}={tagged} names no runbook of alarm-responder ({})",
                    alarm.alarm_name,
                    ResponderRunbook::ids()
                )
            })?,
            None => match metric.and_then(|m| ResponderRunbook::for_metric(&m.name)) {
                Some(runbook) => runbook,
                None => {
                    return Err(format!(
                        "alarm {} matches no runbook: AWS/Lambda Errors runs lambda-rollback, AWS/Lambda Duration runs lambda-resources, AWS/ApiGateway 5XXError or 5xx runs api-errors; for anything else tag the alarm {RUNBOOK_TAG}=<{}>",
                        alarm.alarm_name,
                        ResponderRunbook::ALL.map(ResponderRunbook::id).join("|")
                    ));
                }
            },
        };
        let home = &self.config.safety.home;
        let tag = |name: &str| {
            tags.get(name).ok_or_else(|| {
                format!(
                    "alarm {} chooses {} but has no tag {name}=<...>",
                    alarm.alarm_name,
                    runbook.id()
                )
            })
        };
        let rejected = |name: &str, rejection: Rejection| {
            format!("alarm {}'s tag {name}: {}", alarm.alarm_name, rejection.0)
        };
        match runbook {
            ResponderRunbook::LambdaRollback => {
                Rollback::from_alarm(alarm, metric).map(Job::Rollback)
            }
            ResponderRunbook::LambdaResources => {
                let raise = tags.get("raise").map(String::as_str);
                Resources::from_alarm(alarm, metric, raise).map(Job::Resources)
            }
            ResponderRunbook::StackRecovery => StackRecovery::named(tag("stack")?, home)
                .map(Job::Stack)
                .map_err(|rejection| rejected("stack", rejection)),
            ResponderRunbook::DynamodbBackup => TableBackup::named(tag("table")?, home)
                .map(Job::Backup)
                .map_err(|rejection| rejected("table", rejection)),
            ResponderRunbook::ApiErrors => ApiErrors::from_alarm(alarm).map(Job::Api),
        }
    }
}
