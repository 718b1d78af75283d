//! The correlated-change brake's items: `pk = brake#changes`, `sk = window` holds the resources
//! changed recently (resource key -> epoch milliseconds of its last change) with a version for
//! optimistic concurrency; `pk = brake#escalated`, `sk = window` when the brake last escalated.

use chrono::{DateTime, Duration, Utc};

use std::collections::BTreeMap;

use super::window::back_off;
use super::{AuditStore, n, s};
use crate::aws::{AwsError, condition_held};

/// How many times a taker re-reads and retries when another one wrote first.
const ATTEMPTS: usize = 20;

/// The window item's key.
const CHANGES: &str = "brake#changes";

/// The resources changed within the window, newest first.
pub type Changed = Vec<(String, DateTime<Utc>)>;

/// A slot taken in the window: given back if the change is not made after all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    /// When it was taken (epoch milliseconds): only this taker's entry is given back.
    at: i64,
    /// The resource's earlier change in the window, if it had one: what giving back restores.
    earlier: Option<i64>,
}

impl AuditStore {
    /// The resources changed recently (key -> epoch milliseconds) and the window's version.
    async fn changes(&self) -> Result<(BTreeMap<String, i64>, i64), AwsError> {
        self.read_window(&self.scoped_key(CHANGES), "resources")
            .await
    }

    /// Counts a change of `resource` at `now` in the brake's window: `Err` with the resources
    /// changed within `window` when `max` other resources were. A change to a resource already
    /// in the window is the same resource, not a new one.
    pub async fn take_change(
        &self,
        resource: &str,
        max: usize,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<Slot, Changed>, AwsError> {
        for _ in 0..ATTEMPTS {
            let (mut changed, version) = self.changes().await?;
            let start = (now - window).timestamp_millis();
            changed.retain(|_, at| *at > start);
            if !changed.contains_key(resource) && changed.len() >= max {
                let mut list: Changed = changed
                    .into_iter()
                    .filter_map(|(key, at)| Some((key, DateTime::from_timestamp_millis(at)?)))
                    .collect();
                list.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
                return Ok(Err(list));
            }
            let slot = Slot {
                at: now.timestamp_millis(),
                earlier: changed.insert(resource.to_string(), now.timestamp_millis()),
            };
            if self
                .write_window(
                    &self.scoped_key(CHANGES),
                    "resources",
                    &changed,
                    version,
                    now,
                )
                .await?
            {
                return Ok(Ok(slot));
            }
            back_off().await;
        }
        Err(self.window_contended())
    }

    /// Gives a slot back: the resource's entry as it was before `take_change`, unless another
    /// change of it has been counted since.
    pub async fn release_change(&self, resource: &str, slot: Slot) -> Result<(), AwsError> {
        for _ in 0..ATTEMPTS {
            let (mut changed, version) = self.changes().await?;
            if changed.get(resource) != Some(&slot.at) {
                return Ok(());
            }
            match slot.earlier {
                Some(earlier) => changed.insert(resource.to_string(), earlier),
                None => changed.remove(resource),
            };
            if self
                .write_window(
                    &self.scoped_key(CHANGES),
                    "resources",
                    &changed,
                    version,
                    Utc::now(),
                )
                .await?
            {
                return Ok(());
            }
            back_off().await;
        }
        Err(self.window_contended())
    }

    fn window_contended(&self) -> AwsError {
        AwsError {
            api: "dynamodb:PutItem".into(),
            resource: self.resource(),
            code: None,
            message: format!(
                "the change brake's window changed under {ATTEMPTS} attempts in a row; run again"
            ),
            kind: crate::aws::FaultKind::Other,
        }
    }

    /// Claims the brake's escalation for the window that ends at `now`: true for exactly one
    /// caller per window, however many changes the brake stops in it.
    pub async fn claim_escalation(
        &self,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(self.scoped_key("brake#escalated")))
            .item("sk", s("window"))
            .item("at", n(now.timestamp_millis()))
            .item("expires_at", n((now + Duration::days(2)).timestamp()))
            .condition_expression("attribute_not_exists(pk) OR #at <= :start")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":start", n((now - window).timestamp_millis()))
            .send()
            .await;
        condition_held(put, "dynamodb:PutItem", &self.resource())
    }

    /// The records of automatic runs (alarms, schedules) that changed the resource since
    /// `since`, newest first.
    pub async fn automatic_changes_since(
        &self,
        resource: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::AuditRecord>, AwsError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk >= :since")
            .expression_attribute_values(":pk", s(format!("target#{resource}")))
            .expression_attribute_values(":since", s(super::timestamp(since)))
            .scan_index_forward(false)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            records.extend(
                page.items()
                    .iter()
                    .filter_map(super::AuditRecord::from_item)
                    .filter(|record| {
                        !record.report.trigger.kind.is_manual()
                            && record.report.actions.iter().any(|action| action.applied)
                    }),
            );
        }
        Ok(records)
    }
}
