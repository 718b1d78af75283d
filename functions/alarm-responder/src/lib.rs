//! alarm-responder: the "Lambda failure recovery" and "emergency rollback" runbooks —
//! `lambda-rollback` (alias back to the version that worked), `lambda-resources` (timeout and
//! memory within caps), `stack-recovery` (a stack stuck in UPDATE_ROLLBACK_FAILED or in an
//! update that never ends) — `dynamodb-backup` (an on-demand backup before a risky change) and
//! `api-errors` (API Gateway 5xx: triage, then a hand-off to the runbook that owns the remedy).

pub mod alarms;
pub mod api_errors;
mod clients;
pub mod config;
pub mod dynamodb_backup;
pub mod lambda_resources;
pub mod lambda_rollback;
pub mod stack_recovery;

use std::time::Duration;

use runbook_shared::edge::answer::answer;
use runbook_shared::edge::catalog::Catalog;
use runbook_shared::edge::recognise::Recognised;
use runbook_shared::guards::Safety;
use runbook_shared::model::Invocation;
use runbook_shared::model::{AlarmState, AlarmTrigger, Rejection, parse_runbook_request};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::model::{Outcome, Report, TriggerInfo};
use runbook_shared::path::{Function, RunContext, Runbook, run};
use serde_json::{Map, Value};

pub use clients::{Clients, fleet};

use crate::api_errors::ApiErrors;
use crate::config::ResponderConfig;
use crate::dynamodb_backup::TableBackup;
use crate::lambda_resources::Resources;
use crate::lambda_rollback::Rollback;
use crate::stack_recovery::StackRecovery;

pub const FUNCTION: &str = "alarm-responder";
/// The alarm tag that chooses the runbook explicitly.
pub const RUNBOOK_TAG: &str = "runbook";

/// The runbooks alarm-responder runs: matching on this, not on their ids, makes a runbook
/// that is not wired everywhere (manual payloads, alarms) fail to compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponderRunbook {
    LambdaRollback,
    LambdaResources,
    StackRecovery,
    DynamodbBackup,
    ApiErrors,
}

impl ResponderRunbook {
    pub const ALL: [Self; 5] = [
        Self::LambdaRollback,
        Self::LambdaResources,
        Self::StackRecovery,
        Self::DynamodbBackup,
        Self::ApiErrors,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::LambdaRollback => lambda_rollback::RUNBOOK,
            Self::LambdaResources => lambda_resources::RUNBOOK,
            Self::StackRecovery => stack_recovery::RUNBOOK,
            Self::DynamodbBackup => dynamodb_backup::RUNBOOK,
            Self::ApiErrors => api_errors::RUNBOOK,
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|runbook| runbook.id() == id)
    }

    /// The runbook an `AWS/Lambda` metric chooses when the alarm has no `runbook` tag.
    pub fn for_metric(name: &str) -> Option<Self> {
        match name {
            "Errors" => Some(Self::LambdaRollback),
            "Duration" => Some(Self::LambdaResources),
            _ => None,
        }
    }

    /// Every runbook's id, for messages.
    pub fn ids() -> String {
        Self::ALL.map(Self::id).join(", ")
    }
}

/// A runbook to run, with its target.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Rollback(Rollback),
    Resources(Resources),
    Stack(StackRecovery),
    Backup(TableBackup),
    Api(ApiErrors),
}

impl Job {
    pub fn runbook(&self) -> ResponderRunbook {
        match self {
            Job::Rollback(_) => ResponderRunbook::LambdaRollback,
            Job::Resources(_) => ResponderRunbook::LambdaResources,
            Job::Stack(_) => ResponderRunbook::StackRecovery,
            Job::Backup(_) => ResponderRunbook::DynamodbBackup,
            Job::Api(_) => ResponderRunbook::ApiErrors,
        }
    }

    /// The resource it changes (what its report, history and cooldown are keyed by).
    pub fn resource(&self, home: &Home) -> ResourceId {
        match self {
            Job::Rollback(target) => Runbook::<Responder>::resource(target, home),
            Job::Resources(target) => Runbook::<Responder>::resource(target, home),
            Job::Stack(target) => Runbook::<Responder>::resource(target, home),
            Job::Backup(target) => Runbook::<Responder>::resource(target, home),
            Job::Api(target) => Runbook::<Responder>::resource(target, home),
        }
    }

    /// A manual payload that names a runbook (or a `stack`: stack-recovery), validated before
    /// any AWS call by the runbook's own request type; with whether it asks for a dry run.
    fn from_request(payload: &Map<String, Value>, home: &Home) -> Result<(Self, bool), Rejection> {
        let runbook = match (payload.get("runbook"), payload.contains_key("stack")) {
            (Some(Value::String(id)), _) => ResponderRunbook::from_id(id).ok_or_else(|| {
                Rejection(format!(
                    "unknown runbook {id:?}; alarm-responder runs {}",
                    ResponderRunbook::ids()
                ))
            })?,
            (Some(other), _) => {
                return Err(Rejection(format!(
                    "\"runbook\" must name a runbook ({}), got {other}",
                    ResponderRunbook::ids()
                )));
            }
            (None, true) => ResponderRunbook::StackRecovery,
            (None, false) => {
                return Err(Rejection(
                    "give \"alarm_name\", \"runbook\" (with its target) or \"stack\"".into(),
                ));
            }
        };
        let id = runbook.id();
        Ok(match runbook {
            ResponderRunbook::LambdaRollback => {
                let request: lambda_rollback::Request = parse_runbook_request(payload, id)?;
                (
                    Job::Rollback(Rollback::from_request(&request, home)?),
                    request.dry_run == Some(true),
                )
            }
            ResponderRunbook::LambdaResources => {
                let request: lambda_resources::Request = parse_runbook_request(payload, id)?;
                (
                    Job::Resources(Resources::from_request(&request, home)?),
                    request.dry_run == Some(true),
                )
            }
            ResponderRunbook::StackRecovery => {
                let request: stack_recovery::Request = parse_runbook_request(payload, id)?;
                (
                    Job::Stack(StackRecovery::from_request(&request, home)?),
                    request.dry_run == Some(true),
                )
            }
            ResponderRunbook::DynamodbBackup => {
                let request: dynamodb_backup::Request = parse_runbook_request(payload, id)?;
                (
                    Job::Backup(TableBackup::from_request(&request, home)?),
                    request.dry_run == Some(true),
                )
            }
            ResponderRunbook::ApiErrors => {
                let request: api_errors::Request = parse_runbook_request(payload, id)?;
                (
                    Job::Api(ApiErrors::from_request(&request)?),
                    request.dry_run == Some(true),
                )
            }
        })
    }
}

/// A function named by name, `name:qualifier` or ARN: (name, qualifier).
pub(crate) fn function_of(text: &str, home: &Home) -> Result<(String, Option<String>), Rejection> {
    if text.trim().is_empty() {
        return Err(Rejection("\"function\" must name a Lambda function".into()));
    }
    match home.parse_function(text)?.resource {
        Resource::Function { function } => Ok((function, None)),
        Resource::Alias { function, alias } => Ok((function, Some(alias))),
        _ => Err(Rejection(format!("{text:?} is not a Lambda function"))),
    }
}

/// The function's configuration and clients, built once per cold start.
pub struct Responder {
    pub config: ResponderConfig,
    pub clients: Clients,
    pub safety: Safety,
    /// How often a resource is read while waiting for it to settle.
    pub poll_interval: Duration,
}

impl Function for Responder {
    const NAME: &'static str = FUNCTION;

    fn safety(&self) -> &Safety {
        &self.safety
    }

    fn alarms(&self) -> &aws_sdk_cloudwatch::Client {
        &self.clients.cloudwatch
    }

    fn stacks(&self) -> Option<&aws_sdk_cloudformation::Client> {
        Some(&self.clients.cloudformation)
    }

    fn evidence_sources(&self) -> Option<runbook_shared::path::evidence::Sources<'_>> {
        Some(runbook_shared::path::evidence::Sources {
            cloudwatch: &self.clients.cloudwatch,
            logs: Some(&self.clients.logs),
            lambda: Some(&self.clients.lambda),
            cloudformation: Some(&self.clients.cloudformation),
        })
    }
}

impl Responder {
    pub fn new(config: ResponderConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self::with_clients(config, Clients::new(sdk))
    }

    pub fn with_clients(config: ResponderConfig, clients: Clients) -> Self {
        let safety = Safety::new(config.safety.clone(), clients.audit.clone());
        Self {
            config,
            clients,
            safety,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Handles one invocation and returns its report. Never fails.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Report {
        answer(self, Recognised::of(event), invocation).await
    }

    /// `{"alarm_name": "...", "dry_run": true}`: the alarm's current state, as if it had fired.
    async fn replayed(
        &self,
        alarm_name: &Value,
        payload: &Map<String, Value>,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let rejected =
            |reason: String| invocation.timed(Report::rejected(FUNCTION, info.clone(), reason));
        let dry_run = match payload.get("dry_run") {
            None => false,
            Some(Value::Bool(dry_run)) => *dry_run,
            Some(other) => {
                return rejected(format!("\"dry_run\" must be true or false, got {other}"));
            }
        };
        let Some(alarm_name) = alarm_name.as_str() else {
            return rejected(format!(
                "\"alarm_name\" must name an alarm, got {alarm_name}"
            ));
        };
        if payload
            .keys()
            .any(|key| key != "alarm_name" && key != "dry_run")
        {
            return rejected(
                "\"alarm_name\" replays an alarm: give it alone (or with \"dry_run\")".into(),
            );
        }
        match self.replay(alarm_name).await {
            Ok(Some(alarm)) => {
                let dry_run = self.config.safety.dry_run || dry_run;
                Box::pin(self.on_alarm_as(&alarm, info, dry_run, invocation)).await
            }
            Ok(None) => rejected(format!("alarm {alarm_name} does not exist")),
            Err(err) => invocation.timed(Report::new(
                FUNCTION,
                info,
                Outcome::Failed,
                format!("could not read alarm {alarm_name}: {err}"),
            )),
        }
    }

    /// An alarm, acted on as a dry run when `dry_run` (a person's replay can ask for one).
    async fn on_alarm_as(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        dry_run: bool,
        invocation: &Invocation,
    ) -> Report {
        let job = match self.job_of(alarm).await {
            Ok(job) => job,
            Err(reason) => {
                let mut report = Report::new(FUNCTION, info, Outcome::NoAction, reason);
                report.dry_run = dry_run;
                return invocation.timed(report);
            }
        };
        match alarm.state {
            AlarmState::Alarm => self.run(job, info, Some(alarm), dry_run, invocation).await,
            AlarmState::Ok => {
                let report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                let resource = job.resource(&self.config.safety.home);
                // An API's alarm going OK verifies the rollback api-errors handed off, which
                // keeps the incident's one open verification.
                let handed = match &job {
                    Job::Api(_) => self.handed_rollback(&resource).await,
                    _ => None,
                };
                let (runbook, resource) = handed.unwrap_or((job.runbook().id(), resource));
                let close = runbook_shared::guards::close_on_ok(
                    &self.safety,
                    &self.clients.cloudwatch,
                    runbook,
                    &resource,
                    alarm,
                    report,
                );
                runbook_shared::guards::once(
                    &self.safety,
                    FUNCTION,
                    &info,
                    false,
                    invocation,
                    close,
                )
                .await
            }
            AlarmState::InsufficientData => {
                let mut report = Report::new(
                    FUNCTION,
                    info,
                    Outcome::NoAction,
                    format!(
                        "alarm {} is INSUFFICIENT_DATA: nothing to act on",
                        alarm.alarm_name
                    ),
                );
                report.dry_run = dry_run;
                invocation.timed(report)
            }
        }
    }

    /// The alias the latest api-errors run on `api` handed to lambda-rollback (within the
    /// verification's give-up time), if it handed one.
    async fn handed_rollback(&self, api: &ResourceId) -> Option<(&'static str, ResourceId)> {
        let since = chrono::Utc::now() - chrono::Duration::hours(24);
        let record = self
            .safety
            .audit
            .last_remediation_since(&api.key(), api_errors::RUNBOOK, since)
            .await
            .inspect_err(|err| tracing::warn!(error = %err, "the handed-off rollback could not be looked up"))
            .ok()??;
        let handed = record.report.details.as_ref()?.get("handoff")?;
        let alias = ResourceId::from_key(handed.get("resource")?.as_str()?)?;
        Some((lambda_rollback::RUNBOOK, alias))
    }

    async fn run(
        &self,
        job: Job,
        info: TriggerInfo,
        alarm: Option<&AlarmTrigger>,
        dry_run: bool,
        invocation: &Invocation,
    ) -> Report {
        let mut report = Report::new(FUNCTION, info, Outcome::NoAction, "");
        report.dry_run = dry_run;
        let ctx = RunContext::new(self, invocation, alarm);
        match job {
            Job::Rollback(target) => run(&ctx, target, report).await,
            Job::Resources(target) => run(&ctx, target, report).await,
            Job::Stack(target) => run(&ctx, target, report).await,
            Job::Backup(target) => run(&ctx, target, report).await,
            Job::Api(target) => run(&ctx, target, report).await,
        }
    }
}

/// What alarm-responder does with each trigger.
impl Catalog for Responder {
    type Answer = Report;
    const TAKES: &'static str = "alarms, stack status changes and manual payloads";

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let dry_run = self.config.safety.dry_run;
        self.on_alarm_as(alarm, info, dry_run, invocation).await
    }

    /// `{"alarm_name": …}` replays an alarm; anything else names a runbook's target.
    async fn on_request(
        &self,
        payload: Map<String, Value>,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        if let Some(alarm_name) = payload.get("alarm_name") {
            return self.replayed(alarm_name, &payload, info, invocation).await;
        }
        match Job::from_request(&payload, &self.config.safety.home) {
            Ok((job, asked)) => {
                let dry_run = self.config.safety.dry_run || asked;
                self.run(job, info, None, dry_run, invocation).await
            }
            Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
        }
    }

    async fn on_stack_event(
        &self,
        detail: Value,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let stack = match detail.get("stack-id").and_then(Value::as_str) {
            Some(id) => StackRecovery::named(id, &self.config.safety.home),
            None => Err(Rejection(
                "stack status change event without a detail.stack-id".into(),
            )),
        };
        match stack {
            Ok(stack) => {
                let dry_run = self.config.safety.dry_run;
                self.run(Job::Stack(stack), info, None, dry_run, invocation)
                    .await
            }
            Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
        }
    }
}
