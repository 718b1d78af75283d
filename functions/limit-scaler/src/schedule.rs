//! limit-scaler's schedule: every raised reservation and stored limit whose time is up goes
//! back to its original, and raised capacity steps down by utilisation, each with its own report
//! and under the same guards as the raise (its lease, once per schedule event).

use std::time::Duration;

use runbook_shared::deadline::WRITE_RESERVE;
use runbook_shared::model::Invocation;
use runbook_shared::model::{Outcome, Output, Report, TriggerInfo};
use runbook_shared::model::{Resource, ResourceId};
use runbook_shared::path::{RunContext, run};
use runbook_shared::store::Raise;

use crate::dynamodb_capacity::{CapacityTarget, ScaleDown};
use crate::{FUNCTION, Scaler, ScalerRunbook, lambda_concurrency, stored_limit};

/// What a step of the schedule needs at least: its reads and its change, then the writes after
/// any wait (which keep `WRITE_RESERVE`). A step that no longer fits is left for the next run.
const STEP_NEEDS: Duration = Duration::from_secs(2).saturating_add(WRITE_RESERVE);

impl Scaler {
    /// Every raise in force that is due, each with its own report. A step that no longer fits
    /// before the deadline is left for the next run.
    pub(crate) async fn put_back_expired(
        &self,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Output {
        let now = chrono::Utc::now();
        let mut reports = Vec::new();
        for runbook in ScalerRunbook::ALL {
            let raises = match self.safety.audit.raises(runbook.id()).await {
                Ok(raises) => raises,
                Err(err) => {
                    let mut report = Report::new(
                        FUNCTION,
                        info.clone(),
                        Outcome::Failed,
                        format!(
                            "could not list the raises of {} in force: {err}",
                            runbook.id()
                        ),
                    );
                    report.runbook = Some(runbook.id().into());
                    reports.push(invocation.timed(report));
                    continue;
                }
            };
            let mine = raises
                .into_iter()
                .filter(|raise| self.acts_on(raise) && self.due(raise, now));
            for raise in mine {
                let report = Box::pin(self.put_back(runbook, raise, &info, invocation)).await;
                reports.push(report);
            }
        }
        Output::Sweep { reports }
    }

    /// Whether the raise was made in this function's account and region: a hub's schedule
    /// puts each place's raises back with that place's clients. A record from before resources
    /// had one identity is the hub's own.
    fn acts_on(&self, raise: &Raise) -> bool {
        let home = &self.config.safety.home;
        match ResourceId::from_key(&raise.resource) {
            Some(resource) => resource.account == home.account && resource.region == home.region,
            None => self.config.safety.is_hub(),
        }
    }

    /// A raise recorded before resources had one identity named its resource by name alone
    /// (`orders`, `orders/index/by-day`, `f`, `limits/tenant#42/rps`): read it as this
    /// function's own resource, and move the record under its key, so that what was raised
    /// then is still put back.
    async fn migrated(
        &self,
        runbook: ScalerRunbook,
        raise: Raise,
    ) -> Result<(Raise, ResourceId), String> {
        if let Some(resource) = ResourceId::from_key(&raise.resource) {
            return Ok((raise, resource));
        }
        let home = &self.config.safety.home;
        let old = raise.resource.as_str();
        let resource = match runbook {
            ScalerRunbook::LambdaConcurrency => home.parse_function(old).ok(),
            ScalerRunbook::DynamodbCapacity => Some(match old.split_once("/index/") {
                Some((table, index)) => home.index(table, index),
                None => home.table(old),
            }),
            ScalerRunbook::StoredLimit => old.split_once('/').and_then(|(table, rest)| {
                let (key, attribute) = rest.rsplit_once('/')?;
                Some(home.stored_limit(table, key, attribute))
            }),
        }
        .filter(|resource| !resource.name().is_empty())
        .ok_or_else(|| {
            format!(
                "the raise record {old} of {} names no resource: delete it from the audit table",
                raise.runbook
            )
        })?;
        let audit = &self.safety.audit;
        let moved = audit
            .put_raise(
                &raise.runbook,
                &resource.key(),
                &raise.original,
                &raise.current,
                raise.revert_at,
                raise.alarm.as_deref(),
            )
            .await;
        if let Err(err) = moved.and(audit.end_raise(&raise.runbook, old).await) {
            return Err(format!(
                "the raise record {old} could not be moved under {}: {err}",
                resource.key()
            ));
        }
        let raise = Raise {
            resource: resource.key(),
            ..raise
        };
        Ok((raise, resource))
    }

    /// One step of the schedule on one raise in force, once per schedule event.
    async fn put_back(
        &self,
        runbook: ScalerRunbook,
        raise: Raise,
        info: &TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let step = TriggerInfo {
            event_id: info
                .event_id
                .as_ref()
                .map(|id| format!("{id}/{}/{}", runbook.id(), raise.resource)),
            ..info.clone()
        };
        let mut report = Report::new(FUNCTION, step, Outcome::NoAction, "");
        report.runbook = Some(runbook.id().into());
        report.dry_run = self.config.safety.dry_run;
        let (raise, resource) = match self.migrated(runbook, raise).await {
            Ok(migrated) => migrated,
            Err(reason) => return invocation.timed(report.finish(Outcome::Failed, reason)),
        };
        report.target = Some(resource.name());
        report.resource = Some(resource.key());
        let remaining = invocation.deadline.remaining();
        if remaining < STEP_NEEDS {
            return invocation.timed(report.finish(
                Outcome::Skipped,
                format!(
                    "deadline: left for the next run ({} ms left of the invocation, a step needs {} ms)",
                    remaining.as_millis(),
                    STEP_NEEDS.as_millis()
                ),
            ));
        }
        let ctx = RunContext::new(self, invocation, None);
        let unknown = format!(
            "the raise record {} does not name a resource {} changes: delete it from the audit table",
            raise.resource,
            runbook.id()
        );
        match runbook {
            ScalerRunbook::LambdaConcurrency => {
                match lambda_concurrency::put_back(raise, &resource) {
                    Some(put_back) => run(&ctx, put_back, report).await,
                    None => invocation.timed(report.finish(Outcome::Failed, unknown)),
                }
            }
            ScalerRunbook::StoredLimit => match resource.resource {
                Resource::StoredLimit { .. } => {
                    let put_back = stored_limit::PutBack::new(raise, resource, &self.config);
                    run(&ctx, put_back, report).await
                }
                _ => invocation.timed(report.finish(Outcome::Failed, unknown)),
            },
            ScalerRunbook::DynamodbCapacity => {
                match CapacityTarget::of_resource(&resource, &self.config) {
                    Some(target) => run(&ctx, ScaleDown { raise, target }, report).await,
                    None => invocation.timed(report.finish(Outcome::Failed, unknown)),
                }
            }
        }
    }
}
