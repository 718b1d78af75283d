//! Pause, resume and status payloads (`{"control": …}`), which every function serves the same
//! way, on the kill switch of the hub (`guards::Switch`).

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::guards::{MAX_PAUSE_MINUTES, Switch};
use crate::model::{Invocation, Report, TriggerInfo, parse_manual};
use crate::store::Pause;

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

/// Handles a control payload: pause, resume, or the switch's status.
// Over 80 lines: pause, resume and status side by side, so that what each records and refuses reads
// as one contract.
pub async fn control(
    switch: &Switch,
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
        && !switch.accounts.iter().any(|known| known == account)
    {
        return rejected(match switch.accounts.as_slice() {
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
            switch.status(function, trigger, account, invocation).await
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
            switch
                .set(function, trigger, account, None, invocation)
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
            switch
                .set(function, trigger, account, Some(pause), invocation)
                .await
        }
    }
}
