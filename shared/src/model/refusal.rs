//! Why a run stops before it acts: an input that is refused, a guard that skips it, and how a
//! run ends.

use super::outcome::Outcome;
use super::verification::{Verification, VerificationStatus};

/// Why an input was not accepted, in one line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Why a guard stopped a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip(pub String);

/// How a run ends: its outcome and the sentence that says why.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    pub outcome: Outcome,
    pub reason: String,
}

impl Ending {
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
        }
    }

    pub fn remediated(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Remediated, reason)
    }

    pub fn no_action(reason: impl Into<String>) -> Self {
        Self::new(Outcome::NoAction, reason)
    }

    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Skipped, reason)
    }

    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Rejected, reason)
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Failed, reason)
    }
}

/// A step of a run, which may end it early.
pub type Step<T> = Result<T, Ending>;

/// The ending of an applied change by its verification: failed with what the checks saw, or
/// remediated with `summary`.
pub fn concluded(verification: &Verification, summary: &str) -> Ending {
    if verification.status == VerificationStatus::Failed {
        Ending::failed(format!(
            "{summary}, but the verification failed ({})",
            verification.failures()
        ))
    } else {
        Ending::remediated(summary)
    }
}
