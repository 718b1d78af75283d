//! Each event acted on once: a conditional write claims the event id, a re-delivery gets the
//! first report back, and the retry of a crashed attempt (the same request id) takes its claim
//! over.

use std::future::Future;

use super::{LEASE_GRACE, Safety};
use crate::model::{Invocation, Outcome, Report, TriggerInfo};
use crate::store::EventClaim;

/// Runs `handle` once per event id and finishes its report (audit record, duration): a
/// re-delivered event gets the first report back unchanged, and a delivery racing another
/// one is skipped; the retry of a crashed attempt (the same request id) takes its claim
/// over. Dry runs and events without an id run as they are.
pub async fn once<F>(
    safety: &Safety,
    function: &str,
    trigger: &TriggerInfo,
    dry_run: bool,
    invocation: &Invocation,
    handle: F,
) -> Report
where
    F: Future<Output = Report>,
{
    // Handling a plan's event again for its approval: only the approved run writes.
    if let Some(approving) = invocation.approving.as_deref()
        && !dry_run
        && trigger.event_id.as_deref() != Some(approving.event_id().as_str())
    {
        let mut report = Report::new(
            function,
            trigger.clone(),
            Outcome::Skipped,
            format!(
                "handled again to carry out approved plan {}: only its own run writes",
                approving.plan.plan_id
            ),
        );
        safety.audit.finish(&mut report, invocation).await;
        return report;
    }
    let Some(event_id) = trigger.event_id.clone().filter(|_| !dry_run) else {
        let mut report = handle.await;
        safety.audit.finish(&mut report, invocation).await;
        return report;
    };
    let mut report = match safety
        .audit
        .claim_event(
            &event_id,
            &invocation.request_id,
            invocation.deadline.wall() + LEASE_GRACE,
        )
        .await
    {
        Err(err) => Report::new(
            function,
            trigger.clone(),
            Outcome::Failed,
            format!(
                "could not record event {event_id} in the audit table, so nothing was done: {err}"
            ),
        ),
        Ok(EventClaim::Completed(report)) => return *report,
        Ok(EventClaim::InFlight) => Report::new(
            function,
            trigger.clone(),
            Outcome::Skipped,
            format!("duplicate delivery: event {event_id} is being handled by another invocation"),
        ),
        Ok(EventClaim::Claimed { resumed }) => {
            let mut report = handle.await;
            if resumed {
                report.notes.push(format!(
                    "resumed event {event_id} after an earlier attempt of request {} ended without a report",
                    invocation.request_id
                ));
            }
            safety.audit.finish(&mut report, invocation).await;
            if let Err(err) = safety.audit.complete_event(&event_id, &report).await {
                tracing::error!(event_id, error = %err, "could not store the event's report; a re-delivery will run again under the cooldown and lease");
            }
            return report;
        }
    };
    safety.audit.finish(&mut report, invocation).await;
    report
}
