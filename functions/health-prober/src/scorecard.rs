//! The scorecard: per runbook, what its runs did over the last days, read from the audit table,
//! and whether it has earned `auto` (docs/modes.md, "Rolling out a runbook"). Read-only; published
//! daily as CloudWatch metrics by the scorecard schedule.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::AwsError;
use runbook_shared::model::{ApprovalStatus, VerificationStatus};
use runbook_shared::store::{AuditRecord, AuditStore, ScorecardItems};
use serde::{Deserialize, Serialize};

/// `{"report": "scorecard", "days": 30}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub report: String,
    #[serde(default)]
    pub days: Option<i64>,
}

pub const DEFAULT_DAYS: i64 = 30;

/// What "ready for auto" asks of a runbook in approve mode.
pub const READY_APPROVED: u64 = 20;
pub const READY_VERIFIED_RATE: f64 = 0.95;
/// A resource acted on again within this many hours is a repeat.
pub const REPEAT_HOURS: i64 = 24;

#[derive(Clone, Debug, Serialize)]
pub struct Scorecard {
    pub function: String,
    pub report: String,
    pub trigger: runbook_shared::model::TriggerInfo,
    pub days: i64,
    pub since: String,
    pub runbooks: Vec<RunbookScore>,
    /// The audit table was read only in part (more than the scorecard reads).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::Published>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunbookScore {
    pub runbook: String,
    pub runs: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Runs that changed something, and where their verification stands now (a change whose
    /// check is another run's, a hand-off, counts in `remediated` only).
    pub remediated: u64,
    pub verified: u64,
    pub failed: u64,
    pub pending: u64,
    /// verified / (verified + failed + pending).
    pub verified_rate: Option<f64>,
    /// Scale-downs and put-backs of earlier changes: neither remediations nor repeats.
    pub put_backs: u64,
    pub time_to_verified_p50_seconds: Option<f64>,
    pub time_to_verified_p95_seconds: Option<f64>,
    /// Remediations of a resource this runbook had changed within REPEAT_HOURS before.
    pub repeats: u64,
    pub repeat_rate: Option<f64>,
    /// Runs a guard stopped, by guard.
    pub skipped_by_guard: BTreeMap<String, u64>,
    pub approvals: Approvals,
    pub readiness: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Approvals {
    pub approved: u64,
    pub denied: u64,
    pub expired: u64,
    pub awaiting: u64,
}

/// The guard a skipped run's reason names (the guards' reasons start with these words).
pub fn guard_of(reason: &str) -> &'static str {
    const GUARDS: &[(&str, &str)] = &[
        ("cooldown:", "cooldown"),
        ("lock held:", "lease"),
        ("budget spent:", "budget"),
        ("paused:", "kill_switch"),
        ("brake:", "change_brake"),
        ("escalated:", "repeat_brake"),
        ("not managed:", "managed"),
        ("a deployment is in progress", "owning_stack"),
        ("duplicate delivery", "idempotency"),
        (
            "state changed since the plan was made",
            "approval_state_changed",
        ),
        ("the plan made now differs", "approval_state_changed"),
        ("approval expired", "approval_expired"),
        ("denied by", "approval_denied"),
    ];
    GUARDS
        .iter()
        .find(|(start, _)| reason.starts_with(start))
        .map(|(_, guard)| *guard)
        .unwrap_or("runbook_limit")
}

/// The score of every runbook with a run, a remediation or a plan in `items`.
pub fn score(items: &ScorecardItems, now: DateTime<Utc>) -> Vec<RunbookScore> {
    let mut runbooks: BTreeSet<&str> = BTreeSet::new();
    runbooks.extend(items.runs.iter().map(|run| run.runbook.as_str()));
    runbooks.extend(
        items
            .records
            .iter()
            .map(|(record, _)| record.runbook.as_str()),
    );
    runbooks.extend(items.plans.iter().map(|plan| plan.runbook.as_str()));
    runbooks
        .into_iter()
        .filter(|runbook| runbook_shared::model::RUNBOOKS.contains(runbook))
        .map(|runbook| score_one(runbook, items, now))
        .collect()
}

fn score_one(runbook: &str, items: &ScorecardItems, now: DateTime<Utc>) -> RunbookScore {
    let mut score = RunbookScore {
        runbook: runbook.to_string(),
        ..RunbookScore::default()
    };
    for run in items.runs.iter().filter(|run| run.runbook == runbook) {
        score.runs += 1;
        *score.outcomes.entry(run.outcome.clone()).or_default() += 1;
        if run.outcome == "skipped" {
            *score
                .skipped_by_guard
                .entry(guard_of(&run.reason).to_string())
                .or_default() += 1;
        }
    }
    let changes = items.records.iter().filter(|(record, _)| {
        record.runbook == runbook && record.report.actions.iter().any(|action| action.applied)
    });
    let (put_backs, remediations): (Vec<_>, Vec<_>) =
        changes.partition(|(record, _)| record.report.put_back);
    score.put_backs = put_backs.len() as u64;
    let remediations: Vec<&(AuditRecord, Option<DateTime<Utc>>)> = remediations;
    let mut times = Vec::new();
    for (record, settled_at) in &remediations {
        score.remediated += 1;
        match record.report.verification.status {
            VerificationStatus::Verified => {
                score.verified += 1;
                let seconds = match settled_at {
                    Some(at) => (*at - record.started_at).num_milliseconds() as f64 / 1000.0,
                    None => record.report.duration_ms as f64 / 1000.0,
                };
                times.push(seconds.max(0.0));
            }
            VerificationStatus::Failed => score.failed += 1,
            VerificationStatus::Pending => score.pending += 1,
            VerificationStatus::NotApplicable => {}
        }
        let repeat = remediations.iter().any(|(earlier, _)| {
            earlier.resource == record.resource
                && earlier.started_at < record.started_at
                && record.started_at - earlier.started_at < Duration::hours(REPEAT_HOURS)
        });
        score.repeats += u64::from(repeat);
    }
    times.sort_by(f64::total_cmp);
    score.time_to_verified_p50_seconds = percentile(&times, 0.50);
    score.time_to_verified_p95_seconds = percentile(&times, 0.95);
    let checked = score.verified + score.failed + score.pending;
    score.verified_rate = (checked > 0).then(|| score.verified as f64 / checked as f64);
    score.repeat_rate =
        (score.remediated > 0).then(|| score.repeats as f64 / score.remediated as f64);
    for plan in items.plans.iter().filter(|plan| plan.runbook == runbook) {
        let approvals = &mut score.approvals;
        match plan.status {
            ApprovalStatus::Approved => approvals.approved += 1,
            ApprovalStatus::Denied => approvals.denied += 1,
            ApprovalStatus::Expired => approvals.expired += 1,
            // Nobody decided in time: expired, though nobody has tried to approve it since.
            ApprovalStatus::Requested if plan.expires_at <= now => approvals.expired += 1,
            ApprovalStatus::Requested => approvals.awaiting += 1,
        }
    }
    score.readiness = readiness(&score);
    score
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn readiness(score: &RunbookScore) -> String {
    let mut missing = Vec::new();
    if score.approvals.approved < READY_APPROVED {
        missing.push(format!(
            "{} approved of {READY_APPROVED}",
            score.approvals.approved
        ));
    }
    if score.approvals.denied > 0 {
        missing.push(format!("{} denied (must be 0)", score.approvals.denied));
    }
    match score.verified_rate {
        Some(rate) if rate >= READY_VERIFIED_RATE => {}
        Some(rate) => missing.push(format!(
            "{:.1}% verified (must be at least {:.0}%)",
            rate * 100.0,
            READY_VERIFIED_RATE * 100.0
        )),
        None => missing.push("no remediation verified yet".into()),
    }
    if score.repeats > 0 {
        missing.push(format!(
            "{} repeats within {REPEAT_HOURS} h (must be 0)",
            score.repeats
        ));
    }
    if missing.is_empty() {
        "ready for auto".into()
    } else {
        format!("not ready for auto: {}", missing.join("; "))
    }
}

/// Reads the audit table for the last `days` days and scores every runbook.
pub async fn read(
    audit: &AuditStore,
    days: i64,
    now: DateTime<Utc>,
) -> Result<(Vec<RunbookScore>, bool), AwsError> {
    let (items, truncated) = audit.scorecard_items(now - Duration::days(days)).await?;
    Ok((score(&items, now), truncated))
}

/// Per runbook `VerifiedRate` (percent) and `TimeToVerifiedP95` (seconds), dimension `Runbook`.
pub fn datums(scores: &[RunbookScore]) -> Vec<MetricDatum> {
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(Utc::now().timestamp());
    let datum = |name: &str, value: f64, unit: StandardUnit, runbook: &str| {
        MetricDatum::builder()
            .metric_name(name)
            .value(value)
            .unit(unit)
            .timestamp(now)
            .dimensions(Dimension::builder().name("Runbook").value(runbook).build())
            .build()
    };
    let mut all = Vec::new();
    for score in scores {
        if let Some(rate) = score.verified_rate {
            all.push(datum(
                "VerifiedRate",
                rate * 100.0,
                StandardUnit::Percent,
                &score.runbook,
            ));
        }
        if let Some(p95) = score.time_to_verified_p95_seconds {
            all.push(datum(
                "TimeToVerifiedP95",
                p95,
                StandardUnit::Seconds,
                &score.runbook,
            ));
        }
    }
    all
}
