//! Runbook `dynamodb-capacity`: a DynamoDB table or global secondary index is throttling.
//!
//! Diagnose (DescribeTable, DescribeScalableTargets, consumed capacity from CloudWatch) → plan
//! (raise the throttled side within the caps, or switch to on-demand at the cap when allowed) →
//! act (UpdateTable; a side registered with Application Auto Scaling through its range
//! instead, `auto_scaling`) → verify (DescribeTable until ACTIVE at the new numbers, and the
//! ranges; the throttle alarm's OK transition closes the metric-level check). The schedule steps
//! a provisioned raise back down (`scale_down`).

mod auto_scaling;
mod plan;
mod scale_down;
mod state;
mod table;
mod target;

use runbook_shared::aws::FaultKind;
use runbook_shared::model::{Action, AwaitedMetric, Check, Outcome, Report, Verification};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde_json::{Value, json};

use crate::Scaler;

pub use auto_scaling::Scaling;
pub use plan::{Plan, kept_text, plan, step_down};
pub use scale_down::ScaleDown;
pub use state::{Billing, Change, ConsumedPeaks, Observed, Range, Ranges};
pub use target::{CapacityTarget, Request, Side};

use plan::{after_state, before_state, expected_text, in_force, state_text};
use state::observed_text;

pub const RUNBOOK: &str = "dynamodb-capacity";
pub const NAMESPACE: &str = "AWS/DynamoDB";
pub const THROTTLE_METRICS: [&str; 3] = [
    "ReadThrottleEvents",
    "WriteThrottleEvents",
    "ThrottledRequests",
];

/// What the raise reads: the table or index, its Auto Scaling ranges, and its consumed peaks.
pub struct Diagnosis {
    observed: Observed,
    ranges: Ranges,
    peaks: ConsumedPeaks,
}

/// The raise: the state it starts from (as the action's `before`), the change, the sides kept
/// as they were, and the part made through Auto Scaling.
pub struct Raise {
    before: Value,
    change: Change,
    kept: Vec<String>,
    scaling: Option<Scaling>,
}

impl Runbook<Scaler> for CapacityTarget {
    const ID: &'static str = RUNBOOK;
    const STACK_PROPERTIES: &'static [&'static str] =
        &["ProvisionedThroughput", "OnDemandThroughput"];
    type Diagnosis = Diagnosis;
    type Change = Raise;

    fn resource(&self, home: &Home) -> ResourceId {
        self.resource(home)
    }

    fn evidence_subject(&self) -> Option<runbook_shared::model::Subject> {
        Some(runbook_shared::model::Subject::Table {
            table: self.table.clone(),
            index: self.index.clone(),
        })
    }

    /// A table that does not exist is reported as such before anything else.
    async fn managed(&self, ctx: &RunContext<'_, Scaler>) -> Step<()> {
        ctx.observe(self).await?;
        let safety = &ctx.config.safety;
        runbook_shared::guards::require_table(
            &safety.managed,
            &ctx.clients.dynamodb,
            &safety.home,
            &self.table,
        )
        .await
    }

    /// Afresh under the lease: another run may have changed the table while this one waited.
    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let observed = ctx.observe(self).await?;
        // A provisioned side registered with Auto Scaling is raised through its range: not
        // knowing whether it is would risk a raise that Auto Scaling undoes.
        let ranges = if observed.billing_mode == Billing::Provisioned {
            ctx.scalable_ranges(self).await.map_err(|err| {
                Ending::failed(format!(
                    "could not tell whether {} is under Application Auto Scaling, so nothing was changed: {err}",
                    self.name()
                ))
            })?
        } else {
            Ranges::default()
        };
        let lookback = ctx.config.metric_lookback_minutes;
        let (peaks, metrics_error) = match ctx.consumed_peaks(self, lookback).await {
            Ok(peaks) => (peaks, None),
            // Without metrics the factor alone still gives a safe plan; the report says so.
            Err(err) => (ConsumedPeaks::default(), Some(err.to_string())),
        };
        report.diagnosis = Some(json!({
            "observed": observed,
            "auto_scaling": (!ranges.is_empty()).then_some(ranges),
            "consumed_peak": peaks,
            "lookback_minutes": lookback,
            "metrics_error": metrics_error,
        }));
        Ok(Diagnosis {
            observed,
            ranges,
            peaks,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, diagnosis: &Diagnosis) -> Decision<Raise> {
        let observed = &diagnosis.observed;
        plan(self, observed, &diagnosis.peaks, &ctx.config).map(|plan| {
            let scaling = match plan.change {
                Change::Provisioned { read, write } => Scaling::of(
                    &diagnosis.ranges,
                    (observed.read, observed.write),
                    (read, write),
                ),
                _ => None,
            };
            let mut before = before_state(observed, &plan.change);
            if let Some(scaling) = &scaling {
                before["auto_scaling"] = json!(scaling.before);
            }
            Raise {
                before,
                change: plan.change,
                kept: plan.kept,
                scaling,
            }
        })
    }

    /// UpdateTable; with Auto Scaling, RegisterScalableTarget first (the intent, so its `after`
    /// holds only the ranges, which a retry can compare), then UpdateTable for a side that is
    /// not registered.
    fn describe(&self, _: &RunContext<'_, Scaler>, raise: &Raise) -> Planned {
        let (target, after) = after_state(self, &raise.change);
        let mut summary = format!(
            "raised {} from {} to {}",
            self.name(),
            state_text(&raise.before),
            expected_text(&raise.change, raise.scaling.as_ref()),
        );
        let Some(scaling) = &raise.scaling else {
            summary.push_str(&kept_text(&raise.kept));
            return Planned::one(
                "dynamodb:UpdateTable",
                &target,
                raise.before.clone(),
                after,
                summary,
            );
        };
        summary.push_str(&format!(
            " through its Application Auto Scaling range ({} → {}){}",
            scaling.before.text(),
            scaling.after.text(),
            kept_text(&raise.kept)
        ));
        let mut planned = Planned::one(
            auto_scaling::REGISTER,
            &auto_scaling::resource_id(self),
            raise.before.clone(),
            json!({"auto_scaling": scaling.after}),
            summary,
        );
        if scaling.table_too {
            let mut table_before = raise.before.clone();
            if let Some(before) = table_before.as_object_mut() {
                before.remove("auto_scaling");
            }
            planned.actions.extend(
                Planned::one(
                    "dynamodb:UpdateTable",
                    &target,
                    table_before,
                    after,
                    String::new(),
                )
                .actions,
            );
        }
        planned
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        scale_down::state_of(&diagnosis.observed, &diagnosis.ranges)
    }

    /// A recorded registration is resumed with its ranges; an UpdateTable that may have followed
    /// it is not known from the intent, so its side is not checked (a scale-down that finds it
    /// changed stops tracking it).
    fn resumed(&self, action: &Action) -> Option<Raise> {
        if action.api == auto_scaling::REGISTER {
            let (before, after) = (Ranges::of(&action.before)?, Ranges::of(&action.after)?);
            let side = |range: Option<Range>, key: &str| {
                range.map(|range| range.min).or(action.before[key].as_i64())
            };
            return Some(Raise {
                before: action.before.clone(),
                change: Change::Provisioned {
                    read: side(after.read, "read")?,
                    write: side(after.write, "write")?,
                },
                kept: Vec::new(),
                scaling: Some(Scaling {
                    before,
                    after,
                    table_too: false,
                }),
            });
        }
        Some(Raise {
            before: action.before.clone(),
            change: Change::from_state(&action.after)?,
            kept: Vec::new(),
            scaling: None,
        })
    }

    /// The Auto Scaling ranges first, then UpdateTable (waiting for an update already running
    /// to finish), all or nothing: a failed UpdateTable puts the ranges back.
    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &Diagnosis,
        raise: Raise,
    ) -> Result<Raise, NotApplied> {
        let name = self.name();
        let deadline = ctx.invocation.wait_deadline();
        let (from, to) = raise
            .scaling
            .as_ref()
            .map(|scaling| (scaling.before, scaling.after))
            .unwrap_or_default();
        let table = raise
            .scaling
            .as_ref()
            .is_none_or(|scaling| scaling.table_too)
            .then_some(&raise.change);
        match ctx
            .apply_in_order(self, &diagnosis.observed, (&from, &to), table, deadline)
            .await
        {
            Ok(()) => Ok(raise),
            Err((err, Some(left))) => Err(NotApplied::explained(&err, format!("{err}; {left}"))),
            Err((err, None)) => {
                let reason = match err.kind {
                    _ if err.api == auto_scaling::REGISTER => format!(
                        "Application Auto Scaling refused the new range of {name}; nothing was changed: {err}"
                    ),
                    FaultKind::NotFound => format!(
                        "table {} disappeared before it could be updated; nothing was changed: {err}",
                        self.table
                    ),
                    FaultKind::LimitExceeded => format!(
                        "DynamoDB refused the update of {name} (limit exceeded: too many capacity changes or concurrent table updates); nothing was changed: {err}"
                    ),
                    FaultKind::Invalid => format!(
                        "DynamoDB rejected the update of {name} as invalid; nothing was changed: {err}"
                    ),
                    _ => format!("the update of {name} failed; nothing was changed: {err}"),
                };
                // The range was raised and put back: Auto Scaling may have begun moving the
                // capacity meanwhile.
                let reason = if err.api != auto_scaling::REGISTER && from != to {
                    format!(
                        "{reason}; its Auto Scaling range was raised and put back to {} (Auto Scaling may already have moved the capacity up: its own policy scales it back in)",
                        from.text()
                    )
                } else {
                    reason
                };
                Err(NotApplied::explained(&err, reason))
            }
        }
    }

    /// The table now (the metric check stays open until the alarm is OK again); a provisioned
    /// raise is recorded for the scale-down, with the state it started from as the baseline.
    // Over 80 lines: the table's states after a raise (ACTIVE as planned, ACTIVE otherwise, still
    // updating, a range that did not hold) each settle the check differently.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        raise: Raise,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let change = &raise.change;
        let scaling = raise.scaling.as_ref();
        let settled = ctx
            .watch(self, ctx.invocation.wait_deadline(), |observed| {
                observed.active() && in_force(observed, change, scaling)
            })
            .await;
        let expected = expected_text(change, scaling);
        let (checks, settled) = match settled {
            Err(err) => (
                vec![Check::new(
                    "table_state",
                    false,
                    expected,
                    format!("DescribeTable failed: {err}"),
                )],
                true,
            ),
            Ok(None) => (
                vec![Check::new(
                    "table_state",
                    false,
                    expected,
                    "not described before the deadline",
                )],
                false,
            ),
            // ACTIVE at other numbers: someone else changed it, or the change did not hold.
            // Still updating at the deadline: the sweep or the alarm decides.
            Ok(Some(observed)) => (
                vec![
                    Check::new(
                        "status",
                        observed.active(),
                        "ACTIVE",
                        observed.status_text(),
                    ),
                    Check::new(
                        "capacity",
                        in_force(&observed, change, scaling),
                        expected,
                        observed_text(&observed),
                    ),
                ],
                observed.active(),
            ),
        };
        let (mut checks, mut settled) = (checks, settled);
        if let Some(scaling) = scaling {
            let range = ctx.range_check(self, &scaling.after).await;
            // A range that did not hold fails at once, whatever the table shows yet.
            settled |= !range.ok;
            checks.push(range);
        }
        report.verification =
            Verification::awaiting(checks, settled, ctx.alarm_name(), self.throttles());
        let ending = concluded(&report.verification, summary);
        match (&raise.change, ending.outcome) {
            (Change::Provisioned { read, write }, Outcome::Remediated) => {
                let mut original =
                    json!({"read": raise.before["read"], "write": raise.before["write"]});
                let mut current = json!({"read": read, "write": write});
                if let Some(scaling) = scaling {
                    original["auto_scaling"] = json!(scaling.before);
                    current["auto_scaling"] = json!(scaling.after);
                }
                let key = self.resource(&ctx.config.safety.home).key();
                match ctx
                    .safety
                    .audit
                    .put_raise(RUNBOOK, &key, &original, &current, None, ctx.alarm_name())
                    .await
                {
                    Ok(()) => ending,
                    Err(err) => Ending::remediated(format!(
                        "{} (not recorded for the scale-down: {err}; scale it down by hand)",
                        ending.reason
                    )),
                }
            }
            _ => ending,
        }
    }
}

impl CapacityTarget {
    /// The metric-level check of a run without an alarm: no throttle events on the table or index.
    fn throttles(&self) -> AwaitedMetric {
        let mut dimensions =
            std::collections::BTreeMap::from([("TableName".to_string(), self.table.clone())]);
        if let Some(index) = &self.index {
            dimensions.insert("GlobalSecondaryIndexName".into(), index.clone());
        }
        AwaitedMetric {
            check: "throttling_stopped",
            expected: format!("no throttle events on {}", self.name()),
            namespace: NAMESPACE.into(),
            metrics: vec!["ReadThrottleEvents".into(), "WriteThrottleEvents".into()],
            dimensions,
        }
    }
}
