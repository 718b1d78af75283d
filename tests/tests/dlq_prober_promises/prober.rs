//! health-prober keeps its promises: probes capped by the deadline, and no record blocks the sweep.

use super::*;

#[tokio::test]
async fn a_probe_never_outlives_the_invocation() {
    let _own = runbook_tests::moto::isolated("a_probe_never_outlives_the_invocation").await;
    let setup = Setup::new().await;
    let endpoints = Endpoints::start().await;
    let budget = Duration::from_secs(8);
    let started = Instant::now();
    let report = tokio::time::timeout(
        budget,
        probe(
            &setup.prober(),
            json!({"probes": [{"name": "hangs", "kind": "http", "url": endpoints.url("/hang"), "timeout_ms": 300_000}]}),
            budget,
        ),
    )
    .await
    .expect("the report came back before the deadline");
    assert!(started.elapsed() < budget - Duration::from_secs(1));
    let hangs = &report.probes[0];
    assert!(!hangs.healthy);
    assert!(hangs.detail.contains("capped"), "{}", hangs.detail);
}

#[tokio::test]
async fn one_record_that_cannot_be_checked_never_blocks_the_sweep() {
    let setup = Setup::new().await;
    let audit = setup.audit_store();
    // The older record's stack was deleted since; the newer one's alarm is OK.
    let gone = pending_record(
        &audit,
        "gone",
        SettleBy::Stack {
            name: unique("deleted-stack"),
        },
    )
    .await;
    let alarm = unique("recovered");
    moto()
        .cloudwatch()
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("recovered")
        .send()
        .await
        .unwrap();
    let recovered = pending_record(&audit, "recovered", SettleBy::Alarm { name: alarm }).await;
    // One that no check will ever decide (its alarm never leaves INSUFFICIENT_DATA), older than
    // the give-up age: settled as failed instead of staying pending for ever.
    let undecided_alarm = unique("undecided");
    moto()
        .cloudwatch()
        .put_metric_alarm()
        .alarm_name(&undecided_alarm)
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    moto()
        .cloudwatch()
        .set_alarm_state()
        .alarm_name(&undecided_alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::InsufficientData)
        .state_reason("no data")
        .send()
        .await
        .unwrap();
    let undecided = pending_record_at(
        &audit,
        "undecided",
        SettleBy::Alarm {
            name: undecided_alarm,
        },
        chrono::Duration::hours(30),
    )
    .await;
    let report = probe(
        &setup.prober(),
        json!({"probes": []}),
        Duration::from_secs(30),
    )
    .await;
    let status = |id: &str| {
        report
            .settled
            .iter()
            .find(|s| s.audit_id == id)
            .map(|s| s.status)
    };
    assert_eq!(
        status(&gone),
        Some(VerificationStatus::Failed),
        "{report:?}"
    );
    assert_eq!(
        status(&recovered),
        Some(VerificationStatus::Verified),
        "{report:?}"
    );
    assert_eq!(
        status(&undecided),
        Some(VerificationStatus::Failed),
        "{report:?}"
    );
}
