//! The verification sweep: remediations still `pending` after their check window are settled
//! as `verified` or `failed` by the check their report names (`settle_by`).

mod checks;

use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::Deadline;
use runbook_shared::edge::fleet::Sessions;
use runbook_shared::model::ResourceId;
use runbook_shared::model::{Check, Verification, VerificationStatus};
use runbook_shared::store::{AuditRecord, AuditStore};
use serde::Serialize;

use checks::{NO_DATAPOINTS, check};

/// One remediation the sweep looked at.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settled {
    pub audit_id: String,
    pub target: String,
    pub runbook: String,
    /// `verified`, `failed`, or `pending` when it could not be decided yet.
    pub status: VerificationStatus,
    pub observed: String,
}

/// What the sweep reads the checks with.
#[derive(Clone, Copy)]
pub struct SweepClients<'a> {
    pub cloudwatch: &'a aws_sdk_cloudwatch::Client,
    pub cloudformation: &'a aws_sdk_cloudformation::Client,
    pub sqs: &'a aws_sdk_sqs::Client,
    pub dynamodb: &'a aws_sdk_dynamodb::Client,
}

/// The sweep's clients in one account and region of a hub.
pub struct PlaceClients {
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl PlaceClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
        }
    }

    fn borrowed(&self) -> SweepClients<'_> {
        SweepClients {
            cloudwatch: &self.cloudwatch,
            cloudformation: &self.cloudformation,
            sqs: &self.sqs,
            dynamodb: &self.dynamodb,
        }
    }
}

/// Where the sweep checks each record: with one place's clients, or, for a hub that acts in
/// several, in the account and region of the record's resource (one role session per place
/// per sweep; a place that cannot be reached leaves its records pending, and only those).
pub enum Places<'a> {
    One(SweepClients<'a>),
    Fleet(&'a Sessions<'a, PlaceClients>),
}

/// Why a record could not be checked now.
enum Unchecked {
    /// The check's own call failed.
    Aws(AwsError),
    /// Its account and region cannot be reached: not a place the deployment acts in, or its
    /// role could not be assumed.
    Unreachable(String),
}

impl Places<'_> {
    async fn check(
        &self,
        record: &AuditRecord,
        now: DateTime<Utc>,
    ) -> Result<(VerificationStatus, String), Unchecked> {
        let sessions = match self {
            Places::One(clients) => {
                return check(clients, record, now).await.map_err(Unchecked::Aws);
            }
            Places::Fleet(sessions) => sessions,
        };
        let fleet = sessions.fleet();
        let hub = fleet.hub_home();
        let resource = ResourceId::from_key(&record.resource);
        let place = fleet
            .config()
            .admit(
                hub,
                resource.as_ref().map(|resource| resource.account.as_str()),
                resource.as_ref().map(|resource| resource.region.as_str()),
            )
            .map_err(|rejection| Unchecked::Unreachable(rejection.0))?;
        let member = sessions
            .member(&place)
            .await
            .map_err(|err| Unchecked::Unreachable(err.to_string()))?;
        check(&member.borrowed(), record, now)
            .await
            .map_err(Unchecked::Aws)
    }
}

/// Most records one sweep looks at (the oldest first; the rest wait for the next sweep).
const RECORDS_PER_SWEEP: usize = 200;

/// When the sweep looks at a verification, and when it gives up on one it cannot decide.
pub struct Window {
    /// A record is looked at once it is this old...
    pub after: Duration,
    /// ...and settled as failed when still undecided at this age.
    pub give_up: Duration,
}

/// Settles the verifications still pending after `window.after`, oldest first, until
/// `deadline` (the rest wait for the next sweep; every AWS call is bounded by it too). Each
/// record stands alone: one that cannot be checked now stays pending with the reason, one whose
/// resource is gone — or still undecided at `window.give_up` — is settled as failed, so no
/// record blocks the others and none stays pending for ever.
// Over 80 lines: each record settled on its own, with every way it can stay pending or fail written
// beside the others.
pub async fn settle_pending(
    audit: &AuditStore,
    places: &Places<'_>,
    window: &Window,
    deadline: Deadline,
) -> Result<Vec<Settled>, AwsError> {
    let now = Utc::now();
    let mut settled = Vec::new();
    let records = within(
        deadline,
        audit.pending_before(now - window.after, RECORDS_PER_SWEEP),
    )
    .await
    .unwrap_or(Ok(Vec::new()))?;
    for record in records {
        if deadline.passed() {
            break;
        }
        // A record whose place cannot be reached is no evidence against its remediation.
        let mut counted = true;
        let (status, observed) = match within(deadline, places.check(&record, now)).await {
            Some(Ok(checked)) => checked,
            Some(Err(Unchecked::Unreachable(why))) => {
                counted = false;
                (
                    VerificationStatus::Pending,
                    format!("could not be checked now: {why}"),
                )
            }
            Some(Err(Unchecked::Aws(err))) if err.is(FaultKind::NotFound) => (
                VerificationStatus::Failed,
                format!(
                    "the check's resource no longer exists, so the remediation cannot be verified: {err}"
                ),
            ),
            Some(Err(Unchecked::Aws(err))) => (
                VerificationStatus::Pending,
                format!("could not be checked now: {err}"),
            ),
            None => (
                VerificationStatus::Pending,
                "could not be checked before the deadline".to_string(),
            ),
        };
        let given_up =
            status == VerificationStatus::Pending && record.started_at < now - window.give_up;
        let (status, observed) = if given_up && observed.contains(NO_DATAPOINTS) {
            unobserved_at_give_up(&record, &observed, window)
        } else if given_up {
            (
                VerificationStatus::Failed,
                format!(
                    "still undecided {} h after the remediation ({observed}): given up, a person should look",
                    window.give_up.num_hours()
                ),
            )
        } else {
            (status, observed)
        };
        let (status, observed) = if status == VerificationStatus::Pending {
            (status, observed)
        } else {
            let verification = settle(&record, status, &observed);
            let settle = async {
                if counted {
                    audit.settle(&record, &verification).await
                } else {
                    audit.settle_unchecked(&record, &verification).await
                }
            };
            match within(deadline, settle).await {
                Some(Ok(true)) => (status, observed),
                Some(Ok(false)) => continue, // settled meanwhile by the alarm's OK transition
                Some(Err(err)) => (
                    VerificationStatus::Pending,
                    format!("{observed}; but the record could not be settled now: {err}"),
                ),
                None => (
                    VerificationStatus::Pending,
                    format!("{observed}; but the record could not be settled before the deadline"),
                ),
            }
        };
        settled.push(Settled {
            audit_id: record.audit_id.clone(),
            target: record.target.clone(),
            runbook: record.runbook.clone(),
            status,
            observed,
        });
    }
    Ok(settled)
}

/// A metric that showed nothing at all until the give-up time (no traffic, so nothing to
/// throttle) is no evidence either way: the change's own checks (the resource read back at the
/// new value) verify it, and the report says that they did; without them it fails.
fn unobserved_at_give_up(
    record: &AuditRecord,
    observed: &str,
    window: &Window,
) -> (VerificationStatus, String) {
    let own: Vec<&Check> = record
        .report
        .verification
        .checks
        .iter()
        .filter(|check| !check.is_awaited())
        .collect();
    let hours = window.give_up.num_hours();
    if !own.is_empty() && own.iter().all(|check| check.ok) {
        let said: Vec<String> = own
            .iter()
            .map(|check| format!("{}: {}", check.name, check.observed))
            .collect();
        (
            VerificationStatus::Verified,
            format!(
                "{observed} in {hours} h (no traffic to throttle): verified by the change's own check, not by the metric ({})",
                said.join("; ")
            ),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!(
                "{observed} in {hours} h, and the change has no check of its own that held: given up, a person should look"
            ),
        )
    }
}

/// `future`'s output, unless the deadline comes first.
async fn within<T>(deadline: Deadline, future: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(deadline.remaining(), future)
        .await
        .ok()
}

/// The record's verification with its open metric-level check closed.
fn settle(record: &AuditRecord, status: VerificationStatus, observed: &str) -> Verification {
    let mut verification = record.report.verification.clone();
    let ok = status == VerificationStatus::Verified;
    let open: Vec<&mut Check> = verification
        .checks
        .iter_mut()
        .filter(|check| check.is_awaited())
        .collect();
    if open.is_empty() {
        verification.checks.push(Check::new(
            "settled_by_sweep",
            ok,
            "the metric back to normal",
            observed,
        ));
    } else {
        for check in open {
            check.ok = ok;
            check.observed = format!("{observed} (health-prober sweep)");
        }
    }
    verification.status = status;
    verification
}
