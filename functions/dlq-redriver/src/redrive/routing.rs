//! Where each message of a redrive goes, and which stay: the routing rule, the filter, poison,
//! the attribute and size limits, and FIFO order (a held message holds the rest of its group).

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::engine::Run;
use super::ledger::RedriveResult;
use crate::messages::{self, MAX_MESSAGE_ATTRIBUTES, REDRIVE_COUNT, Received};

impl Run<'_> {
    /// Keeps the message in the DLQ (released at the end of the run); a FIFO message's group
    /// is held from here on, so nothing of it overtakes this one.
    pub(super) fn hold(&self, message: &Received, record: impl FnOnce(&mut RedriveResult)) {
        let mut state = self.state();
        state
            .held
            .insert(message.id.clone(), message.receipt.clone());
        if let Some(group) = fifo_group(message) {
            state.held_groups.insert(group);
        }
        record(&mut state.result);
    }

    /// Holds the message when an earlier message of its FIFO group was held; true if it did.
    pub(super) fn held_behind(&self, message: &Received) -> bool {
        let behind =
            fifo_group(message).is_some_and(|group| self.state().held_groups.contains(&group));
        if behind {
            self.hold(message, |result| {
                result.ledger.held_behind += 1;
                result.held_behind_ids.push(message.id.clone());
            });
        }
        behind
    }

    /// Decides which target (by index) the message goes to and its entry, or holds it back
    /// (`None`) when it must stay.
    // Over 80 lines: the routing decisions for one message (poison, filter, FIFO group, source,
    // target, attributes, size) in the order that holds a message back rather than misroute it.
    pub(super) fn route(
        &self,
        index: usize,
        message: &Received,
        now: DateTime<Utc>,
    ) -> Option<(usize, SendMessageBatchRequestEntry)> {
        if let Some(returned) = crate::returned::Returned::of(message) {
            let result = &mut self.state().result;
            if !result.returned.iter().any(|seen| seen.id == returned.id) {
                result.returned.push(returned);
            }
        }
        if self.held_behind(message) {
            return None;
        }
        if !self.plan.filter.matches(message, now) {
            self.hold(message, |result| result.ledger.filtered_out += 1);
            return None;
        }
        let count = message.redrive_count();
        if count >= self.plan.max_redrives {
            self.hold(message, |result| {
                result.ledger.poison += 1;
                result.poison_ids.push(message.id.clone());
            });
            return None;
        }
        if !message.attributes.contains_key(REDRIVE_COUNT)
            && message.attributes.len() >= MAX_MESSAGE_ATTRIBUTES
        {
            self.hold(message, |result| {
                result.ledger.attribute_limit += 1;
                result.attribute_limit_ids.push(message.id.clone());
            });
            return None;
        }
        let target = self.destination(message)?;
        let mut attributes = message.attributes.clone();
        let counter = MessageAttributeValue::builder()
            .data_type("Number")
            .string_value((count + 1).to_string())
            .build();
        match counter {
            Ok(counter) => {
                attributes.insert(REDRIVE_COUNT.to_string(), counter);
            }
            Err(err) => {
                self.refuse(message, "InvalidAttribute", &err.to_string());
                return None;
            }
        }
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&message.body)
            .set_message_attributes(Some(attributes));
        if let Some(trace) = &message.trace_header
            && let Ok(value) = MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()
        {
            entry = entry.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                value,
            );
        }
        if self.targets[target].fifo {
            let Some(group) = &message.group_id else {
                self.refuse(
                    message,
                    "MissingGroupId",
                    "a FIFO message without MessageGroupId cannot be sent to a FIFO queue",
                );
                return None;
            };
            // Never the original deduplication id (the target may have seen it in the last 5
            // minutes and would silently drop the message); one per redrive attempt, so a retried
            // send of the same attempt is still deduplicated.
            entry = entry
                .message_group_id(group)
                .message_deduplication_id(format!("redrive-{}-{}", count + 1, message.id));
        }
        let entry = match entry.build() {
            Ok(entry) => entry,
            Err(err) => {
                self.refuse(message, "InvalidEntry", &err.to_string());
                return None;
            }
        };
        let limit = self.targets[target].max_message_size;
        if messages::entry_size(&entry) > limit {
            self.hold(message, |result| {
                result.ledger.too_large += 1;
                result.too_large_ids.push(message.id.clone());
            });
            return None;
        }
        Some((target, entry))
    }

    /// Where the message goes (an index into `targets`): the source it names, if that is still
    /// a source of the DLQ; a person's target when it names another queue (re-targeted) or
    /// none; the single source when it names none. Otherwise it stays (unroutable).
    pub(super) fn destination(&self, message: &Received) -> Option<usize> {
        let fallback = self.plan.fallback.as_ref().and_then(|fallback| {
            self.targets
                .iter()
                .position(|queue| queue.url == fallback.url)
        });
        let unroutable = |named: Option<&str>| {
            self.hold(message, |result| {
                result.ledger.unroutable += 1;
                result
                    .unroutable
                    .push(json!({"id": message.id, "named_source": named}));
            });
            None
        };
        match message.source_arn.as_deref() {
            Some(arn) => {
                if let Some(source) = self.plan.sources.iter().position(|queue| queue.arn == arn) {
                    return Some(source);
                }
                match fallback.filter(|_| self.plan.retarget) {
                    Some(target) => {
                        self.state().result.retargeted.push(
                            json!({"id": message.id, "named": arn, "sent_to": self.targets[target].name}),
                        );
                        Some(target)
                    }
                    None => unroutable(Some(arn)),
                }
            }
            None => fallback.or_else(|| unroutable(None)),
        }
    }

    pub(super) fn refuse(&self, message: &Received, code: &str, reason: &str) {
        self.hold(message, |result| {
            result.ledger.refused += 1;
            result
                .refused
                .push(json!({"id": message.id, "code": code, "message": reason}));
        });
    }
}

/// A FIFO message's group as ordering knows it: a group id orders messages within the queue
/// they were sent to, so two sources' groups of one id are two groups.
pub(super) fn fifo_group(message: &Received) -> Option<String> {
    let group = message.group_id.as_ref()?;
    Some(format!(
        "{}\n{group}",
        message.source_arn.as_deref().unwrap_or_default()
    ))
}
