//! Faults moto cannot produce, with replay clients: what a target refused is not deleted, and a
//! send that is denied deletes nothing.

use super::*;
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlOutput;
use aws_sdk_sqs::operation::list_dead_letter_source_queues::ListDeadLetterSourceQueuesOutput;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::operation::send_message_batch::{SendMessageBatchError, SendMessageBatchOutput};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, DeleteMessageBatchResultEntry, Message, SendMessageBatchResultEntry,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

const DLQ_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/managed-replay-dlq";
const SOURCE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/managed-replay";

fn attributes(url: &str, depth: i64) -> GetQueueAttributesOutput {
    let name = url.rsplit('/').next().unwrap();
    GetQueueAttributesOutput::builder()
        .attributes(
            QueueAttributeName::QueueArn,
            format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
        )
        .attributes(
            QueueAttributeName::ApproximateNumberOfMessages,
            depth.to_string(),
        )
        .attributes(
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            "0",
        )
        .build()
}

/// A DLQ with three messages and one source; the DLQ's depth is read as `dlq_depths` in turn.
fn common_rules(dlq_depths: &'static [i64]) -> Vec<Rule> {
    let depth_calls = std::sync::atomic::AtomicUsize::new(0);
    vec![
        mock!(aws_sdk_sqs::Client::get_queue_url)
            .then_output(|| GetQueueUrlOutput::builder().queue_url(DLQ_URL).build()),
        mock!(aws_sdk_sqs::Client::get_queue_attributes).then_compute_output(move |request| {
            if request.queue_url() == Some(DLQ_URL) {
                let call = depth_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                attributes(DLQ_URL, dlq_depths[call.min(dlq_depths.len() - 1)])
            } else {
                attributes(SOURCE_URL, 0)
            }
        }),
        mock!(aws_sdk_sqs::Client::list_dead_letter_source_queues).then_output(|| {
            ListDeadLetterSourceQueuesOutput::builder()
                .queue_urls(SOURCE_URL)
                .build()
                .unwrap()
        }),
        mock!(aws_sdk_sqs::Client::receive_message)
            .sequence()
            .output(|| {
                ReceiveMessageOutput::builder()
                    .set_messages(Some(
                        (0..3)
                            .map(|i| {
                                Message::builder()
                                    .message_id(format!("m{i}"))
                                    .receipt_handle(format!("r{i}"))
                                    .body(format!("body {i}"))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .output(|| ReceiveMessageOutput::builder().build())
            .repeatedly()
            .build(),
    ]
}

fn replayed(setup: &Setup, rules: &[&Rule]) -> Redriver {
    let sqs = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, rules.iter().copied());
    let clients = dlq_redriver::Clients {
        sqs,
        ..redriver_clients()
    };
    redriver(&setup.audit, &[], clients)
}

#[tokio::test]
async fn only_what_the_target_accepted_is_deleted_and_the_rest_is_released() {
    let setup = Setup::new().await;
    let rules = common_rules(&[3, 1]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        SendMessageBatchOutput::builder()
            .successful(
                SendMessageBatchResultEntry::builder()
                    .id("0")
                    .message_id("n0")
                    .md5_of_message_body("x")
                    .build()
                    .unwrap(),
            )
            .successful(
                SendMessageBatchResultEntry::builder()
                    .id("2")
                    .message_id("n2")
                    .md5_of_message_body("x")
                    .build()
                    .unwrap(),
            )
            .failed(
                BatchResultErrorEntry::builder()
                    .id("1")
                    .code("InvalidParameterValue")
                    .message("message too long")
                    .sender_fault(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    });
    let delete = mock!(aws_sdk_sqs::Client::delete_message_batch)
        .match_requests(|request| {
            let receipts: Vec<&str> = request
                .entries()
                .iter()
                .map(|e| e.receipt_handle())
                .collect();
            receipts == ["r0", "r2"]
        })
        .then_output(|| {
            DeleteMessageBatchOutput::builder()
                .successful(
                    DeleteMessageBatchResultEntry::builder()
                        .id("0")
                        .build()
                        .unwrap(),
                )
                .successful(
                    DeleteMessageBatchResultEntry::builder()
                        .id("1")
                        .build()
                        .unwrap(),
                )
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let release = mock!(aws_sdk_sqs::Client::change_message_visibility_batch)
        .match_requests(|request| {
            request
                .entries()
                .iter()
                .map(|e| e.receipt_handle())
                .collect::<Vec<_>>()
                == ["r1"]
        })
        .then_output(|| {
            ChangeMessageVisibilityBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&send, &delete, &release]);
    let report = run(
        &replayed(&setup, &all),
        json!({"dlq": "managed-replay-dlq", "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!((delete.num_calls(), release.num_calls()), (1, 1));
    let ledger = &details(&report)["ledger"];
    assert_eq!(
        (ledger["moved"].as_u64(), ledger["refused"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        details(&report)["refused"]["first"][0]["code"],
        "InvalidParameterValue"
    );
    assert_eq!(
        report.verification.status,
        VerificationStatus::Pending,
        "{:?}",
        report.verification
    );
}

#[tokio::test]
async fn access_denied_on_send_deletes_nothing_and_releases_everything() {
    let setup = Setup::new().await;
    let rules = common_rules(&[3, 3]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_error(|| {
        SendMessageBatchError::generic(
            aws_sdk_sqs::error::ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform: sqs:SendMessage")
                .build(),
        )
    });
    let delete = mock!(aws_sdk_sqs::Client::delete_message_batch).then_output(|| {
        DeleteMessageBatchOutput::builder()
            .set_successful(Some(vec![]))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let release = mock!(aws_sdk_sqs::Client::change_message_visibility_batch)
        .match_requests(|request| request.entries().len() == 3)
        .then_output(|| {
            ChangeMessageVisibilityBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&send, &delete, &release]);
    let report = run(
        &replayed(&setup, &all),
        json!({"dlq": "managed-replay-dlq", "action": "redrive"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("grant sqs:SendMessage on"),
        "{}",
        report.reason
    );
    assert_eq!(
        delete.num_calls(),
        0,
        "nothing deleted that the target did not accept"
    );
    assert_eq!(release.num_calls(), 1);
}
