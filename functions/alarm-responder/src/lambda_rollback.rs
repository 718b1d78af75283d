//! Runbook `lambda-rollback`: errors after a deploy. Drop a canary's extra weight, or point the
//! alias back at the version before a fresh deploy; never flip-flop between the same two
//! versions without a new deploy in between.

use std::collections::HashMap;

use aws_sdk_lambda::types::AliasRoutingConfiguration;
use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::safety::Invocation;
use serde_json::{Value, json};

use crate::Responder;

pub const RUNBOOK: &str = "lambda-rollback";

/// A published version and when it was published.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub number: u64,
    pub published_at: Option<DateTime<Utc>>,
}

/// The alias as GetAlias shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasState {
    pub arn: String,
    pub version: String,
    pub weights: HashMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Send all traffic back to the alias's primary version.
    DropCanary {
        version: String,
        weights: HashMap<String, f64>,
    },
    Repoint {
        from: String,
        to: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(Change),
    NoAction(String),
    Skip(String),
}

/// The previous rollback of this alias: (from, to, when).
pub type LastRollback = Option<(String, String, DateTime<Utc>)>;

/// Plans the rollback from what was observed; pure, so dry runs and tests see the same plan.
pub fn decide(
    alias: &AliasState,
    versions: &[Version],
    last: &LastRollback,
    window: Duration,
    now: DateTime<Utc>,
) -> Decision {
    if !alias.weights.is_empty() {
        return Decision::Act(Change::DropCanary {
            version: alias.version.clone(),
            weights: alias.weights.clone(),
        });
    }
    let Ok(current) = alias.version.parse::<u64>() else {
        return Decision::NoAction(format!(
            "the alias points at {}: $LATEST cannot be rolled back; publish versions behind an alias",
            alias.version
        ));
    };
    let published = versions
        .iter()
        .find(|v| v.number == current)
        .and_then(|v| v.published_at);
    match published {
        Some(at) if now - at > window => {
            return Decision::NoAction(format!(
                "version {current} was published at {} ({} min ago), outside ROLLBACK_WINDOW_MINUTES={}: not a fresh deploy, so a rollback is not the fix; investigate the errors",
                runbook_shared::audit::timestamp(at),
                (now - at).num_minutes(),
                window.num_minutes()
            ));
        }
        None => {
            return Decision::NoAction(format!(
                "version {current}'s publish time is unknown, so it cannot be told to be a fresh deploy"
            ));
        }
        Some(_) => {}
    }
    let Some(previous) = versions
        .iter()
        .map(|v| v.number)
        .filter(|n| *n < current)
        .max()
    else {
        return Decision::NoAction(format!(
            "version {current} is the first published version: there is nothing earlier to roll back to"
        ));
    };
    let (from, to) = (current.to_string(), previous.to_string());
    if let Some((last_from, last_to, at)) = last {
        let deployed_since = versions
            .iter()
            .any(|v| v.published_at.is_some_and(|published| published > *at));
        if *last_from == from && *last_to == to && !deployed_since {
            return Decision::Skip(format!(
                "flip-flop refused: this alias was already rolled back from version {from} to {to} at {} and no version was published since; a human decides now",
                runbook_shared::audit::timestamp(*at)
            ));
        }
    }
    Decision::Act(Change::Repoint { from, to })
}

fn lambda_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Responder {
    async fn alias(&self, function: &str, alias: &str) -> Result<AliasState, AwsError> {
        let output = self
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
        })
    }

    async fn versions(&self, function: &str) -> Result<Vec<Version>, AwsError> {
        let mut versions = Vec::new();
        let mut pages = self
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
    async fn owning_stack(&self, function: &str, since: DateTime<Utc>) -> Value {
        let resources = match self
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
        let events = match self.cloudformation.describe_stack_events().stack_name(&stack).send().await {
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
    async fn last_rollback(&self, function: &str, alias: &str) -> Result<LastRollback, AwsError> {
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

    pub async fn rollback(
        &self,
        function: &str,
        alias: &str,
        alarm_name: Option<&str>,
        report: Report,
        invocation: &Invocation,
    ) -> Report {
        let target = format!("{function}:{alias}");
        let state = match self.alias(function, alias).await {
            Ok(state) => state,
            Err(err) if err.is(FaultKind::NotFound) => {
                return report.finish(Outcome::Failed,
                    format!(
                        "alias {target} does not exist (check the alarm's Resource dimension or the payload); nothing was changed"
                    ),
                );
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read alias {target}, nothing was changed: {err}"),
                );
            }
        };
        let function_arn = state
            .arn
            .rsplit_once(':')
            .map_or(state.arn.as_str(), |(arn, _)| arn)
            .to_string();
        let report = match self
            .config
            .safety
            .managed
            .require_managed_function(&self.lambda, function, &function_arn, report)
            .await
        {
            Ok(report) => report,
            Err(finished) => return finished,
        };
        let resource = self.config.safety.home.alias(function, alias);
        self.guarded(&resource, report, invocation, |report| {
            self.rollback_admitted(function, alias, alarm_name, report, invocation)
        })
        .await
    }

    async fn rollback_admitted(
        &self,
        function: &str,
        alias: &str,
        alarm_name: Option<&str>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let target = format!("{function}:{alias}");
        // Read again under the lease: another run may have moved the alias while this one waited.
        let state = match self.alias(function, alias).await {
            Ok(state) => state,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read alias {target}, nothing was changed: {err}"),
                );
            }
        };
        // Lambda's retry of this request after a crash: its first attempt's write landed.
        let resource = self.config.safety.home.alias(function, alias);
        let observed = json!({"version": state.version, "routing_weights": state.weights});
        if let Some(mut action) = invocation.landed(&resource, &observed) {
            action.applied = true;
            report.notes.push(runbook_shared::safety::RESUMED.into());
            let summary = format!("rolled {target} back to version {}", state.version);
            report.actions.push(action);
            return self
                .verify_rollback(
                    function,
                    alias,
                    state.version,
                    summary,
                    alarm_name,
                    report,
                    invocation,
                )
                .await;
        }
        let now = Utc::now();
        let window = Duration::minutes(self.config.rollback_window_minutes);
        let versions = match self.versions(function).await {
            Ok(versions) => versions,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not list the versions of {function}, nothing was changed: {err}"
                    ),
                );
            }
        };
        let last = match self.last_rollback(function, alias).await {
            Ok(last) => last,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not read the audit history of {target}, nothing was changed: {err}"
                    ),
                );
            }
        };
        report.diagnosis = Some(json!({
            "alias": {"version": state.version, "routing_weights": state.weights},
            "versions": versions.iter().map(|v| json!({"version": v.number, "published_at": v.published_at.map(runbook_shared::audit::timestamp)})).collect::<Vec<_>>(),
            "owning_stack": self.owning_stack(function, now - window).await,
            "last_rollback": last.as_ref().map(|(from, to, at)| json!({"from": from, "to": to, "at": runbook_shared::audit::timestamp(*at)})),
        }));
        let change = match decide(&state, &versions, &last, window, now) {
            Decision::Act(change) => change,
            Decision::NoAction(reason) => return report.finish(Outcome::NoAction, reason),
            Decision::Skip(reason) => return report.finish(Outcome::Skipped, reason),
        };
        let (expected_version, before, after, summary) = match &change {
            Change::DropCanary { version, weights } => (
                version.clone(),
                json!({"version": version, "routing_weights": weights}),
                json!({"version": version, "routing_weights": {}}),
                format!(
                    "dropped the canary weights {weights:?} of {target}: all traffic on version {version}"
                ),
            ),
            Change::Repoint { from, to } => (
                to.clone(),
                json!({"version": from}),
                json!({"version": to}),
                format!("rolled {target} back from version {from} to {to}"),
            ),
        };
        let mut action = Action {
            api: "lambda:UpdateAlias".into(),
            target: target.clone(),
            before,
            after,
            applied: false,
            error: None,
        };
        let mut report = match self.budget(report).await {
            Ok(report) => report,
            Err(report) => return report,
        };
        if report.dry_run {
            report.actions.push(action);
            return report.finish(Outcome::Planned, format!("dry run: would have {summary}"));
        }
        if let Err(err) = self
            .safety
            .record_intent(&resource, invocation, &action)
            .await
        {
            return report.finish(
                Outcome::Failed,
                format!(
                    "could not record the change about to be made, so nothing was changed: {err}"
                ),
            );
        }
        let updated = self
            .lambda
            .update_alias()
            .function_name(function)
            .name(alias)
            .function_version(&expected_version)
            .routing_config(
                AliasRoutingConfiguration::builder()
                    .set_additional_version_weights(Some(HashMap::new()))
                    .build(),
            )
            .send()
            .await;
        if let Err(err) = updated {
            let err = AwsError::from_sdk("lambda:UpdateAlias", &format!("alias {target}"), &err);
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(
                Outcome::Failed,
                format!("the rollback of {target} failed; nothing was changed: {err}"),
            );
        }
        action.applied = true;
        report.actions.push(action);
        self.verify_rollback(
            function,
            alias,
            expected_version,
            summary,
            alarm_name,
            report,
            invocation,
        )
        .await
    }

    /// The alias read back on the expected version without weights; the alarm's OK (or the
    /// sweep) closes the errors check.
    #[allow(clippy::too_many_arguments)]
    async fn verify_rollback(
        &self,
        function: &str,
        alias: &str,
        expected_version: String,
        summary: String,
        alarm_name: Option<&str>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let target = format!("{function}:{alias}");
        let observed = poll_until(invocation.wait_deadline(), self.poll_interval, || async {
            match self.alias(function, alias).await {
                Ok(now) if now.version == expected_version && now.weights.is_empty() => {
                    Some(Ok(now))
                }
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        })
        .await;
        let (ok, seen) = match observed {
            Some(Ok(now)) => (true, format!("version {}, no routing weights", now.version)),
            Some(Err(err)) => (false, format!("GetAlias failed: {err}")),
            None => (
                false,
                "not on the expected version at the deadline".to_string(),
            ),
        };
        let mut checks = vec![Check::new(
            "alias_version",
            ok,
            format!("version {expected_version}, no routing weights"),
            seen,
        )];
        let status = if ok {
            VerificationStatus::Pending
        } else {
            VerificationStatus::Failed
        };
        let mut settle_by = None;
        if ok {
            let expected = alarm_name.map_or_else(
                || format!("no errors on {target}"),
                |alarm| format!("alarm {alarm} back to OK"),
            );
            checks.push(Check::new("errors_stopped", false, expected, "pending"));
            settle_by = Some(match alarm_name {
                Some(alarm) => SettleBy::Alarm {
                    name: alarm.to_string(),
                },
                None => SettleBy::Metric {
                    namespace: "AWS/Lambda".into(),
                    metrics: vec!["Errors".into()],
                    dimensions: [
                        ("FunctionName".to_string(), function.to_string()),
                        ("Resource".to_string(), target.clone()),
                    ]
                    .into(),
                    max_sum: 0.0,
                },
            });
        }
        report.verification = Verification {
            status,
            checks,
            settle_by,
        };
        let failures = report.verification.failures();
        if ok {
            report.finish(Outcome::Remediated, summary)
        } else {
            report.finish(
                Outcome::Failed,
                format!("{summary}, but the alias does not show it ({})", failures),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(version: &str) -> AliasState {
        AliasState {
            arn: String::new(),
            version: version.into(),
            weights: HashMap::new(),
        }
    }

    fn versions(now: DateTime<Utc>, ages_minutes: &[i64]) -> Vec<Version> {
        ages_minutes
            .iter()
            .enumerate()
            .map(|(i, age)| Version {
                number: i as u64 + 1,
                published_at: Some(now - Duration::minutes(*age)),
            })
            .collect()
    }

    #[test]
    fn plans() {
        let now = Utc::now();
        let window = Duration::minutes(60);
        let fresh = versions(now, &[600, 300, 5]);
        assert_eq!(
            decide(&alias("3"), &fresh, &None, window, now),
            Decision::Act(Change::Repoint {
                from: "3".into(),
                to: "2".into()
            })
        );
        let old = versions(now, &[600, 300, 120]);
        assert!(
            matches!(decide(&alias("3"), &old, &None, window, now), Decision::NoAction(r) if r.contains("outside ROLLBACK_WINDOW_MINUTES=60"))
        );
        assert!(
            matches!(decide(&alias("1"), &versions(now, &[5]), &None, window, now), Decision::NoAction(r) if r.contains("first published version"))
        );
        assert!(
            matches!(decide(&alias("$LATEST"), &fresh, &None, window, now), Decision::NoAction(r) if r.contains("$LATEST"))
        );
        let mut canary = alias("2");
        canary.weights.insert("3".into(), 0.1);
        assert!(matches!(
            decide(&canary, &fresh, &None, window, now),
            Decision::Act(Change::DropCanary { .. })
        ));
        let last = Some(("3".to_string(), "2".to_string(), now - Duration::minutes(2)));
        assert!(
            matches!(decide(&alias("3"), &fresh, &last, window, now), Decision::Skip(r) if r.starts_with("flip-flop refused"))
        );
        let redeployed = versions(now, &[600, 300, 5, 1]);
        assert_eq!(
            decide(&alias("4"), &redeployed, &last, window, now),
            Decision::Act(Change::Repoint {
                from: "4".into(),
                to: "3".into()
            })
        );
    }

    #[test]
    fn parses_lambda_timestamps() {
        assert!(lambda_time("2026-11-23T08:00:00.000+0000").is_some());
        assert!(lambda_time("2026-11-23T08:00:00Z").is_some());
    }
}
