//! dlq-redriver: the "messages stuck in a dead-letter queue" runbook (`dlq-redrive`): inspect
//! what is there, redrive it to where it came from, purge it once resolved — without ever
//! losing a message, and with a ledger proving the counts add up.

pub mod config;
pub mod messages;
pub mod queues;
pub mod redrive;

use std::time::Duration;

use chrono::Utc;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::{Deadline, poll_until};
use runbook_shared::report::{
    Action, Check, Outcome, Output, Report, SettleBy, TriggerInfo, TriggerKind, Verification,
    VerificationStatus, capped, some_of,
};
use runbook_shared::safety::{Invocation, Safety};
use runbook_shared::trigger::{
    AlarmState, AlarmTrigger, Rejection, Trigger, parse_manual, recognise_from,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::RedriverConfig;
use crate::queues::{Queue, QueueRef};
use crate::redrive::{Ledger, MessageFilter, RedrivePlan};

pub const FUNCTION: &str = "dlq-redriver";
pub const RUNBOOK: &str = "dlq-redrive";
pub const NAMESPACE: &str = "AWS/SQS";
pub const DEPTH_METRIC: &str = "ApproximateNumberOfMessagesVisible";
/// Most messages one inspection samples.
pub const MAX_SAMPLE: u32 = 100;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum DlqAction {
    Inspect,
    Redrive,
    Purge,
}

/// The manual payload: `{"dlq": "<name|url|arn>", "action": "inspect|redrive|purge", "target":
/// "<queue>", "max_messages": 500, "rate_per_second": 50, "filter": {...}, "confirm": "<dlq
/// name>", "dry_run": true}`; `dlq` and `action` are required.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DlqRequest {
    pub dlq: String,
    pub action: DlqAction,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub max_messages: Option<u32>,
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    #[serde(default)]
    pub filter: Option<MessageFilter>,
    #[serde(default)]
    pub confirm: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub dlq: QueueRef,
    pub action: DlqAction,
    pub target: Option<QueueRef>,
    /// Sample size for inspect; most messages moved for redrive.
    pub max_messages: u32,
    pub rate_per_second: u32,
    pub filter: MessageFilter,
    pub dry_run: bool,
}

impl Job {
    pub fn from_request(request: &DlqRequest, config: &RedriverConfig) -> Result<Self, Rejection> {
        let reject = |message: String| Err(Rejection(message));
        let home = &config.safety.home;
        let dlq = QueueRef::parse(&request.dlq, home)?;
        let target = request
            .target
            .as_deref()
            .map(|target| QueueRef::parse(target, home))
            .transpose()?;
        if request.action != DlqAction::Purge && request.confirm.is_some() {
            return reject("\"confirm\" is only used with \"action\": \"purge\"".into());
        }
        if request.action != DlqAction::Redrive {
            for (field, given) in [
                ("target", request.target.is_some()),
                ("rate_per_second", request.rate_per_second.is_some()),
                ("filter", request.filter.is_some()),
            ] {
                if given {
                    return reject(format!(
                        "\"{field}\" is only used with \"action\": \"redrive\""
                    ));
                }
            }
        }
        let (max_messages, cap, cap_name) = match request.action {
            DlqAction::Inspect => (
                request.max_messages.unwrap_or(config.inspect_sample_size),
                MAX_SAMPLE,
                "the sample limit",
            ),
            _ => (
                request.max_messages.unwrap_or(config.max_messages_per_run),
                config.max_messages_per_run,
                "MAX_MESSAGES_PER_RUN",
            ),
        };
        if max_messages == 0 || max_messages > cap {
            return reject(format!(
                "\"max_messages\" must be from 1 to {cap} ({cap_name}), got {max_messages}"
            ));
        }
        let rate_per_second = request.rate_per_second.unwrap_or(config.rate_per_second);
        if rate_per_second == 0 || rate_per_second > config.max_rate_per_second {
            return reject(format!(
                "\"rate_per_second\" must be from 1 to {} (MAX_REDRIVE_RATE_PER_SECOND), got {rate_per_second}",
                config.max_rate_per_second
            ));
        }
        let filter = request.filter.clone().unwrap_or_default();
        filter.validate().map_err(Rejection)?;
        if request.action == DlqAction::Purge {
            match request.confirm.as_deref() {
                None => {
                    return reject(format!(
                        "purge deletes every message: confirm with \"confirm\": \"{}\"",
                        dlq.name
                    ));
                }
                Some(confirm) if confirm != dlq.name => {
                    return reject(format!(
                        "\"confirm\" must be the DLQ's name {:?} exactly, got {confirm:?}; nothing was purged",
                        dlq.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            dlq,
            action: request.action,
            target,
            max_messages,
            rate_per_second,
            filter,
            dry_run: config.safety.dry_run || request.dry_run == Some(true),
        })
    }

    /// What an alarm or a schedule does to a DLQ: redrive if allowed, else inspect.
    fn automatic(dlq: QueueRef, config: &RedriverConfig) -> Self {
        let action = if config.redrive_on_alarm {
            DlqAction::Redrive
        } else {
            DlqAction::Inspect
        };
        Self {
            dlq,
            action,
            target: None,
            max_messages: if action == DlqAction::Inspect {
                config.inspect_sample_size
            } else {
                config.max_messages_per_run
            },
            rate_per_second: config.rate_per_second,
            filter: MessageFilter::default(),
            dry_run: config.safety.dry_run,
        }
    }
}

/// The function's configuration and clients, built once per cold start.
pub struct Redriver {
    pub config: RedriverConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub safety: Safety,
    /// How often queue depths are read while waiting for them to settle.
    pub poll_interval: Duration,
    /// How long a purge waits for the queue to read empty before the health-prober's sweep
    /// settles it instead.
    pub purge_wait: Duration,
}

impl Redriver {
    pub fn new(config: RedriverConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self::with_clients(
            config,
            aws_sdk_sqs::Client::new(sdk),
            aws_sdk_cloudwatch::Client::new(sdk),
            aws_sdk_dynamodb::Client::new(sdk),
        )
    }

    pub fn with_clients(
        config: RedriverConfig,
        sqs: aws_sdk_sqs::Client,
        cloudwatch: aws_sdk_cloudwatch::Client,
        audit_dynamodb: aws_sdk_dynamodb::Client,
    ) -> Self {
        let safety = Safety::new(config.safety.clone(), audit_dynamodb);
        Self {
            config,
            sqs,
            cloudwatch,
            safety,
            poll_interval: Duration::from_secs(2),
            purge_wait: Duration::from_secs(60),
        }
    }

    /// Handles one invocation: one report, or one per DLQ for a scheduled sweep. Never fails.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Output {
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
            Trigger::Schedule(_) => self.sweep(info, invocation).await,
            Trigger::Manual(payload) => {
                let job = parse_manual::<DlqRequest>(&payload).and_then(|request| Job::from_request(&request, &self.config));
                match job {
                    Ok(job) => self.once(job, info, invocation).await,
                    Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
                }
                .into()
            }
            Trigger::StackEvent { .. } => invocation
                .timed(Report::rejected(
                    FUNCTION,
                    info,
                    "dlq-redriver acts on SQS depth alarms, schedules and manual payloads, not on stack events",
                ))
                .into(),
        }
    }

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let queue = alarm
            .metrics
            .iter()
            .find(|metric| metric.namespace == NAMESPACE && metric.name == DEPTH_METRIC)
            .and_then(|metric| metric.dimension("QueueName"));
        let Some(queue) = queue else {
            return invocation.timed(Report::new(
                FUNCTION,
                info,
                Outcome::NoAction,
                format!("alarm {} watches no metric dlq-redriver handles; supported: {NAMESPACE} {DEPTH_METRIC} (dimension QueueName) on a DLQ", alarm.alarm_name),
            ));
        };
        match alarm.state {
            AlarmState::Alarm => match QueueRef::parse(queue, &self.config.safety.home) {
                Ok(dlq) => {
                    self.once(Job::automatic(dlq, &self.config), info, invocation)
                        .await
                }
                Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
            },
            state => {
                let mut report = Report::new(
                    FUNCTION,
                    info,
                    Outcome::NoAction,
                    format!(
                        "alarm {} is {} for queue {queue}: nothing to do",
                        alarm.alarm_name,
                        state.as_str()
                    ),
                );
                report.runbook = Some(RUNBOOK.into());
                report.target = Some(queue.to_string());
                invocation.timed(report)
            }
        }
    }

    /// A scheduled run: every DLQ in DLQ_QUEUES, each with its own report.
    async fn sweep(&self, info: TriggerInfo, invocation: &Invocation) -> Output {
        if self.config.dlq_queues.is_empty() {
            return invocation
                .timed(Report::new(
                    FUNCTION,
                    info,
                    Outcome::NoAction,
                    "DLQ_QUEUES is empty: the schedule has nothing to sweep",
                ))
                .into();
        }
        let mut reports = Vec::with_capacity(self.config.dlq_queues.len());
        for queue in &self.config.dlq_queues {
            let info = TriggerInfo {
                event_id: info.event_id.as_ref().map(|id| format!("{id}/{queue}")),
                ..info.clone()
            };
            reports.push(match QueueRef::parse(queue, &self.config.safety.home) {
                Ok(dlq) => {
                    self.once(Job::automatic(dlq, &self.config), info, invocation)
                        .await
                }
                Err(rejection) => invocation.timed(Report::rejected(
                    FUNCTION,
                    info,
                    format!("DLQ_QUEUES: {}", rejection.0),
                )),
            });
        }
        Output::Sweep { reports }
    }

    async fn once(&self, job: Job, info: TriggerInfo, invocation: &Invocation) -> Report {
        let dry_run = job.dry_run;
        let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
        report.runbook = Some(RUNBOOK.into());
        report.target = Some(job.dlq.name.clone());
        report.dry_run = dry_run;
        tracing::Span::current().record("target", job.dlq.name.as_str());
        self.safety
            .once(
                FUNCTION,
                &info,
                dry_run,
                invocation,
                self.execute(job, report, invocation),
            )
            .await
    }

    async fn execute(&self, job: Job, mut report: Report, invocation: &Invocation) -> Report {
        let dlq = match queues::resolve(&self.sqs, &job.dlq).await {
            Ok(dlq) => dlq,
            Err(err) if err.is(FaultKind::NotFound) => {
                return report.finish(
                    Outcome::Rejected,
                    queues::lookup_failure(&job.dlq.name, &err),
                );
            }
            Err(err) => {
                return report.finish(Outcome::Failed, queues::lookup_failure(&job.dlq.name, &err));
            }
        };
        let sources = match queues::sources(&self.sqs, &dlq).await {
            Ok(sources) => sources,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not list the sources of {}, nothing was changed: {err}",
                        dlq.name
                    ),
                );
            }
        };
        // A queue no source fails into (a Lambda OnFailure destination, say) can be inspected
        // and purged; its messages name no source to go back to, so a redrive needs a target.
        let mut job = job;
        if sources.is_empty() && job.action == DlqAction::Redrive && job.target.is_none() {
            let why = format!(
                "{} is not a dead-letter queue of any source (no queue's RedrivePolicy points to it), so its messages have nowhere to go back to",
                dlq.name
            );
            if report.trigger.kind.is_manual() {
                return report.finish(
                    Outcome::Rejected,
                    format!("{why}: give a \"target\" to redrive them; nothing was changed"),
                );
            }
            report
                .notes
                .push(format!("{why}: inspected instead of redriven"));
            job.action = DlqAction::Inspect;
            job.max_messages = self.config.inspect_sample_size;
        }
        match queues::is_managed(&self.sqs, &self.config.safety.managed, &dlq).await {
            Ok(true) => {}
            Ok(false) => {
                return report.finish(
                    Outcome::Skipped,
                    self.config.safety.managed.refusal("queue", &dlq.name),
                );
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not check that {} is managed, nothing was changed: {err}",
                        dlq.name
                    ),
                );
            }
        }
        report.diagnosis = Some(json!({
            "dlq": dlq,
            "sources": capped(&sources.iter().map(|source| source.name.as_str()).collect::<Vec<_>>()),
        }));
        match job.action {
            DlqAction::Inspect => {
                self.inspect(&dlq, &sources, job.max_messages, report, invocation)
                    .await
            }
            DlqAction::Purge => {
                self.guarded(&dlq, job, report, invocation, |report| {
                    self.purge(&dlq, report, invocation)
                })
                .await
            }
            DlqAction::Redrive => {
                let plan = match self.plan(&dlq, &sources, &job).await {
                    Ok(plan) => plan,
                    Err((outcome, reason)) => return report.finish(outcome, reason),
                };
                self.guarded(&dlq, job, report, invocation, |report| {
                    self.redrive(plan, report, invocation)
                })
                .await
            }
        }
    }

    /// The lease, cooldown and budget around an action that changes the DLQ.
    async fn guarded<F, Fut>(
        &self,
        dlq: &Queue,
        job: Job,
        report: Report,
        invocation: &Invocation,
        act: F,
    ) -> Report
    where
        F: FnOnce(Report) -> Fut,
        Fut: std::future::Future<Output = Report>,
    {
        let resource = self.config.safety.home.queue(&dlq.name);
        let mut report = report;
        report.resource = Some(resource.key());
        let purge = job.action == DlqAction::Purge;
        // A redrive stopped early is continued by the next run; a purge is confirmed by hand.
        let counts = |record: &runbook_shared::audit::AuditRecord| {
            !purge
                && record
                    .report
                    .details
                    .as_ref()
                    .is_some_and(|details| details["complete"] == json!(true))
        };
        match self
            .safety
            .admit(&resource, &report, invocation, counts)
            .await
        {
            Ok(Ok(note)) => report.notes.extend(note),
            Ok(Err(skip)) => return report.finish(Outcome::Skipped, skip.0),
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("the safety checks could not run, nothing was changed: {err}"),
                );
            }
        }
        let mut report = if dlq.depth() == 0 && dlq.delayed == 0 {
            report.finish(
                Outcome::NoAction,
                format!(
                    "{} is empty: nothing to {}",
                    dlq.name,
                    if purge { "purge" } else { "redrive" }
                ),
            )
        } else {
            match self.safety.spend_budget(&report).await {
                Ok(Ok(())) => act(report).await,
                Ok(Err(skip)) => report.finish(Outcome::Skipped, skip.0),
                Err(err) => report.finish(
                    Outcome::Failed,
                    format!("could not check the action budget, nothing was changed: {err}"),
                ),
            }
        };
        self.safety.finish(&mut report, invocation).await;
        self.safety
            .release(&resource, job.dry_run, invocation)
            .await;
        report
    }

    /// Counts, the oldest message's age, and a sample grouped by source; every sampled message
    /// is made visible again at once.
    async fn inspect(
        &self,
        dlq: &Queue,
        sources: &[Queue],
        sample_size: u32,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let mut sampled: Vec<messages::Received> = Vec::new();
        let mut error = None;
        while (sampled.len() as u32) < sample_size {
            let want = (sample_size - sampled.len() as u32).min(10) as i32;
            match messages::receive(&self.sqs, dlq, want, 30, 0).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    let before = sampled.len();
                    for message in batch {
                        if !sampled.iter().any(|seen| seen.id == message.id) {
                            sampled.push(message);
                        }
                    }
                    if sampled.len() == before {
                        break;
                    }
                }
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        let receipts: Vec<(String, String)> = sampled
            .iter()
            .map(|m| (m.id.clone(), m.receipt.clone()))
            .collect();
        let released =
            messages::release(&self.sqs, dlq, &receipts, invocation.wait_deadline()).await;
        if let Some(err) = released.error {
            error.get_or_insert(err);
        }
        let not_released = released.not_released;
        let now = Utc::now();
        let oldest_sampled = sampled.iter().filter_map(|m| m.age_seconds(now)).max();
        let (oldest, oldest_from) = match self.oldest_age(dlq).await {
            Some(age) => (Some(age), "cloudwatch ApproximateAgeOfOldestMessage"),
            None => (oldest_sampled, "sample"),
        };
        let mut by_source: std::collections::BTreeMap<String, Vec<Value>> =
            std::collections::BTreeMap::new();
        for message in &sampled {
            let named = message.source_arn.as_deref();
            let source = match named.and_then(|arn| sources.iter().find(|s| s.arn == arn)) {
                Some(source) => source.name.clone(),
                None => match (named, message.lambda_failure()) {
                    (Some(arn), _) => format!("{arn} (no longer a source)"),
                    (None, Some(failure)) => failure,
                    (None, None) if sources.len() == 1 => sources[0].name.clone(),
                    (None, None) => "unknown".into(),
                },
            };
            by_source.entry(source).or_default().push(message.summary());
        }
        let after = queues::describe(&self.sqs, &dlq.name, &dlq.url).await;
        report.details = Some(json!({
            "count": {"visible": dlq.visible, "in_flight": dlq.in_flight, "delayed": dlq.delayed},
            "oldest_age_seconds": oldest,
            "oldest_age_from": oldest_from,
            "sampled": sampled.len(),
            "by_source": by_source,
        }));
        let mut checks = vec![Check::new(
            "sample_released",
            not_released.is_empty(),
            format!("{} sampled messages visible again", sampled.len()),
            if not_released.is_empty() {
                "all released".to_string()
            } else {
                format!(
                    "not released (they reappear when their visibility timeout ends): {}",
                    runbook_shared::report::some_of(&not_released, 10)
                )
            },
        )];
        if let Ok(after) = &after {
            checks.push(Check::new(
                "depth_unchanged",
                after.depth() + after.delayed == dlq.depth() + dlq.delayed,
                (dlq.depth() + dlq.delayed).to_string(),
                (after.depth() + after.delayed).to_string(),
            ));
        }
        let ok = checks.iter().all(|check| check.ok) && error.is_none();
        report.verification = Verification {
            settle_by: None,
            status: if ok {
                VerificationStatus::Verified
            } else {
                VerificationStatus::Failed
            },
            checks,
        };
        let age = oldest.map_or_else(String::new, |age| format!(", oldest {age} s"));
        match error {
            Some(err) => report.finish(Outcome::Failed,
                format!("inspection of {} failed: {err}", dlq.name),
            ),
            None => report.finish(Outcome::NoAction,
                format!(
                    "{} holds {} messages ({} in flight{age}); sampled {} and made them visible again; nothing was changed{}",
                    dlq.name,
                    dlq.depth(),
                    dlq.in_flight,
                    sampled.len(),
                    if self.config.redrive_on_alarm {
                        ""
                    } else {
                        " (REDRIVE_ON_ALARM is false: redrive by hand with \"action\": \"redrive\")"
                    }
                ),
            ),
        }
    }

    /// ApproximateAgeOfOldestMessage's latest maximum, if CloudWatch has one.
    async fn oldest_age(&self, dlq: &Queue) -> Option<i64> {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        let end = Utc::now();
        let query = MetricDataQuery::builder()
            .id("age")
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace(NAMESPACE)
                            .metric_name("ApproximateAgeOfOldestMessage")
                            .dimensions(
                                Dimension::builder()
                                    .name("QueueName")
                                    .value(&dlq.name)
                                    .build(),
                            )
                            .build(),
                    )
                    .period(60)
                    .stat("Maximum")
                    .build(),
            )
            .build();
        let output = self
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query)
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs((end - chrono::Duration::minutes(15)).timestamp()))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(end.timestamp()))
            .send()
            .await
            .inspect_err(|err| tracing::warn!(error = %AwsError::from_sdk("cloudwatch:GetMetricData", &dlq.name, err), "oldest age from the sample instead"))
            .ok()?;
        output
            .metric_data_results()
            .first()?
            .values()
            .first()
            .map(|age| *age as i64)
    }

    /// Decides the fallback target: the payload's (a source of this DLQ, or managed), else the
    /// single source. Messages naming their own source go there regardless.
    async fn plan(
        &self,
        dlq: &Queue,
        sources: &[Queue],
        job: &Job,
    ) -> Result<RedrivePlan, (Outcome, String)> {
        // Messages go back into their sources: those are changed too, so they must be managed.
        for source in sources {
            let managed = queues::is_managed(&self.sqs, &self.config.safety.managed, source)
                .await
                .map_err(|err| {
                    (
                        Outcome::Failed,
                        format!(
                            "could not check that source {} is managed: {err}",
                            source.name
                        ),
                    )
                })?;
            if !managed {
                return Err((
                    Outcome::Skipped,
                    format!(
                        "{} redrives into {}, and {}",
                        dlq.name,
                        source.name,
                        self.config.safety.managed.refusal("queue", &source.name)
                    ),
                ));
            }
        }
        let fallback = match &job.target {
            Some(reference) => {
                let target = queues::resolve(&self.sqs, reference).await.map_err(|err| {
                    let outcome = if err.is(FaultKind::NotFound) {
                        Outcome::Rejected
                    } else {
                        Outcome::Failed
                    };
                    (outcome, queues::lookup_failure(&reference.name, &err))
                })?;
                let is_source = sources.iter().any(|source| source.url == target.url);
                if !is_source {
                    let managed =
                        queues::is_managed(&self.sqs, &self.config.safety.managed, &target)
                            .await
                            .map_err(|err| {
                                (
                                    Outcome::Failed,
                                    format!(
                                        "could not check that target {} is managed: {err}",
                                        target.name
                                    ),
                                )
                            })?;
                    if !managed {
                        return Err((
                            Outcome::Skipped,
                            format!(
                                "target {} is not a source of {} and {}",
                                target.name,
                                dlq.name,
                                self.config.safety.managed.refusal("queue", &target.name)
                            ),
                        ));
                    }
                }
                if target.fifo != dlq.fifo {
                    return Err((
                        Outcome::Rejected,
                        format!(
                            "target {} is a {} queue and {} a {} queue: messages cannot move between the two kinds",
                            target.name,
                            if target.fifo { "FIFO" } else { "standard" },
                            dlq.name,
                            if dlq.fifo { "FIFO" } else { "standard" }
                        ),
                    ));
                }
                Some(target)
            }
            None if sources.len() == 1 => Some(sources[0].clone()),
            None => None,
        };
        Ok(RedrivePlan {
            dlq: dlq.clone(),
            sources: sources.to_vec(),
            retarget: job.target.is_some(),
            fallback,
            max_messages: job.max_messages,
            rate_per_second: job.rate_per_second,
            filter: job.filter.clone(),
            max_redrives: self.config.max_redrives,
            concurrency: self.config.concurrency,
        })
    }

    async fn redrive(
        &self,
        plan: RedrivePlan,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let dlq = &plan.dlq;
        let candidates: Vec<&Queue> = match &plan.fallback {
            Some(fallback) if !plan.sources.iter().any(|s| s.url == fallback.url) => {
                plan.sources.iter().chain([fallback]).collect()
            }
            _ => plan.sources.iter().collect(),
        };
        report.details = Some(json!({
            "plan": {
                "max_messages": plan.max_messages,
                "rate_per_second": plan.rate_per_second,
                "concurrency": plan.concurrency,
                "max_redrives": plan.max_redrives,
                "filter": plan.filter,
                "fallback_target": plan.fallback.as_ref().map(|q| q.name.as_str()),
            }
        }));
        if report.dry_run {
            let names: Vec<String> = candidates.iter().map(|q| q.name.clone()).collect();
            report.actions = candidates
                .iter()
                .take(runbook_shared::report::LIST_CAP)
                .map(|target| Action {
                    api: "sqs:SendMessageBatch".into(),
                    target: target.name.clone(),
                    before: json!({"dlq_depth": dlq.depth(), "target_depth": target.depth()}),
                    after: json!({"moves_up_to": plan.max_messages.min(u32::try_from(dlq.depth()).unwrap_or(u32::MAX))}),
                    applied: false,
                    error: None,
                })
                .collect();
            let reason = format!(
                "dry run: would redrive up to {} of the {} messages in {} to {} at {}/s, leaving messages redriven {} times as poison",
                plan.max_messages,
                dlq.depth(),
                dlq.name,
                if plan.fallback.is_some() || plan.sources.len() == 1 {
                    some_of(&names, 10)
                } else {
                    format!("their own sources among {}", some_of(&names, 10))
                },
                plan.rate_per_second,
                plan.max_redrives
            );
            return report.finish(Outcome::Planned, reason);
        }

        let result = redrive::run(&self.sqs, &plan, invocation.deadline).await;
        let expected = dlq.depth() - i64::try_from(result.ledger.moved).unwrap_or(i64::MAX);
        // SQS counts are approximate and lag: wait (within the deadline) for them to settle.
        let settle = Deadline::within(
            invocation
                .wait_deadline()
                .remaining()
                .min(Duration::from_secs(20)),
        );
        let dlq_after = poll_until(settle, self.poll_interval, || async {
            match queues::describe(&self.sqs, &dlq.name, &dlq.url).await {
                Ok(after) if after.depth() == expected => Some(Ok(after)),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            }
        })
        .await;
        let dlq_after = match dlq_after {
            Some(Ok(after)) => Ok(after),
            Some(Err(err)) => Err(err),
            None => queues::describe(&self.sqs, &dlq.name, &dlq.url).await,
        };
        let mut ledger: Ledger = result.ledger.clone();
        ledger.found = dlq.depth();

        let mut checks = Vec::new();
        match &dlq_after {
            Ok(after) => {
                ledger.remaining = after.depth() - i64::try_from(ledger.held()).unwrap_or(i64::MAX);
                checks.push(Check::new(
                    "ledger",
                    ledger.total() == ledger.found,
                    format!("moved + poison + refused + filtered out + attribute limit + too large + unroutable + held behind + not deleted + remaining = {} found", ledger.found),
                    format!(
                        "{} + {} + {} + {} + {} + {} + {} + {} + {} + {} = {}",
                        ledger.moved, ledger.poison, ledger.refused, ledger.filtered_out, ledger.attribute_limit,
                        ledger.too_large, ledger.unroutable, ledger.held_behind, ledger.not_deleted, ledger.remaining, ledger.total()
                    ),
                ));
                checks.push(Check::new(
                    "dlq_depth",
                    after.depth() == expected,
                    format!(
                        "{expected} (found {} − moved {})",
                        ledger.found, ledger.moved
                    ),
                    format!(
                        "{} ({} visible, {} in flight)",
                        after.depth(),
                        after.visible,
                        after.in_flight
                    ),
                ));
            }
            Err(err) => checks.push(Check::new(
                "dlq_depth",
                false,
                expected.to_string(),
                format!("could not read: {err}"),
            )),
        }
        // What each target accepted (a copy left in the DLQ included), and what left the DLQ.
        for target in &candidates {
            let accepted = result.accepted_by.get(&target.name).copied().unwrap_or(0);
            if accepted == 0 {
                continue;
            }
            let after = queues::describe(&self.sqs, &target.name, &target.url)
                .await
                .ok();
            report.actions.push(Action {
                api: "sqs:SendMessageBatch".into(),
                target: target.name.clone(),
                before: json!({"depth": target.depth()}),
                after: json!({"depth": after.as_ref().map(Queue::depth), "accepted": accepted}),
                applied: true,
                error: None,
            });
        }
        if result.ledger.moved > 0 || result.ledger.not_deleted > 0 {
            report.actions.push(Action {
                api: "sqs:DeleteMessageBatch".into(),
                target: dlq.name.clone(),
                before: json!({"depth": dlq.depth()}),
                after: json!({"depth": dlq_after.as_ref().ok().map(Queue::depth), "deleted": result.ledger.moved}),
                applied: result.ledger.moved > 0,
                error: (result.ledger.not_deleted > 0).then(|| format!("{} messages were sent but not deleted (duplicates, never losses)", result.ledger.not_deleted)),
            });
        }
        if let Some(err) = &result.error
            && report.actions.is_empty()
        {
            report.actions.push(Action {
                api: err.api.clone(),
                target: dlq.name.clone(),
                before: json!({"depth": dlq.depth()}),
                after: json!({"depth": dlq_after.as_ref().ok().map(Queue::depth)}),
                applied: false,
                error: Some(err.to_string()),
            });
        }
        let verified = checks.iter().all(|check| check.ok);
        report.verification = Verification {
            settle_by: None,
            status: if verified {
                VerificationStatus::Verified
            } else {
                VerificationStatus::Failed
            },
            checks,
        };
        let complete = result.stopped_early.is_none() && result.error.is_none();
        let seconds = result.elapsed.as_secs_f64().max(0.001);
        report.details = Some(json!({
            "plan": report.details.as_ref().map(|details| details["plan"].clone()),
            "ledger": ledger,
            "complete": complete,
            "stopped_early": result.stopped_early,
            "moved_to": result.moved_to,
            "poison_ids": capped(&result.poison_ids),
            "refused": capped(&result.refused),
            "unroutable": capped(&result.unroutable),
            "attribute_limit_ids": capped(&result.attribute_limit_ids),
            "too_large_ids": capped(&result.too_large_ids),
            "held_behind_ids": capped(&result.held_behind_ids),
            "retargeted": capped(&result.retargeted),
            "not_deleted_ids": capped(&result.not_deleted_ids),
            "not_released_ids": capped(&result.not_released_ids),
            "api_calls": result.api_calls,
            "api_calls_per_message": if ledger.moved > 0 { result.api_calls as f64 / ledger.moved as f64 } else { 0.0 },
            "messages_per_second": ledger.moved as f64 / seconds,
        }));

        let mut notes = Vec::new();
        if ledger.poison > 0 {
            notes.push(format!(
                "{} poison messages (redriven {} times already) left in the DLQ: {}; inspect them, then purge once resolved",
                ledger.poison,
                plan.max_redrives,
                some_of(&result.poison_ids, 10)
            ));
        }
        let (former, nameless): (Vec<&Value>, Vec<&Value>) = result
            .unroutable
            .iter()
            .partition(|entry| entry["named_source"].is_string());
        if !nameless.is_empty() {
            notes.push(format!(
                "{} messages name no source queue and {} has several sources ({}): redrive them with \"target\"",
                nameless.len(),
                dlq.name,
                some_of(&plan.sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), 10)
            ));
        }
        if !former.is_empty() {
            let mut named: Vec<String> = former
                .iter()
                .filter_map(|entry| entry["named_source"].as_str().map(str::to_string))
                .collect();
            named.sort();
            named.dedup();
            notes.push(format!(
                "{} messages come from queues that are no longer sources of {} ({}): they stay in the DLQ (another team's consumer is no place for them); redrive them with \"target\" to send them elsewhere",
                former.len(),
                dlq.name,
                some_of(&named, 5)
            ));
        }
        if result.lambda_records > 0 {
            notes.push(format!(
                "{} of the messages sent were Lambda failure records (OnFailure destination), sent as they are: each holds the original event in requestPayload",
                result.lambda_records
            ));
        }
        if !result.retargeted.is_empty() {
            notes.push(format!(
                "{} messages that name another queue were sent to the target you named (details.retargeted)",
                result.retargeted.len()
            ));
        }
        if ledger.too_large > 0 {
            notes.push(format!(
                "{} messages would exceed the target's MaximumMessageSize with the redrive-count attribute: left in the DLQ ({})",
                ledger.too_large,
                some_of(&result.too_large_ids, 10)
            ));
        }
        if ledger.held_behind > 0 {
            notes.push(format!(
                "{} FIFO messages held behind an earlier message of their group that stayed, so that none overtakes it",
                ledger.held_behind
            ));
        }
        if !result.not_released_ids.is_empty() {
            notes.push(format!(
                "{} held messages were not made visible again before the deadline: they reappear when their visibility timeout ends",
                result.not_released_ids.len()
            ));
        }
        if ledger.refused > 0 {
            notes.push(format!(
                "{} refused by the target and left in the DLQ",
                ledger.refused
            ));
        }
        if ledger.attribute_limit > 0 {
            notes.push(format!(
                "{} already carry 10 message attributes, so redrive-count cannot be added: left in the DLQ ({})",
                ledger.attribute_limit,
                some_of(&result.attribute_limit_ids, 10)
            ));
        }
        if ledger.filtered_out > 0 {
            notes.push(format!("{} did not match the filter", ledger.filtered_out));
        }
        if let Some(stopped) = result
            .stopped_early
            .as_ref()
            .filter(|_| result.error.is_none())
        {
            notes.push(format!(
                "stopped early ({stopped}) with {} messages remaining: the next run continues",
                ledger.remaining.max(0)
            ));
        }
        let summary = format!(
            "redrove {} of {} messages from {} to {}",
            ledger.moved,
            ledger.found,
            dlq.name,
            if result.moved_to.is_empty() {
                "no queue".to_string()
            } else {
                result
                    .moved_to
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let reason = std::iter::once(summary)
            .chain(notes)
            .collect::<Vec<_>>()
            .join("; ");
        let failures = report.verification.failures();
        let outcome = if let Some(err) = &result.error {
            return report.finish(Outcome::Failed, format!("{reason}; stopped by {err}"));
        } else if !verified {
            return report.finish(Outcome::Failed,
                format!(
                    "{reason}; the counts do not reconcile ({}): the DLQ changed during the run, or the consumer is still failing",
                    failures
                ),
            );
        } else if ledger.moved > 0 {
            Outcome::Remediated
        } else if ledger.unroutable > 0 {
            Outcome::Rejected
        } else {
            Outcome::NoAction
        };
        report.finish(outcome, reason)
    }

    async fn purge(&self, dlq: &Queue, mut report: Report, invocation: &Invocation) -> Report {
        let mut action = Action {
            api: "sqs:PurgeQueue".into(),
            target: dlq.name.clone(),
            before: json!({"depth": dlq.depth(), "delayed": dlq.delayed}),
            after: json!({"depth": 0}),
            applied: false,
            error: None,
        };
        if report.dry_run {
            report.actions.push(action);
            return report.finish(
                Outcome::Planned,
                format!(
                    "dry run: would purge the {} messages in {}",
                    dlq.depth() + dlq.delayed,
                    dlq.name
                ),
            );
        }
        if let Err(err) = self.sqs.purge_queue().queue_url(&dlq.url).send().await {
            let err = AwsError::from_sdk("sqs:PurgeQueue", &format!("queue {}", dlq.name), &err);
            action.error = Some(err.to_string());
            report.actions.push(action);
            let reason = if err
                .code
                .as_deref()
                .is_some_and(|code| code.contains("PurgeQueueInProgress"))
            {
                format!(
                    "{} was purged less than 60 seconds ago (SQS allows one purge a minute); nothing more was removed",
                    dlq.name
                )
            } else {
                format!("purge of {} failed, nothing was removed: {err}", dlq.name)
            };
            return report.finish(Outcome::Failed, reason);
        }
        action.applied = true;
        report.actions.push(action);
        let removed = dlq.depth() + dlq.delayed;
        // SQS takes up to 60 s to purge; past that (or the deadline) the sweep settles it.
        let wait = invocation.wait_deadline().remaining().min(self.purge_wait);
        // A read that fails is tried again until the wait ends; then the sweep decides.
        let last_error = std::cell::RefCell::new(None);
        let emptied = poll_until(Deadline::within(wait), self.poll_interval, || async {
            match queues::describe(&self.sqs, &dlq.name, &dlq.url).await {
                Ok(after) if after.depth() + after.delayed == 0 => Some(()),
                Ok(_) => None,
                Err(err) => {
                    last_error.replace(Some(err));
                    None
                }
            }
        })
        .await;
        let (status, observed) = match (emptied, last_error.into_inner()) {
            (Some(()), _) => (VerificationStatus::Verified, "0".to_string()),
            (None, Some(err)) => (
                VerificationStatus::Pending,
                format!("could not read: {err}"),
            ),
            (None, None) => (VerificationStatus::Pending, "pending".into()),
        };
        report.verification = Verification {
            settle_by: (status == VerificationStatus::Pending).then(|| SettleBy::QueueDepth {
                name: dlq.name.clone(),
                url: dlq.url.clone(),
                below: removed,
            }),
            status,
            checks: vec![Check::new(
                "dlq_empty",
                status == VerificationStatus::Verified,
                format!("fewer than the {removed} messages purged"),
                observed,
            )],
        };
        report.details = Some(json!({"removed": removed}));
        let settling = if status == VerificationStatus::Pending {
            " (the queue did not read empty yet: the health-prober's sweep settles it by its depth)"
        } else {
            ""
        };
        report.finish(
            Outcome::Remediated,
            format!("purged {}: removed {removed} messages{settling}", dlq.name),
        )
    }
}
