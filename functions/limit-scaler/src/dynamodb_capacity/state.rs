//! What `dynamodb-capacity` knows of a table or index: its capacity as DescribeTable shows it,
//! the consumed peaks, the Auto Scaling ranges of its sides, and the change a plan makes.

use aws_sdk_dynamodb::types::{BillingMode, TableDescription};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub(super) fn from_table(
        table: &TableDescription,
        index: Option<&str>,
    ) -> Result<Self, String> {
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

    pub(super) fn active(&self) -> bool {
        self.table_status == "ACTIVE"
            && self
                .index_status
                .as_deref()
                .is_none_or(|status| status == "ACTIVE")
    }

    pub(super) fn status_text(&self) -> String {
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

/// A scalable target's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub min: i64,
    pub max: i64,
}

/// The ranges of the read and write capacity of a table or index; a side without one is not
/// registered with Application Auto Scaling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Range>,
}

/// Read or write capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    Read,
    Write,
}

impl Capacity {
    pub(super) const BOTH: [Self; 2] = [Self::Read, Self::Write];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.read.is_none() && self.write.is_none()
    }

    pub fn get(&self, side: Capacity) -> Option<Range> {
        match side {
            Capacity::Read => self.read,
            Capacity::Write => self.write,
        }
    }

    pub fn set(&mut self, side: Capacity, range: Option<Range>) {
        match side {
            Capacity::Read => self.read = range,
            Capacity::Write => self.write = range,
        }
    }

    /// The ranges a state records under `auto_scaling` (none in records made before it was).
    pub fn of(state: &Value) -> Option<Self> {
        match state.get("auto_scaling") {
            None | Some(Value::Null) => Some(Self::default()),
            Some(ranges) => serde_json::from_value(ranges.clone()).ok(),
        }
    }

    /// The ranges after raising the registered sides' capacity to `to` from `from`: a minimum
    /// rises to the new capacity (never lower), and the maximum with it when exceeded.
    pub fn raised(&self, from: (i64, i64), to: (i64, i64)) -> Self {
        let mut after = *self;
        for (side, from, to) in [
            (Capacity::Read, from.0, to.0),
            (Capacity::Write, from.1, to.1),
        ] {
            if let Some(range) = self.get(side).filter(|_| to > from) {
                let min = range.min.max(to);
                after.set(
                    side,
                    Some(Range {
                        min,
                        max: range.max.max(min),
                    }),
                );
            }
        }
        after
    }

    /// `read min 5, max 40; write min 5, max 40`.
    pub fn text(&self) -> String {
        let sides: Vec<String> = Capacity::BOTH
            .into_iter()
            .filter_map(|side| {
                self.get(side)
                    .map(|range| format!("{} min {}, max {}", side.label(), range.min, range.max))
            })
            .collect();
        if sides.is_empty() {
            "none".into()
        } else {
            sides.join("; ")
        }
    }
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

impl Change {
    /// The change whose result is `after` (an action's `after`, as `after_state` makes it).
    pub(super) fn from_state(after: &Value) -> Option<Self> {
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

pub(super) fn observed_text(observed: &Observed) -> String {
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
