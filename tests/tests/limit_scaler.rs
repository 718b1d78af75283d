//! limit-scaler's `dynamodb-capacity` runbook against moto (state and behaviour), and against
//! replay clients for the faults moto cannot produce.

use std::time::Duration;

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::update_table::{UpdateTableError, UpdateTableOutput};
use aws_sdk_dynamodb::types::error::{
    LimitExceededException, ResourceInUseException, ResourceNotFoundException,
};
use aws_sdk_dynamodb::types::{
    BillingMode, BillingModeSummary, OnDemandThroughput, ProvisionedThroughputDescription,
    TableDescription, TableStatus,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use limit_scaler::Scaler;
use limit_scaler::config::ScalerConfig;
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::report::{Outcome, Output, Report, VerificationStatus};
use runbook_shared::safety::Invocation;
use runbook_tests::fixtures::{
    TableSpec, billing_mode, capacity, create_audit_table, throttle_alarm_event,
};
use runbook_tests::moto::moto;
use serde_json::{Value, json};

struct Setup {
    dynamodb: aws_sdk_dynamodb::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    audit: String,
}

impl Setup {
    async fn new() -> Self {
        let dynamodb = moto().dynamodb();
        let audit = create_audit_table(&dynamodb).await;
        Self {
            cloudwatch: moto().cloudwatch(),
            dynamodb,
            audit,
        }
    }

    fn config(&self, extra: &[(&str, &str)]) -> ScalerConfig {
        let mut pairs = vec![
            ("AUDIT_TABLE", self.audit.as_str()),
            ("AWS_REGION", runbook_tests::moto::REGION),
            ("ACCOUNT_ID", runbook_tests::moto::ACCOUNT),
            ("MANAGED_RESOURCES", "managed-*"),
        ];
        pairs.extend_from_slice(extra);
        ScalerConfig::from_env(&Env::from_pairs(&pairs)).expect("config")
    }

    fn scaler(&self, extra: &[(&str, &str)]) -> Scaler {
        let mut scaler = Scaler::with_clients(
            self.config(extra),
            limit_scaler::Clients {
                dynamodb: self.dynamodb.clone(),
                cloudwatch: self.cloudwatch.clone(),
                lambda: moto().lambda(),
                audit: self.dynamodb.clone(),
            },
        );
        scaler.poll_interval = Duration::from_millis(50);
        scaler
    }

    /// The same scaler, with replay clients for the managed table and CloudWatch and moto for
    /// the audit table.
    fn scaler_with(
        &self,
        dynamodb: aws_sdk_dynamodb::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
    ) -> Scaler {
        let mut scaler = Scaler::with_clients(
            self.config(&[]),
            limit_scaler::Clients {
                dynamodb,
                cloudwatch,
                lambda: moto().lambda(),
                audit: self.dynamodb.clone(),
            },
        );
        scaler.poll_interval = Duration::from_millis(10);
        scaler
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

fn invocation() -> Invocation {
    Invocation::new(
        uuid::Uuid::new_v4().to_string(),
        Deadline::after(Duration::from_secs(30)),
    )
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

#[tokio::test]
async fn alarm_raises_the_throttled_read_side_and_verifies_the_table() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("dynamodb-capacity"));
    assert_eq!(report.target.as_deref(), Some(table.as_str()));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    let action = &report.actions[0];
    assert_eq!(action.api, "dynamodb:UpdateTable");
    assert!(action.applied);
    assert_eq!(
        action.before,
        json!({"billing_mode": "PROVISIONED", "read": 5, "write": 5})
    );
    assert_eq!(
        action.after,
        json!({"billing_mode": "PROVISIONED", "read": 10, "write": 5})
    );
    assert_eq!(report.verification.status, VerificationStatus::Pending);
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
            ("throttling_stopped", false)
        ]
    );

    let records = setup.audit_items(&table).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["audit_id"], json!(report.audit_id));
    assert_eq!(records[0]["verify_status"], "pending");
}

#[tokio::test]
async fn alarm_on_an_index_raises_only_that_index_write_side() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 4, 4)
        .with_index()
        .create(&setup.dynamodb)
        .await;
    let event = throttle_alarm_event(
        "gsi-writes",
        "ALARM",
        "WriteThrottleEvents",
        json!({"TableName": table, "GlobalSecondaryIndexName": "by-customer"}),
    );
    let report = run(&setup.scaler(&[]), event).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.target, Some(format!("{table}/index/by-customer")));
    assert_eq!(
        capacity(&setup.dynamodb, &table, Some("by-customer")).await,
        (4, 8)
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (4, 4));
}

/// Records `units` of consumed read capacity on the table, `seconds_ago`.
async fn consumed_read_units(setup: &Setup, table: &str, units: f64, seconds_ago: i64) {
    setup
        .cloudwatch
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

#[tokio::test]
async fn consumed_peak_with_headroom_beats_the_factor_and_the_cap_clamps_it() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    // 3,000 read units consumed in one minute: 50 per second, 60 with the 1.2 headroom.
    consumed_read_units(&setup, &table, 3000.0, 60).await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (60, 5));
    assert_eq!(
        report.diagnosis.as_ref().unwrap()["consumed_peak"]["read_per_second"],
        json!(50.0)
    );

    let capped = TableSpec::provisioned("managed-orders", 600, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "1000")]),
        read_alarm(&capped, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &capped, None).await, (1000, 5));
}

#[tokio::test]
async fn dry_run_plans_and_changes_nothing() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .with_index()
        .create(&setup.dynamodb)
        .await;
    let payload = json!({"table": table, "index": "by-customer", "factor": 3.0, "dry_run": true});
    let report = run(&setup.scaler(&[]), payload).await;

    assert_eq!(report.outcome, Outcome::Planned, "{report:?}");
    assert!(report.dry_run);
    assert!(!report.actions[0].applied);
    assert_eq!(
        report.actions[0].after,
        json!({"billing_mode": "PROVISIONED", "read": 15, "write": 15})
    );
    assert_eq!(
        capacity(&setup.dynamodb, &table, Some("by-customer")).await,
        (5, 5)
    );
    assert!(report.audit_id.is_none());
    assert!(
        setup
            .audit_items(&format!("{table}/index/by-customer"))
            .await
            .is_empty()
    );

    // DRY_RUN=true in the environment wins over the payload.
    let report = run(
        &setup.scaler(&[("DRY_RUN", "true")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Planned);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

#[tokio::test]
async fn at_cap_is_skipped_or_switches_to_on_demand_when_allowed() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 50, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "50")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.contains("at cap") && report.reason.contains("MAX_READ_CAPACITY=50"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (50, 5));

    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "50"), ("ALLOW_ON_DEMAND", "true")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.actions[0].after,
        json!({"billing_mode": "PAY_PER_REQUEST"})
    );
    assert_eq!(
        billing_mode(&setup.dynamodb, &table).await,
        "PAY_PER_REQUEST"
    );
}

#[tokio::test]
async fn on_demand_table_without_a_maximum_is_diagnosed_not_changed() {
    let setup = Setup::new().await;
    let table = TableSpec::on_demand("managed-orders")
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("hot partition key"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());
    assert_eq!(
        billing_mode(&setup.dynamodb, &table).await,
        "PAY_PER_REQUEST"
    );
}

#[tokio::test]
async fn unmanaged_table_is_skipped_and_a_tag_makes_it_managed() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("other-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert!(report.reason.contains("runbook:managed=true"));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));

    let tagged = TableSpec::provisioned("other-orders", 5, 5)
        .tagged_managed()
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&tagged, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &tagged, None).await, (10, 5));
}

#[tokio::test]
async fn cooldown_stops_a_second_raise() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    assert_eq!(
        run(&scaler, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    let second = run(&scaler, read_alarm(&table, "ALARM")).await;
    assert_eq!(second.outcome, Outcome::Skipped, "{second:?}");
    assert!(second.reason.starts_with("cooldown"), "{}", second.reason);
    assert!(second.reason.contains("COOLDOWN_SECONDS=900"));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
}

#[tokio::test]
async fn two_concurrent_invocations_on_one_table_act_once() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let (first, second) = tokio::join!(
        run(&scaler, read_alarm(&table, "ALARM")),
        run(&scaler, read_alarm(&table, "ALARM"))
    );
    let outcomes = [first.outcome, second.outcome];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Remediated)
            .count(),
        1,
        "{first:?} {second:?}"
    );
    let skipped = if first.outcome == Outcome::Skipped {
        &first
    } else {
        &second
    };
    assert!(
        skipped.reason.starts_with("lock held") || skipped.reason.starts_with("cooldown"),
        "{}",
        skipped.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
}

#[tokio::test]
async fn the_same_event_twice_acts_once_and_returns_the_same_report() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let event = read_alarm(&table, "ALARM");
    let first = run(&scaler, event.clone()).await;
    let again = run(&scaler, event).await;
    assert_eq!(first.outcome, Outcome::Remediated);
    assert_eq!(again, first);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    assert_eq!(setup.audit_items(&table).await.len(), 1);
}

#[tokio::test]
async fn ok_transition_closes_the_verification_as_verified() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let raised = run(&scaler, read_alarm(&table, "ALARM")).await;
    let closed = run(&scaler, read_alarm(&table, "OK")).await;

    assert_eq!(closed.outcome, Outcome::NoAction, "{closed:?}");
    assert_eq!(closed.verification.status, VerificationStatus::Verified);
    assert_eq!(closed.audit_id, raised.audit_id);
    assert!(
        closed.reason.contains("returned to OK") && closed.reason.contains("verified"),
        "{}",
        closed.reason
    );
    assert!(closed.diagnosis.as_ref().unwrap()["time_to_recover_seconds"].is_i64());
    let records = setup.audit_items(&table).await;
    assert_eq!(records[0]["verification"]["status"], "verified");
    assert_eq!(records[0]["verify_status"], Value::Null);

    let nothing_open = run(&scaler, read_alarm(&table, "OK")).await;
    assert_eq!(nothing_open.outcome, Outcome::NoAction);
    assert!(
        nothing_open.reason.contains("no remediation"),
        "{}",
        nothing_open.reason
    );
}

#[tokio::test]
async fn the_hourly_budget_stops_further_actions() {
    let setup = Setup::new().await;
    let scaler = setup.scaler(&[("MAX_ACTIONS_PER_HOUR", "1")]);
    // Each test has its own audit table, hence its own budget.
    let first = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let second = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    assert_eq!(
        run(&scaler, read_alarm(&first, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    let report = run(&scaler, read_alarm(&second, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("budget spent"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &second, None).await, (5, 5));
}

#[tokio::test]
async fn manual_raise_to_exact_values() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[]),
        json!({"table": table, "read": 200, "write": 100}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.trigger.kind,
        runbook_shared::report::TriggerKind::Manual
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (200, 100));
}

#[tokio::test]
async fn missing_table_and_index_fail_clearly_and_change_nothing() {
    let setup = Setup::new().await;
    let report = run(
        &setup.scaler(&[]),
        json!({"table": "managed-does-not-exist"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report
            .reason
            .contains("managed-does-not-exist does not exist"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());

    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), json!({"table": table, "index": "nope"})).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.reason.contains("no global secondary index nope"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

#[tokio::test]
async fn alarms_it_does_not_handle_are_no_action() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let mut other = read_alarm(&table, "ALARM");
    other["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["name"] =
        json!("ConsumedReadCapacityUnits");
    let report = run(&scaler, other).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert!(
        report
            .reason
            .contains("ReadThrottleEvents, WriteThrottleEvents, ThrottledRequests"),
        "{}",
        report.reason
    );

    let report = run(&scaler, read_alarm(&table, "INSUFFICIENT_DATA")).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

// ---- bad inputs: rejected with a reason, and no AWS call at all -------------------------------

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

// ---- AWS faults moto cannot produce ------------------------------------------------------------

fn provisioned_table(name: &str, read: i64, write: i64) -> TableDescription {
    TableDescription::builder()
        .table_name(name)
        .table_arn(format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{name}"
        ))
        .table_status(TableStatus::Active)
        .billing_mode_summary(
            BillingModeSummary::builder()
                .billing_mode(BillingMode::Provisioned)
                .build(),
        )
        .provisioned_throughput(
            ProvisionedThroughputDescription::builder()
                .read_capacity_units(read)
                .write_capacity_units(write)
                .build(),
        )
        .build()
}

/// Error metadata as AWS sends it (the code comes from the response).
fn meta(code: &str, message: &str) -> aws_sdk_dynamodb::error::ErrorMetadata {
    aws_sdk_dynamodb::error::ErrorMetadata::builder()
        .code(code)
        .message(message)
        .build()
}

fn no_metrics() -> aws_sdk_cloudwatch::Client {
    let rule = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput::builder().build()
    });
    mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule])
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

#[tokio::test]
async fn table_deleted_between_diagnosis_and_update_fails_cleanly() {
    let setup = Setup::new().await;
    let name = runbook_tests::unique("managed-gone");
    let (report, _) = update_fails_with(&setup, &name, || {
        UpdateTableError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("Requested resource not found")
                .meta(meta(
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
        UpdateTableError::generic(meta("ThrottlingException", "Rate exceeded"))
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
        UpdateTableError::generic(meta(
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
                .meta(meta("LimitExceededException", "Subscriber limit exceeded"))
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
                    .meta(meta("ResourceInUseException", "table is being updated"))
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

// ---- lambda-concurrency ------------------------------------------------------------------------

async fn reserved(function: &str) -> Option<i32> {
    moto()
        .lambda()
        .get_function_concurrency()
        .function_name(function)
        .send()
        .await
        .unwrap()
        .reserved_concurrent_executions()
}

/// One test for every concurrency case: they share the account's concurrency pool.
#[tokio::test]
async fn lambda_concurrency_raises_within_the_cap_and_the_account_floor() {
    let setup = Setup::new().await;
    let lambda = moto().lambda();
    let function = runbook_tests::unique("managed-worker");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    lambda
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(10)
        .send()
        .await
        .unwrap();
    let throttles = |state: &str| {
        runbook_tests::fixtures::lambda_alarm_event(
            &format!("{function}-throttles"),
            state,
            "Throttles",
            &function,
            None,
        )
    };

    let report = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("lambda-concurrency"));
    assert_eq!(report.actions[0].after, json!({"reserved_concurrency": 20}));
    assert_eq!(reserved(&function).await, Some(20));
    assert_eq!(report.verification.status, VerificationStatus::Pending);
    let closed = run(&setup.scaler(&[]), throttles("OK")).await;
    assert_eq!(
        closed.verification.status,
        VerificationStatus::Verified,
        "{closed:?}"
    );

    // The account's floor limits the raise: leave room for only 3 more.
    let unreserved = lambda
        .get_account_settings()
        .send()
        .await
        .unwrap()
        .account_limit()
        .unwrap()
        .unreserved_concurrent_executions()
        .unwrap();
    let floor = (unreserved - 3).to_string();
    let limited = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("UNRESERVED_CONCURRENCY_FLOOR", &floor),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(limited.outcome, Outcome::Remediated, "{limited:?}");
    assert_eq!(reserved(&function).await, Some(23));
    let at_floor = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("UNRESERVED_CONCURRENCY_FLOOR", &floor),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(at_floor.outcome, Outcome::Skipped, "{at_floor:?}");
    assert!(at_floor.reason.starts_with("floor:"), "{}", at_floor.reason);

    let at_cap = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("MAX_RESERVED_CONCURRENCY", "23"),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(at_cap.outcome, Outcome::Skipped);
    assert!(
        at_cap.reason.contains("at MAX_RESERVED_CONCURRENCY=23"),
        "{}",
        at_cap.reason
    );

    let dry = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        json!({"function": function, "reserved_concurrency": 40, "dry_run": true}),
    )
    .await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:?}");
    assert_eq!(reserved(&function).await, Some(23));
    let exact = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        json!({"function": function, "reserved_concurrency": 40}),
    )
    .await;
    assert_eq!(exact.outcome, Outcome::Remediated, "{exact:?}");
    assert_eq!(reserved(&function).await, Some(40));
    let cooled = run(&setup.scaler(&[]), throttles("ALARM")).await;
    assert_eq!(cooled.outcome, Outcome::Skipped);
    assert!(cooled.reason.starts_with("cooldown"), "{}", cooled.reason);

    // Without a reservation the account's pool is the limit: a diagnosis, no change.
    let shared = runbook_tests::unique("managed-shared");
    runbook_tests::fixtures::create_function(moto(), &shared).await;
    let report = run(&setup.scaler(&[]), json!({"function": shared})).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("no reserved concurrency") && report.reason.contains("account"),
        "{}",
        report.reason
    );
    assert_eq!(reserved(&shared).await, None);

    let stranger = runbook_tests::unique("other-worker");
    runbook_tests::fixtures::create_function(moto(), &stranger).await;
    lambda
        .put_function_concurrency()
        .function_name(&stranger)
        .reserved_concurrent_executions(5)
        .send()
        .await
        .unwrap();
    let report = run(&setup.scaler(&[]), json!({"function": stranger})).await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert_eq!(reserved(&stranger).await, Some(5));

    let missing = run(
        &setup.scaler(&[]),
        json!({"function": "managed-nope-never"}),
    )
    .await;
    assert_eq!(missing.outcome, Outcome::Failed);
    assert!(
        missing.reason.contains("does not exist"),
        "{}",
        missing.reason
    );
}

// ---- stored-limit, and the schedule that puts raises back --------------------------------------

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

/// Moves the revert time of the raise of `target` (by its name) into the past, as if its time
/// were up.
async fn expire(setup: &Setup, runbook: &str, target: &str) {
    let audit = runbook_shared::audit::AuditStore::new(moto().dynamodb(), setup.audit.clone(), 1);
    let raise = audit
        .raises(runbook)
        .await
        .unwrap()
        .into_iter()
        .find(|r| {
            runbook_shared::resource::ResourceId::from_key(&r.resource).map(|id| id.name())
                == Some(target.to_string())
        })
        .expect("raise in force");
    audit
        .put_raise(
            runbook,
            &raise.resource,
            &raise.original,
            &raise.current,
            Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .await
        .unwrap();
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
    expire(&setup, "stored-limit", &target).await;
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
    expire(&setup, "stored-limit", &target).await;
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
                .meta(meta(
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
            cloudwatch: moto().cloudwatch(),
            lambda: moto().lambda(),
            audit: moto().dynamodb(),
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

#[tokio::test]
async fn raised_reservations_go_back_when_their_time_is_up() {
    let setup = Setup::new().await;
    let function = runbook_tests::unique("managed-batch");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    moto()
        .lambda()
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(7)
        .send()
        .await
        .unwrap();
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let report = run(&scaler, json!({"function": function})).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(reserved(&function).await, Some(14));
    expire(&setup, "lambda-concurrency", &function).await;
    let reports = sweep(&scaler).await;
    let back = reports
        .iter()
        .find(|r| r.target.as_deref() == Some(function.as_str()))
        .expect("a report");
    assert_eq!(back.outcome, Outcome::Remediated, "{back:?}");
    assert_eq!(reserved(&function).await, Some(7));
}

#[tokio::test]
async fn capacity_steps_back_down_after_low_use_never_below_the_baseline() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let raising = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    assert_eq!(
        run(&raising, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    assert_eq!(
        run(&raising, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Not before SCALE_DOWN_AFTER_HOURS.
    let patient = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "2")]);
    assert!(
        sweep(&patient)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(table.as_str()))
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Still busy: 15 units/s used of 20 is above 30%, kept.
    consumed_read_units(&setup, &table, 900.0, 30).await;
    let eager = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]);
    let kept = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(kept.outcome, Outcome::NoAction, "{kept:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Idle (the metric read covers only the last minute when SCALE_DOWN_AFTER_HOURS is 0, and
    // the datapoint above is older than that by now): 20 -> 10 -> 5, then it stops.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let first = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    let second = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
    assert!(
        sweep(&eager)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(table.as_str())),
        "back at the baseline: no longer tracked"
    );
}
