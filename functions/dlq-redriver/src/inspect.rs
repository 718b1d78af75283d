//! `inspect`: what a DLQ (or any managed queue) holds — counts, the oldest message's age, and a
//! sample grouped by source — changing nothing: every sampled message is made visible again at
//! once. A queue with a RedrivePolicy of its own is a source (a DLQ is the queue a RedrivePolicy
//! points at): receiving from it spends one of each sampled message's delivery attempts, and
//! can send it to its DLQ unprocessed, so it is never sampled, only counted.

use chrono::Utc;
use runbook_shared::aws::AwsError;
use runbook_shared::model::Invocation;
use runbook_shared::model::{Check, Outcome, Report, Verification, VerificationStatus};
use serde_json::{Value, json};

use crate::queues::{self, Queue};
use crate::{NAMESPACE, Redriver, messages};

impl Redriver {
    /// Counts, the oldest message's age, and a sample grouped by source; every sampled message
    /// is made visible again at once.
    // Over 80 lines: one receive loop that must make every sampled message visible again, whatever
    // ends it; kept in one function so that no exit skips the release.
    pub(crate) async fn inspect(
        &self,
        dlq: &Queue,
        sources: &[Queue],
        sample_size: u32,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let mut sampled: Vec<messages::Received> = Vec::new();
        let mut error = None;
        let spends_attempts = dlq.max_receive_count;
        let sample_size = if spends_attempts.is_some() {
            0
        } else {
            sample_size
        };
        while (sampled.len() as u32) < sample_size {
            let want = (sample_size - sampled.len() as u32).min(10) as i32;
            match messages::receive(&self.clients.sqs, dlq, want, 30, 0).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    let before = sampled.len();
                    for message in batch {
                        if !sampled.iter().any(|seen| seen.id == message.id) {
                            sampled.push(message);
                        }
                    }
                    if sampled.len() == before {
                        break;
                    }
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        let receipts: Vec<(String, String)> = sampled
            .iter()
            .map(|m| (m.id.clone(), m.receipt.clone()))
            .collect();
        let released = messages::release(
            &self.clients.sqs,
            dlq,
            &receipts,
            invocation.wait_deadline(),
        )
        .await;
        if let Some(err) = released.error {
            error.get_or_insert(err);
        }
        let not_released = released.not_released;
        let now = Utc::now();
        let oldest_sampled = sampled.iter().filter_map(|m| m.age_seconds(now)).max();
        let (oldest, oldest_from) = match self.oldest_age(dlq).await {
            Some(age) => (Some(age), "cloudwatch ApproximateAgeOfOldestMessage"),
            None => (oldest_sampled, "sample"),
        };
        let mut by_source: std::collections::BTreeMap<String, Vec<Value>> =
            std::collections::BTreeMap::new();
        for message in &sampled {
            let named = message.source_arn.as_deref();
            let source = match named.and_then(|arn| sources.iter().find(|s| s.arn == arn)) {
                Some(source) => source.name.clone(),
                None => match (named, message.lambda_failure()) {
                    (Some(arn), _) => format!("{arn} (no longer a source)"),
                    (None, Some(failure)) => failure,
                    (None, None) if sources.len() == 1 => sources[0].name.clone(),
                    (None, None) => "unknown".into(),
                },
            };
            by_source.entry(source).or_default().push(message.summary());
        }
        let returned: Vec<_> = sampled
            .iter()
            .filter_map(crate::returned::Returned::of)
            .collect();
        self.settle_returned(dlq, &returned, &mut report).await;
        let after = queues::describe(&self.clients.sqs, &dlq.name, &dlq.url).await;
        report.details = Some(json!({
            "count": {"visible": dlq.visible, "in_flight": dlq.in_flight, "delayed": dlq.delayed},
            "oldest_age_seconds": oldest,
            "oldest_age_from": oldest_from,
            "sampled": sampled.len(),
            "by_source": by_source,
        }));
        let sampled_said = match spends_attempts {
            Some(max) => format!(
                "not sampled: it has a RedrivePolicy of its own (maxReceiveCount {max}), so a receive would spend a delivery attempt of each message"
            ),
            None => format!("sampled {} and made them visible again", sampled.len()),
        };
        let mut checks = vec![Check::new(
            "sample_released",
            not_released.is_empty(),
            format!("{} sampled messages visible again", sampled.len()),
            if not_released.is_empty() {
                "all released".to_string()
            } else {
                format!(
                    "not released (they reappear when their visibility timeout ends): {}",
                    runbook_shared::model::some_of(&not_released, 10)
                )
            },
        )];
        if let Ok(after) = &after {
            checks.push(Check::new(
                "depth_unchanged",
                after.depth() + after.delayed == dlq.depth() + dlq.delayed,
                (dlq.depth() + dlq.delayed).to_string(),
                (after.depth() + after.delayed).to_string(),
            ));
        }
        let ok = checks.iter().all(|check| check.ok) && error.is_none();
        report.verification = Verification {
            settle_by: None,
            status: if ok {
                VerificationStatus::Verified
            } else {
                VerificationStatus::Failed
            },
            checks,
        };
        let age = oldest.map_or_else(String::new, |age| format!(", oldest {age} s"));
        match error {
            Some(err) => report.finish(Outcome::Failed,
                format!("inspection of {} failed: {err}", dlq.name),
            ),
            None => report.finish(Outcome::NoAction,
                format!(
                    "{} holds {} messages ({} in flight{age}); {sampled_said}; nothing was changed{}",
                    dlq.name,
                    dlq.depth(),
                    dlq.in_flight,
                    if self.config.redrive_on_alarm {
                        ""
                    } else {
                        " (REDRIVE_ON_ALARM is false: redrive by hand with \"action\": \"redrive\")"
                    }
                ),
            ),
        }
    }

    /// ApproximateAgeOfOldestMessage's latest maximum, if CloudWatch has one.
    async fn oldest_age(&self, dlq: &Queue) -> Option<i64> {
        let end = Utc::now();
        let query = runbook_shared::aws::metric_query(
            "age",
            NAMESPACE,
            "ApproximateAgeOfOldestMessage",
            [("QueueName", dlq.name.as_str())],
            60,
            "Maximum",
        );
        let output = self
            .clients
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query)
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs((end - chrono::Duration::minutes(15)).timestamp()))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(end.timestamp()))
            .send()
            .await
            .inspect_err(|err| tracing::warn!(error = %AwsError::from_sdk("cloudwatch:GetMetricData", &dlq.name, err), "oldest age from the sample instead"))
            .ok()?;
        output
            .metric_data_results()
            .first()?
            .values()
            .first()
            .map(|age| *age as i64)
    }
}
