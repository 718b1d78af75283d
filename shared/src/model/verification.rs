//! How a change is verified: resource-level checks at once, and the metric-level check a
//! pending verification awaits (the alarm's OK, or the sweep's read).

use serde::{Deserialize, Serialize};

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
