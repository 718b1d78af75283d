//! What `dynamodb-capacity` raises: a table or index, from a manual payload or a throttle alarm.

use runbook_shared::model::{AlarmTrigger, MetricRef, Rejection};
use runbook_shared::model::{Home, Resource, ResourceId};
use serde::Deserialize;

use super::{NAMESPACE, THROTTLE_METRICS};
use crate::config::ScalerConfig;

const READ_OPERATIONS: [&str; 6] = [
    "GetItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "TransactGetItems",
    "ExecuteStatement",
];
const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

/// The manual payload: `{"table": "orders", "index": "by-customer", "read": 200, "write": 100,
/// "factor": 2.0, "mode": "on-demand", "dry_run": true}`; only `table` is required.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub table: String,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default)]
    pub read: Option<i64>,
    #[serde(default)]
    pub write: Option<i64>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// What to do to one side (read or write) of the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    /// Not throttled: leave as it is.
    Keep,
    /// Raise by the factor, or to the consumed peak with headroom, whichever is higher.
    Raise,
    /// Raise to exactly this (a manual request).
    To(i64),
}

/// A validated request to raise capacity, from an alarm or a manual payload.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityTarget {
    pub table: String,
    pub index: Option<String>,
    pub read: Side,
    pub write: Side,
    pub factor: f64,
    /// A manual request to switch the table to on-demand.
    pub switch_to_on_demand: bool,
}

impl CapacityTarget {
    /// The report's target: `orders`, or `orders/index/by-customer` for an index.
    pub fn name(&self) -> String {
        match &self.index {
            Some(index) => format!("{}/index/{index}", self.table),
            None => self.table.clone(),
        }
    }

    /// The table or index, in the function's partition, region and account.
    pub fn resource(&self, home: &Home) -> ResourceId {
        match &self.index {
            Some(index) => home.index(&self.table, index),
            None => home.table(&self.table),
        }
    }

    /// The table or index a raise record names, to step it back down.
    pub fn of_resource(resource: &ResourceId, config: &ScalerConfig) -> Option<Self> {
        let (table, index) = match &resource.resource {
            Resource::Table { table } => (table.clone(), None),
            Resource::Index { table, index } => (table.clone(), Some(index.clone())),
            _ => return None,
        };
        Some(Self {
            table,
            index,
            read: Side::Keep,
            write: Side::Keep,
            factor: config.scale_factor,
            switch_to_on_demand: false,
        })
    }

    /// Validates a manual request against the configuration, before any AWS call. The table
    /// may be named by its name or its ARN (an index ARN names the index too).
    // Over 80 lines: every field of a manual request validated before any AWS call, each with its
    // own error.
    pub fn from_request(request: &Request, config: &ScalerConfig) -> Result<Self, Rejection> {
        let reject = |message: String| Err(Rejection(message));
        if request.table.trim().is_empty() {
            return reject("\"table\" must name a DynamoDB table".into());
        }
        if request
            .index
            .as_deref()
            .is_some_and(|index| index.trim().is_empty())
        {
            return reject("\"index\" must name a global secondary index, or be left out".into());
        }
        let (table, index) = match config.safety.home.parse_table(&request.table)?.resource {
            Resource::Index { table, index } => match request.index.as_deref().map(str::trim) {
                Some(other) if other != index => {
                    return reject(format!(
                        "\"table\" names index {index} and \"index\" names {other}: give one"
                    ));
                }
                _ => (table, Some(index)),
            },
            Resource::Table { table } => (
                table,
                request.index.as_ref().map(|index| index.trim().to_string()),
            ),
            _ => return reject(format!("{:?} is not a DynamoDB table", request.table)),
        };
        for (field, value, cap, cap_name) in [
            (
                "read",
                request.read,
                config.max_read_capacity,
                "MAX_READ_CAPACITY",
            ),
            (
                "write",
                request.write,
                config.max_write_capacity,
                "MAX_WRITE_CAPACITY",
            ),
        ] {
            match value {
                Some(value) if value < 1 => {
                    return reject(format!("\"{field}\" must be at least 1, got {value}"));
                }
                Some(value) if value > cap => {
                    return reject(format!(
                        "\"{field}\" {value} is above the cap {cap_name}={cap}"
                    ));
                }
                _ => {}
            }
        }
        let factor = request.factor.unwrap_or(config.scale_factor);
        if !(1.1..=10.0).contains(&factor) {
            return reject(format!("\"factor\" must be from 1.1 to 10, got {factor}"));
        }
        let switch_to_on_demand = match request.mode.as_deref() {
            None => false,
            Some("on-demand") if !config.allow_on_demand => {
                return reject("\"mode\": \"on-demand\" needs ALLOW_ON_DEMAND=true in the function's configuration".into());
            }
            Some("on-demand") if request.read.is_some() || request.write.is_some() => {
                return reject(
                    "\"mode\": \"on-demand\" cannot be combined with \"read\" or \"write\"".into(),
                );
            }
            Some("on-demand") => true,
            Some(other) => return reject(format!("\"mode\" must be \"on-demand\", got {other:?}")),
        };
        let (read, write) = match (request.read, request.write) {
            (None, None) => (Side::Raise, Side::Raise),
            (read, write) => (
                read.map_or(Side::Keep, Side::To),
                write.map_or(Side::Keep, Side::To),
            ),
        };
        Ok(Self {
            table,
            index,
            read,
            write,
            factor,
            switch_to_on_demand,
        })
    }

    /// The throttled table or index an alarm watches: `None` if it watches no DynamoDB throttle
    /// metric, `Some(Err(reason))` when it watches several (metric math over many tables), so
    /// the one that throttles cannot be told from the alarm.
    pub fn from_alarm(alarm: &AlarmTrigger, config: &ScalerConfig) -> Option<Result<Self, String>> {
        let throttles: Vec<&MetricRef> = alarm
            .metrics
            .iter()
            .filter(|metric| {
                metric.namespace == NAMESPACE && THROTTLE_METRICS.contains(&metric.name.as_str())
            })
            .filter(|metric| metric.dimension("TableName").is_some())
            .collect();
        let mut candidates: Vec<(&str, Option<&str>)> = throttles
            .iter()
            .filter_map(|metric| {
                Some((
                    metric.dimension("TableName")?,
                    metric.dimension("GlobalSecondaryIndexName"),
                ))
            })
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let (table, index) = match candidates.as_slice() {
            [] => return None,
            [one] => *one,
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|(table, index)| match index {
                        Some(index) => format!("{table}/index/{index}"),
                        None => table.to_string(),
                    })
                    .collect();
                return Some(Err(format!(
                    "alarm {} watches the throttling of several tables or indexes ({}), so the one that throttles cannot be told from the alarm: nothing was changed; alarm on each table, or run the runbook by hand on the one to raise",
                    alarm.alarm_name,
                    names.join(", ")
                )));
            }
        };
        let (mut read, mut write) = (false, false);
        for metric in &throttles {
            let (r, w) = throttled_sides(metric);
            read |= r;
            write |= w;
        }
        let side = |throttled: bool| if throttled { Side::Raise } else { Side::Keep };
        Some(Ok(Self {
            table: table.to_string(),
            index: index.map(str::to_string),
            read: side(read),
            write: side(write),
            factor: config.scale_factor,
            switch_to_on_demand: false,
        }))
    }
}

/// Which sides a throttle metric speaks of; `ThrottledRequests` says it through `Operation`.
fn throttled_sides(metric: &MetricRef) -> (bool, bool) {
    match metric.name.as_str() {
        "ReadThrottleEvents" => (true, false),
        "WriteThrottleEvents" => (false, true),
        _ => match metric.dimension("Operation") {
            Some(op) if READ_OPERATIONS.contains(&op) => (true, false),
            Some(op) if WRITE_OPERATIONS.contains(&op) => (false, true),
            _ => (true, true),
        },
    }
}
