//! `dynamodb-capacity` against moto: raises, dry run, guards, alarms it does not handle.

use super::*;

#[tokio::test]
async fn alarm_raises_the_throttled_read_side_and_verifies_the_table() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("dynamodb-capacity"));
    assert_eq!(report.target.as_deref(), Some(table.as_str()));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    let action = &report.actions[0];
    assert_eq!(action.api, "dynamodb:UpdateTable");
    assert!(action.applied);
    assert_eq!(
        action.before,
        json!({"billing_mode": "PROVISIONED", "read": 5, "write": 5})
    );
    assert_eq!(
        action.after,
        json!({"billing_mode": "PROVISIONED", "read": 10, "write": 5})
    );
    assert_eq!(report.verification.status, VerificationStatus::Pending);
    let checks: Vec<(&str, bool)> = report
        .verification
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.ok))
        .collect();
    assert_eq!(
        checks,
        vec![
            ("status", true),
            ("capacity", true),
            ("throttling_stopped", false)
        ]
    );

    let records = setup.audit_items(&table).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["audit_id"], json!(report.audit_id));
    assert_eq!(records[0]["verify_status"], "pending");
}

#[tokio::test]
async fn alarm_on_an_index_raises_only_that_index_write_side() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 4, 4)
        .with_index()
        .create(&setup.dynamodb)
        .await;
    let event = throttle_alarm_event(
        "gsi-writes",
        "ALARM",
        "WriteThrottleEvents",
        json!({"TableName": table, "GlobalSecondaryIndexName": "by-customer"}),
    );
    let report = run(&setup.scaler(&[]), event).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.target, Some(format!("{table}/index/by-customer")));
    assert_eq!(
        capacity(&setup.dynamodb, &table, Some("by-customer")).await,
        (4, 8)
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (4, 4));
}

#[tokio::test]
async fn consumed_peak_with_headroom_beats_the_factor_and_the_cap_clamps_it() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    // 3,000 read units consumed in one minute: 50 per second, 60 with the 1.2 headroom.
    consumed_read_units(&table, 3000.0, 60).await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (60, 5));
    assert_eq!(
        report.diagnosis.as_ref().unwrap()["consumed_peak"]["read_per_second"],
        json!(50.0)
    );

    let capped = TableSpec::provisioned("managed-orders", 600, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "1000")]),
        read_alarm(&capped, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &capped, None).await, (1000, 5));
}

#[tokio::test]
async fn dry_run_plans_and_changes_nothing() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .with_index()
        .create(&setup.dynamodb)
        .await;
    let payload = json!({"table": table, "index": "by-customer", "factor": 3.0, "dry_run": true});
    let report = run(&setup.scaler(&[]), payload).await;

    assert_eq!(report.outcome, Outcome::Planned, "{report:?}");
    assert!(report.dry_run);
    assert!(!report.actions[0].applied);
    assert_eq!(
        report.actions[0].after,
        json!({"billing_mode": "PROVISIONED", "read": 15, "write": 15})
    );
    assert_eq!(
        capacity(&setup.dynamodb, &table, Some("by-customer")).await,
        (5, 5)
    );
    assert!(report.audit_id.is_none());
    assert!(
        setup
            .audit_items(&format!("{table}/index/by-customer"))
            .await
            .is_empty()
    );

    // DRY_RUN=true in the environment wins over the payload.
    let report = run(
        &setup.scaler(&[("DRY_RUN", "true")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Planned);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

#[tokio::test]
async fn at_cap_is_skipped_or_switches_to_on_demand_when_allowed() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 50, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "50")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.contains("at cap") && report.reason.contains("MAX_READ_CAPACITY=50"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (50, 5));

    let report = run(
        &setup.scaler(&[("MAX_READ_CAPACITY", "50"), ("ALLOW_ON_DEMAND", "true")]),
        read_alarm(&table, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.actions[0].after,
        json!({"billing_mode": "PAY_PER_REQUEST"})
    );
    assert_eq!(
        billing_mode(&setup.dynamodb, &table).await,
        "PAY_PER_REQUEST"
    );
}

#[tokio::test]
async fn on_demand_table_without_a_maximum_is_diagnosed_not_changed() {
    let setup = Setup::new().await;
    let table = TableSpec::on_demand("managed-orders")
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("hot partition key"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());
    assert_eq!(
        billing_mode(&setup.dynamodb, &table).await,
        "PAY_PER_REQUEST"
    );
}

#[tokio::test]
async fn unmanaged_table_is_skipped_and_a_tag_makes_it_managed() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("other-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&table, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert!(report.reason.contains("runbook:managed=true"));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));

    let tagged = TableSpec::provisioned("other-orders", 5, 5)
        .tagged_managed()
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), read_alarm(&tagged, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(capacity(&setup.dynamodb, &tagged, None).await, (10, 5));
}

#[tokio::test]
async fn cooldown_stops_a_second_raise() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    assert_eq!(
        run(&scaler, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    let second = run(&scaler, read_alarm(&table, "ALARM")).await;
    assert_eq!(second.outcome, Outcome::Skipped, "{second:?}");
    assert!(second.reason.starts_with("cooldown"), "{}", second.reason);
    assert!(second.reason.contains("COOLDOWN_SECONDS=900"));
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
}

#[tokio::test]
async fn two_concurrent_invocations_on_one_table_act_once() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let (first, second) = tokio::join!(
        run(&scaler, read_alarm(&table, "ALARM")),
        run(&scaler, read_alarm(&table, "ALARM"))
    );
    let outcomes = [first.outcome, second.outcome];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Remediated)
            .count(),
        1,
        "{first:?} {second:?}"
    );
    let skipped = if first.outcome == Outcome::Skipped {
        &first
    } else {
        &second
    };
    assert!(
        skipped.reason.starts_with("lock held") || skipped.reason.starts_with("cooldown"),
        "{}",
        skipped.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
}

#[tokio::test]
async fn the_same_event_twice_acts_once_and_returns_the_same_report() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let event = read_alarm(&table, "ALARM");
    let first = run(&scaler, event.clone()).await;
    let again = run(&scaler, event).await;
    assert_eq!(first.outcome, Outcome::Remediated);
    assert_eq!(again, first);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    assert_eq!(setup.audit_items(&table).await.len(), 1);
}

#[tokio::test]
async fn an_ok_verifies_only_a_change_before_it_and_only_while_cloudwatch_shows_ok() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let alarm = format!("{table}-read");
    let scaler = setup.scaler(&[]);
    let raised = run(&scaler, read_alarm(&table, "ALARM")).await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    alarm_in_state(&alarm, StateValue::Alarm).await;

    // An EventBridge OK whose state time is 10 minutes before the raise (a late or replayed
    // delivery), with CloudWatch still showing ALARM.
    let mut stale = read_alarm(&table, "OK");
    stale["detail"]["state"]["timestamp"] = json!(
        (chrono::Utc::now() - chrono::Duration::minutes(10))
            .format("%Y-%m-%dT%H:%M:%S%.3f%z")
            .to_string()
    );
    let stale = run(&scaler, stale).await;
    assert_ne!(
        stale.verification.status,
        VerificationStatus::Verified,
        "{stale:?}"
    );
    assert!(
        stale.reason.contains("before the change"),
        "{}",
        stale.reason
    );

    // An OK on time, while CloudWatch shows the alarm firing again: not a recovery either.
    let refiring = run(&scaler, read_alarm(&table, "OK")).await;
    assert_ne!(
        refiring.verification.status,
        VerificationStatus::Verified,
        "{refiring:?}"
    );
    assert!(
        refiring.reason.contains("CloudWatch shows it in ALARM"),
        "{}",
        refiring.reason
    );
    let records = setup.audit_items(&table).await;
    assert_eq!(records[0]["verification"]["status"], "pending");

    // CloudWatch OK now: the OK verifies the change.
    alarm_in_state(&alarm, StateValue::Ok).await;
    let closed = run(&scaler, read_alarm(&table, "OK")).await;
    assert_eq!(
        closed.verification.status,
        VerificationStatus::Verified,
        "{closed:?}"
    );
    assert_eq!(closed.audit_id, raised.audit_id);
}

#[tokio::test]
async fn ok_transition_closes_the_verification_as_verified() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let raised = run(&scaler, read_alarm(&table, "ALARM")).await;
    alarm_in_state(&format!("{table}-read"), StateValue::Ok).await;
    let closed = run(&scaler, read_alarm(&table, "OK")).await;

    assert_eq!(closed.outcome, Outcome::NoAction, "{closed:?}");
    assert_eq!(closed.verification.status, VerificationStatus::Verified);
    assert_eq!(closed.audit_id, raised.audit_id);
    assert!(
        closed.reason.contains("returned to OK") && closed.reason.contains("verified"),
        "{}",
        closed.reason
    );
    assert!(closed.diagnosis.as_ref().unwrap()["time_to_recover_seconds"].is_i64());
    let records = setup.audit_items(&table).await;
    assert_eq!(records[0]["verification"]["status"], "verified");
    assert_eq!(records[0]["verify_status"], Value::Null);

    let nothing_open = run(&scaler, read_alarm(&table, "OK")).await;
    assert_eq!(nothing_open.outcome, Outcome::NoAction);
    assert!(
        nothing_open.reason.contains("no remediation"),
        "{}",
        nothing_open.reason
    );
}

#[tokio::test]
async fn the_hourly_budget_stops_further_actions() {
    let setup = Setup::new().await;
    let scaler = setup.scaler(&[("MAX_ACTIONS_PER_HOUR", "1")]);
    // Each test has its own audit table, hence its own budget.
    let first = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let second = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    assert_eq!(
        run(&scaler, read_alarm(&first, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    let report = run(&scaler, read_alarm(&second, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("budget spent"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &second, None).await, (5, 5));
}

#[tokio::test]
async fn manual_raise_to_exact_values() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(
        &setup.scaler(&[]),
        json!({"table": table, "read": 200, "write": 100}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.trigger.kind,
        runbook_shared::model::TriggerKind::Manual
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (200, 100));
}

#[tokio::test]
async fn missing_table_and_index_fail_clearly_and_change_nothing() {
    let setup = Setup::new().await;
    let report = run(
        &setup.scaler(&[]),
        json!({"table": "managed-does-not-exist"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report
            .reason
            .contains("managed-does-not-exist does not exist"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());

    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let report = run(&setup.scaler(&[]), json!({"table": table, "index": "nope"})).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.reason.contains("no global secondary index nope"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}

#[tokio::test]
async fn alarms_it_does_not_handle_are_no_action() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let scaler = setup.scaler(&[]);
    let mut other = read_alarm(&table, "ALARM");
    other["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["name"] =
        json!("ConsumedReadCapacityUnits");
    let report = run(&scaler, other).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert!(
        report
            .reason
            .contains("ReadThrottleEvents, WriteThrottleEvents, ThrottledRequests"),
        "{}",
        report.reason
    );

    let report = run(&scaler, read_alarm(&table, "INSUFFICIENT_DATA")).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
}
