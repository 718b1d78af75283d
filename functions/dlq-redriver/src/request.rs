//! What a dlq-redrive run is asked to do: a person's payload, or what an alarm or the schedule
//! does to a DLQ.

use runbook_shared::model::Rejection;
use serde::Deserialize;

use crate::MAX_SAMPLE;
use crate::config::RedriverConfig;
use crate::filter::MessageFilter;
use crate::queues::QueueRef;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum DlqAction {
    Inspect,
    Redrive,
    Purge,
}

/// The manual payload: `{"dlq": "<name|url|arn>", "action": "inspect|redrive|purge", "target":
/// "<queue>", "max_messages": 500, "rate_per_second": 50, "filter": {...}, "confirm": "<dlq
/// name>", "dry_run": true}`; `dlq` and `action` are required.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub dlq: String,
    pub action: DlqAction,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub max_messages: Option<u32>,
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    #[serde(default)]
    pub filter: Option<MessageFilter>,
    #[serde(default)]
    pub confirm: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub dlq: QueueRef,
    pub action: DlqAction,
    pub target: Option<QueueRef>,
    /// Sample size for inspect; most messages moved for redrive.
    pub max_messages: u32,
    pub rate_per_second: u32,
    pub filter: MessageFilter,
    pub dry_run: bool,
}

impl Job {
    pub fn from_request(request: &Request, config: &RedriverConfig) -> Result<Self, Rejection> {
        let reject = |message: String| Err(Rejection(message));
        let home = &config.safety.home;
        let dlq = QueueRef::parse(&request.dlq, home)?;
        let target = request
            .target
            .as_deref()
            .map(|target| QueueRef::parse(target, home))
            .transpose()?;
        if request.action != DlqAction::Purge && request.confirm.is_some() {
            return reject("\"confirm\" is only used with \"action\": \"purge\"".into());
        }
        if request.action != DlqAction::Redrive {
            for (field, given) in [
                ("target", request.target.is_some()),
                ("rate_per_second", request.rate_per_second.is_some()),
                ("filter", request.filter.is_some()),
            ] {
                if given {
                    return reject(format!(
                        "\"{field}\" is only used with \"action\": \"redrive\""
                    ));
                }
            }
        }
        let (max_messages, cap, cap_name) = match request.action {
            DlqAction::Inspect => (
                request.max_messages.unwrap_or(config.inspect_sample_size),
                MAX_SAMPLE,
                "the sample limit",
            ),
            _ => (
                request.max_messages.unwrap_or(config.max_messages_per_run),
                config.max_messages_per_run,
                "MAX_MESSAGES_PER_RUN",
            ),
        };
        if max_messages == 0 || max_messages > cap {
            return reject(format!(
                "\"max_messages\" must be from 1 to {cap} ({cap_name}), got {max_messages}"
            ));
        }
        let rate_per_second = request.rate_per_second.unwrap_or(config.rate_per_second);
        if rate_per_second == 0 || rate_per_second > config.max_rate_per_second {
            return reject(format!(
                "\"rate_per_second\" must be from 1 to {} (MAX_REDRIVE_RATE_PER_SECOND), got {rate_per_second}",
                config.max_rate_per_second
            ));
        }
        let filter = request.filter.clone().unwrap_or_default();
        filter.validate().map_err(Rejection)?;
        if request.action == DlqAction::Purge {
            match request.confirm.as_deref() {
                None => {
                    return reject(format!(
                        "purge deletes every message: confirm with \"confirm\": \"{}\"",
                        dlq.name
                    ));
                }
                Some(confirm) if confirm != dlq.name => {
                    return reject(format!(
                        "\"confirm\" must be the DLQ's name {:?} exactly, got {confirm:?}; nothing was purged",
                        dlq.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            dlq,
            action: request.action,
            target,
            max_messages,
            rate_per_second,
            filter,
            dry_run: config.safety.dry_run || request.dry_run == Some(true),
        })
    }

    /// What an alarm or a schedule does to a DLQ: redrive if allowed, else inspect.
    pub(crate) fn automatic(dlq: QueueRef, config: &RedriverConfig) -> Self {
        let action = if config.redrive_on_alarm {
            DlqAction::Redrive
        } else {
            DlqAction::Inspect
        };
        Self {
            dlq,
            action,
            target: None,
            max_messages: if action == DlqAction::Inspect {
                config.inspect_sample_size
            } else {
                config.max_messages_per_run
            },
            rate_per_second: config.rate_per_second,
            filter: MessageFilter::default(),
            dry_run: config.safety.dry_run,
        }
    }
}
