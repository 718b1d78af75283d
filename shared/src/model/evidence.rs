//! The evidence a report carries about its subject (a function, table or queue): its errors
//! in the logs, its figures over the window and the one before, and its recent changes
//! (`path::evidence` reads it).

use serde::Serialize;
use std::collections::BTreeMap;

use crate::config::{ConfigError, Env};

/// EVIDENCE_LOOKBACK_MINUTES, EVIDENCE_MAX_EVENTS and ROLLBACK_WINDOW_MINUTES.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceConfig {
    /// The longest window logs and metrics are read over (a manual run reads the last this many).
    pub lookback_minutes: i64,
    /// The most log events read per run.
    pub max_events: usize,
    /// How far back recent changes are listed (and a deploy counts as fresh for a rollback).
    pub recent_changes_minutes: i64,
    /// How long the reads may take together (they run at once): evidence adds about this much
    /// to a run, at most.
    pub read_timeout_ms: u64,
}

impl EvidenceConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            lookback_minutes: env.number("EVIDENCE_LOOKBACK_MINUTES", 15i64, 1, 1_440)?,
            max_events: env.number("EVIDENCE_MAX_EVENTS", 1_000usize, 1, 10_000)?,
            recent_changes_minutes: env.number("ROLLBACK_WINDOW_MINUTES", 60i64, 1, 10_080)?,
            read_timeout_ms: env.number("EVIDENCE_READ_TIMEOUT_MS", 1_000u64, 100, 10_000)?,
        })
    }
}

/// What the evidence is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// A function, or one alias or version of it (`qualifier`).
    Function {
        name: String,
        qualifier: Option<String>,
    },
    Table {
        table: String,
        index: Option<String>,
    },
    Queue {
        name: String,
    },
}

/// `diagnosis.evidence`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The window logs and metrics were read over; `previous` in the figures is the one before.
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_changes: Option<Vec<RecentChange>>,
    /// The reads that failed or ran out of time, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What the function's logs show over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Logs {
    pub log_group: String,
    pub events_read: usize,
    /// Whether every matching event of the window was read (not cut at EVIDENCE_MAX_EVENTS).
    pub complete: bool,
    pub top_errors: Vec<ErrorCount>,
    pub timeouts: usize,
    pub out_of_memory: usize,
    pub access_denied: usize,
    pub throttling: usize,
}

/// One normalised error message and how often it was logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: usize,
}

/// One figure over the window and over the window before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub window: Option<f64>,
    pub previous: Option<f64>,
}

/// Something that changed recently, with when.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecentChange {
    pub at: String,
    pub kind: &'static str,
    pub what: String,
}
