//! The schedule's step for a raised reservation: back to its original after
//! CONCURRENCY_RAISE_MINUTES, unless someone else changed it since.

use runbook_shared::model::{Action, Check, Report};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use runbook_shared::store::Raise;
use serde_json::{Value, json};

use super::{NAMESPACE, RUNBOOK, Reservation, THROTTLE_METRIC, reservation, state, text};
use crate::Scaler;
use crate::raises::{
    ThrottleMetrics, current_raise, put_back_verified, quiet_since, stop_tracking,
};

/// The schedule's step for a raised reservation whose time is up: back to its original,
/// unless someone else changed it since.
pub struct PutBack {
    pub raise: Raise,
    pub function: String,
}

pub struct PutBackDiagnosis {
    raise: Raise,
    now: Option<i32>,
    back: Reservation,
}

impl Runbook<Scaler> for PutBack {
    const ID: &'static str = RUNBOOK;
    /// It finishes a raise that already spent its action.
    const BUDGETED: bool = false;
    const PUTS_BACK: bool = true;
    type Diagnosis = PutBackDiagnosis;
    type Change = Reservation;

    fn resource(&self, home: &Home) -> ResourceId {
        home.function(&self.function)
    }

    /// The raise it finishes was made on a managed function.
    async fn managed(&self, _: &RunContext<'_, Scaler>) -> Step<()> {
        Ok(())
    }

    /// Not held up by the cooldown of the raise it undoes.
    fn cooldown(&self, _: &runbook_shared::store::AuditRecord) -> bool {
        false
    }

    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Scaler>,
        report: &mut Report,
    ) -> Step<PutBackDiagnosis> {
        let raise = current_raise(ctx, &self.raise).await?;
        let function = &self.function;
        let (Some(original), Some(ours)) =
            (reservation(&raise.original), reservation(&raise.current))
        else {
            return Err(Ending::failed(format!(
                "the raise record of {function} is unreadable"
            )));
        };
        let now = ctx.reserved(function).await.map_err(|err| {
            Ending::failed(format!("could not read {function}'s concurrency: {err}"))
        })?;
        report.diagnosis =
            Some(json!({"reserved_concurrency": now, "raised_to": ours, "original": original}));
        let resource = self.resource(&ctx.config.safety.home);
        let landed = ctx.invocation.landed(&resource, &state(now)).is_some();
        if now != Some(ours) && !landed {
            let reason = format!(
                "{function}'s reserved concurrency was changed by someone else since it was raised to {ours} (now {}): left as it is",
                text(now)
            );
            return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
        }
        if !landed {
            let throttles = ThrottleMetrics {
                namespace: NAMESPACE,
                names: &[THROTTLE_METRIC],
                dimensions: vec![("FunctionName", function.as_str())],
            };
            quiet_since(ctx, &raise, Some(throttles)).await?;
        }
        Ok(PutBackDiagnosis {
            raise,
            now,
            back: Reservation {
                from: ours,
                to: original,
            },
        })
    }

    fn plan(&self, _: &RunContext<'_, Scaler>, d: &PutBackDiagnosis) -> Decision<Reservation> {
        Decision::Act(d.back)
    }

    fn describe(&self, _: &RunContext<'_, Scaler>, back: &Reservation) -> Planned {
        Planned::one(
            "lambda:PutFunctionConcurrency",
            &self.function,
            state(Some(back.from)),
            state(Some(back.to)),
            format!(
                "put {}'s reserved concurrency back from {} to its original {}",
                self.function, back.from, back.to
            ),
        )
    }

    fn observed(&self, diagnosis: &PutBackDiagnosis) -> Option<Value> {
        Some(state(diagnosis.now))
    }

    fn resumed(&self, action: &Action) -> Option<Reservation> {
        Reservation::resumed(action)
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        _: &PutBackDiagnosis,
        back: Reservation,
    ) -> Result<Reservation, NotApplied> {
        let function = &self.function;
        ctx.reserve(function, back.to).await.map_err(|err| {
            NotApplied::explained(
                &err,
                format!(
                    "could not put {function}'s concurrency back: {err}; the next schedule tries again"
                ),
            )
        })?;
        Ok(back)
    }

    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        diagnosis: &PutBackDiagnosis,
        back: Reservation,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let (ok, observed) = ctx.read_back(&self.function, back.to).await;
        let check = Check::new("reserved_concurrency", ok, back.to.to_string(), observed);
        put_back_verified(ctx, &diagnosis.raise, check, summary, report).await
    }
}

/// The function a raise record names, if it names one.
pub fn put_back(raise: Raise, resource: &ResourceId) -> Option<PutBack> {
    match &resource.resource {
        Resource::Function { function } => Some(PutBack {
            raise,
            function: function.clone(),
        }),
        _ => None,
    }
}
