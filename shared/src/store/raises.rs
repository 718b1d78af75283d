//! Raises in force: what a raise changed (its original and its current value) and when to put
//! it back — what the scale-downs and put-backs of the schedule work from.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{AuditStore, Item, get_n, get_s, n, s, timestamp};
use crate::aws::AwsError;

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
    /// The alarm whose firing led to the raise, if one did: nothing is put back while it fires.
    pub alarm: Option<String>,
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
            alarm: get_s(item, "alarm").map(str::to_string),
        })
    }
}

impl AuditStore {
    /// Records that `runbook` raised the resource (by its key) to `current`; the original is
    /// kept from the first raise still in force, and so is the alarm that led to a raise when
    /// this one names none.
    pub async fn put_raise(
        &self,
        runbook: &str,
        resource: &str,
        original: &Value,
        current: &Value,
        revert_at: Option<DateTime<Utc>>,
        alarm: Option<&str>,
    ) -> Result<(), AwsError> {
        let now = Utc::now();
        let mut set = vec![
            "original = if_not_exists(original, :original)",
            "#current = :current",
            "raised_at = :now",
            "expires_at = :expires",
        ];
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("raise#{runbook}")))
            .key("sk", s(resource))
            .expression_attribute_names("#current", "current")
            .expression_attribute_values(":original", s(original.to_string()))
            .expression_attribute_values(":current", s(current.to_string()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":expires", self.expires_at(now));
        if let Some(at) = revert_at {
            set.push("revert_at = :revert");
            update = update.expression_attribute_values(":revert", n(at.timestamp()));
        }
        if let Some(alarm) = alarm {
            set.push("alarm = :alarm");
            update = update.expression_attribute_values(":alarm", s(alarm));
        }
        let remove = if revert_at.is_none() {
            " REMOVE revert_at"
        } else {
            ""
        };
        update
            .update_expression(format!("SET {}{remove}", set.join(", ")))
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
}
