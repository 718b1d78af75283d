//! "Handles AWS faults" as a figure: every file in events/ goes through its function binary,
//! round after round on fresh resources, while the moto fronts answer 10% of the functions'
//! AWS calls with throttling, 500, 503 or a connection reset (FRONT_FAULTS). For every
//! invocation: the function answered before its deadline; the outcome is one of the six, and a
//! failure says what and where; moto holds exactly what the report says was applied; a redrive
//! lost no message. The figure is printed (and quoted in docs/benchmark.md).

mod expected;
mod round;

use expected::mismatches;
use round::Round;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runbook_tests::deploy::{
    ALARM_RESPONDER, DLQ_REDRIVER, DeployRequest, HEALTH_PROBER, LIMIT_SCALER,
};
use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, TableSpec, capacity, create_deployed_function, create_function, create_limits_table,
    create_stack, event_file, fail_all, function_arn, http_api, lambda_uri, peek_all, put_metric,
    rest_api, send_messages, set_environment,
};
use runbook_tests::moto::Moto;
use runbook_tests::runtime::{Invoked, LambdaProcess, binary};
use serde_json::{Value, json};

const ROUNDS: usize = 8;
const ROUNDS_AT_ONCE: usize = 4;
const FAULT_RATE: &str = "rate=0.1";
/// The first front's seed; the others take the next ones.
const SEED: usize = 7;
/// How many of a function's last log lines a crash or hang is reported with.
const LOG_LINES_ON_CRASH: usize = 20;
const OUTCOMES: [&str; 6] = [
    "remediated",
    "planned",
    "no_action",
    "skipped",
    "rejected",
    "failed",
];

/// The files in events/ and the function each is for (a schedule goes to every function).
fn files() -> Vec<(&'static str, &'static str)> {
    let mut files = vec![];
    for file in [
        "dynamodb-throttle-alarm.json",
        "dynamodb-throttle-alarm-action.json",
        "dynamodb-gsi-throttle-alarm.json",
        "dynamodb-throttle-ok.json",
        "lambda-throttles-alarm.json",
        "manual-dynamodb-capacity-dry-run.json",
        "manual-dynamodb-capacity.json",
        "manual-dynamodb-on-demand-dry-run.json",
        "manual-lambda-concurrency-dry-run.json",
        "manual-stored-limit.json",
        "runbook-handoff.json",
    ] {
        files.push((file, "limit-scaler"));
    }
    for file in [
        "sqs-dlq-alarm.json",
        "sqs-dlq-alarm-action.json",
        "manual-dlq-inspect.json",
        "manual-dlq-redrive-dry-run.json",
        "manual-dlq-redrive.json",
    ] {
        files.push((file, "dlq-redriver"));
    }
    for file in [
        "lambda-errors-alarm.json",
        "lambda-errors-ok.json",
        "lambda-duration-alarm-action.json",
        "manual-lambda-resources.json",
        "manual-lambda-rollback-dry-run.json",
        "manual-alarm-replay.json",
        "cloudformation-stack-status-change.json",
        "manual-stack-recovery.json",
        "manual-dynamodb-backup.json",
        "manual-health-probes.json",
        "api-5xx-alarm.json",
        "api-http-5xx-alarm.json",
        "manual-api-errors-dry-run.json",
    ] {
        let function = if file == "manual-health-probes.json" {
            "health-prober"
        } else {
            "alarm-responder"
        };
        files.push((file, function));
    }
    for function in [
        "limit-scaler",
        "dlq-redriver",
        "alarm-responder",
        "health-prober",
    ] {
        files.push(("scheduled-event.json", function));
    }
    // Last: it empties the DLQ.
    files.push(("manual-dlq-purge.json", "dlq-redriver"));
    files
}

#[derive(Default, Debug)]
struct Figure {
    invocations: usize,
    faults: u64,
    recovered: usize,
    failed: usize,
    failed_reasons: Vec<String>,
    crashes: Vec<String>,
    mismatches: Vec<String>,
    unexplained: Vec<String>,
    /// Reports with an applied action (none may have one in a paused round).
    applied: Vec<String>,
    /// Reports skipped because of the pause.
    paused: usize,
    /// Each invocation's outcome, `<function> <file>: <outcome>` (a sweep's outcomes joined,
    /// the prober's health as `healthy` or `unhealthy`), in the order they ran, and its reasons.
    outcomes: Vec<(String, String)>,
}

fn faults_of(counts: &Value, key: &str) -> u64 {
    counts[key]
        .as_object()
        .map_or(0, |kinds| kinds.values().filter_map(Value::as_u64).sum())
}

/// Whether a round runs as it is, or with the kill switch engaged first (through the
/// health-prober binary: the pause must hold for every function's next invocation).
#[derive(Clone, Copy, PartialEq)]
enum Switch {
    Running,
    Paused,
}

async fn run_round(
    moto: &Moto,
    endpoints: &Endpoints,
    index: usize,
    switch: Switch,
    files: Vec<(&str, &str)>,
) -> Figure {
    let round = Round::create(moto, index).await;
    let deployment = moto
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "managed-*"),
                ("LimitsTable", round.limits().as_str()),
            ],
            ..Default::default()
        })
        .await;
    let mut processes = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for (name, logical, extra) in [
        (
            "limit-scaler",
            LIMIT_SCALER,
            vec![
                ("LIMITS_TABLE", round.limits()),
                ("LIMITS_VALUE_ATTRS", "requests_per_second".to_string()),
                ("SCALE_DOWN_AFTER_HOURS", "0".to_string()),
            ],
        ),
        (
            "dlq-redriver",
            DLQ_REDRIVER,
            vec![
                ("REDRIVE_ON_ALARM", "true".to_string()),
                ("DLQ_QUEUES", round.pair.dlq.name.clone()),
                ("REDRIVE_RATE_PER_SECOND", "1000".to_string()),
            ],
        ),
        ("alarm-responder", ALARM_RESPONDER, vec![]),
        (
            "health-prober",
            HEALTH_PROBER,
            vec![("VERIFICATION_WINDOW_MINUTES", "1".to_string())],
        ),
    ] {
        let mut env = deployment.function_env(moto, logical);
        env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
        env.push(("COOLDOWN_SECONDS".into(), "0".into()));
        env.push(("MAX_ACTIONS_PER_HOUR".into(), "1000".into()));
        // Every runbook of the round acts within seconds: the fleet's brakes (tests/tests/
        // brakes.rs) would stop most of them, and this run measures them under faults.
        env.push(("MAX_CHANGES_PER_WINDOW".into(), "1000".into()));
        env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        keys.insert(
            name,
            env.iter()
                .find(|(k, _)| k == "AWS_ACCESS_KEY_ID")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
        let mut process = LambdaProcess::start(&binary(name), &env).await;
        process.timeout = Duration::from_secs(30);
        processes.insert(name, process);
    }
    let mut figure = Figure::default();
    if switch == Switch::Paused {
        let prober = processes.get_mut("health-prober").expect("health-prober");
        let paused = prober.report(&event_file("control-pause.json", &[])).await;
        assert_eq!(paused["outcome"], "remediated", "{paused}");
    }
    let names = [
        ("orders", round.base.as_str()),
        ("a1b2c3d4e5", round.http_api.as_str()),
        (
            "https://orders.example.com/health",
            endpoints.url("/health").leak(),
        ),
    ];
    // What the last invocation left is what the next one starts from, unless a refill came
    // between them or messages were in flight (made visible since, they change the sample).
    let mut last = None;
    for (batch, (file, function)) in files.into_iter().enumerate() {
        if function == "dlq-redriver" && round.refill(moto, batch + 1).await {
            last = None;
        }
        let event = event_file(file, &names);
        let before = match last.take() {
            Some(state) => state,
            None => round.state(moto).await,
        };
        let faults_before = faults_of(&moto.faults().await, &keys[function]);
        let process = processes.get_mut(function).expect("process");
        let answer = process.invoke(&event).await;
        figure.invocations += 1;
        let output = match answer {
            Invoked::Response(output) => output,
            // Stopped before the deadline (its failed report logged and published): an error
            // Lambda retries, explained, not a crash. What it did is checked by the next event.
            Invoked::Error(error) if error.to_string().contains("before the Lambda deadline") => {
                figure.failed += 1;
                figure
                    .failed_reasons
                    .push(format!("{function} with {file}: {error}"));
                continue;
            }
            other => {
                // The function's last log lines say where it was when it crashed or hung.
                let logs = process.logs.lock().expect("logs");
                let last = logs[logs.len().saturating_sub(LOG_LINES_ON_CRASH)..].join("\n");
                figure.crashes.push(format!(
                    "round {index}, {function} with {file}: {other:?}; last logs:\n{last}"
                ));
                continue;
            }
        };
        let faults = faults_of(&moto.faults().await, &keys[function]) - faults_before;
        figure.faults += faults;
        let reports: Vec<Value> = match output.get("reports") {
            Some(reports) => reports.as_array().cloned().unwrap_or_default(),
            None if output.get("probes").is_some() => vec![],
            None => vec![output.clone()],
        };
        let outcomes: Vec<&str> = match output.get("healthy").and_then(Value::as_bool) {
            Some(true) => vec!["healthy"],
            Some(false) => vec!["unhealthy"],
            None => reports
                .iter()
                .map(|report| report["outcome"].as_str().unwrap_or("none"))
                .collect(),
        };
        let reasons: Vec<&str> = reports
            .iter()
            .map(|report| report["reason"].as_str().unwrap_or_default())
            .collect();
        figure.outcomes.push((
            format!("{function} {file}: {}", outcomes.join(", ")),
            reasons.join(" | "),
        ));
        for report in &reports {
            let applied = report["actions"]
                .as_array()
                .is_some_and(|actions| actions.iter().any(|a| a["applied"] == true));
            if applied {
                figure
                    .applied
                    .push(format!("round {index}, {function} with {file}: {report}"));
            }
            let reason = report["reason"].as_str().unwrap_or_default();
            figure.paused += usize::from(reason.starts_with("paused: paused by alice@example.com"));
        }
        let failed = reports.iter().any(|r| r["outcome"] == "failed");
        figure.failed += usize::from(failed);
        figure.failed_reasons.extend(
            reports
                .iter()
                .filter(|r| r["outcome"] == "failed")
                .map(|r| format!("{function} with {file}: {}", r["reason"])),
        );
        if faults > 0 && !failed {
            figure.recovered += 1;
        }
        for report in &reports {
            let outcome = report["outcome"].as_str().unwrap_or_default();
            let reason = report["reason"].as_str().unwrap_or_default();
            let says_where = reason.contains(':') && reason.len() > 20;
            if !OUTCOMES.contains(&outcome) || (outcome == "failed" && !says_where) {
                figure
                    .unexplained
                    .push(format!("round {index}, {function} with {file}: {report}"));
            }
        }
        let after = round.state(moto).await;
        for found in mismatches(&round, &before, &after, &reports) {
            figure.mismatches.push(format!(
                "round {index}, {function} with {file}: {found}; {output}"
            ));
        }
        last = Some(after).filter(|state| state["dlq_in_flight"] == json!(0));
    }
    for (_, process) in processes {
        process.stop().await;
    }
    figure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_never_crash_a_function_lie_about_a_change_or_lose_a_message() {
    // Every round at once, each on a front of its own (its own seed too): a round spends its
    // time waiting (retries, polls), and one Python process serving all of them would be the
    // bottleneck.
    let fronts: Vec<Moto> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..ROUNDS_AT_ONCE)
            .map(|front| {
                scope.spawn(move || {
                    let faults = format!("{FAULT_RATE},seed={}", SEED + front);
                    runbook_tests::moto::start(&[("FRONT_FAULTS", faults.as_str())])
                        .expect("moto front")
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|front| front.join().expect("moto front"))
            .collect()
    });
    let endpoints = Endpoints::start().await;
    let started = Instant::now();
    let mut figure = Figure::default();
    for batch in (0..ROUNDS).collect::<Vec<_>>().chunks(ROUNDS_AT_ONCE) {
        let rounds = batch.iter().map(|index| {
            let moto = &fronts[index % ROUNDS_AT_ONCE];
            run_round(moto, &endpoints, *index, Switch::Running, files())
        });
        for round in futures_util::future::join_all(rounds).await {
            figure.invocations += round.invocations;
            figure.faults += round.faults;
            figure.recovered += round.recovered;
            figure.failed += round.failed;
            figure.failed_reasons.extend(round.failed_reasons);
            figure.crashes.extend(round.crashes);
            figure.mismatches.extend(round.mismatches);
            figure.unexplained.extend(round.unexplained);
        }
    }
    println!(
        "fault injection ({FAULT_RATE}): {} invocations, {} faults injected, {} invocations recovered by retry, {} with a failed report, {} crashes or hangs, {} mismatches between reports and moto, {:.0} s",
        figure.invocations,
        figure.faults,
        figure.recovered,
        figure.failed,
        figure.crashes.len(),
        figure.mismatches.len(),
        started.elapsed().as_secs_f64()
    );
    for reason in &figure.failed_reasons {
        println!("  failed: {reason}");
    }
    assert!(figure.invocations >= 200, "{figure:?}");
    assert!(
        figure.faults > 50,
        "the fault mode injected too little: {figure:?}"
    );
    assert!(figure.crashes.is_empty(), "{:#?}", figure.crashes);
    assert!(figure.unexplained.is_empty(), "{:#?}", figure.unexplained);
    assert!(figure.mismatches.is_empty(), "{:#?}", figure.mismatches);
}

/// A pause through one binary holds for every function's next invocation: every events/ file
/// through its binary (with redrives on alarms allowed, and stored-limit, capacity, rollback,
/// stack and backup runs that would act) changes nothing, and every run that would have acted
/// says it was paused and by whom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_every_function_at_its_next_invocation() {
    let moto = runbook_tests::moto::start(&[]).expect("moto front");
    let endpoints = Endpoints::start().await;
    let figure = run_round(&moto, &endpoints, 100, Switch::Paused, files()).await;
    assert!(figure.crashes.is_empty(), "{:#?}", figure.crashes);
    assert!(figure.unexplained.is_empty(), "{:#?}", figure.unexplained);
    assert!(figure.applied.is_empty(), "{:#?}", figure.applied);
    assert!(figure.mismatches.is_empty(), "{:#?}", figure.mismatches);
    // The runs that act on a managed resource in a running round: capacity (alarm, action,
    // index, manual), concurrency, stored limit, redrive (alarm, action, manual, schedule),
    // rollback, resources, stack (event, manual), backup, purge, put-backs.
    assert!(figure.paused >= 12, "{figure:?}");
}

/// What every events/ file gives through its binary, on a round's fresh resources without
/// faults: the record that a change meant to keep the behaviour (a restructure) keeps it.
/// `outcomes.txt` holds it; after a change meant to alter an outcome, print the new record
/// with `RECORD_OUTCOMES=1` and replace the file with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_events_file_keeps_its_recorded_outcome() {
    let moto = runbook_tests::moto::start(&[]).expect("moto front");
    let endpoints = Endpoints::start().await;
    let mut files = files();
    // The files the fault run leaves out (they need no resources of the round, or would pause
    // it): each is answered the same way on every run too.
    for (file, function) in [
        ("composite-alarm.json", "limit-scaler"),
        ("composite-alarm-suppressed.json", "limit-scaler"),
        ("dynamodb-throttle-alarm-sns.json", "limit-scaler"),
        ("dynamodb-throttle-ok-sns.json", "limit-scaler"),
        ("lambda-throttle-rate-alarm-sns.json", "limit-scaler"),
        ("manual-approve-plan.json", "limit-scaler"),
        ("manual-deny-plan.json", "limit-scaler"),
        ("manual-scorecard.json", "health-prober"),
        ("control-status.json", "health-prober"),
        ("control-pause.json", "health-prober"),
        ("control-resume.json", "health-prober"),
    ] {
        files.push((file, function));
    }
    let figure = run_round(&moto, &endpoints, 200, Switch::Running, files).await;
    if std::env::var_os("RECORD_OUTCOMES").is_some() {
        for (outcome, _) in &figure.outcomes {
            println!("{outcome}");
        }
    }
    let recorded = std::fs::read_to_string(
        runbook_tests::workspace_root().join("tests/tests/fault_injection/outcomes.txt"),
    )
    .expect("tests/tests/fault_injection/outcomes.txt");
    let changed: Vec<String> = recorded
        .lines()
        .zip(&figure.outcomes)
        .filter(|(was, (now, _))| was != now)
        .map(|(was, (now, reason))| format!("was {was:?}, now {now:?}: {reason}"))
        .collect();
    assert!(changed.is_empty(), "the outcomes changed: {changed:#?}");
    assert_eq!(recorded.lines().count(), figure.outcomes.len());
    assert!(figure.crashes.is_empty(), "{:#?}", figure.crashes);
}
