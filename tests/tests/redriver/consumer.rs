//! Before an automatic redrive, the consumer check: a source whose Lambda consumer is disabled
//! or still erring is not redriven into (its messages would come straight back); a person's
//! redrive goes ahead with the warning.

use runbook_tests::fixtures::create_function;

use super::*;

/// A function consuming `queue` through an event source mapping, enabled or not.
async fn consumer(queue: &str, enabled: bool) -> String {
    let function = runbook_tests::unique("managed-consumer");
    create_function(moto(), &function).await;
    moto()
        .lambda()
        .create_event_source_mapping()
        .function_name(&function)
        .event_source_arn(queue)
        .enabled(enabled)
        .send()
        .await
        .expect("event source mapping");
    function
}

/// Records `count` errors of the function a minute ago.
async fn errors(function: &str, count: f64) {
    metric(function, "Errors", count).await;
}

/// Records `count` of the function's `metric` a minute ago.
async fn metric(function: &str, metric: &str, count: f64) {
    moto()
        .cloudwatch()
        .put_metric_data()
        .namespace("AWS/Lambda")
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name(metric)
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("FunctionName")
                        .value(function)
                        .build(),
                )
                .value(count)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - 60,
                ))
                .build(),
        )
        .send()
        .await
        .expect("put errors");
}

#[tokio::test]
async fn an_automatic_redrive_waits_for_a_failing_consumer_and_a_person_is_warned() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-consumed", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("c", 5), None, &[]).await;
    let function = consumer(&pair.source.arn, true).await;
    errors(&function, 3.0).await;
    let redriver = setup.redriver(&[("REDRIVE_ON_ALARM", "true"), ("COOLDOWN_SECONDS", "0")]);

    let alarm = queue_alarm_event("dlq-depth", "ALARM", &pair.dlq.name);
    let held = run(&redriver, alarm.clone()).await;
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");
    assert!(
        held.reason.starts_with("consumer still failing")
            && held
                .reason
                .contains(&format!("{function} had 3 errors in the last 10 minutes")),
        "{}",
        held.reason
    );
    let consumers = &held.diagnosis.as_ref().unwrap()["consumers"];
    assert_eq!(consumers["consumers"][0]["state"], "Enabled", "{consumers}");
    assert_eq!(consumers["consumers"][0]["errors"], 3.0);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 5, "nothing redriven");

    // A person decides: the same check is a warning, and the redrive goes ahead.
    let manual = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(manual.outcome, Outcome::Remediated, "{manual:?}");
    assert!(
        manual
            .notes
            .iter()
            .any(|n| n.starts_with("warning: consumer still failing")),
        "{:?}",
        manual.notes
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 0);
}

#[tokio::test]
async fn a_disabled_mapping_holds_the_redrive_and_a_well_consumer_lets_it_go() {
    let setup = Setup::new().await;
    let held_pair = QueuePair::create(&setup.sqs, "managed-disabled", false).await;
    let well_pair = QueuePair::create(&setup.sqs, "managed-well", false).await;
    send_messages(&setup.sqs, &held_pair.dlq, &bodies("d", 2), None, &[]).await;
    send_messages(&setup.sqs, &well_pair.dlq, &bodies("w", 2), None, &[]).await;
    consumer(&held_pair.source.arn, false).await;
    let well = consumer(&well_pair.source.arn, true).await;
    errors(&well, 0.0).await;
    let redriver = setup.redriver(&[("REDRIVE_ON_ALARM", "true")]);

    let held = run(
        &redriver,
        queue_alarm_event("a", "ALARM", &held_pair.dlq.name),
    )
    .await;
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");
    assert!(held.reason.contains("is Disabled"), "{}", held.reason);
    assert_eq!(depth(&setup.sqs, &held_pair.dlq).await, 2);

    // Stopped with a reserved concurrency of 0: no errors, but every batch throttled.
    let stopped_pair = QueuePair::create(&setup.sqs, "managed-stopped", false).await;
    send_messages(&setup.sqs, &stopped_pair.dlq, &bodies("s", 2), None, &[]).await;
    let stopped = consumer(&stopped_pair.source.arn, true).await;
    metric(&stopped, "Throttles", 12.0).await;
    let held = run(
        &redriver,
        queue_alarm_event("s", "ALARM", &stopped_pair.dlq.name),
    )
    .await;
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");
    assert!(
        held.reason.contains("was throttled 12 times"),
        "{}",
        held.reason
    );
    assert_eq!(depth(&setup.sqs, &stopped_pair.dlq).await, 2);

    let redriven = run(
        &redriver,
        queue_alarm_event("b", "ALARM", &well_pair.dlq.name),
    )
    .await;
    assert_eq!(redriven.outcome, Outcome::Remediated, "{redriven:?}");
    assert_eq!(depth(&setup.sqs, &well_pair.dlq).await, 0);
    assert_eq!(depth(&setup.sqs, &well_pair.source).await, 2);
}

#[tokio::test]
async fn consumers_that_cannot_be_checked_stop_an_automatic_redrive() {
    use aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-unchecked", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("u", 2), None, &[]).await;
    let denied = mock!(aws_sdk_lambda::Client::list_event_source_mappings).then_error(|| {
        ListEventSourceMappingsError::generic(runbook_tests::replay::error_meta(
            "AccessDeniedException",
            "not authorized to perform: lambda:ListEventSourceMappings",
        ))
    });
    let clients = dlq_redriver::Clients {
        lambda: mock_client!(aws_sdk_lambda, RuleMode::MatchAny, [&denied]),
        ..redriver_clients()
    };
    let redriver = redriver(&setup.audit, &[("REDRIVE_ON_ALARM", "true")], clients);
    let report = run(&redriver, queue_alarm_event("c", "ALARM", &pair.dlq.name)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report
            .reason
            .contains("could not check whether the consumers")
            && report.reason.contains("AccessDenied"),
        "{}",
        report.reason
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);
}
