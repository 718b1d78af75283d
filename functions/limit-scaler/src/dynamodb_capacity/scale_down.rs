//! The schedule's step for a capacity raise in force: when consumption stayed under
//! SCALE_DOWN_UTILIZATION of the raised capacity for SCALE_DOWN_AFTER_HOURS, step back toward
//! the recorded baseline (never below it), and move the raise record along.

use runbook_shared::audit::Raise;
use runbook_shared::aws::FaultKind;
use runbook_shared::report::{Action, Check, Report, Verification};
use runbook_shared::resource::{Home, ResourceId};
use runbook_shared::runbook::{
    Decision, Ending, NotApplied, Planned, RunContext, Runbook, Step, concluded,
};
use serde_json::{Value, json};

use super::RUNBOOK;
use super::plan::{Change, expected_text, in_force, observed_text, step_down};
use super::table::{Billing, ConsumedPeaks, Observed};
use super::target::CapacityTarget;
use crate::Scaler;
use crate::schedule::{current_raise, stop_tracking};

/// One step down of the raise `raise` on `target`.
pub struct ScaleDown {
    pub raise: Raise,
    pub target: CapacityTarget,
}

/// Read and write capacity.
type Sides = (i64, i64);

pub struct Diagnosis {
    raise: Raise,
    baseline: Sides,
    ours: Sides,
    observed: Observed,
    peaks: ConsumedPeaks,
}

/// From the capacity this automation set to a lower one, never below the baseline.
pub struct StepDown {
    from: Sides,
    to: Sides,
    baseline: Sides,
}

fn sides(state: &Value) -> Option<Sides> {
    Some((state["read"].as_i64()?, state["write"].as_i64()?))
}

impl Runbook<Scaler> for ScaleDown {
    const ID: &'static str = RUNBOOK;
    /// It finishes a raise that already spent its action.
    const BUDGETED: bool = false;
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
    fn cooldown(&self, _: &runbook_shared::audit::AuditRecord) -> bool {
        false
    }

    async fn diagnose(&self, ctx: &RunContext<'_, Scaler>, report: &mut Report) -> Step<Diagnosis> {
        let raise = current_raise(ctx, &self.raise).await?;
        let name = self.target.name();
        let (Some(baseline), Some(ours)) = (sides(&raise.original), sides(&raise.current)) else {
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
        let resource = self.resource(&ctx.config.safety.home);
        let landed = serde_json::to_value(&observed)
            .ok()
            .and_then(|state| ctx.invocation.landed(&resource, &state));
        if landed.is_none()
            && (observed.billing_mode != Billing::Provisioned
                || (observed.read, observed.write) != ours)
        {
            let reason = format!(
                "{name} was changed by someone else since it was raised to read {}, write {} (now {}): left as it is",
                ours.0,
                ours.1,
                observed_text(&observed)
            );
            return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
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
            "baseline": raise.original,
            "consumed_peak": peaks,
            "window_minutes": window_minutes,
        }));
        Ok(Diagnosis {
            raise,
            baseline,
            ours,
            observed,
            peaks,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Scaler>, diagnosis: &Diagnosis) -> Decision<StepDown> {
        let Diagnosis {
            baseline,
            ours,
            peaks,
            ..
        } = diagnosis;
        let to = (
            step_down(ours.0, baseline.0, peaks.read_per_second, &ctx.config),
            step_down(ours.1, baseline.1, peaks.write_per_second, &ctx.config),
        );
        if to == *ours {
            return Decision::NoAction(format!(
                "{} still uses at least {:.0}% of its raised capacity (or is at its baseline): kept",
                self.target.name(),
                ctx.config.scale_down_utilization * 100.0
            ));
        }
        Decision::Act(StepDown {
            from: *ours,
            to,
            baseline: *baseline,
        })
    }

    fn describe(&self, _: &RunContext<'_, Scaler>, step: &StepDown) -> Planned {
        let state = |(read, write): Sides| json!({"billing_mode": "PROVISIONED", "read": read, "write": write});
        let StepDown { from, to, baseline } = step;
        let name = self.target.name();
        let summary = format!(
            "scaled {name} down from read {}, write {} to read {}, write {} (baseline read {}, write {})",
            from.0, from.1, to.0, to.1, baseline.0, baseline.1
        );
        Planned::one(
            "dynamodb:UpdateTable",
            &name,
            state(*from),
            state(*to),
            summary,
        )
    }

    fn observed(&self, diagnosis: &Diagnosis) -> Option<Value> {
        serde_json::to_value(&diagnosis.observed).ok()
    }

    fn resumed(&self, action: &Action) -> Option<StepDown> {
        Some(StepDown {
            from: sides(&action.before)?,
            to: sides(&action.after)?,
            baseline: sides(&self.raise.original)?,
        })
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &Diagnosis,
        step: StepDown,
    ) -> Result<StepDown, NotApplied> {
        let (read, write) = step.to;
        let name = self.target.name();
        match ctx
            .apply(&self.target, &Change::Provisioned { read, write })
            .await
        {
            Ok(()) => Ok(step),
            Err(err) if err.is(FaultKind::LimitExceeded) => Err(NotApplied::explained(
                &err,
                format!(
                    "DynamoDB's quota of capacity decreases for {name} is used up for now: the next schedule tries again ({err})"
                ),
            )),
            Err(err) => Err(NotApplied::explained(
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
        let settled = ctx
            .watch(&self.target, ctx.invocation.wait_deadline(), |o| {
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
        let audit = &ctx.safety.audit;
        let resource = &diagnosis.raise.resource;
        let recorded = if step.to == step.baseline {
            audit.end_raise(RUNBOOK, resource).await
        } else {
            let original = json!({"read": step.baseline.0, "write": step.baseline.1});
            let current = json!({"read": read, "write": write});
            audit
                .put_raise(RUNBOOK, resource, &original, &current, None)
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
