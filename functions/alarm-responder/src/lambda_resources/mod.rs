//! Runbook `lambda-resources`: a function runs into its timeout. Raise the timeout (and, when
//! asked, the memory) by a factor, within caps, and wait until the update is in force.
//!
//! Diagnose (which versions the traffic runs on, the longest run in the alarm's window, the
//! configuration with its RevisionId) → plan (only on evidence that runs reach the timeout)
//! → act (UpdateFunctionConfiguration with only the raised fields and the RevisionId read, so a
//! deploy landing meanwhile is never undone: on a conflict the shared path reads and plans
//! again) → verify (the configuration in force; the alarm's OK closes the metric-level check).

mod plan;
mod reads;

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::model::Subject;
use runbook_shared::model::{Action, AwaitedMetric, Check, Report, Verification};
use runbook_shared::model::{AlarmTrigger, MetricRef, Rejection};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Responder, function_of};

pub use plan::{Change, Evidence, QueueLimit, Raise, Settings, TIMEOUT_EVIDENCE_SHARE, plan};

pub const RUNBOOK: &str = "lambda-resources";

/// The manual payload: `{"runbook": "lambda-resources", "function": "orders-worker", "raise":
/// "timeout|memory|both", "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub function: String,
    #[serde(default)]
    pub raise: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The function whose settings to raise.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub function: String,
    /// The alias or version the alarm (or the person) named, if any.
    pub qualifier: Option<String>,
    pub raise: Raise,
}

impl Resources {
    /// Validates a manual request; the function may be named by name, `name:qualifier` or ARN.
    pub fn from_request(request: &Request, home: &Home) -> Result<Self, Rejection> {
        let (function, qualifier) = function_of(&request.function, home)?;
        Ok(Self {
            function,
            qualifier,
            raise: request
                .raise
                .as_deref()
                .map_or(Ok(Raise::Timeout), Raise::parse)?,
        })
    }

    /// The function of an `AWS/Lambda` `Duration` alarm, what its tag `raise` asks for, and
    /// the alias or version its `Resource` dimension names; `Err` says why there is none.
    pub fn from_alarm(
        alarm: &AlarmTrigger,
        metric: Option<&MetricRef>,
        raise_tag: Option<&str>,
    ) -> Result<Self, String> {
        let Some(function) = metric.and_then(|m| m.dimension("FunctionName")) else {
            return Err(format!(
                "alarm {} has no FunctionName dimension",
                alarm.alarm_name
            ));
        };
        let raise = raise_tag
            .map_or(Ok(Raise::Timeout), Raise::parse)
            .map_err(|rejection| {
                format!("alarm {}'s tag raise: {}", alarm.alarm_name, rejection.0)
            })?;
        // `Resource` is `function:qualifier` for an alias's or a version's metrics.
        let qualifier = metric
            .and_then(|m| m.dimension("Resource"))
            .and_then(|resource| resource.strip_prefix(&format!("{function}:")))
            .filter(|qualifier| !qualifier.is_empty())
            .map(str::to_string);
        Ok(Self {
            function: function.to_string(),
            qualifier,
            raise,
        })
    }
}

/// What a raise reads.
pub struct Diagnosis {
    settings: Settings,
    evidence: Evidence,
}

fn field(state: &Value, key: &str) -> Option<i32> {
    state[key].as_i64().and_then(|n| i32::try_from(n).ok())
}

impl Runbook<Responder> for Resources {
    const ID: &'static str = RUNBOOK;
    const STACK_PROPERTIES: &'static [&'static str] = &["Timeout", "MemorySize"];
    type Diagnosis = Diagnosis;
    type Change = Change;

    fn resource(&self, home: &Home) -> ResourceId {
        home.function(&self.function)
    }

    /// An alias's or a version's run times have their own series; $LATEST's are the function's.
    fn evidence_subject(&self) -> Option<Subject> {
        Some(Subject::Function {
            name: self.function.clone(),
            qualifier: self.qualifier.clone().filter(|q| q != "$LATEST"),
        })
    }

    async fn managed(&self, ctx: &RunContext<'_, Responder>) -> Step<()> {
        let function = &self.function;
        let settings = ctx.settings(function).await.map_err(|err| {
            Ending::failed(if err.is(FaultKind::NotFound) {
                format!("function {function} does not exist; nothing was changed")
            } else {
                format!("could not read {function}'s configuration, nothing was changed: {err}")
            })
        })?;
        runbook_shared::guards::require_function(
            &ctx.config.safety.managed,
            &ctx.clients.lambda,
            function,
            &settings.arn,
        )
        .await
    }

    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Responder>,
        report: &mut Report,
    ) -> Step<Diagnosis> {
        let function = &self.function;
        let traffic = match &self.qualifier {
            Some(qualifier) => ctx.published_traffic(function, qualifier).await,
            None => ctx.aliased_traffic(function).await,
        };
        match traffic {
            Ok(None) => {}
            Ok(Some(reason)) => return Err(Ending::no_action(reason)),
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not read which versions of {function} run, nothing was changed: {err}"
                )));
            }
        }
        // Runs reaching the timeout, timeouts and out-of-memory in the logs: the shared path
        // read them before this diagnosis.
        let evidence = Evidence::of(ctx.evidence.get());
        let mut settings = match ctx.settled_settings(function, ctx.invocation).await {
            Ok(Some(settings)) => settings,
            Ok(None) => {
                return Err(Ending::failed(format!(
                    "{function} was still being updated at the deadline; nothing was changed: run again"
                )));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not read {function}'s configuration, nothing was changed: {err}"
                )));
            }
        };
        // The queues it consumes cap its timeout: read only when the timeout may be raised.
        if self.raise.timeout() {
            settings.queue_limit = ctx.queue_limit(function).await.map_err(|err| {
                Ending::failed(format!(
                    "could not read the SQS queues {function} consumes, whose visibility timeout caps its timeout; nothing was changed: {err}"
                ))
            })?;
        }
        report.diagnosis = Some(json!({
            "timeout_seconds": settings.timeout,
            "consumed_queue": settings.queue_limit.as_ref().map(|limit| json!({
                "queue": limit.queue,
                "visibility_timeout_seconds": limit.visibility_timeout,
            })),
            "memory_mb": settings.memory,
            "last_update_status": settings.last_update,
            "revision_id": settings.revision,
            "timeout_share_needed": TIMEOUT_EVIDENCE_SHARE,
        }));
        Ok(Diagnosis { settings, evidence })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Change> {
        plan(&d.settings, self.raise, &d.evidence, &ctx.config)
    }

    fn describe(&self, _: &RunContext<'_, Responder>, change: &Change) -> Planned {
        let summary = format!(
            "raised {} from {} to {}{}",
            self.function,
            change.text(|(from, _)| from),
            change.text(|(_, to)| to),
            change
                .kept
                .iter()
                .map(|why| format!("; {why}"))
                .collect::<String>()
        );
        Planned::one(
            "lambda:UpdateFunctionConfiguration",
            &self.function,
            change.state(|(from, _)| from),
            change.state(|(_, to)| to),
            summary,
        )
    }

    fn observed(&self, d: &Diagnosis) -> Option<Value> {
        Some(json!({"timeout_seconds": d.settings.timeout, "memory_mb": d.settings.memory}))
    }

    fn resumed(&self, action: &Action) -> Option<Change> {
        let pair = |key: &str| Some((field(&action.before, key)?, field(&action.after, key)?));
        Some(Change {
            timeout: pair("timeout_seconds"),
            memory: pair("memory_mb"),
            kept: Vec::new(),
        })
    }

    /// Only the raised fields, and only on the configuration it planned from (its RevisionId).
    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
        change: Change,
    ) -> Result<Change, NotApplied> {
        let function = &self.function;
        let updated = ctx
            .clients
            .lambda
            .update_function_configuration()
            .function_name(function)
            .set_timeout(change.timeout.map(|(_, to)| to))
            .set_memory_size(change.memory.map(|(_, to)| to))
            .set_revision_id(d.settings.revision.clone())
            .send()
            .await;
        match updated {
            Ok(_) => Ok(change),
            Err(err) => {
                let err = AwsError::from_sdk(
                    "lambda:UpdateFunctionConfiguration",
                    &format!("function {function}"),
                    &err,
                );
                // Another update is running, or landed since the read (the RevisionId no
                // longer matches).
                if err.is(FaultKind::InUse)
                    || err.code.as_deref() == Some("PreconditionFailedException")
                {
                    Err(NotApplied::ChangedUnder {
                        error: err.to_string(),
                    })
                } else {
                    Err(NotApplied::explained(
                        &err,
                        format!("the update of {function} failed; nothing was changed: {err}"),
                    ))
                }
            }
        }
    }

    async fn verify(
        &self,
        ctx: &RunContext<'_, Responder>,
        _: &Diagnosis,
        change: Change,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let function = &self.function;
        let expected = format!("{}, LastUpdateStatus Successful", change.text(|(_, to)| to));
        let (check, settled) = match ctx.settled_settings(function, ctx.invocation).await {
            Ok(Some(now)) => {
                let ok = change.in_force(&now) && now.last_update == "Successful";
                let seen = format!(
                    "timeout {} s, memory {} MB, LastUpdateStatus {}",
                    now.timeout, now.memory, now.last_update
                );
                (Check::new("configuration", ok, expected, seen), true)
            }
            Err(err) => (
                Check::new(
                    "configuration",
                    false,
                    expected,
                    format!("GetFunctionConfiguration failed: {err}"),
                ),
                true,
            ),
            Ok(None) => (
                Check::new(
                    "configuration",
                    false,
                    expected,
                    "still InProgress at the deadline",
                ),
                false,
            ),
        };
        let timeouts = AwaitedMetric {
            check: "duration_back_to_normal",
            expected: format!("no timeouts on {function}"),
            namespace: "AWS/Lambda".into(),
            metrics: vec!["Errors".into()],
            dimensions: [("FunctionName".to_string(), function.clone())].into(),
        };
        report.verification =
            Verification::awaiting(vec![check], settled, ctx.alarm_name(), timeouts);
        concluded(&report.verification, summary)
    }
}
