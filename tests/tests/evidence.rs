//! The evidence in every report about a Lambda function (and a table or queue behind one),
//! against moto: errors in the logs (normalised, never copied whole), the figures of this window
//! and the one before, recent changes; a read that fails or runs out of time is named and never
//! fails the run; lambda-resources raises only on the evidence it needs.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use runbook_shared::model::{Outcome, Output, Report};
use runbook_tests::fixtures::{
    QueuePair, TableSpec, create_audit_table, create_deployed_function, create_function,
    invocation, lambda_alarm_event, log_lines, redriver, redriver_clients, responder,
    responder_clients, scaler, scaler_clients, send_messages,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

/// Records `value` of an AWS/Lambda metric for the alias, `seconds_ago`.
async fn lambda_metric(function: &str, alias: &str, metric: &str, value: f64, seconds_ago: i64) {
    moto()
        .cloudwatch()
        .put_metric_data()
        .namespace("AWS/Lambda")
        .metric_data(
            MetricDatum::builder()
                .metric_name(metric)
                .dimensions(
                    Dimension::builder()
                        .name("FunctionName")
                        .value(function)
                        .build(),
                )
                .dimensions(
                    Dimension::builder()
                        .name("Resource")
                        .value(format!("{function}:{alias}"))
                        .build(),
                )
                .value(value)
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    chrono::Utc::now().timestamp() - seconds_ago,
                ))
                .build(),
        )
        .send()
        .await
        .expect("put metric data");
}

fn evidence(report: &Report) -> &Value {
    &report.diagnosis.as_ref().expect("a diagnosis")["evidence"]
}

#[tokio::test]
async fn a_rollback_report_carries_the_logs_the_figures_and_the_fresh_deploy() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-evidence");
    create_deployed_function(moto(), &function, "2").await;
    log_lines(
        &function,
        &[
            "2026-11-30T10:00:00.000Z\t3f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f60\tERROR\tInvoke Error: order 4711 for \"alice@example.com\" failed",
            "2026-11-30T10:00:01.000Z\t4f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f61\tERROR\tInvoke Error: order 4712 for \"bob@example.com\" failed",
            "2026-11-30T10:00:02.000Z 5f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f62 Task timed out after 3.00 seconds",
            r#"{"level":"ERROR","message":"AccessDeniedException: not authorized to perform dynamodb:PutItem on orders"}"#,
            "START RequestId: 6f2a Version: 2",
        ],
    )
    .await;
    // 5 errors of 50 runs now, none of 40 in the window before (20 minutes ago).
    lambda_metric(&function, "live", "Errors", 5.0, 30).await;
    lambda_metric(&function, "live", "Invocations", 50.0, 30).await;
    lambda_metric(&function, "live", "Errors", 0.0, 1_200).await;
    lambda_metric(&function, "live", "Invocations", 40.0, 1_200).await;

    let event = lambda_alarm_event(
        &format!("{function}-errors"),
        "ALARM",
        "Errors",
        &function,
        Some("live"),
    );
    let report = responder(&audit, &[], responder_clients())
        .handle(event, &invocation())
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    let evidence = evidence(&report);

    let logs = &evidence["logs"];
    assert_eq!(logs["log_group"], format!("/aws/lambda/{function}"));
    assert_eq!(logs["timeouts"], 1, "{logs}");
    assert_eq!(logs["access_denied"], 1, "{logs}");
    assert_eq!(logs["out_of_memory"], 0, "{logs}");
    assert_eq!(
        logs["top_errors"][0],
        json!({"message": "ERROR Invoke Error: order <n> for \"…\" failed", "count": 2}),
        "{logs}"
    );
    // Payloads stay out of the report: no address, no order number.
    let text = evidence.to_string();
    assert!(
        !text.contains("alice@example.com") && !text.contains("4711"),
        "{text}"
    );
    assert!(
        !text.contains("START RequestId"),
        "platform lines are not errors: {text}"
    );

    let metrics = &evidence["metrics"];
    assert_eq!(
        metrics["errors"],
        json!({"window": 5.0, "previous": 0.0}),
        "{metrics}"
    );
    assert_eq!(
        metrics["invocations"],
        json!({"window": 50.0, "previous": 40.0})
    );
    assert_eq!(
        metrics["error_rate"],
        json!({"window": 0.1, "previous": 0.0})
    );
    assert!(metrics["duration_p99_ms"].is_object() && metrics["throttles"].is_object());

    let changes = evidence["recent_changes"]
        .as_array()
        .expect("recent changes");
    let kinds: Vec<&str> = changes.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "version_published").count(),
        2,
        "{changes:?}"
    );
    assert!(kinds.contains(&"alias_moved"), "{changes:?}");
    assert!(kinds.contains(&"configuration_updated"), "{changes:?}");
    assert!(changes.iter().all(|c| c["at"].is_string()));
    assert!(evidence.get("errors").is_none(), "{evidence}");
}

#[tokio::test]
async fn memory_is_raised_only_on_out_of_memory_and_the_timeout_on_timeouts_in_the_logs() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-worker");
    create_function(moto(), &function).await;
    let responder = responder(&audit, &[("COOLDOWN_SECONDS", "0")], responder_clients());
    let raise =
        |what: &str| json!({"runbook": "lambda-resources", "function": function, "raise": what});

    let kept = responder.handle(raise("memory"), &invocation()).await;
    assert_eq!(kept.outcome, Outcome::NoAction, "{kept:?}");
    assert!(
        kept.reason
            .contains("memory kept: no evidence of out-of-memory (out-of-memory: 0 in the logs)"),
        "{}",
        kept.reason
    );
    assert!(kept.actions.is_empty());

    log_lines(
        &function,
        &[
            "REPORT RequestId: 1f2e Duration: 812.00 ms Billed Duration: 812 ms Memory Size: 128 MB Max Memory Used: 128 MB Status: error Error Type: Runtime.OutOfMemory",
            "2026-11-30T10:00:02.000Z 5f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f62 Task timed out after 3.00 seconds",
        ],
    )
    .await;
    let memory = responder.handle(raise("memory"), &invocation()).await;
    assert_eq!(memory.outcome, Outcome::Remediated, "{memory:?}");
    assert_eq!(memory.actions[0].after, json!({"memory_mb": 192}));
    // No Duration datapoints at all: the logged timeout is the evidence.
    let timeout = responder.handle(raise("timeout"), &invocation()).await;
    assert_eq!(timeout.outcome, Outcome::Remediated, "{timeout:?}");
    assert_eq!(timeout.actions[0].after, json!({"timeout_seconds": 5}));
    assert_eq!(evidence(&timeout)["logs"]["timeouts"], 1);
}

#[tokio::test]
async fn evidence_that_cannot_be_read_is_named_and_never_fails_or_slows_the_run() {
    let _own = runbook_tests::moto::isolated(
        "evidence_that_cannot_be_read_is_named_and_never_fails_or_slows_the_run",
    )
    .await;
    use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-unlogged");
    create_function(moto(), &function).await;
    let denied = mock!(aws_sdk_cloudwatchlogs::Client::filter_log_events).then_error(|| {
        FilterLogEventsError::generic(runbook_tests::replay::error_meta(
            "AccessDeniedException",
            "not authorized to perform: logs:FilterLogEvents",
        ))
    });
    let clients = alarm_responder::Clients {
        logs: mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&denied]),
        ..responder_clients()
    };
    let dry_run = json!({"runbook": "lambda-resources", "function": function, "raise": "timeout", "dry_run": true});
    let report = responder(&audit, &[], clients)
        .handle(dry_run.clone(), &invocation())
        .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    let errors = evidence(&report)["errors"].to_string();
    assert!(
        errors.contains("logs:FilterLogEvents") && errors.contains("AccessDenied"),
        "{errors}"
    );
    assert!(
        report
            .reason
            .contains("Task timed out: the logs could not be read"),
        "{}",
        report.reason
    );
    assert!(
        evidence(&report)["metrics"].is_object(),
        "the other reads still count"
    );

    // A read that hangs costs about a second, not the run.
    log_lines(&function, &["ERROR boom"]).await;
    moto()
        .delay("FilterLogEvents", &format!("/aws/lambda/{function}"), 5_000)
        .await;
    let started = Instant::now();
    let slow = responder(
        &audit,
        &[("EVIDENCE_READ_TIMEOUT_MS", "1000")],
        responder_clients(),
    )
    .handle(dry_run, &invocation())
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        evidence(&slow)["errors"]
            .to_string()
            .contains("logs: not read within 1000 ms"),
        "{slow:?}"
    );
}

#[tokio::test]
async fn tables_and_queues_have_their_figures() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-evidence", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let report = match scaler(&audit, &[], scaler_clients())
        .handle(json!({"table": table, "dry_run": true}), &invocation())
        .await
    {
        Output::One(report) => *report,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.outcome, Outcome::Planned, "{report:?}");
    let metrics = &evidence(&report)["metrics"];
    for figure in [
        "consumed_read_units",
        "consumed_write_units",
        "read_throttle_events",
        "write_throttle_events",
    ] {
        assert!(metrics[figure].is_object(), "{figure}: {metrics}");
    }
    assert!(evidence(&report).get("logs").is_none());

    let sqs = moto().sqs();
    let pair = QueuePair::create(&sqs, "managed-evidence", false).await;
    send_messages(&sqs, &pair.dlq, &["{}".to_string()], None, &[]).await;
    let report = match redriver(&audit, &[], redriver_clients())
        .handle(
            json!({"dlq": pair.dlq.name, "action": "redrive", "dry_run": true}),
            &invocation(),
        )
        .await
    {
        Output::One(report) => *report,
        other => panic!("{other:?}"),
    };
    let metrics = &evidence(&report)["metrics"];
    assert!(
        metrics["visible_max"].is_object() && metrics["oldest_age_seconds_max"].is_object(),
        "{report:?}"
    );
}
