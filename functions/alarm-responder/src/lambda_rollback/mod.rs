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
use runbook_shared::model::{Action, AwaitedMetric, Check, Report, Verification};
use runbook_shared::model::{AlarmTrigger, MetricRef, Rejection};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Responder, function_of};

mod plan;
mod reads;

pub use plan::{AliasState, Change, LastRollback, Version, plan};

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

/// What a rollback reads.
pub struct Diagnosis {
    alias: AliasState,
    versions: Vec<Version>,
    last: LastRollback,
    at: DateTime<Utc>,
}

impl Runbook<Responder> for Rollback {
    const ID: &'static str = RUNBOOK;
    const STACK_PROPERTIES: &'static [&'static str] = &["FunctionVersion", "RoutingConfig"];
    type Diagnosis = Diagnosis;
    type Change = Change;

    fn resource(&self, home: &Home) -> ResourceId {
        home.alias(&self.function, &self.alias)
    }

    fn evidence_subject(&self) -> Option<runbook_shared::model::Subject> {
        Some(runbook_shared::model::Subject::Function {
            name: self.function.clone(),
            qualifier: Some(self.alias.clone()),
        })
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
        runbook_shared::guards::require_function(
            &ctx.config.safety.managed,
            &ctx.clients.lambda,
            &self.function,
            function_arn,
        )
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
        let last = ctx
            .last_rollback(function, &self.alias)
            .await
            .map_err(|err| {
                Ending::failed(format!(
                    "could not read the audit history of {target}, nothing was changed: {err}"
                ))
            })?;
        let rolled: Vec<&str> = last
            .iter()
            .flat_map(|(from, to, _)| [from.as_str(), to.as_str()])
            .collect();
        // A canary is dropped whatever was served before: only a repoint reads that.
        let below = alias
            .weights
            .is_empty()
            .then(|| alias.version.parse::<u64>().ok())
            .flatten();
        let versions = ctx
            .versions(function, &self.alias, below, &rolled)
            .await
            .map_err(|err| {
                Ending::failed(format!(
                    "could not read the versions of {function} and which of them {target} served, nothing was changed: {err}"
                ))
            })?;
        let at = Utc::now();
        // The owning stack's events are in the evidence's recent changes.
        report.diagnosis = Some(json!({
            "alias": {"version": alias.version, "routing_weights": alias.weights},
            "versions": versions.iter().map(|v| json!({"version": v.number, "published_at": v.published_at.map(runbook_shared::model::timestamp), "served": v.served})).collect::<Vec<_>>(),
            "last_rollback": last.as_ref().map(|(from, to, at)| json!({"from": from, "to": to, "at": runbook_shared::model::timestamp(*at)})),
        }));
        Ok(Diagnosis {
            alias,
            versions,
            last,
            at,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Change> {
        let window = Duration::minutes(ctx.safety.config.evidence.recent_changes_minutes);
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

    /// Only on the alias's revision that was read: a deploy that moved it since is not undone.
    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
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
            .set_revision_id(d.alias.revision.clone())
            .send()
            .await
            .map_err(|err| {
                let err =
                    AwsError::from_sdk("lambda:UpdateAlias", &format!("alias {target}"), &err);
                // The alias moved since it was read (a deploy, a person): plan again from it.
                if err.code.as_deref() == Some("PreconditionFailedException")
                    || err.is(FaultKind::InUse)
                {
                    return NotApplied::ChangedUnder {
                        error: err.to_string(),
                    };
                }
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
