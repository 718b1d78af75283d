//! Queues by name, URL or ARN; their depth; the sources whose RedrivePolicy points at a DLQ.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::model::Home;
use runbook_shared::model::ManagedPolicy;
use runbook_shared::model::Rejection;
use runbook_shared::model::{Ending, Step};
use serde::Serialize;

/// A queue of the function's own region and account, by name, parsed without any AWS call;
/// its URL is always looked up there (a URL given is only read for the name, the account and
/// the region it names, never called).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueRef {
    pub name: String,
}

impl QueueRef {
    /// Accepts a queue name, a queue URL or a queue ARN of the function's own region and
    /// account: a queue elsewhere with the same name is another queue.
    pub fn parse(text: &str, home: &Home) -> Result<Self, Rejection> {
        let text = text.trim();
        let reference = if let Some(rest) = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
        {
            // <host>/<account>/<name>
            let mut parts = rest.trim_end_matches('/').split('/');
            let (host, account, name) = (parts.next(), parts.next(), parts.next());
            let (Some(host), Some(account), Some(name), None) = (host, account, name, parts.next())
            else {
                return Err(Rejection(format!(
                    "{text:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
                )));
            };
            if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
                return Err(Rejection(format!(
                    "{text:?} names no account (its path must be /<12-digit account>/<name>)"
                )));
            }
            home.require_home(&home.partition, &home.region, account, text)?;
            match region_of_host(host) {
                Ok(Some(region)) => home.require_home(&home.partition, &region, account, text)?,
                Ok(None) => {}
                Err(()) => {
                    return Err(Rejection(format!(
                        "{text:?}: the region of the host {host} cannot be read; give the queue's name or ARN"
                    )));
                }
            }
            Self {
                name: name.to_string(),
            }
        } else if text.starts_with("arn:") {
            let arn = home.parse_arn(text, "sqs")?;
            Self { name: arn.resource }
        } else {
            Self {
                name: text.to_string(),
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
    /// How long a message sent to it takes at least to fail into its DLQ: its visibility
    /// timeout × its RedrivePolicy's maxReceiveCount, plus its delay (0 without a policy).
    #[serde(skip)]
    pub fails_back_after_seconds: i64,
    /// Its own RedrivePolicy's maxReceiveCount, when it has one: it is then a source, and
    /// every receive spends one of a message's delivery attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_receive_count: Option<i64>,
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

/// The region an AWS SQS endpoint host names: `Ok(None)` for a host that is not AWS's (a local
/// endpoint), `Err` for an AWS host whose region cannot be read.
fn region_of_host(host: &str) -> Result<Option<String>, ()> {
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")) {
        return Ok(None);
    }
    if host == "queue.amazonaws.com" {
        return Ok(Some("us-east-1".into()));
    }
    // sqs.<region>.…, <region>.queue.…, vpce-….sqs.<region>.vpce.…, sqs-fips.<region>.…
    let looks_like_region = |label: &&str| {
        let parts: Vec<&str> = label.split('-').collect();
        parts.len() >= 3
            && parts[0].len() == 2
            && parts
                .last()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    };
    host.split('.')
        .find(looks_like_region)
        .map(|region| Some(region.to_string()))
        .ok_or(())
}

/// Finds the queue's URL in this function's region and account.
pub async fn resolve(sqs: &Client, reference: &QueueRef) -> Result<Queue, AwsError> {
    let url = sqs
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
        .unwrap_or_default();
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
    // A policy that cannot be read still makes it a source: receiving is then never safe.
    let max_receive_count = attributes
        .get(&QueueAttributeName::RedrivePolicy)
        .filter(|policy| !policy.trim().is_empty())
        .map(|policy| {
            serde_json::from_str::<serde_json::Value>(policy)
                .ok()
                .and_then(|policy| match &policy["maxReceiveCount"] {
                    serde_json::Value::Number(n) => n.as_i64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .unwrap_or(1)
        });
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
        fails_back_after_seconds: max_receive_count.map_or(0, |receives| {
            number(QueueAttributeName::VisibilityTimeout) * receives
                + number(QueueAttributeName::DelaySeconds)
        }),
        max_receive_count,
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
    if policy.matches("queue", &queue.name) {
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

/// Whether the queue may be changed; else the run ends, skipped (`because` says how the queue
/// comes into it) or failed when its tags could not be read.
pub async fn require_managed(
    sqs: &Client,
    policy: &ManagedPolicy,
    queue: &Queue,
    because: Option<String>,
) -> Step<()> {
    match is_managed(sqs, policy, queue).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let refusal = policy.refusal("queue", &queue.name);
            Err(Ending::skipped(match because {
                Some(because) => format!("{because}, and {refusal}"),
                None => refusal,
            }))
        }
        Err(err) => Err(Ending::failed(format!(
            "could not check that {} is managed, nothing was changed: {err}",
            queue.name
        ))),
    }
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
        for url in [
            "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq.fifo",
            "https://us-east-1.queue.amazonaws.com/123456789012/orders-dlq.fifo",
            "https://queue.amazonaws.com/123456789012/orders-dlq.fifo",
            "https://vpce-0a1b-2c3d.sqs.us-east-1.vpce.amazonaws.com/123456789012/orders-dlq.fifo",
            "http://127.0.0.1:4566/123456789012/orders-dlq.fifo",
        ] {
            assert_eq!(parse(url).unwrap().name, "orders-dlq.fifo", "{url}");
        }
        let arn = parse("arn:aws:sqs:us-east-1:123456789012:orders-dlq").unwrap();
        assert_eq!(arn.name, "orders-dlq");
        for elsewhere in [
            "arn:aws:sqs:eu-west-1:123456789012:orders-dlq",
            "arn:aws:sqs:us-east-1:999999999999:orders-dlq",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq",
            "https://eu-west-1.queue.amazonaws.com/123456789012/orders-dlq",
            "https://vpce-0a1b.sqs.eu-west-1.vpce.amazonaws.com/123456789012/orders-dlq",
            "https://sqs.us-east-1.amazonaws.com/999999999999/orders-dlq",
        ] {
            assert!(
                parse(elsewhere).unwrap_err().0.contains("us-east-1"),
                "{elsewhere}"
            );
        }
        assert!(parse("arn:aws:sns:us-east-1:123456789012:topic").is_err());
        assert!(parse("https://sqs.amazonaws.com/123456789012/orders-dlq").is_err());
        assert!(parse("https://sqs.us-east-1.amazonaws.com/orders-dlq").is_err());
        assert!(parse("bad name!").is_err());
        assert!(parse("").is_err());
    }
}
