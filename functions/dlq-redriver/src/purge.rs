//! `purge`: by hand only, confirmed with the DLQ's name. SQS takes up to a minute to purge: the
//! run waits `purge_wait` at most for the queue to read empty, then the health-prober's sweep
//! settles it by the queue's depth.

use runbook_shared::aws::AwsError;
use runbook_shared::deadline::{Deadline, poll_until};
use runbook_shared::model::{Check, Report, SettleBy, Verification, VerificationStatus};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use runbook_shared::store::AuditRecord;
use serde_json::json;

use crate::queues::{self, Queue, require_managed};
use crate::{RUNBOOK, Redriver};

/// A purge of a located DLQ.
pub struct Purge {
    pub dlq: Queue,
}

impl Purge {
    /// What it removes: every message, delayed ones too.
    fn messages(&self) -> i64 {
        self.dlq.depth() + self.dlq.delayed
    }
}

impl Runbook<Redriver> for Purge {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = ();
    /// The number of messages removed.
    type Change = i64;

    fn resource(&self, home: &Home) -> ResourceId {
        home.queue(&self.dlq.name)
    }

    async fn managed(&self, ctx: &RunContext<'_, Redriver>) -> Step<()> {
        require_managed(
            &ctx.clients.sqs,
            &ctx.config.safety.managed,
            &self.dlq,
            None,
        )
        .await
    }

    /// A person confirmed this purge by name: an earlier redrive's cooldown does not hold it.
    fn cooldown(&self, _: &AuditRecord) -> bool {
        false
    }

    async fn diagnose(&self, _: &RunContext<'_, Redriver>, report: &mut Report) -> Step<()> {
        report.diagnosis = Some(json!({"dlq": self.dlq}));
        if self.messages() == 0 {
            return Err(Ending::no_action(format!(
                "{} is empty: nothing to purge",
                self.dlq.name
            )));
        }
        Ok(())
    }

    fn plan(&self, _: &RunContext<'_, Redriver>, _: &()) -> Decision<i64> {
        Decision::Act(self.messages())
    }

    fn describe(&self, _: &RunContext<'_, Redriver>, removed: &i64) -> Planned {
        let dlq = &self.dlq;
        Planned::one(
            "sqs:PurgeQueue",
            &dlq.name,
            json!({"depth": dlq.depth(), "delayed": dlq.delayed}),
            json!({"depth": 0}),
            format!("purged the {removed} messages in {}", dlq.name),
        )
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Redriver>,
        _: &(),
        removed: i64,
    ) -> Result<i64, NotApplied> {
        let dlq = &self.dlq;
        match ctx
            .clients
            .sqs
            .purge_queue()
            .queue_url(&dlq.url)
            .send()
            .await
        {
            Ok(_) => Ok(removed),
            Err(err) => {
                let err =
                    AwsError::from_sdk("sqs:PurgeQueue", &format!("queue {}", dlq.name), &err);
                let reason = if err
                    .code
                    .as_deref()
                    .is_some_and(|code| code.contains("PurgeQueueInProgress"))
                {
                    format!(
                        "{} was purged less than 60 seconds ago (SQS allows one purge a minute); nothing more was removed",
                        dlq.name
                    )
                } else {
                    format!("purge of {} failed, nothing was removed: {err}", dlq.name)
                };
                Err(NotApplied::explained(&err, reason))
            }
        }
    }

    /// The queue read empty within `purge_wait`; else pending, for the sweep to settle by the
    /// queue's depth (fewer messages than were purged: failures no longer arrive).
    async fn verify(
        &self,
        ctx: &RunContext<'_, Redriver>,
        _: &(),
        removed: i64,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let dlq = &self.dlq;
        let wait = ctx
            .invocation
            .wait_deadline()
            .remaining()
            .min(ctx.purge_wait);
        // A read that fails is tried again until the wait ends; then the sweep decides.
        let last_error = std::cell::RefCell::new(None);
        let emptied = poll_until(Deadline::within(wait), ctx.poll_interval, || async {
            match queues::describe(&ctx.clients.sqs, &dlq.name, &dlq.url).await {
                Ok(after) if after.depth() + after.delayed == 0 => Some(()),
                Ok(_) => None,
                Err(err) => {
                    last_error.replace(Some(err));
                    None
                }
            }
        })
        .await;
        let expected = format!("fewer than the {removed} messages purged");
        let check = match (emptied, last_error.into_inner()) {
            (Some(()), _) => Check::new("dlq_empty", true, expected, "0"),
            (None, Some(err)) => Check::new(
                "dlq_empty",
                false,
                expected,
                format!("could not read: {err}"),
            ),
            (None, None) => Check::awaited("dlq_empty", expected),
        };
        let pending = !check.ok;
        report.verification = Verification {
            status: if pending {
                VerificationStatus::Pending
            } else {
                VerificationStatus::Verified
            },
            checks: vec![check],
            settle_by: pending.then(|| SettleBy::QueueDepth {
                name: dlq.name.clone(),
                url: dlq.url.clone(),
                below: removed,
                not_before: None,
            }),
        };
        report.details = Some(json!({"removed": removed}));
        if pending {
            Ending::remediated(format!(
                "{summary} (the queue did not read empty yet: the health-prober's sweep settles it by its depth)"
            ))
        } else {
            Ending::remediated(summary)
        }
    }
}
