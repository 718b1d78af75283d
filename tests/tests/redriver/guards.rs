//! Unmanaged queues are skipped; bad inputs are rejected with a reason.

use super::*;

#[tokio::test]
async fn unmanaged_dlqs_and_targets_are_skipped() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "other-team", false).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("u", 2), None, &[]).await;
    let redriver = setup.redriver(&[]);
    let report = run(
        &redriver,
        json!({"dlq": pair.dlq.name, "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.starts_with("not managed"),
        "{}",
        report.reason
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);

    // A managed DLQ whose source is not managed: redriving would write into the source.
    let dlq = create_queue(
        &setup.sqs,
        &runbook_tests::unique("managed-lonely-dlq"),
        &[],
    )
    .await;
    let outsider =
        QueuePair::source_of(&setup.sqs, &runbook_tests::unique("outsider"), &dlq, false).await;
    send_messages(&setup.sqs, &dlq, &bodies("o", 2), None, &[]).await;
    let report = run(&redriver, json!({"dlq": dlq.name, "action": "redrive"})).await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report
            .reason
            .contains(&format!("redrives into {}", outsider.name)),
        "{}",
        report.reason
    );
    assert_eq!(
        (
            depth(&setup.sqs, &dlq).await,
            depth(&setup.sqs, &outsider).await
        ),
        (2, 0)
    );

    let managed = QueuePair::create(&setup.sqs, "managed-t", false).await;
    send_messages(&setup.sqs, &managed.dlq, &bodies("t", 2), None, &[]).await;
    let stranger = create_queue(&setup.sqs, &runbook_tests::unique("stranger"), &[]).await;
    let report = run(
        &redriver,
        json!({"dlq": managed.dlq.name, "action": "redrive", "target": stranger.name}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.contains("is not a source"),
        "{}",
        report.reason
    );
    assert_eq!(depth(&setup.sqs, &stranger).await, 0);
}

#[tokio::test]
async fn bad_inputs_are_rejected_with_a_reason() {
    let setup = Setup::new().await;
    let pair = QueuePair::create(&setup.sqs, "managed-bad", false).await;
    let plain = create_queue(&setup.sqs, &runbook_tests::unique("managed-plain"), &[]).await;
    send_messages(&setup.sqs, &pair.dlq, &bodies("b", 2), None, &[]).await;
    let redriver = setup.redriver(&[]);
    let cases = [
        (
            json!({"dlq": pair.dlq.name, "action": "drain"}),
            "unknown variant `drain`, expected one of `inspect`, `redrive`, `purge`",
        ),
        (json!({"dlq": pair.dlq.name}), "missing field `action`"),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "speed": 5}),
            "unknown field `speed`, expected one of `dlq`, `action`, `target`",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "filter": {"age": 1}}),
            "unknown field `age`",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "rate_per_second": 100000}),
            "MAX_REDRIVE_RATE_PER_SECOND",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "redrive", "max_messages": 0}),
            "\"max_messages\" must be from 1",
        ),
        (
            json!({"dlq": pair.dlq.name, "action": "inspect", "confirm": "x"}),
            "only used with \"action\": \"purge\"",
        ),
        (
            json!({"dlq": "no such queue!", "action": "inspect"}),
            "is not a queue name",
        ),
        (
            json!({"dlq": "managed-does-not-exist", "action": "inspect"}),
            "does not exist",
        ),
        (
            json!({"dlq": plain.name, "action": "redrive"}),
            "is not a dead-letter queue",
        ),
    ];
    for (payload, expected) in cases {
        let report = run(&redriver, payload.clone()).await;
        assert_eq!(report.outcome, Outcome::Rejected, "{payload} -> {report:?}");
        assert!(
            report.reason.contains(expected),
            "{payload}: {:?} should contain {expected:?}",
            report.reason
        );
    }
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 2);
}

/// A DLQ holding `messages`, dlq-redrive in approve mode, and the plan its first manual redrive
/// asked a person to approve.
struct Asked {
    pair: QueuePair,
    redriver: Redriver,
    redrive: Value,
    plan_id: String,
}

impl Asked {
    async fn of(setup: &Setup, prefix: &str, messages: usize) -> Self {
        let pair = QueuePair::create(&setup.sqs, prefix, false).await;
        send_messages(&setup.sqs, &pair.dlq, &bodies("d", messages), None, &[]).await;
        let redriver = setup.redriver(&[("RUNBOOK_MODES", r#"{"dlq-redrive": "approve"}"#)]);
        let redrive = json!({"dlq": pair.dlq.name, "action": "redrive"});
        let asked = run(&redriver, redrive.clone()).await;
        assert_eq!(asked.outcome, Outcome::AwaitingApproval, "{asked:?}");
        let plan_id = asked.approval.as_ref().expect("a plan").plan_id.clone();
        Self {
            pair,
            redriver,
            redrive,
            plan_id,
        }
    }
}

#[tokio::test]
async fn a_denial_covers_its_plan_and_new_messages_are_a_new_question() {
    let setup = Setup::new().await;
    let Asked {
        pair,
        redriver,
        redrive,
        plan_id,
    } = Asked::of(&setup, "managed-deny", 3).await;
    let denied = run(
        &redriver,
        json!({"deny": plan_id, "by": "alice", "reason": "handled by hand"}),
    )
    .await;
    assert_eq!(denied.outcome, Outcome::Skipped, "{denied:?}");

    // The same 3 messages: the denial holds, and the run that meets it says so to people.
    let again = run(&redriver, redrive.clone()).await;
    assert_eq!(again.outcome, Outcome::Skipped, "{again:?}");
    assert!(
        again.reason.starts_with("denied by alice"),
        "{}",
        again.reason
    );
    let escalation = again
        .escalation
        .as_ref()
        .expect("an escalation, not silence");
    assert_eq!(escalation.kind, "denied");
    assert_eq!(escalation.evidence, vec![plan_id.clone()]);
    // Told once, not at every run that meets the denial.
    let once_more = run(&redriver, redrive.clone()).await;
    assert_eq!(once_more.outcome, Outcome::Skipped, "{once_more:?}");
    assert!(once_more.escalation.is_none(), "{once_more:?}");

    // A backlog in the target queue is not a new question.
    send_messages(&setup.sqs, &pair.source, &bodies("s", 2), None, &[]).await;
    let busy_target = run(&redriver, redrive.clone()).await;
    assert_eq!(busy_target.outcome, Outcome::Skipped, "{busy_target:?}");

    // New messages are a new question: a person is asked again.
    send_messages(&setup.sqs, &pair.dlq, &bodies("n", 4), None, &[]).await;
    let new_question = run(&redriver, redrive).await;
    assert_eq!(
        new_question.outcome,
        Outcome::AwaitingApproval,
        "{new_question:?}"
    );
    let new_plan = new_question.approval.as_ref().expect("a new plan");
    assert_ne!(new_plan.plan_id, plan_id);
    assert!(!new_plan.already_requested);
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 7, "nothing moved");
}

#[tokio::test]
async fn a_plan_awaiting_approval_stands_for_its_messages_and_new_ones_are_asked_anew() {
    let setup = Setup::new().await;
    let Asked {
        pair,
        redriver,
        redrive,
        plan_id: first,
    } = Asked::of(&setup, "managed-open", 2).await;

    // The same messages: the same plan, not asked twice.
    let same = run(&redriver, redrive.clone()).await;
    let same = same.approval.as_ref().expect("the plan");
    assert_eq!(
        (same.plan_id.as_str(), same.already_requested),
        (first.as_str(), true)
    );

    // A third message: a new question, asked now.
    send_messages(&setup.sqs, &pair.dlq, &bodies("n", 1), None, &[]).await;
    let new_question = run(&redriver, redrive).await;
    assert_eq!(
        new_question.outcome,
        Outcome::AwaitingApproval,
        "{new_question:?}"
    );
    let new_plan = new_question.approval.as_ref().expect("a new plan");
    assert_ne!(new_plan.plan_id, first);
    assert!(!new_plan.already_requested);
    assert!(
        new_question.reason.contains("of the 3 messages"),
        "{}",
        new_question.reason
    );
    assert_eq!(depth(&setup.sqs, &pair.dlq).await, 3, "nothing moved");
}
