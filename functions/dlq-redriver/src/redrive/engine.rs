//! The redrive itself: messages from a DLQ back to where they came from, in batches of 10,
//! deleting from the DLQ only what the target accepted, so that a crash at any point leaves
//! every message in the DLQ, the target, or both.

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
use serde::Serialize;
use serde_json::{Value, json};

use crate::messages::{self, MAX_MESSAGE_ATTRIBUTES, REDRIVE_COUNT, Received};
use crate::queues::Queue;

use super::filter::MessageFilter;

/// What a redrive will do, decided before it starts.
#[derive(Clone, Debug)]
pub struct RedrivePlan {
    pub dlq: Queue,
    /// The queues whose RedrivePolicy points at the DLQ.
    pub sources: Vec<Queue>,
    /// Where messages that name no source go: the payload's target, else the single source.
    pub fallback: Option<Queue>,
    /// Whether the fallback is a person's explicit target, which also takes the messages that
    /// name a queue that is no longer a source (each reported as re-targeted).
    pub retarget: bool,
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
    /// Over the target's MaximumMessageSize once the redrive-count attribute is added.
    pub too_large: u64,
    pub unroutable: u64,
    /// FIFO messages kept because an earlier message of their group was held (order first).
    pub held_behind: u64,
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
            + self.too_large
            + self.unroutable
            + self.held_behind
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
    /// Messages moved (accepted by the target and deleted from the DLQ) per target queue name.
    pub moved_to: BTreeMap<String, u64>,
    /// Messages each target accepted, deleted from the DLQ or not (a copy left behind).
    pub accepted_by: BTreeMap<String, u64>,
    pub poison_ids: Vec<String>,
    pub refused: Vec<Value>,
    /// Messages left in the DLQ because the queue they name is not a source (or none is named
    /// and there is no single source): id and the queue named.
    pub unroutable: Vec<Value>,
    pub attribute_limit_ids: Vec<String>,
    pub too_large_ids: Vec<String>,
    pub held_behind_ids: Vec<String>,
    /// Messages a person's target took although they name another queue: (id, named queue).
    pub retargeted: Vec<Value>,
    pub not_deleted_ids: Vec<String>,
    /// Lambda OnFailure destination records among the messages sent (the envelope, not the
    /// original event, is what the target receives).
    pub lambda_records: u64,
    /// Held messages whose release did not happen before the deadline (or failed): they
    /// reappear when their visibility timeout ends.
    pub not_released_ids: Vec<String>,
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
    /// FIFO groups (of a source queue) with a held message: every later message of theirs is
    /// held too.
    held_groups: HashSet<String>,
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
    // Released while the time for the writes after the run is left.
    let released = messages::release(
        sqs,
        &plan.dlq,
        &held,
        deadline.less(runbook_shared::deadline::WRITE_RESERVE),
    )
    .await;
    if !released.not_released.is_empty() {
        tracing::warn!(
            count = released.not_released.len(),
            "some held messages were not released; they reappear when their visibility timeout ends"
        );
    }
    result.not_released_ids = released.not_released;
    if let Some(err) = released.error {
        result.error.get_or_insert(err);
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

    /// Keeps the message in the DLQ (released at the end of the run); a FIFO message's group
    /// is held from here on, so nothing of it overtakes this one.
    fn hold(&self, message: &Received, record: impl FnOnce(&mut RedriveResult)) {
        let mut state = self.state();
        state
            .held
            .insert(message.id.clone(), message.receipt.clone());
        if let Some(group) = fifo_group(message) {
            state.held_groups.insert(group);
        }
        record(&mut state.result);
    }

    /// Holds the message when an earlier message of its FIFO group was held; true if it did.
    fn held_behind(&self, message: &Received) -> bool {
        let behind =
            fifo_group(message).is_some_and(|group| self.state().held_groups.contains(&group));
        if behind {
            self.hold(message, |result| {
                result.ledger.held_behind += 1;
                result.held_behind_ids.push(message.id.clone());
            });
        }
        behind
    }

    /// Decides which target (by index) the message goes to and its entry, or holds it back
    /// (`None`) when it must stay.
    fn route(
        &self,
        index: usize,
        message: &Received,
        now: DateTime<Utc>,
    ) -> Option<(usize, SendMessageBatchRequestEntry)> {
        if self.held_behind(message) {
            return None;
        }
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
        let target = self.destination(message)?;
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
        let entry = match entry.build() {
            Ok(entry) => entry,
            Err(err) => {
                self.refuse(message, "InvalidEntry", &err.to_string());
                return None;
            }
        };
        let limit = self.targets[target].max_message_size;
        if messages::entry_size(&entry) > limit {
            self.hold(message, |result| {
                result.ledger.too_large += 1;
                result.too_large_ids.push(message.id.clone());
            });
            return None;
        }
        Some((target, entry))
    }

    /// Where the message goes (an index into `targets`): the source it names, if that is still
    /// a source of the DLQ; a person's target when it names another queue (re-targeted) or
    /// none; the single source when it names none. Otherwise it stays (unroutable).
    fn destination(&self, message: &Received) -> Option<usize> {
        let fallback = self.plan.fallback.as_ref().and_then(|fallback| {
            self.targets
                .iter()
                .position(|queue| queue.url == fallback.url)
        });
        let unroutable = |named: Option<&str>| {
            self.hold(message, |result| {
                result.ledger.unroutable += 1;
                result
                    .unroutable
                    .push(json!({"id": message.id, "named_source": named}));
            });
            None
        };
        match message.source_arn.as_deref() {
            Some(arn) => {
                if let Some(source) = self.plan.sources.iter().position(|queue| queue.arn == arn) {
                    return Some(source);
                }
                match fallback.filter(|_| self.plan.retarget) {
                    Some(target) => {
                        self.state().result.retargeted.push(
                            json!({"id": message.id, "named": arn, "sent_to": self.targets[target].name}),
                        );
                        Some(target)
                    }
                    None => unroutable(Some(arn)),
                }
            }
            None => fallback.or_else(|| unroutable(None)),
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
            let queue = self.targets[target];
            if !queue.fifo {
                self.send(queue, entries).await;
                continue;
            }
            // One message per group per request, in order: a message refused by the target
            // holds the rest of its group before they are sent.
            for layer in fifo_layers(entries) {
                let layer: Vec<_> = layer
                    .into_iter()
                    .filter(|(_, message)| !self.held_behind(message))
                    .collect();
                if !layer.is_empty() {
                    self.send(queue, layer).await;
                }
            }
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
                {
                    if entries.len() == 1 {
                        // One message over the limit: it stays, and the run goes on.
                        for message in by_id.values() {
                            self.hold(message, |result| {
                                result.ledger.too_large += 1;
                                result.too_large_ids.push(message.id.clone());
                            });
                        }
                        return;
                    }
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
            *state
                .result
                .accepted_by
                .entry(target.name.clone())
                .or_default() += accepted.len() as u64;
            state.result.lambda_records += accepted
                .iter()
                .filter(|message| message.lambda_failure().is_some())
                .count() as u64;
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

/// A FIFO message's group as ordering knows it: a group id orders messages within the queue
/// they were sent to, so two sources' groups of one id are two groups.
fn fifo_group(message: &Received) -> Option<String> {
    let group = message.group_id.as_ref()?;
    Some(format!(
        "{}\n{group}",
        message.source_arn.as_deref().unwrap_or_default()
    ))
}

/// Entries in layers holding at most one message of each FIFO group, in their order.
fn fifo_layers<T>(
    entries: Vec<(SendMessageBatchRequestEntry, T)>,
) -> Vec<Vec<(SendMessageBatchRequestEntry, T)>> {
    let mut layers: Vec<Vec<(SendMessageBatchRequestEntry, T)>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let group = entry.0.message_group_id().unwrap_or_default().to_string();
        let depth = seen.entry(group).or_insert(0);
        if layers.len() <= *depth {
            layers.push(Vec::new());
        }
        layers[*depth].push(entry);
        *depth += 1;
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_entries_go_out_one_per_group_per_layer_in_order() {
        let entry = |id: &str, group: &str| {
            (
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body("{}")
                    .message_group_id(group)
                    .build()
                    .unwrap(),
                (),
            )
        };
        let layers = fifo_layers(vec![
            entry("1", "G"),
            entry("2", "G"),
            entry("3", "H"),
            entry("4", "G"),
        ]);
        let ids: Vec<Vec<&str>> = layers
            .iter()
            .map(|layer| layer.iter().map(|(e, _)| e.id()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["1", "3"], vec!["2"], vec!["4"]]);
    }
}
