//! When an OK counts as recovery: an alarm's OK transition closes the open verification of the
//! change its own alarm started, and only one made before it.

use super::Safety;
use crate::model::{
    AlarmTrigger, Outcome, Report, ResourceId, SettleBy, TriggerKind, VerificationStatus,
};

/// An alarm's OK transition: closes the newest open verification of `runbook` on the
/// resource, marking its open (`pending`) checks as met, with the time to recover.
pub async fn close_on_ok(
    safety: &Safety,
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
    // A notification's time is CloudWatch's (`alarms::confirmed`), and anyone who may
    // publish to the topic can send an OK: an alarm OK since before the change proves nothing.
    if alarm.kind == TriggerKind::AlarmSns
        && alarm.changed_at.timestamp() < record.started_at.timestamp()
    {
        report.outcome = Outcome::NoAction;
        report.reason = format!(
            "alarm {} has been OK since {}, before the change to {target} at {}: that does not verify it",
            alarm.alarm_name,
            crate::model::timestamp(alarm.changed_at),
            crate::model::timestamp(record.started_at)
        );
        return report;
    }
    let recovered = (alarm.changed_at - record.started_at).num_seconds().max(0);
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
