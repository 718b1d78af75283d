//! Runbook `stack-recovery`: a CloudFormation stack stuck in UPDATE_ROLLBACK_FAILED
//! (ContinueUpdateRollback), in an update that never ends (CancelUpdateStack), or failed with
//! rollback disabled (RollbackStack); a failed create is reported, not touched.
//!
//! Diagnose (the stack's status and how long it has been in it, the failing resources' reasons)
//! → plan (which recovery, if any) → act → verify (the stack in a stable state; one still in
//! progress at the deadline is settled by the health-prober's sweep).

use aws_sdk_cloudformation::types::Stack;
use chrono::Utc;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::model::Rejection;
use runbook_shared::model::{Check, Report, SettleBy, Verification, VerificationStatus};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Responder;
use crate::config::ResponderConfig;

pub const RUNBOOK: &str = "stack-recovery";

/// The manual payload: `{"stack": "orders", "resources_to_skip": ["OrdersTable"], "dry_run":
/// true}` (`"runbook": "stack-recovery"` may be given too).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub stack: String,
    #[serde(default)]
    pub resources_to_skip: Vec<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The stack to recover, and the resources a person chose to skip.
#[derive(Clone, Debug, PartialEq)]
pub struct StackRecovery {
    pub stack: String,
    pub resources_to_skip: Vec<String>,
}

impl StackRecovery {
    pub fn from_request(request: &Request, home: &Home) -> Result<Self, Rejection> {
        Ok(Self {
            stack: stack_of(&request.stack, home)?,
            resources_to_skip: request.resources_to_skip.clone(),
        })
    }

    /// A stack named by an alarm's tag `stack`, or by a stack status change event.
    pub fn named(stack: &str, home: &Home) -> Result<Self, Rejection> {
        Ok(Self {
            stack: stack_of(stack, home)?,
            resources_to_skip: Vec::new(),
        })
    }
}

/// A stack named by name or stack id.
fn stack_of(text: &str, home: &Home) -> Result<String, Rejection> {
    match home.parse_stack(text)?.resource {
        Resource::Stack { stack } => Ok(stack),
        _ => Err(Rejection(format!("{text:?} is not a CloudFormation stack"))),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RecoveryKind {
    ContinueRollback,
    CancelUpdate,
    Rollback,
}

impl RecoveryKind {
    fn api(self) -> &'static str {
        match self {
            RecoveryKind::ContinueRollback => "cloudformation:ContinueUpdateRollback",
            RecoveryKind::CancelUpdate => "cloudformation:CancelUpdateStack",
            RecoveryKind::Rollback => "cloudformation:RollbackStack",
        }
    }

    /// The AWS CLI command a person runs instead.
    fn command(self, stack: &str, resources_to_skip: &[String]) -> String {
        match self {
            RecoveryKind::ContinueRollback if resources_to_skip.is_empty() => {
                format!("aws cloudformation continue-update-rollback --stack-name {stack}")
            }
            RecoveryKind::ContinueRollback => format!(
                "aws cloudformation continue-update-rollback --stack-name {stack} --resources-to-skip {}",
                resources_to_skip.join(" ")
            ),
            RecoveryKind::CancelUpdate => {
                format!("aws cloudformation cancel-update-stack --stack-name {stack}")
            }
            RecoveryKind::Rollback => {
                format!("aws cloudformation rollback-stack --stack-name {stack}")
            }
        }
    }
}

/// What a recovery reads.
pub struct Diagnosis {
    status: String,
    minutes: i64,
    /// The stack's service role (`RoleARN`), which CloudFormation uses for the recovery.
    service_role: Option<String>,
    /// The failing resources' reasons, as the report quotes them.
    quoted: String,
}

/// The recovery of a stack in `status` for `minutes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovery {
    pub kind: RecoveryKind,
    pub status: String,
    pub minutes: i64,
}

/// Plans the recovery of stack `name` in `status` for `minutes` (`quoted`: its failing
/// resources, as a report quotes them; `service_role`: the stack's `RoleARN`); pure.
pub fn plan(
    name: &str,
    (status, minutes, service_role): (&str, i64, Option<&str>),
    quoted: &str,
    resources_to_skip: &[String],
    config: &ResponderConfig,
) -> Decision<Recovery> {
    let kind = match status {
        "UPDATE_ROLLBACK_FAILED" => RecoveryKind::ContinueRollback,
        "UPDATE_FAILED" => RecoveryKind::Rollback,
        "UPDATE_IN_PROGRESS" if minutes > config.stack_stuck_minutes => RecoveryKind::CancelUpdate,
        "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" => {
            return Decision::NoAction(format!(
                "stack {name} is {status}: its creation failed, and a failed create cannot be recovered in place; fix the cause, delete the stack and create it again{quoted}"
            ));
        }
        in_progress if in_progress.ends_with("_IN_PROGRESS") => {
            return Decision::NoAction(format!(
                "stack {name} has been {status} for {minutes} min, within STACK_STUCK_MINUTES={}: let it finish",
                config.stack_stuck_minutes
            ));
        }
        _ => {
            return Decision::NoAction(format!("stack {name} is {status}: nothing to recover"));
        }
    };
    if !resources_to_skip.is_empty() && kind != RecoveryKind::ContinueRollback {
        return Decision::Skip(format!(
            "\"resources_to_skip\" only applies to a stack in UPDATE_ROLLBACK_FAILED, and {name} is {status}: nothing was changed"
        ));
    }
    // Without a service role CloudFormation recovers with the caller's session: this
    // function's, which has no rights on the stack's resources, so the recovery would fail
    // again and leave the stack worse off. The stack's deployers have them.
    if service_role.is_none_or(str::is_empty) {
        return Decision::NoAction(format!(
            "stack {name} is {status}{quoted}, but it has no service role (RoleARN): CloudFormation would recover it with this function's credentials, which cannot change the stack's resources; someone who can deploy the stack runs: {}",
            kind.command(name, resources_to_skip)
        ));
    }
    Decision::Act(Recovery {
        kind,
        status: status.to_string(),
        minutes,
    })
}

impl Responder {
    async fn stack(&self, name: &str) -> Result<Option<Stack>, AwsError> {
        match self
            .clients
            .cloudformation
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
        {
            Ok(output) => Ok(output.stacks().first().cloned()),
            Err(err) => {
                let err = AwsError::from_sdk(
                    "cloudformation:DescribeStacks",
                    &format!("stack {name}"),
                    &err,
                );
                if err.is(FaultKind::NotFound) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The stack as it is; one that does not exist ends the run.
    async fn existing_stack(&self, name: &str) -> Step<Stack> {
        match self.stack(name).await {
            Ok(Some(stack)) => Ok(stack),
            Ok(None) => Err(Ending::failed(format!(
                "stack {name} does not exist in this region; nothing was changed"
            ))),
            Err(err) => Err(Ending::failed(format!(
                "could not read stack {name}, nothing was changed: {err}"
            ))),
        }
    }

    /// The failing resources' status reasons, newest first.
    async fn failures(&self, name: &str) -> Result<Vec<Value>, AwsError> {
        let events = self
            .clients
            .cloudformation
            .describe_stack_events()
            .stack_name(name)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "cloudformation:DescribeStackEvents",
                    &format!("stack {name}"),
                    &err,
                )
            })?;
        Ok(events
            .stack_events()
            .iter()
            .filter(|e| e.resource_status().is_some_and(|s| s.as_str().ends_with("_FAILED")))
            .filter(|e| e.logical_resource_id() != Some(name))
            .take(10)
            .map(|e| json!({"resource": e.logical_resource_id(), "status": e.resource_status().map(|s| s.as_str()), "reason": e.resource_status_reason()}))
            .collect())
    }

    async fn recover(
        &self,
        name: &str,
        kind: RecoveryKind,
        skip: &[String],
    ) -> Result<(), AwsError> {
        let stacks = &self.clients.cloudformation;
        match kind {
            RecoveryKind::ContinueRollback => stacks
                .continue_update_rollback()
                .stack_name(name)
                .set_resources_to_skip((!skip.is_empty()).then(|| skip.to_vec()))
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(kind.api(), &format!("stack {name}"), &err)),
            RecoveryKind::CancelUpdate => stacks
                .cancel_update_stack()
                .stack_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(kind.api(), &format!("stack {name}"), &err)),
            RecoveryKind::Rollback => stacks
                .rollback_stack()
                .stack_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(kind.api(), &format!("stack {name}"), &err)),
        }
    }
}

fn status_of(stack: &Stack) -> String {
    stack
        .stack_status()
        .map_or("UNKNOWN", |s| s.as_str())
        .to_string()
}

impl Runbook<Responder> for StackRecovery {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = Diagnosis;
    type Change = Recovery;

    fn resource(&self, home: &Home) -> ResourceId {
        home.stack(&self.stack)
    }

    async fn managed(&self, ctx: &RunContext<'_, Responder>) -> Step<()> {
        let stack = ctx.existing_stack(&self.stack).await?;
        let tags = stack
            .tags()
            .iter()
            .filter_map(|tag| Some((tag.key()?, tag.value()?)));
        ctx.config
            .safety
            .managed
            .require_tagged("stack", &self.stack, tags)
    }

    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Responder>,
        report: &mut Report,
    ) -> Step<Diagnosis> {
        let name = &self.stack;
        let stack = ctx.existing_stack(name).await?;
        let status = status_of(&stack);
        let since = stack
            .last_updated_time()
            .or(stack.creation_time())
            .map_or_else(|| Utc::now().timestamp(), |t| t.secs());
        let minutes = (Utc::now().timestamp() - since) / 60;
        let failures = match ctx.failures(name).await {
            Ok(failures) => failures,
            Err(err) => vec![json!({"error": err.to_string()})],
        };
        let reasons = failures
            .iter()
            .filter_map(|f| {
                Some(format!(
                    "{} {}: {}",
                    f["resource"].as_str()?,
                    f["status"].as_str()?,
                    f["reason"].as_str().unwrap_or("no reason given")
                ))
            })
            .collect::<Vec<_>>()
            .join("; ");
        report.diagnosis = Some(
            json!({"status": status, "minutes_in_status": minutes, "failing_resources": failures, "service_role": stack.role_arn()}),
        );
        let quoted = if reasons.is_empty() {
            String::new()
        } else {
            format!(" (failing resources: {reasons})")
        };
        Ok(Diagnosis {
            status,
            minutes,
            service_role: stack.role_arn().map(str::to_string),
            quoted,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Recovery> {
        let name = &self.stack;
        plan(
            name,
            (&d.status, d.minutes, d.service_role.as_deref()),
            &d.quoted,
            &self.resources_to_skip,
            &ctx.config,
        )
    }

    fn describe(&self, _: &RunContext<'_, Responder>, recovery: &Recovery) -> Planned {
        let name = &self.stack;
        let summary = match recovery.kind {
            RecoveryKind::ContinueRollback if self.resources_to_skip.is_empty() => {
                format!("continued the update rollback of {name}")
            }
            RecoveryKind::ContinueRollback => format!(
                "continued the update rollback of {name}, skipping {}",
                self.resources_to_skip.join(", ")
            ),
            RecoveryKind::CancelUpdate => format!(
                "cancelled the update of {name}, stuck for {} min",
                recovery.minutes
            ),
            RecoveryKind::Rollback => format!("rolled back the failed update of {name}"),
        };
        Planned::one(
            recovery.kind.api(),
            name,
            json!({"status": recovery.status}),
            json!({"status": "a stable state"}),
            summary,
        )
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
        recovery: Recovery,
    ) -> Result<Recovery, NotApplied> {
        let name = &self.stack;
        ctx.recover(name, recovery.kind, &self.resources_to_skip)
            .await
            .map_err(|err| {
                NotApplied::explained(
                    &err,
                    format!(
                        "could not recover {name}; nothing was changed: {err}{}",
                        d.quoted
                    ),
                )
            })?;
        Ok(recovery)
    }

    /// Waits for a stable state; one still in progress at the deadline is left for the sweep.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
        _: Recovery,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        let name = &self.stack;
        let settled = poll_until(
            ctx.invocation.wait_deadline(),
            ctx.poll_interval,
            || async {
                match ctx.stack(name).await {
                    Ok(Some(stack)) => {
                        let now = status_of(&stack);
                        (!now.ends_with("_IN_PROGRESS")).then_some(Ok(now))
                    }
                    Ok(None) => Some(Ok("DELETED".to_string())),
                    Err(err) => Some(Err(err)),
                }
            },
        )
        .await;
        let (status, observed) = match settled {
            Some(Ok(now)) if now.ends_with("_COMPLETE") && now != "ROLLBACK_COMPLETE" => {
                (VerificationStatus::Verified, now)
            }
            Some(Ok(now)) => (VerificationStatus::Failed, now),
            Some(Err(err)) => (
                VerificationStatus::Failed,
                format!("DescribeStacks failed: {err}"),
            ),
            None => (
                VerificationStatus::Pending,
                "still in progress at the deadline".to_string(),
            ),
        };
        if let Some(action) = report.actions.last_mut() {
            action.after = json!({"status": observed});
        }
        let expected = "a stable *_COMPLETE state";
        let check = match status {
            VerificationStatus::Pending => Check::awaited("stack_stable", expected),
            _ => Check::new(
                "stack_stable",
                status == VerificationStatus::Verified,
                expected,
                observed.clone(),
            ),
        };
        report.verification = Verification {
            status,
            checks: vec![check],
            settle_by: (status == VerificationStatus::Pending)
                .then(|| SettleBy::Stack { name: name.clone() }),
        };
        let quoted = &d.quoted;
        match status {
            VerificationStatus::Failed => {
                Ending::failed(format!("{summary}, but the stack is {observed}{quoted}"))
            }
            _ => Ending::remediated(format!("{summary}: now {observed}{quoted}")),
        }
    }
}
