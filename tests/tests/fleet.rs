//! One hub remediating other accounts and regions, through the compiled `limit-scaler` binary
//! under its template policy, against moto (which keys its state by account; assumed-role
//! credentials act in the role's account). Each spoke account runs spoke.yaml, as the StackSet
//! would deploy it; the hub assumes its role per event.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use runbook_tests::deploy::{Deployment, LIMIT_SCALER, deploy_managed};
use runbook_tests::fixtures::{
    EXTERNAL_ID, TableSpec, account_config, capacity, deploy_spoke, event_file, new_account,
    scheduled_event,
};
use runbook_tests::moto::{ACCOUNT, moto};
use runbook_tests::runtime::{LambdaProcess, binary};
use serde_json::{Value, json};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// The binary acting in its own account and `spokes`, in both regions.
async fn start(deployment: &Deployment, spokes: &[&str], external_id: &str) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("DEFAULT_MODE".into(), "auto".into()));
    env.push(("ACCOUNTS".into(), spokes.join(",")));
    env.push(("REGIONS".into(), REGIONS.join(",")));
    env.push(("SPOKE_EXTERNAL_ID".into(), external_id.into()));
    LambdaProcess::start(&binary("limit-scaler"), &env).await
}

/// An account with spoke.yaml in both regions (its role, made in us-east-1, serves both).
async fn spoke_account() -> String {
    let account = new_account();
    for region in REGIONS {
        let sdk = account_config(moto(), &account, region).await;
        deploy_spoke(&sdk, EXTERNAL_ID, "us-east-1").await;
    }
    account
}

/// The table `name` at 5/5 in `account` and `region`.
async fn table_in(account: &str, region: &str, name: &str) -> aws_sdk_dynamodb::Client {
    let sdk: SdkConfig = if account == ACCOUNT {
        moto()
            .sdk_config()
            .to_builder()
            .region(aws_config::Region::new(region.to_string()))
            .build()
    } else {
        account_config(moto(), account, region).await
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let spec = TableSpec {
        name: name.to_string(),
        ..TableSpec::provisioned(name, 5, 5)
    };
    spec.create(&dynamodb).await;
    dynamodb
}

/// The read-throttle alarm of `table`, as EventBridge delivers it from `account` and `region`
/// (every place's copy has the same event id: the idempotency keys must keep them apart).
fn throttled(table: &str, account: &str, region: &str) -> Value {
    event_file(
        "dynamodb-throttle-alarm.json",
        &[("orders", table), (ACCOUNT, account), ("us-east-1", region)],
    )
}

#[tokio::test]
async fn one_hub_remediates_two_accounts_in_two_regions() {
    let deployment = deploy_managed(&[]).await;
    let (a, b) = (spoke_account().await, spoke_account().await);
    let table = runbook_tests::unique("managed-orders");
    // The same table name in the hub's own account and region: it must not be touched.
    let hub_table = table_in(ACCOUNT, "us-east-1", &table).await;
    // The hub's own account in its other region goes through the spoke role there too (the
    // functions' own policies name their region only).
    let hub_elsewhere = moto()
        .sdk_config()
        .to_builder()
        .region(aws_config::Region::new("eu-west-1"))
        .build();
    deploy_spoke(&hub_elsewhere, EXTERNAL_ID, "eu-west-1").await;
    let mut places = vec![(
        ACCOUNT.to_string(),
        "eu-west-1",
        table_in(ACCOUNT, "eu-west-1", &table).await,
    )];
    for account in [&a, &b] {
        for region in REGIONS {
            places.push((
                account.clone(),
                region,
                table_in(account, region, &table).await,
            ));
        }
    }
    let mut function = start(&deployment, &[&a, &b], EXTERNAL_ID).await;

    let mut resources = std::collections::BTreeSet::new();
    for (account, region, dynamodb) in &places {
        let report = function.report(&throttled(&table, account, region)).await;
        assert_eq!(
            report["outcome"], "remediated",
            "{account} {region}: {report}"
        );
        assert_eq!(report["account"], json!(account));
        assert_eq!(report["region"], json!(region));
        assert_eq!(
            report["target"],
            json!(format!("{table} (account {account} in {region})"))
        );
        let resource = report["resource"].as_str().expect("resource").to_string();
        assert_eq!(
            resource,
            format!("arn:aws:dynamodb:{region}:{account}:table/{table}")
        );
        assert_eq!(
            capacity(dynamodb, &table, None).await,
            (10, 5),
            "{account} {region}"
        );
        resources.insert(resource);
    }
    assert_eq!(resources.len(), 5);
    assert_eq!(capacity(&hub_table, &table, None).await, (5, 5));

    // Five histories, event claims and budgets: every key carries its place.
    let audit = moto().dynamodb();
    for resource in &resources {
        let records = audit
            .query()
            .table_name(deployment.audit_table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("target#{resource}")))
            .send()
            .await
            .expect("history");
        assert_eq!(records.count(), 1, "{resource}");
    }
    let claims = claims_of(&deployment, "event#6a7e8feb-b491-4cf7-a9f1-bf3703467718").await;
    let expected: std::collections::BTreeSet<String> = places
        .iter()
        .map(|(account, region, _)| {
            format!("event#6a7e8feb-b491-4cf7-a9f1-bf3703467718#{account}#{region}")
        })
        .collect();
    assert_eq!(claims, expected);
    let budgets = claims_of(&deployment, "budget#dynamodb-capacity#").await;
    assert_eq!(budgets.len(), 5, "{budgets:?}");

    // The same event again in each place is a replay, not a second raise.
    for (account, region, dynamodb) in &places {
        let again = function.report(&throttled(&table, account, region)).await;
        assert_eq!(capacity(dynamodb, &table, None).await, (10, 5), "{again}");
    }
}

/// The partition keys of the audit table that start with `prefix`.
async fn claims_of(deployment: &Deployment, prefix: &str) -> std::collections::BTreeSet<String> {
    let items = moto()
        .dynamodb()
        .scan()
        .table_name(deployment.audit_table())
        .filter_expression("begins_with(pk, :prefix)")
        .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
        .send()
        .await
        .expect("scan");
    items
        .items()
        .iter()
        .filter_map(|item| item.get("pk")?.as_s().ok().cloned())
        .collect()
}

#[tokio::test]
async fn an_account_without_its_spoke_role_fails_alone() {
    let deployment = deploy_managed(&[]).await;
    let ready = spoke_account().await;
    // Listed in ACCOUNTS, but spoke.yaml was never deployed there (or its role was removed).
    let missing = new_account();
    let unlisted = spoke_account().await;
    let table = runbook_tests::unique("managed-orders");
    let ready_table = table_in(&ready, "eu-west-1", &table).await;
    let missing_table = table_in(&missing, "eu-west-1", &table).await;
    let unlisted_table = table_in(&unlisted, "eu-west-1", &table).await;
    let mut function = start(&deployment, &[&missing, &ready], EXTERNAL_ID).await;

    let failed = function
        .report(&throttled(&table, &missing, "eu-west-1"))
        .await;
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["account"], json!(missing));
    let reason = failed["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("account {missing} in eu-west-1")),
        "{reason}"
    );
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(reason.contains("deploy spoke.yaml"), "{reason}");
    assert_eq!(capacity(&missing_table, &table, None).await, (5, 5));

    let remediated = function
        .report(&throttled(&table, &ready, "eu-west-1"))
        .await;
    assert_eq!(remediated["outcome"], "remediated", "{remediated}");
    assert_eq!(capacity(&ready_table, &table, None).await, (10, 5));

    let rejected = function
        .report(&throttled(&table, &unlisted, "eu-west-1"))
        .await;
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&format!("account {unlisted}"))
                && reason.contains("ACCOUNTS")),
        "{rejected}"
    );
    assert_eq!(capacity(&unlisted_table, &table, None).await, (5, 5));

    // The schedule runs in every place: the missing account's two fail, the others go on.
    let swept = function.report(&scheduled_event()).await;
    let reports = swept["reports"].as_array().expect("a sweep");
    // (The hub's own account in eu-west-1 fails too unless another test gave it the role.)
    let failed_in = |account: &str| {
        reports
            .iter()
            .filter(|report| report["outcome"] == "failed" && report["account"] == json!(account))
            .count()
    };
    assert_eq!(failed_in(&missing), 2, "{swept}");
    assert_eq!(failed_in(&ready), 0, "{swept}");
    assert_eq!(reports.len(), 2 + failed_in(ACCOUNT), "{swept}");

    // A hub whose external id the spokes do not know reaches none of them.
    let mut wrong = start(&deployment, &[&ready], "not-the-external-id").await;
    let refused = wrong.report(&throttled(&table, &ready, "us-east-1")).await;
    assert_eq!(refused["outcome"], "failed", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("external id")),
        "{refused}"
    );
}

#[tokio::test]
async fn the_kill_switch_pauses_one_account_or_all() {
    let deployment = deploy_managed(&[]).await;
    let (paused, running) = (spoke_account().await, spoke_account().await);
    let table = runbook_tests::unique("managed-orders");
    let paused_table = table_in(&paused, "us-east-1", &table).await;
    let running_table = table_in(&running, "us-east-1", &table).await;
    let mut function = start(&deployment, &[&paused, &running], EXTERNAL_ID).await;

    let pause = function
        .report(&json!({"control": "pause", "account": paused, "reason": "a migration there", "by": "sre"}))
        .await;
    assert_eq!(pause["outcome"], "remediated", "{pause}");
    assert_eq!(
        pause["target"],
        json!(format!("automation in account {paused}"))
    );

    let skipped = function
        .report(&throttled(&table, &paused, "us-east-1"))
        .await;
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&format!("paused in account {paused}"))),
        "{skipped}"
    );
    assert_eq!(capacity(&paused_table, &table, None).await, (5, 5));
    let acted = function
        .report(&throttled(&table, &running, "us-east-1"))
        .await;
    assert_eq!(acted["outcome"], "remediated", "{acted}");
    assert_eq!(capacity(&running_table, &table, None).await, (10, 5));

    let bad = function
        .report(&json!({"control": "pause", "account": "12", "reason": "x"}))
        .await;
    assert_eq!(bad["outcome"], "rejected", "{bad}");
}

#[tokio::test]
async fn a_person_acts_in_a_spoke_by_naming_it_and_approves_its_plan_there() {
    let deployment = deploy_managed(&[]).await;
    let spoke = spoke_account().await;
    let table = runbook_tests::unique("managed-orders");
    let hub_table = table_in(ACCOUNT, "us-east-1", &table).await;
    let spoke_table = table_in(&spoke, "eu-west-1", &table).await;
    let mut env = deployment.function_env(moto(), LIMIT_SCALER);
    for (key, value) in [
        ("MANAGED_RESOURCES", "managed-*"),
        ("DEFAULT_MODE", "observe"),
        ("RUNBOOK_MODES", r#"{"dynamodb-capacity": "approve"}"#),
        ("ACCOUNTS", spoke.as_str()),
        ("REGIONS", "eu-west-1"),
        ("SPOKE_EXTERNAL_ID", EXTERNAL_ID),
    ] {
        env.push((key.into(), value.into()));
    }
    let mut function = LambdaProcess::start(&binary("limit-scaler"), &env).await;

    let asked = function
        .report(&json!({"table": table, "read": 10, "write": 5, "account": spoke, "region": "eu-west-1"}))
        .await;
    assert_eq!(asked["outcome"], "awaiting_approval", "{asked}");
    assert_eq!(asked["account"], json!(spoke));
    let plan = asked["approval"]["plan_id"].as_str().expect("plan id");
    // The commands invoke the hub's function where it runs, not in the plan's region.
    let commands = asked["approval"]["commands"].to_string();
    assert!(commands.contains("--region us-east-1"), "{commands}");
    assert!(!commands.contains("eu-west-1"), "{commands}");

    // The decision names only the plan: it is carried out where the plan was made.
    let approved = function
        .report(&json!({"approve": plan, "by": "sre"}))
        .await;
    assert_eq!(approved["outcome"], "remediated", "{approved}");
    assert_eq!(approved["account"], json!(spoke));
    assert_eq!(capacity(&spoke_table, &table, None).await, (10, 5));
    assert_eq!(capacity(&hub_table, &table, None).await, (5, 5));

    let elsewhere = function
        .report(&json!({"table": table, "read": 10, "write": 5, "account": new_account()}))
        .await;
    assert_eq!(elsewhere["outcome"], "rejected", "{elsewhere}");
}
