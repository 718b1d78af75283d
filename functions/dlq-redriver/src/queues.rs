//! Queues by name, URL or ARN; their depth; the sources whose RedrivePolicy points at a DLQ.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::resource::Home;
use runbook_shared::safety::ManagedPolicy;
use runbook_shared::trigger::Rejection;
use serde::Serialize;

/// A queue as the caller named it, parsed without any AWS call.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueRef {
    pub name: String,
    pub url: Option<String>,
}

impl QueueRef {
    /// Accepts a queue name, a queue URL or a queue ARN of the function's own region and
    /// account: a queue elsewhere with the same name is another queue.
    pub fn parse(text: &str, home: &Home) -> Result<Self, Rejection> {
        let text = text.trim();
        let reference = if text.starts_with("https://") || text.starts_with("http://") {
            let mut segments = text.trim_end_matches('/').rsplit('/');
            let name = segments.next().unwrap_or_default();
            // https://sqs.<region>.amazonaws.com/<account>/<name>
            if let Some(account) = segments.next().filter(|account| {
                account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())
            }) {
                home.require_home(&home.partition, &home.region, account, text)?;
            }
            let host = text.split('/').nth(2).unwrap_or_default();
            if let Some(region) = host
                .strip_prefix("sqs.")
                .and_then(|rest| rest.split('.').next())
            {
                home.require_home(&home.partition, region, &home.account, text)?;
            }
            Self {
                name: name.to_string(),
                url: Some(text.to_string()),
            }
        } else if text.starts_with("arn:") {
            let arn = home.parse_arn(text, "sqs")?;
            Self {
                name: arn.resource,
                url: None,
            }
        } else {
            Self {
                name: text.to_string(),
                url: None,
            }
        };
        let base = reference
            .name
            .strip_suffix(".fifo")
            .unwrap_or(&reference.name);
        if base.is_empty()
            || base.len() > 80
            || !base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Rejection(format!(
                "{text:?} is not a queue name, URL or ARN (names are 1-80 letters, digits, - and _, FIFO names end in .fifo)"
            )));
        }
        Ok(reference)
    }
}

/// A queue that exists, with its depth when it was described.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Queue {
    pub name: String,
    #[serde(skip)]
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    pub visible: i64,
    pub in_flight: i64,
    pub delayed: i64,
    /// The largest message it accepts (bytes of body and attributes).
    #[serde(skip)]
    pub max_message_size: i64,
}

impl Queue {
    /// Messages in the queue: visible and in flight (delayed ones are not yet in either).
    pub fn depth(&self) -> i64 {
        self.visible + self.in_flight
    }
}

/// SQS's MaximumMessageSize when a queue does not say (256 KiB, the long-standing default).
const DEFAULT_MAX_MESSAGE_SIZE: i64 = 262_144;

pub fn not_found(name: &str) -> String {
    format!("queue {name} does not exist (or is not visible to this function) in this region")
}

/// Finds the queue's URL.
pub async fn resolve(sqs: &Client, reference: &QueueRef) -> Result<Queue, AwsError> {
    let url = match &reference.url {
        Some(url) => url.clone(),
        None => sqs
            .get_queue_url()
            .queue_name(&reference.name)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "sqs:GetQueueUrl",
                    &format!("queue {}", reference.name),
                    &err,
                )
            })?
            .queue_url
            .unwrap_or_default(),
    };
    describe(sqs, &reference.name, &url).await
}

/// The queue's ARN, type and depth.
pub async fn describe(sqs: &Client, name: &str, url: &str) -> Result<Queue, AwsError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("sqs:GetQueueAttributes", &format!("queue {name}"), &err)
        })?;
    let attributes = output.attributes.unwrap_or_default();
    let number = |key: QueueAttributeName| {
        attributes
            .get(&key)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(Queue {
        name: name.to_string(),
        url: url.to_string(),
        arn: attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default(),
        fifo: attributes
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true"),
        visible: number(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: number(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        max_message_size: attributes
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
    })
}

/// The queues whose RedrivePolicy sends their failures to `dlq`.
pub async fn sources(sqs: &Client, dlq: &Queue) -> Result<Vec<Queue>, AwsError> {
    let mut urls = Vec::new();
    let mut pages = sqs
        .list_dead_letter_source_queues()
        .queue_url(&dlq.url)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            AwsError::from_sdk(
                "sqs:ListDeadLetterSourceQueues",
                &format!("queue {}", dlq.name),
                &err,
            )
        })?;
        urls.extend(page.queue_urls().iter().cloned());
    }
    let mut queues = Vec::with_capacity(urls.len());
    for url in urls {
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        queues.push(describe(sqs, &name, &url).await?);
    }
    Ok(queues)
}

/// Whether the queue may be changed: its name matches the patterns or it is tagged managed.
pub async fn is_managed(
    sqs: &Client,
    policy: &ManagedPolicy,
    queue: &Queue,
) -> Result<bool, AwsError> {
    if policy.matches_name(&queue.name) {
        return Ok(true);
    }
    let tags = sqs
        .list_queue_tags()
        .queue_url(&queue.url)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("sqs:ListQueueTags", &format!("queue {}", queue.name), &err)
        })?;
    Ok(policy.tags_allow(
        tags.tags()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Turns a lookup failure into the reason given to the caller.
pub fn lookup_failure(name: &str, err: &AwsError) -> String {
    if err.is(FaultKind::NotFound) {
        format!("{}; nothing was changed", not_found(name))
    } else {
        format!("could not look up queue {name}, nothing was changed: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_urls_and_arns_of_this_region_and_account_only() {
        let home = Home::from_env(&runbook_shared::config::Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        let parse = |text: &str| QueueRef::parse(text, &home);
        assert_eq!(parse("orders-dlq").unwrap().name, "orders-dlq");
        let url =
            parse("https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq.fifo").unwrap();
        assert_eq!(url.name, "orders-dlq.fifo");
        assert!(url.url.is_some());
        let arn = parse("arn:aws:sqs:us-east-1:123456789012:orders-dlq").unwrap();
        assert_eq!(arn.name, "orders-dlq");
        for elsewhere in [
            "arn:aws:sqs:eu-west-1:123456789012:orders-dlq",
            "arn:aws:sqs:us-east-1:999999999999:orders-dlq",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq",
            "https://sqs.us-east-1.amazonaws.com/999999999999/orders-dlq",
        ] {
            assert!(
                parse(elsewhere).unwrap_err().0.contains("us-east-1"),
                "{elsewhere}"
            );
        }
        assert!(parse("arn:aws:sns:us-east-1:123456789012:topic").is_err());
        assert!(parse("bad name!").is_err());
        assert!(parse("").is_err());
    }
}
