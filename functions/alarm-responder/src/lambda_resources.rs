//! Runbook `lambda-resources`: a function's duration creeps up to its timeout. Raise the
//! timeout (and, when asked, the memory) by a factor, within caps, and wait until the update is
//! in force.

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::safety::Invocation;
use runbook_shared::trigger::Rejection;
use serde_json::json;

use crate::Responder;

pub const RUNBOOK: &str = "lambda-resources";

/// What to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raise {
    Timeout,
    Memory,
    Both,
}

impl Raise {
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        match text {
            "timeout" => Ok(Raise::Timeout),
            "memory" => Ok(Raise::Memory),
            "both" => Ok(Raise::Both),
            other => Err(Rejection(format!(
                "\"raise\" must be timeout, memory or both, got {other:?}"
            ))),
        }
    }

    fn timeout(self) -> bool {
        matches!(self, Raise::Timeout | Raise::Both)
    }

    fn memory(self) -> bool {
        matches!(self, Raise::Memory | Raise::Both)
    }
}

/// A function's settings as GetFunctionConfiguration shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub arn: String,
    pub timeout: i32,
    pub memory: i32,
    pub last_update: String,
}

impl Responder {
    async fn settings(&self, function: &str) -> Result<Settings, AwsError> {
        let config = self
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
        })
    }

    pub async fn raise_resources(
        &self,
        function: &str,
        raise: Raise,
        alarm_name: Option<&str>,
        report: Report,
        invocation: &Invocation,
    ) -> Report {
        let settings = match self.settings(function).await {
            Ok(settings) => settings,
            Err(err) if err.is(FaultKind::NotFound) => {
                return report.finish(
                    Outcome::Failed,
                    format!("function {function} does not exist; nothing was changed"),
                );
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not read {function}'s configuration, nothing was changed: {err}"
                    ),
                );
            }
        };
        let report = match self
            .config
            .safety
            .managed
            .require_managed_function(&self.lambda, function, &settings.arn, report)
            .await
        {
            Ok(report) => report,
            Err(finished) => return finished,
        };
        let lease = format!("lambda-function/{function}");
        self.guarded(&lease, report, invocation, |report| {
            self.raise_admitted(function, raise, settings, alarm_name, report, invocation)
        })
        .await
    }

    async fn raise_admitted(
        &self,
        function: &str,
        raise: Raise,
        settings: Settings,
        alarm_name: Option<&str>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let config = &self.config;
        let scaled = |current: i32, factor: f64, cap: i32| {
            ((f64::from(current) * factor).ceil() as i32)
                .min(cap)
                .max(current)
        };
        let timeout = if raise.timeout() {
            scaled(
                settings.timeout,
                config.timeout_factor,
                config.max_timeout_seconds,
            )
        } else {
            settings.timeout
        };
        let memory = if raise.memory() {
            scaled(settings.memory, config.memory_factor, config.max_memory_mb)
        } else {
            settings.memory
        };
        report.diagnosis = Some(
            json!({"timeout_seconds": settings.timeout, "memory_mb": settings.memory, "last_update_status": settings.last_update}),
        );
        if timeout == settings.timeout && memory == settings.memory {
            let mut at_cap = Vec::new();
            if raise.timeout() {
                at_cap.push(format!(
                    "timeout {} s is at MAX_TIMEOUT_SECONDS={}",
                    settings.timeout, config.max_timeout_seconds
                ));
            }
            if raise.memory() {
                at_cap.push(format!(
                    "memory {} MB is at MAX_MEMORY_MB={}",
                    settings.memory, config.max_memory_mb
                ));
            }
            return report.finish(
                Outcome::Skipped,
                format!(
                    "at cap: {function} {}; the function itself needs attention",
                    at_cap.join(" and ")
                ),
            );
        }
        let before = json!({"timeout_seconds": settings.timeout, "memory_mb": settings.memory});
        let after = json!({"timeout_seconds": timeout, "memory_mb": memory});
        let summary = format!(
            "raised {function} from timeout {} s / memory {} MB to timeout {timeout} s / memory {memory} MB",
            settings.timeout, settings.memory
        );
        let mut action = Action {
            api: "lambda:UpdateFunctionConfiguration".into(),
            target: function.into(),
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
        let update = || {
            self.lambda
                .update_function_configuration()
                .function_name(function)
                .timeout(timeout)
                .memory_size(memory)
                .send()
        };
        let mut result = update().await;
        if let Err(err) = &result
            && err
                .as_service_error()
                .is_some_and(|e| e.is_resource_conflict_exception())
        {
            // Another update is in progress: wait for it (within the deadline), then once more.
            let _ = poll_until(invocation.deadline, self.poll_interval, || async {
                self.settings(function)
                    .await
                    .ok()
                    .filter(|s| s.last_update != "InProgress")
            })
            .await;
            result = update().await;
        }
        if let Err(err) = result {
            let err = AwsError::from_sdk(
                "lambda:UpdateFunctionConfiguration",
                &format!("function {function}"),
                &err,
            );
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(
                Outcome::Failed,
                format!("the update of {function} failed; nothing was changed: {err}"),
            );
        }
        action.applied = true;
        report.actions.push(action);

        let settled = poll_until(invocation.deadline, self.poll_interval, || async {
            match self.settings(function).await {
                Ok(now) if now.last_update != "InProgress" => Some(Ok(now)),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        })
        .await;
        let expected =
            format!("timeout {timeout} s, memory {memory} MB, LastUpdateStatus Successful");
        let (ok, seen, status) = match settled {
            Some(Ok(now)) => {
                let ok = now.timeout == timeout
                    && now.memory == memory
                    && now.last_update == "Successful";
                let seen = format!(
                    "timeout {} s, memory {} MB, LastUpdateStatus {}",
                    now.timeout, now.memory, now.last_update
                );
                (
                    ok,
                    seen,
                    if ok {
                        VerificationStatus::Pending
                    } else {
                        VerificationStatus::Failed
                    },
                )
            }
            Some(Err(err)) => (
                false,
                format!("GetFunctionConfiguration failed: {err}"),
                VerificationStatus::Failed,
            ),
            None => (
                false,
                "still InProgress at the deadline".to_string(),
                VerificationStatus::Pending,
            ),
        };
        let mut checks = vec![Check::new("configuration", ok, expected, seen)];
        let mut settle_by = None;
        if status == VerificationStatus::Pending {
            let expected = alarm_name.map_or_else(
                || format!("no timeouts on {function}"),
                |alarm| format!("alarm {alarm} back to OK"),
            );
            checks.push(Check::new(
                "duration_back_to_normal",
                false,
                expected,
                "pending",
            ));
            settle_by = Some(match alarm_name {
                Some(alarm) => SettleBy::Alarm {
                    name: alarm.to_string(),
                },
                None => SettleBy::Metric {
                    namespace: "AWS/Lambda".into(),
                    metrics: vec!["Errors".into()],
                    dimensions: [("FunctionName".to_string(), function.to_string())].into(),
                    max_sum: 0.0,
                },
            });
        }
        report.verification = Verification {
            status,
            checks,
            settle_by,
        };
        if status == VerificationStatus::Failed {
            report.finish(
                Outcome::Failed,
                format!("{summary}, but the configuration does not show it"),
            )
        } else {
            report.finish(Outcome::Remediated, summary)
        }
    }
}
