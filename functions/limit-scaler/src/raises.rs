//! The raise records limit-scaler keeps in the audit table, as the schedule's steps read and
//! close them: when a raise is due to go back, whether it is still the one listed, and the end
//! of its tracking.

use runbook_shared::model::{Check, Ending, Report, Step, Verification, concluded};
use runbook_shared::path::RunContext;
use runbook_shared::store::Raise;

use crate::{Scaler, ScalerRunbook};

impl Scaler {
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
