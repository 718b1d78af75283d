//! The local demo: every runbook against the emulator, through the real function binaries,
//! printing the reports. Run it with scripts/demo.sh.

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, TableSpec, alarm_in_state_on, api_alarm_event, capacity, create_audit_table,
    create_deployed_function, create_function, create_limits_table, create_stack, depth,
    event_file, fail_all, function_arn, handoffs_matching, lambda_alarm_event, lambda_uri,
    put_metric, queue_alarm_event, received_events, rest_api, scheduled_event, send_messages,
    set_environment, set_stack_status, throttle_alarm_event,
};
use runbook_tests::moto::Moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

fn heading(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

/// Prints the report: a summary an on-call engineer reads first, then the JSON.
fn show(report: &Value) {
    println!(
        "outcome: {}  ({})",
        report["outcome"].as_str().unwrap_or("?"),
        report["reason"].as_str().unwrap_or("")
    );
    for action in report["actions"].as_array().into_iter().flatten() {
        println!(
            "action:  {} on {}: {} -> {} (applied: {})",
            action["api"].as_str().unwrap_or(""),
            action["target"].as_str().unwrap_or(""),
            action["before"],
            action["after"],
            action["applied"]
        );
    }
    println!(
        "verify:  {}",
        report["verification"]["status"].as_str().unwrap_or("")
    );
    for check in report["verification"]["checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "         [{}] {}: expected {}, observed {}",
            if check["ok"] == json!(true) {
                "ok"
            } else {
                ".."
            },
            check["name"].as_str().unwrap_or(""),
            check["expected"].as_str().unwrap_or(""),
            check["observed"].as_str().unwrap_or("")
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

async fn function_process(
    moto: &Moto,
    name: &str,
    audit: &str,
    extra: &[(&str, &str)],
) -> LambdaProcess {
    let mut env = moto.function_env();
    env.push(("AUDIT_TABLE".into(), audit.into()));
    env.push(("DRY_RUN".into(), "false".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::start(&binary(name), &env).await
}

/// Returns the table it scaled.
// Over 80 lines: a demo scene, read top to bottom: set up, fire, show the report.
async fn limit_scaler(moto: &Moto, audit: &str) -> Result<String, Error> {
    let dynamodb = moto.dynamodb();
    let cloudwatch = moto.cloudwatch();
    let spec = TableSpec::provisioned("orders", 5, 5).tagged_managed();
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let alarm = format!("{table}-read-throttles");
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/DynamoDB")
        .metric_name("ReadThrottleEvents")
        .dimensions(Dimension::builder().name("TableName").value(&table).build())
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await?;
    // Reads peaked at 30 units per second in the last minutes: more than twice the 5 provisioned.
    cloudwatch
        .put_metric_data()
        .namespace("AWS/DynamoDB")
        .metric_data(
            MetricDatum::builder()
                .metric_name("ConsumedReadCapacityUnits")
                .dimensions(Dimension::builder().name("TableName").value(&table).build())
                .value(1800.0)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - 120,
                ))
                .build(),
        )
        .send()
        .await?;
    cloudwatch
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(StateValue::Alarm)
        .state_reason("Threshold Crossed: 212 read throttle events")
        .send()
        .await?;
    println!(
        "table {table} provisioned at read 5 / write 5 (tagged runbook:managed=true); alarm {alarm} is in ALARM"
    );

    let mut scaler = function_process(moto, "limit-scaler", audit, &[]).await;
    heading("limit-scaler / dynamodb-capacity: dry run first (manual payload)");
    show(
        &scaler
            .report(&json!({"table": table, "dry_run": true}))
            .await,
    );

    heading(
        "limit-scaler / dynamodb-capacity: the throttle alarm fires (EventBridge alarm state change)",
    );
    let fired = throttle_alarm_event(
        &alarm,
        "ALARM",
        "ReadThrottleEvents",
        json!({"TableName": table}),
    );
    show(&scaler.report(&fired).await);
    let (read, write) = capacity(&dynamodb, &table, None).await;
    println!("DescribeTable now says: read {read}, write {write}");

    heading(
        "limit-scaler / dynamodb-capacity: the same event delivered again (returns the first report, acts once)",
    );
    let again = scaler.report(&fired).await;
    println!(
        "outcome: {}, audit_id: {}",
        again["outcome"], again["audit_id"]
    );

    heading("limit-scaler / dynamodb-capacity: the alarm returns to OK (closes the verification)");
    cloudwatch
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(StateValue::Ok)
        .state_reason("Threshold Crossed: no throttle events")
        .send()
        .await?;
    let ok = throttle_alarm_event(
        &alarm,
        "OK",
        "ReadThrottleEvents",
        json!({"TableName": table}),
    );
    show(&scaler.report(&ok).await);

    heading("limit-scaler: a payload with a typo is rejected, and nothing is touched");
    show(&scaler.report(&json!({"table": table, "raed": 100})).await);
    scaler.stop().await;
    Ok(table)
}

async fn limit_scaler_other_limits(moto: &Moto, audit: &str) -> Result<(), Error> {
    let worker = runbook_tests::unique("orders-worker");
    create_function(moto, &worker).await;
    moto.lambda()
        .put_function_concurrency()
        .function_name(&worker)
        .reserved_concurrent_executions(10)
        .send()
        .await?;
    let limits = runbook_tests::unique("orders-limits");
    create_limits_table(&moto.dynamodb(), &limits, 100).await;
    println!(
        "\nfunction {worker} reserves 10 concurrent executions; {limits} stores tenant#42's requests_per_second = 100"
    );
    let extra = [
        ("MANAGED_RESOURCES", "function:orders-*,table:orders-*"),
        ("LIMITS_TABLE", limits.as_str()),
        ("LIMITS_VALUE_ATTRS", "requests_per_second"),
        // stored-limit waits for a person's approval; the other runbooks act.
        ("RUNBOOK_MODES", r#"{"stored-limit": "approve"}"#),
    ];
    let mut scaler = function_process(moto, "limit-scaler", audit, &extra).await;

    heading("limit-scaler / lambda-concurrency: the function's Throttles alarm fires");
    let throttles = lambda_alarm_event(
        &format!("{worker}-throttles"),
        "ALARM",
        "Throttles",
        &worker,
        None,
    );
    show(&scaler.report(&throttles).await);

    heading(
        "limit-scaler / stored-limit in approve mode: raise tenant#42's stored rate limit for an hour (the plan waits for a person)",
    );
    let raise = json!({"limit": {"key": "tenant#42", "attribute": "requests_per_second", "value": 200, "for_minutes": 60}});
    let asked = scaler.report(&raise).await;
    show(&asked);
    let plan_id = asked["approval"]["plan_id"].as_str().unwrap_or_default();
    let approve = json!({"approve": plan_id, "by": "alice", "reason": "tenant 42's launch"});
    heading(&format!(
        "limit-scaler: alice approves plan {plan_id} ({approve}): diagnosed again, the same state, applied once"
    ));
    show(&scaler.report(&approve).await);

    heading("limit-scaler: its schedule (nothing is due to go back yet)");
    println!("{}", scaler.report(&scheduled_event()).await);
    scaler.stop().await;
    Ok(())
}

/// Returns the DLQ it redrove.
async fn dlq_redriver(moto: &Moto, audit: &str) -> Result<String, Error> {
    let sqs = moto.sqs();
    let pair = QueuePair::create(&sqs, "payments", false).await;
    let bodies: Vec<String> = (0..25)
        .map(|i| json!({"id": format!("pay-{i}"), "type": "payment.settled"}).to_string())
        .collect();
    send_messages(&sqs, &pair.source, &bodies, None, &[("tenant", "42")]).await;
    // The consumer fails every message once: SQS moves them all to the DLQ (maxReceiveCount 1).
    fail_all(&sqs, &pair.source).await;
    // Two messages have been redriven three times already: poison.
    let poison: Vec<String> = (0..2)
        .map(|i| json!({"id": format!("poison-{i}")}).to_string())
        .collect();
    send_messages(&sqs, &pair.dlq, &poison, None, &[("redrive-count", "3")]).await;
    println!(
        "\nqueue {} failed 25 messages into its DLQ {} (which also holds 2 poison messages)",
        pair.source.name, pair.dlq.name
    );
    let managed = format!("queue:{}*", pair.source.name);
    let mut redriver = function_process(
        moto,
        "dlq-redriver",
        audit,
        &[("MANAGED_RESOURCES", managed.as_str())],
    )
    .await;

    heading(
        "dlq-redriver / dlq-redrive: the DLQ depth alarm fires (inspects: REDRIVE_ON_ALARM is false)",
    );
    let alarm = queue_alarm_event(
        &format!("{}-not-empty", pair.dlq.name),
        "ALARM",
        &pair.dlq.name,
    );
    let inspected = redriver.report(&alarm).await;
    show(&inspected);

    heading("dlq-redriver / dlq-redrive: redrive by hand (manual payload)");
    let redriven = redriver
        .report(&json!({"dlq": pair.dlq.name, "action": "redrive"}))
        .await;
    show(&redriven);
    println!(
        "DLQ depth now {}, source depth {}",
        depth(&sqs, &pair.dlq).await,
        depth(&sqs, &pair.source).await
    );

    heading("dlq-redriver / dlq-redrive: purge without the confirmation is refused");
    show(
        &redriver
            .report(&json!({"dlq": pair.dlq.name, "action": "purge"}))
            .await,
    );
    redriver.stop().await;
    Ok(pair.dlq.name)
}

// Over 80 lines: a demo scene, read top to bottom: set up, fire, show the report.
async fn alarm_responder(moto: &Moto, audit: &str) -> Result<(), Error> {
    let function = runbook_tests::unique("checkout-api");
    create_deployed_function(moto, &function, "2").await;
    let stack = runbook_tests::unique("checkout-stack");
    create_stack(
        &moto.cloudformation(),
        &stack,
        json!({"Queue": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    set_stack_status(
        moto,
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("OrdersTable", "Subscriber limit exceeded")),
        0,
    )
    .await;
    println!(
        "\nfunction {function}: versions 1 and 2 published, alias live on 2 (just deployed); stack {stack} stuck in UPDATE_ROLLBACK_FAILED"
    );
    let mut responder = function_process(
        moto,
        "alarm-responder",
        audit,
        &[(
            "MANAGED_RESOURCES",
            "function:checkout-*,stack:checkout-*,table:checkout-*",
        )],
    )
    .await;

    heading("alarm-responder / lambda-rollback: errors spike right after the deploy");
    let errors = lambda_alarm_event(
        &format!("{function}-live-errors"),
        "ALARM",
        "Errors",
        &function,
        Some("live"),
    );
    show(&responder.report(&errors).await);

    heading("alarm-responder / stack-recovery: the stack status change event");
    let mut event = event_file("cloudformation-stack-status-change.json", &[]);
    event["detail"]["stack-id"] = json!(stack);
    show(&responder.report(&event).await);

    heading("alarm-responder / dynamodb-backup: a backup before a risky migration, by hand");
    let orders = TableSpec::provisioned("checkout-orders", 5, 5)
        .create(&moto.dynamodb())
        .await;
    let backup = json!({"runbook": "dynamodb-backup", "table": orders});
    show(&responder.report(&backup).await);

    heading(
        "alarm-responder / api-errors: the orders API answers 5xx; the table behind it throttles",
    );
    let worker = runbook_tests::unique("checkout-orders-fn");
    create_function(moto, &worker).await;
    set_environment(moto, &worker, &[("ORDERS_TABLE", &orders)]).await;
    let api = runbook_tests::unique("checkout-api");
    rest_api(
        moto,
        &api,
        &lambda_uri(&function_arn(&worker, None)),
        json!({}),
    );
    put_metric(
        moto,
        "AWS/DynamoDB",
        "WriteThrottleEvents",
        &[("TableName", &orders)],
        40.0,
        60,
    )
    .await;
    let caught = handoffs_matching(moto, json!({"target": {"table": {"table": [orders]}}})).await;
    println!(
        "REST API {api}: GET /orders invokes {worker}, whose ORDERS_TABLE {orders} recorded 40 write throttle events a minute ago"
    );
    let alarm = format!("{api}-prod-5xx");
    alarm_in_state_on(moto, &alarm, StateValue::Alarm).await;
    show(
        &responder
            .report(&api_alarm_event(&alarm, "ALARM", true, &api))
            .await,
    );
    responder.stop().await;

    heading(
        "limit-scaler / dynamodb-capacity: the Runbook Handoff that api-errors sent, as the template's rule delivers it",
    );
    let mut scaler = function_process(
        moto,
        "limit-scaler",
        audit,
        &[("MANAGED_RESOURCES", "table:checkout-*")],
    )
    .await;
    for handoff in received_events(moto, &caught).await {
        show(&scaler.report(&handoff).await);
    }
    scaler.stop().await;
    Ok(())
}

async fn health_prober(moto: &Moto, audit: &str, table: &str, dlq: &str) -> Result<(), Error> {
    let endpoints = Endpoints::start().await;
    let conditions = json!([
        r#"$.status == "healthy""#,
        r#"$.database == "connected""#,
        "$.queue_depth < 100"
    ]);
    let probes = json!([
        {"name": "orders-api", "kind": "http", "url": endpoints.url("/health"), "body": conditions, "max_latency_ms": 500},
        {"name": "payments-api", "kind": "http", "url": endpoints.url("/degraded"), "body": conditions},
        {"name": "orders-table", "kind": "dynamodb_table", "table": table},
        {"name": "payments-dlq", "kind": "sqs_queue", "queue": dlq, "max_visible": 0},
        {"name": "orders-alarms", "kind": "alarms", "prefix": table},
    ]);
    let mut prober = function_process(
        moto,
        "health-prober",
        audit,
        &[("PROBES", &probes.to_string())],
    )
    .await;
    heading("health-prober / health-check: the scheduled run of every probe");
    let report = prober.report(&scheduled_event()).await;
    println!(
        "healthy: {}  ({})",
        report["healthy"],
        report["reason"].as_str().unwrap_or("")
    );
    for probe in report["probes"].as_array().into_iter().flatten() {
        println!(
            "  [{}] {:<14} {:<15} {:>4} ms  {}",
            if probe["healthy"] == json!(true) {
                "ok"
            } else {
                "!!"
            },
            probe["name"].as_str().unwrap_or(""),
            probe["kind"].as_str().unwrap_or(""),
            probe["latency_ms"],
            probe["detail"].as_str().unwrap_or("")
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    heading("health-prober: the scorecard of every runbook this demo ran (manual payload)");
    let card = prober
        .report(&json!({"report": "scorecard", "days": 1}))
        .await;
    for runbook in card["runbooks"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} runs {:>2}  remediated {:>2}  verified {:>2}  approved {}  -> {}",
            runbook["runbook"].as_str().unwrap_or(""),
            runbook["runs"],
            runbook["remediated"],
            runbook["verified"],
            runbook["approvals"]["approved"],
            runbook["readiness"].as_str().unwrap_or("")
        );
    }
    prober.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let moto = runbook_tests::moto::start(&[])?;
    println!(
        "AWS emulator (moto behind tests/moto_front) at {}",
        moto.endpoint
    );
    let audit = create_audit_table(&moto.dynamodb()).await;
    println!("audit table {audit}");
    let table = limit_scaler(&moto, &audit).await?;
    limit_scaler_other_limits(&moto, &audit).await?;
    let dlq = dlq_redriver(&moto, &audit).await?;
    alarm_responder(&moto, &audit).await?;
    health_prober(&moto, &audit, &table, &dlq).await?;
    println!(
        "\ndemo finished: every report above is also in the audit table {audit} (query pk = target#<the resource's ARN>, the report's \"resource\")"
    );
    Ok(())
}
