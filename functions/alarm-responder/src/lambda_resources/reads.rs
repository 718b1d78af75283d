//! What `lambda-resources` reads: the function's configuration, its longest runs, and which
//! versions its traffic runs on.

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::model::Invocation;

use super::plan::{QueueLimit, Settings};
use crate::Responder;

impl Responder {
    pub(super) async fn settings(&self, function: &str) -> Result<Settings, AwsError> {
        let config = self
            .clients
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "lambda:GetFunctionConfiguration",
                    &format!("function {function}"),
                    &err,
                )
            })?;
        Ok(Settings {
            arn: config.function_arn().unwrap_or_default().to_string(),
            timeout: config.timeout().unwrap_or(3),
            memory: config.memory_size().unwrap_or(128),
            last_update: config
                .last_update_status()
                .map_or("Successful", |s| s.as_str())
                .to_string(),
            revision: config.revision_id().map(str::to_string),
            queue_limit: None,
        })
    }

    /// The SQS queue that leaves the function the least time among those its event source
    /// mappings read (enabled or not: a disabled one is enabled again as it was): its
    /// visibility timeout less the mapping's batching window, which a message spends
    /// invisible before the function even starts. A mapping whose queue no longer exists
    /// caps nothing.
    pub(super) async fn queue_limit(&self, function: &str) -> Result<Option<QueueLimit>, AwsError> {
        let mut queues = Vec::new();
        let mut pages = self
            .clients
            .lambda
            .list_event_source_mappings()
            .function_name(function)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| {
                AwsError::from_sdk(
                    "lambda:ListEventSourceMappings",
                    &format!("function {function}"),
                    &err,
                )
            })?;
            for mapping in page.event_source_mappings() {
                // arn:<partition>:sqs:<region>:<account>:<name>
                let arn = mapping.event_source_arn().unwrap_or_default();
                if let [_, _, "sqs", _, account, name] = arn.split(':').collect::<Vec<_>>()[..] {
                    let batching = mapping.maximum_batching_window_in_seconds().unwrap_or(0);
                    queues.push((account.to_string(), name.to_string(), batching));
                }
            }
        }
        let mut limit: Option<QueueLimit> = None;
        for (account, name, batching) in queues {
            let visibility_timeout = match self.visibility_timeout(&account, &name).await {
                Ok(seconds) => (seconds - batching).max(1),
                Err(err) if err.is(FaultKind::NotFound) => continue,
                Err(err) => return Err(err),
            };
            if limit
                .as_ref()
                .is_none_or(|limit| visibility_timeout < limit.visibility_timeout)
            {
                limit = Some(QueueLimit {
                    queue: name,
                    visibility_timeout,
                });
            }
        }
        Ok(limit)
    }

    async fn visibility_timeout(&self, account: &str, name: &str) -> Result<i32, AwsError> {
        let sqs = &self.clients.sqs;
        let resource = format!("queue {name}");
        let url = sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("sqs:GetQueueUrl", &resource, &err))?
            .queue_url
            .unwrap_or_default();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("sqs:GetQueueAttributes", &resource, &err))?;
        attributes
            .attributes()
            .and_then(|attributes| {
                attributes.get(&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
            })
            .and_then(|seconds| seconds.parse().ok())
            .ok_or_else(|| {
                AwsError::invalid(
                    "sqs:GetQueueAttributes",
                    &resource,
                    "no VisibilityTimeout in its attributes",
                )
            })
    }

    /// The settings once no update is in progress (within the deadline).
    pub(super) async fn settled_settings(
        &self,
        function: &str,
        invocation: &Invocation,
    ) -> Result<Option<Settings>, AwsError> {
        poll_until(invocation.wait_deadline(), self.poll_interval, || async {
            match self.settings(function).await {
                Ok(now) if now.last_update != "InProgress" => Some(Ok(now)),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        })
        .await
        .transpose()
    }

    /// `Some(reason)` when the function's aliases send traffic to published versions: an alarm
    /// on the function alone counts every version's runs, and a configuration change (it
    /// applies to $LATEST) would not reach those.
    pub(super) async fn aliased_traffic(&self, function: &str) -> Result<Option<String>, AwsError> {
        let mut published = Vec::new();
        let mut pages = self
            .clients
            .lambda
            .list_aliases()
            .function_name(function)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| {
                AwsError::from_sdk("lambda:ListAliases", &format!("function {function}"), &err)
            })?;
            for alias in page.aliases() {
                let mut versions: Vec<&str> = alias.function_version().into_iter().collect();
                if let Some(weights) = alias
                    .routing_config()
                    .and_then(|routing| routing.additional_version_weights())
                {
                    versions.extend(weights.keys().map(String::as_str));
                }
                versions.retain(|version| *version != "$LATEST");
                if !versions.is_empty() {
                    published.push(format!(
                        "alias {} on version {}",
                        alias.name().unwrap_or_default(),
                        versions.join(" and ")
                    ));
                }
            }
        }
        Ok((!published.is_empty()).then(|| {
            format!(
                "{function}'s traffic runs through published versions ({}), which a configuration change cannot reach (it applies to $LATEST): publish a version with the new settings and move the aliases to it, or name \"{function}:$LATEST\" to change $LATEST anyway",
                published.join(", ")
            )
        }))
    }

    /// `Some(reason)` when the traffic the alarm watches runs on a published version, which a
    /// configuration change (it applies to $LATEST) would not reach.
    pub(super) async fn published_traffic(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<String>, AwsError> {
        if qualifier == "$LATEST" {
            return Ok(None);
        }
        if qualifier.chars().all(|c| c.is_ascii_digit()) {
            return Ok(Some(format!(
                "the alarm watches {function}'s published version {qualifier}, which a configuration change cannot reach (it applies to $LATEST): publish a version with the new settings and move the traffic to it"
            )));
        }
        let alias = self
            .clients
            .lambda
            .get_alias()
            .function_name(function)
            .name(qualifier)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "lambda:GetAlias",
                    &format!("alias {function}:{qualifier}"),
                    &err,
                )
            })?;
        let version = alias.function_version().unwrap_or_default();
        let weighted: Vec<&String> = alias
            .routing_config()
            .and_then(|routing| routing.additional_version_weights())
            .map(|weights| weights.keys().collect())
            .unwrap_or_default();
        if version == "$LATEST" && weighted.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "alias {function}:{qualifier} runs published version {version}{}, which a configuration change cannot reach (it applies to $LATEST): publish a version with the new settings and move the alias to it",
            if weighted.is_empty() {
                String::new()
            } else {
                format!(
                    " (and {})",
                    weighted
                        .iter()
                        .map(|v| format!("version {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )))
    }
}
