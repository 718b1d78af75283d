//! After a redrive: its verification stays open, and a redriven message that comes back to the
//! DLQ (its redrive-count set, sent by the redrive) settles it as failed, seen by the next
//! inspection or redrive; otherwise the sweep settles it by the DLQ's depth.

use runbook_shared::model::SettleBy;
use runbook_shared::store::{AuditRecord, AuditStore};

use super::*;

/// The audit record of `audit_id` on the DLQ, as it stands now.
async fn record(setup: &Setup, dlq: &str, audit_id: &str) -> AuditRecord {
    let store = AuditStore::new(moto().dynamodb(), setup.audit.clone(), 30);
    let key = format!(
        "arn:aws:sqs:{}:{}:{dlq}",
        runbook_tests::moto::REGION,
        runbook_tests::moto::ACCOUNT
    );
    store
        .history(&key)
        .await
        .expect("history")
        .into_iter()
        .find(|record| record.audit_id == audit_id)
        .expect("the redrive's record")
}

/// Five messages failed into the DLQ and redriven home: the redrive's report.
async fn redriven(setup: &Setup, pair: &QueuePair) -> Report {
    send_messages(&setup.sqs, &pair.source, &bodies("back", 5), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    let report = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:#?}");
    report
}

#[tokio::test]
async fn a_redrive_stays_open_until_its_messages_stay_out() {
    let _own =
        runbook_tests::moto::isolated("a_redrive_stays_open_until_its_messages_stay_out").await;
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-stays", false).await;
    let report = redriven(&setup, &pair).await;
    assert_eq!(
        report.verification.status,
        VerificationStatus::Pending,
        "{:#?}",
        report.verification
    );
    let open: Vec<&str> = report
        .verification
        .checks
        .iter()
        .filter(|check| check.is_awaited())
        .map(|check| check.name.as_str())
        .collect();
    assert_eq!(open, ["redriven_stay_out"]);
    // Nothing left behind; and a message sent home needs the source's visibility timeout (30 s)
    // × maxReceiveCount (1) to fail back, so the sweep waits that long at least.
    let Some(SettleBy::QueueDepth {
        name,
        below,
        not_before: Some(not_before),
        ..
    }) = &report.verification.settle_by
    else {
        panic!("{:#?}", report.verification)
    };
    assert_eq!((name, *below), (&pair.dlq.name, 1));
    let wait = (*not_before - chrono::Utc::now()).num_seconds();
    assert!((25..=30).contains(&wait), "{wait} s");
}

#[tokio::test]
async fn redriven_messages_that_come_back_fail_the_redrive_when_an_inspection_sees_them() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-back", false).await;
    let first = redriven(&setup, &pair).await;
    let audit_id = first.audit_id.clone().expect("audit id");
    // The consumer still fails them: they are back in the DLQ, redrive-count 1.
    fail_all(&setup.sqs, &pair.source).await;
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 5);

    let inspected = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "inspect"}),
    )
    .await;

    assert!(
        inspected
            .notes
            .iter()
            .any(|note| note.contains(&format!("the redrive {audit_id} of"))
                && note.contains("failed its verification: 5 of the messages it sent came back")),
        "{inspected:#?}"
    );
    let settled = record(&setup, &pair.dlq.name, &audit_id).await;
    let verification = &settled.report.verification;
    assert_eq!(verification.status, VerificationStatus::Failed);
    let check = verification
        .checks
        .iter()
        .find(|check| check.name == "redriven_stay_out")
        .expect("the check");
    assert!(!check.ok);
    assert!(
        check.observed.starts_with("5 came back"),
        "{}",
        check.observed
    );
    assert!(
        check.observed.contains("(redrive-count 1)"),
        "{}",
        check.observed
    );
}

#[tokio::test]
async fn the_next_redrive_fails_the_one_whose_messages_came_back_and_messages_from_before_it_do_not()
 {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-again", false).await;
    let first = redriven(&setup, &pair).await;
    fail_all(&setup.sqs, &pair.source).await;
    let second = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Remediated, "{second:#?}");
    let first_id = first.audit_id.clone().expect("audit id");
    assert!(
        second
            .notes
            .iter()
            .any(|note| note.contains(&format!("the redrive {first_id} of"))),
        "{second:#?}"
    );
    let settled = record(&setup, &pair.dlq.name, &first_id).await;
    assert_eq!(
        settled.report.verification.status,
        VerificationStatus::Failed
    );
    // The second redrive is open in turn; its messages come back too, but an inspection settles
    // only the second: the first is closed, and what it sent is older than the second.
    let second_id = second.audit_id.clone().expect("audit id");
    assert_eq!(second.verification.status, VerificationStatus::Pending);
    fail_all(&setup.sqs, &pair.source).await;
    let inspected = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "inspect"}),
    )
    .await;
    let notes: Vec<&String> = inspected
        .notes
        .iter()
        .filter(|note| note.contains("failed its verification"))
        .collect();
    assert_eq!(notes.len(), 1, "{inspected:#?}");
    assert!(notes[0].contains(&second_id), "{notes:?}");
    assert!(notes[0].contains("(redrive-count 2)"), "{notes:?}");
}

#[tokio::test]
async fn messages_a_redrive_did_not_send_do_not_fail_it() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-other", false).await;
    let other = QueuePair::source_of(
        &setup.sqs,
        &runbook_tests::unique("managed-other-b"),
        &pair.dlq,
        false,
    )
    .await;
    let first = redriven(&setup, &pair).await;
    // Back through the other source, and counted as redriven once (by some other run): not
    // what this redrive sent, although they arrive while it is open.
    send_messages(
        &setup.sqs,
        &other,
        &bodies("elsewhere", 3),
        None,
        &[("redrive-count", "1")],
    )
    .await;
    fail_all(&setup.sqs, &other).await;
    let inspected = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "inspect"}),
    )
    .await;
    assert!(
        !inspected
            .notes
            .iter()
            .any(|note| note.contains("failed its verification")),
        "{inspected:#?}"
    );
    let audit_id = first.audit_id.clone().expect("audit id");
    let open = record(&setup, &pair.dlq.name, &audit_id).await;
    assert_eq!(open.report.verification.status, VerificationStatus::Pending);
}

#[tokio::test]
async fn a_redrive_slow_to_start_still_owns_the_messages_it_sent() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-slow", false).await;
    send_messages(&setup.sqs, &pair.source, &bodies("slow", 3), None, &[]).await;
    fail_all(&setup.sqs, &pair.source).await;
    // Two seconds between the invocation's start and its sends: the record's window must
    // cover the whole run, not its first second.
    moto()
        .delay("ListDeadLetterSourceQueues", &pair.dlq.name, 2_000)
        .await;
    let redrive = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(redrive.outcome, Outcome::Remediated, "{redrive:#?}");
    let audit_id = redrive.audit_id.clone().expect("audit id");
    fail_all(&setup.sqs, &pair.source).await;
    let inspected = run(
        &setup.redriver(&[]),
        json!({"dlq": pair.dlq.name, "action": "inspect"}),
    )
    .await;
    assert!(
        inspected
            .notes
            .iter()
            .any(|note| note.contains(&format!("the redrive {audit_id} of"))
                && note.contains("failed its verification")),
        "{inspected:#?}"
    );
}
