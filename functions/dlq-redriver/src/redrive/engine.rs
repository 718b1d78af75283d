//! The redrive itself: messages from a DLQ back to where they came from, in batches of 10,
//! deleting from the DLQ only what the target accepted, so that a crash at any point leaves
//! every message in the DLQ, the target, or both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use chrono::Utc;
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::Deadline;
use runbook_shared::guards::Switch;

use super::fifo::fifo_layers;
use super::ledger::{RedrivePlan, RedriveResult};
use crate::messages::{self, Received};
use crate::queues::Queue;

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
pub(super) struct State {
    seen: HashSet<String>,
    /// Messages kept invisible until the end of the run, then released: id -> latest receipt.
    pub(super) held: HashMap<String, String>,
    /// FIFO groups (of a source queue) with a held message: every later message of theirs is
    /// held too.
    pub(super) held_groups: HashSet<String>,
    pub(super) result: RedriveResult,
}

/// Time kept before the deadline for releasing held messages and verifying.
const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(5);
/// How often a running redrive reads the kill switch again: a pause stops it within this long
/// (the batches in flight finish), not at the end of a run that may last minutes.
const SWITCH_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Run<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    pub(super) plan: &'a RedrivePlan,
    /// Every queue a message may go to: the sources and the fallback.
    pub(super) targets: Vec<&'a Queue>,
    deadline: Deadline,
    visibility_seconds: i32,
    claimed: AtomicU32,
    calls: AtomicU64,
    rate: RateLimiter,
    state: Mutex<State>,
    stop: Mutex<Option<String>>,
    switch: &'a Switch,
    /// When the switch was last read (the act step read it right before the run).
    switch_read: tokio::sync::Mutex<Instant>,
}

/// Runs the redrive: `plan.concurrency` workers, each receiving, sending and deleting batches
/// of 10 until the DLQ has no more visible messages, `max_messages` were taken, or the deadline
/// is near; then releases what it held back.
pub async fn run(
    sqs: &aws_sdk_sqs::Client,
    plan: &RedrivePlan,
    deadline: Deadline,
    switch: &Switch,
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
        switch,
        switch_read: tokio::sync::Mutex::new(Instant::now()),
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
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
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

    /// The pause engaged since the switch was last read, read at most every `SWITCH_EVERY` by
    /// one worker at a time.
    async fn paused(&self) -> Option<String> {
        let mut read = self.switch_read.try_lock().ok()?;
        if read.elapsed() < SWITCH_EVERY {
            return None;
        }
        let paused = self.switch.paused().await;
        *read = Instant::now();
        paused
    }

    async fn worker(&self) {
        while !self.stopped() {
            if let Some(paused) = self.paused().await {
                self.halt(format!("{paused}; the rest stays in the DLQ"));
                return;
            }
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
    // Over 80 lines: send, then delete exactly what was accepted, with each failure kind (too
    // large, batch limit, refused, not deleted) accounted for in the same pass, so that the ledger
    // cannot lose a message between functions.
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
