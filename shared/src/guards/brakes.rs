//! The brakes on the fleet, checked on the shared runbook path right before a write: the
//! correlated-change brake (at most MAX_CHANGES_PER_WINDOW distinct resources changed within
//! CHANGE_WINDOW_MINUTES, account-wide) and the repeat-offender brake (a third automatic
//! action on one resource within 24 hours waits for a person). Each escalates: the report
//! carries an `escalation`, published as a `Runbook Escalation` event.

use chrono::{Duration, Utc};

use super::Safety;
use crate::model::timestamp;
use crate::model::{Escalation, Report, ResourceId, Skip};
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
    let ids: Vec<String> = earlier
        .iter()
        .map(|record| {
            format!(
                "{} ({}, {})",
                record.audit_id,
                record.runbook,
                timestamp(record.started_at)
            )
        })
        .collect();
    let reason = format!(
        "escalated: acted on {} {} times in {REPEAT_WINDOW_HOURS} h (audit {}); a resource that keeps needing the same fix needs a person: look at it, then run the runbook by hand if it still applies",
        resource.name(),
        earlier.len(),
        ids.join(", ")
    );
    report.escalation = Some(Escalation {
        kind: "repeat".into(),
        reason: reason.clone(),
        evidence: earlier.into_iter().map(|record| record.audit_id).collect(),
    });
    Ok(Err(Skip(reason)))
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
    let names: Vec<String> = changed
        .iter()
        .map(|(key, at)| {
            let name = ResourceId::from_key(key).map_or_else(|| key.clone(), |id| id.name());
            format!("{name} at {}", timestamp(*at))
        })
        .collect();
    let reason = format!(
        "brake: {} resources changed in the last {} minutes ({}); MAX_CHANGES_PER_WINDOW={max}: so many changes at once look like one cause, which a person should find before more change",
        changed.len(),
        window.num_minutes(),
        names.join(", ")
    );
    if safety.audit.claim_escalation(window, now).await? {
        report.escalation = Some(Escalation {
            kind: "brake".into(),
            reason: reason.clone(),
            evidence: changed.into_iter().map(|(key, _)| key).collect(),
        });
    }
    Ok(Err(Skip(reason)))
}
