//! "Never make it worse", part 2: each defect found in dlq-redriver and health-prober, as a test
//! of the promise it broke, against moto (and replay clients where moto cannot stage the
//! answer).

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use dlq_redriver::Redriver;
use dlq_redriver::config::RedriverConfig;
use health_prober::check::Clients;
use health_prober::config::ProberConfig;
use health_prober::{HealthReport, Prober, ProberOutput};
use runbook_shared::audit::AuditStore;
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::report::{
    Action, Check, Outcome, Output, Report, SettleBy, TriggerInfo, TriggerKind, Verification,
    VerificationStatus,
};
use runbook_shared::safety::Invocation;
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, SqsQueue, create_audit_table, create_queue, depth, fail_all, peek_all,
    queue_alarm_event, send_messages,
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

    fn config(&self, extra: &[(&str, &str)]) -> RedriverConfig {
        let mut pairs = vec![
            ("AUDIT_TABLE", self.audit.as_str()),
            ("AWS_REGION", REGION),
            ("ACCOUNT_ID", ACCOUNT),
            ("MANAGED_RESOURCES", "managed-*"),
        ];
        pairs.extend_from_slice(extra);
        RedriverConfig::from_env(&Env::from_pairs(&pairs)).expect("config")
    }

    fn redriver_with(&self, extra: &[(&str, &str)], sqs: aws_sdk_sqs::Client) -> Redriver {
        let clients = dlq_redriver::Clients {
            sqs,
            ..dlq_redriver::Clients::new(&moto().sdk_config())
        };
        let mut redriver = Redriver::with_clients(self.config(extra), clients);
        redriver.poll_interval = Duration::from_millis(50);
        redriver
    }

    fn redriver(&self, extra: &[(&str, &str)]) -> Redriver {
        self.redriver_with(extra, self.sqs.clone())
    }

    fn prober(&self) -> Prober {
        Prober::with_clients(
            ProberConfig::from_env(&Env::from_pairs(&[
                ("AUDIT_TABLE", self.audit.as_str()),
                ("VERIFICATION_WINDOW_MINUTES", "1"),
            ]))
            .expect("config"),
            Clients {
                http: reqwest::Client::new(),
                dynamodb: moto().dynamodb(),
                sqs: moto().sqs(),
                cloudwatch: moto().cloudwatch(),
                cloudformation: moto().cloudformation(),
                lambda: moto().lambda(),
            },
        )
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
        ProberOutput::Rejected(report) => panic!("rejected: {report:?}"),
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

// ---- dlq-redriver --------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_from_a_former_source_goes_nowhere_unless_a_person_names_the_target() {
    let setup = Setup::new().await;
    let pair = QueuePair::create_with(&setup.sqs, "managed-moved", false, 1).await;
    send_messages(&setup.sqs, &pair.source, &bodies("old", 3), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    // The old source's redrive policy now points elsewhere; another team's queue is the DLQ's
    // only source.
    let elsewhere = create_queue(&setup.sqs, &unique("managed-elsewhere-dlq"), &[]).await;
    set_attribute(
        &setup.sqs,
        &pair.source,
        QueueAttributeName::RedrivePolicy,
        &json!({"deadLetterTargetArn": elsewhere.arn, "maxReceiveCount": 1}).to_string(),
    )
    .await;
    let other_team =
        QueuePair::source_of(&setup.sqs, &unique("managed-other-team"), &pair.dlq, false).await;

    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(depth(&setup.sqs, &other_team).await, 0, "{report:?}");
    assert_eq!(
        details(&report)["ledger"]["unroutable"],
        json!(3),
        "{report:?}"
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 3);

    // A person's explicit target takes them, and the report says so per message.
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "target": pair.source.name}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        details(&report)["retargeted"]["total"],
        json!(3),
        "{report:?}"
    );
    assert_eq!(
        body_ids(&peek_all(&setup.sqs, &pair.source).await),
        vec!["old-0", "old-1", "old-2"]
    );
    assert_eq!(depth(&setup.sqs, &other_team).await, 0);
}

#[tokio::test]
async fn a_queue_in_another_region_or_account_is_refused() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-region", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("kept", 2), None, &[]).await;
    let redriver = setup.redriver(&[]);
    for arn in [
        format!("arn:aws:sqs:eu-west-1:{ACCOUNT}:{}", pair.dlq.name),
        format!("arn:aws:sqs:{REGION}:999999999999:{}", pair.dlq.name),
    ] {
        let report = run(
            &redriver,
            json!({"dlq": arn, "action": "purge", "confirm": pair.dlq.name}),
        )
        .await;
        assert_eq!(report.outcome, Outcome::Rejected, "{report:?}");
        assert!(report.reason.contains(REGION), "{}", report.reason);
    }
    // An alarm raised in another region names a queue there, not this one.
    let mut alarm = queue_alarm_event("depth", "ALARM", &pair.dlq.name);
    alarm["region"] = json!("eu-west-1");
    let report = run(&setup.redriver(&[("REDRIVE_ON_ALARM", "true")]), alarm).await;
    assert_eq!(report.outcome, Outcome::Rejected, "{report:?}");
    assert!(report.reason.contains("eu-west-1"), "{}", report.reason);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);
}

#[tokio::test]
async fn a_held_fifo_message_holds_the_rest_of_its_group() {
    let setup = Setup::new().await;
    let pair = QueuePair::create_with(&setup.sqs, "managed-order", true, 5).await;
    // m1 of group G is poison (redriven 3 times already); m2 follows it in G; h1 is in group H.
    for (id, group, poison) in [("m1", "G", true), ("m2", "G", false), ("h1", "H", false)] {
        let mut send = setup
            .sqs
            .send_message()
            .queue_url(&pair.dlq.url)
            .message_body(json!({"id": id}).to_string())
            .message_group_id(group)
            .message_deduplication_id(id);
        if poison {
            send = send.message_attributes(
                "redrive-count",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value("3")
                    .build()
                    .unwrap(),
            );
        }
        send.send().await.expect("send");
    }
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "target": pair.source.name}),
    )
    .await;
    let ledger = &details(&report)["ledger"];
    assert_eq!(ledger["poison"], json!(1), "{report:?}");
    assert_eq!(ledger["held_behind"], json!(1), "{report:?}");
    assert_eq!(ledger["moved"], json!(1), "{report:?}");
    assert_eq!(
        body_ids(&peek_all(&setup.sqs, &pair.source).await),
        vec!["h1"]
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);
}

#[tokio::test]
async fn a_message_too_large_for_its_counter_is_held_and_the_run_goes_on() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-large", false).await;
    for queue in [&pair.source, &pair.dlq] {
        set_attribute(
            &setup.sqs,
            queue,
            QueueAttributeName::MaximumMessageSize,
            "262144",
        )
        .await;
    }
    // At the limit already: the redrive-count attribute would take it over.
    let large = format!(
        "{{\"id\": \"large\", \"pad\": \"{}\"}}",
        "x".repeat(262_144 - 30)
    );
    assert!(large.len() <= 262_144);
    send_messages(&setup.sqs, &pair.dlq, &[large], None, &[]).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("small", 5), None, &[]).await;
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    let ledger = &details(&report)["ledger"];
    assert_eq!(ledger["too_large"], json!(1), "{report:?}");
    assert_eq!(ledger["moved"], json!(5), "{report:?}");
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 1);
}

#[tokio::test]
async fn five_thousand_poison_messages_still_leave_an_audit_record() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-poison", false).await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &bodies("poison", 5_000),
        None,
        &[("redrive-count", "3")],
    )
    .await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("fine", 10), None, &[]).await;
    let report = run_within(
        &setup.redriver(&[("REDRIVE_RATE_PER_SECOND", "1000")]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        details(&report)["ledger"]["poison"],
        json!(5_000),
        "{}",
        report.reason
    );
    assert_eq!(
        details(&report)["ledger"]["moved"],
        json!(10),
        "{}",
        report.reason
    );
    let poison = &details(&report)["poison_ids"];
    assert_eq!(poison["total"], json!(5_000));
    assert_eq!(poison["first"].as_array().map(Vec::len), Some(100));
    assert!(report.reason.len() < 2_000, "{}", report.reason);
    let size = serde_json::to_vec(&report).unwrap().len();
    assert!(size < 64 * 1024, "the report is {size} bytes");
    let audit_id = report
        .audit_id
        .clone()
        .unwrap_or_else(|| panic!("not audited: {}", report.reason));
    let records = setup
        .audit_store()
        .history(&format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", pair.dlq.name))
        .await
        .unwrap();
    assert!(
        records.iter().any(|r| r.audit_id == audit_id),
        "{records:?}"
    );
}

#[tokio::test]
async fn any_managed_queue_can_be_inspected_and_lambda_failure_records_are_named() {
    let setup = Setup::new().await;
    let queue = create_queue(&setup.sqs, &unique("managed-failed-invocations"), &[]).await;
    let record = json!({
        "version": "1.0",
        "timestamp": "2026-11-23T03:12:00.000Z",
        "requestContext": {"requestId": "e0f0", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders-api:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"order": 42},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom"}
    });
    send_messages(&setup.sqs, &queue, &[record.to_string()], None, &[]).await;
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": queue.name, "action": "inspect"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    let groups = details(&report)["by_source"].to_string();
    assert!(groups.contains("function:orders-api"), "{groups}");
    assert!(groups.contains("RetriesExhausted"), "{groups}");
    assert_eq!(depth(&setup.sqs, &queue).await, 1);
    // Its alarm inspects it too, even where alarms redrive: its messages have no source to go to.
    let report = run(
        &setup.redriver(&[("REDRIVE_ON_ALARM", "true")]),
        queue_alarm_event("failed-invocations", "ALARM", &queue.name),
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("inspected instead of redriven")),
        "{report:?}"
    );
    // A redrive of a queue no queue fails into needs a target.
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": queue.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Rejected, "{report:?}");
    assert!(report.reason.contains("\"target\""), "{}", report.reason);
}

#[tokio::test]
async fn a_purge_waits_a_minute_at_most_and_the_sweep_settles_it() {
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-purge", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("gone", 3), None, &[]).await;
    // Failures keep arriving: SQS never shows the queue empty.
    let dlq = pair.dlq.clone();
    let source = pair.source.clone();
    let attributes = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(move || {
        GetQueueAttributesOutput::builder()
            .attributes(QueueAttributeName::QueueArn, dlq.arn.clone())
            .attributes(QueueAttributeName::ApproximateNumberOfMessages, "3")
            .attributes(
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                "0",
            )
            .attributes(QueueAttributeName::ApproximateNumberOfMessagesDelayed, "0")
            .build()
    });
    let url = mock!(aws_sdk_sqs::Client::get_queue_url).then_output({
        let url = pair.dlq.url.clone();
        move || {
            aws_sdk_sqs::operation::get_queue_url::GetQueueUrlOutput::builder()
                .queue_url(url.clone())
                .build()
        }
    });
    let sources = mock!(aws_sdk_sqs::Client::list_dead_letter_source_queues).then_output(move || {
        aws_sdk_sqs::operation::list_dead_letter_source_queues::ListDeadLetterSourceQueuesOutput::builder()
            .queue_urls(source.url.clone())
            .build()
            .unwrap()
    });
    let purge = mock!(aws_sdk_sqs::Client::purge_queue)
        .then_output(|| aws_sdk_sqs::operation::purge_queue::PurgeQueueOutput::builder().build());
    let sqs = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&attributes, &url, &sources, &purge]
    );
    let mut redriver = setup.redriver_with(&[], sqs);
    redriver.purge_wait = Duration::from_millis(500);
    let started = Instant::now();
    let report = run_within(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "purge", "confirm": pair.dlq.name}),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        report.verification.status,
        VerificationStatus::Pending,
        "{report:?}"
    );
    assert!(
        matches!(
            report.verification.settle_by,
            Some(SettleBy::QueueDepth { .. })
        ),
        "{report:?}"
    );
    // The sweep reads the queue (in moto, where the purge above never ran: still 3 messages,
    // as many as before it) and settles the purge as failed; the record is no longer pending.
    let sqs = moto().sqs();
    let (cloudwatch, cloudformation) = (moto().cloudwatch(), moto().cloudformation());
    let clients = health_prober::sweep::SweepClients {
        cloudwatch: &cloudwatch,
        cloudformation: &cloudformation,
        sqs: &sqs,
    };
    let settled = health_prober::sweep::settle_pending(
        &setup.audit_store(),
        &clients,
        &health_prober::sweep::Window {
            after: chrono::Duration::zero(),
            give_up: chrono::Duration::hours(24),
        },
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let settled = settled
        .iter()
        .find(|s| Some(&s.audit_id) == report.audit_id.as_ref())
        .unwrap_or_else(|| panic!("{settled:?}"));
    assert_eq!(settled.status, VerificationStatus::Failed, "{settled:?}");
}

#[tokio::test]
async fn held_messages_are_released_within_the_deadline() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-release", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("held", 100), None, &[]).await;
    // Every release is slow (ten of them one after another would end past the deadline), and
    // one never answers in time at all.
    moto()
        .delay("ChangeMessageVisibilityBatch", &pair.dlq.name, 30_000)
        .await;
    for _ in 0..9 {
        moto()
            .delay("ChangeMessageVisibilityBatch", &pair.dlq.name, 2_000)
            .await;
    }
    let budget = Duration::from_secs(14);
    let started = Instant::now();
    let report = run_within(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"attribute_equals": {"tenant": "nobody"}}}),
        budget,
    )
    .await;
    assert!(
        started.elapsed() < budget - Duration::from_secs(1),
        "returned after {:?}: {report:?}",
        started.elapsed()
    );
    assert_eq!(
        details(&report)["ledger"]["filtered_out"],
        json!(100),
        "{report:?}"
    );
    assert_eq!(
        details(&report)["not_released_ids"]["total"],
        json!(10),
        "the batch still waiting at the deadline is left to its visibility timeout: {report:?}"
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 100, "nothing lost");
}

// ---- health-prober -------------------------------------------------------------------------------

#[tokio::test]
async fn a_probe_never_outlives_the_invocation() {
    let setup = Setup::new().await;
    let endpoints = Endpoints::start().await;
    let budget = Duration::from_secs(8);
    let started = Instant::now();
    let report = tokio::time::timeout(
        budget,
        probe(
            &setup.prober(),
            json!({"probes": [{"name": "hangs", "kind": "http", "url": endpoints.url("/hang"), "timeout_ms": 300_000}]}),
            budget,
        ),
    )
    .await
    .expect("the report came back before the deadline");
    assert!(started.elapsed() < budget - Duration::from_secs(1));
    let hangs = &report.probes[0];
    assert!(!hangs.healthy);
    assert!(hangs.detail.contains("capped"), "{}", hangs.detail);
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

#[tokio::test]
async fn one_record_that_cannot_be_checked_never_blocks_the_sweep() {
    let setup = Setup::new().await;
    let audit = setup.audit_store();
    // The older record's stack was deleted since; the newer one's alarm is OK.
    let gone = pending_record(
        &audit,
        "gone",
        SettleBy::Stack {
            name: unique("deleted-stack"),
        },
    )
    .await;
    let alarm = unique("recovered");
    moto()
        .cloudwatch()
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("recovered")
        .send()
        .await
        .unwrap();
    let recovered = pending_record(&audit, "recovered", SettleBy::Alarm { name: alarm }).await;
    // One that no check will ever decide (its alarm never leaves INSUFFICIENT_DATA), older than
    // the give-up age: settled as failed instead of staying pending for ever.
    let undecided_alarm = unique("undecided");
    moto()
        .cloudwatch()
        .put_metric_alarm()
        .alarm_name(&undecided_alarm)
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(&undecided_alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::InsufficientData)
        .state_reason("no data")
        .send()
        .await
        .unwrap();
    let undecided = pending_record_at(
        &audit,
        "undecided",
        SettleBy::Alarm {
            name: undecided_alarm,
        },
        chrono::Duration::hours(30),
    )
    .await;
    let report = probe(
        &setup.prober(),
        json!({"probes": []}),
        Duration::from_secs(30),
    )
    .await;
    let status = |id: &str| {
        report
            .settled
            .iter()
            .find(|s| s.audit_id == id)
            .map(|s| s.status)
    };
    assert_eq!(
        status(&gone),
        Some(VerificationStatus::Failed),
        "{report:?}"
    );
    assert_eq!(
        status(&recovered),
        Some(VerificationStatus::Verified),
        "{report:?}"
    );
    assert_eq!(
        status(&undecided),
        Some(VerificationStatus::Failed),
        "{report:?}"
    );
}
