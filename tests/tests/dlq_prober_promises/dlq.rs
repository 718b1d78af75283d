//! dlq-redriver keeps its promises: routing, foreign ARNs, FIFO holding, size limits, capped lists, inspect on any queue, purge settling, releases within the deadline.

use super::*;

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
    // 5,010 messages within a deadline: on the shared emulator, under the other tests' load,
    // the run ran out of time before it had seen them all.
    let _own =
        runbook_tests::moto::isolated("five_thousand_poison_messages_still_leave_an_audit_record")
            .await;
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
    let _own =
        runbook_tests::moto::isolated("a_purge_waits_a_minute_at_most_and_the_sweep_settles_it")
            .await;
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
    let settled = sweep_now(&setup.audit_store()).await;
    let settled = settled
        .iter()
        .find(|s| Some(&s.audit_id) == report.audit_id.as_ref())
        .unwrap_or_else(|| panic!("{settled:?}"));
    assert_eq!(settled.status, VerificationStatus::Failed, "{settled:?}");
}

#[tokio::test]
async fn held_messages_are_released_within_the_deadline() {
    let _own =
        runbook_tests::moto::isolated("held_messages_are_released_within_the_deadline").await;
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

/// A redrive nobody saw fail again is settled by the sweep on the DLQ's depth: verified when it
/// holds no more than the redrive left behind, failed when failures arrived since.
#[tokio::test]
async fn the_sweep_settles_an_open_redrive_by_what_arrived_in_the_dlq_since() {
    let setup = Setup::new().await;
    let mut statuses = Vec::new();
    for (arrives, visibility) in [(false, "0"), (true, "0"), (false, "30")] {
        let pair = QueuePair::create(&setup.sqs, "managed-settle", false).await;
        // How long a message sent home takes to fail back: the sweep waits for it.
        setup
            .sqs
            .set_queue_attributes()
            .queue_url(&pair.source.url)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility)
            .send()
            .await
            .expect("visibility");
        let bodies: Vec<String> = (0..4).map(|i| json!({"id": i}).to_string()).collect();
        send_messages(&setup.sqs, &pair.source, &bodies, None, &[]).await;
        fail_all(&setup.sqs, &pair.source).await;
        let report = run(
            &setup.redriver(&[]),
            json!({"dlq": pair.dlq.name, "action": "redrive"}),
        )
        .await;
        assert_eq!(
            report.verification.status,
            VerificationStatus::Pending,
            "{report:?}"
        );
        if arrives {
            send_messages(
                &setup.sqs,
                &pair.dlq,
                &["{\"id\": \"new\"}".to_string()],
                None,
                &[],
            )
            .await;
        }
        let settled = sweep_now(&setup.audit_store()).await;
        statuses.push(
            settled
                .iter()
                .find(|s| Some(&s.audit_id) == report.audit_id.as_ref())
                .map(|settled| settled.status),
        );
    }
    // Nothing arrived: verified; failures arrived: failed; messages that cannot have failed
    // back yet (30 s × 1 receive): still pending.
    assert_eq!(
        statuses,
        [
            Some(VerificationStatus::Verified),
            Some(VerificationStatus::Failed),
            Some(VerificationStatus::Pending)
        ]
    );
}

/// The health-prober's sweep over the records open now (no verification window).
async fn sweep_now(store: &AuditStore) -> Vec<health_prober::sweep::Settled> {
    let sqs = moto().sqs();
    let (cloudwatch, cloudformation) = (moto().cloudwatch(), moto().cloudformation());
    let dynamodb = moto().dynamodb();
    let clients = health_prober::sweep::Places::One(health_prober::sweep::SweepClients {
        cloudwatch: &cloudwatch,
        cloudformation: &cloudformation,
        sqs: &sqs,
        dynamodb: &dynamodb,
    });
    health_prober::sweep::settle_pending(
        store,
        &clients,
        &health_prober::sweep::Window {
            after: chrono::Duration::zero(),
            give_up: chrono::Duration::hours(24),
        },
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .expect("sweep")
}
