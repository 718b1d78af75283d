//! The schedule: raised reservations go back, raised capacity steps down.

use super::*;

#[tokio::test]
async fn raised_reservations_go_back_when_their_time_is_up() {
    let setup = Setup::new().await;
    let function = runbook_tests::unique("managed-batch");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    moto()
        .lambda()
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(7)
        .send()
        .await
        .unwrap();
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let report = run(&scaler, json!({"function": function})).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(reserved(&function).await, Some(14));
    expire_raise(&setup.audit, "lambda-concurrency", &function).await;
    let reports = sweep(&scaler).await;
    let back = reports
        .iter()
        .find(|r| r.target.as_deref() == Some(function.as_str()))
        .expect("a report");
    assert_eq!(back.outcome, Outcome::Remediated, "{back:?}");
    assert_eq!(reserved(&function).await, Some(7));
}

#[tokio::test]
async fn capacity_steps_back_down_after_low_use_never_below_the_baseline() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&setup.dynamodb)
        .await;
    let raising = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    assert_eq!(
        run(&raising, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    assert_eq!(
        run(&raising, read_alarm(&table, "ALARM")).await.outcome,
        Outcome::Remediated
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Not before SCALE_DOWN_AFTER_HOURS.
    let patient = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "2")]);
    assert!(
        sweep(&patient)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(table.as_str()))
    );
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Still busy: 15 units/s used of 20 is above 30%, kept.
    consumed_read_units(&table, 900.0, 30).await;
    let eager = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]);
    let kept = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(kept.outcome, Outcome::NoAction, "{kept:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (20, 5));

    // Idle (the metric read covers only the last minute when SCALE_DOWN_AFTER_HOURS is 0, and
    // the datapoint above is older than that by now): 20 -> 10 -> 5, then it stops.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let first = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (10, 5));
    let second = sweep(&eager)
        .await
        .into_iter()
        .find(|r| r.target.as_deref() == Some(table.as_str()))
        .expect("a report");
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(capacity(&setup.dynamodb, &table, None).await, (5, 5));
    assert!(
        sweep(&eager)
            .await
            .iter()
            .all(|r| r.target.as_deref() != Some(table.as_str())),
        "back at the baseline: no longer tracked"
    );
}
