//! Runbook `dynamodb-backup`: an on-demand backup of a managed table before a risky change (a
//! migration, a bulk rewrite, a restore drill), so that there is a known point to go back to.
//!
//! Diagnose (the table's status, and the backups of it that this runbook made, from its own
//! audit history) → plan (the backup, and which of its own old backups go once it is
//! AVAILABLE: at most MAX_RUNBOOK_BACKUPS are kept) → act (CreateBackup) → verify (DescribeBackup
//! until AVAILABLE, then the oldest of its own backups deleted; a backup still CREATING at the
//! deadline is settled by the health-prober's sweep). A backup someone else made is never
//! deleted: only those whose ARN this runbook's audit records show it created.

use chrono::{DateTime, Utc};
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::poll_until;
use runbook_shared::model::Rejection;
use runbook_shared::model::{
    Action, Check, Report, SettleBy, Verification, VerificationStatus, capped,
};
use runbook_shared::model::{Decision, Ending, NotApplied, Planned, Step};
use runbook_shared::model::{Home, Resource, ResourceId};
use runbook_shared::path::{RunContext, Runbook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Responder;

mod backups;

use backups::deletion;

pub const RUNBOOK: &str = "dynamodb-backup";

/// The start of the names of the backups this runbook makes, so that a person sees whose they
/// are (which ones it may delete is decided by its audit records, not by the name).
pub const BACKUP_PREFIX: &str = "runbook-automation-";

/// The manual payload: `{"runbook": "dynamodb-backup", "table": "orders", "dry_run": true}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub table: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// The table to back up.
#[derive(Clone, Debug, PartialEq)]
pub struct TableBackup {
    pub table: String,
}

impl TableBackup {
    /// Validates a manual request; the table may be named by its name or its ARN.
    pub fn from_request(request: &Request, home: &Home) -> Result<Self, Rejection> {
        Self::named(&request.table, home)
    }

    /// A table named by a person or by an alarm's tag `table`; a backup is of a whole table,
    /// not of one of its indexes.
    pub fn named(text: &str, home: &Home) -> Result<Self, Rejection> {
        match home.parse_table(text)?.resource {
            Resource::Table { table } => Ok(Self { table }),
            Resource::Index { table, index } => Err(Rejection(format!(
                "a backup is of a whole table: name the table {table}, not its index {index}"
            ))),
            _ => Err(Rejection(format!("{text:?} is not a DynamoDB table"))),
        }
    }
}

/// A user backup of the table, as ListBackups shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedBackup {
    pub arn: String,
    pub name: String,
    pub created: DateTime<Utc>,
}

/// What a backup run reads.
pub struct Diagnosis {
    status: String,
    /// This runbook's backups of the table (their ARNs are in its audit records), oldest first.
    own: Vec<ListedBackup>,
    /// The newest backup named as this runbook names them, recorded or not: one an earlier
    /// attempt of this request made before it crashed is found by its name.
    newest_named: Option<ListedBackup>,
}

/// The backup to make, and this runbook's own backups to delete once it is AVAILABLE.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub name: String,
    pub expired: Vec<ListedBackup>,
    /// Set once CreateBackup answered.
    pub arn: Option<String>,
}

/// Plans the backup of `table` (in `status`) named for `now`, keeping at most `max` of this
/// runbook's backups once it is made: the oldest of `own` beyond that go; pure.
pub fn plan(
    table: &str,
    status: &str,
    own: &[ListedBackup],
    max: usize,
    now: DateTime<Utc>,
) -> Decision<Backup> {
    if !matches!(status, "ACTIVE" | "UPDATING") {
        return Decision::NoAction(format!(
            "table {table} is {status}: no backup can be made of it now"
        ));
    }
    let mut oldest_first = own.to_vec();
    oldest_first.sort_by_key(|backup| backup.created);
    // The new backup counts: `max` in all once it is made.
    let expired = oldest_first.len().saturating_sub(max.saturating_sub(1));
    Decision::Act(Backup {
        name: format!("{BACKUP_PREFIX}{}", now.format("%Y%m%dT%H%M%S%.3fZ")),
        expired: oldest_first.into_iter().take(expired).collect(),
        arn: None,
    })
}

impl Runbook<Responder> for TableBackup {
    const ID: &'static str = RUNBOOK;
    type Diagnosis = Diagnosis;
    type Change = Backup;

    fn resource(&self, home: &Home) -> ResourceId {
        home.table(&self.table)
    }

    async fn managed(&self, ctx: &RunContext<'_, Responder>) -> Step<()> {
        ctx.table_status(&self.table).await?;
        let safety = &ctx.config.safety;
        runbook_shared::guards::require_table(
            &safety.managed,
            &ctx.clients.dynamodb,
            &safety.home,
            &self.table,
        )
        .await
    }

    async fn diagnose(
        &self,
        ctx: &RunContext<'_, Responder>,
        report: &mut Report,
    ) -> Step<Diagnosis> {
        let table = &self.table;
        let status = ctx.table_status(table).await?;
        let resource = self.resource(&ctx.config.safety.home);
        let created = ctx.created_backups(&resource).await.map_err(|err| {
            Ending::failed(format!(
                "could not read which backups of {table} the automation made, nothing was changed: {err}"
            ))
        })?;
        let listed = ctx.backups(table).await.map_err(|err| {
            Ending::failed(format!(
                "could not list the backups of {table}, nothing was changed: {err}"
            ))
        })?;
        let newest_named = listed
            .iter()
            .rfind(|backup| backup.name.starts_with(BACKUP_PREFIX))
            .cloned();
        let own: Vec<ListedBackup> = listed
            .into_iter()
            .filter(|backup| created.contains(&backup.arn))
            .collect();
        let listed: Vec<Value> = own
            .iter()
            .map(|backup| json!({"name": backup.name, "created": runbook_shared::model::timestamp(backup.created)}))
            .collect();
        report.diagnosis = Some(json!({
            "table_status": status,
            "own_backups": capped(&listed),
            "max_runbook_backups": ctx.config.max_runbook_backups,
        }));
        Ok(Diagnosis {
            status,
            own,
            newest_named,
        })
    }

    fn plan(&self, ctx: &RunContext<'_, Responder>, d: &Diagnosis) -> Decision<Backup> {
        let max = ctx.config.max_runbook_backups;
        plan(&self.table, &d.status, &d.own, max, Utc::now())
    }

    /// Without the new backup's name, which is made from the time of the run: an approval
    /// holds for the same table and the same old backups to delete.
    fn approval_view(&self, planned: &Planned) -> Planned {
        let mut view = planned.clone();
        for action in &mut view.actions {
            if action.api == "dynamodb:CreateBackup" {
                action.after = json!({"backup": "named at the run"});
            }
        }
        view
    }

    fn describe(&self, _: &RunContext<'_, Responder>, backup: &Backup) -> Planned {
        let table = &self.table;
        let create = Action {
            api: "dynamodb:CreateBackup".into(),
            target: table.clone(),
            before: json!({"backup": null}),
            after: json!({"backup": backup.name}),
            applied: false,
            error: None,
        };
        let summary = match backup.expired.len() {
            0 => format!("backed {table} up as {}", backup.name),
            n => format!(
                "backed {table} up as {}, and deleted its {n} oldest automation backups once it was AVAILABLE",
                backup.name
            ),
        };
        Planned {
            actions: vec![create],
            then: backup.expired.iter().map(deletion).collect(),
            summary,
        }
    }

    fn observed(&self, d: &Diagnosis) -> Option<Value> {
        let newest = d.newest_named.as_ref()?;
        Some(json!({"backup": newest.name}))
    }

    fn resumed(&self, action: &Action) -> Option<Backup> {
        Some(Backup {
            name: action.after["backup"].as_str()?.to_string(),
            expired: Vec::new(),
            arn: action.after["arn"].as_str().map(str::to_string),
        })
    }

    async fn apply(
        &self,
        ctx: &RunContext<'_, Responder>,
        _: &Diagnosis,
        backup: Backup,
    ) -> Result<Backup, NotApplied> {
        let table = &self.table;
        let created = ctx
            .clients
            .dynamodb
            .create_backup()
            .table_name(table)
            .backup_name(&backup.name)
            .send()
            .await
            .map_err(|err| {
                let err =
                    AwsError::from_sdk("dynamodb:CreateBackup", &format!("table {table}"), &err);
                NotApplied::explained(
                    &err,
                    format!("the backup of {table} failed; nothing was changed: {err}"),
                )
            })?;
        let arn = created
            .backup_details()
            .map(|details| details.backup_arn().to_string());
        Ok(Backup { arn, ..backup })
    }

    /// The backup AVAILABLE (the sweep settles one still CREATING at the deadline), then the
    /// runbook's own oldest backups deleted: never before the new one can stand in for them.
    // Over 80 lines: the new backup proved AVAILABLE before any old one is deleted; the two halves
    // share the ordering guarantee.
    async fn verify(
        &self,
        ctx: &RunContext<'_, Responder>,
        d: &Diagnosis,
        backup: Backup,
        summary: &str,
        report: &mut Report,
    ) -> Ending {
        // A resumed backup is known by its name; the ARN is what marks it as ours from now on,
        // so the action records it as it happened.
        let arn = backup.arn.clone().or_else(|| {
            let named = d.newest_named.as_ref()?;
            (named.name == backup.name).then(|| named.arn.clone())
        });
        if let Some(action) = report.actions.first_mut() {
            action.after = json!({"backup": backup.name, "arn": arn});
        }
        let Some(arn) = arn else {
            report.verification = Verification::settled(Check::new(
                "backup_available",
                false,
                "AVAILABLE",
                "CreateBackup answered without the backup's ARN",
            ));
            return Ending::failed(format!(
                "{summary}, but CreateBackup did not say which backup it made: find {} in the console",
                backup.name
            ));
        };
        let available = poll_until(
            ctx.invocation.wait_deadline(),
            ctx.poll_interval,
            || async {
                match ctx.backup_status(&arn).await {
                    Ok(status) if status == "CREATING" => None,
                    other => Some(other),
                }
            },
        )
        .await;
        let (check, status) = match available {
            Some(Ok(status)) if status == "AVAILABLE" => (
                Check::new("backup_available", true, "AVAILABLE", status),
                VerificationStatus::Verified,
            ),
            Some(Ok(status)) => (
                Check::new("backup_available", false, "AVAILABLE", status),
                VerificationStatus::Failed,
            ),
            Some(Err(err)) => (
                Check::new(
                    "backup_available",
                    false,
                    "AVAILABLE",
                    format!("DescribeBackup failed: {err}"),
                ),
                VerificationStatus::Failed,
            ),
            None => (
                Check::awaited("backup_available", "AVAILABLE"),
                VerificationStatus::Pending,
            ),
        };
        report.verification = Verification {
            status,
            checks: vec![check],
            settle_by: (status == VerificationStatus::Pending)
                .then(|| SettleBy::Backup { arn: arn.clone() }),
        };
        match status {
            VerificationStatus::Verified => {
                // Deletions are writes too: a pause engaged while the backup was made keeps them.
                if !backup.expired.is_empty()
                    && let Some(paused) = ctx.safety.switch.paused().await
                {
                    report.actions.extend(backup.expired.iter().map(deletion));
                    return Ending::remediated(format!(
                        "backed {} up as {} (AVAILABLE); its {} oldest automation backups were kept, as the automation is {paused}",
                        self.table,
                        backup.name,
                        backup.expired.len()
                    ));
                }
                let failures = ctx.delete_expired(&backup.expired, report).await;
                if failures.is_empty() {
                    Ending::remediated(summary)
                } else {
                    Ending::failed(format!(
                        "backed {} up as {} (AVAILABLE), but old automation backups could not all be deleted: {}",
                        self.table,
                        backup.name,
                        failures.join("; ")
                    ))
                }
            }
            VerificationStatus::Pending => Ending::remediated(format!(
                "backed {} up as {}: still CREATING at the deadline (the health-prober's sweep settles it); old backups are kept until a run finds it AVAILABLE",
                self.table, backup.name
            )),
            _ => Ending::failed(format!(
                "{summary}, but the verification failed ({}); old backups were kept",
                report.verification.failures()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(ages_days: &[i64], now: DateTime<Utc>) -> Vec<ListedBackup> {
        ages_days
            .iter()
            .map(|age| ListedBackup {
                arn: format!("arn:backup/{age}"),
                name: format!("{BACKUP_PREFIX}{age}"),
                created: now - chrono::Duration::days(*age),
            })
            .collect()
    }

    #[test]
    fn keeps_at_most_the_maximum_deleting_its_own_oldest() {
        let now = Utc::now();
        let Decision::Act(backup) = plan("orders", "ACTIVE", &own(&[1, 5, 3], now), 3, now) else {
            panic!("a backup is planned");
        };
        assert!(backup.name.starts_with(BACKUP_PREFIX));
        // 3 own + the new one, at most 3: the oldest (5 days) goes.
        assert_eq!(backup.expired, own(&[5], now));
        let Decision::Act(backup) = plan("orders", "UPDATING", &own(&[1, 2], now), 5, now) else {
            panic!("a backup is planned");
        };
        assert!(backup.expired.is_empty());
        let Decision::Act(backup) = plan("orders", "ACTIVE", &own(&[4, 1, 9], now), 1, now) else {
            panic!("a backup is planned");
        };
        assert_eq!(
            backup.expired,
            own(&[9, 4, 1], now),
            "oldest first, all of them"
        );
    }

    #[test]
    fn a_table_being_created_or_deleted_is_left_alone() {
        let now = Utc::now();
        for status in ["CREATING", "DELETING", "ARCHIVED"] {
            assert!(
                matches!(plan("orders", status, &[], 3, now), Decision::NoAction(r) if r.contains(status)),
                "{status}"
            );
        }
    }
}
