//! The fleet's brakes against moto: the correlated-change brake (account-wide, across
//! functions, under concurrent invocations, escalating once per window) and the repeat-offender
//! brake (a third automatic action on one resource in 24 hours waits for a person).

use runbook_shared::model::{Outcome, Report};
use runbook_tests::fixtures::{
    alarm_in_state, capacity, create_audit_table, invocation, managed_table, one_report,
    read_throttled, scaler, scaler_clients,
};
use runbook_tests::moto::moto;
use serde_json::json;

/// Generous per-runbook guards, so that only the brakes under test stop anything.
const LOOSE: [(&str, &str); 2] = [("COOLDOWN_SECONDS", "0"), ("MAX_ACTIONS_PER_HOUR", "100")];

#[tokio::test]
async fn six_alarms_at_once_give_five_raises_one_brake_and_one_escalation() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &LOOSE, scaler_clients());
    let mut tables = Vec::new();
    for i in 0..6 {
        tables.push(managed_table(&format!("managed-brake{i}")).await);
    }
    let reports: Vec<Report> = futures_util::future::join_all(tables.iter().map(|table| async {
        one_report(scaler.handle(read_throttled(table), &invocation()).await)
    }))
    .await;
    let count = |outcome| reports.iter().filter(|r| r.outcome == outcome).count();
    assert_eq!(count(Outcome::Remediated), 5, "{reports:#?}");
    assert_eq!(count(Outcome::Skipped), 1, "{reports:#?}");
    let braked = reports
        .iter()
        .find(|r| r.outcome == Outcome::Skipped)
        .expect("braked");
    assert!(
        braked
            .reason
            .starts_with("brake: 5 resources changed in the last 10 minutes"),
        "{}",
        braked.reason
    );
    assert!(braked.actions.iter().all(|a| !a.applied));
    let escalation = braked.escalation.as_ref().expect("escalation");
    assert_eq!(escalation.kind, "brake");
    assert_eq!(escalation.evidence.len(), 5);
    let raised = tables.iter().filter(|table| {
        reports.iter().any(|r| {
            r.target.as_deref() == Some(table.as_str()) && r.outcome == Outcome::Remediated
        })
    });
    for table in raised {
        assert_eq!(capacity(&moto().dynamodb(), table, None).await, (10, 5));
    }
    let braked_table = braked.target.clone().expect("target");
    assert_eq!(
        capacity(&moto().dynamodb(), &braked_table, None).await,
        (5, 5)
    );

    // The next one in the window is stopped too, without a second escalation.
    let seventh = managed_table("managed-brake6").await;
    let again = one_report(scaler.handle(read_throttled(&seventh), &invocation()).await);
    assert_eq!(again.outcome, Outcome::Skipped, "{again:?}");
    assert!(again.escalation.is_none(), "one escalation per window");

    // A resource already changed in the window is not a new one.
    let first = tables
        .iter()
        .find(|table| **table != braked_table)
        .expect("a raised table");
    let same = one_report(scaler.handle(read_throttled(first), &invocation()).await);
    assert_eq!(same.outcome, Outcome::Remediated, "{same:?}");

    // A person's manual run is a decision the brake neither stops nor counts.
    let manual = one_report(
        scaler
            .handle(json!({"table": seventh, "read": 20}), &invocation())
            .await,
    );
    assert_eq!(manual.outcome, Outcome::Remediated, "{manual:?}");
}

#[tokio::test]
async fn a_third_automatic_action_on_one_resource_in_a_day_waits_for_a_person() {
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &LOOSE, scaler_clients());
    let table = managed_table("managed-flapping").await;
    let first = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    let second = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(first.outcome, Outcome::Remediated, "{first:?}");
    assert_eq!(second.outcome, Outcome::Remediated, "{second:?}");
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (20, 5));

    let third = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(third.outcome, Outcome::Skipped, "{third:?}");
    assert!(
        third
            .reason
            .starts_with(&format!("escalated: acted on {table} 2 times in 24 h")),
        "{}",
        third.reason
    );
    for earlier in [&first, &second] {
        let id = earlier.audit_id.as_deref().expect("audit id");
        assert!(third.reason.contains(id), "{}", third.reason);
    }
    let escalation = third.escalation.as_ref().expect("escalation");
    assert_eq!(escalation.kind, "repeat");
    assert_eq!(escalation.evidence.len(), 2);
    assert!(third.actions.iter().all(|a| !a.applied));
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (20, 5));

    // A person who has looked may still act.
    let manual = one_report(
        scaler
            .handle(json!({"table": table, "read": 40}), &invocation())
            .await,
    );
    assert_eq!(manual.outcome, Outcome::Remediated, "{manual:?}");
}

#[tokio::test]
async fn an_alarm_that_recovered_before_the_write_changes_nothing() {
    use aws_sdk_cloudwatch::types::StateValue;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &LOOSE, scaler_clients());
    let table = managed_table("managed-recovered").await;
    alarm_in_state(&format!("{table}-throttled"), StateValue::Ok).await;

    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.starts_with(&format!(
            "recovered before acting: alarm {table}-throttled is OK since "
        )),
        "{}",
        report.reason
    );
    assert!(report.actions.iter().all(|a| !a.applied));
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));

    // Still firing: it acts.
    alarm_in_state(&format!("{table}-throttled"), StateValue::Alarm).await;
    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(
        report
            .notes
            .iter()
            .all(|note| !note.contains("could not be found"))
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (10, 5));
}

#[tokio::test]
async fn an_alarm_that_cannot_be_re_read_stops_the_write() {
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let audit = create_audit_table(&moto().dynamodb()).await;
    let denied = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_error(|| {
        DescribeAlarmsError::generic(runbook_tests::replay::error_meta(
            "AccessDenied",
            "not authorized to perform cloudwatch:DescribeAlarms",
        ))
    });
    let no_metrics = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput::builder().build()
    });
    let clients = limit_scaler::Clients {
        cloudwatch: mock_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&denied, &no_metrics]
        ),
        ..scaler_clients()
    };
    let scaler = scaler(&audit, &LOOSE, clients);
    let table = managed_table("managed-unreadable-alarm").await;
    let report = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.starts_with(&format!(
            "could not re-read alarm {table}-throttled right before acting, so nothing was changed"
        )) && report.reason.contains("AccessDenied"),
        "{}",
        report.reason
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (5, 5));
    assert_eq!(denied.num_calls(), 1);
}

#[tokio::test]
async fn a_stacks_table_is_left_to_its_deploy_and_a_change_to_it_is_handed_back_as_drift() {
    use runbook_tests::fixtures::{create_stack, set_stack_status};
    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(&audit, &LOOSE, scaler_clients());
    let table = runbook_tests::unique("managed-stacked");
    let stack = format!("{table}-stack");
    create_stack(
        &moto().cloudformation(),
        &stack,
        json!({"OrdersTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": table,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        }}}),
    )
    .await;

    let raised = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    let drift = raised.stack_drift.as_ref().expect("drift handed back");
    assert_eq!(drift.stack, stack);
    assert_eq!(drift.logical_id, "OrdersTable");
    assert_eq!(drift.resource_type, "AWS::DynamoDB::Table");
    assert!(
        drift
            .properties
            .contains(&"ProvisionedThroughput".to_string())
    );
    assert!(
        raised
            .notes
            .iter()
            .any(|note| note.contains(&format!("the next deploy of {stack}"))),
        "{:?}",
        raised.notes
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (10, 5));

    // While the stack deploys, the table is the deploy's.
    set_stack_status(moto(), &stack, "UPDATE_IN_PROGRESS", None, 0).await;
    let left = one_report(scaler.handle(read_throttled(&table), &invocation()).await);
    assert_eq!(left.outcome, Outcome::Skipped, "{left:?}");
    assert!(
        left.reason.starts_with(&format!(
            "a deployment is in progress on stack {stack} (UPDATE_IN_PROGRESS)"
        )),
        "{}",
        left.reason
    );
    assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (10, 5));

    // A table no stack owns has no drift to hand back.
    let loose = managed_table("managed-unstacked").await;
    let report = one_report(scaler.handle(read_throttled(&loose), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(report.stack_drift.is_none());
}

/// A slot the change brake gave to a run whose write then failed is given back: the window
/// counts only changes made.
#[tokio::test]
async fn a_run_that_writes_nothing_gives_its_brake_slot_back() {
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::operation::update_table::UpdateTableError;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let audit = create_audit_table(&moto().dynamodb()).await;
    let extra = [
        ("COOLDOWN_SECONDS", "0"),
        ("MAX_ACTIONS_PER_HOUR", "100"),
        ("MAX_CHANGES_PER_WINDOW", "2"),
    ];
    let first = managed_table("managed-slot-a").await;
    let raised = one_report(
        scaler(&audit, &extra, scaler_clients())
            .handle(read_throttled(&first), &invocation())
            .await,
    );
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");

    // Past the brake (one slot left), its UpdateTable refused: its slot goes back.
    let refused_table = runbook_tests::unique("managed-slot-b");
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output({
        let name = refused_table.clone();
        move || {
            DescribeTableOutput::builder()
                .table(runbook_tests::replay::provisioned_table(&name, 5, 5))
                .build()
        }
    });
    let refuse = mock!(aws_sdk_dynamodb::Client::update_table).then_error(|| {
        UpdateTableError::generic(runbook_tests::replay::error_meta(
            "LimitExceededException",
            "too many tables being updated",
        ))
    });
    let clients = limit_scaler::Clients {
        dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &refuse]),
        ..scaler_clients()
    };
    let failed = one_report(
        scaler(&audit, &extra, clients)
            .handle(read_throttled(&refused_table), &invocation())
            .await,
    );
    assert_eq!(failed.outcome, Outcome::Failed, "{failed:?}");
    assert!(refuse.num_calls() >= 1);

    // So a third table finds one change in the window, not two.
    let third = managed_table("managed-slot-c").await;
    let report = one_report(
        scaler(&audit, &extra, scaler_clients())
            .handle(read_throttled(&third), &invocation())
            .await,
    );
    assert_eq!(
        report.outcome,
        Outcome::Remediated,
        "the failed run kept its slot: {}",
        report.reason
    );
}

#[tokio::test]
async fn a_guard_says_which_guard_stopped_a_run_with_what_it_saw() {
    use runbook_shared::guards::{acquire_waiting, cooldown, spend_budget};
    use runbook_shared::model::{Skip, TriggerInfo, TriggerKind};
    use runbook_tests::fixtures::record_remediation;

    let audit = create_audit_table(&moto().dynamodb()).await;
    let scaler = scaler(
        &audit,
        &[("COOLDOWN_SECONDS", "300"), ("MAX_ACTIONS_PER_HOUR", "1")],
        scaler_clients(),
    );
    let safety = &scaler.safety;
    let table = runbook_tests::unique("managed-typed");
    let resource = safety.config.home.table(&table);

    // The cooldown: a change a minute ago, by this runbook.
    let audit_id = record_remediation(
        &safety.audit,
        "dynamodb-capacity",
        (&resource.key(), &table),
        runbook_shared::model::Action {
            api: "dynamodb:UpdateTable".into(),
            target: table.clone(),
            before: json!({}),
            after: json!({}),
            applied: true,
            error: None,
        },
        None,
        chrono::Duration::minutes(1),
    )
    .await;
    match cooldown(safety, "dynamodb-capacity", &resource, |_| true).await {
        Ok(Some(Skip::Cooldown {
            runbook,
            resource: name,
            audit_id: seen,
            cooldown_seconds,
            ..
        })) => {
            assert_eq!(
                (runbook.as_str(), name.as_str(), cooldown_seconds),
                ("dynamodb-capacity", table.as_str(), 300)
            );
            assert_eq!(seen, audit_id);
        }
        other => panic!("{other:?}"),
    }

    // The lease: held by the first invocation, the second is told by whom.
    let (first, second) = (invocation(), invocation());
    assert_eq!(
        acquire_waiting(safety, &resource, &first, std::time::Duration::ZERO)
            .await
            .expect("lease"),
        Ok(())
    );
    match acquire_waiting(safety, &resource, &second, std::time::Duration::ZERO).await {
        Ok(Err(Skip::Leased { key, owner, .. })) => {
            assert_eq!(
                (key, owner),
                (resource.lease_key(), first.request_id.clone())
            );
        }
        other => panic!("{other:?}"),
    }

    // The budget: one automatic action an hour, the second waits.
    let mut report = Report::new(
        "limit-scaler",
        TriggerInfo {
            kind: TriggerKind::Alarm,
            name: Some("t".into()),
            event_id: Some(uuid::Uuid::new_v4().to_string()),
        },
        Outcome::NoAction,
        "",
    );
    report.runbook = Some("dynamodb-capacity".into());
    assert_eq!(spend_budget(safety, &report).await.expect("budget"), Ok(()));
    match spend_budget(safety, &report).await {
        Ok(Err(Skip::Budget { runbook, max, next })) => {
            assert_eq!((runbook.as_str(), max), ("dynamodb-capacity", 1));
            assert!(next.is_some(), "the next allowed time is named");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreadable_brake_window_holds_every_change() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let audit = create_audit_table(&moto().dynamodb()).await;
    let extra = [LOOSE[0], LOOSE[1], ("MAX_CHANGES_PER_WINDOW", "1")];
    let scaler = scaler(&audit, &extra, scaler_clients());
    let first = managed_table("managed-unread-a").await;
    let raised = one_report(scaler.handle(read_throttled(&first), &invocation()).await);
    assert_eq!(raised.outcome, Outcome::Remediated, "{raised:?}");
    let second = managed_table("managed-unread-b").await;
    let held = one_report(scaler.handle(read_throttled(&second), &invocation()).await);
    assert_eq!(held.outcome, Outcome::Skipped, "{held:?}");

    // The window item made unreadable: it must not read as an empty window.
    let items = moto()
        .dynamodb()
        .scan()
        .table_name(&audit)
        .send()
        .await
        .expect("scan");
    let pk = items
        .items()
        .iter()
        .filter_map(|item| item.get("pk")?.as_s().ok())
        .find(|pk| pk.starts_with("brake#changes"))
        .expect("the brake's window item")
        .clone();
    moto()
        .dynamodb()
        .update_item()
        .table_name(&audit)
        .key("pk", AttributeValue::S(pk.clone()))
        .key("sk", AttributeValue::S("window".into()))
        .update_expression("SET resources = :garbage")
        .expression_attribute_values(":garbage", AttributeValue::S("{not json".into()))
        .send()
        .await
        .expect("corrupt the window");

    let third = managed_table("managed-unread-c").await;
    let report = one_report(scaler.handle(read_throttled(&third), &invocation()).await);
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains(&pk) && report.reason.contains("unreadable"),
        "the report names the item and why: {}",
        report.reason
    );
    assert!(report.actions.iter().all(|action| !action.applied));
    assert_eq!(capacity(&moto().dynamodb(), &third, None).await, (5, 5));
}
