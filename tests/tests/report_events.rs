//! Every report worth telling someone about is an EventBridge event on the default bus: a team's
//! own rule routes it to its queue, and the template's notification rules send remediations,
//! failures and failed verifications to the SNS topic (here subscribed by a queue).

use runbook_tests::deploy::{DeployRequest, Deployment, LIMIT_SCALER};
use runbook_tests::fixtures::{SqsQueue, TableSpec, create_queue, event_file};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

/// Receives and deletes everything in the queue, as parsed JSON bodies.
async fn take_all(queue: &SqsQueue) -> Vec<Value> {
    let sqs = moto().sqs();
    let mut all = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        if received.messages().is_empty() {
            return all;
        }
        for message in received.messages() {
            all.push(serde_json::from_str(message.body().unwrap_or_default()).expect("JSON body"));
            sqs.delete_message()
                .queue_url(&queue.url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// A managed table to throttle, and limit-scaler running with the deployment's credentials.
async fn scaler_and_table(deployment: &Deployment) -> (String, LambdaProcess) {
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&moto().dynamodb()).await;
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    (
        table,
        LambdaProcess::start(&binary("limit-scaler"), &env).await,
    )
}

#[tokio::test]
async fn reports_reach_a_rules_queue_and_the_notification_topic() {
    let _isolated = runbook_tests::moto::isolated("report-events").await;
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "managed-*"),
                ("NotificationEmail", "oncall@example.com"),
            ],
            ..DeployRequest::default()
        })
        .await;
    let sqs = moto().sqs();
    // The automation's own alarms notify the same topic.
    let alarm = moto().boto3(
        "cloudwatch",
        "describe_alarms",
        json!({"AlarmNames": [format!("{}-failed-invocations", deployment.stack)]}),
    );
    assert_eq!(
        alarm["MetricAlarms"][0]["AlarmActions"],
        json!([deployment.outputs["NotificationTopicArn"]])
    );

    // A team's own rule: every report of the automation to its queue.
    let team_queue = runbook_tests::fixtures::events_to_queue(
        moto(),
        json!({"source": ["runbook.automation"], "detail-type": ["Runbook Report"]}),
    )
    .await;

    // The on-call's inbox: a queue subscribed to the template's notification topic.
    let inbox = create_queue(&sqs, &runbook_tests::unique("oncall-inbox"), &[]).await;
    moto().boto3(
        "sns",
        "subscribe",
        json!({"TopicArn": deployment.outputs["NotificationTopicArn"], "Protocol": "sqs",
               "Endpoint": inbox.arn, "Attributes": {"RawMessageDelivery": "true"}}),
    );

    let (table, mut scaler) = scaler_and_table(&deployment).await;

    // A remediation: both the team's queue and the on-call's inbox get it.
    let report = scaler
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "remediated", "{report}");
    let routed = take_all(&team_queue).await;
    assert_eq!(routed.len(), 1, "{routed:?}");
    assert_eq!(routed[0]["source"], "runbook.automation");
    assert_eq!(routed[0]["detail-type"], "Runbook Report");
    assert_eq!(routed[0]["detail"]["audit_id"], report["audit_id"]);
    assert_eq!(routed[0]["detail"]["target"], json!(table));
    let notified = take_all(&inbox).await;
    assert_eq!(notified.len(), 1, "{notified:?}");
    assert_eq!(notified[0]["detail"]["outcome"], "remediated");

    // A run that changes nothing (here: a dry run) is routed, but nobody is paged.
    let planned = scaler
        .report(&json!({"table": table, "read": 50, "dry_run": true}))
        .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    assert_eq!(take_all(&team_queue).await.len(), 1);
    assert!(take_all(&inbox).await.is_empty());

    // A schedule that finds nothing to do publishes nothing.
    let sweep = scaler
        .report(&event_file("scheduled-event.json", &[]))
        .await;
    assert_eq!(sweep["reports"], json!([]), "{sweep}");
    assert!(take_all(&team_queue).await.is_empty());
    scaler.stop().await;
}

#[tokio::test]
async fn a_report_that_cannot_be_published_says_so() {
    // The function's policy without events:PutEvents: the remediation stands, the report says
    // that its event was not published and why.
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![("ManagedResources", "managed-*")],
            drop_actions: vec![(LIMIT_SCALER, "events:PutEvents")],
        })
        .await;
    let (table, mut scaler) = scaler_and_table(&deployment).await;
    let answer = scaler
        .invoke(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    let report = match answer {
        runbook_tests::runtime::Invoked::Response(report) => report,
        other => panic!("expected a response, got {other:?}"),
    };
    assert_eq!(report["outcome"], "remediated", "{report}");
    let error = report["event_error"].as_str().expect("event_error");
    assert!(
        error.contains("events:PutEvents") && error.contains("AccessDenied"),
        "{error}"
    );
    scaler.stop().await;
}
