//! alarm-responder against moto (Lambda versions and aliases, CloudFormation stacks through the
//! front's extension) and replay clients for faults moto cannot produce.

use alarm_responder::{Responder, ResponderRunbook};
use aws_sdk_lambda::types::AliasRoutingConfiguration;
use runbook_shared::model::{Outcome, Report, SettleBy, VerificationStatus};
use runbook_tests::fixtures::{
    alarm_in_state, create_audit_table, create_deployed_function, create_function, create_stack,
    event_file, invocation, lambda_alarm_event, log_lines, publish_version, put_durations,
    responder, responder_clients, served_through, set_stack_status,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

async fn run(responder: &Responder, event: Value) -> Report {
    responder.handle(event, &invocation()).await
}

/// A managed function with versions 1 and 2 and an alias `live` on `live_version`.
async fn deployed(prefix: &str, live_version: &str) -> String {
    let function = unique(prefix);
    create_deployed_function(moto(), &function, live_version).await;
    function
}

async fn alias_state(function: &str) -> (String, usize) {
    let alias = moto()
        .lambda()
        .get_alias()
        .function_name(function)
        .name("live")
        .send()
        .await
        .expect("get alias");
    let weights = alias
        .routing_config()
        .and_then(|r| r.additional_version_weights())
        .map_or(0, |w| w.len());
    (
        alias.function_version().unwrap_or_default().to_string(),
        weights,
    )
}

fn errors_alarm(function: &str, state: &str) -> Value {
    lambda_alarm_event(
        &format!("{function}-errors"),
        state,
        "Errors",
        function,
        Some("live"),
    )
}

#[tokio::test]
async fn errors_after_a_deploy_roll_the_alias_back_and_ok_verifies_it() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = deployed("managed-api", "2").await;
    let responder = responder(&audit, &[], responder_clients());
    let report = run(&responder, errors_alarm(&function, "ALARM")).await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("lambda-rollback"));
    assert_eq!(report.target, Some(format!("{function}:live")));
    assert_eq!(alias_state(&function).await, ("1".to_string(), 0));
    assert_eq!(report.actions[0].before, json!({"version": "2"}));
    assert_eq!(report.actions[0].after, json!({"version": "1"}));
    assert_eq!(report.verification.status, VerificationStatus::Pending);
    assert_eq!(
        report.verification.settle_by,
        Some(SettleBy::Alarm {
            name: format!("{function}-errors")
        })
    );
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_eq!(diagnosis["versions"].as_array().unwrap().len(), 2);
    // The fresh deploy is in the evidence: both versions were published within the window.
    let changes = diagnosis["evidence"]["recent_changes"]
        .as_array()
        .expect("recent changes");
    assert!(
        changes.iter().any(|c| c["kind"] == "version_published"),
        "{changes:?}"
    );

    alarm_in_state(
        &format!("{function}-errors"),
        aws_sdk_cloudwatch::types::StateValue::Ok,
    )
    .await;
    let closed = run(&responder, errors_alarm(&function, "OK")).await;
    assert_eq!(
        closed.verification.status,
        VerificationStatus::Verified,
        "{closed:?}"
    );
    assert_eq!(closed.audit_id, report.audit_id);
}

#[tokio::test]
async fn a_rollback_goes_only_to_a_version_the_alias_served() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-skipped");
    create_function(moto(), &function).await;
    let lambda = moto().lambda();
    for expected in ["1", "2", "3"] {
        assert_eq!(publish_version(&lambda, &function).await, expected);
    }
    // live served version 1, then moved to 3: version 2 was published but never routed.
    lambda
        .create_alias()
        .function_name(&function)
        .name("live")
        .function_version("3")
        .send()
        .await
        .expect("alias");
    served_through(moto(), &function, "live", "1").await;
    let responder = responder(&audit, &[], responder_clients());
    let report = run(&responder, errors_alarm(&function, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.actions[0].after,
        json!({"version": "1"}),
        "{report:?}"
    );
    assert_eq!(alias_state(&function).await.0, "1");

    // Nothing earlier known to have served: no action, naming the candidates.
    let unknown = unique("managed-unknown");
    create_function(moto(), &unknown).await;
    for expected in ["1", "2"] {
        assert_eq!(publish_version(&lambda, &unknown).await, expected);
    }
    lambda
        .create_alias()
        .function_name(&unknown)
        .name("live")
        .function_version("2")
        .send()
        .await
        .expect("alias");
    let report = run(&responder, errors_alarm(&unknown, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("known to have served") && report.reason.contains("candidates 1"),
        "{}",
        report.reason
    );
    assert_eq!(alias_state(&unknown).await.0, "2", "nothing changed");
}

#[tokio::test]
async fn a_canary_loses_its_extra_weight() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = deployed("managed-canary", "1").await;
    moto()
        .lambda()
        .update_alias()
        .function_name(&function)
        .name("live")
        .routing_config(
            AliasRoutingConfiguration::builder()
                .additional_version_weights("2", 0.1)
                .build(),
        )
        .send()
        .await
        .expect("canary");
    assert_eq!(alias_state(&function).await, ("1".to_string(), 1));
    let report = run(
        &responder(&audit, &[], responder_clients()),
        errors_alarm(&function, "ALARM"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(
        report.reason.starts_with("dropped the canary weights"),
        "{}",
        report.reason
    );
    assert_eq!(alias_state(&function).await, ("1".to_string(), 0));
}

#[tokio::test]
async fn never_flip_flop_between_the_same_versions_without_a_new_deploy() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = deployed("managed-flip", "2").await;
    let responder = responder(&audit, &[("COOLDOWN_SECONDS", "0")], responder_clients());
    assert_eq!(
        run(&responder, errors_alarm(&function, "ALARM"))
            .await
            .outcome,
        Outcome::Remediated
    );
    // Someone points the alias at version 2 again, without a new deploy.
    let lambda = moto().lambda();
    lambda
        .update_alias()
        .function_name(&function)
        .name("live")
        .function_version("2")
        .send()
        .await
        .unwrap();
    let refused = run(&responder, errors_alarm(&function, "ALARM")).await;
    assert_eq!(refused.outcome, Outcome::Skipped, "{refused:?}");
    assert!(
        refused.reason.starts_with("flip-flop refused"),
        "{}",
        refused.reason
    );
    assert_eq!(alias_state(&function).await.0, "2");

    // A new deploy in between makes the next rollback legitimate.
    let three = publish_version(&lambda, &function).await;
    lambda
        .update_alias()
        .function_name(&function)
        .name("live")
        .function_version(&three)
        .send()
        .await
        .unwrap();
    let report = run(&responder, errors_alarm(&function, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(alias_state(&function).await.0, "2");
}

#[tokio::test]
async fn nothing_to_roll_back_is_no_action() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(&audit, &[], responder_clients());
    let function = deployed("managed-first", "1").await;
    let report = run(&responder, errors_alarm(&function, "ALARM")).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("first published version"),
        "{}",
        report.reason
    );

    let no_alias = lambda_alarm_event("no-alias", "ALARM", "Errors", &function, None);
    let report = run(&responder, no_alias).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert!(
        report
            .reason
            .contains("$LATEST cannot be rolled back; publish versions behind an alias"),
        "{}",
        report.reason
    );
    assert_eq!(alias_state(&function).await.0, "1");
}

#[tokio::test]
async fn guards_dry_run_unmanaged_cooldown_and_the_same_event_twice() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = deployed("managed-guard", "2").await;
    let dry = run(&responder(&audit, &[], responder_clients()), json!({"runbook": "lambda-rollback", "function": function, "alias": "live", "dry_run": true})).await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:?}");
    assert_eq!(alias_state(&function).await.0, "2");

    let stranger = deployed("other-team", "2").await;
    let skipped = run(
        &responder(&audit, &[], responder_clients()),
        errors_alarm(&stranger, "ALARM"),
    )
    .await;
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert!(
        skipped.reason.starts_with("not managed"),
        "{}",
        skipped.reason
    );
    assert_eq!(alias_state(&stranger).await.0, "2");

    let responder = responder(&audit, &[], responder_clients());
    let event = errors_alarm(&function, "ALARM");
    let first = run(&responder, event.clone()).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    assert_eq!(
        run(&responder, event).await,
        first,
        "the same event gets the same report"
    );
    let again = run(&responder, errors_alarm(&function, "ALARM")).await;
    assert_eq!(again.outcome, Outcome::Skipped);
    assert!(again.reason.starts_with("cooldown"), "{}", again.reason);
    assert_eq!(alias_state(&function).await.0, "1");
}

#[tokio::test]
async fn two_concurrent_alarms_on_one_function_act_once() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = deployed("managed-race", "2").await;
    let responder = responder(&audit, &[], responder_clients());
    let (a, b) = tokio::join!(
        run(&responder, errors_alarm(&function, "ALARM")),
        run(&responder, errors_alarm(&function, "ALARM"))
    );
    assert_eq!(
        [a.outcome, b.outcome]
            .iter()
            .filter(|o| **o == Outcome::Remediated)
            .count(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(alias_state(&function).await.0, "1");
}

#[tokio::test]
async fn duration_alarms_raise_the_timeout_within_the_cap() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-slow");
    create_function(moto(), &function).await;
    let lambda = moto().lambda();
    lambda
        .update_function_configuration()
        .function_name(&function)
        .timeout(20)
        .memory_size(256)
        .send()
        .await
        .unwrap();
    let responder = responder(
        &audit,
        &[("COOLDOWN_SECONDS", "0"), ("MAX_TIMEOUT_SECONDS", "40")],
        responder_clients(),
    );
    // Runs reach 19.8 s of the 20 s timeout: evidence for a longer one.
    put_durations(&function, &[19_800.0]).await;
    let duration = lambda_alarm_event(
        &format!("{function}-duration"),
        "ALARM",
        "Duration",
        &function,
        None,
    );
    let report = run(&responder, duration.clone()).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.runbook.as_deref(), Some("lambda-resources"));
    // Only the raised field is sent and reported.
    assert_eq!(report.actions[0].after, json!({"timeout_seconds": 30}));
    let config = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (config.timeout(), config.memory_size()),
        (Some(30), Some(256))
    );

    put_durations(&function, &[29_900.0]).await;
    // More memory needs evidence of out-of-memory in the logs.
    log_lines(
        &function,
        &["REPORT RequestId: 1f2e Duration: 29900.00 ms Billed Duration: 29900 ms Memory Size: 256 MB Max Memory Used: 256 MB Status: error Error Type: Runtime.OutOfMemory"],
    )
    .await;
    let report = run(
        &responder,
        json!({"runbook": "lambda-resources", "function": function, "raise": "both"}),
    )
    .await;
    assert_eq!(
        report.actions[0].after,
        json!({"timeout_seconds": 40, "memory_mb": 384}),
        "{report:?}"
    );
    put_durations(&function, &[39_900.0]).await;
    let at_cap = run(
        &responder,
        json!({"runbook": "lambda-resources", "function": function}),
    )
    .await;
    assert_eq!(at_cap.outcome, Outcome::Skipped);
    assert!(
        at_cap.reason.contains("at cap") && at_cap.reason.contains("MAX_TIMEOUT_SECONDS=40"),
        "{}",
        at_cap.reason
    );
}

#[tokio::test]
async fn a_timeout_is_never_raised_above_a_consumed_queues_visibility_timeout() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-consumer");
    create_function(moto(), &function).await;
    let lambda = moto().lambda();
    lambda
        .update_function_configuration()
        .function_name(&function)
        .timeout(10)
        .send()
        .await
        .unwrap();
    let queue = unique("orders");
    let url = moto()
        .sqs()
        .create_queue()
        .queue_name(&queue)
        .attributes(QueueAttributeName::VisibilityTimeout, "12")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = moto()
        .sqs()
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    lambda
        .create_event_source_mapping()
        .function_name(&function)
        .event_source_arn(&arn)
        .send()
        .await
        .unwrap();
    let responder = responder(
        &audit,
        &[("COOLDOWN_SECONDS", "0"), ("MAX_TIMEOUT_SECONDS", "60")],
        responder_clients(),
    );
    // Runs reach 9.9 s of the 10 s timeout: 15 s would be the raise, but the queue's messages
    // reappear after 12 s.
    put_durations(&function, &[9_900.0]).await;
    let raise = json!({"runbook": "lambda-resources", "function": function, "raise": "timeout"});
    let report = run(&responder, raise.clone()).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.actions[0].after, json!({"timeout_seconds": 12}));
    let now = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    assert_eq!(now.timeout(), Some(12));

    // At the queue's visibility timeout: skipped, with the numbers and what to change.
    put_durations(&function, &[11_900.0]).await;
    let at_cap = run(&responder, raise).await;
    assert_eq!(at_cap.outcome, Outcome::Skipped, "{at_cap:?}");
    assert!(
        at_cap
            .reason
            .contains(&format!("12 s visibility timeout of queue {queue}"))
            && at_cap.reason.contains("VisibilityTimeout"),
        "{}",
        at_cap.reason
    );
}

#[tokio::test]
async fn stack_stuck_in_update_rollback_failed_is_continued() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let stack = unique("managed-stack");
    create_stack(
        &moto().cloudformation(),
        &stack,
        json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    set_stack_status(
        moto(),
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("OrdersTable", "Subscriber limit exceeded")),
        0,
    )
    .await;
    let event = event_file(
        "cloudformation-stack-status-change.json",
        &[("orders", &stack)],
    );
    let report = run(&responder(&audit, &[], responder_clients()), event).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(
        report.actions[0].api,
        "cloudformation:ContinueUpdateRollback"
    );
    assert!(
        report
            .reason
            .contains("OrdersTable UPDATE_FAILED: Subscriber limit exceeded"),
        "{}",
        report.reason
    );
    assert_eq!(report.verification.status, VerificationStatus::Verified);
    let status = moto()
        .cloudformation()
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.stacks()[0].stack_status().unwrap().as_str(),
        "UPDATE_ROLLBACK_COMPLETE"
    );
}

#[tokio::test]
async fn stack_states_that_need_a_human_or_patience() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(&audit, &[("COOLDOWN_SECONDS", "0")], responder_clients());
    let failed_create = unique("managed-create");
    create_stack(
        &moto().cloudformation(),
        &failed_create,
        json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    set_stack_status(
        moto(),
        &failed_create,
        "ROLLBACK_COMPLETE",
        Some(("Bucket", "Bucket name already exists")),
        0,
    )
    .await;
    let report = run(&responder, json!({"stack": failed_create})).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("creation failed")
            && report.reason.contains("Bucket name already exists"),
        "{}",
        report.reason
    );

    let updating = unique("managed-updating");
    create_stack(
        &moto().cloudformation(),
        &updating,
        json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    set_stack_status(moto(), &updating, "UPDATE_IN_PROGRESS", None, 0).await;
    let report = run(&responder, json!({"stack": updating})).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert!(report.reason.contains("let it finish"), "{}", report.reason);

    set_stack_status(moto(), &updating, "UPDATE_IN_PROGRESS", None, 90).await;
    let report = run(&responder, json!({"stack": updating})).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.actions[0].api, "cloudformation:CancelUpdateStack");

    let healthy = unique("managed-fine");
    create_stack(
        &moto().cloudformation(),
        &healthy,
        json!({"Q": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
    let report = run(&responder, json!({"stack": healthy})).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    assert!(report.reason.contains("nothing to recover"));
}

#[tokio::test]
async fn routing_replay_and_bad_inputs() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(&audit, &[], responder_clients());
    let other = lambda_alarm_event(
        "invocations",
        "ALARM",
        "Invocations",
        "managed-x",
        Some("live"),
    );
    let report = run(&responder, other).await;
    assert_eq!(report.outcome, Outcome::NoAction);
    let taggable = ResponderRunbook::ALL.map(ResponderRunbook::id).join("|");
    assert!(
        report
            .reason
            .contains(&format!("tag the alarm runbook=<{taggable}>")),
        "{}",
        report.reason
    );
    assert!(taggable.contains("lambda-rollback|lambda-resources|stack-recovery"));

    // A replayed alarm acts like the alarm itself.
    let function = deployed("managed-replay", "2").await;
    let cloudwatch = moto().cloudwatch();
    let alarm = format!("{function}-errors");
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/Lambda")
        .metric_name("Errors")
        .dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name("FunctionName")
                .value(&function)
                .build(),
        )
        .dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name("Resource")
                .value(format!("{function}:live"))
                .build(),
        )
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(
            aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
        )
        .send()
        .await
        .unwrap();
    cloudwatch
        .set_alarm_state()
        .alarm_name(&alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("errors")
        .send()
        .await
        .unwrap();
    let replayed = run(&responder, json!({"alarm_name": alarm})).await;
    assert_eq!(replayed.outcome, Outcome::Remediated, "{replayed:?}");
    assert_eq!(alias_state(&function).await.0, "1");

    let cases = [
        (
            json!({"alarm_name": "nope-never-created"}),
            "does not exist",
        ),
        (json!({"alarm_name": "x", "function": "f"}), "give it alone"),
        (
            json!({"runbook": "restart-everything"}),
            "unknown runbook \"restart-everything\"",
        ),
        (
            json!({"runbook": "lambda-rollback", "function": "f"}),
            "\"alias\" is required",
        ),
        (
            json!({"runbook": "lambda-resources", "function": "f", "raise": "cpu"}),
            "\"raise\" must be timeout, memory or both",
        ),
        (
            json!({"runbook": "lambda-resources", "function": "f", "alias": "live"}),
            "\"alias\" is not used",
        ),
        (json!({"function": "f"}), "give \"alarm_name\", \"runbook\""),
        (
            json!({"stack": "s", "force": true}),
            "unknown field `force`, expected one of",
        ),
        (event_file("scheduled-event.json", &[]), "not on schedules"),
    ];
    for (payload, expected) in cases {
        let report = run(&responder, payload.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload} -> {report:?}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {:?} should contain {expected:?}",
            report.reason
        );
    }
}

#[tokio::test]
async fn access_denied_on_update_alias_is_reported() {
    use aws_sdk_lambda::operation::get_alias::GetAliasOutput;
    use aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionOutput;
    use aws_sdk_lambda::operation::update_alias::UpdateAliasError;
    use aws_sdk_lambda::types::FunctionConfiguration;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let audit = create_audit_table(&moto().dynamodb()).await;
    let mut responder = responder(&audit, &[], responder_clients());
    served_through(moto(), "managed-denied", "live", "1").await;
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string();
    let get_alias = mock!(aws_sdk_lambda::Client::get_alias).then_output(|| {
        GetAliasOutput::builder()
            .alias_arn("arn:aws:lambda:us-east-1:123456789012:function:managed-denied:live")
            .function_version("2")
            .build()
    });
    let versions =
        mock!(aws_sdk_lambda::Client::list_versions_by_function).then_output(move || {
            ListVersionsByFunctionOutput::builder()
                .versions(
                    FunctionConfiguration::builder()
                        .version("1")
                        .last_modified(&now)
                        .build(),
                )
                .versions(
                    FunctionConfiguration::builder()
                        .version("2")
                        .last_modified(&now)
                        .build(),
                )
                .build()
        });
    let update = mock!(aws_sdk_lambda::Client::update_alias).then_error(|| {
        UpdateAliasError::generic(
            aws_sdk_lambda::error::ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not authorized to perform: lambda:UpdateAlias")
                .build(),
        )
    });
    let quiet = runbook_tests::replay::QuietFunction::new();
    responder.clients.lambda = mock_client!(
        aws_sdk_lambda,
        RuleMode::MatchAny,
        [
            &get_alias,
            &versions,
            &update,
            &quiet.configuration,
            &quiet.aliases
        ]
    );
    let report = run(
        &responder,
        json!({"runbook": "lambda-rollback", "function": "managed-denied", "alias": "live"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("grant lambda:UpdateAlias"),
        "{}",
        report.reason
    );
    assert!(!report.actions[0].applied);
    assert!(report.audit_id.is_some(), "a failed attempt is audited");
}

#[tokio::test]
async fn a_stack_without_a_service_role_is_left_to_its_deployers_with_the_command() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let stack = unique("managed-roleless");
    // Created by a person's own credentials, with no service role.
    moto()
        .cloudformation()
        .create_stack()
        .stack_name(&stack)
        .template_body(json!({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}).to_string())
        .send()
        .await
        .expect("create stack");
    set_stack_status(
        moto(),
        &stack,
        "UPDATE_ROLLBACK_FAILED",
        Some(("OrdersTable", "Subscriber limit exceeded")),
        0,
    )
    .await;
    let report = run(
        &responder(&audit, &[], responder_clients()),
        json!({"stack": stack, "resources_to_skip": ["OrdersTable"]}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(report.actions.iter().all(|action| !action.applied));
    assert!(
        report.reason.contains("it has no service role (RoleARN)")
            && report.reason.ends_with(&format!(
                "someone who can deploy the stack runs: aws cloudformation continue-update-rollback --stack-name {stack} --resources-to-skip OrdersTable"
            )),
        "{}",
        report.reason
    );
    let status = moto()
        .cloudformation()
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.stacks()[0].stack_status().unwrap().as_str(),
        "UPDATE_ROLLBACK_FAILED"
    );
}
