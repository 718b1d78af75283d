//! How `lambda-resources` plans: the timeout only on evidence that runs reach it (a latency
//! alarm is not a timeout), memory only on evidence of out-of-memory; nothing ever lowered,
//! caps kept; pure.

use runbook_shared::model::Decision;
use runbook_shared::model::Rejection;
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
    /// The SQS queue it consumes with the shortest visibility timeout, if it consumes any: a
    /// timeout above that lets a message reappear while it is still being processed.
    pub queue_limit: Option<QueueLimit>,
}

/// A queue an event source mapping reads for the function, and the time it leaves the
/// function: its visibility timeout less the mapping's batching window.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueLimit {
    pub queue: String,
    pub visibility_timeout: i32,
}

/// The change: each raised field from → to; a field left out is not sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub timeout: Option<(i32, i32)>,
    pub memory: Option<(i32, i32)>,
    /// Why a field asked for was left as it is (no evidence for it).
    pub kept: Vec<String>,
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

/// What the run's evidence shows about timeouts and memory: the longest run in the window
/// (CloudWatch's `Maximum` of `Duration`, milliseconds), and the `Task timed out` and
/// out-of-memory lines in the function's logs (`None`: not read).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub longest_ms: Option<f64>,
    pub timeouts_logged: Option<usize>,
    pub out_of_memory_logged: Option<usize>,
}

impl Evidence {
    /// From the run's evidence (none read: no evidence).
    pub fn of(evidence: Option<&runbook_shared::model::Evidence>) -> Self {
        let Some(evidence) = evidence else {
            return Self::default();
        };
        Self {
            longest_ms: evidence
                .metrics
                .get("duration_max_ms")
                .and_then(|figures| figures.window),
            timeouts_logged: evidence.logs.as_ref().map(|logs| logs.timeouts),
            out_of_memory_logged: evidence.logs.as_ref().map(|logs| logs.out_of_memory),
        }
    }

    fn logged(count: Option<usize>) -> String {
        count.map_or("the logs could not be read".into(), |n| {
            format!("{n} in the logs")
        })
    }
}

/// Plans the raise; pure, so dry runs and tests see the same plan. The timeout is raised only
/// on evidence of timeouts (runs reaching `TIMEOUT_EVIDENCE_SHARE` of it, or `Task timed out`
/// logged), memory only on evidence of out-of-memory in the logs; nothing is ever lowered, and
/// a value already above its cap is kept. The timeout's cap is also the visibility timeout of
/// every SQS queue the function consumes (AWS requires the visibility timeout to be at least
/// the function's timeout).
// Over 80 lines: timeout and memory planned side by side, each with its evidence and its caps;
// pure, and tested as one function.
pub fn plan(
    settings: &Settings,
    raise: Raise,
    evidence: &Evidence,
    config: &ResponderConfig,
) -> Decision<Change> {
    let scaled = |current: i32, factor: f64, cap: i32| {
        ((f64::from(current) * factor).ceil() as i32)
            .min(cap)
            .max(current)
    };
    let mut kept = Vec::new();
    let timeout_cap = match &settings.queue_limit {
        Some(limit) => config.max_timeout_seconds.min(limit.visibility_timeout),
        None => config.max_timeout_seconds,
    };
    let timeout = if raise.timeout() {
        let needed = f64::from(settings.timeout) * 1000.0 * TIMEOUT_EVIDENCE_SHARE;
        let reached = evidence.longest_ms.is_some_and(|longest| longest >= needed);
        if reached || evidence.timeouts_logged.unwrap_or(0) > 0 {
            Some(scaled(settings.timeout, config.timeout_factor, timeout_cap))
        } else {
            let runs = match evidence.longest_ms {
                Some(longest) => format!(
                    "the longest run was {longest:.0} ms, {:.0}% of the {} s timeout",
                    longest / (f64::from(settings.timeout) * 10.0),
                    settings.timeout
                ),
                None => "no Duration datapoints in the window".into(),
            };
            kept.push(format!(
                "timeout kept: latency, not timeouts ({runs}; Task timed out: {}); a longer timeout only helps runs that reach {:.0}% of it",
                Evidence::logged(evidence.timeouts_logged),
                TIMEOUT_EVIDENCE_SHARE * 100.0
            ));
            None
        }
    } else {
        None
    };
    let memory = if raise.memory() {
        if evidence.out_of_memory_logged.unwrap_or(0) > 0 {
            Some(scaled(
                settings.memory,
                config.memory_factor,
                config.max_memory_mb,
            ))
        } else {
            kept.push(format!(
                "memory kept: no evidence of out-of-memory (out-of-memory: {}); more memory only helps a function that runs out of it",
                Evidence::logged(evidence.out_of_memory_logged)
            ));
            None
        }
    } else {
        None
    };
    let change = Change {
        timeout: timeout
            .filter(|to| *to > settings.timeout)
            .map(|to| (settings.timeout, to)),
        memory: memory
            .filter(|to| *to > settings.memory)
            .map(|to| (settings.memory, to)),
        kept: kept.clone(),
    };
    if change.timeout.is_some() || change.memory.is_some() {
        return Decision::Act(change);
    }
    if timeout.is_none() && memory.is_none() {
        return Decision::NoAction(kept.join("; "));
    }
    let mut at_cap = Vec::new();
    match &settings.queue_limit {
        Some(limit)
            if timeout.is_some() && limit.visibility_timeout < config.max_timeout_seconds =>
        {
            at_cap.push(format!(
                "timeout {} s is at the {} s visibility timeout of queue {}, which it consumes (less the mapping's batching window): a longer timeout would let messages reappear while still being processed (processed twice, and sent to the DLQ sooner); raise the queue's VisibilityTimeout first (AWS recommends six times the function's timeout plus the batching window)",
                settings.timeout, limit.visibility_timeout, limit.queue
            ));
        }
        _ if timeout.is_some() => at_cap.push(format!(
            "timeout {} s is at MAX_TIMEOUT_SECONDS={}",
            settings.timeout, config.max_timeout_seconds
        )),
        _ => {}
    }
    if memory.is_some() {
        at_cap.push(format!(
            "memory {} MB is at MAX_MEMORY_MB={}",
            settings.memory, config.max_memory_mb
        ));
    }
    Decision::Skip(format!(
        "at cap: {}; the function itself needs attention{}",
        at_cap.join(" and "),
        if kept.is_empty() {
            String::new()
        } else {
            format!(" ({})", kept.join("; "))
        }
    ))
}
