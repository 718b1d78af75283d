//! The one path every runbook takes (`run`), so that each guard is written once, in this order:
//!
//! managed → idempotency → lease → cooldown → evidence → diagnose → plan → (kill switch, alarm
//! re-check, owning stack, repeat and change brakes) → budget → mode (observe: planned;
//! approve: the plan stored for a person) → intent → apply → verify. An approved plan comes
//! back through the same path, and is applied only if it is the plan made again.
//!
//! A runbook says how to read, plan, write and check its resource (`Runbook`); `run` decides when
//! each of those happens and what stops it. A new guard (a kill switch, a brake, an approval
//! mode, a re-check before the write) is a change to `run` or `act` here, not to the runbooks.

mod act;
mod approve;
pub mod evidence;
mod run;

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use crate::guards::Safety;
use crate::model::{
    Action, AlarmTrigger, Decision, Ending, Home, Invocation, NotApplied, Planned, Report,
    ResourceId, Step,
};
use crate::store::AuditRecord;

pub use run::guarded;

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
    fn evidence_sources(&self) -> Option<crate::path::evidence::Sources<'_>> {
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
    pub evidence: std::sync::OnceLock<crate::model::Evidence>,
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

/// How many plans a run makes when its resource changes under its writes: the first, and one
/// again from a fresh read; a resource that changed under both is left to whoever changes it.
pub const REPLANS: usize = 2;

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
    fn evidence_subject(&self) -> Option<crate::model::Subject> {
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

    /// What a person's denial of a plan answers: a later plan of the same question is not
    /// asked again while the denied one stands. By default the plan as an approval compares
    /// it; a runbook whose approval view leaves out what makes a new question (new messages
    /// in a DLQ) says so here.
    fn denial_question(&self, planned: &Planned) -> Value {
        serde_json::to_value(&self.approval_view(planned).actions).unwrap_or(Value::Null)
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
    Box::pin(run::guarded_run(ctx, runbook, report))
}

/// How far a run goes, by its runbook's mode and what the invocation carries out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reach<'a> {
    /// It acts (auto).
    Acts,
    /// It plans and reports (a dry run, observe, or another run of an approved plan's event):
    /// the report is a dry run's.
    Plans,
    /// It stores its plan for a person to approve (approve).
    AsksApproval,
    /// It carries out this approved plan, when the state is still the one it was made from.
    Carries(&'a crate::model::Approving),
}

/// Ends a run before its write: the plan is listed in the report, none of it applied.
pub(crate) fn withheld<T>(report: &mut Report, planned: Planned, ending: Ending) -> Step<T> {
    report
        .actions
        .extend(planned.actions.into_iter().chain(planned.then));
    Err(ending)
}
