//! Plans awaiting approval, and the log of runs the scorecard counts.
//!
//! Items:
//! - plan: `pk = plan#<plan id>`, `sk = plan`: `status` (awaiting, approved, denied, expired),
//!   `approval_expires` (epoch seconds), `created_at`, the plan as JSON, and once decided
//!   `decided_by`, `decided_reason`, `decided_at`;
//! - open plan: `pk = openplan#<runbook>#<resource key>`, `sk = plan`: the newest plan of the
//!   runbook on the resource and its fingerprint, so that a schedule that plans the same change
//!   again points at the plan awaiting approval instead of asking again;
//! - run: `pk = run#<YYYY-MM-DD>`, `sk = <started_at>#<uuid>`: one line per report of a runbook
//!   (outcome, reason, target), what the scorecard counts runs, outcomes and guards from.

use chrono::{DateTime, Utc};

use super::{AuditStore, Item, get_n, get_s, n, s, timestamp};
use crate::aws::{AwsError, condition_held};
use crate::model::{ApprovalStatus, Plan, PlanRecord, Report};

/// A plan's approval, as the scorecard reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanLine {
    pub runbook: String,
    pub status: ApprovalStatus,
    pub expires_at: DateTime<Utc>,
}

/// A run as the scorecard reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLine {
    pub runbook: String,
    pub outcome: String,
    pub reason: String,
}

fn plan_key(plan_id: &str) -> String {
    format!("plan#{plan_id}")
}

fn open_key(runbook: &str, resource: &str) -> String {
    format!("openplan#{runbook}#{resource}")
}

fn status_text(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Requested => "awaiting",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Denied => "denied",
        ApprovalStatus::Expired => "expired",
    }
}

fn status_of(text: &str) -> Option<ApprovalStatus> {
    Some(match text {
        "awaiting" => ApprovalStatus::Requested,
        "approved" => ApprovalStatus::Approved,
        "denied" => ApprovalStatus::Denied,
        "expired" => ApprovalStatus::Expired,
        _ => return None,
    })
}

/// How far a reading of the audit table for the scorecard goes: 200 pages of 1 MB.
pub const SCAN_PAGES: usize = 200;

impl AuditStore {
    /// Stores a plan for approval, and points the resource's open plan at it.
    pub async fn put_plan(&self, plan: &Plan, fingerprint: &str) -> Result<(), AwsError> {
        let body = serde_json::to_string(plan).unwrap_or_default();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(plan_key(&plan.plan_id)))
            .item("sk", s("plan"))
            .item("status", s(status_text(ApprovalStatus::Requested)))
            .item("runbook", s(&plan.runbook))
            .item("approval_expires", n(plan.expires_at.timestamp()))
            .item("created_at", s(timestamp(plan.created_at)))
            .item("plan", s(body))
            .item("expires_at", self.expires_at(plan.created_at))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|err| self.err("dynamodb:PutItem", &err))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(open_key(&plan.runbook, &plan.resource)))
            .item("sk", s("plan"))
            .item("plan_id", s(&plan.plan_id))
            .item("fingerprint", s(fingerprint))
            .item("expires_at", n(plan.expires_at.timestamp()))
            .send()
            .await
            .map_err(|err| self.err("dynamodb:PutItem", &err))?;
        Ok(())
    }

    /// The newest plan of `runbook` on the resource, if it has this fingerprint (whatever its
    /// status).
    pub async fn last_plan(
        &self,
        runbook: &str,
        resource: &str,
        fingerprint: &str,
    ) -> Result<Option<PlanRecord>, AwsError> {
        let pointer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(open_key(runbook, resource)))
            .key("sk", s("plan"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        let Some(plan_id) = pointer
            .item()
            .filter(|item| get_s(item, "fingerprint") == Some(fingerprint))
            .and_then(|item| get_s(item, "plan_id"))
        else {
            return Ok(None);
        };
        self.plan(plan_id).await
    }

    /// The stored plan, with where its approval stands.
    pub async fn plan(&self, plan_id: &str) -> Result<Option<PlanRecord>, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(plan_key(plan_id)))
            .key("sk", s("plan"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        Ok(output.item().and_then(plan_record))
    }

    /// Moves an awaiting plan to `status` (approved or denied while it is unexpired, expired
    /// once it is not), with who decided and why; false when it no longer awaits (someone
    /// decided first, or it expired).
    pub async fn decide_plan(
        &self,
        plan_id: &str,
        status: ApprovalStatus,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let condition = if status == ApprovalStatus::Expired {
            "#status = :awaiting AND approval_expires <= :now"
        } else {
            "#status = :awaiting AND approval_expires > :now"
        };
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(plan_key(plan_id)))
            .key("sk", s("plan"))
            .update_expression(
                "SET #status = :status, decided_by = :by, decided_reason = :reason, decided_at = :at",
            )
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":awaiting", s(status_text(ApprovalStatus::Requested)))
            .expression_attribute_values(":status", s(status_text(status)))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":at", s(timestamp(now)))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        condition_held(update, "dynamodb:UpdateItem", &self.resource())
    }

    /// Claims the one escalation of a denied plan: true for the first run that meets the
    /// denial, false for every later one (people are told once, not at every schedule).
    pub async fn claim_denial_escalation(
        &self,
        plan_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(plan_key(plan_id)))
            .key("sk", s("plan"))
            .update_expression("SET escalated_at = :at")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(escalated_at)")
            .expression_attribute_values(":at", s(timestamp(now)))
            .send()
            .await;
        condition_held(update, "dynamodb:UpdateItem", &self.resource())
    }

    /// The final report of an event this table has completed, if it has.
    pub async fn event_report(&self, event_id: &str) -> Result<Option<Report>, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(self.scoped_key(&format!("event#{event_id}"))))
            .key("sk", s("event"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        Ok(output
            .item()
            .and_then(|item| get_s(item, "report"))
            .and_then(|report| serde_json::from_str(report).ok()))
    }

    /// Logs a report of a runbook for the scorecard. Best effort: a line lost to a fault only
    /// leaves the scorecard one run short.
    pub async fn log_run(&self, report: &Report, started_at: DateTime<Utc>) {
        let Some(runbook) = report.runbook.as_deref() else {
            return;
        };
        let reason: String = report.reason.chars().take(500).collect();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("run#{}", started_at.format("%Y-%m-%d"))))
            .item(
                "sk",
                s(format!(
                    "{}#{}",
                    timestamp(started_at),
                    uuid::Uuid::new_v4()
                )),
            )
            .item("runbook", s(runbook))
            .item(
                "outcome",
                s(super::json_text(&report.outcome).trim_matches('"')),
            )
            .item("reason", s(reason))
            .item("target", s(report.target.clone().unwrap_or_default()))
            .item("started_at", s(timestamp(started_at)))
            .item("expires_at", self.expires_at(started_at))
            .send()
            .await;
        if let Err(err) = put {
            let err = self.err("dynamodb:PutItem", &err);
            tracing::warn!(runbook, error = %err, "the run was not logged for the scorecard");
        }
    }

    /// What the scorecard reads since `since`: the remediation records, the run log and the
    /// plans. Reading stops after SCAN_PAGES pages (the flag says so).
    pub async fn scorecard_items(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(ScorecardItems, bool), AwsError> {
        let mut items = ScorecardItems::default();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(
                "((begins_with(pk, :record) OR begins_with(pk, :run)) AND started_at >= :since) OR (begins_with(pk, :plan) AND created_at >= :since)",
            )
            .expression_attribute_values(":record", s("target#"))
            .expression_attribute_values(":run", s("run#"))
            .expression_attribute_values(":plan", s("plan#"))
            .expression_attribute_values(":since", s(timestamp(since)))
            .into_paginator()
            .send();
        let mut read = 0;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Scan", &err))?;
            for item in page.items() {
                items.add(item);
            }
            read += 1;
            if read >= SCAN_PAGES {
                return Ok((items, true));
            }
        }
        Ok((items, false))
    }
}

/// The items the scorecard is made from.
#[derive(Clone, Debug, Default)]
pub struct ScorecardItems {
    pub records: Vec<(super::AuditRecord, Option<DateTime<Utc>>)>,
    pub runs: Vec<RunLine>,
    pub plans: Vec<PlanLine>,
}

impl ScorecardItems {
    fn add(&mut self, item: &Item) {
        let pk = get_s(item, "pk").unwrap_or_default();
        if pk.starts_with("target#") {
            if let Some(record) = super::AuditRecord::from_item(item) {
                let settled_at = get_s(item, "settled_at").and_then(parse_time);
                self.records.push((record, settled_at));
            }
        } else if pk.starts_with("run#") {
            if let (Some(runbook), Some(outcome)) = (get_s(item, "runbook"), get_s(item, "outcome"))
            {
                self.runs.push(RunLine {
                    runbook: runbook.into(),
                    outcome: outcome.into(),
                    reason: get_s(item, "reason").unwrap_or_default().into(),
                });
            }
        } else if let Some(record) = plan_record(item) {
            self.plans.push(PlanLine {
                runbook: record.plan.runbook,
                status: record.status,
                expires_at: record.plan.expires_at,
            });
        }
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

fn plan_record(item: &Item) -> Option<PlanRecord> {
    let mut plan: Plan = serde_json::from_str(get_s(item, "plan")?).ok()?;
    // The attribute the conditional decisions test is the expiry that holds.
    plan.expires_at = DateTime::from_timestamp(get_n(item, "approval_expires")?, 0)?;
    Some(PlanRecord {
        plan,
        status: status_of(get_s(item, "status")?)?,
        decided_by: get_s(item, "decided_by").map(str::to_string),
        decided_reason: get_s(item, "decided_reason").map(str::to_string),
        decided_at: get_s(item, "decided_at").map(str::to_string),
    })
}
