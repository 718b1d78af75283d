//! The bench command (scripts/bench.sh): measures the release build of the functions against
//! the emulator and prints one table, also written as JSON to bench-results/bench.json.
//!
//! - per function: binary size (release, stripped), cold start (process start to the first
//!   response under the Runtime API emulator, median of runs, each on fresh resources) and peak
//!   memory (VmHWM) for a typical event: a throttle alarm, a DLQ alarm, an errors alarm, a
//!   scheduled health check;
//! - dlq-redriver: messages per second and AWS API calls per message redriving 10,000 messages;
//! - health-prober: wall time of 200 HTTP probes of which 10 take 1 s, against the slowest probe;
//! - limit-scaler: time from a throttle alarm event to the table verified at its new capacity.

use std::time::{Duration, Instant};

use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{
    QueuePair, TableSpec, create_audit_table, create_deployed_function, depth, event_file,
    send_messages,
};
use runbook_tests::moto::Moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

const REDRIVE_MESSAGES: usize = 10_000;

async fn redrive(moto: &Moto) -> Result<Value, Error> {
    let sqs = moto.sqs();
    let audit = create_audit_table(&moto.dynamodb()).await;
    let pair = QueuePair::create_with(&sqs, "bench", false, 100).await;
    let bodies: Vec<String> = (0..REDRIVE_MESSAGES)
        .map(|i| json!({"id": i, "type": "order.created"}).to_string())
        .collect();
    send_messages(&sqs, &pair.dlq, &bodies, None, &[("tenant", "42")]).await;
    let mut env = moto.function_env();
    env.extend(
        [
            ("AUDIT_TABLE", audit.as_str()),
            ("MANAGED_RESOURCES", "bench-*"),
            ("MAX_REDRIVE_RATE_PER_SECOND", "100000"),
            ("REDRIVE_RATE_PER_SECOND", "100000"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut function = LambdaProcess::start(&binary("dlq-redriver"), &env).await;
    function.timeout = Duration::from_secs(900);
    let started = Instant::now();
    let report = function
        .report(&json!({"dlq": pair.dlq.name, "action": "redrive"}))
        .await;
    let wall = started.elapsed();
    function.stop().await;
    let moved = report["details"]["ledger"]["moved"].as_u64().unwrap_or(0);
    if report["outcome"] != "remediated"
        || moved != REDRIVE_MESSAGES as u64
        || depth(&sqs, &pair.dlq).await != 0
    {
        return Err(format!("the redrive did not move every message: {report}").into());
    }
    Ok(json!({
        "messages": moved,
        "wall_seconds": wall.as_secs_f64(),
        "messages_per_second": report["details"]["messages_per_second"],
        "api_calls": report["details"]["api_calls"],
        "api_calls_per_message": report["details"]["api_calls_per_message"],
        "concurrency": report["details"]["plan"]["concurrency"],
    }))
}

const PROBES: usize = 200;
const SLOW_PROBES: usize = 10;

async fn prober(moto: &Moto) -> Result<Value, Error> {
    let endpoints = Endpoints::start().await;
    let probes: Vec<Value> = (0..PROBES)
        .map(|i| {
            let path = if i % (PROBES / SLOW_PROBES) == 0 { "/slow/1000" } else { "/health" };
            json!({"name": format!("probe-{i:03}"), "kind": "http", "url": endpoints.url(path), "timeout_ms": 5000})
        })
        .collect();
    let audit = create_audit_table(&moto.dynamodb()).await;
    let mut env = moto.function_env();
    env.push(("AUDIT_TABLE".into(), audit));
    let mut function = LambdaProcess::start(&binary("health-prober"), &env).await;
    let report = function.report(&json!({"probes": probes})).await;
    function.stop().await;
    let results = report["probes"].as_array().cloned().unwrap_or_default();
    if results.len() != PROBES || report["healthy"] != true {
        return Err(format!("the probes did not all pass: {}", report["reason"]).into());
    }
    let slowest = results
        .iter()
        .filter_map(|probe| probe["latency_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let sum: u64 = results
        .iter()
        .filter_map(|probe| probe["latency_ms"].as_u64())
        .sum();
    Ok(json!({
        "probes": PROBES,
        "slow_probes": SLOW_PROBES,
        "wall_ms": report["duration_ms"],
        "slowest_probe_ms": slowest,
        "sum_of_probes_ms": sum,
    }))
}

const COLD_START_RUNS: usize = 7;
/// The functions measured are the ones built with this binary's profile (scripts/bench.sh: release).
const BUILD: &str = if cfg!(debug_assertions) {
    "debug build"
} else {
    "release, stripped"
};

/// The environment of a function binary against this emulator, managing `bench-*`.
fn env(moto: &Moto, audit: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = moto.function_env();
    env.push(("AUDIT_TABLE".into(), audit.into()));
    env.push(("MANAGED_RESOURCES".into(), "bench-*".into()));
    // Every run changes a resource of its own within seconds: the budget and the change brake
    // (tests/tests/brakes.rs) would stop most of them, and this measures the work.
    env.push(("MAX_ACTIONS_PER_HOUR".into(), "1000".into()));
    env.push(("MAX_CHANGES_PER_WINDOW".into(), "1000".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// An events/ file as a new event: its own id, so that every run does the work (with the
/// file's fixed id, every run after the first would be answered from the first one's record,
/// which measures the duplicate-event path, not the runbook).
fn fresh_event(name: &str, replacements: &[(&str, &str)]) -> Value {
    let mut event = event_file(name, replacements);
    if event.get("id").is_some() {
        event["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    event
}

/// A typical event for the function, on resources of its own.
async fn typical_event(
    moto: &Moto,
    function: &str,
    endpoints: &Endpoints,
) -> (Value, Vec<(&'static str, String)>) {
    match function {
        "limit-scaler" => {
            let spec = TableSpec::provisioned("bench-orders", 5, 5);
            let table = spec.name.clone();
            spec.create(&moto.dynamodb()).await;
            (
                fresh_event("dynamodb-throttle-alarm.json", &[("orders", &table)]),
                vec![],
            )
        }
        "dlq-redriver" => {
            let sqs = moto.sqs();
            let pair = QueuePair::create_with(&sqs, "bench-orders", false, 100).await;
            let bodies: Vec<String> = (0..25).map(|i| json!({"id": i}).to_string()).collect();
            send_messages(&sqs, &pair.dlq, &bodies, None, &[]).await;
            (
                fresh_event("sqs-dlq-alarm.json", &[("orders", &pair.source.name)]),
                vec![],
            )
        }
        "alarm-responder" => {
            let base = runbook_tests::unique("bench-orders");
            let name = format!("{base}-api");
            create_deployed_function(moto, &name, "2").await;
            (
                fresh_event("lambda-errors-alarm.json", &[("orders", &base)]),
                vec![],
            )
        }
        _ => {
            let spec = TableSpec::provisioned("bench-orders", 5, 5);
            let table = spec.name.clone();
            spec.create(&moto.dynamodb()).await;
            let probes = json!([
                {"name": "api", "kind": "http", "url": endpoints.url("/health")},
                {"name": "table", "kind": "dynamodb_table", "table": table},
            ]);
            (
                fresh_event("scheduled-event.json", &[]),
                vec![("PROBES", probes.to_string())],
            )
        }
    }
}

/// Peak resident memory of a live process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn per_function(moto: &Moto, function: &str) -> Result<Value, Error> {
    let path = binary(function);
    let size = std::fs::metadata(&path)?.len();
    let endpoints = Endpoints::start().await;
    let audit = create_audit_table(&moto.dynamodb()).await;
    let mut cold = Vec::new();
    let mut handler = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..COLD_START_RUNS {
        let (event, extra) = typical_event(moto, function, &endpoints).await;
        let started = Instant::now();
        let mut process = LambdaProcess::start(&path, &env(moto, &audit, &extra)).await;
        let report = process.report(&event).await;
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
        // The report's own duration: the handler's work (its AWS calls against moto), which
        // the cold start includes.
        handler.push(report["duration_ms"].as_f64().unwrap_or(0.0));
        let bad = report["outcome"] == "failed"
            || report["outcome"] == "rejected"
            || report["healthy"] == false;
        if bad {
            return Err(
                format!("{function}: the typical event did not go through: {report}").into(),
            );
        }
        if let Some(peak) = process.process_id().and_then(peak_rss_kib) {
            rss.push(peak as f64 / 1024.0);
        }
        process.stop().await;
    }
    Ok(json!({
        "binary_bytes": size,
        "cold_start_ms_median": median(cold.clone()),
        "cold_start_ms_runs": cold,
        "handler_ms_median": median(handler),
        "peak_rss_mib_median": median(rss.clone()),
        "peak_rss_mib_max": rss.iter().copied().fold(0.0, f64::max),
    }))
}

const ALARM_RUNS: usize = 7;

/// Time from the throttle alarm event reaching a warm limit-scaler to its report with the table
/// verified ACTIVE at the new capacity (DescribeTable read back), median of runs.
async fn alarm_to_verified(moto: &Moto) -> Result<Value, Error> {
    let audit = create_audit_table(&moto.dynamodb()).await;
    let mut process = LambdaProcess::start(&binary("limit-scaler"), &env(moto, &audit, &[])).await;
    let mut runs = Vec::new();
    for _ in 0..ALARM_RUNS {
        let spec = TableSpec::provisioned("bench-orders", 5, 5);
        let table = spec.name.clone();
        spec.create(&moto.dynamodb()).await;
        let event = fresh_event("dynamodb-throttle-alarm.json", &[("orders", &table)]);
        let started = Instant::now();
        let report = process.report(&event).await;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        // The resource checks (status, capacity) pass within the invocation; the alarm's own
        // check stays pending until it returns to OK.
        let checks = report["verification"]["checks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let resource_verified = ["status", "capacity"]
            .iter()
            .all(|name| checks.iter().any(|c| c["name"] == *name && c["ok"] == true));
        if report["outcome"] != "remediated" || !resource_verified {
            return Err(format!("limit-scaler did not verify the raise: {report}").into());
        }
        runs.push(elapsed);
    }
    process.stop().await;
    Ok(json!({"alarm_to_verified_ms_median": median(runs.clone()), "runs_ms": runs}))
}

fn row(name: &str, value: String, note: &str) {
    println!("| {name:<44} | {value:>14} | {note} |");
}

#[tokio::main]
// Over 80 lines: the bench is a script: each measure in the order it prints.
async fn main() -> Result<(), Error> {
    let moto = runbook_tests::moto::start(&[])?;
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    let mut functions = serde_json::Map::new();
    for function in [
        "limit-scaler",
        "dlq-redriver",
        "alarm-responder",
        "health-prober",
    ] {
        eprintln!("bench: {function}: size, cold start and memory ({COLD_START_RUNS} runs)...");
        functions.insert(function.into(), per_function(&moto, function).await?);
    }
    eprintln!("bench: limit-scaler from alarm to verified ({ALARM_RUNS} runs)...");
    let scaler = alarm_to_verified(&moto).await?;
    eprintln!("bench: redriving {REDRIVE_MESSAGES} messages through dlq-redriver against moto...");
    let redrive = redrive(&moto).await?;
    eprintln!("bench: {PROBES} health probes, {SLOW_PROBES} of them slow...");
    let prober = prober(&moto).await?;

    println!("| measure | value | note |");
    println!("|---|---:|---|");
    for (function, figures) in &functions {
        row(
            &format!("{function}: binary size (MiB)"),
            format!(
                "{:.1}",
                figures["binary_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0
            ),
            &format!("{BUILD}, {}", std::env::consts::ARCH),
        );
        row(
            &format!("{function}: cold start (ms)"),
            format!(
                "{:.0}",
                figures["cold_start_ms_median"].as_f64().unwrap_or(0.0)
            ),
            &format!(
                "process start to first response, median of {COLD_START_RUNS}, typical event against moto"
            ),
        );
        row(
            &format!("{function}: of which the handler (ms)"),
            format!(
                "{:.0}",
                figures["handler_ms_median"].as_f64().unwrap_or(0.0)
            ),
            "the report's duration_ms: the runbook's AWS calls against moto, median",
        );
        row(
            &format!("{function}: peak memory (MiB)"),
            format!("{:.1}", figures["peak_rss_mib_max"].as_f64().unwrap_or(0.0)),
            "VmHWM after the typical event, highest of the runs",
        );
    }
    row(
        "limit-scaler: alarm event to verified (ms)",
        format!(
            "{:.0}",
            scaler["alarm_to_verified_ms_median"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        &format!(
            "warm function, throttle alarm to table ACTIVE at the new capacity, median of {ALARM_RUNS}"
        ),
    );
    row(
        "dlq-redriver: messages per second",
        format!(
            "{:.0}",
            redrive["messages_per_second"].as_f64().unwrap_or(0.0)
        ),
        &format!(
            "{REDRIVE_MESSAGES} messages, {} batches in flight, against moto",
            redrive["concurrency"]
        ),
    );
    row(
        "dlq-redriver: AWS API calls per message",
        format!(
            "{:.3}",
            redrive["api_calls_per_message"].as_f64().unwrap_or(0.0)
        ),
        "receive, send and delete in batches of 10 (floor 0.3)",
    );
    row(
        "health-prober: wall time of 200 probes (ms)",
        prober["wall_ms"].to_string(),
        &format!(
            "{SLOW_PROBES} take 1 s; slowest probe {} ms, all probes summed {} ms",
            prober["slowest_probe_ms"], prober["sum_of_probes_ms"]
        ),
    );
    let results = json!({
        "machine": machine,
        "functions": functions,
        "limit_scaler": scaler,
        "dlq_redriver": redrive,
        "health_prober": prober,
    });
    let directory = runbook_tests::workspace_root().join("bench-results");
    std::fs::create_dir_all(&directory)?;
    std::fs::write(
        directory.join("bench.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("\nmachine: {machine}; written to bench-results/bench.json");
    Ok(())
}
