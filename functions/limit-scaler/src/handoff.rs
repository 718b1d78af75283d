//! A `Runbook Handoff` from another function's runbook (api-errors found a throttled table or
//! function behind an API's 5xx). It is a trigger like an alarm: it is confirmed against what
//! limit-scaler reads itself (the alarm it names fires, and the target throttles now), then its
//! runbook runs under its own guards (managed, idempotency by the handoff id, lease, cooldown,
//! brakes, budget) and its own verification. A handoff that anyone with events:PutEvents on the
//! bus could forge therefore changes nothing that is not throttling while an alarm fires,
//! managed and within the caps.

use runbook_shared::aws::AwsError;
use runbook_shared::guards::{AlarmNow, alarm_now};
use runbook_shared::model::Invocation;
use runbook_shared::model::Rejection;
use runbook_shared::model::Resource;
use runbook_shared::model::{Handoff, HandoffTarget};
use runbook_shared::model::{Outcome, Report, TriggerInfo};

use crate::dynamodb_capacity::{CapacityTarget, Side};
use crate::lambda_concurrency::ConcurrencyTarget;
use crate::{FUNCTION, Job, Scaler, ScalerRunbook, dynamodb_capacity, lambda_concurrency};

impl Scaler {
    pub(crate) async fn take_handoff(
        &self,
        handoff: Handoff,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let job = match self.job_of_handoff(&handoff) {
            Ok(job) => job,
            Err(rejection) => {
                return invocation.timed(Report::rejected(FUNCTION, info, rejection.0));
            }
        };
        let mut report = Report::new(FUNCTION, info, Outcome::NoAction, "");
        report.dry_run = self.config.safety.dry_run;
        report.runbook = Some(job.runbook().id().into());
        report.target = Some(handoff.target.name());
        report.notes.push(format!(
            "handed off by {}: {}",
            handoff.from, handoff.reason
        ));
        // A handoff comes from a firing alarm, still firing: one that names none, or one that
        // recovered or does not exist, changes nothing (a forged or stale event among them).
        let Some(alarm) = handoff.alarm.as_deref() else {
            return invocation.timed(report.finish(
                Outcome::Rejected,
                "a Runbook Handoff names the alarm that started it, and this one names none: nothing was changed",
            ));
        };
        match alarm_now(&self.clients.cloudwatch, alarm).await {
            Ok(AlarmNow::Firing) => {}
            Ok(AlarmNow::NotFiring { said: now, .. }) => {
                return invocation.timed(report.finish(
                    Outcome::NoAction,
                    format!("handed off for alarm {alarm}, which is {now}: nothing was changed"),
                ));
            }
            Ok(AlarmNow::Gone) => {
                return invocation.timed(report.finish(
                    Outcome::NoAction,
                    format!(
                        "handed off for alarm {alarm}, which does not exist: nothing was changed"
                    ),
                ));
            }
            Err(err) => {
                return invocation.timed(report.finish(
                    Outcome::Failed,
                    format!("could not read alarm {alarm}, which the handoff names, so nothing was changed: {err}"),
                ));
            }
        }
        match self.throttles_now(&handoff.target).await {
            Ok(throttles) if throttles > 0.0 => {
                report.notes.push(format!(
                    "confirmed: {throttles} throttles on {} in the last {} minutes",
                    handoff.target.name(),
                    self.config.safety.evidence.lookback_minutes
                ));
                self.run(job, report, None, invocation).await
            }
            Ok(_) => invocation.timed(report.finish(
                Outcome::NoAction,
                format!(
                    "handed off for throttling, but {} shows no throttles in the last {} minutes: nothing was changed",
                    handoff.target.name(),
                    self.config.safety.evidence.lookback_minutes
                ),
            )),
            Err(err) => invocation.timed(report.finish(
                Outcome::Failed,
                format!(
                    "could not confirm the throttling of {} that was handed off, so nothing was changed: {err}",
                    handoff.target.name()
                ),
            )),
        }
    }

    /// The runbook and target the handoff names, validated as a manual request would be.
    fn job_of_handoff(&self, handoff: &Handoff) -> Result<Job, Rejection> {
        if handoff.to != FUNCTION {
            return Err(Rejection(format!(
                "a Runbook Handoff for {} reached limit-scaler: check the template's handoff rule",
                handoff.to
            )));
        }
        let home = &self.config.safety.home;

        match (handoff.runbook.as_str(), &handoff.target) {
            (
                dynamodb_capacity::RUNBOOK,
                HandoffTarget::Table {
                    table,
                    index,
                    read,
                    write,
                },
            ) => {
                if !read && !write {
                    return Err(Rejection(format!(
                        "the handoff of table {table} names neither its read nor its write side"
                    )));
                }
                let Resource::Table { table } = home.parse_table(table)?.resource else {
                    return Err(Rejection(format!("{table:?} is not a DynamoDB table")));
                };
                let side = |throttled: bool| if throttled { Side::Raise } else { Side::Keep };
                Ok(Job::Capacity(CapacityTarget {
                    table,
                    index: index.clone(),
                    read: side(*read),
                    write: side(*write),
                    factor: self.config.scale_factor,
                    switch_to_on_demand: false,
                }))
            }
            (lambda_concurrency::RUNBOOK, HandoffTarget::Function { function }) => {
                let Resource::Function { function } = home.parse_function(function)?.resource
                else {
                    return Err(Rejection(format!(
                        "{function:?} must name a function, without a qualifier: concurrency is reserved per function"
                    )));
                };
                Ok(Job::Concurrency(ConcurrencyTarget { function, to: None }))
            }
            (runbook, target) => Err(Rejection(format!(
                "limit-scaler takes handoffs for {} (a table) and {} (a function), not {runbook:?} on {}",
                ScalerRunbook::DynamodbCapacity.id(),
                ScalerRunbook::LambdaConcurrency.id(),
                target.name()
            ))),
        }
    }

    /// The target's throttles over the evidence lookback, read now.
    async fn throttles_now(&self, target: &HandoffTarget) -> Result<f64, AwsError> {
        let minutes = self.config.safety.evidence.lookback_minutes;
        let (namespace, dimensions, metrics): (&str, Vec<(&str, &str)>, Vec<&str>) = match target {
            HandoffTarget::Table {
                table,
                index,
                read,
                write,
            } => {
                let mut dimensions = vec![("TableName", table.as_str())];
                if let Some(index) = index {
                    dimensions.push(("GlobalSecondaryIndexName", index.as_str()));
                }
                let sides = [
                    (*read, "ReadThrottleEvents"),
                    (*write, "WriteThrottleEvents"),
                ];
                let metrics = sides
                    .into_iter()
                    .filter(|(throttled, _)| *throttled)
                    .map(|(_, metric)| metric)
                    .collect();
                (dynamodb_capacity::NAMESPACE, dimensions, metrics)
            }
            HandoffTarget::Function { function } => (
                lambda_concurrency::NAMESPACE,
                vec![("FunctionName", function.as_str())],
                vec![lambda_concurrency::THROTTLE_METRIC],
            ),
        };
        self.throttled(namespace, &metrics, &dimensions, minutes)
            .await
            .map_err(|err| AwsError::from_sdk("cloudwatch:GetMetricData", &target.name(), &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_names_are_limit_scalers_own() {
        assert_eq!(runbook_shared::model::LIMIT_SCALER, FUNCTION);
        assert_eq!(
            runbook_shared::model::DYNAMODB_CAPACITY,
            dynamodb_capacity::RUNBOOK
        );
        assert_eq!(
            runbook_shared::model::LAMBDA_CONCURRENCY,
            lambda_concurrency::RUNBOOK
        );
    }
}
