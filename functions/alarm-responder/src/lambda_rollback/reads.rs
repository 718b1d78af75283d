//! What `lambda-rollback` reads: the alias, the function's versions, its owning stack's recent
//! events, and this alias's last rollback in the audit history.

use chrono::{DateTime, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use serde_json::{Value, json};

use super::RUNBOOK;
use super::plan::{AliasState, LastRollback, Version};
use crate::Responder;

impl Responder {
    pub(super) async fn alias(&self, function: &str, alias: &str) -> Result<AliasState, AwsError> {
        let output = self
            .clients
            .lambda
            .get_alias()
            .function_name(function)
            .name(alias)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "lambda:GetAlias",
                    &format!("alias {function}:{alias}"),
                    &err,
                )
            })?;
        Ok(AliasState {
            arn: output.alias_arn().unwrap_or_default().to_string(),
            version: output.function_version().unwrap_or_default().to_string(),
            weights: output
                .routing_config()
                .and_then(|routing| routing.additional_version_weights())
                .cloned()
                .unwrap_or_default(),
            revision: output.revision_id().map(str::to_string),
        })
    }

    pub(super) async fn versions(&self, function: &str) -> Result<Vec<Version>, AwsError> {
        let mut versions = Vec::new();
        let mut pages = self
            .clients
            .lambda
            .list_versions_by_function()
            .function_name(function)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| {
                AwsError::from_sdk(
                    "lambda:ListVersionsByFunction",
                    &format!("function {function}"),
                    &err,
                )
            })?;
            versions.extend(page.versions().iter().filter_map(|v| {
                Some(Version {
                    number: v.version()?.parse().ok()?,
                    published_at: v.last_modified().and_then(lambda_time),
                })
            }));
        }
        versions.sort_by_key(|v| v.number);
        Ok(versions)
    }

    /// The stack that owns the function, and its events within the window.
    pub(super) async fn owning_stack(&self, function: &str, since: DateTime<Utc>) -> Value {
        let resources = match self
            .clients
            .cloudformation
            .describe_stack_resources()
            .physical_resource_id(function)
            .send()
            .await
        {
            Ok(resources) => resources,
            Err(err) => {
                let err =
                    AwsError::from_sdk("cloudformation:DescribeStackResources", function, &err);
                return if err.is(FaultKind::NotFound)
                    || err.code.as_deref() == Some("ValidationError")
                {
                    json!({"stack": null, "note": "the function belongs to no CloudFormation stack"})
                } else {
                    json!({"stack": null, "error": err.to_string()})
                };
            }
        };
        let Some(stack) = resources
            .stack_resources()
            .first()
            .and_then(|r| r.stack_name())
            .map(str::to_string)
        else {
            return json!({"stack": null});
        };
        let events = match self.clients.cloudformation.describe_stack_events().stack_name(&stack).send().await {
            Ok(output) => output
                .stack_events()
                .iter()
                .filter(|e| e.timestamp().is_some_and(|t| t.secs() >= since.timestamp()))
                .take(20)
                .map(|e| {
                    json!({
                        "time": e.timestamp().and_then(|t| DateTime::from_timestamp(t.secs(), 0)).map(runbook_shared::audit::timestamp),
                        "resource": e.logical_resource_id(),
                        "status": e.resource_status().map(|s| s.as_str()),
                        "reason": e.resource_status_reason(),
                    })
                })
                .collect(),
            Err(err) => vec![json!({"error": AwsError::from_sdk("cloudformation:DescribeStackEvents", &stack, &err).to_string()})],
        };
        json!({"stack": stack, "events_in_window": events})
    }

    /// The newest rollback of this alias by this runbook: (from, to, when).
    pub(super) async fn last_rollback(
        &self,
        function: &str,
        alias: &str,
    ) -> Result<LastRollback, AwsError> {
        let key = self.config.safety.home.alias(function, alias).key();
        let history = self.safety.audit.history(&key).await?;
        Ok(history
            .iter()
            .filter(|r| r.runbook == RUNBOOK)
            .find_map(|record| {
                let action = record.report.actions.iter().find(|a| a.applied)?;
                Some((
                    action.before["version"].as_str()?.to_string(),
                    action.after["version"].as_str()?.to_string(),
                    record.started_at,
                ))
            }))
    }
}

fn lambda_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lambda_timestamps() {
        assert!(lambda_time("2026-11-23T08:00:00.000+0000").is_some());
        assert!(lambda_time("2026-11-23T08:00:00Z").is_some());
    }
}
