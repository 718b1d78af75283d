//! `stored-limit`, and the schedule that puts its raises back.

use super::*;

#[tokio::test]
async fn stored_limits_are_raised_for_a_while_and_put_back() {
    let setup = Setup::new().await;
    let table = limits_table().await;
    let settings = [
        ("LIMITS_TABLE", table.as_str()),
        ("LIMITS_VALUE_ATTRS", "requests_per_second,burst"),
        ("COOLDOWN_SECONDS", "0"),
    ];
    let scaler = setup.scaler(&settings);
    let target = format!("{table}/tenant#42/requests_per_second");
    let raise = |value: i64| json!({"limit": {"key": "tenant#42", "attribute": "requests_per_second", "value": value, "for_minutes": 30}});

    let planned = run(&scaler, json!({"limit": {"key": "tenant#42", "attribute": "requests_per_second", "value": 200}, "dry_run": true})).await;
    assert_eq!(planned.outcome, Outcome::Planned, "{planned:?}");
    assert_eq!(limit(&table).await, "100");
    let capped = run(&scaler, raise(2_000)).await;
    assert_eq!(capped.outcome, Outcome::Skipped);
    assert!(
        capped.reason.contains("MAX_LIMIT_FACTOR=10"),
        "{}",
        capped.reason
    );

    let report = run(&scaler, raise(200)).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.target.as_deref(), Some(target.as_str()));
    assert_eq!(report.verification.status, VerificationStatus::Verified);
    assert_eq!(limit(&table).await, "200");
    assert_eq!(report.details.as_ref().unwrap()["original"], json!(100.0));

    // Not due yet: the schedule leaves it.
    assert!(
        sweep(&scaler)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(target.as_str()))
    );
    expire_raise(&setup.audit, "stored-limit", &target).await;
    let reports = sweep(&scaler).await;
    let put_back = reports
        .iter()
        .find(|r| r.target.as_deref() == Some(target.as_str()))
        .expect("a report for the limit");
    assert_eq!(put_back.outcome, Outcome::Remediated, "{put_back:?}");
    assert_eq!(limit(&table).await, "100");
    assert!(
        sweep(&scaler)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(target.as_str())),
        "put back once"
    );

    // Changed by someone else meanwhile: left alone.
    run(&scaler, raise(300)).await;
    set_limit(&table, 250).await;
    expire_raise(&setup.audit, "stored-limit", &target).await;
    let reports = sweep(&scaler).await;
    let left = reports
        .iter()
        .find(|r| r.target.as_deref() == Some(target.as_str()))
        .expect("a report");
    assert_eq!(left.outcome, Outcome::Skipped, "{left:?}");
    assert!(
        left.reason.contains("changed by someone else"),
        "{}",
        left.reason
    );
    assert_eq!(limit(&table).await, "250");
}

#[tokio::test]
async fn stored_limit_bad_inputs_and_a_lost_race() {
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;

    let setup = Setup::new().await;
    let unconfigured = run(
        &setup.scaler(&[]),
        json!({"limit": {"key": "k", "attribute": "rps", "value": 5}}),
    )
    .await;
    assert_eq!(unconfigured.outcome, Outcome::Rejected);
    assert!(
        unconfigured.reason.contains("set LIMITS_TABLE"),
        "{}",
        unconfigured.reason
    );
    let scaler = setup.scaler(&[
        ("LIMITS_TABLE", "managed-limits"),
        ("LIMITS_VALUE_ATTRS", "requests_per_second"),
    ]);
    for (payload, expected) in [
        (
            json!({"limit": {"key": "k", "attribute": "cpu", "value": 5}}),
            "LIMITS_VALUE_ATTRS allows requests_per_second",
        ),
        (
            json!({"limit": {"key": "k", "attribute": "requests_per_second", "value": -1}}),
            "positive number",
        ),
        (
            json!({"limit": {"key": "k", "attribute": "requests_per_second", "until": 5}}),
            "unknown field `until`",
        ),
    ] {
        let report = run(&scaler, payload.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {}",
            report.reason
        );
    }

    // Someone writes between the read and the conditional update: nothing is overwritten.
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("k".into()))
            .item(
                "requests_per_second",
                aws_sdk_dynamodb::types::AttributeValue::N("100".into()),
            )
            .build()
    });
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("The conditional request failed")
                .meta(error_meta(
                    "ConditionalCheckFailedException",
                    "The conditional request failed",
                ))
                .build(),
        )
    });
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &update]);
    let mut raced = Scaler::with_clients(
        setup.config(&[
            ("LIMITS_TABLE", "managed-limits"),
            ("LIMITS_VALUE_ATTRS", "requests_per_second"),
        ]),
        limit_scaler::Clients {
            dynamodb,
            ..scaler_clients()
        },
    );
    raced.poll_interval = Duration::from_millis(10);
    let report = run(
        &raced,
        json!({"limit": {"key": "k", "attribute": "requests_per_second", "value": 200}}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.reason.contains("lost race"), "{}", report.reason);
    assert_eq!(update.num_calls(), 1);
}
