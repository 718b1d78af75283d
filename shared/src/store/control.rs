//! The kill switch's items: `pk = control#automation`, `sk = switch` for the whole deployment,
//! so that one write pauses every function in every account; `pk =
//! control#automation#<account>` for one account of a hub that remediates several.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AuditStore, get_s, s};
use crate::aws::AwsError;

const SWITCH_PK: &str = "control#automation";
const SWITCH_SK: &str = "switch";

/// The switch item of the whole deployment (`None`) or of one account.
fn switch_key(account: Option<&str>) -> String {
    match account {
        Some(account) => format!("{SWITCH_PK}#{account}"),
        None => SWITCH_PK.to_string(),
    }
}
/// Verifications settled as failed, one item each (`sk = <settled at>#<audit id>`), kept a day:
/// what the sweep's auto-trip counts.
const FAILED_PK: &str = "control#failed-verifications";

/// A pause in force (or ended, when `until` has passed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub by: String,
    pub reason: String,
    pub since: DateTime<Utc>,
    /// None: until someone resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Pause {
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "paused by {}{} ({}), {}",
            self.by,
            if self.since == DateTime::<Utc>::MIN_UTC {
                String::new()
            } else {
                format!(" since {}", super::timestamp(self.since))
            },
            self.reason,
            match self.until {
                Some(until) => format!("until {}", super::timestamp(until)),
                None => "until someone resumes".into(),
            }
        )
    }
}

impl AuditStore {
    /// The pause stored in the switch item, if there is one (it may have ended: see `in_force`).
    /// The item is plain attributes so that a person can write it with `aws dynamodb put-item`
    /// when the functions themselves misbehave; an item a person wrote wrongly (a `paused` that
    /// is not a boolean, an unreadable time) is read as paused: the switch fails closed.
    pub async fn pause(&self, account: Option<&str>) -> Result<Option<Pause>, AwsError> {
        Ok(self.switch_item(account).await?.0)
    }

    /// The pause stored in the switch item (the whole deployment's, or one account's), and
    /// when the automation was last resumed.
    pub async fn switch_item(
        &self,
        account: Option<&str>,
    ) -> Result<(Option<Pause>, Option<DateTime<Utc>>), AwsError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(switch_key(account)))
            .key("sk", s(SWITCH_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        let Some(item) = item.item() else {
            return Ok((None, None));
        };
        let time = |key: &str| {
            get_s(item, key).map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| text.to_string())
            })
        };
        let resumed_at = time("resumed_at").and_then(Result::ok);
        let paused = item.get("paused").map(|value| value.as_bool().copied());
        if matches!(paused, None | Some(Ok(false))) {
            return Ok((None, resumed_at));
        }
        let mut doubts = Vec::new();
        if paused != Some(Ok(true)) {
            doubts.push("`paused` is not a boolean".to_string());
        }
        let since = match time("since") {
            Some(Ok(at)) => at,
            Some(Err(text)) => {
                doubts.push(format!("`since` ({text}) is not an RFC 3339 time"));
                DateTime::<Utc>::MIN_UTC
            }
            None => DateTime::<Utc>::MIN_UTC,
        };
        let until = match time("until") {
            Some(Ok(at)) => Some(at),
            Some(Err(text)) => {
                doubts.push(format!(
                    "`until` ({text}) is not an RFC 3339 time, so the pause has no end"
                ));
                None
            }
            None => None,
        };
        let mut reason = get_s(item, "reason")
            .unwrap_or("no reason given")
            .to_string();
        if !doubts.is_empty() {
            reason = format!(
                "{reason}; the switch item is malformed ({}), read as paused",
                doubts.join(", ")
            );
        }
        let pause = Pause {
            by: get_s(item, "by").unwrap_or("someone (no `by`)").to_string(),
            reason,
            since,
            until,
        };
        Ok((Some(pause), resumed_at))
    }

    /// Engages (`Some`) or lifts (`None`) the pause.
    /// An update, not a put: a pause keeps the time of the last resume, which the auto-trip
    /// counts failures from.
    pub async fn set_pause(
        &self,
        account: Option<&str>,
        pause: Option<&Pause>,
    ) -> Result<(), AwsError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(switch_key(account)))
            .key("sk", s(SWITCH_SK))
            .expression_attribute_names("#paused", "paused")
            .expression_attribute_values(":paused", AttributeValue::Bool(pause.is_some()));
        let update = match pause {
            None => update
                .update_expression("SET #paused = :paused, #resumed = :now")
                .expression_attribute_names("#resumed", "resumed_at")
                .expression_attribute_values(":now", s(super::timestamp(Utc::now()))),
            Some(pause) => {
                let update = update
                    .expression_attribute_names("#by", "by")
                    .expression_attribute_names("#reason", "reason")
                    .expression_attribute_names("#since", "since")
                    .expression_attribute_names("#until", "until")
                    .expression_attribute_values(":by", s(&pause.by))
                    .expression_attribute_values(":reason", s(&pause.reason))
                    .expression_attribute_values(":since", s(super::timestamp(pause.since)));
                let set = "SET #paused = :paused, #by = :by, #reason = :reason, #since = :since";
                match pause.until {
                    Some(until) => update
                        .update_expression(format!("{set}, #until = :until"))
                        .expression_attribute_values(":until", s(super::timestamp(until))),
                    None => update.update_expression(format!("{set} REMOVE #until")),
                }
            }
        };
        update
            .send()
            .await
            .map_err(|err| self.err("dynamodb:UpdateItem", &err))?;
        Ok(())
    }

    /// Notes a verification settled as failed, for the sweep's auto-trip.
    pub async fn note_failed_verification(
        &self,
        audit_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(FAILED_PK))
            .item("sk", s(format!("{}#{audit_id}", super::timestamp(at))))
            .item("audit_id", s(audit_id))
            .item(
                "expires_at",
                super::n((at + chrono::Duration::days(1)).timestamp()),
            )
            .send()
            .await
            .map_err(|err| self.err("dynamodb:PutItem", &err))?;
        Ok(())
    }

    /// The audit ids of the verifications settled as failed after `since`, oldest first.
    pub async fn failed_verifications_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<String>, AwsError> {
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk > :since")
            .expression_attribute_values(":pk", s(FAILED_PK))
            .expression_attribute_values(":since", s(super::timestamp(since)))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.err("dynamodb:Query", &err))?;
            ids.extend(
                page.items()
                    .iter()
                    .filter_map(|item| get_s(item, "audit_id").map(str::to_string)),
            );
        }
        Ok(ids)
    }
}
