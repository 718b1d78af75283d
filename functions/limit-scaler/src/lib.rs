//! limit-scaler: raises throttled limits within caps, verifies the change and audits it.
//! Runbooks: `dynamodb-capacity`, `lambda-concurrency`, `stored-limit`; on its schedule it puts
//! raised reservations and stored limits back when their time is up, and steps raised capacity
//! back down (`schedule`). It also takes the `Runbook Handoff` events of other functions'
//! runbooks (`handoff`).

pub mod config;
pub mod dynamodb_capacity;
pub mod handoff;
pub mod lambda_concurrency;
pub mod raises;
pub mod schedule;
pub mod stored_limit;

use std::time::Duration;

use runbook_shared::edge::answer::answer;
use runbook_shared::edge::catalog::Catalog;
use runbook_shared::edge::fleet::Fleet;
use runbook_shared::edge::recognise::Recognised;
use runbook_shared::guards::Safety;
use runbook_shared::model::FleetConfig;
use runbook_shared::model::Invocation;
use runbook_shared::model::{AlarmState, AlarmTrigger, Handoff, Rejection, parse_manual};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::model::{Outcome, Output, Report, TriggerInfo};
use runbook_shared::path::evidence::Sources;
use runbook_shared::path::{Function, RunContext, Runbook, run};
use serde_json::{Map, Value};

use crate::config::ScalerConfig;
use crate::dynamodb_capacity::CapacityTarget;
use crate::lambda_concurrency::ConcurrencyTarget;
use crate::stored_limit::LimitTarget;

pub const FUNCTION: &str = "limit-scaler";

/// The runbooks limit-scaler runs: matching on this, not on their ids, makes a runbook that is
/// not wired everywhere (manual payloads, alarms, the schedule) fail to compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalerRunbook {
    DynamodbCapacity,
    LambdaConcurrency,
    StoredLimit,
}

impl ScalerRunbook {
    pub const ALL: [Self; 3] = [
        Self::DynamodbCapacity,
        Self::LambdaConcurrency,
        Self::StoredLimit,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::DynamodbCapacity => dynamodb_capacity::RUNBOOK,
            Self::LambdaConcurrency => lambda_concurrency::RUNBOOK,
            Self::StoredLimit => stored_limit::RUNBOOK,
        }
    }
}

/// The clients of the resources it changes, and of the audit table (tests replace one of them
/// with a replay client).
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub lambda: aws_sdk_lambda::Client,
    /// The stacks that may own a table or a function (a deploy in progress, drift).
    pub cloudformation: aws_sdk_cloudformation::Client,
    /// Application Auto Scaling: a registered table or index is raised through its range.
    pub auto_scaling: aws_sdk_applicationautoscaling::Client,
    /// The functions' logs, for the evidence in the reports.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub audit: aws_sdk_dynamodb::Client,
}

impl Clients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            audit: dynamodb.clone(),
            dynamodb,
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            auto_scaling: aws_sdk_applicationautoscaling::Client::new(sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
        }
    }

    /// The clients of one account and region a hub acts in, with the hub's audit table.
    pub fn at(place: &aws_config::SdkConfig, hub: &aws_config::SdkConfig) -> Self {
        Self {
            audit: aws_sdk_dynamodb::Client::new(hub),
            ..Self::new(place)
        }
    }
}

/// limit-scaler in every account and region the deployment remediates.
pub fn fleet(
    config: ScalerConfig,
    places: FleetConfig,
    sdk: &aws_config::SdkConfig,
) -> Fleet<Scaler> {
    Fleet::of(
        places,
        config.safety.clone(),
        sdk,
        move |safety, place_sdk, hub| {
            let config = ScalerConfig {
                safety,
                ..config.clone()
            };
            Scaler::with_clients(config, Clients::at(place_sdk, hub))
        },
    )
}

/// The function's configuration and clients, built once per cold start.
pub struct Scaler {
    pub config: ScalerConfig,
    pub clients: Clients,
    pub safety: Safety,
    /// How often a resource is described while waiting for it to settle.
    pub poll_interval: Duration,
}

impl Function for Scaler {
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

    fn evidence_sources(&self) -> Option<Sources<'_>> {
        Some(Sources {
            cloudwatch: &self.clients.cloudwatch,
            logs: Some(&self.clients.logs),
            lambda: Some(&self.clients.lambda),
            cloudformation: Some(&self.clients.cloudformation),
        })
    }
}

/// A runbook to run, with its target.
enum Job {
    Capacity(CapacityTarget),
    Concurrency(ConcurrencyTarget),
    StoredLimit(LimitTarget),
}

impl Job {
    fn runbook(&self) -> ScalerRunbook {
        match self {
            Job::Capacity(_) => ScalerRunbook::DynamodbCapacity,
            Job::Concurrency(_) => ScalerRunbook::LambdaConcurrency,
            Job::StoredLimit(_) => ScalerRunbook::StoredLimit,
        }
    }

    fn resource(&self, home: &Home) -> ResourceId {
        match self {
            Job::Capacity(target) => Runbook::<Scaler>::resource(target, home),
            Job::Concurrency(target) => Runbook::<Scaler>::resource(target, home),
            Job::StoredLimit(target) => Runbook::<Scaler>::resource(target, home),
        }
    }

    /// A manual payload, by the key that names its target: `{"table": ...}` is
    /// dynamodb-capacity, `{"function": ...}` lambda-concurrency, `{"limit": ...}` stored-limit.
    /// With whether it asks for a dry run.
    fn from_request(
        payload: &Map<String, Value>,
        config: &ScalerConfig,
    ) -> Result<(Self, bool), Rejection> {
        let runbook = ScalerRunbook::ALL
            .into_iter()
            .find(|runbook| payload.contains_key(request_key(*runbook)));
        let (job, dry_run) = match runbook {
            Some(ScalerRunbook::DynamodbCapacity) => {
                let request: dynamodb_capacity::Request = parse_manual(payload)?;
                let target = CapacityTarget::from_request(&request, config)?;
                (Job::Capacity(target), request.dry_run)
            }
            Some(ScalerRunbook::LambdaConcurrency) => {
                let request: lambda_concurrency::Request = parse_manual(payload)?;
                let target = ConcurrencyTarget::from_request(&request, config)?;
                (Job::Concurrency(target), request.dry_run)
            }
            Some(ScalerRunbook::StoredLimit) => {
                let request: stored_limit::Request = parse_manual(payload)?;
                let target = LimitTarget::from_request(&request, config)?;
                (Job::StoredLimit(target), request.dry_run)
            }
            None => {
                let fields: Vec<&str> = payload.keys().map(String::as_str).collect();
                let mut keys: Vec<String> = ScalerRunbook::ALL
                    .iter()
                    .map(|runbook| format!("\"{}\" ({})", request_key(*runbook), runbook.id()))
                    .collect();
                let last = keys.pop().unwrap_or_default();
                return Err(Rejection(format!(
                    "invalid manual payload: give {} or {last}; got {}",
                    keys.join(", "),
                    if fields.is_empty() {
                        "no fields".to_string()
                    } else {
                        fields.join(", ")
                    }
                )));
            }
        };
        Ok((job, config.safety.dry_run || dry_run == Some(true)))
    }
}

/// The key of a manual payload that chooses the runbook.
fn request_key(runbook: ScalerRunbook) -> &'static str {
    match runbook {
        ScalerRunbook::DynamodbCapacity => "table",
        ScalerRunbook::LambdaConcurrency => "function",
        ScalerRunbook::StoredLimit => "limit",
    }
}

impl Scaler {
    pub fn new(config: ScalerConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self::with_clients(config, Clients::new(sdk))
    }

    pub fn with_clients(config: ScalerConfig, clients: Clients) -> Self {
        let safety = Safety::new(config.safety.clone(), clients.audit.clone());
        Self {
            config,
            clients,
            safety,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Handles one invocation: one report, or one per raise put back for a schedule. Never
    /// fails, so a bad input cannot cause a retry storm.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Output {
        answer(self, Recognised::of(event), invocation).await
    }

    /// The runbook an alarm's metric (or, for stored-limit, its tags) chooses.
    async fn job_of(&self, alarm: &AlarmTrigger) -> Result<Job, (Option<ScalerRunbook>, String)> {
        let chosen = |runbook| move |reason| (Some(runbook), reason);
        if let Some(target) = CapacityTarget::from_alarm(alarm, &self.config) {
            return target
                .map(Job::Capacity)
                .map_err(chosen(ScalerRunbook::DynamodbCapacity));
        }
        if let Some(target) = ConcurrencyTarget::from_alarm(alarm) {
            return target
                .map(Job::Concurrency)
                .map_err(chosen(ScalerRunbook::LambdaConcurrency));
        }
        match LimitTarget::from_alarm(&self.clients.cloudwatch, alarm, &self.config).await {
            Some(target) => target
                .map(Job::StoredLimit)
                .map_err(|rejection| (None, rejection.0)),
            None => Err((
                None,
                format!(
                    "alarm {} watches no metric limit-scaler handles; supported: {} {} (dimension TableName, optionally GlobalSecondaryIndexName), {} {} (dimension FunctionName), or any alarm tagged runbook=stored-limit with limit-key and limit-attribute",
                    alarm.alarm_name,
                    dynamodb_capacity::NAMESPACE,
                    dynamodb_capacity::THROTTLE_METRICS.join(", "),
                    lambda_concurrency::NAMESPACE,
                    lambda_concurrency::THROTTLE_METRIC,
                ),
            )),
        }
    }

    /// Runs the job's runbook; `report` carries the trigger, the dry-run flag and any notes.
    async fn run(
        &self,
        job: Job,
        report: Report,
        alarm: Option<&AlarmTrigger>,
        invocation: &Invocation,
    ) -> Report {
        let ctx = RunContext::new(self, invocation, alarm);
        match job {
            Job::Capacity(target) => run(&ctx, target, report).await,
            Job::Concurrency(target) => run(&ctx, target, report).await,
            Job::StoredLimit(target) => run(&ctx, target, report).await,
        }
    }
}

/// What limit-scaler does with each trigger.
impl Catalog for Scaler {
    type Answer = Output;
    const TAKES: &'static str = "throttle alarms, its schedule, handoffs and manual payloads";
    /// Raises are put back in the place they were made.
    const SCHEDULE_EVERYWHERE: bool = true;

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let dry_run = self.config.safety.dry_run;
        let job = match self.job_of(alarm).await {
            Ok(job) => job,
            Err((runbook, reason)) => {
                let mut report = Report::new(FUNCTION, info, Outcome::NoAction, reason);
                report.runbook = runbook.map(|runbook| runbook.id().to_string());
                return invocation.timed(report);
            }
        };
        match alarm.state {
            AlarmState::Alarm => {
                let mut report = Report::new(FUNCTION, info, Outcome::NoAction, "");
                report.dry_run = dry_run;
                self.run(job, report, Some(alarm), invocation).await
            }
            AlarmState::Ok => {
                let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                report.dry_run = dry_run;
                let resource = job.resource(&self.config.safety.home);
                let close = runbook_shared::guards::close_on_ok(
                    &self.safety,
                    &self.clients.cloudwatch,
                    job.runbook().id(),
                    &resource,
                    alarm,
                    report,
                );
                runbook_shared::guards::once(
                    &self.safety,
                    FUNCTION,
                    &info,
                    dry_run,
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

    async fn on_request(
        &self,
        payload: Map<String, Value>,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Output {
        match Job::from_request(&payload, &self.config) {
            Ok((job, dry_run)) => {
                let mut report = Report::new(FUNCTION, info, Outcome::NoAction, "");
                report.dry_run = dry_run;
                self.run(job, report, None, invocation).await.into()
            }
            Err(rejection) => invocation
                .timed(Report::rejected(FUNCTION, info, rejection.0))
                .into(),
        }
    }

    async fn on_schedule(&self, info: TriggerInfo, invocation: &Invocation) -> Output {
        self.put_back_expired(info, invocation).await
    }

    async fn on_handoff(
        &self,
        handoff: Handoff,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        self.take_handoff(handoff, info, invocation).await
    }
}
