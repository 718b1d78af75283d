//! An item that holds one JSON value under a version (`sk = window`): the action budget's times
//! and the change brake's resources. It is changed by read → change → write at `version + 1`,
//! conditional on the version read, so concurrent writers never lose each other's change: a
//! writer that finds the version moved backs off and reads again.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AuditStore, get_n, get_s, json_text, n, s};
use crate::aws::{AwsError, condition_held};

impl AuditStore {
    /// The value under `field` in the item `pk` (its default when there is none), and the
    /// item's version (0 when there is none). An item that is there but cannot be read (its
    /// value or version missing or malformed) is an error, never an empty window: a guard that
    /// cannot count what it guards fails closed.
    pub(super) async fn read_window<T: DeserializeOwned + Default>(
        &self,
        pk: &str,
        field: &str,
    ) -> Result<(T, i64), AwsError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s("window"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.err("dynamodb:GetItem", &err))?;
        let Some(item) = item.item() else {
            return Ok((T::default(), 0));
        };
        let unreadable = |why: String| {
            AwsError::invalid(
                "dynamodb:GetItem",
                &self.resource(),
                &format!(
                    "the item pk={pk}, sk=window is unreadable ({why}), so what it guards is held: \
                     mend or delete that item"
                ),
            )
        };
        let version =
            get_n(item, "version").ok_or_else(|| unreadable("no numeric `version`".into()))?;
        let text = get_s(item, field).ok_or_else(|| unreadable(format!("no string `{field}`")))?;
        let value = serde_json::from_str(text)
            .map_err(|err| unreadable(format!("`{field}` is not what it should hold: {err}")))?;
        Ok((value, version))
    }

    /// Writes `value` under `field` if the item is still at `version`: false when another
    /// writer came first. The item expires two days after `now`.
    pub(super) async fn write_window<T: Serialize>(
        &self,
        pk: &str,
        field: &str,
        value: &T,
        version: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s("window"))
            .item(field, s(json_text(value)))
            .item("version", n(version + 1))
            .item("expires_at", n((now + Duration::days(2)).timestamp()))
            .condition_expression("attribute_not_exists(pk) OR version = :version")
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        condition_held(put, "dynamodb:PutItem", &self.resource())
    }
}

/// Before reading again after another writer came first: a little while, with jitter, so that
/// writers that collided do not collide again.
pub(super) async fn back_off() {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    tokio::time::sleep(std::time::Duration::from_millis(20 + jitter)).await;
}
