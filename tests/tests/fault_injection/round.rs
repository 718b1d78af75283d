//! One round of the run: fresh resources for every events/ file, refilled before each DLQ
//! event, and the state of all of them read before and after each invocation.

use super::*;

/// One round's resources, every one in a state its runbook acts on.
pub(super) struct Round {
    pub(super) base: String,
    pub(super) pair: QueuePair,
    /// The HTTP API in front of the worker (moto chooses its id).
    pub(super) http_api: String,
}

impl Round {
    pub(super) fn api(&self) -> String {
        format!("{}-api", self.base)
    }

    pub(super) fn worker(&self) -> String {
        format!("{}-worker", self.base)
    }

    pub(super) fn limits(&self) -> String {
        format!("{}-limits", self.base)
    }

    /// Fails 10 more messages (ids `batch`-0…9) into the DLQ when it holds fewer than 10, so
    /// that every DLQ event has something to inspect, redrive or purge; whether it did.
    pub(super) async fn refill(&self, moto: &Moto, batch: usize) -> bool {
        let sqs = moto.sqs();
        if all_messages(&sqs, &self.pair.dlq.url).await >= 10 {
            return false;
        }
        let bodies: Vec<String> = (0..10)
            .map(|i| json!({"id": format!("{batch}-{i}"), "type": "order.created"}).to_string())
            .collect();
        send_messages(&sqs, &self.pair.source, &bodies, None, &[("tenant", "42")]).await;
        fail_all(&sqs, &self.pair.source).await;
        true
    }

    pub(super) async fn create(moto: &Moto, index: usize) -> Self {
        let sqs = moto.sqs();
        let pair = QueuePair::create_with(&sqs, &format!("managed-fault{index}"), false, 1).await;
        let base = pair.source.name.clone();
        // The REST API `<base>-api` in front of the aliased function (what api-errors' REST
        // events name), the HTTP API in front of the worker, whose table is the round's.
        rest_api(
            moto,
            &format!("{base}-api"),
            &lambda_uri(&function_arn(
                &format!("{base}-api"),
                Some("${stageVariables.alias}"),
            )),
            json!({"alias": "live"}),
        );
        let http_api = http_api(
            moto,
            &format!("{base}-http"),
            &function_arn(&format!("{base}-worker"), None),
        );
        let round = Self {
            base,
            pair,
            http_api,
        };
        TableSpec {
            name: round.base.clone(),
            capacity: Some((5, 5)),
            with_index: true,
            tagged_managed: false,
        }
        .create(&moto.dynamodb())
        .await;
        create_limits_table(&moto.dynamodb(), &round.limits(), 100).await;
        create_deployed_function(moto, &round.api(), "2").await;
        create_function(moto, &round.worker()).await;
        set_environment(moto, &round.worker(), &[("ORDERS_TABLE", &round.base)]).await;
        let alias = format!("{}:live", round.api());
        let api = round.api();
        let alias_dimensions = [("FunctionName", api.as_str()), ("Resource", alias.as_str())];
        put_metric(moto, "AWS/Lambda", "Errors", &alias_dimensions, 3.0, 30).await;
        runbook_tests::fixtures::alarm_in_state_on(
            moto,
            &format!("{}-prod-5xx", round.api()),
            aws_sdk_cloudwatch::types::StateValue::Alarm,
        )
        .await;
        let table = [("TableName", round.base.as_str())];
        put_metric(
            moto,
            "AWS/DynamoDB",
            "WriteThrottleEvents",
            &table,
            12.0,
            30,
        )
        .await;
        moto.lambda()
            .put_function_concurrency()
            .function_name(round.worker())
            .reserved_concurrent_executions(10)
            .send()
            .await
            .expect("reserve");
        round.refill(moto, 0).await;
        create_stack(
            &moto.cloudformation(),
            &round.base,
            json!({"Q": {"Type": "AWS::SQS::Queue"}}),
        )
        .await;
        moto.control(
            "/_front/cloudformation/stack-status",
            json!({"stack": round.base, "status": "UPDATE_ROLLBACK_FAILED", "resource": "OrdersTable", "reason": "throttled"}),
        )
        .await;
        moto.cloudwatch()
            .put_metric_alarm()
            .alarm_name(format!("{}-live-errors", round.api()))
            .namespace("AWS/Lambda")
            .metric_name("Errors")
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("FunctionName")
                    .value(round.api())
                    .build(),
            )
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .send()
            .await
            .expect("alarm");
        let mut durations = moto.cloudwatch().put_metric_data().namespace("AWS/Lambda");
        for function in [round.api(), round.worker()] {
            durations = durations.metric_data(
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
                    .value(2_950.0)
                    .build(),
            );
        }
        durations.send().await.expect("durations");
        round
    }

    /// What any runbook could change, read back from moto: the reads at once, but the DLQ's,
    /// whose sample (received, then made visible again) would move its counts.
    pub(super) async fn state(&self, moto: &Moto) -> BTreeMap<&'static str, Value> {
        let dynamodb = moto.dynamodb();
        let lambda = moto.lambda();
        let sqs = moto.sqs();
        let config = |function: String| {
            let lambda = lambda.clone();
            async move {
                let config = lambda
                    .get_function_configuration()
                    .function_name(function)
                    .send()
                    .await
                    .expect("configuration");
                json!({"timeout_seconds": config.timeout(), "memory_mb": config.memory_size()})
            }
        };
        let reserved = |function: String| {
            let lambda = lambda.clone();
            async move {
                lambda
                    .get_function_concurrency()
                    .function_name(function)
                    .send()
                    .await
                    .expect("concurrency")
                    .reserved_concurrent_executions()
            }
        };
        let alias = async {
            lambda
                .get_alias()
                .function_name(self.api())
                .name("live")
                .send()
                .await
                .expect("alias")
                .function_version()
                .map(str::to_string)
        };
        let limit = async {
            dynamodb
                .get_item()
                .table_name(self.limits())
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()),
                )
                .send()
                .await
                .expect("limit")
                .item()
                .and_then(|item| item.get("requests_per_second"))
                .and_then(|value| value.as_n().ok())
                .and_then(|value| value.parse::<f64>().ok())
        };
        let stack = async {
            moto.cloudformation()
                .describe_stacks()
                .stack_name(&self.base)
                .send()
                .await
                .expect("stack")
                .stacks()[0]
                .stack_status()
                .map(|s| s.as_str().to_string())
        };
        let backups = async {
            let mut backups: Vec<String> = dynamodb
                .list_backups()
                .table_name(&self.base)
                .send()
                .await
                .expect("backups")
                .backup_summaries()
                .iter()
                .filter_map(|backup| backup.backup_name().map(str::to_string))
                .collect();
            backups.sort();
            backups
        };
        let dlq = async {
            // In flight before or after the peek: a message that came back in between was in
            // flight, and missing from the ids, when the peek ran.
            let in_flight_before = in_flight(&sqs, &self.pair.dlq.url).await;
            let ids: Vec<String> = peek_all(&sqs, &self.pair.dlq)
                .await
                .iter()
                .filter_map(|m| serde_json::from_str::<Value>(m.body()?).ok())
                .filter_map(|body| body["id"].as_str().map(str::to_string))
                .collect();
            let all = all_messages(&sqs, &self.pair.dlq.url).await;
            let in_flight_after = in_flight(&sqs, &self.pair.dlq.url).await;
            (ids, all, in_flight_before.max(in_flight_after))
        };
        let (
            (alias, worker_reserved, api_reserved, limit, billing, stack),
            (backups, table, index, api, worker, source),
            (dlq_ids, dlq, dlq_in_flight),
        ) = tokio::join!(
            async {
                tokio::join!(
                    alias,
                    reserved(self.worker()),
                    reserved(self.api()),
                    limit,
                    runbook_tests::fixtures::billing_mode(&dynamodb, &self.base),
                    stack,
                )
            },
            async {
                tokio::join!(
                    backups,
                    capacity(&dynamodb, &self.base, None),
                    capacity(&dynamodb, &self.base, Some("by-customer")),
                    config(self.api()),
                    config(self.worker()),
                    all_messages(&sqs, &self.pair.source.url),
                )
            },
            dlq,
        );
        BTreeMap::from([
            (
                "table",
                json!({"billing_mode": billing, "read": table.0, "write": table.1}),
            ),
            (
                "index",
                json!({"billing_mode": billing, "read": index.0, "write": index.1}),
            ),
            ("limit", json!(limit)),
            ("backups", json!(backups)),
            ("alias", json!(alias)),
            ("api", api),
            ("worker", worker),
            ("worker_reserved", json!(worker_reserved)),
            ("api_reserved", json!(api_reserved)),
            ("dlq", json!(dlq)),
            ("dlq_ids", json!(dlq_ids)),
            ("dlq_in_flight", json!(dlq_in_flight)),
            ("source", json!(source)),
            ("stack", json!(stack)),
        ])
    }
}

/// In flight (received and not yet deleted or made visible again).
pub(super) async fn in_flight(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
    use aws_sdk_sqs::types::QueueAttributeName as Name;
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| {
            a.get(&Name::ApproximateNumberOfMessagesNotVisible)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Visible, in flight and delayed.
pub(super) async fn all_messages(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
    use aws_sdk_sqs::types::QueueAttributeName as Name;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Name::All)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    [
        Name::ApproximateNumberOfMessages,
        Name::ApproximateNumberOfMessagesNotVisible,
        Name::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .filter_map(|name| attributes.get(name)?.parse::<i64>().ok())
    .sum()
}
