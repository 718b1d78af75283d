//! The way every event goes to the function's catalog: a decision on a plan is carried out here
//! (an approval handles its plan's event again), anything else is admitted and handed to the
//! catalog entry of its trigger; a control payload is served by the switch, an alarm confirmed
//! and followed through composites first.

use super::catalog::Catalog;
use super::recognise::Recognised;
use super::{alarms, approvals, controls};
use crate::model::{Invocation, Report, Trigger, TriggerInfo, TriggerKind};

/// The function's answer to one event, recognised where it entered. Never fails: bad input is a
/// report.
pub async fn answer<F: Catalog>(
    function: &F,
    recognised: Recognised,
    invocation: &Invocation,
) -> F::Answer {
    let invocation = invocation.handling(&recognised.event);
    let Ok(Trigger::Approval(payload)) = &recognised.trigger else {
        // On the heap: the runbooks' futures are too large for a small thread stack.
        return Box::pin(dispatch(function, recognised, &invocation)).await;
    };
    let replay: approvals::Replay<'_> = Box::new(move |event, invocation| {
        // Its own box: a run can hold another (api-errors hands a rollback over in-process).
        Box::pin(async move {
            Box::pin(dispatch(function, Recognised::of(event), &invocation))
                .await
                .into()
        })
    });
    approvals::serve(function.safety(), F::NAME, payload, &invocation, replay)
        .await
        .into()
}

/// Hands an admitted trigger to its catalog entry. Takes no decision on a plan (an approval's
/// own event is never one), so an approval cannot recurse.
async fn dispatch<F: Catalog>(
    function: &F,
    recognised: Recognised,
    invocation: &Invocation,
) -> F::Answer {
    let trigger = match recognised.admitted(&function.safety().config) {
        Ok(trigger) => trigger,
        Err(rejection) => {
            let info = TriggerInfo {
                kind: TriggerKind::Unknown,
                name: None,
                event_id: None,
            };
            return invocation
                .timed(Report::rejected(F::NAME, info, rejection.0))
                .into();
        }
    };
    let info = trigger.info(&invocation.request_id);
    match trigger {
        Trigger::Alarm(alarm) => Box::pin(alarms::handle(function, alarm, info, invocation))
            .await
            .into(),
        Trigger::Control(payload) => controls::control(
            &function.safety().switch,
            F::NAME,
            &payload,
            info,
            invocation,
        )
        .await
        .into(),
        Trigger::Approval(_) => approvals::refused(F::NAME, info, invocation).into(),
        Trigger::Manual(payload) => function.on_request(payload, info, invocation).await,
        Trigger::Schedule(_) => function.on_schedule(info, invocation).await,
        Trigger::Handoff(handoff) => function.on_handoff(handoff, info, invocation).await.into(),
        Trigger::StackEvent { detail, .. } => function
            .on_stack_event(detail, info, invocation)
            .await
            .into(),
    }
}
