//! When an OK counts as recovery, for every delivery (EventBridge, the alarm's Lambda action,
//! SNS): an alarm's OK transition closes the open verification of the change its own alarm
//! started, only when the OK came after that change, and only while CloudWatch shows the alarm
//! OK.

use super::Safety;
use super::recheck::{AlarmNow, alarm_now};
use crate::model::{AlarmTrigger, Outcome, Report, ResourceId, SettleBy, VerificationStatus};

/// An alarm's OK transition: closes the newest open verification of `runbook` on the
/// resource, marking its open (`pending`) checks as met, with the time to recover.
// Over 80 lines: the conditions for an OK to count as recovery are one rule (the alarm that fired,
// after the change, OK in CloudWatch now); kept together so that none is skipped.
pub async fn close_on_ok(
    safety: &Safety,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    runbook: &str,
    resource: &ResourceId,
    alarm: &AlarmTrigger,
    mut report: Report,
) -> Report {
    let target = resource.name();
    report.runbook = Some(runbook.into());
    report.target = Some(target.clone());
    report.resource = Some(resource.key());
    let record = match safety.audit.latest_pending(&resource.key(), runbook).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} is OK; no remediation of {target} is awaiting verification",
                alarm.alarm_name
            );
            return report;
        }
        Err(err) => {
            report.outcome = Outcome::Failed;
            report.reason = format!("could not look up the open verification of {target}: {err}");
            return report;
        }
    };
    // A change waits for the alarm that fired it: another alarm of the resource being OK
    // says nothing about it.
    if let Some(SettleBy::Alarm { name }) = &record.report.verification.settle_by
        && *name != alarm.alarm_name
    {
        report.outcome = Outcome::NoAction;
        report.reason = format!(
            "alarm {} is OK, but the change to {target} waits for alarm {name}: that does not verify it",
            alarm.alarm_name
        );
        return report;
    }
    // An OK from before the change proves nothing about it, however it was delivered (a late
    // or replayed event, a notification anyone allowed on the topic sent).
    if alarm.changed_at.timestamp() < record.started_at.timestamp() {
        report.outcome = Outcome::NoAction;
        report.reason = format!(
            "alarm {} has been OK since {}, before the change to {target} at {}: that does not verify it",
            alarm.alarm_name,
            crate::model::timestamp(alarm.changed_at),
            crate::model::timestamp(record.started_at)
        );
        return report;
    }
    // And the event may be old news: only CloudWatch's state now closes a verification.
    match alarm_now(cloudwatch, &alarm.alarm_name).await {
        Ok(AlarmNow::NotFiring { ok: true, .. }) => {}
        Ok(AlarmNow::NotFiring { said: now, .. }) => {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} sent OK, but CloudWatch shows it {now}: that does not verify the change to {target}",
                alarm.alarm_name
            );
            return report;
        }
        Ok(AlarmNow::Firing) => {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} sent OK, but CloudWatch shows it in ALARM again: that does not verify the change to {target}",
                alarm.alarm_name
            );
            return report;
        }
        Ok(AlarmNow::Gone) => {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} no longer exists, so its OK cannot verify the change to {target}: the verification stays open for the health-prober's sweep",
                alarm.alarm_name
            );
            return report;
        }
        Err(err) => {
            report.outcome = Outcome::Failed;
            report.reason = format!(
                "could not read alarm {} to confirm its OK, so the verification of {target} stays open: {err}",
                alarm.alarm_name
            );
            return report;
        }
    }
    let recovered = (alarm.changed_at - record.started_at).num_seconds();
    let mut verification = record.report.verification.clone();
    for check in verification
        .checks
        .iter_mut()
        .filter(|check| check.is_awaited())
    {
        check.ok = true;
        check.observed = format!(
            "alarm {} OK at {}, {recovered} s after the change",
            alarm.alarm_name,
            crate::model::timestamp(alarm.changed_at)
        );
    }
    verification.status = if verification.checks.iter().all(|check| check.ok) {
        VerificationStatus::Verified
    } else {
        VerificationStatus::Failed
    };
    report.outcome = Outcome::NoAction;
    match safety.audit.settle(&record, &verification).await {
        Ok(true) => {
            report.reason = format!(
                "alarm {} returned to OK {recovered} s after remediation {}; verification closed as {}",
                alarm.alarm_name,
                record.audit_id,
                if verification.status == VerificationStatus::Verified {
                    "verified"
                } else {
                    "failed"
                }
            );
            report.verification = verification;
            report.audit_id = Some(record.audit_id);
            report.diagnosis = Some(serde_json::json!({
                "time_to_recover_seconds": recovered,
                "remediated_at": crate::model::timestamp(record.started_at),
            }));
        }
        Ok(false) => {
            report.reason = format!(
                "the verification of remediation {} was already closed",
                record.audit_id
            )
        }
        Err(err) => {
            report.outcome = Outcome::Failed;
            report.reason = format!(
                "could not close the verification of remediation {}: {err}",
                record.audit_id
            );
        }
    }
    report
}
