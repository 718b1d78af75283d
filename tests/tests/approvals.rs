//! Graduated autonomy through the compiled `limit-scaler` binary, under its template policy,
//! against moto: a runbook in observe plans, in approve stores its plan for a person, in auto
//! acts; an approval re-checks the state, applies the stored plan at most once, and an expired
//! or denied plan applies nothing.

use aws_sdk_dynamodb::types::{AttributeValue, ProvisionedThroughput};
use runbook_tests::deploy::{Deployment, LIMIT_SCALER, deploy_managed};
use runbook_tests::fixtures::{TableSpec, capacity, event_file};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

async fn start(deployment: &Deployment, modes: &str) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("DEFAULT_MODE".into(), "observe".into()));
    env.push(("RUNBOOK_MODES".into(), modes.into()));
    env.push((
        "AWS_LAMBDA_FUNCTION_NAME".into(),
        "stack-LimitScalerFunction-1A2B".into(),
    ));
    LambdaProcess::start(&binary("limit-scaler"), &env).await
}

const APPROVE: &str = r#"{"dynamodb-capacity": "approve"}"#;

/// The plan id in events/manual-approve-plan.json and manual-deny-plan.json.
const EXAMPLE_PLAN: &str = "6f1c2d34-0b7e-4c52-9a63-2f1e8d0c4b11";

/// A provisioned table at 5/5, and the manual raise to 10/5.
async fn table() -> (String, Value) {
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&moto().dynamodb()).await;
    let raise = json!({"table": table, "read": 10, "write": 5});
    (table, raise)
}

async fn plan_item(
    deployment: &Deployment,
    plan_id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    moto()
        .dynamodb()
        .get_item()
        .table_name(deployment.audit_table())
        .key("pk", AttributeValue::S(format!("plan#{plan_id}")))
        .key("sk", AttributeValue::S("plan".into()))
        .send()
        .await
        .expect("get plan")
        .item
        .expect("the plan is stored")
}

fn text<'a>(item: &'a std::collections::HashMap<String, AttributeValue>, key: &str) -> &'a str {
    item.get(key)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
        .unwrap_or_default()
}

/// Asks for the raise; the report awaiting approval.
async fn ask(function: &mut LambdaProcess, raise: &Value) -> (Value, String) {
    let asked = function.report(raise).await;
    assert_eq!(asked["outcome"], "awaiting_approval", "{asked}");
    let plan_id = asked["approval"]["plan_id"]
        .as_str()
        .expect("a plan id")
        .to_string();
    (asked, plan_id)
}

#[tokio::test]
async fn observe_plans_and_auto_acts() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;

    let mut observing = start(&deployment, "{}").await;
    let planned = observing.report(&raise).await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    assert_eq!(planned["dry_run"], true);
    assert!(
        planned["notes"].to_string().contains("observe mode"),
        "{planned}"
    );
    assert_eq!(planned["actions"][0]["after"]["read"], 10);
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    observing.stop().await;

    let mut acting = start(&deployment, r#"{"dynamodb-capacity": "auto"}"#).await;
    let acted = acting.report(&raise).await;
    assert_eq!(acted["outcome"], "remediated", "{acted}");
    assert!(acted.get("approval").is_none(), "{acted}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    acting.stop().await;
}

#[tokio::test]
async fn approve_applies_the_stored_plan_once() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;
    let mut function = start(&deployment, APPROVE).await;

    let (asked, plan_id) = ask(&mut function, &raise).await;
    assert_eq!(asked["dry_run"], false);
    assert_eq!(asked["approval"]["status"], "requested");
    assert_eq!(asked["actions"][0]["after"]["read"], 10);
    assert_eq!(asked["actions"][0]["applied"], false);
    let approve = asked["approval"]["commands"]["approve"]
        .as_str()
        .expect("command");
    assert!(
        approve.contains("--function-name stack-LimitScalerFunction-1A2B")
            && approve.contains(&format!("\"approve\":\"{plan_id}\"")),
        "{approve}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    let stored = plan_item(&deployment, &plan_id).await;
    assert_eq!(text(&stored, "status"), "awaiting");
    let plan: Value = serde_json::from_str(text(&stored, "plan")).expect("plan JSON");
    assert_eq!(plan["state_hash"], asked["approval"]["state_hash"]);
    assert_eq!(plan["actions"], asked["actions"]);
    assert_eq!(plan["state"]["before"][0]["before"]["read"], 5);

    // Asked again with nothing changed: the same plan, not a second one.
    let again = function.report(&raise).await;
    assert_eq!(again["approval"]["plan_id"], plan_id.as_str(), "{again}");
    assert_eq!(again["approval"]["already_requested"], true);

    let approval = event_file("manual-approve-plan.json", &[(EXAMPLE_PLAN, &plan_id)]);
    let applied = function.report(&approval).await;
    assert_eq!(applied["outcome"], "remediated", "{applied}");
    assert_eq!(applied["approval"]["status"], "approved");
    assert_eq!(applied["approval"]["by"], "alice");
    assert_eq!(
        applied["trigger"]["event_id"],
        format!("approval/{plan_id}").as_str()
    );
    assert_eq!(applied["actions"], {
        let mut actions = asked["actions"].clone();
        actions[0]["applied"] = json!(true);
        actions
    });
    assert!(applied["audit_id"].is_string());
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    assert_eq!(
        text(&plan_item(&deployment, &plan_id).await, "status"),
        "approved"
    );

    // A second approval returns the first report and applies nothing.
    let twice = function.report(&approval).await;
    assert_eq!(twice["audit_id"], applied["audit_id"], "{twice}");
    assert_eq!(twice["outcome"], "remediated");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    // Nor can it be denied now.
    let late = function
        .report(&json!({"deny": plan_id, "by": "bob", "reason": "too late"}))
        .await;
    assert_eq!(late["outcome"], "skipped", "{late}");
    assert!(
        late["reason"]
            .as_str()
            .unwrap()
            .contains("approved by alice"),
        "{late}"
    );
    function.stop().await;
}

#[tokio::test]
async fn approve_after_the_state_changed_applies_nothing() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;
    let mut function = start(&deployment, APPROVE).await;
    let (_, plan_id) = ask(&mut function, &raise).await;

    // Someone changes the table meanwhile.
    dynamodb
        .update_table()
        .table_name(&table)
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(7)
                .write_capacity_units(5)
                .build()
                .expect("throughput"),
        )
        .send()
        .await
        .expect("update table");

    let refused = function
        .report(&json!({"approve": plan_id, "by": "alice"}))
        .await;
    assert_eq!(refused["outcome"], "skipped", "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("state changed since the plan was made"),
        "{reason}"
    );
    // Both states, as made and as now.
    assert!(
        reason.contains("\"read\":5") && reason.contains("\"read\":7"),
        "{reason}"
    );
    assert!(
        refused["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["applied"] == false)
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (7, 5));
    function.stop().await;
}

#[tokio::test]
async fn an_expired_plan_is_audited_expired_and_applies_nothing() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;
    let mut function = start(&deployment, APPROVE).await;
    let (_, plan_id) = ask(&mut function, &raise).await;

    expire(&deployment, &plan_id).await;

    let expired = function
        .report(&json!({"approve": plan_id, "by": "alice"}))
        .await;
    assert_eq!(expired["outcome"], "skipped", "{expired}");
    assert!(
        expired["reason"]
            .as_str()
            .unwrap()
            .starts_with("approval expired"),
        "{expired}"
    );
    assert_eq!(expired["approval"]["status"], "expired");
    assert_eq!(
        text(&plan_item(&deployment, &plan_id).await, "status"),
        "expired"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));

    // The runbook plans again: a new plan, not the expired one.
    let (_, fresh) = ask(&mut function, &raise).await;
    assert_ne!(fresh, plan_id);
    function.stop().await;
}

#[tokio::test]
async fn a_denied_plan_is_audited_with_who_and_why_and_never_runs() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;
    let mut function = start(&deployment, APPROVE).await;
    let (_, plan_id) = ask(&mut function, &raise).await;

    // A denial needs a reason; bad payloads change nothing.
    for (payload, says) in [
        (
            json!({"deny": plan_id, "by": "bob"}),
            "\"reason\" is required",
        ),
        (json!({"approve": plan_id}), "\"by\" is required"),
        (
            json!({"approve": plan_id, "deny": plan_id, "by": "bob"}),
            "not both",
        ),
        (json!({"approve": "../x", "by": "bob"}), "plan id"),
        (
            json!({"approve": plan_id, "by": "bob", "force": true}),
            "force",
        ),
    ] {
        let rejected = function.report(&payload).await;
        assert_eq!(rejected["outcome"], "rejected", "{payload}: {rejected}");
        assert!(
            rejected["reason"].as_str().unwrap().contains(says),
            "{rejected}"
        );
    }
    let unknown = function
        .report(&json!({"approve": "0000-unknown", "by": "bob"}))
        .await;
    assert_eq!(unknown["outcome"], "rejected", "{unknown}");
    assert!(
        unknown["reason"]
            .as_str()
            .unwrap()
            .contains("no plan 0000-unknown")
    );
    assert_eq!(
        text(&plan_item(&deployment, &plan_id).await, "status"),
        "awaiting"
    );

    let denied = function
        .report(&event_file(
            "manual-deny-plan.json",
            &[(EXAMPLE_PLAN, &plan_id)],
        ))
        .await;
    assert_eq!(denied["outcome"], "skipped", "{denied}");
    assert_eq!(
        denied["reason"],
        format!("denied by alice: a load test, not an incident; plan {plan_id} will not run, nothing was applied")
            .as_str()
    );
    assert_eq!(denied["approval"]["status"], "denied");
    let stored = plan_item(&deployment, &plan_id).await;
    assert_eq!(text(&stored, "status"), "denied");
    assert_eq!(text(&stored, "decided_by"), "alice");
    assert_eq!(
        text(&stored, "decided_reason"),
        "a load test, not an incident"
    );

    // Asked again from the same state: the denial holds, no one is asked again.
    let again = function.report(&raise).await;
    assert_eq!(again["outcome"], "skipped", "{again}");
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .starts_with("denied by alice: the same plan from the same state"),
        "{again}"
    );
    assert!(again.get("approval").is_none(), "{again}");
    let after = function
        .report(&json!({"approve": plan_id, "by": "carol"}))
        .await;
    assert_eq!(after["outcome"], "skipped", "{after}");
    assert!(
        after["reason"]
            .as_str()
            .unwrap()
            .contains("was denied by alice")
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    function.stop().await;
}

#[tokio::test]
async fn an_approval_after_the_runbook_went_back_to_observe_only_plans() {
    let dynamodb = moto().dynamodb();
    let deployment = deploy_managed(&[]).await;
    let (table, raise) = table().await;
    let mut approving = start(&deployment, APPROVE).await;
    let (_, plan_id) = ask(&mut approving, &raise).await;
    approving.stop().await;

    // Redeployed with the runbook back in observe (DEFAULT_MODE).
    let mut observing = start(&deployment, "{}").await;
    let approved = observing
        .report(&json!({"approve": plan_id, "by": "alice"}))
        .await;
    assert_eq!(approved["outcome"], "planned", "{approved}");
    assert!(
        approved["notes"]
            .to_string()
            .contains("now in observe mode"),
        "{approved}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    observing.stop().await;

    // Approved but never carried out: once it has expired, approving it again does nothing,
    // even with the runbook back in approve.
    expire(&deployment, &plan_id).await;
    let mut approving = start(&deployment, APPROVE).await;
    let late = approving
        .report(&json!({"approve": plan_id, "by": "alice"}))
        .await;
    assert_eq!(late["outcome"], "skipped", "{late}");
    assert!(
        late["reason"]
            .as_str()
            .unwrap()
            .contains("not carried out before its expiry"),
        "{late}"
    );
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    approving.stop().await;
}

/// APPROVAL_MINUTES pass for the plan.
async fn expire(deployment: &Deployment, plan_id: &str) {
    moto()
        .dynamodb()
        .update_item()
        .table_name(deployment.audit_table())
        .key("pk", AttributeValue::S(format!("plan#{plan_id}")))
        .key("sk", AttributeValue::S("plan".into()))
        .update_expression("SET approval_expires = :past")
        .expression_attribute_values(
            ":past",
            AttributeValue::N((chrono::Utc::now().timestamp() - 60).to_string()),
        )
        .send()
        .await
        .expect("expire");
}

/// The function's answer (a report whose event could not be published under faults too).
async fn answer(function: &mut LambdaProcess, payload: &Value) -> Value {
    match function.invoke(payload).await {
        runbook_tests::runtime::Invoked::Response(report) => report,
        other => panic!("no answer: {other:?}"),
    }
}

/// Under AWS faults (the moto front answers 30% of the function's calls with throttling, 500,
/// 503 or a reset): whatever fails says so, a plan is applied at most once however often it is
/// approved, and the table holds exactly what the reports say was applied.
#[tokio::test]
async fn under_aws_faults_a_plan_is_applied_at_most_once_and_the_reports_say_so() {
    let faulty =
        runbook_tests::moto::start(&[("FRONT_FAULTS", "rate=0.3,seed=17")]).expect("moto front");
    let deployment = faulty
        .deploy(runbook_tests::deploy::DeployRequest {
            parameters: vec![("ManagedResources", "managed-*")],
            ..Default::default()
        })
        .await;
    let dynamodb = faulty.dynamodb();
    let mut env = deployment.function_env(&faulty, LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("RUNBOOK_MODES".into(), APPROVE.into()));
    let mut function = LambdaProcess::start(&binary("limit-scaler"), &env).await;
    let (mut asked_ok, mut applied_rounds, mut failed) = (0, 0, 0);
    for _ in 0..8 {
        let spec = TableSpec::provisioned("managed-orders", 5, 5);
        let table = spec.name.clone();
        spec.create(&dynamodb).await;
        let asked = answer(
            &mut function,
            &json!({"table": table, "read": 10, "write": 5}),
        )
        .await;
        let mut reports = vec![asked.clone()];
        if asked["outcome"] == "awaiting_approval" {
            asked_ok += 1;
            let approval = json!({"approve": asked["approval"]["plan_id"], "by": "alice"});
            for _ in 0..2 {
                reports.push(answer(&mut function, &approval).await);
            }
        }
        let mut applied = 0;
        for report in &reports {
            let outcome = report["outcome"].as_str().unwrap_or_default();
            assert!(
                ["awaiting_approval", "remediated", "skipped", "failed"].contains(&outcome),
                "{report}"
            );
            if outcome == "failed" {
                failed += 1;
                println!("failed: {}", report["reason"]);
                assert!(!report["reason"].as_str().unwrap_or_default().is_empty());
            }
            if report["actions"]
                .as_array()
                .is_some_and(|actions| actions.iter().any(|a| a["applied"] == true))
            {
                applied += 1;
            }
        }
        // The second approval returns the first one's report: the same change, once.
        let distinct_applied: std::collections::BTreeSet<String> = reports
            .iter()
            .filter(|r| r["actions"].to_string().contains("\"applied\":true"))
            .map(|r| r["audit_id"].to_string())
            .collect();
        assert!(distinct_applied.len() <= 1, "{reports:#?}");
        let expected = if applied > 0 { (10, 5) } else { (5, 5) };
        assert_eq!(
            capacity(&dynamodb, &table, None).await,
            expected,
            "{reports:#?}"
        );
        applied_rounds += usize::from(applied > 0);
    }
    println!("faults: {asked_ok} plans stored, {applied_rounds} applied, {failed} failed reports");
    assert!(
        asked_ok >= 3 && applied_rounds >= 2,
        "too few runs got through"
    );
    function.stop().await;
}
