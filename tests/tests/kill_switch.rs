//! The kill switch against moto: a pause through any function stops every runbook's writes
//! (they still diagnose and plan), dry runs go on, a hand-written or malformed switch item
//! pauses too, and a switch that cannot be read writes nothing.

use aws_sdk_dynamodb::types::AttributeValue;
use runbook_shared::model::Outcome;
use runbook_tests::fixtures::{
    capacity, create_audit_table, invocation, managed_table, one_report, read_throttled, redriver,
    redriver_clients, scaler, scaler_clients,
};
use runbook_tests::moto::moto;
use serde_json::json;

async fn switch_item(audit: &str, attributes: &[(&str, AttributeValue)]) {
    let mut put = moto()
        .dynamodb()
        .put_item()
        .table_name(audit)
        .item("pk", AttributeValue::S("control#automation".into()))
        .item("sk", AttributeValue::S("switch".into()));
    for (name, value) in attributes {
        put = put.item(*name, value.clone());
    }
    put.send().await.expect("switch item");
}

#[tokio::test]
async fn a_pause_through_one_function_stops_the_writes_of_every_other() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &[], scaler_clients());
    let redriver = redriver(&audit, &[], redriver_clients());
    let table = managed_table("managed-paused").await;

    let paused = one_report(
        redriver
            .handle(
                json!({"control": "pause", "reason": "incident 4711: hands off", "minutes": 60, "by": "alice"}),
                &invocation(),
            )
            .await,
    );
    assert_eq!(paused.outcome, Outcome::Remediated, "{paused:?}");
    assert_eq!(paused.runbook.as_deref(), Some("automation-control"));
    assert!(paused.actions[0].applied);
    assert_eq!(paused.actions[0].after["paused"], true);
    assert!(paused.audit_id.is_some(), "pausing is audited");

    // Another function sees it in its status, and its runbooks plan but write nothing.
    let status = one_report(
        scaler
            .handle(json!({"control": "status"}), &invocation())
            .await,
    );
    assert!(
        status.reason.starts_with("paused: paused by alice"),
        "{}",
        status.reason
    );
    let skipped = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(skipped.outcome, Outcome::Skipped, "{skipped:?}");
    assert!(
        skipped.reason.starts_with("paused: paused by alice"),
        "{}",
        skipped.reason
    );
    assert!(skipped.reason.contains("incident 4711") && skipped.reason.contains("until "));
    assert!(skipped.diagnosis.is_some(), "it still diagnoses");
    assert_eq!(skipped.actions.len(), 1, "it still plans: {skipped:?}");
    assert!(!skipped.actions[0].applied);
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));

    // A dry run is not stopped.
    let dry = one_report(
        scaler
            .handle(
                json!({"table": table, "read": 10, "dry_run": true}),
                &invocation(),
            )
            .await,
    );
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:?}");

    // A pause spends none of the budget: with one action an hour, the run after the resume acts.
    let scaler = runbook_tests::fixtures::scaler(
        &audit,
        &[("MAX_ACTIONS_PER_HOUR", "1"), ("COOLDOWN_SECONDS", "0")],
        scaler_clients(),
    );
    let again = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(again.outcome, Outcome::Skipped);
    let resumed = one_report(
        scaler
            .handle(
                json!({"control": "resume", "reason": "incident over"}),
                &invocation(),
            )
            .await,
    );
    assert_eq!(resumed.outcome, Outcome::Remediated, "{resumed:?}");
    assert_eq!(resumed.actions[0].after["paused"], false);
    let acted = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(acted.outcome, Outcome::Remediated, "{acted:?}");
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (10, 5));
}

#[tokio::test]
async fn a_hand_written_switch_pauses_an_expired_one_does_not_and_a_malformed_one_fails_closed() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &[("COOLDOWN_SECONDS", "0")], scaler_clients());
    let table = managed_table("managed-hand").await;

    // What the docs give for `aws dynamodb put-item`, when the functions themselves misbehave.
    switch_item(
        &audit,
        &[
            ("paused", AttributeValue::Bool(true)),
            ("by", AttributeValue::S("bob".into())),
            ("reason", AttributeValue::S("the scaler is looping".into())),
        ],
    )
    .await;
    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(
        report
            .reason
            .starts_with("paused: paused by bob (the scaler is looping), until someone resumes"),
        "{}",
        report.reason
    );

    // A timed pause that has ended is no pause.
    switch_item(
        &audit,
        &[
            ("paused", AttributeValue::Bool(true)),
            ("by", AttributeValue::S("bob".into())),
            ("reason", AttributeValue::S("maintenance".into())),
            ("until", AttributeValue::S("2020-01-01T00:00:00Z".into())),
        ],
    )
    .await;
    let status = one_report(
        scaler
            .handle(json!({"control": "status"}), &invocation())
            .await,
    );
    assert_eq!(status.reason, "running: no pause in force");

    // A switch written wrongly is read as a pause.
    for malformed in [
        vec![("paused", AttributeValue::S("yes".into()))],
        vec![
            ("paused", AttributeValue::Bool(true)),
            ("until", AttributeValue::S("tomorrow".into())),
        ],
    ] {
        switch_item(&audit, &malformed).await;
        let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
        assert_eq!(report.outcome, Outcome::Skipped, "{malformed:?}");
        assert!(report.reason.contains("malformed"), "{}", report.reason);
    }
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));
}

#[tokio::test]
async fn bad_control_payloads_are_rejected_and_change_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &[], scaler_clients());
    for (payload, expected) in [
        (json!({"control": "pause"}), "needs a \"reason\""),
        (
            json!({"control": "pause", "reason": "  "}),
            "needs a \"reason\"",
        ),
        (
            json!({"control": "pause", "reason": "x", "minutes": 0}),
            "\"minutes\" must be from 1 to 10080",
        ),
        (
            json!({"control": "pause", "reason": "x", "minutes": 20000}),
            "\"minutes\" must be from 1 to 10080",
        ),
        (
            json!({"control": "resume", "reason": "x", "minutes": 5}),
            "\"minutes\" is for \"pause\"",
        ),
        (
            json!({"control": "status", "reason": "x"}),
            "takes no other field",
        ),
        (
            json!({"control": "stop", "reason": "x"}),
            "unknown variant `stop`",
        ),
        (
            json!({"control": "pause", "reason": "x", "minuts": 5}),
            "unknown field `minuts`",
        ),
    ] {
        let report = one_report(scaler.handle(payload.clone(), &invocation()).await);
        assert_eq!(report.outcome, Outcome::Rejected, "{payload}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {}",
            report.reason
        );
    }
    let status = one_report(
        scaler
            .handle(json!({"control": "status"}), &invocation())
            .await,
    );
    assert_eq!(status.reason, "running: no pause in force");
}

#[tokio::test]
async fn a_pause_at_deploy_holds_until_the_stack_is_updated() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &[("AUTOMATION_PAUSED", "true")], scaler_clients());
    let table = managed_table("managed-deploy").await;
    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(
        report.reason.contains("AutomationPaused"),
        "{}",
        report.reason
    );
    let resumed = one_report(
        scaler
            .handle(json!({"control": "resume", "reason": "try"}), &invocation())
            .await,
    );
    assert!(
        resumed.reason.contains("the deployment still pauses them"),
        "{}",
        resumed.reason
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));
}

/// The switch is read right before the first write; when it cannot be read, nothing is written.
#[tokio::test]
async fn a_switch_that_cannot_be_read_writes_nothing() {
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use runbook_shared::guards::Switch;
    use runbook_shared::store::AuditStore;

    let audit = create_audit_table(&moto().dynamodb()).await;
    let mut scaler = scaler(&audit, &[], scaler_clients());
    let denied = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .error(|| {
            GetItemError::generic(runbook_tests::replay::error_meta(
                "AccessDeniedException",
                "not authorized to perform dynamodb:GetItem",
            ))
        })
        .repeatedly()
        .build();
    let unreadable = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&denied]);
    scaler.safety.switch = Switch::new(AuditStore::new(unreadable, audit.clone(), 90), false);
    let table = managed_table("managed-unreadable").await;

    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report
            .reason
            .starts_with("paused: the switch could not be read")
            && report.reason.contains("AccessDenied"),
        "{}",
        report.reason
    );
    assert!(!report.actions.is_empty() && report.actions.iter().all(|a| !a.applied));
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));
    assert!(denied.num_calls() >= 1);
}

/// A redrive can run for minutes: it reads the switch again every few seconds, and a pause
/// engaged meanwhile stops it after the batches in flight, losing nothing.
#[tokio::test]
async fn a_pause_stops_a_redrive_already_running() {
    let _own = runbook_tests::moto::isolated("a_pause_stops_a_redrive_already_running").await;
    use runbook_tests::fixtures::{QueuePair, depth, send_messages};

    let audit = create_audit_table(&moto().dynamodb()).await;
    let sqs = moto().sqs();
    let pair = QueuePair::create(&sqs, "managed-paused-redrive", false).await;
    let bodies: Vec<String> = (0..100).map(|i| json!({"id": i}).to_string()).collect();
    send_messages(&sqs, &pair.dlq, &bodies, None, &[]).await;
    let redriver = redriver(&audit, &[], redriver_clients());
    let scaler = scaler(&audit, &[], scaler_clients());

    // 100 messages at 10/s take 10 s; the pause comes once the first have reached the source
    // (not after a fixed time: on a loaded machine the redrive may not have started by then).
    let running = invocation();
    let redrive = redriver.handle(
        json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 10}),
        &running,
    );
    let pause = async {
        let started = std::time::Instant::now();
        while depth(&sqs, &pair.source).await == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the redrive moved nothing in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        one_report(
            scaler
                .handle(
                    json!({"control": "pause", "reason": "stop the redrive", "by": "bob"}),
                    &invocation(),
                )
                .await,
        )
    };
    let (report, paused) = tokio::join!(redrive, pause);
    let report = one_report(report);
    assert_eq!(paused.outcome, Outcome::Remediated, "{paused:?}");

    let ledger = &report.details.as_ref().expect("details")["ledger"];
    let moved = ledger["moved"].as_i64().expect("moved");
    assert!(moved > 0 && moved < 100, "{report:?}");
    assert!(
        report
            .reason
            .contains("stopped early (paused: paused by bob"),
        "{}",
        report.reason
    );
    // Nothing lost: what was not moved is still in the DLQ.
    assert_eq!(depth(&sqs, &pair.dlq).await, 100 - moved);
    assert_eq!(depth(&sqs, &pair.source).await, moved);
}
