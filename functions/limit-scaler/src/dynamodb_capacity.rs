//! Runbook `dynamodb-capacity`: a DynamoDB table or global secondary index is throttling.
//!
//! Diagnose (DescribeTable, consumed capacity from CloudWatch) → plan (raise the throttled side
//! within the caps, or switch to on-demand at the cap when allowed) → act (UpdateTable) →
//! verify (DescribeTable until ACTIVE at the new numbers; the throttle alarm's OK transition
//! closes the metric-level check).

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndexUpdate, OnDemandThroughput, ProvisionedThroughput,
    TableDescription, UpdateGlobalSecondaryIndexAction,
};
use chrono::Utc;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::{Deadline, poll_until};
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::resource::{Home, Resource, ResourceId};
use runbook_shared::safety::Invocation;
use runbook_shared::trigger::{AlarmTrigger, MetricRef, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Scaler;
use crate::config::ScalerConfig;

pub const RUNBOOK: &str = "dynamodb-capacity";
pub const NAMESPACE: &str = "AWS/DynamoDB";
pub const THROTTLE_METRICS: [&str; 3] = [
    "ReadThrottleEvents",
    "WriteThrottleEvents",
    "ThrottledRequests",
];

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
pub struct CapacityRequest {
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

    /// Validates a manual request against the configuration, before any AWS call. The table
    /// may be named by its name or its ARN (an index ARN names the index too).
    pub fn from_request(
        request: &CapacityRequest,
        config: &ScalerConfig,
    ) -> Result<Self, Rejection> {
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

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Billing {
    Provisioned,
    PayPerRequest,
}

/// The capacity of the table or index as DescribeTable shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observed {
    pub table_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_status: Option<String>,
    pub billing_mode: Billing,
    pub read: i64,
    pub write: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_read_request_units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_write_request_units: Option<i64>,
}

impl Observed {
    fn from_table(table: &TableDescription, index: Option<&str>) -> Result<Self, String> {
        let billing_mode = match table
            .billing_mode_summary()
            .and_then(|summary| summary.billing_mode())
        {
            Some(BillingMode::PayPerRequest) => Billing::PayPerRequest,
            _ => Billing::Provisioned,
        };
        let table_status = table
            .table_status()
            .map_or("UNKNOWN", |status| status.as_str())
            .to_string();
        // A maximum of -1 (or none) means "no maximum".
        let limit = |value: Option<i64>| value.filter(|units| *units > 0);
        let Some(index_name) = index else {
            let throughput = table.provisioned_throughput();
            let on_demand = table.on_demand_throughput();
            return Ok(Self {
                table_status,
                index_status: None,
                billing_mode,
                read: throughput
                    .and_then(|t| t.read_capacity_units())
                    .unwrap_or(0),
                write: throughput
                    .and_then(|t| t.write_capacity_units())
                    .unwrap_or(0),
                max_read_request_units: limit(on_demand.and_then(|o| o.max_read_request_units())),
                max_write_request_units: limit(on_demand.and_then(|o| o.max_write_request_units())),
            });
        };
        let indexes = table.global_secondary_indexes();
        let Some(gsi) = indexes
            .iter()
            .find(|gsi| gsi.index_name() == Some(index_name))
        else {
            let names: Vec<&str> = indexes.iter().filter_map(|gsi| gsi.index_name()).collect();
            return Err(format!(
                "table {} has no global secondary index {index_name} (its indexes: {})",
                table.table_name().unwrap_or_default(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        };
        let throughput = gsi.provisioned_throughput();
        let on_demand = gsi.on_demand_throughput();
        Ok(Self {
            table_status,
            index_status: Some(
                gsi.index_status()
                    .map_or("UNKNOWN", |status| status.as_str())
                    .to_string(),
            ),
            billing_mode,
            read: throughput
                .and_then(|t| t.read_capacity_units())
                .unwrap_or(0),
            write: throughput
                .and_then(|t| t.write_capacity_units())
                .unwrap_or(0),
            max_read_request_units: limit(on_demand.and_then(|o| o.max_read_request_units())),
            max_write_request_units: limit(on_demand.and_then(|o| o.max_write_request_units())),
        })
    }

    fn active(&self) -> bool {
        self.table_status == "ACTIVE"
            && self
                .index_status
                .as_deref()
                .is_none_or(|status| status == "ACTIVE")
    }

    fn status_text(&self) -> String {
        match &self.index_status {
            Some(index) => format!("table {}, index {index}", self.table_status),
            None => self.table_status.clone(),
        }
    }
}

/// Consumed capacity per second at its peak over the lookback window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConsumedPeaks {
    pub read_per_second: Option<f64>,
    pub write_per_second: Option<f64>,
}

/// The change to make.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Provisioned {
        read: i64,
        write: i64,
    },
    OnDemandMaximum {
        read: Option<i64>,
        write: Option<i64>,
    },
    SwitchToOnDemand,
}

/// A change, and the sides a raise kept as they were (each with why).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub change: Change,
    pub kept: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(Plan),
    NoAction(String),
    Skip(String),
}

/// The new value for one side: the factor or the consumed peak with headroom, whichever is
/// higher, clamped to the cap; an explicit value stands as it is (already checked against the
/// cap). It may come out at or below `current`: the caller then keeps `current`.
fn raised(
    side: Side,
    current: i64,
    factor: f64,
    peak: Option<f64>,
    config: &ScalerConfig,
    cap: i64,
) -> i64 {
    match side {
        Side::Keep => current,
        Side::To(value) => value,
        Side::Raise => {
            let by_factor = (current.max(1) as f64 * factor).ceil();
            let by_peak = peak.map_or(0.0, |peak| (peak * config.headroom).ceil());
            (by_factor.max(by_peak) as i64).min(cap)
        }
    }
}

/// One side's value after a raise, never below `current`, and why it was kept when a raise
/// was asked for and it did not rise.
fn never_lower(
    label: &str,
    side: Side,
    current: i64,
    wanted: i64,
    cap: (i64, &str),
) -> (i64, Option<String>) {
    if wanted > current || side == Side::Keep {
        return (wanted.max(current), None);
    }
    let why = match side {
        Side::To(asked) if asked < current => {
            format!("{label} kept at {current}: {asked} was asked for, and a raise never lowers")
        }
        _ if current > cap.0 => format!(
            "{label} kept at {current}: it is above {}={}, set by someone else",
            cap.1, cap.0
        ),
        _ => return (current, None),
    };
    (current, Some(why))
}

/// Plans the change from what was observed; pure, so dry runs and tests see the same plan. A
/// raise never lowers a side it sends: a side already above its cap, or above an exact value
/// asked for, is kept as it is, and the plan says so.
pub fn decide(
    target: &CapacityTarget,
    observed: &Observed,
    peaks: &ConsumedPeaks,
    config: &ScalerConfig,
) -> Decision {
    let name = target.name();
    let read_cap = (config.max_read_capacity, "MAX_READ_CAPACITY");
    let write_cap = (config.max_write_capacity, "MAX_WRITE_CAPACITY");
    if observed.billing_mode == Billing::PayPerRequest {
        if target.switch_to_on_demand {
            return Decision::NoAction(format!("{name} is already on-demand (PAY_PER_REQUEST)"));
        }
        let limited = [
            (target.read, observed.max_read_request_units),
            (target.write, observed.max_write_request_units),
        ];
        if limited
            .iter()
            .all(|(side, max)| *side == Side::Keep || max.is_none())
        {
            return Decision::NoAction(format!(
                "{name} is on-demand with no maximum throughput set on the throttled side, so capacity is not the limit: \
                 on-demand throttling comes from a hot partition key or a spike above twice the previous peak; \
                 look for hot keys with CloudWatch Contributor Insights and spread the key space"
            ));
        }
        // A side without a maximum is unlimited: nothing to raise, nothing to send.
        let mut kept = Vec::new();
        let mut side = |label: &str, want: Side, max: Option<i64>, peak, cap: (i64, &str)| {
            max.map(|current| {
                let wanted = raised(want, current, target.factor, peak, config, cap.0);
                let (new, why) = never_lower(label, want, current, wanted, cap);
                kept.extend(why);
                new
            })
        };
        let read = side(
            "max read",
            target.read,
            observed.max_read_request_units,
            peaks.read_per_second,
            read_cap,
        );
        let write = side(
            "max write",
            target.write,
            observed.max_write_request_units,
            peaks.write_per_second,
            write_cap,
        );
        if read <= observed.max_read_request_units && write <= observed.max_write_request_units {
            return Decision::Skip(format!(
                "at cap: the on-demand maximum of {name} is already at or above MAX_READ_CAPACITY={} / MAX_WRITE_CAPACITY={}{}",
                read_cap.0,
                write_cap.0,
                kept_text(&kept)
            ));
        }
        return Decision::Act(Plan {
            change: Change::OnDemandMaximum { read, write },
            kept,
        });
    }
    if target.switch_to_on_demand {
        return Decision::Act(Plan {
            change: Change::SwitchToOnDemand,
            kept: Vec::new(),
        });
    }
    let mut kept = Vec::new();
    let mut side = |label: &str, want: Side, current: i64, peak, cap: (i64, &str)| {
        let wanted = raised(want, current, target.factor, peak, config, cap.0);
        let (new, why) = never_lower(label, want, current, wanted, cap);
        kept.extend(why);
        new
    };
    let read = side(
        "read",
        target.read,
        observed.read,
        peaks.read_per_second,
        read_cap,
    );
    let write = side(
        "write",
        target.write,
        observed.write,
        peaks.write_per_second,
        write_cap,
    );
    if read > observed.read || write > observed.write {
        return Decision::Act(Plan {
            change: Change::Provisioned { read, write },
            kept,
        });
    }
    let mut at_cap = Vec::new();
    if target.read == Side::Raise && observed.read >= read_cap.0 {
        at_cap.push(format!(
            "read capacity {} is at MAX_READ_CAPACITY={}",
            observed.read, read_cap.0
        ));
    }
    if target.write == Side::Raise && observed.write >= write_cap.0 {
        at_cap.push(format!(
            "write capacity {} is at MAX_WRITE_CAPACITY={}",
            observed.write, write_cap.0
        ));
    }
    if at_cap.is_empty() {
        return Decision::NoAction(format!(
            "{name} already has the requested capacity (read {}, write {})",
            observed.read, observed.write
        ));
    }
    if config.allow_on_demand {
        return Decision::Act(Plan {
            change: Change::SwitchToOnDemand,
            kept: Vec::new(),
        });
    }
    Decision::Skip(format!(
        "at cap: {name} {}; raise the cap or set ALLOW_ON_DEMAND=true to switch the table to on-demand",
        at_cap.join(" and ")
    ))
}

/// One side's next value on the way back down: unchanged while the consumed peak stays at or
/// above SCALE_DOWN_UTILIZATION of it (or it is at its baseline), else down by the factor but
/// never below the peak with headroom nor below the baseline; pure.
pub fn step_down(current: i64, baseline: i64, peak: Option<f64>, config: &ScalerConfig) -> i64 {
    let peak = peak.unwrap_or(0.0);
    if current <= baseline || peak >= config.scale_down_utilization * current as f64 {
        return current;
    }
    let by_factor = (current as f64 / config.scale_factor).ceil() as i64;
    let by_peak = (peak * config.headroom).ceil() as i64;
    by_factor.max(by_peak).max(baseline).min(current)
}

/// `" (read kept at …; …)"`, or nothing.
pub fn kept_text(kept: &[String]) -> String {
    if kept.is_empty() {
        String::new()
    } else {
        format!(" ({})", kept.join("; "))
    }
}

fn action_states(
    target: &CapacityTarget,
    observed: &Observed,
    change: &Change,
) -> (String, serde_json::Value, serde_json::Value) {
    match change {
        Change::Provisioned { read, write } => (
            target.name(),
            json!({"billing_mode": "PROVISIONED", "read": observed.read, "write": observed.write}),
            json!({"billing_mode": "PROVISIONED", "read": read, "write": write}),
        ),
        Change::OnDemandMaximum { read, write } => (
            target.name(),
            json!({"billing_mode": "PAY_PER_REQUEST", "max_read_request_units": observed.max_read_request_units,
                   "max_write_request_units": observed.max_write_request_units}),
            json!({"billing_mode": "PAY_PER_REQUEST", "max_read_request_units": read, "max_write_request_units": write}),
        ),
        Change::SwitchToOnDemand => (
            target.table.clone(),
            json!({"billing_mode": "PROVISIONED", "read": observed.read, "write": observed.write}),
            json!({"billing_mode": "PAY_PER_REQUEST"}),
        ),
    }
}

impl Change {
    /// The change whose result is `after` (an action's `after`, as `action_states` makes it).
    fn from_state(after: &Value) -> Option<Self> {
        match after["billing_mode"].as_str()? {
            "PROVISIONED" => Some(Change::Provisioned {
                read: after["read"].as_i64()?,
                write: after["write"].as_i64()?,
            }),
            "PAY_PER_REQUEST" if after.get("max_read_request_units").is_some() => {
                Some(Change::OnDemandMaximum {
                    read: after["max_read_request_units"].as_i64(),
                    write: after["max_write_request_units"].as_i64(),
                })
            }
            "PAY_PER_REQUEST" => Some(Change::SwitchToOnDemand),
            _ => None,
        }
    }
}

/// A state as `action_states` makes it, as text.
fn state_text(state: &Value) -> String {
    let number = |key: &str| state[key].as_i64().map_or("none".into(), |n| n.to_string());
    match state["billing_mode"].as_str() {
        Some("PROVISIONED") => format!(
            "PROVISIONED read {}, write {}",
            number("read"),
            number("write")
        ),
        _ => format!(
            "PAY_PER_REQUEST max read {}, max write {}",
            number("max_read_request_units"),
            number("max_write_request_units")
        ),
    }
}

/// Whether DescribeTable shows the change in force.
fn in_force(observed: &Observed, change: &Change) -> bool {
    match change {
        Change::Provisioned { read, write } => {
            observed.billing_mode == Billing::Provisioned
                && observed.read == *read
                && observed.write == *write
        }
        Change::OnDemandMaximum { read, write } => {
            observed.max_read_request_units == *read && observed.max_write_request_units == *write
        }
        Change::SwitchToOnDemand => observed.billing_mode == Billing::PayPerRequest,
    }
}

fn expected_text(change: &Change) -> String {
    match change {
        Change::Provisioned { read, write } => format!("PROVISIONED read {read}, write {write}"),
        Change::OnDemandMaximum { read, write } => format!(
            "PAY_PER_REQUEST max read {}, max write {}",
            read.map_or("none".into(), |r| r.to_string()),
            write.map_or("none".into(), |w| w.to_string())
        ),
        Change::SwitchToOnDemand => "PAY_PER_REQUEST".into(),
    }
}

fn observed_text(observed: &Observed) -> String {
    match observed.billing_mode {
        Billing::Provisioned => format!(
            "PROVISIONED read {}, write {}",
            observed.read, observed.write
        ),
        Billing::PayPerRequest => format!(
            "PAY_PER_REQUEST max read {}, max write {}",
            observed
                .max_read_request_units
                .map_or("none".into(), |r| r.to_string()),
            observed
                .max_write_request_units
                .map_or("none".into(), |w| w.to_string())
        ),
    }
}

/// What started the run, as the runbook needs it.
pub struct RunContext<'a> {
    pub report: Report,
    pub alarm_name: Option<&'a str>,
    pub invocation: &'a Invocation,
}

impl Scaler {
    async fn describe(&self, table: &str) -> Result<TableDescription, AwsError> {
        let output = self
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk("dynamodb:DescribeTable", &format!("table {table}"), &err)
            })?;
        output.table.ok_or_else(|| AwsError {
            api: "dynamodb:DescribeTable".into(),
            resource: format!("table {table}"),
            code: None,
            message: "the response has no table description".into(),
            kind: FaultKind::Other,
        })
    }

    /// Whether the table may be changed: its name matches, or its tags mark it managed.
    pub(crate) async fn table_managed(&self, table: &str) -> Result<bool, AwsError> {
        let policy = &self.config.safety.managed;
        if policy.matches_name(table) {
            return Ok(true);
        }
        let arn = self.config.safety.home.table(table).key();
        let arn = arn.as_str();
        let tags = self
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("dynamodb:ListTagsOfResource", arn, &err))?;
        Ok(policy.tags_allow(tags.tags().iter().map(|tag| (tag.key(), tag.value()))))
    }

    /// The peak consumed capacity per second over the lookback window.
    async fn consumed_peaks(
        &self,
        target: &CapacityTarget,
        lookback_minutes: i64,
    ) -> Result<ConsumedPeaks, AwsError> {
        let mut dimensions = vec![
            Dimension::builder()
                .name("TableName")
                .value(&target.table)
                .build(),
        ];
        if let Some(index) = &target.index {
            dimensions.push(
                Dimension::builder()
                    .name("GlobalSecondaryIndexName")
                    .value(index)
                    .build(),
            );
        }
        let query = |id: &str, metric: &str| {
            MetricDataQuery::builder()
                .id(id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace(NAMESPACE)
                                .metric_name(metric)
                                .set_dimensions(Some(dimensions.clone()))
                                .build(),
                        )
                        .period(60)
                        .stat("Sum")
                        .build(),
                )
                .return_data(true)
                .build()
        };
        let end = Utc::now();
        let start = end - chrono::Duration::minutes(lookback_minutes);
        let output = self
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query("read", "ConsumedReadCapacityUnits"))
            .metric_data_queries(query("write", "ConsumedWriteCapacityUnits"))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                start.timestamp(),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                end.timestamp(),
            ))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("cloudwatch:GetMetricData", &target.name(), &err))?;
        let peak = |id: &str| {
            output
                .metric_data_results()
                .iter()
                .find(|result| result.id() == Some(id))
                .and_then(|result| result.values().iter().copied().reduce(f64::max))
                .map(|sum_per_minute| sum_per_minute / 60.0)
        };
        Ok(ConsumedPeaks {
            read_per_second: peak("read"),
            write_per_second: peak("write"),
        })
    }

    async fn apply(&self, target: &CapacityTarget, change: &Change) -> Result<(), AwsError> {
        let throughput = |read: i64, write: i64| {
            ProvisionedThroughput::builder()
                .read_capacity_units(read)
                .write_capacity_units(write)
                .build()
                .map_err(|err| invalid_plan(target, &err.to_string()))
        };
        let on_demand = |read: Option<i64>, write: Option<i64>| {
            OnDemandThroughput::builder()
                .set_max_read_request_units(read)
                .set_max_write_request_units(write)
                .build()
        };
        let mut update = self.dynamodb.update_table().table_name(&target.table);
        update = match (change, &target.index) {
            (Change::SwitchToOnDemand, _) => update.billing_mode(BillingMode::PayPerRequest),
            (Change::Provisioned { read, write }, None) => {
                update.provisioned_throughput(throughput(*read, *write)?)
            }
            (Change::OnDemandMaximum { read, write }, None) => {
                update.on_demand_throughput(on_demand(*read, *write))
            }
            (change, Some(index)) => {
                let gsi = UpdateGlobalSecondaryIndexAction::builder().index_name(index);
                let gsi = match change {
                    Change::Provisioned { read, write } => {
                        gsi.provisioned_throughput(throughput(*read, *write)?)
                    }
                    Change::OnDemandMaximum { read, write } => {
                        gsi.on_demand_throughput(on_demand(*read, *write))
                    }
                    Change::SwitchToOnDemand => gsi,
                };
                let gsi = gsi
                    .build()
                    .map_err(|err| invalid_plan(target, &err.to_string()))?;
                update.global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().update(gsi).build(),
                )
            }
        };
        update.send().await.map(|_| ()).map_err(|err| {
            AwsError::from_sdk(
                "dynamodb:UpdateTable",
                &format!("table {}", target.table),
                &err,
            )
        })
    }

    /// Describes the table until `accept` says the observed state is final, or the deadline.
    async fn watch(
        &self,
        target: &CapacityTarget,
        deadline: Deadline,
        accept: impl Fn(&Observed) -> bool,
    ) -> Result<Option<Observed>, AwsError> {
        let last = std::cell::RefCell::new(None);
        let outcome = poll_until(deadline, self.poll_interval, || {
            let (last, accept) = (&last, &accept);
            async move {
                match self.describe(&target.table).await {
                    Err(err) => Some(Err(err)),
                    Ok(table) => match Observed::from_table(&table, target.index.as_deref()) {
                        Err(message) => Some(Err(invalid_plan(target, &message))),
                        Ok(observed) if accept(&observed) => Some(Ok(observed)),
                        Ok(observed) => {
                            last.replace(Some(observed));
                            None
                        }
                    },
                }
            }
        })
        .await;
        match outcome {
            Some(result) => result.map(Some),
            None => Ok(last.into_inner()),
        }
    }

    /// The table or index as it is now: `Err` is the finished report.
    async fn diagnose(
        &self,
        target: &CapacityTarget,
        report: Report,
    ) -> Result<(Observed, Report), Report> {
        let table = match self.describe(&target.table).await {
            Ok(table) => table,
            Err(err) if err.is(FaultKind::NotFound) => {
                return Err(report.finish(Outcome::Failed, format!(
                        "table {} does not exist (or is not visible to this function) in this region; nothing was changed; check the alarm's TableName dimension or the payload",
                        target.table
                    ),
                ));
            }
            Err(err) => {
                return Err(report.finish(
                    Outcome::Failed,
                    format!(
                        "could not diagnose {}, nothing was changed: {err}",
                        target.name()
                    ),
                ));
            }
        };
        match Observed::from_table(&table, target.index.as_deref()) {
            Ok(observed) => Ok((observed, report)),
            Err(message) => {
                Err(report.finish(Outcome::Failed, format!("{message}; nothing was changed")))
            }
        }
    }

    /// Runs the runbook for an ALARM transition or a manual request.
    pub async fn raise_capacity(&self, target: CapacityTarget, run: RunContext<'_>) -> Report {
        let RunContext {
            mut report,
            alarm_name,
            invocation,
        } = run;
        let resource = target.resource(&self.config.safety.home);
        report.runbook = Some(RUNBOOK.into());
        report.target = Some(resource.name());
        report.resource = Some(resource.key());
        tracing::Span::current().record("target", resource.name());
        let report = match self.diagnose(&target, report).await {
            Ok((_, report)) => report,
            Err(finished) => return finished,
        };
        match self.table_managed(&target.table).await {
            Ok(true) => {}
            Ok(false) => {
                let reason = self.config.safety.managed.refusal("table", &target.table);
                return report.finish(Outcome::Skipped, reason);
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!(
                        "could not check that table {} is managed, nothing was changed: {err}",
                        target.table
                    ),
                );
            }
        }
        self.safety
            .guarded(
                &resource,
                report,
                invocation,
                |_| true,
                |report| self.raise_admitted(&target, &resource, alarm_name, invocation, report),
            )
            .await
    }

    /// Under the lease: diagnose afresh (another run may have changed the table while this one
    /// waited), plan, act, verify.
    async fn raise_admitted(
        &self,
        target: &CapacityTarget,
        resource: &ResourceId,
        alarm_name: Option<&str>,
        invocation: &Invocation,
        report: Report,
    ) -> Report {
        let name = target.name();
        let (observed, mut report) = match self.diagnose(target, report).await {
            Ok(diagnosed) => diagnosed,
            Err(finished) => return finished,
        };
        let observed = &observed;
        let (peaks, metrics_error) = match self
            .consumed_peaks(target, self.config.metric_lookback_minutes)
            .await
        {
            Ok(peaks) => (peaks, None),
            // Without metrics the factor alone still gives a safe plan; the report says so.
            Err(err) => (ConsumedPeaks::default(), Some(err.to_string())),
        };
        report.diagnosis = Some(json!({
            "observed": observed,
            "consumed_peak": peaks,
            "lookback_minutes": self.config.metric_lookback_minutes,
            "metrics_error": metrics_error,
        }));

        // Lambda's retry of this request after a crash: its first attempt's write landed.
        let landed = invocation
            .landed(
                resource,
                &serde_json::to_value(observed).unwrap_or_default(),
            )
            .and_then(|action| Some((Change::from_state(&action.after)?, action)));
        if let Some((change, mut action)) = landed {
            action.applied = true;
            report.notes.push(runbook_shared::safety::RESUMED.into());
            let from = state_text(&action.before);
            report.actions.push(action);
            return self
                .verify_raise(
                    target,
                    resource,
                    change,
                    from,
                    String::new(),
                    alarm_name,
                    invocation,
                    report,
                )
                .await;
        }
        let Plan { change, kept } = match decide(target, observed, &peaks, &self.config) {
            Decision::Act(plan) => plan,
            Decision::NoAction(reason) => return report.finish(Outcome::NoAction, reason),
            Decision::Skip(reason) => return report.finish(Outcome::Skipped, reason),
        };
        let (action_target, before, after) = action_states(target, observed, &change);
        let mut action = Action {
            api: "dynamodb:UpdateTable".into(),
            target: action_target,
            before,
            after,
            applied: false,
            error: None,
        };
        match self.safety.spend_budget(&report).await {
            Ok(Ok(())) => {}
            Ok(Err(skip)) => {
                report.actions.push(action);
                return report.finish(Outcome::Skipped, skip.0);
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not check the action budget, nothing was changed: {err}"),
                );
            }
        }
        let kept = kept_text(&kept);
        if report.dry_run {
            report.actions.push(action);
            let reason = format!(
                "dry run: would change {name} from {} to {}{kept}",
                observed_text(observed),
                expected_text(&change)
            );
            return report.finish(Outcome::Planned, reason);
        }

        // Act, once what is about to be written is on the lease.
        if let Err(err) = self
            .safety
            .record_intent(resource, invocation, &action)
            .await
        {
            return report.finish(
                Outcome::Failed,
                format!(
                    "could not record the change about to be made, so nothing was changed: {err}"
                ),
            );
        }
        if let Err(err) = self
            .apply_waiting_if_busy(target, observed, &change, invocation.wait_deadline())
            .await
        {
            let reason = match err.kind {
                FaultKind::NotFound => format!(
                    "table {} disappeared before it could be updated; nothing was changed: {err}",
                    target.table
                ),
                FaultKind::LimitExceeded => format!(
                    "DynamoDB refused the update of {name} (limit exceeded: too many capacity changes or concurrent table updates); nothing was changed: {err}"
                ),
                FaultKind::Invalid => format!(
                    "DynamoDB rejected the update of {name} as invalid; nothing was changed: {err}"
                ),
                _ => format!("the update of {name} failed; nothing was changed: {err}"),
            };
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(Outcome::Failed, reason);
        }
        action.applied = true;
        report.actions.push(action);
        let from = observed_text(observed);
        self.verify_raise(
            target, resource, change, from, kept, alarm_name, invocation, report,
        )
        .await
    }

    /// Verifies an applied raise (the resource now; the metric check stays open until the alarm
    /// is OK again) and records a provisioned one for the scale-down, with the baseline from
    /// the action's `before`.
    #[allow(clippy::too_many_arguments)]
    async fn verify_raise(
        &self,
        target: &CapacityTarget,
        resource: &ResourceId,
        change: Change,
        from: String,
        kept: String,
        alarm_name: Option<&str>,
        invocation: &Invocation,
        mut report: Report,
    ) -> Report {
        let name = target.name();
        report.verification = self
            .verify(target, &change, alarm_name, invocation.wait_deadline())
            .await;
        let failures = report.verification.failures();
        let (outcome, reason) = match report.verification.status {
            VerificationStatus::Failed => (
                Outcome::Failed,
                format!(
                    "changed {name} to {}, but the verification failed ({})",
                    expected_text(&change),
                    failures
                ),
            ),
            _ => (
                Outcome::Remediated,
                format!(
                    "raised {name} from {from} to {}{kept}",
                    expected_text(&change)
                ),
            ),
        };
        let before = report
            .actions
            .last()
            .map(|action| action.before.clone())
            .unwrap_or_default();
        let mut report = report.finish(outcome, reason);
        // Provisioned raises are stepped back down by the schedule once the load is gone.
        if let (Change::Provisioned { read, write }, true) =
            (&change, outcome == Outcome::Remediated)
        {
            let original = json!({"read": before["read"], "write": before["write"]});
            if let Err(err) = self
                .safety
                .audit
                .put_raise(
                    RUNBOOK,
                    &resource.key(),
                    &original,
                    &json!({"read": read, "write": write}),
                    None,
                )
                .await
            {
                report.reason = format!(
                    "{} (not recorded for the scale-down: {err}; scale it down by hand)",
                    report.reason
                );
            }
        }
        report
    }

    /// The schedule's step for a raise in force: when consumption stayed under
    /// SCALE_DOWN_UTILIZATION of the raised capacity for SCALE_DOWN_AFTER_HOURS, step back
    /// toward the recorded baseline (never below it).
    pub(crate) async fn scale_down(
        &self,
        raise: &runbook_shared::audit::Raise,
        resource: &ResourceId,
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let (table, index) = match &resource.resource {
            Resource::Table { table } => (table.clone(), None),
            Resource::Index { table, index } => (table.clone(), Some(index.clone())),
            _ => {
                return report.finish(
                    Outcome::Failed,
                    format!("the raise record {} names no table", raise.resource),
                );
            }
        };
        let name = resource.name();
        let target = CapacityTarget {
            table,
            index,
            read: Side::Keep,
            write: Side::Keep,
            factor: self.config.scale_factor,
            switch_to_on_demand: false,
        };
        let number = |value: &serde_json::Value, side: &str| value[side].as_i64();
        let (Some(base_read), Some(base_write), Some(our_read), Some(our_write)) = (
            number(&raise.original, "read"),
            number(&raise.original, "write"),
            number(&raise.current, "read"),
            number(&raise.current, "write"),
        ) else {
            return report.finish(
                Outcome::Failed,
                format!("the raise record of {name} is unreadable"),
            );
        };
        let observed = match self
            .describe(&target.table)
            .await
            .map(|table| Observed::from_table(&table, target.index.as_deref()))
        {
            Ok(Ok(observed)) => observed,
            Ok(Err(message)) => return report.finish(Outcome::Failed, message),
            Err(err) if err.is(FaultKind::NotFound) => {
                let reason = format!("table {} no longer exists", target.table);
                return self.stop_tracking(RUNBOOK, raise, report, reason).await;
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not describe {}: {err}", name),
                );
            }
        };
        // Lambda's retry of this request after a crash: its first attempt's step down landed.
        if let Some(mut action) = invocation.landed(
            resource,
            &serde_json::to_value(&observed).unwrap_or_default(),
        ) && let Some(change @ Change::Provisioned { read, write }) =
            Change::from_state(&action.after)
        {
            action.applied = true;
            report.notes.push(runbook_shared::safety::RESUMED.into());
            report.actions.push(action);
            let summary = format!(
                "scaled {name} down from read {our_read}, write {our_write} to read {read}, write {write} (baseline read {base_read}, write {base_write})"
            );
            return self
                .after_scale_down(
                    &target,
                    raise,
                    change,
                    (base_read, base_write),
                    summary,
                    invocation,
                    report,
                )
                .await;
        }
        if observed.billing_mode != Billing::Provisioned
            || observed.read != our_read
            || observed.write != our_write
        {
            let reason = format!(
                "{name} was changed by someone else since it was raised to read {our_read}, write {our_write} (now {}): left as it is",
                observed_text(&observed)
            );
            return self.stop_tracking(RUNBOOK, raise, report, reason).await;
        }
        let window_minutes = (self.config.scale_down_after_hours * 60.0).ceil().max(1.0) as i64;
        let peaks = match self.consumed_peaks(&target, window_minutes).await {
            Ok(peaks) => peaks,
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read the consumed capacity of {}: {err}", name),
                );
            }
        };
        let utilization = self.config.scale_down_utilization;
        let (read, write) = (
            step_down(our_read, base_read, peaks.read_per_second, &self.config),
            step_down(our_write, base_write, peaks.write_per_second, &self.config),
        );
        report.diagnosis = Some(
            json!({"observed": observed, "baseline": raise.original, "consumed_peak": peaks, "window_minutes": window_minutes}),
        );
        if read == our_read && write == our_write {
            return report.finish(Outcome::NoAction,
                format!(
                    "{} still uses at least {:.0}% of its raised capacity (or is at its baseline): kept",
                    name,
                    utilization * 100.0
                ),
            );
        }
        let change = Change::Provisioned { read, write };
        let mut action = Action {
            api: "dynamodb:UpdateTable".into(),
            target: name.clone(),
            before: json!({"billing_mode": "PROVISIONED", "read": our_read, "write": our_write}),
            after: json!({"billing_mode": "PROVISIONED", "read": read, "write": write}),
            applied: false,
            error: None,
        };
        let summary = format!(
            "scaled {} down from read {our_read}, write {our_write} to read {read}, write {write} (baseline read {base_read}, write {base_write})",
            name
        );
        if report.dry_run {
            report.actions.push(action);
            return report.finish(Outcome::Planned, format!("dry run: would have {summary}"));
        }
        if let Err(err) = self
            .safety
            .record_intent(resource, invocation, &action)
            .await
        {
            return report.finish(
                Outcome::Failed,
                format!(
                    "could not record the change about to be made, so nothing was changed: {err}"
                ),
            );
        }
        if let Err(err) = self.apply(&target, &change).await {
            action.error = Some(err.to_string());
            report.actions.push(action);
            let reason = if err.is(FaultKind::LimitExceeded) {
                format!(
                    "DynamoDB's quota of capacity decreases for {} is used up for now: the next schedule tries again ({err})",
                    name
                )
            } else {
                format!(
                    "could not scale {} down: {err}; the next schedule tries again",
                    name
                )
            };
            return report.finish(Outcome::Failed, reason);
        }
        action.applied = true;
        report.actions.push(action);
        self.after_scale_down(
            &target,
            raise,
            change,
            (base_read, base_write),
            summary,
            invocation,
            report,
        )
        .await
    }

    /// After a step down: waits for the table to show it (leaving time for the writes after),
    /// then moves the raise record to the new value, or ends it at the baseline.
    #[allow(clippy::too_many_arguments)]
    async fn after_scale_down(
        &self,
        target: &CapacityTarget,
        raise: &runbook_shared::audit::Raise,
        change: Change,
        (base_read, base_write): (i64, i64),
        summary: String,
        invocation: &Invocation,
        mut report: Report,
    ) -> Report {
        let Change::Provisioned { read, write } = change else {
            return report.finish(
                Outcome::Failed,
                format!("{summary}: not a provisioned step"),
            );
        };
        let settled = self
            .watch(target, invocation.wait_deadline(), |o| {
                o.active() && in_force(o, &change)
            })
            .await;
        let (ok, seen) = match settled {
            Ok(Some(now)) => (now.active() && in_force(&now, &change), observed_text(&now)),
            Ok(None) => (false, "not described before the deadline".into()),
            Err(err) => (false, format!("DescribeTable failed: {err}")),
        };
        report.verification =
            Verification::settled(Check::new("capacity", ok, expected_text(&change), seen));
        let recorded = if read == base_read && write == base_write {
            self.safety.audit.end_raise(RUNBOOK, &raise.resource).await
        } else {
            let original = json!({"read": base_read, "write": base_write});
            self.safety
                .audit
                .put_raise(
                    RUNBOOK,
                    &raise.resource,
                    &original,
                    &json!({"read": read, "write": write}),
                    None,
                )
                .await
        };
        let failures = report.verification.failures();
        match recorded {
            Err(err) => report.finish(
                Outcome::Failed,
                format!("{summary}, but the raise record could not be updated: {err}"),
            ),
            Ok(()) if ok => report.finish(Outcome::Remediated, summary),
            Ok(()) => report.finish(
                Outcome::Failed,
                format!(
                    "{summary}, but DescribeTable does not show it ({})",
                    failures
                ),
            ),
        }
    }

    /// UpdateTable; if the table is busy with another update, waits for it (within the
    /// deadline) and tries once more only if the capacity is still what was diagnosed.
    async fn apply_waiting_if_busy(
        &self,
        target: &CapacityTarget,
        observed: &Observed,
        change: &Change,
        deadline: Deadline,
    ) -> Result<(), AwsError> {
        match self.apply(target, change).await {
            Err(err) if err.is(FaultKind::InUse) => {
                let settled = self.watch(target, deadline, Observed::active).await?;
                match settled {
                    Some(now)
                        if now.active()
                            && now.billing_mode == observed.billing_mode
                            && now.read == observed.read
                            && now.write == observed.write
                            && now.max_read_request_units == observed.max_read_request_units
                            && now.max_write_request_units == observed.max_write_request_units =>
                    {
                        self.apply(target, change).await
                    }
                    Some(now) if now.active() => Err(AwsError {
                        kind: FaultKind::InUse,
                        message: format!(
                            "the table changed while another update ran (diagnosed {}, now {}); run again to plan from the new state",
                            observed_text(observed),
                            observed_text(&now)
                        ),
                        ..err
                    }),
                    _ => Err(AwsError {
                        message: format!(
                            "{} and it was still updating at the deadline",
                            err.message
                        ),
                        ..err
                    }),
                }
            }
            other => other,
        }
    }

    async fn verify(
        &self,
        target: &CapacityTarget,
        change: &Change,
        alarm_name: Option<&str>,
        deadline: Deadline,
    ) -> Verification {
        let settled = self
            .watch(target, deadline, |observed| {
                observed.active() && in_force(observed, change)
            })
            .await;
        let mut checks = Vec::new();
        let status = match settled {
            Err(err) => {
                checks.push(Check::new(
                    "table_state",
                    false,
                    expected_text(change),
                    format!("DescribeTable failed: {err}"),
                ));
                VerificationStatus::Failed
            }
            Ok(None) => {
                checks.push(Check::new(
                    "table_state",
                    false,
                    expected_text(change),
                    "not described before the deadline",
                ));
                VerificationStatus::Pending
            }
            Ok(Some(observed)) => {
                let active = observed.active();
                let applied = in_force(&observed, change);
                checks.push(Check::new(
                    "status",
                    active,
                    "ACTIVE",
                    observed.status_text(),
                ));
                checks.push(Check::new(
                    "capacity",
                    applied,
                    expected_text(change),
                    observed_text(&observed),
                ));
                if active && !applied {
                    // ACTIVE at other numbers: someone else changed it, or the change did not hold.
                    VerificationStatus::Failed
                } else {
                    // Verified at resource level (or still updating at the deadline); the
                    // metric-level check below is open either way.
                    VerificationStatus::Pending
                }
            }
        };
        let mut settle_by = None;
        if status != VerificationStatus::Failed {
            let expected = match alarm_name {
                Some(alarm) => format!("alarm {alarm} back to OK"),
                None => format!("no throttle events on {}", target.name()),
            };
            checks.push(Check::new("throttling_stopped", false, expected, "pending"));
            settle_by = Some(match alarm_name {
                Some(alarm) => SettleBy::Alarm {
                    name: alarm.to_string(),
                },
                None => {
                    let mut dimensions = std::collections::BTreeMap::from([(
                        "TableName".to_string(),
                        target.table.clone(),
                    )]);
                    if let Some(index) = &target.index {
                        dimensions.insert("GlobalSecondaryIndexName".into(), index.clone());
                    }
                    SettleBy::Metric {
                        namespace: NAMESPACE.into(),
                        metrics: vec!["ReadThrottleEvents".into(), "WriteThrottleEvents".into()],
                        dimensions,
                        max_sum: 0.0,
                    }
                }
            });
        }
        Verification {
            status,
            checks,
            settle_by,
        }
    }
}

fn invalid_plan(target: &CapacityTarget, message: &str) -> AwsError {
    AwsError::invalid(
        "dynamodb:UpdateTable",
        &format!("table {}", target.table),
        message,
    )
}
