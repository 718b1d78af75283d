//! The audit table: remediation records (queryable by target), and the items behind the guards
//! (event claims for idempotency, leases, hourly budgets), all in one DynamoDB table with
//! partition key `pk`, sort key `sk` and TTL attribute `expires_at`.
//!
//! Items (a resource's key is its canonical identity, see `resource.rs`):
//! - record: `pk = target#<resource key>`, `sk = <started_at RFC 3339>#<audit_id>`;
//!   `verify_status = pending` while a metric-level check is open (the sparse index `pending`
//!   lists those);
//! - event claim: `pk = event#<event id>`, `sk = event`, owned by the invocation's request id;
//! - lease: `pk = lease#<resource key>`, `sk = lease`, owned by the invocation's request id;
//! - budget: `pk = budget#<runbook>`, `sk = window`: the times of the actions of the last 60
//!   minutes, with a version for optimistic concurrency;
//! - raise in force: `pk = raise#<runbook>`, `sk = <resource key>`: the original value (kept
//!   from the first raise), the current one, and when to put it back — what scale-downs and
//!   reverts use.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::aws::{AwsError, condition_held};
use crate::report::{Report, Verification, VerificationStatus};

/// Name of the sparse global secondary index over open verifications (hash `verify_status`,
/// range `sk`).
pub const PENDING_INDEX: &str = "pending";
const PENDING: &str = "pending";

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, key: &str) -> Option<i64> {
    item.get(key)
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse().ok())
}

pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A remediation as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub audit_id: String,
    /// The name a person reads.
    pub target: String,
    /// The resource's canonical key, which its history is kept under.
    pub resource: String,
    pub runbook: String,
    pub started_at: DateTime<Utc>,
    pub report: Report,
    sk: String,
}

impl AuditRecord {
    fn from_item(item: &Item) -> Option<Self> {
        let report: Report = serde_json::from_str(get_s(item, "report")?).ok()?;
        Some(Self {
            audit_id: get_s(item, "audit_id")?.to_string(),
            target: get_s(item, "target")?.to_string(),
            resource: get_s(item, "pk")?.strip_prefix("target#")?.to_string(),
            runbook: get_s(item, "runbook")?.to_string(),
            started_at: DateTime::parse_from_rfc3339(get_s(item, "started_at")?)
                .ok()?
                .with_timezone(&Utc),
            sk: get_s(item, "sk")?.to_string(),
            report,
        })
    }

    /// The `before` of the record's applied actions, by action target.
    pub fn before(&self) -> Value {
        collect_states(&self.report, |action| &action.before)
    }
}

fn collect_states(report: &Report, pick: impl Fn(&crate::report::Action) -> &Value) -> Value {
    Value::Array(
        report
            .actions
            .iter()
            .map(|action| pick(action).clone())
            .collect(),
    )
}

/// A limit this automation raised and has not yet put back.
#[derive(Clone, Debug, PartialEq)]
pub struct Raise {
    pub runbook: String,
    /// The raised resource's canonical key.
    pub resource: String,
    /// The value before the first raise: the baseline a scale-down never goes below.
    pub original: Value,
    /// The value this automation last set.
    pub current: Value,
    pub raised_at: DateTime<Utc>,
    /// When to put the original back (stored limits and reservations); none for capacity,
    /// which steps down by utilisation.
    pub revert_at: Option<DateTime<Utc>>,
}

impl Raise {
    fn from_item(item: &Item) -> Option<Self> {
        let json = |key: &str| get_s(item, key).and_then(|text| serde_json::from_str(text).ok());
        Some(Self {
            runbook: get_s(item, "pk")?.strip_prefix("raise#")?.to_string(),
            resource: get_s(item, "sk")?.to_string(),
            original: json("original")?,
            current: json("current")?,
            raised_at: DateTime::parse_from_rfc3339(get_s(item, "raised_at")?)
                .ok()?
                .with_timezone(&Utc),
            revert_at: get_n(item, "revert_at").and_then(|at| DateTime::from_timestamp(at, 0)),
        })
    }
}

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

#[derive(Clone)]
pub struct AuditStore {
    client: Client,
    table: String,
    retention: Duration,
}

impl AuditStore {
    pub fn new(client: Client, table: impl Into<String>, retention_days: i64) -> Self {
        Self {
            client,
            table: table.into(),
            retention: Duration::days(retention_days),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn err<E, R>(&self, api: &str, err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> AwsError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        AwsError::from_sdk(api, &self.resource(), err)
    }

    fn resource(&self) -> String {
        format!("audit table {}", self.table)
    }

    fn expires_at(&self, now: DateTime<Utc>) -> AttributeValue {
        n((now + self.retention).timestamp())
    }

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
            .item("pk", s(format!("event#{event_id}")))
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
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(format!("event#{event_id}")))
                    .key("sk", s("event"))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|err| self.err("dynamodb:GetItem", &err))?;
                let report = item
                    .item()
                    .and_then(|item| get_s(item, "report"))
                    .and_then(|report| serde_json::from_str::<Report>(report).ok());
                Ok(match report {
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
            .item("pk", s(format!("event#{event_id}")))
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
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("budget#{runbook}")))
            .key("sk", s("window"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        let item = item.item();
        let stamps = item
            .and_then(|item| get_s(item, "actions"))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Ok((
            stamps,
            item.and_then(|item| get_n(item, "version")).unwrap_or(0),
        ))
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
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("budget#{runbook}")))
                .item("sk", s("window"))
                .item("actions", s(json_text(&recent)))
                .item("version", n(version + 1))
                .item("expires_at", n((now + Duration::days(2)).timestamp()))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(version))
                .send()
                .await;
            if condition_held(put, "dynamodb:PutItem", &self.resource())? {
                return Ok(Ok(()));
            }
            // Another taker wrote first: back off a little (with jitter) and read again.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
            tokio::time::sleep(std::time::Duration::from_millis(20 + jitter)).await;
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

    /// Writes the remediation record for `report` (which must name its target and runbook),
    /// setting `report.audit_id`.
    pub async fn record(
        &self,
        report: &mut Report,
        started_at: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let audit_id = uuid::Uuid::new_v4().to_string();
        report.audit_id = Some(audit_id.clone());
        let target = report.target.clone().unwrap_or_default();
        let resource = report.resource.clone().unwrap_or_else(|| target.clone());
        let sk = format!("{}#{audit_id}", timestamp(started_at));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("target#{resource}")))
            .item("sk", s(sk))
            .item("audit_id", s(&audit_id))
            .item("target", s(&target))
            .item("runbook", s(report.runbook.clone().unwrap_or_default()))
            .item("function", s(&report.function))
            .item("started_at", s(timestamp(started_at)))
            .item("outcome", s(json_text(&report.outcome)))
            .item("reason", s(&report.reason))
            .item("trigger", s(json_text(&report.trigger)))
            .item(
                "before",
                s(collect_states(report, |a| &a.before).to_string()),
            )
            .item("after", s(collect_states(report, |a| &a.after).to_string()))
            .item("verification", s(json_text(&report.verification)))
            .item("report", s(json_text(&*report)))
            .item("expires_at", self.expires_at(started_at));
        if report.verification.status == VerificationStatus::Pending {
            put = put.item("verify_status", s(PENDING));
        }
        put.send()
            .await
            .map_err(|err| self.err("dynamodb:PutItem", &err))?;
        Ok(())
    }

    /// The resource's records (by its key), newest first.
    pub async fn history(&self, resource: &str) -> Result<Vec<AuditRecord>, AwsError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("target#{resource}")))
            .scan_index_forward(false)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            records.extend(page.items().iter().filter_map(AuditRecord::from_item));
        }
        Ok(records)
    }

    /// The newest record of `runbook` on the resource since `since` that changed something.
    pub async fn last_remediation_since(
        &self,
        resource: &str,
        runbook: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<AuditRecord>, AwsError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk >= :since")
            .filter_expression("runbook = :runbook")
            .expression_attribute_values(":pk", s(format!("target#{resource}")))
            .expression_attribute_values(":since", s(timestamp(since)))
            .expression_attribute_values(":runbook", s(runbook))
            .scan_index_forward(false)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            if let Some(record) = page
                .items()
                .iter()
                .filter_map(AuditRecord::from_item)
                .find(|record| record.report.actions.iter().any(|action| action.applied))
            {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// The newest record of `runbook` on the resource whose verification is still open.
    pub async fn latest_pending(
        &self,
        resource: &str,
        runbook: &str,
    ) -> Result<Option<AuditRecord>, AwsError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("runbook = :runbook AND verify_status = :pending")
            .expression_attribute_values(":pk", s(format!("target#{resource}")))
            .expression_attribute_values(":runbook", s(runbook))
            .expression_attribute_values(":pending", s(PENDING))
            .scan_index_forward(false)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            if let Some(record) = page.items().iter().find_map(AuditRecord::from_item) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Records that `runbook` raised the resource (by its key) to `current`; the original is
    /// kept from the first raise still in force.
    pub async fn put_raise(
        &self,
        runbook: &str,
        resource: &str,
        original: &Value,
        current: &Value,
        revert_at: Option<DateTime<Utc>>,
    ) -> Result<(), AwsError> {
        let now = Utc::now();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("raise#{runbook}")))
            .key("sk", s(resource))
            .update_expression("SET original = if_not_exists(original, :original), #current = :current, raised_at = :now, expires_at = :expires REMOVE revert_at")
            .expression_attribute_names("#current", "current")
            .expression_attribute_values(":original", s(original.to_string()))
            .expression_attribute_values(":current", s(current.to_string()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":expires", self.expires_at(now));
        if let Some(at) = revert_at {
            update = update
                .update_expression("SET original = if_not_exists(original, :original), #current = :current, raised_at = :now, expires_at = :expires, revert_at = :revert")
                .expression_attribute_values(":revert", n(at.timestamp()));
        }
        update
            .send()
            .await
            .map_err(|err| self.err("dynamodb:UpdateItem", &err))?;
        Ok(())
    }

    /// The raise of `runbook` on the resource (by its key), if it is still in force.
    pub async fn raise(&self, runbook: &str, resource: &str) -> Result<Option<Raise>, AwsError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("raise#{runbook}")))
            .key("sk", s(resource))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        Ok(item.item().and_then(Raise::from_item))
    }

    /// The raises of `runbook` still in force.
    pub async fn raises(&self, runbook: &str) -> Result<Vec<Raise>, AwsError> {
        let mut raises = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("raise#{runbook}")))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            raises.extend(page.items().iter().filter_map(Raise::from_item));
        }
        Ok(raises)
    }

    /// The raise is over: the limit is back at its original, or someone else owns it now.
    pub async fn end_raise(&self, runbook: &str, resource: &str) -> Result<(), AwsError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("raise#{runbook}")))
            .key("sk", s(resource))
            .send()
            .await
            .map_err(|err| self.err("dynamodb:DeleteItem", &err))?;
        Ok(())
    }

    /// The oldest `at_most` records whose verification is still open and that started before
    /// `before`.
    pub async fn pending_before(
        &self,
        before: DateTime<Utc>,
        at_most: usize,
    ) -> Result<Vec<AuditRecord>, AwsError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("verify_status = :pending AND sk < :before")
            .expression_attribute_values(":pending", s(PENDING))
            .expression_attribute_values(":before", s(timestamp(before)))
            .limit(i32::try_from(at_most).unwrap_or(i32::MAX))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            records.extend(page.items().iter().filter_map(AuditRecord::from_item));
            if records.len() >= at_most {
                records.truncate(at_most);
                break;
            }
        }
        Ok(records)
    }

    /// Closes an open verification; returns false if someone else closed it first.
    pub async fn settle(
        &self,
        record: &AuditRecord,
        verification: &Verification,
    ) -> Result<bool, AwsError> {
        let mut report = record.report.clone();
        report.verification = verification.clone();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("target#{}", record.resource)))
            .key("sk", s(&record.sk))
            .update_expression(
                "SET verification = :verification, report = :report REMOVE verify_status",
            )
            .condition_expression("verify_status = :pending")
            .expression_attribute_values(":verification", s(json_text(verification)))
            .expression_attribute_values(":report", s(json_text(&report)))
            .expression_attribute_values(":pending", s(PENDING))
            .send()
            .await;
        condition_held(update, "dynamodb:UpdateItem", &self.resource())
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

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
