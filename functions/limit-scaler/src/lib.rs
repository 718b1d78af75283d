//! limit-scaler: raises throttled limits within caps, verifies the change and audits it.
//! Runbooks: `dynamodb-capacity`.

pub mod config;
pub mod dynamodb_capacity;

use std::time::Duration;

use runbook_shared::report::{Outcome, Report, TriggerInfo, TriggerKind};
use runbook_shared::safety::{Invocation, Safety};
use runbook_shared::trigger::{AlarmState, Rejection, Trigger, parse_manual, recognise};
use serde_json::Value;

use crate::config::ScalerConfig;
use crate::dynamodb_capacity::{CapacityRequest, CapacityTarget, RunContext};

pub const FUNCTION: &str = "limit-scaler";

/// The function's configuration and clients, built once per cold start.
pub struct Scaler {
    pub config: ScalerConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub safety: Safety,
    /// How often a resource is described while waiting for it to settle.
    pub poll_interval: Duration,
}

impl Scaler {
    pub fn new(config: ScalerConfig, sdk: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self::with_clients(
            config,
            dynamodb.clone(),
            aws_sdk_cloudwatch::Client::new(sdk),
            dynamodb,
        )
    }

    /// With separate clients for the managed resources and for the audit table (tests replace
    /// one of them with a replay client).
    pub fn with_clients(
        config: ScalerConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
        audit_dynamodb: aws_sdk_dynamodb::Client,
    ) -> Self {
        let safety = Safety::new(config.safety.clone(), audit_dynamodb);
        Self {
            config,
            dynamodb,
            cloudwatch,
            safety,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Handles one invocation and returns its report; never fails, so a bad input cannot cause
    /// a retry storm.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Report {
        let trigger = match recognise(&event) {
            Ok(trigger) => trigger,
            Err(rejection) => {
                let info = TriggerInfo {
                    kind: TriggerKind::Unknown,
                    name: None,
                    event_id: None,
                };
                return rejected(info, rejection, invocation);
            }
        };
        let info = trigger.info(&invocation.request_id);
        match trigger {
            Trigger::Alarm(alarm) => {
                let Some(target) = CapacityTarget::from_alarm(&alarm, &self.config) else {
                    return timed(
                        invocation,
                        Report::new(
                            FUNCTION,
                            info,
                            Outcome::NoAction,
                            format!(
                                "alarm {} watches no metric limit-scaler handles; supported: {} {} (dimension TableName, optionally GlobalSecondaryIndexName)",
                                alarm.alarm_name,
                                dynamodb_capacity::NAMESPACE,
                                dynamodb_capacity::THROTTLE_METRICS.join(", ")
                            ),
                        ),
                    );
                };
                let dry_run = self.config.safety.dry_run;
                let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                report.dry_run = dry_run;
                match alarm.state {
                    AlarmState::Alarm => {
                        let run = RunContext {
                            report,
                            alarm_name: Some(&alarm.alarm_name),
                            invocation,
                        };
                        self.safety
                            .once(
                                FUNCTION,
                                &info,
                                dry_run,
                                invocation,
                                self.raise_capacity(target, run),
                            )
                            .await
                    }
                    AlarmState::Ok => {
                        self.safety
                            .once(
                                FUNCTION,
                                &info,
                                dry_run,
                                invocation,
                                self.close_verification(&target, &alarm, report),
                            )
                            .await
                    }
                    AlarmState::InsufficientData => {
                        report.reason = format!(
                            "alarm {} is INSUFFICIENT_DATA: nothing to act on",
                            alarm.alarm_name
                        );
                        invocation.timed(report)
                    }
                }
            }
            Trigger::Manual(payload) => {
                let request: CapacityRequest = match parse_manual(&payload) {
                    Ok(request) => request,
                    Err(rejection) => return rejected(info, rejection, invocation),
                };
                let target = match CapacityTarget::from_request(&request, &self.config) {
                    Ok(target) => target,
                    Err(rejection) => return rejected(info, rejection, invocation),
                };
                let dry_run = self.config.safety.dry_run || request.dry_run == Some(true);
                let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                report.dry_run = dry_run;
                let run = RunContext {
                    report,
                    alarm_name: None,
                    invocation,
                };
                self.safety
                    .once(
                        FUNCTION,
                        &info,
                        dry_run,
                        invocation,
                        self.raise_capacity(target, run),
                    )
                    .await
            }
            Trigger::Schedule(_) | Trigger::StackEvent { .. } => rejected(
                info,
                Rejection(
                    "limit-scaler acts on throttle alarms and manual payloads, not on this event"
                        .into(),
                ),
                invocation,
            ),
        }
    }
}

fn rejected(info: TriggerInfo, rejection: Rejection, invocation: &Invocation) -> Report {
    timed(
        invocation,
        Report::new(FUNCTION, info, Outcome::Rejected, rejection.0),
    )
}

/// A report decided without the guards: only its duration is left to set.
fn timed(invocation: &Invocation, mut report: Report) -> Report {
    report.duration_ms = invocation.elapsed_ms();
    report
}
