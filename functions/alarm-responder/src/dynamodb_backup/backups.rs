//! The backups of a table as `dynamodb-backup` reads, lists and deletes them.

use chrono::{DateTime, Utc};
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::model::ResourceId;
use runbook_shared::model::{Action, Report};
use runbook_shared::model::{Ending, Step};
use serde_json::json;

use super::{ListedBackup, RUNBOOK};
use crate::Responder;

fn sdk_time(time: &aws_sdk_dynamodb::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos()).unwrap_or_default()
}

impl Responder {
    /// The table's status; a table that does not exist ends the run.
    pub(super) async fn table_status(&self, table: &str) -> Step<String> {
        match self
            .clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
        {
            Ok(output) => Ok(output
                .table()
                .and_then(|table| table.table_status())
                .map_or("UNKNOWN", |status| status.as_str())
                .to_string()),
            Err(err) => {
                let err =
                    AwsError::from_sdk("dynamodb:DescribeTable", &format!("table {table}"), &err);
                Err(Ending::failed(if err.is(FaultKind::NotFound) {
                    format!("table {table} does not exist in this region; nothing was changed")
                } else {
                    format!("could not read table {table}, nothing was changed: {err}")
                }))
            }
        }
    }

    /// The ARNs of the backups this runbook created of the resource, from its audit records.
    pub(super) async fn created_backups(
        &self,
        resource: &ResourceId,
    ) -> Result<Vec<String>, AwsError> {
        let history = self.safety.audit.history(&resource.key()).await?;
        Ok(history
            .iter()
            .filter(|record| record.runbook == RUNBOOK)
            .flat_map(|record| &record.report.actions)
            .filter(|action| action.api == "dynamodb:CreateBackup" && action.applied)
            .filter_map(|action| action.after["arn"].as_str().map(str::to_string))
            .collect())
    }

    /// The table's user backups, oldest first.
    pub(super) async fn backups(&self, table: &str) -> Result<Vec<ListedBackup>, AwsError> {
        let mut listed = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .clients
                .dynamodb
                .list_backups()
                .table_name(table)
                .backup_type(aws_sdk_dynamodb::types::BackupTypeFilter::User)
                .set_exclusive_start_backup_arn(start)
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk("dynamodb:ListBackups", &format!("table {table}"), &err)
                })?;
            listed.extend(page.backup_summaries().iter().filter_map(|summary| {
                Some(ListedBackup {
                    arn: summary.backup_arn()?.to_string(),
                    name: summary.backup_name().unwrap_or_default().to_string(),
                    created: summary
                        .backup_creation_date_time()
                        .map(sdk_time)
                        .unwrap_or_default(),
                })
            }));
            start = page.last_evaluated_backup_arn().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        listed.sort_by_key(|backup| backup.created);
        Ok(listed)
    }

    /// The backup's status: AVAILABLE, CREATING or DELETED.
    pub(super) async fn backup_status(&self, arn: &str) -> Result<String, AwsError> {
        let output = self
            .clients
            .dynamodb
            .describe_backup()
            .backup_arn(arn)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk("dynamodb:DescribeBackup", &format!("backup {arn}"), &err)
            })?;
        Ok(output
            .backup_description()
            .and_then(|description| description.backup_details())
            .map_or("UNKNOWN", |details| details.backup_status().as_str())
            .to_string())
    }

    pub(super) async fn delete_backup(&self, arn: &str) -> Result<(), AwsError> {
        match self
            .clients
            .dynamodb
            .delete_backup()
            .backup_arn(arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let err =
                    AwsError::from_sdk("dynamodb:DeleteBackup", &format!("backup {arn}"), &err);
                // Gone already (deleted by hand, or by an earlier run): what was wanted.
                if err.is(FaultKind::NotFound) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Deletes the expired backups, each reported as an action of its own.
    pub(super) async fn delete_expired(
        &self,
        expired: &[ListedBackup],
        report: &mut Report,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for backup in expired {
            let deleted = self.delete_backup(&backup.arn).await;
            failures.extend(deleted.as_ref().err().map(ToString::to_string));
            report.actions.push(Action {
                applied: deleted.is_ok(),
                error: deleted.err().map(|err| err.to_string()),
                ..deletion(backup)
            });
        }
        failures
    }
}

/// The DeleteBackup action of one of the runbook's own old backups.
pub(super) fn deletion(backup: &ListedBackup) -> Action {
    Action {
        api: "dynamodb:DeleteBackup".into(),
        target: backup.name.clone(),
        before: json!({"arn": backup.arn, "created": runbook_shared::model::timestamp(backup.created)}),
        after: json!({"deleted": true}),
        applied: false,
        error: None,
    }
}
