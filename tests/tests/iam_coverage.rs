//! IAM coverage. The end-to-end tests run every function binary with the credentials of an IAM
//! user holding exactly that function's policy from template.yaml, and the moto front enforces
//! it (runbook_tests::deploy). This file proves the check has teeth: with one action removed
//! from a function's policy, the same runs fail with AccessDenied naming that action, and
//! nothing changes. It also checks statically that every AWS operation the functions' code
//! calls is an action their policy allows, so a path no end-to-end test takes is covered too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use runbook_tests::deploy::{
    ALARM_RESPONDER, DLQ_REDRIVER, DeployRequest, Deployment, HEALTH_PROBER, LIMIT_SCALER,
    transformed_template,
};
use runbook_tests::fixtures::{
    QueuePair, TableSpec, capacity, create_deployed_function, depth, event_file, send_messages,
};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{LambdaProcess, binary};
use runbook_tests::workspace_root;
use serde_json::{Value, json};

async fn deploy_without(function: &str, action: &str) -> Deployment {
    moto()
        .deploy(DeployRequest {
            parameters: vec![("ManagedResources", "managed-*")],
            drop_actions: vec![(function, action)],
        })
        .await
}

async fn start(deployment: &Deployment, function: &str, binary_name: &str) -> LambdaProcess {
    let mut env = deployment.function_env(moto(), function);
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.push(("DRY_RUN".into(), "false".into()));
    LambdaProcess::start(&binary(binary_name), &env).await
}

fn assert_denied(report: &Value, action: &str) {
    let text = report.to_string();
    assert!(
        text.contains("AccessDenied") && text.contains(action),
        "expected AccessDenied for {action}: {report}"
    );
}

#[tokio::test]
async fn limit_scaler_without_update_table_is_denied_and_changes_nothing() {
    let deployment = deploy_without(LIMIT_SCALER, "dynamodb:UpdateTable").await;
    let dynamodb = moto().dynamodb();
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let mut function = start(&deployment, LIMIT_SCALER, "limit-scaler").await;
    let report = function
        .report(&event_file(
            "dynamodb-throttle-alarm.json",
            &[("orders", &table)],
        ))
        .await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_denied(&report, "dynamodb:UpdateTable");
    assert_eq!(capacity(&dynamodb, &table, None).await, (5, 5));
    function.stop().await;
}

#[tokio::test]
async fn dlq_redriver_without_send_message_is_denied_and_loses_nothing() {
    let deployment = deploy_without(DLQ_REDRIVER, "sqs:SendMessage").await;
    let sqs = moto().sqs();
    let pair = QueuePair::create_with(&sqs, "managed-orders", false, 100).await;
    let bodies: Vec<String> = (0..5).map(|i| json!({"id": i}).to_string()).collect();
    send_messages(&sqs, &pair.dlq, &bodies, None, &[]).await;
    let mut function = start(&deployment, DLQ_REDRIVER, "dlq-redriver").await;
    let report = function
        .report(&event_file(
            "manual-dlq-redrive.json",
            &[("orders", &pair.source.name)],
        ))
        .await;
    assert_ne!(report["outcome"], "remediated", "{report}");
    assert_denied(&report, "sqs:SendMessage");
    function.stop().await;
    // Messages received during the failed attempt become visible again after their timeout.
    assert_eq!(
        depth(&sqs, &pair.dlq).await + depth(&sqs, &pair.source).await,
        5
    );
}

#[tokio::test]
async fn alarm_responder_without_update_alias_is_denied_and_changes_nothing() {
    let deployment = deploy_without(ALARM_RESPONDER, "lambda:UpdateAlias").await;
    let base = runbook_tests::unique("managed-orders");
    let function_name = format!("{base}-api");
    create_deployed_function(moto(), &function_name, "2").await;
    let lambda = moto().lambda();
    let mut function = start(&deployment, ALARM_RESPONDER, "alarm-responder").await;
    let report = function
        .report(&event_file(
            "lambda-errors-alarm.json",
            &[("orders", base.as_str())],
        ))
        .await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_denied(&report, "lambda:UpdateAlias");
    let alias = lambda
        .get_alias()
        .function_name(&function_name)
        .name("live")
        .send()
        .await
        .expect("alias");
    assert_eq!(alias.function_version(), Some("2"));
    function.stop().await;
}

#[tokio::test]
async fn health_prober_without_describe_table_reports_the_denial() {
    let deployment = deploy_without(HEALTH_PROBER, "dynamodb:DescribeTable").await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&moto().dynamodb()).await;
    let mut function = start(&deployment, HEALTH_PROBER, "health-prober").await;
    let report = function
        .report(&json!({"probes": [{"name": "orders-table", "kind": "dynamodb_table", "table": table}]}))
        .await;
    assert_eq!(report["healthy"], false, "{report}");
    assert_denied(&report, "dynamodb:DescribeTable");
    function.stop().await;
}

// --- Static coverage: the operations in the code against the actions in the policies ----------

/// SDK crates the functions use, with the IAM prefix of their service.
const SERVICES: &[(&str, &str)] = &[
    ("aws-sdk-dynamodb", "dynamodb"),
    ("aws-sdk-sqs", "sqs"),
    ("aws-sdk-lambda", "lambda"),
    ("aws-sdk-cloudformation", "cloudformation"),
    ("aws-sdk-cloudwatch", "cloudwatch"),
    ("aws-sdk-eventbridge", "events"),
    ("aws-sdk-applicationautoscaling", "application-autoscaling"),
    ("aws-sdk-cloudwatchlogs", "logs"),
    ("aws-sdk-apigateway", "apigateway"),
    ("aws-sdk-apigatewayv2", "apigateway"),
    ("aws-sdk-sts", "sts"),
];

/// Every operation of an SDK crate, as the snake_case names of its fluent client methods.
fn sdk_operations(krate: &str) -> BTreeSet<String> {
    // Read once per test binary: every function's scan asks for the same crates.
    static METADATA: OnceLock<Value> = OnceLock::new();
    let metadata = METADATA.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(workspace_root())
            .output()
            .expect("cargo metadata");
        serde_json::from_slice(&output.stdout).expect("metadata JSON")
    });
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|package| package["name"] == krate)
        .and_then(|package| package["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("{krate} not in cargo metadata"))
        .to_string();
    let operations = Path::new(&manifest).with_file_name("src").join("operation");
    std::fs::read_dir(&operations)
        .unwrap_or_else(|err| panic!("{}: {err}", operations.display()))
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn rust_sources(dir: &Path, into: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir)
        .expect("source dir")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(std::fs::read_to_string(&path).expect("source"));
        }
    }
}

fn iam_action(prefix: &str, operation: &str) -> String {
    // API Gateway's actions are the HTTP methods of its management API.
    if prefix == "apigateway" {
        let verb = operation.split('_').next().unwrap_or_default();
        let method = match verb {
            "get" => "GET",
            "create" | "import" => "POST",
            "update" => "PATCH",
            "delete" => "DELETE",
            _ => "PUT",
        };
        return format!("{prefix}:{method}");
    }
    let camel: String = operation
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    let action = format!("{prefix}:{camel}");
    // Batch APIs are authorised as their single-message actions.
    match action.as_str() {
        "sqs:SendMessageBatch" => "sqs:SendMessage".into(),
        "sqs:DeleteMessageBatch" => "sqs:DeleteMessage".into(),
        "sqs:ChangeMessageVisibilityBatch" => "sqs:ChangeMessageVisibility".into(),
        _ => action,
    }
}

/// The IAM actions a function's code can call: every `.<operation>()` of an SDK client in its
/// crate and in shared/ (the audit table, the report events), for the SDK crates the function
/// depends on. An operation two services share (ListTagsForResource) counts for the service the
/// file names (its crate `aws_sdk_…`, or a client field `.cloudwatch`) when it names one of
/// them, else for both.
fn actions_called(crate_dir: &str) -> BTreeSet<String> {
    let root = workspace_root();
    // Every function depends on shared/, so its SDK crates count too.
    let manifest = [crate_dir, "shared"]
        .map(|dir| std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("manifest"))
        .join("\n");
    let services: Vec<(&str, &str, BTreeSet<String>)> = SERVICES
        .iter()
        .filter(|(krate, _)| manifest.contains(&format!("{krate}.workspace")))
        .map(|(krate, prefix)| (*krate, *prefix, sdk_operations(krate)))
        .collect();
    let mut files = Vec::new();
    rust_sources(&root.join(crate_dir).join("src"), &mut files);
    rust_sources(&root.join("shared/src"), &mut files);
    let every_operation: BTreeSet<&String> =
        services.iter().flat_map(|(_, _, ops)| ops.iter()).collect();
    let mut actions = BTreeSet::new();
    for file in files {
        for &operation in &every_operation {
            if !file.contains(&format!(".{operation}()")) {
                continue;
            }
            let owners: Vec<_> = services
                .iter()
                .filter(|(_, _, ops)| ops.contains(operation))
                .collect();
            let named: Vec<_> = owners
                .iter()
                .filter(|(krate, prefix, _)| {
                    file.contains(&krate.replace('-', "_"))
                        || file.contains(&format!(".{prefix}\n"))
                })
                .collect();
            let owners: Vec<_> = if owners.len() > 1 && !named.is_empty() {
                named.into_iter().copied().collect()
            } else {
                owners
            };
            for (_, prefix, _) in owners {
                actions.insert(iam_action(prefix, operation));
            }
        }
    }
    // A tagged role session (the hub tags every spoke session) needs sts:TagSession too.
    if actions.contains("sts:AssumeRole") {
        actions.insert("sts:TagSession".into());
    }
    actions
}

/// The actions a function's role allows, from the transformed template (every statement, both
/// branches of conditions).
fn actions_allowed(template: &Value, function: &str) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    let policies = template["Resources"][format!("{function}Role")]["Properties"]["Policies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for policy in policies {
        // SAM's policy for the OnFailure destination: Lambda itself uses it to deliver failed
        // asynchronous events, the code does not.
        let name = policy["PolicyName"].as_str().unwrap_or_default();
        if !name.ends_with("EventInvokeConfigOnFailureSQSPolicy") {
            collect_actions(&policy["PolicyDocument"], &mut allowed);
        }
    }
    allowed
}

/// Every `Action` in a policy document (every statement, both branches of conditions).
fn collect_actions(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(actions) = map.get("Action") {
                match actions {
                    Value::String(action) => {
                        into.insert(action.clone());
                    }
                    Value::Array(list) => {
                        into.extend(list.iter().filter_map(|a| a.as_str().map(String::from)))
                    }
                    _ => {}
                }
            }
            map.values().for_each(|v| collect_actions(v, into));
        }
        Value::Array(list) => list.iter().for_each(|v| collect_actions(v, into)),
        _ => {}
    }
}

/// Actions a policy allows that no code calls: the service the function calls makes them with
/// the function's permissions (SQS decrypts and encrypts an SSE-KMS queue's messages with the
/// keys QueueKmsKeyArns names).
const ON_ITS_BEHALF: &[(&str, &str)] = &[
    (DLQ_REDRIVER, "kms:Decrypt"),
    (DLQ_REDRIVER, "kms:GenerateDataKey"),
];

/// Calls the scan finds in shared/ that a function never makes, so its policy rightly lacks them.
/// (Its end-to-end tests, run under its policy, would fail if it made them.)
const NEVER_CALLED: &[(&str, &str)] = &[
    // health-prober settles pending verifications (Query, UpdateItem) and serves the kill switch
    // (GetItem, PutItem); the leases of shared/src/store/ belong to the functions that remediate.
    (HEALTH_PROBER, "dynamodb:DeleteItem"),
    // The managed-function check in shared/src/guards/managed.rs, for the functions that change Lambda
    // functions; these two change none.
    (HEALTH_PROBER, "lambda:ListTags"),
    (DLQ_REDRIVER, "lambda:ListTags"),
    // The owning-stack check in shared/src/guards/owner.rs, for the runbooks that change what a
    // template sets; dlq-redriver changes messages and health-prober nothing (`stacks()` is
    // None for both).
    (DLQ_REDRIVER, "cloudformation:DescribeStackResources"),
    (DLQ_REDRIVER, "cloudformation:DescribeStacks"),
    (HEALTH_PROBER, "cloudformation:DescribeStackResources"),
    // The evidence in shared/src/path/evidence/ reads a function's logs, versions, aliases and
    // owning stack's events; dlq-redriver's evidence is its DLQ's metrics alone, and
    // health-prober's reports carry none.
    (DLQ_REDRIVER, "logs:FilterLogEvents"),
    (DLQ_REDRIVER, "lambda:GetFunctionConfiguration"),
    (DLQ_REDRIVER, "lambda:ListAliases"),
    (DLQ_REDRIVER, "lambda:ListVersionsByFunction"),
    (DLQ_REDRIVER, "cloudformation:DescribeStackEvents"),
    (HEALTH_PROBER, "logs:FilterLogEvents"),
    (HEALTH_PROBER, "lambda:ListAliases"),
    (HEALTH_PROBER, "lambda:ListVersionsByFunction"),
    // The managed-table check in shared/src/guards/managed.rs, for the functions that change tables.
    (HEALTH_PROBER, "dynamodb:ListTagsOfResource"),
    (DLQ_REDRIVER, "dynamodb:ListTagsOfResource"),
    // The scorecard's read of the audit table (shared/src/store/plans.rs) is health-prober's.
    (LIMIT_SCALER, "dynamodb:Scan"),
    (DLQ_REDRIVER, "dynamodb:Scan"),
    (ALARM_RESPONDER, "dynamodb:Scan"),
];

/// Per function: (actions called but not allowed, actions allowed but never called).
fn coverage(template: &Value) -> BTreeMap<&'static str, (BTreeSet<String>, BTreeSet<String>)> {
    let functions = [
        (LIMIT_SCALER, "functions/limit-scaler"),
        (DLQ_REDRIVER, "functions/dlq-redriver"),
        (ALARM_RESPONDER, "functions/alarm-responder"),
        (HEALTH_PROBER, "functions/health-prober"),
    ];
    functions
        .iter()
        .map(|(function, dir)| {
            let mut called = actions_called(dir);
            for (never, action) in NEVER_CALLED {
                if never == function {
                    called.remove(*action);
                }
            }
            for (behalf, action) in ON_ITS_BEHALF {
                if behalf == function {
                    called.insert(action.to_string());
                }
            }
            assert!(!called.is_empty(), "{dir}: no SDK call found");
            let allowed = actions_allowed(template, function);
            let missing = called.difference(&allowed).cloned().collect();
            let unused = allowed.difference(&called).cloned().collect();
            (*function, (missing, unused))
        })
        .collect()
}

#[test]
fn each_policy_allows_exactly_the_operations_its_code_calls() {
    let coverage = coverage(transformed_template());
    for (function, (missing, unused)) in &coverage {
        assert!(
            missing.is_empty(),
            "{function}: called but not allowed: {missing:?}"
        );
        assert!(
            unused.is_empty(),
            "{function}: allowed but never called: {unused:?}"
        );
    }
    assert!(
        actions_called("functions/limit-scaler").contains("dynamodb:UpdateTable"),
        "the scan finds the calls"
    );
}

#[test]
fn the_static_check_fails_when_an_action_is_removed_or_added() {
    let mut template = transformed_template().clone();
    let policies =
        &mut template["Resources"]["AlarmResponderFunctionRole"]["Properties"]["Policies"];
    let text = policies
        .to_string()
        .replace("\"lambda:UpdateAlias\",", "")
        .replace(
            "\"lambda:GetAlias\",",
            "\"lambda:GetAlias\", \"lambda:DeleteFunction\",",
        );
    *policies = serde_json::from_str(&text).expect("policies");
    let coverage = coverage(&template);
    let (missing, unused) = &coverage[ALARM_RESPONDER];
    assert_eq!(missing, &BTreeSet::from(["lambda:UpdateAlias".to_string()]));
    assert_eq!(
        unused,
        &BTreeSet::from(["lambda:DeleteFunction".to_string()])
    );
}

/// What lets the automation approve its own plans: a role's action that grants invoking a
/// Lambda function (`lambda:InvokeFunction`, a wildcard that covers it, or a `NotAction`), and a
/// rule target that sends an input of its own instead of the event.
fn self_approval_paths(template: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for function in [LIMIT_SCALER, DLQ_REDRIVER, ALARM_RESPONDER, HEALTH_PROBER] {
        let role = &template["Resources"][format!("{function}Role")];
        if role.to_string().contains("\"NotAction\"") {
            found.push(format!("{function}: a NotAction statement"));
        }
        for action in actions_allowed(template, function) {
            if [
                "lambda:InvokeFunction",
                "lambda:InvokeAsync",
                "lambda:InvokeFunctionUrl",
            ]
            .iter()
            .any(|invoke| iam_pattern_matches(&action, invoke))
            {
                found.push(format!("{function}: {action}"));
            }
        }
    }
    let resources = template["Resources"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, resource) in &resources {
        let targets = match resource["Type"].as_str() {
            Some("AWS::Events::Rule") => resource["Properties"]["Targets"].clone(),
            Some("AWS::Scheduler::Schedule") => json!([resource["Properties"]["Target"]]),
            _ => continue,
        };
        for target in targets.as_array().into_iter().flatten() {
            for crafted in ["Input", "InputPath", "InputTransformer"] {
                if !target[crafted].is_null() {
                    found.push(format!("rule {name}: a target with {crafted}"));
                }
            }
        }
    }
    found
}

/// IAM's action matching: `*` and `?` globs, case-insensitive.
fn iam_pattern_matches(pattern: &str, action: &str) -> bool {
    runbook_shared::model::glob_match(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

#[test]
fn no_function_can_invoke_a_function_and_no_rule_crafts_an_input() {
    // The approvers are people: nothing the automation runs as can send an approval.
    let paths = self_approval_paths(transformed_template());
    assert!(paths.is_empty(), "{paths:?}");
    let rules = transformed_template()["Resources"]
        .as_object()
        .expect("resources")
        .values()
        .filter(|resource| resource["Type"] == "AWS::Events::Rule")
        .count();
    assert!(rules >= 5, "the check sees the rules ({rules})");

    // The check finds each path, should one be added.
    for (role, action) in [
        ("LimitScalerFunctionRole", "lambda:InvokeFunction"),
        ("DlqRedriverFunctionRole", "lambda:Invoke*"),
        ("HealthProberFunctionRole", "*"),
    ] {
        let mut template = transformed_template().clone();
        let policy = template["Resources"][role]["Properties"]["Policies"]
            .as_array_mut()
            .expect("policies")
            .iter_mut()
            .find(|policy| {
                !policy["PolicyName"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("OnFailureSQSPolicy")
            })
            .expect("the function's own policy");
        policy["PolicyDocument"]["Statement"]
            .as_array_mut()
            .expect("statements")
            .push(json!({"Effect": "Allow", "Action": action, "Resource": "*"}));
        let paths = self_approval_paths(&template);
        assert_eq!(paths.len(), 1, "{role} {action}: {paths:?}");
    }
    let mut template = transformed_template().clone();
    let rule = template["Resources"]
        .as_object_mut()
        .expect("resources")
        .values_mut()
        .find(|resource| resource["Type"] == "AWS::Events::Rule")
        .expect("a rule");
    rule["Properties"]["Targets"][0]["Input"] = json!(r#"{"approve": "plan"}"#);
    assert_eq!(self_approval_paths(&template).len(), 1);
}

/// What the functions call on the hub's own resources (its audit table, its bus, its metrics),
/// which the spoke role does not carry: they act there with their own roles. limit-scaler
/// also reads and writes items of the stored-limits table in the account it remediates.
fn on_the_hub(function: &str, action: &str) -> bool {
    const ALL: &[&str] = &[
        "events:PutEvents",
        "cloudwatch:PutMetricData",
        "dynamodb:Scan",
        "dynamodb:Query",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        // The hub assumes the spoke roles; a spoke assumes nothing.
        "sts:AssumeRole",
        "sts:TagSession",
    ];
    ALL.contains(&action)
        || (function != LIMIT_SCALER
            && ["dynamodb:GetItem", "dynamodb:UpdateItem"].contains(&action))
}

/// The actions spoke.yaml's role allows for one function's runbooks (its policy of that name).
fn spoke_actions(function: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace_root().join("spoke.yaml")).expect("spoke.yaml");
    let spoke: Value = serde_yaml::from_str(&text).expect("spoke.yaml is YAML");
    let name = function.trim_end_matches("Function");
    let policy = spoke["Resources"]["RunbookAutomationSpoke"]["Properties"]["Policies"]
        .as_array()
        .and_then(|policies| policies.iter().find(|policy| policy["PolicyName"] == name))
        .unwrap_or_else(|| panic!("spoke.yaml has no policy {name}"));
    let mut actions = BTreeSet::new();
    collect_actions(&policy["PolicyDocument"], &mut actions);
    actions
}

#[test]
fn the_spoke_role_allows_what_each_function_calls_in_the_accounts_it_remediates() {
    for (function, dir) in [
        (LIMIT_SCALER, "functions/limit-scaler"),
        (DLQ_REDRIVER, "functions/dlq-redriver"),
        (ALARM_RESPONDER, "functions/alarm-responder"),
        (HEALTH_PROBER, "functions/health-prober"),
    ] {
        let mut called = actions_called(dir);
        for (never, action) in NEVER_CALLED {
            if *never == function {
                called.remove(*action);
            }
        }
        for (behalf, action) in ON_ITS_BEHALF {
            if *behalf == function {
                called.insert(action.to_string());
            }
        }
        let spoke = spoke_actions(function);
        let missing: BTreeSet<&String> = called
            .iter()
            .filter(|action| !spoke.contains(*action) && !on_the_hub(function, action))
            .collect();
        assert!(
            missing.is_empty(),
            "{function}: the spoke role lacks {missing:?}"
        );
        let unused: BTreeSet<&String> = spoke.difference(&called).collect();
        assert!(
            unused.is_empty(),
            "{function}: the spoke role allows {unused:?}, never called"
        );
        // No hub-side access rides along into the target accounts.
        for hub_only in [
            "events:PutEvents",
            "cloudwatch:PutMetricData",
            "dynamodb:Scan",
        ] {
            assert!(!spoke.contains(hub_only), "{function}: {hub_only}");
        }
    }
    assert!(self_approval_paths_in_spoke().is_empty());
}

/// The spoke role may not invoke functions either.
fn self_approval_paths_in_spoke() -> Vec<String> {
    [LIMIT_SCALER, DLQ_REDRIVER, ALARM_RESPONDER, HEALTH_PROBER]
        .iter()
        .flat_map(|function| spoke_actions(function))
        .filter(|action| iam_pattern_matches(action, "lambda:InvokeFunction"))
        .collect()
}
