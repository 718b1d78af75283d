//! How a run ended, in one word.

use serde::{Deserialize, Serialize};

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
