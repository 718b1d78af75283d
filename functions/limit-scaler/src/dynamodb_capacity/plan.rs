//! How `dynamodb-capacity` plans: a raise from what DescribeTable and CloudWatch showed, and the
//! steps back down; pure, so dry runs, unit tests and property tests see the same plans.

use runbook_shared::model::Decision;
use serde_json::{Value, json};

use super::auto_scaling::Scaling;
use super::state::{Billing, Capacity, Change, ConsumedPeaks, Observed};
use super::target::{CapacityTarget, Side};
use crate::config::ScalerConfig;

/// A change, and the sides a raise kept as they were (each with why).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub change: Change,
    pub kept: Vec<String>,
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
// Over 80 lines: the plan for both sides, provisioned and on-demand, with the caps applied to each;
// pure, and tested as one function.
pub fn plan(
    target: &CapacityTarget,
    observed: &Observed,
    peaks: &ConsumedPeaks,
    config: &ScalerConfig,
) -> Decision<Plan> {
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

/// The state a change starts from, as its action's `before`.
pub(super) fn before_state(observed: &Observed, change: &Change) -> Value {
    match change {
        Change::OnDemandMaximum { .. } => json!({
            "billing_mode": "PAY_PER_REQUEST",
            "max_read_request_units": observed.max_read_request_units,
            "max_write_request_units": observed.max_write_request_units,
        }),
        Change::Provisioned { .. } | Change::SwitchToOnDemand => {
            json!({"billing_mode": "PROVISIONED", "read": observed.read, "write": observed.write})
        }
    }
}

/// What the change writes on (a switch of billing mode is the table's, whatever index
/// throttled) and the state it leaves, as its action's target and `after`.
pub(super) fn after_state(target: &CapacityTarget, change: &Change) -> (String, Value) {
    match change {
        Change::Provisioned { read, write } => (
            target.name(),
            json!({"billing_mode": "PROVISIONED", "read": read, "write": write}),
        ),
        Change::OnDemandMaximum { read, write } => (
            target.name(),
            json!({"billing_mode": "PAY_PER_REQUEST", "max_read_request_units": read, "max_write_request_units": write}),
        ),
        Change::SwitchToOnDemand => (
            target.table.clone(),
            json!({"billing_mode": "PAY_PER_REQUEST"}),
        ),
    }
}

/// A state as `before_state` and `after_state` make it, as text.
pub(super) fn state_text(state: &Value) -> String {
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

/// Whether DescribeTable shows the change in force (a side raised through Auto Scaling at
/// least at its new minimum).
pub(super) fn in_force(observed: &Observed, change: &Change, scaling: Option<&Scaling>) -> bool {
    match change {
        Change::Provisioned { read, write } => {
            observed.billing_mode == Billing::Provisioned
                && match scaling {
                    Some(scaling) => {
                        scaling.in_force(Capacity::Read, observed.read, *read)
                            && scaling.in_force(Capacity::Write, observed.write, *write)
                    }
                    None => observed.read == *read && observed.write == *write,
                }
        }
        Change::OnDemandMaximum { read, write } => {
            observed.max_read_request_units == *read && observed.max_write_request_units == *write
        }
        Change::SwitchToOnDemand => observed.billing_mode == Billing::PayPerRequest,
    }
}

pub(super) fn expected_text(change: &Change, scaling: Option<&Scaling>) -> String {
    if let (Change::Provisioned { read, write }, Some(scaling)) = (change, scaling) {
        let side = |side: Capacity, planned: i64| match scaling.after.get(side) {
            Some(range) => format!("at least {}", range.min),
            None if scaling.table_too => planned.to_string(),
            None => "unchanged".into(),
        };
        return format!(
            "PROVISIONED read {}, write {}",
            side(Capacity::Read, *read),
            side(Capacity::Write, *write)
        );
    }
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
