//! limit-scaler never makes a limit worse: no lowering, stops stay, one lease, resource identities, budgets.

use super::*;

#[tokio::test]
async fn a_raise_never_lowers_an_on_demand_maximum() {
    let setup = Setup::new().await;
    // Read set by hand to 5000, above the 1000 cap; a ThrottledRequests alarm without an
    // Operation speaks of both sides.
    let (report, sent) = on_demand_update(&setup, (5_000, 100), |name| {
        throttle_alarm_event(
            "both-sides",
            "ALARM",
            "ThrottledRequests",
            json!({"TableName": name}),
        )
    })
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(sent, vec![(Some(5_000), Some(200))], "{report:?}");
    assert!(
        report.reason.contains("read kept at 5000") && report.reason.contains("MAX_READ_CAPACITY"),
        "{}",
        report.reason
    );

    // An exact request below the current value keeps that side.
    let (report, sent) = on_demand_update(
        &setup,
        (500, 500),
        |name| json!({"table": name, "read": 1, "write": 1000}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(sent, vec![(Some(500), Some(1_000))], "{report:?}");
}

#[tokio::test]
async fn a_function_stopped_on_purpose_stays_stopped() {
    let setup = Setup::new().await;
    let function = unique("managed-stopped");
    create_function(moto(), &function).await;
    reserve(&function, 0).await;
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let alarm = lambda_alarm_event(
        &format!("{function}-throttles"),
        "ALARM",
        "Throttles",
        &function,
        None,
    );
    for event in [alarm, json!({"function": function})] {
        let report = run_scaler(&scaler, event.clone()).await;
        assert_eq!(report.outcome, Outcome::NoAction, "{event}: {report:?}");
        assert!(
            report
                .reason
                .contains("stopped on purpose (reserved concurrency 0)"),
            "{}",
            report.reason
        );
        assert_eq!(reserved(&function).await, Some(0));
    }
    // A person who names the reservation lifts the stop, and it is not put back to 0 later.
    let lifted = run_scaler(
        &scaler,
        json!({"function": function, "reserved_concurrency": 5}),
    )
    .await;
    assert_eq!(lifted.outcome, Outcome::Remediated, "{lifted:?}");
    assert_eq!(reserved(&function).await, Some(5));
    assert!(
        !setup
            .raise_in_force("lambda-concurrency", &function_key(&function))
            .await
    );
}

#[tokio::test]
async fn put_back_and_raise_of_one_function_share_one_lease() {
    let setup = Setup::new().await;
    let function = unique("managed-shared");
    create_function(moto(), &function).await;
    reserve(&function, 50).await;
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let raised = run_scaler(
        &scaler,
        json!({"function": function, "reserved_concurrency": 100}),
    )
    .await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    setup.expire("lambda-concurrency", &function).await;

    // A second raise is in flight (its PutFunctionConcurrency slow) when the schedule comes to
    // put the first one back: the put-back must wait its turn, not interleave.
    moto()
        .delay("PutFunctionConcurrency", &function, 1_500)
        .await;
    let raise = run_scaler(
        &scaler,
        json!({"function": function, "reserved_concurrency": 200}),
    );
    let put_back = async {
        moto().held("PutFunctionConcurrency", &function).await;
        sweep(&scaler, &invocation()).await
    };
    let (raise, reports) = tokio::join!(raise, put_back);
    assert_eq!(raise.outcome, Outcome::Remediated, "{raise:?}");
    // The put-back waited for the raise's lease, then found the raise it came for replaced.
    let put_back = report_for(&reports, &function);
    assert_eq!(put_back.outcome, Outcome::NoAction, "{put_back:?}");
    assert!(
        put_back.reason.starts_with("raised again"),
        "{}",
        put_back.reason
    );
    assert_eq!(reserved(&function).await, Some(200));
    assert!(
        setup
            .raise_in_force("lambda-concurrency", &function_key(&function))
            .await,
        "the raise to 200 is still tracked for its put-back"
    );
}

#[tokio::test]
async fn a_table_named_by_its_arn_is_the_same_table() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-arn", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let scaler = setup.scaler(&[]);
    moto().delay("UpdateTable", &table, 1_500).await;
    let by_name = run_scaler(&scaler, read_alarm(&table));
    let by_arn = async {
        moto().held("UpdateTable", &table).await;
        run_scaler(&scaler, json!({"table": table_key(&table), "read": 50})).await
    };
    let (by_name, by_arn) = tokio::join!(by_name, by_arn);
    assert_eq!(by_name.outcome, Outcome::Remediated, "{by_name:?}");
    // One lease: the run by ARN waited for the run by name and planned from its result.
    assert_eq!(by_arn.outcome, Outcome::Remediated, "{by_arn:?}");
    assert_eq!(by_arn.actions[0].before["read"], json!(10), "{by_arn:?}");
    assert_eq!(by_arn.target.as_deref(), Some(table.as_str()));
    assert_eq!(by_arn.resource.as_deref(), Some(table_key(&table).as_str()));
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (50, 5));

    // An ARN in another region or account is refused before any call.
    let foreign = run_scaler(
        &scaler,
        json!({"table": format!("arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{table}")}),
    )
    .await;
    assert_eq!(foreign.outcome, Outcome::Rejected, "{foreign:?}");
    assert!(
        foreign.reason.contains("region eu-west-1") && foreign.reason.contains("us-east-1"),
        "{}",
        foreign.reason
    );
}

#[tokio::test]
async fn a_metric_math_alarm_over_two_functions_acts_on_neither() {
    let setup = Setup::new().await;
    let (first, second) = (unique("managed-fa"), unique("managed-fb"));
    for function in [&first, &second] {
        create_function(moto(), function).await;
        reserve(function, 10).await;
    }
    let metrics = |metric: &str| {
        json!([
            {"id": "m1", "returnData": false, "metricStat": {"period": 60, "stat": "Sum",
                "metric": {"namespace": "AWS/Lambda", "name": metric, "dimensions": {"FunctionName": first}}}},
            {"id": "m2", "returnData": false, "metricStat": {"period": 60, "stat": "Sum",
                "metric": {"namespace": "AWS/Lambda", "name": metric, "dimensions": {"FunctionName": second}}}},
            {"id": "e1", "expression": "m1 + m2", "returnData": true}
        ])
    };
    let mut throttles = lambda_alarm_event("pair-throttles", "ALARM", "Throttles", &first, None);
    throttles["detail"]["configuration"]["metrics"] = metrics("Throttles");
    let report = run_scaler(&setup.scaler(&[]), throttles).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(report.reason.contains(&first) && report.reason.contains(&second));
    let mut durations = lambda_alarm_event("pair-duration", "ALARM", "Duration", &first, None);
    durations["detail"]["configuration"]["metrics"] = metrics("Duration");
    let report = setup.responder(&[]).handle(durations, &invocation()).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(report.reason.contains(&first) && report.reason.contains(&second));
    for function in [&first, &second] {
        assert_eq!(reserved(function).await, Some(10));
    }
}

#[tokio::test]
async fn raises_recorded_before_resource_identities_are_still_put_back() {
    let setup = Setup::new().await;
    let function = unique("managed-legacy");
    create_function(moto(), &function).await;
    reserve(&function, 14).await;
    // A record as the previous version wrote it: keyed by the function's name alone.
    setup
        .audit_store()
        .put_raise(
            "lambda-concurrency",
            &function,
            &json!({"reserved_concurrency": 7}),
            &json!({"reserved_concurrency": 14}),
            Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
            None,
        )
        .await
        .unwrap();
    let reports = sweep(&setup.scaler(&[]), &invocation()).await;
    let back = report_for(&reports, &function);
    assert_eq!(back.outcome, Outcome::Remediated, "{back:?}");
    assert_eq!(reserved(&function).await, Some(7));
    let raises = setup
        .audit_store()
        .raises("lambda-concurrency")
        .await
        .unwrap();
    assert!(
        raises
            .iter()
            .all(|r| r.resource != function && r.resource != function_key(&function)),
        "{raises:?}"
    );
}

#[tokio::test]
async fn dry_run_schedules_keep_the_tracking_records() {
    let setup = Setup::new().await;
    let function = unique("managed-dry");
    create_function(moto(), &function).await;
    reserve(&function, 7).await;
    let table = TableSpec::provisioned("managed-dry", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let live = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    assert_eq!(
        run_scaler(&live, json!({"function": function}))
            .await
            .outcome,
        Outcome::Remediated
    );
    assert_eq!(
        run_scaler(&live, read_alarm(&table)).await.outcome,
        Outcome::Remediated
    );
    // Someone else changes both meanwhile; a dry-run schedule must only look.
    reserve(&function, 30).await;
    moto()
        .dynamodb()
        .update_table()
        .table_name(&table)
        .provisioned_throughput(
            aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                .read_capacity_units(40)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    setup.expire("lambda-concurrency", &function).await;
    let dry = setup.scaler(&[("DRY_RUN", "true"), ("SCALE_DOWN_AFTER_HOURS", "0")]);
    let reports = sweep(&dry, &invocation()).await;
    for target in [function.as_str(), table.as_str()] {
        let report = report_for(&reports, target);
        assert!(
            report.reason.contains("changed by someone else"),
            "{report:?}"
        );
        assert!(report.dry_run);
    }
    assert!(
        setup
            .raise_in_force("lambda-concurrency", &function_key(&function))
            .await
    );
    assert!(
        setup
            .raise_in_force("dynamodb-capacity", &table_key(&table))
            .await
    );
}

#[tokio::test]
async fn the_schedule_starts_no_step_it_cannot_finish() {
    let _own = runbook_tests::moto::isolated("the_schedule_starts_no_step_it_cannot_finish").await;
    let setup = Setup::new().await;
    let first = TableSpec::provisioned("managed-sda", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let second = TableSpec::provisioned("managed-sdb", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let live = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    for table in [&first, &second] {
        assert_eq!(
            run_scaler(&live, read_alarm(table)).await.outcome,
            Outcome::Remediated
        );
    }
    // The first table never settles after its scale-down (still UPDATING): its wait must leave
    // room for the writes after it, and the second table must be left for the next run.
    moto().set_table_status(&first, "UPDATING").await;
    let scaler = setup.scaler(&[("SCALE_DOWN_AFTER_HOURS", "0")]);
    let budget = Duration::from_secs(9);
    let invocation = invocation_within(budget);
    let started = std::time::Instant::now();
    let reports = sweep(&scaler, &invocation).await;
    moto().set_table_status(&first, "ACTIVE").await;
    assert!(
        started.elapsed() < budget - Duration::from_secs(2),
        "the schedule ran for {:?} of its {budget:?}",
        started.elapsed()
    );
    let stuck = report_for(&reports, &first);
    assert!(stuck.actions.iter().any(|a| a.applied), "{stuck:?}");
    assert!(
        !setup
            .raise_in_force("dynamodb-capacity", &table_key(&first))
            .await,
        "the step back to the baseline closed the raise record before the deadline"
    );
    let left = report_for(&reports, &second);
    assert_eq!(left.outcome, Outcome::Skipped, "{left:?}");
    assert!(
        left.reason.contains("left for the next run"),
        "{}",
        left.reason
    );
    assert_eq!(capacity(&moto().dynamodb(), &second, None).await, (10, 5));
}

#[tokio::test]
async fn a_metric_math_alarm_over_two_tables_acts_on_neither() {
    let setup = Setup::new().await;
    let first = TableSpec::provisioned("managed-math", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let second = TableSpec::provisioned("managed-math", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let mut event = read_alarm(&first);
    event["detail"]["configuration"]["metrics"] = json!([
        {"id": "m1", "returnData": false, "metricStat": {"period": 60, "stat": "Sum",
            "metric": {"namespace": "AWS/DynamoDB", "name": "ReadThrottleEvents", "dimensions": {"TableName": first}}}},
        {"id": "m2", "returnData": false, "metricStat": {"period": 60, "stat": "Sum",
            "metric": {"namespace": "AWS/DynamoDB", "name": "ReadThrottleEvents", "dimensions": {"TableName": second}}}},
        {"id": "e1", "expression": "m1 + m2", "returnData": true}
    ]);
    let report = run_scaler(&setup.scaler(&[]), event).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains(&first) && report.reason.contains(&second),
        "{}",
        report.reason
    );
    for table in [&first, &second] {
        assert_eq!(capacity(&moto().dynamodb(), table, None).await, (5, 5));
    }
}

#[tokio::test]
async fn a_second_manual_run_overrides_the_cooldown_and_says_so() {
    let setup = Setup::new().await;
    let table = TableSpec::provisioned("managed-manual", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let scaler = setup.scaler(&[("MAX_ACTIONS_PER_HOUR", "1")]);
    let first = run_scaler(&scaler, json!({"table": table})).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    let second = run_scaler(&scaler, json!({"table": table})).await;
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert!(
        second
            .notes
            .iter()
            .any(|note| note.contains("overrode the cooldown")),
        "{second:?}"
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (20, 20));
    // An alarm is automatic: the cooldown stops it.
    let automatic = run_scaler(&scaler, read_alarm(&table)).await;
    assert_eq!(automatic.outcome, Outcome::Skipped, "{automatic:?}");
    assert!(
        automatic.reason.starts_with("cooldown"),
        "{}",
        automatic.reason
    );
}

#[tokio::test]
async fn the_budget_is_a_sliding_hour() {
    let setup = Setup::new().await;
    let audit = setup.audit_store();
    let runbook = unique("budget");
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    for _ in 0..3 {
        assert!(
            audit
                .take_budget(&runbook, 3, at("2026-11-30T12:59:30Z"))
                .await
                .unwrap()
                .is_ok()
        );
    }
    // A new UTC hour is not a new budget: 40 s later the hour is still spent.
    let refused = audit
        .take_budget(&runbook, 3, at("2026-11-30T13:00:10Z"))
        .await
        .unwrap();
    assert_eq!(refused, Err(at("2026-11-30T13:59:30Z")));
    assert_eq!(
        audit
            .budget_used(&runbook, at("2026-11-30T13:59:29Z"))
            .await
            .unwrap(),
        3
    );
    assert!(
        audit
            .take_budget(&runbook, 3, at("2026-11-30T13:59:31Z"))
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test]
async fn nothing_is_put_back_while_its_alarm_fires_or_it_still_throttles() {
    use aws_sdk_cloudwatch::types::StateValue;
    use runbook_tests::fixtures::{metric_alarm_in_state, put_metric};
    let setup = Setup::new().await;
    let function = unique("managed-busy");
    create_function(moto(), &function).await;
    reserve(&function, 5).await;
    let alarm = format!("{function}-throttles");
    let scaler = setup.scaler(&[("COOLDOWN_SECONDS", "0")]);
    let raised = run_scaler(
        &scaler,
        lambda_alarm_event(&alarm, "ALARM", "Throttles", &function, None),
    )
    .await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    let raised_to = reserved(&function).await;
    assert!(raised_to > Some(5), "{raised:?}");

    // Its time is up, and the alarm that led to it still fires.
    metric_alarm_in_state(
        moto(),
        &alarm,
        StateValue::Alarm,
        ("AWS/Lambda", "Throttles"),
        &[("FunctionName", function.as_str())],
    )
    .await;
    setup.expire("lambda-concurrency", &function).await;
    let reports = sweep(&scaler, &invocation()).await;
    let held = report_for(&reports, &function);
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");
    assert!(held.reason.contains("still in ALARM"), "{}", held.reason);
    assert_eq!(reserved(&function).await, raised_to, "not lowered");

    // The alarm is OK again, but the function still throttled a minute ago.
    metric_alarm_in_state(
        moto(),
        &alarm,
        StateValue::Ok,
        ("AWS/Lambda", "Throttles"),
        &[("FunctionName", function.as_str())],
    )
    .await;
    put_metric(
        moto(),
        "AWS/Lambda",
        "Throttles",
        &[("FunctionName", function.as_str())],
        3.0,
        60,
    )
    .await;
    let reports = sweep(&scaler, &invocation()).await;
    let held = report_for(&reports, &function);
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");
    assert!(held.reason.contains("still throttling"), "{}", held.reason);
    assert_eq!(reserved(&function).await, raised_to, "not lowered");
    assert!(
        setup
            .raise_in_force("lambda-concurrency", &function_key(&function))
            .await,
        "still tracked, for the next schedule"
    );

    // Once the alarm is OK and the last throttles are older than the quiet minutes, it goes back.
    let calm = unique("managed-calm");
    create_function(moto(), &calm).await;
    reserve(&calm, 5).await;
    let calm_alarm = format!("{calm}-throttles");
    let raised = run_scaler(
        &scaler,
        lambda_alarm_event(&calm_alarm, "ALARM", "Throttles", &calm, None),
    )
    .await;
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    metric_alarm_in_state(
        moto(),
        &calm_alarm,
        StateValue::Ok,
        ("AWS/Lambda", "Throttles"),
        &[("FunctionName", calm.as_str())],
    )
    .await;
    put_metric(
        moto(),
        "AWS/Lambda",
        "Throttles",
        &[("FunctionName", calm.as_str())],
        3.0,
        900,
    )
    .await;
    setup.expire("lambda-concurrency", &calm).await;
    let reports = sweep(&scaler, &invocation()).await;
    let back = report_for(&reports, &calm);
    assert_eq!(back.outcome, Outcome::Remediated, "{back:?}");
    assert_eq!(reserved(&calm).await, Some(5));
}
