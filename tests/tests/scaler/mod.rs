//! limit-scaler's `dynamodb-capacity` runbook against moto (state and behaviour), and against
//! replay clients for the faults moto cannot produce.

mod auto_scaling;
mod bad_inputs;
mod capacity;
mod concurrency;
mod faults;
mod schedule;
mod stored_limit;

use std::time::Duration;

use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::update_table::{UpdateTableError, UpdateTableOutput};
use aws_sdk_dynamodb::types::error::{
    LimitExceededException, ResourceInUseException, ResourceNotFoundException,
};
use aws_sdk_dynamodb::types::{
    BillingMode, BillingModeSummary, OnDemandThroughput, TableDescription, TableStatus,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use limit_scaler::Scaler;
use limit_scaler::config::ScalerConfig;
use runbook_shared::model::{Outcome, Output, Report, VerificationStatus};
use runbook_tests::fixtures::{
    TableSpec, alarm_in_state, billing_mode, capacity, create_audit_table, expire_raise,
    invocation, reserved, scaler, scaler_clients, scaler_config, throttle_alarm_event,
};
use runbook_tests::moto::moto;
use runbook_tests::replay::{error_meta, no_metrics, provisioned_table};
use serde_json::{Value, json};

struct Setup {
    dynamodb: aws_sdk_dynamodb::Client,
    audit: String,
}

impl Setup {
    async fn new() -> Self {
        let dynamodb = moto().dynamodb();
        let audit = create_audit_table(&dynamodb).await;
        Self { dynamodb, audit }
    }

    fn config(&self, extra: &[(&str, &str)]) -> ScalerConfig {
        scaler_config(&self.audit, extra)
    }

    fn scaler(&self, extra: &[(&str, &str)]) -> Scaler {
        scaler(&self.audit, extra, scaler_clients())
    }

    /// The same scaler, with replay clients for the managed table and CloudWatch and moto for
    /// the audit table.
    fn scaler_with(
        &self,
        dynamodb: aws_sdk_dynamodb::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
    ) -> Scaler {
        let clients = limit_scaler::Clients {
            dynamodb,
            cloudwatch,
            ..scaler_clients()
        };
        scaler(&self.audit, &[], clients)
    }

    /// The audit records of a table, by its name.
    async fn audit_items(&self, table: &str) -> Vec<Value> {
        let items = self
            .dynamodb
            .query()
            .table_name(&self.audit)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!(
                    "target#{}",
                    runbook_tests::fixtures::table_key(table)
                )),
            )
            .send()
            .await
            .expect("query audit");
        items
            .items()
            .iter()
            .map(|item| {
                let text = item
                    .get("report")
                    .and_then(|r| r.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                let mut report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                report["verify_status"] =
                    json!(item.get("verify_status").and_then(|v| v.as_s().ok()));
                report
            })
            .collect()
    }
}

fn read_alarm(table: &str, state: &str) -> Value {
    throttle_alarm_event(
        &format!("{table}-read"),
        state,
        "ReadThrottleEvents",
        json!({"TableName": table}),
    )
}

async fn run(scaler: &Scaler, event: Value) -> Report {
    match scaler.handle(event, &invocation()).await {
        Output::One(report) => *report,
        Output::Sweep { reports } => panic!("expected one report, got a sweep: {reports:?}"),
    }
}

/// Records `units` of consumed read capacity on the table, `seconds_ago`.
async fn consumed_read_units(table: &str, units: f64, seconds_ago: i64) {
    moto()
        .cloudwatch()
        .put_metric_data()
        .namespace("AWS/DynamoDB")
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name("ConsumedReadCapacityUnits")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("TableName")
                        .value(table)
                        .build(),
                )
                .value(units)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - seconds_ago,
                ))
                .build(),
        )
        .send()
        .await
        .expect("put metric data");
}

async fn update_fails_with(
    setup: &Setup,
    name: &str,
    error: fn() -> UpdateTableError,
) -> (Report, usize) {
    let table = provisioned_table(name, 5, 5);
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
        .then_output(move || DescribeTableOutput::builder().table(table.clone()).build());
    let update = mock!(aws_sdk_dynamodb::Client::update_table).then_error(error);
    let dynamodb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&describe, &update],
        |conf| conf.retry_config(
            aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2)
        )
    );
    let report = run(
        &setup.scaler_with(dynamodb, no_metrics()),
        json!({"table": name}),
    )
    .await;
    (report, update.num_calls())
}

/// The limits table, with tenant#42's limits: requests_per_second 100 and burst 50.
async fn limits_table() -> String {
    let name = runbook_tests::unique("managed-limits");
    runbook_tests::fixtures::create_limits_table(&moto().dynamodb(), &name, 100).await;
    set_limit(&name, 100).await;
    name
}

async fn set_limit(table: &str, value: i64) {
    moto()
        .dynamodb()
        .put_item()
        .table_name(table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()),
        )
        .item(
            "requests_per_second",
            aws_sdk_dynamodb::types::AttributeValue::N(value.to_string()),
        )
        .item(
            "burst",
            aws_sdk_dynamodb::types::AttributeValue::N("50".into()),
        )
        .send()
        .await
        .unwrap();
}

async fn limit(table: &str) -> String {
    let item = moto()
        .dynamodb()
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()),
        )
        .send()
        .await
        .unwrap();
    item.item().unwrap()["requests_per_second"]
        .as_n()
        .unwrap()
        .clone()
}

async fn sweep(scaler: &Scaler) -> Vec<Report> {
    match scaler
        .handle(runbook_tests::fixtures::scheduled_event(), &invocation())
        .await
    {
        Output::Sweep { reports } => reports,
        Output::One(report) => panic!("expected a sweep, got {report:?}"),
    }
}
