//! The kill switch: one item of the audit table pauses every function of the deployment, in
//! every account it remediates; another pauses them in one account only. While
//! paused, runbooks diagnose and plan but write nothing (their act step ends `skipped`,
//! "paused: …"); reads, dry runs, inspections, probes and the verification sweep go on. The
//! switch is read right before the first write of every run, and a switch that cannot be read
//! is a pause: it fails closed.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::model::timestamp;
use crate::model::{Action, Invocation, Outcome, Report, TriggerInfo};
use crate::store::{AuditStore, Pause};

/// The runbook id of pause, resume and status reports (and of their audit records).
pub const RUNBOOK: &str = "automation-control";
/// Their target, and the key of their audit history.
pub const TARGET: &str = "automation";
/// The longest timed pause; a longer one is an indefinite pause (no `minutes`).
pub const MAX_PAUSE_MINUTES: i64 = 7 * 24 * 60;
/// The window the sweep's auto-trip counts failed verifications in.
pub const TRIP_WINDOW_MINUTES: i64 = 60;

/// The switch as one function sees it: the item in the audit table, and the deployment's own
/// AUTOMATION_PAUSED.
#[derive(Clone)]
pub struct Switch {
    pub(crate) audit: AuditStore,
    pub(crate) paused_at_deploy: bool,
    /// The account whose own switch item holds this function too (a hub that acts in several).
    pub(crate) account: Option<String>,
    /// The accounts a control payload may name (the hub's and ACCOUNTS); none for a deployment
    /// that acts in one.
    pub(crate) accounts: Vec<String>,
}

impl Switch {
    pub fn new(audit: AuditStore, paused_at_deploy: bool) -> Self {
        Self {
            audit,
            paused_at_deploy,
            account: None,
            accounts: Vec::new(),
        }
    }

    /// The switch of a hub that acts in `accounts`, for a function acting in `account`.
    pub fn in_fleet(self, account: Option<String>, accounts: Vec<String>) -> Self {
        Self {
            account,
            accounts,
            ..self
        }
    }

    /// Why nothing may be written now ("paused: …"), or `None` when the automation runs. Read
    /// right before a write; a switch that cannot be read stops the write.
    pub async fn paused(&self) -> Option<String> {
        self.paused_in(self.account.as_deref()).await
    }

    /// Why nothing may be written in `account` (or anywhere, for `None`) now.
    pub(crate) async fn paused_in(&self, account: Option<&str>) -> Option<String> {
        if self.paused_at_deploy {
            return Some(
                "paused: by the deployment (the stack's AutomationPaused parameter is true), until the stack is updated with AutomationPaused=false"
                    .into(),
            );
        }
        // On the heap: two SDK calls' futures would sit on every run's stack.
        let (everywhere, here) = Box::pin(async {
            tokio::join!(self.audit.pause(None), async {
                match account {
                    Some(account) => self.audit.pause(Some(account)).await,
                    None => Ok(None),
                }
            })
        })
        .await;
        let now = Utc::now();
        match (everywhere, here) {
            (Ok(Some(pause)), _) if pause.in_force(now) => Some(format!("paused: {pause}")),
            (_, Ok(Some(pause))) if pause.in_force(now) => Some(format!(
                "paused in account {}: {pause}",
                account.unwrap_or_default()
            )),
            (Err(err), _) | (_, Err(err)) => Some(format!(
                "paused: the switch could not be read, so nothing is written ({err})"
            )),
            _ => None,
        }
    }

    /// The sweep's auto-trip: engages the pause when `threshold` verifications (0: never) have
    /// settled as failed within the last 60 minutes — counting only those since the last resume,
    /// so that a person who resumes is not paused again by the same failures. The pause is
    /// audited and reported like a person's; `Ok(None)` when nothing was tripped.
    pub async fn trip_on_failed_verifications(
        &self,
        function: &str,
        trigger: TriggerInfo,
        threshold: usize,
        invocation: &Invocation,
    ) -> Result<Option<Report>, crate::aws::AwsError> {
        if threshold == 0 || self.paused_at_deploy {
            return Ok(None);
        }
        let now = Utc::now();
        let (pause, resumed_at) = self.audit.switch_item(None).await?;
        if pause.as_ref().is_some_and(|pause| pause.in_force(now)) {
            return Ok(None);
        }
        // Failures a person has seen do not count again: those before the last resume, or
        // before the end of a timed pause that ran out.
        let ended = pause.and_then(|pause| pause.until);
        let window_start = now - Duration::minutes(TRIP_WINDOW_MINUTES);
        let since = [Some(window_start), resumed_at, ended]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(window_start);
        let failed = self.audit.failed_verifications_since(since).await?;
        if failed.len() < threshold {
            return Ok(None);
        }
        let pause = Pause {
            by: format!("{function} (automatically)"),
            reason: format!(
                "{} verifications settled as failed within {TRIP_WINDOW_MINUTES} minutes (PAUSE_AFTER_FAILED_VERIFICATIONS={threshold}): audit ids {}; find out why the remediations did not work, then resume",
                failed.len(),
                failed.join(", ")
            ),
            since: now,
            until: None,
        };
        Ok(Some(
            self.set(function, trigger, None, Some(pause), invocation)
                .await,
        ))
    }

    pub(crate) async fn status(
        &self,
        function: &str,
        trigger: TriggerInfo,
        account: Option<&str>,
        invocation: &Invocation,
    ) -> Report {
        let mut report = control_report(function, trigger, account, Outcome::NoAction);
        match self.audit.pause(account).await {
            Err(err) => {
                report.outcome = Outcome::Failed;
                report.reason = format!(
                    "could not read the switch, so every write is paused until it can be read: {err}"
                );
            }
            Ok(stored) => {
                report.diagnosis = Some(json!({
                    "switch": stored,
                    "account": account,
                    "paused_at_deploy": self.paused_at_deploy,
                }));
                report.reason = match self.paused_in(account).await {
                    Some(paused) => paused,
                    None => "running: no pause in force".into(),
                };
            }
        }
        invocation.timed(report)
    }

    /// Writes the switch (a pause, or none), with an audit record and the report its event
    /// carries.
    pub(crate) async fn set(
        &self,
        function: &str,
        trigger: TriggerInfo,
        account: Option<&str>,
        pause: Option<Pause>,
        invocation: &Invocation,
    ) -> Report {
        let mut report = control_report(function, trigger, account, Outcome::Remediated);
        let before = match self.audit.pause(account).await {
            Ok(stored) => stored.filter(|pause| pause.in_force(Utc::now())),
            Err(err) => {
                report.outcome = Outcome::Failed;
                report.reason = format!("could not read the switch, nothing was changed: {err}");
                return invocation.timed(report);
            }
        };
        let mut action = Action {
            api: "dynamodb:UpdateItem".into(),
            target: format!(
                "{} (audit table {})",
                report.target.as_deref().unwrap_or(TARGET),
                self.audit.table()
            ),
            before: state(before.as_ref()),
            after: state(pause.as_ref()),
            applied: false,
            error: None,
        };
        let written = self.audit.set_pause(account, pause.as_ref()).await;
        if let Err(err) = written {
            action.error = Some(err.to_string());
            report.actions.push(action);
            report.outcome = Outcome::Failed;
            report.reason = format!("the switch was not written: {err}");
            self.audit.finish(&mut report, invocation).await;
            return report;
        }
        action.applied = true;
        report.actions.push(action);
        let scope = match account {
            Some(account) => format!("in account {account}"),
            None => "of the deployment".into(),
        };
        report.reason = match &pause {
            Some(pause) => format!(
                "paused every function {scope}: {pause}; runbooks plan but write nothing there until then"
            ),
            None => format!(
                "resumed every function {scope}: runbooks act again unless another pause holds them"
            ),
        };
        if pause.is_none() && self.paused_at_deploy {
            report.reason.push_str(
                "; but the deployment still pauses them (AutomationPaused=true): update the stack with AutomationPaused=false",
            );
        }
        self.audit.finish(&mut report, invocation).await;
        report
    }
}

/// A control report; its target is `automation`, or `automation in account <id>`.
fn control_report(
    function: &str,
    trigger: TriggerInfo,
    account: Option<&str>,
    outcome: Outcome,
) -> Report {
    let mut report = Report::new(function, trigger, outcome, String::new());
    report.runbook = Some(RUNBOOK.into());
    report.target = Some(match account {
        Some(account) => format!("{TARGET} in account {account}"),
        None => TARGET.into(),
    });
    report
}

fn state(pause: Option<&Pause>) -> Value {
    match pause {
        Some(pause) => {
            json!({"paused": true, "by": pause.by, "reason": pause.reason, "since": timestamp(pause.since), "until": pause.until.map(timestamp)})
        }
        None => json!({"paused": false}),
    }
}

/// Whether a report is a pause (`Some(true)`) or a resume (`Some(false)`) that took effect.
pub fn switched_to(report: &Value) -> Option<bool> {
    if report["runbook"] != RUNBOOK || report["outcome"] != "remediated" {
        return None;
    }
    report["actions"][0]["after"]["paused"].as_bool()
}
