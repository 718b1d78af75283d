//! dlq-redriver's world: a managed source queue (maxReceiveCount 2) and its DLQ, an unmanaged
//! pair whose DLQ holds messages, a producer, and a consumer that fails or works. The events
//! that reach dlq-redriver: the DLQ's depth alarm (which redrives), a backlog alarm on the source
//! queue (which the template's rule also delivers), a person's inspections and redrives,
//! approvals and denials (a sequence runs in `auto` or in `approve` mode), pauses and resumes,
//! and the previous event delivered again.
//!
//! The consumer is the witness of the promises about messages: it counts its own receives of
//! each message, so a receive made by anyone else (an inspection) shows in SQS's
//! ApproximateReceiveCount, or as a message in the DLQ before its consumer failed it
//! maxReceiveCount times.

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use dlq_redriver::Redriver;
use runbook_shared::model::{Outcome, Output, Report};
use runbook_tests::fixtures::{
    QueuePair, SqsQueue, create_audit_table, depth, invocation, queue_alarm_event, redriver,
    redriver_clients, send_messages,
};
use runbook_tests::moto::moto;
use serde_json::{Value, json};

use super::{Rng, World, try_at_random};

/// The source queue's maxReceiveCount: its consumer's attempts before SQS moves a message.
const MAX_RECEIVES: u32 = 2;
/// The messages waiting in the unmanaged DLQ, which nothing may move.
const UNMANAGED_WAITING: i64 = 3;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The producer sends n new messages to the source.
    Send(usize),
    /// The consumer receives every visible message once and fails it (it becomes visible
    /// again); a message received maxReceiveCount times goes to the DLQ at the next receive.
    Fail,
    /// The consumer receives every visible message and processes it (deletes it).
    Consume,
    /// n new messages that the consumer cannot process: sent, then failed until SQS moves
    /// them (with any other message that is out of attempts) to the DLQ.
    Poison(usize),
    /// The DLQ's depth alarm fires (REDRIVE_ON_ALARM is true).
    DlqAlarm,
    /// A backlog alarm on the source queue reaches dlq-redriver.
    SourceAlarm,
    /// The unmanaged DLQ's depth alarm fires.
    UnmanagedAlarm,
    /// A person inspects the DLQ.
    InspectDlq,
    /// A person inspects the source queue.
    InspectSource,
    /// A person asks for a redrive of the DLQ.
    Redrive,
    /// A person asks for a redrive of the unmanaged DLQ.
    RedriveUnmanaged,
    /// The latest plan is approved.
    Approve,
    /// The latest plan is denied.
    Deny,
    Pause,
    Resume,
    /// The previous event delivered again.
    Again,
}

/// The mode dlq-redrive runs in for a whole sequence.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    approve: bool,
}

struct Queues {
    sqs: aws_sdk_sqs::Client,
    redriver: Redriver,
    managed: QueuePair,
    unmanaged: QueuePair,
    /// Messages the producer sent, and those the consumer processed.
    sent: i64,
    consumed: i64,
    /// The consumer's receives of each message it knows (by message id) still in the source.
    attempts: HashMap<String, u32>,
    paused: bool,
    approve: bool,
    /// The latest plan offered (with the DLQ's depth it was made from, and whether a person
    /// asked for it by hand), the plans approved, and the plan denied (and whether people were
    /// told that a run met it).
    plan: Option<(String, i64, bool)>,
    approved: HashSet<String>,
    denied: Option<Denied>,
    last: Option<Value>,
}

struct Denied {
    plan: String,
    depth: i64,
    /// Asked for by hand: a person's request is a question of its own, which a denial of the
    /// alarm's plan does not answer (and the other way round).
    manual: bool,
    told: bool,
}

/// What the invariants compare: the depths of the four queues (visible and in flight).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    source: i64,
    dlq: i64,
    unmanaged_source: i64,
    unmanaged_dlq: i64,
}

impl Queues {
    async fn seen(&self) -> Seen {
        Seen {
            source: depth(&self.sqs, &self.managed.source).await,
            dlq: depth(&self.sqs, &self.managed.dlq).await,
            unmanaged_source: depth(&self.sqs, &self.unmanaged.source).await,
            unmanaged_dlq: depth(&self.sqs, &self.unmanaged.dlq).await,
        }
    }

    async fn deliver(&mut self, event: Value) -> Vec<Report> {
        let reports = match self.redriver.handle(event.clone(), &invocation()).await {
            Output::One(report) => vec![*report],
            Output::Sweep { reports } => reports,
        };
        self.last = Some(event);
        reports
    }

    fn inspect(queue: &SqsQueue) -> Value {
        json!({"dlq": queue.name, "action": "inspect"})
    }

    /// The producer's messages, by the ids SQS gave them.
    async fn send(&mut self, count: usize) {
        let entries = (0..count)
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(json!({"n": self.sent + i as i64}).to_string())
                    .build()
                    .expect("entry")
            })
            .collect();
        let sent = self
            .sqs
            .send_message_batch()
            .queue_url(&self.managed.source.url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
        for entry in sent.successful() {
            self.attempts.insert(entry.message_id().to_string(), 0);
        }
        self.sent += count as i64;
    }

    /// The consumer receives every visible message of the source once, then deletes them
    /// (`process`) or lets them go back (it failed). What it saw that breaks a promise.
    async fn consume(&mut self, process: bool) -> Vec<String> {
        let source = &self.managed.source;
        let mut received = Vec::new();
        loop {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&source.url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .expect("the consumer's receive");
            if batch.messages().is_empty() {
                break;
            }
            received.extend(batch.messages.unwrap_or_default());
        }
        let mut broken = Vec::new();
        let mut seen = HashSet::new();
        for message in &received {
            let id = message.message_id().unwrap_or_default().to_string();
            let count: u32 = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|count| count.parse().ok())
                .unwrap_or(0);
            // A message the consumer has not seen is new or redriven: no receive yet.
            let expected = self.attempts.get(&id).copied().unwrap_or(0) + 1;
            if count != expected {
                broken.push(format!(
                    "message {id} was received {count} times, {expected} of them by its consumer: something else spent its delivery attempts"
                ));
            }
            seen.insert(id.clone());
            let receipt = message.receipt_handle().unwrap_or_default();
            if process {
                self.sqs
                    .delete_message()
                    .queue_url(&source.url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("the consumer's delete");
                self.attempts.remove(&id);
                self.consumed += 1;
            } else {
                self.sqs
                    .change_message_visibility()
                    .queue_url(&source.url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .expect("the consumer's failure");
                self.attempts.insert(id, expected);
            }
        }
        // Messages not received went to the DLQ at this receive: only those whose consumer
        // failed them maxReceiveCount times may have.
        let moved: Vec<(String, u32)> = self
            .attempts
            .iter()
            .filter(|(id, _)| !seen.contains(*id))
            .map(|(id, attempts)| (id.clone(), *attempts))
            .collect();
        for (id, attempts) in moved {
            if attempts < MAX_RECEIVES {
                broken.push(format!(
                    "message {id} left the source after {attempts} of its consumer's {MAX_RECEIVES} attempts"
                ));
            }
            self.attempts.remove(&id);
        }
        broken
    }

    /// Runs one step: its reports, and what the consumer saw that breaks a promise.
    async fn act(&mut self, step: Step) -> (Vec<Report>, Vec<String>) {
        let event = match step {
            Step::Send(count) => {
                self.send(count).await;
                return (Vec::new(), Vec::new());
            }
            Step::Fail => return (Vec::new(), self.consume(false).await),
            Step::Consume => return (Vec::new(), self.consume(true).await),
            Step::Poison(count) => {
                self.send(count).await;
                let mut broken = Vec::new();
                for _ in 0..=MAX_RECEIVES {
                    broken.extend(self.consume(false).await);
                }
                return (Vec::new(), broken);
            }
            Step::DlqAlarm => queue_alarm_event("dlq-depth", "ALARM", &self.managed.dlq.name),
            Step::SourceAlarm => queue_alarm_event("backlog", "ALARM", &self.managed.source.name),
            Step::UnmanagedAlarm => {
                queue_alarm_event("dlq-depth", "ALARM", &self.unmanaged.dlq.name)
            }
            Step::InspectDlq => Self::inspect(&self.managed.dlq),
            Step::InspectSource => Self::inspect(&self.managed.source),
            Step::Redrive => json!({"dlq": self.managed.dlq.name, "action": "redrive"}),
            Step::RedriveUnmanaged => {
                json!({"dlq": self.unmanaged.dlq.name, "action": "redrive"})
            }
            Step::Approve | Step::Deny => {
                let Some((plan, ..)) = self.plan.clone() else {
                    return (Vec::new(), Vec::new());
                };
                let decision = if matches!(step, Step::Approve) {
                    "approve"
                } else {
                    "deny"
                };
                json!({decision: plan, "by": "generator", "reason": "invariants"})
            }
            Step::Pause => {
                json!({"control": "pause", "reason": "invariants", "minutes": 60, "by": "generator"})
            }
            Step::Resume => json!({"control": "resume", "reason": "invariants", "by": "generator"}),
            Step::Again => match self.last.clone() {
                Some(event) => event,
                None => return (Vec::new(), Vec::new()),
            },
        };
        (self.deliver(event).await, Vec::new())
    }
}

/// Whether the step is an event delivered to dlq-redriver (not the producer or consumer).
fn by_the_function(step: Step) -> bool {
    !matches!(
        step,
        Step::Send(_) | Step::Poison(_) | Step::Fail | Step::Consume
    )
}

impl World for Queues {
    type Step = Step;
    type Setting = Setting;

    fn setting(rng: &mut Rng) -> Setting {
        Setting {
            approve: rng.below(2) == 1,
        }
    }

    fn step(rng: &mut Rng) -> Step {
        // The consumer fails more often than it works, so that messages reach the DLQ.
        match rng.below(21) {
            0 => Step::Send([1, 3][rng.below(2)]),
            17 | 18 => Step::Poison([1, 4][rng.below(2)]),
            1 => Step::Poison(2),
            2..=5 => Step::Fail,
            6 => Step::Consume,
            7 | 8 => Step::DlqAlarm,
            9 => Step::SourceAlarm,
            10 => [Step::UnmanagedAlarm, Step::RedriveUnmanaged][rng.below(2)],
            11 => [Step::InspectDlq, Step::InspectSource][rng.below(2)],
            12 => Step::Redrive,
            13 | 19 => Step::Approve,
            14 => Step::Deny,
            15 => Step::Pause,
            16 => Step::Resume,
            _ => Step::Again,
        }
    }

    async fn new(setting: Setting) -> Self {
        let sqs = moto().sqs();
        let audit = create_audit_table(&moto().dynamodb()).await;
        let managed = QueuePair::create_with(&sqs, "managed-invq", false, MAX_RECEIVES).await;
        let unmanaged = QueuePair::create_with(&sqs, "other-invq", false, MAX_RECEIVES).await;
        let waiting: Vec<String> = (0..UNMANAGED_WAITING)
            .map(|n| json!({"unmanaged": n}).to_string())
            .collect();
        send_messages(&sqs, &unmanaged.dlq, &waiting, None, &[]).await;
        let mode = if setting.approve { "approve" } else { "auto" };
        let modes = json!({"dlq-redrive": mode}).to_string();
        let redriver = redriver(
            &audit,
            &[
                ("RUNBOOK_MODES", &modes),
                ("REDRIVE_ON_ALARM", "true"),
                ("COOLDOWN_SECONDS", "0"),
                ("MAX_ACTIONS_PER_HOUR", "1000"),
            ],
            redriver_clients(),
        );
        Self {
            sqs,
            redriver,
            managed,
            unmanaged,
            sent: 0,
            consumed: 0,
            attempts: HashMap::new(),
            paused: false,
            approve: setting.approve,
            plan: None,
            approved: HashSet::new(),
            denied: None,
            last: None,
        }
    }

    async fn run(&mut self, step: Step) -> Vec<String> {
        let paused = self.paused;
        let before = self.seen().await;
        let (reports, mut broken) = self.act(step).await;
        // The event this step delivered (a decision names its plan).
        let event = if by_the_function(step) {
            self.last.clone()
        } else {
            None
        };
        let after = self.seen().await;
        let by_the_function = by_the_function(step);
        // 1. Nothing is changed while paused.
        if paused && by_the_function && !matches!(step, Step::Resume) && after != before {
            broken.push(format!(
                "paused, yet {step:?} changed {before:?} to {after:?}"
            ));
        }
        // 2. Nothing unmanaged is changed.
        if (after.unmanaged_source, after.unmanaged_dlq) != (0, UNMANAGED_WAITING) {
            broken.push(format!("the unmanaged queues changed: {after:?}"));
        }
        // 6. No message is lost: every message sent was processed or is in a queue.
        if after.source + after.dlq + self.consumed != self.sent {
            broken.push(format!(
                "{} sent and {} processed, but {} in the source and {} in the DLQ after {step:?}",
                self.sent, self.consumed, after.source, after.dlq
            ));
        }
        // 8. An approval applies at most once: a plan applied before changes nothing again.
        let decided = |key: &str| {
            event
                .as_ref()
                .and_then(|event| event.get(key)?.as_str())
                .map(str::to_string)
        };
        if let Some(approved) = decided("approve") {
            if self.approved.contains(&approved) && after != before {
                broken.push(format!(
                    "plan {approved} was applied a second time: {before:?} became {after:?}"
                ));
            }
            if reports.iter().any(|r| r.outcome == Outcome::Remediated) {
                self.approved.insert(approved);
            }
        }
        if let Some(denied) = decided("deny")
            && reports.iter().any(|r| r.outcome == Outcome::Skipped)
            && self
                .denied
                .as_ref()
                .is_none_or(|known| known.plan != denied)
            && let Some((plan, depth, manual)) =
                self.plan.clone().filter(|(plan, ..)| *plan == denied)
        {
            self.denied = Some(Denied {
                plan,
                depth,
                manual,
                told: false,
            });
        }
        let manual = event
            .as_ref()
            .is_some_and(|event| event.get("action").is_some());
        for report in &reports {
            if report.outcome == Outcome::AwaitingApproval
                && let Some(approval) = &report.approval
            {
                // A plan pointed at again keeps the state it was made from.
                let known = self
                    .plan
                    .as_ref()
                    .is_some_and(|(plan, ..)| *plan == approval.plan_id);
                match &self.plan {
                    // An open plan answers only the question it was asked: new messages are a
                    // new one.
                    Some((plan, depth, _)) if known && *depth != before.dlq => {
                        broken.push(format!(
                            "plan {plan} was made with {depth} messages in the DLQ; with {} it still stood for them: {}",
                            before.dlq, report.reason
                        ));
                    }
                    _ if known => {}
                    _ => self.plan = Some((approval.plan_id.clone(), before.dlq, manual)),
                }
            }
        }
        // A run in approve mode moves no message without an approval.
        if self.approve && by_the_function && decided("approve").is_none() && after.dlq < before.dlq
        {
            broken.push(format!(
                "in approve mode, {step:?} moved messages without an approval: {before:?} became {after:?}"
            ));
        }
        for report in &reports {
            // 9. A denial covers one plan: new messages are a new question, and a run that
            // meets the denial is told to people once.
            if report.outcome == Outcome::Skipped
                && report.reason.starts_with("denied")
                && decided("deny").is_none()
                && let Some(denied) = &mut self.denied
            {
                if before.dlq != denied.depth {
                    broken.push(format!(
                        "plan {} was denied with {} messages in the DLQ; with {} it still answered: {}",
                        denied.plan, denied.depth, before.dlq, report.reason
                    ));
                }
                if denied.told && report.escalation.is_some() {
                    broken.push(format!(
                        "people were told of the denial of {} again: {}",
                        denied.plan, report.reason
                    ));
                }
                if !denied.told && report.escalation.is_none() {
                    broken.push(format!(
                        "a run met the denial of {} and told nobody: {}",
                        denied.plan, report.reason
                    ));
                }
                denied.told = true;
            }
            // ...and the question it answered is not asked again while it stands: the same
            // messages are no new plan.
            if report.outcome == Outcome::AwaitingApproval
                && let Some(denied) = &self.denied
                && before.dlq == denied.depth
                && denied.manual == manual
                && report
                    .approval
                    .as_ref()
                    .is_some_and(|approval| !approval.already_requested)
            {
                broken.push(format!(
                    "plan {} was denied with {} messages in the DLQ; with the same {} a person was asked again: {}",
                    denied.plan, denied.depth, before.dlq, report.reason
                ));
            }
            // No run fails (no fault is made in this world).
            if report.outcome == Outcome::Failed {
                broken.push(format!("{step:?} failed: {}", report.reason));
            }
        }
        // The switch moves only when the control says it did.
        let done = reports.iter().any(|r| r.outcome == Outcome::Remediated);
        match step {
            Step::Pause if done => self.paused = true,
            Step::Resume if done => self.paused = false,
            _ => {}
        }
        broken
    }
}

#[tokio::test]
async fn the_invariants_hold_over_random_sequences_of_dlq_redriver() {
    try_at_random::<Queues>("dlq-redriver").await;
}
