//! Resources and events for the tests, in the shapes AWS produces.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, Tag, TimeToLiveSpecification,
};
use serde_json::{Value, json};

use crate::moto::{ACCOUNT, REGION};

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
