//! limit-scaler: raises throttled limits within caps, verifies the change and audits it.
//! Runbooks: `dynamodb-capacity`, `lambda-concurrency`, `stored-limit`; on its schedule it puts
//! raised reservations and stored limits back when their time is up.

pub mod config;
pub mod dynamodb_capacity;
pub mod lambda_concurrency;
pub mod stored_limit;

use std::collections::HashMap;
use std::time::Duration;

use runbook_shared::audit::Raise;
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::WRITE_RESERVE;
use runbook_shared::report::{
    Check, Outcome, Output, Report, TriggerInfo, TriggerKind, Verification,
};
use runbook_shared::resource::{Resource, ResourceId};
use runbook_shared::safety::{Invocation, Safety};
use runbook_shared::trigger::{
    AlarmState, AlarmTrigger, Rejection, Trigger, parse_manual, recognise_from,
};
use serde_json::{Map, Value};

use crate::config::ScalerConfig;
use crate::dynamodb_capacity::{CapacityRequest, CapacityTarget, RunContext};
use crate::lambda_concurrency::{ConcurrencyRequest, ConcurrencyTarget};
use crate::stored_limit::{LimitTarget, StoredLimitRequest};

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
    StoredLimit(LimitTarget),
}

/// What a step of the schedule needs at least: its reads and its change, then the writes after
/// any wait (which keep `WRITE_RESERVE`). A step that no longer fits is left for the next run.
const STEP_NEEDS: Duration = Duration::from_secs(2).saturating_add(WRITE_RESERVE);

impl Job {
    fn runbook(&self) -> &'static str {
        match self {
            Job::Capacity(_) => dynamodb_capacity::RUNBOOK,
            Job::Concurrency(_) => lambda_concurrency::RUNBOOK,
            Job::StoredLimit(_) => stored_limit::RUNBOOK,
        }
    }

    fn resource(&self, config: &ScalerConfig) -> ResourceId {
        let home = &config.safety.home;
        match self {
            Job::Capacity(target) => target.resource(home),
            Job::Concurrency(target) => home.function(&target.function),
            Job::StoredLimit(target) => target.resource(home),
        }
    }
}

impl Scaler {
    /// The end of every put-back at expiry: the raise record is closed, and the value read back
    /// (`check`, read with `read_by`) settles the verification.
    async fn conclude_put_back(
        &self,
        mut report: Report,
        raise: &Raise,
        check: Check,
        summary: String,
        read_by: &str,
    ) -> Report {
        let ended = self
            .safety
            .audit
            .end_raise(&raise.runbook, &raise.resource)
            .await;
        let ok = check.ok;
        report.verification = Verification::settled(check);
        let failures = report.verification.failures();
        match ended {
            Err(err) => report.finish(
                Outcome::Failed,
                format!("{summary}, but its raise record could not be closed: {err}"),
            ),
            Ok(()) if ok => report.finish(Outcome::Remediated, summary),
            Ok(()) => report.finish(
                Outcome::Failed,
                format!("{summary}, but {read_by} does not show it ({})", failures),
            ),
        }
    }

    /// A raise that is no longer ours to put back (the resource is gone, or someone else changed
    /// it) stops being tracked; a dry run only says it would.
    async fn stop_tracking(
        &self,
        runbook: &str,
        raise: &Raise,
        report: Report,
        reason: String,
    ) -> Report {
        if report.dry_run {
            return report.finish(
                Outcome::Skipped,
                format!("{reason}; dry run: would stop tracking it"),
            );
        }
        match self.safety.audit.end_raise(runbook, &raise.resource).await {
            Ok(()) => report.finish(Outcome::Skipped, format!("{reason}, and no longer tracked")),
            Err(err) => report.finish(
                Outcome::Failed,
                format!("{reason}, but its raise record could not be closed: {err}"),
            ),
        }
    }

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

    /// Handles one invocation: one report, or one per raise put back for a schedule. Never
    /// fails, so a bad input cannot cause a retry storm.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Output {
        // On the heap: the runbooks' futures are too large for a small thread stack.
        Box::pin(self.route(event, invocation)).await
    }

    async fn route(&self, event: Value, invocation: &Invocation) -> Output {
        let trigger = match recognise_from(&event, &self.config.safety.home) {
            Ok(trigger) => trigger,
            Err(rejection) => {
                let info = TriggerInfo {
                    kind: TriggerKind::Unknown,
                    name: None,
                    event_id: None,
                };
                return invocation
                    .timed(Report::rejected(FUNCTION, info, rejection.0))
                    .into();
            }
        };
        let info = trigger.info(&invocation.request_id);
        match trigger {
            Trigger::Alarm(alarm) => self.on_alarm(&alarm, info, invocation).await.into(),
            Trigger::Manual(payload) => match self.manual_job(&payload) {
                Ok((job, dry_run)) => self.run(job, info, None, dry_run, invocation).await.into(),
                Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)).into(),
            },
            Trigger::Schedule(_) => self.put_back_expired(info, invocation).await,
            Trigger::StackEvent { .. } => invocation
                .timed(Report::rejected(
                    FUNCTION,
                    info,
                    "limit-scaler acts on throttle alarms, its schedule and manual payloads, not on stack events",
                ))
                .into(),
        }
    }

    /// `{"table": ...}` is dynamodb-capacity, `{"function": ...}` lambda-concurrency, `{"limit":
    /// ...}` stored-limit.
    fn manual_job(&self, payload: &Map<String, Value>) -> Result<(Job, bool), Rejection> {
        let env_dry_run = self.config.safety.dry_run;
        if payload.contains_key("limit") {
            let request: StoredLimitRequest = parse_manual(payload)?;
            let job = Job::StoredLimit(LimitTarget::from_spec(&request.limit, &self.config)?);
            return Ok((job, env_dry_run || request.dry_run == Some(true)));
        }
        if payload.contains_key("function") {
            let request: ConcurrencyRequest = parse_manual(payload)?;
            let job = Job::Concurrency(ConcurrencyTarget::from_request(&request, &self.config)?);
            return Ok((job, env_dry_run || request.dry_run == Some(true)));
        }
        if payload.contains_key("table") {
            let request: CapacityRequest = parse_manual(payload)?;
            let job = Job::Capacity(CapacityTarget::from_request(&request, &self.config)?);
            return Ok((job, env_dry_run || request.dry_run == Some(true)));
        }
        let fields: Vec<&str> = payload.keys().map(String::as_str).collect();
        Err(Rejection(format!(
            "invalid manual payload: give \"table\" (dynamodb-capacity), \"function\" (lambda-concurrency) or \"limit\" (stored-limit); got {}",
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
        let job = if let Some(target) = CapacityTarget::from_alarm(alarm, &self.config) {
            match target {
                Ok(target) => Job::Capacity(target),
                Err(reason) => {
                    let mut report = Report::new(FUNCTION, info, Outcome::NoAction, reason);
                    report.runbook = Some(dynamodb_capacity::RUNBOOK.into());
                    return invocation.timed(report);
                }
            }
        } else if let Some(target) = ConcurrencyTarget::from_alarm(alarm) {
            match target {
                Ok(target) => Job::Concurrency(target),
                Err(reason) => {
                    let mut report = Report::new(FUNCTION, info, Outcome::NoAction, reason);
                    report.runbook = Some(lambda_concurrency::RUNBOOK.into());
                    return invocation.timed(report);
                }
            }
        } else {
            match self.stored_limit_of(alarm).await {
                Some(Ok(target)) => Job::StoredLimit(target),
                Some(Err(rejection)) => {
                    return invocation.timed(Report::new(
                        FUNCTION,
                        info,
                        Outcome::NoAction,
                        rejection.0,
                    ));
                }
                None => {
                    return invocation.timed(Report::new(
                        FUNCTION,
                        info,
                        Outcome::NoAction,
                        format!(
                            "alarm {} watches no metric limit-scaler handles; supported: {} {} (dimension TableName, optionally GlobalSecondaryIndexName), {} {} (dimension FunctionName), or any alarm tagged runbook=stored-limit with limit-key and limit-attribute",
                            alarm.alarm_name,
                            dynamodb_capacity::NAMESPACE,
                            dynamodb_capacity::THROTTLE_METRICS.join(", "),
                            lambda_concurrency::NAMESPACE,
                            lambda_concurrency::THROTTLE_METRIC,
                        ),
                    ));
                }
            }
        };
        let dry_run = self.config.safety.dry_run;
        match alarm.state {
            AlarmState::Alarm => self.run(job, info, Some(alarm), dry_run, invocation).await,
            AlarmState::Ok => {
                let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
                report.dry_run = dry_run;
                let resource = job.resource(&self.config);
                let close = self
                    .safety
                    .close_on_ok(job.runbook(), &resource, alarm, report);
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

    /// An alarm tagged `runbook=stored-limit` names its limit in the tags `limit-key` and
    /// `limit-attribute`; `None` when it is not tagged so.
    async fn stored_limit_of(
        &self,
        alarm: &AlarmTrigger,
    ) -> Option<Result<LimitTarget, Rejection>> {
        let arn = alarm.alarm_arn.as_ref()?;
        let tags: HashMap<String, String> = match self
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
        {
            Ok(output) => output
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_string(), tag.value()?.to_string())))
                .collect(),
            Err(err) => {
                let err = AwsError::from_sdk("cloudwatch:ListTagsForResource", arn, &err);
                return Some(Err(Rejection(format!(
                    "alarm {}'s tags could not be read, so no runbook was chosen: {err}",
                    alarm.alarm_name
                ))));
            }
        };
        if tags.get("runbook").map(String::as_str) != Some(stored_limit::RUNBOOK) {
            return None;
        }
        Some(match stored_limit::spec_from_tags(&tags) {
            Some(spec) => LimitTarget::from_spec(&spec, &self.config),
            None => Err(Rejection(format!(
                "alarm {} chooses stored-limit but lacks the tags limit-key and limit-attribute",
                alarm.alarm_name
            ))),
        })
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
                Job::StoredLimit(target) => {
                    report.runbook = Some(stored_limit::RUNBOOK.into());
                    let resource = target.resource(&self.config.safety.home);
                    self.safety
                        .guarded(
                            &resource,
                            report,
                            invocation,
                            |_| true,
                            |report| self.raise_stored_limit(&target, invocation, report),
                        )
                        .await
                }
            }
        });
        self.safety
            .once(FUNCTION, &info, dry_run, invocation, work)
            .await
    }

    /// The schedule: every raised reservation and stored limit whose time is up goes back to
    /// its original, and raised capacity steps down by utilisation, each with its own report.
    /// A step that no longer fits before the deadline is left for the next run.
    async fn put_back_expired(&self, info: TriggerInfo, invocation: &Invocation) -> Output {
        let now = chrono::Utc::now();
        let mut reports = Vec::new();
        for runbook in [
            lambda_concurrency::RUNBOOK,
            stored_limit::RUNBOOK,
            dynamodb_capacity::RUNBOOK,
        ] {
            let raises = match self.safety.audit.raises(runbook).await {
                Ok(raises) => raises,
                Err(err) => {
                    let mut report = Report::new(
                        FUNCTION,
                        info.clone(),
                        Outcome::Failed,
                        format!("could not list the raises of {runbook} in force: {err}"),
                    );
                    report.runbook = Some(runbook.into());
                    reports.push(invocation.timed(report));
                    continue;
                }
            };
            for raise in raises.into_iter().filter(|raise| self.due(raise, now)) {
                let report = Box::pin(self.put_back(runbook, raise, &info, invocation)).await;
                reports.push(report);
            }
        }
        Output::Sweep { reports }
    }

    /// Whether the schedule should look at the raise now: a stored limit or a reservation once
    /// its time is up; capacity at most once per SCALE_DOWN_AFTER_HOURS.
    fn due(&self, raise: &Raise, now: chrono::DateTime<chrono::Utc>) -> bool {
        let after = chrono::Duration::minutes((self.config.scale_down_after_hours * 60.0) as i64);
        if raise.runbook == dynamodb_capacity::RUNBOOK {
            raise.raised_at + after <= now
        } else {
            raise.revert_at.is_some_and(|at| at <= now)
        }
    }

    /// A raise recorded before resources had one identity named its resource by name alone
    /// (`orders`, `orders/index/by-day`, `f`, `limits/tenant#42/rps`): read it as this
    /// function's own resource, and move the record under its key, so that what was raised
    /// then is still put back.
    async fn migrated(&self, raise: Raise) -> Result<(Raise, ResourceId), String> {
        if let Some(resource) = ResourceId::from_key(&raise.resource) {
            return Ok((raise, resource));
        }
        let home = &self.config.safety.home;
        let old = raise.resource.as_str();
        let resource = match raise.runbook.as_str() {
            lambda_concurrency::RUNBOOK => home.parse_function(old).ok(),
            dynamodb_capacity::RUNBOOK => Some(match old.split_once("/index/") {
                Some((table, index)) => home.index(table, index),
                None => home.table(old),
            }),
            stored_limit::RUNBOOK => old.split_once('/').and_then(|(table, rest)| {
                let (key, attribute) = rest.rsplit_once('/')?;
                Some(home.stored_limit(table, key, attribute))
            }),
            _ => None,
        }
        .filter(|resource| !resource.name().is_empty())
        .ok_or_else(|| {
            format!(
                "the raise record {old} of {} names no resource: delete it from the audit table",
                raise.runbook
            )
        })?;
        let audit = &self.safety.audit;
        let moved = audit
            .put_raise(
                &raise.runbook,
                &resource.key(),
                &raise.original,
                &raise.current,
                raise.revert_at,
            )
            .await;
        if let Err(err) = moved.and(audit.end_raise(&raise.runbook, old).await) {
            return Err(format!(
                "the raise record {old} could not be moved under {}: {err}",
                resource.key()
            ));
        }
        let raise = Raise {
            resource: resource.key(),
            ..raise
        };
        Ok((raise, resource))
    }

    /// One step of the schedule on one raise in force, under the resource's lease (the same
    /// one its raise takes) and once per schedule event.
    async fn put_back(
        &self,
        runbook: &'static str,
        raise: Raise,
        info: &TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let step = TriggerInfo {
            event_id: info
                .event_id
                .as_ref()
                .map(|id| format!("{id}/{runbook}/{}", raise.resource)),
            ..info.clone()
        };
        let dry_run = self.config.safety.dry_run;
        let mut report = Report::new(FUNCTION, step.clone(), Outcome::NoAction, "");
        report.runbook = Some(runbook.into());
        report.dry_run = dry_run;
        let (raise, resource) = match self.migrated(raise).await {
            Ok(migrated) => migrated,
            Err(reason) => return invocation.timed(report.finish(Outcome::Failed, reason)),
        };
        report.target = Some(resource.name());
        report.resource = Some(resource.key());
        let remaining = invocation.deadline.remaining();
        if remaining < STEP_NEEDS {
            return invocation.timed(report.finish(
                Outcome::Skipped,
                format!(
                    "deadline: left for the next run ({} ms left of the invocation, a step needs {} ms)",
                    remaining.as_millis(),
                    STEP_NEEDS.as_millis()
                ),
            ));
        }
        // Putting a limit back is not held up by the cooldown of the raise it undoes.
        let work = Box::pin(self.safety.guarded(
            &resource,
            report,
            invocation,
            |_| false,
            |report| async {
                // Under the lease, the record as it is now: a raise that ran meanwhile moved it.
                let raise = match self.safety.audit.raise(runbook, &raise.resource).await {
                    Ok(Some(raise)) if self.due(&raise, chrono::Utc::now()) => raise,
                    Ok(Some(raise)) => {
                        return report.finish(
                            Outcome::NoAction,
                            format!(
                                "raised again at {} while this run waited: it is put back later",
                                runbook_shared::audit::timestamp(raise.raised_at)
                            ),
                        );
                    }
                    Ok(None) => {
                        return report.finish(
                            Outcome::NoAction,
                            "already put back by another run",
                        );
                    }
                    Err(err) => {
                        return report.finish(
                            Outcome::Failed,
                            format!("could not read the raise record, nothing was changed: {err}"),
                        );
                    }
                };
                let raise = &raise;
                match (runbook, &resource.resource) {
                    (stored_limit::RUNBOOK, Resource::StoredLimit { .. }) => {
                        self.revert_stored_limit(raise, &resource, report).await
                    }
                    (lambda_concurrency::RUNBOOK, Resource::Function { function }) => {
                        self.revert_concurrency(raise, function, report).await
                    }
                    (dynamodb_capacity::RUNBOOK, Resource::Table { .. } | Resource::Index { .. }) => {
                        self.scale_down(raise, &resource, report, invocation).await
                    }
                    _ => report.finish(
                        Outcome::Failed,
                        format!(
                            "the raise record {} does not name a resource {runbook} changes: delete it from the audit table",
                            raise.resource
                        ),
                    ),
                }
            },
        ));
        self.safety
            .once(FUNCTION, &step, dry_run, invocation, work)
            .await
    }
}
