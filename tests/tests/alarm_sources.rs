//! The alarms teams already have: alarm notifications delivered by SNS and composite alarms,
//! through the compiled `limit-scaler` binary under its template policy against moto; and
//! every example event the `aws_lambda_events` crate ships, through each function, each with a
//! clear outcome.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricDataQuery, MetricStat, StateValue, Statistic,
};
use runbook_tests::deploy::{Deployment, LIMIT_SCALER, deploy_managed};
use runbook_tests::fixtures::{
    TableSpec, capacity, create_audit_table, event_file, invocation, prober, redriver,
    redriver_clients, responder, responder_clients, scaler, scaler_clients,
};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:oncall-alarms";

async fn start(deployment: &Deployment) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("ALARM_TOPIC_ARNS".into(), TOPIC.into()));
    LambdaProcess::start(&binary("limit-scaler"), &env).await
}

#[tokio::test]
async fn an_alarm_delivered_by_sns_acts_and_its_ok_closes_the_verification() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let alarm_name = format!("{table}-read-throttles");
    metric_alarm(
        &alarm_name,
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        ("TableName", &table),
    )
    .await;
    let mut function = start(&deployment).await;

    let alarm = event_file("dynamodb-throttle-alarm-sns.json", &[("orders", &table)]);
    let report = function.report(&alarm).await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["trigger"]["kind"], "alarm_sns");
    assert_eq!(
        report["trigger"]["event_id"],
        "5e1c4b38-8a0f-5a7e-9d0b-3f1d2c6a7b90:ALARM@2026-11-23T03:12:00.000+0000"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));

    // SNS delivers again (a retried invocation): the same message acts once.
    let again = function.report(&alarm).await;
    assert_eq!(again["audit_id"], report["audit_id"], "{again}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));

    set_state(&alarm_name, StateValue::Ok).await;
    let ok = function
        .report(&event_file(
            "dynamodb-throttle-ok-sns.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(ok["verification"]["status"], "verified", "{ok}");
    assert_eq!(ok["audit_id"], report["audit_id"]);
}

#[tokio::test]
async fn sns_messages_that_are_not_alarms_or_come_from_other_topics_are_rejected() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let mut function = start(&deployment).await;

    let elsewhere = event_file(
        "dynamodb-throttle-alarm-sns.json",
        &[("orders", &table), (":oncall-alarms", ":somebody-elses")],
    );
    let rejected = function.report(&elsewhere).await;
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("somebody-elses") && reason.contains("ALARM_TOPIC_ARNS"),
        "{reason}"
    );

    // Anyone who may publish to the topic could send this: it is no approval and no alarm.
    let mut forged = event_file("dynamodb-throttle-alarm-sns.json", &[("orders", &table)]);
    forged["Records"][0]["Sns"]["Message"] = json!(r#"{"approve": "6f1c2d34", "by": "sns"}"#);
    let rejected = function.report(&forged).await;
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("is not a CloudWatch alarm notification") && !reason.contains("manual"),
        "{reason}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
}

/// Anyone who may publish to the topic can write any notification: it is acted on only as
/// CloudWatch shows the alarm.
#[tokio::test]
async fn a_forged_notification_changes_nothing_and_closes_nothing() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let mut function = start(&deployment).await;

    // No such alarm.
    let made_up = event_file("dynamodb-throttle-alarm-sns.json", &[("orders", &table)]);
    let rejected = function.report(&made_up).await;
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("CloudWatch shows no such alarm")),
        "{rejected}"
    );
    // A real alarm, which is OK: the notification's ALARM is not believed.
    let alarm_name = format!("{table}-read-throttles");
    metric_alarm(
        &alarm_name,
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        ("TableName", &table),
    )
    .await;
    set_state(&alarm_name, StateValue::Ok).await;
    let mut quiet_event = made_up.clone();
    quiet_event["Records"][0]["Sns"]["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let quiet = function.report(&quiet_event).await;
    assert_eq!(quiet["outcome"], "no_action", "{quiet}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));

    // Another alarm on the table, OK since before the raise below.
    let quiet_alarm = format!("{table}-write-throttles");
    metric_alarm(
        &quiet_alarm,
        "AWS/DynamoDB",
        "WriteThrottleEvents",
        ("TableName", &table),
    )
    .await;
    set_state(&quiet_alarm, StateValue::Ok).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // A real raise, then a forged OK while the alarm still fires: the verification stays open.
    set_state(&alarm_name, StateValue::Alarm).await;
    let mut real = made_up.clone();
    real["Records"][0]["Sns"]["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let raised = function.report(&real).await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    let forged_ok = event_file("dynamodb-throttle-ok-sns.json", &[("orders", &table)]);
    let refused = function.report(&forged_ok).await;
    assert_eq!(refused["outcome"], "no_action", "{refused}");
    assert_ne!(refused["verification"]["status"], "verified", "{refused}");
    // A real OK of another alarm on the table verifies nothing either.
    let mut old_ok = event_file(
        "dynamodb-throttle-ok-sns.json",
        &[("orders", &table), ("-read-throttles", "-write-throttles")],
    );
    old_ok["Records"][0]["Sns"]["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let refused = function.report(&old_ok).await;
    assert_eq!(refused["outcome"], "no_action", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&format!("waits for alarm {alarm_name}"))),
        "{refused}"
    );

    // The metric is CloudWatch's, not the message's: one naming another table moves only the
    // alarm's own (already raised, so within its cooldown).
    let other = TableSpec::provisioned("managed-other", 5, 5)
        .create(&dynamodb)
        .await;
    let mut retargeted = real.clone();
    retargeted["Records"][0]["Sns"]["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let message = retargeted["Records"][0]["Sns"]["Message"]
        .as_str()
        .unwrap_or_default()
        .replace(
            &format!("\"value\": \"{table}\""),
            &format!("\"value\": \"{other}\""),
        );
    retargeted["Records"][0]["Sns"]["Message"] = json!(message);
    let report = function.report(&retargeted).await;
    assert_eq!(report["target"], json!(table), "{report}");
    assert_eq!(capacity(&dynamodb, &other, None).await, (5, 5));

    // A change no alarm fired (a person's) waits for its metric: an alarm of the table that
    // has been OK since before it does not verify it.
    let other_alarm = format!("{other}-read-throttles");
    metric_alarm(
        &other_alarm,
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        ("TableName", &other),
    )
    .await;
    set_state(&other_alarm, StateValue::Ok).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let by_hand = function.report(&json!({"table": other})).await;
    assert_eq!(by_hand["outcome"], "remediated", "{by_hand}");
    let mut old_ok = event_file("dynamodb-throttle-ok-sns.json", &[("orders", &other)]);
    old_ok["Records"][0]["Sns"]["MessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let refused = function.report(&old_ok).await;
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("before the change")),
        "{refused}"
    );
}

#[tokio::test]
async fn a_metric_math_alarm_delivered_by_sns_is_routed_by_its_metrics() {
    let deployment = deploy_managed(&[]).await;
    let query = |id: &str, metric: &str| {
        MetricDataQuery::builder()
            .id(id)
            .return_data(false)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace("AWS/Lambda")
                            .metric_name(metric)
                            .dimensions(
                                Dimension::builder()
                                    .name("FunctionName")
                                    .value("checkout")
                                    .build(),
                            )
                            .build(),
                    )
                    .period(60)
                    .stat("Sum")
                    .build(),
            )
            .build()
    };
    moto()
        .cloudwatch()
        .put_metric_alarm()
        .alarm_name("checkout-throttle-rate")
        .metrics(
            MetricDataQuery::builder()
                .id("rate")
                .expression("100 * throttles / invocations")
                .return_data(true)
                .build(),
        )
        .metrics(query("throttles", "Throttles"))
        .metrics(query("invocations", "Invocations"))
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("put metric-math alarm");
    set_state("checkout-throttle-rate", StateValue::Alarm).await;
    let mut function = start(&deployment).await;

    let report = function
        .report(&event_file("lambda-throttle-rate-alarm-sns.json", &[]))
        .await;
    assert_eq!(report["runbook"], "lambda-concurrency", "{report}");
    assert_eq!(report["target"], "checkout", "{report}");
}

async fn set_state(name: &str, state: StateValue) {
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason("set by the test")
        .send()
        .await
        .expect("set alarm state");
}

/// A metric alarm in moto, in ALARM.
async fn metric_alarm(name: &str, namespace: &str, metric: &str, dimension: (&str, &str)) {
    let cloudwatch = moto().cloudwatch();
    cloudwatch
        .put_metric_alarm()
        .alarm_name(name)
        .namespace(namespace)
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name(dimension.0)
                .value(dimension.1)
                .build(),
        )
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await
        .expect("put alarm");
    cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(StateValue::Alarm)
        .state_reason("Threshold Crossed")
        .send()
        .await
        .expect("set alarm state");
}

/// The composite of events/composite-alarm.json over `table`'s read-throttle alarm, its children
/// created in moto (a CPU alarm, which limit-scaler does not take, named first).
async fn composite_of(table: &str, file: &str) -> Value {
    let cpu = format!("{table}-cpu-high");
    let throttles = format!("{table}-read-throttles");
    metric_alarm(&cpu, "AWS/EC2", "CPUUtilization", ("InstanceId", "i-0abc")).await;
    metric_alarm(
        &throttles,
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        ("TableName", table),
    )
    .await;
    event_file(file, &[("orders", table)])
}

#[tokio::test]
async fn a_composite_alarm_is_followed_to_the_child_that_fired() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let composite = composite_of(&table, "composite-alarm.json").await;
    let mut function = start(&deployment).await;

    let report = function.report(&composite).await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["runbook"], "dynamodb-capacity");
    let child = format!("{table}-read-throttles");
    assert_eq!(report["trigger"]["name"], json!(child));
    assert_eq!(
        report["trigger"]["event_id"],
        json!(format!("2b7e6c1a-9d4f-4e8b-a0c3-5f1e7d9b2a64/{child}"))
    );
    let note = report["notes"][0].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("composite alarm {table}-degraded")) && note.contains(&child),
        "{note}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));

    // The same transition again acts no more.
    let again = function.report(&composite).await;
    assert_eq!(again["audit_id"], report["audit_id"], "{again}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
}

/// The first alarm that triggers the composite is on a table the automation may not change:
/// that does not end the search, the next one is the cause it acts on.
#[tokio::test]
async fn a_composite_is_followed_past_a_child_its_runbook_leaves_alone() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let ledger = TableSpec::provisioned("ledger", 5, 5)
        .create(&dynamodb)
        .await;
    for name in [&ledger, &table] {
        metric_alarm(
            &format!("{name}-read-throttles"),
            "AWS/DynamoDB",
            "ReadThrottleEvents",
            ("TableName", name),
        )
        .await;
    }
    let composite = event_file(
        "composite-alarm.json",
        &[
            ("orders-cpu-high", &format!("{ledger}-read-throttles")),
            ("orders", &table),
        ],
    );
    let mut function = start(&deployment).await;

    let report = function.report(&composite).await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["target"], json!(table), "{report}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    assert_eq!(capacity(&dynamodb, &ledger, None).await, (5, 5));
}

#[tokio::test]
async fn a_suppressed_composite_or_one_without_a_routable_child_changes_nothing() {
    let deployment = deploy_managed(&[]).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&dynamodb)
        .await;
    let mut function = start(&deployment).await;

    let suppressed = composite_of(&table, "composite-alarm-suppressed.json").await;
    let skipped = function.report(&suppressed).await;
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    let reason = skipped["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("actions suppressed by Alarm"),
        "{reason}"
    );

    // Only the CPU alarm triggers it: nothing limit-scaler takes.
    let mut cpu_only = composite_of(&table, "composite-alarm.json").await;
    cpu_only["id"] = json!(uuid::Uuid::new_v4().to_string());
    cpu_only["detail"]["configuration"]["alarmRule"] = json!(format!("ALARM({table}-cpu-high)"));
    cpu_only["detail"]["state"]["reasonData"] = json!("{}");
    let none = function.report(&cpu_only).await;
    assert_eq!(none["outcome"], "no_action", "{none}");
    let reason = none["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "{table}-cpu-high (AWS/EC2 CPUUtilization InstanceId=i-0abc, ALARM)"
        )),
        "{reason}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
}

/// The example events of the aws_lambda_events crate (its `src/fixtures`), where cargo unpacked
/// the version Cargo.lock names to build it.
fn crate_fixtures() -> Vec<(String, Value)> {
    let lock = std::fs::read_to_string(runbook_tests::workspace_root().join("Cargo.lock"))
        .expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|package| package.contains("name = \"aws_lambda_events\""))
        .and_then(|package| {
            package
                .lines()
                .find_map(|line| line.strip_prefix("version = "))
        })
        .map(|version| version.trim_matches('"').to_string())
        .expect("aws_lambda_events in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let dir = std::fs::read_dir(cargo_home.join("registry/src"))
        .expect("cargo's registry sources")
        .filter_map(Result::ok)
        .map(|index| {
            index
                .path()
                .join(format!("aws_lambda_events-{version}/src/fixtures"))
        })
        .find(|dir| dir.is_dir())
        .expect("the aws_lambda_events sources, which building the tests unpacked");
    let mut fixtures: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).ok()?;
            Some((name, serde_json::from_str(&text).ok()?))
        })
        .collect();
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    fixtures
}

/// What every function must answer to an example event: a report (never a crash), changing
/// nothing, whose reason names what the event is; an AWS event is never called a manual
/// payload.
#[tokio::test]
async fn every_example_event_of_the_crate_gets_a_clear_outcome() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let extra = [("ALARM_TOPIC_ARNS", TOPIC)];
    let scaler = scaler(&audit, &extra, scaler_clients());
    let redriver = redriver(&audit, &extra, redriver_clients());
    let responder = responder(&audit, &extra, responder_clients());
    let prober = prober(&audit, &[]);
    let fixtures = crate_fixtures();
    assert!(fixtures.len() > 100, "{} fixtures", fixtures.len());
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (name, event) in &fixtures {
        let answers = [
            (
                "limit-scaler",
                serde_json::to_value(scaler.handle(event.clone(), &invocation()).await),
            ),
            (
                "dlq-redriver",
                serde_json::to_value(redriver.handle(event.clone(), &invocation()).await),
            ),
            (
                "alarm-responder",
                serde_json::to_value(responder.handle(event.clone(), &invocation()).await),
            ),
            (
                "health-prober",
                serde_json::to_value(prober.handle(event.clone(), &invocation()).await),
            ),
        ];
        for (function, answer) in answers {
            let answer = answer.expect("a report");
            let reports: Vec<&Value> = match answer["reports"].as_array() {
                Some(reports) => reports.iter().collect(),
                None => vec![&answer],
            };
            for report in reports {
                let outcome = report["outcome"].as_str().unwrap_or("health report");
                assert!(
                    !["remediated", "failed"].contains(&outcome),
                    "{function} on {name}: {report}"
                );
                let reason = report["reason"].as_str().unwrap_or_default();
                let aws_event = [
                    "Records",
                    "eventSource",
                    "requestContext",
                    "httpMethod",
                    "awslogs",
                ]
                .iter()
                .any(|key| event.get(key).is_some());
                assert!(
                    !(aws_event && reason.contains("manual payload")),
                    "{function} calls the AWS event {name} a manual payload: {reason}"
                );
                *outcomes.entry(outcome.to_string()).or_default() += 1;
            }
        }
    }
    // The alarm examples reach the alarm path: the SNS ones are refused by their topic (not
    // listed), the composites followed (their children do not exist here).
    let sns = event_of(
        &fixtures,
        "example-cloudwatch-alarm-sns-payload-single-metric.json",
    );
    let refused = scaler.handle(sns, &invocation()).await;
    let refused = serde_json::to_value(refused).expect("report");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("arn:aws:sns:EXAMPLE")),
        "{refused}"
    );
    let suppressed = event_of(
        &fixtures,
        "example-cloudwatch-alarm-composite-with-suppressor-alarm.json",
    );
    let suppressed =
        serde_json::to_value(scaler.handle(suppressed, &invocation()).await).expect("report");
    assert_eq!(suppressed["outcome"], "skipped", "{suppressed}");
    eprintln!(
        "outcomes over {} fixtures × 4 functions: {outcomes:?}",
        fixtures.len()
    );
}

fn event_of(fixtures: &[(String, Value)], name: &str) -> Value {
    fixtures
        .iter()
        .find(|(file, _)| file == name)
        .map(|(_, event)| event.clone())
        .unwrap_or_else(|| panic!("no fixture {name}"))
}
