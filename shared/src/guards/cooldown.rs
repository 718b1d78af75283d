//! The cooldown: an automatic run waits COOLDOWN_SECONDS after its runbook last changed the
//! resource.

use chrono::Utc;

use super::Safety;
use crate::aws::AwsError;
use crate::model::{ResourceId, Skip};
use crate::store::AuditRecord;

/// Whether an earlier change of `runbook` on the resource (one `counts` accepts) started a
/// cooldown that has not run out.
pub async fn cooldown(
    safety: &Safety,
    runbook: &str,
    resource: &ResourceId,
    counts: impl Fn(&AuditRecord) -> bool,
) -> Result<Option<Skip>, AwsError> {
    if safety.config.cooldown.is_zero() {
        return Ok(None);
    }
    let since = Utc::now() - safety.config.cooldown;
    let last = safety
        .audit
        .last_remediation_since(&resource.key(), runbook, since)
        .await?;
    Ok(last
        .filter(|record| counts(record))
        .map(|record| Skip::Cooldown {
            runbook: runbook.to_string(),
            resource: resource.name(),
            changed_at: record.started_at,
            audit_id: record.audit_id.clone(),
            cooldown_seconds: safety.config.cooldown.num_seconds(),
        }))
}
