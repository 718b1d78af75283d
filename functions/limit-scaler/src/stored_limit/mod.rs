//! Runbook `stored-limit`: an application's rate limit, stored as a number in a DynamoDB item
//! (read by the app at run time), is too low. Raise it for a while with a conditional update
//! (no lost update), remember the original and the expiry, and put it back when the expiry has
//! passed — unless someone changed it meanwhile (`PutBack`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, Utc};
use runbook_shared::aws::{AwsError, FaultKind, condition_held};
use runbook_shared::model::{Action, Check, Report, Verification};
use runbook_shared::model::{AlarmTrigger, Rejection};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Scaler;
use crate::config::ScalerConfig;

mod put_back;

pub use put_back::PutBack;

pub const RUNBOOK: &str = "stored-limit";

/// The manual payload: `{"limit": {"key": "tenant#42", "attribute": "requests_per_second",
/// "value": 200, "for_minutes": 60}, "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
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

    pub fn from_request(request: &Request, config: &ScalerConfig) -> Result<Self, Rejection> {
        Self::from_spec(&request.limit, config)
    }

    /// The limit an alarm tagged `runbook=stored-limit` names in its tags `limit-key` and
    /// `limit-attribute`: `None` when it is not tagged so.
    pub async fn from_alarm(
        cloudwatch: &aws_sdk_cloudwatch::Client,
        alarm: &AlarmTrigger,
        config: &ScalerConfig,
    ) -> Option<Result<Self, Rejection>> {
        let arn = alarm.alarm_arn.as_ref()?;
        let tags: HashMap<String, String> = match cloudwatch
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
        {
            Ok(output) => output
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_string(), tag.value()?.to_string())))
                .collect(),
            Err(err) => {
                let err = AwsError::from_sdk("cloudwatch:ListTagsForResource", arn, &err);
                return Some(Err(Rejection(format!(
                    "alarm {}'s tags could not be read, so no runbook was chosen: {err}",
                    alarm.alarm_name
                ))));
            }
        };
        if tags.get("runbook").map(String::as_str) != Some(RUNBOOK) {
            return None;
        }
        let spec = (|| {
            Some(LimitSpec {
                key: tags.get("limit-key")?.clone(),
                attribute: tags.get("limit-attribute")?.clone(),
                value: None,
                for_minutes: None,
            })
        })();
        Some(match spec {
            Some(spec) => Self::from_spec(&spec, config),
            None => Err(Rejection(format!(
                "alarm {} chooses stored-limit but lacks the tags limit-key and limit-attribute",
                alarm.alarm_name
            ))),
        })
    }

    fn from_spec(spec: &LimitSpec, config: &ScalerConfig) -> Result<Self, Rejection> {
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

/// Plans the raise of the limit `name` from `current`, at most MAX_LIMIT_FACTOR × `original`
/// (the value before the first raise in force), to `requested` or by the factor; pure. It never
/// lowers: a value at or above what a raise would set is left.
pub fn plan(
    name: &str,
    current: f64,
    original: f64,
    requested: Option<f64>,
    config: &ScalerConfig,
) -> Decision<f64> {
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

/// A stored limit from one value to another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitChange {
    from: f64,
    to: f64,
}

impl LimitChange {
    fn resumed(action: &Action) -> Option<Self> {
        Some(Self {
            from: action.before["value"].as_f64()?,
            to: action.after["value"].as_f64()?,
        })
    }

    fn action(&self, name: &str, summary: String) -> Planned {
        Planned::one(
            "dynamodb:UpdateItem",
            name,
            json!({"value": self.from}),
            json!({"value": self.to}),
            summary,
        )
    }
}

impl Scaler {
    async fn read_limit(&self, target: &LimitTarget) -> Result<Option<f64>, AwsError> {
        let item = self
            .clients
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
            .clients
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

    /// The limit read back: (whether it is `expected`, what was seen).
    async fn limit_read_back(&self, target: &LimitTarget, expected: f64) -> (bool, String) {
        match self.read_limit(target).await {
            Ok(value) => (
                value == Some(expected),
                value.map_or("missing".to_string(), |v| v.to_string()),
            ),
            Err(err) => (false, format!("GetItem failed: {err}")),
        }
    }
}

/// What a raise reads: the value now, and the original before the first raise in force.
pub struct Diagnosis {
    current: f64,
    original: f64,
}

impl Runbook<Scaler> for LimitTarget {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = Diagnosis;
    type Change = LimitChange;

    fn resource(&self, home: &Home) -> ResourceId {
        self.resource(home)
    }

    async fn managed(&self, ctx: &RunContext<'_, Scaler>) -> Step<()> {
        let safety = &ctx.config.safety;
        runbook_shared::guards::require_table(
            &safety.managed,
            &ctx.clients.dynamodb,
            &safety.home,
            &self.table,
        )
        .await
    }

    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let resource = self.resource(&ctx.config.safety.home);
        let name = resource.name();
        let current = match ctx.read_limit(self).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                return Err(Ending::failed(format!(
                    "{name}: no item with {} = {:?}, or no number in {}; nothing was changed",
                    self.key_attribute, self.key, self.attribute
                )));
            }
            Err(err) if err.is(FaultKind::NotFound) => {
                return Err(Ending::failed(format!(
                    "the limits table {} does not exist; nothing was changed",
                    self.table
                )));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not read {name}, nothing was changed: {err}"
                )));
            }
        };
        // A raise already in force keeps its original: the cap is a multiple of that. Lambda's
        // retry of a request that crashed after its write finds its own raise with no record.
        let recorded = ctx
            .safety
            .audit
            .raise(RUNBOOK, &resource.key())
            .await
            .map_err(|err| {
                Ending::failed(format!(
                    "could not read the raises in force, nothing was changed: {err}"
                ))
            })?;
        let landed = ctx
            .invocation
            .landed(&resource, &json!({"value": current}))
            .and_then(|action| action.before["value"].as_f64());
        let original = recorded
            .and_then(|raise| raise.original["value"].as_f64())
            .or(landed)
            .unwrap_or(current);
        let cap = original * ctx.config.max_limit_factor;
        report.diagnosis = Some(json!({"current": current, "original": original, "cap": cap}));
        Ok(Diagnosis { current, original })
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, d: &Diagnosis) -> Decision<LimitChange> {
        let name = self.resource(&ctx.config.safety.home).name();
        plan(&name, d.current, d.original, self.value, &ctx.config).map(|to| LimitChange {
            from: d.current,
            to,
        })
    }

    fn describe(&self, ctx: &RunContext<'_, Scaler>, change: &LimitChange) -> Planned {
        let name = self.resource(&ctx.config.safety.home).name();
        let summary = format!(
            "raised {name} from {} to {} for {} min",
            change.from, change.to, self.for_minutes
        );
        change.action(&name, summary)
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        Some(json!({"value": diagnosis.current}))
    }

    fn resumed(&self, action: &Action) -> Option<LimitChange> {
        LimitChange::resumed(action)
    }

    /// A conditional update: only if the value is still the one read.
    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        change: LimitChange,
    ) -> Result<LimitChange, NotApplied> {
        let name = self.resource(&ctx.config.safety.home).name();
        match ctx.swap_limit(self, change.from, change.to).await {
            Ok(true) => Ok(change),
            Ok(false) => Err(NotApplied::Failed {
                error: "ConditionalCheckFailedException: the value changed after it was read"
                    .into(),
                reason: format!(
                    "{name} changed between reading {} and raising it (lost race with another writer); nothing was changed: run again",
                    change.from
                ),
            }),
            Err(err) => Err(NotApplied::explained(
                &err,
                format!("the raise of {name} failed; nothing was changed: {err}"),
            )),
        }
    }

    /// Remembers the raise for its put-back at the expiry and reads the value back.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &Diagnosis,
        change: LimitChange,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let original = diagnosis.original;
        let revert_at = Utc::now() + Duration::minutes(self.for_minutes);
        let key = self.resource(&ctx.config.safety.home).key();
        let registered = ctx
            .safety
            .audit
            .put_raise(
                RUNBOOK,
                &key,
                &json!({"value": original}),
                &json!({"value": change.to}),
                Some(revert_at),
                ctx.alarm_name(),
            )
            .await;
        let (ok, observed) = ctx.limit_read_back(self, change.to).await;
        report.verification = Verification::settled(Check::new(
            "stored_value",
            ok,
            change.to.to_string(),
            observed,
        ));
        let revert_at = runbook_shared::model::timestamp(revert_at);
        report.details = Some(json!({"original": original, "revert_at": revert_at}));
        match registered {
            Err(err) => Ending::failed(format!(
                "{summary}, but the raise could not be recorded for its revert ({err}): put it back to {original} by hand at {revert_at}"
            )),
            Ok(()) => concluded(&report.verification, summary),
        }
    }
}
