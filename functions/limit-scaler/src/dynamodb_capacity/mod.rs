//! Runbook `dynamodb-capacity`: a DynamoDB table or global secondary index is throttling.
//!
//! Diagnose (DescribeTable, consumed capacity from CloudWatch) → plan (raise the throttled side
//! within the caps, or switch to on-demand at the cap when allowed) → act (UpdateTable) →
//! verify (DescribeTable until ACTIVE at the new numbers; the throttle alarm's OK transition
//! closes the metric-level check). The schedule steps a provisioned raise back down
//! (`scale_down`).

mod plan;
mod scale_down;
mod table;
mod target;

use runbook_shared::aws::FaultKind;
use runbook_shared::report::{Action, AwaitedMetric, Check, Outcome, Report, Verification};
use runbook_shared::resource::{Home, ResourceId};
use runbook_shared::runbook::{
    Decision, Ending, NotApplied, Planned, RunContext, Runbook, Step, concluded,
};
use serde_json::{Value, json};

use crate::Scaler;

pub use plan::{Change, Plan, kept_text, plan, step_down};
pub use scale_down::ScaleDown;
pub use table::{Billing, ConsumedPeaks, Observed};
pub use target::{CapacityTarget, Request, Side};

use plan::{after_state, before_state, expected_text, in_force, observed_text, state_text};

pub const RUNBOOK: &str = "dynamodb-capacity";
pub const NAMESPACE: &str = "AWS/DynamoDB";
pub const THROTTLE_METRICS: [&str; 3] = [
    "ReadThrottleEvents",
    "WriteThrottleEvents",
    "ThrottledRequests",
];

/// What the raise reads: the table or index, and its consumed peaks.
pub struct Diagnosis {
    observed: Observed,
    peaks: ConsumedPeaks,
}

/// The raise: the state it starts from (as the action's `before`), the change, and the sides
/// kept as they were.
pub struct Raise {
    before: Value,
    change: Change,
    kept: Vec<String>,
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

    /// A table that does not exist is reported as such before anything else.
    async fn managed(&self, ctx: &RunContext<'_, Scaler>) -> Step<()> {
        ctx.observe(self).await?;
        let safety = &ctx.config.safety;
        safety
            .managed
            .require_table(&ctx.clients.dynamodb, &safety.home, &self.table)
            .await
    }

    /// Afresh under the lease: another run may have changed the table while this one waited.
    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let observed = ctx.observe(self).await?;
        let lookback = ctx.config.metric_lookback_minutes;
        let (peaks, metrics_error) = match ctx.consumed_peaks(self, lookback).await {
            Ok(peaks) => (peaks, None),
            // Without metrics the factor alone still gives a safe plan; the report says so.
            Err(err) => (ConsumedPeaks::default(), Some(err.to_string())),
        };
        report.diagnosis = Some(json!({
            "observed": observed,
            "consumed_peak": peaks,
            "lookback_minutes": lookback,
            "metrics_error": metrics_error,
        }));
        Ok(Diagnosis { observed, peaks })
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, diagnosis: &Diagnosis) -> Decision<Raise> {
        plan(self, &diagnosis.observed, &diagnosis.peaks, &ctx.config).map(|plan| Raise {
            before: before_state(&diagnosis.observed, &plan.change),
            change: plan.change,
            kept: plan.kept,
        })
    }

    fn describe(&self, _: &RunContext<'_, Scaler>, raise: &Raise) -> Planned {
        let (target, after) = after_state(self, &raise.change);
        let summary = format!(
            "raised {} from {} to {}{}",
            self.name(),
            state_text(&raise.before),
            expected_text(&raise.change),
            kept_text(&raise.kept)
        );
        Planned::one(
            "dynamodb:UpdateTable",
            &target,
            raise.before.clone(),
            after,
            summary,
        )
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        serde_json::to_value(&diagnosis.observed).ok()
    }

    fn resumed(&self, action: &Action) -> Option<Raise> {
        Some(Raise {
            before: action.before.clone(),
            change: Change::from_state(&action.after)?,
            kept: Vec::new(),
        })
    }

    /// UpdateTable, waiting for an update already running to finish first.
    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &Diagnosis,
        raise: Raise,
    ) -> Result<Raise, NotApplied> {
        let name = self.name();
        let deadline = ctx.invocation.wait_deadline();
        match ctx
            .apply_waiting_if_busy(self, &diagnosis.observed, &raise.change, deadline)
            .await
        {
            Ok(()) => Ok(raise),
            Err(err) => {
                let reason = match err.kind {
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
                Err(NotApplied::explained(&err, reason))
            }
        }
    }

    /// The table now (the metric check stays open until the alarm is OK again); a provisioned
    /// raise is recorded for the scale-down, with the state it started from as the baseline.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        raise: Raise,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let change = &raise.change;
        let settled = ctx
            .watch(self, ctx.invocation.wait_deadline(), |observed| {
                observed.active() && in_force(observed, change)
            })
            .await;
        let expected = expected_text(change);
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
                        in_force(&observed, change),
                        expected,
                        observed_text(&observed),
                    ),
                ],
                observed.active(),
            ),
        };
        report.verification =
            Verification::awaiting(checks, settled, ctx.alarm_name(), self.throttles());
        let ending = concluded(&report.verification, summary);
        match (&raise.change, ending.outcome) {
            (Change::Provisioned { read, write }, Outcome::Remediated) => {
                let original =
                    json!({"read": raise.before["read"], "write": raise.before["write"]});
                let current = json!({"read": read, "write": write});
                let key = self.resource(&ctx.config.safety.home).key();
                match ctx
                    .safety
                    .audit
                    .put_raise(RUNBOOK, &key, &original, &current, None)
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
