//! alarm-responder's `dynamodb-backup` runbook against moto (a backup made, verified, and only
//! the runbook's own oldest backups deleted), through its guards and bad inputs, and against
//! replay clients for the faults moto cannot produce.

use std::time::Duration;

use alarm_responder::Responder;
use alarm_responder::dynamodb_backup::BACKUP_PREFIX;
use aws_sdk_dynamodb::operation::create_backup::{CreateBackupError, CreateBackupOutput};
use aws_sdk_dynamodb::operation::delete_backup::{DeleteBackupError, DeleteBackupOutput};
use aws_sdk_dynamodb::operation::describe_backup::DescribeBackupOutput;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::list_backups::ListBackupsOutput;
use aws_sdk_dynamodb::types::{
    BackupDescription, BackupDetails, BackupStatus, BackupSummary, BackupType,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use runbook_shared::deadline::Deadline;
use runbook_shared::model::{Action, Outcome, Report, SettleBy, VerificationStatus};
use runbook_shared::store::AuditStore;
use runbook_tests::fixtures::{
    TableSpec, create_audit_table, invocation, invocation_within, record_remediation, responder,
    responder_clients, table_key,
};
use runbook_tests::moto::moto;
use runbook_tests::replay::{error_meta, provisioned_table};
use serde_json::{Value, json};

const RUNBOOK: &str = "dynamodb-backup";

async fn run(responder: &Responder, event: Value) -> Report {
    responder.handle(event, &invocation()).await
}

fn backup(table: &str) -> Value {
    json!({"runbook": RUNBOOK, "table": table})
}

/// The table's backups by name, oldest first.
async fn backups(table: &str) -> Vec<String> {
    let mut listed: Vec<(i64, String)> = moto()
        .dynamodb()
        .list_backups()
        .table_name(table)
        .send()
        .await
        .expect("backups")
        .backup_summaries()
        .iter()
        .map(|summary| {
            (
                summary.backup_creation_date_time().map_or(0, |t| {
                    t.secs() * 1_000 + i64::from(t.subsec_nanos() / 1_000_000)
                }),
                summary.backup_name().unwrap_or_default().to_string(),
            )
        })
        .collect();
    listed.sort();
    listed.into_iter().map(|(_, name)| name).collect()
}

async fn someone_elses_backup(table: &str, name: &str) {
    moto()
        .dynamodb()
        .create_backup()
        .table_name(table)
        .backup_name(name)
        .send()
        .await
        .expect("backup");
}

#[tokio::test]
async fn a_backup_is_made_verified_and_only_its_own_oldest_are_deleted() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-backup", 5, 5)
        .create(&moto().dynamodb())
        .await;
    // Someone else's backups, one of them named as the automation names its own: neither is
    // in its audit records, so neither is ever deleted.
    someone_elses_backup(&table, "nightly").await;
    someone_elses_backup(&table, &format!("{BACKUP_PREFIX}lookalike")).await;
    let responder = responder(&audit, &[("MAX_RUNBOOK_BACKUPS", "2")], responder_clients());

    let first = run(&responder, backup(&table)).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    assert_eq!(first.verification.status, VerificationStatus::Verified);
    assert_eq!(first.actions.len(), 1, "{first:?}");
    let made = first.actions[0].after.clone();
    assert!(
        made["arn"]
            .as_str()
            .is_some_and(|arn| arn.contains("/backup/")),
        "{first:?}"
    );
    let second = run(&responder, backup(&table)).await;
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(second.actions.len(), 1, "two of its own: none deleted yet");
    assert!(
        second
            .notes
            .iter()
            .any(|note| note.contains("overrode the cooldown")),
        "a manual run overrides the cooldown and says so: {second:?}"
    );

    // A third: its oldest goes, once the new one is AVAILABLE.
    let third = run(&responder, backup(&table)).await;
    assert_eq!(third.outcome, Outcome::Remediated, "{third:?}");
    assert_eq!(third.actions.len(), 2, "{third:?}");
    assert_eq!(third.actions[1].api, "dynamodb:DeleteBackup");
    assert_eq!(third.actions[1].target, made["backup"].as_str().unwrap());
    assert!(third.actions.iter().all(|action| action.applied));
    let names = backups(&table).await;
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"nightly".to_string()), "{names:?}");
    assert!(
        names.contains(&format!("{BACKUP_PREFIX}lookalike")),
        "{names:?}"
    );
    assert!(!names.contains(&made["backup"].as_str().unwrap().to_string()));
    assert!(third.audit_id.is_some());
}

/// The deletions after a verified backup are writes: a pause engaged while the backup was being
/// made keeps the old backups.
#[tokio::test]
async fn a_pause_engaged_during_the_backup_keeps_the_old_ones() {
    let _own =
        runbook_tests::moto::isolated("a_pause_engaged_during_the_backup_keeps_the_old_ones").await;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-backup", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let responder = responder(&audit, &[("MAX_RUNBOOK_BACKUPS", "1")], responder_clients());
    let first = run(&responder, backup(&table)).await;
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");

    // The second backup is made at once, and its answer held for 5 s; the pause comes while
    // it is held.
    moto().delay_answer("CreateBackup", &table, 5_000).await;
    let second = run(&responder, backup(&table));
    let pause = async {
        moto().held("CreateBackup", &table).await;
        responder
            .handle(
                json!({"control": "pause", "reason": "hands off", "by": "carol"}),
                &invocation(),
            )
            .await
    };
    let (second, paused) = tokio::join!(second, pause);
    assert_eq!(paused.outcome, Outcome::Remediated, "{paused:?}");
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert!(
        second
            .reason
            .contains("were kept, as the automation is paused: paused by carol"),
        "{}",
        second.reason
    );
    assert_eq!(second.actions.len(), 2, "{second:?}");
    assert_eq!(second.actions[1].api, "dynamodb:DeleteBackup");
    assert!(!second.actions[1].applied);
    assert_eq!(backups(&table).await.len(), 2, "the old backup is kept");
}

#[tokio::test]
async fn a_dry_run_lists_the_backup_and_the_deletions_and_makes_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-backup-dry", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let responder = responder(&audit, &[("MAX_RUNBOOK_BACKUPS", "1")], responder_clients());
    let made = run(&responder, backup(&table)).await;
    assert_eq!(made.outcome, Outcome::Remediated, "{made:?}");
    let before = backups(&table).await;
    let mut payload = backup(&table);
    payload["dry_run"] = json!(true);
    let dry = run(&responder, payload).await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:?}");
    let apis: Vec<&str> = dry
        .actions
        .iter()
        .map(|action| action.api.as_str())
        .collect();
    assert_eq!(
        apis,
        ["dynamodb:CreateBackup", "dynamodb:DeleteBackup"],
        "{dry:?}"
    );
    assert!(dry.actions.iter().all(|action| !action.applied));
    assert!(
        dry.reason.starts_with("dry run: would have backed"),
        "{}",
        dry.reason
    );
    assert_eq!(backups(&table).await, before);
}

#[tokio::test]
async fn guards_and_bad_inputs_change_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let responder = responder(&audit, &[], responder_clients());
    let unmanaged = TableSpec::provisioned("unmanaged-backup", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let report = run(&responder, backup(&unmanaged)).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert!(backups(&unmanaged).await.is_empty());

    let missing = run(&responder, backup("managed-never-created")).await;
    assert_eq!(missing.outcome, Outcome::Failed, "{missing:?}");
    assert!(
        missing.reason.contains("does not exist"),
        "{}",
        missing.reason
    );

    let cases = [
        (json!({"runbook": RUNBOOK}), "\"table\" is required"),
        (
            json!({"runbook": RUNBOOK, "table": "orders", "index": "by-day"}),
            "\"index\" is not used by \"runbook\": \"dynamodb-backup\"",
        ),
        (
            json!({"runbook": RUNBOOK, "table": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/index/by-day"}),
            "a backup is of a whole table",
        ),
        (
            json!({"runbook": RUNBOOK, "table": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders"}),
            "eu-west-1",
        ),
        (json!({"runbook": RUNBOOK, "table": ""}), "DynamoDB table"),
    ];
    for (payload, expected) in cases {
        let report = run(&responder, payload.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload} -> {report:?}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {:?} should contain {expected:?}",
            report.reason
        );
    }
}

/// An alarm tagged `runbook=dynamodb-backup` with a tag `table` backs that table up (an alarm
/// on a risky change's start, say); without the tag it is a diagnosis.
#[tokio::test]
async fn a_tagged_alarm_backs_its_table_up() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-backup-alarm", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let responder = responder(&audit, &[], responder_clients());
    let cloudwatch = moto().cloudwatch();
    for (alarm, tags) in [
        (
            format!("{table}-migration"),
            vec![("runbook", RUNBOOK), ("table", table.as_str())],
        ),
        (format!("{table}-untagged"), vec![("runbook", RUNBOOK)]),
    ] {
        cloudwatch
            .put_metric_alarm()
            .alarm_name(&alarm)
            .namespace("Deploys")
            .metric_name("MigrationStarted")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .set_tags(Some(
                tags.iter()
                    .map(|(key, value)| {
                        aws_sdk_cloudwatch::types::Tag::builder()
                            .key(*key)
                            .value(*value)
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await
            .expect("alarm");
        cloudwatch
            .set_alarm_state()
            .alarm_name(&alarm)
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("migration started")
            .send()
            .await
            .expect("alarm state");
    }
    let tagged = run(
        &responder,
        json!({"alarm_name": format!("{table}-migration")}),
    )
    .await;
    assert_eq!(tagged.outcome, Outcome::Remediated, "{tagged:?}");
    assert_eq!(backups(&table).await.len(), 1);
    let untagged = run(
        &responder,
        json!({"alarm_name": format!("{table}-untagged")}),
    )
    .await;
    assert_eq!(untagged.outcome, Outcome::NoAction, "{untagged:?}");
    assert!(
        untagged.reason.contains("has no tag table"),
        "{}",
        untagged.reason
    );
    assert_eq!(backups(&table).await.len(), 1);
}

// ---- faults moto cannot produce ----------------------------------------------------------------

const TABLE: &str = "managed-replayed";

fn backup_arn(id: &str) -> String {
    format!("{}/backup/{id}", table_key(TABLE))
}

fn details(id: &str, status: BackupStatus) -> BackupDetails {
    BackupDetails::builder()
        .backup_arn(backup_arn(id))
        .backup_name(format!("{BACKUP_PREFIX}{id}"))
        .backup_status(status)
        .backup_type(BackupType::User)
        .backup_creation_date_time(aws_sdk_dynamodb::primitives::DateTime::from_secs(
            chrono::Utc::now().timestamp(),
        ))
        .build()
        .expect("details")
}

/// A managed table with one backup of the runbook's own (`old`, in its audit records).
fn table_with_old_backup() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
            DescribeTableOutput::builder()
                .table(provisioned_table(TABLE, 5, 5))
                .build()
        }),
        mock!(aws_sdk_dynamodb::Client::list_backups).then_output(|| {
            ListBackupsOutput::builder()
                .backup_summaries(
                    BackupSummary::builder()
                        .table_name(TABLE)
                        .backup_arn(backup_arn("old"))
                        .backup_name(format!("{BACKUP_PREFIX}old"))
                        .backup_status(BackupStatus::Available)
                        .backup_type(BackupType::User)
                        .backup_creation_date_time(
                            aws_sdk_dynamodb::primitives::DateTime::from_secs(
                                chrono::Utc::now().timestamp() - 86_400,
                            ),
                        )
                        .build(),
                )
                .build()
        }),
    ]
}

async fn replayed(audit: &str, rules: &[&Rule], extra: &[(&str, &str)]) -> Responder {
    // The old backup is the runbook's own: its audit records say it made it.
    record_remediation(
        &AuditStore::new(moto().dynamodb(), audit.to_string(), 1),
        RUNBOOK,
        (&table_key(TABLE), TABLE),
        Action {
            api: "dynamodb:CreateBackup".into(),
            target: TABLE.into(),
            before: json!({"backup": null}),
            after: json!({"backup": format!("{BACKUP_PREFIX}old"), "arn": backup_arn("old")}),
            applied: true,
            error: None,
        },
        None,
        chrono::Duration::days(1),
    )
    .await;
    let clients = alarm_responder::Clients {
        dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules.iter().copied()),
        ..responder_clients()
    };
    responder(audit, extra, clients)
}

#[tokio::test]
async fn a_denied_backup_is_reported_and_deletes_nothing() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let create = mock!(aws_sdk_dynamodb::Client::create_backup).then_error(|| {
        CreateBackupError::generic(error_meta(
            "AccessDeniedException",
            "not authorized to perform: dynamodb:CreateBackup",
        ))
    });
    let delete = mock!(aws_sdk_dynamodb::Client::delete_backup)
        .then_output(|| DeleteBackupOutput::builder().build());
    let mut rules = table_with_old_backup();
    rules.extend([create, delete]);
    let all: Vec<&Rule> = rules.iter().collect();
    let responder = replayed(&audit, &all, &[("MAX_RUNBOOK_BACKUPS", "1")]).await;
    let report = run(&responder, backup(TABLE)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("grant dynamodb:CreateBackup"),
        "{}",
        report.reason
    );
    assert!(report.actions[0].error.is_some() && !report.actions[0].applied);
    assert_eq!(
        rules[3].num_calls(),
        0,
        "no old backup deleted without a new one"
    );
}

#[tokio::test]
async fn a_backup_still_creating_at_the_deadline_is_left_to_the_sweep_and_keeps_the_old_ones() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let create = mock!(aws_sdk_dynamodb::Client::create_backup).then_output(|| {
        CreateBackupOutput::builder()
            .backup_details(details("new", BackupStatus::Creating))
            .build()
    });
    let describe = mock!(aws_sdk_dynamodb::Client::describe_backup).then_output(|| {
        DescribeBackupOutput::builder()
            .backup_description(
                BackupDescription::builder()
                    .backup_details(details("new", BackupStatus::Creating))
                    .build(),
            )
            .build()
    });
    let delete = mock!(aws_sdk_dynamodb::Client::delete_backup)
        .then_output(|| DeleteBackupOutput::builder().build());
    let mut rules = table_with_old_backup();
    rules.extend([create, describe, delete]);
    let all: Vec<&Rule> = rules.iter().collect();
    let responder = replayed(&audit, &all, &[("MAX_RUNBOOK_BACKUPS", "1")]).await;
    let report = responder
        .handle(backup(TABLE), &invocation_within(Duration::from_secs(6)))
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(report.verification.status, VerificationStatus::Pending);
    assert_eq!(
        report.verification.settle_by,
        Some(SettleBy::Backup {
            arn: backup_arn("new")
        })
    );
    assert_eq!(
        rules[4].num_calls(),
        0,
        "the old backup stays until the new one is AVAILABLE"
    );
    assert_eq!(report.actions.len(), 1, "{report:?}");
}

#[tokio::test]
async fn a_failed_deletion_is_a_failure_that_keeps_the_new_backup_applied() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let create = mock!(aws_sdk_dynamodb::Client::create_backup).then_output(|| {
        CreateBackupOutput::builder()
            .backup_details(details("new", BackupStatus::Available))
            .build()
    });
    let describe = mock!(aws_sdk_dynamodb::Client::describe_backup).then_output(|| {
        DescribeBackupOutput::builder()
            .backup_description(
                BackupDescription::builder()
                    .backup_details(details("new", BackupStatus::Available))
                    .build(),
            )
            .build()
    });
    let delete = mock!(aws_sdk_dynamodb::Client::delete_backup).then_error(|| {
        DeleteBackupError::generic(error_meta("ThrottlingException", "Rate exceeded"))
    });
    let mut rules = table_with_old_backup();
    rules.extend([create, describe, delete]);
    let all: Vec<&Rule> = rules.iter().collect();
    let responder = replayed(&audit, &all, &[("MAX_RUNBOOK_BACKUPS", "1")]).await;
    let report = run(&responder, backup(TABLE)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.reason.contains("Rate exceeded"), "{}", report.reason);
    assert!(
        report.actions[0].applied,
        "the new backup was made: {report:?}"
    );
    assert_eq!(report.actions[1].api, "dynamodb:DeleteBackup");
    assert!(!report.actions[1].applied && report.actions[1].error.is_some());
    assert_eq!(report.verification.status, VerificationStatus::Verified);
}

/// The sweep settles a backup left CREATING: AVAILABLE by then is verified.
#[tokio::test]
async fn the_sweep_settles_a_pending_backup() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-backup-sweep", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let made = moto()
        .dynamodb()
        .create_backup()
        .table_name(&table)
        .backup_name(format!("{BACKUP_PREFIX}swept"))
        .send()
        .await
        .expect("backup");
    let arn = made
        .backup_details()
        .expect("details")
        .backup_arn()
        .to_string();
    let store = AuditStore::new(moto().dynamodb(), audit.clone(), 1);
    let pending = record_remediation(
        &store,
        RUNBOOK,
        (&table_key(&table), &table),
        Action {
            api: "dynamodb:CreateBackup".into(),
            target: table.clone(),
            before: json!({"backup": null}),
            after: json!({"backup": format!("{BACKUP_PREFIX}swept"), "arn": arn}),
            applied: true,
            error: None,
        },
        Some(SettleBy::Backup { arn: arn.clone() }),
        chrono::Duration::minutes(30),
    )
    .await;
    let (cloudwatch, cloudformation, sqs, dynamodb) = (
        moto().cloudwatch(),
        moto().cloudformation(),
        moto().sqs(),
        moto().dynamodb(),
    );
    let settled = health_prober::sweep::settle_pending(
        &store,
        &health_prober::sweep::Places::One(health_prober::sweep::SweepClients {
            cloudwatch: &cloudwatch,
            cloudformation: &cloudformation,
            sqs: &sqs,
            dynamodb: &dynamodb,
        }),
        &health_prober::sweep::Window {
            after: chrono::Duration::zero(),
            give_up: chrono::Duration::hours(24),
        },
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .expect("sweep");
    let ours = settled
        .iter()
        .find(|settled| settled.audit_id == pending)
        .unwrap_or_else(|| panic!("{settled:?}"));
    assert_eq!(ours.status, VerificationStatus::Verified, "{ours:?}");
    assert!(ours.observed.contains("AVAILABLE"), "{ours:?}");
}

#[tokio::test]
async fn an_approved_backup_is_made_though_its_name_is_the_time_of_the_run() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let table = TableSpec::provisioned("managed-approved", 5, 5)
        .create(&moto().dynamodb())
        .await;
    let responder = responder(
        &audit,
        &[("RUNBOOK_MODES", r#"{"dynamodb-backup": "approve"}"#)],
        responder_clients(),
    );
    let asked = run(&responder, backup(&table)).await;
    assert_eq!(asked.outcome, Outcome::AwaitingApproval, "{asked:?}");
    assert!(backups(&table).await.is_empty());
    // Asked again a second later: the same plan (its backup would be named differently).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = run(&responder, backup(&table)).await;
    let plan_id = asked.approval.expect("approval").plan_id;
    assert_eq!(again.approval.expect("approval").plan_id, plan_id);

    let approved = run(&responder, json!({"approve": plan_id, "by": "alice"})).await;
    assert_eq!(approved.outcome, Outcome::Remediated, "{approved:?}");
    assert_eq!(backups(&table).await.len(), 1);
}
