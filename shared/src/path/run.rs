//! The run: its reach (by the runbook's mode and the approval it carries out), the event claim,
//! the lease and the cooldown around it, and diagnose → plan → act → verify, planned again when
//! the resource changed under the write.

use std::time::Duration;

use serde_json::Value;

use super::act::{Acted, Budget, Plan, act};
use super::approve::approved_as_made;
use super::{Function, REPLANS, Reach, RunContext, Runbook};
use crate::guards::{Safety, acquire_waiting, cooldown, once, release};
use crate::model::{
    Decision, Ending, Invocation, Mode, RESUMED, Report, ResourceId, Step, TriggerInfo,
};
use crate::store::AuditRecord;

/// How long a run waits for another run on a resource its change is serialised on.
const SERIALISED_WAIT: Duration = Duration::from_secs(10);

/// How long a run waits for another run on the same resource to finish before it is skipped.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn guarded_run<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: R,
    mut report: Report,
) -> Report {
    let safety = ctx.function.safety();
    let resource = runbook.resource(&safety.config.home);
    report.runbook = Some(R::ID.into());
    report.target = Some(resource.name());
    report.resource = Some(resource.key());
    report.put_back = R::PUTS_BACK;
    tracing::Span::current().record("target", resource.name());
    let reach = reach(ctx, R::ID, &resource, &mut report);
    // A run an approval's event holds besides the approved one only plans, and is no run of
    // its own for the scorecard.
    let logged = ctx
        .invocation
        .approving
        .as_deref()
        .is_none_or(|approving| approving.covers(R::ID, &resource));
    if let Err(ending) = runbook.managed(ctx).await {
        let report = ctx.invocation.timed(report.ended(ending));
        if logged {
            safety
                .audit
                .log_run(&report, ctx.invocation.started_at)
                .await;
        }
        return report;
    }
    // Managed through a pattern that names no kind: said last, after what the run did.
    let untyped = resource
        .managed_as()
        .and_then(|(kind, name)| safety.config.managed.untyped_match(kind, name));
    let trigger = report.trigger.clone();
    let dry_run = report.dry_run;
    let guarded = async {
        let mut report = guarded(
            safety,
            &resource,
            report,
            ctx.invocation,
            |record| runbook.cooldown(record),
            async |report: &mut Report| {
                serialised(ctx, &runbook, &resource, reach, report)
                    .await
                    .unwrap_or_else(|ending| ending)
            },
        )
        .await;
        report.notes.extend(untyped);
        if logged {
            safety
                .audit
                .log_run(&report, ctx.invocation.started_at)
                .await;
        }
        report
    };
    // Boxed: a run can hold another (api-errors hands a rollback to its runbook in-process).
    once(
        safety,
        F::NAME,
        &trigger,
        dry_run,
        ctx.invocation,
        Box::pin(guarded),
    )
    .await
}

/// The run's reach; a run that only plans is marked a dry run, and one that carries out an
/// approved plan runs under the plan's trigger, once per plan.
fn reach<'a, F: Function>(
    ctx: &RunContext<'a, F>,
    runbook: &str,
    resource: &ResourceId,
    report: &mut Report,
) -> Reach<'a> {
    let mode = ctx.function.safety().config.modes.of(runbook);
    if let Some(approving) = ctx.invocation.approving.as_deref() {
        if approving.covers(runbook, resource) && mode == Mode::Observe {
            // Moved back to observe since the plan was made: nobody's approval makes it act.
            report.dry_run = true;
            report.approval = Some(approving.approval());
            report.notes.push(format!(
                "plan {} was approved, but {runbook} is now in observe mode (RUNBOOK_MODES, DEFAULT_MODE or DRY_RUN): it only plans",
                approving.plan.plan_id
            ));
            return Reach::Plans;
        }
        if approving.covers(runbook, resource) && !report.dry_run {
            report.trigger = TriggerInfo {
                event_id: Some(approving.event_id()),
                ..approving.plan.trigger.clone()
            };
            report.approval = Some(approving.approval());
            return Reach::Carries(approving);
        }
        report.dry_run = true;
        report.notes.push(format!(
            "handled again to carry out approved plan {} ({} on {}): this run only plans",
            approving.plan.plan_id, approving.plan.runbook, approving.plan.target
        ));
        return Reach::Plans;
    }
    if report.dry_run {
        return Reach::Plans;
    }
    match mode {
        Mode::Observe => {
            report.dry_run = true;
            report.notes.push(format!(
                "{runbook} is in observe mode (RUNBOOK_MODES or DEFAULT_MODE): it plans and reports, and changes nothing"
            ));
            Reach::Plans
        }
        Mode::Approve => Reach::AsksApproval,
        Mode::Auto => Reach::Acts,
    }
}

/// Under the resource's lease, and for a live run the lease of what the change is serialised on.
async fn serialised<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    reach: Reach<'_>,
    report: &mut Report,
) -> Step<Ending> {
    let safety = ctx.function.safety();
    let Some(shared) = runbook
        .serialised_on(&safety.config.home)
        .filter(|_| !report.dry_run)
    else {
        return change(ctx, runbook, resource, reach, report).await;
    };
    match acquire_waiting(safety, &shared, ctx.invocation, SERIALISED_WAIT).await {
        Ok(Ok(())) => {}
        Ok(Err(skip)) => return Err(Ending::skipped(skip.to_string())),
        Err(err) => {
            return Err(Ending::failed(format!(
                "could not take the lease on {}, nothing was changed: {err}",
                shared.name()
            )));
        }
    }
    let ended = change(ctx, runbook, resource, reach, report).await;
    release(safety, &shared, false, ctx.invocation).await;
    ended
}

/// Diagnose → plan → act → verify; again from a fresh read when the resource changed under the
/// write, at most `REPLANS` times.
async fn change<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    reach: Reach<'_>,
    report: &mut Report,
) -> Step<Ending> {
    let mut budget = Budget {
        spend: R::BUDGETED,
        spent: false,
    };
    let mut refused = Vec::new();
    // Boxed: its reads run at once, and their futures outgrow a test thread's stack.
    Box::pin(gather_evidence(ctx, runbook)).await;
    while refused.len() < REPLANS {
        // Boxed, as are the steps below: a run can hold another (api-errors hands a rollback
        // to its runbook in-process), and inline they outgrow a thread's stack.
        let diagnosis = Box::pin(runbook.diagnose(ctx, report)).await;
        if let Some(evidence) = ctx.evidence.get() {
            attach(report, evidence);
        }
        let diagnosis = diagnosis?;
        if let Some((change, summary)) = resume(ctx, runbook, resource, &diagnosis, report) {
            return Ok(Box::pin(runbook.verify(ctx, &diagnosis, change, &summary, report)).await);
        }
        let change = match (reach, runbook.plan(ctx, &diagnosis)) {
            (Reach::Carries(approving), Decision::NoAction(now) | Decision::Skip(now)) => {
                return Err(Ending::skipped(format!(
                    "state changed since the plan was made: it was made from {}, and now: {now}; nothing was applied",
                    approving.plan.state["before"]
                )));
            }
            (_, decision) => decision.into_step()?,
        };
        let planned = runbook.describe(ctx, &change);
        let view = runbook.approval_view(&planned);
        let question = runbook.denial_question(&planned);
        if let Reach::Carries(approving) = reach {
            approved_as_made(approving, resource, R::ID, report, &planned, &view)?;
        }
        let summary = planned.summary.clone();
        let apply = runbook.apply(ctx, &diagnosis, change);
        match Box::pin(act(
            ctx,
            resource,
            Plan {
                runbook: R::ID,
                stack_properties: R::STACK_PROPERTIES,
                reach,
                view: &view,
                question: &question,
            },
            report,
            planned,
            &mut budget,
            apply,
        ))
        .await?
        {
            Acted::Applied(change) => {
                return Ok(
                    Box::pin(runbook.verify(ctx, &diagnosis, change, &summary, report)).await,
                );
            }
            Acted::ChangedUnder(error) => {
                report
                    .notes
                    .push(format!("planned from a state that changed before the write ({error}): read and planned again"));
                refused.push(error);
            }
        }
    }
    Err(Ending::skipped(format!(
        "{} changed under {REPLANS} plans in a row (a deploy or a person is changing it: {}); nothing was changed, it is left to them: run again once they finish",
        resource.name(),
        refused.join("; ")
    )))
}

/// Reads the evidence about the runbook's subject, once per run, before its diagnosis (which
/// may use it: a memory raise needs out-of-memory in the logs).
async fn gather_evidence<F: Function, R: Runbook<F>>(ctx: &RunContext<'_, F>, runbook: &R) {
    let (Some(subject), Some(sources)) =
        (runbook.evidence_subject(), ctx.function.evidence_sources())
    else {
        return;
    };
    let config = &ctx.function.safety().config.evidence;
    let window = crate::path::evidence::window(ctx.alarm, config, chrono::Utc::now());
    let evidence = Box::pin(crate::path::evidence::gather(
        sources, &subject, window, config,
    ))
    .await;
    let _ = ctx.evidence.set(evidence);
}

/// The evidence in the report's `diagnosis.evidence`.
fn attach(report: &mut Report, evidence: &crate::model::Evidence) {
    let Ok(evidence) = serde_json::to_value(evidence) else {
        return;
    };
    match report.diagnosis.as_mut().and_then(Value::as_object_mut) {
        Some(diagnosis) => {
            diagnosis.insert("evidence".into(), evidence);
        }
        None => report.diagnosis = Some(serde_json::json!({"evidence": evidence})),
    }
}

/// The change an earlier attempt of this request (Lambda's retry after a crash) made before it
/// stopped, when the resource shows it: it is verified and recorded instead of planned again,
/// which would change the resource a second time and lose its baseline.
fn resume<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    diagnosis: &R::Diagnosis,
    report: &mut Report,
) -> Option<(R::Change, String)> {
    let observed = runbook.observed(diagnosis)?;
    let mut action = ctx.invocation.landed(resource, &observed)?;
    let change = runbook.resumed(&action)?;
    let summary = runbook.describe(ctx, &change).summary;
    action.applied = true;
    report.notes.push(RESUMED.into());
    report.actions.push(action);
    Some((change, summary))
}

pub async fn guarded(
    safety: &Safety,
    resource: &ResourceId,
    mut report: Report,
    invocation: &Invocation,
    counts: impl Fn(&AuditRecord) -> bool,
    work: impl AsyncFnOnce(&mut Report) -> Ending,
) -> Report {
    let dry_run = report.dry_run;
    let leased = if dry_run {
        Ok(Ok(()))
    } else {
        acquire_waiting(safety, resource, invocation, LEASE_WAIT).await
    };
    let admitted = match leased {
        Ok(Ok(())) => {
            let runbook = report.runbook.clone().unwrap_or_default();
            let cooldown = cooldown(safety, &runbook, resource, counts).await;
            match cooldown {
                Ok(None) => Ok(()),
                Ok(Some(skip)) if report.trigger.kind.is_manual() => {
                    report
                        .notes
                        .push(format!("manual run: overrode the cooldown ({skip})"));
                    Ok(())
                }
                Ok(Some(skip)) => Err(Ending::skipped(skip.to_string())),
                Err(err) => Err(Ending::failed(format!(
                    "the safety checks could not run, nothing was changed: {err}"
                ))),
            }
        }
        Ok(Err(skip)) => return report.ended(Ending::skipped(skip.to_string())),
        Err(err) => {
            return report.ended(Ending::failed(format!(
                "the safety checks could not run, nothing was changed: {err}"
            )));
        }
    };
    let ending = match admitted {
        Ok(()) => work(&mut report).await,
        Err(ending) => ending,
    };
    let mut report = report.ended(ending);
    safety.audit.finish(&mut report, invocation).await;
    release(safety, resource, dry_run, invocation).await;
    report
}
