//! End to end: the compiled `limit-scaler` binary under the Lambda Runtime API emulator,
//! invoked with the files in events/, against moto.

use runbook_tests::deploy::{Deployment, LIMIT_SCALER, deploy_managed};
use runbook_tests::fixtures::{TableSpec, capacity, create_limits_table, event_file, recovered};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{Invoked, LambdaProcess, binary};
use serde_json::{Value, json};

/// The binary with the IAM credentials of its policy in template.yaml (see runbook_tests::deploy).
async fn start(deployment: &Deployment, extra: &[(&str, &str)]) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::start(&binary("limit-scaler"), &env).await
}

#[tokio::test]
async fn throttle_alarm_then_ok_through_the_binary() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, &[]).await;

    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["function"], "limit-scaler");
    assert_eq!(report["trigger"]["kind"], "alarm");
    assert_eq!(
        report["trigger"]["event_id"],
        "6a7e8feb-b491-4cf7-a9f1-bf3703467718"
    );
    assert_eq!(
        report["actions"][0]["after"],
        json!({"billing_mode": "PROVISIONED", "read": 10, "write": 5})
    );
    assert_eq!(report["verification"]["status"], "pending");
    assert!(report["audit_id"].is_string());
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));

    let ok = event_file("dynamodb-throttle-ok.json", &[("orders", &table)]);
    let closed = function.report(&recovered(ok).await).await;
    assert_eq!(closed["verification"]["status"], "verified", "{closed}");
    assert_eq!(closed["audit_id"], report["audit_id"]);

    // The report is also one JSON log line.
    let logs = function.logs.lock().expect("logs").clone();
    let logged: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "report")
        .collect();
    assert_eq!(logged.len(), 2, "{logs:?}");
    assert_eq!(logged[0]["report"]["audit_id"], report["audit_id"]);
    function.stop().await;
}

#[tokio::test]
async fn alarm_action_and_index_alarm_through_the_binary() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5).with_index();
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, &[]).await;

    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm-action.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["trigger"]["kind"], "alarm_action");
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 10));

    let report = function
        .report(&event_file(
            "dynamodb-gsi-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["target"], format!("{table}/index/by-customer"));
    assert_eq!(
        capacity(&dynamodb, &table, Some("by-customer")).await,
        (5, 10)
    );
    function.stop().await;
}

#[tokio::test]
async fn a_table_under_auto_scaling_is_raised_through_its_range_by_the_binary() {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let dynamodb = moto().dynamodb();
    let auto_scaling = moto().auto_scaling();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-scaled", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let id = format!("table/{table}");
    auto_scaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(&id)
        .scalable_dimension(ScalableDimension::DynamoDbTableReadCapacityUnits)
        .min_capacity(5)
        .max_capacity(40)
        .send()
        .await
        .expect("register");
    let mut function = start(&deployment, &[]).await;

    // Under the function's own policy: both Auto Scaling calls are allowed, on this target.
    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(
        report["actions"][0]["api"],
        "application-autoscaling:RegisterScalableTarget"
    );
    assert_eq!(
        report["actions"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let target = auto_scaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_ids(&id)
        .send()
        .await
        .expect("describe");
    let read = &target.scalable_targets()[0];
    assert_eq!((read.min_capacity(), read.max_capacity()), (10, 40));
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    function.stop().await;
}

#[tokio::test]
async fn manual_payloads_through_the_binary() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5).with_index();
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, &[]).await;

    let planned = function
        .report(&event_file(
            "manual-dynamodb-capacity-dry-run.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    assert_eq!(planned["actions"][0]["applied"], false);
    assert_eq!(
        capacity(&dynamodb, &table, Some("by-customer")).await,
        (5, 5)
    );

    let report = function
        .report(&event_file(
            "manual-dynamodb-capacity.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (200, 100));

    let rejected = function.report(&json!({"table": table, "idx": "x"})).await;
    assert_eq!(rejected["outcome"], "rejected");
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("expected one of `table`"),
        "{rejected}"
    );

    // Lambda's Invoke API refuses malformed JSON itself; if bytes that are not JSON reach the
    // runtime anyway, the invocation errors with the parse error and nothing changes.
    match function.invoke_bytes(b"{\"table\": ").await {
        Invoked::Error(error) => assert!(error.to_string().contains("EOF"), "{error}"),
        other => panic!("expected an invocation error, got {other:?}"),
    }
    assert_eq!(capacity(&dynamodb, &table, None).await, (200, 100));
    // The function is still alive and answering; a person's run overrides the cooldown and
    // says so.
    let again = function
        .report(&json!({"table": table, "dry_run": true}))
        .await;
    assert_eq!(again["outcome"], "planned", "{again}");
    assert!(
        again["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("manual run: overrode the cooldown"),
        "{again}"
    );
    function.stop().await;
}

#[tokio::test]
async fn a_bad_setting_stops_the_cold_start_naming_the_variable() {
    let deployment = deploy_managed(&[]).await;
    let mut function = start(&deployment, &[("MAX_READ_CAPACITY", "lots")]).await;
    match function.invoke(&json!({"table": "x"})).await {
        Invoked::InitFailed(_) => {}
        other => panic!("expected the cold start to fail, got {other:?}"),
    }
    let logs = function.logs.lock().expect("logs").join("\n");
    assert!(
        logs.contains("MAX_READ_CAPACITY=\\\"lots\\\" is invalid"),
        "{logs}"
    );
    function.stop().await;
}

#[tokio::test]
async fn lambda_concurrency_through_the_binary() {
    let deployment = deploy_managed(&[]).await;
    let base = runbook_tests::unique("managed-orders");
    let function = format!("{base}-worker");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    let lambda = moto().lambda();
    lambda
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(10)
        .send()
        .await
        .unwrap();
    let mut scaler = start(&deployment, &[]).await;
    let names = [("orders", base.as_str())];

    let planned = scaler
        .report(&event_file(
            "manual-lambda-concurrency-dry-run.json",
            &names,
        ))
        .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    let raised = scaler
        .report(&event_file("lambda-throttles-alarm.json", &names))
        .await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    assert_eq!(raised["runbook"], "lambda-concurrency");
    let reserved = lambda
        .get_function_concurrency()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.reserved_concurrent_executions(), Some(20));
    scaler.stop().await;
}

#[tokio::test]
async fn stored_limit_through_the_binary() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let dynamodb = moto().dynamodb();
    let limits = runbook_tests::unique("managed-limits");
    create_limits_table(&dynamodb, &limits, 100).await;
    let deployment = deploy_managed(&[("LimitsTable", &limits)]).await;
    let mut scaler = start(
        &deployment,
        &[
            ("LIMITS_TABLE", &limits),
            ("LIMITS_VALUE_ATTRS", "requests_per_second"),
        ],
    )
    .await;
    let report = scaler
        .report(&event_file("manual-stored-limit.json", &[]))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["runbook"], "stored-limit");
    let item = dynamodb
        .get_item()
        .table_name(&limits)
        .key("pk", AttributeValue::S("tenant#42".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        item.item().unwrap()["requests_per_second"].as_n().unwrap(),
        "200"
    );
    // Not due for an hour: the schedule has nothing to put back yet.
    let sweep = scaler
        .report(&event_file("scheduled-event.json", &[]))
        .await;
    assert_eq!(sweep["reports"], serde_json::json!([]), "{sweep}");
    scaler.stop().await;
}

/// A deployment on an emulator of its own (a slowed operation must not slow another test's
/// calls), a managed table at 5/5, the function's environment, and the throttle alarm event.
async fn crash_setup() -> (
    runbook_tests::moto::Moto,
    String,
    Vec<(String, String)>,
    Value,
) {
    let moto = runbook_tests::moto::start(&[]).expect("moto front");
    let deployment = moto
        .deploy(runbook_tests::deploy::DeployRequest {
            parameters: vec![("ManagedResources", "managed-*")],
            ..Default::default()
        })
        .await;
    let spec = TableSpec::provisioned("managed-crash", 5, 5);
    let table = spec.name.clone();
    spec.create(&moto.dynamodb()).await;
    let mut env = deployment.function_env(&moto, LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    let event = event_file("dynamodb-throttle-alarm.json", &[("orders", &table)]);
    (moto, table, env, event)
}

/// Invokes the binary with `event` as request `request_id` and kills it once `when` is done.
async fn crash(
    env: &[(String, String)],
    event: &Value,
    request_id: &str,
    when: impl std::future::Future<Output = ()>,
) {
    let mut first = LambdaProcess::start(&binary("limit-scaler"), env).await;
    let pid = first.process_id().expect("running");
    tokio::select! {
        answer = first.invoke_as(event, request_id) => panic!("answered before the crash: {answer:?}"),
        () = when => {
            let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
            assert!(killed.success());
        }
    }
    first.stop().await;
}

/// Lambda's retry of the crashed invocation: the same event with the same request id.
async fn retry(
    env: &[(String, String)],
    event: &Value,
    request_id: &str,
) -> (LambdaProcess, Value) {
    let mut retry = LambdaProcess::start(&binary("limit-scaler"), env).await;
    let report = match retry.invoke_as(event, request_id).await {
        Invoked::Response(report) => report,
        other => panic!("expected a report, got {other:?}"),
    };
    (retry, report)
}

fn notes(report: &Value) -> String {
    report["notes"].to_string()
}

#[tokio::test]
async fn a_crashed_invocation_retried_with_its_request_id_acts_once() {
    let (moto, table, env, event) = crash_setup().await;
    let dynamodb = moto.dynamodb();
    let request_id = uuid::Uuid::new_v4().to_string();

    // The first attempt dies in the middle of its diagnosis, holding the event and the lease:
    // its evidence gives up on the first slowed read after a second, its diagnosis waits on the
    // second.
    moto.delay("GetMetricData", &table, 4_000).await;
    moto.delay("GetMetricData", &table, 4_000).await;
    crash(&env, &event, &request_id, async {
        moto.held("GetMetricData", &table).await;
        moto.held("GetMetricData", &table).await;
    })
    .await;
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));

    // Lambda retries the asynchronous invocation with the same request id: it takes over its own
    // claim and lease, and acts once.
    let (mut retry, report) = retry(&env, &event, &request_id).await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert!(notes(&report).contains("resumed event"), "{report}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    // Any later delivery of the event gets that report back and changes nothing.
    let again = retry.report(&event).await;
    assert_eq!(again["audit_id"], report["audit_id"], "{again}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    retry.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_crash_past_the_write_finishes_it_without_raising_again() {
    let (moto, table, env, event) = crash_setup().await;
    let dynamodb = moto.dynamodb();
    let request_id = uuid::Uuid::new_v4().to_string();

    // The first attempt's UpdateTable takes effect, and the process dies waiting for the answer.
    moto.delay_answer("UpdateTable", &table, 4_000).await;
    crash(&env, &event, &request_id, moto.held("UpdateTable", &table)).await;
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));

    // The retry finds its own change in place: it verifies and records it, and raises nothing
    // more (planning again would take 10 to 20 and record 10 as the baseline).
    let (retry, report) = retry(&env, &event, &request_id).await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert!(
        notes(&report).contains("resumed: an earlier attempt"),
        "{report}"
    );
    assert_eq!(report["actions"][0]["before"]["read"], 5, "{report}");
    assert_eq!(report["actions"][0]["after"]["read"], 10, "{report}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    let audit = runbook_shared::store::AuditStore::new(
        dynamodb.clone(),
        env.iter()
            .find(|(k, _)| k == "AUDIT_TABLE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        1,
    );
    let raise = audit
        .raise(
            "dynamodb-capacity",
            &runbook_tests::fixtures::table_key(&table),
        )
        .await
        .unwrap()
        .expect("the raise is recorded for its scale-down");
    assert_eq!(
        raise.original,
        json!({"read": 5, "write": 5}),
        "the baseline is the capacity before the raise"
    );
    retry.stop().await;
}

/// A call that never answers (a stuck connection, a stalled endpoint) must not keep the binary
/// past its Lambda deadline, where Lambda would kill it with no report at all: it stops before
/// the deadline, logs and publishes a failed report that says so, returns an error (so that
/// Lambda retries an asynchronous invocation), and serves the next invocation.
#[tokio::test]
async fn a_stalled_call_still_answers_before_the_lambda_deadline() {
    let _own =
        runbook_tests::moto::isolated("a_stalled_call_still_answers_before_the_lambda_deadline")
            .await;
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, &[]).await;
    function.timeout = std::time::Duration::from_secs(8);
    moto().delay("DescribeTable", &table, 30_000).await;

    let started = std::time::Instant::now();
    let answer = function
        .invoke(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    // An error (so that Lambda retries an asynchronous invocation), before the deadline.
    let Invoked::Error(error) = answer else {
        panic!("expected an error before the deadline, got {answer:?}");
    };
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    let reason = error.to_string();
    assert!(reason.contains("Lambda deadline"), "{reason}");
    assert!(reason.contains("same request id"), "{reason}");
    // Its failed report was logged (and published) all the same.
    let logs = function.logs.lock().expect("logs").clone();
    let logged: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "report")
        .collect();
    assert_eq!(
        logged.last().map(|l| l["report"]["outcome"].clone()),
        Some(json!("failed")),
        "{logs:?}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));

    // The stopped invocation left nothing running: the next one is served.
    let next = function
        .report(&json!({"runbook": "dynamodb-capacity", "table": "managed-none", "dry_run": true}))
        .await;
    assert_ne!(next["outcome"], "remediated", "{next}");
    function.stop().await;
}

/// One attempt that stalls is abandoned after `ATTEMPT_TIMEOUT` and retried, so the run still
/// does its work well within its deadline.
#[tokio::test]
async fn a_stalled_attempt_is_retried() {
    let _own = runbook_tests::moto::isolated("a_stalled_attempt_is_retried").await;
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, &[]).await;
    function.timeout = std::time::Duration::from_secs(25);
    moto().delay("DescribeTable", &table, 60_000).await;

    let started = std::time::Instant::now();
    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert!(started.elapsed() >= runbook_shared::aws::ATTEMPT_TIMEOUT);
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    function.stop().await;
}

/// Right before writing, the binary re-reads the alarm: one that is back to OK changes nothing.
#[tokio::test]
async fn an_alarm_back_to_ok_before_the_write_changes_nothing_through_the_binary() {
    use aws_sdk_cloudwatch::types::StateValue;
    use runbook_tests::fixtures::alarm_in_state;
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let alarm = format!("{table}-read-throttles");
    alarm_in_state(&alarm, StateValue::Ok).await;
    let mut function = start(&deployment, &[]).await;
    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "no_action", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("recovered before acting: alarm {alarm} is OK")),
        "{report}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    function.stop().await;
}
