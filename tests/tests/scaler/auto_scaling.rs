//! `dynamodb-capacity` on tables and indexes registered with Application Auto Scaling: the raise
//! goes through the scalable target's range (UpdateTable alone would be undone within minutes),
//! and the scale-down puts the original range back.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};

use super::*;

/// Registers the table's (or index's) read or write capacity as a scalable target.
async fn register(resource_id: &str, dimension: ScalableDimension, min: i32, max: i32) {
    moto()
        .auto_scaling()
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(resource_id)
        .scalable_dimension(dimension)
        .min_capacity(min)
        .max_capacity(max)
        .send()
        .await
        .expect("register scalable target");
}

/// The (min, max) of a scalable target.
async fn range(resource_id: &str, dimension: ScalableDimension) -> Option<(i32, i32)> {
    moto()
        .auto_scaling()
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_ids(resource_id)
        .send()
        .await
        .expect("describe scalable targets")
        .scalable_targets()
        .iter()
        .find(|target| *target.scalable_dimension() == dimension)
        .map(|target| (target.min_capacity(), target.max_capacity()))
}

fn apis(report: &Report) -> Vec<&str> {
    report.actions.iter().map(|a| a.api.as_str()).collect()
}

const REGISTER: &str = "application-autoscaling:RegisterScalableTarget";
const READ: ScalableDimension = ScalableDimension::DynamoDbTableReadCapacityUnits;
const WRITE: ScalableDimension = ScalableDimension::DynamoDbTableWriteCapacityUnits;

#[tokio::test]
async fn a_registered_side_is_raised_through_its_minimum_not_update_table() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 40).await;
    register(&id, WRITE, 5, 40).await;

    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(apis(&report), vec![REGISTER], "no UpdateTable: {report:?}");
    let action = &report.actions[0];
    assert_eq!(action.target, id);
    assert!(action.applied);
    assert_eq!(
        action.after,
        json!({"auto_scaling": {"read": {"min": 10, "max": 40}, "write": {"min": 5, "max": 40}}})
    );
    assert_eq!(
        action.before["auto_scaling"]["read"],
        json!({"min": 5, "max": 40})
    );
    assert_eq!(range(&id, READ).await, Some((10, 40)));
    assert_eq!(
        range(&id, WRITE).await,
        Some((5, 40)),
        "the write side was not throttled"
    );
    // Auto Scaling moved the table into the new range (the front does what AWS documents).
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    let checks: Vec<(&str, bool)> = report
        .verification
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.ok))
        .collect();
    assert_eq!(
        checks,
        vec![
            ("status", true),
            ("capacity", true),
            ("auto_scaling_range", true),
            ("throttling_stopped", false)
        ]
    );
    assert!(
        report
            .reason
            .contains("through its Application Auto Scaling range"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn a_new_minimum_above_the_maximum_raises_the_maximum_within_the_cap() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 6, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 2, 8).await;

    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "10")]),
        read_alarm(&table, "ALARM"),
    )
    .await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    // 6 × 2 = 12, clamped to the cap of 10; the maximum follows the minimum up.
    assert_eq!(range(&id, READ).await, Some((10, 10)));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
}

#[tokio::test]
async fn an_unregistered_side_is_raised_with_update_table_after_the_range() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-half-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 40).await;
    // ThrottledRequests without an Operation: both sides are raised.
    let event = throttle_alarm_event(
        &format!("{table}-throttled"),
        "ALARM",
        "ThrottledRequests",
        json!({"TableName": table}),
    );

    let report = run(&setup.scaler(&[]), event).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(apis(&report), vec![REGISTER, "dynamodb:UpdateTable"]);
    assert_eq!(range(&id, READ).await, Some((10, 40)));
    assert_eq!(range(&id, WRITE).await, None);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 10));
}

#[tokio::test]
async fn a_registered_index_is_raised_through_its_own_target() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 4, 4)
        .with_index()
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}/index/by-customer");
    register(
        &id,
        ScalableDimension::DynamoDbIndexWriteCapacityUnits,
        4,
        100,
    )
    .await;
    let event = throttle_alarm_event(
        "gsi-writes",
        "ALARM",
        "WriteThrottleEvents",
        json!({"TableName": table, "GlobalSecondaryIndexName": "by-customer"}),
    );

    let report = run(&setup.scaler(&[]), event).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(apis(&report), vec![REGISTER]);
    assert_eq!(
        range(&id, ScalableDimension::DynamoDbIndexWriteCapacityUnits).await,
        Some((8, 100))
    );
    assert_eq!(
        capacity(&setup.dynamodb, &table, Some("by-customer")).await,
        (4, 8)
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (4, 4));
}

#[tokio::test]
async fn the_scale_down_puts_the_original_range_back() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 8).await;
    let raised = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    assert_eq!(range(&id, READ).await, Some((10, 10)));

    // Idle: the original range back in one step, and the raise is no longer tracked.
    let eager = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]);
    let down = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(down.outcome, Outcome::Remediated, "{down:?}");
    assert_eq!(apis(&down), vec![REGISTER], "{down:?}");
    assert_eq!(range(&id, READ).await, Some((5, 8)));
    assert_eq!(down.verification.status, VerificationStatus::Verified);
    assert!(
        sweep(&eager)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(table.as_str())),
        "back at the original range: no longer tracked"
    );
}

#[tokio::test]
async fn a_range_changed_by_someone_else_is_left_to_them() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 40).await;
    let raised = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    register(&id, READ, 12, 60).await;

    let eager = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]);
    let left = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert!(left.actions.is_empty(), "{left:?}");
    assert!(
        left.reason.contains("changed by someone else"),
        "{}",
        left.reason
    );
    assert_eq!(range(&id, READ).await, Some((12, 60)));
}

#[tokio::test]
async fn ranges_that_cannot_be_read_change_nothing() {
    use aws_sdk_applicationautoscaling::operation::describe_scalable_targets::DescribeScalableTargetsError;
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let denied = mock!(aws_sdk_applicationautoscaling::Client::describe_scalable_targets)
        .then_error(|| {
            DescribeScalableTargetsError::generic(error_meta(
                "AccessDeniedException",
                "not authorized to perform: application-autoscaling:DescribeScalableTargets",
            ))
        });
    let register = mock!(aws_sdk_applicationautoscaling::Client::register_scalable_target)
        .then_output(|| {
            aws_sdk_applicationautoscaling::operation::register_scalable_target::RegisterScalableTargetOutput::builder().build()
        });
    let clients = limit_scaler::Clients {
        auto_scaling: mock_client!(
            aws_sdk_applicationautoscaling,
            RuleMode::MatchAny,
            [&denied, &register]
        ),
        ..scaler_clients()
    };
    let report = run(
        &scaler(&setup.audit, &[], clients),
        read_alarm(&table, "ALARM"),
    )
    .await;

    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("could not tell whether") && report.reason.contains("AccessDenied"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());
    assert_eq!(register.num_calls(), 0);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

#[tokio::test]
async fn a_failed_update_table_puts_the_range_back() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-half-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 40).await;
    let described = provisioned_table(&table, 5, 5);
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output(move || {
        DescribeTableOutput::builder()
            .table(described.clone())
            .build()
    });
    let refuse = mock!(aws_sdk_dynamodb::Client::update_table).then_error(|| {
        UpdateTableError::LimitExceededException(
            LimitExceededException::builder()
                .message("too many tables being updated")
                .build(),
        )
    });
    let clients = limit_scaler::Clients {
        dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &refuse]),
        ..scaler_clients()
    };
    let event = throttle_alarm_event(
        &format!("{table}-throttled"),
        "ALARM",
        "ThrottledRequests",
        json!({"TableName": table}),
    );
    let report = run(&scaler(&setup.audit, &[], clients), event).await;

    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(refuse.num_calls() >= 1);
    assert!(
        report.reason.contains("nothing was changed"),
        "{}",
        report.reason
    );
    assert_eq!(
        range(&id, READ).await,
        Some((5, 40)),
        "the range was put back"
    );
}

/// UpdateTable sends both sides: the registered one goes out as the table shows it right then,
/// never lower, as Auto Scaling may have raised it meanwhile.
#[tokio::test]
async fn update_table_never_lowers_a_side_auto_scaling_raised_meanwhile() {
    let _own = runbook_tests::moto::isolated(
        "update_table_never_lowers_a_side_auto_scaling_raised_meanwhile",
    )
    .await;
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-half-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    register(&format!("table/{table}"), READ, 5, 40).await;
    let event = throttle_alarm_event(
        &format!("{table}-throttled"),
        "ALARM",
        "ThrottledRequests",
        json!({"TableName": table}),
    );
    // The range is registered slowly; meanwhile Auto Scaling's policy takes read to 30.
    moto().delay("RegisterScalableTarget", &table, 1_500).await;
    let scaler = setup.scaler(&[]);
    let raise = run(&scaler, event);
    let scale_out = async {
        moto().held("RegisterScalableTarget", &table).await;
        setup
            .dynamodb
            .update_table()
            .table_name(&table)
            .provisioned_throughput(
                aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                    .read_capacity_units(30)
                    .write_capacity_units(5)
                    .build()
                    .expect("throughput"),
            )
            .send()
            .await
            .expect("scale out");
    };
    let (report, ()) = tokio::join!(raise, scale_out);

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (30, 10));
}

/// The scale-down puts the original minimum back, but not a maximum below what the table still
/// consumes: Auto Scaling would be capped under the traffic, and throttle again.
#[tokio::test]
async fn the_scale_down_keeps_the_maximum_the_traffic_still_needs() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-scaled", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let id = format!("table/{table}");
    register(&id, READ, 5, 8).await;
    let raised = run(&setup.scaler(&[]), json!({"table": table, "read": 30})).await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    assert_eq!(range(&id, READ).await, Some((30, 30)));

    // 8 units/s: under 30% of 30, so the minimum goes back; 8 × HEADROOM 1.2 needs 10.
    consumed_read_units(&table, 480.0, 10).await;
    let down = sweep(&setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]))
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(down.outcome, Outcome::Remediated, "{down:?}");
    assert_eq!(range(&id, READ).await, Some((5, 10)), "{down:?}");
}
