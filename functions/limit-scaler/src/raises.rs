//! The raise records limit-scaler keeps in the audit table, as the schedule's steps read and
//! close them: when a raise is due to go back, whether it is still the one listed, and the end
//! of its tracking.

use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use runbook_shared::aws::{AwsError, metric_query};
use runbook_shared::guards::{AlarmNow, alarm_now};
use runbook_shared::model::{Check, Ending, Report, Step, Verification, concluded};
use runbook_shared::path::RunContext;
use runbook_shared::store::Raise;

use crate::{Scaler, ScalerRunbook};

impl Scaler {
    /// The sum of the throttle `metrics` (namespace, names, dimensions) over the last
    /// `minutes`, in one GetMetricData call: what a handoff's confirmation and a put-back's
    /// quiet check read.
    pub(crate) async fn throttled(
        &self,
        namespace: &str,
        metrics: &[&str],
        dimensions: &[(&str, &str)],
        minutes: i64,
    ) -> Result<f64, aws_sdk_cloudwatch::error::SdkError<GetMetricDataError>> {
        let period = i32::try_from(minutes * 60).unwrap_or(i32::MAX);
        let end = chrono::Utc::now().timestamp();
        let mut request = self
            .clients
            .cloudwatch
            .get_metric_data()
            .start_time(DateTime::from_secs(end - i64::from(period)))
            .end_time(DateTime::from_secs(end));
        for (index, metric) in metrics.iter().enumerate() {
            request = request.metric_data_queries(metric_query(
                format!("m{index}"),
                namespace,
                metric,
                dimensions.iter().copied(),
                period,
                "Sum",
            ));
        }
        let output = request.send().await?;
        Ok(output
            .metric_data_results()
            .iter()
            .flat_map(|result| result.values())
            .sum())
    }

    /// Whether the schedule should look at the raise now: a stored limit or a reservation once
    /// its time is up; capacity at most once per SCALE_DOWN_AFTER_HOURS.
    pub(crate) fn due(&self, raise: &Raise, now: chrono::DateTime<chrono::Utc>) -> bool {
        let after = chrono::Duration::minutes((self.config.scale_down_after_hours * 60.0) as i64);
        if raise.runbook == ScalerRunbook::DynamodbCapacity.id() {
            raise.raised_at + after <= now
        } else {
            raise.revert_at.is_some_and(|at| at <= now)
        }
    }
}

/// The raise record as it is now, under the lease: a raise that ran while this run waited
/// moved it, and another run may have put it back already.
pub(crate) async fn current_raise(ctx: &RunContext<'_, Scaler>, listed: &Raise) -> Step<Raise> {
    match ctx
        .safety
        .audit
        .raise(&listed.runbook, &listed.resource)
        .await
    {
        Ok(Some(raise)) if ctx.due(&raise, chrono::Utc::now()) => Ok(raise),
        Ok(Some(raise)) => Err(Ending::no_action(format!(
            "raised again at {} while this run waited: it is put back later",
            runbook_shared::model::timestamp(raise.raised_at)
        ))),
        Ok(None) => Err(Ending::no_action("already put back by another run")),
        Err(err) => Err(Ending::failed(format!(
            "could not read the raise record, nothing was changed: {err}"
        ))),
    }
}

/// A raise that is no longer ours to put back (the resource is gone, or someone else changed
/// it) stops being tracked; a dry run only says it would.
pub(crate) async fn stop_tracking(
    ctx: &RunContext<'_, Scaler>,
    raise: &Raise,
    dry_run: bool,
    reason: String,
) -> Ending {
    if dry_run {
        return Ending::skipped(format!("{reason}; dry run: would stop tracking it"));
    }
    match ctx
        .safety
        .audit
        .end_raise(&raise.runbook, &raise.resource)
        .await
    {
        Ok(()) => Ending::skipped(format!("{reason}, and no longer tracked")),
        Err(err) => Ending::failed(format!(
            "{reason}, but its raise record could not be closed: {err}"
        )),
    }
}

/// The end of every put-back at expiry: the raise record is closed, and the value read back
/// (`check`) settles the verification.
pub(crate) async fn put_back_verified(
    ctx: &RunContext<'_, Scaler>,
    raise: &Raise,
    check: Check,
    summary: &str,
    report: &mut Report,
) -> Ending {
    let ended = ctx
        .safety
        .audit
        .end_raise(&raise.runbook, &raise.resource)
        .await;
    report.verification = Verification::settled(check);
    match ended {
        Ok(()) => concluded(&report.verification, summary),
        Err(err) => Ending::failed(format!(
            "{summary}, but its raise record could not be closed: {err}"
        )),
    }
}

/// How far back a put-back looks for throttling of what the raise answered.
const QUIET_MINUTES: i64 = 5;

/// The throttle figures a raise answered: their namespace, names and dimensions.
pub(crate) struct ThrottleMetrics<'a> {
    pub namespace: &'a str,
    pub names: &'a [&'a str],
    pub dimensions: Vec<(&'a str, &'a str)>,
}

/// Nothing is put back or stepped down during the incident: the alarm that led to the raise
/// must not be in ALARM, and `metrics` (when the runbook has them) must show no throttling in
/// the last `QUIET_MINUTES`. Otherwise the step waits for the next schedule, saying why; what
/// cannot be read holds it too (skipped with the fault, not failed: a failure at every tick
/// would page people for a read that the next schedule tries again).
pub(crate) async fn quiet_since(
    ctx: &RunContext<'_, Scaler>,
    raise: &Raise,
    metrics: Option<ThrottleMetrics<'_>>,
) -> Step<()> {
    let cloudwatch = &ctx.clients.cloudwatch;
    if let Some(alarm) = &raise.alarm {
        match alarm_now(cloudwatch, alarm).await {
            Ok(AlarmNow::Firing) => {
                return Err(Ending::skipped(format!(
                    "alarm {alarm}, which led to the raise, is still in ALARM: nothing is lowered during the incident; the next schedule tries again"
                )));
            }
            Ok(_) => {}
            Err(err) => {
                return Err(Ending::skipped(format!(
                    "could not read alarm {alarm}, which led to the raise, so nothing was lowered; the next schedule tries again: {err}"
                )));
            }
        }
    }
    let Some(metrics) = metrics else {
        return Ok(());
    };
    let said = metrics.names.join(" + ");
    let throttled = ctx
        .throttled(metrics.namespace, metrics.names, &metrics.dimensions, QUIET_MINUTES)
        .await
        .map_err(|err| {
            let err = AwsError::from_sdk("cloudwatch:GetMetricData", &said, &err);
            Ending::skipped(format!(
                "could not read {said} of the last {QUIET_MINUTES} minutes, so nothing was lowered; the next schedule tries again: {err}"
            ))
        })?;
    if throttled > 0.0 {
        return Err(Ending::skipped(format!(
            "{said}: {throttled} in the last {QUIET_MINUTES} minutes: still throttling, so nothing is lowered; the next schedule tries again"
        )));
    }
    Ok(())
}
