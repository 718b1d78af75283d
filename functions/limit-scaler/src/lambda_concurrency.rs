//! Runbook `lambda-concurrency`: a function is throttled by its own reserved concurrency.
//! Raise the reservation by the factor within the cap, never taking the account's unreserved
//! concurrency below its floor; a function without a reservation is throttled by the account,
//! which is a diagnosis, not something to change.

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::resource::Resource;
use runbook_shared::safety::Invocation;
use runbook_shared::trigger::{AlarmTrigger, Rejection};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Scaler;
use crate::config::ScalerConfig;

pub const RUNBOOK: &str = "lambda-concurrency";
pub const NAMESPACE: &str = "AWS/Lambda";
pub const THROTTLE_METRIC: &str = "Throttles";

/// The manual payload: `{"function": "f", "reserved_concurrency": 50, "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyRequest {
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
    pub fn from_request(
        request: &ConcurrencyRequest,
        config: &ScalerConfig,
    ) -> Result<Self, Rejection> {
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

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(i32),
    NoAction(String),
    Skip(String),
}

/// How long a raise waits for another function's raise to finish with the account's
/// concurrency (raises are serialised on it so that the unreserved floor holds).
const ACCOUNT_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Plans the new reservation; pure, so dry runs and tests see the same plan. A reservation of 0
/// is an emergency stop a person set (the console's Throttle button): only a person naming the
/// new reservation may lift it.
pub fn decide(
    target: &ConcurrencyTarget,
    reserved: Option<i32>,
    unreserved: i32,
    account_limit: i32,
    config: &ScalerConfig,
) -> Decision {
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

impl Scaler {
    async fn reserved(&self, function: &str) -> Result<Option<i32>, AwsError> {
        self.lambda
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
        self.lambda
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

    pub async fn raise_concurrency(
        &self,
        target: ConcurrencyTarget,
        alarm_name: Option<&str>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let function = target.function.clone();
        let resource = self.config.safety.home.function(&function);
        report.runbook = Some(RUNBOOK.into());
        report.target = Some(resource.name());
        report.resource = Some(resource.key());
        tracing::Span::current().record("target", function.as_str());
        let configuration =
            match self
                .lambda
                .get_function_configuration()
                .function_name(&function)
                .send()
                .await
            {
                Ok(configuration) => configuration,
                Err(err) => {
                    let err = AwsError::from_sdk(
                        "lambda:GetFunctionConfiguration",
                        &format!("function {function}"),
                        &err,
                    );
                    return if err.is(FaultKind::NotFound) {
                        report.finish(Outcome::Failed, format!(
                            "function {function} does not exist in this region; nothing was changed"
                        ),
                    )
                    } else {
                        report.finish(
                            Outcome::Failed,
                            format!("could not read {function}, nothing was changed: {err}"),
                        )
                    };
                }
            };
        let arn = configuration.function_arn().unwrap_or_default();
        let report = match self
            .config
            .safety
            .managed
            .require_managed_function(&self.lambda, &function, arn, report)
            .await
        {
            Ok(report) => report,
            Err(finished) => return finished,
        };
        self.safety
            .guarded(&resource, report, invocation, |_| true, |report| async {
                if report.dry_run {
                    return self.raise_within_account(&target, alarm_name, invocation, report).await;
                }
                // Raises of any function are serialised on the account's concurrency, so that
                // two of them cannot both spend the same room above the floor.
                let account = self.config.safety.home.account_concurrency();
                match self
                    .safety
                    .acquire_waiting(&account, invocation, ACCOUNT_LEASE_WAIT)
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(skip)) => return report.finish(Outcome::Skipped, skip.0),
                    Err(err) => {
                        return report.finish(
                            Outcome::Failed,
                            format!("could not take the account's concurrency lease, nothing was changed: {err}"),
                        );
                    }
                }
                let report = self.raise_within_account(&target, alarm_name, invocation, report).await;
                self.safety.release(&account, false, invocation).await;
                report
            })
            .await
    }

    /// Reads the reservation and the account's unreserved concurrency, plans, and raises (the
    /// caller holds the function's lease and, for a live run, the account's).
    async fn raise_within_account(
        &self,
        target: &ConcurrencyTarget,
        alarm_name: Option<&str>,
        invocation: &Invocation,
        mut report: Report,
    ) -> Report {
        let function = &target.function;
        let reserved = match self.reserved(function).await {
            Ok(reserved) => reserved,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read {function}'s concurrency, nothing was changed: {err}"),
                );
            }
        };
        let account = match self.lambda.get_account_settings().send().await {
            Ok(account) => account,
            Err(err) => {
                let err = AwsError::from_sdk("lambda:GetAccountSettings", "the account", &err);
                return report.finish(
                    Outcome::Failed,
                    format!("could not read the account's concurrency, nothing was changed: {err}"),
                );
            }
        };
        let limit = account.account_limit();
        let unreserved = limit
            .and_then(|l| l.unreserved_concurrent_executions())
            .unwrap_or(0);
        let account_limit = limit.map_or(0, |l| l.concurrent_executions());
        report.diagnosis = Some(json!({
            "reserved_concurrency": reserved,
            "account_concurrency": account_limit,
            "account_unreserved": unreserved,
            "unreserved_floor": self.config.unreserved_concurrency_floor,
        }));
        let resource = self.config.safety.home.function(function);
        // Lambda's retry of this request after a crash: its first attempt's write landed.
        let observed = json!({"reserved_concurrency": reserved});
        if let Some(mut action) = invocation.landed(&resource, &observed) {
            let number = |state: &Value| {
                state["reserved_concurrency"]
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
            };
            if let (Some(current), Some(new)) = (number(&action.before), number(&action.after)) {
                action.applied = true;
                report.notes.push(runbook_shared::safety::RESUMED.into());
                report.actions.push(action);
                let summary =
                    format!("raised {function}'s reserved concurrency from {current} to {new}");
                return self
                    .after_raise(function, current, new, summary, alarm_name, report)
                    .await;
            }
        }
        let new = match decide(target, reserved, unreserved, account_limit, &self.config) {
            Decision::Act(new) => new,
            Decision::NoAction(reason) => return report.finish(Outcome::NoAction, reason),
            Decision::Skip(reason) => return report.finish(Outcome::Skipped, reason),
        };
        let current = reserved.unwrap_or(0);
        let mut action = Action {
            api: "lambda:PutFunctionConcurrency".into(),
            target: function.clone(),
            before: json!({"reserved_concurrency": current}),
            after: json!({"reserved_concurrency": new}),
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
        let summary = format!("raised {function}'s reserved concurrency from {current} to {new}");
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
        if let Err(err) = self.reserve(function, new).await {
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(
                Outcome::Failed,
                format!("the raise of {function}'s concurrency failed; nothing was changed: {err}"),
            );
        }
        action.applied = true;
        report.actions.push(action);
        self.after_raise(function, current, new, summary, alarm_name, report)
            .await
    }

    /// After the reservation was raised from `current` to `new`: remembers it for its put-back
    /// (not an emergency stop a person lifted) and verifies it.
    async fn after_raise(
        &self,
        function: &str,
        current: i32,
        new: i32,
        summary: String,
        alarm_name: Option<&str>,
        mut report: Report,
    ) -> Report {
        if current == 0 {
            // A person lifted an emergency stop: putting it back later would stop the function
            // again, which is theirs to decide.
            report.notes.push(format!(
                "{function} was stopped (reserved concurrency 0) and a person lifted the stop: it is not put back automatically"
            ));
        } else {
            self.register_raise(function, current, new, &mut report)
                .await;
        }
        let (ok, observed) = match self.reserved(function).await {
            Ok(now) => (
                now == Some(new),
                now.map_or("none".to_string(), |n| n.to_string()),
            ),
            Err(err) => (false, format!("GetFunctionConcurrency failed: {err}")),
        };
        let mut checks = vec![Check::new(
            "reserved_concurrency",
            ok,
            new.to_string(),
            observed,
        )];
        let mut settle_by = None;
        if ok {
            let expected = alarm_name.map_or_else(
                || format!("no throttles on {function}"),
                |alarm| format!("alarm {alarm} back to OK"),
            );
            checks.push(Check::new("throttling_stopped", false, expected, "pending"));
            settle_by = Some(match alarm_name {
                Some(alarm) => SettleBy::Alarm {
                    name: alarm.to_string(),
                },
                None => SettleBy::Metric {
                    namespace: NAMESPACE.into(),
                    metrics: vec![THROTTLE_METRIC.into()],
                    dimensions: [("FunctionName".to_string(), function.to_string())].into(),
                    max_sum: 0.0,
                },
            });
        }
        report.verification = Verification {
            status: if ok {
                VerificationStatus::Pending
            } else {
                VerificationStatus::Failed
            },
            checks,
            settle_by,
        };
        let failures = report.verification.failures();
        let note = std::mem::take(&mut report.reason);
        if ok {
            report.finish(
                Outcome::Remediated,
                if note.is_empty() {
                    summary
                } else {
                    format!("{summary}; {note}")
                },
            )
        } else {
            report.finish(
                Outcome::Failed,
                format!(
                    "{summary}, but GetFunctionConcurrency does not show it ({})",
                    failures
                ),
            )
        }
    }

    /// Remembers the raise (the original from the first raise still in force) so that the
    /// schedule puts it back after CONCURRENCY_RAISE_MINUTES.
    async fn register_raise(&self, function: &str, current: i32, new: i32, report: &mut Report) {
        let key = self.config.safety.home.function(function).key();
        let revert_at =
            chrono::Utc::now() + chrono::Duration::minutes(self.config.concurrency_raise_minutes);
        let original = match self.safety.audit.raises(RUNBOOK).await {
            Ok(raises) => raises
                .iter()
                .find(|r| r.resource == key)
                .map_or(json!({"reserved_concurrency": current}), |r| {
                    r.original.clone()
                }),
            Err(_) => json!({"reserved_concurrency": current}),
        };
        let registered = self
            .safety
            .audit
            .put_raise(
                RUNBOOK,
                &key,
                &original,
                &json!({"reserved_concurrency": new}),
                Some(revert_at),
            )
            .await;
        report.details = Some(
            json!({"original": original["reserved_concurrency"], "revert_at": runbook_shared::audit::timestamp(revert_at)}),
        );
        if let Err(err) = registered {
            report.reason = format!(
                "the raise could not be recorded for its revert ({err}): put it back by hand"
            );
        }
    }

    /// Puts a raised reservation back to its original once its time is up (the schedule's step).
    pub(crate) async fn revert_concurrency(
        &self,
        raise: &runbook_shared::audit::Raise,
        function: &str,
        mut report: Report,
    ) -> Report {
        let (Some(original), Some(ours)) = (
            raise.original["reserved_concurrency"]
                .as_i64()
                .and_then(|v| i32::try_from(v).ok()),
            raise.current["reserved_concurrency"]
                .as_i64()
                .and_then(|v| i32::try_from(v).ok()),
        ) else {
            return report.finish(
                Outcome::Failed,
                format!("the raise record of {function} is unreadable"),
            );
        };
        let now = match self.reserved(function).await {
            Ok(now) => now,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read {function}'s concurrency: {err}"),
                );
            }
        };
        if now != Some(ours) {
            let reason = format!(
                "{function}'s reserved concurrency was changed by someone else since it was raised to {ours} (now {}): left as it is",
                now.map_or("none".to_string(), |n| n.to_string())
            );
            return self.stop_tracking(RUNBOOK, raise, report, reason).await;
        }
        let mut action = Action {
            api: "lambda:PutFunctionConcurrency".into(),
            target: function.to_string(),
            before: json!({"reserved_concurrency": ours}),
            after: json!({"reserved_concurrency": original}),
            applied: false,
            error: None,
        };
        if report.dry_run {
            report.actions.push(action);
            return report.finish(Outcome::Planned,
                format!(
                    "dry run: would put {function}'s reserved concurrency back from {ours} to {original}"
                ),
            );
        }
        if let Err(err) = self.reserve(function, original).await {
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(Outcome::Failed,
                format!(
                    "could not put {function}'s concurrency back: {err}; the next schedule tries again"
                ),
            );
        }
        action.applied = true;
        report.actions.push(action);
        let (ok, observed) = match self.reserved(function).await {
            Ok(now) => (
                now == Some(original),
                now.map_or("none".to_string(), |n| n.to_string()),
            ),
            Err(err) => (false, format!("GetFunctionConcurrency failed: {err}")),
        };
        let check = Check::new("reserved_concurrency", ok, original.to_string(), observed);
        let summary = format!(
            "put {function}'s reserved concurrency back from {ours} to its original {original}"
        );
        self.conclude_put_back(report, raise, check, summary, "GetFunctionConcurrency")
            .await
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
            decide(&target, Some(50), 900, 1000, &config),
            Decision::Act(100)
        );
        assert_eq!(
            decide(&target, Some(100), 900, 1000, &config),
            Decision::Act(150)
        );
        assert!(
            matches!(decide(&target, Some(150), 900, 1000, &config), Decision::Skip(r) if r.starts_with("at cap"))
        );
        // 130 unreserved, floor 100: only 30 more.
        assert_eq!(
            decide(&target, Some(50), 130, 1000, &config),
            Decision::Act(80)
        );
        assert!(
            matches!(decide(&target, Some(50), 100, 1000, &config), Decision::Skip(r) if r.starts_with("floor"))
        );
        assert!(
            matches!(decide(&target, None, 900, 1000, &config), Decision::NoAction(r) if r.contains("no reserved concurrency"))
        );
    }
}
