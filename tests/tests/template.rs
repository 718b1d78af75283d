//! template.yaml: linted (cfn-lint, sam validate --lint, on the SAM template and on what the
//! SAM transform makes of it), scanned by checkov, its event patterns matched against events/,
//! deployed into moto, and its defaults a configuration the functions accept.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use alarm_responder::ResponderRunbook;
use limit_scaler::dynamodb_capacity::CapacityTarget;
use limit_scaler::lambda_concurrency::ConcurrencyTarget;
use quamina::Quamina;
use runbook_shared::config::Env;
use runbook_shared::edge::recognise::recognise;
use runbook_shared::model::{AlarmState, Trigger};
use runbook_tests::deploy::{DeployRequest, transformed_template};
use runbook_tests::fixtures::{event_file, scaler_config};
use runbook_tests::moto::moto;
use runbook_tests::workspace_root;
use serde_json::{Value, json};

/// Runs a tool installed in .venv by scripts/setup.sh, from the workspace root.
fn venv_tool(name: &str, args: &[&str]) -> (Output, String) {
    let tool = runbook_tests::moto::python().with_file_name(name);
    let output = Command::new(&tool)
        .args(args)
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap_or_else(|err| panic!("{}: {err} (scripts/setup.sh installs it)", tool.display()));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, printed)
}

#[test]
fn cfn_lint_passes_without_warnings() {
    for file in ["template.yaml", "spoke.yaml"] {
        let (output, printed) = venv_tool("cfn-lint", &[file]);
        assert!(
            output.status.success() && printed.trim().is_empty(),
            "cfn-lint {file}:\n{printed}"
        );
    }
}

/// spoke.yaml is generated from template.yaml's policies, so the two cannot drift.
#[test]
fn spoke_yaml_is_what_the_script_makes_from_template_yaml() {
    let (output, printed) = venv_tool("python", &["scripts/spoke_template.py", "--check"]);
    assert!(output.status.success(), "{printed}");
}

/// cfn-lint on the SAM template sees the SAM resources; some CloudFormation rules (such as
/// "Fn::Join's delimiter must be a plain string") only apply to what the transform produces.
#[test]
fn cfn_lint_passes_on_the_transformed_template() {
    let path = std::env::temp_dir().join(format!("{}.json", runbook_tests::unique("transformed")));
    std::fs::write(&path, transformed_template().to_string()).expect("write");
    let (output, printed) = venv_tool("cfn-lint", &[path.to_str().expect("path")]);
    std::fs::remove_file(&path).ok();
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "cfn-lint:\n{printed}"
    );
}

#[test]
fn sam_validate_lint_passes() {
    let (output, printed) = venv_tool(
        "sam",
        &["validate", "--lint", "--template", "template.yaml"],
    );
    let lines: Vec<&str> = printed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(
        output.status.success()
            && lines.len() == 1
            && lines[0].ends_with("is a valid SAM Template"),
        "sam validate --lint:\n{printed}"
    );
}

/// No failed check; every skip is written in the template with its reason.
#[test]
fn checkov_finds_nothing_unexplained() {
    checkov_passes("template.yaml");
    checkov_passes("spoke.yaml");
}

fn checkov_passes(file: &str) {
    let (output, printed) = venv_tool(
        "checkov",
        &[
            "--file",
            file,
            "--framework",
            "cloudformation",
            "--skip-download",
            "--compact",
            "--output",
            "json",
        ],
    );
    let report: Value = serde_json::from_str(&String::from_utf8_lossy(&output.stdout))
        .unwrap_or_else(|err| panic!("checkov output is not JSON ({err}):\n{printed}"));
    let results = &report["results"];
    assert_eq!(
        results["failed_checks"].as_array().map(Vec::len),
        Some(0),
        "{:#}",
        results["failed_checks"]
    );
    assert!(
        report["summary"]["passed"].as_u64().unwrap_or(0) > 10,
        "{printed}"
    );
    for skipped in results["skipped_checks"]
        .as_array()
        .expect("skipped checks")
    {
        let reason = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.len() > 30, "skip without a reason: {skipped:#}");
    }
}

/// The function's environment as CloudFormation receives it (after the SAM transform merges the
/// Globals), with every `Ref` to a parameter replaced by the parameter's default and the pseudo
/// parameters by a deployment's values, plus what Lambda itself sets (AWS_REGION).
fn environment_with_defaults(function: &str) -> Vec<(String, String)> {
    let template = transformed_template();
    let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
    let mapping = variables.as_object().expect("environment variables");
    let mut environment: Vec<(String, String)> = mapping
        .iter()
        .map(|(name, value)| {
            let value = match value {
                // A name made from the stack's (the scorecard's rule).
                serde_json::Value::Object(sub) if sub.contains_key("Fn::Sub") => sub["Fn::Sub"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("${AWS::StackName}", "runbook"),
                serde_json::Value::Object(reference) if reference["Ref"] == "AWS::AccountId" => {
                    runbook_tests::moto::ACCOUNT.to_string()
                }
                serde_json::Value::Object(reference) if reference.contains_key("Ref") => {
                    let name = reference["Ref"].as_str().expect("Ref name");
                    match &template["Parameters"][name]["Default"] {
                        serde_json::Value::String(text) => text.clone(),
                        serde_json::Value::Number(number) => number.to_string(),
                        // A resource reference (the audit table's name) stands for any name.
                        serde_json::Value::Null => format!("{name}-name"),
                        other => panic!("{name} default {other:?}"),
                    }
                }
                serde_json::Value::String(text) => text.clone(),
                other => panic!("{name}: {other:?}"),
            };
            (name.clone(), value)
        })
        .collect();
    environment.push(("AWS_REGION".into(), runbook_tests::moto::REGION.into()));
    environment
}

#[test]
fn limit_scaler_defaults_are_a_valid_configuration() {
    let environment = environment_with_defaults("LimitScalerFunction");
    let pairs: Vec<(&str, &str)> = environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = limit_scaler::config::ScalerConfig::from_env(&Env::from_pairs(&pairs))
        .expect("template defaults");
    // A first deploy only plans: every runbook starts in observe.
    assert!(!config.safety.dry_run);
    for runbook in runbook_shared::model::RUNBOOKS {
        assert_eq!(
            config.safety.modes.of(runbook),
            runbook_shared::model::Mode::Observe
        );
    }
    assert_eq!(config.scale_factor, 2.0);
}

#[test]
fn dlq_redriver_defaults_are_a_valid_configuration() {
    let environment = environment_with_defaults("DlqRedriverFunction");
    let pairs: Vec<(&str, &str)> = environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = dlq_redriver::config::RedriverConfig::from_env(&Env::from_pairs(&pairs))
        .expect("template defaults");
    assert!(
        !config.redrive_on_alarm,
        "alarms only inspect until the user opts in"
    );
    assert!(config.dlq_queues.is_empty());
}

#[test]
fn health_prober_defaults_are_a_valid_configuration() {
    let environment = environment_with_defaults("HealthProberFunction");
    let pairs: Vec<(&str, &str)> = environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = health_prober::config::ProberConfig::from_env(&Env::from_pairs(&pairs))
        .expect("template defaults");
    assert!(config.probes.is_empty());
    assert_eq!(config.metrics_namespace, "RunbookAutomation");
}

#[test]
fn alarm_responder_defaults_are_a_valid_configuration() {
    let environment = environment_with_defaults("AlarmResponderFunction");
    let pairs: Vec<(&str, &str)> = environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config = alarm_responder::config::ResponderConfig::from_env(&Env::from_pairs(&pairs))
        .expect("template defaults");
    assert_eq!(config.safety.evidence.recent_changes_minutes, 60);
    assert_eq!(
        config.safety.modes.of("lambda-rollback"),
        runbook_shared::model::Mode::Observe
    );
    assert_eq!(config.safety.approval_window, chrono::Duration::minutes(30));
}

// --- Event patterns -----------------------------------------------------------------------------

/// Every EventBridge rule with a pattern, keyed by logical id, with AlarmNamePrefix set.
fn rules(alarm_name_prefix: &str) -> Quamina<String> {
    fn resolve(value: &Value, prefix: &str) -> Value {
        match value {
            Value::Object(map) if map.get("Ref") == Some(&json!("AlarmNamePrefix")) => {
                json!(prefix)
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve(v, prefix)))
                    .collect(),
            ),
            Value::Array(list) => Value::Array(list.iter().map(|v| resolve(v, prefix)).collect()),
            other => other.clone(),
        }
    }
    let template = transformed_template();
    let mut rules = Quamina::new();
    for (logical, resource) in template["Resources"].as_object().expect("resources") {
        if resource["Type"] != "AWS::Events::Rule" {
            continue;
        }
        let pattern = &resource["Properties"]["EventPattern"];
        if pattern.is_null() {
            // A schedule: its expression from a parameter, or the scorecard's fixed one.
            let schedule = &resource["Properties"]["ScheduleExpression"];
            assert!(schedule.is_object() || schedule.is_string(), "{logical}");
            continue;
        }
        let pattern = resolve(pattern, alarm_name_prefix);
        rules
            .add_pattern(logical.clone(), &pattern.to_string())
            .unwrap_or_else(|err| panic!("{logical}: {err:?} in {pattern}"));
    }
    rules
}

fn matched(rules: &Quamina<String>, event: &Value) -> BTreeSet<String> {
    rules
        .matches_for_event(event.to_string().as_bytes())
        .expect("event")
        .into_iter()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// The function (its binary) each rule that invokes one invokes, from the template.
fn rule_targets() -> BTreeMap<String, String> {
    let resources = transformed_template()["Resources"]
        .as_object()
        .expect("resources");
    let binary = |logical: &str| {
        resources[logical]["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{logical} names no binary"))
            .to_string()
    };
    resources
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::Events::Rule")
        .filter(|(_, resource)| !resource["Properties"]["EventPattern"].is_null())
        .filter_map(|(logical, resource)| {
            let target = resource["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0].as_str()?;
            Some((logical.clone(), binary(target)))
        })
        .collect()
}

/// The functions whose code acts on an event EventBridge delivers: an alarm (in ALARM or OK)
/// whose metric chooses one of their runbooks, a stack status change, or a handoff to them. Alarm actions invoke a
/// function directly, schedules have no pattern, and manual payloads come from `aws lambda
/// invoke`: no rule may deliver those.
fn acting_functions(event: &Value) -> BTreeSet<String> {
    let mut functions = BTreeSet::new();
    if event.get("detail-type").is_none() {
        return functions;
    }
    match recognise(event).expect("events/ files are recognised") {
        // Each function that takes alarms follows a composite in ALARM to its children.
        Trigger::Alarm(alarm) if alarm.composite.is_some() && alarm.state == AlarmState::Alarm => {
            functions.extend(
                [
                    limit_scaler::FUNCTION,
                    dlq_redriver::FUNCTION,
                    alarm_responder::FUNCTION,
                ]
                .map(str::to_string),
            );
        }
        Trigger::Alarm(alarm) if alarm.state != AlarmState::InsufficientData => {
            let config = scaler_config("audit", &[]);
            if CapacityTarget::from_alarm(&alarm, &config).is_some()
                || ConcurrencyTarget::from_alarm(&alarm).is_some()
            {
                functions.insert(limit_scaler::FUNCTION.to_string());
            }
            if alarm.metrics.iter().any(|metric| {
                metric.namespace == "AWS/Lambda"
                    && ResponderRunbook::for_metric(&metric.name).is_some()
            }) {
                functions.insert(alarm_responder::FUNCTION.to_string());
            }
            if dlq_redriver::queue_of(&alarm).is_some() {
                functions.insert(dlq_redriver::FUNCTION.to_string());
            }
            if alarm_responder::api_errors::ApiErrors::watched_by(&alarm) {
                functions.insert(alarm_responder::FUNCTION.to_string());
            }
        }
        Trigger::StackEvent { .. } => {
            functions.insert(alarm_responder::FUNCTION.to_string());
        }
        Trigger::Handoff(handoff) => {
            functions.insert(handoff.to);
        }
        _ => {}
    }
    functions
}

#[test]
fn every_event_file_reaches_exactly_the_rules_meant_for_it() {
    let targets = rule_targets();
    let rules = rules("");
    let mut covered = BTreeSet::new();
    for entry in std::fs::read_dir(workspace_root().join("events")).expect("events/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let event = event_file(&name, &[]);
        let matched = matched(&rules, &event);
        let reached: BTreeSet<String> = matched
            .iter()
            .map(|rule| {
                targets
                    .get(rule)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name} reaches {rule}, which invokes no function"))
            })
            .collect();
        assert_eq!(reached, acting_functions(&event), "{name}: {matched:?}");
        assert_eq!(
            matched.len(),
            reached.len(),
            "{name}: one rule per function: {matched:?}"
        );
        covered.extend(matched);
    }
    assert_eq!(
        covered,
        targets.keys().cloned().collect(),
        "every rule is exercised by an events/ file"
    );
}

#[test]
fn rules_ignore_the_states_metrics_and_statuses_they_do_not_handle() {
    let rules = rules("");
    let mut insufficient = event_file("dynamodb-throttle-alarm.json", &[]);
    insufficient["detail"]["state"]["value"] = json!("INSUFFICIENT_DATA");
    assert!(matched(&rules, &insufficient).is_empty());

    let mut other_metric = event_file("lambda-errors-alarm.json", &[]);
    other_metric["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["name"] =
        json!("ConcurrentExecutions");
    assert!(matched(&rules, &other_metric).is_empty());

    let mut other_namespace = event_file("sqs-dlq-alarm.json", &[]);
    other_namespace["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["namespace"] =
        json!("AWS/Kinesis");
    assert!(matched(&rules, &other_namespace).is_empty());

    let mut completed = event_file("cloudformation-stack-status-change.json", &[]);
    completed["detail"]["status-details"]["status"] = json!("UPDATE_COMPLETE");
    assert!(matched(&rules, &completed).is_empty());

    let mut from_elsewhere = event_file("dynamodb-throttle-alarm.json", &[]);
    from_elsewhere["source"] = json!("my.app");
    assert!(matched(&rules, &from_elsewhere).is_empty());
}

#[test]
fn the_alarm_name_prefix_narrows_every_alarm_rule() {
    let rules = rules("team-a-");
    for file in [
        "dynamodb-throttle-alarm.json",
        "lambda-throttles-alarm.json",
        "lambda-errors-alarm.json",
        "sqs-dlq-alarm.json",
        "api-5xx-alarm.json",
        "api-http-5xx-alarm.json",
    ] {
        let mut event = event_file(file, &[]);
        assert!(matched(&rules, &event).is_empty(), "{file}");
        let name = event["detail"]["alarmName"]
            .as_str()
            .expect("alarm name")
            .to_string();
        event["detail"]["alarmName"] = json!(format!("team-a-{name}"));
        assert_eq!(matched(&rules, &event).len(), 1, "{file}");
    }
    // Stack events are not alarms: the prefix does not apply to them.
    let stack = event_file("cloudformation-stack-status-change.json", &[]);
    assert_eq!(matched(&rules, &stack).len(), 1);
}

// --- Deployment -----------------------------------------------------------------------------------

/// The statements of `function`'s resource policy that let CloudWatch's alarms invoke it.
fn alarm_action_statements(function: &str) -> Vec<Value> {
    let policy = moto().boto3("lambda", "get_policy", json!({"FunctionName": function}));
    let policy: Value = serde_json::from_str(policy["Policy"].as_str().unwrap_or("{}"))
        .expect("the policy is JSON");
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|statement| {
            statement["Principal"]["Service"] == "lambda.alarms.cloudwatch.amazonaws.com"
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_alarms_lambda_action_may_invoke_the_functions_that_take_alarms_and_only_from_here() {
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "orders-*"),
                ("AlarmNamePrefix", "team-a-"),
            ],
            ..DeployRequest::default()
        })
        .await;
    assert_eq!(deployment.status, "CREATE_COMPLETE");
    let alarms = format!(
        "arn:aws:cloudwatch:{}:{}:alarm:team-a-*",
        runbook_tests::moto::REGION,
        runbook_tests::moto::ACCOUNT
    );
    for output in [
        "LimitScalerFunctionName",
        "DlqRedriverFunctionName",
        "AlarmResponderFunctionName",
    ] {
        let statements = alarm_action_statements(&deployment.outputs[output]);
        assert_eq!(statements.len(), 1, "{output}: {statements:?}");
        let statement = &statements[0];
        assert_eq!(statement["Action"], "lambda:InvokeFunction", "{statement}");
        assert_eq!(
            statement["Condition"]["StringEquals"]["AWS:SourceAccount"],
            runbook_tests::moto::ACCOUNT,
            "{statement}"
        );
        assert_eq!(
            statement["Condition"]["ArnLike"]["AWS:SourceArn"], alarms,
            "{statement}"
        );
    }
    // health-prober takes no alarm.
    let prober = &deployment.outputs["HealthProberFunctionArn"];
    assert!(alarm_action_statements(prober).is_empty());
}

#[tokio::test]
async fn the_transformed_template_deploys_into_moto_with_its_resources() {
    // An SNS topic the team's alarms already notify.
    let topic = moto().boto3(
        "sns",
        "create_topic",
        json!({"Name": runbook_tests::unique("oncall-alarms")}),
    )["TopicArn"]
        .as_str()
        .expect("topic")
        .to_string();
    let deployment = moto()
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "orders-*,payments"),
                ("DefaultMode", "observe"),
                ("AlarmTopicArns", &topic),
            ],
            ..DeployRequest::default()
        })
        .await;
    assert_eq!(deployment.status, "CREATE_COMPLETE");
    let count = |kind: &str| {
        deployment
            .resources
            .values()
            .filter(|resource| resource.resource_type == kind && resource.physical_id.is_some())
            .count()
    };
    assert_eq!(count("AWS::Lambda::Function"), 4);
    assert_eq!(count("AWS::IAM::Role"), 4);
    assert_eq!(
        count("AWS::Events::Rule"),
        14,
        "6 alarm and stack rules, 3 composite-alarm rules, the handoff rule, 4 schedules"
    );
    // The alarm-taking functions subscribe to the topic, each permission naming it alone.
    let subscribed = moto().boto3(
        "sns",
        "list_subscriptions_by_topic",
        json!({"TopicArn": topic}),
    );
    let endpoints: BTreeSet<String> = subscribed["Subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|subscription| subscription["Protocol"] == "lambda")
        .filter_map(|subscription| subscription["Endpoint"].as_str())
        .filter_map(|arn| arn.rsplit(':').next())
        .map(str::to_string)
        .collect();
    let functions: BTreeSet<String> = [
        "LimitScalerFunctionName",
        "DlqRedriverFunctionName",
        "AlarmResponderFunctionName",
    ]
    .iter()
    .filter_map(|output| deployment.outputs.get(*output).cloned())
    .collect();
    assert_eq!(endpoints, functions, "{subscribed}");
    let template = runbook_tests::deploy::transformed_template();
    let topic_permissions: Vec<&Value> = template["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(logical, _)| logical.contains("AlarmTopic") && logical.ends_with("Permission"))
        .map(|(_, resource)| resource)
        .collect();
    assert_eq!(topic_permissions.len(), 9, "3 functions × 3 topic slots");
    for permission in topic_permissions {
        assert_eq!(permission["Properties"]["Principal"], "sns.amazonaws.com");
        assert!(
            permission["Properties"]["SourceArn"]["Fn::Select"].is_array(),
            "scoped to its topic: {permission}"
        );
    }
    assert_eq!(count("AWS::Logs::LogGroup"), 4);
    assert_eq!(count("AWS::DynamoDB::Table"), 1);
    assert_eq!(count("AWS::SQS::Queue"), 1);
    assert_eq!(count("AWS::CloudWatch::Dashboard"), 1);
    assert_eq!(
        count("AWS::CloudWatch::Alarm"),
        11,
        "4 × errors and throttles, 3 more"
    );
    assert_eq!(count("AWS::Lambda::EventInvokeConfig"), 4);
    for output in [
        "LimitScalerFunctionName",
        "DlqRedriverFunctionArn",
        "AlarmResponderFunctionName",
        "HealthProberFunctionArn",
        "AuditTableName",
        "FailedInvocationsQueueUrl",
        "DashboardName",
        "DashboardUrl",
    ] {
        assert!(deployment.outputs.contains_key(output), "output {output}");
    }

    // The functions are configured as the template says. (Read with boto3: moto's stacks keep
    // numeric parameters as JSON numbers in environment variables, which the Rust SDK rejects.)
    let scaler = moto().boto3(
        "lambda",
        "get_function_configuration",
        json!({"FunctionName": deployment.outputs["LimitScalerFunctionName"]}),
    );
    assert_eq!(scaler["Handler"], "bootstrap");
    assert_eq!(scaler["Runtime"], "provided.al2023");
    assert_eq!(scaler["MemorySize"], 256);
    let variables = &scaler["Environment"]["Variables"];
    assert_eq!(variables["AUDIT_TABLE"], deployment.audit_table());
    assert_eq!(variables["MANAGED_RESOURCES"], "orders-*,payments");
    assert_eq!(variables["DEFAULT_MODE"], "observe");
    assert_eq!(variables["RUNBOOK_MODES"], "{}");

    // Every function's failed asynchronous invocations go to the failed-invocations queue.
    let queue_url = &deployment.outputs["FailedInvocationsQueueUrl"];
    let queue_name = queue_url.rsplit('/').next().expect("queue name");
    for output in [
        "LimitScalerFunctionName",
        "DlqRedriverFunctionName",
        "AlarmResponderFunctionName",
        "HealthProberFunctionName",
    ] {
        let config = moto().boto3(
            "lambda",
            "get_function_event_invoke_config",
            json!({"FunctionName": deployment.outputs[output]}),
        );
        let destination = config["DestinationConfig"]["OnFailure"]["Destination"]
            .as_str()
            .unwrap_or_default();
        assert!(
            destination.ends_with(&format!(":{queue_name}")),
            "{output}: {config}"
        );
        assert_eq!(config["MaximumRetryAttempts"], 2);
    }
    // The automation's alarms watch its own functions and that queue.
    let alarms = moto().boto3(
        "cloudwatch",
        "describe_alarms",
        json!({"AlarmNames": [
            format!("{}-failed-invocations", deployment.stack),
            format!("{}-limit-scaler-errors", deployment.stack),
        ]}),
    );
    let alarms = alarms["MetricAlarms"].as_array().expect("alarms");
    assert_eq!(alarms.len(), 2, "{alarms:?}");
    for alarm in alarms {
        let dimension = &alarm["Dimensions"][0];
        match alarm["MetricName"].as_str() {
            Some("ApproximateNumberOfMessagesVisible") => {
                assert_eq!(dimension["Value"], queue_name)
            }
            Some("Errors") => assert_eq!(
                dimension["Value"],
                deployment.outputs["LimitScalerFunctionName"]
            ),
            other => panic!("unexpected alarm {other:?}"),
        }
        assert_eq!(
            alarm["AlarmActions"],
            json!([]),
            "no NotificationEmail, no actions"
        );
    }

    // The audit table has the key schema and index the functions use.
    let table = moto()
        .dynamodb()
        .describe_table()
        .table_name(deployment.audit_table())
        .send()
        .await
        .expect("audit table");
    let table = table.table().expect("table");
    assert_eq!(
        table.global_secondary_indexes()[0].index_name(),
        Some("pending")
    );

    // The rules exist in moto's EventBridge with the patterns from the template.
    let rule_name = deployment.resources["AlarmResponderFunctionStackFailures"]
        .physical_id
        .clone()
        .expect("rule name");
    let rule = moto().boto3("events", "describe_rule", json!({"Name": rule_name}));
    let pattern: Value =
        serde_json::from_str(rule["EventPattern"].as_str().expect("pattern")).expect("JSON");
    assert_eq!(pattern["source"], json!(["aws.cloudformation"]));
}

#[test]
fn notification_rules_pick_remediations_failures_failed_verifications_pauses_and_escalations() {
    let rules = rules("");
    let event = |detail: Value| json!({"source": "runbook.automation", "detail-type": "Runbook Report", "detail": detail});
    let remediated = event(json!({"outcome": "remediated", "verification": {"status": "pending"}}));
    assert_eq!(
        matched(&rules, &remediated),
        set(&["NotifyRemediatedOrFailed"])
    );
    let failed = event(json!({"outcome": "failed", "verification": {"status": "not_applicable"}}));
    assert_eq!(matched(&rules, &failed), set(&["NotifyRemediatedOrFailed"]));
    let closed = event(json!({"outcome": "no_action", "verification": {"status": "failed"}}));
    assert_eq!(
        matched(&rules, &closed),
        set(&["NotifyFailedVerifications"])
    );
    let sweep =
        event(json!({"healthy": true, "settled": [{"status": "verified"}, {"status": "failed"}]}));
    assert_eq!(
        matched(&rules, &sweep),
        set(&["NotifySettledVerificationFailures"])
    );
    for quiet in [
        json!({"outcome": "planned", "verification": {"status": "not_applicable"}}),
        json!({"outcome": "skipped", "verification": {"status": "not_applicable"}}),
        json!({"healthy": true, "settled": [{"status": "verified"}]}),
    ] {
        assert!(matched(&rules, &event(quiet.clone())).is_empty(), "{quiet}");
    }
    for detail_type in [
        "Runbook Automation Paused",
        "Runbook Automation Resumed",
        "Runbook Escalation",
    ] {
        let mut call = event(json!({"outcome": "skipped"}));
        call["detail-type"] = json!(detail_type);
        assert_eq!(
            matched(&rules, &call),
            set(&["NotifyPausesAndEscalations"]),
            "{detail_type}"
        );
    }
    let mut elsewhere = remediated.clone();
    elsewhere["source"] = json!("my.app");
    assert!(matched(&rules, &elsewhere).is_empty());
    // A handoff notifies no one (the report of the run that sent it does) and reaches only
    // the function it names.
    let handoff = event_file("runbook-handoff.json", &[]);
    let targets = rule_targets();
    let reached: BTreeSet<String> = matched(&rules, &handoff)
        .iter()
        .map(|rule| targets.get(rule).cloned().unwrap_or_else(|| rule.clone()))
        .collect();
    assert_eq!(reached, set(&["limit-scaler"]));
    let mut to_another = handoff.clone();
    to_another["detail"]["to"] = json!("dlq-redriver");
    assert!(matched(&rules, &to_another).is_empty());
    let mut forged_source = handoff;
    forged_source["source"] = json!("my.app");
    assert!(matched(&rules, &forged_source).is_empty());
}

/// A run whose deadline cannot be trusted (a local Runtime API's) is bounded by
/// FUNCTION_TIMEOUT_SECONDS: on AWS it must be the function's own Timeout.
#[test]
fn each_function_knows_its_own_timeout() {
    let template = transformed_template();
    for function in [
        "LimitScalerFunction",
        "DlqRedriverFunction",
        "AlarmResponderFunction",
        "HealthProberFunction",
    ] {
        let properties = &template["Resources"][function]["Properties"];
        assert_eq!(
            properties["Environment"]["Variables"]["FUNCTION_TIMEOUT_SECONDS"],
            properties["Timeout"].to_string().as_str(),
            "{function}"
        );
    }
}

/// Reads every `--parameter-overrides …` in README.md and docs/ (inline code and code blocks)
/// and every `parameter_overrides` of a TOML block with the SAM CLI's own parser, as `sam
/// deploy` reads them; prints `[[where, {key: value}]]` as JSON, then the value it makes of
/// argv[1].
const READ_OVERRIDES: &str = r#"
import glob, json, os, re, shlex, sys, tempfile, textwrap, tomllib
from samcli.cli.types import CfnParameterOverridesType
# The words the shell hands to `sam deploy` after --parameter-overrides.
parse = lambda words: CfnParameterOverridesType().convert(tuple(words), None, None)
found = []
for path in ["README.md"] + sorted(glob.glob("docs/*.md")):
    text = open(path, encoding="utf-8").read()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        for table in tomllib.loads(block).values():
            for section in table.values():
                if "parameter_overrides" in section.get("parameters", {}):
                    found.append([path + " (samconfig.toml)", parse([section["parameters"]["parameter_overrides"]])])
    # A parameters file, read through sam deploy's file:// route.
    for block in re.findall(r"```yaml\n([ \t]*# parameters.yaml\n.*?)```", text, re.S):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
            file.write(textwrap.dedent(block))
        found.append([path + " (parameters.yaml)", parse(["file://" + file.name])])
        os.unlink(file.name)
    # Every other occurrence, in inline code or in a shell line, continuations joined.
    for line in text.replace("\\\n", " ").splitlines():
        for match in re.finditer("--parameter-overrides", line):
            rest = line[match.end():]
            if line[:match.start()].count("`") % 2:
                rest = rest.split("`", 1)[0]
            words = []
            for word in shlex.split(rest):
                if word.startswith("-"):
                    break
                words.append(word)
            # A file is read above, from the block that shows it.
            if words and not words[0].startswith("file://"):
                found.append([path, parse(words)])
print(json.dumps(found))
print(json.dumps(parse([sys.argv[1]])))
"#;

/// Whether the template's AllowedPattern of parameter `key` (any value when it has none) takes
/// `value`, as CloudFormation matches it: the whole value.
fn allowed_by_template(key: &str, value: &str) -> bool {
    let pattern = transformed_template()["Parameters"][key]["AllowedPattern"]
        .as_str()
        .unwrap_or(".*");
    let (output, printed) = venv_tool(
        "python",
        &[
            "-c",
            "import re, sys; sys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2], re.S) else 3)",
            pattern,
            value,
        ],
    );
    match output.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!("{printed}"),
    }
}

#[test]
fn documented_parameter_overrides_reach_cloudformation_whole_and_a_cut_one_is_refused() {
    // What `sam deploy --parameter-overrides 'RunbookModes={"dynamodb-capacity": "approve"}'`
    // (the shell having removed the single quotes) sends.
    let unquoted = r#"RunbookModes={"dynamodb-capacity": "approve"}"#;
    let (output, printed) = venv_tool("python", &["-c", READ_OVERRIDES, unquoted]);
    assert!(output.status.success(), "{printed}");
    let mut lines = printed.lines();
    let documented: Vec<(String, BTreeMap<String, String>)> =
        serde_json::from_str(lines.next().unwrap_or_default()).expect("the overrides as JSON");
    let cut: BTreeMap<String, String> =
        serde_json::from_str(lines.next().unwrap_or_default()).expect("the cut value as JSON");
    assert_eq!(
        cut["RunbookModes"], "{",
        "what sam makes of an unquoted JSON value"
    );

    let parameters = &transformed_template()["Parameters"];
    // The template refuses what `sam deploy` made of it, naming the parameter at deploy.
    assert!(!allowed_by_template("RunbookModes", "{"));
    assert!(!allowed_by_template(
        "RunbookModes",
        r#"{"dynamo-capacity": "auto"}"#
    ));
    assert!(!allowed_by_template("Probes", "["));
    // ManagedResources: typed or not, never a pattern that matches every name.
    for everything in ["*", "table:*", "orders-*,?*", "bucket:orders-*"] {
        assert!(
            !allowed_by_template("ManagedResources", everything),
            "{everything}"
        );
    }
    assert!(allowed_by_template(
        "ManagedResources",
        "table:orders-*,queue:orders-*-dlq,function:checkout,stack:shop-*,payments"
    ));
    assert!(allowed_by_template(
        "Probes",
        r#"[{"name": "a", "kind": "alarms", "prefix": "p"}]"#
    ));
    for runbook in runbook_shared::model::RUNBOOKS {
        for mode in ["observe", "approve", "auto"] {
            let value = format!(r#"{{"{runbook}": "{mode}", "dlq-redrive":"observe"}}"#);
            assert!(allowed_by_template("RunbookModes", &value), "{value}");
        }
    }

    // Every documented override reaches CloudFormation whole: the template takes it, and the
    // functions start with it.
    assert!(documented.len() >= 4, "{documented:?}");
    assert!(
        documented
            .iter()
            .any(|(_, overrides)| overrides.contains_key("Probes")),
        "{documented:?}"
    );
    for (place, overrides) in &documented {
        assert!(!overrides.is_empty(), "{place}");
        for (key, value) in overrides {
            assert!(
                parameters.get(key).is_some(),
                "{place}: {key} is no parameter"
            );
            assert!(allowed_by_template(key, value), "{place}: {key}={value}");
            if key == "RunbookModes" {
                let env = [("RUNBOOK_MODES", value.as_str())];
                runbook_shared::model::Modes::from_env(&Env::from_pairs(&env))
                    .unwrap_or_else(|err| panic!("{place}: {err}"));
            }
            if key == "Probes" {
                let env = [("AUDIT_TABLE", "audit"), ("PROBES", value.as_str())];
                health_prober::config::ProberConfig::from_env(&Env::from_pairs(&env))
                    .unwrap_or_else(|err| panic!("{place}: {err}"));
            }
        }
    }
}

/// The statements of `function`'s role (its logical id in the deployment) that allow `action`.
fn role_statements(
    deployment: &runbook_tests::deploy::Deployment,
    function: &str,
    action: &str,
) -> Vec<Value> {
    let role = deployment.resources[&format!("{function}Role")]
        .physical_id
        .clone()
        .expect("the function's role");
    let names = moto().boto3("iam", "list_role_policies", json!({"RoleName": role}));
    let mut found = Vec::new();
    for name in names["PolicyNames"].as_array().into_iter().flatten() {
        let policy = moto().boto3(
            "iam",
            "get_role_policy",
            json!({"RoleName": role, "PolicyName": name}),
        );
        // moto keeps the document CloudFormation made as Python's repr of it.
        let text = policy["PolicyDocument"].as_str().unwrap_or("{}");
        let (output, printed) = venv_tool(
            "python",
            &[
                "-c",
                "import ast, json, sys; print(json.dumps(ast.literal_eval(sys.argv[1])))",
                text,
            ],
        );
        assert!(output.status.success(), "{printed}");
        let document: Value = serde_json::from_str(&printed).expect("the policy as JSON");
        for statement in document["Statement"].as_array().into_iter().flatten() {
            let actions = match &statement["Action"] {
                Value::Array(actions) => actions.clone(),
                one => vec![one.clone()],
            };
            if actions.iter().any(|a| a == action) {
                found.push(statement.clone());
            }
        }
    }
    found
}

#[tokio::test]
async fn encrypted_queues_can_be_redriven_with_the_keys_named_and_no_others() {
    let keys = format!(
        "arn:aws:kms:us-east-1:{0}:key/1234abcd-12ab-34cd-56ef-1234567890ab,arn:aws:kms:us-east-1:{0}:key/0987dcba-09fe-87dc-65ba-ab0987654321",
        runbook_tests::moto::ACCOUNT
    );
    let with_keys = moto()
        .deploy(DeployRequest {
            parameters: vec![
                ("ManagedResources", "queue:orders-*"),
                ("QueueKmsKeyArns", &keys),
            ],
            ..DeployRequest::default()
        })
        .await;
    assert_eq!(with_keys.status, "CREATE_COMPLETE");
    let statements = role_statements(&with_keys, "DlqRedriverFunction", "kms:Decrypt");
    assert_eq!(statements.len(), 1, "{statements:?}");
    let statement = &statements[0];
    assert_eq!(
        statement["Action"],
        json!(["kms:Decrypt", "kms:GenerateDataKey"])
    );
    let resources: Vec<&str> = match &statement["Resource"] {
        Value::Array(resources) => resources.iter().filter_map(Value::as_str).collect(),
        one => one.as_str().into_iter().collect(),
    };
    assert_eq!(resources, keys.split(',').collect::<Vec<_>>());
    assert_eq!(
        statement["Condition"]["StringLike"]["kms:ViaService"],
        "sqs.*.amazonaws.com"
    );
    // No other function may use the keys.
    for other in [
        "LimitScalerFunction",
        "AlarmResponderFunction",
        "HealthProberFunction",
    ] {
        assert!(
            role_statements(&with_keys, other, "kms:Decrypt").is_empty(),
            "{other}"
        );
    }

    // Without keys named, no KMS access at all; and an alias is refused at deploy.
    let without = moto()
        .deploy(DeployRequest {
            parameters: vec![("ManagedResources", "queue:orders-*")],
            ..DeployRequest::default()
        })
        .await;
    assert!(role_statements(&without, "DlqRedriverFunction", "kms:Decrypt").is_empty());
    assert!(transformed_template()["Parameters"]["QueueKmsKeyArns"]["AllowedPattern"].is_string());
    assert!(!allowed_by_template(
        "QueueKmsKeyArns",
        "arn:aws:kms:us-east-1:123456789012:alias/orders"
    ));
}
