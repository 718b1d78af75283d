//! What `lambda-rollback` reads: the alias, the function's versions, and this alias's last
//! rollback in the audit history (the owning stack's events are in the run's evidence).

use runbook_shared::aws::AwsError;
use runbook_shared::path::evidence::published_versions;

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
        let versions = published_versions(&self.clients.lambda, function).await?;
        Ok(versions
            .into_iter()
            .map(|(number, published_at)| Version {
                number,
                published_at,
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
