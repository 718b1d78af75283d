//! A person's payload, parsed into a request type whose `deny_unknown_fields` error names the
//! allowed fields: a typo is refused, never silently ignored.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::refusal::Rejection;

/// error names the allowed fields.
pub fn parse_manual<T: DeserializeOwned>(payload: &Map<String, Value>) -> Result<T, Rejection> {
    serde_json::from_value(Value::Object(payload.clone()))
        .map_err(|err| Rejection(format!("invalid manual payload: {err}")))
}

/// Parses the manual payload of one runbook, its `runbook` key taken out: a field it does not
/// use, or one it needs and lacks, is named with the runbook.
pub fn parse_runbook_request<T: DeserializeOwned>(
    payload: &Map<String, Value>,
    runbook: &str,
) -> Result<T, Rejection> {
    let mut fields = payload.clone();
    fields.remove("runbook");
    serde_json::from_value(Value::Object(fields)).map_err(|err| {
        let text = err.to_string();
        let field = |prefix: &str| text.strip_prefix(prefix)?.split('`').next();
        Rejection(if let Some(field) = field("unknown field `") {
            format!("\"{field}\" is not used by \"runbook\": \"{runbook}\" ({text})")
        } else if let Some(field) = field("missing field `") {
            format!("\"{field}\" is required with \"runbook\": \"{runbook}\"")
        } else {
            format!("invalid manual payload for \"runbook\": \"{runbook}\": {text}")
        })
    })
}
