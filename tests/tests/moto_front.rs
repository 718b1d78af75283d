//! The CBOR front: aws-sdk-cloudwatch (Smithy RPC v2 CBOR) against moto's JSON protocol.

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, StateValue,
    Statistic,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;

#[tokio::test]
async fn alarms_round_trip_with_timestamps_and_numbers() {
    let cloudwatch = moto().cloudwatch();
    let alarm = unique("front-alarm");
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/DynamoDB")
        .metric_name("ReadThrottleEvents")
        .dimensions(
            Dimension::builder()
                .name("TableName")
                .value("orders")
                .build(),
        )
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.5)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await
        .expect("PutMetricAlarm through the front");
    cloudwatch
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .expect("SetAlarmState");
    let described = cloudwatch
        .describe_alarms()
        .alarm_names(&alarm)
        .send()
        .await
        .expect("DescribeAlarms");
    let found = &described.metric_alarms()[0];
    assert_eq!(found.state_value(), Some(&StateValue::Alarm));
    assert_eq!(found.threshold(), Some(1.5));
    assert_eq!(found.period(), Some(60));
    assert_eq!(found.dimensions()[0].value(), Some("orders"));
    let updated = found
        .state_updated_timestamp()
        .expect("timestamp decoded from CBOR tag 1");
    assert!((updated.secs() - chrono::Utc::now().timestamp()).abs() < 120);
}

#[tokio::test]
async fn metric_data_round_trips() {
    let cloudwatch = moto().cloudwatch();
    let table = unique("front-table");
    let at = chrono::Utc::now().timestamp() - 120;
    cloudwatch
        .put_metric_data()
        .namespace("AWS/DynamoDB")
        .metric_data(
            MetricDatum::builder()
                .metric_name("ConsumedWriteCapacityUnits")
                .dimensions(Dimension::builder().name("TableName").value(&table).build())
                .value(42.0)
                .timestamp(DateTime::from_secs(at))
                .build(),
        )
        .send()
        .await
        .expect("PutMetricData");
    let metric = Metric::builder()
        .namespace("AWS/DynamoDB")
        .metric_name("ConsumedWriteCapacityUnits")
        .dimensions(Dimension::builder().name("TableName").value(&table).build())
        .build();
    let data = cloudwatch
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("w")
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat("Sum")
                        .build(),
                )
                .build(),
        )
        .start_time(DateTime::from_secs(at - 600))
        .end_time(DateTime::from_secs(at + 600))
        .send()
        .await
        .expect("GetMetricData");
    let result = &data.metric_data_results()[0];
    assert_eq!(result.values(), &[42.0]);
    assert_eq!(result.timestamps().len(), 1);

    let statistics = cloudwatch
        .get_metric_statistics()
        .namespace("AWS/DynamoDB")
        .metric_name("ConsumedWriteCapacityUnits")
        .dimensions(Dimension::builder().name("TableName").value(&table).build())
        .statistics(Statistic::Maximum)
        .period(60)
        .start_time(DateTime::from_secs(at - 600))
        .end_time(DateTime::from_secs(at + 600))
        .send()
        .await
        .expect("GetMetricStatistics");
    assert_eq!(statistics.datapoints()[0].maximum(), Some(42.0));
    assert!(statistics.datapoints()[0].timestamp().is_some());
}

#[tokio::test]
async fn errors_come_back_as_modelled_errors() {
    let cloudwatch = moto().cloudwatch();
    let err = cloudwatch
        .set_alarm_state()
        .alarm_name(unique("no-such-alarm"))
        .state_value(StateValue::Ok)
        .state_reason("test")
        .send()
        .await
        .expect_err("moto answers 404 ResourceNotFound");
    let service = err
        .as_service_error()
        .expect("a service error, not a transport error");
    assert!(service.is_resource_not_found(), "{service:?}");
}

#[tokio::test]
async fn cloudformation_recovery_operations_on_moto_stacks() {
    use aws_sdk_cloudformation::types::StackStatus;
    use runbook_tests::fixtures::{create_stack, set_stack_status};

    let cloudformation = moto().cloudformation();
    let status = |stack: String| {
        let cloudformation = cloudformation.clone();
        async move {
            let stacks = cloudformation
                .describe_stacks()
                .stack_name(stack)
                .send()
                .await
                .expect("describe");
            stacks.stacks()[0].stack_status().cloned().expect("status")
        }
    };
    let stack = unique("front-stack");
    create_stack(
        &cloudformation,
        &stack,
        serde_json::json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;

    // Preconditions as in AWS: a complete stack can neither continue a rollback nor cancel.
    use aws_sdk_cloudformation::error::ProvideErrorMetadata;
    let err = cloudformation
        .continue_update_rollback()
        .stack_name(&stack)
        .send()
        .await
        .expect_err("not failed");
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(
        err.message()
            .unwrap_or_default()
            .contains("CREATE_COMPLETE state and can not continue update rollback"),
        "{err:?}"
    );
    let err = cloudformation
        .cancel_update_stack()
        .stack_name(&stack)
        .send()
        .await
        .expect_err("not updating");
    assert!(
        err.message()
            .unwrap_or_default()
            .contains("CancelUpdateStack cannot be called"),
        "{err:?}"
    );

    set_stack_status(
        moto(),
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("Table", "limit exceeded")),
        0,
    )
    .await;
    assert_eq!(
        status(stack.clone()).await,
        StackStatus::UpdateRollbackFailed
    );
    let events = cloudformation
        .describe_stack_events()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    assert!(
        events
            .stack_events()
            .iter()
            .any(|e| e.logical_resource_id() == Some("Table")
                && e.resource_status_reason() == Some("limit exceeded"))
    );
    cloudformation
        .continue_update_rollback()
        .stack_name(&stack)
        .resources_to_skip("Table")
        .send()
        .await
        .expect("continue");
    assert_eq!(
        status(stack.clone()).await,
        StackStatus::UpdateRollbackComplete
    );

    set_stack_status(moto(), &stack, "UPDATE_IN_PROGRESS", None, 0).await;
    cloudformation
        .cancel_update_stack()
        .stack_name(&stack)
        .send()
        .await
        .expect("cancel");
    assert_eq!(
        status(stack.clone()).await,
        StackStatus::UpdateRollbackComplete
    );

    set_stack_status(moto(), &stack, "UPDATE_FAILED", None, 0).await;
    let rolled = cloudformation
        .rollback_stack()
        .stack_name(&stack)
        .send()
        .await
        .expect("rollback");
    assert!(rolled.stack_id().is_some());
    assert_eq!(
        status(stack.clone()).await,
        StackStatus::UpdateRollbackComplete
    );

    // DescribeStackResources by the resource's physical id finds its stack.
    let resources = cloudformation
        .describe_stack_resources()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    let physical = resources.stack_resources()[0]
        .physical_resource_id()
        .unwrap()
        .to_string();
    let owner = cloudformation
        .describe_stack_resources()
        .physical_resource_id(&physical)
        .send()
        .await
        .unwrap();
    assert_eq!(
        owner.stack_resources()[0].stack_name(),
        Some(stack.as_str())
    );
}

/// The front's IAM evaluation knows each service's resources; a call by an IAM user to a
/// service it has no mapping for fails naming that service, rather than being judged against
/// `*` (which would deny what AWS allows, or allow what it denies).
#[tokio::test]
async fn iam_for_a_service_without_a_resource_mapping_is_a_clear_error() {
    let user = runbook_tests::unique("unmapped");
    moto().boto3("iam", "create_user", serde_json::json!({"UserName": user}));
    moto().boto3(
        "iam",
        "put_user_policy",
        serde_json::json!({"UserName": user, "PolicyName": "all", "PolicyDocument": serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }).to_string()}),
    );
    let key = moto().boto3(
        "iam",
        "create_access_key",
        serde_json::json!({"UserName": user}),
    );
    let keys = (
        key["AccessKey"]["AccessKeyId"].as_str().expect("key id"),
        key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .expect("secret"),
    );
    let err = moto()
        .boto3_as(keys, "sns", "list_topics", serde_json::json!({}))
        .expect_err("no mapping for sns");
    assert!(err.contains("no resource mapping for service sns"), "{err}");
    // A mapped service is evaluated as before.
    assert!(
        moto()
            .boto3_as(keys, "sqs", "list_queues", serde_json::json!({}))
            .is_ok()
    );
}
