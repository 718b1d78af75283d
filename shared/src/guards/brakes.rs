//! The brakes on the fleet, checked on the shared runbook path right before a write: the
//! correlated-change brake (at most MAX_CHANGES_PER_WINDOW distinct resources changed within
//! CHANGE_WINDOW_MINUTES, account-wide) and the repeat-offender brake (a third automatic
//! action on one resource within 24 hours waits for a person). Each escalates: the report
//! carries an `escalation`, published as a `Runbook Escalation` event.

use chrono::{Duration, Utc};

use super::Safety;
use crate::model::{Earlier, Escalation, Report, ResourceId, Skip};
use crate::store::Slot;

/// How far back the repeat-offender brake looks, and how many automatic actions on one
/// resource it lets through in that time.
const REPEAT_WINDOW_HOURS: i64 = 24;
const REPEATS_ALLOWED: usize = 2;

/// The repeat-offender brake, for an automatic run: `Err` (with the escalation in the
/// report) when the resource was already changed `REPEATS_ALLOWED` times by automatic runs
/// in the last 24 hours. A flapping resource needs a person, not a loop.
pub async fn repeat_brake(
    safety: &Safety,
    resource: &ResourceId,
    report: &mut Report,
) -> Result<Result<(), Skip>, crate::aws::AwsError> {
    if report.trigger.kind.is_manual() {
        return Ok(Ok(()));
    }
    let since = Utc::now() - Duration::hours(REPEAT_WINDOW_HOURS);
    let earlier = safety
        .audit
        .automatic_changes_since(&resource.key(), since)
        .await?;
    if earlier.len() < REPEATS_ALLOWED {
        return Ok(Ok(()));
    }
    let evidence = earlier
        .iter()
        .map(|record| record.audit_id.clone())
        .collect();
    let skip = Skip::Repeat {
        resource: resource.name(),
        window_hours: REPEAT_WINDOW_HOURS,
        earlier: earlier
            .into_iter()
            .map(|record| Earlier {
                audit_id: record.audit_id,
                runbook: record.runbook,
                started_at: record.started_at,
            })
            .collect(),
    };
    report.escalation = Some(Escalation {
        kind: "repeat".into(),
        reason: skip.to_string(),
        evidence,
    });
    Ok(Err(skip))
}

/// The correlated-change brake, for an automatic run: counts this change in the
/// account-wide window, or `Err` when MAX_CHANGES_PER_WINDOW other resources changed within
/// it. A person's manual run is neither stopped nor counted, as with the action budget. The
/// first run stopped in a window carries the escalation.
pub async fn change_brake(
    safety: &Safety,
    resource: &ResourceId,
    report: &mut Report,
) -> Result<Result<Option<Slot>, Skip>, crate::aws::AwsError> {
    if report.trigger.kind.is_manual() {
        return Ok(Ok(None));
    }
    let now = Utc::now();
    let max = safety.config.max_changes_per_window;
    let window = safety.config.change_window;
    let changed = match safety
        .audit
        .take_change(&resource.key(), max, window, now)
        .await?
    {
        Ok(slot) => return Ok(Ok(Some(slot))),
        Err(changed) => changed,
    };
    let evidence = changed.iter().map(|(key, _)| key.clone()).collect();
    let skip = Skip::Brake {
        changed: changed
            .into_iter()
            .map(|(key, at)| {
                let name = ResourceId::from_key(&key).map_or(key, |id| id.name());
                (name, at)
            })
            .collect(),
        window_minutes: window.num_minutes(),
        max,
    };
    if safety.audit.claim_escalation(window, now).await? {
        report.escalation = Some(Escalation {
            kind: "brake".into(),
            reason: skip.to_string(),
            evidence,
        });
    }
    Ok(Err(skip))
}
