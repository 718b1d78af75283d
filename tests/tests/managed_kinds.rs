//! ManagedResources patterns that name a kind (`table:managed-*`) let the automation change that
//! kind alone, in the code and under the template's IAM: a queue of a matching name is left
//! alone, and even a function told otherwise is denied it by its role. An untyped pattern still
//! works for every kind, and the report says so.

use runbook_tests::deploy::{DLQ_REDRIVER, DeployRequest, Deployment, LIMIT_SCALER};
use runbook_tests::fixtures::{QueuePair, TableSpec, capacity, depth, send_messages};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::json;

/// The function's binary, under its template role, with `managed` as MANAGED_RESOURCES.
async fn start(deployment: &Deployment, function: &str, managed: &str) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), function);
    env.push(("MANAGED_RESOURCES".into(), managed.into()));
    let name = if function == LIMIT_SCALER {
        "limit-scaler"
    } else {
        "dlq-redriver"
    };
    LambdaProcess::start(&binary(name), &env).await
}

#[tokio::test]
async fn a_typed_pattern_changes_its_kind_and_leaves_a_queue_of_the_same_name_alone() {
    let typed = "table:managed-*";
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![("ManagedResources", typed)],
            ..DeployRequest::default()
        })
        .await;
    assert_eq!(deployment.status, "CREATE_COMPLETE");
    let dynamodb = moto().dynamodb();
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;

    // The table: raised under the role whose policy the typed pattern scopes.
    let mut scaler = start(&deployment, LIMIT_SCALER, typed).await;
    let raised = scaler
        .report(&json!({"table": table, "read": 10, "write": 5}))
        .await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    assert!(!raised["notes"].to_string().contains("untyped"), "{raised}");
    scaler.stop().await;

    // A DLQ whose name the pattern would match if it were untyped: left alone.
    let sqs = moto().sqs();
    let pair = QueuePair::create(&sqs, "managed-orders", false).await;
    let bodies: Vec<String> = (0..3).map(|n| format!("{{\"n\": {n}}}")).collect();
    send_messages(&sqs, &pair.dlq, &bodies, None, &[]).await;
    let mut redriver = start(&deployment, DLQ_REDRIVER, typed).await;
    let refused = redriver
        .report(&json!({"dlq": pair.dlq.name, "action": "redrive"}))
        .await;
    assert_eq!(refused["outcome"], "skipped", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not managed: queue"),
        "{refused}"
    );
    assert_eq!(depth(&sqs, &pair.dlq).await, 3);
    redriver.stop().await;

    // The role's policy, scoped by the typed pattern, denies the queue even to a function whose
    // own setting (untyped) would let it through.
    let mut told_otherwise = start(&deployment, DLQ_REDRIVER, "managed-*").await;
    let denied = told_otherwise
        .report(&json!({"dlq": pair.dlq.name, "action": "redrive"}))
        .await;
    assert_eq!(denied["outcome"], "failed", "{denied}");
    assert!(denied.to_string().contains("AccessDenied"), "{denied}");
    assert_eq!(depth(&sqs, &pair.dlq).await, 3);
    told_otherwise.stop().await;
}

#[tokio::test]
async fn an_untyped_pattern_still_works_and_every_report_it_lets_through_says_so() {
    let untyped = "managed-*";
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![("ManagedResources", untyped)],
            ..DeployRequest::default()
        })
        .await;
    let dynamodb = moto().dynamodb();
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut scaler = start(&deployment, LIMIT_SCALER, untyped).await;
    let raised = scaler
        .report(&json!({"table": table, "read": 10, "write": 5}))
        .await;
    assert_eq!(raised["outcome"], "remediated", "{raised}");
    let notes = raised["notes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        notes.last().and_then(|note| note.as_str()),
        Some(
            format!(
                "table {table} is managed through the untyped pattern managed-* of MANAGED_RESOURCES, which also lets the automation change queues, tables, functions and stacks of such names: write it table:managed-*"
            )
            .as_str()
        ),
        "{raised}"
    );
    scaler.stop().await;

    // A pattern that matches everything stops the cold start, naming the variable.
    let mut everything = start(&deployment, LIMIT_SCALER, "*").await;
    let answer = everything.invoke(&json!({"table": table})).await;
    assert!(
        matches!(answer, runbook_tests::runtime::Invoked::InitFailed(_)),
        "{answer:?}"
    );
    let logs = everything.logs.lock().expect("logs").join("\n");
    assert!(
        logs.contains("MANAGED_RESOURCES=\\\"*\\\" is invalid"),
        "{logs}"
    );
    everything.stop().await;
}
