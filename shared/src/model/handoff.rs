//! A `Runbook Handoff`: one function's runbook found the cause and hands it to the function
//! that runs the remedy, as an EventBridge event (`source` `runbook.automation`) that the
//! template routes by `detail.to`. No function imports another; the receiver treats the handoff
//! as a trigger, confirms it against what it reads itself, and runs its runbook under its own
//! guards and verification.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DETAIL_TYPE: &str = "Runbook Handoff";
/// The receiver of handoffs, and the runbooks it accepts them for (limit-scaler's own ids; a
/// test there holds them equal).
pub const LIMIT_SCALER: &str = "limit-scaler";
pub const DYNAMODB_CAPACITY: &str = "dynamodb-capacity";
pub const LAMBDA_CONCURRENCY: &str = "lambda-concurrency";

/// The event's `detail`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Stable across re-sends of one decision (the triggering event's id and the runbook): the
    /// receiver's idempotency key, so a retried sender does not act twice.
    pub handoff_id: String,
    /// The function that runs it (`limit-scaler`): what the template's rule routes on.
    pub to: String,
    /// The receiver's runbook (`dynamodb-capacity`, `lambda-concurrency`).
    pub runbook: String,
    pub target: HandoffTarget,
    /// The alarm that started the sender's run, if an alarm did: the receiver re-checks that it
    /// still fires before it writes.
    #[serde(default)]
    pub alarm: Option<String>,
    /// Who hands it on: `alarm-responder/api-errors on orders-api stage prod`.
    pub from: String,
    /// Why, with the figures.
    pub reason: String,
    /// The sender's evidence about the target.
    #[serde(default)]
    pub evidence: Value,
    /// The account and region of the target (the sender's own): a hub that acts in several
    /// sends every handoff on its own bus, and the receiver acts there. Absent from a sender
    /// that acts in one place: the receiver's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// What the receiver's runbook acts on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HandoffTarget {
    /// A table or index whose `read` and/or `write` side throttles.
    Table {
        table: String,
        #[serde(default)]
        index: Option<String>,
        read: bool,
        write: bool,
    },
    /// A function that throttles.
    Function { function: String },
}

impl HandoffTarget {
    /// As a person reads it: `orders`, `orders/index/by-day`, `checkout`.
    pub fn name(&self) -> String {
        match self {
            HandoffTarget::Table {
                table,
                index: Some(index),
                ..
            } => format!("{table}/index/{index}"),
            HandoffTarget::Table { table, .. } => table.clone(),
            HandoffTarget::Function { function } => function.clone(),
        }
    }
}
