//! Bad inputs: rejected with a reason, and no AWS call at all.

use super::*;

#[tokio::test]
async fn bad_inputs_are_rejected_without_any_aws_call() {
    let setup = Setup::new().await;
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
        .then_output(|| DescribeTableOutput::builder().build());
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .then_output(|| UpdateTableOutput::builder().build());
    let metrics = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput::builder().build()
    });
    let audit_put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update]);
    let audit = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&audit_put]);
    let cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&metrics]);
    let concurrency = mock!(aws_sdk_lambda::Client::get_function_concurrency)
        .then_output(|| aws_sdk_lambda::operation::get_function_concurrency::GetFunctionConcurrencyOutput::builder().build());
    let lambda = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, [&concurrency]);
    let mut scaler = Scaler::with_clients(
        setup.config(&[("MAX_READ_CAPACITY", "500")]),
        limit_scaler::Clients {
            dynamodb,
            cloudwatch,
            lambda,
            audit,
            ..scaler_clients()
        },
    );
    scaler.poll_interval = Duration::from_millis(10);

    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "got an array"),
        (json!("orders"), "got a string"),
        (
            json!({"source": "aws.s3", "detail-type": "Object Created"}),
            "unrecognised event",
        ),
        (
            json!({"table": "orders", "tabel": "orders"}),
            "unknown field `tabel`, expected one of `table`, `index`, `read`, `write`, `factor`, `mode`, `dry_run`",
        ),
        (
            json!({"tabel": "orders"}),
            "give \"table\" (dynamodb-capacity), \"function\" (lambda-concurrency) or \"limit\" (stored-limit); got tabel",
        ),
        (
            json!({"function": "f", "reserved_concurrency": 100000}),
            "MAX_RESERVED_CONCURRENCY=500",
        ),
        (
            json!({"function": "f", "reserved": 5}),
            "unknown field `reserved`, expected one of `function`, `reserved_concurrency`, `dry_run`",
        ),
        (
            json!({"index": "by-customer", "table": null}),
            "invalid type: null",
        ),
        (json!({"table": "orders", "read": "lots"}), "invalid type"),
        (
            json!({"table": "orders", "read": 5000}),
            "above the cap MAX_READ_CAPACITY=500",
        ),
        (
            json!({"table": "orders", "factor": 50}),
            "\"factor\" must be from 1.1 to 10",
        ),
        (
            json!({"table": "orders", "mode": "on-demand"}),
            "ALLOW_ON_DEMAND=true",
        ),
        (
            json!({"table": "orders", "mode": "turbo"}),
            "\"mode\" must be \"on-demand\"",
        ),
        (json!({"table": " "}), "must name a DynamoDB table"),
        (
            json!({"version": "0", "id": "x", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
                "time": "2026-11-23T00:00:00Z", "resources": [], "detail": {"alarmName": 7}}),
            "malformed CloudWatch Alarm State Change",
        ),
        (
            json!({"version": "0", "id": "s", "detail-type": "CloudFormation Stack Status Change", "source": "aws.cloudformation",
                "time": "2026-11-23T00:00:00Z", "resources": [], "detail": {"stack-id": "x"}}),
            "not on stack events",
        ),
    ];
    for (event, expected) in cases {
        let report = run(&scaler, event.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{event} -> {report:?}");
        assert!(
            report.reason.contains(expected),
            "{event}: {:?} should contain {expected:?}",
            report.reason
        );
        assert!(!report.reason.contains('\n'), "one line: {}", report.reason);
    }
    assert_eq!(
        describe.num_calls() + update.num_calls() + metrics.num_calls() + audit_put.num_calls(),
        0
    );
}
