//! The model: what the automation reasons about, as plain data with no AWS calls. Places and
//! resource identities (one per resource, ARNs parsed here), triggers, the plan of a change,
//! the report and its verification, approvals, the refusals and skips that stop a run, and the
//! settings every function shares. Imports nothing of the crate but its foundation (`config`,
//! `aws`, `deadline`).

mod approval;
mod arn;
mod drift;
mod evidence;
mod handoff;
mod invocation;
mod managed;
mod modes;
mod outcome;
mod payload;
mod place;
mod plan;
mod refusal;
mod report;
mod resource;
mod settings;
mod time;
mod trigger;
mod verification;

pub use approval::{
    Approval, ApprovalCommands, ApprovalRequest, ApprovalStatus, Approving, Plan, PlanRecord,
    approval_commands, approval_event_id, fingerprint, plan_state,
};
pub use arn::Arn;
pub use drift::{Owner, StackDrift};
pub use evidence::{ErrorCount, Evidence, EvidenceConfig, Figures, Logs, RecentChange, Subject};
pub use handoff::{
    DETAIL_TYPE as HANDOFF, DYNAMODB_CAPACITY, Handoff, HandoffTarget, LAMBDA_CONCURRENCY,
    LIMIT_SCALER,
};
pub use invocation::{Invocation, RESUMED};
pub use managed::{MANAGED_TAG_KEY, ManagedPolicy, glob_match};
pub use modes::{Mode, Modes, RUNBOOKS};
pub use outcome::Outcome;
pub use payload::{parse_manual, parse_runbook_request};
pub use place::{FleetConfig, Home};
pub use plan::{Action, Decision, NotApplied, Planned};
pub use refusal::{Earlier, Ending, Rejection, Skip, Step, concluded};
pub use report::{Escalation, LIST_CAP, Output, Report, capped, some_of};
pub use resource::{Resource, ResourceId};
pub use settings::SafetyConfig;
pub use time::timestamp;
pub use trigger::{
    AlarmState, AlarmTrigger, Composite, MetricRef, Origin, ScheduleTrigger, Trigger, TriggerInfo,
    TriggerKind,
};
pub use verification::{AWAITED, AwaitedMetric, Check, SettleBy, Verification, VerificationStatus};
