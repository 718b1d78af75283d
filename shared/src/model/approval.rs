//! Approvals as data: a plan stored for a person (the state it was made from, its exact
//! actions, an expiry), where its approval stands, a person's decision, and the approved plan
//! being carried out. `path::approve` stores plans and `edge::approvals` decides them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::payload::parse_manual;
use super::plan::{Action, Planned};
use super::refusal::Rejection;
use super::resource::ResourceId;
use super::trigger::TriggerInfo;

/// Where a plan's approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Stored, awaiting a person's decision.
    Requested,
    Approved,
    Denied,
    /// Nobody decided before its expiry.
    Expired,
}

/// A plan that waits for a person, or a person's decision on one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub plan_id: String,
    pub status: ApprovalStatus,
    /// SHA-256 of the state the plan was made from (see `approval::state`).
    pub state_hash: String,
    /// After this, approving it does nothing (APPROVAL_MINUTES after it was made).
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exact commands that approve or deny it (on a requested plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<ApprovalCommands>,
    /// The same plan was asked for before and still awaits: no new request is sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_requested: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalCommands {
    pub approve: String,
    pub deny: String,
}

/// A plan as stored for approval: what it was made from and exactly what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub plan_id: String,
    pub function: String,
    pub runbook: String,
    /// The resource's canonical key, and its name as a person reads it.
    pub resource: String,
    pub target: String,
    /// SHA-256 of `state`.
    pub state_hash: String,
    /// The observed state it was made from: what each action's `before` saw (less what each
    /// run reads afresh, see `Runbook::approval_view`).
    pub state: Value,
    /// SHA-256 of the state and the actions (as `approval_view` shows them): what an approval
    /// compares with the plan made again.
    pub fingerprint: String,
    /// What a person's denial of it answers (`Runbook::denial_question`): a later plan asking
    /// anything else is a new question. Null in plans stored before it was kept: never the
    /// same question.
    #[serde(default)]
    pub question: Value,
    pub actions: Vec<Action>,
    pub then: Vec<Action>,
    pub summary: String,
    /// The trigger of the run that made it (an approval runs under the same guards).
    pub trigger: TriggerInfo,
    /// The event that made it, which an approval handles again to diagnose afresh.
    pub event: Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A stored plan and where its approval stands.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRecord {
    pub plan: Plan,
    pub status: ApprovalStatus,
    pub decided_by: Option<String>,
    pub decided_reason: Option<String>,
    pub decided_at: Option<String>,
}

/// `{"approve": "<plan id>", "by": "<who>", "reason": "…"}` or `{"deny": …}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    #[serde(default)]
    approve: Option<String>,
    #[serde(default)]
    deny: Option<String>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// A person's decision on a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    pub plan_id: String,
    pub approve: bool,
    pub by: String,
    pub reason: String,
}

/// Longest plan id, `by` and reason accepted.
const MAX_TEXT: usize = 500;

impl ApprovalRequest {
    /// The decision in an approve or deny payload; a clear rejection otherwise.
    pub fn parse(payload: &Map<String, Value>) -> Result<Self, Rejection> {
        let parsed: Payload = parse_manual(payload)?;
        let (plan_id, approve) = match (parsed.approve, parsed.deny) {
            (Some(plan_id), None) => (plan_id, true),
            (None, Some(plan_id)) => (plan_id, false),
            _ => {
                return Err(Rejection(
                    "give either \"approve\" or \"deny\" with a plan id, not both".into(),
                ));
            }
        };
        let word = if approve { "approve" } else { "deny" };
        let plan_id = plan_id.trim().to_string();
        if plan_id.is_empty()
            || plan_id.len() > 64
            || !plan_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Rejection(format!(
                "\"{word}\" must be a plan id as an awaiting_approval report gives it (letters, digits and dashes), got {plan_id:?}"
            )));
        }
        let text = |field: Option<String>| {
            field
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty())
        };
        let Some(by) = text(parsed.by) else {
            return Err(Rejection(format!(
                "\"by\" is required to {word} a plan: who decides (Lambda does not tell the function who invoked it)"
            )));
        };
        let reason = text(parsed.reason);
        if !approve && reason.is_none() {
            return Err(Rejection(
                "\"reason\" is required to deny a plan: why it must not run".into(),
            ));
        }
        let reason = reason.unwrap_or_default();
        if by.len() > MAX_TEXT || reason.len() > MAX_TEXT {
            return Err(Rejection(format!(
                "\"by\" and \"reason\" are at most {MAX_TEXT} characters"
            )));
        }
        Ok(Self {
            plan_id,
            approve,
            by,
            reason,
        })
    }
}

/// An approved plan being carried out: the run of its runbook on its resource applies it
/// (when nothing changed); every other run of the event only plans.
#[derive(Clone, Debug, PartialEq)]
pub struct Approving {
    pub plan: Plan,
    pub by: String,
    pub reason: String,
}

impl Approving {
    /// Whether a run of `runbook` on `resource` is the plan's.
    pub fn covers(&self, runbook: &str, resource: &ResourceId) -> bool {
        self.plan.runbook == runbook && self.plan.resource == resource.key()
    }

    /// The event id an approved plan is carried out under, once.
    pub fn event_id(&self) -> String {
        approval_event_id(&self.plan.plan_id)
    }

    /// The report's approval section.
    pub fn approval(&self) -> Approval {
        Approval {
            plan_id: self.plan.plan_id.clone(),
            status: ApprovalStatus::Approved,
            state_hash: self.plan.state_hash.clone(),
            expires_at: crate::model::timestamp(self.plan.expires_at),
            by: Some(self.by.clone()),
            reason: Some(self.reason.clone()).filter(|reason| !reason.is_empty()),
            commands: None,
            already_requested: false,
        }
    }
}

pub fn approval_event_id(plan_id: &str) -> String {
    format!("approval/{plan_id}")
}

/// The state a plan is made from, as it is compared when approved: what each of its actions
/// saw before (the settings it changes), with its SHA-256.
pub fn plan_state(resource: &ResourceId, runbook: &str, planned: &Planned) -> (Value, String) {
    let state = json!({
        "runbook": runbook,
        "resource": resource.key(),
        "before": planned.actions.iter().chain(&planned.then).map(|action| json!({
            "api": action.api,
            "target": action.target,
            "before": action.before,
        })).collect::<Vec<_>>(),
    });
    let hash = hex(&Sha256::digest(state.to_string().as_bytes()));
    (state, hash)
}

/// The plan's state and exact actions in one hash: a plan asked again with the same
/// fingerprint is the one already awaiting approval.
pub fn fingerprint(state_hash: &str, planned: &Planned) -> String {
    let actions = json!({"state": state_hash, "actions": planned.actions, "then": planned.then});
    hex(&Sha256::digest(actions.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The exact commands that approve or deny a plan of `function` (its deployed name).
pub fn approval_commands(function: &str, region: &str, plan_id: &str) -> ApprovalCommands {
    let command = |payload: Value| {
        format!(
            "aws lambda invoke --cli-read-timeout 0 --region {region} --function-name {function} --cli-binary-format raw-in-base64-out --payload '{payload}' decision.json && cat decision.json"
        )
    };
    ApprovalCommands {
        approve: command(json!({"approve": plan_id, "by": "<your name>", "reason": "<why>"})),
        deny: command(json!({"deny": plan_id, "by": "<your name>", "reason": "<why not>"})),
    }
}
