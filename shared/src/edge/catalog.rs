//! A function's catalog: what it does with each kind of trigger. Each function's `lib.rs`
//! implements it once; the edge (`answer`) takes every event through admission, approvals,
//! controls, SNS confirmation and composite alarms to it, so no function repeats that routing
//! and nothing in `shared` calls back into a function by any other way.

use serde_json::{Map, Value};

use crate::model::{AlarmTrigger, Handoff, Invocation, Output, Report, TriggerInfo};
use crate::path::Function;

// The functions serve one invocation at a time (edge/runtime.rs): no auto-trait bound
// is wanted on these futures.
#[allow(async_fn_in_trait)]
pub trait Catalog: Function {
    /// What it answers: one report, or one per resource for a sweep.
    type Answer: From<Report> + Into<Output>;
    /// The triggers it takes, as its refusal of the others says them ("SQS depth alarms,
    /// schedules and manual payloads").
    const TAKES: &'static str;
    /// Whether its schedule runs in every account and region of a fleet, each place alone
    /// (otherwise only where the schedule is).
    const SCHEDULE_EVERYWHERE: bool = false;

    /// An alarm, confirmed when SNS delivered it, or one child of a composite in ALARM.
    async fn on_alarm(
        &self,
        alarm: &AlarmTrigger,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report;

    /// A person's payload (neither a control nor a decision on a plan), parsed by the function.
    async fn on_request(
        &self,
        payload: Map<String, Value>,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Self::Answer;

    async fn on_schedule(&self, info: TriggerInfo, invocation: &Invocation) -> Self::Answer {
        refused::<Self>(info, invocation, "schedules".into()).into()
    }

    /// A `Runbook Handoff` another function's runbook sent for this one.
    async fn on_handoff(
        &self,
        handoff: Handoff,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let said = format!(
            "handoffs (one for {} reached it: check the template's handoff rule)",
            handoff.to
        );
        refused::<Self>(info, invocation, said)
    }

    /// A `CloudFormation Stack Status Change` event's detail.
    async fn on_stack_event(
        &self,
        detail: Value,
        info: TriggerInfo,
        invocation: &Invocation,
    ) -> Report {
        let _ = detail;
        refused::<Self>(info, invocation, "stack events".into())
    }
}

/// The refusal of a trigger the function does not take.
fn refused<F: Catalog + ?Sized>(
    info: TriggerInfo,
    invocation: &Invocation,
    what: String,
) -> Report {
    invocation.timed(Report::rejected(
        F::NAME,
        info,
        format!("{} acts on {}, not on {what}", F::NAME, F::TAKES),
    ))
}
