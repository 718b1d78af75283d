//! Running the probes: all concurrently (bounded), each under its own timeout.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use runbook_shared::aws::FaultKind;
use runbook_shared::deadline::Deadline;
use serde::Serialize;

mod http;
mod resources;

use http::check_http;
use resources::{check_alarms, check_lambda, check_metric, check_queue, check_stack, check_table};

use crate::probes::Probe;

/// One probe's result, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub healthy: bool,
    pub latency_ms: u64,
    pub detail: String,
}

/// The clients the probes use.
#[derive(Clone)]
pub struct Clients {
    pub http: reqwest::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub lambda: aws_sdk_lambda::Client,
}

/// Runs every probe, at most `concurrency` at once, each stopped at its own timeout (or
/// `default_timeout`) and never after `stop_by`, so a stuck probe never holds up the others nor
/// the report; results keep the probes' order.
pub async fn run_all(
    clients: &Clients,
    probes: &[Probe],
    concurrency: usize,
    default_timeout: Duration,
    stop_by: Deadline,
) -> Vec<ProbeResult> {
    // Unordered, so a slow probe never keeps a free slot from the next one; sorted back after.
    let mut results: Vec<(usize, ProbeResult)> =
        futures_util::stream::iter(probes.iter().enumerate())
            .map(|(index, probe)| async move {
                (
                    index,
                    run_one(clients, probe, default_timeout, stop_by).await,
                )
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

async fn run_one(
    clients: &Clients,
    probe: &Probe,
    default_timeout: Duration,
    stop_by: Deadline,
) -> ProbeResult {
    let asked = probe
        .timeout_ms()
        .map_or(default_timeout, Duration::from_millis);
    let timeout = asked.min(stop_by.remaining());
    let started = Instant::now();
    let verdict = tokio::time::timeout(timeout, check(clients, probe)).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (healthy, detail) = verdict.unwrap_or_else(|_| {
        let capped = if timeout < asked {
            format!(
                " (its timeout of {} ms was capped so that the report, the metrics and the sweep fit in the invocation)",
                asked.as_millis()
            )
        } else {
            String::new()
        };
        (
            false,
            format!("timeout: no answer within {} ms{capped}", timeout.as_millis()),
        )
    });
    ProbeResult {
        name: probe.name().to_string(),
        kind: probe.kind().to_string(),
        target: probe.target().to_string(),
        healthy,
        latency_ms,
        detail,
    }
}

async fn check(clients: &Clients, probe: &Probe) -> (bool, String) {
    let outcome = match probe {
        Probe::Http(http) => return check_http(&clients.http, http).await,
        Probe::DynamodbTable(table) => check_table(clients, table).await,
        Probe::SqsQueue(queue) => check_queue(clients, queue).await,
        Probe::Stack(stack) => check_stack(clients, stack).await,
        Probe::Alarms(alarms) => check_alarms(clients, alarms).await,
        Probe::Lambda(function) => check_lambda(clients, function).await,
        Probe::Metric(metric) => check_metric(clients, metric).await,
    };
    outcome.unwrap_or_else(|err| {
        let detail = if err.is(FaultKind::NotFound) {
            format!("not found: {err}")
        } else {
            format!("could not check: {err}")
        };
        (false, detail)
    })
}
