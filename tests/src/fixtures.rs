//! Resources and events for the tests, in the shapes AWS produces.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, Tag, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::{Value, json};

use crate::moto::{ACCOUNT, REGION};

/// An application's stored rate limits: an on-demand table keyed by the string `pk` (the
/// template's default LimitsKeyAttr), holding `tenant#42` with `requests_per_second` = `value`.
pub async fn create_limits_table(dynamodb: &aws_sdk_dynamodb::Client, name: &str, value: i64) {
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .key_schema(key("pk", KeyType::Hash))
        .send()
        .await
        .expect("create limits table");
    dynamodb
        .put_item()
        .table_name(name)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()),
        )
        .item(
            "requests_per_second",
            aws_sdk_dynamodb::types::AttributeValue::N(value.to_string()),
        )
        .send()
        .await
        .expect("limit item");
}

/// The audit table as template.yaml defines it: `pk`/`sk`, TTL on `expires_at`, and the sparse
/// `pending` index over open verifications.
pub async fn create_audit_table(dynamodb: &aws_sdk_dynamodb::Client) -> String {
    let name = crate::unique("audit");
    dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .attribute_definitions(attribute("verify_status"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(runbook_shared::audit::PENDING_INDEX)
                .key_schema(key("verify_status", KeyType::Hash))
                .key_schema(key("sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index"),
        )
        .send()
        .await
        .expect("create audit table");
    dynamodb
        .update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("enable ttl");
    name
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("key")
}

fn throughput(read: i64, write: i64) -> ProvisionedThroughput {
    ProvisionedThroughput::builder()
        .read_capacity_units(read)
        .write_capacity_units(write)
        .build()
        .expect("throughput")
}

/// A table to be scaled: provisioned at `read`/`write` (on-demand when `None`), optionally with
/// a global secondary index `by-customer` at the same capacity, and optionally tagged managed.
pub struct TableSpec {
    pub name: String,
    pub capacity: Option<(i64, i64)>,
    pub with_index: bool,
    pub tagged_managed: bool,
}

impl TableSpec {
    pub fn provisioned(prefix: &str, read: i64, write: i64) -> Self {
        Self {
            name: crate::unique(prefix),
            capacity: Some((read, write)),
            with_index: false,
            tagged_managed: false,
        }
    }

    pub fn on_demand(prefix: &str) -> Self {
        Self {
            name: crate::unique(prefix),
            capacity: None,
            with_index: false,
            tagged_managed: false,
        }
    }

    pub fn with_index(mut self) -> Self {
        self.with_index = true;
        self
    }

    pub fn tagged_managed(mut self) -> Self {
        self.tagged_managed = true;
        self
    }

    pub async fn create(self, dynamodb: &aws_sdk_dynamodb::Client) -> String {
        let mut create = dynamodb
            .create_table()
            .table_name(&self.name)
            .attribute_definitions(attribute("id"))
            .key_schema(key("id", KeyType::Hash));
        create = match self.capacity {
            Some((read, write)) => create
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(throughput(read, write)),
            None => create.billing_mode(BillingMode::PayPerRequest),
        };
        if self.with_index {
            let mut index = GlobalSecondaryIndex::builder()
                .index_name("by-customer")
                .key_schema(key("customer", KeyType::Hash))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                );
            if let Some((read, write)) = self.capacity {
                index = index.provisioned_throughput(throughput(read, write));
            }
            create = create
                .attribute_definitions(attribute("customer"))
                .global_secondary_indexes(index.build().expect("index"));
        }
        if self.tagged_managed {
            create = create.tags(
                Tag::builder()
                    .key("runbook:managed")
                    .value("true")
                    .build()
                    .expect("tag"),
            );
        }
        create.send().await.expect("create table");
        self.name
    }
}

/// (read, write) of a table, or of its index.
pub async fn capacity(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    index: Option<&str>,
) -> (i64, i64) {
    let description = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let throughput = match index {
        None => description.provisioned_throughput().cloned(),
        Some(index) => description
            .global_secondary_indexes()
            .iter()
            .find(|gsi| gsi.index_name() == Some(index))
            .and_then(|gsi| gsi.provisioned_throughput().cloned()),
    }
    .expect("throughput");
    (
        throughput.read_capacity_units().unwrap_or_default(),
        throughput.write_capacity_units().unwrap_or_default(),
    )
}

pub async fn billing_mode(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe")
        .table
        .and_then(|t| {
            t.billing_mode_summary()
                .and_then(|b| b.billing_mode().cloned())
        })
        .map_or("PROVISIONED".to_string(), |mode| mode.as_str().to_string())
}

/// The canonical key (ARN) of a table of the tests' account and region, as the audit table
/// keys its records and raises.
pub fn table_key(table: &str) -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}")
}

/// The canonical key (ARN) of a function of the tests' account and region.
pub fn function_key(function: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}")
}

/// An EventBridge `CloudWatch Alarm State Change` event for a DynamoDB throttle metric.
pub fn throttle_alarm_event(alarm: &str, state: &str, metric: &str, dimensions: Value) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": ACCOUNT,
        "time": chrono::Utc::now().to_rfc3339(),
        "region": REGION,
        "resources": [format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm}")],
        "detail": {
            "alarmName": alarm,
            "state": {"value": state, "reason": "Threshold Crossed: 1 datapoint [42.0] was greater than or equal to the threshold (1.0).",
                      "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()},
            "previousState": {"value": if state == "OK" { "ALARM" } else { "OK" }, "reason": "",
                              "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()},
            "configuration": {"metrics": [{
                "id": "m1", "returnData": true,
                "metricStat": {"period": 60, "stat": "Sum",
                               "metric": {"namespace": "AWS/DynamoDB", "name": metric, "dimensions": dimensions}}
            }]}
        }
    })
}

/// Reads an events/ file, replacing every `from` with `to` (so tests use their own names).
pub fn event_file(name: &str, replacements: &[(&str, &str)]) -> Value {
    let path = crate::workspace_root().join("events").join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A source queue and its dead-letter queue (maxReceiveCount 1), both named `<prefix>-…`.
pub struct QueuePair {
    pub source: SqsQueue,
    pub dlq: SqsQueue,
}

#[derive(Clone, Debug)]
pub struct SqsQueue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> SqsQueue {
    let mut create = sqs.create_queue().queue_name(name);
    for (key, value) in attributes {
        create = create.attributes(key.clone(), value);
    }
    let url = create
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    SqsQueue {
        name: name.to_string(),
        url,
        arn,
    }
}

impl QueuePair {
    pub async fn create(sqs: &aws_sdk_sqs::Client, prefix: &str, fifo: bool) -> Self {
        Self::create_with(sqs, prefix, fifo, 1).await
    }

    /// With the source's maxReceiveCount set (a high one lets tests read the source freely).
    pub async fn create_with(
        sqs: &aws_sdk_sqs::Client,
        prefix: &str,
        fifo: bool,
        max_receive_count: u32,
    ) -> Self {
        let base = crate::unique(prefix);
        let suffix = if fifo { ".fifo" } else { "" };
        let fifo_attributes = || {
            if fifo {
                vec![(QueueAttributeName::FifoQueue, "true".to_string())]
            } else {
                vec![]
            }
        };
        let dlq = create_queue(sqs, &format!("{base}-dlq{suffix}"), &fifo_attributes()).await;
        let source = Self::source_with(
            sqs,
            &format!("{base}{suffix}"),
            &dlq,
            fifo,
            max_receive_count,
        )
        .await;
        Self { source, dlq }
    }

    /// Another source queue (maxReceiveCount 1) whose RedrivePolicy points at `dlq`.
    pub async fn source_of(
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        dlq: &SqsQueue,
        fifo: bool,
    ) -> SqsQueue {
        Self::source_with(sqs, name, dlq, fifo, 1).await
    }

    async fn source_with(
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        dlq: &SqsQueue,
        fifo: bool,
        max_receive_count: u32,
    ) -> SqsQueue {
        let mut attributes = vec![(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": max_receive_count})
                .to_string(),
        )];
        if fifo {
            attributes.push((QueueAttributeName::FifoQueue, "true".to_string()));
        }
        create_queue(sqs, name, &attributes).await
    }
}

/// Sends `bodies` to the queue in batches (FIFO: `group` as the group, a unique deduplication
/// id each), with `attributes` as string message attributes on every message.
pub async fn send_messages(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
    bodies: &[String],
    group: Option<&str>,
    attributes: &[(&str, &str)],
) {
    for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(index, body)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(format!("m{index}"))
                    .message_body(body);
                for (name, value) in attributes {
                    entry = entry.message_attributes(
                        *name,
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(*value)
                            .build()
                            .expect("attribute"),
                    );
                }
                if let Some(group) = group {
                    entry = entry
                        .message_group_id(group)
                        .message_deduplication_id(format!(
                            "{group}-{chunk_index}-{index}-{}",
                            uuid::Uuid::new_v4().simple()
                        ));
                }
                entry.build().expect("entry")
            })
            .collect();
        let output = sqs
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send batch");
        assert!(output.failed().is_empty(), "{:?}", output.failed());
    }
}

/// Moves every visible message of a source into its DLQ the way SQS does: receive it
/// maxReceiveCount (1) times without deleting it, then receive again.
pub async fn fail_all(sqs: &aws_sdk_sqs::Client, source: &SqsQueue) {
    for _ in 0..1_000 {
        let received = sqs
            .receive_message()
            .queue_url(&source.url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
        if received.messages().is_empty() && depth(sqs, source).await == 0 {
            return;
        }
    }
    panic!("{} did not drain into its DLQ", source.name);
}

/// Visible + in flight.
pub async fn depth(sqs: &aws_sdk_sqs::Client, queue: &SqsQueue) -> i64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    let number = |key| {
        attributes
            .get(&key)
            .and_then(|v: &String| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    number(QueueAttributeName::ApproximateNumberOfMessages)
        + number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

/// Every visible message of a queue (read, then made visible again), in the order received.
/// Each read counts as a receive: on a queue with a RedrivePolicy, a second look fails them.
/// FIFO queues show only the groups not in flight: drain those with `drain_all`.
pub async fn peek_all(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        if received.messages().is_empty() {
            break;
        }
        all.extend(received.messages.unwrap_or_default());
    }
    for message in &all {
        if let Some(receipt) = message.receipt_handle() {
            let _ = sqs
                .change_message_visibility()
                .queue_url(&queue.url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
    all
}

/// Receives and deletes every message of a queue, in the order received (FIFO: group order).
pub async fn drain_all(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for message in &messages {
            sqs.delete_message()
                .queue_url(&queue.url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
        all.extend(messages);
    }
}

/// An EventBridge alarm state change for a queue depth alarm.
pub fn queue_alarm_event(alarm: &str, state: &str, queue: &str) -> Value {
    let mut event = throttle_alarm_event(
        alarm,
        state,
        "ApproximateNumberOfMessagesVisible",
        json!({"QueueName": queue}),
    );
    event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["namespace"] =
        json!("AWS/SQS");
    event
}

/// An EventBridge Scheduled Event.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": chrono::Utc::now().to_rfc3339(),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/runbook-schedule")],
        "detail": {}
    })
}

/// A CloudFormation stack with one SQS queue, created complete.
pub async fn create_stack(
    cloudformation: &aws_sdk_cloudformation::Client,
    name: &str,
    resources: Value,
) -> String {
    cloudformation
        .create_stack()
        .stack_name(name)
        .template_body(json!({"Resources": resources}).to_string())
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .expect("create stack")
        .stack_id
        .expect("stack id")
}

/// A Lambda function (moto needs its execution role to exist: a stack creates it).
pub async fn create_function(moto: &crate::moto::Moto, name: &str) -> String {
    let role = format!("{name}-role");
    create_stack(
        &moto.cloudformation(),
        &format!("{name}-role-stack"),
        json!({"Role": {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": role,
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        }}}),
    )
    .await;
    let mut bytes = std::io::Cursor::new(Vec::new());
    {
        let mut archive = zip::ZipWriter::new(&mut bytes);
        archive
            .start_file(
                "bootstrap",
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored),
            )
            .expect("zip entry");
        std::io::Write::write_all(&mut archive, b"#!/bin/sh\n").expect("zip write");
        archive.finish().expect("zip");
    }
    moto.lambda()
        .create_function()
        .function_name(name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .role(format!("arn:aws:iam::{ACCOUNT}:role/{role}"))
        .handler("bootstrap")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_smithy_types::Blob::new(bytes.into_inner()))
                .build(),
        )
        .send()
        .await
        .expect("create function")
        .function_arn
        .expect("function arn")
}

/// A function just deployed: versions 1 and 2, and its alias `live` on `live_version`.
pub async fn create_deployed_function(moto: &crate::moto::Moto, name: &str, live_version: &str) {
    create_function(moto, name).await;
    let lambda = moto.lambda();
    assert_eq!(publish_version(&lambda, name).await, "1");
    assert_eq!(publish_version(&lambda, name).await, "2");
    lambda
        .create_alias()
        .function_name(name)
        .name("live")
        .function_version(live_version)
        .send()
        .await
        .expect("alias");
}

/// Publishes a new version of the function (after changing its description, as a deploy
/// would) and returns its number.
pub async fn publish_version(lambda: &aws_sdk_lambda::Client, function: &str) -> String {
    lambda
        .update_function_configuration()
        .function_name(function)
        .description(format!("deploy {}", uuid::Uuid::new_v4()))
        .send()
        .await
        .expect("update description");
    lambda
        .publish_version()
        .function_name(function)
        .send()
        .await
        .expect("publish version")
        .version
        .expect("version")
}

/// Records `Duration` datapoints (milliseconds) for the function half a minute ago, as Lambda
/// would: the evidence lambda-resources reads before raising a timeout.
pub async fn put_durations(function: &str, values_ms: &[f64]) {
    let mut put = crate::moto::moto()
        .cloudwatch()
        .put_metric_data()
        .namespace("AWS/Lambda");
    for value in values_ms {
        put = put.metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name("Duration")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("FunctionName")
                        .value(function)
                        .build(),
                )
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - 30,
                ))
                .unit(aws_sdk_cloudwatch::types::StandardUnit::Milliseconds)
                .value(*value)
                .build(),
        );
    }
    put.send().await.expect("put durations");
}

/// An EventBridge alarm state change for an AWS/Lambda metric of a function (and alias).
pub fn lambda_alarm_event(
    alarm: &str,
    state: &str,
    metric: &str,
    function: &str,
    alias: Option<&str>,
) -> Value {
    let mut dimensions = json!({"FunctionName": function});
    if let Some(alias) = alias {
        dimensions["Resource"] = json!(format!("{function}:{alias}"));
    }
    let mut event = throttle_alarm_event(alarm, state, metric, dimensions);
    event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["namespace"] =
        json!("AWS/Lambda");
    event
}

/// Puts a stack in `status` through the moto front's control endpoint (not an AWS API).
pub async fn set_stack_status(
    moto: &crate::moto::Moto,
    stack: &str,
    status: &str,
    failing: Option<(&str, &str)>,
    minutes_ago: i64,
) {
    moto.control(
        "/_front/cloudformation/stack-status",
        json!({
            "stack": stack, "status": status, "minutes_ago": minutes_ago,
            "resource": failing.map(|(resource, _)| resource), "reason": failing.map(|(_, reason)| reason),
        }),
    )
    .await;
}
