//! Unmanaged queues are skipped; bad inputs are rejected with a reason.

use super::*;

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
