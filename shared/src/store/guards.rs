//! The items behind the guards: event claims (each event acted on once), leases (one actor per
//! resource, with the intent of the change about to be written) and the sliding hourly budget.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::window::back_off;
use super::{AuditStore, get_n, get_s, n, s};
use crate::aws::{AwsError, condition_held};
use crate::model::Report;

pub enum EventClaim {
    /// This invocation owns the event; `resumed` when it took the claim over from an earlier
    /// attempt with the same request id (Lambda's retry of an invocation that crashed).
    Claimed { resumed: bool },
    /// The event was handled before; this is its report.
    Completed(Box<Report>),
    /// Another invocation is handling the same event right now.
    InFlight,
}

pub enum LeaseOutcome {
    /// Taken; `intent` is the action an earlier attempt of the same owner (a crashed
    /// invocation Lambda retries with its request id) recorded before its write, if it did.
    Acquired {
        intent: Option<Value>,
    },
    HeldBy {
        owner: String,
        until: DateTime<Utc>,
    },
}

impl AuditStore {
    /// Claims an event id for the invocation `owner` so it is acted on once. A claim expires at
    /// `hold_until` so that a crashed invocation does not block the event for ever, and its
    /// owner's retry (the same request id) takes it over at once.
    pub async fn claim_event(
        &self,
        event_id: &str,
        owner: &str,
        hold_until: DateTime<Utc>,
    ) -> Result<EventClaim, AwsError> {
        let now = Utc::now();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(self.scoped_key(&format!("event#{event_id}"))))
            .item("sk", s("event"))
            .item("state", s("in_progress"))
            .item("owner", s(owner))
            .item("claim_expires_at", n(hold_until.timestamp_millis()))
            .item("expires_at", self.expires_at(now))
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :in_progress AND (claim_expires_at < :now OR #owner = :owner))",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":owner", s(owner))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match put {
            Ok(output) => Ok(EventClaim::Claimed {
                resumed: output
                    .attributes()
                    .and_then(|old| get_s(old, "owner"))
                    .is_some_and(|previous| previous == owner),
            }),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(match self.event_report(event_id).await? {
                    Some(report) => EventClaim::Completed(Box::new(report)),
                    None => EventClaim::InFlight,
                })
            }
            Err(err) => Err(self.err("dynamodb:PutItem", &err)),
        }
    }

    /// Stores the event's final report, returned to any later delivery of the same event.
    pub async fn complete_event(&self, event_id: &str, report: &Report) -> Result<(), AwsError> {
        let body = serde_json::to_string(report).unwrap_or_default();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(self.scoped_key(&format!("event#{event_id}"))))
            .item("sk", s("event"))
            .item("state", s("done"))
            .item("report", s(body))
            .item("expires_at", self.expires_at(Utc::now()))
            .send()
            .await
            .map_err(|err| self.err("dynamodb:PutItem", &err))?;
        Ok(())
    }

    /// Takes the lease on `key` until `until`, unless someone else holds an unexpired one. The
    /// lease starts without an intent; one left by an earlier attempt of the same owner is
    /// handed back.
    pub async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<LeaseOutcome, AwsError> {
        let now = Utc::now();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("lease#{key}")))
            .item("sk", s("lease"))
            .item("owner", s(owner))
            .item("lease_expires_at", n(until.timestamp_millis()))
            .item("expires_at", n((until + Duration::days(1)).timestamp()))
            .condition_expression(
                "attribute_not_exists(pk) OR lease_expires_at < :now OR #owner = :owner",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":owner", s(owner))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match put {
            Ok(output) => Ok(LeaseOutcome::Acquired {
                intent: output
                    .attributes()
                    .filter(|old| get_s(old, "owner") == Some(owner))
                    .and_then(|old| get_s(old, "intent"))
                    .and_then(|text| serde_json::from_str(text).ok()),
            }),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    let item = failed.item().cloned().unwrap_or_default();
                    Ok(LeaseOutcome::HeldBy {
                        owner: get_s(&item, "owner").unwrap_or("another invocation").to_string(),
                        until: get_n(&item, "lease_expires_at")
                            .and_then(DateTime::from_timestamp_millis)
                            .unwrap_or(now),
                    })
                }
                _ => Err(self.err("dynamodb:PutItem", &err)),
            },
        }
    }

    /// Records on the lease, while `owner` holds it, the action about to be written: should
    /// the invocation crash, its retry learns what may already have landed.
    pub async fn record_intent(
        &self,
        key: &str,
        owner: &str,
        intent: &Value,
    ) -> Result<(), AwsError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{key}")))
            .key("sk", s("lease"))
            .update_expression("SET intent = :intent")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":intent", s(intent.to_string()))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        if condition_held(update, "dynamodb:UpdateItem", &self.resource())? {
            Ok(())
        } else {
            Err(AwsError {
                api: "dynamodb:UpdateItem".into(),
                resource: self.resource(),
                code: Some("ConditionalCheckFailedException".into()),
                message: format!("the lease {key} is no longer held by {owner}"),
                kind: crate::aws::FaultKind::ConditionFailed,
            })
        }
    }

    /// Releases the lease if this owner still holds it.
    pub async fn release_lease(&self, key: &str, owner: &str) -> Result<(), AwsError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{key}")))
            .key("sk", s("lease"))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        // Someone else's lease (ours expired and was taken) is theirs to release.
        condition_held(deleted, "dynamodb:DeleteItem", &self.resource()).map(|_| ())
    }

    /// The times (epoch milliseconds) of the runbook's actions in its budget item, and the
    /// item's version (0 when there is none).
    async fn budget_window(&self, runbook: &str) -> Result<(Vec<i64>, i64), AwsError> {
        self.read_window(&self.scoped_key(&format!("budget#{runbook}")), "actions")
            .await
    }

    /// Takes one action from the runbook's budget of `max` per sliding 60 minutes, at `now`:
    /// `Err(at)` when the budget is spent, with the time the oldest action in the window
    /// leaves it. A conditional write on the item's version keeps concurrent takers honest.
    pub async fn take_budget(
        &self,
        runbook: &str,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Result<(), DateTime<Utc>>, AwsError> {
        for _ in 0..BUDGET_ATTEMPTS {
            let (stamps, version) = self.budget_window(runbook).await?;
            let mut recent = in_window(stamps, now);
            if let Some(next) = budget_spent(&recent, max) {
                return Ok(Err(next));
            }
            recent.push(now.timestamp_millis());
            if self
                .write_window(
                    &self.scoped_key(&format!("budget#{runbook}")),
                    "actions",
                    &recent,
                    version,
                    now,
                )
                .await?
            {
                return Ok(Ok(()));
            }
            back_off().await;
        }
        Err(AwsError {
            api: "dynamodb:PutItem".into(),
            resource: self.resource(),
            code: None,
            message: format!(
                "the budget of {runbook} changed under {BUDGET_ATTEMPTS} attempts in a row; run again"
            ),
            kind: crate::aws::FaultKind::Other,
        })
    }

    /// Actions counted against the runbook in the 60 minutes before `now`.
    pub async fn budget_used(&self, runbook: &str, now: DateTime<Utc>) -> Result<u32, AwsError> {
        let (stamps, _) = self.budget_window(runbook).await?;
        Ok(in_window(stamps, now).len().try_into().unwrap_or(u32::MAX))
    }
}

/// How many times a budget taker re-reads and retries when another one wrote first.
const BUDGET_ATTEMPTS: usize = 10;

/// The width of the sliding budget window.
const BUDGET_WINDOW: Duration = Duration::minutes(60);

/// The action times still inside the window that ends at `now`.
fn in_window(stamps: Vec<i64>, now: DateTime<Utc>) -> Vec<i64> {
    let start = (now - BUDGET_WINDOW).timestamp_millis();
    stamps.into_iter().filter(|at| *at > start).collect()
}

/// When the budget is spent, the time enough actions have left the window for one more (more
/// than `max` can be in it after MAX_ACTIONS_PER_HOUR was lowered).
fn budget_spent(recent: &[i64], max: u32) -> Option<DateTime<Utc>> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if recent.len() < max {
        return None;
    }
    let mut sorted = recent.to_vec();
    sorted.sort_unstable();
    DateTime::from_timestamp_millis(sorted[recent.len() - max]).map(|at| at + BUDGET_WINDOW)
}
