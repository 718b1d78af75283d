//! Runbook `stack-recovery`: a CloudFormation stack stuck in UPDATE_ROLLBACK_FAILED
//! (ContinueUpdateRollback), in an update that never ends (CancelUpdateStack), or failed with
//! rollback disabled (RollbackStack); a failed create is reported, not touched.

use aws_sdk_cloudformation::types::Stack;
use chrono::Utc;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::poll_until;
use runbook_shared::report::{
    Action, Check, Outcome, Report, SettleBy, Verification, VerificationStatus,
};
use runbook_shared::safety::Invocation;
use serde_json::{Value, json};

use crate::Responder;

pub const RUNBOOK: &str = "stack-recovery";

#[derive(Clone, Debug, PartialEq)]
enum Recovery {
    ContinueRollback,
    CancelUpdate,
    Rollback,
}

impl Recovery {
    fn api(&self) -> &'static str {
        match self {
            Recovery::ContinueRollback => "cloudformation:ContinueUpdateRollback",
            Recovery::CancelUpdate => "cloudformation:CancelUpdateStack",
            Recovery::Rollback => "cloudformation:RollbackStack",
        }
    }
}

impl Responder {
    async fn stack(&self, name: &str) -> Result<Option<Stack>, AwsError> {
        match self
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

    /// The failing resources' status reasons, newest first.
    async fn failures(&self, name: &str) -> Result<Vec<Value>, AwsError> {
        let events = self
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

    pub async fn recover_stack(
        &self,
        name: &str,
        resources_to_skip: &[String],
        report: Report,
        invocation: &Invocation,
    ) -> Report {
        let stack = match self.stack(name).await {
            Ok(Some(stack)) => stack,
            Ok(None) => {
                return report.finish(
                    Outcome::Failed,
                    format!("stack {name} does not exist in this region; nothing was changed"),
                );
            }
            Err(err) => {
                return report.finish(
                    Outcome::Failed,
                    format!("could not read stack {name}, nothing was changed: {err}"),
                );
            }
        };
        let policy = &self.config.safety.managed;
        let tagged = policy.tags_allow(
            stack
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?, tag.value()?))),
        );
        if !policy.matches_name(name) && !tagged {
            return report.finish(Outcome::Skipped, policy.refusal("stack", name));
        }
        let resource = self.config.safety.home.stack(name);
        self.guarded(&resource, report, invocation, |report| {
            self.recover_admitted(name, stack, resources_to_skip, report, invocation)
        })
        .await
    }

    async fn recover_admitted(
        &self,
        name: &str,
        stack: Stack,
        resources_to_skip: &[String],
        mut report: Report,
        invocation: &Invocation,
    ) -> Report {
        let status = stack
            .stack_status()
            .map_or("UNKNOWN", |s| s.as_str())
            .to_string();
        let since = stack
            .last_updated_time()
            .or(stack.creation_time())
            .map_or_else(|| Utc::now().timestamp(), |t| t.secs());
        let minutes = (Utc::now().timestamp() - since) / 60;
        let failures = match self.failures(name).await {
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
            json!({"status": status, "minutes_in_status": minutes, "failing_resources": failures}),
        );
        let quoted = if reasons.is_empty() {
            String::new()
        } else {
            format!(" (failing resources: {reasons})")
        };
        let recovery = match status.as_str() {
            "UPDATE_ROLLBACK_FAILED" => Recovery::ContinueRollback,
            "UPDATE_FAILED" => Recovery::Rollback,
            "UPDATE_IN_PROGRESS" if minutes > self.config.stack_stuck_minutes => {
                Recovery::CancelUpdate
            }
            "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" => {
                return report.finish(Outcome::NoAction,
                    format!(
                        "stack {name} is {status}: its creation failed, and a failed create cannot be recovered in place; fix the cause, delete the stack and create it again{quoted}"
                    ),
                );
            }
            in_progress if in_progress.ends_with("_IN_PROGRESS") => {
                return report.finish(Outcome::NoAction,
                    format!(
                        "stack {name} has been {status} for {minutes} min, within STACK_STUCK_MINUTES={}: let it finish",
                        self.config.stack_stuck_minutes
                    ),
                );
            }
            _ => {
                return report.finish(
                    Outcome::NoAction,
                    format!("stack {name} is {status}: nothing to recover"),
                );
            }
        };
        if !resources_to_skip.is_empty() && recovery != Recovery::ContinueRollback {
            return report.finish(
                Outcome::Rejected,
                "\"resources_to_skip\" only applies to a stack in UPDATE_ROLLBACK_FAILED"
                    .to_string(),
            );
        }
        let summary = match recovery {
            Recovery::ContinueRollback if resources_to_skip.is_empty() => {
                format!("continued the update rollback of {name}")
            }
            Recovery::ContinueRollback => format!(
                "continued the update rollback of {name}, skipping {}",
                resources_to_skip.join(", ")
            ),
            Recovery::CancelUpdate => {
                format!("cancelled the update of {name}, stuck for {minutes} min")
            }
            Recovery::Rollback => format!("rolled back the failed update of {name}"),
        };
        let mut action = Action {
            api: recovery.api().into(),
            target: name.into(),
            before: json!({"status": status}),
            after: json!({"status": "a stable state"}),
            applied: false,
            error: None,
        };
        let mut report = match self.budget(report).await {
            Ok(report) => report,
            Err(report) => return report,
        };
        if report.dry_run {
            report.actions.push(action);
            return report.finish(
                Outcome::Planned,
                format!("dry run: would have {summary}{quoted}"),
            );
        }
        let acted = match recovery {
            Recovery::ContinueRollback => self
                .cloudformation
                .continue_update_rollback()
                .stack_name(name)
                .set_resources_to_skip(
                    (!resources_to_skip.is_empty()).then(|| resources_to_skip.to_vec()),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(recovery.api(), &format!("stack {name}"), &err)),
            Recovery::CancelUpdate => self
                .cloudformation
                .cancel_update_stack()
                .stack_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(recovery.api(), &format!("stack {name}"), &err)),
            Recovery::Rollback => self
                .cloudformation
                .rollback_stack()
                .stack_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| AwsError::from_sdk(recovery.api(), &format!("stack {name}"), &err)),
        };
        if let Err(err) = acted {
            action.error = Some(err.to_string());
            report.actions.push(action);
            return report.finish(
                Outcome::Failed,
                format!("could not recover {name}; nothing was changed: {err}{quoted}"),
            );
        }
        action.applied = true;

        let settled = poll_until(invocation.wait_deadline(), self.poll_interval, || async {
            match self.stack(name).await {
                Ok(Some(stack)) => {
                    let now = stack
                        .stack_status()
                        .map_or("UNKNOWN", |s| s.as_str())
                        .to_string();
                    (!now.ends_with("_IN_PROGRESS")).then_some(Ok(now))
                }
                Ok(None) => Some(Ok("DELETED".to_string())),
                Err(err) => Some(Err(err)),
            }
        })
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
        action.after = json!({"status": observed});
        report.actions.push(action);
        let check = Check::new(
            "stack_stable",
            status == VerificationStatus::Verified,
            "a stable *_COMPLETE state",
            if status == VerificationStatus::Pending {
                "pending".to_string()
            } else {
                observed.clone()
            },
        );
        report.verification = Verification {
            status,
            checks: vec![check],
            settle_by: (status == VerificationStatus::Pending).then(|| SettleBy::Stack {
                name: name.to_string(),
            }),
        };
        match status {
            VerificationStatus::Failed => report.finish(
                Outcome::Failed,
                format!("{summary}, but the stack is {observed}{quoted}"),
            ),
            _ => report.finish(
                Outcome::Remediated,
                format!("{summary}: now {observed}{quoted}"),
            ),
        }
    }
}
