//! The verification sweep: remediations still `pending` after their check window are settled
//! as `verified` or `failed` by the check their report names (`settle_by`).

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::StateValue;
use chrono::{DateTime, Duration, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::Deadline;
use runbook_shared::edge::fleet::Sessions;
use runbook_shared::model::ResourceId;
use runbook_shared::model::{Check, SettleBy, Verification, VerificationStatus};
use runbook_shared::store::{AuditRecord, AuditStore};
use serde::Serialize;

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
        let (status, observed) = if status == VerificationStatus::Pending
            && record.started_at < now - window.give_up
        {
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

/// `future`'s output, unless the deadline comes first.
async fn within<T>(deadline: Deadline, future: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(deadline.remaining(), future)
        .await
        .ok()
}

/// The state of the check the record names.
async fn check(
    clients: &SweepClients<'_>,
    record: &AuditRecord,
    now: DateTime<Utc>,
) -> Result<(VerificationStatus, String), AwsError> {
    match &record.report.verification.settle_by {
        Some(SettleBy::Alarm { name }) => alarm_state(clients.cloudwatch, name).await,
        Some(SettleBy::Stack { name }) => stack_state(clients.cloudformation, name).await,
        Some(SettleBy::Backup { arn }) => backup_state(clients.dynamodb, arn).await,
        Some(SettleBy::QueueDepth {
            not_before: Some(not_before),
            ..
        }) if *not_before > now => Ok((
            VerificationStatus::Pending,
            format!(
                "not before {}: what was sent back needs its queue's visibility timeout × maxReceiveCount to fail back",
                runbook_shared::model::timestamp(*not_before)
            ),
        )),
        Some(SettleBy::QueueDepth {
            name, url, below, ..
        }) => queue_depth(clients.sqs, name, url, *below).await,
        Some(SettleBy::Metric {
            namespace,
            metrics,
            dimensions,
            max_sum,
        }) => {
            metric_sum(
                clients.cloudwatch,
                namespace,
                metrics,
                dimensions,
                *max_sum,
                record.started_at,
                now,
            )
            .await
        }
        None => Ok((
            VerificationStatus::Failed,
            "the report names no check to settle it by, so it cannot be verified".to_string(),
        )),
    }
}

/// Verified when the queue holds fewer messages than `below` (a purge: what it removed; a
/// redrive: what it left behind, plus one); as many or more means failures keep arriving (the
/// cause is still there).
async fn queue_depth(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    url: &str,
    below: i64,
) -> Result<(VerificationStatus, String), AwsError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("sqs:GetQueueAttributes", &format!("queue {name}"), &err)
        })?;
    let attributes = output.attributes.unwrap_or_default();
    let depth: i64 = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .filter_map(|key| attributes.get(key)?.parse::<i64>().ok())
    .sum();
    Ok(if depth < below {
        (
            VerificationStatus::Verified,
            format!("queue {name} holds {depth} messages, fewer than {below}"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("queue {name} holds {depth} messages, {below} or more: failures keep arriving"),
        )
    })
}

/// A backup is verified once AVAILABLE; still CREATING, it stays pending; in any other state
/// (or gone: the caller's NotFound) it failed.
async fn backup_state(
    dynamodb: &aws_sdk_dynamodb::Client,
    arn: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let output = dynamodb
        .describe_backup()
        .backup_arn(arn)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("dynamodb:DescribeBackup", &format!("backup {arn}"), &err)
        })?;
    let status = output
        .backup_description()
        .and_then(|description| description.backup_details())
        .map_or("UNKNOWN", |details| details.backup_status().as_str());
    let verdict = match status {
        "AVAILABLE" => VerificationStatus::Verified,
        "CREATING" => VerificationStatus::Pending,
        _ => VerificationStatus::Failed,
    };
    Ok((verdict, format!("backup {arn} is {status}")))
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

async fn stack_state(
    cloudformation: &aws_sdk_cloudformation::Client,
    name: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let stacks = cloudformation
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudformation:DescribeStacks",
                &format!("stack {name}"),
                &err,
            )
        })?;
    let status = stacks
        .stacks()
        .first()
        .and_then(|stack| stack.stack_status())
        .map_or("UNKNOWN", |status| status.as_str());
    Ok(if status.ends_with("_IN_PROGRESS") {
        (
            VerificationStatus::Pending,
            format!("stack {name} is still {status}"),
        )
    } else if status.ends_with("_COMPLETE")
        && status != "DELETE_COMPLETE"
        && status != "ROLLBACK_COMPLETE"
    {
        (
            VerificationStatus::Verified,
            format!("stack {name} is {status}"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("stack {name} is {status}"),
        )
    })
}

async fn alarm_state(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    name: &str,
) -> Result<(VerificationStatus, String), AwsError> {
    let alarms = cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("cloudwatch:DescribeAlarms", &format!("alarm {name}"), &err)
        })?;
    let Some(alarm) = alarms.metric_alarms().first() else {
        return Ok((
            VerificationStatus::Failed,
            format!("alarm {name} no longer exists, so the remediation cannot be verified"),
        ));
    };
    Ok(match alarm.state_value() {
        Some(StateValue::Ok) => (VerificationStatus::Verified, format!("alarm {name} is OK")),
        Some(StateValue::Alarm) => (
            VerificationStatus::Failed,
            format!("alarm {name} is still in ALARM after the check window"),
        ),
        _ => (
            VerificationStatus::Pending,
            format!("alarm {name} has insufficient data"),
        ),
    })
}

async fn metric_sum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metrics: &[String],
    dimensions: &BTreeMap<String, String>,
    max_sum: f64,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(VerificationStatus, String), AwsError> {
    // The first minute after the change may still show what it fixed.
    let start = (since + Duration::minutes(1)).min(now - Duration::minutes(1));
    let mut request = cloudwatch
        .get_metric_data()
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            start.timestamp(),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            now.timestamp(),
        ));
    for (index, metric) in metrics.iter().enumerate() {
        request = request.metric_data_queries(runbook_shared::aws::metric_query(
            format!("m{index}"),
            namespace,
            metric,
            dimensions.clone(),
            60,
            "Sum",
        ));
    }
    let output = request.send().await.map_err(|err| {
        AwsError::from_sdk(
            "cloudwatch:GetMetricData",
            &format!("{namespace} {}", metrics.join(", ")),
            &err,
        )
    })?;
    let sum: f64 = output
        .metric_data_results()
        .iter()
        .flat_map(|result| result.values().iter())
        .sum();
    let what = format!("{} over the window", metrics.join(" + "));
    Ok(if sum <= max_sum {
        (
            VerificationStatus::Verified,
            format!("{what}: {sum} (max {max_sum})"),
        )
    } else {
        (
            VerificationStatus::Failed,
            format!("{what}: {sum} (max {max_sum})"),
        )
    })
}
