//! Redriven messages that come back. A redrive's verification stays open for the verification
//! window: a message it sent that returns to the DLQ (it carries `redrive-count`, and was sent
//! at or after the redrive started) means the consumer still fails it, and settles that redrive
//! as failed as soon as any run of dlq-redriver sees it (an inspection's sample, the next
//! redrive). Otherwise the health-prober's sweep settles it by the DLQ's depth.

use chrono::{DateTime, Utc};
use runbook_shared::model::{Check, Report, VerificationStatus, some_of};
use serde::Serialize;

use crate::messages::Received;
use crate::queues::Queue;
use crate::{RUNBOOK, Redriver};

/// The most open redrives of one DLQ a run looks at (newest first).
const OPEN_REDRIVES: usize = 20;

/// The open check of a redrive that moved messages.
pub const STAYED_OUT: &str = "redriven_stay_out";

/// A message seen in a DLQ that an earlier redrive sent back once already.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Returned {
    pub id: String,
    pub redrive_count: u32,
    pub sent_at: Option<DateTime<Utc>>,
    /// The queue it failed back from (its DeadLetterQueueSourceArn's name).
    pub source: Option<String>,
}

impl Returned {
    /// The message, if it was redriven before.
    pub fn of(message: &Received) -> Option<Self> {
        let redrive_count = message.redrive_count();
        (redrive_count > 0).then(|| Self {
            id: message.id.clone(),
            redrive_count,
            sent_at: message.sent_at,
            source: message
                .source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit(':').next())
                .map(str::to_string),
        })
    }
}

/// The open check a redrive that moved `moved` messages leaves.
pub fn stayed_out(moved: u64, dlq: &str) -> Check {
    Check::awaited(
        STAYED_OUT,
        format!(
            "none of the {moved} messages redriven back in {dlq} within the verification window"
        ),
    )
}

impl Redriver {
    /// Settles as failed each open redrive of `dlq` that sent one of `seen`, and says so in
    /// `report`'s notes. A message is a redrive's when it failed back from one of the queues
    /// that redrive sent to and was sent while it ran (for a FIFO queue SQS restamps a message
    /// moved to its DLQ, so none is attributed: the sweep settles those by depth). Best
    /// effort, and never in a dry run, which writes nothing.
    // Over 80 lines: matching returned messages to open redrives and settling each, best effort,
    // with every fault kept in the notes.
    pub(crate) async fn settle_returned(
        &self,
        dlq: &Queue,
        seen: &[Returned],
        report: &mut Report,
    ) {
        if seen.is_empty() || report.dry_run {
            return;
        }
        let resource = self.config.safety.home.queue(&dlq.name).key();
        let records = match self
            .safety
            .audit
            .pending(&resource, RUNBOOK, OPEN_REDRIVES)
            .await
        {
            Ok(records) => records,
            Err(err) => {
                report.notes.push(format!(
                    "{} redriven messages are back in {}, but its open redrives could not be read to settle them: {err}",
                    seen.len(),
                    dlq.name
                ));
                return;
            }
        };
        for record in &records {
            let mut verification = record.report.verification.clone();
            let Some(check) = verification
                .checks
                .iter_mut()
                .find(|check| check.name == STAYED_OUT && check.is_awaited())
            else {
                continue;
            };
            let ran = record.started_at
                ..=record.started_at
                    + chrono::Duration::milliseconds(
                        i64::try_from(record.report.duration_ms).unwrap_or(i64::MAX),
                    )
                    + chrono::Duration::seconds(1);
            let sent_to: Vec<&str> = record
                .report
                .actions
                .iter()
                .filter(|action| action.api == "sqs:SendMessageBatch")
                .map(|action| action.target.as_str())
                .collect();
            let mut back: Vec<&Returned> = seen
                .iter()
                .filter(|message| message.sent_at.is_some_and(|sent| ran.contains(&sent)))
                .filter(|message| {
                    message
                        .source
                        .as_deref()
                        .is_some_and(|source| sent_to.contains(&source))
                })
                .collect();
            back.sort_by_key(|message| message.sent_at);
            back.dedup_by(|a, b| a.id == b.id);
            if back.is_empty() {
                continue;
            }
            let ids: Vec<String> = back
                .iter()
                .map(|message| format!("{} (redrive-count {})", message.id, message.redrive_count))
                .collect();
            check.ok = false;
            check.observed = format!(
                "{} came back: {}; seen {} s after the redrive",
                back.len(),
                some_of(&ids, 10),
                (Utc::now() - record.started_at).num_seconds().max(0)
            );
            verification.status = VerificationStatus::Failed;
            let note = match self.safety.audit.settle(record, &verification).await {
                Ok(true) => format!(
                    "the redrive {} of {} failed its verification: {} of the messages it sent came back to {} ({}); their consumer still fails them",
                    record.audit_id,
                    runbook_shared::model::timestamp(record.started_at),
                    back.len(),
                    dlq.name,
                    some_of(&ids, 10)
                ),
                Ok(false) => format!(
                    "{} messages of the redrive {} came back to {} ({}), after its verification was settled",
                    back.len(),
                    record.audit_id,
                    dlq.name,
                    some_of(&ids, 10)
                ),
                Err(err) => format!(
                    "{} messages of the redrive {} came back to {}, but its verification could not be settled: {err}",
                    back.len(),
                    record.audit_id,
                    dlq.name
                ),
            };
            report.notes.push(note);
        }
    }
}
