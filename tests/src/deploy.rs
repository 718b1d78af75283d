//! template.yaml deployed into moto: the stack, and one IAM user per function holding exactly
//! that function's policy, whose credentials the function binaries run with. The front enforces
//! IAM for those credentials (tests/moto_front/iam.py), so an action the code calls and the
//! template does not allow fails the test with AccessDenied.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::moto::{Moto, REGION};

/// The functions' logical ids in template.yaml.
pub const LIMIT_SCALER: &str = "LimitScalerFunction";
pub const DLQ_REDRIVER: &str = "DlqRedriverFunction";
pub const ALARM_RESPONDER: &str = "AlarmResponderFunction";
pub const HEALTH_PROBER: &str = "HealthProberFunction";

#[derive(Debug, Deserialize)]
pub struct StackResource {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub physical_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AccessKey {
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Debug, Deserialize)]
pub struct Deployment {
    pub stack: String,
    pub status: String,
    pub outputs: HashMap<String, String>,
    pub resources: HashMap<String, StackResource>,
    credentials: HashMap<String, AccessKey>,
}

/// What a deployment is made of: stack parameters, and actions left out of a function's policy.
#[derive(Default)]
pub struct DeployRequest<'a> {
    pub parameters: Vec<(&'a str, &'a str)>,
    pub drop_actions: Vec<(&'a str, &'a str)>,
}

impl Moto {
    /// Creates template.yaml as a new stack (a unique name) and the functions' IAM users.
    pub async fn deploy(&self, request: DeployRequest<'_>) -> Deployment {
        let stack = crate::unique("runbook");
        let mut dropped: HashMap<&str, Vec<&str>> = HashMap::new();
        for (function, action) in &request.drop_actions {
            dropped.entry(function).or_default().push(action);
        }
        let parameters: HashMap<&str, &str> = request.parameters.into_iter().collect();
        let body = json!({"stack": stack, "parameters": parameters, "drop_actions": dropped});
        let answer = reqwest::Client::new()
            .post(format!("{}/_front/deploy", self.endpoint))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("reach the moto front");
        let status = answer.status();
        let text = answer.text().await.expect("deploy answer");
        assert!(status.is_success(), "deploy failed ({status}): {text}");
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("deploy answer {text}: {err}"))
    }
}

impl Deployment {
    pub fn audit_table(&self) -> &str {
        &self.outputs["AuditTableName"]
    }

    /// The environment of one function: this emulator, the function's own IAM credentials and
    /// the stack's audit table.
    pub fn function_env(&self, moto: &Moto, function: &str) -> Vec<(String, String)> {
        let key = self
            .credentials
            .get(function)
            .unwrap_or_else(|| panic!("no IAM user for {function}"));
        vec![
            ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("ACCOUNT_ID".into(), crate::moto::ACCOUNT.into()),
            ("AWS_ACCESS_KEY_ID".into(), key.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                key.secret_access_key.clone(),
            ),
            ("AUDIT_TABLE".into(), self.audit_table().into()),
            // The tests show the runbooks acting; the code's default is observe.
            ("DEFAULT_MODE".into(), "auto".into()),
        ]
    }
}

/// template.yaml as CloudFormation receives it: transformed by aws-sam-translator (once per
/// test binary).
pub fn transformed_template() -> &'static Value {
    static TRANSFORMED: OnceLock<Value> = OnceLock::new();
    TRANSFORMED.get_or_init(|| {
        let script = crate::workspace_root().join("tests/moto_front/sam_template.py");
        let output = Command::new(crate::moto::python())
            .arg(&script)
            .output()
            .unwrap_or_else(|err| panic!("{}: {err}", script.display()));
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the transformed template is JSON")
    })
}

/// A deployment whose ManagedResources is `managed-*`, the names the end-to-end tests give the
/// resources the functions may change, plus the given parameters.
pub async fn deploy_managed(parameters: &[(&str, &str)]) -> Deployment {
    let mut all = vec![("ManagedResources", "managed-*")];
    all.extend_from_slice(parameters);
    crate::moto::moto()
        .deploy(DeployRequest {
            parameters: all,
            ..DeployRequest::default()
        })
        .await
}
