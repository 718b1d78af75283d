//! health-prober against local HTTP endpoints and moto resources in each state.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic};
use aws_sdk_dynamodb::types::AttributeValue;
use health_prober::config::ProberConfig;
use health_prober::{HealthReport, Prober, ProberOutput};
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_shared::model::{
    Action, Check, Outcome, Report, SettleBy, TriggerInfo, TriggerKind, Verification,
    VerificationStatus,
};
use runbook_shared::store::AuditStore;
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    TableSpec, alarm_in_state, create_audit_table, create_function, create_queue, create_stack,
    prober, prober_clients, put_metric, scheduled_event, send_messages,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

async fn run(prober: &Prober, event: Value) -> HealthReport {
    let invocation = Invocation::new(
        uuid::Uuid::new_v4().to_string(),
        Deadline::after(Duration::from_secs(60)),
    );
    match prober.handle(event, &invocation).await {
        ProberOutput::Health(report) => *report,
        other => panic!("not a health report: {other:?}"),
    }
}

fn result<'a>(report: &'a HealthReport, name: &str) -> &'a health_prober::check::ProbeResult {
    report
        .probes
        .iter()
        .find(|probe| probe.name == name)
        .unwrap_or_else(|| panic!("no probe {name}"))
}

#[tokio::test]
async fn http_failures_are_told_apart() {
    let _own = runbook_tests::moto::isolated("http_failures_are_told_apart").await;
    let endpoints = Endpoints::start().await;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let conditions = json!([
        r#"$.status == "healthy""#,
        r#"$.database == "connected""#,
        "$.queue_depth < 100"
    ]);
    let probes = json!([
        {"name": "healthy", "kind": "http", "url": endpoints.url("/health"), "body": conditions},
        {"name": "error", "kind": "http", "url": endpoints.url("/error")},
        {"name": "accepts-500", "kind": "http", "url": endpoints.url("/error"), "expect_status": [200, 500]},
        {"name": "slow", "kind": "http", "url": endpoints.url("/slow/400"), "max_latency_ms": 100},
        {"name": "timeout", "kind": "http", "url": endpoints.url("/hang"), "timeout_ms": 300},
        {"name": "wrong-body", "kind": "http", "url": endpoints.url("/degraded"), "body": conditions},
        {"name": "invalid-json", "kind": "http", "url": endpoints.url("/invalid-json"), "body": conditions},
        {"name": "closed", "kind": "http", "url": endpoints.closed},
    ]);
    let started = Instant::now();
    let report = run(&prober(&audit, &[]), json!({"probes": probes})).await;
    // All concurrent: the hanging endpoint costs its 300 ms timeout, not two minutes.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.healthy);
    let expectations = [
        ("healthy", true, "status 200"),
        ("error", false, "wrong status 500 (expected 200)"),
        ("accepts-500", true, "status 500"),
        ("slow", false, "slow: "),
        ("timeout", false, "timeout"),
        (
            "wrong-body",
            false,
            r#"failed condition $.status == "healthy" (got "degraded")"#,
        ),
        ("invalid-json", false, "invalid JSON body"),
        ("closed", false, "unreachable"),
    ];
    for (name, healthy, detail) in expectations {
        let probe = result(&report, name);
        assert_eq!(probe.healthy, healthy, "{probe:?}");
        assert!(
            probe.detail.starts_with(detail),
            "{name}: {:?} should start with {detail:?}",
            probe.detail
        );
        assert_eq!(probe.kind, "http");
    }
    assert!(result(&report, "timeout").latency_ms < 2_000);
    assert!(
        report
            .reason
            .starts_with("6 of 8 probes unhealthy: error, slow, timeout"),
        "{}",
        report.reason
    );
}

#[tokio::test]
async fn aws_resources_in_each_state() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let dynamodb = moto().dynamodb();
    let table = TableSpec::provisioned("probe-table", 5, 5)
        .create(&dynamodb)
        .await;
    let pitr_table = TableSpec::provisioned("probe-pitr", 5, 5)
        .create(&dynamodb)
        .await;
    dynamodb
        .update_continuous_backups()
        .table_name(&pitr_table)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let sqs = moto().sqs();
    let busy = create_queue(&sqs, &unique("probe-dlq"), &[]).await;
    send_messages(
        &sqs,
        &busy,
        &["a".to_string(), "b".to_string(), "c".to_string()],
        None,
        &[],
    )
    .await;
    let idle = create_queue(&sqs, &unique("probe-idle"), &[]).await;
    let stack = unique("probe-stack");
    create_stack(
        &moto().cloudformation(),
        &stack,
        json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    let prefix = unique("probe-alarm");
    let cloudwatch = moto().cloudwatch();
    cloudwatch
        .put_metric_alarm()
        .alarm_name(format!("{prefix}-errors"))
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await
        .unwrap();
    cloudwatch
        .set_alarm_state()
        .alarm_name(format!("{prefix}-errors"))
        .state_value(StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    let function = unique("probe-fn");
    create_function(moto(), &function).await;

    let probes = json!([
        {"name": "table", "kind": "dynamodb_table", "table": table},
        {"name": "table-pitr-missing", "kind": "dynamodb_table", "table": table, "require_pitr": true},
        {"name": "table-pitr", "kind": "dynamodb_table", "table": pitr_table, "require_pitr": true},
        {"name": "table-missing", "kind": "dynamodb_table", "table": unique("nope")},
        {"name": "dlq", "kind": "sqs_queue", "queue": busy.name},
        {"name": "dlq-url", "kind": "sqs_queue", "queue": busy.url, "max_visible": 5},
        {"name": "idle", "kind": "sqs_queue", "queue": idle.name, "max_age_seconds": 300},
        {"name": "stack", "kind": "stack", "stack": stack},
        {"name": "stack-missing", "kind": "stack", "stack": unique("nope")},
        {"name": "alarms", "kind": "alarms", "prefix": prefix},
        {"name": "quiet-alarms", "kind": "alarms", "prefix": unique("quiet")},
        {"name": "function", "kind": "lambda", "function": function},
        {"name": "function-missing", "kind": "lambda", "function": unique("nope")},
    ]);
    let report = run(&prober(&audit, &[]), json!({"probes": probes})).await;
    let expectations = [
        ("table", true, "ACTIVE"),
        (
            "table-pitr-missing",
            false,
            "ACTIVE, but point-in-time recovery is DISABLED",
        ),
        ("table-pitr", true, "ACTIVE, point-in-time recovery ENABLED"),
        ("table-missing", false, "not found"),
        ("dlq", false, "3 visible messages (max 0)"),
        ("dlq-url", true, "3 visible messages"),
        ("idle", true, "0 visible messages"),
        ("stack", true, "CREATE_COMPLETE"),
        ("stack-missing", false, "not found"),
        ("alarms", false, "in ALARM: "),
        ("quiet-alarms", true, "no alarm named"),
        ("function", true, "State Active"),
        ("function-missing", false, "not found"),
    ];
    for (name, healthy, detail) in expectations {
        let probe = result(&report, name);
        assert_eq!(probe.healthy, healthy, "{probe:?}");
        assert!(
            probe.detail.starts_with(detail),
            "{name}: {:?} should start with {detail:?}",
            probe.detail
        );
    }
    assert!(
        result(&report, "alarms")
            .detail
            .contains(&format!("{prefix}-errors"))
    );
    assert_eq!(result(&report, "dlq").target, busy.name);
}

#[tokio::test]
async fn metrics_are_published_in_one_call() {
    let endpoints = Endpoints::start().await;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let namespace = unique("Probes");
    let probes = json!([
        {"name": "up", "kind": "http", "url": endpoints.url("/health")},
        {"name": "down", "kind": "http", "url": endpoints.url("/error")},
    ]);
    let report = run(
        &prober(&audit, &[("METRICS_NAMESPACE", &namespace)]),
        json!({"probes": probes}),
    )
    .await;
    let published = report.metrics.as_ref().expect("published");
    assert_eq!(
        (published.calls, published.datapoints),
        (1, 6),
        "{published:?}"
    );
    let cloudwatch = moto().cloudwatch();
    let read = |metric: &'static str, probe: Option<&'static str>| {
        let cloudwatch = cloudwatch.clone();
        let namespace = namespace.clone();
        async move {
            let now = chrono::Utc::now().timestamp();
            let mut request = cloudwatch
                .get_metric_statistics()
                .namespace(namespace)
                .metric_name(metric)
                .statistics(Statistic::Maximum)
                .period(60)
                .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now - 600,
                ))
                .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now + 600,
                ));
            if let Some(probe) = probe {
                request =
                    request.dimensions(Dimension::builder().name("Probe").value(probe).build());
            }
            request
                .send()
                .await
                .unwrap()
                .datapoints()
                .first()
                .and_then(|d| d.maximum())
        }
    };
    assert_eq!(read("Healthy", Some("up")).await, Some(1.0));
    assert_eq!(read("Healthy", Some("down")).await, Some(0.0));
    assert!(read("LatencyMs", Some("up")).await.is_some());
    assert_eq!(read("UnhealthyProbes", None).await, Some(1.0));
    assert_eq!(read("FailedVerifications", None).await, Some(0.0));
}

/// A remediation recorded `minutes_ago`, pending on `settle_by`.
async fn pending_record(
    audit: &AuditStore,
    target: &str,
    settle_by: SettleBy,
    minutes_ago: i64,
) -> String {
    let trigger = TriggerInfo {
        kind: TriggerKind::Manual,
        name: None,
        event_id: Some(uuid::Uuid::new_v4().to_string()),
    };
    let mut report = Report::new("limit-scaler", trigger, Outcome::Remediated, "raised");
    report.runbook = Some("dynamodb-capacity".into());
    report.target = Some(target.to_string());
    report.actions.push(Action {
        api: "dynamodb:UpdateTable".into(),
        target: target.into(),
        before: json!({"read": 5}),
        after: json!({"read": 10}),
        applied: true,
        error: None,
    });
    report.verification = Verification {
        status: VerificationStatus::Pending,
        checks: vec![
            Check::new("throttling_stopped", false, "back to normal", "pending"),
            Check::new("capacity_in_force", true, "read 10", "read 10"),
        ],
        settle_by: Some(settle_by),
    };
    audit
        .record(
            &mut report,
            chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
        )
        .await
        .unwrap();
    report.audit_id.unwrap()
}

#[tokio::test]
async fn the_sweep_settles_pending_verifications_both_ways() {
    let audit_table = create_audit_table(&moto().dynamodb()).await;
    let audit = AuditStore::new(moto().dynamodb(), audit_table.clone(), 1);
    let alarm = |name: String, state: StateValue| async move {
        alarm_in_state(&name, state).await;
        name
    };
    let ok_alarm = alarm(unique("recovered"), StateValue::Ok).await;
    let firing_alarm = alarm(unique("still-firing"), StateValue::Alarm).await;
    let recovered = pending_record(
        &audit,
        &unique("t-ok"),
        SettleBy::Alarm { name: ok_alarm },
        30,
    )
    .await;
    let firing_target = unique("t-alarm");
    let still_firing = pending_record(
        &audit,
        &firing_target,
        SettleBy::Alarm { name: firing_alarm },
        30,
    )
    .await;
    let quiet_table = unique("t-quiet");
    let quiet = pending_record(
        &audit,
        &quiet_table,
        SettleBy::Metric {
            namespace: "AWS/DynamoDB".into(),
            metrics: vec!["ReadThrottleEvents".into()],
            dimensions: [("TableName".to_string(), quiet_table.clone())].into(),
            max_sum: 0.0,
        },
        30,
    )
    .await;
    // Throttle figures of 0 since the change: an observation that the raise held.
    put_metric(
        moto(),
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        &[("TableName", quiet_table.as_str())],
        0.0,
        600,
    )
    .await;
    // No datapoint at all since the change: no observation, which is never a success.
    let silent_table = unique("t-silent");
    let silent = pending_record(
        &audit,
        &silent_table,
        SettleBy::Metric {
            namespace: "AWS/DynamoDB".into(),
            metrics: vec!["ReadThrottleEvents".into()],
            dimensions: [("TableName".to_string(), silent_table.clone())].into(),
            max_sum: 0.0,
        },
        30,
    )
    .await;
    // Still nothing at the give-up time: the change's own check verifies it, and says so.
    let idle_table = unique("t-idle");
    let idle = pending_record(
        &audit,
        &idle_table,
        SettleBy::Metric {
            namespace: "AWS/DynamoDB".into(),
            metrics: vec!["ReadThrottleEvents".into()],
            dimensions: [("TableName".to_string(), idle_table.clone())].into(),
            max_sum: 0.0,
        },
        25 * 60,
    )
    .await;
    let too_recent = pending_record(
        &audit,
        &unique("t-new"),
        SettleBy::Alarm {
            name: "whatever".into(),
        },
        1,
    )
    .await;

    let report = run(&prober(&audit_table, &[]), scheduled_event()).await;
    let status = |id: &str| {
        report
            .settled
            .iter()
            .find(|s| s.audit_id == id)
            .map(|s| s.status)
    };
    assert_eq!(
        status(&recovered),
        Some(VerificationStatus::Verified),
        "{:?}",
        report.settled
    );
    assert_eq!(status(&still_firing), Some(VerificationStatus::Failed));
    assert_eq!(status(&quiet), Some(VerificationStatus::Verified));
    assert_eq!(status(&silent), Some(VerificationStatus::Pending));
    let silent_said = report
        .settled
        .iter()
        .find(|s| s.audit_id == silent)
        .map(|s| s.observed.clone())
        .unwrap_or_default();
    assert!(silent_said.contains("no datapoints"), "{silent_said}");
    assert_eq!(status(&idle), Some(VerificationStatus::Verified));
    let idle_said = report
        .settled
        .iter()
        .find(|s| s.audit_id == idle)
        .map(|s| s.observed.clone())
        .unwrap_or_default();
    assert!(
        idle_said.contains("verified by the change's own check")
            && idle_said.contains("capacity_in_force"),
        "{idle_said}"
    );
    assert_eq!(status(&too_recent), None, "inside its check window");
    assert!(
        report
            .reason
            .contains("3 verified, 1 failed, 1 still pending"),
        "{}",
        report.reason
    );

    // The records say so, and are no longer pending.
    let remaining = audit
        .pending_before(chrono::Utc::now(), 1_000)
        .await
        .unwrap();
    let mut ids: Vec<&str> = remaining.iter().map(|r| r.audit_id.as_str()).collect();
    ids.sort_unstable();
    let mut open = vec![silent.as_str(), too_recent.as_str()];
    open.sort_unstable();
    assert_eq!(ids, open);
    let history = audit.history(&firing_target).await.unwrap();
    assert_eq!(
        history[0].report.verification.status,
        VerificationStatus::Failed
    );
    assert!(
        history[0].report.verification.checks[0]
            .observed
            .contains("still in ALARM")
    );

    let again = run(&prober(&audit_table, &[]), scheduled_event()).await;
    assert!(
        !again.settled.is_empty()
            && again
                .settled
                .iter()
                .all(|s| s.audit_id == silent && s.status == VerificationStatus::Pending),
        "settled once, only the unobserved one looked at again: {:?}",
        again.settled
    );
}

#[tokio::test]
async fn bad_probe_payloads_are_rejected_and_other_events_too() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let prober = prober(&audit, &[]);
    let invocation = Invocation::new("x", Deadline::after(Duration::from_secs(30)));
    let cases = [
        (
            json!({"probes": [{"name": "x", "kind": "smtp"}]}),
            "unknown kind",
        ),
        (
            json!({"probes": [{"name": "x", "kind": "http", "url": "http://a", "retries": 2}]}),
            "probes[0] (probe \"x\"): unknown field `retries`",
        ),
        (
            json!({"probe": []}),
            "unknown field `probe`, expected `probes`",
        ),
        (json!({"probes": {}}), "must be a JSON array"),
        (
            runbook_tests::fixtures::queue_alarm_event("a", "ALARM", "q"),
            "not on this event",
        ),
    ];
    for (payload, expected) in cases {
        let ProberOutput::Report(report) = prober.handle(payload.clone(), &invocation).await else {
            panic!("{payload} accepted")
        };
        assert_eq!(report.outcome, Outcome::Rejected);
        assert!(
            report.reason.contains(expected),
            "{payload}: {:?} should contain {expected:?}",
            report.reason
        );
    }
}

/// Records `values` of a metric with one dimension, `seconds_ago`.
async fn put_values(
    namespace: &str,
    metric: &str,
    function: &str,
    values: &[f64],
    seconds_ago: i64,
) {
    moto()
        .cloudwatch()
        .put_metric_data()
        .namespace(namespace)
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name(metric)
                .dimensions(
                    Dimension::builder()
                        .name("FunctionName")
                        .value(function)
                        .build(),
                )
                .set_values(Some(values.to_vec()))
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - seconds_ago,
                ))
                .build(),
        )
        .send()
        .await
        .expect("put metric data");
}

#[tokio::test]
async fn metric_probes_hold_a_statistic_within_its_bounds() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let namespace = unique("Custom/Orders");
    let (quiet, failing, slow) = (unique("quiet"), unique("failing"), unique("slow"));
    put_values(&namespace, "Errors", &quiet, &[0.0, 0.0], 60).await;
    put_values(&namespace, "Errors", &failing, &[0.0, 3.0, 4.0], 60).await;
    // 100 durations: p99 is the 99th of them, 990 ms; the maximum is 5,000 ms.
    let mut durations: Vec<f64> = (1..=99).map(|i| f64::from(i) * 10.0).collect();
    durations.push(5_000.0);
    put_values(&namespace, "Duration", &slow, &durations, 60).await;
    let metric = |name: &str, metric: &str, function: &str, stat: &str, bound: Value| {
        let mut probe = json!({
            "name": name, "kind": "metric", "namespace": namespace, "metric": metric,
            "dimensions": {"FunctionName": function}, "stat": stat, "period_seconds": 60,
            "minutes": 10,
        });
        probe
            .as_object_mut()
            .unwrap()
            .extend(bound.as_object().unwrap().clone());
        probe
    };
    let probes = json!([
        metric("no-errors", "Errors", &quiet, "Sum", json!({"max": 0})),
        metric("errors", "Errors", &failing, "Sum", json!({"max": 0})),
        metric("p99-fast", "Duration", &slow, "p99", json!({"max": 1000})),
        metric(
            "max-slow",
            "Duration",
            &slow,
            "Maximum",
            json!({"max": 1000})
        ),
        metric(
            "traffic",
            "Errors",
            &failing,
            "SampleCount",
            json!({"min": 5})
        ),
        metric("no-data", "Errors", "nobody", "Sum", json!({"max": 0})),
        metric(
            "no-data-ok",
            "Errors",
            "nobody",
            "Sum",
            json!({"max": 0, "missing_data": "healthy"})
        ),
    ]);
    let report = run(&prober(&audit, &[]), json!({"probes": probes})).await;

    let verdict = |name: &str| {
        let probe = result(&report, name);
        (probe.healthy, probe.detail.clone())
    };
    let (ok, detail) = verdict("no-errors");
    assert!(
        ok && detail.contains("Sum over the last 10 min: 0"),
        "{detail}"
    );
    let (ok, detail) = verdict("errors");
    assert!(!ok && detail.contains("7 is above the max 0"), "{detail}");
    let (ok, detail) = verdict("p99-fast");
    assert!(
        ok && detail.contains("p99 over the last 10 min: 990"),
        "{detail}"
    );
    let (ok, detail) = verdict("max-slow");
    assert!(
        !ok && detail.contains("5000 is above the max 1000"),
        "{detail}"
    );
    let (ok, detail) = verdict("traffic");
    assert!(!ok && detail.contains("3 is below the min 5"), "{detail}");
    let (ok, detail) = verdict("no-data");
    assert!(
        !ok && detail.starts_with("no data") && detail.contains("missing_data is unhealthy"),
        "{detail}"
    );
    let (ok, detail) = verdict("no-data-ok");
    assert!(ok && detail.contains("missing_data is healthy"), "{detail}");
    assert_eq!(result(&report, "errors").kind, "metric");
    assert!(!report.healthy);

    // Bad definitions are rejected, naming the probe and the field.
    let invocation = Invocation::new("x", Deadline::after(Duration::from_secs(30)));
    for (bound, expected) in [
        (json!({}), "give \"max\", \"min\" or both"),
        (json!({"max": 1, "stat": "p101"}), "\"stat\" must be one of"),
        (
            json!({"max": 1, "period_seconds": 45}),
            "\"period_seconds\"",
        ),
        (json!({"min": 5, "max": 1}), "is above \"max\""),
        (
            json!({"max": 1, "missing_data": "maybe"}),
            "unknown variant `maybe`",
        ),
    ] {
        let probe = metric("bad", "Errors", &quiet, "Sum", bound);
        let ProberOutput::Report(rejected) = prober(&audit, &[])
            .handle(json!({"probes": [probe]}), &invocation)
            .await
        else {
            panic!("{probe} accepted")
        };
        assert_eq!(rejected.outcome, Outcome::Rejected);
        assert!(
            rejected.reason.contains("probe \"bad\"") && rejected.reason.contains(expected),
            "{}",
            rejected.reason
        );
    }
}

/// Stack states moto cannot be put in, replayed on the real client.
#[tokio::test]
async fn stacks_failed_or_stuck_are_unhealthy_with_the_failure_reason() {
    use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{ResourceStatus, Stack, StackEvent, StackStatus};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let stack = |name: &str, status: StackStatus, minutes_ago: i64| {
        Stack::builder()
            .stack_name(name)
            .stack_status(status)
            .creation_time(aws_smithy_types::DateTime::from_secs(
                chrono::Utc::now().timestamp() - 86_400,
            ))
            .last_updated_time(aws_smithy_types::DateTime::from_secs(
                chrono::Utc::now().timestamp() - minutes_ago * 60,
            ))
            .build()
    };
    let (failed, stuck, fresh) = (
        stack("failed", StackStatus::UpdateRollbackFailed, 10),
        stack("stuck", StackStatus::UpdateInProgress, 75),
        stack("fresh", StackStatus::UpdateInProgress, 5),
    );
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_compute_output(
        move |request| {
            let found = [&failed, &stuck, &fresh]
                .into_iter()
                .find(|s| s.stack_name() == request.stack_name())
                .cloned();
            DescribeStacksOutput::builder()
                .set_stacks(found.map(|s| vec![s]))
                .build()
        },
    );
    let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events).then_output(|| {
        DescribeStackEventsOutput::builder()
            .stack_events(
                StackEvent::builder()
                    .logical_resource_id("Api")
                    .resource_status(ResourceStatus::UpdateComplete)
                    .build(),
            )
            .stack_events(
                StackEvent::builder()
                    .logical_resource_id("OrdersTable")
                    .resource_status(ResourceStatus::UpdateFailed)
                    .resource_status_reason(
                        "Resource handler returned message: \"Subscriber limit exceeded\"",
                    )
                    .build(),
            )
            .build()
    });
    let mut clients = prober_clients();
    clients.cloudformation = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &events]
    );
    let audit = create_audit_table(&moto().dynamodb()).await;
    let config =
        ProberConfig::from_env(&Env::from_pairs(&[("AUDIT_TABLE", audit.as_str())])).unwrap();
    let prober = Prober::with_clients(config, clients);
    let probes = json!([
        {"name": "failed", "kind": "stack", "stack": "failed"},
        {"name": "stuck", "kind": "stack", "stack": "stuck", "max_in_progress_minutes": 60},
        {"name": "fresh", "kind": "stack", "stack": "fresh", "max_in_progress_minutes": 60},
    ]);
    let report = run(&prober, json!({"probes": probes})).await;
    let failed = result(&report, "failed");
    assert!(!failed.healthy);
    assert_eq!(
        failed.detail,
        "UPDATE_ROLLBACK_FAILED: OrdersTable UPDATE_FAILED: Resource handler returned message: \"Subscriber limit exceeded\""
    );
    let stuck = result(&report, "stuck");
    assert!(
        !stuck.healthy
            && stuck
                .detail
                .starts_with("UPDATE_IN_PROGRESS for 75 min (max 60 min)"),
        "{stuck:?}"
    );
    let fresh = result(&report, "fresh");
    assert!(
        fresh.healthy && fresh.detail.starts_with("UPDATE_IN_PROGRESS for 5 min"),
        "{fresh:?}"
    );
}

/// PAUSE_AFTER_FAILED_VERIFICATIONS: the sweep pauses the automation once that many
/// verifications have settled as failed within 60 minutes, naming them; after a person resumes,
/// the same failures do not pause it again.
#[tokio::test]
async fn the_sweep_pauses_the_automation_after_repeated_failed_verifications() {
    let audit_table = create_audit_table(&moto().dynamodb()).await;
    let audit = AuditStore::new(moto().dynamodb(), audit_table.clone(), 1);
    let firing = unique("firing");
    alarm_in_state(&firing, StateValue::Alarm).await;
    let failing = async || {
        let target = unique("t-failing");
        let settle_by = SettleBy::Alarm {
            name: firing.clone(),
        };
        pending_record(&audit, &target, settle_by, 30).await
    };
    let first = failing().await;
    let second = failing().await;
    let tripping = prober(&audit_table, &[("PAUSE_AFTER_FAILED_VERIFICATIONS", "3")]);

    // Two failures: below the threshold.
    let report = run(&tripping, scheduled_event()).await;
    assert_eq!(report.settled.len(), 2, "{:?}", report.settled);
    assert!(report.paused.is_none(), "{:?}", report.paused);

    // The third trips it.
    let third = failing().await;
    let report = run(&tripping, scheduled_event()).await;
    let paused = report.paused.as_ref().expect("paused");
    assert_eq!(paused.outcome, Outcome::Remediated, "{paused:?}");
    assert!(paused.audit_id.is_some(), "the pause is audited");
    for id in [&first, &second, &third] {
        assert!(paused.reason.contains(id.as_str()), "{}", paused.reason);
    }
    assert!(
        report.reason.contains("PAUSE_AFTER_FAILED_VERIFICATIONS=3"),
        "{}",
        report.reason
    );
    let output = serde_json::to_value(&report).unwrap();
    let published = runbook_shared::edge::publish::worth_publishing(&output);
    assert!(
        published
            .iter()
            .any(|event| runbook_shared::edge::publish::detail_type(event)
                == "Runbook Automation Paused"),
        "{published:?}"
    );
    let status = tripping.switch.paused().await.expect("paused");
    assert!(
        status.starts_with("paused: paused by health-prober (automatically)"),
        "{status}"
    );

    // A person resumes: the same failures do not trip it again.
    let invocation = Invocation::new(
        uuid::Uuid::new_v4().to_string(),
        Deadline::after(Duration::from_secs(60)),
    );
    let ProberOutput::Report(resumed) = tripping
        .handle(
            json!({"control": "resume", "reason": "looked at them"}),
            &invocation,
        )
        .await
    else {
        panic!("expected the resume's report");
    };
    assert_eq!(resumed.outcome, Outcome::Remediated, "{resumed:?}");
    let report = run(&tripping, scheduled_event()).await;
    assert!(report.paused.is_none(), "{:?}", report.paused);
    assert!(tripping.switch.paused().await.is_none());

    // A timed pause written by hand (no resume recorded) that has run out: the failures
    // before its end were seen, and do not trip it again either.
    moto()
        .dynamodb()
        .put_item()
        .table_name(&audit_table)
        .item("pk", AttributeValue::S("control#automation".into()))
        .item("sk", AttributeValue::S("switch".into()))
        .item("paused", AttributeValue::Bool(true))
        .item("by", AttributeValue::S("bob".into()))
        .item("reason", AttributeValue::S("a look".into()))
        .item(
            "until",
            AttributeValue::S(runbook_shared::model::timestamp(chrono::Utc::now())),
        )
        .send()
        .await
        .unwrap();
    let report = run(&tripping, scheduled_event()).await;
    assert!(report.paused.is_none(), "{:?}", report.paused);

    // With the threshold at 0 it never trips.
    for _ in 0..3 {
        failing().await;
    }
    let report = run(
        &prober(&audit_table, &[("PAUSE_AFTER_FAILED_VERIFICATIONS", "0")]),
        scheduled_event(),
    )
    .await;
    assert_eq!(report.settled.len(), 3);
    assert!(report.paused.is_none());
}

#[tokio::test]
async fn with_nothing_to_check_the_health_check_is_not_healthy() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let namespace = unique("Probes");
    let report = run(
        &prober(&audit, &[("METRICS_NAMESPACE", &namespace)]),
        scheduled_event(),
    )
    .await;
    assert!(!report.healthy, "{report:?}");
    assert!(report.probes.is_empty());
    assert!(
        report
            .reason
            .starts_with("not healthy: nothing was checked, no probes are configured (set PROBES"),
        "{}",
        report.reason
    );
    // The sweep's figure is published; no "0 unhealthy" is.
    let published: Vec<String> = moto()
        .cloudwatch()
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .expect("list metrics")
        .metrics()
        .iter()
        .filter_map(|metric| metric.metric_name().map(str::to_string))
        .collect();
    assert_eq!(published, ["FailedVerifications"], "{published:?}");
}
