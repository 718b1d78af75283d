//! The act step: everything between a plan and its write — the kill switch, the alarm re-check,
//! the owning stack, the brakes, the budget, the dry run or the approval, the intent — and the
//! write itself.

use std::future::Future;

use super::approve::ask_approval;
use super::{Function, Reach, RunContext, withheld};
use crate::guards::{
    AlarmNow, alarm_now, change_brake, owner_of, record_intent, repeat_brake, spend_budget,
};
use crate::model::{
    Action, Ending, NotApplied, Outcome, Planned, Report, ResourceId, StackDrift, Step, TriggerKind,
};

/// What the act step needs to know of the runbook and the run.
#[derive(Clone, Copy)]
pub(super) struct Plan<'a> {
    pub(super) runbook: &'static str,
    pub(super) stack_properties: &'static [&'static str],
    pub(super) reach: Reach<'a>,
    /// The plan as an approval compares it (`Runbook::approval_view`).
    pub(super) view: &'a Planned,
    /// What a denial of it answers (`Runbook::denial_question`).
    pub(super) question: &'a serde_json::Value,
}

/// The action budget of one run: spent once, however often it plans.
pub(super) struct Budget {
    pub(super) spend: bool,
    pub(super) spent: bool,
}

pub(super) enum Acted<C> {
    Applied(C),
    ChangedUnder(String),
}

/// The act step: the budget (an automatic run spends one of its runbook's actions per hour),
/// the dry run (the report lists the exact actions, nothing is written), the kill switch
/// (paused: the actions are listed, nothing is written), the intent on the lease
/// (so that a crashed attempt's retry adopts the change instead of making it twice), the write,
/// and each action marked applied or with its error.
// Over 80 lines: the guards of a write in the order that makes them safe (switch, alarm, stack,
// repeat, brake, budget, intent, write); the order is the point and reads here once.
pub(super) async fn act<F: Function, C>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    plan: Plan<'_>,
    report: &mut Report,
    planned: Planned,
    budget: &mut Budget,
    apply: impl Future<Output = Result<C, NotApplied>>,
) -> Step<Acted<C>> {
    let safety = ctx.function.safety();
    let stack_properties = plan.stack_properties;
    // A plan that asks for approval writes nothing, so the guards of the write wait for the
    // approval, which runs them all.
    let plans_only = report.dry_run || matches!(plan.reach, Reach::AsksApproval);
    // The kill switch, read right before the first write (and again before each write of a
    // re-planned run), and before the budget so that a pause spends none of it: a pause, or a
    // switch that cannot be read, writes nothing. A dry run writes nothing anyway.
    if !plans_only && let Some(paused) = safety.switch.paused().await {
        return withheld(report, planned, Ending::skipped(paused));
    }
    // Still firing? An alarm that recovered since its event is no reason to change anything
    // (a handoff names the alarm that started its sender's run).
    if !plans_only
        && matches!(
            report.trigger.kind,
            TriggerKind::Alarm
                | TriggerKind::AlarmAction
                | TriggerKind::AlarmSns
                | TriggerKind::Handoff
        )
        && let Some(alarm) = report.trigger.name.clone()
    {
        match alarm_now(ctx.function.alarms(), &alarm).await {
            Ok(AlarmNow::Firing) => {}
            Ok(AlarmNow::Gone) => report.notes.push(format!(
                "alarm {alarm} could not be found to re-check before acting (deleted since its event, or an event sent by hand): acted on the event as delivered"
            )),
            Ok(AlarmNow::NotFiring { said: now, .. }) => {
                return withheld(report, planned, Ending::new(
                    Outcome::NoAction,
                    format!("recovered before acting: alarm {alarm} is {now}; nothing was changed"),
                ));
            }
            Err(err) => {
                return withheld(report, planned, Ending::failed(format!(
                    "could not re-read alarm {alarm} right before acting, so nothing was changed: {err}"
                )));
            }
        }
    }
    // A resource of a stack being deployed is the deploy's; one of a stack at rest is changed,
    // and the report hands the drift back. A stack that cannot be read stops the write.
    let owner = match (ctx.function.stacks(), resource.physical_id()) {
        (Some(cloudformation), Some(physical_id))
            if !plans_only && !stack_properties.is_empty() =>
        {
            match owner_of(cloudformation, &physical_id).await {
                Ok(owner) => owner,
                Err(err) => {
                    return withheld(
                        report,
                        planned,
                        Ending::failed(format!(
                            "could not tell whether {} belongs to a stack being deployed, so nothing was changed: {err}",
                            resource.name()
                        )),
                    );
                }
            }
        }
        _ => None,
    };
    if let Some(owner) = owner.as_ref().filter(|owner| owner.deploying()) {
        return withheld(
            report,
            planned,
            Ending::skipped(format!(
                "a deployment is in progress on stack {} ({}), which owns {} as {}: a change now would fight it; once it finishes, a person can run the runbook by hand (an alarm that stays in ALARM does not fire again)",
                owner.stack,
                owner.stack_status,
                resource.name(),
                owner.logical_id
            )),
        );
    }
    // A resource that automatic runs keep changing waits for a person (before the budget, so
    // that it spends none). A put-back (not budgeted) finishes an earlier change and is let by.
    if !plans_only && budget.spend {
        match repeat_brake(safety, resource, report).await {
            Ok(Ok(())) => {}
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.to_string()));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not read the resource's recent changes for the repeat brake, nothing was changed: {err}"
                )));
            }
        }
    }
    // The fleet-wide brake, before the budget (a braked run spends none of it). A slot it
    // gives is given back when the run writes nothing after all, so the window counts only
    // changes made. Put-backs (not budgeted) finish earlier changes and are let by.
    let slot = if !plans_only && budget.spend {
        match change_brake(safety, resource, report).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.to_string()));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not check the change brake, nothing was changed: {err}"
                )));
            }
        }
    } else {
        None
    };
    // Boxed: with the checks above inline, the future outgrows a test thread's stack.
    let acted = Box::pin(write(
        ctx, resource, plan, owner, report, planned, budget, apply,
    ))
    .await;
    if let Some(slot) = slot
        && !matches!(acted, Ok(Acted::Applied(_)))
        && let Err(err) = safety.audit.release_change(&resource.key(), slot).await
    {
        tracing::warn!(error = %err, "a change brake slot was not given back; it lapses with the window");
    }
    acted
}

/// The rest of the act step, once the brakes let the change through: the budget, the dry run,
/// the switch read again, the intent, the write.
#[allow(clippy::too_many_arguments)]
async fn write<F: Function, C>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    plan: Plan<'_>,
    owner: Option<crate::model::Owner>,
    report: &mut Report,
    planned: Planned,
    budget: &mut Budget,
    apply: impl Future<Output = Result<C, NotApplied>>,
) -> Step<Acted<C>> {
    let safety = ctx.function.safety();
    let stack_properties = plan.stack_properties;
    let asks_approval = matches!(plan.reach, Reach::AsksApproval);
    if budget.spend && !budget.spent && !asks_approval {
        match spend_budget(safety, report).await {
            Ok(Ok(())) => budget.spent = true,
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.to_string()));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not check the action budget, nothing was changed: {err}"
                )));
            }
        }
    }
    if report.dry_run {
        let would = format!("dry run: would have {}", planned.summary);
        return withheld(report, planned, Ending::new(Outcome::Planned, would));
    }
    if asks_approval {
        let asked = Box::pin(ask_approval(
            ctx,
            resource,
            plan.runbook,
            report,
            &planned,
            (plan.view, plan.question),
        ))
        .await;
        return withheld(report, planned, asked);
    }
    // Read again: the checks above took their time, and a pause engaged meanwhile holds.
    if let Some(paused) = safety.switch.paused().await {
        return withheld(report, planned, Ending::skipped(paused));
    }
    if let Some(first) = planned.actions.first()
        && let Err(err) = record_intent(safety, resource, ctx.invocation, first).await
    {
        return Err(Ending::failed(format!(
            "could not record the change about to be made, so nothing was changed: {err}"
        )));
    }
    match apply.await {
        Ok(change) => {
            report
                .actions
                .extend(planned.actions.into_iter().map(|action| Action {
                    applied: true,
                    ..action
                }));
            if let Some(owner) = owner {
                let drift = StackDrift::new(owner, stack_properties);
                report.notes.push(drift.note.clone());
                report.stack_drift = Some(drift);
            }
            Ok(Acted::Applied(change))
        }
        Err(NotApplied::ChangedUnder { error }) => Ok(Acted::ChangedUnder(error)),
        Err(NotApplied::Failed { error, reason }) => {
            report
                .actions
                .extend(planned.actions.into_iter().map(|action| Action {
                    error: Some(error.clone()),
                    ..action
                }));
            Err(Ending::failed(reason))
        }
    }
}
