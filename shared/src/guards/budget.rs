//! The action budget: an automatic run spends one of its runbook's MAX_ACTIONS_PER_HOUR over a
//! sliding 60 minutes.

use chrono::Utc;

use super::Safety;
use crate::aws::AwsError;
use crate::model::{Report, Skip};

/// Spends one action of the report's runbook's budget over the last 60 minutes (a dry run
/// only looks); a manual run is neither bound by it nor counted.
pub async fn spend_budget(safety: &Safety, report: &Report) -> Result<Result<(), Skip>, AwsError> {
    if report.trigger.kind.is_manual() {
        return Ok(Ok(()));
    }
    let runbook = report.runbook.as_deref().unwrap_or_default();
    let max = safety.config.max_actions_per_hour;
    let now = Utc::now();
    let next = if report.dry_run {
        let used = safety.audit.budget_used(runbook, now).await?;
        (used >= max).then_some(None)
    } else {
        safety
            .audit
            .take_budget(runbook, max, now)
            .await?
            .err()
            .map(Some)
    };
    Ok(match next {
        None => Ok(()),
        Some(next) => Err(Skip::Budget {
            runbook: runbook.to_string(),
            max,
            next,
        }),
    })
}
