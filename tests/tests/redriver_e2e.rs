//! End to end: the compiled `dlq-redriver` binary under the Runtime API emulator, with the
//! files in events/, against moto — including killing it mid-redrive.

use std::collections::HashSet;
use std::time::Duration;

use runbook_tests::deploy::{DLQ_REDRIVER, Deployment, deploy_managed};
use runbook_tests::fixtures::{QueuePair, depth, event_file, peek_all, send_messages};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

async fn start(deployment: &Deployment, extra: &[(&str, &str)]) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), DLQ_REDRIVER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::start(&binary("dlq-redriver"), &env).await
}

fn ids(count: usize, prefix: &str) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn bodies(ids: &[String]) -> Vec<String> {
    ids.iter()
        .map(|id| json!({"id": id, "type": "order.created"}).to_string())
        .collect()
}

fn ids_in(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m.body().unwrap_or_default()).ok())
        .filter_map(|body| body["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn alarm_inspects_then_manual_redrive_and_purge_through_the_binary() {
    let sqs = moto().sqs();
    let deployment = deploy_managed(&[]).await;
    let pair = QueuePair::create_with(&sqs, "managed-orders", false, 100).await;
    let base = pair.source.name.clone();
    send_messages(
        &sqs,
        &pair.dlq,
        &bodies(&ids(12, "e2e")),
        None,
        &[("tenant", "42")],
    )
    .await;
    let mut function = start(&deployment, &[]).await;
    let names = [("orders", base.as_str())];

    let inspected = function
        .report(&event_file("sqs-dlq-alarm.json", &names))
        .await;
    assert_eq!(inspected["outcome"], "no_action", "{inspected}");
    assert_eq!(inspected["details"]["count"]["visible"], 12);
    assert_eq!(inspected["details"]["sampled"], 10, "INSPECT_SAMPLE_SIZE");
    let action = function
        .report(&event_file("sqs-dlq-alarm-action.json", &names))
        .await;
    assert_eq!(action["trigger"]["kind"], "alarm_action");
    assert_eq!(depth(&sqs, &pair.dlq).await, 12);

    let inspect = function
        .report(&event_file("manual-dlq-inspect.json", &names))
        .await;
    assert_eq!(inspect["details"]["sampled"], 10, "{inspect}");
    let planned = function
        .report(&event_file("manual-dlq-redrive-dry-run.json", &names))
        .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    assert_eq!(depth(&sqs, &pair.dlq).await, 12);

    let redriven = function
        .report(&event_file("manual-dlq-redrive.json", &names))
        .await;
    assert_eq!(redriven["outcome"], "remediated", "{redriven}");
    // The ledger reconciled; the messages must still stay out for the verification window.
    assert_eq!(redriven["verification"]["status"], "pending");
    assert_eq!(
        redriven["verification"]["checks"][2]["name"],
        "redriven_stay_out"
    );
    assert_eq!(redriven["details"]["ledger"]["moved"], 12);
    assert_eq!(depth(&sqs, &pair.dlq).await, 0);
    assert_eq!(depth(&sqs, &pair.source).await, 12);

    send_messages(&sqs, &pair.dlq, &bodies(&ids(3, "purge")), None, &[]).await;
    let purged = function
        .report(&event_file("manual-dlq-purge.json", &names))
        .await;
    assert_eq!(purged["outcome"], "remediated", "{purged}");
    assert_eq!(depth(&sqs, &pair.dlq).await, 0);
    function.stop().await;
}

#[tokio::test]
async fn scheduled_sweep_through_the_binary() {
    let sqs = moto().sqs();
    let deployment = deploy_managed(&[]).await;
    let first = QueuePair::create_with(&sqs, "managed-sweep", false, 100).await;
    let second = QueuePair::create_with(&sqs, "managed-sweep", false, 100).await;
    send_messages(&sqs, &first.dlq, &bodies(&ids(4, "s1")), None, &[]).await;
    let queues = format!("{},{}", first.dlq.name, second.dlq.name);
    let mut function = start(
        &deployment,
        &[("REDRIVE_ON_ALARM", "true"), ("DLQ_QUEUES", &queues)],
    )
    .await;
    let output = function
        .report(&event_file("scheduled-event.json", &[]))
        .await;
    let reports = output["reports"]
        .as_array()
        .expect("a sweep returns reports");
    assert_eq!(reports.len(), 2, "{output}");
    assert_eq!(reports[0]["outcome"], "remediated", "{output}");
    assert_eq!(reports[1]["outcome"], "no_action", "{output}");
    assert!(reports[1]["reason"].as_str().unwrap().contains("is empty"));
    assert_eq!(depth(&sqs, &first.source).await, 4);
    function.stop().await;
}

/// A number from 0 to `below` - 1, from the OS's randomness (through a v4 UUID).
fn random_below(below: u64) -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) % below
}

#[tokio::test]
async fn killing_the_function_mid_redrive_never_loses_a_message() {
    let _isolated = runbook_tests::moto::isolated("redriver-kill").await;
    const MESSAGES: usize = 2_000;
    let sqs = moto().sqs();
    let deployment = deploy_managed(&[]).await;
    let pair = QueuePair::create_with(&sqs, "managed-crash", false, 100).await;
    let all: HashSet<String> = ids(MESSAGES, "crash").into_iter().collect();
    let sorted: Vec<String> = {
        let mut v: Vec<String> = all.iter().cloned().collect();
        v.sort();
        v
    };
    send_messages(&sqs, &pair.dlq, &bodies(&sorted), None, &[]).await;
    let payload = json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 400});

    for run in 0..3 {
        let mut function = start(
            &deployment,
            &[("COOLDOWN_SECONDS", "0"), ("REDRIVE_CONCURRENCY", "4")],
        )
        .await;
        // A 10 s invocation: about 2 s of redriving before it stops for the deadline.
        function.timeout = Duration::from_secs(10);
        let pid = function.process_id().expect("running");
        let kill_after = Duration::from_millis(200 + random_below(1_600));
        tokio::select! {
            answer = function.invoke(&payload) => panic!("run {run} finished before the kill at {kill_after:?}: {answer:?}"),
            () = tokio::time::sleep(kill_after) => {
                let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
                assert!(killed.success());
            }
        }
        function.stop().await;
        let total = depth(&sqs, &pair.dlq).await + depth(&sqs, &pair.source).await;
        assert!(
            total >= MESSAGES as i64,
            "after kill {run} at {kill_after:?} only {total} messages are left"
        );
        // The killed invocation's lease lasts until its deadline plus a grace of 5 s.
        tokio::time::sleep(Duration::from_secs(10) + Duration::from_secs(5) - kill_after).await;
    }

    // Messages the killed runs held become visible again when their visibility timeout ends.
    let mut waited = 0;
    while depth_in_flight(&sqs, &pair.dlq).await > 0 {
        assert!(waited < 60, "messages still in flight after 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += 1;
    }
    let mut found: HashSet<String> = ids_in(&peek_all(&sqs, &pair.dlq).await)
        .into_iter()
        .collect();
    found.extend(ids_in(&peek_all(&sqs, &pair.source).await));
    let missing: Vec<&String> = all.difference(&found).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    let mut function = start(&deployment, &[("COOLDOWN_SECONDS", "0")]).await;
    let report = function
        .report(&json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 1000}))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(report["verification"]["status"], "pending", "{report}");
    assert_eq!(depth(&sqs, &pair.dlq).await, 0);
    let home: HashSet<String> = ids_in(&peek_all(&sqs, &pair.source).await)
        .into_iter()
        .collect();
    assert!(
        all.is_subset(&home),
        "{} ids did not reach the source",
        all.difference(&home).count()
    );
    function.stop().await;
}

async fn depth_in_flight(
    sqs: &aws_sdk_sqs::Client,
    queue: &runbook_tests::fixtures::SqsQueue,
) -> i64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    attributes
        .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
