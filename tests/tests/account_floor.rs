//! The account's unreserved concurrency floor holds when several functions are raised at once.
//! On a private emulator (`moto::isolated`): every reservation in the region moves the account's
//! unreserved concurrency, so no other test may change reservations meanwhile.

use std::time::Duration;

use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_shared::model::{Outcome, Output};
use runbook_tests::fixtures::{
    create_audit_table, create_function, lambda_alarm_event, scaler, scaler_clients,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;

async fn unreserved() -> i32 {
    moto()
        .lambda()
        .get_account_settings()
        .send()
        .await
        .unwrap()
        .account_limit()
        .and_then(|limit| limit.unreserved_concurrent_executions())
        .unwrap()
}

#[tokio::test]
async fn concurrent_raises_never_take_the_account_below_its_floor() {
    let _isolated = runbook_tests::moto::isolated("account-concurrency").await;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let mut functions = Vec::new();
    for _ in 0..5 {
        let function = unique("managed-pool");
        create_function(moto(), &function).await;
        moto()
            .lambda()
            .put_function_concurrency()
            .function_name(&function)
            .reserved_concurrent_executions(10)
            .send()
            .await
            .unwrap();
        functions.push(function);
    }
    // Room for 15 more: one raise 10 -> 20 and one 10 -> 15, then the floor.
    let floor = unreserved().await - 15;
    let floor_text = floor.to_string();
    let scaler = scaler(
        &audit,
        &[("UNRESERVED_CONCURRENCY_FLOOR", floor_text.as_str())],
        scaler_clients(),
    );
    // The first raise's PutFunctionConcurrency is slow: without serialisation every other raise
    // reads the account's room before it lands.
    moto()
        .delay("PutFunctionConcurrency", &functions[0], 1_000)
        .await;
    let raises = functions.iter().map(|function| {
        let scaler = &scaler;
        async move {
            let event = lambda_alarm_event(
                &format!("{function}-throttles"),
                "ALARM",
                "Throttles",
                function,
                None,
            );
            let invocation = Invocation::new(
                uuid::Uuid::new_v4().to_string(),
                Deadline::after(Duration::from_secs(30)),
            );
            match scaler.handle(event, &invocation).await {
                Output::One(report) => *report,
                Output::Sweep { reports } => panic!("{reports:?}"),
            }
        }
    });
    let reports = futures_util::future::join_all(raises).await;
    let remediated = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Remediated)
        .count();
    assert!(
        unreserved().await >= floor,
        "unreserved {} is below the floor {floor}: {reports:#?}",
        unreserved().await
    );
    assert_eq!(remediated, 2, "{reports:#?}");
    assert!(
        reports
            .iter()
            .filter(|r| r.outcome == Outcome::Skipped)
            .all(|r| r.reason.starts_with("floor:")),
        "{reports:#?}"
    );
}
