//! "Handles AWS faults" as a figure: every file in events/ goes through its function binary,
//! round after round on fresh resources, while the moto front answers 10% of the functions'
//! AWS calls with throttling, 500, 503 or a connection reset (FRONT_FAULTS). For every
//! invocation: the function answered before its deadline; the outcome is one of the six, and a
//! failure says what and where; moto holds exactly what the report says was applied; a redrive
//! lost no message. The figure is printed (and quoted in the README).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runbook_tests::deploy::{
    ALARM_RESPONDER, DLQ_REDRIVER, DeployRequest, HEALTH_PROBER, LIMIT_SCALER,
};
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, TableSpec, capacity, create_deployed_function, create_function, create_limits_table,
    create_stack, event_file, fail_all, peek_all, send_messages,
};
use runbook_tests::moto::Moto;
use runbook_tests::runtime::{Invoked, LambdaProcess, binary};
use serde_json::{Value, json};

const ROUNDS: usize = 8;
const ROUNDS_AT_ONCE: usize = 4;
const FAULT_RATE: &str = "rate=0.1,seed=7";
const OUTCOMES: [&str; 6] = [
    "remediated",
    "planned",
    "no_action",
    "skipped",
    "rejected",
    "failed",
];

/// The files in events/ and the function each is for (a schedule goes to every function).
fn files() -> Vec<(&'static str, &'static str)> {
    let mut files = vec![];
    for file in [
        "dynamodb-throttle-alarm.json",
        "dynamodb-throttle-alarm-action.json",
        "dynamodb-gsi-throttle-alarm.json",
        "dynamodb-throttle-ok.json",
        "lambda-throttles-alarm.json",
        "manual-dynamodb-capacity-dry-run.json",
        "manual-dynamodb-capacity.json",
        "manual-dynamodb-on-demand-dry-run.json",
        "manual-lambda-concurrency-dry-run.json",
        "manual-stored-limit.json",
    ] {
        files.push((file, "limit-scaler"));
    }
    for file in [
        "sqs-dlq-alarm.json",
        "sqs-dlq-alarm-action.json",
        "manual-dlq-inspect.json",
        "manual-dlq-redrive-dry-run.json",
        "manual-dlq-redrive.json",
    ] {
        files.push((file, "dlq-redriver"));
    }
    for file in [
        "lambda-errors-alarm.json",
        "lambda-errors-ok.json",
        "lambda-duration-alarm-action.json",
        "manual-lambda-resources.json",
        "manual-lambda-rollback-dry-run.json",
        "manual-alarm-replay.json",
        "cloudformation-stack-status-change.json",
        "manual-stack-recovery.json",
        "manual-health-probes.json",
    ] {
        let function = if file == "manual-health-probes.json" {
            "health-prober"
        } else {
            "alarm-responder"
        };
        files.push((file, function));
    }
    for function in [
        "limit-scaler",
        "dlq-redriver",
        "alarm-responder",
        "health-prober",
    ] {
        files.push(("scheduled-event.json", function));
    }
    // Last: it empties the DLQ.
    files.push(("manual-dlq-purge.json", "dlq-redriver"));
    files
}

/// One round's resources, every one in a state its runbook acts on.
struct Round {
    base: String,
    pair: QueuePair,
}

impl Round {
    fn api(&self) -> String {
        format!("{}-api", self.base)
    }

    fn worker(&self) -> String {
        format!("{}-worker", self.base)
    }

    fn limits(&self) -> String {
        format!("{}-limits", self.base)
    }

    /// Fails 10 more messages (ids `batch`-0…9) into the DLQ when it holds fewer than 10, so
    /// that every DLQ event has something to inspect, redrive or purge.
    async fn refill(&self, moto: &Moto, batch: usize) {
        let sqs = moto.sqs();
        if all_messages(&sqs, &self.pair.dlq.url).await >= 10 {
            return;
        }
        let bodies: Vec<String> = (0..10)
            .map(|i| json!({"id": format!("{batch}-{i}"), "type": "order.created"}).to_string())
            .collect();
        send_messages(&sqs, &self.pair.source, &bodies, None, &[("tenant", "42")]).await;
        fail_all(&sqs, &self.pair.source).await;
    }

    async fn create(moto: &Moto, index: usize) -> Self {
        let sqs = moto.sqs();
        let pair = QueuePair::create_with(&sqs, &format!("managed-fault{index}"), false, 1).await;
        let round = Self {
            base: pair.source.name.clone(),
            pair,
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

    /// What any runbook could change, read back from moto.
    async fn state(&self, moto: &Moto) -> BTreeMap<&'static str, Value> {
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
        let alias = lambda
            .get_alias()
            .function_name(self.api())
            .name("live")
            .send()
            .await
            .expect("alias");
        let reserved = lambda
            .get_function_concurrency()
            .function_name(self.worker())
            .send()
            .await
            .expect("concurrency")
            .reserved_concurrent_executions();
        let limit = dynamodb
            .get_item()
            .table_name(self.limits())
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()),
            )
            .send()
            .await
            .expect("limit");
        let billing = runbook_tests::fixtures::billing_mode(&dynamodb, &self.base).await;
        let stack = moto
            .cloudformation()
            .describe_stacks()
            .stack_name(&self.base)
            .send()
            .await
            .expect("stack");
        let api_reserved = lambda
            .get_function_concurrency()
            .function_name(self.api())
            .send()
            .await
            .expect("concurrency")
            .reserved_concurrent_executions();
        let dlq_ids: Vec<String> = peek_all(&sqs, &self.pair.dlq)
            .await
            .iter()
            .filter_map(|m| serde_json::from_str::<Value>(m.body()?).ok())
            .filter_map(|body| body["id"].as_str().map(str::to_string))
            .collect();
        let table = capacity(&dynamodb, &self.base, None).await;
        let index = capacity(&dynamodb, &self.base, Some("by-customer")).await;
        BTreeMap::from([
            (
                "table",
                json!({"billing_mode": billing, "read": table.0, "write": table.1}),
            ),
            (
                "index",
                json!({"billing_mode": billing, "read": index.0, "write": index.1}),
            ),
            (
                "limit",
                json!(
                    limit
                        .item()
                        .and_then(|item| item.get("requests_per_second"))
                        .and_then(|value| value.as_n().ok())
                        .and_then(|value| value.parse::<f64>().ok())
                ),
            ),
            ("alias", json!(alias.function_version())),
            ("api", config(self.api()).await),
            ("worker", config(self.worker()).await),
            ("worker_reserved", json!(reserved)),
            ("api_reserved", json!(api_reserved)),
            ("dlq", json!(all_messages(&sqs, &self.pair.dlq.url).await)),
            ("dlq_ids", json!(dlq_ids)),
            (
                "dlq_in_flight",
                json!(in_flight(&sqs, &self.pair.dlq.url).await),
            ),
            (
                "source",
                json!(all_messages(&sqs, &self.pair.source.url).await),
            ),
            (
                "stack",
                json!(
                    stack.stacks()[0]
                        .stack_status()
                        .map(|s| s.as_str().to_string())
                ),
            ),
        ])
    }
}

/// In flight (received and not yet deleted or made visible again).
async fn in_flight(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
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
async fn all_messages(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
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

/// Which parts of the state an applied action may change, and what they must show after it.
fn expected_change(round: &Round, action: &Value, changed: &mut BTreeMap<&'static str, Value>) {
    let target = action["target"].as_str().unwrap_or_default();
    let after = &action["after"];
    match action["api"].as_str().unwrap_or_default() {
        "dynamodb:UpdateTable" if target.ends_with("/index/by-customer") => {
            changed.insert("index", after.clone());
        }
        "dynamodb:UpdateTable" => {
            changed.insert("table", after.clone());
        }
        "dynamodb:UpdateItem" => {
            changed.insert("limit", after["value"].clone());
        }
        "lambda:PutFunctionConcurrency" => {
            let key = if target == round.api() {
                "api_reserved"
            } else {
                "worker_reserved"
            };
            changed.insert(key, after["reserved_concurrency"].clone());
        }
        "lambda:UpdateAlias" => {
            changed.insert("alias", after["version"].clone());
        }
        "lambda:UpdateFunctionConfiguration" => {
            let key = if target == round.api() {
                "api"
            } else {
                "worker"
            };
            changed.insert(key, after.clone());
        }
        api if api.starts_with("cloudformation:") => {
            // Recovered: out of the failed state it was in.
            changed.insert("stack", json!({"recovered": true}));
        }
        "sqs:PurgeQueue" => {
            changed.insert("dlq", json!(0));
            changed.insert("dlq_ids", json!([]));
            changed.insert("dlq_in_flight", Value::Null);
        }
        api if api.starts_with("sqs:") => {
            for part in ["dlq", "dlq_ids", "dlq_in_flight", "source"] {
                changed.insert(part, Value::Null);
            }
        }
        other => panic!("the test does not know what {other} changes"),
    }
}

/// Every part an applied action changed shows its `after` (fields it names); every other part
/// is as it was; and no message was lost.
fn mismatches(
    round: &Round,
    before: &BTreeMap<&'static str, Value>,
    after: &BTreeMap<&'static str, Value>,
    reports: &[Value],
) -> Vec<String> {
    let mut changed = BTreeMap::new();
    let mut moved = 0;
    let mut purged = false;
    for report in reports {
        for action in report["actions"].as_array().into_iter().flatten() {
            if action["applied"] == json!(true) {
                expected_change(round, action, &mut changed);
                moved += action["after"]["accepted"].as_i64().unwrap_or(0);
                purged |= action["api"] == "sqs:PurgeQueue";
            }
        }
    }
    let mut found = Vec::new();
    for (part, was) in before {
        let now = &after[part];
        match changed.get(part) {
            // A sample or an inspection leaves messages in flight for a moment: no change.
            None if *part == "dlq_in_flight"
                || (*part == "dlq_ids" && after["dlq_in_flight"] != json!(0)) => {}
            None if now != was => found.push(format!(
                "{part} changed from {was} to {now}, and no report says so"
            )),
            Some(expected)
                if *part == "stack" && expected["recovered"] == json!(true) && now == was =>
            {
                found.push(format!(
                    "the stack is still {now} but the report says it acted"
                ));
            }
            Some(_) if *part == "stack" => {}
            Some(Value::Object(fields)) => {
                for (field, value) in fields {
                    if !value.is_null() && &now[field] != value {
                        found.push(format!(
                            "{part}.{field} is {} but the report says {value}",
                            now[field]
                        ));
                    }
                }
            }
            Some(value) if !value.is_null() && now != value => {
                found.push(format!("{part} is {now} but the report says {value}"));
            }
            _ => {}
        }
    }
    let total = |state: &BTreeMap<&'static str, Value>| {
        state["dlq"].as_i64().unwrap_or(0) + state["source"].as_i64().unwrap_or(0)
    };
    if !purged && total(after) < total(before) {
        found.push(format!(
            "messages lost: {} before, {} after",
            total(before),
            total(after)
        ));
    }
    let into_source =
        after["source"].as_i64().unwrap_or(0) - before["source"].as_i64().unwrap_or(0);
    if into_source != moved {
        found.push(format!(
            "{into_source} messages reached the source, the reports say {moved}"
        ));
    }
    // Every message that left the DLQ reached the source (or is still in flight in the DLQ).
    let ids = |state: &BTreeMap<&'static str, Value>| -> std::collections::BTreeSet<String> {
        state["dlq_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect()
    };
    let left = ids(before).difference(&ids(after)).count() as i64;
    let in_flight = after["dlq_in_flight"].as_i64().unwrap_or(0);
    if !purged && left > moved + in_flight {
        found.push(format!(
            "{left} messages left the DLQ, {moved} reached the source, {in_flight} are in flight: some were lost"
        ));
    }
    found
}

#[derive(Default, Debug)]
struct Figure {
    invocations: usize,
    faults: u64,
    recovered: usize,
    failed: usize,
    failed_reasons: Vec<String>,
    crashes: Vec<String>,
    mismatches: Vec<String>,
    unexplained: Vec<String>,
}

fn faults_of(counts: &Value, key: &str) -> u64 {
    counts[key]
        .as_object()
        .map_or(0, |kinds| kinds.values().filter_map(Value::as_u64).sum())
}

async fn run_round(moto: &Moto, endpoints: &Endpoints, index: usize) -> Figure {
    let round = Round::create(moto, index).await;
    let deployment = moto
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "managed-*"),
                ("LimitsTable", round.limits().as_str()),
            ],
            ..Default::default()
        })
        .await;
    let mut processes = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for (name, logical, extra) in [
        (
            "limit-scaler",
            LIMIT_SCALER,
            vec![
                ("LIMITS_TABLE", round.limits()),
                ("LIMITS_VALUE_ATTRS", "requests_per_second".to_string()),
                ("SCALE_DOWN_AFTER_HOURS", "0".to_string()),
            ],
        ),
        (
            "dlq-redriver",
            DLQ_REDRIVER,
            vec![
                ("REDRIVE_ON_ALARM", "true".to_string()),
                ("DLQ_QUEUES", round.pair.dlq.name.clone()),
                ("REDRIVE_RATE_PER_SECOND", "1000".to_string()),
            ],
        ),
        ("alarm-responder", ALARM_RESPONDER, vec![]),
        (
            "health-prober",
            HEALTH_PROBER,
            vec![("VERIFICATION_WINDOW_MINUTES", "1".to_string())],
        ),
    ] {
        let mut env = deployment.function_env(moto, logical);
        env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
        env.push(("COOLDOWN_SECONDS".into(), "0".into()));
        env.push(("MAX_ACTIONS_PER_HOUR".into(), "1000".into()));
        env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        keys.insert(
            name,
            env.iter()
                .find(|(k, _)| k == "AWS_ACCESS_KEY_ID")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
        let mut process = LambdaProcess::start(&binary(name), &env).await;
        process.timeout = Duration::from_secs(30);
        processes.insert(name, process);
    }
    let mut figure = Figure::default();
    let names = [
        ("orders", round.base.as_str()),
        (
            "https://orders.example.com/health",
            endpoints.url("/health").leak(),
        ),
    ];
    for (batch, (file, function)) in files().into_iter().enumerate() {
        if function == "dlq-redriver" {
            round.refill(moto, batch + 1).await;
        }
        let event = event_file(file, &names);
        let before = round.state(moto).await;
        let faults_before = faults_of(&moto.faults().await, &keys[function]);
        let process = processes.get_mut(function).expect("process");
        let answer = process.invoke(&event).await;
        figure.invocations += 1;
        let output = match answer {
            Invoked::Response(output) => output,
            other => {
                figure
                    .crashes
                    .push(format!("round {index}, {function} with {file}: {other:?}"));
                continue;
            }
        };
        let faults = faults_of(&moto.faults().await, &keys[function]) - faults_before;
        figure.faults += faults;
        let reports: Vec<Value> = match output.get("reports") {
            Some(reports) => reports.as_array().cloned().unwrap_or_default(),
            None if output.get("probes").is_some() => vec![],
            None => vec![output.clone()],
        };
        let failed = reports.iter().any(|r| r["outcome"] == "failed");
        figure.failed += usize::from(failed);
        figure.failed_reasons.extend(
            reports
                .iter()
                .filter(|r| r["outcome"] == "failed")
                .map(|r| format!("{function} with {file}: {}", r["reason"])),
        );
        if faults > 0 && !failed {
            figure.recovered += 1;
        }
        for report in &reports {
            let outcome = report["outcome"].as_str().unwrap_or_default();
            let reason = report["reason"].as_str().unwrap_or_default();
            let says_where = reason.contains(':') && reason.len() > 20;
            if !OUTCOMES.contains(&outcome) || (outcome == "failed" && !says_where) {
                figure
                    .unexplained
                    .push(format!("round {index}, {function} with {file}: {report}"));
            }
        }
        let after = round.state(moto).await;
        for found in mismatches(&round, &before, &after, &reports) {
            figure.mismatches.push(format!(
                "round {index}, {function} with {file}: {found}; {output}"
            ));
        }
    }
    for (_, process) in processes {
        process.stop().await;
    }
    figure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_never_crash_a_function_lie_about_a_change_or_lose_a_message() {
    let moto = runbook_tests::moto::start(&[("FRONT_FAULTS", FAULT_RATE)]).expect("moto front");
    let endpoints = Endpoints::start().await;
    let started = Instant::now();
    let mut figure = Figure::default();
    for batch in (0..ROUNDS).collect::<Vec<_>>().chunks(ROUNDS_AT_ONCE) {
        let rounds = batch
            .iter()
            .map(|index| run_round(&moto, &endpoints, *index));
        for round in futures_util::future::join_all(rounds).await {
            figure.invocations += round.invocations;
            figure.faults += round.faults;
            figure.recovered += round.recovered;
            figure.failed += round.failed;
            figure.failed_reasons.extend(round.failed_reasons);
            figure.crashes.extend(round.crashes);
            figure.mismatches.extend(round.mismatches);
            figure.unexplained.extend(round.unexplained);
        }
    }
    println!(
        "fault injection ({FAULT_RATE}): {} invocations, {} faults injected, {} invocations recovered by retry, {} with a failed report, {} crashes or hangs, {} mismatches between reports and moto, {:.0} s",
        figure.invocations,
        figure.faults,
        figure.recovered,
        figure.failed,
        figure.crashes.len(),
        figure.mismatches.len(),
        started.elapsed().as_secs_f64()
    );
    for reason in &figure.failed_reasons {
        println!("  failed: {reason}");
    }
    assert!(figure.invocations >= 200, "{figure:?}");
    assert!(
        figure.faults > 50,
        "the fault mode injected too little: {figure:?}"
    );
    assert!(figure.crashes.is_empty(), "{:#?}", figure.crashes);
    assert!(figure.unexplained.is_empty(), "{:#?}", figure.unexplained);
    assert!(figure.mismatches.is_empty(), "{:#?}", figure.mismatches);
}
