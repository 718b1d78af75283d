//! Runbook `stored-limit`: an application's rate limit, stored as a number in a DynamoDB item
//! (read by the app at run time), is too low. Raise it for a while with a conditional update
//! (no lost update), remember the original and the expiry, and put it back when the expiry has
//! passed — unless someone changed it meanwhile.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, Utc};
use runbook_shared::audit::Raise;
use runbook_shared::aws::{AwsError, FaultKind, condition_held};
use runbook_shared::report::{Action, Check, Outcome, Report, Verification};
use runbook_shared::resource::{Home, Resource, ResourceId};
use runbook_shared::safety::Invocation;
use runbook_shared::trigger::Rejection;
use serde::Deserialize;
use serde_json::json;

use crate::Scaler;
use crate::config::ScalerConfig;

pub const RUNBOOK: &str = "stored-limit";

/// The manual payload: `{"limit": {"key": "tenant#42", "attribute": "requests_per_second",
/// "value": 200, "for_minutes": 60}, "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoredLimitRequest {
    pub limit: LimitSpec,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub key: String,
    pub attribute: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub for_minutes: Option<i64>,
}

/// A validated request: which limit, to what (or by the factor), for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitTarget {
    pub table: String,
    pub key_attribute: String,
    pub key: String,
    pub attribute: String,
    pub value: Option<f64>,
    pub for_minutes: i64,
}

impl LimitTarget {
    /// The limit, in the function's partition, region and account.
    pub fn resource(&self, home: &Home) -> ResourceId {
        home.stored_limit(&self.table, &self.key, &self.attribute)
    }

    pub fn from_spec(spec: &LimitSpec, config: &ScalerConfig) -> Result<Self, Rejection> {
        let Some(table) = &config.limits_table else {
            return Err(Rejection(
                "stored limits are not configured: set LIMITS_TABLE and LIMITS_VALUE_ATTRS".into(),
            ));
        };
        if spec.key.trim().is_empty() {
            return Err(Rejection("\"limit.key\" must not be empty".into()));
        }
        if !config.limits_value_attributes.contains(&spec.attribute) {
            return Err(Rejection(format!(
                "\"limit.attribute\" {:?} is not a limit: LIMITS_VALUE_ATTRS allows {}",
                spec.attribute,
                config.limits_value_attributes.join(", ")
            )));
        }
        if spec
            .value
            .is_some_and(|value| !(value > 0.0 && value.is_finite()))
        {
            return Err(Rejection(
                "\"limit.value\" must be a positive number".into(),
            ));
        }
        let for_minutes = spec.for_minutes.unwrap_or(config.stored_limit_minutes);
        if !(1..=10_080).contains(&for_minutes) {
            return Err(Rejection(format!(
                "\"limit.for_minutes\" must be from 1 to 10080, got {for_minutes}"
            )));
        }
        Ok(Self {
            table: table.clone(),
            key_attribute: config.limits_key_attribute.clone(),
            key: spec.key.clone(),
            attribute: spec.attribute.clone(),
            value: spec.value,
            for_minutes,
        })
    }

    /// The target of a raise in force, to put it back: `None` when it is not a limit of
    /// LIMITS_TABLE any more.
    fn from_raise(resource: &ResourceId, config: &ScalerConfig) -> Option<Self> {
        let Resource::StoredLimit {
            table,
            key,
            attribute,
        } = &resource.resource
        else {
            return None;
        };
        (config.limits_table.as_ref() == Some(table)).then(|| Self {
            table: table.clone(),
            key_attribute: config.limits_key_attribute.clone(),
            key: key.clone(),
            attribute: attribute.clone(),
            value: None,
            for_minutes: 0,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(f64),
    NoAction(String),
    Skip(String),
}

/// Plans the raise of the limit `name` from `current`, at most MAX_LIMIT_FACTOR × `original`
/// (the value before the first raise in force), to `requested` or by the factor; pure. It never
/// lowers: a value at or above what a raise would set is left.
pub fn plan(
    name: &str,
    current: f64,
    original: f64,
    requested: Option<f64>,
    config: &ScalerConfig,
) -> Decision {
    let cap = original * config.max_limit_factor;
    let new = match requested {
        Some(value) if value > cap => {
            return Decision::Skip(format!(
                "at cap: {value} is above MAX_LIMIT_FACTOR={} × the original {original} = {cap}",
                config.max_limit_factor
            ));
        }
        Some(value) => value,
        None => (current * config.scale_factor).ceil().min(cap),
    };
    if new > current {
        return Decision::Act(new);
    }
    match requested {
        Some(_) => Decision::NoAction(format!(
            "{name} is already {current}, at least the requested {new}"
        )),
        None => Decision::Skip(format!(
            "at cap: {name} is {current}, at MAX_LIMIT_FACTOR={} × the original {original}",
            config.max_limit_factor
        )),
    }
}

/// A number as DynamoDB stores it: integers without a fraction.
fn number(value: f64) -> AttributeValue {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        AttributeValue::N(format!("{}", value as i64))
    } else {
        AttributeValue::N(value.to_string())
    }
}

impl Scaler {
    async fn read_limit(&self, target: &LimitTarget) -> Result<Option<f64>, AwsError> {
        let item = self
            .dynamodb
            .get_item()
            .table_name(&target.table)
            .key(&target.key_attribute, AttributeValue::S(target.key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk("dynamodb:GetItem", &format!("table {}", target.table), &err)
            })?;
        Ok(item
            .item()
            .and_then(|item| item.get(&target.attribute))
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse().ok()))
    }

    /// Sets the limit from `expected` to `new`, only if it is still `expected`; `Ok(false)` when
    /// someone changed it meanwhile.
    async fn swap_limit(
        &self,
        target: &LimitTarget,
        expected: f64,
        new: f64,
    ) -> Result<bool, AwsError> {
        let update = self
            .dynamodb
            .update_item()
            .table_name(&target.table)
            .key(&target.key_attribute, AttributeValue::S(target.key.clone()))
            .update_expression("SET #limit = :new")
            .condition_expression("#limit = :expected")
            .expression_attribute_names("#limit", &target.attribute)
            .expression_attribute_values(":new", number(new))
            .expression_attribute_values(":expected", number(expected))
            .send()
            .await;
        condition_held(
            update,
            "dynamodb:UpdateItem",
            &format!("table {}", target.table),
        )
    }

    /// Raises a stored limit (the lease and cooldown are the caller's).
    pub(crate) async fn raise_stored_limit(
        &self,
        target: &LimitTarget,
        invocation: &Invocation,
        mut report: Report,
    ) -> Report {
        let resource = target.resource(&self.config.safety.home);
        let (name, key) = (resource.name(), resource.key());
        match self.table_managed(&target.table).await {
            Ok(true) => {}
            Ok(false) => {
                let reason = self.config.safety.managed.refusal("table", &target.table);
                return report.finish(Outcome::Skipped, reason);
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not check that the limits table {} is managed, nothing was changed: {err}",
                        target.table
                    ),
                );
            }
        }
        let current = match self.read_limit(target).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "{name}: no item with {} = {:?}, or no number in {}; nothing was changed",
                        target.key_attribute, target.key, target.attribute
                    ),
                );
            }
            Err(err) if err.is(FaultKind::NotFound) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "the limits table {} does not exist; nothing was changed",
                        target.table
                    ),
                );
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read {name}, nothing was changed: {err}"),
                );
            }
        };
        // Lambda's retry of this request after a crash: its first attempt's write landed.
        let landed = invocation
            .landed(&resource, &json!({"value": current}))
            .and_then(|action| Some((action.before["value"].as_f64()?, action)));
        // A raise already in force keeps its original: the cap is a multiple of that.
        let original = match self.safety.audit.raises(RUNBOOK).await {
            Ok(raises) => raises
                .iter()
                .find(|raise| raise.resource == key)
                .and_then(|raise| raise.original["value"].as_f64())
                .unwrap_or(landed.as_ref().map_or(current, |(before, _)| *before)),
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read the raises in force, nothing was changed: {err}"),
                );
            }
        };
        let cap = original * self.config.max_limit_factor;
        report.diagnosis = Some(json!({"current": current, "original": original, "cap": cap}));
        let revert_at = Utc::now() + Duration::minutes(target.for_minutes);
        if let Some((before, mut action)) = landed {
            action.applied = true;
            report.notes.push(runbook_shared::safety::RESUMED.into());
            report.actions.push(action);
            let summary = format!(
                "raised {name} from {before} to {current} for {} min",
                target.for_minutes
            );
            return self
                .after_limit_raise(target, &key, original, current, revert_at, summary, report)
                .await;
        }
        let new = match plan(&name, current, original, target.value, &self.config) {
            Decision::Act(new) => new,
            Decision::NoAction(reason) => return report.finish(Outcome::NoAction, reason),
            Decision::Skip(reason) => return report.finish(Outcome::Skipped, reason),
        };
        let mut action = Action {
            api: "dynamodb:UpdateItem".into(),
            target: name.clone(),
            before: json!({"value": current}),
            after: json!({"value": new}),
            applied: false,
            error: None,
        };
        match self.safety.spend_budget(&report).await {
            Ok(Ok(())) => {}
            Ok(Err(skip)) => return report.finish(Outcome::Skipped, skip.0),
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not check the action budget, nothing was changed: {err}"),
                );
            }
        }
        let summary = format!(
            "raised {name} from {current} to {new} for {} min",
            target.for_minutes
        );
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
        match self.swap_limit(target, current, new).await {
            Ok(true) => {}
            Ok(false) => {
                action.error = Some(
                    "ConditionalCheckFailedException: the value changed after it was read".into(),
                );
                report.actions.push(action);
                return report.finish(Outcome::Failed,
                    format!(
                        "{name} changed between reading {current} and raising it (lost race with another writer); nothing was changed: run again"
                    ),
                );
            }
            Err(err) => {
                action.error = Some(err.to_string());
                report.actions.push(action);
                return report.finish(
                    Outcome::Failed,
                    format!("the raise of {name} failed; nothing was changed: {err}"),
                );
            }
        }
        action.applied = true;
        report.actions.push(action);
        self.after_limit_raise(target, &key, original, new, revert_at, summary, report)
            .await
    }

    /// After the limit was raised to `new`: remembers the raise for its put-back at
    /// `revert_at` and reads the value back.
    #[allow(clippy::too_many_arguments)]
    async fn after_limit_raise(
        &self,
        target: &LimitTarget,
        key: &str,
        original: f64,
        new: f64,
        revert_at: chrono::DateTime<Utc>,
        summary: String,
        mut report: Report,
    ) -> Report {
        let registered = self
            .safety
            .audit
            .put_raise(
                RUNBOOK,
                key,
                &json!({"value": original}),
                &json!({"value": new}),
                Some(revert_at),
            )
            .await;
        let (ok, observed) = match self.read_limit(target).await {
            Ok(value) => (
                value == Some(new),
                value.map_or("missing".to_string(), |v| v.to_string()),
            ),
            Err(err) => (false, format!("GetItem failed: {err}")),
        };
        report.verification =
            Verification::settled(Check::new("stored_value", ok, new.to_string(), observed));
        report.details = Some(
            json!({"original": original, "revert_at": runbook_shared::audit::timestamp(revert_at)}),
        );
        if let Err(err) = registered {
            return report.finish(Outcome::Failed,
                format!(
                    "{summary}, but the raise could not be recorded for its revert ({err}): put it back to {original} by hand at {}",
                    runbook_shared::audit::timestamp(revert_at)
                ),
            );
        }
        let failures = report.verification.failures();
        if ok {
            report.finish(Outcome::Remediated, summary)
        } else {
            report.finish(
                Outcome::Failed,
                format!("{summary}, but the item does not show it ({})", failures),
            )
        }
    }

    /// Puts a stored limit back to its original once its time is up (the schedule's step).
    pub(crate) async fn revert_stored_limit(
        &self,
        raise: &Raise,
        resource: &ResourceId,
        mut report: Report,
    ) -> Report {
        let name = resource.name();
        let Some(target) = LimitTarget::from_raise(resource, &self.config) else {
            let reason = format!("{name} is not in LIMITS_TABLE any more");
            return self.stop_tracking(RUNBOOK, raise, report, reason).await;
        };
        let (Some(original), Some(ours)) = (
            raise.original["value"].as_f64(),
            raise.current["value"].as_f64(),
        ) else {
            return report.finish(
                Outcome::Failed,
                format!("the raise record of {} is unreadable", name),
            );
        };
        let now = match self.read_limit(&target).await {
            Ok(now) => now,
            Err(err) => {
                return report.finish(Outcome::Failed, format!("could not read {}: {err}", name));
            }
        };
        if now != Some(ours) {
            let reason = format!(
                "{name} was changed by someone else since it was raised to {ours} (now {}): left as it is",
                now.map_or("missing".to_string(), |v| v.to_string())
            );
            return self.stop_tracking(RUNBOOK, raise, report, reason).await;
        }
        let mut action = Action {
            api: "dynamodb:UpdateItem".into(),
            target: name.clone(),
            before: json!({"value": ours}),
            after: json!({"value": original}),
            applied: false,
            error: None,
        };
        if report.dry_run {
            report.actions.push(action);
            return report.finish(
                Outcome::Planned,
                format!("dry run: would put {} back from {ours} to {original}", name),
            );
        }
        match self.swap_limit(&target, ours, original).await {
            Ok(true) => action.applied = true,
            Ok(false) => {
                report.actions.push(action);
                return report.finish(
                    Outcome::Skipped,
                    format!(
                        "{} changed while it was being put back: left as it is",
                        name
                    ),
                );
            }
            Err(err) => {
                action.error = Some(err.to_string());
                report.actions.push(action);
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not put {} back: {err}; the next schedule tries again",
                        name
                    ),
                );
            }
        }
        report.actions.push(action);
        let (ok, observed) = match self.read_limit(&target).await {
            Ok(value) => (
                value == Some(original),
                value.map_or("missing".to_string(), |v| v.to_string()),
            ),
            Err(err) => (false, format!("GetItem failed: {err}")),
        };
        let check = Check::new("stored_value", ok, original.to_string(), observed);
        let summary = format!("put {} back from {ours} to its original {original}", name);
        self.conclude_put_back(report, raise, check, summary, "the item")
            .await
    }
}

/// The key and attribute an alarm names in its tags `limit-key` and `limit-attribute`.
pub fn spec_from_tags(tags: &HashMap<String, String>) -> Option<LimitSpec> {
    Some(LimitSpec {
        key: tags.get("limit-key")?.clone(),
        attribute: tags.get("limit-attribute")?.clone(),
        value: None,
        for_minutes: None,
    })
}
