//! api-errors against moto: REST and HTTP APIs in front of Lambda functions; the triage ranks
//! the cause from each function's evidence and hands it on: a fresh deploy behind an alias to
//! lambda-rollback in-process, a throttled table to limit-scaler by a `Runbook Handoff` event
//! that limit-scaler confirms and acts on; anything else is no action with the ranked causes.

use runbook_shared::model::{Outcome, Report, SettleBy, VerificationStatus};
use runbook_tests::fixtures::{
    TableSpec, alarm_in_state, api_alarm_event, capacity, create_audit_table,
    create_deployed_function, create_function, function_arn, handoffs_matching, http_api,
    invocation, lambda_uri, metric_alarm_in_state, one_report, put_metric, received_events,
    responder, responder_clients, rest_api, scaler, scaler_clients, set_environment,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

async fn alias_version(function: &str) -> String {
    moto()
        .lambda()
        .get_alias()
        .function_name(function)
        .name("live")
        .send()
        .await
        .expect("get alias")
        .function_version
        .unwrap_or_default()
}

/// `errors` on the function's alias `live` a minute ago, as Lambda records them.
async fn alias_errors(function: &str, errors: f64) {
    let resource = format!("{function}:live");
    let dimensions = [("FunctionName", function), ("Resource", resource.as_str())];
    put_metric(moto(), "AWS/Lambda", "Errors", &dimensions, errors, 60).await;
    put_metric(moto(), "AWS/Lambda", "Invocations", &dimensions, 100.0, 60).await;
}

/// A REST API whose `GET /orders` invokes `function:${stageVariables.alias}`, `alias=live`.
fn rest_api_in_front_of(function: &str) -> String {
    let name = unique("orders-api");
    rest_api(
        moto(),
        &name,
        &lambda_uri(&function_arn(function, Some("${stageVariables.alias}"))),
        json!({"alias": "live"}),
    );
    name
}

fn causes(report: &Report) -> Vec<String> {
    report.diagnosis.as_ref().expect("diagnosis")["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|cause| cause["cause"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_fresh_deploy_behind_the_api_is_rolled_back_through_lambda_rollback_and_ok_closes_it() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-checkout");
    create_deployed_function(moto(), &function, "2").await;
    alias_errors(&function, 12.0).await;
    let api = rest_api_in_front_of(&function);
    let responder = responder(&audit, &[], responder_clients());
    let alarm = format!("{api}-5xx");

    let report = responder
        .handle(api_alarm_event(&alarm, "ALARM", true, &api), &invocation())
        .await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:#?}");
    assert_eq!(report.runbook.as_deref(), Some("api-errors"));
    assert_eq!(report.target, Some(format!("{api} stage prod")));
    assert_eq!(alias_version(&function).await, "1");
    assert_eq!(causes(&report)[0], "fresh_deploy");
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_eq!(diagnosis["api"]["kind"], "REST");
    assert_eq!(
        diagnosis["functions"][0]["function"],
        format!("{function}:live")
    );
    assert_eq!(diagnosis["functions"][0]["routes"], json!(["GET /orders"]));
    assert_eq!(
        diagnosis["functions"][0]["evidence"]["metrics"]["errors"]["window"],
        json!(12.0)
    );
    // The rollback ran as its own runbook, with its own report, audit record and checks.
    let handed = &report.details.as_ref().expect("details")["handoff"];
    assert_eq!(handed["runbook"], "lambda-rollback");
    assert_eq!(handed["outcome"], "remediated");
    assert_eq!(handed["actions"][0]["after"], json!({"version": "1"}));
    assert_ne!(handed["audit_id"], Value::Null);
    assert_eq!(handed["trigger"]["kind"], "handoff");
    assert_eq!(report.actions[0].api, "runbook:lambda-rollback");
    assert!(report.actions[0].applied);
    // One verification per incident: the rollback's own, which the 5xx alarm settles.
    assert_eq!(
        report.verification.status,
        VerificationStatus::NotApplicable
    );
    assert_eq!(handed["verification"]["status"], "pending");
    assert_eq!(
        handed["verification"]["settle_by"],
        json!(SettleBy::Alarm {
            name: alarm.clone()
        })
    );

    // A second alarm on the API within the cooldown: api-errors itself waits.
    let mut second = api_alarm_event(&alarm, "ALARM", true, &api);
    second["id"] = json!(unique("event"));
    let again = responder.handle(second, &invocation()).await;
    assert_eq!(again.outcome, Outcome::Skipped, "{again:#?}");
    assert!(again.reason.starts_with("cooldown"), "{}", again.reason);

    alarm_in_state(&alarm, aws_sdk_cloudwatch::types::StateValue::Ok).await;
    let ok = responder
        .handle(api_alarm_event(&alarm, "OK", true, &api), &invocation())
        .await;
    // The API's alarm going OK closes the rollback's verification.
    assert_eq!(ok.runbook.as_deref(), Some("lambda-rollback"), "{ok:#?}");
    assert_eq!(ok.target, Some(format!("{function}:live")));
    assert_eq!(
        ok.verification.status,
        VerificationStatus::Verified,
        "{ok:#?}"
    );
    assert_eq!(ok.audit_id, handed["audit_id"].as_str().map(str::to_string));
}

/// An alarm on the API's 5xx, in ALARM in moto, as `{"alarm_name": …}` replays read it.
async fn api_alarm(alarm: &str, api: &str) {
    let dimensions = [("ApiName", api), ("Stage", "prod")];
    let state = aws_sdk_cloudwatch::types::StateValue::Alarm;
    metric_alarm_in_state(
        moto(),
        alarm,
        state,
        ("AWS/ApiGateway", "5XXError"),
        &dimensions,
    )
    .await;
}

#[tokio::test]
async fn each_replay_of_the_alarm_hands_off_afresh_and_the_rollbacks_cooldown_holds() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-replayed");
    create_deployed_function(moto(), &function, "2").await;
    alias_errors(&function, 12.0).await;
    let api = rest_api_in_front_of(&function);
    let alarm = format!("{api}-5xx");
    api_alarm(&alarm, &api).await;
    let responder = responder(&audit, &[], responder_clients());
    let replay = json!({"alarm_name": alarm});

    let first = responder.handle(replay.clone(), &invocation()).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:#?}");
    assert_eq!(alias_version(&function).await, "1");
    let first_handed = first.details.as_ref().expect("details")["handoff"].clone();

    // A second replay is a second request: its hand-off is a new run of lambda-rollback (here
    // stopped by that alias's cooldown), not the first run's report again.
    let second = responder.handle(replay, &invocation()).await;
    let second_handed = &second.details.as_ref().expect("details")["handoff"];
    assert_ne!(
        second_handed["audit_id"], first_handed["audit_id"],
        "{second:#?}"
    );
    assert_eq!(second.outcome, Outcome::Skipped, "{second:#?}");
    assert!(
        second_handed["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("cooldown")),
        "{second:#?}"
    );
    assert!(!second.actions[0].applied);
    assert_eq!(alias_version(&function).await, "1");
}

#[tokio::test]
async fn a_braked_rollback_escalates_in_the_report_that_is_published() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(
        &audit,
        &[("MAX_CHANGES_PER_WINDOW", "1")],
        responder_clients(),
    );
    let mut reports = Vec::new();
    for prefix in ["managed-brake-a", "managed-brake-b"] {
        let function = unique(prefix);
        create_deployed_function(moto(), &function, "2").await;
        alias_errors(&function, 4.0).await;
        let api = rest_api_in_front_of(&function);
        let event = api_alarm_event(&format!("{api}-5xx"), "ALARM", true, &api);
        reports.push(responder.handle(event, &invocation()).await);
    }
    assert_eq!(reports[0].outcome, Outcome::Remediated, "{:#?}", reports[0]);
    let braked = &reports[1];
    assert_eq!(braked.outcome, Outcome::Skipped, "{braked:#?}");
    let escalation = braked
        .escalation
        .as_ref()
        .expect("the escalation travels up");
    assert_eq!(escalation.kind, "brake");
}

#[tokio::test]
async fn a_throttled_table_behind_an_http_api_is_handed_to_limit_scaler_which_raises_it() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-orders", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let function = unique("managed-orders-fn");
    create_function(moto(), &function).await;
    set_environment(
        moto(),
        &function,
        &[("ORDERS_TABLE", &table), ("LOG_LEVEL", "info")],
    )
    .await;
    put_metric(
        moto(),
        "AWS/DynamoDB",
        "WriteThrottleEvents",
        &[("TableName", &table)],
        40.0,
        60,
    )
    .await;
    let api = http_api(
        moto(),
        &unique("orders-http"),
        &function_arn(&function, None),
    );
    let caught = handoffs_matching(moto(), json!({"target": {"table": {"table": [table]}}})).await;
    let responder = responder(&audit, &[], responder_clients());
    let alarm = format!("{api}-5xx");
    alarm_in_state(&alarm, aws_sdk_cloudwatch::types::StateValue::Alarm).await;

    // By hand, the triage names the cause and the payload; only an alarm's run hands off.
    let by_hand = responder
        .handle(
            json!({"runbook": "api-errors", "api": api, "stage": "prod"}),
            &invocation(),
        )
        .await;
    assert_eq!(by_hand.outcome, Outcome::Skipped, "{by_hand:#?}");
    let payload = format!("invoke limit-scaler with {}", json!({"table": table}));
    assert!(by_hand.reason.contains(&payload), "{}", by_hand.reason);

    let report = responder
        .handle(api_alarm_event(&alarm, "ALARM", false, &api), &invocation())
        .await;

    assert_eq!(report.outcome, Outcome::Remediated, "{report:#?}");
    assert_eq!(causes(&report), ["table_throttled"]);
    assert_eq!(report.actions[0].api, "events:PutEvents");
    let events = received_events(moto(), &caught).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let handoff = &events[0];
    assert_eq!(handoff["detail-type"], "Runbook Handoff");
    assert_eq!(handoff["detail"]["to"], "limit-scaler");
    assert_eq!(handoff["detail"]["runbook"], "dynamodb-capacity");
    assert_eq!(
        handoff["detail"]["target"],
        json!({"table": {"table": table, "index": null, "read": false, "write": true}})
    );
    assert_eq!(
        handoff["detail"]["evidence"]["metrics"]["write_throttle_events"]["window"],
        json!(40.0)
    );

    // limit-scaler takes the handoff as a trigger: confirmed, raised, verified.
    let scaler = scaler(&audit, &[], scaler_clients());
    let raised = one_report(scaler.handle(handoff.clone(), &invocation()).await);
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:#?}");
    assert_eq!(raised.runbook.as_deref(), Some("dynamodb-capacity"));
    assert_eq!(
        raised.trigger.kind,
        runbook_shared::model::TriggerKind::Handoff
    );
    assert!(
        raised
            .notes
            .iter()
            .any(|note| note.contains("handed off by alarm-responder/api-errors")),
        "{raised:#?}"
    );
    let (read, write) = capacity(&moto().dynamodb(), &table, None).await;
    assert_eq!(read, 5, "the read side was not throttled");
    assert!(write > 5, "write {write}");
    // The same handoff again does nothing more.
    let again = one_report(scaler.handle(handoff.clone(), &invocation()).await);
    assert_eq!(again.audit_id, raised.audit_id, "{again:#?}");
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await.1, write);
}

#[tokio::test]
async fn a_handoff_that_the_target_does_not_confirm_or_that_names_the_wrong_runbook_changes_nothing()
 {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-quiet", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let scaler = scaler(&audit, &[], scaler_clients());
    let handoff = |detail: Value| {
        json!({"version": "0", "id": unique("event"), "source": "runbook.automation",
               "detail-type": "Runbook Handoff", "account": runbook_tests::moto::ACCOUNT,
               "region": runbook_tests::moto::REGION, "time": "2026-11-30T08:00:00Z",
               "resources": [], "detail": detail})
    };
    let firing = unique("firing");
    alarm_in_state(&firing, aws_sdk_cloudwatch::types::StateValue::Alarm).await;
    let recovered = unique("recovered");
    alarm_in_state(&recovered, aws_sdk_cloudwatch::types::StateValue::Ok).await;
    let detail = json!({"handoff_id": unique("h"), "to": "limit-scaler", "runbook": "dynamodb-capacity",
        "target": {"table": {"table": table, "read": true, "write": false}},
        "alarm": firing, "from": "someone", "reason": "forged"});
    put_metric(
        moto(),
        "AWS/DynamoDB",
        "ReadThrottleEvents",
        &[("TableName", &table)],
        9.0,
        60,
    )
    .await;
    for (alarm, outcome, says) in [
        (Value::Null, Outcome::Rejected, "names none"),
        (json!(unique("gone")), Outcome::NoAction, "does not exist"),
        (json!(recovered), Outcome::NoAction, "which is OK"),
    ] {
        let mut stale = detail.clone();
        stale["handoff_id"] = json!(unique("h"));
        stale["alarm"] = alarm;
        let report = one_report(scaler.handle(handoff(stale), &invocation()).await);
        assert_eq!(report.outcome, outcome, "{report:#?}");
        assert!(report.reason.contains(says), "{}", report.reason);
    }
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));

    // Firing, but the table shows no throttles on the side named.
    let mut write_side = detail.clone();
    write_side["target"] = json!({"table": {"table": table, "read": false, "write": true}});
    let quiet = one_report(scaler.handle(handoff(write_side), &invocation()).await);
    assert_eq!(quiet.outcome, Outcome::NoAction, "{quiet:#?}");
    assert!(
        quiet.reason.contains("shows no throttles"),
        "{}",
        quiet.reason
    );

    let mut wrong = detail.clone();
    wrong["runbook"] = json!("stored-limit");
    let wrong = one_report(scaler.handle(handoff(wrong), &invocation()).await);
    assert_eq!(wrong.outcome, Outcome::Rejected, "{wrong:#?}");
    let mut elsewhere = detail;
    elsewhere["to"] = json!("dlq-redriver");
    let elsewhere = one_report(scaler.handle(handoff(elsewhere), &invocation()).await);
    assert_eq!(elsewhere.outcome, Outcome::Rejected);
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));
}

#[tokio::test]
async fn without_errors_throttles_or_timeouts_behind_it_the_5xx_is_api_gateways_own() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-calm");
    create_deployed_function(moto(), &function, "1").await;
    let api = rest_api_in_front_of(&function);
    let responder = responder(&audit, &[], responder_clients());

    let report = responder
        .handle(
            json!({"runbook": "api-errors", "api": api, "stage": "prod"}),
            &invocation(),
        )
        .await;

    assert_eq!(report.outcome, Outcome::NoAction, "{report:#?}");
    assert!(
        report.reason.contains("API Gateway itself"),
        "{}",
        report.reason
    );
    assert!(report.actions.is_empty());
    assert_eq!(alias_version(&function).await, "1");
}

#[tokio::test]
async fn a_duration_at_the_integration_timeout_is_left_to_people_with_the_reason() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-slow");
    create_deployed_function(moto(), &function, "1").await;
    let resource = format!("{function}:live");
    put_metric(
        moto(),
        "AWS/Lambda",
        "Duration",
        &[("FunctionName", &function), ("Resource", &resource)],
        28_500.0,
        60,
    )
    .await;
    let api = rest_api_in_front_of(&function);
    let responder = responder(&audit, &[], responder_clients());

    let report = responder
        .handle(
            json!({"runbook": "api-errors", "api": api, "stage": "prod"}),
            &invocation(),
        )
        .await;

    assert_eq!(report.outcome, Outcome::NoAction, "{report:#?}");
    assert_eq!(causes(&report)[0], "integration_timeout");
    assert!(report.reason.contains("answers 504"), "{}", report.reason);
}

#[tokio::test]
async fn a_dry_run_plans_the_handoff_and_changes_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let function = unique("managed-dry");
    create_deployed_function(moto(), &function, "2").await;
    alias_errors(&function, 3.0).await;
    let api = rest_api_in_front_of(&function);
    let responder = responder(&audit, &[], responder_clients());

    let report = responder
        .handle(
            json!({"runbook": "api-errors", "api": api, "stage": "prod", "dry_run": true}),
            &invocation(),
        )
        .await;

    assert_eq!(report.outcome, Outcome::Planned, "{report:#?}");
    assert_eq!(report.actions[0].api, "runbook:lambda-rollback");
    assert_eq!(report.actions[0].target, format!("{function}:live"));
    assert!(!report.actions[0].applied);
    assert_eq!(alias_version(&function).await, "2");
}

#[tokio::test]
async fn bad_payloads_are_rejected_and_an_unknown_api_or_stage_fails_naming_it() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(&audit, &[], responder_clients());
    for (payload, says) in [
        (json!({"runbook": "api-errors"}), "\"api\" is required"),
        (
            json!({"runbook": "api-errors", "api": " "}),
            "\"api\" must name",
        ),
        (
            json!({"runbook": "api-errors", "api": "a", "stage": ""}),
            "\"stage\" must name",
        ),
        (
            json!({"runbook": "api-errors", "api": "a", "path": "/"}),
            "\"path\" is not used",
        ),
    ] {
        let report = responder.handle(payload.clone(), &invocation()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload}");
        assert!(report.reason.contains(says), "{payload}: {}", report.reason);
    }
    let missing = unique("no-such-api");
    let report = responder
        .handle(
            json!({"runbook": "api-errors", "api": missing}),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.reason.contains(&missing), "{}", report.reason);

    let function = unique("managed-staged");
    create_deployed_function(moto(), &function, "1").await;
    let api = rest_api_in_front_of(&function);
    let report = responder
        .handle(
            json!({"runbook": "api-errors", "api": api, "stage": "beta"}),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(report.reason.contains("stage beta"), "{}", report.reason);
}

#[tokio::test]
async fn a_rollback_its_own_guards_refuse_is_reported_as_refused_and_changes_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    // Not managed: lambda-rollback's own managed check refuses it.
    let function = unique("other-team-checkout");
    create_deployed_function(moto(), &function, "2").await;
    alias_errors(&function, 5.0).await;
    let api = rest_api_in_front_of(&function);
    let responder = responder(&audit, &[], responder_clients());

    let report = responder
        .handle(
            api_alarm_event(&format!("{api}-5xx"), "ALARM", true, &api),
            &invocation(),
        )
        .await;

    assert_eq!(report.outcome, Outcome::Skipped, "{report:#?}");
    assert!(
        report.reason.contains("lambda-rollback:"),
        "{}",
        report.reason
    );
    assert!(!report.actions[0].applied, "{report:#?}");
    let handed = &report.details.as_ref().expect("details")["handoff"];
    assert_eq!(handed["outcome"], "skipped");
    assert_eq!(alias_version(&function).await, "2");
}

/// A function deployed a moment ago (version 2 behind `live`, errors on it) behind a REST
/// API whose 5xx alarm is in ALARM: (function, API, alarm).
async fn fresh_deploy_behind_an_alarmed_api() -> (String, String, String) {
    let function = unique("managed-checkout");
    create_deployed_function(moto(), &function, "2").await;
    alias_errors(&function, 12.0).await;
    let api = rest_api_in_front_of(&function);
    let alarm = format!("{api}-5xx");
    api_alarm(&alarm, &api).await;
    (function, api, alarm)
}

#[tokio::test]
async fn a_rollback_in_approve_mode_behind_the_api_waits_for_a_person_then_rolls_back() {
    let (function, api, alarm) = fresh_deploy_behind_an_alarmed_api().await;
    let responder = responder(
        &create_audit_table(&moto().dynamodb()).await,
        &[("RUNBOOK_MODES", r#"{"lambda-rollback": "approve"}"#)],
        responder_clients(),
    );

    let report = responder
        .handle(api_alarm_event(&alarm, "ALARM", true, &api), &invocation())
        .await;
    // api-errors (auto) hands the rollback over; lambda-rollback (approve) asks a person.
    assert_eq!(report.outcome, Outcome::AwaitingApproval, "{report:#?}");
    let handed = &report.details.as_ref().expect("details")["handoff"];
    assert_eq!(handed["outcome"], "awaiting_approval");
    let approval = report.approval.clone().expect("the handed plan's approval");
    assert_eq!(handed["approval"]["plan_id"], approval.plan_id.as_str());
    assert!(!report.actions[0].applied, "{report:#?}");
    assert_eq!(alias_version(&function).await, "2");

    let approved = responder
        .handle(
            json!({"approve": approval.plan_id, "by": "carol", "reason": "bad deploy"}),
            &invocation(),
        )
        .await;
    assert_eq!(approved.outcome, Outcome::Remediated, "{approved:#?}");
    assert_eq!(approved.runbook.as_deref(), Some("lambda-rollback"));
    // Under the hand-off's trigger (its alarm re-checked), once per plan.
    assert_eq!(approved.trigger.name.as_deref(), Some(alarm.as_str()));
    assert_eq!(
        approved.trigger.event_id,
        Some(format!("approval/{}", approval.plan_id))
    );
    assert_eq!(alias_version(&function).await, "1");
}

#[tokio::test]
async fn an_approved_api_errors_hand_off_rolls_back_through_lambda_rollback() {
    let (function, api, alarm) = fresh_deploy_behind_an_alarmed_api().await;
    let responder = responder(
        &create_audit_table(&moto().dynamodb()).await,
        &[("RUNBOOK_MODES", r#"{"api-errors": "approve"}"#)],
        responder_clients(),
    );

    let asked = responder
        .handle(api_alarm_event(&alarm, "ALARM", true, &api), &invocation())
        .await;
    assert_eq!(asked.outcome, Outcome::AwaitingApproval, "{asked:#?}");
    assert_eq!(alias_version(&function).await, "2");
    // More errors meanwhile: the figures change, the cause does not.
    alias_errors(&function, 30.0).await;

    let plan_id = asked.approval.expect("approval").plan_id;
    let approved = responder
        .handle(json!({"approve": plan_id, "by": "carol"}), &invocation())
        .await;
    assert_eq!(approved.outcome, Outcome::Remediated, "{approved:#?}");
    assert_eq!(approved.runbook.as_deref(), Some("api-errors"));
    let approval = approved
        .approval
        .as_ref()
        .expect("the approval it carried out");
    assert_eq!(approval.plan_id, plan_id);
    let handed = &approved.details.as_ref().expect("details")["handoff"];
    assert_eq!(handed["outcome"], "remediated", "{handed}");
    assert_eq!(alias_version(&function).await, "1");
}
