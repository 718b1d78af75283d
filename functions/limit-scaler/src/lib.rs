//! limit-scaler: raises throttled limits within caps, verifies the change and audits it.
//! Runbooks: `dynamodb-capacity`, `lambda-concurrency`.

pub mod config;
pub mod dynamodb_capacity;
pub mod lambda_concurrency;

use std::time::Duration;

use runbook_shared::report::{Outcome, Report, TriggerInfo, TriggerKind};
use runbook_shared::safety::{Invocation, Safety};
use runbook_shared::trigger::{
    AlarmState, AlarmTrigger, Rejection, Trigger, parse_manual, recognise,
};
use serde_json::{Map, Value};

use crate::config::ScalerConfig;
use crate::dynamodb_capacity::{CapacityRequest, CapacityTarget, RunContext};
use crate::lambda_concurrency::{ConcurrencyRequest, ConcurrencyTarget};

pub const FUNCTION: &str = "limit-scaler";

/// The function's configuration and clients, built once per cold start.
pub struct Scaler {
    pub config: ScalerConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub safety: Safety,
    /// How often a resource is described while waiting for it to settle.
    pub poll_interval: Duration,
}

/// What an invocation asks for, once recognised.
enum Job {
    Capacity(CapacityTarget),
    Concurrency(ConcurrencyTarget),
}

impl Scaler {
    pub fn new(config: ScalerConfig, sdk: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self::with_clients(
            config,
            dynamodb.clone(),
            aws_sdk_cloudwatch::Client::new(sdk),
            aws_sdk_lambda::Client::new(sdk),
            dynamodb,
        )
    }

    /// With separate clients for the managed resources and for the audit table (tests replace
    /// one of them with a replay client).
    pub fn with_clients(
        config: ScalerConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
        lambda: aws_sdk_lambda::Client,
        audit_dynamodb: aws_sdk_dynamodb::Client,
    ) -> Self {
        let safety = Safety::new(config.safety.clone(), audit_dynamodb);
        Self {
            config,
            dynamodb,
            cloudwatch,
            lambda,
            safety,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Handles one invocation and returns its report; never fails, so a bad input cannot cause
    /// a retry storm.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Report {
        // On the heap: the runbooks' futures are too large for a small thread stack.
        Box::pin(self.route(event, invocation)).await
    }

    async fn route(&self, event: Value, invocation: &Invocation) -> Report {
        let trigger = match recognise(&event) {
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
        match trigger {
            Trigger::Alarm(alarm) => self.on_alarm(&alarm, info, invocation).await,
            Trigger::Manual(payload) => match self.manual_job(&payload) {
                Ok((job, dry_run)) => self.run(job, info, None, dry_run, invocation).await,
                Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
            },
            Trigger::Schedule(_) | Trigger::StackEvent { .. } => {
                invocation.timed(Report::rejected(
                    FUNCTION,
                    info,
                    "limit-scaler acts on throttle alarms and manual payloads, not on this event",
                ))
            }
        }
    }

    /// `{"table": ...}` is dynamodb-capacity, `{"function": ...}` lambda-concurrency.
    fn manual_job(&self, payload: &Map<String, Value>) -> Result<(Job, bool), Rejection> {
        if payload.contains_key("function") {
            let request: ConcurrencyRequest = parse_manual(payload)?;
            let dry_run = self.config.safety.dry_run || request.dry_run == Some(true);
            return Ok((
                Job::Concurrency(ConcurrencyTarget::from_request(&request, &self.config)?),
                dry_run,
            ));
        }
        if payload.contains_key("table") {
            let request: CapacityRequest = parse_manual(payload)?;
            let dry_run = self.config.safety.dry_run || request.dry_run == Some(true);
            return Ok((
                Job::Capacity(CapacityTarget::from_request(&request, &self.config)?),
                dry_run,
            ));
        }
        let fields: Vec<&str> = payload.keys().map(String::as_str).collect();
        Err(Rejection(format!(
            "invalid manual payload: give \"table\" (dynamodb-capacity) or \"function\" (lambda-concurrency); got {}",
            if fields.is_empty() {
                "no fields".to_string()
            } else {
                fields.join(", ")
            }
        )))
    }

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let job = match (
            CapacityTarget::from_alarm(alarm, &self.config),
            ConcurrencyTarget::from_alarm(alarm),
        ) {
            (Some(target), _) => Job::Capacity(target),
            (None, Some(target)) => Job::Concurrency(target),
            (None, None) => {
                return invocation.timed(Report::new(
                    FUNCTION,
                    info,
                    Outcome::NoAction,
                    format!(
                        "alarm {} watches no metric limit-scaler handles; supported: {} {} (dimension TableName, optionally GlobalSecondaryIndexName) and {} {} (dimension FunctionName)",
                        alarm.alarm_name,
                        dynamodb_capacity::NAMESPACE,
                        dynamodb_capacity::THROTTLE_METRICS.join(", "),
                        lambda_concurrency::NAMESPACE,
                        lambda_concurrency::THROTTLE_METRIC,
                    ),
                ));
            }
        };
        let dry_run = self.config.safety.dry_run;
        match alarm.state {
            AlarmState::Alarm => self.run(job, info, Some(alarm), dry_run, invocation).await,
            AlarmState::Ok => {
                let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                report.dry_run = dry_run;
                let (runbook, target) = match &job {
                    Job::Capacity(target) => (dynamodb_capacity::RUNBOOK, target.name()),
                    Job::Concurrency(target) => {
                        (lambda_concurrency::RUNBOOK, target.function.clone())
                    }
                };
                report.runbook = Some(runbook.into());
                report.target = Some(target.clone());
                let close = self.safety.close_on_ok(runbook, &target, alarm, report);
                self.safety
                    .once(FUNCTION, &info, dry_run, invocation, close)
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

    async fn run(
        &self,
        job: Job,
        info: TriggerInfo,
        alarm: Option<&AlarmTrigger>,
        dry_run: bool,
        invocation: &Invocation,
    ) -> Report {
        let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
        report.dry_run = dry_run;
        let alarm_name = alarm.map(|alarm| alarm.alarm_name.as_str());
        let work = Box::pin(async {
            match job {
                Job::Capacity(target) => {
                    self.raise_capacity(
                        target,
                        RunContext {
                            report,
                            alarm_name,
                            invocation,
                        },
                    )
                    .await
                }
                Job::Concurrency(target) => {
                    self.raise_concurrency(target, alarm_name, report, invocation)
                        .await
                }
            }
        });
        self.safety
            .once(FUNCTION, &info, dry_run, invocation, work)
            .await
    }
}
