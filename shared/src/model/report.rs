//! The report every invocation returns, logs and (when something was attempted) audits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::approval::Approval;
use super::drift::StackDrift;
use super::outcome::Outcome;
use super::plan::Action;
use super::refusal::Ending;
use super::trigger::TriggerInfo;
use super::verification::Verification;

/// Most items a report lists (its lists name the first ones and say how many there were), so
/// that a report, its audit item and its event stay within DynamoDB's and EventBridge's limits.
pub const LIST_CAP: usize = 100;

/// `{"first": [up to LIST_CAP items], "total": n}`.
pub fn capped<T: Serialize>(items: &[T]) -> Value {
    serde_json::json!({
        "first": items.iter().take(LIST_CAP).collect::<Vec<_>>(),
        "total": items.len(),
    })
}

/// The first `shown` items joined with ", ", and how many more there were.
pub fn some_of(items: &[String], shown: usize) -> String {
    let listed = items
        .iter()
        .take(shown)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(shown) {
        0 => listed,
        more => format!("{listed} and {more} more"),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub function: String,
    pub runbook: Option<String>,
    pub trigger: TriggerInfo,
    /// The resource, as a person names it.
    pub target: Option<String>,
    /// The resource's canonical key (its ARN): what its lease, cooldown and history are keyed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The account and region it acted in, for a hub that remediates several (`fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub reason: String,
    /// What a guard let through that a person should know (a manual run overriding a cooldown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What was observed before deciding (current settings, metrics); absent when nothing was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Value>,
    pub actions: Vec<Action>,
    pub verification: Verification,
    /// What happened in detail (a redrive's ledger, an inspection's sample); absent when the
    /// actions say it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    pub audit_id: Option<String>,
    /// Why a person is needed now (the change brake stopped the fleet, a resource flaps): sent
    /// as a `Runbook Escalation` event besides the report's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// The change was made to a resource of a CloudFormation stack, outside its template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_drift: Option<StackDrift>,
    /// It puts back an earlier change (a scale-down, a put-back at expiry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub put_back: bool,
    /// The plan awaiting approval, or the decision this run carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    pub duration_ms: u64,
}

/// A call for a person: what stopped the automation, and the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// `brake` (too many resources changed at once), `repeat` (one resource acted on again
    /// and again) or `denied` (a run met a person's denial of its plan: the incident is
    /// theirs).
    pub kind: String,
    pub reason: String,
    /// The resources changed in the window (brake), the earlier audit ids (repeat), or the
    /// denied plan's id (denied).
    pub evidence: Vec<String>,
}

/// What a function returns: one report, or one per resource for a scheduled sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    Sweep { reports: Vec<Report> },
    One(Box<Report>),
}

impl From<Report> for Output {
    fn from(report: Report) -> Self {
        Output::One(Box::new(report))
    }
}

impl Report {
    /// A report with no actions and no verification; callers fill in the rest.
    pub fn new(
        function: &str,
        trigger: TriggerInfo,
        outcome: Outcome,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            function: function.to_string(),
            runbook: None,
            trigger,
            target: None,
            resource: None,
            account: None,
            region: None,
            dry_run: false,
            outcome,
            reason: reason.into(),
            notes: Vec::new(),
            diagnosis: None,
            actions: Vec::new(),
            verification: Verification::not_applicable(),
            details: None,
            audit_id: None,
            escalation: None,
            stack_drift: None,
            put_back: false,
            approval: None,
            duration_ms: 0,
        }
    }

    /// Sets the outcome and its reason.
    pub fn finish(mut self, outcome: Outcome, reason: impl Into<String>) -> Self {
        self.outcome = outcome;
        self.reason = reason.into();
        self
    }

    /// A report for an input that was not understood (no AWS call was made).
    pub fn rejected(function: &str, trigger: TriggerInfo, reason: impl Into<String>) -> Self {
        Self::new(function, trigger, Outcome::Rejected, reason)
    }

    /// The report with the run's ending.
    pub fn ended(self, ending: Ending) -> Self {
        self.finish(ending.outcome, ending.reason)
    }

    /// Whether anything was attempted against a resource, which is what earns an audit record.
    pub fn attempted(&self) -> bool {
        !self.dry_run
            && self
                .actions
                .iter()
                .any(|action| action.applied || action.error.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TriggerKind;

    #[test]
    fn outcome_names_are_the_serialised_ones() {
        for outcome in [
            Outcome::Remediated,
            Outcome::Planned,
            Outcome::AwaitingApproval,
            Outcome::NoAction,
            Outcome::Skipped,
            Outcome::Rejected,
            Outcome::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).ok(),
                Some(outcome.as_str().into())
            );
        }
    }

    #[test]
    fn serialises_in_the_documented_shape() {
        let trigger = TriggerInfo {
            kind: TriggerKind::AlarmAction,
            name: Some("orders-throttle".into()),
            event_id: Some("e-1".into()),
        };
        let mut report = Report::new("limit-scaler", trigger, Outcome::NoAction, "nothing to do");
        report.runbook = Some("dynamodb-capacity".into());
        let json = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "function",
            "runbook",
            "trigger",
            "target",
            "dry_run",
            "outcome",
            "reason",
            "actions",
            "verification",
            "audit_id",
            "duration_ms",
        ] {
            assert!(keys.contains(&key), "missing {key} in {json}");
        }
        assert_eq!(json["trigger"]["kind"], "alarm_action");
        assert_eq!(json["outcome"], "no_action");
        assert_eq!(json["verification"]["status"], "not_applicable");
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
