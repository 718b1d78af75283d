//! The schedule's step for a capacity raise in force: when consumption stayed under
//! SCALE_DOWN_UTILIZATION of the raised capacity for SCALE_DOWN_AFTER_HOURS, step back toward
//! the recorded baseline (never below it), and move the raise record along. A side raised
//! through Application Auto Scaling gets its original range back in one step, and Auto
//! Scaling's own policy brings the capacity down.

use runbook_shared::aws::FaultKind;
use runbook_shared::model::{Action, Check, Report, Verification};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step, concluded};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use runbook_shared::store::Raise;
use serde_json::{Value, json};

use super::auto_scaling::{self, Scaling};
use super::plan::{expected_text, in_force, step_down};
use super::state::{
    Billing, Capacity, Change, ConsumedPeaks, Observed, Range, Ranges, observed_text,
};
use super::target::CapacityTarget;
use super::{NAMESPACE, RUNBOOK, THROTTLE_METRICS};
use crate::Scaler;
use crate::raises::{ThrottleMetrics, current_raise, quiet_since, stop_tracking};

/// One step down of the raise `raise` on `target`.
pub struct ScaleDown {
    pub raise: Raise,
    pub target: CapacityTarget,
}

/// Read and write capacity.
type Sides = (i64, i64);

/// The table as a retry compares it with the intent: DescribeTable's view, and the ranges.
pub(super) fn state_of(observed: &Observed, ranges: &Ranges) -> Option<Value> {
    let mut state = serde_json::to_value(observed).ok()?;
    if !ranges.is_empty() {
        state["auto_scaling"] = json!(ranges);
    }
    Some(state)
}

pub struct Diagnosis {
    raise: Raise,
    baseline: Sides,
    ours: Sides,
    /// The Auto Scaling ranges before the raise, and as the raise set them.
    baseline_ranges: Ranges,
    our_ranges: Ranges,
    observed: Observed,
    ranges: Ranges,
    peaks: ConsumedPeaks,
}

/// From the capacity this automation set to a lower one, never below the baseline. A side
/// registered with Auto Scaling steps through its range, and the table keeps what it shows on
/// that side.
pub struct StepDown {
    from: Sides,
    to: Sides,
    baseline: Sides,
    ranges: (Ranges, Ranges),
    baseline_ranges: Ranges,
    /// Whether UpdateTable steps an unregistered side (unknown for a resumed registration).
    table_too: bool,
}

impl StepDown {
    fn at_baseline(&self) -> bool {
        let registered = self.ranges.1;
        registered == self.baseline_ranges
            && (registered.read.is_some() || self.to.0 == self.baseline.0)
            && (registered.write.is_some() || self.to.1 == self.baseline.1)
    }
}

fn sides(state: &Value) -> Option<Sides> {
    Some((state["read"].as_i64()?, state["write"].as_i64()?))
}

fn provisioned((read, write): Sides) -> Value {
    json!({"billing_mode": "PROVISIONED", "read": read, "write": write})
}

impl Runbook<Scaler> for ScaleDown {
    const ID: &'static str = RUNBOOK;
    /// It finishes a raise that already spent its action.
    const BUDGETED: bool = false;
    const PUTS_BACK: bool = true;
    type Diagnosis = Diagnosis;
    type Change = StepDown;

    fn resource(&self, home: &Home) -> ResourceId {
        self.target.resource(home)
    }

    /// The raise it finishes was made on a managed table.
    async fn managed(&self, _: &RunContext<'_, Scaler>) -> Step<()> {
        Ok(())
    }

    /// Not held up by the cooldown of the raise it undoes.
    fn cooldown(&self, _: &runbook_shared::store::AuditRecord) -> bool {
        false
    }

    // Over 80 lines: the raise's record, the table, its Auto Scaling registration and the quiet
    // check, read in turn; each can end the run with its own reason.
    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let raise = current_raise(ctx, &self.raise).await?;
        let name = self.target.name();
        let (Some(baseline), Some(ours), Some(baseline_ranges), Some(our_ranges)) = (
            sides(&raise.original),
            sides(&raise.current),
            Ranges::of(&raise.original),
            Ranges::of(&raise.current),
        ) else {
            return Err(Ending::failed(format!(
                "the raise record of {name} is unreadable"
            )));
        };
        let observed = match ctx.describe(&self.target.table).await {
            Ok(table) => Observed::from_table(&table, self.target.index.as_deref())
                .map_err(Ending::failed)?,
            Err(err) if err.is(FaultKind::NotFound) => {
                let reason = format!("table {} no longer exists", self.target.table);
                return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
            }
            Err(err) => return Err(Ending::failed(format!("could not describe {name}: {err}"))),
        };
        let ranges = ctx.scalable_ranges(&self.target).await.map_err(|err| {
            Ending::failed(format!(
                "could not read the Auto Scaling ranges of {name}: {err}; the next schedule tries again"
            ))
        })?;
        let resource = self.resource(&ctx.config.safety.home);
        let landed =
            state_of(&observed, &ranges).and_then(|state| ctx.invocation.landed(&resource, &state));
        // A registered side's capacity is Auto Scaling's to move; its range is ours to compare.
        if landed.is_none()
            && (observed.billing_mode != Billing::Provisioned
                || ranges != our_ranges
                || (our_ranges.read.is_none() && observed.read != ours.0)
                || (our_ranges.write.is_none() && observed.write != ours.1))
        {
            let reason = format!(
                "{name} was changed by someone else since it was raised to read {}, write {}, Auto Scaling ranges {} (now {}, ranges {}): left as it is",
                ours.0,
                ours.1,
                our_ranges.text(),
                observed_text(&observed),
                ranges.text()
            );
            return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
        }
        if landed.is_none() {
            let mut dimensions = vec![("TableName", self.target.table.as_str())];
            if let Some(index) = &self.target.index {
                dimensions.push(("GlobalSecondaryIndexName", index.as_str()));
            }
            let throttles = ThrottleMetrics {
                namespace: NAMESPACE,
                names: &THROTTLE_METRICS,
                dimensions,
            };
            quiet_since(ctx, &raise, Some(throttles)).await?;
        }
        let window_minutes = (ctx.config.scale_down_after_hours * 60.0).ceil().max(1.0) as i64;
        let peaks = ctx
            .consumed_peaks(&self.target, window_minutes)
            .await
            .map_err(|err| {
                Ending::failed(format!(
                    "could not read the consumed capacity of {name}: {err}"
                ))
            })?;
        report.diagnosis = Some(json!({
            "observed": observed,
            "auto_scaling": (!ranges.is_empty()).then_some(ranges),
            "baseline": raise.original,
            "consumed_peak": peaks,
            "window_minutes": window_minutes,
        }));
        Ok(Diagnosis {
            raise,
            baseline,
            ours,
            baseline_ranges,
            our_ranges,
            observed,
            ranges,
            peaks,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, diagnosis: &Diagnosis) -> Decision<StepDown> {
        let Diagnosis {
            baseline,
            ours,
            baseline_ranges,
            our_ranges,
            observed,
            peaks,
            ..
        } = diagnosis;
        let mut from = *ours;
        let mut to = from;
        let mut to_ranges = *our_ranges;
        for (side, peak) in [
            (Capacity::Read, peaks.read_per_second),
            (Capacity::Write, peaks.write_per_second),
        ] {
            let (from, to, now, baseline) = match side {
                Capacity::Read => (&mut from.0, &mut to.0, observed.read, baseline.0),
                Capacity::Write => (&mut from.1, &mut to.1, observed.write, baseline.1),
            };
            match our_ranges.get(side) {
                // Traffic fell below the raised minimum: the original minimum back, at once. The
                // maximum goes back only as far as the traffic allows, so Auto Scaling is not
                // capped below what the table consumes.
                Some(range) => {
                    (*from, *to) = (now, now);
                    let original = baseline_ranges.get(side).unwrap_or(range);
                    let fell = step_down(range.min, original.min, peak, &ctx.config) < range.min;
                    let min = if fell { original.min } else { range.min };
                    let needed = peak.map_or(0, |peak| (peak * ctx.config.headroom).ceil() as i64);
                    let max = needed.max(original.max).min(range.max).max(min);
                    to_ranges.set(side, Some(Range { min, max }));
                }
                None => *to = step_down(*from, baseline, peak, &ctx.config),
            }
        }
        if to == from && to_ranges == *our_ranges {
            return Decision::NoAction(format!(
                "{} still uses at least {:.0}% of its raised capacity (or is at its baseline): kept",
                self.target.name(),
                ctx.config.scale_down_utilization * 100.0
            ));
        }
        Decision::Act(StepDown {
            from,
            to,
            baseline: *baseline,
            ranges: (*our_ranges, to_ranges),
            baseline_ranges: *baseline_ranges,
            table_too: to != from,
        })
    }

    /// The ranges first (the intent, as in the raise), then UpdateTable for an unregistered side.
    fn describe(&self, _: &RunContext<'_, Scaler>, step: &StepDown) -> Planned {
        let StepDown {
            from,
            to,
            baseline,
            ranges,
            ..
        } = step;
        let name = self.target.name();
        let mut summary = format!(
            "scaled {name} down from read {}, write {} to read {}, write {} (baseline read {}, write {})",
            from.0, from.1, to.0, to.1, baseline.0, baseline.1
        );
        let mut actions = Vec::new();
        if ranges.0 != ranges.1 {
            summary.push_str(&format!(
                ", its Auto Scaling range from {} back to {}",
                ranges.0.text(),
                ranges.1.text()
            ));
            actions.push((
                auto_scaling::REGISTER,
                auto_scaling::resource_id(&self.target),
                json!({"auto_scaling": ranges.0}),
                json!({"auto_scaling": ranges.1}),
            ));
        }
        if step.table_too {
            actions.push((
                "dynamodb:UpdateTable",
                name,
                provisioned(*from),
                provisioned(*to),
            ));
        }
        let mut planned = Planned::one("", "", Value::Null, Value::Null, summary);
        planned.actions = actions
            .into_iter()
            .flat_map(|(api, target, before, after)| {
                Planned::one(api, &target, before, after, String::new()).actions
            })
            .collect();
        planned
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        state_of(&diagnosis.observed, &diagnosis.ranges)
    }

    /// A resumed registration checks the ranges only (an UpdateTable that may have followed is
    /// not known from the intent).
    fn resumed(&self, action: &Action) -> Option<StepDown> {
        let ours = sides(&self.raise.current)?;
        let baseline_ranges = Ranges::of(&self.raise.original)?;
        if action.api == auto_scaling::REGISTER {
            return Some(StepDown {
                from: ours,
                to: ours,
                baseline: sides(&self.raise.original)?,
                ranges: (Ranges::of(&action.before)?, Ranges::of(&action.after)?),
                baseline_ranges,
                table_too: false,
            });
        }
        let ranges = Ranges::of(&self.raise.current)?;
        Some(StepDown {
            from: sides(&action.before)?,
            to: sides(&action.after)?,
            baseline: sides(&self.raise.original)?,
            ranges: (ranges, ranges),
            baseline_ranges,
            table_too: true,
        })
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &Diagnosis,
        step: StepDown,
    ) -> Result<StepDown, NotApplied> {
        let (read, write) = step.to;
        let name = self.target.name();
        let change = Change::Provisioned { read, write };
        match ctx
            .apply_in_order(
                &self.target,
                &diagnosis.observed,
                (&step.ranges.0, &step.ranges.1),
                step.table_too.then_some(&change),
                ctx.invocation.wait_deadline(),
            )
            .await
        {
            Ok(()) => Ok(step),
            Err((err, Some(left))) => Err(NotApplied::explained(
                &err,
                format!("could not scale {name} down: {err}; {left}"),
            )),
            Err((err, None)) if err.is(FaultKind::LimitExceeded) => Err(NotApplied::explained(
                &err,
                format!(
                    "DynamoDB's quota of capacity decreases for {name} is used up for now: the next schedule tries again ({err})"
                ),
            )),
            Err((err, None)) => Err(NotApplied::explained(
                &err,
                format!("could not scale {name} down: {err}; the next schedule tries again"),
            )),
        }
    }

    /// Waits for the table to show the step (leaving time for the writes after), then moves
    /// the raise record to the new value, or ends it at the baseline.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &Diagnosis,
        step: StepDown,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let (read, write) = step.to;
        let change = Change::Provisioned { read, write };
        let scaling = Scaling {
            before: step.ranges.0,
            after: step.ranges.1,
            table_too: step.table_too,
        };
        let mut checks = Vec::new();
        if step.table_too {
            let in_force = |o: &Observed| o.active() && in_force(o, &change, Some(&scaling));
            let settled = ctx
                .watch(&self.target, ctx.invocation.wait_deadline(), in_force)
                .await;
            let (ok, seen) = match settled {
                Ok(Some(now)) => (in_force(&now), observed_text(&now)),
                Ok(None) => (false, "not described before the deadline".into()),
                Err(err) => (false, format!("DescribeTable failed: {err}")),
            };
            let expected = expected_text(&change, Some(&scaling));
            checks.push(Check::new("capacity", ok, expected, seen));
        }
        if step.ranges.0 != step.ranges.1 {
            checks.push(ctx.range_check(&self.target, &step.ranges.1).await);
        }
        report.verification = Verification::settled_all(checks);
        let audit = &ctx.safety.audit;
        let resource = &diagnosis.raise.resource;
        let recorded = if step.at_baseline() {
            audit.end_raise(RUNBOOK, resource).await
        } else {
            let original = json!({"read": step.baseline.0, "write": step.baseline.1, "auto_scaling": step.baseline_ranges});
            let current = json!({"read": read, "write": write, "auto_scaling": step.ranges.1});
            audit
                .put_raise(RUNBOOK, resource, &original, &current, None, None)
                .await
        };
        match recorded {
            Ok(()) => concluded(&report.verification, summary),
            Err(err) => Ending::failed(format!(
                "{summary}, but the raise record could not be updated: {err}"
            )),
        }
    }
}
