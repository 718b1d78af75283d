//! Runbook `lambda-resources`: a function runs into its timeout. Raise the timeout (and, when
//! asked, the memory) by a factor, within caps, and wait until the update is in force.
//!
//! Diagnose (the configuration with its RevisionId; the alias or version the alarm watches; the
//! longest run in the alarm's window) → plan (only on evidence that runs reach the timeout:
//! a latency alarm is not a timeout) → act (UpdateFunctionConfiguration with only the raised
//! fields and the RevisionId read, so a deploy landing meanwhile is never undone: on a conflict
//! it reads again and plans again) → verify (the configuration in force; the alarm's OK closes
//! the metric-level check).

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use chrono::{DateTime, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::safety::Invocation;
use runbook_shared::trigger::{AlarmTrigger, Rejection};
use serde_json::{Value, json};

use crate::Responder;
use crate::config::ResponderConfig;

pub const RUNBOOK: &str = "lambda-resources";

/// A longer timeout is only worth it when runs reach this share of the current one.
pub const TIMEOUT_EVIDENCE_SHARE: f64 = 0.9;

/// How often the plan is made again when a deploy changes the function under it.
const REPLANS: usize = 3;

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

    pub fn timeout(self) -> bool {
        matches!(self, Raise::Timeout | Raise::Both)
    }

    pub fn memory(self) -> bool {
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
    /// What an update passes back so that it applies only to the configuration it was planned
    /// from.
    pub revision: Option<String>,
}

/// The change: each raised field from → to; a field left out is not sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub timeout: Option<(i32, i32)>,
    pub memory: Option<(i32, i32)>,
    /// Why the timeout was asked for and left as it is (the evidence says latency).
    pub timeout_kept: Option<String>,
}

impl Change {
    fn state(&self, pick: fn((i32, i32)) -> i32) -> Value {
        let mut state = serde_json::Map::new();
        if let Some(timeout) = self.timeout {
            state.insert("timeout_seconds".into(), json!(pick(timeout)));
        }
        if let Some(memory) = self.memory {
            state.insert("memory_mb".into(), json!(pick(memory)));
        }
        Value::Object(state)
    }

    fn text(&self, pick: fn((i32, i32)) -> i32) -> String {
        let mut parts = Vec::new();
        if let Some(timeout) = self.timeout {
            parts.push(format!("timeout {} s", pick(timeout)));
        }
        if let Some(memory) = self.memory {
            parts.push(format!("memory {} MB", pick(memory)));
        }
        parts.join(", ")
    }

    fn in_force(&self, settings: &Settings) -> bool {
        self.timeout.is_none_or(|(_, to)| settings.timeout == to)
            && self.memory.is_none_or(|(_, to)| settings.memory == to)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(Change),
    NoAction(String),
    Skip(String),
}

/// The longest run in the window, as CloudWatch's `Maximum` of `Duration` (milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub longest_ms: Option<f64>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Plans the raise; pure, so dry runs and tests see the same plan. The timeout is raised only
/// on evidence that runs reach `TIMEOUT_EVIDENCE_SHARE` of it; nothing is ever lowered, and a
/// value already above its cap is kept.
pub fn plan(
    settings: &Settings,
    raise: Raise,
    evidence: Option<&Evidence>,
    config: &ResponderConfig,
) -> Decision {
    let scaled = |current: i32, factor: f64, cap: i32| {
        ((f64::from(current) * factor).ceil() as i32)
            .min(cap)
            .max(current)
    };
    let mut latency = None;
    let timeout = if raise.timeout() {
        let needed = f64::from(settings.timeout) * 1000.0 * TIMEOUT_EVIDENCE_SHARE;
        match evidence.and_then(|evidence| evidence.longest_ms) {
            Some(longest) if longest >= needed => Some(scaled(
                settings.timeout,
                config.timeout_factor,
                config.max_timeout_seconds,
            )),
            longest => {
                latency = Some(match longest {
                    Some(longest) => format!(
                        "latency, not timeouts: the longest run was {longest:.0} ms, {:.0}% of the {} s timeout; a longer timeout only helps runs that reach {:.0}% of it",
                        longest / (f64::from(settings.timeout) * 10.0),
                        settings.timeout,
                        TIMEOUT_EVIDENCE_SHARE * 100.0
                    ),
                    None => format!(
                        "no Duration datapoints in the window, so no evidence that runs reach the {} s timeout: nothing was raised",
                        settings.timeout
                    ),
                });
                None
            }
        }
    } else {
        None
    };
    let memory = raise
        .memory()
        .then(|| scaled(settings.memory, config.memory_factor, config.max_memory_mb));
    let change = Change {
        timeout: timeout
            .filter(|to| *to > settings.timeout)
            .map(|to| (settings.timeout, to)),
        memory: memory
            .filter(|to| *to > settings.memory)
            .map(|to| (settings.memory, to)),
        timeout_kept: latency.clone(),
    };
    if change.timeout.is_some() || change.memory.is_some() {
        return Decision::Act(change);
    }
    if let Some(latency) = latency.as_ref().filter(|_| !raise.memory()) {
        return Decision::NoAction(latency.clone());
    }
    let mut at_cap = Vec::new();
    if timeout.is_some() {
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
    Decision::Skip(format!(
        "at cap: {}; the function itself needs attention{}",
        at_cap.join(" and "),
        latency.map(|l| format!(" ({l})")).unwrap_or_default()
    ))
}

/// The window evidence is read over: the span the alarm evaluated, or the last
/// EVIDENCE_WINDOW_MINUTES when it does not say (a manual run).
pub fn evidence_window(
    alarm: Option<&AlarmTrigger>,
    config: &ResponderConfig,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    match alarm.and_then(|alarm| alarm.window) {
        Some((from, to)) if to > from => (from, to),
        _ => (
            now - chrono::Duration::minutes(config.evidence_window_minutes),
            now,
        ),
    }
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
            revision: config.revision_id().map(str::to_string),
        })
    }

    /// The settings once no update is in progress (within the deadline).
    async fn settled_settings(
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

    /// The longest run in the window, from CloudWatch.
    async fn longest_run(
        &self,
        dimensions: &[(String, String)],
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Evidence, AwsError> {
        let (from, to) = window;
        let metric = Metric::builder()
            .namespace("AWS/Lambda")
            .metric_name("Duration")
            .set_dimensions(Some(
                dimensions
                    .iter()
                    .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                    .collect(),
            ))
            .build();
        let output = self
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(
                MetricDataQuery::builder()
                    .id("longest")
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(60)
                            .stat("Maximum")
                            .build(),
                    )
                    .return_data(true)
                    .build(),
            )
            // Whole minutes around the window, as CloudWatch aggregates them.
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                from.timestamp() - from.timestamp().rem_euclid(60),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                to.timestamp() + 60 - to.timestamp().rem_euclid(60),
            ))
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "cloudwatch:GetMetricData",
                    "metric AWS/Lambda Duration",
                    &err,
                )
            })?;
        let longest_ms = output
            .metric_data_results()
            .iter()
            .flat_map(|result| result.values().iter().copied())
            .reduce(f64::max);
        Ok(Evidence {
            longest_ms,
            from,
            to,
        })
    }

    /// `Some(reason)` when the function's aliases send traffic to published versions: an alarm
    /// on the function alone counts every version's runs, and a configuration change (it
    /// applies to $LATEST) would not reach those.
    async fn aliased_traffic(&self, function: &str) -> Result<Option<String>, AwsError> {
        let mut published = Vec::new();
        let mut pages = self
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
    async fn published_traffic(
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

    pub async fn raise_resources(
        &self,
        function: &str,
        qualifier: Option<&str>,
        raise: Raise,
        alarm: Option<&AlarmTrigger>,
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
        let resource = self.config.safety.home.function(function);
        self.guarded(&resource, report, invocation, |report| {
            self.raise_admitted(function, qualifier, raise, alarm, report, invocation)
        })
        .await
    }

    async fn raise_admitted(
        &self,
        function: &str,
        qualifier: Option<&str>,
        raise: Raise,
        alarm: Option<&AlarmTrigger>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let traffic = match qualifier {
            Some(qualifier) => self.published_traffic(function, qualifier).await,
            None => self.aliased_traffic(function).await,
        };
        match traffic {
            Ok(None) => {}
            Ok(Some(reason)) => return report.finish(Outcome::NoAction, reason),
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read which versions of {function} run, nothing was changed: {err}"),
                );
            }
        }
        let evidence = if raise.timeout() {
            let mut dimensions = vec![("FunctionName".to_string(), function.to_string())];
            // An alias's or a version's runs have their own series; $LATEST's are the function's.
            if let Some(qualifier) = qualifier.filter(|q| *q != "$LATEST") {
                dimensions.push(("Resource".to_string(), format!("{function}:{qualifier}")));
            }
            let window = evidence_window(alarm, &self.config, Utc::now());
            match self.longest_run(&dimensions, window).await {
                Ok(evidence) => Some(evidence),
                Err(err) => {
                    return report.finish(
                        Outcome::Failed,
                        format!(
                            "could not read {function}'s run times, so there is no evidence for a longer timeout; nothing was changed: {err}"
                        ),
                    );
                }
            }
        } else {
            None
        };
        let evidence_json = evidence.as_ref().map(|evidence| {
            json!({
                "longest_run_ms": evidence.longest_ms,
                "from": runbook_shared::audit::timestamp(evidence.from),
                "to": runbook_shared::audit::timestamp(evidence.to),
                "timeout_share_needed": TIMEOUT_EVIDENCE_SHARE,
            })
        });

        let resource = self.config.safety.home.function(function);
        let mut budget_spent = false;
        let mut attempts = Vec::new();
        for _ in 0..REPLANS {
            let settings = match self.settled_settings(function, invocation).await {
                Ok(Some(settings)) => settings,
                Ok(None) => {
                    return report.finish(
                        Outcome::Failed,
                        format!("{function} was still being updated at the deadline; nothing was changed: run again"),
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
            report.diagnosis = Some(json!({
                "timeout_seconds": settings.timeout,
                "memory_mb": settings.memory,
                "last_update_status": settings.last_update,
                "revision_id": settings.revision,
                "evidence": evidence_json,
                "earlier_attempts": attempts,
            }));
            // Lambda's retry of this request after a crash: its first attempt's write landed.
            let observed =
                json!({"timeout_seconds": settings.timeout, "memory_mb": settings.memory});
            if let Some(action) = invocation.landed(&resource, &observed) {
                let field = |state: &Value, key: &str| {
                    state[key].as_i64().and_then(|n| i32::try_from(n).ok())
                };
                let pair =
                    |key: &str| Some((field(&action.before, key)?, field(&action.after, key)?));
                let change = Change {
                    timeout: pair("timeout_seconds"),
                    memory: pair("memory_mb"),
                    timeout_kept: None,
                };
                let summary = format!(
                    "raised {function} from {} to {}",
                    change.text(|(from, _)| from),
                    change.text(|(_, to)| to)
                );
                report.notes.push(runbook_shared::safety::RESUMED.into());
                return self
                    .verify_resources(function, change, action, summary, alarm, report, invocation)
                    .await;
            }
            let change = match plan(&settings, raise, evidence.as_ref(), &self.config) {
                Decision::Act(change) => change,
                Decision::NoAction(reason) => return report.finish(Outcome::NoAction, reason),
                Decision::Skip(reason) => return report.finish(Outcome::Skipped, reason),
            };
            let summary = format!(
                "raised {function} from {} to {}{}",
                change.text(|(from, _)| from),
                change.text(|(_, to)| to),
                change
                    .timeout_kept
                    .as_ref()
                    .map(|why| format!("; the timeout was kept: {why}"))
                    .unwrap_or_default()
            );
            let action = Action {
                api: "lambda:UpdateFunctionConfiguration".into(),
                target: function.into(),
                before: change.state(|(from, _)| from),
                after: change.state(|(_, to)| to),
                applied: false,
                error: None,
            };
            if !budget_spent {
                report = match self.budget(report).await {
                    Ok(report) => report,
                    Err(report) => return report,
                };
                budget_spent = true;
            }
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
                    format!("could not record the change about to be made, so nothing was changed: {err}"),
                );
            }
            let updated = self
                .lambda
                .update_function_configuration()
                .function_name(function)
                .set_timeout(change.timeout.map(|(_, to)| to))
                .set_memory_size(change.memory.map(|(_, to)| to))
                .set_revision_id(settings.revision.clone())
                .send()
                .await;
            match updated {
                Ok(_) => {
                    return self
                        .verify_resources(
                            function, change, action, summary, alarm, report, invocation,
                        )
                        .await;
                }
                Err(err) => {
                    let err = AwsError::from_sdk(
                        "lambda:UpdateFunctionConfiguration",
                        &format!("function {function}"),
                        &err,
                    );
                    // Another update is running, or landed since the read (the RevisionId no
                    // longer matches): read again and plan again.
                    let changed_under = err.is(FaultKind::InUse)
                        || err.code.as_deref() == Some("PreconditionFailedException");
                    if !changed_under {
                        let mut action = action;
                        action.error = Some(err.to_string());
                        report.actions.push(action);
                        return report.finish(
                            Outcome::Failed,
                            format!("the update of {function} failed; nothing was changed: {err}"),
                        );
                    }
                    attempts.push(json!({"planned": action.after, "refused": err.to_string()}));
                }
            }
        }
        report.finish(
            Outcome::Failed,
            format!(
                "{function} kept changing under {REPLANS} plans in a row (deploys in progress); nothing was changed: run again once they finish"
            ),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn verify_resources(
        &self,
        function: &str,
        change: Change,
        mut action: Action,
        summary: String,
        alarm: Option<&AlarmTrigger>,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        action.applied = true;
        report.actions.push(action);
        let expected = format!("{}, LastUpdateStatus Successful", change.text(|(_, to)| to));
        let (ok, seen, status) = match self.settled_settings(function, invocation).await {
            Ok(Some(now)) => {
                let ok = change.in_force(&now) && now.last_update == "Successful";
                let seen = format!(
                    "timeout {} s, memory {} MB, LastUpdateStatus {}",
                    now.timeout, now.memory, now.last_update
                );
                let status = if ok {
                    VerificationStatus::Pending
                } else {
                    VerificationStatus::Failed
                };
                (ok, seen, status)
            }
            Err(err) => (
                false,
                format!("GetFunctionConfiguration failed: {err}"),
                VerificationStatus::Failed,
            ),
            Ok(None) => (
                false,
                "still InProgress at the deadline".to_string(),
                VerificationStatus::Pending,
            ),
        };
        let mut checks = vec![Check::new("configuration", ok, expected, seen)];
        let mut settle_by = None;
        if status == VerificationStatus::Pending {
            let alarm_name = alarm.map(|alarm| alarm.alarm_name.as_str());
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
        let failures = report.verification.failures();
        if status == VerificationStatus::Failed {
            report.finish(
                Outcome::Failed,
                format!(
                    "{summary}, but the configuration does not show it ({})",
                    failures
                ),
            )
        } else {
            report.finish(Outcome::Remediated, summary)
        }
    }
}
