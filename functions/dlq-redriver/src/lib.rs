//! dlq-redriver: the "messages stuck in a dead-letter queue" runbook (`dlq-redrive`): inspect
//! what is there, redrive it to where it came from, purge it once resolved — without ever
//! losing a message, and with a ledger proving the counts add up.
//!
//! This module routes: a trigger becomes a `Job` (`request`), the job's queues are located,
//! and the action runs — `inspect` (read only), `redrive` and `purge` (on the shared runbook
//! path, with every guard).

pub mod config;
pub mod filter;
pub mod inspect;
pub mod messages;
pub mod purge;
pub mod queues;
pub mod redrive;
pub mod request;
pub mod returned;

use std::time::Duration;

use runbook_shared::aws::FaultKind;
use runbook_shared::edge::answer::answer;
use runbook_shared::edge::catalog::Catalog;
use runbook_shared::edge::fleet::Fleet;
use runbook_shared::edge::recognise::Recognised;
use runbook_shared::guards::Safety;
use runbook_shared::model::FleetConfig;
use runbook_shared::model::Invocation;
use runbook_shared::model::{AlarmState, AlarmTrigger, parse_manual};
use runbook_shared::model::{Ending, Step};
use runbook_shared::model::{Outcome, Output, Report, TriggerInfo, capped};
use runbook_shared::path::{Function, RunContext, run};
use serde_json::{Map, Value};

use crate::config::RedriverConfig;
use crate::purge::Purge;
use crate::queues::{Queue, QueueRef, require_managed};
use crate::redrive::Redrive;
use crate::request::{DlqAction, Job, Request};

pub const FUNCTION: &str = "dlq-redriver";
pub const RUNBOOK: &str = "dlq-redrive";
pub const NAMESPACE: &str = "AWS/SQS";
pub const DEPTH_METRIC: &str = "ApproximateNumberOfMessagesVisible";
/// Most messages one inspection samples.
pub const MAX_SAMPLE: u32 = 100;

/// The clients of the queues and metrics it reads and changes, and of the audit table.
#[derive(Clone, Debug)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// The source queues' consumers (their event source mappings).
    pub lambda: aws_sdk_lambda::Client,
    pub audit: aws_sdk_dynamodb::Client,
}

impl Clients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
            audit: aws_sdk_dynamodb::Client::new(sdk),
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

/// dlq-redriver in every account and region the deployment remediates.
pub fn fleet(
    config: RedriverConfig,
    places: FleetConfig,
    sdk: &aws_config::SdkConfig,
) -> Fleet<Redriver> {
    Fleet::of(
        places,
        config.safety.clone(),
        sdk,
        move |safety, place_sdk, hub| {
            let config = RedriverConfig {
                safety,
                ..config.clone()
            };
            Redriver::with_clients(config, Clients::at(place_sdk, hub))
        },
    )
}

/// The function's configuration and clients, built once per cold start.
pub struct Redriver {
    pub config: RedriverConfig,
    pub clients: Clients,
    pub safety: Safety,
    /// How often queue depths are read while waiting for them to settle.
    pub poll_interval: Duration,
    /// How long a purge waits for the queue to read empty before the health-prober's sweep
    /// settles it instead.
    pub purge_wait: Duration,
}

impl Function for Redriver {
    const NAME: &'static str = FUNCTION;

    fn safety(&self) -> &Safety {
        &self.safety
    }

    fn alarms(&self) -> &aws_sdk_cloudwatch::Client {
        &self.clients.cloudwatch
    }

    /// The DLQ's depth and age (its messages are the function's failures).
    fn evidence_sources(&self) -> Option<runbook_shared::path::evidence::Sources<'_>> {
        Some(runbook_shared::path::evidence::Sources {
            cloudwatch: &self.clients.cloudwatch,
            logs: None,
            lambda: None,
            cloudformation: None,
        })
    }
}

/// The queue of an `AWS/SQS` depth alarm, if it watches one.
pub fn queue_of(alarm: &AlarmTrigger) -> Option<&str> {
    alarm
        .metrics
        .iter()
        .find(|metric| metric.namespace == NAMESPACE && metric.name == DEPTH_METRIC)
        .and_then(|metric| metric.dimension("QueueName"))
}

/// A job's queues, read before anything else.
struct Located {
    dlq: Queue,
    /// The queues whose RedrivePolicy points at the DLQ.
    sources: Vec<Queue>,
    /// The target a person named.
    target: Option<Queue>,
}

impl Redriver {
    pub fn new(config: RedriverConfig, sdk: &aws_config::SdkConfig) -> Self {
        Self::with_clients(config, Clients::new(sdk))
    }

    pub fn with_clients(config: RedriverConfig, clients: Clients) -> Self {
        let safety = Safety::new(config.safety.clone(), clients.audit.clone());
        Self {
            config,
            clients,
            safety,
            poll_interval: Duration::from_secs(2),
            purge_wait: Duration::from_secs(60),
        }
    }

    /// Handles one invocation: one report, or one per DLQ for a scheduled sweep. Never fails.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Output {
        answer(self, Recognised::of(event), invocation).await
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
                    self.run(Job::automatic(dlq, &self.config), info, invocation)
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

    /// Locates the job's queues, then runs its action.
    async fn run(&self, job: Job, info: TriggerInfo, invocation: &Invocation) -> Report {
        let mut report = Report::new(FUNCTION, info.clone(), Outcome::NoAction, "");
        report.runbook = Some(RUNBOOK.into());
        report.target = Some(job.dlq.name.clone());
        report.dry_run = job.dry_run;
        tracing::Span::current().record("target", job.dlq.name.as_str());
        let Located {
            dlq,
            sources,
            target,
        } = match self.locate(&job).await {
            Ok(located) => located,
            Err(ending) => return invocation.timed(report.ended(ending)),
        };
        // A queue no source fails into (a Lambda OnFailure destination, say) can be inspected
        // and purged; its messages name no source to go back to, so a redrive needs a target.
        let mut job = job;
        if sources.is_empty() && job.action == DlqAction::Redrive && target.is_none() {
            let why = format!(
                "{} is not a dead-letter queue of any source (no queue's RedrivePolicy points to it), so its messages have nowhere to go back to",
                dlq.name
            );
            if report.trigger.kind.is_manual() {
                return invocation.timed(report.ended(Ending::rejected(format!(
                    "{why}: give a \"target\" to redrive them; nothing was changed"
                ))));
            }
            report
                .notes
                .push(format!("{why}: inspected instead of redriven"));
            job.action = DlqAction::Inspect;
            job.max_messages = self.config.inspect_sample_size;
        }
        let ctx = RunContext::new(self, invocation, None);
        match job.action {
            DlqAction::Inspect => {
                let managed =
                    require_managed(&self.clients.sqs, &self.config.safety.managed, &dlq, None)
                        .await;
                if let Err(ending) = managed {
                    return invocation.timed(report.ended(ending));
                }
                report.diagnosis = Some(serde_json::json!({
                    "dlq": dlq,
                    "sources": capped(&sources.iter().map(|source| source.name.as_str()).collect::<Vec<_>>()),
                }));
                let inspected = self.inspect(&dlq, &sources, job.max_messages, report, invocation);
                runbook_shared::guards::once(
                    &self.safety,
                    FUNCTION,
                    &info,
                    job.dry_run,
                    invocation,
                    inspected,
                )
                .await
            }
            DlqAction::Purge => run(&ctx, Purge { dlq }, report).await,
            DlqAction::Redrive => {
                let redrive = Redrive {
                    dlq,
                    sources,
                    target,
                    job,
                };
                run(&ctx, redrive, report).await
            }
        }
    }

    /// The DLQ, its sources and the target a person named; a queue that does not exist (or a
    /// target of the other kind, FIFO or standard) is a rejected request.
    async fn locate(&self, job: &Job) -> Step<Located> {
        let sqs = &self.clients.sqs;
        let lookup = |reference: &QueueRef, err: runbook_shared::aws::AwsError| {
            let reason = queues::lookup_failure(&reference.name, &err);
            if err.is(FaultKind::NotFound) {
                Ending::rejected(reason)
            } else {
                Ending::failed(reason)
            }
        };
        let dlq = queues::resolve(sqs, &job.dlq)
            .await
            .map_err(|err| lookup(&job.dlq, err))?;
        let sources = queues::sources(sqs, &dlq).await.map_err(|err| {
            Ending::failed(format!(
                "could not list the sources of {}, nothing was changed: {err}",
                dlq.name
            ))
        })?;
        let target = match job
            .target
            .as_ref()
            .filter(|_| job.action == DlqAction::Redrive)
        {
            Some(reference) => {
                let target = queues::resolve(sqs, reference)
                    .await
                    .map_err(|err| lookup(reference, err))?;
                if target.fifo != dlq.fifo {
                    let kind = |fifo: bool| if fifo { "FIFO" } else { "standard" };
                    return Err(Ending::rejected(format!(
                        "target {} is a {} queue and {} a {} queue: messages cannot move between the two kinds",
                        target.name,
                        kind(target.fifo),
                        dlq.name,
                        kind(dlq.fifo)
                    )));
                }
                Some(target)
            }
            None => None,
        };
        Ok(Located {
            dlq,
            sources,
            target,
        })
    }
}

/// What dlq-redriver does with each trigger. Its schedule sweeps DLQ_QUEUES, the hub's own
/// queues.
impl Catalog for Redriver {
    type Answer = Output;
    const TAKES: &'static str = "SQS depth alarms, schedules and manual payloads";

    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let Some(queue) = queue_of(alarm) else {
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
                    self.run(Job::automatic(dlq, &self.config), info, invocation)
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

    async fn on_request(
        &self,
        payload: Map<String, Value>,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Output {
        let job = parse_manual::<Request>(&payload)
            .and_then(|request| Job::from_request(&request, &self.config));
        match job {
            Ok(job) => self.run(job, info, invocation).await,
            Err(rejection) => invocation.timed(Report::rejected(FUNCTION, info, rejection.0)),
        }
        .into()
    }

    async fn on_schedule(&self, info: TriggerInfo, invocation: &Invocation) -> Output {
        self.sweep(info, invocation).await
    }
}
