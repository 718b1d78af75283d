//! "Never make it worse", part 2: each defect found in dlq-redriver and health-prober, as a test
//! of the promise it broke, against moto (and replay clients where moto cannot stage the
//! answer).

mod dlq;
mod prober;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use dlq_redriver::Redriver;
use health_prober::{HealthReport, Prober, ProberOutput};
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_shared::model::{
    Action, Check, Outcome, Output, Report, SettleBy, TriggerInfo, TriggerKind, Verification,
    VerificationStatus,
};
use runbook_shared::store::AuditStore;
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, SqsQueue, create_audit_table, create_queue, depth, fail_all, peek_all, prober,
    queue_alarm_event, redriver, redriver_clients, send_messages,
};
use runbook_tests::moto::{ACCOUNT, REGION, moto};
use runbook_tests::unique;
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

    fn redriver_with(&self, extra: &[(&str, &str)], sqs: aws_sdk_sqs::Client) -> Redriver {
        let clients = dlq_redriver::Clients {
            sqs,
            ..redriver_clients()
        };
        redriver(&self.audit, extra, clients)
    }

    fn redriver(&self, extra: &[(&str, &str)]) -> Redriver {
        self.redriver_with(extra, self.sqs.clone())
    }

    fn prober(&self) -> Prober {
        prober(&self.audit, &[("VERIFICATION_WINDOW_MINUTES", "1")])
    }

    fn audit_store(&self) -> AuditStore {
        AuditStore::new(moto().dynamodb(), self.audit.clone(), 1)
    }
}

fn invocation_within(budget: Duration) -> Invocation {
    Invocation::new(uuid::Uuid::new_v4().to_string(), Deadline::after(budget))
}

async fn run_within(redriver: &Redriver, event: Value, budget: Duration) -> Report {
    match redriver.handle(event, &invocation_within(budget)).await {
        Output::One(report) => *report,
        Output::Sweep { reports } => panic!("expected one report, got {reports:?}"),
    }
}

async fn run(redriver: &Redriver, event: Value) -> Report {
    run_within(redriver, event, Duration::from_secs(60)).await
}

async fn probe(prober: &Prober, event: Value, budget: Duration) -> HealthReport {
    match prober.handle(event, &invocation_within(budget)).await {
        ProberOutput::Health(report) => *report,
        other => panic!("not a health report: {other:?}"),
    }
}

fn bodies(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| json!({"id": format!("{prefix}-{i}")}).to_string())
        .collect()
}

fn body_ids(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m.body()?).ok())
        .filter_map(|body| body["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn details(report: &Report) -> &Value {
    report.details.as_ref().expect("details")
}

async fn set_attribute(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
    name: QueueAttributeName,
    value: &str,
) {
    sqs.set_queue_attributes()
        .queue_url(&queue.url)
        .attributes(name, value)
        .send()
        .await
        .expect("set queue attributes");
}

/// A remediation recorded half an hour ago, pending on `settle_by`.
async fn pending_record(audit: &AuditStore, target: &str, settle_by: SettleBy) -> String {
    pending_record_at(audit, target, settle_by, chrono::Duration::minutes(30)).await
}

/// A remediation recorded `ago`, pending on `settle_by`.
async fn pending_record_at(
    audit: &AuditStore,
    target: &str,
    settle_by: SettleBy,
    ago: chrono::Duration,
) -> String {
    let trigger = TriggerInfo {
        kind: TriggerKind::Alarm,
        name: None,
        event_id: Some(uuid::Uuid::new_v4().to_string()),
    };
    let mut report = Report::new("alarm-responder", trigger, Outcome::Remediated, "acted");
    report.runbook = Some("stack-recovery".into());
    report.target = Some(target.to_string());
    report.actions.push(Action {
        api: "cloudformation:ContinueUpdateRollback".into(),
        target: target.into(),
        before: json!({}),
        after: json!({}),
        applied: true,
        error: None,
    });
    report.verification = Verification {
        status: VerificationStatus::Pending,
        checks: vec![Check::new("stable", false, "stable", "pending")],
        settle_by: Some(settle_by),
    };
    audit
        .record(&mut report, chrono::Utc::now() - ago)
        .await
        .unwrap();
    report.audit_id.unwrap()
}
