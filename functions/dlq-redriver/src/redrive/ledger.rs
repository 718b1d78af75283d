//! What a redrive is asked to do (its plan) and what it did (its result and ledger).

use std::collections::BTreeMap;
use std::time::Duration;

use runbook_shared::aws::AwsError;
use serde::Serialize;
use serde_json::Value;

use crate::filter::MessageFilter;
use crate::queues::Queue;

/// What a redrive will do, decided before it starts.
#[derive(Clone, Debug)]
pub struct RedrivePlan {
    pub dlq: Queue,
    /// The queues whose RedrivePolicy points at the DLQ.
    pub sources: Vec<Queue>,
    /// Where messages that name no source go: the payload's target, else the single source.
    pub fallback: Option<Queue>,
    /// Whether the fallback is a person's explicit target, which also takes the messages that
    /// name a queue that is no longer a source (each reported as re-targeted).
    pub retarget: bool,
    pub max_messages: u32,
    pub rate_per_second: u32,
    pub filter: MessageFilter,
    pub max_redrives: u32,
    pub concurrency: usize,
}

/// Where every message the run looked at went. `remaining` is measured from the DLQ's depth
/// after the run, so the sum equalling `found` is the reconciliation, not an identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ledger {
    pub found: i64,
    pub moved: u64,
    pub poison: u64,
    pub refused: u64,
    pub filtered_out: u64,
    pub attribute_limit: u64,
    /// Over the target's MaximumMessageSize once the redrive-count attribute is added.
    pub too_large: u64,
    pub unroutable: u64,
    /// FIFO messages kept because an earlier message of their group was held (order first).
    pub held_behind: u64,
    pub not_deleted: u64,
    pub remaining: i64,
}

impl Ledger {
    /// Messages the run left in the DLQ on purpose (and made visible again).
    pub fn held(&self) -> u64 {
        self.poison
            + self.refused
            + self.filtered_out
            + self.attribute_limit
            + self.too_large
            + self.unroutable
            + self.held_behind
            + self.not_deleted
    }

    pub fn total(&self) -> i64 {
        i64::try_from(self.moved + self.held()).unwrap_or(i64::MAX) + self.remaining
    }
}

/// The outcome of one run.
#[derive(Debug, Default)]
pub struct RedriveResult {
    pub ledger: Ledger,
    /// Messages moved (accepted by the target and deleted from the DLQ) per target queue name.
    pub moved_to: BTreeMap<String, u64>,
    /// Messages each target accepted, deleted from the DLQ or not (a copy left behind).
    pub accepted_by: BTreeMap<String, u64>,
    pub poison_ids: Vec<String>,
    pub refused: Vec<Value>,
    /// Messages left in the DLQ because the queue they name is not a source (or none is named
    /// and there is no single source): id and the queue named.
    pub unroutable: Vec<Value>,
    pub attribute_limit_ids: Vec<String>,
    pub too_large_ids: Vec<String>,
    pub held_behind_ids: Vec<String>,
    /// Messages a person's target took although they name another queue: (id, named queue).
    pub retargeted: Vec<Value>,
    pub not_deleted_ids: Vec<String>,
    /// Messages an earlier redrive sent that came back (they carry `redrive-count`).
    pub returned: Vec<crate::returned::Returned>,
    /// Lambda OnFailure destination records among the messages sent (the envelope, not the
    /// original event, is what the target receives).
    pub lambda_records: u64,
    /// Held messages whose release did not happen before the deadline (or failed): they
    /// reappear when their visibility timeout ends.
    pub not_released_ids: Vec<String>,
    /// Why the run stopped before the DLQ was empty (deadline, max_messages), if it did.
    pub stopped_early: Option<String>,
    /// A fault that stopped the run.
    pub error: Option<AwsError>,
    pub api_calls: u64,
    pub elapsed: Duration,
}
