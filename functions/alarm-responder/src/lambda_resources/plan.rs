//! How `lambda-resources` plans: the timeout only on evidence that runs reach it (a latency
//! alarm is not a timeout), memory when asked; nothing ever lowered, caps kept; pure.

use chrono::{DateTime, Utc};
use runbook_shared::runbook::Decision;
use runbook_shared::trigger::{AlarmTrigger, Rejection};
use serde_json::{Value, json};

use crate::config::ResponderConfig;

/// A longer timeout is only worth it when runs reach this share of the current one.
pub const TIMEOUT_EVIDENCE_SHARE: f64 = 0.9;

/// What to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raise {
    Timeout,
    Memory,
    Both,
}

impl Raise {
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        match text {
            "timeout" => Ok(Raise::Timeout),
            "memory" => Ok(Raise::Memory),
            "both" => Ok(Raise::Both),
            other => Err(Rejection(format!(
                "\"raise\" must be timeout, memory or both, got {other:?}"
            ))),
        }
    }

    pub fn timeout(self) -> bool {
        matches!(self, Raise::Timeout | Raise::Both)
    }

    pub fn memory(self) -> bool {
        matches!(self, Raise::Memory | Raise::Both)
    }
}

/// A function's settings as GetFunctionConfiguration shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub arn: String,
    pub timeout: i32,
    pub memory: i32,
    pub last_update: String,
    /// What an update passes back so that it applies only to the configuration it was planned
    /// from.
    pub revision: Option<String>,
}

/// The change: each raised field from → to; a field left out is not sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub timeout: Option<(i32, i32)>,
    pub memory: Option<(i32, i32)>,
    /// Why the timeout was asked for and left as it is (the evidence says latency).
    pub timeout_kept: Option<String>,
}

impl Change {
    pub(super) fn state(&self, pick: fn((i32, i32)) -> i32) -> Value {
        let mut state = serde_json::Map::new();
        if let Some(timeout) = self.timeout {
            state.insert("timeout_seconds".into(), json!(pick(timeout)));
        }
        if let Some(memory) = self.memory {
            state.insert("memory_mb".into(), json!(pick(memory)));
        }
        Value::Object(state)
    }

    pub(super) fn text(&self, pick: fn((i32, i32)) -> i32) -> String {
        let mut parts = Vec::new();
        if let Some(timeout) = self.timeout {
            parts.push(format!("timeout {} s", pick(timeout)));
        }
        if let Some(memory) = self.memory {
            parts.push(format!("memory {} MB", pick(memory)));
        }
        parts.join(", ")
    }

    pub(super) fn in_force(&self, settings: &Settings) -> bool {
        self.timeout.is_none_or(|(_, to)| settings.timeout == to)
            && self.memory.is_none_or(|(_, to)| settings.memory == to)
    }
}

/// The longest run in the window, as CloudWatch's `Maximum` of `Duration` (milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub longest_ms: Option<f64>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Plans the raise; pure, so dry runs and tests see the same plan. The timeout is raised only
/// on evidence that runs reach `TIMEOUT_EVIDENCE_SHARE` of it; nothing is ever lowered, and a
/// value already above its cap is kept.
pub fn plan(
    settings: &Settings,
    raise: Raise,
    evidence: Option<&Evidence>,
    config: &ResponderConfig,
) -> Decision<Change> {
    let scaled = |current: i32, factor: f64, cap: i32| {
        ((f64::from(current) * factor).ceil() as i32)
            .min(cap)
            .max(current)
    };
    let mut latency = None;
    let timeout = if raise.timeout() {
        let needed = f64::from(settings.timeout) * 1000.0 * TIMEOUT_EVIDENCE_SHARE;
        match evidence.and_then(|evidence| evidence.longest_ms) {
            Some(longest) if longest >= needed => Some(scaled(
                settings.timeout,
                config.timeout_factor,
                config.max_timeout_seconds,
            )),
            longest => {
                latency = Some(match longest {
                    Some(longest) => format!(
                        "latency, not timeouts: the longest run was {longest:.0} ms, {:.0}% of the {} s timeout; a longer timeout only helps runs that reach {:.0}% of it",
                        longest / (f64::from(settings.timeout) * 10.0),
                        settings.timeout,
                        TIMEOUT_EVIDENCE_SHARE * 100.0
                    ),
                    None => format!(
                        "no Duration datapoints in the window, so no evidence that runs reach the {} s timeout: nothing was raised",
                        settings.timeout
                    ),
                });
                None
            }
        }
    } else {
        None
    };
    let memory = raise
        .memory()
        .then(|| scaled(settings.memory, config.memory_factor, config.max_memory_mb));
    let change = Change {
        timeout: timeout
            .filter(|to| *to > settings.timeout)
            .map(|to| (settings.timeout, to)),
        memory: memory
            .filter(|to| *to > settings.memory)
            .map(|to| (settings.memory, to)),
        timeout_kept: latency.clone(),
    };
    if change.timeout.is_some() || change.memory.is_some() {
        return Decision::Act(change);
    }
    if let Some(latency) = latency.as_ref().filter(|_| !raise.memory()) {
        return Decision::NoAction(latency.clone());
    }
    let mut at_cap = Vec::new();
    if timeout.is_some() {
        at_cap.push(format!(
            "timeout {} s is at MAX_TIMEOUT_SECONDS={}",
            settings.timeout, config.max_timeout_seconds
        ));
    }
    if raise.memory() {
        at_cap.push(format!(
            "memory {} MB is at MAX_MEMORY_MB={}",
            settings.memory, config.max_memory_mb
        ));
    }
    Decision::Skip(format!(
        "at cap: {}; the function itself needs attention{}",
        at_cap.join(" and "),
        latency.map(|l| format!(" ({l})")).unwrap_or_default()
    ))
}

/// The window evidence is read over: the span the alarm evaluated, or the last
/// EVIDENCE_WINDOW_MINUTES when it does not say (a manual run).
pub fn evidence_window(
    alarm: Option<&AlarmTrigger>,
    config: &ResponderConfig,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    match alarm.and_then(|alarm| alarm.window) {
        Some((from, to)) if to > from => (from, to),
        _ => (
            now - chrono::Duration::minutes(config.evidence_window_minutes),
            now,
        ),
    }
}
