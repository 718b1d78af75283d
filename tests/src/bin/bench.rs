//! The bench command (scripts/bench.sh): measures against the emulator and prints one table,
//! also written as JSON to bench-results/bench.json.
//!
//! - dlq-redriver: messages per second and AWS API calls per message redriving 10,000 messages.
//! - health-prober: wall time of 200 HTTP probes of which 10 take 1 s, against the slowest probe.

use std::time::{Duration, Instant};

use runbook_tests::endpoints::Endpoints;
use runbook_tests::fixtures::{QueuePair, create_audit_table, depth, send_messages};
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

fn row(name: &str, value: String, note: &str) {
    println!("| {name:<44} | {value:>14} | {note} |");
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let moto = runbook_tests::moto::start(&[])?;
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    eprintln!("bench: redriving {REDRIVE_MESSAGES} messages through dlq-redriver against moto...");
    let redrive = redrive(&moto).await?;
    eprintln!("bench: {PROBES} health probes, {SLOW_PROBES} of them slow...");
    let prober = prober(&moto).await?;

    println!("| measure | value | note |");
    println!("|---|---:|---|");
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
    let results = json!({"machine": machine, "dlq_redriver": redrive, "health_prober": prober});
    let directory = runbook_tests::workspace_root().join("bench-results");
    std::fs::create_dir_all(&directory)?;
    std::fs::write(
        directory.join("bench.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("\nmachine: {machine}; written to bench-results/bench.json");
    Ok(())
}
