//! Which messages a redrive takes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messages::Received;

/// Which messages a redrive takes; the others stay in the DLQ. All given conditions must hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    /// Only messages sent at least this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_seconds: Option<i64>,
    /// Only messages sent at most this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_than_seconds: Option<i64>,
    /// Message attributes (string values) that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_equals: BTreeMap<String, String>,
    /// Fields of the JSON body (dotted paths, e.g. `customer.tier`) that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub body_equals: BTreeMap<String, Value>,
}

impl MessageFilter {
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("older_than_seconds", self.older_than_seconds),
            ("newer_than_seconds", self.newer_than_seconds),
        ] {
            if value.is_some_and(|seconds| seconds < 0) {
                return Err(format!("filter.{field} must not be negative"));
            }
        }
        if let (Some(older), Some(newer)) = (self.older_than_seconds, self.newer_than_seconds)
            && older > newer
        {
            return Err(format!(
                "filter.older_than_seconds ({older}) above filter.newer_than_seconds ({newer}) matches nothing"
            ));
        }
        if self
            .body_equals
            .keys()
            .any(|path| path.is_empty() || path.split('.').any(str::is_empty))
        {
            return Err(
                "filter.body_equals paths are dotted field names, e.g. \"customer.tier\"".into(),
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, message: &Received, now: DateTime<Utc>) -> bool {
        let age = message.age_seconds(now);
        if let Some(older) = self.older_than_seconds
            && age.is_none_or(|age| age < older)
        {
            return false;
        }
        if let Some(newer) = self.newer_than_seconds
            && age.is_none_or(|age| age > newer)
        {
            return false;
        }
        let attributes_match = self.attribute_equals.iter().all(|(name, expected)| {
            message
                .attributes
                .get(name)
                .and_then(|value| value.string_value())
                == Some(expected.as_str())
        });
        if !attributes_match {
            return false;
        }
        if self.body_equals.is_empty() {
            return true;
        }
        let Ok(body) = serde_json::from_str::<Value>(&message.body) else {
            return false;
        };
        self.body_equals.iter().all(|(path, expected)| {
            path.split('.').try_fold(&body, |value, key| value.get(key)) == Some(expected)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageAttributeValue;
    use serde_json::json;

    fn message(body: &str, attributes: &[(&str, &str)], age_seconds: i64) -> Received {
        Received {
            id: "m".into(),
            receipt: "r".into(),
            body: body.into(),
            sent_at: Some(Utc::now() - chrono::Duration::seconds(age_seconds)),
            receive_count: 1,
            source_arn: None,
            group_id: None,
            trace_header: None,
            attributes: attributes
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_string(),
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(*v)
                            .build()
                            .unwrap(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn filters_by_age_attribute_and_body_field() {
        let filter: MessageFilter = serde_json::from_value(json!({
            "older_than_seconds": 60, "newer_than_seconds": 3600,
            "attribute_equals": {"tenant": "42"}, "body_equals": {"customer.tier": "gold"}
        }))
        .unwrap();
        assert!(filter.validate().is_ok());
        let now = Utc::now();
        let body = r#"{"customer": {"tier": "gold"}}"#;
        assert!(filter.matches(&message(body, &[("tenant", "42")], 600), now));
        assert!(
            !filter.matches(&message(body, &[("tenant", "42")], 10), now),
            "too new"
        );
        assert!(
            !filter.matches(&message(body, &[("tenant", "42")], 7200), now),
            "too old"
        );
        assert!(
            !filter.matches(&message(body, &[("tenant", "7")], 600), now),
            "other tenant"
        );
        assert!(!filter.matches(
            &message(
                r#"{"customer": {"tier": "free"}}"#,
                &[("tenant", "42")],
                600
            ),
            now
        ));
        assert!(!filter.matches(&message("not json", &[("tenant", "42")], 600), now));
        assert!(MessageFilter::default().matches(&message("x", &[], 0), now));
    }

    #[test]
    fn rejects_filters_that_cannot_match() {
        let filter = MessageFilter {
            older_than_seconds: Some(100),
            newer_than_seconds: Some(10),
            ..Default::default()
        };
        assert!(filter.validate().unwrap_err().contains("matches nothing"));
        assert!(
            serde_json::from_value::<MessageFilter>(json!({"age": 5}))
                .unwrap_err()
                .to_string()
                .contains("expected one of")
        );
    }
}
