//! Runbook `lambda-rollback`: errors after a deploy. Drop a canary's extra weight, or point the
//! alias back at the version before a fresh deploy; never flip-flop between the same two
//! versions without a new deploy in between.
//!
//! Diagnose (the alias, the versions, this alias's last rollback, the owning stack's recent
//! events) → plan → act (UpdateAlias) → verify (the alias on the expected version without
//! weights; the alarm's OK closes the errors check).

use std::collections::HashMap;

use aws_sdk_lambda::types::AliasRoutingConfiguration;
use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::report::{Action, AwaitedMetric, Check, Report, Verification};
use runbook_shared::resource::{Home, ResourceId};
use runbook_shared::runbook::{
    Decision, Ending, NotApplied, Planned, RunContext, Runbook, Step, concluded,
};
use runbook_shared::trigger::{AlarmTrigger, MetricRef, Rejection};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Responder, function_of};

pub const RUNBOOK: &str = "lambda-rollback";

/// The manual payload: `{"runbook": "lambda-rollback", "function": "orders-api", "alias":
/// "live", "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub function: String,
    pub alias: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The alias to roll back.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollback {
    pub function: String,
    pub alias: String,
}

impl Rollback {
    /// Validates a manual request; the function may be named by name, `name:alias` or ARN.
    pub fn from_request(request: &Request, home: &Home) -> Result<Self, Rejection> {
        let alias = request.alias.trim();
        if alias.is_empty() {
            return Err(Rejection(format!(
                "\"alias\" is required with \"runbook\": \"{RUNBOOK}\""
            )));
        }
        let function = match function_of(&request.function, home)? {
            (function, None) => function,
            (function, Some(qualifier)) if qualifier == alias => function,
            (_, Some(qualifier)) => {
                return Err(Rejection(format!(
                    "\"function\" names {qualifier} and \"alias\" names {alias}: give the alias once"
                )));
            }
        };
        Ok(Self {
            function,
            alias: alias.to_string(),
        })
    }

    /// The alias of an `AWS/Lambda` `Errors` alarm (its `Resource` dimension is
    /// `function:alias`); `Err` says why there is none to roll back.
    pub fn from_alarm(alarm: &AlarmTrigger, metric: Option<&MetricRef>) -> Result<Self, String> {
        let Some(function) = metric.and_then(|m| m.dimension("FunctionName")) else {
            return Err(format!(
                "alarm {} has no FunctionName dimension: nothing to roll back",
                alarm.alarm_name
            ));
        };
        let alias = metric
            .and_then(|m| m.dimension("Resource"))
            .and_then(|resource| resource.strip_prefix(&format!("{function}:")))
            .filter(|alias| !alias.is_empty() && *alias != "$LATEST");
        match alias {
            Some(alias) => Ok(Self {
                function: function.to_string(),
                alias: alias.to_string(),
            }),
            None => Err(format!(
                "alarm {} watches {function} without an alias: $LATEST cannot be rolled back; publish versions behind an alias",
                alarm.alarm_name
            )),
        }
    }

    fn name(&self) -> String {
        format!("{}:{}", self.function, self.alias)
    }
}

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

/// The previous rollback of this alias: (from, to, when).
pub type LastRollback = Option<(String, String, DateTime<Utc>)>;

/// Plans the rollback from what was observed; pure, so dry runs and tests see the same plan.
pub fn plan(
    alias: &AliasState,
    versions: &[Version],
    last: &LastRollback,
    window: Duration,
    now: DateTime<Utc>,
) -> Decision<Change> {
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
        })
    }

    async fn versions(&self, function: &str) -> Result<Vec<Version>, AwsError> {
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
    async fn owning_stack(&self, function: &str, since: DateTime<Utc>) -> Value {
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
}

impl Change {
    /// The version the alias is on once the change is in force.
    fn version(&self) -> &str {
        match self {
            Change::DropCanary { version, .. } => version,
            Change::Repoint { to, .. } => to,
        }
    }
}

/// What a rollback reads.
pub struct Diagnosis {
    alias: AliasState,
    versions: Vec<Version>,
    last: LastRollback,
    at: DateTime<Utc>,
}

impl Runbook<Responder> for Rollback {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = Diagnosis;
    type Change = Change;

    fn resource(&self, home: &Home) -> ResourceId {
        home.alias(&self.function, &self.alias)
    }

    async fn managed(&self, ctx: &RunContext<'_, Responder>) -> Step<()> {
        let target = self.name();
        let state = ctx.alias(&self.function, &self.alias).await.map_err(|err| {
            Ending::failed(if err.is(FaultKind::NotFound) {
                format!(
                    "alias {target} does not exist (check the alarm's Resource dimension or the payload); nothing was changed"
                )
            } else {
                format!("could not read alias {target}, nothing was changed: {err}")
            })
        })?;
        let function_arn = state
            .arn
            .rsplit_once(':')
            .map_or(state.arn.as_str(), |(arn, _)| arn);
        ctx.config
            .safety
            .managed
            .require_function(&ctx.clients.lambda, &self.function, function_arn)
            .await
    }

    /// Afresh under the lease: another run may have moved the alias while this one waited.
    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Responder>,
        report: &mut Report,
    ) -> Step<Diagnosis> {
        let (function, target) = (&self.function, self.name());
        let alias = ctx.alias(function, &self.alias).await.map_err(|err| {
            Ending::failed(format!(
                "could not read alias {target}, nothing was changed: {err}"
            ))
        })?;
        let versions = ctx.versions(function).await.map_err(|err| {
            Ending::failed(format!(
                "could not list the versions of {function}, nothing was changed: {err}"
            ))
        })?;
        let last = ctx
            .last_rollback(function, &self.alias)
            .await
            .map_err(|err| {
                Ending::failed(format!(
                    "could not read the audit history of {target}, nothing was changed: {err}"
                ))
            })?;
        let at = Utc::now();
        let window = Duration::minutes(ctx.config.rollback_window_minutes);
        report.diagnosis = Some(json!({
            "alias": {"version": alias.version, "routing_weights": alias.weights},
            "versions": versions.iter().map(|v| json!({"version": v.number, "published_at": v.published_at.map(runbook_shared::audit::timestamp)})).collect::<Vec<_>>(),
            "owning_stack": ctx.owning_stack(function, at - window).await,
            "last_rollback": last.as_ref().map(|(from, to, at)| json!({"from": from, "to": to, "at": runbook_shared::audit::timestamp(*at)})),
        }));
        Ok(Diagnosis {
            alias,
            versions,
            last,
            at,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Change> {
        let window = Duration::minutes(ctx.config.rollback_window_minutes);
        plan(&d.alias, &d.versions, &d.last, window, d.at)
    }

    fn describe(&self, _: &RunContext<'_, Responder>, change: &Change) -> Planned {
        let target = self.name();
        let (before, after, summary) = match change {
            Change::DropCanary { version, weights } => (
                json!({"version": version, "routing_weights": weights}),
                json!({"version": version, "routing_weights": {}}),
                format!(
                    "dropped the canary weights {weights:?} of {target}: all traffic on version {version}"
                ),
            ),
            Change::Repoint { from, to } => (
                json!({"version": from}),
                json!({"version": to}),
                format!("rolled {target} back from version {from} to {to}"),
            ),
        };
        Planned::one("lambda:UpdateAlias", &target, before, after, summary)
    }

    fn observed(&self, d: &Diagnosis) -> Option<Value> {
        Some(json!({"version": d.alias.version, "routing_weights": d.alias.weights}))
    }

    fn resumed(&self, action: &Action) -> Option<Change> {
        let version = |state: &Value| state["version"].as_str().map(str::to_string);
        let weights: HashMap<String, f64> =
            serde_json::from_value(action.before["routing_weights"].clone()).unwrap_or_default();
        Some(if weights.is_empty() {
            Change::Repoint {
                from: version(&action.before)?,
                to: version(&action.after)?,
            }
        } else {
            Change::DropCanary {
                version: version(&action.after)?,
                weights,
            }
        })
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        _: &Diagnosis,
        change: Change,
    ) -> Result<Change, NotApplied> {
        let target = self.name();
        ctx.clients
            .lambda
            .update_alias()
            .function_name(&self.function)
            .name(&self.alias)
            .function_version(change.version())
            .routing_config(
                AliasRoutingConfiguration::builder()
                    .set_additional_version_weights(Some(HashMap::new()))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| {
                let err =
                    AwsError::from_sdk("lambda:UpdateAlias", &format!("alias {target}"), &err);
                NotApplied::explained(
                    &err,
                    format!("the rollback of {target} failed; nothing was changed: {err}"),
                )
            })?;
        Ok(change)
    }

    /// The alias read back on the expected version without weights; the alarm's OK (or the
    /// sweep) closes the errors check.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Responder>,
        _: &Diagnosis,
        change: Change,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let (function, target) = (&self.function, self.name());
        let expected = change.version();
        let observed = poll_until(
            ctx.invocation.wait_deadline(),
            ctx.poll_interval,
            || async {
                match ctx.alias(function, &self.alias).await {
                    Ok(now) if now.version == expected && now.weights.is_empty() => Some(Ok(now)),
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                }
            },
        )
        .await;
        let (ok, seen) = match observed {
            Some(Ok(now)) => (true, format!("version {}, no routing weights", now.version)),
            Some(Err(err)) => (false, format!("GetAlias failed: {err}")),
            None => (
                false,
                "not on the expected version at the deadline".to_string(),
            ),
        };
        let checks = vec![Check::new(
            "alias_version",
            ok,
            format!("version {expected}, no routing weights"),
            seen,
        )];
        let errors = AwaitedMetric {
            check: "errors_stopped",
            expected: format!("no errors on {target}"),
            namespace: "AWS/Lambda".into(),
            metrics: vec!["Errors".into()],
            dimensions: [
                ("FunctionName".to_string(), function.clone()),
                ("Resource".to_string(), target.clone()),
            ]
            .into(),
        };
        report.verification = Verification::awaiting(checks, true, ctx.alarm_name(), errors);
        concluded(&report.verification, summary)
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
            plan(&alias("3"), &fresh, &None, window, now),
            Decision::Act(Change::Repoint {
                from: "3".into(),
                to: "2".into()
            })
        );
        let old = versions(now, &[600, 300, 120]);
        assert!(
            matches!(plan(&alias("3"), &old, &None, window, now), Decision::NoAction(r) if r.contains("outside ROLLBACK_WINDOW_MINUTES=60"))
        );
        assert!(
            matches!(plan(&alias("1"), &versions(now, &[5]), &None, window, now), Decision::NoAction(r) if r.contains("first published version"))
        );
        assert!(
            matches!(plan(&alias("$LATEST"), &fresh, &None, window, now), Decision::NoAction(r) if r.contains("$LATEST"))
        );
        let mut canary = alias("2");
        canary.weights.insert("3".into(), 0.1);
        assert!(matches!(
            plan(&canary, &fresh, &None, window, now),
            Decision::Act(Change::DropCanary { .. })
        ));
        let last = Some(("3".to_string(), "2".to_string(), now - Duration::minutes(2)));
        assert!(
            matches!(plan(&alias("3"), &fresh, &last, window, now), Decision::Skip(r) if r.starts_with("flip-flop refused"))
        );
        let redeployed = versions(now, &[600, 300, 5, 1]);
        assert_eq!(
            plan(&alias("4"), &redeployed, &last, window, now),
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
