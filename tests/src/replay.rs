//! The pieces of replay clients (`aws-smithy-mocks` on the real SDK clients) that the tests of
//! faults moto cannot produce share: AWS's error metadata, DynamoDB tables and Lambda
//! configurations as the SDK returns them, and a CloudWatch without metrics.

use aws_sdk_dynamodb::types::{
    BillingMode, BillingModeSummary, OnDemandThroughput, ProvisionedThroughputDescription,
    TableDescription, TableStatus,
};
use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
use aws_sdk_lambda::types::LastUpdateStatus;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use crate::fixtures::{function_key, table_key};

/// Error metadata as AWS sends it (the code comes from the response): every SDK's errors take it.
pub fn error_meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

/// An ACTIVE provisioned table as DescribeTable shows it.
pub fn provisioned_table(name: &str, read: i64, write: i64) -> TableDescription {
    TableDescription::builder()
        .table_name(name)
        .table_arn(table_key(name))
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

/// An ACTIVE on-demand table with these maximum request units (none: no maximum).
pub fn on_demand_table(
    name: &str,
    max_read: Option<i64>,
    max_write: Option<i64>,
) -> TableDescription {
    TableDescription::builder()
        .table_name(name)
        .table_arn(table_key(name))
        .table_status(TableStatus::Active)
        .billing_mode_summary(
            BillingModeSummary::builder()
                .billing_mode(BillingMode::PayPerRequest)
                .build(),
        )
        .on_demand_throughput(
            OnDemandThroughput::builder()
                .set_max_read_request_units(max_read)
                .set_max_write_request_units(max_write)
                .build(),
        )
        .build()
}

/// A function's configuration as GetFunctionConfiguration shows it.
pub fn function_configuration(
    function: &str,
    timeout: i32,
    memory: i32,
    status: LastUpdateStatus,
    revision: &str,
) -> GetFunctionConfigurationOutput {
    GetFunctionConfigurationOutput::builder()
        .function_name(function)
        .function_arn(function_key(function))
        .version("$LATEST")
        .timeout(timeout)
        .memory_size(memory)
        .last_update_status(status)
        .revision_id(revision)
        .build()
}

/// A CloudWatch that has no datapoints for any metric, and no alarms.
pub fn no_metrics() -> aws_sdk_cloudwatch::Client {
    let rule = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput::builder().build()
    });
    // The re-check before a write finds no such alarm, and acts on the event as delivered.
    let no_alarm = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(|| {
        aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput::builder().build()
    });
    mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule, &no_alarm])
}

/// The evidence's reads of a function that a replay Lambda client does not otherwise answer:
/// a bare configuration, and no versions or aliases (nothing changed recently).
pub struct QuietFunction {
    pub configuration: aws_smithy_mocks::Rule,
    pub versions: aws_smithy_mocks::Rule,
    pub aliases: aws_smithy_mocks::Rule,
}

impl QuietFunction {
    pub fn new() -> Self {
        Self {
            configuration: mock!(aws_sdk_lambda::Client::get_function_configuration)
                .then_output(|| GetFunctionConfigurationOutput::builder().build()),
            versions: mock!(aws_sdk_lambda::Client::list_versions_by_function).then_output(|| {
                aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionOutput::builder().build()
            }),
            aliases: mock!(aws_sdk_lambda::Client::list_aliases).then_output(|| {
                aws_sdk_lambda::operation::list_aliases::ListAliasesOutput::builder().build()
            }),
        }
    }
}

impl Default for QuietFunction {
    fn default() -> Self {
        Self::new()
    }
}
