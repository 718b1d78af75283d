//! What `lambda-rollback` reads: the alias, the function's versions and which of them the
//! alias served, and this alias's last rollback in the audit history (the owning stack's
//! events are in the run's evidence).

use runbook_shared::aws::{AwsError, metric_query};
use runbook_shared::path::evidence::published_versions;

use super::RUNBOOK;
use super::plan::{AliasState, LastRollback, SERVED_LOOKBACK_DAYS, Version};
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

    /// The published versions, each marked served when the alias is known to have run it:
    /// Lambda's `Invocations` through the alias by `ExecutedVersion` over the last
    /// `SERVED_LOOKBACK_DAYS` (one GetMetricData call, for the newest versions below
    /// `below`; none when `below` is `None`), or `rolled` (the versions an earlier rollback by
    /// this automation moved it from or to).
    pub(super) async fn versions(
        &self,
        function: &str,
        alias: &str,
        below: Option<u64>,
        rolled: &[&str],
    ) -> Result<Vec<Version>, AwsError> {
        let published = published_versions(&self.clients.lambda, function).await?;
        // The candidates: the newest below the alias's version (GetMetricData takes up to 500
        // queries).
        let mut numbers: Vec<u64> = published
            .iter()
            .map(|(number, _)| *number)
            .filter(|number| below.is_some_and(|below| *number < below))
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        numbers.truncate(100);
        let resource = format!("{function}:{alias}");
        let end = chrono::Utc::now();
        let start = end - chrono::Duration::days(SERVED_LOOKBACK_DAYS);
        let mut request = self
            .clients
            .cloudwatch
            .get_metric_data()
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                start.timestamp(),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                end.timestamp(),
            ));
        for number in &numbers {
            let version = number.to_string();
            request = request.metric_data_queries(metric_query(
                format!("v{number}"),
                "AWS/Lambda",
                "Invocations",
                [
                    ("FunctionName", function),
                    ("Resource", resource.as_str()),
                    ("ExecutedVersion", version.as_str()),
                ],
                86_400,
                "Sum",
            ));
        }
        let mut served: Vec<String> = rolled.iter().map(|version| version.to_string()).collect();
        if !numbers.is_empty() {
            let output = request.send().await.map_err(|err| {
                AwsError::from_sdk(
                    "cloudwatch:GetMetricData",
                    &format!("Invocations of {resource} by ExecutedVersion"),
                    &err,
                )
            })?;
            served.extend(
                output
                    .metric_data_results()
                    .iter()
                    .filter(|result| result.values().iter().any(|sum| *sum > 0.0))
                    .filter_map(|result| Some(result.id()?.strip_prefix('v')?.to_string())),
            );
        }
        Ok(published
            .into_iter()
            .map(|(number, published_at)| Version {
                number,
                published_at,
                served: served.contains(&number.to_string()),
            })
            .collect())
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
