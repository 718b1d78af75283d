//! A plan in `approve` mode: stored for a person (or pointed at when the same plan already
//! awaits one), and an approved plan applied only as it was made.

use super::{Function, RunContext, withheld};
use crate::model::timestamp;
use crate::model::{
    Approval, ApprovalStatus, Approving, Ending, Escalation, Outcome, Plan, Planned, Report,
    ResourceId, Step, approval_commands, fingerprint, plan_state,
};

/// An approved plan is applied only as it was made: from the same state (the hash of what its
/// actions saw before), with the same actions.
pub(super) fn approved_as_made(
    approving: &Approving,
    resource: &ResourceId,
    runbook: &str,
    report: &mut Report,
    planned: &Planned,
    view: &Planned,
) -> Step<()> {
    let (state, hash) = plan_state(resource, runbook, view);
    let refused = if hash != approving.plan.state_hash {
        format!(
            "state changed since the plan was made: it was made from {}, and it is now {}; nothing was applied",
            approving.plan.state["before"], state["before"]
        )
    } else if fingerprint(&hash, view) != approving.plan.fingerprint {
        format!(
            "the plan made now differs from the approved one (approved: {}; now: {}); nothing was applied: the runbook plans again at its next trigger",
            approving.plan.summary, planned.summary
        )
    } else {
        return Ok(());
    };
    withheld(report, planned.clone(), Ending::skipped(refused))
}

/// Stores the plan for a person's approval (or points at the same plan already awaiting one),
/// and ends the run `awaiting_approval` with the commands that decide it.
// Over 80 lines: the three answers to a plan that needs a person (already asked, already denied,
// asked now) share their lookup and their report.
pub(super) async fn ask_approval<F: Function>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    runbook: &str,
    report: &mut Report,
    planned: &Planned,
    (view, question): (&Planned, &serde_json::Value),
) -> Ending {
    let safety = ctx.function.safety();
    let Some(event) = ctx.invocation.event.as_deref() else {
        return Ending::failed(
            "the plan cannot be stored for approval without the event that made it; nothing was changed",
        );
    };
    let (state, state_hash) = plan_state(resource, runbook, view);
    let fingerprint = fingerprint(&state_hash, view);
    let last = safety
        .audit
        .last_plan(runbook, &resource.key(), &fingerprint)
        .await;
    let (plan, already_requested) = match last {
        // The same plan awaits a person, for the same question: not asked twice. New messages
        // in a DLQ are a new question, asked now (the open plan can no longer be applied: its
        // state is gone).
        Ok(Some(open))
            if open.status == ApprovalStatus::Requested
                && open.plan.expires_at > chrono::Utc::now()
                && open.plan.question == *question =>
        {
            (open.plan, true)
        }
        // A person said no to exactly this plan from exactly this state: not asked again
        // while that plan stands (until it expires), nor for the same question
        // (`Runbook::denial_question`: new messages in a DLQ are a new one). The first run
        // that meets the denial escalates, so that people learn the incident is theirs.
        Ok(Some(denied))
            if denied.status == ApprovalStatus::Denied
                && denied.plan.expires_at > chrono::Utc::now()
                && denied.plan.question == *question =>
        {
            let reason = format!(
                "denied by {}: the same plan from the same state ({}) was denied at {}{}; not asked again until the state changes or the plan expires at {}",
                denied.decided_by.as_deref().unwrap_or("?"),
                denied.plan.plan_id,
                denied.decided_at.as_deref().unwrap_or("?"),
                denied
                    .decided_reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default(),
                timestamp(denied.plan.expires_at)
            );
            // Told once, by the first run that meets the denial.
            let claimed = safety
                .audit
                .claim_denial_escalation(&denied.plan.plan_id, chrono::Utc::now())
                .await;
            match claimed {
                Ok(true) => {
                    report.escalation = Some(Escalation {
                        kind: "denied".into(),
                        reason: reason.clone(),
                        evidence: vec![denied.plan.plan_id.clone()],
                    });
                }
                Ok(false) => {}
                Err(err) => report.notes.push(format!(
                    "whether people were already told of this denial could not be recorded: {err}"
                )),
            }
            return Ending::skipped(reason);
        }
        Ok(_) => {
            let now = chrono::Utc::now();
            let plan = Plan {
                plan_id: uuid::Uuid::new_v4().to_string(),
                function: F::NAME.to_string(),
                runbook: runbook.to_string(),
                resource: resource.key(),
                target: resource.name(),
                state_hash,
                state,
                fingerprint: fingerprint.clone(),
                question: question.clone(),
                actions: planned.actions.clone(),
                then: planned.then.clone(),
                summary: planned.summary.clone(),
                trigger: report.trigger.clone(),
                event: event.clone(),
                created_at: now,
                expires_at: now + safety.config.approval_window,
            };
            if let Err(err) = safety.audit.put_plan(&plan, &fingerprint).await {
                return Ending::failed(format!(
                    "could not store the plan for approval, so nothing was changed: {err}"
                ));
            }
            (plan, false)
        }
        Err(err) => {
            return Ending::failed(format!(
                "could not look up the plans awaiting approval on {}, so nothing was changed: {err}",
                resource.name()
            ));
        }
    };
    let function = safety.config.function_name.as_deref().unwrap_or(F::NAME);
    let expires_at = timestamp(plan.expires_at);
    if already_requested {
        report.notes.push(format!(
            "the same plan ({}) awaits approval since {}: not asked again",
            plan.plan_id,
            timestamp(plan.created_at)
        ));
    }
    report.approval = Some(Approval {
        plan_id: plan.plan_id.clone(),
        status: ApprovalStatus::Requested,
        state_hash: plan.state_hash.clone(),
        expires_at: expires_at.clone(),
        by: None,
        reason: None,
        // The function is invoked where it runs: the hub's region, whatever the plan's.
        commands: Some(approval_commands(
            function,
            &safety.config.hub.region,
            &plan.plan_id,
        )),
        already_requested,
    });
    Ending::new(
        Outcome::AwaitingApproval,
        format!(
            "awaiting approval: would have {}; plan {} can be approved or denied until {expires_at} (approval.commands)",
            planned.summary, plan.plan_id
        ),
    )
}
