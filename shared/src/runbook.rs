//! The one path every runbook takes, so that each guard is written once, in DESIGN's order:
//!
//! managed → idempotency → lease → cooldown → evidence → diagnose → plan → (kill switch, alarm
//! re-check, owning stack, repeat and change brakes) → budget → mode (observe: planned;
//! approve: the plan stored for a person) → intent → apply → verify. An approved plan comes
//! back through the same path, and is applied only if it is the plan made again.
//!
//! A runbook says how to read, plan, write and check its resource (`Runbook`); `run` decides when
//! each of those happens and what stops it. A new guard (a kill switch, a brake, an approval
//! mode, a re-check before the write) is a change to `run` or `act` here, not to the runbooks.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::approval::Approving;
use crate::audit::AuditRecord;
use crate::modes::Mode;
use crate::recheck::AlarmNow;
use crate::report::{
    Action, Approval, ApprovalStatus, Outcome, Report, TriggerInfo, TriggerKind, Verification,
    VerificationStatus,
};
use crate::resource::{Home, ResourceId};
use crate::safety::{Invocation, RESUMED, Safety};
use crate::trigger::AlarmTrigger;

/// What a pure plan decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision<C> {
    /// Make this change.
    Act(C),
    /// Nothing to do; the diagnosis says why.
    NoAction(String),
    /// A limit stops it (at cap, the floor, a flip-flop).
    Skip(String),
}

impl<C> Decision<C> {
    /// The same decision about another change.
    pub fn map<D>(self, change: impl FnOnce(C) -> D) -> Decision<D> {
        match self {
            Decision::Act(planned) => Decision::Act(change(planned)),
            Decision::NoAction(reason) => Decision::NoAction(reason),
            Decision::Skip(reason) => Decision::Skip(reason),
        }
    }

    /// The change, or the run's ending.
    pub fn into_step(self) -> Step<C> {
        match self {
            Decision::Act(change) => Ok(change),
            Decision::NoAction(reason) => Err(Ending::no_action(reason)),
            Decision::Skip(reason) => Err(Ending::skipped(reason)),
        }
    }
}

/// How a run ends: its outcome and the sentence that says why.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    pub outcome: Outcome,
    pub reason: String,
}

impl Ending {
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
        }
    }

    pub fn remediated(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Remediated, reason)
    }

    pub fn no_action(reason: impl Into<String>) -> Self {
        Self::new(Outcome::NoAction, reason)
    }

    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Skipped, reason)
    }

    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Rejected, reason)
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Failed, reason)
    }
}

/// A step of a run, which may end it early.
pub type Step<T> = Result<T, Ending>;

impl Report {
    /// The report with the run's ending.
    pub fn ended(self, ending: Ending) -> Self {
        self.finish(ending.outcome, ending.reason)
    }
}

/// The ending of an applied change by its verification: failed with what the checks saw, or
/// remediated with `summary`.
pub fn concluded(verification: &Verification, summary: &str) -> Ending {
    if verification.status == VerificationStatus::Failed {
        Ending::failed(format!(
            "{summary}, but the verification failed ({})",
            verification.failures()
        ))
    } else {
        Ending::remediated(summary)
    }
}

/// What the shared path needs of a function.
pub trait Function {
    /// The function's name in its reports (`limit-scaler`).
    const NAME: &'static str;
    /// Its guards, backed by the audit table.
    fn safety(&self) -> &Safety;
    /// Its CloudWatch client: an alarm-triggered run re-reads its alarm right before writing.
    fn alarms(&self) -> &aws_sdk_cloudwatch::Client;
    /// Its CloudFormation client, when its runbooks change what a stack's template sets.
    fn stacks(&self) -> Option<&aws_sdk_cloudformation::Client> {
        None
    }
    /// The clients its reports' evidence is read with, when its runbooks concern functions,
    /// tables or queues.
    fn evidence_sources(&self) -> Option<crate::evidence::Sources<'_>> {
        None
    }
}

/// What one run works with: the function (its clients and configuration), the invocation
/// (request id and deadline) and the alarm that started it, if one did.
pub struct RunContext<'a, F> {
    pub function: &'a F,
    pub invocation: &'a Invocation,
    pub alarm: Option<&'a AlarmTrigger>,
    /// The evidence about the runbook's subject, read once per run before its diagnosis (and
    /// in the report's `diagnosis.evidence`).
    pub evidence: std::sync::OnceLock<crate::evidence::Evidence>,
}

impl<'a, F> RunContext<'a, F> {
    pub fn new(
        function: &'a F,
        invocation: &'a Invocation,
        alarm: Option<&'a AlarmTrigger>,
    ) -> Self {
        Self {
            function,
            invocation,
            alarm,
            evidence: std::sync::OnceLock::new(),
        }
    }

    pub fn alarm_name(&self) -> Option<&'a str> {
        self.alarm.map(|alarm| alarm.alarm_name.as_str())
    }
}

/// The function's clients and configuration, as `ctx.config` and `ctx.clients`.
impl<F> std::ops::Deref for RunContext<'_, F> {
    type Target = F;

    fn deref(&self) -> &F {
        self.function
    }
}

/// A change as the report lists it: the exact actions (what a dry run returns), and what it
/// does in the past tense ("raised orders from read 5 to read 10").
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// What `apply` writes, all or nothing.
    pub actions: Vec<Action>,
    /// What follows once the change is verified (old backups deleted): a dry run lists them;
    /// a live run's `verify` makes them and reports each with its own outcome.
    pub then: Vec<Action>,
    pub summary: String,
}

impl Planned {
    /// One action on `target` from `before` to `after`.
    pub fn one(api: &str, target: &str, before: Value, after: Value, summary: String) -> Self {
        Self {
            actions: vec![Action {
                api: api.into(),
                target: target.into(),
                before,
                after,
                applied: false,
                error: None,
            }],
            then: Vec::new(),
            summary,
        }
    }
}

/// Why a write did not happen.
#[derive(Clone, Debug, PartialEq)]
pub enum NotApplied {
    /// It failed and nothing was changed: `error` goes on the action, `reason` on the report.
    Failed { error: String, reason: String },
    /// The resource changed between the read and the write (a conditional write refused it):
    /// the run reads and plans again, rather than write over someone else's change.
    ChangedUnder { error: String },
}

impl NotApplied {
    /// A failed call: the report says that nothing was changed.
    pub fn failed(err: &crate::aws::AwsError) -> Self {
        Self::Failed {
            error: err.to_string(),
            reason: format!("{err}; nothing was changed"),
        }
    }

    /// A failed call with its own explanation.
    pub fn explained(err: &crate::aws::AwsError, reason: String) -> Self {
        Self::Failed {
            error: err.to_string(),
            reason,
        }
    }
}

/// How many plans a run makes when its resource changes under its writes: the first, and one
/// again from a fresh read; a resource that changed under both is left to whoever changes it.
pub const REPLANS: usize = 2;

/// How long a run waits for another run on a resource its change is serialised on.
const SERIALISED_WAIT: Duration = Duration::from_secs(10);

/// One runbook on one resource: how it is read, planned, written and checked. The order, and
/// every guard around it, is `run`'s.
#[allow(async_fn_in_trait)]
pub trait Runbook<F: Function> {
    /// The runbook's id in reports and the audit table (`dynamodb-capacity`).
    const ID: &'static str;
    /// Whether an automatic run spends one of the runbook's actions per hour (a put-back that
    /// finishes an earlier change does not).
    const BUDGETED: bool = true;
    /// Whether it puts back an earlier change (a scale-down, a put-back at expiry): the
    /// scorecard counts those apart from the remediations.
    const PUTS_BACK: bool = false;
    /// The template properties its change sets (`ReservedConcurrentExecutions`): a resource of a
    /// stack being deployed is left alone, and a change to one is reported as drift. Empty for a
    /// change no template holds (a backup, a message, a stored limit, a put-back to the original).
    const STACK_PROPERTIES: &'static [&'static str] = &[];
    /// What diagnose read, which plan plans from.
    type Diagnosis;
    /// What plan decided to change; apply returns it as it was applied.
    type Change;

    /// The resource it changes: the report's target, and the key of its lease, cooldown and
    /// history.
    fn resource(&self, home: &Home) -> ResourceId;

    /// Whether the resource may be touched (a name pattern or the `runbook:managed` tag): an
    /// `Err` ends the run (skipped, or failed when it could not be told).
    async fn managed(&self, ctx: &RunContext<'_, F>) -> Step<()>;

    /// Whether an earlier record of this runbook on the resource starts a cooldown.
    fn cooldown(&self, _record: &AuditRecord) -> bool {
        true
    }

    /// What its report's evidence is about: the function, table or queue (none for a runbook
    /// that concerns none, or that finishes an earlier change).
    fn evidence_subject(&self) -> Option<crate::evidence::Subject> {
        None
    }

    /// Another resource its change is serialised on (for a live run), besides its own.
    fn serialised_on(&self, _home: &Home) -> Option<ResourceId> {
        None
    }

    /// Reads the resource as it is now (under its lease), and puts what it read in the report.
    async fn diagnose(&self, ctx: &RunContext<'_, F>, report: &mut Report)
    -> Step<Self::Diagnosis>;

    /// Decides the change; pure, so a dry run and the tests see the same plan.
    fn plan(&self, ctx: &RunContext<'_, F>, diagnosis: &Self::Diagnosis) -> Decision<Self::Change>;

    /// The change as the report lists it.
    fn describe(&self, ctx: &RunContext<'_, F>, change: &Self::Change) -> Planned;

    /// What an approval compares of a plan — the state it was made from and its actions — less
    /// what is made or read afresh at every run (a generated name, a message count): the plan
    /// as it was approved, and as it is made again when the approval is carried out.
    fn approval_view(&self, planned: &Planned) -> Planned {
        planned.clone()
    }

    /// The resource as the action's `after` would show it (`None`: the runbook has no state to
    /// compare, so a crashed attempt's change cannot be recognised and is not resumed).
    fn observed(&self, _diagnosis: &Self::Diagnosis) -> Option<Value> {
        None
    }

    /// The change an earlier attempt of this request recorded as `action` (see `observed`).
    fn resumed(&self, _action: &Action) -> Option<Self::Change> {
        None
    }

    /// Makes the change.
    async fn apply(
        &self,
        ctx: &RunContext<'_, F>,
        diagnosis: &Self::Diagnosis,
        change: Self::Change,
    ) -> Result<Self::Change, NotApplied>;

    /// Checks the applied change (and records what follows from it); `summary` is `describe`'s.
    async fn verify(
        &self,
        ctx: &RunContext<'_, F>,
        diagnosis: &Self::Diagnosis,
        change: Self::Change,
        summary: &str,
        report: &mut Report,
    ) -> Ending;
}

/// Runs `runbook` with every guard, in order, and returns its finished report (audit record
/// written, duration set). `report` carries the function, the trigger and the dry-run flag.
/// The run is built on the heap in this frame: a runbook's future is too large to be built in
/// the frames that poll it (a debug build's test thread has 2 MiB).
pub fn run<'a, F: Function, R: Runbook<F> + 'a>(
    ctx: &'a RunContext<'_, F>,
    runbook: R,
    report: Report,
) -> Pin<Box<impl Future<Output = Report> + 'a>> {
    Box::pin(guarded_run(ctx, runbook, report))
}

async fn guarded_run<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: R,
    mut report: Report,
) -> Report {
    let safety = ctx.function.safety();
    let resource = runbook.resource(&safety.config.home);
    report.runbook = Some(R::ID.into());
    report.target = Some(resource.name());
    report.resource = Some(resource.key());
    report.put_back = R::PUTS_BACK;
    tracing::Span::current().record("target", resource.name());
    let reach = reach(ctx, R::ID, &resource, &mut report);
    // A run an approval's event holds besides the approved one only plans, and is no run of
    // its own for the scorecard.
    let logged = ctx
        .invocation
        .approving
        .as_deref()
        .is_none_or(|approving| approving.covers(R::ID, &resource));
    if let Err(ending) = runbook.managed(ctx).await {
        let report = ctx.invocation.timed(report.ended(ending));
        if logged {
            safety
                .audit
                .log_run(&report, ctx.invocation.started_at)
                .await;
        }
        return report;
    }
    let trigger = report.trigger.clone();
    let dry_run = report.dry_run;
    let guarded = async {
        let report = safety
            .guarded(
                &resource,
                report,
                ctx.invocation,
                |record| runbook.cooldown(record),
                async |report: &mut Report| {
                    serialised(ctx, &runbook, &resource, reach, report)
                        .await
                        .unwrap_or_else(|ending| ending)
                },
            )
            .await;
        if logged {
            safety
                .audit
                .log_run(&report, ctx.invocation.started_at)
                .await;
        }
        report
    };
    // Boxed: a run can hold another (api-errors hands a rollback to its runbook in-process).
    safety
        .once(
            F::NAME,
            &trigger,
            dry_run,
            ctx.invocation,
            Box::pin(guarded),
        )
        .await
}

/// How far a run goes, by its runbook's mode and what the invocation carries out.
#[derive(Clone, Copy, Debug)]
enum Reach<'a> {
    /// It acts (auto).
    Acts,
    /// It plans and reports (a dry run, observe, or another run of an approved plan's event):
    /// the report is a dry run's.
    Plans,
    /// It stores its plan for a person to approve (approve).
    AsksApproval,
    /// It carries out this approved plan, when the state is still the one it was made from.
    Carries(&'a Approving),
}

/// The run's reach; a run that only plans is marked a dry run, and one that carries out an
/// approved plan runs under the plan's trigger, once per plan.
fn reach<'a, F: Function>(
    ctx: &RunContext<'a, F>,
    runbook: &str,
    resource: &ResourceId,
    report: &mut Report,
) -> Reach<'a> {
    let mode = ctx.function.safety().config.modes.of(runbook);
    if let Some(approving) = ctx.invocation.approving.as_deref() {
        if approving.covers(runbook, resource) && mode == Mode::Observe {
            // Moved back to observe since the plan was made: nobody's approval makes it act.
            report.dry_run = true;
            report.approval = Some(approving.approval());
            report.notes.push(format!(
                "plan {} was approved, but {runbook} is now in observe mode (RUNBOOK_MODES, DEFAULT_MODE or DRY_RUN): it only plans",
                approving.plan.plan_id
            ));
            return Reach::Plans;
        }
        if approving.covers(runbook, resource) && !report.dry_run {
            report.trigger = TriggerInfo {
                event_id: Some(approving.event_id()),
                ..approving.plan.trigger.clone()
            };
            report.approval = Some(approving.approval());
            return Reach::Carries(approving);
        }
        report.dry_run = true;
        report.notes.push(format!(
            "handled again to carry out approved plan {} ({} on {}): this run only plans",
            approving.plan.plan_id, approving.plan.runbook, approving.plan.target
        ));
        return Reach::Plans;
    }
    if report.dry_run {
        return Reach::Plans;
    }
    match mode {
        Mode::Observe => {
            report.dry_run = true;
            report.notes.push(format!(
                "{runbook} is in observe mode (RUNBOOK_MODES or DEFAULT_MODE): it plans and reports, and changes nothing"
            ));
            Reach::Plans
        }
        Mode::Approve => Reach::AsksApproval,
        Mode::Auto => Reach::Acts,
    }
}

/// Under the resource's lease, and for a live run the lease of what the change is serialised on.
async fn serialised<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    reach: Reach<'_>,
    report: &mut Report,
) -> Step<Ending> {
    let safety = ctx.function.safety();
    let Some(shared) = runbook
        .serialised_on(&safety.config.home)
        .filter(|_| !report.dry_run)
    else {
        return change(ctx, runbook, resource, reach, report).await;
    };
    match safety
        .acquire_waiting(&shared, ctx.invocation, SERIALISED_WAIT)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(skip)) => return Err(Ending::skipped(skip.0)),
        Err(err) => {
            return Err(Ending::failed(format!(
                "could not take the lease on {}, nothing was changed: {err}",
                shared.name()
            )));
        }
    }
    let ended = change(ctx, runbook, resource, reach, report).await;
    safety.release(&shared, false, ctx.invocation).await;
    ended
}

/// Diagnose → plan → act → verify; again from a fresh read when the resource changed under the
/// write, at most `REPLANS` times.
async fn change<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    reach: Reach<'_>,
    report: &mut Report,
) -> Step<Ending> {
    let mut budget = Budget {
        spend: R::BUDGETED,
        spent: false,
    };
    let mut refused = Vec::new();
    // Boxed: its reads run at once, and their futures outgrow a test thread's stack.
    Box::pin(gather_evidence(ctx, runbook)).await;
    while refused.len() < REPLANS {
        // Boxed, as are the steps below: a run can hold another (api-errors hands a rollback
        // to its runbook in-process), and inline they outgrow a thread's stack.
        let diagnosis = Box::pin(runbook.diagnose(ctx, report)).await;
        if let Some(evidence) = ctx.evidence.get() {
            attach(report, evidence);
        }
        let diagnosis = diagnosis?;
        if let Some((change, summary)) = resume(ctx, runbook, resource, &diagnosis, report) {
            return Ok(Box::pin(runbook.verify(ctx, &diagnosis, change, &summary, report)).await);
        }
        let change = match (reach, runbook.plan(ctx, &diagnosis)) {
            (Reach::Carries(approving), Decision::NoAction(now) | Decision::Skip(now)) => {
                return Err(Ending::skipped(format!(
                    "state changed since the plan was made: it was made from {}, and now: {now}; nothing was applied",
                    approving.plan.state["before"]
                )));
            }
            (_, decision) => decision.into_step()?,
        };
        let planned = runbook.describe(ctx, &change);
        let view = runbook.approval_view(&planned);
        if let Reach::Carries(approving) = reach {
            approved_as_made(approving, resource, R::ID, report, &planned, &view)?;
        }
        let summary = planned.summary.clone();
        let apply = runbook.apply(ctx, &diagnosis, change);
        match Box::pin(act(
            ctx,
            resource,
            Plan {
                runbook: R::ID,
                stack_properties: R::STACK_PROPERTIES,
                reach,
                view: &view,
            },
            report,
            planned,
            &mut budget,
            apply,
        ))
        .await?
        {
            Acted::Applied(change) => {
                return Ok(
                    Box::pin(runbook.verify(ctx, &diagnosis, change, &summary, report)).await,
                );
            }
            Acted::ChangedUnder(error) => {
                report
                    .notes
                    .push(format!("planned from a state that changed before the write ({error}): read and planned again"));
                refused.push(error);
            }
        }
    }
    Err(Ending::skipped(format!(
        "{} changed under {REPLANS} plans in a row (a deploy or a person is changing it: {}); nothing was changed, it is left to them: run again once they finish",
        resource.name(),
        refused.join("; ")
    )))
}

/// An approved plan is applied only as it was made: from the same state (the hash of what its
/// actions saw before), with the same actions.
fn approved_as_made(
    approving: &Approving,
    resource: &ResourceId,
    runbook: &str,
    report: &mut Report,
    planned: &Planned,
    view: &Planned,
) -> Step<()> {
    let (state, hash) = crate::approval::state(resource, runbook, view);
    let refused = if hash != approving.plan.state_hash {
        format!(
            "state changed since the plan was made: it was made from {}, and it is now {}; nothing was applied",
            approving.plan.state["before"], state["before"]
        )
    } else if crate::approval::fingerprint(&hash, view) != approving.plan.fingerprint {
        format!(
            "the plan made now differs from the approved one (approved: {}; now: {}); nothing was applied: the runbook plans again at its next trigger",
            approving.plan.summary, planned.summary
        )
    } else {
        return Ok(());
    };
    withheld(report, planned.clone(), Ending::skipped(refused))
}

/// Reads the evidence about the runbook's subject, once per run, before its diagnosis (which
/// may use it: a memory raise needs out-of-memory in the logs).
async fn gather_evidence<F: Function, R: Runbook<F>>(ctx: &RunContext<'_, F>, runbook: &R) {
    let (Some(subject), Some(sources)) =
        (runbook.evidence_subject(), ctx.function.evidence_sources())
    else {
        return;
    };
    let config = &ctx.function.safety().config.evidence;
    let window = crate::evidence::window(ctx.alarm, config, chrono::Utc::now());
    let evidence = Box::pin(crate::evidence::gather(sources, &subject, window, config)).await;
    let _ = ctx.evidence.set(evidence);
}

/// The evidence in the report's `diagnosis.evidence`.
fn attach(report: &mut Report, evidence: &crate::evidence::Evidence) {
    let Ok(evidence) = serde_json::to_value(evidence) else {
        return;
    };
    match report.diagnosis.as_mut().and_then(Value::as_object_mut) {
        Some(diagnosis) => {
            diagnosis.insert("evidence".into(), evidence);
        }
        None => report.diagnosis = Some(serde_json::json!({"evidence": evidence})),
    }
}

/// The change an earlier attempt of this request (Lambda's retry after a crash) made before it
/// stopped, when the resource shows it: it is verified and recorded instead of planned again,
/// which would change the resource a second time and lose its baseline.
fn resume<F: Function, R: Runbook<F>>(
    ctx: &RunContext<'_, F>,
    runbook: &R,
    resource: &ResourceId,
    diagnosis: &R::Diagnosis,
    report: &mut Report,
) -> Option<(R::Change, String)> {
    let observed = runbook.observed(diagnosis)?;
    let mut action = ctx.invocation.landed(resource, &observed)?;
    let change = runbook.resumed(&action)?;
    let summary = runbook.describe(ctx, &change).summary;
    action.applied = true;
    report.notes.push(RESUMED.into());
    report.actions.push(action);
    Some((change, summary))
}

/// What the act step needs to know of the runbook and the run.
#[derive(Clone, Copy)]
struct Plan<'a> {
    runbook: &'static str,
    stack_properties: &'static [&'static str],
    reach: Reach<'a>,
    /// The plan as an approval compares it (`Runbook::approval_view`).
    view: &'a Planned,
}

/// The action budget of one run: spent once, however often it plans.
struct Budget {
    spend: bool,
    spent: bool,
}

enum Acted<C> {
    Applied(C),
    ChangedUnder(String),
}

/// The act step: the budget (an automatic run spends one of its runbook's actions per hour),
/// the dry run (the report lists the exact actions, nothing is written), the kill switch
/// (paused: the actions are listed, nothing is written), the intent on the lease
/// (so that a crashed attempt's retry adopts the change instead of making it twice), the write,
/// and each action marked applied or with its error.
async fn act<F: Function, C>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    plan: Plan<'_>,
    report: &mut Report,
    planned: Planned,
    budget: &mut Budget,
    apply: impl Future<Output = Result<C, NotApplied>>,
) -> Step<Acted<C>> {
    let safety = ctx.function.safety();
    let stack_properties = plan.stack_properties;
    // A plan that asks for approval writes nothing, so the guards of the write wait for the
    // approval, which runs them all.
    let plans_only = report.dry_run || matches!(plan.reach, Reach::AsksApproval);
    // The kill switch, read right before the first write (and again before each write of a
    // re-planned run), and before the budget so that a pause spends none of it: a pause, or a
    // switch that cannot be read, writes nothing. A dry run writes nothing anyway.
    if !plans_only && let Some(paused) = safety.switch.paused().await {
        return withheld(report, planned, Ending::skipped(paused));
    }
    // Still firing? An alarm that recovered since its event is no reason to change anything
    // (a handoff names the alarm that started its sender's run).
    if !plans_only
        && matches!(
            report.trigger.kind,
            TriggerKind::Alarm
                | TriggerKind::AlarmAction
                | TriggerKind::AlarmSns
                | TriggerKind::Handoff
        )
        && let Some(alarm) = report.trigger.name.clone()
    {
        match crate::recheck::alarm_now(ctx.function.alarms(), &alarm).await {
            Ok(AlarmNow::Firing) => {}
            Ok(AlarmNow::Gone) => report.notes.push(format!(
                "alarm {alarm} could not be found to re-check before acting (deleted since its event, or an event sent by hand): acted on the event as delivered"
            )),
            Ok(AlarmNow::NotFiring(now)) => {
                return withheld(report, planned, Ending::new(
                    Outcome::NoAction,
                    format!("recovered before acting: alarm {alarm} is {now}; nothing was changed"),
                ));
            }
            Err(err) => {
                return withheld(report, planned, Ending::failed(format!(
                    "could not re-read alarm {alarm} right before acting, so nothing was changed: {err}"
                )));
            }
        }
    }
    // A resource of a stack being deployed is the deploy's; one of a stack at rest is changed,
    // and the report hands the drift back. A stack that cannot be read stops the write.
    let owner = match (ctx.function.stacks(), resource.physical_id()) {
        (Some(cloudformation), Some(physical_id))
            if !plans_only && !stack_properties.is_empty() =>
        {
            match crate::ownership::owner_of(cloudformation, &physical_id).await {
                Ok(owner) => owner,
                Err(err) => {
                    return withheld(
                        report,
                        planned,
                        Ending::failed(format!(
                            "could not tell whether {} belongs to a stack being deployed, so nothing was changed: {err}",
                            resource.name()
                        )),
                    );
                }
            }
        }
        _ => None,
    };
    if let Some(owner) = owner.as_ref().filter(|owner| owner.deploying()) {
        return withheld(
            report,
            planned,
            Ending::skipped(format!(
                "a deployment is in progress on stack {} ({}), which owns {} as {}: a change now would fight it; once it finishes, a person can run the runbook by hand (an alarm that stays in ALARM does not fire again)",
                owner.stack,
                owner.stack_status,
                resource.name(),
                owner.logical_id
            )),
        );
    }
    // A resource that automatic runs keep changing waits for a person (before the budget, so
    // that it spends none). A put-back (not budgeted) finishes an earlier change and is let by.
    if !plans_only && budget.spend {
        match safety.repeat_brake(resource, report).await {
            Ok(Ok(())) => {}
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.0));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not read the resource's recent changes for the repeat brake, nothing was changed: {err}"
                )));
            }
        }
    }
    // The fleet-wide brake, before the budget (a braked run spends none of it). A slot it
    // gives is given back when the run writes nothing after all, so the window counts only
    // changes made. Put-backs (not budgeted) finish earlier changes and are let by.
    let slot = if !plans_only && budget.spend {
        match safety.change_brake(resource, report).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.0));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not check the change brake, nothing was changed: {err}"
                )));
            }
        }
    } else {
        None
    };
    // Boxed: with the checks above inline, the future outgrows a test thread's stack.
    let acted = Box::pin(write(
        ctx, resource, plan, owner, report, planned, budget, apply,
    ))
    .await;
    if let Some(slot) = slot
        && !matches!(acted, Ok(Acted::Applied(_)))
        && let Err(err) = safety.audit.release_change(&resource.key(), slot).await
    {
        tracing::warn!(error = %err, "a change brake slot was not given back; it lapses with the window");
    }
    acted
}

/// Ends a run before its write: the plan is listed in the report, none of it applied.
fn withheld<T>(report: &mut Report, planned: Planned, ending: Ending) -> Step<T> {
    report
        .actions
        .extend(planned.actions.into_iter().chain(planned.then));
    Err(ending)
}

/// The rest of the act step, once the brakes let the change through: the budget, the dry run,
/// the switch read again, the intent, the write.
#[allow(clippy::too_many_arguments)]
async fn write<F: Function, C>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    plan: Plan<'_>,
    owner: Option<crate::ownership::Owner>,
    report: &mut Report,
    planned: Planned,
    budget: &mut Budget,
    apply: impl Future<Output = Result<C, NotApplied>>,
) -> Step<Acted<C>> {
    let safety = ctx.function.safety();
    let stack_properties = plan.stack_properties;
    let asks_approval = matches!(plan.reach, Reach::AsksApproval);
    if budget.spend && !budget.spent && !asks_approval {
        match safety.spend_budget(report).await {
            Ok(Ok(())) => budget.spent = true,
            Ok(Err(skip)) => {
                return withheld(report, planned, Ending::skipped(skip.0));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not check the action budget, nothing was changed: {err}"
                )));
            }
        }
    }
    if report.dry_run {
        let would = format!("dry run: would have {}", planned.summary);
        return withheld(report, planned, Ending::new(Outcome::Planned, would));
    }
    if asks_approval {
        let asked = Box::pin(ask_approval(
            ctx,
            resource,
            plan.runbook,
            report,
            &planned,
            plan.view,
        ))
        .await;
        return withheld(report, planned, asked);
    }
    // Read again: the checks above took their time, and a pause engaged meanwhile holds.
    if let Some(paused) = safety.switch.paused().await {
        return withheld(report, planned, Ending::skipped(paused));
    }
    if let Some(first) = planned.actions.first()
        && let Err(err) = safety.record_intent(resource, ctx.invocation, first).await
    {
        return Err(Ending::failed(format!(
            "could not record the change about to be made, so nothing was changed: {err}"
        )));
    }
    match apply.await {
        Ok(change) => {
            report
                .actions
                .extend(planned.actions.into_iter().map(|action| Action {
                    applied: true,
                    ..action
                }));
            if let Some(owner) = owner {
                let drift = crate::ownership::StackDrift::new(owner, stack_properties);
                report.notes.push(drift.note.clone());
                report.stack_drift = Some(drift);
            }
            Ok(Acted::Applied(change))
        }
        Err(NotApplied::ChangedUnder { error }) => Ok(Acted::ChangedUnder(error)),
        Err(NotApplied::Failed { error, reason }) => {
            report
                .actions
                .extend(planned.actions.into_iter().map(|action| Action {
                    error: Some(error.clone()),
                    ..action
                }));
            Err(Ending::failed(reason))
        }
    }
}

/// Stores the plan for a person's approval (or points at the same plan already awaiting one),
/// and ends the run `awaiting_approval` with the commands that decide it.
async fn ask_approval<F: Function>(
    ctx: &RunContext<'_, F>,
    resource: &ResourceId,
    runbook: &str,
    report: &mut Report,
    planned: &Planned,
    view: &Planned,
) -> Ending {
    let safety = ctx.function.safety();
    let Some(event) = ctx.invocation.event.as_deref() else {
        return Ending::failed(
            "the plan cannot be stored for approval without the event that made it; nothing was changed",
        );
    };
    let (state, state_hash) = crate::approval::state(resource, runbook, view);
    let fingerprint = crate::approval::fingerprint(&state_hash, view);
    let last = safety
        .audit
        .last_plan(runbook, &resource.key(), &fingerprint)
        .await;
    let (plan, already_requested) = match last {
        Ok(Some(open))
            if open.status == ApprovalStatus::Requested
                && open.plan.expires_at > chrono::Utc::now() =>
        {
            (open.plan, true)
        }
        // A person said no to exactly this plan from exactly this state: not asked again
        // until something changes.
        Ok(Some(denied)) if denied.status == ApprovalStatus::Denied => {
            return Ending::skipped(format!(
                "denied by {}: the same plan from the same state ({}) was denied at {}{}; not asked again until the state changes",
                denied.decided_by.as_deref().unwrap_or("?"),
                denied.plan.plan_id,
                denied.decided_at.as_deref().unwrap_or("?"),
                denied
                    .decided_reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            ));
        }
        Ok(_) => {
            let now = chrono::Utc::now();
            let plan = crate::audit::Plan {
                plan_id: uuid::Uuid::new_v4().to_string(),
                function: F::NAME.to_string(),
                runbook: runbook.to_string(),
                resource: resource.key(),
                target: resource.name(),
                state_hash,
                state,
                fingerprint: fingerprint.clone(),
                actions: planned.actions.clone(),
                then: planned.then.clone(),
                summary: planned.summary.clone(),
                trigger: report.trigger.clone(),
                event: event.clone(),
                created_at: now,
                expires_at: now + safety.config.approval_window,
            };
            if let Err(err) = safety.audit.put_plan(&plan, &fingerprint).await {
                return Ending::failed(format!(
                    "could not store the plan for approval, so nothing was changed: {err}"
                ));
            }
            (plan, false)
        }
        Err(err) => {
            return Ending::failed(format!(
                "could not look up the plans awaiting approval on {}, so nothing was changed: {err}",
                resource.name()
            ));
        }
    };
    let function = safety.config.function_name.as_deref().unwrap_or(F::NAME);
    let expires_at = crate::audit::timestamp(plan.expires_at);
    if already_requested {
        report.notes.push(format!(
            "the same plan ({}) awaits approval since {}: not asked again",
            plan.plan_id,
            crate::audit::timestamp(plan.created_at)
        ));
    }
    report.approval = Some(Approval {
        plan_id: plan.plan_id.clone(),
        status: ApprovalStatus::Requested,
        state_hash: plan.state_hash.clone(),
        expires_at: expires_at.clone(),
        by: None,
        reason: None,
        // The function is invoked where it runs: the hub's region, whatever the plan's.
        commands: Some(crate::approval::commands(
            function,
            &safety.config.hub.region,
            &plan.plan_id,
        )),
        already_requested,
    });
    Ending::new(
        Outcome::AwaitingApproval,
        format!(
            "awaiting approval: would have {}; plan {} can be approved or denied until {expires_at} (approval.commands)",
            planned.summary, plan.plan_id
        ),
    )
}
