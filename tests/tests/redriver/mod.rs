//! dlq-redriver against moto (state and behaviour) and replay clients (faults moto cannot make).

mod consumer;
mod guards;
mod inspect_purge;
mod redrive;
mod replayed;
mod returned;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use dlq_redriver::Redriver;
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_shared::model::{Outcome, Output, Report, VerificationStatus};
use runbook_tests::fixtures::{
    QueuePair, create_audit_table, create_queue, depth, drain_all, fail_all, invocation_within,
    peek_all, queue_alarm_event, redriver, redriver_clients, scheduled_event, send_messages,
};
use runbook_tests::moto::moto;
use serde_json::{Value, json};

struct Setup {
    sqs: aws_sdk_sqs::Client,
    audit: String,
}

impl Setup {
    async fn new() -> Self {
        Self {
            sqs: moto().sqs(),
            audit: create_audit_table(&moto().dynamodb()).await,
        }
    }

    fn redriver(&self, extra: &[(&str, &str)]) -> Redriver {
        redriver(&self.audit, extra, redriver_clients())
    }
}

fn bodies(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "n": i}).to_string())
        .collect()
}

async fn run_with(redriver: &Redriver, event: Value, budget: Duration) -> Report {
    match redriver.handle(event, &invocation_within(budget)).await {
        Output::One(report) => *report,
        Output::Sweep { reports } => panic!("expected one report, got {reports:?}"),
    }
}

async fn run(redriver: &Redriver, event: Value) -> Report {
    run_with(redriver, event, Duration::from_secs(60)).await
}

fn body_ids(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m.body().unwrap_or_default()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn details(report: &Report) -> &Value {
    report.details.as_ref().expect("details")
}
