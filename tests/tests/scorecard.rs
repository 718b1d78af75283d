//! The scorecard against an audit table in moto seeded with a known history: every figure, the
//! readiness line, the window, and the daily metrics.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use health_prober::Prober;
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_shared::model::{
    Action, ApprovalStatus, Check, Outcome, Plan, Report, TriggerInfo, TriggerKind, Verification,
    VerificationStatus, timestamp,
};
use runbook_shared::store::AuditStore;
use runbook_tests::fixtures::{create_audit_table, event_file, prober, scheduled_event};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

async fn handle(prober: &Prober, event: Value) -> Value {
    let invocation = Invocation::new(
        uuid::Uuid::new_v4().to_string(),
        Deadline::after(Duration::from_secs(60)),
    );
    serde_json::to_value(prober.handle(event, &invocation).await).expect("JSON")
}

fn trigger() -> TriggerInfo {
    TriggerInfo {
        kind: TriggerKind::Alarm,
        name: Some("throttles".into()),
        event_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}

fn action(target: &str) -> Action {
    Action {
        api: "dynamodb:UpdateTable".into(),
        target: target.into(),
        before: json!({"read": 5}),
        after: json!({"read": 10}),
        applied: true,
        error: None,
    }
}

/// A remediation of `resource` `days_ago`, its verification `status`, verified `after_seconds`
/// later (settled by the sweep or an OK transition when `settled`, else within the run).
async fn remediation(
    audit: &AuditStore,
    table: &str,
    runbook: &str,
    resource: &str,
    hours_ago: i64,
    status: VerificationStatus,
    after_seconds: Option<(i64, bool)>,
) {
    let started = Utc::now() - chrono::Duration::hours(hours_ago);
    let mut report = Report::new("limit-scaler", trigger(), Outcome::Remediated, "raised");
    report.runbook = Some(runbook.into());
    report.target = Some(resource.into());
    report.resource = Some(resource.into());
    report.actions.push(action(resource));
    report.verification = Verification {
        status,
        checks: vec![Check::new(
            "c",
            status == VerificationStatus::Verified,
            "e",
            "o",
        )],
        settle_by: None,
    };
    if let Some((seconds, false)) = after_seconds {
        report.duration_ms = u64::try_from(seconds * 1000).expect("positive");
    }
    audit.record(&mut report, started).await.expect("record");
    if let Some((seconds, true)) = after_seconds {
        let audit_id = report.audit_id.expect("audit id");
        moto()
            .dynamodb()
            .update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(format!("target#{resource}")))
            .key(
                "sk",
                AttributeValue::S(format!("{}#{audit_id}", timestamp(started))),
            )
            .update_expression("SET settled_at = :at")
            .expression_attribute_values(
                ":at",
                AttributeValue::S(timestamp(started + chrono::Duration::seconds(seconds))),
            )
            .send()
            .await
            .expect("settled_at");
    }
}

async fn run_line(
    audit: &AuditStore,
    runbook: &str,
    outcome: Outcome,
    reason: &str,
    hours_ago: i64,
) {
    let mut report = Report::new("limit-scaler", trigger(), outcome, reason);
    report.runbook = Some(runbook.into());
    report.target = Some("orders".into());
    audit
        .log_run(&report, Utc::now() - chrono::Duration::hours(hours_ago))
        .await;
}

/// A plan of `runbook`, decided `status` (an awaiting plan expires in `expires_in_minutes`).
async fn plan(audit: &AuditStore, runbook: &str, status: ApprovalStatus, expires_in_minutes: i64) {
    let now = Utc::now();
    let plan = Plan {
        plan_id: uuid::Uuid::new_v4().to_string(),
        function: "limit-scaler".into(),
        runbook: runbook.into(),
        resource: unique("resource"),
        target: "orders".into(),
        state_hash: "hash".into(),
        state: json!({}),
        fingerprint: unique("fingerprint"),
        question: json!(null),
        actions: vec![action("orders")],
        then: Vec::new(),
        summary: "raised".into(),
        trigger: trigger(),
        event: json!({}),
        created_at: now - chrono::Duration::hours(1),
        expires_at: now + chrono::Duration::minutes(expires_in_minutes),
    };
    audit
        .put_plan(&plan, &plan.fingerprint)
        .await
        .expect("plan");
    if status != ApprovalStatus::Requested {
        let decided = audit
            .decide_plan(&plan.plan_id, status, "alice", "seeded", now)
            .await
            .expect("decide");
        assert!(decided, "{status:?}");
    }
}

#[tokio::test]
async fn every_figure_of_a_known_history() {
    let dynamodb = moto().dynamodb();
    let table = create_audit_table(&dynamodb).await;
    let audit = AuditStore::new(dynamodb.clone(), table.clone(), 90);
    use VerificationStatus::{Failed, Pending, Verified};
    const CAPACITY: &str = "dynamodb-capacity";
    // dynamodb-capacity: five remediations in the window, one of them a repeat.
    remediation(
        &audit,
        &table,
        CAPACITY,
        "a",
        240,
        Verified,
        Some((60, true)),
    )
    .await;
    remediation(
        &audit,
        &table,
        CAPACITY,
        "a",
        238,
        Verified,
        Some((120, true)),
    )
    .await;
    remediation(&audit, &table, CAPACITY, "b", 120, Failed, None).await;
    remediation(&audit, &table, CAPACITY, "c", 24, Pending, None).await;
    remediation(
        &audit,
        &table,
        CAPACITY,
        "d",
        48,
        Verified,
        Some((3, false)),
    )
    .await;
    // The scale-down of a's raise 2 h later: a put-back, neither a remediation nor a repeat.
    let started = Utc::now() - chrono::Duration::hours(236);
    let mut scale_down = Report::new("limit-scaler", trigger(), Outcome::Remediated, "put back");
    scale_down.runbook = Some(CAPACITY.into());
    scale_down.target = Some("a".into());
    scale_down.resource = Some("a".into());
    scale_down.put_back = true;
    scale_down.actions.push(action("a"));
    scale_down.verification = Verification::settled(Check::new("c", true, "e", "o"));
    audit
        .record(&mut scale_down, started)
        .await
        .expect("record");
    // Outside the 30 days.
    remediation(
        &audit,
        &table,
        CAPACITY,
        "e",
        24 * 40,
        Verified,
        Some((1, false)),
    )
    .await;
    for (outcome, reason) in [
        (Outcome::Remediated, "raised"),
        (Outcome::Remediated, "raised"),
        (Outcome::Remediated, "raised"),
        (
            Outcome::Skipped,
            "cooldown: dynamodb-capacity changed a at …",
        ),
        (
            Outcome::Skipped,
            "cooldown: dynamodb-capacity changed b at …",
        ),
        (
            Outcome::Skipped,
            "budget spent: dynamodb-capacity took 10 …",
        ),
        (Outcome::AwaitingApproval, "awaiting approval: …"),
        (Outcome::Planned, "dry run: would have …"),
    ] {
        run_line(&audit, CAPACITY, outcome, reason, 5).await;
    }
    run_line(&audit, CAPACITY, Outcome::Remediated, "old", 24 * 40).await;
    for status in [
        ApprovalStatus::Approved,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
    ] {
        plan(&audit, CAPACITY, status, 30).await;
    }
    // One expired on record, one past its expiry with no decision, one still awaiting.
    plan(&audit, CAPACITY, ApprovalStatus::Expired, -5).await;
    plan(&audit, CAPACITY, ApprovalStatus::Requested, -5).await;
    plan(&audit, CAPACITY, ApprovalStatus::Requested, 30).await;

    // lambda-rollback has earned auto: 20 approvals, none denied, 20 verified, no repeat.
    for i in 0..20 {
        let resource = format!("function-{i}");
        remediation(
            &audit,
            &table,
            "lambda-rollback",
            &resource,
            30,
            Verified,
            Some((10 + i, true)),
        )
        .await;
        plan(&audit, "lambda-rollback", ApprovalStatus::Approved, 30).await;
    }

    let prober = prober(&table, &[]);
    let card = handle(&prober, event_file("manual-scorecard.json", &[])).await;
    assert_eq!(card["report"], "scorecard", "{card}");
    assert_eq!(card["days"], 30);
    let runbooks = card["runbooks"].as_array().expect("runbooks");
    assert_eq!(runbooks.len(), 2, "{card}");
    let capacity = &runbooks[0];
    assert_eq!(capacity["runbook"], CAPACITY);
    assert_eq!(capacity["runs"], 8);
    assert_eq!(
        capacity["outcomes"],
        json!({"remediated": 3, "skipped": 3, "awaiting_approval": 1, "planned": 1})
    );
    assert_eq!(capacity["remediated"], 5);
    assert_eq!(capacity["put_backs"], 1);
    assert_eq!(capacity["verified"], 3);
    assert_eq!(capacity["failed"], 1);
    assert_eq!(capacity["pending"], 1);
    assert_eq!(capacity["verified_rate"], 0.6);
    // Times to verified 3, 60 and 120 s: nearest-rank p50 60, p95 120.
    assert_eq!(capacity["time_to_verified_p50_seconds"], 60.0);
    assert_eq!(capacity["time_to_verified_p95_seconds"], 120.0);
    assert_eq!(capacity["repeats"], 1);
    assert_eq!(capacity["repeat_rate"], 0.2);
    assert_eq!(
        capacity["skipped_by_guard"],
        json!({"cooldown": 2, "budget": 1})
    );
    assert_eq!(
        capacity["approvals"],
        json!({"approved": 2, "denied": 1, "expired": 2, "awaiting": 1})
    );
    assert_eq!(
        capacity["readiness"],
        "not ready for auto: 2 approved of 20; 1 denied (must be 0); 60.0% verified (must be at least 95%); 1 repeats within 24 h (must be 0)"
    );
    let rollback = &runbooks[1];
    assert_eq!(rollback["runbook"], "lambda-rollback");
    assert_eq!(rollback["remediated"], 20);
    assert_eq!(rollback["verified_rate"], 1.0);
    assert_eq!(rollback["time_to_verified_p50_seconds"], 19.0);
    assert_eq!(rollback["time_to_verified_p95_seconds"], 28.0);
    assert_eq!(rollback["repeats"], 0);
    assert_eq!(rollback["approvals"]["approved"], 20);
    assert_eq!(rollback["readiness"], "ready for auto");

    // A shorter window: only the last 3 days of dynamodb-capacity.
    let recent = handle(&prober, json!({"report": "scorecard", "days": 3})).await;
    let capacity = &recent["runbooks"][0];
    assert_eq!(capacity["remediated"], 2, "{recent}");
    assert_eq!(capacity["verified"], 1);
    assert_eq!(capacity["pending"], 1);

    // Bad requests are rejected.
    for (payload, says) in [
        (
            json!({"report": "scorecard", "days": 0}),
            "\"days\" must be from 1 to 90",
        ),
        (
            json!({"report": "scorecard", "days": 91}),
            "\"days\" must be from 1 to 90",
        ),
        (
            json!({"report": "health"}),
            "\"report\" must be \"scorecard\"",
        ),
        (json!({"report": "scorecard", "weeks": 2}), "weeks"),
    ] {
        let rejected = handle(&prober, payload.clone()).await;
        assert_eq!(rejected["outcome"], "rejected", "{payload}: {rejected}");
        assert!(
            rejected["reason"].as_str().unwrap().contains(says),
            "{rejected}"
        );
    }
}

#[tokio::test]
async fn the_daily_schedule_publishes_the_scorecard_metrics() {
    let dynamodb = moto().dynamodb();
    let table = create_audit_table(&dynamodb).await;
    let audit = AuditStore::new(dynamodb.clone(), table.clone(), 90);
    let runbook = "stack-recovery";
    remediation(
        &audit,
        &table,
        runbook,
        "s1",
        3,
        VerificationStatus::Verified,
        Some((40, true)),
    )
    .await;
    remediation(
        &audit,
        &table,
        runbook,
        "s2",
        2,
        VerificationStatus::Failed,
        None,
    )
    .await;
    let namespace = unique("Scorecard");
    let prober = prober(
        &table,
        &[
            ("METRICS_NAMESPACE", &namespace),
            ("SCORECARD_RULE", "stack-scorecard"),
        ],
    );

    // The probes' schedule runs the probes; the scorecard's publishes the scorecard.
    let probes = handle(&prober, scheduled_event()).await;
    assert!(probes.get("healthy").is_some(), "{probes}");
    let mut daily = scheduled_event();
    daily["resources"] = json!(["arn:aws:events:us-east-1:123456789012:rule/stack-scorecard"]);
    let card = handle(&prober, daily).await;
    assert_eq!(card["report"], "scorecard", "{card}");
    assert_eq!(card["metrics"]["datapoints"], 2, "{card}");

    let read = |metric: &'static str| {
        let namespace = namespace.clone();
        async move {
            let now = Utc::now().timestamp();
            moto()
                .cloudwatch()
                .get_metric_statistics()
                .namespace(namespace)
                .metric_name(metric)
                .dimensions(Dimension::builder().name("Runbook").value(runbook).build())
                .statistics(Statistic::Maximum)
                .period(60)
                .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now - 600,
                ))
                .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now + 600,
                ))
                .send()
                .await
                .expect("statistics")
                .datapoints()
                .first()
                .and_then(|datapoint| datapoint.maximum())
        }
    };
    assert_eq!(read("VerifiedRate").await, Some(50.0));
    assert_eq!(read("TimeToVerifiedP95").await, Some(40.0));
}
