//! Redrive: move messages from a DLQ back to where they came from, in batches of 10, deleting
//! from the DLQ only what the target accepted, so that a crash at any point leaves every message
//! in the DLQ, the target, or both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeNameForSends,
    MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::Deadline;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::messages::{self, MAX_MESSAGE_ATTRIBUTES, REDRIVE_COUNT, Received};
use crate::queues::Queue;

/// Which messages a redrive takes; the others stay in the DLQ. All given conditions must hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    /// Only messages sent at least this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_seconds: Option<i64>,
    /// Only messages sent at most this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_than_seconds: Option<i64>,
    /// Message attributes (string values) that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_equals: BTreeMap<String, String>,
    /// Fields of the JSON body (dotted paths, e.g. `customer.tier`) that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub body_equals: BTreeMap<String, Value>,
}

impl MessageFilter {
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("older_than_seconds", self.older_than_seconds),
            ("newer_than_seconds", self.newer_than_seconds),
        ] {
            if value.is_some_and(|seconds| seconds < 0) {
                return Err(format!("filter.{field} must not be negative"));
            }
        }
        if let (Some(older), Some(newer)) = (self.older_than_seconds, self.newer_than_seconds)
            && older > newer
        {
            return Err(format!(
                "filter.older_than_seconds ({older}) above filter.newer_than_seconds ({newer}) matches nothing"
            ));
        }
        if self
            .body_equals
            .keys()
            .any(|path| path.is_empty() || path.split('.').any(str::is_empty))
        {
            return Err(
                "filter.body_equals paths are dotted field names, e.g. \"customer.tier\"".into(),
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, message: &Received, now: DateTime<Utc>) -> bool {
        let age = message.age_seconds(now);
        if let Some(older) = self.older_than_seconds
            && age.is_none_or(|age| age < older)
        {
            return false;
        }
        if let Some(newer) = self.newer_than_seconds
            && age.is_none_or(|age| age > newer)
        {
            return false;
        }
        let attributes_match = self.attribute_equals.iter().all(|(name, expected)| {
            message
                .attributes
                .get(name)
                .and_then(|value| value.string_value())
                == Some(expected.as_str())
        });
        if !attributes_match {
            return false;
        }
        if self.body_equals.is_empty() {
            return true;
        }
        let Ok(body) = serde_json::from_str::<Value>(&message.body) else {
            return false;
        };
        self.body_equals.iter().all(|(path, expected)| {
            path.split('.').try_fold(&body, |value, key| value.get(key)) == Some(expected)
        })
    }
}

/// What a redrive will do, decided before it starts.
#[derive(Clone, Debug)]
pub struct RedrivePlan {
    pub dlq: Queue,
    /// The queues whose RedrivePolicy points at the DLQ.
    pub sources: Vec<Queue>,
    /// Where messages that do not name their source go: the single source, or the payload's target.
    pub fallback: Option<Queue>,
    pub max_messages: u32,
    pub rate_per_second: u32,
    pub filter: MessageFilter,
    pub max_redrives: u32,
    pub concurrency: usize,
}

/// Where every message the run looked at went. `remaining` is measured from the DLQ's depth
/// after the run, so the sum equalling `found` is the reconciliation, not an identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ledger {
    pub found: i64,
    pub moved: u64,
    pub poison: u64,
    pub refused: u64,
    pub filtered_out: u64,
    pub attribute_limit: u64,
    pub unroutable: u64,
    pub not_deleted: u64,
    pub remaining: i64,
}

impl Ledger {
    /// Messages the run left in the DLQ on purpose (and made visible again).
    pub fn held(&self) -> u64 {
        self.poison
            + self.refused
            + self.filtered_out
            + self.attribute_limit
            + self.unroutable
            + self.not_deleted
    }

    pub fn total(&self) -> i64 {
        i64::try_from(self.moved + self.held()).unwrap_or(i64::MAX) + self.remaining
    }
}

/// The outcome of one run.
#[derive(Debug, Default)]
pub struct RedriveResult {
    pub ledger: Ledger,
    /// Messages moved per target queue name.
    pub moved_to: BTreeMap<String, u64>,
    pub poison_ids: Vec<String>,
    pub refused: Vec<Value>,
    pub unroutable_ids: Vec<String>,
    pub attribute_limit_ids: Vec<String>,
    pub not_deleted_ids: Vec<String>,
    /// Why the run stopped before the DLQ was empty (deadline, max_messages), if it did.
    pub stopped_early: Option<String>,
    /// A fault that stopped the run.
    pub error: Option<AwsError>,
    pub api_calls: u64,
    pub elapsed: Duration,
}

/// Spaces batches so the run as a whole stays under `per_second` messages.
struct RateLimiter {
    per_second: f64,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    /// Waits for the slot of `messages` messages; false (without waiting) if that slot would
    /// start after `latest`.
    async fn acquire(&self, messages: u32, latest: Instant) -> bool {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            if start > latest {
                return false;
            }
            *next = start + Duration::from_secs_f64(f64::from(messages) / self.per_second);
            start
        };
        tokio::time::sleep_until(start.into()).await;
        true
    }
}

#[derive(Default)]
struct State {
    seen: HashSet<String>,
    /// Messages kept invisible until the end of the run, then released: id -> latest receipt.
    held: HashMap<String, String>,
    result: RedriveResult,
}

/// Time kept before the deadline for releasing held messages and verifying.
const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(5);

struct Run<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    plan: &'a RedrivePlan,
    /// Every queue a message may go to: the sources and the fallback.
    targets: Vec<&'a Queue>,
    deadline: Deadline,
    visibility_seconds: i32,
    claimed: AtomicU32,
    calls: AtomicU64,
    rate: RateLimiter,
    state: Mutex<State>,
    stop: Mutex<Option<String>>,
}

/// Runs the redrive: `plan.concurrency` workers, each receiving, sending and deleting batches
/// of 10 until the DLQ has no more visible messages, `max_messages` were taken, or the deadline
/// is near; then releases what it held back.
pub async fn run(
    sqs: &aws_sdk_sqs::Client,
    plan: &RedrivePlan,
    deadline: Deadline,
) -> RedriveResult {
    let started = Instant::now();
    let mut targets: Vec<&Queue> = plan.sources.iter().collect();
    if let Some(fallback) = &plan.fallback
        && !targets.iter().any(|queue| queue.url == fallback.url)
    {
        targets.push(fallback);
    }
    // Held messages stay hidden for the rest of the run (and reappear on their own after a crash).
    let visibility_seconds = i32::try_from(deadline.remaining().as_secs() + 2)
        .unwrap_or(43_200)
        .min(43_200);
    let run = Run {
        sqs,
        plan,
        targets,
        deadline,
        visibility_seconds,
        claimed: AtomicU32::new(0),
        calls: AtomicU64::new(0),
        rate: RateLimiter {
            per_second: f64::from(plan.rate_per_second.max(1)),
            next: tokio::sync::Mutex::new(Instant::now()),
        },
        state: Mutex::new(State::default()),
        stop: Mutex::new(None),
    };
    futures_util::future::join_all((0..plan.concurrency.max(1)).map(|_| run.worker())).await;

    let (held, mut result) = {
        let mut state = run
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (
            std::mem::take(&mut state.held),
            std::mem::take(&mut state.result),
        )
    };
    let held: Vec<(String, String)> = held.into_iter().collect();
    run.calls
        .fetch_add(held.len().div_ceil(10) as u64, Ordering::Relaxed);
    match messages::release(sqs, &plan.dlq, &held).await {
        Ok(failed) if !failed.is_empty() => tracing::warn!(
            count = failed.len(),
            "some held messages could not be released; they reappear when their visibility timeout ends"
        ),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "held messages could not be released; they reappear when their visibility timeout ends");
            result.error.get_or_insert(err);
        }
    }
    result.stopped_early = run
        .stop
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    result.api_calls = run.calls.load(Ordering::Relaxed);
    result.elapsed = started.elapsed();
    result
}

impl Run<'_> {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.lock().map(|stop| stop.is_some()).unwrap_or(true)
    }

    fn halt(&self, reason: String) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(reason);
        }
    }

    fn fail(&self, err: AwsError) {
        self.halt(format!("stopped by an error: {err}"));
        self.state().result.error.get_or_insert(err);
    }

    /// Reserves up to `want` of the run's message allowance.
    fn reserve(&self, want: u32) -> u32 {
        let max = self.plan.max_messages;
        let mut granted = 0;
        let _ = self
            .claimed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |claimed| {
                granted = want.min(max.saturating_sub(claimed));
                Some(claimed + granted)
            });
        granted
    }

    fn give_back(&self, unused: u32) {
        self.claimed.fetch_sub(unused, Ordering::SeqCst);
    }

    async fn worker(&self) {
        while !self.stopped() {
            let Some(usable) = self.deadline.remaining().checked_sub(STOP_BEFORE_DEADLINE) else {
                self.halt("the Lambda deadline was near".into());
                return;
            };
            let want = self.reserve(10);
            if want == 0 {
                self.halt(format!("max_messages ({}) reached", self.plan.max_messages));
                return;
            }
            // The rate is paced per receive, so nothing is taken from the DLQ that cannot be
            // sent before the deadline.
            if !self.rate.acquire(want, Instant::now() + usable).await {
                self.give_back(want);
                self.halt("the Lambda deadline was near".into());
                return;
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let received = match messages::receive(
                self.sqs,
                &self.plan.dlq,
                want as i32,
                self.visibility_seconds,
                1,
            )
            .await
            {
                Ok(received) => received,
                Err(err) => {
                    self.give_back(want);
                    self.fail(err);
                    return;
                }
            };
            let fresh = self.take_fresh(received);
            self.give_back(want - fresh.len() as u32);
            if fresh.is_empty() {
                return;
            }
            self.redrive_batch(fresh).await;
        }
    }

    /// Keeps the messages this run has not seen; one seen before (its visibility ran out) is
    /// held again under its new receipt.
    fn take_fresh(&self, received: Vec<Received>) -> Vec<Received> {
        let mut state = self.state();
        let mut fresh = Vec::with_capacity(received.len());
        for message in received {
            if state.seen.insert(message.id.clone()) {
                fresh.push(message);
            } else if let Some(receipt) = state.held.get_mut(&message.id) {
                *receipt = message.receipt;
            }
        }
        fresh
    }

    fn hold(&self, message: &Received, record: impl FnOnce(&mut RedriveResult)) {
        let mut state = self.state();
        state
            .held
            .insert(message.id.clone(), message.receipt.clone());
        record(&mut state.result);
    }

    /// Decides which target (by index) the message goes to and its entry, or holds it back
    /// (`None`) when it must stay.
    fn route(
        &self,
        index: usize,
        message: &Received,
        now: DateTime<Utc>,
    ) -> Option<(usize, SendMessageBatchRequestEntry)> {
        if !self.plan.filter.matches(message, now) {
            self.hold(message, |result| result.ledger.filtered_out += 1);
            return None;
        }
        let count = message.redrive_count();
        if count >= self.plan.max_redrives {
            self.hold(message, |result| {
                result.ledger.poison += 1;
                result.poison_ids.push(message.id.clone());
            });
            return None;
        }
        if !message.attributes.contains_key(REDRIVE_COUNT)
            && message.attributes.len() >= MAX_MESSAGE_ATTRIBUTES
        {
            self.hold(message, |result| {
                result.ledger.attribute_limit += 1;
                result.attribute_limit_ids.push(message.id.clone());
            });
            return None;
        }
        let own_source = message
            .source_arn
            .as_deref()
            .and_then(|arn| self.targets.iter().position(|queue| queue.arn == arn));
        let fallback = self.plan.fallback.as_ref().and_then(|fallback| {
            self.targets
                .iter()
                .position(|queue| queue.url == fallback.url)
        });
        let Some(target) = own_source.or(fallback) else {
            self.hold(message, |result| {
                result.ledger.unroutable += 1;
                result.unroutable_ids.push(message.id.clone());
            });
            return None;
        };
        let mut attributes = message.attributes.clone();
        let counter = MessageAttributeValue::builder()
            .data_type("Number")
            .string_value((count + 1).to_string())
            .build();
        match counter {
            Ok(counter) => {
                attributes.insert(REDRIVE_COUNT.to_string(), counter);
            }
            Err(err) => {
                self.refuse(message, "InvalidAttribute", &err.to_string());
                return None;
            }
        }
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&message.body)
            .set_message_attributes(Some(attributes));
        if let Some(trace) = &message.trace_header
            && let Ok(value) = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()
        {
            entry = entry.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                value,
            );
        }
        if self.targets[target].fifo {
            let Some(group) = &message.group_id else {
                self.refuse(
                    message,
                    "MissingGroupId",
                    "a FIFO message without MessageGroupId cannot be sent to a FIFO queue",
                );
                return None;
            };
            // Never the original deduplication id (the target may have seen it in the last 5
            // minutes and would silently drop the message); one per redrive attempt, so a retried
            // send of the same attempt is still deduplicated.
            entry = entry
                .message_group_id(group)
                .message_deduplication_id(format!("redrive-{}-{}", count + 1, message.id));
        }
        match entry.build() {
            Ok(entry) => Some((target, entry)),
            Err(err) => {
                self.refuse(message, "InvalidEntry", &err.to_string());
                None
            }
        }
    }

    fn refuse(&self, message: &Received, code: &str, reason: &str) {
        self.hold(message, |result| {
            result.ledger.refused += 1;
            result
                .refused
                .push(json!({"id": message.id, "code": code, "message": reason}));
        });
    }

    async fn redrive_batch(&self, batch: Vec<Received>) {
        let now = Utc::now();
        let mut per_target: BTreeMap<usize, Vec<(SendMessageBatchRequestEntry, &Received)>> =
            BTreeMap::new();
        for (index, message) in batch.iter().enumerate() {
            if let Some((target, entry)) = self.route(index, message, now) {
                per_target.entry(target).or_default().push((entry, message));
            }
        }
        for (target, entries) in per_target {
            self.send(self.targets[target], entries).await;
        }
    }

    /// SendMessageBatch, then DeleteMessageBatch for exactly the entries the target accepted.
    async fn send(&self, target: &Queue, entries: Vec<(SendMessageBatchRequestEntry, &Received)>) {
        let by_id: HashMap<String, &Received> = entries
            .iter()
            .map(|(entry, message)| (entry.id().to_string(), *message))
            .collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .sqs
            .send_message_batch()
            .queue_url(&target.url)
            .set_entries(Some(
                entries.iter().map(|(entry, _)| entry.clone()).collect(),
            ))
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(err) => {
                let err = AwsError::from_sdk(
                    "sqs:SendMessageBatch",
                    &format!("queue {}", target.name),
                    &err,
                );
                if err
                    .code
                    .as_deref()
                    .is_some_and(|code| code.ends_with("BatchRequestTooLong"))
                    && entries.len() > 1
                {
                    // Over the batch size limit: send the halves.
                    let mut entries = entries;
                    let second = entries.split_off(entries.len() / 2);
                    Box::pin(self.send(target, entries)).await;
                    Box::pin(self.send(target, second)).await;
                    return;
                }
                for message in by_id.values() {
                    self.refuse(
                        message,
                        err.code.as_deref().unwrap_or("SendFailed"),
                        &err.message,
                    );
                }
                self.fail(err);
                return;
            }
        };
        for failed in output.failed() {
            if let Some(message) = by_id.get(failed.id()) {
                self.refuse(message, failed.code(), failed.message().unwrap_or_default());
            }
        }
        let accepted: Vec<&Received> = output
            .successful()
            .iter()
            .filter_map(|ok| by_id.get(ok.id()).copied())
            .collect();
        if accepted.is_empty() {
            return;
        }
        let deletes: Result<Vec<_>, _> = accepted
            .iter()
            .enumerate()
            .map(|(index, message)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&message.receipt)
                    .build()
            })
            .collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let deleted = match deletes {
            Ok(deletes) => self
                .sqs
                .delete_message_batch()
                .queue_url(&self.plan.dlq.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk(
                        "sqs:DeleteMessageBatch",
                        &format!("queue {}", self.plan.dlq.name),
                        &err,
                    )
                }),
            Err(err) => Err(AwsError::invalid(
                "sqs:DeleteMessageBatch",
                &self.plan.dlq.name,
                &err.to_string(),
            )),
        };
        let not_deleted: HashSet<usize> = match &deleted {
            Ok(output) => output
                .failed()
                .iter()
                .filter_map(|failed| failed.id().parse().ok())
                .collect(),
            Err(_) => (0..accepted.len()).collect(),
        };
        {
            let mut state = self.state();
            for (index, message) in accepted.iter().enumerate() {
                if not_deleted.contains(&index) {
                    // In the target and still in the DLQ: a duplicate, never a loss.
                    state
                        .held
                        .insert(message.id.clone(), message.receipt.clone());
                    state.result.ledger.not_deleted += 1;
                    state.result.not_deleted_ids.push(message.id.clone());
                } else {
                    state.result.ledger.moved += 1;
                    *state
                        .result
                        .moved_to
                        .entry(target.name.clone())
                        .or_default() += 1;
                }
            }
        }
        if let Err(err) = deleted {
            self.fail(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str, attributes: &[(&str, &str)], age_seconds: i64) -> Received {
        Received {
            id: "m".into(),
            receipt: "r".into(),
            body: body.into(),
            sent_at: Some(Utc::now() - chrono::Duration::seconds(age_seconds)),
            receive_count: 1,
            source_arn: None,
            group_id: None,
            trace_header: None,
            attributes: attributes
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_string(),
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(*v)
                            .build()
                            .unwrap(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn filters_by_age_attribute_and_body_field() {
        let filter: MessageFilter = serde_json::from_value(json!({
            "older_than_seconds": 60, "newer_than_seconds": 3600,
            "attribute_equals": {"tenant": "42"}, "body_equals": {"customer.tier": "gold"}
        }))
        .unwrap();
        assert!(filter.validate().is_ok());
        let now = Utc::now();
        let body = r#"{"customer": {"tier": "gold"}}"#;
        assert!(filter.matches(&message(body, &[("tenant", "42")], 600), now));
        assert!(
            !filter.matches(&message(body, &[("tenant", "42")], 10), now),
            "too new"
        );
        assert!(
            !filter.matches(&message(body, &[("tenant", "42")], 7200), now),
            "too old"
        );
        assert!(
            !filter.matches(&message(body, &[("tenant", "7")], 600), now),
            "other tenant"
        );
        assert!(!filter.matches(
            &message(
                r#"{"customer": {"tier": "free"}}"#,
                &[("tenant", "42")],
                600
            ),
            now
        ));
        assert!(!filter.matches(&message("not json", &[("tenant", "42")], 600), now));
        assert!(MessageFilter::default().matches(&message("x", &[], 0), now));
    }

    #[test]
    fn rejects_filters_that_cannot_match() {
        let filter = MessageFilter {
            older_than_seconds: Some(100),
            newer_than_seconds: Some(10),
            ..Default::default()
        };
        assert!(filter.validate().unwrap_err().contains("matches nothing"));
        assert!(
            serde_json::from_value::<MessageFilter>(json!({"age": 5}))
                .unwrap_err()
                .to_string()
                .contains("expected one of")
        );
    }
}
