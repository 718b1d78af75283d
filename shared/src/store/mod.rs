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
//!   reverts use;
//! - change brake: `pk = brake#changes`, `sk = window`: the resources changed in the last
//!   CHANGE_WINDOW_MINUTES, versioned; `pk = brake#escalated`, `sk = window`: its last escalation;
//! - plans awaiting approval, open plans and the run log: see `plans.rs`;
//! - kill switch: `pk = control#automation`, `sk = switch`: `paused` (boolean), `by`, `reason`,
//!   `since`, `until` (RFC 3339; none: until resumed); `pk = control#automation#<account>` for
//!   one account of a hub.
//!
//! A hub that acts in other accounts and regions (`fleet.rs`) keeps their event claims, budgets
//! and brake windows under the same keys with `#<account>#<region>` appended (`scoped`); its own
//! place keeps the keys above.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

mod brake;
mod control;
mod guards;
mod plans;
mod raises;
mod window;

pub use brake::{Changed, Slot};
pub use control::Pause;
pub use guards::{EventClaim, LeaseOutcome};
pub use plans::{PlanLine, RunLine, SCAN_PAGES, ScorecardItems};
pub use raises::Raise;

use crate::aws::{AwsError, condition_held};
use crate::model::timestamp;
use crate::model::{Report, Verification, VerificationStatus};

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
}

fn collect_states(report: &Report, pick: impl Fn(&crate::model::Action) -> &Value) -> Value {
    Value::Array(
        report
            .actions
            .iter()
            .map(|action| pick(action).clone())
            .collect(),
    )
}

#[derive(Clone)]
pub struct AuditStore {
    client: Client,
    table: String,
    retention: Duration,
    /// The account and region whose guards this store keeps (`<account>#<region>`): the keys
    /// of event claims, budgets and the change brake end with it, so that one hub's table keeps
    /// every account's and region's apart.
    scope: Option<String>,
}

impl AuditStore {
    pub fn new(client: Client, table: impl Into<String>, retention_days: i64) -> Self {
        Self {
            client,
            table: table.into(),
            retention: Duration::days(retention_days),
            scope: None,
        }
    }

    /// The store of the guards of one account and region.
    pub fn scoped(self, home: &crate::model::Home) -> Self {
        Self {
            scope: Some(format!("{}#{}", home.account, home.region)),
            ..self
        }
    }

    /// `key` within this store's account and region.
    fn scoped_key(&self, key: &str) -> String {
        match &self.scope {
            Some(scope) => format!("{key}#{scope}"),
            None => key.to_string(),
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
        if report.verification.status == VerificationStatus::Failed {
            self.count_failed_verification(&audit_id).await;
        }
        Ok(())
    }

    /// Counts a failed verification towards the sweep's auto-trip. Best effort: the record is
    /// written already, and a count lost to a fault only delays the trip.
    async fn count_failed_verification(&self, audit_id: &str) {
        if let Err(err) = self.note_failed_verification(audit_id, Utc::now()).await {
            tracing::warn!(audit_id, error = %err, "a failed verification was not counted towards PAUSE_AFTER_FAILED_VERIFICATIONS");
        }
    }

    /// Writes the audit record when something was attempted (once), and sets the duration.
    pub async fn finish(&self, report: &mut Report, invocation: &crate::model::Invocation) {
        // The record carries the run's duration: dlq-redriver attributes messages that come back
        // to the redrive whose run (started_at + duration) sent them.
        report.duration_ms = invocation.elapsed_ms();
        if report.attempted()
            && report.audit_id.is_none()
            && let Err(err) = self.record(report, invocation.started_at).await
        {
            report.audit_id = None;
            report.reason = format!("{} (audit record not written: {err})", report.reason);
        }
        report.duration_ms = invocation.elapsed_ms();
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
        Ok(self.pending(resource, runbook, 1).await?.into_iter().next())
    }

    /// The resource's records of `runbook` whose verification is still open, newest first, at
    /// most `at_most` (reading stops once it has them).
    pub async fn pending(
        &self,
        resource: &str,
        runbook: &str,
        at_most: usize,
    ) -> Result<Vec<AuditRecord>, AwsError> {
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
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            found.extend(page.items().iter().filter_map(AuditRecord::from_item));
            if found.len() >= at_most {
                found.truncate(at_most);
                break;
            }
        }
        Ok(found)
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

    /// Closes an open verification; returns false if someone else closed it first. One
    /// settled as failed counts toward the sweep's auto-trip.
    pub async fn settle(
        &self,
        record: &AuditRecord,
        verification: &Verification,
    ) -> Result<bool, AwsError> {
        self.settle_counting(record, verification, true).await
    }

    /// Closes a verification that could not be checked at all (its account could not be
    /// reached): it says nothing about whether the remediation worked, so it does not count
    /// toward the auto-trip (which would pause every account for one broken spoke).
    pub async fn settle_unchecked(
        &self,
        record: &AuditRecord,
        verification: &Verification,
    ) -> Result<bool, AwsError> {
        self.settle_counting(record, verification, false).await
    }

    async fn settle_counting(
        &self,
        record: &AuditRecord,
        verification: &Verification,
        counted: bool,
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
                "SET verification = :verification, report = :report, settled_at = :settled_at REMOVE verify_status",
            )
            .condition_expression("verify_status = :pending")
            .expression_attribute_values(":verification", s(json_text(verification)))
            .expression_attribute_values(":report", s(json_text(&report)))
            .expression_attribute_values(":settled_at", s(timestamp(Utc::now())))
            .expression_attribute_values(":pending", s(PENDING))
            .send()
            .await;
        let settled = condition_held(update, "dynamodb:UpdateItem", &self.resource())?;
        if settled && counted && verification.status == VerificationStatus::Failed {
            self.count_failed_verification(&record.audit_id).await;
        }
        Ok(settled)
    }
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
