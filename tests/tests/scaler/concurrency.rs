//! `lambda-concurrency`: raises within the cap and the account's floor.

use super::*;

/// One test for every concurrency case: they share the account's concurrency pool.
#[tokio::test]
async fn lambda_concurrency_raises_within_the_cap_and_the_account_floor() {
    let _isolated = runbook_tests::moto::isolated("account-concurrency").await;
    let setup = Setup::new().await;
    let lambda = moto().lambda();
    let function = runbook_tests::unique("managed-worker");
    runbook_tests::fixtures::create_function(moto(), &function).await;
    lambda
        .put_function_concurrency()
        .function_name(&function)
        .reserved_concurrent_executions(10)
        .send()
        .await
        .unwrap();
    let throttles = |state: &str| {
        runbook_tests::fixtures::lambda_alarm_event(
            &format!("{function}-throttles"),
            state,
            "Throttles",
            &function,
            None,
        )
    };

    let report = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("lambda-concurrency"));
    assert_eq!(report.actions[0].after, json!({"reserved_concurrency": 20}));
    assert_eq!(reserved(&function).await, Some(20));
    assert_eq!(report.verification.status, VerificationStatus::Pending);
    alarm_in_state(&format!("{function}-throttles"), StateValue::Ok).await;
    let closed = run(&setup.scaler(&[]), throttles("OK")).await;
    assert_eq!(
        closed.verification.status,
        VerificationStatus::Verified,
        "{closed:?}"
    );
    // The alarms below fire again.
    alarm_in_state(&format!("{function}-throttles"), StateValue::Alarm).await;

    // The account's floor limits the raise: leave room for only 3 more.
    let unreserved = lambda
        .get_account_settings()
        .send()
        .await
        .unwrap()
        .account_limit()
        .unwrap()
        .unreserved_concurrent_executions()
        .unwrap();
    let floor = (unreserved - 3).to_string();
    let limited = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("UNRESERVED_CONCURRENCY_FLOOR", &floor),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(limited.outcome, Outcome::Remediated, "{limited:?}");
    assert_eq!(reserved(&function).await, Some(23));
    let at_floor = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("UNRESERVED_CONCURRENCY_FLOOR", &floor),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(at_floor.outcome, Outcome::Skipped, "{at_floor:?}");
    assert!(at_floor.reason.starts_with("floor:"), "{}", at_floor.reason);

    let at_cap = run(
        &setup.scaler(&[
            ("COOLDOWN_SECONDS", "0"),
            ("MAX_RESERVED_CONCURRENCY", "23"),
        ]),
        throttles("ALARM"),
    )
    .await;
    assert_eq!(at_cap.outcome, Outcome::Skipped);
    assert!(
        at_cap.reason.contains("at MAX_RESERVED_CONCURRENCY=23"),
        "{}",
        at_cap.reason
    );

    let dry = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        json!({"function": function, "reserved_concurrency": 40, "dry_run": true}),
    )
    .await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:?}");
    assert_eq!(reserved(&function).await, Some(23));
    let exact = run(
        &setup.scaler(&[("COOLDOWN_SECONDS", "0")]),
        json!({"function": function, "reserved_concurrency": 40}),
    )
    .await;
    assert_eq!(exact.outcome, Outcome::Remediated, "{exact:?}");
    assert_eq!(reserved(&function).await, Some(40));
    let cooled = run(&setup.scaler(&[]), throttles("ALARM")).await;
    assert_eq!(cooled.outcome, Outcome::Skipped);
    assert!(cooled.reason.starts_with("cooldown"), "{}", cooled.reason);

    // Without a reservation the account's pool is the limit: a diagnosis, no change.
    let shared = runbook_tests::unique("managed-shared");
    runbook_tests::fixtures::create_function(moto(), &shared).await;
    let report = run(&setup.scaler(&[]), json!({"function": shared})).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("no reserved concurrency") && report.reason.contains("account"),
        "{}",
        report.reason
    );
    assert_eq!(reserved(&shared).await, None);

    let stranger = runbook_tests::unique("other-worker");
    runbook_tests::fixtures::create_function(moto(), &stranger).await;
    lambda
        .put_function_concurrency()
        .function_name(&stranger)
        .reserved_concurrent_executions(5)
        .send()
        .await
        .unwrap();
    let report = run(&setup.scaler(&[]), json!({"function": stranger})).await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert_eq!(reserved(&stranger).await, Some(5));

    let missing = run(
        &setup.scaler(&[]),
        json!({"function": "managed-nope-never"}),
    )
    .await;
    assert_eq!(missing.outcome, Outcome::Failed);
    assert!(
        missing.reason.contains("does not exist"),
        "{}",
        missing.reason
    );
}
