//! Receiving messages with everything needed to redrive them, and making them visible again.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::Deadline;
use serde_json::{Value, json};

use crate::queues::Queue;

/// The message attribute that counts how often a message was redriven.
pub const REDRIVE_COUNT: &str = "redrive-count";
/// SQS allows this many message attributes on a message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;

#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub receive_count: u32,
    pub source_arn: Option<String>,
    pub group_id: Option<String>,
    pub trace_header: Option<String>,
    pub attributes: HashMap<String, MessageAttributeValue>,
}

impl Received {
    fn from_sdk(message: aws_sdk_sqs::types::Message) -> Option<Self> {
        let system = message.attributes.unwrap_or_default();
        let get = |name: MessageSystemAttributeName| system.get(&name).cloned();
        Some(Self {
            id: message.message_id?,
            receipt: message.receipt_handle?,
            body: message.body.unwrap_or_default(),
            sent_at: get(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis),
            receive_count: get(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            source_arn: get(MessageSystemAttributeName::DeadLetterQueueSourceArn),
            group_id: get(MessageSystemAttributeName::MessageGroupId),
            trace_header: get(MessageSystemAttributeName::AwsTraceHeader),
            attributes: message.message_attributes.unwrap_or_default(),
        })
    }

    /// How often the message was redriven before (its `redrive-count` attribute).
    pub fn redrive_count(&self) -> u32 {
        self.attributes
            .get(REDRIVE_COUNT)
            .and_then(|value| value.string_value())
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn age_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        self.sent_at.map(|sent| (now - sent).num_seconds().max(0))
    }

    /// What a Lambda OnFailure destination record is about (`requestContext`): the function,
    /// the condition and the attempts; `None` for any other message.
    pub fn lambda_failure(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        let context = body.get("requestContext")?;
        body.get("requestPayload")?;
        // Bodies are anyone's: what is quoted from them is cut short.
        Some(format!(
            "Lambda failure records of {} ({}, {} attempts): each holds the original event in requestPayload",
            cut(context.get("functionArn")?.as_str()?, 256),
            cut(
                context
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("failed"),
                64
            ),
            context
                .get("approximateInvokeCount")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        ))
    }

    /// The message as an inspection shows it: the body is cut to 256 bytes.
    pub fn summary(&self) -> Value {
        let body = cut(&self.body, 256);
        let mut attributes: Vec<&str> = self.attributes.keys().map(|name| cut(name, 64)).collect();
        attributes.sort_unstable();
        json!({
            "id": self.id,
            "sent_at": self.sent_at.map(runbook_shared::model::timestamp),
            "receive_count": self.receive_count,
            "redrive_count": self.redrive_count(),
            "group_id": self.group_id.as_deref().map(|group| cut(group, 128)),
            "attributes": attributes,
            "body": body,
            "body_truncated": body.len() < self.body.len(),
        })
    }
}

/// The first `max` bytes of `text` (at a character boundary).
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Receives up to `max` (≤ 10) messages with every system and message attribute, hiding them
/// for `visibility_seconds`.
pub async fn receive(
    sqs: &Client,
    queue: &Queue,
    max: i32,
    visibility_seconds: i32,
    wait_seconds: i32,
) -> Result<Vec<Received>, AwsError> {
    let output = sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(max.clamp(1, 10))
        .visibility_timeout(visibility_seconds)
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("sqs:ReceiveMessage", &format!("queue {}", queue.name), &err)
        })?;
    Ok(output
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(Received::from_sdk)
        .collect())
}

/// How many ChangeMessageVisibilityBatch calls a release keeps in flight.
const RELEASE_CONCURRENCY: usize = 8;

/// What a release did: the ids it did not make visible again (they reappear when their
/// visibility timeout ends), and the fault that stopped a batch, if one did.
#[derive(Debug, Default)]
pub struct Released {
    pub not_released: Vec<String>,
    pub error: Option<AwsError>,
}

/// Makes messages visible again at once (ChangeMessageVisibilityBatch, 10 at a time, a few
/// batches in flight); batches that would start after `deadline` are left to their visibility
/// timeout, so releasing never keeps the invocation past its deadline.
pub async fn release(
    sqs: &Client,
    queue: &Queue,
    messages: &[(String, String)],
    deadline: Deadline,
) -> Released {
    use futures_util::StreamExt;
    let parts: Vec<Released> = futures_util::stream::iter(messages.chunks(10))
        .map(|chunk| async move {
            let ids = || chunk.iter().map(|(id, _)| id.clone()).collect();
            if deadline.passed() {
                return Released {
                    not_released: ids(),
                    error: None,
                };
            }
            // A slow or retried call may not outlast the deadline either.
            match tokio::time::timeout(deadline.remaining(), release_batch(sqs, queue, chunk)).await
            {
                Ok(Ok(failed)) => Released {
                    not_released: failed,
                    error: None,
                },
                Ok(Err(err)) => Released {
                    not_released: ids(),
                    error: Some(err),
                },
                Err(_) => Released {
                    not_released: ids(),
                    error: None,
                },
            }
        })
        .buffer_unordered(RELEASE_CONCURRENCY)
        .collect()
        .await;
    parts
        .into_iter()
        .fold(Released::default(), |mut all, part| {
            all.not_released.extend(part.not_released);
            all.error = all.error.or(part.error);
            all
        })
}

/// One ChangeMessageVisibilityBatch of up to 10: the ids SQS did not release.
async fn release_batch(
    sqs: &Client,
    queue: &Queue,
    chunk: &[(String, String)],
) -> Result<Vec<String>, AwsError> {
    let entries = chunk
        .iter()
        .enumerate()
        .map(|(index, (_, receipt))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            AwsError::invalid(
                "sqs:ChangeMessageVisibilityBatch",
                &queue.name,
                &err.to_string(),
            )
        })?;
    let output = sqs
        .change_message_visibility_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "sqs:ChangeMessageVisibilityBatch",
                &format!("queue {}", queue.name),
                &err,
            )
        })?;
    Ok(output
        .failed()
        .iter()
        .filter_map(|entry| entry.id().parse::<usize>().ok())
        .filter_map(|index| chunk.get(index))
        .map(|(id, _)| id.clone())
        .collect())
}

/// A message's size as SQS counts it against MaximumMessageSize: the body and every message
/// attribute's name, type and value.
pub fn entry_size(entry: &SendMessageBatchRequestEntry) -> i64 {
    let attributes: usize = entry
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    name.len()
                        + value.data_type().len()
                        + value.string_value().map_or(0, str::len)
                        + value.binary_value().map_or(0, |blob| blob.as_ref().len())
                })
                .sum()
        })
        .unwrap_or(0);
    i64::try_from(entry.message_body().len() + attributes).unwrap_or(i64::MAX)
}
