//! The report every invocation returns, logs and (when something was attempted) audits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Actions were applied and the resource-level check passed.
    Remediated,
    /// Dry run (or the runbook's mode is observe): the exact actions it would take.
    Planned,
    /// The runbook's mode is approve: the plan is stored and waits for a person's decision.
    AwaitingApproval,
    /// Nothing to do, with the diagnosis in `reason`.
    NoAction,
    /// A guard stopped it (cooldown, lock held, not managed, budget spent, at cap).
    Skipped,
    /// The input was not understood; no AWS call was made.
    Rejected,
    /// It tried and did not succeed, or the verification failed.
    Failed,
}

impl Outcome {
    /// The name a report gives it (`no_action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Remediated => "remediated",
            Outcome::Planned => "planned",
            Outcome::AwaitingApproval => "awaiting_approval",
            Outcome::NoAction => "no_action",
            Outcome::Skipped => "skipped",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Alarm,
    AlarmAction,
    /// An alarm notification delivered by SNS.
    AlarmSns,
    Schedule,
    StackEvent,
    Manual,
    /// A `Runbook Handoff` event: another function's runbook found the cause and hands it on.
    Handoff,
    /// The input could not be recognised as any trigger.
    Unknown,
}

impl TriggerKind {
    /// A person's decision, as opposed to an alarm or a schedule: the cooldown and the action
    /// budget guard only automatic triggers.
    pub fn is_manual(self) -> bool {
        self == TriggerKind::Manual
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    pub kind: TriggerKind,
    pub name: Option<String>,
    pub event_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `service:Operation`, as in IAM.
    pub api: String,
    pub target: String,
    pub before: Value,
    pub after: Value,
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    Verified,
    Pending,
    Failed,
    NotApplicable,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub expected: String,
    pub observed: String,
}

/// What an open check observes until it is settled.
pub const AWAITED: &str = "pending";

impl Check {
    /// A metric-level check left open: the alarm's OK transition or the sweep settles it.
    pub fn awaited(name: &str, expected: impl Into<String>) -> Self {
        Self::new(name, false, expected, AWAITED)
    }

    /// Whether it is still open.
    pub fn is_awaited(&self) -> bool {
        !self.ok && self.observed == AWAITED
    }

    pub fn new(
        name: &str,
        ok: bool,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            ok,
            expected: expected.into(),
            observed: observed.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub status: VerificationStatus,
    pub checks: Vec<Check>,
    /// How a `pending` verification is settled later (by the alarm's OK transition or the
    /// health prober's sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_by: Option<SettleBy>,
}

/// The metric-level check that settles a pending verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleBy {
    /// The alarm that fired is back to OK.
    Alarm { name: String },
    /// The sum of these metrics over the check window is at most `max_sum`.
    Metric {
        namespace: String,
        metrics: Vec<String>,
        dimensions: std::collections::BTreeMap<String, String>,
        max_sum: f64,
    },
    /// The CloudFormation stack is in a stable state (verified when it completed, failed when
    /// it failed again).
    Stack { name: String },
    /// The DynamoDB backup is AVAILABLE (verified), or gone or failed (failed); still CREATING
    /// stays pending.
    Backup { arn: String },
    /// The queue holds fewer messages than `below` (a purge removed what was there, a redrive
    /// left that many behind; more means failures arrive again), once `not_before` has passed
    /// (a redriven message needs its source's visibility timeout × maxReceiveCount to fail back).
    QueueDepth {
        name: String,
        url: String,
        below: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// The metric-level check a change leaves open, for a run without an alarm: the sweep reads
/// `metrics` with `dimensions` (their sum must be 0 over the check window).
#[derive(Clone, Debug, PartialEq)]
pub struct AwaitedMetric {
    /// The check's name (`throttling_stopped`).
    pub check: &'static str,
    /// What it expects, in words (`no throttles on orders`).
    pub expected: String,
    pub namespace: String,
    pub metrics: Vec<String>,
    pub dimensions: std::collections::BTreeMap<String, String>,
}

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

impl Verification {
    /// One resource-level check that settles it at once: verified when it holds, failed when not.
    pub fn settled(check: Check) -> Self {
        Self::settled_all(vec![check])
    }

    /// Resource-level checks that settle it at once: verified when all hold, failed when not.
    pub fn settled_all(checks: Vec<Check>) -> Self {
        Self {
            status: if checks.iter().all(|check| check.ok) {
                VerificationStatus::Verified
            } else {
                VerificationStatus::Failed
            },
            checks,
            settle_by: None,
        }
    }

    /// After a change: the resource-level `checks` read now, and the metric-level check left
    /// open for the alarm's OK transition (or, without an alarm, the sweep's read of `metric`).
    /// Failed at once when a resource-level check failed, unless the resource had not `settled`
    /// by the deadline: then it stays open too, and the sweep or the alarm decides.
    pub fn awaiting(
        mut checks: Vec<Check>,
        settled: bool,
        alarm: Option<&str>,
        metric: AwaitedMetric,
    ) -> Self {
        if settled && checks.iter().any(|check| !check.ok) {
            return Self {
                status: VerificationStatus::Failed,
                checks,
                settle_by: None,
            };
        }
        let (expected, settle_by) = match alarm {
            Some(alarm) => (
                format!("alarm {alarm} back to OK"),
                SettleBy::Alarm {
                    name: alarm.to_string(),
                },
            ),
            None => (
                metric.expected,
                SettleBy::Metric {
                    namespace: metric.namespace,
                    metrics: metric.metrics,
                    dimensions: metric.dimensions,
                    max_sum: 0.0,
                },
            ),
        };
        checks.push(Check::awaited(metric.check, expected));
        Self {
            status: VerificationStatus::Pending,
            checks,
            settle_by: Some(settle_by),
        }
    }

    /// What the checks that did not pass expected and saw, for a reason that says what failed.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|check| !check.ok && !check.is_awaited())
            .map(|check| {
                format!(
                    "{}: expected {}, observed {}",
                    check.name, check.expected, check.observed
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn not_applicable() -> Self {
        Self {
            status: VerificationStatus::NotApplicable,
            checks: Vec::new(),
            settle_by: None,
        }
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
    pub stack_drift: Option<crate::ownership::StackDrift>,
    /// It puts back an earlier change (a scale-down, a put-back at expiry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub put_back: bool,
    /// The plan awaiting approval, or the decision this run carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    pub duration_ms: u64,
}

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

/// A call for a person: what stopped the automation, and the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// `brake` (too many resources changed at once) or `repeat` (one resource acted on again
    /// and again).
    pub kind: String,
    pub reason: String,
    /// The resources changed in the window (brake), or the earlier audit ids (repeat).
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
