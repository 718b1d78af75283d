//! Approvals: a runbook in `approve` mode stores its plan (the state it was made from, the
//! exact actions, an expiry) and a person approves or denies it by invoking the function that
//! made it. An approval handles the plan's event again: the runbook diagnoses afresh, and only
//! when the state and the plan are the ones approved does it apply them, under every guard of
//! the shared path, at most once.

use std::future::Future;
use std::pin::Pin;

use chrono::Utc;
use serde_json::{Map, Value};

use crate::guards::Safety;
use crate::model::timestamp;
use crate::model::{
    Approval, ApprovalRequest, ApprovalStatus, Approving, Invocation, Outcome, Output, Plan,
    PlanRecord, Report, TriggerInfo, approval_event_id,
};

/// Handles the plan's event again as an approval: what the function does with any event
/// (`answer`'s dispatch).
pub type Replay<'a> =
    Box<dyn FnOnce(Value, Invocation) -> Pin<Box<dyn Future<Output = Output> + 'a>> + 'a>;

/// The report of a decision that arrives where none can be taken: inside an approval's own
/// event (which is never an approval payload, as none makes a plan).
pub fn refused(function: &str, info: TriggerInfo, invocation: &Invocation) -> Report {
    invocation.timed(Report::rejected(
        function,
        info,
        "an approval's event cannot itself be an approval",
    ))
}

/// Serves an approve or deny payload sent to `function`: a payload it cannot read is rejected.
pub async fn serve(
    safety: &Safety,
    function: &str,
    payload: &Map<String, Value>,
    invocation: &Invocation,
    replay: Replay<'_>,
) -> Report {
    // A person's decision, under the invocation's request id.
    let info = TriggerInfo {
        kind: crate::model::TriggerKind::Manual,
        name: None,
        event_id: Some(invocation.request_id.clone()),
    };
    match ApprovalRequest::parse(payload) {
        Ok(request) => Box::pin(decide(safety, function, request, info, invocation, replay)).await,
        Err(rejection) => invocation.timed(Report::rejected(function, info, rejection.0)),
    }
}

/// Carries out a person's decision on a plan of `function`; `replay` handles the plan's event
/// again for an approval.
pub async fn decide(
    safety: &Safety,
    function: &str,
    request: ApprovalRequest,
    info: TriggerInfo,
    invocation: &Invocation,
    replay: Replay<'_>,
) -> Report {
    let report = |outcome, reason: String| Report::new(function, info.clone(), outcome, reason);
    if invocation.approving.is_some() {
        return invocation.timed(report(
            Outcome::Rejected,
            "an approval's event cannot itself be an approval".into(),
        ));
    }
    let record = match safety.audit.plan(&request.plan_id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return invocation.timed(report(
                Outcome::Rejected,
                format!(
                    "no plan {} in audit table {}: give the plan id of an awaiting_approval report of {function} (plans are kept AUDIT_RETENTION_DAYS)",
                    request.plan_id,
                    safety.audit.table()
                ),
            ));
        }
        Err(err) => {
            return invocation.timed(report(
                Outcome::Failed,
                format!(
                    "could not read plan {}, so nothing was decided: {err}",
                    request.plan_id
                ),
            ));
        }
    };
    if record.plan.function != function {
        return invocation.timed(report(
            Outcome::Rejected,
            format!(
                "plan {} was made by {}: invoke that function to decide it; nothing was decided",
                request.plan_id, record.plan.function
            ),
        ));
    }
    let mut decided = report(Outcome::Skipped, String::new());
    decided.runbook = Some(record.plan.runbook.clone());
    decided.target = Some(record.plan.target.clone());
    decided.resource = Some(record.plan.resource.clone());
    decided.actions = record.plan.actions.clone();
    let ending = Box::pin(decision(safety, &request, &record, invocation, replay)).await;
    let (mut decided, recorded) = match ending {
        Decided::Report(report) => return *report,
        Decided::Ended(status, outcome, reason) => {
            decided.approval = Some(Approval {
                plan_id: record.plan.plan_id.clone(),
                status,
                state_hash: record.plan.state_hash.clone(),
                expires_at: timestamp(record.plan.expires_at),
                by: Some(request.by.clone()),
                reason: Some(request.reason.clone()).filter(|reason| !reason.is_empty()),
                commands: None,
                already_requested: false,
            });
            (
                decided.finish(outcome, reason),
                matches!(status, ApprovalStatus::Denied | ApprovalStatus::Expired)
                    && record.status == ApprovalStatus::Requested,
            )
        }
    };
    decided = invocation.timed(decided);
    // A decision this call recorded is a run of the runbook for the scorecard; reading back
    // one made before is not.
    if recorded && decided.outcome != Outcome::Failed {
        safety.audit.log_run(&decided, invocation.started_at).await;
    }
    decided
}

enum Decided {
    /// The report of the approved plan's run (or of its first approval).
    Report(Box<Report>),
    /// No run: the decision recorded (or refused), with the plan's status.
    Ended(ApprovalStatus, Outcome, String),
}

// Over 80 lines: a person's decision, checked in the order that keeps it at most once (the plan,
// its status, its expiry, the claim), then the replay; split, that order would be spread out.
async fn decision(
    safety: &Safety,
    request: &ApprovalRequest,
    record: &PlanRecord,
    invocation: &Invocation,
    replay: Replay<'_>,
) -> Decided {
    let plan = &record.plan;
    let id = &plan.plan_id;
    let now = Utc::now();
    let expired = || {
        Decided::Ended(
            ApprovalStatus::Expired,
            Outcome::Skipped,
            format!(
                "approval expired: plan {id} could be decided until {} (APPROVAL_MINUTES); nothing was applied, and the runbook plans again at its next trigger",
                timestamp(plan.expires_at)
            ),
        )
    };
    let meanwhile = || {
        Decided::Ended(
            record.status,
            Outcome::Skipped,
            format!(
                "plan {id} was decided by someone else (or expired) meanwhile; nothing was applied by this call: invoke again to see its decision"
            ),
        )
    };
    let decided_before = |record: &PlanRecord| {
        format!(
            "by {} at {}{}",
            record.decided_by.as_deref().unwrap_or("?"),
            record.decided_at.as_deref().unwrap_or("?"),
            record
                .decided_reason
                .as_deref()
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        )
    };
    match record.status {
        ApprovalStatus::Requested if plan.expires_at <= now => {
            let recorded = safety
                .audit
                .decide_plan(
                    id,
                    ApprovalStatus::Expired,
                    &request.by,
                    "no decision before the expiry",
                    now,
                )
                .await;
            match recorded {
                Ok(true) => expired(),
                Ok(false) => meanwhile(),
                Err(err) => Decided::Ended(
                    ApprovalStatus::Expired,
                    Outcome::Failed,
                    format!("plan {id} has expired, but its expiry could not be recorded: {err}"),
                ),
            }
        }
        ApprovalStatus::Requested => {
            let status = if request.approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            match safety
                .audit
                .decide_plan(id, status, &request.by, &request.reason, now)
                .await
            {
                Ok(true) if request.approve => carry_out(request, plan, invocation, replay).await,
                Ok(true) => Decided::Ended(
                    ApprovalStatus::Denied,
                    Outcome::Skipped,
                    format!(
                        "denied by {}: {}; plan {id} will not run, nothing was applied",
                        request.by, request.reason
                    ),
                ),
                Ok(false) => meanwhile(),
                Err(err) => Decided::Ended(
                    record.status,
                    Outcome::Failed,
                    format!(
                        "could not record the decision on plan {id}, so nothing was applied: {err}"
                    ),
                ),
            }
        }
        ApprovalStatus::Approved if request.approve => {
            // At most once: a second approval answers with the first one's report.
            match safety.audit.event_report(&approval_event_id(id)).await {
                Ok(Some(report)) => Decided::Report(Box::new(report)),
                // Approved, but its run left no report (it crashed, or did not reach the write): it
                // may be carried out again until the plan's expiry, once (the event claim).
                Ok(None) if plan.expires_at > now => {
                    carry_out(request, plan, invocation, replay).await
                }
                Ok(None) => Decided::Ended(
                    ApprovalStatus::Approved,
                    Outcome::Skipped,
                    format!(
                        "plan {id} was approved {}, but not carried out before its expiry at {}; nothing was applied, and the runbook plans again at its next trigger",
                        decided_before(record),
                        timestamp(plan.expires_at)
                    ),
                ),
                Err(err) => Decided::Ended(
                    ApprovalStatus::Approved,
                    Outcome::Failed,
                    format!("could not read the report of approved plan {id}: {err}"),
                ),
            }
        }
        ApprovalStatus::Approved => Decided::Ended(
            ApprovalStatus::Approved,
            Outcome::Skipped,
            format!(
                "plan {id} was approved {}; a denial cannot undo it now",
                decided_before(record)
            ),
        ),
        ApprovalStatus::Denied => Decided::Ended(
            ApprovalStatus::Denied,
            Outcome::Skipped,
            format!(
                "plan {id} was denied {}; nothing was applied",
                decided_before(record)
            ),
        ),
        ApprovalStatus::Expired => expired(),
    }
}

/// Handles the plan's event again with the approval: the report of the run that covers the
/// plan is the approval's report.
async fn carry_out(
    request: &ApprovalRequest,
    plan: &Plan,
    invocation: &Invocation,
    replay: Replay<'_>,
) -> Decided {
    let approving = Approving {
        plan: plan.clone(),
        by: request.by.clone(),
        reason: request.reason.clone(),
    };
    let output = replay(plan.event.clone(), invocation.approving(approving)).await;
    let reports = match output {
        Output::One(report) => vec![*report],
        Output::Sweep { reports } => reports,
    };
    // The approved run's report: it carries the approval, or (when its event claim could not
    // be taken: a fault, another approval in flight) the approval's event id.
    let carried = approval_event_id(&plan.plan_id);
    let (covered, others): (Vec<Report>, Vec<Report>) = reports.into_iter().partition(|report| {
        report
            .approval
            .as_ref()
            .is_some_and(|approval| approval.plan_id == plan.plan_id)
            || report.trigger.event_id.as_deref() == Some(carried.as_str())
    });
    if let Some(report) = covered.into_iter().next() {
        return Decided::Report(Box::new(report));
    }
    Decided::Ended(
        ApprovalStatus::Approved,
        Outcome::Skipped,
        format!(
            "approved by {}, but handling its event again no longer reaches {} on {} ({}); nothing was applied",
            request.by,
            plan.runbook,
            plan.target,
            others
                .iter()
                .map(|report| format!("{}: {}", json_text(&report.outcome), report.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    )
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}
