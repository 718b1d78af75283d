//! Why a run stops before it acts: an input that is refused, a guard that skips it, and how a
//! run ends.

use chrono::{DateTime, Utc};

use super::outcome::Outcome;
use super::time::timestamp;
use super::verification::{Verification, VerificationStatus};

/// Why an input was not accepted, in one line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Why a guard stopped a run: which guard, and what it saw. `Display` says it in the words the
/// report carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Skip {
    /// Another invocation holds the resource's lease.
    Leased {
        key: String,
        owner: String,
        until: DateTime<Utc>,
    },
    /// The runbook changed the resource less than COOLDOWN_SECONDS ago.
    Cooldown {
        runbook: String,
        resource: String,
        changed_at: DateTime<Utc>,
        audit_id: String,
        cooldown_seconds: i64,
    },
    /// The runbook took MAX_ACTIONS_PER_HOUR automatic actions in the last 60 minutes.
    Budget {
        runbook: String,
        max: u32,
        next: Option<DateTime<Utc>>,
    },
    /// Automatic runs changed the resource `earlier.len()` times within `window_hours`.
    Repeat {
        resource: String,
        window_hours: i64,
        earlier: Vec<Earlier>,
    },
    /// Other resources changed within the account's change window (by name, and when).
    Brake {
        changed: Vec<(String, DateTime<Utc>)>,
        window_minutes: i64,
        max: usize,
    },
}

/// An earlier automatic change the repeat brake counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Earlier {
    pub audit_id: String,
    pub runbook: String,
    pub started_at: DateTime<Utc>,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Leased { key, owner, until } => write!(
                f,
                "lock held: invocation {owner} is working on {key} (lease until {})",
                timestamp(*until)
            ),
            Skip::Cooldown {
                runbook,
                resource,
                changed_at,
                audit_id,
                cooldown_seconds,
            } => write!(
                f,
                "cooldown: {runbook} changed {resource} at {} (audit {audit_id}); next automatic action allowed after {} (COOLDOWN_SECONDS={cooldown_seconds})",
                timestamp(*changed_at),
                timestamp(*changed_at + chrono::Duration::seconds(*cooldown_seconds)),
            ),
            Skip::Budget { runbook, max, next } => write!(
                f,
                "budget spent: {runbook} took {max} automatic actions in the last 60 minutes (MAX_ACTIONS_PER_HOUR={max}){}",
                next.map(|at| format!("; the next is allowed after {}", timestamp(at)))
                    .unwrap_or_default()
            ),
            Skip::Repeat {
                resource,
                window_hours,
                earlier,
            } => {
                let ids: Vec<String> = earlier
                    .iter()
                    .map(|e| {
                        format!(
                            "{} ({}, {})",
                            e.audit_id,
                            e.runbook,
                            timestamp(e.started_at)
                        )
                    })
                    .collect();
                write!(
                    f,
                    "escalated: acted on {resource} {} times in {window_hours} h (audit {}); a resource that keeps needing the same fix needs a person: look at it, then run the runbook by hand if it still applies",
                    earlier.len(),
                    ids.join(", ")
                )
            }
            Skip::Brake {
                changed,
                window_minutes,
                max,
            } => {
                let names: Vec<String> = changed
                    .iter()
                    .map(|(name, at)| format!("{name} at {}", timestamp(*at)))
                    .collect();
                write!(
                    f,
                    "brake: {} resources changed in the last {window_minutes} minutes ({}); MAX_CHANGES_PER_WINDOW={max}: so many changes at once look like one cause, which a person should find before more change",
                    changed.len(),
                    names.join(", ")
                )
            }
        }
    }
}

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
