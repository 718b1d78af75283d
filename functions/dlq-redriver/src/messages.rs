//! Receiving messages with everything needed to redrive them, and making them visible again.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};
use chrono::{DateTime, Utc};
use runbook_shared::aws::AwsError;
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

    /// The message as an inspection shows it: the body is cut to 256 bytes.
    pub fn summary(&self) -> Value {
        let mut cut = self.body.len().min(256);
        while !self.body.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut attributes: Vec<&str> = self.attributes.keys().map(String::as_str).collect();
        attributes.sort_unstable();
        json!({
            "id": self.id,
            "sent_at": self.sent_at.map(runbook_shared::audit::timestamp),
            "receive_count": self.receive_count,
            "redrive_count": self.redrive_count(),
            "group_id": self.group_id,
            "attributes": attributes,
            "body": &self.body[..cut],
            "body_truncated": cut < self.body.len(),
        })
    }
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

/// Makes messages visible again at once (ChangeMessageVisibilityBatch, 10 at a time); returns
/// the ids SQS did not release (they reappear when their visibility timeout ends).
pub async fn release(
    sqs: &Client,
    queue: &Queue,
    messages: &[(String, String)],
) -> Result<Vec<String>, AwsError> {
    let mut failed = Vec::new();
    for chunk in messages.chunks(10) {
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
        for entry in output.failed() {
            if let Some((id, _)) = entry
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|index| chunk.get(index))
            {
                failed.push(id.clone());
            }
        }
    }
    Ok(failed)
}
