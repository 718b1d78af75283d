//! One actor per resource: a conditional write in the audit table is a lease on it, with the
//! intent of the change about to be written (a crashed attempt's retry adopts it).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{LEASE_GRACE, Safety};
use crate::aws::AwsError;
use crate::model::{Action, Invocation, ResourceId, Skip};
use crate::store::LeaseOutcome;

/// How often a run waiting for a lease asks again.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

fn held(lease_key: &str, owner: &str, until: DateTime<Utc>) -> Skip {
    Skip::Leased {
        key: lease_key.to_string(),
        owner: owner.to_string(),
        until,
    }
}

/// Takes the lease on `resource` for a live run, waiting up to `wait` (and never into the
/// time kept for the writes at the end) while another run holds it: an alarm fires once per
/// transition, so a run that can finish after a short wait should not be skipped for good.
/// An intent an earlier attempt of this request left on the lease is kept for `landed`.
/// Release it with `release`.
pub async fn acquire_waiting(
    safety: &Safety,
    resource: &ResourceId,
    invocation: &Invocation,
    wait: std::time::Duration,
) -> Result<Result<(), Skip>, AwsError> {
    let key = resource.lease_key();
    let wait = wait.min(invocation.wait_deadline().remaining());
    let started = std::time::Instant::now();
    loop {
        let until = invocation.deadline.wall() + LEASE_GRACE;
        match safety
            .audit
            .acquire_lease(&key, &invocation.request_id, until)
            .await?
        {
            LeaseOutcome::Acquired { intent } => {
                if let Some(intent) = intent {
                    invocation.resume(&key, intent);
                }
                return Ok(Ok(()));
            }
            LeaseOutcome::HeldBy { owner, until } if started.elapsed() >= wait => {
                return Ok(Err(held(&key, &owner, until)));
            }
            LeaseOutcome::HeldBy { .. } => tokio::time::sleep(LEASE_RETRY).await,
        }
    }
}

/// Records the action about to be written on the resource's lease (a live run holding it):
/// Lambda's retry of this request, should it crash after the write, adopts it (`landed`).
pub async fn record_intent(
    safety: &Safety,
    resource: &ResourceId,
    invocation: &Invocation,
    action: &Action,
) -> Result<(), AwsError> {
    let intent = serde_json::to_value(action).unwrap_or(Value::Null);
    safety
        .audit
        .record_intent(&resource.lease_key(), &invocation.request_id, &intent)
        .await
}

/// Releases a lease this invocation took; a failure only delays the next run until expiry.
pub async fn release(
    safety: &Safety,
    resource: &ResourceId,
    dry_run: bool,
    invocation: &Invocation,
) {
    if dry_run {
        return;
    }
    let lease_key = resource.lease_key();
    if let Err(err) = safety
        .audit
        .release_lease(&lease_key, &invocation.request_id)
        .await
    {
        tracing::warn!(lease_key, error = %err, "could not release the lease; it expires on its own");
    }
}
