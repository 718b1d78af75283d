//! Redrives against moto: every message home, FIFO order, several sources, filters, poison, the rate limit, the deadline.

use super::*;

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
    // The ledger reconciles now; whether the messages stay out, the verification window says
    // (tests/tests/redriver/returned.rs).
    assert_eq!(
        report.verification.status,
        VerificationStatus::Pending,
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
        VerificationStatus::Pending,
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
    let _own = runbook_tests::moto::isolated("age_and_body_filters").await;
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
    let _own = runbook_tests::moto::isolated("the_rate_limit_is_respected").await;
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
    let _own = runbook_tests::moto::isolated(
        "a_run_stopped_by_the_deadline_reports_progress_and_the_next_run_continues",
    )
    .await;
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-deadline", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("d", 200), None, &[]).await;
    let redriver = setup.redriver(&[]);
    // 8 s are kept for releasing, verifying and the closing writes, so this run has about 4 s
    // at 10 messages/s, less what its reads before the redrive took on a loaded machine.
    let first = run_with(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 10}),
        Duration::from_secs(12),
    )
    .await;
    let ledger = &details(&first)["ledger"];
    let moved = ledger["moved"].as_i64().unwrap();
    assert!(moved > 0 && moved < 200, "{first:?}");
    assert_eq!(ledger["remaining"].as_i64().unwrap(), 200 - moved);
    assert_eq!(details(&first)["complete"], false);
    assert!(
        first
            .reason
            .contains("stopped early (the Lambda deadline was near)"),
        "{}",
        first.reason
    );
    assert_eq!(first.verification.status, VerificationStatus::Pending);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 200 - moved);

    // Not held back by the cooldown: the next run continues and finishes.
    let second = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(
        details(&second)["ledger"]["moved"].as_i64().unwrap(),
        200 - moved
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
    assert_eq!(depth(&setup.sqs, &pair.source).await, 200);
}

#[tokio::test]
async fn an_approved_redrive_moves_what_the_dlq_holds_when_it_is_carried_out() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-approved", false).await;
    send_messages(&setup.sqs, &pair.source, &bodies("a", 5), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    let redriver = setup.redriver(&[("RUNBOOK_MODES", r#"{"dlq-redrive": "approve"}"#)]);

    let asked = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(asked.outcome, Outcome::AwaitingApproval, "{asked:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 5);
    // More failures arrive while the plan waits: the approval still holds (the depths are
    // read afresh; the queues it redrives into are the same).
    send_messages(&setup.sqs, &pair.source, &bodies("b", 3), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 8);

    let plan_id = asked.approval.expect("approval").plan_id;
    let approved = run(&redriver, json!({"approve": plan_id, "by": "alice"})).await;
    assert_eq!(approved.outcome, Outcome::Remediated, "{approved:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
    assert_eq!(drain_all(&setup.sqs, &pair.source).await.len(), 8);
}
