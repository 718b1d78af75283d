//! Inspect, purge, what alarms and schedules do, and dry runs.

use super::*;

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
async fn inspecting_a_source_queue_spends_no_delivery_attempt() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-orders", false).await;
    send_messages(&setup.sqs, &pair.source, &bodies("o", 3), None, &[]).await;

    // The source queue itself (maxReceiveCount 1), as an alarm on its backlog would name it.
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.source.name, "action": "inspect"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(report.reason.contains("not sampled"), "{}", report.reason);
    assert_eq!(details(&report)["sampled"], 0);
    assert_eq!(details(&report)["count"]["visible"], 3);

    // The consumer's next poll gets every message, and none went to the DLQ unprocessed.
    let received = setup
        .sqs
        .receive_message()
        .queue_url(&pair.source.url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    assert_eq!(received.messages().len(), 3, "{received:?}");
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
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
