//! AWS faults moto cannot produce, on `dynamodb-capacity`, with replay clients.

use super::*;

#[tokio::test]
async fn table_deleted_between_diagnosis_and_update_fails_cleanly() {
    let setup = Setup::new().await;
    let name = runbook_tests::unique("managed-gone");
    let (report, _) = update_fails_with(&setup, &name, || {
        UpdateTableError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("Requested resource not found")
                .meta(error_meta(
                    "ResourceNotFoundException",
                    "Requested resource not found",
                ))
                .build(),
        )
    })
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.reason.contains("disappeared"), "{}", report.reason);
    assert!(!report.actions[0].applied);
    assert!(
        report.actions[0]
            .error
            .as_deref()
            .unwrap()
            .contains("ResourceNotFoundException")
    );
    // An attempt that failed is still audited.
    assert_eq!(setup.audit_items(&name).await.len(), 1);
}

#[tokio::test]
async fn throttling_and_access_denied_are_reported_not_swallowed() {
    let setup = Setup::new().await;
    let throttled = runbook_tests::unique("managed-throttled");
    let (report, calls) = update_fails_with(&setup, &throttled, || {
        UpdateTableError::generic(error_meta("ThrottlingException", "Rate exceeded"))
    })
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("ThrottlingException: Rate exceeded"),
        "{}",
        report.reason
    );
    assert!(
        report.reason.contains("throttled by AWS after retries"),
        "{}",
        report.reason
    );
    assert_eq!(calls, 2, "the SDK retries throttling");

    let denied = runbook_tests::unique("managed-denied");
    let (report, _) = update_fails_with(&setup, &denied, || {
        UpdateTableError::generic(error_meta(
            "AccessDeniedException",
            "User is not authorized to perform: dynamodb:UpdateTable",
        ))
    })
    .await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.reason.contains("grant dynamodb:UpdateTable"),
        "{}",
        report.reason
    );

    let limited = runbook_tests::unique("managed-limited");
    let (report, _) = update_fails_with(&setup, &limited, || {
        UpdateTableError::LimitExceededException(
            LimitExceededException::builder()
                .message("Subscriber limit exceeded")
                .meta(error_meta(
                    "LimitExceededException",
                    "Subscriber limit exceeded",
                ))
                .build(),
        )
    })
    .await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.reason.contains("limit exceeded"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn a_table_busy_updating_is_waited_for_then_updated() {
    let setup = Setup::new().await;
    let name = runbook_tests::unique("managed-busy");
    let (before, after) = (
        provisioned_table(&name, 5, 5),
        provisioned_table(&name, 10, 10),
    );
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
        .sequence()
        .output({
            let before = before.clone();
            move || DescribeTableOutput::builder().table(before.clone()).build()
        })
        .times(3)
        .output(move || DescribeTableOutput::builder().table(after.clone()).build())
        .build();
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .sequence()
        .error(|| {
            UpdateTableError::ResourceInUseException(
                ResourceInUseException::builder()
                    .message("table is being updated")
                    .meta(error_meta(
                        "ResourceInUseException",
                        "table is being updated",
                    ))
                    .build(),
            )
        })
        .output(|| UpdateTableOutput::builder().build())
        .build();
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update]);
    let report = run(
        &setup.scaler_with(dynamodb, no_metrics()),
        json!({"table": name}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(update.num_calls(), 2);
}

#[tokio::test]
async fn on_demand_maximum_is_raised_when_one_is_set() {
    let setup = Setup::new().await;
    let name = runbook_tests::unique("managed-ondemand");
    let on_demand = |max: i64| {
        TableDescription::builder()
            .table_name(&name)
            .table_status(TableStatus::Active)
            .billing_mode_summary(
                BillingModeSummary::builder()
                    .billing_mode(BillingMode::PayPerRequest)
                    .build(),
            )
            .on_demand_throughput(
                OnDemandThroughput::builder()
                    .max_read_request_units(max)
                    .build(),
            )
            .build()
    };
    let (before, after) = (on_demand(100), on_demand(200));
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
        .sequence()
        .output(move || DescribeTableOutput::builder().table(before.clone()).build())
        .times(2)
        .output(move || DescribeTableOutput::builder().table(after.clone()).build())
        .build();
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .match_requests(|request| {
            request
                .on_demand_throughput()
                .and_then(|o| o.max_read_request_units())
                == Some(200)
                && request.provisioned_throughput().is_none()
        })
        .then_output(|| UpdateTableOutput::builder().build());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update]);
    let report = run(
        &setup.scaler_with(dynamodb, no_metrics()),
        read_alarm(&name, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(update.num_calls(), 1);
    assert_eq!(
        report.actions[0].after["max_read_request_units"],
        json!(200)
    );
}
