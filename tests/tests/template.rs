//! template.yaml: linted by cfn-lint, and its defaults are a configuration the functions accept.

use std::process::Command;

use runbook_shared::config::Env;
use runbook_tests::workspace_root;
use serde_yaml::Value;

fn template() -> Value {
    let text =
        std::fs::read_to_string(workspace_root().join("template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

#[test]
fn cfn_lint_passes_without_warnings() {
    let lint = runbook_tests::moto::python().with_file_name("cfn-lint");
    let output = Command::new(&lint)
        .arg("template.yaml")
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|err| panic!("{}: {err} (scripts/test.sh installs it)", lint.display()));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "cfn-lint:\n{printed}"
    );
}

/// The function's environment with every `!Ref Parameter` replaced by the parameter's default.
fn environment_with_defaults(function: &str) -> Vec<(String, String)> {
    let template = template();
    let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
    let mapping = variables.as_mapping().expect("environment variables");
    mapping
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().expect("name").to_string();
            let value = match value {
                Value::Tagged(tagged) if tagged.tag == "!Ref" => {
                    let parameter = tagged.value.as_str().expect("parameter name");
                    match &template["Parameters"][parameter]["Default"] {
                        Value::String(text) => text.clone(),
                        Value::Number(number) => number.to_string(),
                        // A resource reference (the audit table's name) stands for any name.
                        Value::Null => format!("{parameter}-name"),
                        other => panic!("{parameter} default {other:?}"),
                    }
                }
                Value::String(text) => text.clone(),
                other => panic!("{name}: {other:?}"),
            };
            (name, value)
        })
        .collect()
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
    assert!(config.safety.dry_run, "a first deploy starts in dry run");
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
    assert_eq!(config.rollback_window_minutes, 60);
    assert!(config.safety.dry_run);
}
