//! What a redrive did: the actions as they happened (what each target accepted, what left the
//! DLQ), a ledger that must reconcile with the DLQ's depth after the run, and notes on every
//! message it left behind and why.

use std::time::Duration;

use runbook_shared::deadline::{Deadline, poll_until};
use runbook_shared::model::Ending;
use runbook_shared::model::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus, capped, some_of,
};
use runbook_shared::path::RunContext;
use serde_json::{Value, json};

use super::ledger::{Ledger, RedrivePlan, RedriveResult};
use crate::Redriver;
use crate::queues::{self, Queue};

/// Reconciles the run's result with the DLQ and the targets, and says what happened.
pub(super) async fn reconcile(
    ctx: &RunContext<'_, Redriver>,
    plan: &RedrivePlan,
    result: RedriveResult,
    report: &mut Report,
) -> Ending {
    let dlq = &plan.dlq;
    let candidates = plan.candidates();
    let expected = dlq.depth() - i64::try_from(result.ledger.moved).unwrap_or(i64::MAX);
    let dlq_after = settled_depth(ctx, dlq, expected).await;
    let mut ledger: Ledger = result.ledger.clone();
    ledger.found = dlq.depth();
    let mut checks = ledger_checks(&mut ledger, expected, &dlq_after);
    // The actions as they happened, in place of the plan's.
    report.actions = actions_as_happened(ctx, dlq, &candidates, &result, &dlq_after).await;
    let verified = checks.iter().all(|check| check.ok);
    let open = match &dlq_after {
        Ok(after) if verified && ledger.moved > 0 => {
            Some(stays_out(after, dlq, &candidates, &result))
        }
        _ => None,
    };
    if open.is_some() {
        checks.push(crate::returned::stayed_out(ledger.moved, &dlq.name));
    }
    report.verification = Verification {
        status: if open.is_some() {
            VerificationStatus::Pending
        } else if verified {
            VerificationStatus::Verified
        } else {
            VerificationStatus::Failed
        },
        settle_by: open,
        checks,
    };
    ctx.settle_returned(dlq, &result.returned, report).await;
    report.details = Some(details(plan, &ledger, &result));
    let notes = notes(plan, &ledger, &result);
    let summary = format!(
        "redrove {} of {} messages from {} to {}",
        ledger.moved,
        ledger.found,
        dlq.name,
        if result.moved_to.is_empty() {
            "no queue".to_string()
        } else {
            result
                .moved_to
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let reason = std::iter::once(summary)
        .chain(notes)
        .collect::<Vec<_>>()
        .join("; ");
    let failures = report.verification.failures();
    let outcome = if let Some(err) = &result.error {
        return Ending::failed(format!("{reason}; stopped by {err}"));
    } else if !verified {
        return Ending::failed(format!(
            "{reason}; the counts do not reconcile ({failures}): the DLQ changed during the run, or the consumer is still failing"
        ));
    } else if ledger.moved > 0 {
        Outcome::Remediated
    } else if ledger.unroutable > 0 {
        Outcome::Rejected
    } else {
        Outcome::NoAction
    };
    Ending::new(outcome, reason)
}

/// The DLQ after the run. SQS counts are approximate and lag: waits (within the deadline, 20 s
/// at most) for its depth to reach `expected`, else reads it once more as it is.
async fn settled_depth(
    ctx: &RunContext<'_, Redriver>,
    dlq: &Queue,
    expected: i64,
) -> Result<Queue, runbook_shared::aws::AwsError> {
    let settle = Deadline::within(
        ctx.invocation
            .wait_deadline()
            .remaining()
            .min(Duration::from_secs(20)),
    );
    let dlq_after = poll_until(settle, ctx.poll_interval, || async {
        match queues::describe(&ctx.clients.sqs, &dlq.name, &dlq.url).await {
            Ok(after) if after.depth() == expected => Some(Ok(after)),
            Ok(_) => None,
            Err(err) => Some(Err(err)),
        }
    })
    .await;
    match dlq_after {
        Some(Ok(after)) => Ok(after),
        Some(Err(err)) => Err(err),
        None => queues::describe(&ctx.clients.sqs, &dlq.name, &dlq.url).await,
    }
}

/// The ledger's check (every message found is accounted for) and the DLQ's depth check;
/// fills in what remains.
fn ledger_checks(
    ledger: &mut Ledger,
    expected: i64,
    dlq_after: &Result<Queue, runbook_shared::aws::AwsError>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    match dlq_after {
        Ok(after) => {
            ledger.remaining = after.depth() - i64::try_from(ledger.held()).unwrap_or(i64::MAX);
            checks.push(Check::new(
                    "ledger",
                    ledger.total() == ledger.found,
                    format!("moved + poison + refused + filtered out + attribute limit + too large + unroutable + held behind + not deleted + remaining = {} found", ledger.found),
                    format!(
                        "{} + {} + {} + {} + {} + {} + {} + {} + {} + {} = {}",
                        ledger.moved, ledger.poison, ledger.refused, ledger.filtered_out, ledger.attribute_limit,
                        ledger.too_large, ledger.unroutable, ledger.held_behind, ledger.not_deleted, ledger.remaining, ledger.total()
                    ),
                ));
            checks.push(Check::new(
                "dlq_depth",
                after.depth() == expected,
                format!(
                    "{expected} (found {} − moved {})",
                    ledger.found, ledger.moved
                ),
                format!(
                    "{} ({} visible, {} in flight)",
                    after.depth(),
                    after.visible,
                    after.in_flight
                ),
            ));
        }
        Err(err) => checks.push(Check::new(
            "dlq_depth",
            false,
            expected.to_string(),
            format!("could not read: {err}"),
        )),
    }
    checks
}

/// What each target accepted (a copy left in the DLQ included), and what left the DLQ.
async fn actions_as_happened(
    ctx: &RunContext<'_, Redriver>,
    dlq: &Queue,
    candidates: &[&Queue],
    result: &RedriveResult,
    dlq_after: &Result<Queue, runbook_shared::aws::AwsError>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for target in candidates {
        let accepted = result.accepted_by.get(&target.name).copied().unwrap_or(0);
        if accepted == 0 {
            continue;
        }
        let after = queues::describe(&ctx.clients.sqs, &target.name, &target.url)
            .await
            .ok();
        actions.push(Action {
            api: "sqs:SendMessageBatch".into(),
            target: target.name.clone(),
            before: json!({"depth": target.depth()}),
            after: json!({"depth": after.as_ref().map(Queue::depth), "accepted": accepted}),
            applied: true,
            error: None,
        });
    }
    if result.ledger.moved > 0 || result.ledger.not_deleted > 0 {
        actions.push(Action {
                api: "sqs:DeleteMessageBatch".into(),
                target: dlq.name.clone(),
                before: json!({"depth": dlq.depth()}),
                after: json!({"depth": dlq_after.as_ref().ok().map(Queue::depth), "deleted": result.ledger.moved}),
                applied: result.ledger.moved > 0,
                error: (result.ledger.not_deleted > 0).then(|| format!("{} messages were sent but not deleted (duplicates, never losses)", result.ledger.not_deleted)),
            });
    }
    if let Some(err) = &result.error
        && actions.is_empty()
    {
        actions.push(Action {
            api: err.api.clone(),
            target: dlq.name.clone(),
            before: json!({"depth": dlq.depth()}),
            after: json!({"depth": dlq_after.as_ref().ok().map(Queue::depth)}),
            applied: false,
            error: Some(err.to_string()),
        });
    }
    actions
}

/// Moved messages stay out only if their consumer now takes them: the check stays open for
/// the verification window (settled failed by a message that comes back, else by the sweep on
/// the DLQ's depth: more than this run left means failures are arriving again).
fn stays_out(
    after: &Queue,
    dlq: &Queue,
    candidates: &[&Queue],
    result: &RedriveResult,
) -> SettleBy {
    SettleBy::QueueDepth {
        name: dlq.name.clone(),
        url: dlq.url.clone(),
        // The sweep counts delayed messages too.
        below: after.depth() + after.delayed + 1,
        not_before: Some(
            chrono::Utc::now()
                + chrono::Duration::seconds(
                    candidates
                        .iter()
                        .filter(|target| {
                            result.accepted_by.get(&target.name).is_some_and(|n| *n > 0)
                        })
                        .map(|target| target.fails_back_after_seconds)
                        .max()
                        .unwrap_or(0),
                ),
        ),
    }
}

/// The plan, the ledger and every message left behind, capped, for the report's details.
fn details(plan: &RedrivePlan, ledger: &Ledger, result: &RedriveResult) -> Value {
    let complete = result.stopped_early.is_none() && result.error.is_none();
    let seconds = result.elapsed.as_secs_f64().max(0.001);
    json!({
        "plan": {
            "max_messages": plan.max_messages,
            "rate_per_second": plan.rate_per_second,
            "concurrency": plan.concurrency,
            "max_redrives": plan.max_redrives,
            "filter": plan.filter,
            "fallback_target": plan.fallback.as_ref().map(|q| q.name.as_str()),
        },
        "ledger": ledger,
        "complete": complete,
        "stopped_early": result.stopped_early,
        "moved_to": result.moved_to,
        "poison_ids": capped(&result.poison_ids),
        "refused": capped(&result.refused),
        "unroutable": capped(&result.unroutable),
        "attribute_limit_ids": capped(&result.attribute_limit_ids),
        "too_large_ids": capped(&result.too_large_ids),
        "held_behind_ids": capped(&result.held_behind_ids),
        "retargeted": capped(&result.retargeted),
        "not_deleted_ids": capped(&result.not_deleted_ids),
        "not_released_ids": capped(&result.not_released_ids),
        "api_calls": result.api_calls,
        "api_calls_per_message": if ledger.moved > 0 { result.api_calls as f64 / ledger.moved as f64 } else { 0.0 },
        "messages_per_second": ledger.moved as f64 / seconds,
    })
}

/// A note on every message the run left behind, and why.
// Over 80 lines: one note per kind of message left behind, in the order people act on them.
fn notes(plan: &RedrivePlan, ledger: &Ledger, result: &RedriveResult) -> Vec<String> {
    let dlq = &plan.dlq;
    let mut notes = Vec::new();
    if ledger.poison > 0 {
        notes.push(format!(
                "{} poison messages (redriven {} times already) left in the DLQ: {}; inspect them, then purge once resolved",
                ledger.poison,
                plan.max_redrives,
                some_of(&result.poison_ids, 10)
            ));
    }
    let (former, nameless): (Vec<&Value>, Vec<&Value>) = result
        .unroutable
        .iter()
        .partition(|entry| entry["named_source"].is_string());
    if !nameless.is_empty() {
        notes.push(format!(
                "{} messages name no source queue and {} has several sources ({}): redrive them with \"target\"",
                nameless.len(),
                dlq.name,
                some_of(&plan.sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), 10)
            ));
    }
    if !former.is_empty() {
        let mut named: Vec<String> = former
            .iter()
            .filter_map(|entry| entry["named_source"].as_str().map(str::to_string))
            .collect();
        named.sort();
        named.dedup();
        notes.push(format!(
                "{} messages come from queues that are no longer sources of {} ({}): they stay in the DLQ (another team's consumer is no place for them); redrive them with \"target\" to send them elsewhere",
                former.len(),
                dlq.name,
                some_of(&named, 5)
            ));
    }
    if result.lambda_records > 0 {
        notes.push(format!(
                "{} of the messages sent were Lambda failure records (OnFailure destination), sent as they are: each holds the original event in requestPayload",
                result.lambda_records
            ));
    }
    if !result.retargeted.is_empty() {
        notes.push(format!(
                "{} messages that name another queue were sent to the target you named (details.retargeted)",
                result.retargeted.len()
            ));
    }
    if ledger.too_large > 0 {
        notes.push(format!(
                "{} messages would exceed the target's MaximumMessageSize with the redrive-count attribute: left in the DLQ ({})",
                ledger.too_large,
                some_of(&result.too_large_ids, 10)
            ));
    }
    if ledger.held_behind > 0 {
        notes.push(format!(
                "{} FIFO messages held behind an earlier message of their group that stayed, so that none overtakes it",
                ledger.held_behind
            ));
    }
    if !result.not_released_ids.is_empty() {
        notes.push(format!(
                "{} held messages were not made visible again before the deadline: they reappear when their visibility timeout ends",
                result.not_released_ids.len()
            ));
    }
    if ledger.refused > 0 {
        notes.push(format!(
            "{} refused by the target and left in the DLQ",
            ledger.refused
        ));
    }
    if ledger.attribute_limit > 0 {
        notes.push(format!(
                "{} already carry 10 message attributes, so redrive-count cannot be added: left in the DLQ ({})",
                ledger.attribute_limit,
                some_of(&result.attribute_limit_ids, 10)
            ));
    }
    if ledger.filtered_out > 0 {
        notes.push(format!("{} did not match the filter", ledger.filtered_out));
    }
    if let Some(stopped) = result
        .stopped_early
        .as_ref()
        .filter(|_| result.error.is_none())
    {
        notes.push(format!(
            "stopped early ({stopped}) with {} messages remaining: the next run continues",
            ledger.remaining.max(0)
        ));
    }
    notes
}
