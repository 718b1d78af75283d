//! A change as a runbook plans it and the report lists it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::refusal::{Ending, Step};

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

/// What a pure plan decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision<C> {
    /// Make this change.
    Act(C),
    /// Nothing to do; the diagnosis says why.
    NoAction(String),
    /// A limit stops it (at cap, the floor, a flip-flop).
    Skip(String),
}

impl<C> Decision<C> {
    /// The same decision about another change.
    pub fn map<D>(self, change: impl FnOnce(C) -> D) -> Decision<D> {
        match self {
            Decision::Act(planned) => Decision::Act(change(planned)),
            Decision::NoAction(reason) => Decision::NoAction(reason),
            Decision::Skip(reason) => Decision::Skip(reason),
        }
    }

    /// The change, or the run's ending.
    pub fn into_step(self) -> Step<C> {
        match self {
            Decision::Act(change) => Ok(change),
            Decision::NoAction(reason) => Err(Ending::no_action(reason)),
            Decision::Skip(reason) => Err(Ending::skipped(reason)),
        }
    }
}

/// A change as the report lists it: the exact actions (what a dry run returns), and what it
/// does in the past tense ("raised orders from read 5 to read 10").
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// What `apply` writes, all or nothing.
    pub actions: Vec<Action>,
    /// What follows once the change is verified (old backups deleted): a dry run lists them;
    /// a live run's `verify` makes them and reports each with its own outcome.
    pub then: Vec<Action>,
    pub summary: String,
}

impl Planned {
    /// One action on `target` from `before` to `after`.
    pub fn one(api: &str, target: &str, before: Value, after: Value, summary: String) -> Self {
        Self {
            actions: vec![Action {
                api: api.into(),
                target: target.into(),
                before,
                after,
                applied: false,
                error: None,
            }],
            then: Vec::new(),
            summary,
        }
    }
}

/// Why a write did not happen.
#[derive(Clone, Debug, PartialEq)]
pub enum NotApplied {
    /// It failed and nothing was changed: `error` goes on the action, `reason` on the report.
    Failed { error: String, reason: String },
    /// The resource changed between the read and the write (a conditional write refused it):
    /// the run reads and plans again, rather than write over someone else's change.
    ChangedUnder { error: String },
}

impl NotApplied {
    /// A failed call: the report says that nothing was changed.
    pub fn failed(err: &crate::aws::AwsError) -> Self {
        Self::Failed {
            error: err.to_string(),
            reason: format!("{err}; nothing was changed"),
        }
    }

    /// A failed call with its own explanation.
    pub fn explained(err: &crate::aws::AwsError, reason: String) -> Self {
        Self::Failed {
            error: err.to_string(),
            reason,
        }
    }
}
