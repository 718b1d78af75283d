//! End to end: the compiled `health-prober` binary under the Runtime API emulator, with the
//! files in events/, against local endpoints and moto.

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use runbook_tests::deploy::{Deployment, HEALTH_PROBER, deploy_managed};
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{TableSpec, create_function, create_queue, create_stack, event_file};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{Invoked, LambdaProcess, binary};
use serde_json::Value;

/// Creates what events/manual-health-probes.json probes, named after `base` instead of
/// `orders`, and returns the file's payload with the names and the endpoint replaced.
async fn probed_resources(base: &str, endpoints: &Endpoints) -> Value {
    let dynamodb = moto().dynamodb();
    let mut table = TableSpec::provisioned("unused", 5, 5);
    table.name = base.to_string();
    table.create(&dynamodb).await;
    dynamodb
        .update_continuous_backups()
        .table_name(base)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .expect("pitr"),
        )
        .send()
        .await
        .expect("enable pitr");
    create_queue(&moto().sqs(), &format!("{base}-dlq"), &[]).await;
    create_stack(
        &moto().cloudformation(),
        base,
        serde_json::json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    let cloudwatch = moto().cloudwatch();
    cloudwatch
        .put_metric_alarm()
        .alarm_name(format!("{base}-latency"))
        .namespace("AWS/Lambda")
        .metric_name("Duration")
        .statistic(Statistic::Maximum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1000.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("alarm");
    cloudwatch
        .set_alarm_state()
        .alarm_name(format!("{base}-latency"))
        .state_value(StateValue::Ok)
        .state_reason("quiet")
        .send()
        .await
        .expect("alarm state");
    create_function(moto(), &format!("{base}-api")).await;
    event_file(
        "manual-health-probes.json",
        &[
            ("https://orders.example.com", &endpoints.base),
            ("orders", base),
        ],
    )
}

async fn start(deployment: &Deployment, probes: Option<&Value>) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), HEALTH_PROBER);
    if let Some(probes) = probes {
        env.push(("PROBES".into(), probes.to_string()));
    }
    LambdaProcess::start(&binary("health-prober"), &env).await
}

#[tokio::test]
async fn manual_and_scheduled_probes_through_the_binary() {
    let endpoints = Endpoints::start().await;
    let deployment = deploy_managed(&[]).await;
    let base = runbook_tests::unique("orders");
    let payload = probed_resources(&base, &endpoints).await;

    let mut function = start(&deployment, None).await;
    let report = function.report(&payload).await;
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["probes"].as_array().unwrap().len(), 6);
    assert_eq!(report["metrics"]["calls"], 1);
    function.stop().await;

    let mut scheduled = start(&deployment, Some(&payload["probes"])).await;
    let report = scheduled
        .report(&event_file("scheduled-event.json", &[]))
        .await;
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["trigger"]["kind"], "schedule");
    // The alarm goes off: the next sweep names it.
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(format!("{base}-latency"))
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .expect("set alarm state");
    let report = scheduled
        .report(&event_file("scheduled-event.json", &[]))
        .await;
    assert_eq!(report["healthy"], false, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("{base}-alarms")),
        "{report}"
    );
    scheduled.stop().await;
}

#[tokio::test]
async fn invalid_probes_stop_the_cold_start_naming_the_probe() {
    let deployment = deploy_managed(&[]).await;
    let bad: Value =
        serde_json::json!([{"name": "api", "kind": "http", "url": "http://x", "expect": 200}]);
    let mut function = start(&deployment, Some(&bad)).await;
    assert!(matches!(
        function.invoke(&serde_json::json!({})).await,
        Invoked::InitFailed(_)
    ));
    let logs = function.logs.lock().expect("logs").join("\n");
    assert!(
        logs.contains("PROBES[0] (probe \\\"api\\\"): unknown field `expect`"),
        "{logs}"
    );
    function.stop().await;
}
