//! Runbook `lambda-concurrency`: a function is throttled by its own reserved concurrency.
//! Raise the reservation by the factor within the cap, never taking the account's unreserved
//! concurrency below its floor; a function without a reservation is throttled by the account,
//! which is a diagnosis, not something to change. The schedule puts the original back after
//! CONCURRENCY_RAISE_MINUTES (`put_back`).

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::model::{Action, AwaitedMetric, Check, Report, Verification};
use runbook_shared::model::{AlarmTrigger, Rejection};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Scaler;
use crate::config::ScalerConfig;

mod put_back;

pub use put_back::{PutBack, put_back};

pub const RUNBOOK: &str = "lambda-concurrency";
pub const NAMESPACE: &str = "AWS/Lambda";
pub const THROTTLE_METRIC: &str = "Throttles";

/// The manual payload: `{"function": "f", "reserved_concurrency": 50, "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub function: String,
    #[serde(default)]
    pub reserved_concurrency: Option<i32>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A validated request: the function, and an exact reservation or the factor.
#[derive(Clone, Debug, PartialEq)]
pub struct ConcurrencyTarget {
    pub function: String,
    pub to: Option<i32>,
}

impl ConcurrencyTarget {
    /// Validates a manual request; the function may be named by its name or its ARN.
    pub fn from_request(request: &Request, config: &ScalerConfig) -> Result<Self, Rejection> {
        if request.function.trim().is_empty() {
            return Err(Rejection("\"function\" must name a Lambda function".into()));
        }
        let function = match config
            .safety
            .home
            .parse_function(&request.function)?
            .resource
        {
            Resource::Function { function } => function,
            Resource::Alias { function, alias } => {
                return Err(Rejection(format!(
                    "reserved concurrency belongs to the function {function}, not to its alias or version {alias}: name the function"
                )));
            }
            _ => {
                return Err(Rejection(format!(
                    "{:?} is not a Lambda function",
                    request.function
                )));
            }
        };
        if let Some(value) = request.reserved_concurrency
            && !(1..=config.max_reserved_concurrency).contains(&value)
        {
            return Err(Rejection(format!(
                "\"reserved_concurrency\" must be from 1 to MAX_RESERVED_CONCURRENCY={}, got {value}",
                config.max_reserved_concurrency
            )));
        }
        Ok(Self {
            function,
            to: request.reserved_concurrency,
        })
    }

    /// The throttled function of an `AWS/Lambda` `Throttles` alarm: `None` if it watches
    /// none, `Some(Err(reason))` when its metric math watches several functions, so the one
    /// that throttles cannot be told from the alarm.
    pub fn from_alarm(alarm: &AlarmTrigger) -> Option<Result<Self, String>> {
        let mut functions: Vec<&str> = alarm
            .metrics
            .iter()
            .filter(|m| m.namespace == NAMESPACE && m.name == THROTTLE_METRIC)
            .filter_map(|m| m.dimension("FunctionName"))
            .collect();
        functions.sort_unstable();
        functions.dedup();
        match functions.as_slice() {
            [] => None,
            [function] => Some(Ok(Self {
                function: function.to_string(),
                to: None,
            })),
            many => Some(Err(format!(
                "alarm {} watches the throttles of several functions ({}), so the one that throttles cannot be told from the alarm: nothing was changed; alarm on each function, or run the runbook by hand on the one to raise",
                alarm.alarm_name,
                many.join(", ")
            ))),
        }
    }
}

/// Plans the new reservation; pure, so dry runs and tests see the same plan. A reservation of 0
/// is an emergency stop a person set (the console's Throttle button): only a person naming the
/// new reservation may lift it.
pub fn plan(
    target: &ConcurrencyTarget,
    reserved: Option<i32>,
    unreserved: i32,
    account_limit: i32,
    config: &ScalerConfig,
) -> Decision<i32> {
    let function = &target.function;
    let Some(current) = reserved else {
        return Decision::NoAction(format!(
            "{function} has no reserved concurrency, so it is throttled by the account's shared pool ({unreserved} of {account_limit} unreserved), not by a limit of its own: ask for a higher account concurrency quota, or find what is using the pool"
        ));
    };
    if current == 0 && target.to.is_none() {
        return Decision::NoAction(format!(
            "{function} is stopped on purpose (reserved concurrency 0): left alone; to lift the stop, run it by hand naming \"reserved_concurrency\""
        ));
    }
    let cap = config.max_reserved_concurrency;
    let wanted = match target.to {
        Some(value) => value,
        None => ((f64::from(current.max(1)) * config.scale_factor).ceil() as i32).min(cap),
    };
    if wanted <= current {
        return if target.to.is_some() {
            Decision::NoAction(format!(
                "{function} already reserves {current}, at least the requested {wanted}"
            ))
        } else {
            Decision::Skip(format!(
                "at cap: {function} reserves {current}, at MAX_RESERVED_CONCURRENCY={cap}"
            ))
        };
    }
    let floor = config.unreserved_concurrency_floor;
    // What may be added without taking the account's unreserved concurrency below the floor.
    let room = unreserved - floor;
    let new = wanted.min(current + room.max(0));
    if new <= current {
        return Decision::Skip(format!(
            "floor: the account has {unreserved} unreserved concurrency; raising {function} would take it below UNRESERVED_CONCURRENCY_FLOOR={floor}"
        ));
    }
    Decision::Act(new)
}

/// What a raise reads: the reservation and the account's concurrency.
pub struct Diagnosis {
    reserved: Option<i32>,
    unreserved: i32,
    account_limit: i32,
}

/// A reservation from one value to another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reservation {
    from: i32,
    to: i32,
}

fn state(reservation: Option<i32>) -> Value {
    json!({"reserved_concurrency": reservation})
}

fn reservation(state: &Value) -> Option<i32> {
    state["reserved_concurrency"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
}

fn text(reservation: Option<i32>) -> String {
    reservation.map_or("none".to_string(), |n| n.to_string())
}

impl Reservation {
    fn resumed(action: &Action) -> Option<Self> {
        Some(Self {
            from: reservation(&action.before)?,
            to: reservation(&action.after)?,
        })
    }
}

impl Scaler {
    async fn reserved(&self, function: &str) -> Result<Option<i32>, AwsError> {
        self.clients
            .lambda
            .get_function_concurrency()
            .function_name(function)
            .send()
            .await
            .map(|output| output.reserved_concurrent_executions())
            .map_err(|err| {
                AwsError::from_sdk(
                    "lambda:GetFunctionConcurrency",
                    &format!("function {function}"),
                    &err,
                )
            })
    }

    async fn reserve(&self, function: &str, reservation: i32) -> Result<(), AwsError> {
        self.clients
            .lambda
            .put_function_concurrency()
            .function_name(function)
            .reserved_concurrent_executions(reservation)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| {
                AwsError::from_sdk(
                    "lambda:PutFunctionConcurrency",
                    &format!("function {function}"),
                    &err,
                )
            })
    }

    /// The reservation read back: (whether it is `expected`, what was seen).
    async fn read_back(&self, function: &str, expected: i32) -> (bool, String) {
        match self.reserved(function).await {
            Ok(now) => (now == Some(expected), text(now)),
            Err(err) => (false, format!("GetFunctionConcurrency failed: {err}")),
        }
    }

    /// Remembers the raise (the original from the first raise still in force) so that the
    /// schedule puts it back after CONCURRENCY_RAISE_MINUTES; `Err` says why it could not.
    async fn register_raise(
        &self,
        function: &str,
        raised: Reservation,
        alarm: Option<&str>,
        report: &mut Report,
    ) -> Result<(), String> {
        let key = self.config.safety.home.function(function).key();
        let revert_at =
            chrono::Utc::now() + chrono::Duration::minutes(self.config.concurrency_raise_minutes);
        let first = state(Some(raised.from));
        let original = match self.safety.audit.raise(RUNBOOK, &key).await {
            Ok(Some(raise)) => raise.original,
            _ => first,
        };
        report.details = Some(json!({
            "original": original["reserved_concurrency"],
            "revert_at": runbook_shared::model::timestamp(revert_at),
        }));
        self.safety
            .audit
            .put_raise(
                RUNBOOK,
                &key,
                &original,
                &state(Some(raised.to)),
                Some(revert_at),
                alarm,
            )
            .await
            .map_err(|err| {
                format!(
                    "the raise could not be recorded for its revert ({err}): put it back by hand"
                )
            })
    }
}

impl Runbook<Scaler> for ConcurrencyTarget {
    const ID: &'static str = RUNBOOK;
    const STACK_PROPERTIES: &'static [&'static str] = &["ReservedConcurrentExecutions"];
    type Diagnosis = Diagnosis;
    type Change = Reservation;

    fn resource(&self, home: &Home) -> ResourceId {
        home.function(&self.function)
    }

    fn evidence_subject(&self) -> Option<runbook_shared::model::Subject> {
        Some(runbook_shared::model::Subject::Function {
            name: self.function.clone(),
            qualifier: None,
        })
    }

    async fn managed(&self, ctx: &RunContext<'_, Scaler>) -> Step<()> {
        let function = &self.function;
        let configuration = ctx
            .clients
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(|err| {
                let err = AwsError::from_sdk(
                    "lambda:GetFunctionConfiguration",
                    &format!("function {function}"),
                    &err,
                );
                Ending::failed(if err.is(FaultKind::NotFound) {
                    format!(
                        "function {function} does not exist in this region; nothing was changed"
                    )
                } else {
                    format!("could not read {function}, nothing was changed: {err}")
                })
            })?;
        let arn = configuration.function_arn().unwrap_or_default();
        runbook_shared::guards::require_function(
            &ctx.config.safety.managed,
            &ctx.clients.lambda,
            function,
            arn,
        )
        .await
    }

    /// Raises of any function are serialised on the account's concurrency, so that two of
    /// them cannot both spend the same room above the floor.
    fn serialised_on(&self, home: &Home) -> Option<ResourceId> {
        Some(home.account_concurrency())
    }

    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let function = &self.function;
        let reserved = ctx.reserved(function).await.map_err(|err| {
            Ending::failed(format!(
                "could not read {function}'s concurrency, nothing was changed: {err}"
            ))
        })?;
        let account = ctx
            .clients
            .lambda
            .get_account_settings()
            .send()
            .await
            .map_err(|err| {
                let err = AwsError::from_sdk("lambda:GetAccountSettings", "the account", &err);
                Ending::failed(format!(
                    "could not read the account's concurrency, nothing was changed: {err}"
                ))
            })?;
        let limit = account.account_limit();
        let diagnosis = Diagnosis {
            reserved,
            unreserved: limit
                .and_then(|l| l.unreserved_concurrent_executions())
                .unwrap_or(0),
            account_limit: limit.map_or(0, |l| l.concurrent_executions()),
        };
        report.diagnosis = Some(json!({
            "reserved_concurrency": reserved,
            "account_concurrency": diagnosis.account_limit,
            "account_unreserved": diagnosis.unreserved,
            "unreserved_floor": ctx.config.unreserved_concurrency_floor,
        }));
        Ok(diagnosis)
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, d: &Diagnosis) -> Decision<Reservation> {
        plan(self, d.reserved, d.unreserved, d.account_limit, &ctx.config).map(|to| Reservation {
            from: d.reserved.unwrap_or(0),
            to,
        })
    }

    fn describe(&self, _: &RunContext<'_, Scaler>, raise: &Reservation) -> Planned {
        Planned::one(
            "lambda:PutFunctionConcurrency",
            &self.function,
            state(Some(raise.from)),
            state(Some(raise.to)),
            format!(
                "raised {}'s reserved concurrency from {} to {}",
                self.function, raise.from, raise.to
            ),
        )
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        Some(state(diagnosis.reserved))
    }

    fn resumed(&self, action: &Action) -> Option<Reservation> {
        Reservation::resumed(action)
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        raise: Reservation,
    ) -> Result<Reservation, NotApplied> {
        let function = &self.function;
        ctx.reserve(function, raise.to).await.map_err(|err| {
            NotApplied::explained(
                &err,
                format!("the raise of {function}'s concurrency failed; nothing was changed: {err}"),
            )
        })?;
        Ok(raise)
    }

    /// Remembers the raise for its put-back (not an emergency stop a person lifted: putting
    /// that back would stop the function again, which is theirs to decide) and reads it back;
    /// the alarm's OK (or the sweep) closes the throttling check.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        raise: Reservation,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let function = &self.function;
        let registered = if raise.from == 0 {
            report.notes.push(format!(
                "{function} was stopped (reserved concurrency 0) and a person lifted the stop: it is not put back automatically"
            ));
            Ok(())
        } else {
            ctx.register_raise(function, raise, ctx.alarm_name(), report)
                .await
        };
        let (ok, observed) = ctx.read_back(function, raise.to).await;
        let checks = vec![Check::new(
            "reserved_concurrency",
            ok,
            raise.to.to_string(),
            observed,
        )];
        let throttles = AwaitedMetric {
            check: "throttling_stopped",
            expected: format!("no throttles on {function}"),
            namespace: NAMESPACE.into(),
            metrics: vec![THROTTLE_METRIC.into()],
            dimensions: [("FunctionName".to_string(), function.clone())].into(),
        };
        report.verification = Verification::awaiting(checks, true, ctx.alarm_name(), throttles);
        let ending = concluded(&report.verification, summary);
        match registered {
            Err(why) => Ending::new(ending.outcome, format!("{}; {why}", ending.reason)),
            Ok(()) => ending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_shared::config::Env;

    #[test]
    fn plans_within_the_cap_and_the_floor() {
        let config = ScalerConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
            ("MAX_RESERVED_CONCURRENCY", "150"),
        ]))
        .unwrap();
        let target = ConcurrencyTarget {
            function: "f".into(),
            to: None,
        };
        assert_eq!(
            plan(&target, Some(50), 900, 1000, &config),
            Decision::Act(100)
        );
        assert_eq!(
            plan(&target, Some(100), 900, 1000, &config),
            Decision::Act(150)
        );
        assert!(
            matches!(plan(&target, Some(150), 900, 1000, &config), Decision::Skip(r) if r.starts_with("at cap"))
        );
        // 130 unreserved, floor 100: only 30 more.
        assert_eq!(
            plan(&target, Some(50), 130, 1000, &config),
            Decision::Act(80)
        );
        assert!(
            matches!(plan(&target, Some(50), 100, 1000, &config), Decision::Skip(r) if r.starts_with("floor"))
        );
        assert!(
            matches!(plan(&target, None, 900, 1000, &config), Decision::NoAction(r) if r.contains("no reserved concurrency"))
        );
    }
}
