//! The organization measurement (scripts/fleet-bench.sh): 1,000 throttle alarms from 20 spoke
//! accounts, each of which runs spoke.yaml, through `limit-scaler` binaries (one process per
//! concurrent Lambda instance) of one hub, against moto. Every event is a table of its own to
//! raise, so every one assumes its account's role, diagnoses, raises, verifies and audits.
//! Prints one table and writes bench-results/fleet.json.

use std::sync::Arc;
use std::time::Instant;

use runbook_tests::fixtures::{
    EXTERNAL_ID, TableSpec, account_config, create_audit_table, deploy_spoke, event_file,
    new_account,
};
use runbook_tests::moto::{ACCOUNT, Moto};
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::json;
use tokio::sync::Mutex;

type Error = Box<dyn std::error::Error>;

const ACCOUNTS: usize = 20;
const EVENTS: usize = 1_000;
/// Function instances running at once (Lambda's concurrency for limit-scaler).
const INSTANCES: usize = 8;

/// The hub's environment: every spoke listed, and the budget and change brake raised, since
/// every account here changes 50 tables within seconds (the defaults would stop most of them,
/// and this measures the work).
fn hub_env(moto: &Moto, audit: &str, accounts: &[String]) -> Vec<(String, String)> {
    let mut env = moto.function_env();
    for (key, value) in [
        ("AUDIT_TABLE", audit.to_string()),
        ("MANAGED_RESOURCES", "managed-*".into()),
        ("DEFAULT_MODE", "auto".into()),
        ("ACCOUNTS", accounts.join(",")),
        ("SPOKE_EXTERNAL_ID", EXTERNAL_ID.into()),
        ("MAX_ACTIONS_PER_HOUR", "1000".into()),
        ("MAX_CHANGES_PER_WINDOW", "1000".into()),
        ("REPORT_EVENT_BUS", "off".into()),
    ] {
        env.push((key.into(), value));
    }
    env
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
// Over 80 lines: the bench is a script: each measure in the order it prints.
async fn main() -> Result<(), Error> {
    let moto = runbook_tests::moto::start(&[])?;
    let audit = create_audit_table(&moto.dynamodb()).await;
    eprintln!("fleet bench: {ACCOUNTS} accounts with spoke.yaml and {EVENTS} throttled tables...");
    let mut accounts = Vec::new();
    let mut events = Vec::new();
    for index in 0..ACCOUNTS {
        let account = new_account();
        let sdk = account_config(&moto, &account, "us-east-1").await;
        deploy_spoke(&sdk, EXTERNAL_ID, "us-east-1").await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        for _ in (index..EVENTS).step_by(ACCOUNTS) {
            let table = TableSpec::provisioned("managed-orders", 5, 5)
                .create(&dynamodb)
                .await;
            let mut event = event_file(
                "dynamodb-throttle-alarm.json",
                &[("orders", &table), (ACCOUNT, &account)],
            );
            event["id"] = json!(uuid::Uuid::new_v4().to_string());
            events.push(event);
        }
        accounts.push(account);
    }
    // Interleaved, as alarms from many accounts arrive.
    events.sort_by_key(|event| event["id"].as_str().map(str::to_string));

    let env = hub_env(&moto, &audit, &accounts);
    let queue = Arc::new(Mutex::new(events));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..INSTANCES {
        let queue = queue.clone();
        let mut function = LambdaProcess::start(&binary("limit-scaler"), &env).await;
        workers.push(tokio::spawn(async move {
            let mut done: Vec<(f64, String)> = Vec::new();
            loop {
                let Some(event) = queue.lock().await.pop() else {
                    return done;
                };
                let sent = Instant::now();
                let report = function.report(&event).await;
                let outcome = report["outcome"].as_str().unwrap_or("none").to_string();
                if outcome != "remediated" {
                    eprintln!("fleet bench: {report}");
                }
                done.push((sent.elapsed().as_secs_f64() * 1_000.0, outcome));
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for worker in workers {
        for (ms, outcome) in worker.await? {
            latencies.push(ms);
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    let wall = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let throughput = latencies.len() as f64 / wall.as_secs_f64();
    let figures = json!({
        "accounts": ACCOUNTS,
        "events": latencies.len(),
        "instances": INSTANCES,
        "wall_seconds": wall.as_secs_f64(),
        "events_per_second": throughput,
        "alarm_to_report_ms": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "outcomes": outcomes,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| alarm events (accounts) | {} ({ACCOUNTS}) |",
        latencies.len()
    );
    println!("| function instances at once | {INSTANCES} |");
    println!("| wall time | {:.1} s |", wall.as_secs_f64());
    println!("| throughput | {throughput:.1} events/s |");
    println!(
        "| alarm to report, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!("| outcomes | {} |", serde_json::to_string(&outcomes)?);
    let dir = runbook_tests::workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("fleet.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    if outcomes.get("remediated") != Some(&EVENTS) {
        return Err(format!("not every event was remediated: {outcomes:?}").into());
    }
    Ok(())
}
