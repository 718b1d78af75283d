//! alarm-responder: the "Lambda failure recovery" and "emergency rollback" runbooks —
//! `lambda-rollback` (alias back to the version that worked), `lambda-resources` (timeout and
//! memory within caps) and `stack-recovery` (a stack stuck in UPDATE_ROLLBACK_FAILED or in an
//! update that never ends).

pub mod config;
pub mod lambda_resources;
pub mod lambda_rollback;
pub mod stack_recovery;

use std::collections::BTreeMap;
use std::time::Duration;

use runbook_shared::aws::AwsError;
use runbook_shared::report::{Outcome, Report, TriggerInfo, TriggerKind};
use runbook_shared::resource::{Home, Resource, ResourceId};
use runbook_shared::safety::{Invocation, Safety};
use runbook_shared::trigger::{
    AlarmState, AlarmTrigger, MetricRef, Rejection, Trigger, parse_manual, recognise_from,
};
use serde::Deserialize;
use serde_json::Value;

use crate::config::ResponderConfig;
use crate::lambda_resources::Raise;

pub const FUNCTION: &str = "alarm-responder";
pub const RUNBOOKS: [&str; 3] = [
    lambda_rollback::RUNBOOK,
    lambda_resources::RUNBOOK,
    stack_recovery::RUNBOOK,
];
/// The alarm tag that chooses the runbook explicitly.
pub const RUNBOOK_TAG: &str = "runbook";

/// The manual payload: `{"alarm_name": "..."}` replays an alarm's current state;
/// `{"runbook": "lambda-rollback", "function": "f", "alias": "live"}`,
/// `{"runbook": "lambda-resources", "function": "f", "raise": "timeout|memory|both"}` and
/// `{"stack": "name", "resources_to_skip": [...]}` run one runbook; `dry_run` with any of them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponderRequest {
    #[serde(default)]
    pub alarm_name: Option<String>,
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub raise: Option<String>,
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub resources_to_skip: Option<Vec<String>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A runbook to run, with its target.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Rollback {
        function: String,
        alias: String,
    },
    Resources {
        function: String,
        /// The alias or version the alarm (or the person) named, if any.
        qualifier: Option<String>,
        raise: Raise,
    },
    Stack {
        stack: String,
        resources_to_skip: Vec<String>,
    },
}

impl Job {
    pub fn runbook(&self) -> &'static str {
        match self {
            Job::Rollback { .. } => lambda_rollback::RUNBOOK,
            Job::Resources { .. } => lambda_resources::RUNBOOK,
            Job::Stack { .. } => stack_recovery::RUNBOOK,
        }
    }

    /// The resource it changes (what its report, history and cooldown are keyed by).
    pub fn resource(&self, home: &Home) -> ResourceId {
        match self {
            Job::Rollback { function, alias } => home.alias(function, alias),
            Job::Resources { function, .. } => home.function(function),
            Job::Stack { stack, .. } => home.stack(stack),
        }
    }

    /// Validates a manual request that names a runbook or a stack, before any AWS call;
    /// functions and stacks may be named by name or ARN.
    fn from_request(request: &ResponderRequest, home: &Home) -> Result<Self, Rejection> {
        let reject = |message: String| Err(Rejection(message));
        let required = |field: &Option<String>, name: &str, runbook: &str| match field
            .as_deref()
            .map(str::trim)
        {
            Some(value) if !value.is_empty() => Ok(value.to_string()),
            _ => Err(Rejection(format!(
                "\"{name}\" is required with \"runbook\": \"{runbook}\""
            ))),
        };
        let runbook = match (&request.runbook, &request.stack) {
            (Some(runbook), _) => runbook.as_str(),
            (None, Some(_)) => stack_recovery::RUNBOOK,
            (None, None) => {
                return reject(
                    "give \"alarm_name\", \"runbook\" (with its target) or \"stack\"".into(),
                );
            }
        };
        let unused = |fields: &[(&str, bool)]| -> Result<(), Rejection> {
            match fields.iter().find(|(_, given)| *given) {
                Some((name, _)) => Err(Rejection(format!(
                    "\"{name}\" is not used by \"runbook\": \"{runbook}\""
                ))),
                None => Ok(()),
            }
        };
        match runbook {
            lambda_rollback::RUNBOOK => {
                unused(&[
                    ("raise", request.raise.is_some()),
                    ("stack", request.stack.is_some()),
                    ("resources_to_skip", request.resources_to_skip.is_some()),
                ])?;
                let alias = required(&request.alias, "alias", runbook)?;
                let function = match function_of(
                    &required(&request.function, "function", runbook)?,
                    home,
                )? {
                    (function, None) => function,
                    (function, Some(qualifier)) if qualifier == alias => function,
                    (_, Some(qualifier)) => {
                        return reject(format!(
                            "\"function\" names {qualifier} and \"alias\" names {alias}: give the alias once"
                        ));
                    }
                };
                Ok(Job::Rollback { function, alias })
            }
            lambda_resources::RUNBOOK => {
                unused(&[
                    ("alias", request.alias.is_some()),
                    ("stack", request.stack.is_some()),
                    ("resources_to_skip", request.resources_to_skip.is_some()),
                ])?;
                let (function, qualifier) =
                    function_of(&required(&request.function, "function", runbook)?, home)?;
                Ok(Job::Resources {
                    function,
                    qualifier,
                    raise: request
                        .raise
                        .as_deref()
                        .map_or(Ok(Raise::Timeout), Raise::parse)?,
                })
            }
            stack_recovery::RUNBOOK => {
                unused(&[
                    ("function", request.function.is_some()),
                    ("alias", request.alias.is_some()),
                    ("raise", request.raise.is_some()),
                ])?;
                Ok(Job::Stack {
                    stack: stack_of(&required(&request.stack, "stack", runbook)?, home)?,
                    resources_to_skip: request.resources_to_skip.clone().unwrap_or_default(),
                })
            }
            other => reject(format!(
                "unknown runbook {other:?}; alarm-responder runs {}",
                RUNBOOKS.join(", ")
            )),
        }
    }
}

/// A function named by name, `name:qualifier` or ARN: (name, qualifier).
fn function_of(text: &str, home: &Home) -> Result<(String, Option<String>), Rejection> {
    match home.parse_function(text)?.resource {
        Resource::Function { function } => Ok((function, None)),
        Resource::Alias { function, alias } => Ok((function, Some(alias))),
        _ => Err(Rejection(format!("{text:?} is not a Lambda function"))),
    }
}

/// A stack named by name or stack id.
fn stack_of(text: &str, home: &Home) -> Result<String, Rejection> {
    match home.parse_stack(text)?.resource {
        Resource::Stack { stack } => Ok(stack),
        _ => Err(Rejection(format!("{text:?} is not a CloudFormation stack"))),
    }
}

/// The function's configuration and clients, built once per cold start.
pub struct Responder {
    pub config: ResponderConfig,
    pub lambda: aws_sdk_lambda::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub safety: Safety,
    pub poll_interval: Duration,
}

impl Responder {
    pub fn new(config: ResponderConfig, sdk: &aws_config::SdkConfig) -> Self {
        let safety = Safety::new(config.safety.clone(), aws_sdk_dynamodb::Client::new(sdk));
        Self {
            config,
            lambda: aws_sdk_lambda::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            safety,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Handles one invocation and returns its report. Never fails.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Report {
        // On the heap: the runbooks' futures are too large for a small thread stack.
        Box::pin(self.route(event, invocation)).await
    }

    async fn route(&self, event: Value, invocation: &Invocation) -> Report {
        let trigger = match recognise_from(&event, &self.config.safety.home) {
            Ok(trigger) => trigger,
            Err(rejection) => {
                let info = TriggerInfo {
                    kind: TriggerKind::Unknown,
                    name: None,
                    event_id: None,
                };
                return invocation.timed(Report::rejected(FUNCTION, info, rejection.0));
            }
        };
        let info = trigger.info(&invocation.request_id);
        let dry_run = self.config.safety.dry_run;
        match trigger {
            Trigger::Alarm(alarm) => self.on_alarm(&alarm, info, dry_run, invocation).await,
            Trigger::StackEvent { detail, .. } => {
                let stack = match detail.get("stack-id").and_then(Value::as_str) {
                    Some(id) => stack_of(id, &self.config.safety.home),
                    None => Err(Rejection("stack status change event without a detail.stack-id".into())),
                };
                match stack {
                    Ok(stack) => self.run(Job::Stack { stack, resources_to_skip: Vec::new() }, info, None, dry_run, invocation).await,
                    Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
                }
            }
            Trigger::Manual(payload) => {
                let request: ResponderRequest = match parse_manual(&payload) {
                    Ok(request) => request,
                    Err(rejection) => return invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
                };
                let dry_run = dry_run || request.dry_run == Some(true);
                if let Some(alarm_name) = &request.alarm_name {
                    if request != (ResponderRequest { alarm_name: request.alarm_name.clone(), dry_run: request.dry_run, ..Default::default() }) {
                        return invocation.timed(Report::rejected(FUNCTION, info, "\"alarm_name\" replays an alarm: give it alone (or with \"dry_run\")"));
                    }
                    return match self.replay(alarm_name).await {
                        Ok(Some(alarm)) => self.on_alarm(&alarm, info, dry_run, invocation).await,
                        Ok(None) => invocation.timed(Report::rejected(FUNCTION, info, format!("alarm {alarm_name} does not exist"))),
                        Err(err) => invocation.timed(Report::new(FUNCTION, info, Outcome::Failed, format!("could not read alarm {alarm_name}: {err}"))),
                    };
                }
                match Job::from_request(&request, &self.config.safety.home) {
                    Ok(job) => self.run(job, info, None, dry_run, invocation).await,
                    Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
                }
            }
            Trigger::Schedule(_) => invocation.timed(Report::rejected(
                FUNCTION,
                info,
                "alarm-responder acts on alarms, stack status changes and manual payloads, not on schedules",
            )),
        }
    }

    /// The alarm as it is now, shaped like the alarm event it would send.
    async fn replay(&self, alarm_name: &str) -> Result<Option<AlarmTrigger>, AwsError> {
        let alarms = self
            .cloudwatch
            .describe_alarms()
            .alarm_names(alarm_name)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "cloudwatch:DescribeAlarms",
                    &format!("alarm {alarm_name}"),
                    &err,
                )
            })?;
        let Some(alarm) = alarms.metric_alarms().first() else {
            return Ok(None);
        };
        let dimensions: BTreeMap<String, String> = alarm
            .dimensions()
            .iter()
            .filter_map(|d| Some((d.name()?.to_string(), d.value()?.to_string())))
            .collect();
        let state = match alarm.state_value().map(|state| state.as_str()) {
            Some("ALARM") => AlarmState::Alarm,
            Some("OK") => AlarmState::Ok,
            _ => AlarmState::InsufficientData,
        };
        let changed_at = alarm
            .state_updated_timestamp()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
            .unwrap_or_else(chrono::Utc::now);
        Ok(Some(AlarmTrigger {
            kind: TriggerKind::Manual,
            event_id: format!("replay:{alarm_name}"),
            alarm_name: alarm_name.to_string(),
            alarm_arn: alarm.alarm_arn().map(str::to_string),
            state,
            previous_state: None,
            reason: alarm.state_reason().unwrap_or_default().to_string(),
            changed_at,
            metrics: vec![MetricRef {
                namespace: alarm.namespace().unwrap_or_default().to_string(),
                name: alarm.metric_name().unwrap_or_default().to_string(),
                dimensions,
            }],
            window: None,
        }))
    }

    /// The alarm's `runbook` tag, if it has one.
    async fn chosen_runbook(
        &self,
        alarm: &AlarmTrigger,
    ) -> (Option<String>, BTreeMap<String, String>) {
        let Some(arn) = &alarm.alarm_arn else {
            return (None, BTreeMap::new());
        };
        match self
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
        {
            Ok(output) => {
                let tags: BTreeMap<String, String> = output
                    .tags()
                    .iter()
                    .filter_map(|tag| Some((tag.key()?.to_string(), tag.value()?.to_string())))
                    .collect();
                (tags.get(RUNBOOK_TAG).cloned(), tags)
            }
            Err(err) => {
                let err = AwsError::from_sdk("cloudwatch:ListTagsForResource", arn, &err);
                tracing::warn!(error = %err, "alarm tags unreadable: the runbook is inferred from the metric");
                (None, BTreeMap::new())
            }
        }
    }

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        dry_run: bool,
        invocation: &Invocation,
    ) -> Report {
        let (tagged, tags) = self.chosen_runbook(alarm).await;
        let lambda_metrics: Vec<&MetricRef> = alarm
            .metrics
            .iter()
            .filter(|m| m.namespace == "AWS/Lambda")
            .collect();
        let mut watched: Vec<String> = lambda_metrics
            .iter()
            .filter_map(|m| {
                let function = m.dimension("FunctionName")?;
                Some(m.dimension("Resource").unwrap_or(function).to_string())
            })
            .collect();
        watched.sort_unstable();
        watched.dedup();
        if watched.len() > 1 {
            let mut report = Report::new(
                FUNCTION,
                info,
                Outcome::NoAction,
                format!(
                    "alarm {} watches several functions ({}), so the one to act on cannot be told from the alarm: nothing was changed; alarm on each function, or run the runbook by hand on the one to change",
                    alarm.alarm_name,
                    watched.join(", ")
                ),
            );
            report.dry_run = dry_run;
            return invocation.timed(report);
        }
        let lambda_metric = lambda_metrics.first().copied();
        let runbook = tagged
            .clone()
            .or_else(|| match lambda_metric.map(|m| m.name.as_str()) {
                Some("Errors") => Some(lambda_rollback::RUNBOOK.to_string()),
                Some("Duration") => Some(lambda_resources::RUNBOOK.to_string()),
                _ => None,
            });
        let no_action = |reason: String| {
            let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, reason);
            report.dry_run = dry_run;
            invocation.timed(report)
        };
        let Some(runbook) = runbook else {
            return no_action(format!(
                "alarm {} matches no runbook: AWS/Lambda Errors runs lambda-rollback and AWS/Lambda Duration runs lambda-resources; for anything else tag the alarm {RUNBOOK_TAG}=<{}>",
                alarm.alarm_name,
                RUNBOOKS.join("|")
            ));
        };
        let function = lambda_metric
            .and_then(|m| m.dimension("FunctionName"))
            .map(str::to_string);
        let job = match runbook.as_str() {
            lambda_rollback::RUNBOOK => {
                let Some(function) = function else {
                    return no_action(format!(
                        "alarm {} has no FunctionName dimension: nothing to roll back",
                        alarm.alarm_name
                    ));
                };
                // `Resource` is `function:alias` for an alias's metrics.
                let alias = lambda_metric
                    .and_then(|m| m.dimension("Resource"))
                    .and_then(|resource| resource.strip_prefix(&format!("{function}:")))
                    .filter(|alias| !alias.is_empty() && *alias != "$LATEST")
                    .map(str::to_string);
                let Some(alias) = alias else {
                    return no_action(format!(
                        "alarm {} watches {function} without an alias: $LATEST cannot be rolled back; publish versions behind an alias",
                        alarm.alarm_name
                    ));
                };
                Job::Rollback { function, alias }
            }
            lambda_resources::RUNBOOK => {
                let Some(function) = function else {
                    return no_action(format!(
                        "alarm {} has no FunctionName dimension",
                        alarm.alarm_name
                    ));
                };
                let raise = match tags.get("raise").map(|value| Raise::parse(value)) {
                    None => Raise::Timeout,
                    Some(Ok(raise)) => raise,
                    Some(Err(rejection)) => {
                        return no_action(format!(
                            "alarm {}'s tag raise: {}",
                            alarm.alarm_name, rejection.0
                        ));
                    }
                };
                // `Resource` is `function:qualifier` for an alias's or a version's metrics.
                let qualifier = lambda_metric
                    .and_then(|m| m.dimension("Resource"))
                    .and_then(|resource| resource.strip_prefix(&format!("{function}:")))
                    .filter(|qualifier| !qualifier.is_empty())
                    .map(str::to_string);
                Job::Resources {
                    function,
                    qualifier,
                    raise,
                }
            }
            stack_recovery::RUNBOOK => match tags.get("stack") {
                Some(stack) => match stack_of(stack, &self.config.safety.home) {
                    Ok(stack) => Job::Stack {
                        stack,
                        resources_to_skip: Vec::new(),
                    },
                    Err(rejection) => {
                        return no_action(format!(
                            "alarm {}'s tag stack: {}",
                            alarm.alarm_name, rejection.0
                        ));
                    }
                },
                None => {
                    return no_action(format!(
                        "alarm {} chooses stack-recovery but has no tag stack=<name>",
                        alarm.alarm_name
                    ));
                }
            },
            other => {
                return no_action(format!(
                    "alarm {}'s tag {RUNBOOK_TAG}={other} names no runbook of alarm-responder ({})",
                    alarm.alarm_name,
                    RUNBOOKS.join(", ")
                ));
            }
        };
        match alarm.state {
            AlarmState::Alarm => self.run(job, info, Some(alarm), dry_run, invocation).await,
            AlarmState::Ok => {
                let report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                let resource = job.resource(&self.config.safety.home);
                let close = self
                    .safety
                    .close_on_ok(job.runbook(), &resource, alarm, report);
                self.safety
                    .once(FUNCTION, &info, false, invocation, close)
                    .await
            }
            AlarmState::InsufficientData => no_action(format!(
                "alarm {} is INSUFFICIENT_DATA: nothing to act on",
                alarm.alarm_name
            )),
        }
    }

    async fn run(
        &self,
        job: Job,
        info: TriggerInfo,
        alarm: Option<&AlarmTrigger>,
        dry_run: bool,
        invocation: &Invocation,
    ) -> Report {
        let resource = job.resource(&self.config.safety.home);
        let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
        report.runbook = Some(job.runbook().into());
        report.target = Some(resource.name());
        report.resource = Some(resource.key());
        report.dry_run = dry_run;
        tracing::Span::current().record("target", resource.name());
        let alarm_name = alarm.map(|alarm| alarm.alarm_name.as_str());
        let work = Box::pin(async {
            match job {
                Job::Rollback { function, alias } => {
                    self.rollback(&function, &alias, alarm_name, report, invocation)
                        .await
                }
                Job::Resources {
                    function,
                    qualifier,
                    raise,
                } => {
                    self.raise_resources(
                        &function,
                        qualifier.as_deref(),
                        raise,
                        alarm,
                        report,
                        invocation,
                    )
                    .await
                }
                Job::Stack {
                    stack,
                    resources_to_skip,
                } => {
                    self.recover_stack(&stack, &resources_to_skip, report, invocation)
                        .await
                }
            }
        });
        self.safety
            .once(FUNCTION, &info, dry_run, invocation, work)
            .await
    }

    /// The lease and cooldown around a runbook's work on the resource.
    pub(crate) async fn guarded<F, Fut>(
        &self,
        resource: &ResourceId,
        report: Report,
        invocation: &Invocation,
        work: F,
    ) -> Report
    where
        F: FnOnce(Report) -> Fut,
        Fut: std::future::Future<Output = Report>,
    {
        self.safety
            .guarded(resource, report, invocation, |_| true, work)
            .await
    }

    /// Spends the runbook's budget (or, in a dry run, checks it): `Err` is the finished report.
    pub(crate) async fn budget(&self, report: Report) -> Result<Report, Report> {
        match self.safety.spend_budget(&report).await {
            Ok(Ok(())) => Ok(report),
            Ok(Err(skip)) => Err(report.finish(Outcome::Skipped, skip.0)),
            Err(err) => Err(report.finish(
                Outcome::Failed,
                format!("could not check the action budget, nothing was changed: {err}"),
            )),
        }
    }
}
