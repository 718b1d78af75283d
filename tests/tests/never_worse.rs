//! "Never make it worse": each defect found in limit-scaler, alarm-responder and the shared
//! safety core, as a test of the promise it broke, against moto (and replay clients where AWS's
//! answers cannot be staged in moto).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alarm_responder::Responder;
use alarm_responder::config::ResponderConfig;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::update_table::UpdateTableOutput;
use aws_sdk_dynamodb::types::{
    BillingMode, BillingModeSummary, OnDemandThroughput, TableDescription, TableStatus,
};
use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
use aws_sdk_lambda::operation::update_function_configuration::{
    UpdateFunctionConfigurationError, UpdateFunctionConfigurationOutput,
};
use aws_sdk_lambda::types::LastUpdateStatus;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use limit_scaler::Scaler;
use limit_scaler::config::ScalerConfig;
use runbook_shared::audit::AuditStore;
use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::report::{Outcome, Output, Report};
use runbook_shared::safety::Invocation;
use runbook_tests::fixtures::{
    TableSpec, capacity, create_audit_table, create_deployed_function, create_function,
    function_key, lambda_alarm_event, put_durations, table_key, throttle_alarm_event,
};
use runbook_tests::moto::{ACCOUNT, REGION, moto};
use runbook_tests::unique;
use serde_json::{Value, json};

struct Setup {
    audit: String,
}

impl Setup {
    async fn new() -> Self {
        Self {
            audit: create_audit_table(&moto().dynamodb()).await,
        }
    }

    fn pairs<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![
            ("AUDIT_TABLE", self.audit.as_str()),
            ("MANAGED_RESOURCES", "managed-*"),
            ("AWS_REGION", REGION),
            ("ACCOUNT_ID", ACCOUNT),
        ];
        pairs.extend_from_slice(extra);
        pairs
    }

    fn scaler_with(
        &self,
        extra: &[(&str, &str)],
        dynamodb: aws_sdk_dynamodb::Client,
        lambda: aws_sdk_lambda::Client,
    ) -> Scaler {
        let config = ScalerConfig::from_env(&Env::from_pairs(&self.pairs(extra))).expect("config");
        let mut scaler = Scaler::with_clients(
            config,
            limit_scaler::Clients {
                dynamodb,
                cloudwatch: moto().cloudwatch(),
                lambda,
                audit: moto().dynamodb(),
            },
        );
        scaler.poll_interval = Duration::from_millis(50);
        scaler
    }

    fn scaler(&self, extra: &[(&str, &str)]) -> Scaler {
        self.scaler_with(extra, moto().dynamodb(), moto().lambda())
    }

    fn responder_with(&self, extra: &[(&str, &str)], lambda: aws_sdk_lambda::Client) -> Responder {
        let config =
            ResponderConfig::from_env(&Env::from_pairs(&self.pairs(extra))).expect("config");
        let clients = alarm_responder::Clients {
            lambda,
            ..alarm_responder::Clients::new(&moto().sdk_config())
        };
        let mut responder = Responder::with_clients(config, clients);
        responder.poll_interval = Duration::from_millis(50);
        responder
    }

    fn responder(&self, extra: &[(&str, &str)]) -> Responder {
        self.responder_with(extra, moto().lambda())
    }

    fn audit_store(&self) -> AuditStore {
        AuditStore::new(moto().dynamodb(), self.audit.clone(), 1)
    }

    /// Moves a raise's revert time into the past, as if its time were up.
    async fn expire(&self, runbook: &str, key: &str) {
        let audit = self.audit_store();
        let raise = audit
            .raises(runbook)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.resource == key)
            .expect("raise in force");
        audit
            .put_raise(
                runbook,
                key,
                &raise.original,
                &raise.current,
                Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
            )
            .await
            .unwrap();
    }

    async fn raise_in_force(&self, runbook: &str, key: &str) -> bool {
        self.audit_store()
            .raises(runbook)
            .await
            .unwrap()
            .iter()
            .any(|r| r.resource == key)
    }
}

fn invocation_within(budget: Duration) -> Invocation {
    Invocation::new(uuid::Uuid::new_v4().to_string(), Deadline::after(budget))
}

fn invocation() -> Invocation {
    invocation_within(Duration::from_secs(30))
}

async fn run_scaler(scaler: &Scaler, event: Value) -> Report {
    match scaler.handle(event, &invocation()).await {
        Output::One(report) => *report,
        Output::Sweep { reports } => panic!("expected one report, got a sweep: {reports:?}"),
    }
}

async fn sweep(scaler: &Scaler, invocation: &Invocation) -> Vec<Report> {
    match scaler
        .handle(runbook_tests::fixtures::scheduled_event(), invocation)
        .await
    {
        Output::Sweep { reports } => reports,
        Output::One(report) => panic!("expected a sweep, got {report:?}"),
    }
}

fn report_for<'a>(reports: &'a [Report], target: &str) -> &'a Report {
    reports
        .iter()
        .find(|r| r.target.as_deref() == Some(target))
        .unwrap_or_else(|| panic!("no report for {target} in {reports:?}"))
}

fn read_alarm(table: &str) -> Value {
    throttle_alarm_event(
        &format!("{table}-read"),
        "ALARM",
        "ReadThrottleEvents",
        json!({"TableName": table}),
    )
}

async fn reserved(function: &str) -> Option<i32> {
    moto()
        .lambda()
        .get_function_concurrency()
        .function_name(function)
        .send()
        .await
        .unwrap()
        .reserved_concurrent_executions()
}

async fn reserve(function: &str, value: i32) {
    moto()
        .lambda()
        .put_function_concurrency()
        .function_name(function)
        .reserved_concurrent_executions(value)
        .send()
        .await
        .unwrap();
}

async fn function_settings(function: &str) -> (i32, i32) {
    let config = moto()
        .lambda()
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .unwrap();
    (
        config.timeout().unwrap_or_default(),
        config.memory_size().unwrap_or_default(),
    )
}

// ---- limit-scaler --------------------------------------------------------------------------------

fn on_demand_table(name: &str, max_read: i64, max_write: i64) -> TableDescription {
    TableDescription::builder()
        .table_name(name)
        .table_arn(table_key(name))
        .table_status(TableStatus::Active)
        .billing_mode_summary(
            BillingModeSummary::builder()
                .billing_mode(BillingMode::PayPerRequest)
                .build(),
        )
        .on_demand_throughput(
            OnDemandThroughput::builder()
                .max_read_request_units(max_read)
                .max_write_request_units(max_write)
                .build(),
        )
        .build()
}

/// What UpdateTable was asked for on an on-demand table whose maxima are (`max_read`,
/// `max_write`), and the report, for `event`.
async fn on_demand_update(
    setup: &Setup,
    max: (i64, i64),
    event: impl Fn(&str) -> Value,
) -> (Report, Vec<(Option<i64>, Option<i64>)>) {
    let name = unique("managed-ondemand");
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let updated = Arc::new(std::sync::Mutex::new(None::<(Option<i64>, Option<i64>)>));
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output({
        let (name, updated) = (name.clone(), updated.clone());
        move || {
            let (read, write) = updated
                .lock()
                .unwrap()
                .map_or(max, |(r, w)| (r.unwrap_or(max.0), w.unwrap_or(max.1)));
            DescribeTableOutput::builder()
                .table(on_demand_table(&name, read, write))
                .build()
        }
    });
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .match_requests({
            let (sent, updated) = (sent.clone(), updated.clone());
            move |request| {
                let asked = request.on_demand_throughput().map_or((None, None), |o| {
                    (o.max_read_request_units(), o.max_write_request_units())
                });
                sent.lock().unwrap().push(asked);
                *updated.lock().unwrap() = Some(asked);
                true
            }
        })
        .then_output(|| UpdateTableOutput::builder().build());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update]);
    let report = run_scaler(
        &setup.scaler_with(&[], dynamodb, moto().lambda()),
        event(&name),
    )
    .await;
    let sent = sent.lock().unwrap().clone();
    (report, sent)
}

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
    setup
        .expire("lambda-concurrency", &function_key(&function))
        .await;

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
        tokio::time::sleep(Duration::from_millis(500)).await;
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
        tokio::time::sleep(Duration::from_millis(500)).await;
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
    setup
        .expire("lambda-concurrency", &function_key(&function))
        .await;
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
    let budget = Duration::from_secs(8);
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

// ---- alarm-responder -----------------------------------------------------------------------------

fn configuration(
    function: &str,
    timeout: i32,
    memory: i32,
    status: LastUpdateStatus,
    revision: &str,
) -> GetFunctionConfigurationOutput {
    GetFunctionConfigurationOutput::builder()
        .function_name(function)
        .function_arn(function_key(function))
        .version("$LATEST")
        .timeout(timeout)
        .memory_size(memory)
        .last_update_status(status)
        .revision_id(revision)
        .build()
}

#[tokio::test]
async fn lambda_resources_never_undoes_a_concurrent_deploy() {
    let setup = Setup::new().await;
    let function = unique("managed-deploying");
    // The function really does run into its timeout (29 s of 30 after the deploy).
    put_durations(&function, &[29_000.0, 12_000.0]).await;
    let conflicted = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let get = mock!(aws_sdk_lambda::Client::get_function_configuration).then_output({
        let (function, conflicted, applied) =
            (function.clone(), conflicted.clone(), applied.clone());
        move || {
            if applied.load(Ordering::SeqCst) > 0 {
                configuration(&function, 45, 1024, LastUpdateStatus::Successful, "r3")
            } else if conflicted.load(Ordering::SeqCst) > 0 {
                // A deploy landed meanwhile: memory 512 -> 1024, timeout 10 -> 30.
                configuration(&function, 30, 1024, LastUpdateStatus::Successful, "r2")
            } else {
                configuration(&function, 10, 512, LastUpdateStatus::Successful, "r1")
            }
        }
    });
    let conflict = mock!(aws_sdk_lambda::Client::update_function_configuration)
        .match_requests({
            let conflicted = conflicted.clone();
            move |_| conflicted.load(Ordering::SeqCst) == 0
        })
        .then_error({
            let conflicted = conflicted.clone();
            move || {
                conflicted.fetch_add(1, Ordering::SeqCst);
                UpdateFunctionConfigurationError::ResourceConflictException(
                    aws_sdk_lambda::types::error::ResourceConflictException::builder()
                        .message("An update is in progress")
                        .meta(
                            aws_sdk_lambda::error::ErrorMetadata::builder()
                                .code("ResourceConflictException")
                                .message("An update is in progress")
                                .build(),
                        )
                        .build(),
                )
            }
        });
    let replanned = mock!(aws_sdk_lambda::Client::update_function_configuration)
        .match_requests(|request| {
            request.timeout() == Some(45)
                && request.memory_size().is_none()
                && request.revision_id() == Some("r2")
        })
        .then_output({
            let applied = applied.clone();
            move || {
                applied.fetch_add(1, Ordering::SeqCst);
                UpdateFunctionConfigurationOutput::builder().build()
            }
        });
    let no_aliases = mock!(aws_sdk_lambda::Client::list_aliases).then_output(|| {
        aws_sdk_lambda::operation::list_aliases::ListAliasesOutput::builder().build()
    });
    let lambda = mock_client!(
        aws_sdk_lambda,
        RuleMode::MatchAny,
        [&get, &conflict, &replanned, &no_aliases]
    );
    let responder = setup.responder_with(&[], lambda);
    let report = responder
        .handle(
            lambda_alarm_event(
                &format!("{function}-duration"),
                "ALARM",
                "Duration",
                &function,
                None,
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(replanned.num_calls(), 1, "{report:?}");
    assert_eq!(report.actions[0].before, json!({"timeout_seconds": 30}));
    assert_eq!(report.actions[0].after, json!({"timeout_seconds": 45}));
}

#[tokio::test]
async fn a_duration_alarm_on_an_alias_changes_nothing_under_it() {
    let setup = Setup::new().await;
    let function = unique("managed-aliased");
    create_deployed_function(moto(), &function, "2").await;
    put_durations(&function, &[2_950.0]).await;
    let before = function_settings(&function).await;
    let report = setup
        .responder(&[])
        .handle(
            lambda_alarm_event(
                &format!("{function}-live-duration"),
                "ALARM",
                "Duration",
                &function,
                Some("live"),
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("version 2") && report.reason.contains("publish"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&function).await, before);
}

#[tokio::test]
async fn a_duration_alarm_on_a_function_behind_aliases_changes_nothing() {
    let setup = Setup::new().await;
    let function = unique("managed-behind");
    create_deployed_function(moto(), &function, "2").await;
    put_durations(&function, &[2_950.0]).await;
    let before = function_settings(&function).await;
    let responder = setup.responder(&[("COOLDOWN_SECONDS", "0")]);
    // The alarm names the function alone, but its traffic runs through `live` on version 2.
    let report = responder
        .handle(
            lambda_alarm_event(
                &format!("{function}-duration"),
                "ALARM",
                "Duration",
                &function,
                None,
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("alias live on version 2"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&function).await, before);
    // A person who names $LATEST gets it changed.
    let report = responder
        .handle(
            json!({"runbook": "lambda-resources", "function": format!("{function}:$LATEST")}),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(function_settings(&function).await.0 > before.0);
}

#[tokio::test]
async fn a_latency_alarm_does_not_raise_the_timeout() {
    let setup = Setup::new().await;
    let responder = setup.responder(&[("COOLDOWN_SECONDS", "0")]);
    let slow = unique("managed-latency");
    create_function(moto(), &slow).await;
    let (timeout, _) = function_settings(&slow).await;
    // Slow, but nowhere near its timeout.
    put_durations(&slow, &[f64::from(timeout) * 1000.0 * 0.4]).await;
    let alarm = |function: &str| {
        lambda_alarm_event(
            &format!("{function}-duration"),
            "ALARM",
            "Duration",
            function,
            None,
        )
    };
    let report = responder.handle(alarm(&slow), &invocation()).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("latency, not timeouts"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&slow).await.0, timeout);

    // Running into its timeout: raised.
    let timing_out = unique("managed-timeouts");
    create_function(moto(), &timing_out).await;
    put_durations(&timing_out, &[f64::from(timeout) * 1000.0 * 0.95]).await;
    let report = responder.handle(alarm(&timing_out), &invocation()).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(function_settings(&timing_out).await.0 > timeout);
}

// ---- dry runs ------------------------------------------------------------------------------------

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

    /// With dry run, whatever the table and the request, the plan is returned and nothing is
    /// applied: not the table, not the audit table.
    #[test]
    fn a_dry_run_changes_nothing(
        read in 1i64..400,
        write in 1i64..400,
        asked_read in proptest::option::of(1i64..1_000),
        asked_write in proptest::option::of(1i64..1_000),
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let setup = Setup::new().await;
            let table = TableSpec::provisioned("managed-dry", read, write)
                .create(&moto().dynamodb())
                .await;
            let mut payload = json!({"table": table, "dry_run": true});
            if let Some(value) = asked_read {
                payload["read"] = json!(value);
            }
            if let Some(value) = asked_write {
                payload["write"] = json!(value);
            }
            let report = run_scaler(&setup.scaler(&[]), payload).await;
            assert!(
                matches!(report.outcome, Outcome::Planned | Outcome::NoAction | Outcome::Skipped),
                "{report:?}"
            );
            assert!(report.actions.iter().all(|action| !action.applied && action.error.is_none()), "{report:?}");
            assert_eq!(report.outcome == Outcome::Planned, !report.actions.is_empty(), "{report:?}");
            assert!(report.audit_id.is_none(), "{report:?}");
            assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (read, write));
            let records = moto()
                .dynamodb()
                .query()
                .table_name(&setup.audit)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("target#{}", table_key(&table))),
                )
                .send()
                .await
                .expect("query the audit table");
            assert_eq!(records.count(), 0);
        });
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// The same for the other runbooks that take a manual payload: a reservation, a stored
    /// limit, a function's timeout and memory — planned or declined, never applied.
    #[test]
    fn a_dry_run_of_any_raise_changes_nothing(
        reservation in 1i32..20,
        asked in proptest::option::of(1i32..40),
        limit in 1i64..1_000,
        asked_limit in proptest::option::of(1.0f64..5_000.0),
        longest_share in 0.0f64..1.0,
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let setup = Setup::new().await;
            let function = unique("managed-dry");
            create_function(moto(), &function).await;
            reserve(&function, reservation).await;
            let limits = unique("managed-dry-limits");
            runbook_tests::fixtures::create_limits_table(&moto().dynamodb(), &limits, limit).await;
            let (timeout, _) = function_settings(&function).await;
            put_durations(&function, &[f64::from(timeout) * 1000.0 * longest_share]).await;
            let before = (reserved(&function).await, function_settings(&function).await);
            let scaler = setup.scaler(&[
                ("LIMITS_TABLE", limits.as_str()),
                ("LIMITS_VALUE_ATTRS", "requests_per_second"),
            ]);
            let mut concurrency = json!({"function": function, "dry_run": true});
            if let Some(value) = asked {
                concurrency["reserved_concurrency"] = json!(value);
            }
            let mut stored = json!({"limit": {"key": "tenant#42", "attribute": "requests_per_second"}, "dry_run": true});
            if let Some(value) = asked_limit {
                stored["limit"]["value"] = json!(value);
            }
            let reports = vec![
                run_scaler(&scaler, concurrency).await,
                run_scaler(&scaler, stored).await,
                setup
                    .responder(&[])
                    .handle(
                        json!({"runbook": "lambda-resources", "function": function, "raise": "both", "dry_run": true}),
                        &invocation(),
                    )
                    .await,
            ];
            for report in &reports {
                assert!(
                    matches!(report.outcome, Outcome::Planned | Outcome::NoAction | Outcome::Skipped),
                    "{report:?}"
                );
                assert!(report.actions.iter().all(|a| !a.applied && a.error.is_none()), "{report:?}");
                assert_eq!(report.outcome == Outcome::Planned, !report.actions.is_empty(), "{report:?}");
                assert!(report.audit_id.is_none(), "{report:?}");
            }
            assert_eq!((reserved(&function).await, function_settings(&function).await), before);
            let item = moto()
                .dynamodb()
                .get_item()
                .table_name(&limits)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()))
                .send()
                .await
                .expect("limit");
            assert_eq!(
                item.item().and_then(|i| i.get("requests_per_second")).and_then(|v| v.as_n().ok()),
                Some(&limit.to_string())
            );
            // The account's pool is shared by every test of this binary.
            moto()
                .lambda()
                .delete_function_concurrency()
                .function_name(&function)
                .send()
                .await
                .expect("delete concurrency");
        });
    }
}
