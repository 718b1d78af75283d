//! The safety model every function applies: dry run, managed resources only (`managed.rs`), one
//! actor per resource (lease), each event acted on once, and — for automatic triggers — a
//! cooldown per resource and runbook and an action budget per runbook over a sliding hour. A
//! manual run is a person's decision: it overrides the cooldown (and says so) and is not counted
//! against the budget, but never the lease, the managed check or the caps.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use crate::audit::{AuditRecord, AuditStore, EventClaim, LeaseOutcome};
use crate::aws::AwsError;
use crate::config::{ConfigError, Env};
use crate::deadline::Deadline;
use crate::report::{
    Action, Outcome, Report, SettleBy, TriggerInfo, TriggerKind, VerificationStatus,
};
use crate::resource::{Home, ResourceId};
use crate::runbook::Ending;
use crate::trigger::AlarmTrigger;
use serde_json::Value;

/// Settings shared by every function.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetyConfig {
    /// The partition, region and account the function acts in.
    pub home: Home,
    /// The deployment's own account and region: `home` too, except for the function acting
    /// in another account or region of a hub (`fleet`).
    pub hub: Home,
    /// The accounts a hub acts in, its own first (ACCOUNT_ID and ACCOUNTS); empty for a
    /// deployment that acts in its own account and region only.
    pub accounts: Vec<String>,
    /// ALARM_TOPIC_ARNS: the SNS topics whose alarm notifications the function takes.
    pub alarm_topics: Vec<String>,
    pub dry_run: bool,
    pub managed: crate::managed::ManagedPolicy,
    pub cooldown: Duration,
    pub max_actions_per_hour: u32,
    pub audit_table: String,
    pub audit_retention_days: i64,
    /// AUTOMATION_PAUSED (the template's AutomationPaused): paused from the deployment itself.
    pub paused_at_deploy: bool,
    /// The change brake: at most this many distinct resources changed...
    pub max_changes_per_window: usize,
    /// ...within this window, account-wide, across every function and runbook.
    pub change_window: Duration,
    /// What the evidence in a report covers.
    pub evidence: crate::evidence::EvidenceConfig,
    /// Each runbook's mode (observe, approve, auto).
    pub modes: crate::modes::Modes,
    /// How long a plan awaits approval (APPROVAL_MINUTES).
    pub approval_window: Duration,
    /// The function's deployed name (AWS_LAMBDA_FUNCTION_NAME), for the approval commands.
    pub function_name: Option<String>,
}

impl SafetyConfig {
    /// The same settings for acting in `place`, one of the places of `places`.
    pub fn at(&self, place: Home, places: &crate::fleet::FleetConfig) -> Self {
        let accounts = if places.is_fleet() {
            std::iter::once(&self.hub.account)
                .chain(&places.spokes)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Self {
            home: place,
            accounts,
            ..self.clone()
        }
    }

    /// Whether it acts in the deployment's own account and region.
    pub fn is_hub(&self) -> bool {
        self.home == self.hub
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let home = Home::from_env(env)?;
        Ok(Self {
            hub: home.clone(),
            accounts: Vec::new(),
            alarm_topics: alarm_topics(env)?,
            home,
            dry_run: env.bool("DRY_RUN", false)?,
            managed: crate::managed::ManagedPolicy::new(env.list("MANAGED_RESOURCES")),
            cooldown: Duration::seconds(env.number("COOLDOWN_SECONDS", 900i64, 0, 7 * 86_400)?),
            max_actions_per_hour: env.number("MAX_ACTIONS_PER_HOUR", 10u32, 1, 1_000)?,
            audit_table: env.required("AUDIT_TABLE", "the name of the audit DynamoDB table")?,
            audit_retention_days: env.number("AUDIT_RETENTION_DAYS", 90i64, 1, 3_650)?,
            paused_at_deploy: env.bool("AUTOMATION_PAUSED", false)?,
            max_changes_per_window: env.number("MAX_CHANGES_PER_WINDOW", 5usize, 1, 1_000)?,
            change_window: Duration::minutes(env.number(
                "CHANGE_WINDOW_MINUTES",
                10i64,
                1,
                1_440,
            )?),
            evidence: crate::evidence::EvidenceConfig::from_env(env)?,
            modes: crate::modes::Modes::from_env(env)?,
            approval_window: Duration::minutes(env.number(
                "APPROVAL_MINUTES",
                30i64,
                1,
                7 * 24 * 60,
            )?),
            function_name: env.get("AWS_LAMBDA_FUNCTION_NAME"),
        })
    }
}

/// ALARM_TOPIC_ARNS, each an SNS topic's ARN.
fn alarm_topics(env: &Env) -> Result<Vec<String>, ConfigError> {
    let topics = env.list("ALARM_TOPIC_ARNS");
    for topic in &topics {
        let arn = crate::resource::Arn::parse(topic).ok();
        if arn.is_none_or(|arn| arn.service != "sns" || arn.resource.contains(':')) {
            return Err(ConfigError::Invalid {
                var: "ALARM_TOPIC_ARNS",
                value: topic.clone(),
                expected: "comma-separated SNS topic ARNs (arn:aws:sns:<region>:<account>:<topic>)"
                    .into(),
            });
        }
    }
    Ok(topics)
}

/// One invocation: its request id (the lease owner), its deadline and when it started.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub request_id: String,
    pub deadline: crate::deadline::Deadline,
    pub started: std::time::Instant,
    pub started_at: DateTime<Utc>,
    /// The actions an earlier attempt of this request recorded on the leases it now took over,
    /// by lease key.
    resumed: std::sync::Arc<std::sync::Mutex<HashMap<String, Action>>>,
    /// The event being handled: a plan made for approval stores it, to handle it again.
    pub event: Option<std::sync::Arc<Value>>,
    /// The approved plan this invocation carries out, when it handles a plan's event again.
    pub approving: Option<std::sync::Arc<crate::approval::Approving>>,
}

impl Invocation {
    pub fn new(request_id: impl Into<String>, deadline: crate::deadline::Deadline) -> Self {
        Self {
            request_id: request_id.into(),
            deadline,
            started: std::time::Instant::now(),
            started_at: Utc::now(),
            resumed: Default::default(),
            event: None,
            approving: None,
        }
    }

    /// The invocation handling `event` (what a plan made in it stores).
    pub fn handling(&self, event: &Value) -> Self {
        Self {
            event: Some(std::sync::Arc::new(event.clone())),
            ..self.clone()
        }
    }

    /// The invocation of a run another run holds (api-errors hands a rollback over in-process):
    /// `event` runs it again on its own, and an approval the outer run carries out is not its.
    pub fn nested(&self, event: &Value) -> Self {
        Self {
            approving: None,
            ..self.handling(event)
        }
    }

    /// The invocation carrying out an approved plan: it handles the plan's event again.
    pub fn approving(&self, approving: crate::approval::Approving) -> Self {
        Self {
            event: Some(std::sync::Arc::new(approving.plan.event.clone())),
            approving: Some(std::sync::Arc::new(approving)),
            ..self.clone()
        }
    }

    /// The action an earlier attempt of this request (Lambda's retry after a crash) was about
    /// to write on the resource, when the resource shows it applied: every field of its `after`
    /// has that value in `observed`. The retry adopts it instead of planning again, which would
    /// raise a second time and lose the baseline.
    pub fn landed(&self, resource: &ResourceId, observed: &Value) -> Option<Action> {
        let resumed = self.resumed.lock().ok()?;
        let action = resumed.get(&resource.lease_key())?;
        let after = action.after.as_object()?;
        (!after.is_empty()
            && after
                .iter()
                .all(|(key, value)| observed.get(key) == Some(value)))
        .then(|| action.clone())
    }

    fn resume(&self, lease_key: &str, intent: Value) {
        if let (Ok(action), Ok(mut resumed)) = (
            serde_json::from_value::<Action>(intent),
            self.resumed.lock(),
        ) {
            resumed.insert(lease_key.to_string(), action);
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sets the report's duration (for reports decided without the guards).
    pub fn timed(&self, mut report: Report) -> Report {
        report.duration_ms = self.elapsed_ms();
        report
    }

    /// The deadline for a wait that writes follow (raise record, audit record, the event's
    /// report, the lease's release): the invocation's, less the time those writes need.
    pub fn wait_deadline(&self) -> Deadline {
        self.deadline.less(crate::deadline::WRITE_RESERVE)
    }
}

/// Why a guard stopped a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip(pub String);

/// The guards, backed by the audit table.
#[derive(Clone)]
pub struct Safety {
    pub config: SafetyConfig,
    pub audit: AuditStore,
    /// The kill switch, read right before a run's first write.
    pub switch: crate::control::Switch,
}

/// The note of a retried invocation (same request id) that finds its first attempt's write in
/// place (`Invocation::landed`) and finishes it instead of planning again.
pub const RESUMED: &str = "resumed: an earlier attempt of this request made this change before it stopped; it was verified and recorded now";

/// How often a run waiting for a lease asks again.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a run waits for another run on the same resource to finish before it is skipped.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn held(lease_key: &str, owner: &str, until: DateTime<Utc>) -> Skip {
    Skip(format!(
        "lock held: invocation {owner} is working on {lease_key} (lease until {})",
        crate::audit::timestamp(until)
    ))
}

/// How long past the deadline a lease or claim outlives a crashed invocation: enough to cover
/// the difference between Lambda's clock and this function's, short enough that the next run
/// after a crash is not held up long.
const LEASE_GRACE: Duration = Duration::seconds(5);

impl Safety {
    pub fn new(config: SafetyConfig, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        let audit = AuditStore::new(
            dynamodb,
            config.audit_table.clone(),
            config.audit_retention_days,
        );
        // The hub's own place keeps the keys it always had; every other place's carry it.
        let audit = if config.is_hub() {
            audit
        } else {
            audit.scoped(&config.home)
        };
        let mut switch = crate::control::Switch::new(audit.clone(), config.paused_at_deploy);
        if !config.accounts.is_empty() {
            switch = switch.in_fleet(Some(config.home.account.clone()), config.accounts.clone());
        }
        Self {
            config,
            audit,
            switch,
        }
    }

    /// Runs `handle` once per event id and finishes its report (audit record, duration): a
    /// re-delivered event gets the first report back unchanged, and a delivery racing another
    /// one is skipped; the retry of a crashed attempt (the same request id) takes its claim
    /// over. Dry runs and events without an id run as they are.
    pub async fn once<F>(
        &self,
        function: &str,
        trigger: &TriggerInfo,
        dry_run: bool,
        invocation: &Invocation,
        handle: F,
    ) -> Report
    where
        F: Future<Output = Report>,
    {
        // Handling a plan's event again for its approval: only the approved run writes.
        if let Some(approving) = invocation.approving.as_deref()
            && !dry_run
            && trigger.event_id.as_deref() != Some(approving.event_id().as_str())
        {
            let mut report = Report::new(
                function,
                trigger.clone(),
                Outcome::Skipped,
                format!(
                    "handled again to carry out approved plan {}: only its own run writes",
                    approving.plan.plan_id
                ),
            );
            self.finish(&mut report, invocation).await;
            return report;
        }
        let Some(event_id) = trigger.event_id.clone().filter(|_| !dry_run) else {
            let mut report = handle.await;
            self.finish(&mut report, invocation).await;
            return report;
        };
        let mut report = match self
            .audit
            .claim_event(
                &event_id,
                &invocation.request_id,
                invocation.deadline.wall() + LEASE_GRACE,
            )
            .await
        {
            Err(err) => Report::new(
                function,
                trigger.clone(),
                Outcome::Failed,
                format!(
                    "could not record event {event_id} in the audit table, so nothing was done: {err}"
                ),
            ),
            Ok(EventClaim::Completed(report)) => return *report,
            Ok(EventClaim::InFlight) => Report::new(
                function,
                trigger.clone(),
                Outcome::Skipped,
                format!(
                    "duplicate delivery: event {event_id} is being handled by another invocation"
                ),
            ),
            Ok(EventClaim::Claimed { resumed }) => {
                let mut report = handle.await;
                if resumed {
                    report.notes.push(format!(
                        "resumed event {event_id} after an earlier attempt of request {} ended without a report",
                        invocation.request_id
                    ));
                }
                self.finish(&mut report, invocation).await;
                if let Err(err) = self.audit.complete_event(&event_id, &report).await {
                    tracing::error!(event_id, error = %err, "could not store the event's report; a re-delivery will run again under the cooldown and lease");
                }
                return report;
            }
        };
        self.finish(&mut report, invocation).await;
        report
    }

    async fn cooldown(
        &self,
        runbook: &str,
        resource: &ResourceId,
        counts: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Option<Skip>, AwsError> {
        if self.config.cooldown.is_zero() {
            return Ok(None);
        }
        let since = Utc::now() - self.config.cooldown;
        let last = self
            .audit
            .last_remediation_since(&resource.key(), runbook, since)
            .await?;
        Ok(last.filter(|record| counts(record)).map(|record| {
            Skip(format!(
                "cooldown: {runbook} changed {} at {} (audit {}); next automatic action allowed after {} (COOLDOWN_SECONDS={})",
                resource.name(),
                crate::audit::timestamp(record.started_at),
                record.audit_id,
                crate::audit::timestamp(record.started_at + self.config.cooldown),
                self.config.cooldown.num_seconds()
            ))
        }))
    }

    /// Runs `work` on the resource under its lease and the cooldown of the report's runbook
    /// (`counts` choosing which earlier records start one; a manual run overrides it and the
    /// report says so), then writes the audit record before the lease is released. The lease
    /// comes first, so that two runs cannot both pass the cooldown check.
    pub async fn guarded(
        &self,
        resource: &ResourceId,
        mut report: Report,
        invocation: &Invocation,
        counts: impl Fn(&AuditRecord) -> bool,
        work: impl AsyncFnOnce(&mut Report) -> Ending,
    ) -> Report {
        let dry_run = report.dry_run;
        let leased = if dry_run {
            Ok(Ok(()))
        } else {
            self.acquire_waiting(resource, invocation, LEASE_WAIT).await
        };
        let admitted = match leased {
            Ok(Ok(())) => {
                let runbook = report.runbook.clone().unwrap_or_default();
                let cooldown = self.cooldown(&runbook, resource, counts).await;
                match cooldown {
                    Ok(None) => Ok(()),
                    Ok(Some(skip)) if report.trigger.kind.is_manual() => {
                        report
                            .notes
                            .push(format!("manual run: overrode the cooldown ({})", skip.0));
                        Ok(())
                    }
                    Ok(Some(skip)) => Err(Ending::skipped(skip.0)),
                    Err(err) => Err(Ending::failed(format!(
                        "the safety checks could not run, nothing was changed: {err}"
                    ))),
                }
            }
            Ok(Err(skip)) => return report.ended(Ending::skipped(skip.0)),
            Err(err) => {
                return report.ended(Ending::failed(format!(
                    "the safety checks could not run, nothing was changed: {err}"
                )));
            }
        };
        let ending = match admitted {
            Ok(()) => work(&mut report).await,
            Err(ending) => ending,
        };
        let mut report = report.ended(ending);
        self.finish(&mut report, invocation).await;
        self.release(resource, dry_run, invocation).await;
        report
    }

    /// Takes the lease on `resource` for a live run, waiting up to `wait` (and never into the
    /// time kept for the writes at the end) while another run holds it: an alarm fires once per
    /// transition, so a run that can finish after a short wait should not be skipped for good.
    /// An intent an earlier attempt of this request left on the lease is kept for `landed`.
    /// Release it with `release`.
    pub async fn acquire_waiting(
        &self,
        resource: &ResourceId,
        invocation: &Invocation,
        wait: std::time::Duration,
    ) -> Result<Result<(), Skip>, AwsError> {
        let key = resource.lease_key();
        let wait = wait.min(invocation.wait_deadline().remaining());
        let started = std::time::Instant::now();
        loop {
            let until = invocation.deadline.wall() + LEASE_GRACE;
            match self
                .audit
                .acquire_lease(&key, &invocation.request_id, until)
                .await?
            {
                LeaseOutcome::Acquired { intent } => {
                    if let Some(intent) = intent {
                        invocation.resume(&key, intent);
                    }
                    return Ok(Ok(()));
                }
                LeaseOutcome::HeldBy { owner, until } if started.elapsed() >= wait => {
                    return Ok(Err(held(&key, &owner, until)));
                }
                LeaseOutcome::HeldBy { .. } => tokio::time::sleep(LEASE_RETRY).await,
            }
        }
    }

    /// Records the action about to be written on the resource's lease (a live run holding it):
    /// Lambda's retry of this request, should it crash after the write, adopts it (`landed`).
    pub async fn record_intent(
        &self,
        resource: &ResourceId,
        invocation: &Invocation,
        action: &Action,
    ) -> Result<(), AwsError> {
        let intent = serde_json::to_value(action).unwrap_or(Value::Null);
        self.audit
            .record_intent(&resource.lease_key(), &invocation.request_id, &intent)
            .await
    }

    /// Releases a lease this invocation took; a failure only delays the next run until expiry.
    pub async fn release(&self, resource: &ResourceId, dry_run: bool, invocation: &Invocation) {
        if dry_run {
            return;
        }
        let lease_key = resource.lease_key();
        if let Err(err) = self
            .audit
            .release_lease(&lease_key, &invocation.request_id)
            .await
        {
            tracing::warn!(lease_key, error = %err, "could not release the lease; it expires on its own");
        }
    }

    /// Spends one action of the report's runbook's budget over the last 60 minutes (a dry run
    /// only looks); a manual run is neither bound by it nor counted.
    pub async fn spend_budget(&self, report: &Report) -> Result<Result<(), Skip>, AwsError> {
        if report.trigger.kind.is_manual() {
            return Ok(Ok(()));
        }
        let runbook = report.runbook.as_deref().unwrap_or_default();
        let max = self.config.max_actions_per_hour;
        let now = Utc::now();
        let next = if report.dry_run {
            let used = self.audit.budget_used(runbook, now).await?;
            (used >= max).then_some(None)
        } else {
            self.audit
                .take_budget(runbook, max, now)
                .await?
                .err()
                .map(Some)
        };
        Ok(match next {
            None => Ok(()),
            Some(next) => Err(Skip(format!(
                "budget spent: {runbook} took {max} automatic actions in the last 60 minutes (MAX_ACTIONS_PER_HOUR={max}){}",
                next.map(|at| format!(
                    "; the next is allowed after {}",
                    crate::audit::timestamp(at)
                ))
                .unwrap_or_default()
            ))),
        })
    }

    /// An alarm's OK transition: closes the newest open verification of `runbook` on the
    /// resource, marking its open (`pending`) checks as met, with the time to recover.
    pub async fn close_on_ok(
        &self,
        runbook: &str,
        resource: &ResourceId,
        alarm: &AlarmTrigger,
        mut report: Report,
    ) -> Report {
        let target = resource.name();
        report.runbook = Some(runbook.into());
        report.target = Some(target.clone());
        report.resource = Some(resource.key());
        let record = match self.audit.latest_pending(&resource.key(), runbook).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                report.outcome = Outcome::NoAction;
                report.reason = format!(
                    "alarm {} is OK; no remediation of {target} is awaiting verification",
                    alarm.alarm_name
                );
                return report;
            }
            Err(err) => {
                report.outcome = Outcome::Failed;
                report.reason =
                    format!("could not look up the open verification of {target}: {err}");
                return report;
            }
        };
        // A change waits for the alarm that fired it: another alarm of the resource being OK
        // says nothing about it.
        if let Some(SettleBy::Alarm { name }) = &record.report.verification.settle_by
            && *name != alarm.alarm_name
        {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} is OK, but the change to {target} waits for alarm {name}: that does not verify it",
                alarm.alarm_name
            );
            return report;
        }
        // A notification's time is CloudWatch's (`alarms::confirmed`), and anyone who may
        // publish to the topic can send an OK: an alarm OK since before the change proves nothing.
        if alarm.kind == TriggerKind::AlarmSns
            && alarm.changed_at.timestamp() < record.started_at.timestamp()
        {
            report.outcome = Outcome::NoAction;
            report.reason = format!(
                "alarm {} has been OK since {}, before the change to {target} at {}: that does not verify it",
                alarm.alarm_name,
                crate::audit::timestamp(alarm.changed_at),
                crate::audit::timestamp(record.started_at)
            );
            return report;
        }
        let recovered = (alarm.changed_at - record.started_at).num_seconds().max(0);
        let mut verification = record.report.verification.clone();
        for check in verification
            .checks
            .iter_mut()
            .filter(|check| check.is_awaited())
        {
            check.ok = true;
            check.observed = format!(
                "alarm {} OK at {}, {recovered} s after the change",
                alarm.alarm_name,
                crate::audit::timestamp(alarm.changed_at)
            );
        }
        verification.status = if verification.checks.iter().all(|check| check.ok) {
            VerificationStatus::Verified
        } else {
            VerificationStatus::Failed
        };
        report.outcome = Outcome::NoAction;
        match self.audit.settle(&record, &verification).await {
            Ok(true) => {
                report.reason = format!(
                    "alarm {} returned to OK {recovered} s after remediation {}; verification closed as {}",
                    alarm.alarm_name,
                    record.audit_id,
                    if verification.status == VerificationStatus::Verified {
                        "verified"
                    } else {
                        "failed"
                    }
                );
                report.verification = verification;
                report.audit_id = Some(record.audit_id);
                report.diagnosis = Some(serde_json::json!({
                    "time_to_recover_seconds": recovered,
                    "remediated_at": crate::audit::timestamp(record.started_at),
                }));
            }
            Ok(false) => {
                report.reason = format!(
                    "the verification of remediation {} was already closed",
                    record.audit_id
                )
            }
            Err(err) => {
                report.outcome = Outcome::Failed;
                report.reason = format!(
                    "could not close the verification of remediation {}: {err}",
                    record.audit_id
                );
            }
        }
        report
    }

    /// Writes the audit record when something was attempted (once), and sets the duration.
    pub async fn finish(&self, report: &mut Report, invocation: &Invocation) {
        self.audit.finish(report, invocation).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_env_with_defaults_and_errors() {
        let config = SafetyConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "audit"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert_eq!(config.cooldown, Duration::seconds(900));
        assert_eq!(config.max_actions_per_hour, 10);
        assert!(!config.dry_run);
        let err = SafetyConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
            ("MAX_ACTIONS_PER_HOUR", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("MAX_ACTIONS_PER_HOUR"));
        assert!(
            SafetyConfig::from_env(&Env::from_pairs(&[
                ("AWS_REGION", "us-east-1"),
                ("ACCOUNT_ID", "123456789012"),
            ]))
            .unwrap_err()
            .to_string()
            .contains("AUDIT_TABLE")
        );
    }
}
