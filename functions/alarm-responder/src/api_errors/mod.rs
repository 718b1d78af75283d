//! Runbook `api-errors`: API Gateway 5xx (the P0 runbook). It changes nothing itself: it
//! triages the stage and hands the cause to the runbook that owns the remedy.
//!
//! Diagnose (the API, its stage's integrations and the Lambda functions behind them; for each,
//! the evidence: errors, throttles, duration against the integration timeout, recent deploys,
//! and the tables its configuration names) → plan (the likely causes, ranked; the first one's
//! remedy) → act (a fresh deploy behind an alias: lambda-rollback, in-process, under its own
//! guards; throttling of a function or of a table behind it: a `Runbook Handoff` event to
//! limit-scaler) → verify (the 5xx alarm back to OK: pending until then).

mod evidence;
mod reads;
mod target;
mod triage;

use std::collections::BTreeMap;

use chrono::Utc;
use runbook_shared::model::Evidence;
use runbook_shared::model::{Check, Outcome, Report, TriggerInfo, TriggerKind, Verification};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Handoff, HandoffTarget};
use runbook_shared::model::{Home, ResourceId};
use runbook_shared::path::{RunContext, Runbook, run};
use serde_json::{Value, json};

pub use reads::{Api, invoked_function};
pub use target::{ApiErrors, ApiKind, Request};
pub use triage::{Cause, Remedy, Suspect, rank};

use crate::lambda_rollback::Rollback;
use crate::{FUNCTION, Responder};

pub const RUNBOOK: &str = "api-errors";
pub const NAMESPACE: &str = "AWS/ApiGateway";
/// REST APIs' 5xx metric (dimension `ApiName`), and HTTP APIs' (dimension `ApiId`).
pub const REST_METRIC: &str = "5XXError";
pub const HTTP_METRIC: &str = "5xx";
/// How an evidence error names the tables a function's configuration could not be read for.
const TABLES_UNREAD: &str = "tables: ";
/// At most this many functions are triaged per run (their evidence is read at once).
pub const MAX_SUSPECTS: usize = 10;

/// What the triage read.
pub struct Diagnosis {
    api: Api,
    causes: Vec<Cause>,
    /// Each suspect's evidence, by function or table name, for the handoff.
    evidence: BTreeMap<String, Evidence>,
}

/// The hand-off of the first-ranked cause.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// lambda-rollback, in-process; its report once it ran.
    Rollback {
        rollback: Rollback,
        cause: Cause,
        report: Option<Box<Report>>,
    },
    /// A `Runbook Handoff` event to limit-scaler.
    Handoff { handoff: Box<Handoff>, bus: String },
}

/// The trigger a hand-off runs under: kind `handoff` (automatic: the cooldown, the budget and
/// the brakes apply, whoever started the triage), the alarm that started it, and an event id
/// from the triggering event, the runbook and the target, so that a retried run meets the first
/// hand-off's record instead of acting twice. An alarm's event id is stable across
/// redeliveries; a replay's or a manual run's request id is its own.
fn handed_trigger(ctx: &RunContext<'_, Responder>, runbook: &str, target: &str) -> TriggerInfo {
    let event = match ctx.alarm {
        Some(alarm) if alarm.kind != TriggerKind::Manual => alarm.event_id.clone(),
        _ => ctx.invocation.request_id.clone(),
    };
    TriggerInfo {
        kind: TriggerKind::Handoff,
        name: ctx.alarm_name().map(str::to_string),
        event_id: Some(format!("{event}/{runbook}/{target}")),
    }
}

impl Runbook<Responder> for ApiErrors {
    const ID: &'static str = RUNBOOK;
    /// The runbook it hands to spends its own budget, under its own brakes.
    const BUDGETED: bool = false;
    type Diagnosis = Diagnosis;
    type Change = Change;

    fn resource(&self, home: &Home) -> ResourceId {
        home.api(&self.api, self.stage.as_deref())
    }

    /// Reading an API changes nothing; whatever a hand-off changes is checked by its runbook.
    async fn managed(&self, _: &RunContext<'_, Responder>) -> Step<()> {
        Ok(())
    }

    // Over 80 lines: every suspect behind the API read at once, and every read that failed named;
    // one join over the reads.
    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Responder>,
        report: &mut Report,
    ) -> Step<Diagnosis> {
        let target = self.name();
        let failed = |why: String| {
            Ending::failed(format!(
                "could not triage the 5xx of {target}, nothing was changed: {why}"
            ))
        };
        let api = ctx.find_api(self).await.map_err(failed)?;
        let stage_names = match &self.stage {
            Some(stage) => vec![stage.clone()],
            None => ctx.stage_names(&api).await.map_err(failed)?,
        };
        let mut stages = Vec::new();
        for stage in stage_names {
            let variables = ctx.stage_variables(&api, &stage).await.map_err(failed)?;
            stages.push((stage, variables));
        }
        let integrations = ctx.integrations(&api, &stages).await.map_err(failed)?;
        let mut suspects: Vec<Suspect> = Vec::new();
        for invoked in &integrations.invoked {
            match suspects
                .iter_mut()
                .find(|s| s.function == invoked.function && s.qualifier == invoked.qualifier)
            {
                Some(suspect) => {
                    suspect.routes.push(invoked.route.clone());
                    suspect.integration_timeout_ms =
                        suspect.integration_timeout_ms.min(invoked.timeout_ms);
                }
                None => suspects.push(Suspect {
                    function: invoked.function.clone(),
                    qualifier: invoked.qualifier.clone(),
                    routes: vec![invoked.route.clone()],
                    integration_timeout_ms: invoked.timeout_ms,
                    evidence: Evidence::default(),
                    tables: Vec::new(),
                }),
            }
        }
        let mut notes = integrations.unresolved.clone();
        if suspects.len() > MAX_SUSPECTS {
            notes.push(format!(
                "{} functions are behind {target}: the first {MAX_SUSPECTS} were triaged",
                suspects.len()
            ));
            suspects.truncate(MAX_SUSPECTS);
        }
        // Every suspect's evidence at once: the run waits for the slowest, not the sum.
        let window = runbook_shared::path::evidence::window(
            ctx.alarm,
            &ctx.safety.config.evidence,
            Utc::now(),
        );
        let read = suspects
            .iter()
            .map(|suspect| Box::pin(ctx.suspect_evidence(suspect, window)));
        let read = futures_util::future::join_all(read).await;
        for (suspect, (evidence, tables)) in suspects.iter_mut().zip(read) {
            suspect.evidence = evidence;
            suspect.tables = tables;
        }
        // Without a function's figures the ranking would be a guess (no errors read is not no
        // errors): the run stops and says which reads failed.
        let unread_figures = |evidence: &Evidence| {
            (evidence.metrics.is_empty() && !evidence.errors.is_empty())
                .then(|| evidence.errors.join("; "))
        };
        let mut unread: Vec<String> = Vec::new();
        for suspect in &suspects {
            if let Some(errors) = unread_figures(&suspect.evidence) {
                unread.push(format!("{} ({errors})", suspect.name()));
            }
            if let Some(tables) = suspect
                .evidence
                .errors
                .iter()
                .find(|e| e.starts_with(TABLES_UNREAD))
            {
                unread.push(format!("the tables {} uses ({tables})", suspect.name()));
            }
            for (table, evidence) in &suspect.tables {
                if let Some(errors) = unread_figures(evidence) {
                    unread.push(format!("{table} ({errors})"));
                }
            }
        }
        if !unread.is_empty() {
            return Err(failed(format!(
                "the figures of {} could not be read",
                unread.join(", ")
            )));
        }
        let causes = rank(&suspects);
        report.diagnosis = Some(json!({
            "api": {"kind": api.kind.as_str(), "id": api.id, "name": api.name},
            "stages": stages.iter().map(|(stage, _)| stage).collect::<Vec<_>>(),
            "functions": suspects.iter().map(|suspect| json!({
                "function": suspect.name(),
                "routes": suspect.routes,
                "integration_timeout_ms": suspect.integration_timeout_ms,
                "evidence": suspect.evidence,
                "tables": suspect.tables.iter().map(|(table, evidence)| json!({"table": table, "evidence": evidence})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "causes": causes,
            "unresolved": notes,
        }));
        let mut evidence = BTreeMap::new();
        for suspect in suspects {
            evidence.insert(suspect.function.clone(), suspect.evidence);
            evidence.extend(suspect.tables);
        }
        Ok(Diagnosis {
            api,
            causes,
            evidence,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Change> {
        let target = self.name();
        let Some(top) = d.causes.first() else {
            return Decision::NoAction(format!(
                "the functions behind {target} show no errors, throttles, timeouts or fresh deploys in the window, so the 5xx come from API Gateway itself (the integration's permission to invoke, a mapping template, an authorizer, a quota): read the stage's execution logs; nothing was changed"
            ));
        };
        let said = format!(
            "likely cause: {} of {} ({})",
            top.cause, top.target, top.figures
        );
        let handoff = |runbook: &str, to: HandoffTarget| {
            // limit-scaler acts on a handoff only while the alarm it names fires.
            let Some(alarm) = ctx.alarm_name() else {
                let payload = match &to {
                    HandoffTarget::Table { table, .. } => json!({"table": table}),
                    HandoffTarget::Function { function } => json!({"function": function}),
                };
                return Decision::Skip(format!(
                    "{said}: it is limit-scaler's {runbook} to remedy, and a run without an alarm hands nothing on: invoke limit-scaler with {payload} (add \"dry_run\": true to see its plan); nothing was changed"
                ));
            };
            let Some(bus) = ctx.config.handoff_bus.clone() else {
                return Decision::Skip(format!(
                    "{said}: it is limit-scaler's {runbook} to remedy, but REPORT_EVENT_BUS is off, so the handoff cannot be sent; nothing was changed"
                ));
            };
            Decision::Act(Change::Handoff {
                handoff: Box::new(Handoff {
                    handoff_id: handed_trigger(ctx, runbook, &to.name())
                        .event_id
                        .unwrap_or_default(),
                    to: runbook_shared::model::LIMIT_SCALER.into(),
                    runbook: runbook.into(),
                    evidence: json!(d.evidence.get(&top.target)),
                    target: to,
                    alarm: Some(alarm.to_string()),
                    from: format!("{FUNCTION}/{RUNBOOK} on {target}"),
                    reason: said.clone(),
                    account: Some(ctx.config.safety.home.account.clone()),
                    region: Some(ctx.config.safety.home.region.clone()),
                }),
                bus,
            })
        };
        match &top.then {
            Remedy::Rollback { function, alias } => Decision::Act(Change::Rollback {
                rollback: Rollback {
                    function: function.clone(),
                    alias: alias.clone(),
                },
                cause: top.clone(),
                report: None,
            }),
            Remedy::Concurrency { function } => handoff(
                runbook_shared::model::LAMBDA_CONCURRENCY,
                HandoffTarget::Function {
                    function: function.clone(),
                },
            ),
            Remedy::Capacity { table, read, write } => handoff(
                runbook_shared::model::DYNAMODB_CAPACITY,
                HandoffTarget::Table {
                    table: table.clone(),
                    index: None,
                    read: *read,
                    write: *write,
                },
            ),
            Remedy::Person { advice } => Decision::NoAction(format!(
                "{said}; {advice}. Nothing here is automated, so nothing was changed; every cause is ranked in the diagnosis"
            )),
        }
    }

    /// The cause without its figures, which are read afresh: an approval of the hand-off holds
    /// while the same cause ranks first.
    fn approval_view(&self, planned: &Planned) -> Planned {
        let mut view = planned.clone();
        for action in &mut view.actions {
            if let Some(after) = action.after.as_object_mut() {
                after.remove("figures");
            }
        }
        view
    }

    fn describe(&self, _: &RunContext<'_, Responder>, change: &Change) -> Planned {
        match change {
            Change::Rollback {
                rollback, cause, ..
            } => {
                let alias = format!("{}:{}", rollback.function, rollback.alias);
                Planned::one(
                    "runbook:lambda-rollback",
                    &alias,
                    Value::Null,
                    json!({"cause": cause.cause, "figures": cause.figures}),
                    format!(
                        "handed the rollback of {alias} to lambda-rollback ({}: {})",
                        cause.cause, cause.figures
                    ),
                )
            }
            Change::Handoff { handoff, bus } => Planned::one(
                "events:PutEvents",
                bus,
                Value::Null,
                json!({
                    "detail-type": runbook_shared::model::HANDOFF,
                    "to": handoff.to,
                    "runbook": handoff.runbook,
                    "target": handoff.target,
                    "handoff_id": handoff.handoff_id,
                }),
                format!(
                    "handed {} to {} ({}): {}",
                    handoff.target.name(),
                    handoff.to,
                    handoff.runbook,
                    handoff.reason
                ),
            ),
        }
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        _: &Diagnosis,
        change: Change,
    ) -> Result<Change, NotApplied> {
        match change {
            Change::Rollback {
                rollback,
                cause,
                report: _,
            } => {
                // Its own run: its managed check, idempotency, lease, cooldown, evidence,
                // brakes, budget, intent and verification.
                let alias = format!("{}:{}", rollback.function, rollback.alias);
                let info = handed_trigger(ctx, crate::lambda_rollback::RUNBOOK, &alias);
                let handed = Report::new(FUNCTION, info, Outcome::NoAction, "");
                // A plan it makes for approval is approved as lambda-rollback's own manual
                // payload (the API's alarm would be triaged again instead). When this run
                // carries out an approval of api-errors' own plan, that approval covered the
                // hand-off: the rollback runs in its own mode, as after any hand-off.
                let invocation = ctx.invocation.nested(&json!({
                    "runbook": crate::lambda_rollback::RUNBOOK,
                    "function": rollback.function,
                    "alias": rollback.alias,
                }));
                let inner = RunContext::new(ctx.function, &invocation, ctx.alarm);
                let report = run(&inner, rollback.clone(), handed).await;
                Ok(Change::Rollback {
                    rollback,
                    cause,
                    report: Some(Box::new(report)),
                })
            }
            Change::Handoff { handoff, bus } => {
                runbook_shared::edge::publish::send_handoff(&ctx.clients.events, &bus, &handoff)
                    .await
                    .map_err(|err| {
                        NotApplied::explained(
                            &err,
                            format!(
                                "the handoff of {} to {} was not sent, nothing was changed: {err}",
                                handoff.target.name(),
                                handoff.to
                            ),
                        )
                    })?;
                Ok(Change::Handoff { handoff, bus })
            }
        }
    }

    /// The hand-off's result. A rollback is verified by its own run (its alarm's return to OK
    /// closes it, one verification per incident); a handoff to limit-scaler leaves the 5xx
    /// alarm's return to OK awaited (closed by its OK transition or the sweep).
    // Over 80 lines: the handoff's result carried up: what was applied, what awaits approval, what
    // failed, each into the report that is published.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
        change: Change,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        match change {
            Change::Rollback {
                report: Some(handed),
                ..
            } => {
                // The hand-off counts as applied only if the rollback changed something (a
                // skipped or planned rollback changed nothing).
                let changed = handed.actions.iter().any(|action| action.applied);
                for action in &mut report.actions {
                    action.applied &= changed;
                }
                // What calls for a person travels up: the report's events and notifications
                // are the outer report's.
                report.escalation.clone_from(&handed.escalation);
                report.stack_drift.clone_from(&handed.stack_drift);
                // The rollback's own plan awaiting approval travels up, unless this run carries
                // out an approval of its own (which the approval's report must carry).
                if report.approval.is_none() {
                    report.approval.clone_from(&handed.approval);
                }
                let said = format!("{summary}; lambda-rollback: {}", handed.reason);
                // A rollback whose own check already failed says so here too: this is the
                // report that is published and notified on.
                let failed =
                    handed.verification.status == runbook_shared::model::VerificationStatus::Failed;
                report.verification = Verification {
                    status: if failed {
                        runbook_shared::model::VerificationStatus::Failed
                    } else {
                        runbook_shared::model::VerificationStatus::NotApplicable
                    },
                    checks: vec![Check::new(
                        "handoff",
                        changed && !failed,
                        "lambda-rollback changed the alias, and verifies it in its own record",
                        format!(
                            "{:?}: audit {}",
                            handed.outcome,
                            handed.audit_id.as_deref().unwrap_or("none")
                        ),
                    )],
                    settle_by: None,
                };
                let outcome = handed.outcome;
                report.details = Some(json!({"handoff": handed}));
                Ending::new(outcome, said)
            }
            Change::Rollback { report: None, .. } => {
                Ending::failed(format!("{summary}, but lambda-rollback did not report"))
            }
            Change::Handoff { handoff, bus } => {
                let check = Check::new(
                    "handoff",
                    true,
                    format!(
                        "a {} event to {}",
                        runbook_shared::model::HANDOFF,
                        handoff.to
                    ),
                    format!("sent to bus {bus} as {}", handoff.handoff_id),
                );
                report.verification = Verification::awaiting(
                    vec![check],
                    true,
                    ctx.alarm_name(),
                    self.awaited(&d.api),
                );
                Ending::remediated(format!(
                    "{summary}; limit-scaler confirms the throttling and acts under its own guards, reporting under trigger {}",
                    handoff.handoff_id
                ))
            }
        }
    }
}
