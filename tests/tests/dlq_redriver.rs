//! dlq-redriver against moto (state and behaviour) and replay clients (faults moto cannot make).

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use dlq_redriver::Redriver;
use dlq_redriver::config::RedriverConfig;
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::report::{Outcome, Output, Report, VerificationStatus};
use runbook_shared::safety::Invocation;
use runbook_tests::fixtures::{
    QueuePair, create_audit_table, create_queue, depth, drain_all, fail_all, peek_all,
    queue_alarm_event, scheduled_event, send_messages,
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
        let mut pairs = vec![
            ("AUDIT_TABLE", self.audit.as_str()),
            ("AWS_REGION", runbook_tests::moto::REGION),
            ("ACCOUNT_ID", runbook_tests::moto::ACCOUNT),
            ("MANAGED_RESOURCES", "managed-*"),
        ];
        pairs.extend_from_slice(extra);
        let config = RedriverConfig::from_env(&Env::from_pairs(&pairs)).expect("config");
        let clients = dlq_redriver::Clients {
            sqs: self.sqs.clone(),
            ..dlq_redriver::Clients::new(&moto().sdk_config())
        };
        let mut redriver = Redriver::with_clients(config, clients);
        redriver.poll_interval = Duration::from_millis(50);
        redriver
    }
}

fn bodies(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "n": i}).to_string())
        .collect()
}

async fn run_with(redriver: &Redriver, event: Value, budget: Duration) -> Report {
    let invocation = Invocation::new(uuid::Uuid::new_v4().to_string(), Deadline::after(budget));
    match redriver.handle(event, &invocation).await {
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

#[tokio::test]
async fn redrive_moves_every_message_home_keeping_attributes_and_counting_redrives() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-orders", false).await;
    send_messages(
        &setup.sqs,
        &pair.source,
        &bodies("std", 25),
        None,
        &[("tenant", "42")],
    )
    .await;
    fail_all(&setup.sqs, &pair.source).await;
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 25);

    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.verification.status,
        VerificationStatus::Verified,
        "{:?}",
        report.verification
    );
    let ledger = &details(&report)["ledger"];
    assert_eq!(
        (
            ledger["found"].as_i64(),
            ledger["moved"].as_u64(),
            ledger["remaining"].as_i64()
        ),
        (Some(25), Some(25), Some(0))
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
    let home = peek_all(&setup.sqs, &pair.source).await;
    assert_eq!(home.len(), 25);
    for message in &home {
        let attributes = message.message_attributes().expect("attributes");
        assert_eq!(attributes["tenant"].string_value(), Some("42"));
        assert_eq!(attributes["redrive-count"].string_value(), Some("1"));
    }
    assert!(report.audit_id.is_some());
    assert!(
        details(&report)["api_calls_per_message"].as_f64().unwrap() < 0.6,
        "{}",
        details(&report)
    );
}

#[tokio::test]
async fn fifo_redrive_keeps_the_order_within_each_group_and_uses_new_deduplication_ids() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-fifo", true).await;
    // In the DLQ in a known order, group by group.
    for group in ["a", "b", "c"] {
        send_messages(&setup.sqs, &pair.dlq, &bodies(group, 12), Some(group), &[]).await;
    }
    let report = run(
        &setup.redriver(&[("REDRIVE_CONCURRENCY", "3")]),
        json!({"dlq": pair.dlq.url, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
    let home = drain_all(&setup.sqs, &pair.source).await;
    assert_eq!(home.len(), 36);
    for group in ["a", "b", "c"] {
        let order: Vec<String> = body_ids(&home)
            .into_iter()
            .filter(|id| id.starts_with(&format!("{group}-")))
            .collect();
        let expected: Vec<String> = (0..12).map(|i| format!("{group}-{i}")).collect();
        assert_eq!(order, expected, "group {group} out of order");
    }
    for message in &home {
        let attributes = message.attributes().expect("system attributes");
        let dedup =
            &attributes[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId];
        assert!(
            dedup.starts_with("redrive-1-"),
            "a new deduplication id, not the original: {dedup}"
        );
        assert!(
            attributes
                .contains_key(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
        );
    }
}

#[tokio::test]
async fn fifo_messages_that_failed_their_receives_all_go_home() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-fifo-failed", true).await;
    for group in ["x", "y"] {
        send_messages(
            &setup.sqs,
            &pair.source,
            &bodies(group, 7),
            Some(group),
            &[],
        )
        .await;
    }
    fail_all(&setup.sqs, &pair.source).await;
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 14);
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    let mut home = body_ids(&drain_all(&setup.sqs, &pair.source).await);
    home.sort();
    let mut expected: Vec<String> = ["x", "y"]
        .iter()
        .flat_map(|g| (0..7).map(move |i| format!("{g}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(home, expected);
}

#[tokio::test]
async fn several_sources_each_message_goes_home_and_unknown_ones_need_a_target() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-multi", false).await;
    let second = QueuePair::source_of(
        &setup.sqs,
        &runbook_tests::unique("managed-second"),
        &pair.dlq,
        false,
    )
    .await;
    send_messages(&setup.sqs, &pair.source, &bodies("first", 5), None, &[]).await;
    send_messages(&setup.sqs, &second, &bodies("second", 4), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    fail_all(&setup.sqs, &second).await;
    // Sent straight to the DLQ: no DeadLetterQueueSourceArn.
    send_messages(&setup.sqs, &pair.dlq, &bodies("orphan", 2), None, &[]).await;

    let redriver = setup.redriver(&[]);
    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(
        report.reason.contains("2 messages name no source queue"),
        "{}",
        report.reason
    );
    assert!(
        report.reason.contains(&second.name) && report.reason.contains(&pair.source.name),
        "{}",
        report.reason
    );
    let mut first_home = body_ids(&peek_all(&setup.sqs, &pair.source).await);
    first_home.sort();
    assert_eq!(
        first_home,
        (0..5).map(|i| format!("first-{i}")).collect::<Vec<_>>()
    );
    // (Depths from here on: receiving from a source with maxReceiveCount 1 would fail its messages.)
    assert_eq!(depth(&setup.sqs, &second).await, 4);
    assert_eq!(
        depth(&setup.sqs, &pair.dlq).await,
        2,
        "the orphans stay, visible again"
    );

    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive", "target": second.name}),
    )
    .await;
    // The first redrive completed a run on this DLQ: a person's second run overrides the
    // cooldown, and says so.
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(
        report.notes[0].starts_with("manual run: overrode the cooldown"),
        "{report:?}"
    );
    let mut second_home = body_ids(&peek_all(&setup.sqs, &second).await);
    second_home.sort();
    assert_eq!(
        second_home,
        vec![
            "orphan-0", "orphan-1", "second-0", "second-1", "second-2", "second-3"
        ]
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
}

#[tokio::test]
async fn filters_poison_and_attribute_limit_stay_in_the_dlq() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-filter", false).await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &bodies("gold", 3),
        None,
        &[("tier", "gold")],
    )
    .await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &bodies("free", 2),
        None,
        &[("tier", "free")],
    )
    .await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &bodies("poison", 2),
        None,
        &[("tier", "gold"), ("redrive-count", "3")],
    )
    .await;
    let ten: Vec<(String, String)> = (0..10)
        .map(|i| (format!("a{i}"), "x".to_string()))
        .collect();
    let ten: Vec<(&str, &str)> = ten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut full_attributes = ten.clone();
    full_attributes.truncate(9);
    full_attributes.push(("tier", "gold"));
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &bodies("full", 1),
        None,
        &full_attributes,
    )
    .await;

    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"attribute_equals": {"tier": "gold"}}}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    let ledger = &details(&report)["ledger"];
    assert_eq!(ledger["moved"], 3);
    assert_eq!(ledger["filtered_out"], 2);
    assert_eq!(ledger["poison"], 2);
    assert_eq!(ledger["attribute_limit"], 1);
    assert_eq!(
        details(&report)["poison_ids"]["first"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        report.reason.contains("2 poison messages"),
        "{}",
        report.reason
    );
    assert!(
        report.reason.contains("10 message attributes"),
        "{}",
        report.reason
    );
    assert_eq!(
        report.verification.status,
        VerificationStatus::Verified,
        "{:?}",
        report.verification
    );
    let mut home = body_ids(&peek_all(&setup.sqs, &pair.source).await);
    home.sort();
    assert_eq!(home, vec!["gold-0", "gold-1", "gold-2"]);
    // Everything else is visible again in the DLQ.
    assert_eq!(peek_all(&setup.sqs, &pair.dlq).await.len(), 5);
}

#[tokio::test]
async fn age_and_body_filters() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-age", false).await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &[json!({"id": "old", "kind": "order"}).to_string()],
        None,
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    send_messages(
        &setup.sqs,
        &pair.dlq,
        &[
            json!({"id": "new", "kind": "order"}).to_string(),
            json!({"id": "other", "kind": "refund"}).to_string(),
        ],
        None,
        &[],
    )
    .await;
    let redriver = setup.redriver(&[("COOLDOWN_SECONDS", "0")]);
    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"older_than_seconds": 2}}),
    )
    .await;
    assert_eq!(details(&report)["ledger"]["moved"], 1, "{report:?}");
    assert_eq!(
        body_ids(&peek_all(&setup.sqs, &pair.source).await),
        vec!["old"]
    );
    let report = run(&redriver, json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"body_equals": {"kind": "refund"}}})).await;
    assert_eq!(details(&report)["ledger"]["moved"], 1, "{report:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 1);
}

#[tokio::test]
async fn the_rate_limit_is_respected() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-rate", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("r", 40), None, &[]).await;
    let started = Instant::now();
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 20}),
    )
    .await;
    assert_eq!(details(&report)["ledger"]["moved"], 40, "{report:?}");
    // 40 messages at 20/s: the first batch goes at once, the other 30 take at least 1.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        details(&report)["messages_per_second"].as_f64().unwrap() <= 27.0,
        "{}",
        details(&report)
    );
}

#[tokio::test]
async fn a_run_stopped_by_the_deadline_reports_progress_and_the_next_run_continues() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-deadline", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("d", 60), None, &[]).await;
    let redriver = setup.redriver(&[]);
    // 5 s are kept for releasing and verifying, so this run has about 2 s at 10 messages/s.
    let first = run_with(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 10}),
        Duration::from_secs(9),
    )
    .await;
    let ledger = &details(&first)["ledger"];
    let moved = ledger["moved"].as_i64().unwrap();
    assert!(moved > 0 && moved < 60, "{first:?}");
    assert_eq!(ledger["remaining"].as_i64().unwrap(), 60 - moved);
    assert_eq!(details(&first)["complete"], false);
    assert!(
        first
            .reason
            .contains("stopped early (the Lambda deadline was near)"),
        "{}",
        first.reason
    );
    assert_eq!(first.verification.status, VerificationStatus::Verified);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 60 - moved);

    // Not held back by the cooldown: the next run continues and finishes.
    let second = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(
        details(&second)["ledger"]["moved"].as_i64().unwrap(),
        60 - moved
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
    assert_eq!(depth(&setup.sqs, &pair.source).await, 60);
}

#[tokio::test]
async fn inspect_samples_by_source_and_leaves_every_count_unchanged() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-inspect", false).await;
    let long = "x".repeat(1_000);
    send_messages(&setup.sqs, &pair.source, &[long], None, &[("tenant", "1")]).await;
    send_messages(&setup.sqs, &pair.source, &bodies("i", 14), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    let before = (
        depth(&setup.sqs, &pair.dlq).await,
        depth(&setup.sqs, &pair.source).await,
    );

    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "inspect", "max_messages": 20}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert_eq!(
        report.verification.status,
        VerificationStatus::Verified,
        "{:?}",
        report.verification
    );
    let details = details(&report);
    assert_eq!(details["sampled"], 15);
    assert_eq!(details["count"]["visible"], 15);
    let sample = details["by_source"][&pair.source.name]
        .as_array()
        .expect("grouped by source");
    assert_eq!(sample.len(), 15);
    let long = sample
        .iter()
        .find(|m| m["body_truncated"] == true)
        .expect("the long body");
    assert_eq!(long["body"].as_str().unwrap().len(), 256);
    assert_eq!(long["attributes"], json!(["tenant"]));
    assert_eq!(
        (
            depth(&setup.sqs, &pair.dlq).await,
            depth(&setup.sqs, &pair.source).await
        ),
        before
    );
    assert_eq!(
        peek_all(&setup.sqs, &pair.dlq).await.len(),
        15,
        "all visible again at once"
    );
    assert!(
        report.audit_id.is_none(),
        "nothing attempted, nothing audited"
    );
}

#[tokio::test]
async fn purge_needs_the_exact_confirmation() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-purge", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("p", 7), None, &[]).await;
    let redriver = setup.redriver(&[]);
    for payload in [
        json!({"dlq": pair.dlq.name, "action": "purge"}),
        json!({"dlq": pair.dlq.name, "action": "purge", "confirm": "yes"}),
    ] {
        let report = run(&redriver, payload).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{report:?}");
        assert!(
            report
                .reason
                .contains(&format!("\"confirm\": \"{}\"", pair.dlq.name))
                || report.reason.contains("exactly"),
            "{}",
            report.reason
        );
    }
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 7);
    let planned = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "purge", "confirm": pair.dlq.name, "dry_run": true}),
    )
    .await;
    assert_eq!(planned.outcome, Outcome::Planned);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 7);

    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "purge", "confirm": pair.dlq.name}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(details(&report)["removed"], 7);
    assert_eq!(report.verification.status, VerificationStatus::Verified);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
}

#[tokio::test]
async fn alarms_and_schedules_inspect_or_redrive_but_never_purge() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-alarm", false).await;
    let other = QueuePair::create(&setup.sqs, "managed-alarm", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("a", 3), None, &[]).await;
    send_messages(&setup.sqs, &other.dlq, &bodies("b", 2), None, &[]).await;

    let inspect = run(
        &setup.redriver(&[]),
        queue_alarm_event("dlq-depth", "ALARM", &pair.dlq.name),
    )
    .await;
    assert_eq!(inspect.outcome, Outcome::NoAction, "{inspect:?}");
    assert!(
        inspect.reason.contains("REDRIVE_ON_ALARM is false"),
        "{}",
        inspect.reason
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 3);

    let redriver = setup.redriver(&[
        ("REDRIVE_ON_ALARM", "true"),
        (
            "DLQ_QUEUES",
            &format!("{},{}", pair.dlq.name, other.dlq.name),
        ),
    ]);
    let redrive = run(
        &redriver,
        queue_alarm_event("dlq-depth", "ALARM", &pair.dlq.name),
    )
    .await;
    assert_eq!(redrive.outcome, Outcome::Remediated, "{redrive:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);

    let ok = run(
        &redriver,
        queue_alarm_event("dlq-depth", "OK", &pair.dlq.name),
    )
    .await;
    assert_eq!(ok.outcome, Outcome::NoAction);

    let invocation = Invocation::new("sweep", Deadline::after(Duration::from_secs(60)));
    let Output::Sweep { reports } = redriver.handle(scheduled_event(), &invocation).await else {
        panic!("a sweep")
    };
    assert_eq!(reports.len(), 2);
    assert_eq!(
        reports[0].outcome,
        Outcome::Skipped,
        "cooldown after the alarm's redrive: {:?}",
        reports[0]
    );
    assert_eq!(reports[1].outcome, Outcome::Remediated, "{:?}", reports[1]);
    assert_eq!(depth(&setup.sqs, &other.dlq).await, 0);
}

#[tokio::test]
async fn dry_run_plans_only() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-dry", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("d", 4), None, &[]).await;
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive", "dry_run": true}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Planned, "{report:?}");
    assert_eq!(report.actions[0].target, pair.source.name);
    assert!(!report.actions[0].applied);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 4);
    assert_eq!(depth(&setup.sqs, &pair.source).await, 0);
}

#[tokio::test]
async fn unmanaged_dlqs_and_targets_are_skipped() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "other-team", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("u", 2), None, &[]).await;
    let redriver = setup.redriver(&[]);
    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);

    // A managed DLQ whose source is not managed: redriving would write into the source.
    let dlq = create_queue(
        &setup.sqs,
        &runbook_tests::unique("managed-lonely-dlq"),
        &[],
    )
    .await;
    let outsider =
        QueuePair::source_of(&setup.sqs, &runbook_tests::unique("outsider"), &dlq, false).await;
    send_messages(&setup.sqs, &dlq, &bodies("o", 2), None, &[]).await;
    let report = run(&redriver, json!({"dlq": dlq.name, "action": "redrive"})).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report
            .reason
            .contains(&format!("redrives into {}", outsider.name)),
        "{}",
        report.reason
    );
    assert_eq!(
        (
            depth(&setup.sqs, &dlq).await,
            depth(&setup.sqs, &outsider).await
        ),
        (2, 0)
    );

    let managed = QueuePair::create(&setup.sqs, "managed-t", false).await;
    send_messages(&setup.sqs, &managed.dlq, &bodies("t", 2), None, &[]).await;
    let stranger = create_queue(&setup.sqs, &runbook_tests::unique("stranger"), &[]).await;
    let report = run(
        &redriver,
        json!({"dlq": managed.dlq.name, "action": "redrive", "target": stranger.name}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.contains("is not a source"),
        "{}",
        report.reason
    );
    assert_eq!(depth(&setup.sqs, &stranger).await, 0);
}

#[tokio::test]
async fn bad_inputs_are_rejected_with_a_reason() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-bad", false).await;
    let plain = create_queue(&setup.sqs, &runbook_tests::unique("managed-plain"), &[]).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("b", 2), None, &[]).await;
    let redriver = setup.redriver(&[]);
    let cases = [
        (
            json!({"dlq": pair.dlq.name, "action": "drain"}),
            "unknown variant `drain`, expected one of `inspect`, `redrive`, `purge`",
        ),
        (json!({"dlq": pair.dlq.name}), "missing field `action`"),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "speed": 5}),
            "unknown field `speed`, expected one of `dlq`, `action`, `target`",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"age": 1}}),
            "unknown field `age`",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 100000}),
            "MAX_REDRIVE_RATE_PER_SECOND",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "max_messages": 0}),
            "\"max_messages\" must be from 1",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "inspect", "confirm": "x"}),
            "only used with \"action\": \"purge\"",
        ),
        (
            json!({"dlq": "no such queue!", "action": "inspect"}),
            "is not a queue name",
        ),
        (
            json!({"dlq": "managed-does-not-exist", "action": "inspect"}),
            "does not exist",
        ),
        (
            json!({"dlq": plain.name, "action": "redrive"}),
            "is not a dead-letter queue",
        ),
    ];
    for (payload, expected) in cases {
        let report = run(&redriver, payload.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload} -> {report:?}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {:?} should contain {expected:?}",
            report.reason
        );
    }
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);
}

// ---- faults moto cannot produce ----------------------------------------------------------------

mod replayed {
    use super::*;
    use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlOutput;
    use aws_sdk_sqs::operation::list_dead_letter_source_queues::ListDeadLetterSourceQueuesOutput;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    use aws_sdk_sqs::operation::send_message_batch::{
        SendMessageBatchError, SendMessageBatchOutput,
    };
    use aws_sdk_sqs::types::{
        BatchResultErrorEntry, DeleteMessageBatchResultEntry, Message, SendMessageBatchResultEntry,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    const DLQ_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/managed-replay-dlq";
    const SOURCE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/managed-replay";

    fn attributes(url: &str, depth: i64) -> GetQueueAttributesOutput {
        let name = url.rsplit('/').next().unwrap();
        GetQueueAttributesOutput::builder()
            .attributes(
                QueueAttributeName::QueueArn,
                format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
            )
            .attributes(
                QueueAttributeName::ApproximateNumberOfMessages,
                depth.to_string(),
            )
            .attributes(
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                "0",
            )
            .build()
    }

    /// A DLQ with three messages and one source; the DLQ's depth is read as `dlq_depths` in turn.
    fn common_rules(dlq_depths: &'static [i64]) -> Vec<Rule> {
        let depth_calls = std::sync::atomic::AtomicUsize::new(0);
        vec![
            mock!(aws_sdk_sqs::Client::get_queue_url)
                .then_output(|| GetQueueUrlOutput::builder().queue_url(DLQ_URL).build()),
            mock!(aws_sdk_sqs::Client::get_queue_attributes).then_compute_output(move |request| {
                if request.queue_url() == Some(DLQ_URL) {
                    let call = depth_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    attributes(DLQ_URL, dlq_depths[call.min(dlq_depths.len() - 1)])
                } else {
                    attributes(SOURCE_URL, 0)
                }
            }),
            mock!(aws_sdk_sqs::Client::list_dead_letter_source_queues).then_output(|| {
                ListDeadLetterSourceQueuesOutput::builder()
                    .queue_urls(SOURCE_URL)
                    .build()
                    .unwrap()
            }),
            mock!(aws_sdk_sqs::Client::receive_message)
                .sequence()
                .output(|| {
                    ReceiveMessageOutput::builder()
                        .set_messages(Some(
                            (0..3)
                                .map(|i| {
                                    Message::builder()
                                        .message_id(format!("m{i}"))
                                        .receipt_handle(format!("r{i}"))
                                        .body(format!("body {i}"))
                                        .build()
                                })
                                .collect(),
                        ))
                        .build()
                })
                .output(|| ReceiveMessageOutput::builder().build())
                .repeatedly()
                .build(),
        ]
    }

    fn redriver(setup: &Setup, rules: &[&Rule]) -> Redriver {
        let sqs = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, rules.iter().copied());
        let config = RedriverConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", setup.audit.as_str()),
            ("MANAGED_RESOURCES", "managed-*"),
            ("AWS_REGION", runbook_tests::moto::REGION),
            ("ACCOUNT_ID", runbook_tests::moto::ACCOUNT),
        ]))
        .unwrap();
        let mut redriver = Redriver::with_clients(
            config,
            dlq_redriver::Clients {
                sqs,
                ..dlq_redriver::Clients::new(&moto().sdk_config())
            },
        );
        redriver.poll_interval = Duration::from_millis(10);
        redriver
    }

    #[tokio::test]
    async fn only_what_the_target_accepted_is_deleted_and_the_rest_is_released() {
        let setup = Setup::new().await;
        let rules = common_rules(&[3, 1]);
        let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
            SendMessageBatchOutput::builder()
                .successful(
                    SendMessageBatchResultEntry::builder()
                        .id("0")
                        .message_id("n0")
                        .md5_of_message_body("x")
                        .build()
                        .unwrap(),
                )
                .successful(
                    SendMessageBatchResultEntry::builder()
                        .id("2")
                        .message_id("n2")
                        .md5_of_message_body("x")
                        .build()
                        .unwrap(),
                )
                .failed(
                    BatchResultErrorEntry::builder()
                        .id("1")
                        .code("InvalidParameterValue")
                        .message("message too long")
                        .sender_fault(true)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        });
        let delete = mock!(aws_sdk_sqs::Client::delete_message_batch)
            .match_requests(|request| {
                let receipts: Vec<&str> = request
                    .entries()
                    .iter()
                    .map(|e| e.receipt_handle())
                    .collect();
                receipts == ["r0", "r2"]
            })
            .then_output(|| {
                DeleteMessageBatchOutput::builder()
                    .successful(
                        DeleteMessageBatchResultEntry::builder()
                            .id("0")
                            .build()
                            .unwrap(),
                    )
                    .successful(
                        DeleteMessageBatchResultEntry::builder()
                            .id("1")
                            .build()
                            .unwrap(),
                    )
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
        let release = mock!(aws_sdk_sqs::Client::change_message_visibility_batch)
            .match_requests(|request| {
                request
                    .entries()
                    .iter()
                    .map(|e| e.receipt_handle())
                    .collect::<Vec<_>>()
                    == ["r1"]
            })
            .then_output(|| {
                ChangeMessageVisibilityBatchOutput::builder()
                    .set_successful(Some(vec![]))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
        let mut all: Vec<&Rule> = rules.iter().collect();
        all.extend([&send, &delete, &release]);
        let report = run(
            &redriver(&setup, &all),
            json!({"dlq": "managed-replay-dlq", "action": "redrive"}),
        )
        .await;
        assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
        assert_eq!((delete.num_calls(), release.num_calls()), (1, 1));
        let ledger = &details(&report)["ledger"];
        assert_eq!(
            (ledger["moved"].as_u64(), ledger["refused"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(
            details(&report)["refused"]["first"][0]["code"],
            "InvalidParameterValue"
        );
        assert_eq!(
            report.verification.status,
            VerificationStatus::Verified,
            "{:?}",
            report.verification
        );
    }

    #[tokio::test]
    async fn access_denied_on_send_deletes_nothing_and_releases_everything() {
        let setup = Setup::new().await;
        let rules = common_rules(&[3, 3]);
        let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_error(|| {
            SendMessageBatchError::generic(
                aws_sdk_sqs::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform: sqs:SendMessage")
                    .build(),
            )
        });
        let delete = mock!(aws_sdk_sqs::Client::delete_message_batch).then_output(|| {
            DeleteMessageBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
        let release = mock!(aws_sdk_sqs::Client::change_message_visibility_batch)
            .match_requests(|request| request.entries().len() == 3)
            .then_output(|| {
                ChangeMessageVisibilityBatchOutput::builder()
                    .set_successful(Some(vec![]))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
        let mut all: Vec<&Rule> = rules.iter().collect();
        all.extend([&send, &delete, &release]);
        let report = run(
            &redriver(&setup, &all),
            json!({"dlq": "managed-replay-dlq", "action": "redrive"}),
        )
        .await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        assert!(
            report.reason.contains("grant sqs:SendMessage on"),
            "{}",
            report.reason
        );
        assert_eq!(
            delete.num_calls(),
            0,
            "nothing deleted that the target did not accept"
        );
        assert_eq!(release.num_calls(), 1);
    }
}
