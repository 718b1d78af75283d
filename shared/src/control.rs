//! The kill switch: one item of the audit table pauses every function of the deployment, in
//! every account it remediates; another pauses them in one account only. While
//! paused, runbooks diagnose and plan but write nothing (their act step ends `skipped`,
//! "paused: …"); reads, dry runs, inspections, probes and the verification sweep go on. The
//! switch is read right before the first write of every run, and a switch that cannot be read
//! is a pause: it fails closed.

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::audit::{AuditStore, Pause};
use crate::report::{Action, Outcome, Report, TriggerInfo};
use crate::safety::Invocation;
use crate::trigger::parse_manual;

/// The runbook id of pause, resume and status reports (and of their audit records).
pub const RUNBOOK: &str = "automation-control";
/// Their target, and the key of their audit history.
pub const TARGET: &str = "automation";
/// The longest timed pause; a longer one is an indefinite pause (no `minutes`).
pub const MAX_PAUSE_MINUTES: i64 = 7 * 24 * 60;
/// The window the sweep's auto-trip counts failed verifications in.
pub const TRIP_WINDOW_MINUTES: i64 = 60;

/// `{"control": "pause" | "resume" | "status", "reason": "…", "minutes": 60, "by": "…",
/// "account": "111111111111"}` (`account`: that account's switch instead of the whole
/// deployment's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    control: ControlAction,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    minutes: Option<i64>,
    /// Who asks (Lambda does not tell a function who invoked it); the request id otherwise.
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    account: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ControlAction {
    Pause,
    Resume,
    Status,
}

/// The switch as one function sees it: the item in the audit table, and the deployment's own
/// AUTOMATION_PAUSED.
#[derive(Clone)]
pub struct Switch {
    audit: AuditStore,
    paused_at_deploy: bool,
    /// The account whose own switch item holds this function too (a hub that acts in several).
    account: Option<String>,
    /// The accounts a control payload may name (the hub's and ACCOUNTS); none for a deployment
    /// that acts in one.
    accounts: Vec<String>,
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
    async fn paused_in(&self, account: Option<&str>) -> Option<String> {
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
            self.switch(function, trigger, None, Some(pause), invocation)
                .await,
        ))
    }

    /// Handles a control payload: pause, resume, or the switch's status.
    pub async fn control(
        &self,
        function: &str,
        payload: &Map<String, Value>,
        trigger: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let rejected =
            |reason: String| invocation.timed(Report::rejected(function, trigger.clone(), reason));
        let request: ControlRequest = match parse_manual(payload) {
            Ok(request) => request,
            Err(rejection) => return rejected(rejection.0),
        };
        let reason = request
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|reason| !reason.is_empty());
        let by = request
            .by
            .clone()
            .unwrap_or_else(|| format!("manual invocation {}", invocation.request_id));
        let account = request.account.as_deref().map(str::trim);
        if let Some(account) = account
            && !self.accounts.iter().any(|known| known == account)
        {
            return rejected(match self.accounts.as_slice() {
                [] => format!(
                    "\"account\": this deployment acts in its own account only, so leave \"account\" out (got {account:?}); nothing was changed"
                ),
                known => format!(
                    "\"account\" must be one this deployment acts in ({}), got {account:?}; nothing was changed",
                    known.join(", ")
                ),
            });
        }

        match request.control {
            ControlAction::Status => {
                if request.minutes.is_some() || reason.is_some() || request.by.is_some() {
                    return rejected(
                        "\"control\": \"status\" takes no other field; nothing was changed".into(),
                    );
                }
                self.status(function, trigger, account, invocation).await
            }
            ControlAction::Pause | ControlAction::Resume if reason.is_none() => rejected(format!(
                "\"control\": \"{}\" needs a \"reason\" (it is audited and sent with the event); nothing was changed",
                if request.control == ControlAction::Pause {
                    "pause"
                } else {
                    "resume"
                }
            )),
            ControlAction::Resume if request.minutes.is_some() => {
                rejected("\"minutes\" is for \"pause\"; nothing was changed".into())
            }
            ControlAction::Resume => {
                self.switch(function, trigger, account, None, invocation)
                    .await
            }
            ControlAction::Pause => {
                let now = Utc::now();
                let until = match request.minutes {
                    None => None,
                    Some(minutes) if (1..=MAX_PAUSE_MINUTES).contains(&minutes) => {
                        Some(now + Duration::minutes(minutes))
                    }
                    Some(minutes) => {
                        return rejected(format!(
                            "\"minutes\" must be from 1 to {MAX_PAUSE_MINUTES} (7 days), got {minutes}; leave it out to pause until someone resumes; nothing was changed"
                        ));
                    }
                };
                let pause = Pause {
                    by,
                    reason: reason.unwrap_or_default().to_string(),
                    since: now,
                    until,
                };
                self.switch(function, trigger, account, Some(pause), invocation)
                    .await
            }
        }
    }

    async fn status(
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
    async fn switch(
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
            json!({"paused": true, "by": pause.by, "reason": pause.reason, "since": crate::audit::timestamp(pause.since), "until": pause.until.map(crate::audit::timestamp)})
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
