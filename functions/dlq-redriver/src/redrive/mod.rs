//! `redrive`: messages back to where they came from.
//!
//! Where each message goes: one that names its source (`DeadLetterQueueSourceArn`) goes back to
//! that queue while it is still a source of the DLQ, and only there; one that names a queue that
//! is no longer a source is `unroutable` unless a person named a `target` (re-targeted, listed
//! per message); one that names none goes to the `target`, else to the single source.
//!
//! Diagnose (the DLQ's depth, found when it was located; before an automatic redrive, whether
//! each source's consumer is well again, `consumer`) → plan (the fallback target, the rate, the
//! filter) → act (the engine: batches of 10, deleting only what a target accepted) → verify
//! (a ledger that must reconcile with the DLQ's depth after the run).

mod consumer;
mod engine;
mod fifo;
mod ledger;
mod outcome;
mod routing;

use runbook_shared::model::{Action, Report, capped, some_of};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use runbook_shared::store::AuditRecord;
use serde_json::json;

use crate::queues::{Queue, require_managed};
use crate::request::Job;
use crate::{RUNBOOK, Redriver};

pub use crate::filter::MessageFilter;
pub use ledger::{Ledger, RedrivePlan, RedriveResult};

/// A redrive of a located DLQ: its sources, and the target a person named, if any.
pub struct Redrive {
    pub dlq: Queue,
    pub sources: Vec<Queue>,
    pub target: Option<Queue>,
    pub job: Job,
}

/// The plan, and once applied, what the engine did.
pub struct RedriveRun {
    plan: RedrivePlan,
    result: Option<RedriveResult>,
}

impl RedrivePlan {
    /// Every queue messages may go to: the sources, and the fallback if it is none of them.
    fn candidates(&self) -> Vec<&Queue> {
        match &self.fallback {
            Some(fallback) if !self.sources.iter().any(|s| s.url == fallback.url) => {
                self.sources.iter().chain([fallback]).collect()
            }
            _ => self.sources.iter().collect(),
        }
    }
}

impl Runbook<Redriver> for Redrive {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = ();
    type Change = RedriveRun;

    fn resource(&self, home: &Home) -> ResourceId {
        home.queue(&self.dlq.name)
    }

    fn evidence_subject(&self) -> Option<runbook_shared::model::Subject> {
        Some(runbook_shared::model::Subject::Queue {
            name: self.dlq.name.clone(),
        })
    }

    /// The DLQ, and every queue it sends to: messages go back into the sources (and the
    /// target), so those are changed too.
    async fn managed(&self, ctx: &RunContext<'_, Redriver>) -> Step<()> {
        let (sqs, policy) = (&ctx.clients.sqs, &ctx.config.safety.managed);
        let dlq = &self.dlq.name;
        require_managed(sqs, policy, &self.dlq, None).await?;
        for source in &self.sources {
            let why = format!("{dlq} redrives into {}", source.name);
            require_managed(sqs, policy, source, Some(why)).await?;
        }
        if let Some(target) = &self.target
            && !self.sources.iter().any(|source| source.url == target.url)
        {
            let why = format!("target {} is not a source of {dlq}", target.name);
            require_managed(sqs, policy, target, Some(why)).await?;
        }
        Ok(())
    }

    /// A redrive cut short by the deadline does not start a cooldown: the next run continues it.
    fn cooldown(&self, record: &AuditRecord) -> bool {
        record
            .report
            .details
            .as_ref()
            .is_some_and(|details| details["complete"] == json!(true))
    }

    /// The DLQ's depth, and its sources' consumers: an automatic redrive into a consumer that
    /// still fails is skipped (its messages would come straight back); a person's redrive goes
    /// ahead with the warning.
    async fn diagnose(&self, ctx: &RunContext<'_, Redriver>, report: &mut Report) -> Step<()> {
        let dlq = &self.dlq;
        report.diagnosis = Some(json!({
            "dlq": dlq,
            "sources": capped(&self.sources.iter().map(|source| source.name.as_str()).collect::<Vec<_>>()),
        }));
        if dlq.depth() == 0 && dlq.delayed == 0 {
            return Err(Ending::no_action(format!(
                "{} is empty: nothing to redrive",
                dlq.name
            )));
        }
        let manual = report.trigger.kind.is_manual();
        let minutes = ctx.config.consumer_healthy_minutes;
        // Boxed: with its reads inline, the diagnosis outgrows a test thread's stack.
        let check = match Box::pin(ctx.check_consumers(&self.sources, minutes)).await {
            Ok(check) => check,
            Err(err) if manual => {
                report.notes.push(format!(
                    "warning: the consumers of {} could not be checked ({err}); redriven as a person asked",
                    dlq.name
                ));
                return Ok(());
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not check whether the consumers of {} are well again, so nothing was redriven: {err}",
                    dlq.name
                )));
            }
        };
        if let Some(diagnosis) = report.diagnosis.as_mut() {
            diagnosis["consumers"] = json!(check);
        }
        if !check.unchecked.is_empty() {
            report.notes.push(format!(
                "no Lambda event source mapping reads from {}: those consumers could not be checked",
                some_of(&check.unchecked, 10)
            ));
        }
        if check.failing.is_empty() {
            return Ok(());
        }
        let failing = format!("consumer still failing: {}", check.failing.join("; "));
        if manual {
            report.notes.push(format!(
                "warning: {failing}; redriven anyway, as a person asked: messages may come back"
            ));
            return Ok(());
        }
        Err(Ending::skipped(format!(
            "{failing}; nothing was redriven, as its messages would come straight back: fix the consumer, then redrive by hand or let the next run do it"
        )))
    }

    /// Messages that name no source go to the person's target, else to the single source.
    fn plan(&self, ctx: &RunContext<'_, Redriver>, _: &()) -> Decision<RedriveRun> {
        let fallback = match (&self.target, self.sources.as_slice()) {
            (Some(target), _) => Some(target.clone()),
            (None, [single]) => Some(single.clone()),
            (None, _) => None,
        };
        Decision::Act(RedriveRun {
            plan: RedrivePlan {
                dlq: self.dlq.clone(),
                sources: self.sources.clone(),
                retarget: self.target.is_some(),
                fallback,
                max_messages: self.job.max_messages,
                rate_per_second: self.job.rate_per_second,
                filter: self.job.filter.clone(),
                max_redrives: ctx.config.max_redrives,
                concurrency: ctx.config.concurrency,
            },
            result: None,
        })
    }

    /// The queues it redrives into, without the depths: messages keep arriving during an
    /// incident, and the redrive's own limits (MAX_MESSAGES_PER_RUN, the rate, the poison
    /// count) bound what an approval moves.
    fn approval_view(&self, planned: &Planned) -> Planned {
        let mut view = planned.clone();
        for action in &mut view.actions {
            action.before = serde_json::Value::Null;
            action.after = serde_json::Value::Null;
        }
        view
    }

    /// A denial answers the DLQ's messages as they were: more of them are a new question (the
    /// target queues' own backlogs are not).
    fn denial_question(&self, planned: &Planned) -> serde_json::Value {
        let targets: Vec<&str> = planned
            .actions
            .iter()
            .map(|action| action.target.as_str())
            .collect();
        let depth = planned
            .actions
            .first()
            .map_or(serde_json::Value::Null, |action| {
                action.before["dlq_depth"].clone()
            });
        json!({"dlq_depth": depth, "targets": targets})
    }

    fn describe(&self, _: &RunContext<'_, Redriver>, run: &RedriveRun) -> Planned {
        let (plan, dlq) = (&run.plan, &self.dlq);
        let candidates = plan.candidates();
        let moves_up_to = plan
            .max_messages
            .min(u32::try_from(dlq.depth()).unwrap_or(u32::MAX));
        let actions = candidates
            .iter()
            .take(runbook_shared::model::LIST_CAP)
            .map(|target| Action {
                api: "sqs:SendMessageBatch".into(),
                target: target.name.clone(),
                before: json!({"dlq_depth": dlq.depth(), "target_depth": target.depth()}),
                after: json!({"moves_up_to": moves_up_to}),
                applied: false,
                error: None,
            })
            .collect();
        let names: Vec<String> = candidates.iter().map(|q| q.name.clone()).collect();
        let summary = format!(
            "redriven up to {} of the {} messages in {} to {} at {}/s, leaving messages redriven {} times as poison",
            plan.max_messages,
            dlq.depth(),
            dlq.name,
            if plan.fallback.is_some() || plan.sources.len() == 1 {
                some_of(&names, 10)
            } else {
                format!("their own sources among {}", some_of(&names, 10))
            },
            plan.rate_per_second,
            plan.max_redrives
        );
        Planned {
            actions,
            then: Vec::new(),
            summary,
        }
    }

    /// The engine never fails as a whole: what it did, and the fault that stopped it, are in
    /// its result.
    async fn apply(
        &self,
        ctx: &RunContext<'_, Redriver>,
        _: &(),
        run: RedriveRun,
    ) -> Result<RedriveRun, NotApplied> {
        let result = engine::run(
            &ctx.clients.sqs,
            &run.plan,
            ctx.invocation.deadline,
            &ctx.safety.switch,
        )
        .await;
        Ok(RedriveRun {
            result: Some(result),
            ..run
        })
    }

    async fn verify(
        &self,
        ctx: &RunContext<'_, Redriver>,
        _: &(),
        run: RedriveRun,
        _: &str,
        report: &mut Report,
    ) -> Ending {
        let result = run.result.unwrap_or_default();
        outcome::reconcile(ctx, &run.plan, result, report).await
    }
}
