//! The schedule's step for a raised stored limit: back to its original once its time is up,
//! unless someone else changed it since.

use runbook_shared::model::{Action, Check, Report};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use runbook_shared::store::Raise;
use serde_json::{Value, json};

use super::{LimitChange, LimitTarget, RUNBOOK};
use crate::Scaler;
use crate::config::ScalerConfig;
use crate::raises::{current_raise, put_back_verified, quiet_since, stop_tracking};

/// The schedule's step for a raised limit whose time is up: back to its original, unless
/// someone else changed it since.
pub struct PutBack {
    pub raise: Raise,
    pub resource: ResourceId,
    /// The limit, while it is one of LIMITS_TABLE's.
    pub target: Option<LimitTarget>,
}

pub struct PutBackDiagnosis {
    raise: Raise,
    target: LimitTarget,
    now: Option<f64>,
    back: LimitChange,
}

impl PutBack {
    pub fn new(raise: Raise, resource: ResourceId, config: &ScalerConfig) -> Self {
        let target = LimitTarget::from_raise(&resource, config);
        Self {
            raise,
            resource,
            target,
        }
    }
}

impl Runbook<Scaler> for PutBack {
    const ID: &'static str = RUNBOOK;
    /// It finishes a raise that already spent its action.
    const BUDGETED: bool = false;
    const PUTS_BACK: bool = true;
    type Diagnosis = PutBackDiagnosis;
    type Change = LimitChange;

    fn resource(&self, _: &Home) -> ResourceId {
        self.resource.clone()
    }

    /// The raise it finishes was made on a managed table.
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
        let name = self.resource.name();
        let Some(target) = self.target.clone() else {
            let reason = format!("{name} is not in LIMITS_TABLE any more");
            return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
        };
        let (Some(original), Some(ours)) = (
            raise.original["value"].as_f64(),
            raise.current["value"].as_f64(),
        ) else {
            return Err(Ending::failed(format!(
                "the raise record of {name} is unreadable"
            )));
        };
        let now = ctx
            .read_limit(&target)
            .await
            .map_err(|err| Ending::failed(format!("could not read {name}: {err}")))?;
        report.diagnosis = Some(json!({"value": now, "raised_to": ours, "original": original}));
        let landed = ctx
            .invocation
            .landed(&self.resource, &json!({"value": now}));
        if now != Some(ours) && landed.is_none() {
            let reason = format!(
                "{name} was changed by someone else since it was raised to {ours} (now {}): left as it is",
                now.map_or("missing".to_string(), |v| v.to_string())
            );
            return Err(stop_tracking(ctx, &raise, report.dry_run, reason).await);
        }
        // A stored limit has no throttle figure of its own: the alarm that led to it says.
        if landed.is_none() {
            quiet_since(ctx, &raise, None).await?;
        }
        Ok(PutBackDiagnosis {
            raise,
            target,
            now,
            back: LimitChange {
                from: ours,
                to: original,
            },
        })
    }

    fn plan(&self, _: &RunContext<'_, Scaler>, d: &PutBackDiagnosis) -> Decision<LimitChange> {
        Decision::Act(d.back)
    }

    fn describe(&self, _: &RunContext<'_, Scaler>, back: &LimitChange) -> Planned {
        let name = self.resource.name();
        let summary = format!(
            "put {name} back from {} to its original {}",
            back.from, back.to
        );
        back.action(&name, summary)
    }

    fn observed(&self, diagnosis: &PutBackDiagnosis) -> Option<Value> {
        Some(json!({"value": diagnosis.now}))
    }

    fn resumed(&self, action: &Action) -> Option<LimitChange> {
        LimitChange::resumed(action)
    }

    /// A conditional update: a value someone changed meanwhile is read again (and left).
    async fn apply(
        &self,
        ctx: &RunContext<'_, Scaler>,
        d: &PutBackDiagnosis,
        back: LimitChange,
    ) -> Result<LimitChange, NotApplied> {
        let name = self.resource.name();
        match ctx.swap_limit(&d.target, back.from, back.to).await {
            Ok(true) => Ok(back),
            Ok(false) => Err(NotApplied::ChangedUnder {
                error: format!("{name} changed while it was being put back"),
            }),
            Err(err) => Err(NotApplied::explained(
                &err,
                format!("could not put {name} back: {err}; the next schedule tries again"),
            )),
        }
    }

    async fn verify(
        &self,
        ctx: &RunContext<'_, Scaler>,
        d: &PutBackDiagnosis,
        back: LimitChange,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let (ok, observed) = ctx.limit_read_back(&d.target, back.to).await;
        let check = Check::new("stored_value", ok, back.to.to_string(), observed);
        put_back_verified(ctx, &d.raise, check, summary, report).await
    }
}
