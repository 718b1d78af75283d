//! End to end: the compiled `alarm-responder` binary under the Runtime API emulator, with the
//! files in events/, against moto.

use runbook_tests::deploy::{ALARM_RESPONDER, Deployment, deploy_managed};
use runbook_tests::fixtures::{
    create_deployed_function, create_stack, event_file, recovered, set_stack_status,
};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};

async fn start(deployment: &Deployment) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), ALARM_RESPONDER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("COOLDOWN_SECONDS".into(), "0".into()));
    LambdaProcess::start(&binary("alarm-responder"), &env).await
}

#[tokio::test]
async fn lambda_runbooks_through_the_binary() {
    let deployment = deploy_managed(&[]).await;
    let base = runbook_tests::unique("managed-orders");
    let function = format!("{base}-api");
    create_deployed_function(moto(), &function, "2").await;
    let lambda = moto().lambda();
    let names = [("orders", base.as_str())];
    let mut responder = start(&deployment).await;

    let planned = responder
        .report(&event_file("manual-lambda-rollback-dry-run.json", &names))
        .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");

    let rolled = responder
        .report(&event_file("lambda-errors-alarm.json", &names))
        .await;
    assert_eq!(rolled["outcome"], "remediated", "{rolled}");
    assert_eq!(rolled["trigger"]["kind"], "alarm");
    let alias = lambda
        .get_alias()
        .function_name(&function)
        .name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(alias.function_version(), Some("1"));

    let ok = event_file("lambda-errors-ok.json", &names);
    let closed = responder.report(&recovered(ok).await).await;
    assert_eq!(closed["verification"]["status"], "verified", "{closed}");

    // A worker (no aliases: its traffic runs on $LATEST) whose runs reach 2.95 s of its 3 s
    // timeout: evidence for a longer one.
    let worker = format!("{base}-worker");
    runbook_tests::fixtures::create_function(moto(), &worker).await;
    runbook_tests::fixtures::put_durations(&worker, &[2_950.0]).await;
    let raised = responder
        .report(&event_file("lambda-duration-alarm-action.json", &names))
        .await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    assert_eq!(raised["trigger"]["kind"], "alarm_action");
    assert_eq!(raised["runbook"], "lambda-resources");

    // More memory needs out-of-memory in the worker's logs.
    runbook_tests::fixtures::log_lines(
        &worker,
        &["RequestId: 9c1e Error: Runtime exited with error: signal: killed Runtime.ExitError"],
    )
    .await;
    let both = responder
        .report(&event_file("manual-lambda-resources.json", &names))
        .await;
    assert_eq!(both["outcome"], "remediated", "{both}");
    // The evidence is in the report: the out-of-memory line, the figures, the recent changes.
    let evidence = &both["diagnosis"]["evidence"];
    assert_eq!(evidence["logs"]["out_of_memory"], 1, "{both}");
    assert!(evidence["metrics"]["duration_max_ms"].is_object(), "{both}");
    assert!(evidence["recent_changes"].is_array(), "{both}");
    assert_eq!(
        rolled["diagnosis"]["evidence"]["logs"]["events_read"], 0,
        "{rolled}"
    );
    responder.stop().await;
}

#[tokio::test]
async fn stack_runbook_through_the_binary() {
    let deployment = deploy_managed(&[]).await;
    let stack = runbook_tests::unique("managed-orders");
    create_stack(
        &moto().cloudformation(),
        &stack,
        serde_json::json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    let mut responder = start(&deployment).await;

    set_stack_status(
        moto(),
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("OrdersTable", "Subscriber limit exceeded")),
        0,
    )
    .await;
    let report = responder
        .report(&event_file(
            "cloudformation-stack-status-change.json",
            &[("orders", &stack)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["trigger"]["kind"], "stack_event");

    set_stack_status(
        moto(),
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("OrdersTable", "Subscriber limit exceeded")),
        0,
    )
    .await;
    let report = responder
        .report(&event_file(
            "manual-stack-recovery.json",
            &[("orders", &stack)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("skipping OrdersTable"),
        "{report}"
    );
    responder.stop().await;
}

/// The change brake is account-wide: a table raised by the limit-scaler binary fills a window of
/// one (MAX_CHANGES_PER_WINDOW=1), and the alarm-responder binary's rollback is skipped and
/// escalated.
#[tokio::test]
async fn the_change_brake_holds_across_functions_through_the_binaries() {
    let deployment = deploy_managed(&[]).await;
    let base = runbook_tests::unique("managed-orders");
    let spec = runbook_tests::fixtures::TableSpec::provisioned(&base, 5, 5);
    let table = spec.name.clone();
    spec.create(&moto().dynamodb()).await;
    let function = format!("{base}-api");
    create_deployed_function(moto(), &function, "2").await;
    let names = [("orders", base.as_str())];
    let env = |function| {
        let mut env = deployment.function_env(moto(), function);
        env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
        env.push(("MAX_CHANGES_PER_WINDOW".into(), "1".into()));
        env
    };
    let mut scaler = LambdaProcess::start(
        &binary("limit-scaler"),
        &env(runbook_tests::deploy::LIMIT_SCALER),
    )
    .await;
    let mut responder =
        LambdaProcess::start(&binary("alarm-responder"), &env(ALARM_RESPONDER)).await;

    let raised = scaler
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", table.as_str())],
        ))
        .await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");

    let braked = responder
        .report(&event_file("lambda-errors-alarm.json", &names))
        .await;
    assert_eq!(braked["outcome"], "skipped", "{braked}");
    let reason = braked["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("brake: 1 resources changed in the last 10 minutes")
            && reason.contains(&table),
        "{reason}"
    );
    assert_eq!(braked["escalation"]["kind"], "brake", "{braked}");
    let alias = moto()
        .lambda()
        .get_alias()
        .function_name(&function)
        .name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(alias.function_version(), Some("2"), "not rolled back");
    scaler.stop().await;
    responder.stop().await;
}

/// api-errors through the binaries under their template policies: the alarm-responder binary
/// triages a REST API's 5xx, finds the table behind its function throttling, and hands it off;
/// the handoff, caught off the bus as the template's rule would deliver it, raises the table
/// through the limit-scaler binary.
#[tokio::test]
async fn api_errors_hands_a_throttled_table_to_limit_scaler_through_the_binaries() {
    use runbook_tests::fixtures::{
        TableSpec, capacity, function_arn, handoffs_matching, lambda_uri, put_metric,
        received_events, rest_api, set_environment,
    };
    let deployment = deploy_managed(&[]).await;
    let base = runbook_tests::unique("managed-orders");
    let table = TableSpec::provisioned(&base, 5, 5);
    let table_name = table.name.clone();
    table.create(&moto().dynamodb()).await;
    let function = format!("{base}-fn");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    set_environment(moto(), &function, &[("TABLE_NAME", &table_name)]).await;
    // events/api-5xx-alarm.json names the API orders-api: here <base>-api.
    rest_api(
        moto(),
        &format!("{base}-api"),
        &lambda_uri(&function_arn(&function, None)),
        serde_json::json!({}),
    );
    put_metric(
        moto(),
        "AWS/DynamoDB",
        "WriteThrottleEvents",
        &[("TableName", &table_name)],
        25.0,
        60,
    )
    .await;
    let caught = handoffs_matching(
        moto(),
        serde_json::json!({"target": {"table": {"table": [table_name]}}}),
    )
    .await;
    let names = [("orders", base.as_str())];
    // The alarm events/api-5xx-alarm.json is about, firing: limit-scaler acts on a handoff only
    // while it does.
    runbook_tests::fixtures::alarm_in_state(
        &format!("{base}-api-prod-5xx"),
        aws_sdk_cloudwatch::types::StateValue::Alarm,
    )
    .await;
    let mut responder = start(&deployment).await;

    let planned = responder
        .report(&event_file("manual-api-errors-dry-run.json", &names))
        .await;
    // By hand (here a dry run), the triage names the cause and what to invoke: only an alarm's
    // run hands off.
    assert_eq!(planned["outcome"], "skipped", "{planned}");
    assert!(
        planned["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("invoke limit-scaler with")),
        "{planned}"
    );
    assert!(
        received_events(moto(), &caught).await.is_empty(),
        "nothing was sent"
    );

    let handed = responder
        .report(&event_file("api-5xx-alarm.json", &names))
        .await;
    assert_eq!(handed["outcome"], "remediated", "{handed}");
    assert_eq!(handed["runbook"], "api-errors");
    assert_eq!(handed["diagnosis"]["causes"][0]["cause"], "table_throttled");
    assert_eq!(
        handed["diagnosis"]["functions"][0]["evidence"]["recent_changes"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the function's configuration change is in its evidence: {handed}"
    );
    let events = received_events(moto(), &caught).await;
    assert_eq!(events.len(), 1, "{events:?}");
    responder.stop().await;

    let mut env = deployment.function_env(moto(), runbook_tests::deploy::LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    let mut scaler = LambdaProcess::start(&binary("limit-scaler"), &env).await;
    let raised = scaler.report(&events[0]).await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    assert_eq!(raised["trigger"]["kind"], "handoff");
    assert_eq!(raised["runbook"], "dynamodb-capacity");
    let (read, write) = capacity(&moto().dynamodb(), &table_name, None).await;
    assert_eq!(read, 5);
    assert!(write > 5, "write {write}");
    scaler.stop().await;
}
